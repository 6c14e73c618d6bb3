//! `platinum keys`: manage API keys on a running server (`/v1/keys`), and rotate its snapshot
//! signing key (`/v1/snapshot-keys/rotate`).
//!
//! `create` and `rotate` print the new key alone on stdout (so `E2B_API_KEY=$(platinum keys create
//! --name ci --format e2b)` works) and its id on stderr; with `--json` they print the whole answer.
//! The secret is shown only then: listings never contain it.

use anyhow::{Result, bail};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;

use crate::client::Client;

/// Form of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyFormatArg {
    /// `pt_` followed by 40 letters and digits.
    Platinum,
    /// `e2b_` followed by 40 hex digits: the form E2B's SDKs accept.
    E2b,
}

impl KeyFormatArg {
    fn wire(self) -> &'static str {
        match self {
            KeyFormatArg::Platinum => "platinum",
            KeyFormatArg::E2b => "e2b",
        }
    }
}

/// API key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List API keys (never their secrets).
    Ls {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Create a key and print it (shown only this once).
    Create {
        /// A name for the key, e.g. the client that will use it.
        #[arg(long)]
        name: String,
        /// Form of the key: `e2b` for E2B's SDKs (they refuse any other form).
        #[arg(long, value_enum, default_value = "platinum")]
        format: KeyFormatArg,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke keys: they are refused from then on.
    Revoke {
        /// Key ids (see `platinum keys ls`).
        #[arg(required = true)]
        ids: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replace an API key by a new one with the same name and format, revoking the old one;
    /// prints the new key (shown only this once). Without an id: make a new snapshot signing key
    /// current (older ones keep verifying the snapshots they signed) and print its key id.
    Rotate {
        /// API key id; leave out to rotate the snapshot signing key.
        id: Option<String>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn key_path(id: &str) -> Result<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not an API key id (see `platinum keys ls`)");
    }
    Ok(format!("/v1/keys/{id}"))
}

fn print_created(created: &Value, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(created)?);
    } else {
        println!("{}", created["key"].as_str().unwrap_or_default());
        eprintln!(
            "API key {} ({}); store it now, it is not shown again",
            created["id"].as_str().unwrap_or_default(),
            created["name"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs a keys subcommand; returns the exit code.
pub async fn run(cmd: KeysCommand, url: Option<String>, data_dir: &Path) -> Result<i32> {
    let client = Client::resolve(url, data_dir)?;
    match cmd {
        KeysCommand::Ls { all, json } => {
            let req = client
                .request(Method::GET, "/v1/keys")
                .query(&[("include_revoked", all)]);
            let list: Value = client.json(req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list["keys"])?);
            } else {
                println!(
                    "{:<14} {:<20} {:<12} {:<9} {:<26} LAST USED",
                    "ID", "NAME", "PREFIX", "FORMAT", "CREATED"
                );
                for k in list["keys"].as_array().into_iter().flatten() {
                    let revoked = k["revoked"].as_bool().unwrap_or(false);
                    let prefix = format!("{}…", k["prefix"].as_str().unwrap_or(""));
                    println!(
                        "{:<14} {:<20} {:<12} {:<9} {:<26} {}{}",
                        k["id"].as_str().unwrap_or(""),
                        k["name"].as_str().unwrap_or(""),
                        prefix,
                        k["format"].as_str().unwrap_or(""),
                        k["created_at"].as_str().unwrap_or(""),
                        k["last_used_at"].as_str().unwrap_or("never"),
                        if revoked { "  (revoked)" } else { "" }
                    );
                }
            }
            Ok(0)
        }
        KeysCommand::Create { name, format, json } => {
            let body = json!({"name": name, "format": format.wire()});
            let created: Value = client
                .json(client.request(Method::POST, "/v1/keys").json(&body))
                .await?;
            print_created(&created, json)?;
            Ok(0)
        }
        KeysCommand::Revoke { ids, json } => {
            let mut failed = 0;
            let mut results = Vec::new();
            for id in &ids {
                let outcome = match key_path(id) {
                    Ok(path) => {
                        client
                            .json::<Value>(client.request(Method::DELETE, &path))
                            .await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(k) => {
                        if !json {
                            println!("revoked {id}");
                        }
                        results.push(k);
                    }
                    Err(e) => {
                        failed += 1;
                        if !json {
                            eprintln!("{id}: {e}");
                        }
                        results.push(json!({"id": id, "revoked": false, "error": e.to_string()}));
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        KeysCommand::Rotate { id: None, json } => {
            let rotated: Value = client
                .json(client.request(Method::POST, "/v1/snapshot-keys/rotate"))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rotated)?);
            } else {
                println!("{}", rotated["kid"].as_str().unwrap_or_default());
                eprintln!("new snapshot signing key; earlier keys still verify their snapshots");
            }
            Ok(0)
        }
        KeysCommand::Rotate { id: Some(id), json } => {
            let path = format!("{}/rotate", key_path(&id)?);
            let created: Value = client.json(client.request(Method::POST, &path)).await?;
            print_created(&created, json)?;
            Ok(0)
        }
    }
}
