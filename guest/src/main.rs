//! The `platinum-guest` binary: PID 1 of a sandbox VM, or `serve` for development and tests.

use clap::{ArgGroup, Args, Parser, Subcommand};
use platinum_guest::serve::Transports;
use platinum_guest::{Agent, AgentConfig, DEFAULT_OUTPUT_RING_BYTES, Mode};
use std::path::PathBuf;
use std::process::ExitCode;

/// Platinum guest agent. Run as PID 1 it boots the VM; otherwise use `serve`.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the host <-> guest protocol as an ordinary process (never powers off or sets the clock).
    Serve(ServeArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("transport").required(true).multiple(true).args(["unix", "vsock", "serial"])))]
struct ServeArgs {
    /// Listen on this Unix socket (may be repeated).
    #[arg(long, value_name = "PATH")]
    unix: Vec<PathBuf>,
    /// Listen on AF_VSOCK (port 18047, any CID).
    #[arg(long)]
    vsock: bool,
    /// Serve the virtio-serial port named org.platinum.agent.0.
    #[arg(long)]
    serial: bool,
    /// User database.
    #[arg(long, value_name = "PATH", default_value = "/etc/passwd")]
    passwd: PathBuf,
    /// Group database.
    #[arg(long, value_name = "PATH", default_value = "/etc/group")]
    group: PathBuf,
    /// Bytes of output buffered per process (at least 64 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_OUTPUT_RING_BYTES)]
    output_ring_bytes: usize,
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        platinum_guest::init::run();
    }
    let Command::Serve(args) = Cli::parse().command;
    platinum_guest::logging::init("info");
    let config = AgentConfig {
        mode: Mode::Serve,
        passwd: args.passwd,
        group: args.group,
        output_ring_bytes: args.output_ring_bytes,
    };
    let transports = Transports {
        unix: args.unix,
        vsock: args.vsock,
        serial: args.serial,
    };
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            runtime.block_on(platinum_guest::serve::run(Agent::new(config), transports))
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("platinum-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
