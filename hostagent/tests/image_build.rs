//! Real image builds: Debian's kernel package through apt, the initramfs around a static
//! binary, and (ignored by default, it takes minutes) a full `base` root filesystem.
//!
//! Needs a Debian host with apt, dpkg-deb, depmod (kmod) and network access to the Debian
//! mirror; the root filesystem test also needs root, mmdebstrap and e2fsprogs' debugfs. The
//! stand-in guest agent is `/bin/busybox` from `busybox-static`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, elf};
use platinum_hostagent::Error;
use platinum_hostagent::image::{
    EntryKind, ImageCache, InitrdCompression, Progress, kernel_cmdline, template,
};

/// A static executable to stand in for the guest agent.
const STATIC_AGENT: &str = "/bin/busybox";

fn static_agent() -> PathBuf {
    let agent = PathBuf::from(STATIC_AGENT);
    assert!(
        agent.is_file(),
        "{STATIC_AGENT} is missing: apt-get install busybox-static"
    );
    agent
}

/// The PVH entry from the ELF's Xen PT_NOTE (type 18), read independently of the builder.
fn pvh_entry(vmlinux: &Path) -> Option<u64> {
    let data = std::fs::read(vmlinux).unwrap();
    let file = ElfFile64::<Endianness>::parse(data.as_slice()).unwrap();
    let endian = file.endian();
    for segment in file.elf_program_headers() {
        let Some(mut notes) = segment.notes(endian, data.as_slice()).unwrap() else {
            continue;
        };
        while let Some(note) = notes.next().unwrap() {
            if note.name() == b"Xen" && note.n_type(endian) == elf::NoteType(18) {
                let desc = note.desc();
                return Some(u64::from(u32::from_le_bytes([
                    desc[0], desc[1], desc[2], desc[3],
                ])));
            }
        }
    }
    None
}

/// One entry of an initramfs: (name, mode, rdev major and minor, content).
type CpioEntry = (String, u32, (u32, u32), Vec<u8>);

/// Every entry of a gzip-compressed newc archive.
fn read_initramfs(path: &Path) -> Vec<CpioEntry> {
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut cpio)
        .unwrap();
    let mut rest = cpio.as_slice();
    let mut entries = Vec::new();
    loop {
        let mut reader = cpio::NewcReader::new(rest).unwrap();
        if reader.entry().is_trailer() {
            return entries;
        }
        let entry = reader.entry().clone();
        let mut content = Vec::new();
        reader.read_to_end(&mut content).unwrap();
        entries.push((
            entry.name().to_owned(),
            entry.mode(),
            (entry.rdev_major(), entry.rdev_minor()),
            content,
        ));
        rest = reader.finish().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_and_initramfs_build_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(dir.path().to_path_buf());
    let progress = Progress::hidden();

    let kernel = cache.ensure_kernel(&progress).await.unwrap();
    assert!(kernel.release.ends_with("-cloud-amd64"), "{kernel:?}");
    assert_eq!(pvh_entry(&kernel.vmlinux), Some(kernel.pvh_entry));
    assert!(std::fs::metadata(&kernel.vmlinux).unwrap().len() > 20 << 20);
    let names: Vec<String> = kernel
        .modules
        .iter()
        .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} missing from {names:?}"))
    };
    assert!(at("virtio_ring.ko") < at("virtio.ko"));
    assert!(at("virtio.ko") < at("virtio_mmio.ko"));
    assert!(at("virtio_pci_modern_dev.ko") < at("virtio_pci.ko"));
    assert!(at("vsock.ko") < at("vmw_vsock_virtio_transport_common.ko"));
    assert!(at("vmw_vsock_virtio_transport_common.ko") < at("vmw_vsock_virtio_transport.ko"));
    assert!(at("failover.ko") < at("net_failover.ko"));
    assert!(at("fuse.ko") < at("virtiofs.ko"));
    for name in [
        "virtio_blk.ko",
        "virtio_console.ko",
        "overlay.ko",
        "virtio-rng.ko",
    ] {
        at(name);
    }
    assert!(kernel.modules.iter().all(|m| m.is_file()));
    assert_eq!(kernel.initrd_compression, InitrdCompression::Gzip);

    let agent = static_agent();
    let initramfs = cache
        .ensure_initramfs(&kernel, &agent, &progress)
        .await
        .unwrap();
    let entries = read_initramfs(&initramfs);
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} missing from the initramfs"))
    };
    assert_eq!(find("init").3, std::fs::read(&agent).unwrap());
    assert_eq!(find("init").1, 0o100755);
    assert_eq!(
        (find("dev/console").1, find("dev/console").2),
        (0o020600, (5, 1))
    );
    for dir in ["dev", "proc", "sys", "rootfs", "run", "tmp", "platinum"] {
        assert_eq!(find(dir).1 & 0o170000, 0o040000, "{dir} is a directory");
    }
    let order = String::from_utf8(find("platinum/modules.order").3.clone()).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), names);
    for (name, path) in names.iter().zip(&kernel.modules) {
        assert_eq!(
            find(&format!("platinum/modules/{name}")).3,
            std::fs::read(path).unwrap()
        );
    }

    // Same inputs: the same entries, nothing rebuilt.
    let before: Vec<_> = cache
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.manifest)
        .collect();
    assert_eq!(before.len(), 2);
    let again = cache.ensure_kernel(&progress).await.unwrap();
    assert_eq!(again, kernel);
    let initramfs_again = cache
        .ensure_initramfs(&again, &agent, &progress)
        .await
        .unwrap();
    assert_eq!(initramfs_again, initramfs);
    let after: Vec<_> = cache
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.manifest)
        .collect();
    assert_eq!(before, after, "the second run must not rebuild anything");

    // A dynamically linked agent is refused with a clear message.
    let err = cache
        .ensure_initramfs(&kernel, Path::new("/bin/ls"), &progress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Image { message, .. } if message.contains("dynamically linked")),
        "{err}"
    );

    for entry in cache.list().unwrap() {
        cache.verify(&entry, &progress).await.unwrap();
    }
    // A corrupted module is found by verify and repaired by the next ensure.
    std::fs::write(&kernel.modules[0], b"corrupt").unwrap();
    let kernel_entry = cache
        .list()
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EntryKind::Kernel)
        .unwrap();
    assert!(cache.verify(&kernel_entry, &progress).await.is_err());
    let repaired = cache.ensure_kernel(&progress).await.unwrap();
    assert_ne!(std::fs::read(&repaired.modules[0]).unwrap(), b"corrupt");

    let removed = cache.gc(&[]).unwrap();
    assert_eq!(removed.len(), 2);
    assert!(cache.list().unwrap().is_empty());
}

/// `debugfs -R <request> <image>`'s output.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) is needed");
    assert!(out.status.success(), "debugfs -R {request:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "bootstraps Debian from deb.debian.org: minutes, needs root and network; run with --ignored"]
async fn base_image_builds_for_real() {
    // PLATINUM_CACHE_DIR, when set, lets this reuse (and fill) a long-lived cache.
    let temp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("PLATINUM_CACHE_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let cache = ImageCache::new(root);
    let base = template("base").unwrap();
    let image = cache
        .ensure_image(&base, &static_agent(), &Progress::new())
        .await
        .unwrap();
    assert_eq!(image.template, "base");
    assert_eq!(image.id.len(), 32);
    assert!(image.kernel.is_file() && image.initramfs.is_file());

    let rootfs = &image.rootfs;
    assert_eq!(std::fs::metadata(rootfs).unwrap().len(), 4096 << 20);
    let stats = debugfs(rootfs, "stats");
    assert!(
        stats.contains("Filesystem volume name:   platinum-root"),
        "{stats}"
    );
    let home = debugfs(rootfs, "stat /home/user");
    assert!(home.contains("Type: directory"), "{home}");
    assert!(home.contains("User:  1000   Group:  1000"), "{home}");
    // `ls -l` of a symlink itself fails in debugfs; list the directory instead.
    let usr_bin = debugfs(rootfs, "ls -l /usr/bin");
    let has = |name: &str, mode: &str| {
        usr_bin.lines().any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&mode) && fields.last() == Some(&name)
        })
    };
    assert!(has("python3", "120777"), "no python3 symlink in {usr_bin}");
    assert!(has("python3.11", "100755"), "no python3.11 in {usr_bin}");
    let passwd = debugfs(rootfs, "cat /etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("user:x:1000:1000:") && l.ends_with(":/home/user:/bin/bash")),
        "{passwd}"
    );
    let sudoers = debugfs(rootfs, "cat /etc/sudoers.d/user");
    assert_eq!(sudoers.trim(), "user ALL=(ALL:ALL) NOPASSWD: ALL");
    let sudoers_mode = debugfs(rootfs, "stat /etc/sudoers.d/user");
    assert!(sudoers_mode.contains("Mode:  0440"), "{sudoers_mode}");
    for tool in ["node", "npm", "git", "curl", "pip3", "sudo", "ping", "ip"] {
        let found = debugfs(rootfs, &format!("stat /usr/bin/{tool}"))
            + &debugfs(rootfs, &format!("stat /usr/sbin/{tool}"))
            + &debugfs(rootfs, &format!("stat /bin/{tool}"));
        assert!(found.contains("Inode:"), "{tool} is missing");
    }
    let lists = debugfs(rootfs, "ls /var/lib/apt/lists");
    assert!(
        !lists.contains("_Packages"),
        "apt lists were not removed: {lists}"
    );

    // Idempotent: a second call builds nothing and returns the same image.
    let again = cache
        .ensure_image(&base, &static_agent(), &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(again, image);
    assert!(kernel_cmdline(Default::default()).contains("console=ttyS0"));
}
