//! `platinum sandbox`: client commands against a running server.
//!
//! `exec` streams output live and exits with the command's exit code; `cp` streams files in
//! either direction (`ID:/path` names the sandbox side).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use tokio::io::AsyncWriteExt;

use crate::client::Client;

/// Sandbox subcommands.
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and print its id.
    Create {
        /// Template.
        #[arg(long, short = 't')]
        template: Option<String>,
        /// vCPUs.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory, MiB.
        #[arg(long)]
        memory: Option<u32>,
        /// Seconds until it expires (0 = never).
        #[arg(long)]
        timeout: Option<u64>,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Metadata KEY=VALUE (repeatable).
        #[arg(long = "metadata", short = 'm')]
        metadata: Vec<String>,
        /// Print the sandbox as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List sandboxes.
    Ls {
        /// Only these states (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one sandbox.
    Get {
        /// Sandbox id.
        id: String,
    },
    /// Run a command; output streams live and the exit code is the command's.
    Exec {
        /// Sandbox id.
        id: String,
        /// User to run as.
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Kill after this many milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Wait and print the result as JSON instead of streaming.
        #[arg(long)]
        json: bool,
        /// The command: one argument is run by the shell, several are an argv.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Copy a file: `cp local ID:/path` uploads, `cp ID:/path local` downloads (`-` = stdin/stdout).
    Cp {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
        /// Print the uploaded file's entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete sandboxes.
    Rm {
        /// Sandbox ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

fn remote(spec: &str) -> Option<(&str, &str)> {
    let (id, path) = spec.split_once(':')?;
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some((id, path))
}

/// Runs a sandbox subcommand; returns the exit code.
pub async fn run(cmd: SandboxCommand, url: Option<String>, data_dir: &Path) -> Result<i32> {
    let client = Client::resolve(url, data_dir)?;
    match cmd {
        SandboxCommand::Create {
            template,
            vcpus,
            memory,
            timeout,
            env,
            metadata,
            json,
        } => {
            let body = json!({
                "template": template, "vcpus": vcpus, "memory_mib": memory, "timeout_secs": timeout,
                "env": pairs(&env, "env")?, "metadata": pairs(&metadata, "metadata")?,
            });
            let s: Value = client
                .json(client.request(Method::POST, "/v1/sandboxes").json(&body))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", s["id"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        SandboxCommand::Ls { state, json } => {
            let mut req = client.request(Method::GET, "/v1/sandboxes");
            if let Some(s) = state {
                req = req.query(&[("state", s)]);
            }
            let page: Value = client.json(req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page["sandboxes"])?);
            } else {
                println!(
                    "{:<22} {:<10} {:<18} {:>5} {:>7}  CREATED",
                    "ID", "STATE", "TEMPLATE", "CPUS", "MEM"
                );
                for s in page["sandboxes"].as_array().into_iter().flatten() {
                    println!(
                        "{:<22} {:<10} {:<18} {:>5} {:>6}M  {}",
                        s["id"].as_str().unwrap_or(""),
                        s["state"].as_str().unwrap_or(""),
                        s["template"].as_str().unwrap_or(""),
                        s["vcpus"],
                        s["memory_mib"],
                        s["created_at"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        SandboxCommand::Get { id } => {
            let s: Value = client
                .json(client.request(Method::GET, &format!("/v1/sandboxes/{id}")))
                .await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(0)
        }
        SandboxCommand::Exec {
            id,
            user,
            cwd,
            env,
            timeout_ms,
            json,
            command,
        } => {
            let command = if command.len() == 1 {
                json!(command[0])
            } else {
                json!(command)
            };
            let body = json!({"command": command, "user": user, "cwd": cwd, "env": pairs(&env, "env")?, "timeout_ms": timeout_ms});
            if json {
                let r: Value = client
                    .json(
                        client
                            .request(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
                            .json(&body),
                    )
                    .await?;
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(r["exit_code"].as_i64().unwrap_or(1) as i32);
            }
            stream_exec(&client, &id, &body).await
        }
        SandboxCommand::Cp { src, dst, json } => copy(&client, &src, &dst, json).await,
        SandboxCommand::Rm { ids, json } => {
            let mut failed = 0;
            let mut results = Vec::new();
            for id in &ids {
                match client
                    .send(client.request(Method::DELETE, &format!("/v1/sandboxes/{id}")))
                    .await
                {
                    Ok(_) => results.push(json!({"id": id, "deleted": true})),
                    Err(e) => {
                        failed += 1;
                        if !json {
                            eprintln!("{id}: {e}");
                        }
                        results.push(json!({"id": id, "deleted": false, "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}

async fn stream_exec(client: &Client, id: &str, body: &Value) -> Result<i32> {
    let resp = client
        .send(
            client
                .request(Method::POST, &format!("/v1/sandboxes/{id}/exec/stream"))
                .json(body),
        )
        .await?;
    let mut bytes = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = bytes.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: Value = serde_json::from_slice(&line).context("bad event from the server")?;
            match ev["type"].as_str() {
                Some("stdout") => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(ev["data"].as_str().unwrap_or("").as_bytes())?;
                    out.flush()?;
                }
                Some("stderr") => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(ev["data"].as_str().unwrap_or("").as_bytes())?;
                    err.flush()?;
                }
                Some("exit") => {
                    if ev["timed_out"].as_bool() == Some(true) {
                        eprintln!("platinum: command timed out and was killed");
                    }
                    return Ok(ev["exit_code"].as_i64().unwrap_or(1) as i32);
                }
                Some("error") => bail!(
                    "{}: {}",
                    ev["code"].as_str().unwrap_or("error"),
                    ev["message"].as_str().unwrap_or("")
                ),
                _ => {}
            }
        }
    }
    bail!("the output stream ended without an exit status")
}

async fn copy(client: &Client, src: &str, dst: &str, json: bool) -> Result<i32> {
    match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let body = if src == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let file = tokio::fs::File::open(src)
                    .await
                    .with_context(|| format!("opening {src}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
            };
            let req = client
                .request(Method::PUT, &format!("/v1/sandboxes/{id}/files"))
                .query(&[("path", path)])
                .body(body);
            let entry: Value = client.json(req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entry)?);
            }
            Ok(0)
        }
        (Some((id, path)), None) => {
            let req = client
                .request(Method::GET, &format!("/v1/sandboxes/{id}/files"))
                .query(&[("path", path)]);
            let mut stream = client.send(req).await?.bytes_stream();
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if dst == "-" {
                Box::new(tokio::io::stdout())
            } else {
                Box::new(
                    tokio::fs::File::create(dst)
                        .await
                        .with_context(|| format!("creating {dst}"))?,
                )
            };
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            Ok(0)
        }
        (Some(_), Some(_)) => {
            bail!("copying between two sandboxes is not supported; copy through a local file")
        }
        (None, None) => bail!("one side must be a sandbox path, written ID:/path"),
    }
}
