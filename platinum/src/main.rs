//! `platinum`: the CLI and server binary. Everything lives in the library; this file parses
//! arguments, sets up logging and turns the outcome into an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = platinum::cli::Cli::parse();
    let level = match cli.command {
        platinum::cli::Command::Up(_) => "info",
        _ => "warn",
    };
    platinum::logging::init(level, std::env::var_os("PLATINUM_LOG_JSON").is_some());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(platinum::cli::run(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
