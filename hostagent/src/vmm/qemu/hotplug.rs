//! Volumes hot-plugged into a running QEMU VM over QMP.
//!
//! `-M microvm` cannot hot-plug virtio-mmio devices, so volumes are SCSI disks on the virtio-scsi
//! controller every VM has ([`super::cmdline::SCSI_CONTROLLER`]). Adding one hands QEMU the image
//! as descriptors (a QEMU that dropped its privileges cannot open a path), then `blockdev-add`s a
//! raw node over them and `device_add`s a `scsi-hd` at the volume's slot; the guest kernel sees
//! the new target through virtio-scsi's hotplug event. Removing one deletes the device, waits
//! until its node is free, deletes the node and closes QEMU's descriptors. Each step that fails
//! undoes the ones before it, so a failed add leaves nothing behind.

use serde_json::json;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::cmdline::{self, SCSI_CONTROLLER};
use super::qmp::Qmp;
use crate::error::{Error, Result};
use crate::vmm::DiskSpec;

/// How long a removed SCSI disk may take to let go of its node.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(10);

/// The opaque label of a volume's descriptors (`<id>-rw`, `<id>-ro`, as on the command line).
fn label(id: &str, access: &str) -> String {
    format!("{id}-{access}")
}

/// Hot-adds volume `disk` (which has a slot) to the VM behind `qmp`.
pub async fn add_volume(qmp: &Qmp, disk: &DiskSpec) -> Result<()> {
    let slot = disk.volume_slot.ok_or_else(|| {
        Error::Invalid(format!(
            "disk {} is not a volume: a QEMU microvm hot-adds volumes only",
            disk.id
        ))
    })?;
    let (ro, rw) = super::driver::open_image(disk)?;
    let set = qmp
        .add_fd_to(ro.as_fd(), None, Some(&label(&disk.id, "ro")))
        .await?;
    let added = async {
        if let Some(rw) = &rw {
            qmp.add_fd_to(rw.as_fd(), Some(set), Some(&label(&disk.id, "rw")))
                .await?;
        }
        qmp.run(
            "blockdev-add",
            Some(json!({
                "driver": "raw",
                "node-name": disk.id,
                "read-only": disk.readonly,
                "discard": "unmap",
                "file": {
                    "driver": "file",
                    "filename": format!("/dev/fdset/{set}"),
                    "locking": "off",
                },
            })),
        )
        .await?;
        let device = qmp
            .run(
                "device_add",
                Some(json!({
                    "driver": "scsi-hd",
                    "id": cmdline::volume_device_id(&disk.id),
                    "bus": format!("{SCSI_CONTROLLER}.0"),
                    "channel": 0,
                    "scsi-id": slot,
                    "lun": 0,
                    "drive": disk.id,
                    "serial": disk.id,
                })),
            )
            .await;
        if let Err(e) = device {
            let _ = qmp
                .run("blockdev-del", Some(json!({ "node-name": disk.id })))
                .await;
            return Err(e);
        }
        Ok(())
    }
    .await;
    if added.is_err() {
        let _ = qmp.remove_fd_set(set).await;
    }
    added
}

/// Hot-removes volume `id` from the VM behind `qmp`. The guest must have stopped using it.
pub async fn remove_volume(qmp: &Qmp, id: &str) -> Result<()> {
    qmp.run(
        "device_del",
        Some(json!({ "id": cmdline::volume_device_id(id) })),
    )
    .await?;
    // SCSI unplug needs no guest cooperation, but the node is released only once the device is
    // gone: retry deleting it until then.
    let started = Instant::now();
    loop {
        match qmp
            .run("blockdev-del", Some(json!({ "node-name": id })))
            .await
        {
            Ok(()) => break,
            Err(e) if started.elapsed() < UNPLUG_TIMEOUT => {
                tracing::debug!(volume = id, error = %e, "volume node still in use; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    for set in qmp.fd_sets_labelled(&format!("{id}-")).await? {
        qmp.remove_fd_set(set).await?;
    }
    Ok(())
}
