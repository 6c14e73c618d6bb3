//! The QEMU command line for a [`VmSpec`]: a pure function, so every flag is unit-tested.
//!
//! Machine: `-M microvm` (virtio-mmio, ACPI on: the Debian kernel finds virtio-mmio devices only
//! through ACPI, and PVH boot needs the option ROMs, so neither `acpi=off` nor
//! `x-option-roms=off`). RAM is shared so vhost-user backends (vhost-device-vsock) can map it:
//! a `memory-backend-file,share=on` over the spec's memory file when it has one (snapshots then
//! skip the RAM, see [`super::snapshot`]), else a `memory-backend-memfd,share=on`.
//!
//! Devices are emitted in a fixed order (disks in spec order, virtio-serial, vsock, rng, the
//! share, the SCSI controller and its volumes, net),
//! because virtio-mmio slots, and with them the migration stream's section names, follow the
//! order on the command line: a restore must rebuild exactly the same list.

use crate::vmm::{Accel, DiskFormat, DiskSpec, SHARE_TAG, TransportKind, VmSpec};
use platinum_protocol::VIRTIO_SERIAL_PORT_NAME;

use super::paths::VmPaths;

/// QEMU's seccomp sandbox settings (`-sandbox`).
pub const SECCOMP: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The seccomp settings for a QEMU that drops to an unprivileged user itself (`-run-with user=`):
/// QEMU calls setuid/setgid once, right before the guest starts, so `elevateprivileges` must
/// allow those calls; afterwards QEMU has no capabilities and `no_new_privs`, so it cannot gain
/// them back either way.
pub const SECCOMP_UNPRIVILEGED: &str =
    "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny";

/// The first uid (and gid) of the range sandboxes' QEMU processes run as.
pub const UNPRIVILEGED_ID_BASE: u32 = 1_500_000_000;

/// How many uids the range holds.
pub const UNPRIVILEGED_ID_COUNT: u32 = 100_000_000;

/// The uid (= gid) a sandbox's QEMU runs as: one of [`UNPRIVILEGED_ID_COUNT`] ids past
/// [`UNPRIVILEGED_ID_BASE`], derived from the sandbox id, so two sandboxes' device models are,
/// barring a one-in-many-million collision, different users that cannot signal, trace or read
/// each other, and none of them owns a file on the host.
pub fn unprivileged_id(sandbox_id: &str) -> u32 {
    // FNV-1a: stable across builds and releases (the std hasher is not).
    let hash = sandbox_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    UNPRIVILEGED_ID_BASE + (hash % u64::from(UNPRIVILEGED_ID_COUNT)) as u32
}

/// Makes QEMU drop to `id` (uid and gid, no supplementary groups) once it has opened everything
/// it needs as root (disks, TAP, sockets, `/dev/kvm`), and loosens `-sandbox` as that requires.
pub fn run_unprivileged(args: &mut Vec<String>, id: u32) {
    if let Some(i) = args.iter().position(|a| a == "-sandbox") {
        args[i + 1] = SECCOMP_UNPRIVILEGED.to_string();
    }
    args.push("-run-with".to_string());
    args.push(format!("user={id}:{id}"));
}

/// A disk handed to QEMU as descriptors instead of a path: one open read-write and one
/// read-only in fd set `set`, so a QEMU that dropped its privileges can still reopen the image
/// with either access mode (the block layer does when a migration inactivates and reactivates
/// it) without being able to open any path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFds {
    /// The fd set (`/dev/fdset/<set>`).
    pub set: u32,
    /// The read-write descriptor (`None` for a read-only disk).
    pub rw: Option<i32>,
    /// The read-only descriptor.
    pub ro: i32,
}

/// Points each drive of `spec` at its fd set (`file=/dev/fdset/N`) and adds the `-add-fd`
/// arguments; `fds` is in `spec.disks`' order.
pub fn use_disk_fds(args: &mut Vec<String>, spec: &VmSpec, fds: &[DiskFds]) {
    for (disk, fd) in spec.disks.iter().zip(fds) {
        if disk.volume_slot.is_some() {
            let from = volume_blockdev(disk, &disk.path.display().to_string());
            let to = volume_blockdev(disk, &format!("/dev/fdset/{}", fd.set));
            for a in args.iter_mut().filter(|a| **a == from) {
                *a = to.clone();
            }
        }
        let from = format!("id={},file={},", disk.id, disk.path.display());
        // Image locking is off: QEMU's locks live on open file descriptions, and the set's
        // two descriptions (kept open by the set) would lock each other out when a migration
        // moves the image from one to the other. Every sandbox has its own disk file, which
        // only its own QEMU opens.
        let to = format!(
            "id={},file=/dev/fdset/{},file.locking=off,",
            disk.id, fd.set
        );
        for a in args.iter_mut() {
            if a.starts_with(&from) {
                *a = a.replacen(&from, &to, 1);
            }
        }
        for (desc, raw) in [("rw", fd.rw), ("ro", Some(fd.ro))] {
            if let Some(raw) = raw {
                args.push("-add-fd".to_string());
                args.push(format!("fd={raw},set={},opaque={}-{desc}", fd.set, disk.id));
            }
        }
    }
}

/// The machine. `pit=off,pic=off`: the guest's clocks are the TSC (given under TCG, see
/// [`super::tsc`]), kvm-clock under KVM and the local APIC timer, so the legacy PIT and 8259 PIC
/// serve nothing, and they broke boots: the PIT ticks through the PIC from power-on, before the
/// kernel programs the PIC's vector base, so a tick that is pending when the kernel first enables
/// interrupts arrives as vector 0 and the guest dies in `start_kernel` with "divide error"
/// (measured under TCG on a busy host: 5 of 120 boots with them, 0 of 180 without). Changing
/// this changes the migration stream, so [`MACHINE_REVISION`] goes up with it.
pub const MACHINE: &str = "microvm,memory-backend=mem0,pit=off,pic=off";

/// The revision of [`MACHINE`] and the device layout, part of the VMM version a snapshot
/// records, so snapshots of an older layout are refused (and template snapshots rebuilt) rather
/// than restored into a machine that differs.
pub const MACHINE_REVISION: u32 = 3;

/// Builds QEMU's arguments (without the program name). `paths` must come from validating
/// `spec`, which also guarantees every path is UTF-8 without commas. `incoming` adds
/// `-incoming defer` for a restore; a boot gets `-S` (the driver `cont`s once the console
/// reader is connected). `tcg_clock` is appended to the kernel command line under TCG
/// ([`super::tsc::tcg_clock_args`]).
pub fn build(
    spec: &VmSpec,
    paths: &VmPaths,
    accel: Accel,
    tcg_clock: Option<&str>,
    incoming: bool,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::with_capacity(64);
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    let p = |path: &std::path::Path| path.display().to_string();

    push(&["-name", &spec.id]);
    push(&["-M", MACHINE]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    let backend = match &spec.memory_file {
        Some(file) => format!(
            "memory-backend-file,id=mem0,size={}M,share=on,mem-path={}",
            spec.memory_mib,
            p(file)
        ),
        None => format!(
            "memory-backend-memfd,id=mem0,size={}M,share=on",
            spec.memory_mib
        ),
    };
    push(&["-object", &backend]);
    match accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
    }
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // Defence in depth: QEMU's own seccomp filter. A compromised device model cannot exec,
    // raise privileges, change scheduling/resource limits or use obsolete syscalls.
    push(&["-sandbox", SECCOMP]);
    let append = match (accel, tcg_clock) {
        (Accel::Tcg, Some(clock)) => format!("{} {clock}", spec.cmdline),
        _ => spec.cmdline.clone(),
    };
    push(&[
        "-kernel",
        &p(&spec.kernel),
        "-initrd",
        &p(&spec.initramfs),
        "-append",
        &append,
    ]);

    for disk in spec.disks.iter().filter(|d| d.volume_slot.is_none()) {
        let format = match disk.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        let readonly = if disk.readonly { ",readonly=on" } else { "" };
        push(&[
            "-drive",
            &format!(
                "id={},file={},format={format},if=none,cache=writeback,discard=unmap{readonly}",
                disk.id,
                p(&disk.path)
            ),
            "-device",
            &format!("virtio-blk-device,drive={}", disk.id),
        ]);
    }

    // The serial console is served on a socket the host reads into a capped log
    // (`crate::console`); with no reader connected QEMU drops the output instead of blocking.
    push(&[
        "-chardev",
        &format!(
            "socket,id=console,path={},server=on,wait=off",
            p(&crate::console::socket_path(&spec.dir))
        ),
        "-serial",
        "chardev:console",
    ]);

    push(&["-device", "virtio-serial-device"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=agent,path={},server=on,wait=off",
            p(&paths.agent)
        ),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,chardev=agent,name={VIRTIO_SERIAL_PORT_NAME}"),
    ]);

    if spec.transport == TransportKind::Vsock {
        push(&[
            "-chardev",
            &format!("socket,id=vsock,path={}", p(&paths.vhost_vsock)),
        ]);
        push(&["-device", "vhost-user-vsock-device,chardev=vsock"]);
    }

    push(&[
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-device,rng=rng0",
    ]);

    if spec.share.is_some() {
        push(&[
            "-chardev",
            &format!("socket,id=share0,path={}", p(&paths.virtiofsd)),
            "-device",
            &format!("vhost-user-fs-device,chardev=share0,tag={SHARE_TAG}"),
        ]);
    }

    // Volumes hang off a virtio-scsi controller every VM has, so they can come and go while it
    // runs (virtio-mmio devices cannot be hot-plugged; SCSI disks on a controller can).
    push(&[
        "-device",
        &format!("virtio-scsi-device,id={SCSI_CONTROLLER}"),
    ]);
    for disk in &spec.disks {
        if let Some(slot) = disk.volume_slot {
            push(&[
                "-blockdev",
                &volume_blockdev(disk, &p(&disk.path)),
                "-device",
                &volume_device(disk, slot),
            ]);
        }
    }

    if let Some(net) = &spec.net {
        push(&[
            "-netdev",
            &format!("tap,id=net0,ifname={},script=no,downscript=no", net.tap),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={}", net.mac),
        ]);
    }

    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", p(&paths.qmp)),
    ]);
    push(&["-pidfile", &p(&paths.pid_file)]);
    if incoming {
        push(&["-incoming", "defer"]);
    } else {
        // vCPUs start stopped: the driver connects the console reader, then `cont`s.
        push(&["-S"]);
    }
    args
}

/// The id of the virtio-scsi controller volumes attach to.
pub const SCSI_CONTROLLER: &str = "scsi0";

/// The `-blockdev` of a volume whose image QEMU opens as `file` (its path, or
/// `/dev/fdset/<set>`): a raw node named after the volume. Image locking stays on for a path
/// (two QEMUs cannot both open one volume for writing) and is off for fd sets (see
/// [`use_disk_fds`]).
pub fn volume_blockdev(disk: &DiskSpec, file: &str) -> String {
    let read_only = if disk.readonly { "on" } else { "off" };
    let locking = if file.starts_with("/dev/fdset/") {
        ",file.locking=off"
    } else {
        ""
    };
    format!(
        "driver=raw,node-name={},read-only={read_only},discard=unmap,file.driver=file,file.filename={file}{locking}",
        disk.id
    )
}

/// The `scsi-hd` of a volume at SCSI target `slot`: device id `<id>-dev`, serial = its id (how
/// the guest finds it).
pub fn volume_device(disk: &DiskSpec, slot: u32) -> String {
    format!(
        "scsi-hd,id={},bus={SCSI_CONTROLLER}.0,channel=0,scsi-id={slot},lun=0,drive={},serial={}",
        volume_device_id(&disk.id),
        disk.id,
        disk.id
    )
}

/// The QEMU device id of volume `id`.
pub fn volume_device_id(id: &str) -> String {
    format!("{id}-dev")
}

/// The device list for [`crate::vmm::VmInfo::devices`].
pub fn describe_devices(spec: &VmSpec, paths: &VmPaths) -> Vec<String> {
    let mut devices: Vec<String> = spec.disks.iter().map(DiskSpec::describe).collect();
    devices.push(format!(
        "serial console: {} (capped, read from {})",
        spec.console_log.display(),
        crate::console::socket_path(&spec.dir).display()
    ));
    devices.push(format!(
        "virtio-serial {VIRTIO_SERIAL_PORT_NAME}: {}",
        paths.agent.display()
    ));
    if spec.transport == TransportKind::Vsock {
        devices.push(format!(
            "vhost-user-vsock cid {}: {}",
            spec.vsock_cid,
            paths.vsock.display()
        ));
    }
    devices.push("virtio-rng: /dev/urandom".to_string());
    if let Some(share) = &spec.share {
        devices.push(format!(
            "vhost-user-fs {SHARE_TAG}: {} (virtiofsd on {})",
            share.display(),
            paths.virtiofsd.display()
        ));
    }
    devices.push(format!("virtio-scsi {SCSI_CONTROLLER} (volumes)"));
    if let Some(net) = &spec.net {
        devices.push(format!("virtio-net {} tap {}", net.mac, net.tap));
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::qemu::paths::validate;
    use crate::vmm::spec::tests::spec;
    use crate::vmm::{DiskSpec, NetSpec};
    use std::path::PathBuf;

    fn args(spec: &VmSpec, accel: Accel, incoming: bool) -> Vec<String> {
        let paths = validate(spec).expect("valid spec");
        build(spec, &paths, accel, None, incoming)
    }

    /// The value following `flag`, for every occurrence.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn serial_transport_tcg_raw_disk() {
        let a = args(&spec(), Accel::Tcg, false);
        assert_eq!(
            values(&a, "-M"),
            ["microvm,memory-backend=mem0,pit=off,pic=off"]
        );
        assert!(
            !a.iter()
                .any(|x| x.contains("acpi=off") || x.contains("x-option-roms"))
        );
        assert_eq!(values(&a, "-accel"), ["tcg"]);
        assert_eq!(values(&a, "-cpu"), ["max"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert!(values(&a, "-object").contains(&"memory-backend-memfd,id=mem0,size=512M,share=on"));
        let mut in_file = spec();
        in_file.memory_file = Some(in_file.dir.join("memory"));
        assert!(
            values(&args(&in_file, Accel::Kvm, false), "-object").contains(
                &"memory-backend-file,id=mem0,size=512M,share=on,mem-path=/run/platinum/sbx1/memory"
            )
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing");
        }
        assert_eq!(values(&a, "-sandbox"), [SECCOMP]);
        let mut unprivileged = a.clone();
        run_unprivileged(&mut unprivileged, unprivileged_id("abc"));
        assert_eq!(values(&unprivileged, "-sandbox"), [SECCOMP_UNPRIVILEGED]);
        assert_eq!(
            values(&unprivileged, "-run-with"),
            [format!("user={0}:{0}", unprivileged_id("abc"))]
        );
        assert_eq!(values(&a, "-kernel"), ["/var/lib/platinum/images/vmlinux"]);
        assert_eq!(values(&a, "-append"), ["console=ttyS0 quiet"]);
        assert_eq!(
            values(&a, "-drive"),
            [
                "id=rootfs,file=/run/platinum/sbx1/rootfs.raw,format=raw,if=none,cache=writeback,discard=unmap"
            ]
        );
        assert_eq!(
            values(&a, "-device"),
            [
                "virtio-blk-device,drive=rootfs",
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=org.platinum.agent.0",
                "virtio-rng-device,rng=rng0",
                "virtio-scsi-device,id=scsi0",
            ]
        );
        assert_eq!(
            values(&a, "-chardev"),
            [
                "socket,id=console,path=/run/platinum/sbx1/console.sock,server=on,wait=off",
                "socket,id=agent,path=/run/platinum/sbx1/agent.sock,server=on,wait=off",
            ]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:console"]);
        assert_eq!(
            values(&a, "-qmp"),
            ["unix:/run/platinum/sbx1/qmp.sock,server=on,wait=off"]
        );
        assert_eq!(values(&a, "-pidfile"), ["/run/platinum/sbx1/vmm.pid"]);
        assert_eq!(values(&a, "-name"), ["sbx1"]);
        assert!(values(&a, "-netdev").is_empty());
        assert!(values(&a, "-incoming").is_empty());
        assert!(
            a.iter().any(|x| x == "-S"),
            "a boot starts with stopped vCPUs"
        );
        assert!(!args(&spec(), Accel::Tcg, true).iter().any(|x| x == "-S"));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let a = args(&spec(), Accel::Kvm, false);
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
    }

    #[test]
    fn only_a_tcg_guest_is_told_the_tsc_frequency() {
        let s = spec();
        let paths = validate(&s).expect("valid spec");
        let clock = Some("tsc_early_khz=2000000 tsc=reliable");
        let tcg = build(&s, &paths, Accel::Tcg, clock, false);
        assert_eq!(
            values(&tcg, "-append"),
            ["console=ttyS0 quiet tsc_early_khz=2000000 tsc=reliable"]
        );
        let kvm = build(&s, &paths, Accel::Kvm, clock, false);
        assert_eq!(values(&kvm, "-append"), ["console=ttyS0 quiet"]);
        let unclocked = build(&s, &paths, Accel::Tcg, None, false);
        assert_eq!(values(&unclocked, "-append"), ["console=ttyS0 quiet"]);
    }

    #[test]
    fn vsock_transport_adds_vhost_user_after_the_serial_port() {
        let mut s = spec();
        s.transport = TransportKind::Vsock;
        let a = args(&s, Accel::Tcg, false);
        let devices = values(&a, "-device");
        assert_eq!(
            devices[2],
            "virtserialport,chardev=agent,name=org.platinum.agent.0"
        );
        assert_eq!(devices[3], "vhost-user-vsock-device,chardev=vsock");
        assert!(
            values(&a, "-chardev")
                .contains(&"socket,id=vsock,path=/run/platinum/sbx1/vhost-vsock.sock")
        );
    }

    #[test]
    fn qcow2_readonly_disks_and_order() {
        let mut s = spec();
        s.disks.push(DiskSpec {
            id: "vol0".to_string(),
            path: PathBuf::from("/data/vol0.qcow2"),
            format: DiskFormat::Qcow2,
            readonly: true,
            volume_slot: None,
        });
        let a = args(&s, Accel::Tcg, false);
        let drives = values(&a, "-drive");
        assert!(drives[0].starts_with("id=rootfs,"));
        assert_eq!(
            drives[1],
            "id=vol0,file=/data/vol0.qcow2,format=qcow2,if=none,cache=writeback,discard=unmap,readonly=on"
        );
        assert_eq!(
            &values(&a, "-device")[..2],
            [
                "virtio-blk-device,drive=rootfs",
                "virtio-blk-device,drive=vol0"
            ]
        );
    }

    #[test]
    fn volumes_sit_on_the_scsi_controller_at_their_slot_and_take_fd_sets() {
        let mut s = spec();
        s.disks.push(DiskSpec {
            id: "volabc".to_string(),
            path: PathBuf::from("/data/volumes/volabc.ext4"),
            format: DiskFormat::Raw,
            readonly: false,
            volume_slot: Some(3),
        });
        let mut a = args(&s, Accel::Tcg, false);
        assert_eq!(
            values(&a, "-drive").len(),
            1,
            "a volume is no virtio-blk drive"
        );
        let devices = values(&a, "-device");
        let controller = devices
            .iter()
            .position(|d| *d == "virtio-scsi-device,id=scsi0")
            .expect("controller");
        assert_eq!(
            devices[controller + 1],
            "scsi-hd,id=volabc-dev,bus=scsi0.0,channel=0,scsi-id=3,lun=0,drive=volabc,serial=volabc"
        );
        assert_eq!(
            values(&a, "-blockdev"),
            [
                "driver=raw,node-name=volabc,read-only=off,discard=unmap,file.driver=file,file.filename=/data/volumes/volabc.ext4"
            ]
        );
        let fds = [
            DiskFds {
                set: 1,
                rw: Some(10),
                ro: 11,
            },
            DiskFds {
                set: 2,
                rw: Some(12),
                ro: 13,
            },
        ];
        use_disk_fds(&mut a, &s, &fds);
        assert_eq!(
            values(&a, "-blockdev"),
            [
                "driver=raw,node-name=volabc,read-only=off,discard=unmap,file.driver=file,file.filename=/dev/fdset/2,file.locking=off"
            ]
        );
        assert!(values(&a, "-add-fd").contains(&"fd=12,set=2,opaque=volabc-rw"));
    }

    #[test]
    fn net_on_and_incoming() {
        let mut s = spec();
        s.net = Some(NetSpec {
            tap: "sbx1".to_string(),
            mac: "52:54:00:00:00:2a".to_string(),
        });
        let a = args(&s, Accel::Tcg, true);
        assert_eq!(
            values(&a, "-netdev"),
            ["tap,id=net0,ifname=sbx1,script=no,downscript=no"]
        );
        assert!(
            values(&a, "-device").contains(&"virtio-net-device,netdev=net0,mac=52:54:00:00:00:2a")
        );
        assert_eq!(values(&a, "-incoming"), ["defer"]);
    }

    #[test]
    fn device_description_lists_everything() {
        let mut s = spec();
        s.transport = TransportKind::Vsock;
        let paths = validate(&s).expect("valid");
        let devices = describe_devices(&s, &paths);
        assert!(devices.iter().any(|d| d.starts_with("virtio-blk rootfs")));
        assert!(
            devices
                .iter()
                .any(|d| d.starts_with("vhost-user-vsock cid 3"))
        );
    }
}
