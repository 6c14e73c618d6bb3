//! Contract tests of the Cloud Hypervisor driver against CH v53's OpenAPI document (read from
//! the shared specs at test time; where it is absent every test fails under `CI` and otherwise
//! skips with a message).
//!
//! - every endpoint the driver calls exists with its method, and takes a body exactly when the
//!   driver sends one, of the component the driver builds;
//! - every request body the driver builds validates: `VmConfig` for `vm.create` over a spread of
//!   specs, `DiskConfig` (`vm.add-disk`), `FsConfig` (`vm.add-fs`), `VmSnapshotConfig`,
//!   `RestoreConfig` in both memory modes;
//! - the oracle is not vacuous: misspelled fields, wrong enum spellings and out-of-range values
//!   fail it;
//! - a snapshot's `config.json`, rewritten for a clone, keeps its device ids and order, changes
//!   only paths, and still validates;
//! - the reply shapes the driver decodes (`VmmPingResponse`, `VmInfo`, `PciDeviceInfo`) are the
//!   documented ones.

#[path = "cloud_hypervisor_support/schema.rs"]
mod schema;

use std::path::{Path, PathBuf};

use platinum_hostagent::vmm::cloud_hypervisor::api::{
    ChVmState, Endpoint, PciDeviceInfo, VmInfoReply, VmmPing,
};
use platinum_hostagent::vmm::cloud_hypervisor::config::{self, MemoryRestoreMode};
use platinum_hostagent::vmm::cloud_hypervisor::paths::{self, ChPaths};
use platinum_hostagent::vmm::cloud_hypervisor::snapshot::{RestoreIdentity, rewrite_config};
use platinum_hostagent::vmm::{DiskFormat, DiskSpec, FsSpec, NetSpec, TransportKind, VmSpec};
use schema::ChSchema;
use serde_json::{Value, json};

/// The component each body-carrying endpoint sends.
fn body_component(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::VmCreate => Some("VmConfig"),
        Endpoint::VmSnapshot => Some("VmSnapshotConfig"),
        Endpoint::VmRestore => Some("RestoreConfig"),
        Endpoint::VmAddDisk => Some("DiskConfig"),
        Endpoint::VmAddFs => Some("FsConfig"),
        Endpoint::VmRemoveDevice => Some("VmRemoveDevice"),
        _ => None,
    }
}

fn spec(dir: &str) -> VmSpec {
    let dir = PathBuf::from(dir);
    VmSpec {
        id: "sbx1".to_string(),
        dir: dir.clone(),
        kernel: PathBuf::from("/var/cache/platinum/images/kernel/k1/vmlinux"),
        initramfs: PathBuf::from("/var/cache/platinum/images/initramfs/i1/initramfs.cpio.gz"),
        cmdline: "console=ttyS0 panic=-1 root=/dev/vda rw rootfstype=ext4 quiet loglevel=1 platinum.hostname=sbx1".to_string(),
        disks: vec![DiskSpec {
            id: "rootfs".to_string(),
            path: dir.join("rootfs.disk"),
            format: DiskFormat::Raw,
            readonly: false,
            volume_slot: None,
        }],
        vcpus: 2,
        memory_mib: 1024,
        memory_file: None,
        transport: TransportKind::Vsock,
        vsock_cid: 3,
        console_log: dir.join("console.log"),
        net: None,
        share: None,
    }
}

/// Specs covering every branch of the body builder.
fn specs() -> Vec<VmSpec> {
    let base = spec("/var/lib/platinum/sandboxes/sbx1");
    let mut with_net = base.clone();
    with_net.net = Some(NetSpec {
        tap: "pt-sbx1".to_string(),
        mac: "52:54:00:12:34:56".to_string(),
    });
    let mut many_disks = with_net.clone();
    many_disks.vcpus = 8;
    many_disks.memory_mib = 64;
    many_disks.disks.push(DiskSpec {
        id: "vol0".to_string(),
        path: PathBuf::from("/var/lib/platinum/volumes/vol0.qcow2"),
        format: DiskFormat::Qcow2,
        readonly: false,
        volume_slot: None,
    });
    many_disks.disks.push(DiskSpec {
        id: "ro-data".to_string(),
        path: PathBuf::from("/srv/data.raw"),
        format: DiskFormat::Raw,
        readonly: true,
        volume_slot: None,
    });
    let mut no_disks = base.clone();
    no_disks.disks.clear();
    no_disks.vsock_cid = 42;
    vec![base, with_net, many_disks, no_disks]
}

fn validated_paths(spec: &VmSpec) -> ChPaths {
    paths::validate(spec).expect("valid spec")
}

#[test]
fn every_endpoint_exists_with_its_method_and_body() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    for endpoint in Endpoint::ALL {
        let method = endpoint.method().as_str().to_ascii_lowercase();
        let op = schema
            .operation(&method, endpoint.name())
            .unwrap_or_else(|| panic!("{} /{} is not in the CH v53 API", method, endpoint.name()));
        assert_eq!(
            op.request.as_deref(),
            body_component(endpoint),
            "request body of {}",
            endpoint.name()
        );
        if op.request.is_some() {
            assert!(
                op.body_required,
                "{} body must be required",
                endpoint.name()
            );
        }
        assert!(
            op.responses.keys().any(|s| (200..300).contains(s)),
            "{} documents no success status",
            endpoint.name()
        );
    }
}

#[test]
fn vm_create_bodies_validate() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    for spec in specs() {
        let paths = validated_paths(&spec);
        for shared in [false, true] {
            let body =
                serde_json::to_value(config::vm_config(&spec, &paths, shared)).expect("json");
            schema.assert_valid("VmConfig", &body);
        }
    }
}

#[test]
fn hot_plug_snapshot_and_restore_bodies_validate() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    for spec in specs() {
        for disk in &spec.disks {
            let body = serde_json::to_value(config::disk_config(disk)).expect("json");
            schema.assert_valid("DiskConfig", &body);
            let remove = platinum_hostagent::vmm::cloud_hypervisor::api::RemoveDevice {
                id: disk.id.clone(),
            };
            schema.assert_valid(
                "VmRemoveDevice",
                &serde_json::to_value(remove).expect("json"),
            );
        }
    }
    let fs = FsSpec {
        id: "fs0".to_string(),
        tag: "workspace".to_string(),
        socket: PathBuf::from("/var/lib/platinum/sandboxes/sbx1/virtiofsd.sock"),
    };
    schema.assert_valid(
        "FsConfig",
        &serde_json::to_value(config::fs_config(&fs)).expect("json"),
    );
    let dir = Path::new("/var/lib/platinum/snapshots/s1");
    schema.assert_valid(
        "VmSnapshotConfig",
        &serde_json::to_value(config::snapshot_config(dir)).expect("json"),
    );
    for mode in [MemoryRestoreMode::Copy, MemoryRestoreMode::OnDemand] {
        schema.assert_valid(
            "RestoreConfig",
            &serde_json::to_value(config::restore_config(dir, mode)).expect("json"),
        );
    }
}

#[test]
fn the_oracle_rejects_what_ch_would_misread() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    let spec = spec("/var/lib/platinum/sandboxes/sbx1");
    let good = serde_json::to_value(config::vm_config(&spec, &validated_paths(&spec), true))
        .expect("json");
    schema.assert_valid("VmConfig", &good);
    type Breakage = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Breakage)> = vec![
        (
            "a misspelled field",
            Box::new(|v| v["cpus"]["boot_vcpu"] = json!(2)),
        ),
        (
            "an unknown top-level field",
            Box::new(|v| v["seccomp"] = json!(true)),
        ),
        (
            "a lowercase enum",
            Box::new(|v| v["disks"][0]["image_type"] = json!("raw")),
        ),
        ("a reserved CID", Box::new(|v| v["vsock"]["cid"] = json!(2))),
        (
            "no payload",
            Box::new(|v| {
                v.as_object_mut().expect("object").remove("payload");
            }),
        ),
        (
            "zero vCPUs",
            Box::new(|v| v["cpus"]["boot_vcpus"] = json!(0)),
        ),
        (
            "a string size",
            Box::new(|v| v["memory"]["size"] = json!("1G")),
        ),
        (
            "a console field on the serial port",
            Box::new(|v| v["serial"]["iommu"] = json!(false)),
        ),
    ];
    for (what, change) in broken {
        let mut body = good.clone();
        change(&mut body);
        assert!(
            schema.check("VmConfig", &body).is_err(),
            "the oracle accepted {what}"
        );
    }
    let mut restore = serde_json::to_value(config::restore_config(
        Path::new("/s"),
        MemoryRestoreMode::Copy,
    ))
    .expect("json");
    restore["memory_restore_mode"] = json!("copy");
    assert!(schema.check("RestoreConfig", &restore).is_err());
    assert!(
        schema
            .check("DiskConfig", &json!({"path": "/d", "pci_device_id": 256}))
            .is_err()
    );
}

/// A snapshot's `config.json` as CH v53 writes it for a VM this driver booted and then
/// hot-plugged a disk and a share into: the driver's fields plus the defaults CH serializes.
fn snapshot_config_json(spec: &VmSpec) -> Value {
    let paths = ChPaths::new(&spec.dir);
    let mut config = serde_json::to_value(config::vm_config(spec, &paths, true)).expect("json");
    let disk_defaults = json!({
        "direct": false, "iommu": false, "num_queues": 1, "queue_size": 128,
        "vhost_user": false, "pci_segment": 0, "sparse": true, "backing_files": false
    });
    for disk in config["disks"].as_array_mut().expect("disks") {
        for (key, value) in disk_defaults.as_object().expect("defaults") {
            disk.as_object_mut()
                .expect("disk")
                .entry(key.clone())
                .or_insert(value.clone());
        }
    }
    config["disks"].as_array_mut().expect("disks").push(json!({
        "path": spec.dir.join("vol1.raw"), "readonly": false, "direct": false, "iommu": false,
        "num_queues": 1, "queue_size": 128, "vhost_user": false, "id": "vol1", "serial": "vol1",
        "pci_segment": 0, "image_type": "Raw", "sparse": true
    }));
    config["net"][0]["num_queues"] = json!(2);
    config["net"][0]["queue_size"] = json!(256);
    config["net"][0]["offload_tso"] = json!(true);
    config["fs"] = json!([{
        "tag": "workspace", "socket": spec.dir.join("virtiofsd.sock"),
        "num_queues": 1, "queue_size": 1024, "id": "fs0", "pci_segment": 0
    }]);
    config["memory"]["hugepages"] = json!(false);
    config["memory"]["thp"] = json!(true);
    config["cpus"]["kvm_hyperv"] = json!(false);
    config["rng"]["iommu"] = json!(false);
    config["vsock"]["iommu"] = json!(false);
    config["vsock"]["pci_segment"] = json!(0);
    config["iommu"] = json!(false);
    config["watchdog"] = json!(false);
    config["pvpanic"] = json!(false);
    config
}

/// `(section, id)` of every device, in order.
fn device_ids(config: &Value) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for section in ["disks", "net", "fs"] {
        for device in config[section].as_array().into_iter().flatten() {
            ids.push((
                section.to_string(),
                device["id"].as_str().expect("id").to_string(),
            ));
        }
    }
    ids.push((
        "vsock".into(),
        config["vsock"]["id"].as_str().expect("vsock id").into(),
    ));
    ids
}

#[test]
fn a_rewritten_restore_config_keeps_device_ids_and_order() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    let mut parent = specs().remove(2);
    parent.dir = PathBuf::from("/var/lib/platinum/sandboxes/parent");
    parent.console_log = parent.dir.join("console.log");
    parent.disks[0].path = parent.dir.join("rootfs.disk");
    let original = snapshot_config_json(&parent);
    schema.assert_valid("VmConfig", &original);

    let mut clone = parent.clone();
    clone.id = "clone1".to_string();
    clone.dir = PathBuf::from("/var/lib/platinum/sandboxes/clone1");
    clone.console_log = clone.dir.join("console.log");
    clone.kernel = PathBuf::from("/other/cache/vmlinux");
    clone.net = Some(NetSpec {
        tap: "pt-clone1".to_string(),
        mac: "52:54:00:00:00:99".to_string(),
    });
    for disk in &mut clone.disks {
        disk.path = clone.dir.join(format!("{}.copy", disk.id));
    }
    clone.disks.push(DiskSpec {
        id: "vol1".to_string(),
        path: clone.dir.join("vol1.copy"),
        format: DiskFormat::Raw,
        readonly: false,
        volume_slot: None,
    });
    let clone_paths = ChPaths::new(&clone.dir);
    let shares = [FsSpec {
        id: "fs0".to_string(),
        tag: "workspace".to_string(),
        socket: clone.dir.join("virtiofsd.sock"),
    }];
    let mut rewritten = original.clone();
    let changes = rewrite_config(
        &mut rewritten,
        &RestoreIdentity {
            spec: &clone,
            vsock: &clone_paths.vsock,
            fs: &shares,
        },
    )
    .expect("rewrite");

    schema.assert_valid("VmConfig", &rewritten);
    assert_eq!(device_ids(&rewritten), device_ids(&original));
    let ids: Vec<(String, String)> = [
        ("disks", "rootfs"),
        ("disks", "vol0"),
        ("disks", "ro-data"),
        ("disks", "vol1"),
        ("net", "net0"),
        ("fs", "fs0"),
        ("vsock", "vsock0"),
    ]
    .iter()
    .map(|(section, id)| (section.to_string(), id.to_string()))
    .collect();
    assert_eq!(device_ids(&rewritten), ids);
    for (index, disk) in rewritten["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .enumerate()
    {
        let id = disk["id"].as_str().expect("id");
        let expected = clone
            .disks
            .iter()
            .find(|d| d.id == id)
            .expect("disk in clone spec");
        assert_eq!(disk["path"], json!(expected.path), "disk #{index} ({id})");
    }
    assert_eq!(rewritten["vsock"]["socket"], json!(clone_paths.vsock));
    assert_eq!(rewritten["serial"]["file"], json!(clone.console_log));
    assert_eq!(rewritten["fs"][0]["socket"], json!(shares[0].socket));
    assert_eq!(rewritten["net"][0]["tap"], json!("pt-clone1"));
    assert_eq!(
        rewritten["net"][0]["mac"], original["net"][0]["mac"],
        "the guest keeps its MAC"
    );
    assert_eq!(
        rewritten["payload"]["kernel"],
        json!("/other/cache/vmlinux")
    );
    assert!(!changes.is_empty());

    // Nothing but those paths changed.
    let mut restored = rewritten.clone();
    for (index, disk) in original["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .enumerate()
    {
        restored["disks"][index]["path"] = disk["path"].clone();
    }
    restored["vsock"]["socket"] = original["vsock"]["socket"].clone();
    restored["serial"]["file"] = original["serial"]["file"].clone();
    restored["fs"][0]["socket"] = original["fs"][0]["socket"].clone();
    restored["net"][0]["tap"] = original["net"][0]["tap"].clone();
    restored["payload"]["kernel"] = original["payload"]["kernel"].clone();
    restored["payload"]["initramfs"] = original["payload"]["initramfs"].clone();
    assert_eq!(restored, original);
}

#[test]
fn documented_replies_decode_into_the_driver_types() {
    let Some(schema) = ChSchema::load() else {
        return;
    };
    // vmm.ping as observed from CH v53.0.
    let ping = json!({"build_version": "v53.0.0", "version": "53.0.0", "pid": 4242, "features": ["io_uring", "kvm"]});
    schema.assert_valid("VmmPingResponse", &ping);
    let decoded: VmmPing = serde_json::from_value(ping).expect("ping decodes");
    assert_eq!(decoded.version, "53.0.0");

    let spec = spec("/var/lib/platinum/sandboxes/sbx1");
    let config = serde_json::to_value(config::vm_config(&spec, &validated_paths(&spec), true))
        .expect("json");
    let states = schema.document["components"]["schemas"]["VmState"]["enum"]
        .as_array()
        .expect("VmState enum")
        .clone();
    assert!(!states.is_empty());
    for state in states {
        let info = json!({"config": config, "state": state, "memory_actual_size": 1073741824u64});
        schema.assert_valid("VmInfo", &info);
        let decoded: VmInfoReply = serde_json::from_value(info)
            .unwrap_or_else(|e| panic!("state {state} does not decode: {e}"));
        let _: ChVmState = decoded.state;
    }
    let device = json!({"id": "vol0", "bdf": "0000:00:06.0"});
    schema.assert_valid("PciDeviceInfo", &device);
    let decoded: PciDeviceInfo = serde_json::from_value(device).expect("decodes");
    assert_eq!(decoded.bdf, "0000:00:06.0");
}
