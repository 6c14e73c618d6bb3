//! Test support for engine unit tests: a host agent that runs no VMs, and an engine over it with
//! an in-memory store.

use async_trait::async_trait;
use platinum_hostagent::guest::GuestClient;
use platinum_hostagent::host::snapshot::{AfterSave, RestoreVm, SaveReport};
use platinum_hostagent::host::{CreateVm, HostAgent, HostEvent, HostInfo, VmStatus};
use platinum_hostagent::vmm::{Accel, TransportKind, VmmKind};
use platinum_hostagent::volume_files::{VolumeAttrs, VolumeEntry};
use std::sync::Arc;

use crate::engine::Engine;
use crate::store::sqlite::SqliteStore;

/// An engine over [`NoVms`] and an in-memory store (returned too, to seed rows directly).
pub(crate) async fn engine() -> (Arc<Engine>, Arc<SqliteStore>) {
    engine_with(Default::default()).await
}

/// [`engine`] with a data directory (snapshots and their keys live there).
pub(crate) async fn engine_in(data_dir: &std::path::Path) -> (Arc<Engine>, Arc<SqliteStore>) {
    engine_with(crate::config::EngineConfig {
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    })
    .await
}

async fn engine_with(config: crate::config::EngineConfig) -> (Arc<Engine>, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let engine = Engine::new(config, store.clone(), Arc::new(NoVms))
        .await
        .unwrap();
    (engine, store)
}

/// Another engine over the same store and data directory, as after a server restart.
pub(crate) async fn reopen(store: &Arc<SqliteStore>, data_dir: &std::path::Path) -> Arc<Engine> {
    let config = crate::config::EngineConfig {
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    };
    Engine::new(config, store.clone(), Arc::new(NoVms))
        .await
        .unwrap()
}

/// A sandbox row in `state`, for seeding the store.
pub(crate) fn sandbox(id: &str, state: crate::model::SandboxState) -> crate::model::Sandbox {
    crate::model::Sandbox::new_row(id.into(), "base".into(), 1, 512, state)
}

/// A host that runs no VMs, for commands that never need one.
pub(crate) struct NoVms;

fn no_vms<T>() -> platinum_hostagent::Result<T> {
    Err(platinum_hostagent::Error::Unsupported(
        "this test host runs no VMs".into(),
    ))
}

#[async_trait]
impl HostAgent for NoVms {
    fn info(&self) -> HostInfo {
        HostInfo {
            id: "test".into(),
            vmm: VmmKind::Qemu,
            accel: Accel::Tcg,
            reason: "test".into(),
            transport: TransportKind::VirtioSerial,
            network_unavailable: Some("test".into()),
            vmm_version: "10.0.2".into(),
            cpu_model: "test".into(),
            cpu_flags: Vec::new(),
            memory: "test".into(),
        }
    }
    async fn set_env(
        &self,
        _: &str,
        _: std::collections::BTreeMap<String, String>,
    ) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn set_egress(
        &self,
        _: &str,
        _: platinum_hostagent::net::EgressRules,
    ) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn set_secrets(
        &self,
        _: &str,
        _: platinum_hostagent::broker::BrokeredEgress,
    ) -> platinum_hostagent::Result<()> {
        // No VM here ever sends a request to broker.
        Ok(())
    }
    async fn prepare_template(&self, _: &str) -> platinum_hostagent::Result<String> {
        no_vms()
    }
    fn templates(&self) -> Vec<String> {
        Vec::new()
    }
    async fn commit_layer(&self, _: &str, _: &str) -> platinum_hostagent::Result<u64> {
        no_vms()
    }
    fn has_layer(&self, _: &str) -> bool {
        false
    }
    async fn import_image(
        &self,
        _: platinum_hostagent::image::oci::ImportImage,
        _: &(dyn Fn(String) + Send + Sync),
    ) -> platinum_hostagent::Result<platinum_hostagent::image::oci::ImportedImage> {
        no_vms()
    }
    async fn create(&self, _: CreateVm) -> platinum_hostagent::Result<VmStatus> {
        no_vms()
    }
    async fn start(&self, _: &str) -> platinum_hostagent::Result<VmStatus> {
        no_vms()
    }
    async fn stop(&self, _: &str) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    // Pause and resume have nothing to stop or restart: they succeed, so the state machine
    // around them can be tested.
    async fn pause(&self, _: &str) -> platinum_hostagent::Result<()> {
        Ok(())
    }
    async fn resume(&self, _: &str) -> platinum_hostagent::Result<()> {
        Ok(())
    }
    async fn save(
        &self,
        _: &str,
        _: &std::path::Path,
        _: AfterSave,
    ) -> platinum_hostagent::Result<SaveReport> {
        no_vms()
    }
    async fn restore(&self, _: RestoreVm) -> platinum_hostagent::Result<VmStatus> {
        no_vms()
    }
    async fn destroy(&self, _: &str) -> platinum_hostagent::Result<()> {
        Ok(())
    }
    async fn archive(
        &self,
        _: &str,
        _: &[platinum_hostagent::archive::ArchiveDir],
    ) -> platinum_hostagent::Result<platinum_hostagent::archive::Archived> {
        no_vms()
    }
    async fn restore_archive(
        &self,
        _: &str,
        _: &platinum_hostagent::archive::Archive,
        _: &[platinum_hostagent::archive::ArchiveDir],
    ) -> platinum_hostagent::Result<platinum_hostagent::archive::Restored> {
        no_vms()
    }
    async fn upload_snapshot(
        &self,
        _: &std::path::Path,
    ) -> platinum_hostagent::Result<platinum_hostagent::archive::Archived> {
        no_vms()
    }
    async fn download_snapshot(
        &self,
        _: &platinum_hostagent::archive::Archive,
        _: &std::path::Path,
    ) -> platinum_hostagent::Result<platinum_hostagent::archive::Restored> {
        no_vms()
    }
    async fn create_volume(&self, _: &str, _: u64) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn delete_volume(&self, _: &str) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn attach_volume(&self, _: &str, _: &str, _: bool) -> platinum_hostagent::Result<u32> {
        no_vms()
    }
    async fn detach_volume(&self, _: &str, _: &str) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn volume_stat(&self, _: &str, _: &str) -> platinum_hostagent::Result<VolumeEntry> {
        no_vms()
    }
    async fn volume_list(
        &self,
        _: &str,
        _: &str,
        _: u32,
    ) -> platinum_hostagent::Result<Vec<VolumeEntry>> {
        no_vms()
    }
    async fn volume_read(
        &self,
        _: &str,
        _: &str,
    ) -> platinum_hostagent::Result<(std::fs::File, u64)> {
        no_vms()
    }
    async fn volume_write(
        &self,
        _: &str,
        _: &str,
        _: platinum_hostagent::share::ByteStream,
        _: VolumeAttrs,
        _: u64,
    ) -> platinum_hostagent::Result<VolumeEntry> {
        no_vms()
    }
    async fn volume_make_dir(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: VolumeAttrs,
    ) -> platinum_hostagent::Result<(VolumeEntry, bool)> {
        no_vms()
    }
    async fn volume_remove(&self, _: &str, _: &str) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn volume_set_attrs(
        &self,
        _: &str,
        _: &str,
        _: VolumeAttrs,
    ) -> platinum_hostagent::Result<VolumeEntry> {
        no_vms()
    }
    async fn share_stat(
        &self,
        _: &str,
        _: &str,
    ) -> platinum_hostagent::Result<platinum_hostagent::share::ShareEntry> {
        no_vms()
    }
    async fn share_list(
        &self,
        _: &str,
        _: &str,
    ) -> platinum_hostagent::Result<Vec<platinum_hostagent::share::ShareEntry>> {
        no_vms()
    }
    async fn share_read(
        &self,
        _: &str,
        _: &str,
    ) -> platinum_hostagent::Result<(std::fs::File, u64)> {
        no_vms()
    }
    async fn share_write(
        &self,
        _: &str,
        _: &str,
        _: platinum_hostagent::share::ByteStream,
    ) -> platinum_hostagent::Result<u64> {
        no_vms()
    }
    async fn share_remove(&self, _: &str, _: &str, _: bool) -> platinum_hostagent::Result<()> {
        no_vms()
    }
    async fn guest(&self, _: &str) -> platinum_hostagent::Result<GuestClient> {
        no_vms()
    }
    async fn console_tail(&self, _: &str, _: usize) -> platinum_hostagent::Result<String> {
        no_vms()
    }
    async fn running(&self) -> Vec<String> {
        Vec::new()
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        tokio::sync::broadcast::channel(1).1
    }
    fn disk_free_bytes(&self) -> Option<u64> {
        None
    }
}
