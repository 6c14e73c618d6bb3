//! `platinum template`: build custom templates from a Dockerfile on a running server, list them,
//! follow a build's log, delete them (`/v1/templates`, `/v1/template-builds`,
//! `/v1/template-files`).
//!
//! `build` reads a Dockerfile (one stage: `FROM`, `RUN`, `COPY`, `ADD`, `ENV`, `ARG`,
//! `WORKDIR`, `USER`, `CMD`, `ENTRYPOINT`; see the server's `builds::dockerfile`). When it
//! copies files, the context directory (default: the Dockerfile's) is packed with `tar` in a
//! stable order with fixed owners and times, so unchanged files give the same archive and the
//! same cache key, and uploaded only if the server does not have it yet. The build log streams
//! to stdout; the exit code is 0 when the template is ready, 1 when the build failed.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::client::Client;

/// Template subcommands.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build (or rebuild) a template from a Dockerfile and follow its log.
    Build {
        /// Template name (`[a-z0-9][a-z0-9._-]*`).
        name: String,
        /// The Dockerfile.
        #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
        file: PathBuf,
        /// Directory `COPY` and `ADD` read from (default: the Dockerfile's directory).
        #[arg(long)]
        context: Option<PathBuf>,
        /// vCPUs of the builder and default of the template's sandboxes.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory of the builder and default of the template's sandboxes, MiB.
        #[arg(long)]
        memory: Option<u32>,
        /// Run every step, using no cached layer.
        #[arg(long)]
        force: bool,
        /// Longest the build may take, seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Start the build and print it as JSON instead of following its log.
        #[arg(long)]
        detach: bool,
        /// User name for the registry of the Dockerfile's `FROM` image (a private one); the
        /// password is read from `PLATINUM_REGISTRY_PASSWORD`, never from the command line.
        #[arg(long, env = "PLATINUM_REGISTRY_USERNAME")]
        registry_username: Option<String>,
    },
    /// List templates (built-in and custom).
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a build's log (and with --follow, until it ends).
    Logs {
        /// Build id.
        build: String,
        /// Keep printing until the build ends.
        #[arg(long)]
        follow: bool,
    },
    /// Delete custom templates (refused while sandboxes or pools use them).
    Rm {
        /// Template names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a template subcommand; returns the exit code.
pub async fn run(cmd: TemplateCommand, url: Option<String>, data_dir: &Path) -> Result<i32> {
    let client = Client::resolve(url, data_dir)?;
    match cmd {
        TemplateCommand::Build {
            name,
            file,
            context,
            vcpus,
            memory,
            force,
            timeout,
            detach,
            registry_username,
        } => {
            let registry_auth = match registry_username {
                Some(username) => {
                    let password = std::env::var("PLATINUM_REGISTRY_PASSWORD").context(
                        "--registry-username needs the password in PLATINUM_REGISTRY_PASSWORD",
                    )?;
                    Some(json!({ "username": username, "password": password }))
                }
                None => None,
            };
            let dockerfile = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let context_dir = context.unwrap_or_else(|| {
                file.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("."))
            });
            let context_key = if copies_files(&dockerfile) {
                Some(upload_context(&client, &context_dir).await?)
            } else {
                None
            };
            let body = json!({
                "name": name,
                "dockerfile": dockerfile,
                "context": context_key,
                "vcpus": vcpus,
                "memory_mib": memory,
                "force": force,
                "timeout_secs": timeout,
                "registry_auth": registry_auth,
            });
            let build: Value = client
                .json(client.request(Method::POST, "/v1/templates").json(&body))
                .await?;
            let id = build["id"].as_str().unwrap_or_default().to_string();
            if detach {
                println!("{}", serde_json::to_string_pretty(&build)?);
                return Ok(0);
            }
            eprintln!("build {id} of template {name}");
            follow(&client, &id, true).await
        }
        TemplateCommand::Ls { json } => {
            let list: Value = client
                .json(client.request(Method::GET, "/v1/templates"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list["templates"])?);
                return Ok(0);
            }
            println!(
                "{:<28} {:<8} {:<10} {:<22} UPDATED",
                "NAME", "KIND", "SIZE", "BASE"
            );
            for t in list["templates"].as_array().into_iter().flatten() {
                let custom = &t["custom"];
                let size = match (custom["vcpus"].as_u64(), custom["memory_mib"].as_u64()) {
                    (Some(c), Some(m)) => format!("{c}x{m}"),
                    _ => "-".into(),
                };
                println!(
                    "{:<28} {:<8} {:<10} {:<22} {}",
                    t["name"].as_str().unwrap_or_default(),
                    if t["builtin"].as_bool().unwrap_or(false) {
                        "builtin"
                    } else {
                        "custom"
                    },
                    size,
                    custom["from_image"]
                        .as_str()
                        .or(custom["base"].as_str())
                        .unwrap_or("-"),
                    custom["updated_at"].as_str().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        TemplateCommand::Logs {
            build,
            follow: keep,
        } => follow(&client, &build, keep).await,
        TemplateCommand::Rm { names } => {
            for name in names {
                client
                    .send(client.request(Method::DELETE, &format!("/v1/templates/{name}")))
                    .await
                    .with_context(|| format!("deleting template {name}"))?;
                eprintln!("deleted template {name}");
            }
            Ok(0)
        }
    }
}

/// Whether a Dockerfile has `COPY` or `ADD` lines (and so needs its context uploaded).
fn copies_files(dockerfile: &str) -> bool {
    dockerfile.lines().any(|l| {
        let word = l.split_whitespace().next().unwrap_or("");
        word.eq_ignore_ascii_case("COPY") || word.eq_ignore_ascii_case("ADD")
    })
}

/// Packs `dir` (stable order, owners and times) and uploads it unless the server has it;
/// returns its key.
async fn upload_context(client: &Client, dir: &Path) -> Result<String> {
    let out = tokio::process::Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "--exclude=.git",
            "-cf",
            "-",
            "-C",
        ])
        .arg(dir)
        .arg(".")
        .output()
        .await
        .context("running tar to pack the build context")?;
    if !out.status.success() {
        bail!(
            "packing the build context {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let key = hex::encode(Sha256::digest(&out.stdout));
    let path = format!("/v1/template-files/{key}");
    let have = client
        .request(Method::HEAD, &path)
        .send()
        .await
        .context("asking the server for the build context")?;
    if have.status().is_success() {
        eprintln!(
            "build context {} unchanged ({} bytes)",
            &key[..12],
            out.stdout.len()
        );
    } else {
        eprintln!("uploading the build context ({} bytes)", out.stdout.len());
        client
            .send(client.request(Method::PUT, &path).body(out.stdout))
            .await?;
    }
    Ok(key)
}

/// Prints a build's log (following it with `keep`); 0 when it ended ready, else 1.
async fn follow(client: &Client, id: &str, keep: bool) -> Result<i32> {
    let resp = client
        .send(
            client
                .request(Method::GET, &format!("/v1/template-builds/{id}/logs"))
                .query(&[("follow", keep)]),
        )
        .await?;
    if !keep {
        let page: Value = resp.json().await?;
        for e in page["entries"].as_array().into_iter().flatten() {
            println!("{}", e["message"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let mut body = resp.bytes_stream();
    let mut pending = Vec::new();
    let mut last = Value::Null;
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk?);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let v: Value = serde_json::from_slice(&line).unwrap_or_default();
            if v.get("build").is_some() || v.get("error").is_some() {
                last = v;
            } else {
                println!("{}", v["message"].as_str().unwrap_or_default());
            }
        }
    }
    let build = &last["build"];
    match build["status"].as_str() {
        Some("ready") => {
            eprintln!(
                "template {} ready ({} steps from cache, {} run)",
                build["template"].as_str().unwrap_or_default(),
                build["cached_steps"],
                build["run_steps"]
            );
            Ok(0)
        }
        _ => {
            let why = build["failure"]["message"]
                .as_str()
                .or(last["error"].as_str())
                .unwrap_or("the log ended before the build did");
            eprintln!("build {id} failed: {why}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_and_add_lines_need_the_context() {
        assert!(copies_files("FROM a\n  copy x /y\n"));
        assert!(copies_files("FROM a\nADD x /y\n"));
        assert!(!copies_files("FROM a\nRUN cp x y # COPY\n"));
    }
}
