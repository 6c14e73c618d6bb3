//! `platinum doctor`: what this host has, which VMM and accelerator Platinum will use and why,
//! and what is missing.

use anyhow::Result;
use clap::Args;
use platinum_hostagent::accel;
use platinum_hostagent::image::ImageCache;
use platinum_hostagent::vmm::{VmmKind, select};
use serde_json::json;
use std::path::Path;

use crate::{agent_binary, deps};

/// Options of `platinum doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks; exit code 1 when the host cannot run sandboxes.
pub async fn run(args: DoctorArgs, data_dir: &Path) -> Result<i32> {
    let found = deps::check();
    let mut problems = deps::problems(&found);
    let accel = accel::detect();
    let agent = agent_binary::locate(None);
    if let Err(e) = &agent {
        problems.push(e.clone());
    }
    let cache = ImageCache::new(ImageCache::default_root());
    let images = cache.list().unwrap_or_default();
    let complete_images = images
        .iter()
        .filter(|e| e.manifest.is_some() && !e.partial)
        .count();
    let (accel_name, accel_reason) = match &accel {
        Ok(a) => (format!("{:?}", a.accel).to_lowercase(), a.reason.clone()),
        Err(e) => ("unknown".into(), e.to_string()),
    };
    // The same choice the server makes: Cloud Hypervisor where it can run, else QEMU.
    let (vmm_kind, vmm_name, vmm_reason, ch_missing) = match select::detect(accel.ok()) {
        Ok(s) => {
            let name = match s.kind {
                VmmKind::CloudHypervisor => "Cloud Hypervisor",
                VmmKind::Qemu => "QEMU",
            };
            (json!(s.kind), name, s.reason, s.missing)
        }
        Err(e) => {
            problems.push(format!("choosing the VMM: {e}"));
            (json!("unknown"), "unknown", e.to_string(), Vec::new())
        }
    };
    if args.json {
        let report = json!({
            "ok": problems.is_empty(),
            "problems": problems,
            "vmm": vmm_kind,
            "vmm_reason": vmm_reason,
            "cloud_hypervisor_missing": ch_missing,
            "accel": accel_name,
            "accel_reason": accel_reason,
            "agent_binary": agent.as_ref().ok(),
            "data_dir": data_dir,
            "cache_dir": cache.root(),
            "cached_image_entries": complete_images,
            "dependencies": found,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("VMM:          {vmm_name}  ({vmm_reason})");
        println!("Accelerator:  {accel_name}  ({accel_reason})");
        match &agent {
            Ok(p) => println!("Guest agent:  {}", p.display()),
            Err(_) => println!("Guest agent:  MISSING"),
        }
        println!("Data dir:     {}", data_dir.display());
        println!(
            "Image cache:  {} ({complete_images} complete entries)",
            cache.root().display()
        );
        println!("Dependencies:");
        for d in &found {
            let state = match (&d.found, d.required) {
                (Some(_), _) => "ok",
                (None, true) => "MISSING",
                (None, false) => "missing (optional)",
            };
            println!(
                "  {:<20} {:<20} {}",
                d.program,
                state,
                d.version.as_deref().unwrap_or("")
            );
        }
        if problems.is_empty() {
            println!("This host can run Platinum sandboxes.");
        } else {
            println!("Problems:");
            for p in &problems {
                println!("  - {p}");
            }
        }
    }
    Ok(if problems.is_empty() { 0 } else { 1 })
}
