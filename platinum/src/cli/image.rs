//! `platinum image`: build, list and verify cached guest images.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use platinum_hostagent::image::{ImageCache, Progress, builtin_templates, template};
use std::path::PathBuf;

use crate::agent_binary;

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build (or reuse) the images of templates; idempotent.
    Build {
        /// Template to build (repeatable; default `base`).
        #[arg(long = "template", short = 't')]
        templates: Vec<String>,
        /// Static guest agent binary.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Cache directory (default ~/.cache/platinum).
        #[arg(long, env = "PLATINUM_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List templates and cache entries.
    Ls {
        /// Cache directory.
        #[arg(long, env = "PLATINUM_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every cache entry against its manifest.
    Verify {
        /// Cache directory.
        #[arg(long, env = "PLATINUM_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// Runs an image subcommand.
pub async fn run(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            templates,
            agent,
            cache_dir,
            json,
        } => {
            let cache = ImageCache::new(cache_dir.unwrap_or_else(ImageCache::default_root));
            let agent = agent_binary::locate(agent.as_deref()).map_err(anyhow::Error::msg)?;
            let names = if templates.is_empty() {
                vec!["base".to_string()]
            } else {
                templates
            };
            let mut built = Vec::new();
            for name in names {
                let tpl = template(&name).with_context(|| {
                    let known: Vec<String> =
                        builtin_templates().into_iter().map(|t| t.name).collect();
                    format!("unknown template {name:?} (known: {})", known.join(", "))
                })?;
                let img = cache.ensure_image(&tpl, &agent, &Progress::new()).await?;
                if !json {
                    println!(
                        "{}: {} (kernel {})",
                        img.template, img.id, img.kernel_release
                    );
                    println!("  kernel    {}", img.kernel.display());
                    println!("  initramfs {}", img.initramfs.display());
                    println!("  rootfs    {}", img.rootfs.display());
                }
                built.push(serde_json::json!({
                    "template": img.template, "id": img.id, "kernel_release": img.kernel_release,
                    "kernel": img.kernel, "initramfs": img.initramfs, "rootfs": img.rootfs,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&built)?);
            }
            Ok(())
        }
        ImageCommand::Ls { cache_dir, json } => {
            let cache = ImageCache::new(cache_dir.unwrap_or_else(ImageCache::default_root));
            let entries = cache.list()?;
            if json {
                let v: Vec<_> = entries
                    .iter()
                    .map(|e| serde_json::json!({"kind": format!("{:?}", e.kind).to_lowercase(), "key": e.key, "dir": e.dir,
                        "complete": e.manifest.is_some() && !e.partial, "bytes_on_disk": e.bytes_on_disk}))
                    .collect();
                let t: Vec<_> = builtin_templates()
                    .into_iter()
                    .map(|t| serde_json::json!({"name": t.name, "description": t.description}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"templates": t, "entries": v})
                    )?
                );
                return Ok(());
            }
            println!("Templates:");
            for t in builtin_templates() {
                println!("  {:<22} {}", t.name, t.description);
            }
            println!("Cache ({}):", cache.root().display());
            for e in entries {
                let status = if e.partial {
                    "partial"
                } else if e.manifest.is_some() {
                    "ok"
                } else {
                    "incomplete"
                };
                println!(
                    "  {:<10} {} {:>8} MiB  {status}",
                    format!("{:?}", e.kind).to_lowercase(),
                    e.key,
                    e.bytes_on_disk >> 20
                );
            }
            Ok(())
        }
        ImageCommand::Verify { cache_dir } => {
            let cache = ImageCache::new(cache_dir.unwrap_or_else(ImageCache::default_root));
            let mut bad = 0;
            for e in cache.list()?.into_iter().filter(|e| !e.partial) {
                match cache.verify(&e, &Progress::new()).await {
                    Ok(()) => println!("ok      {:?} {}", e.kind, e.key),
                    Err(err) => {
                        bad += 1;
                        println!("CORRUPT {:?} {}: {err}", e.kind, e.key);
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} cache entries are corrupt; they are rebuilt on next use");
            }
            Ok(())
        }
    }
}
