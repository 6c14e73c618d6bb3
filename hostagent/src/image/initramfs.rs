//! The initramfs: the guest agent as `/init`, plus the kernel modules it loads.
//!
//! This layout is a contract with the guest agent (`guest/`); change both together:
//!
//! ```text
//! /init                        the agent, a static x86-64 ELF, mode 0755
//! /dev/console                 character device 5:1, mode 0600 (the kernel opens it for init)
//! /dev /proc /sys /rootfs /run /platinum   empty directories, mode 0755 (/tmp: 1777)
//! /platinum/modules/<file>.ko  each module, named as in the kernel tree (virtio-rng.ko)
//! /platinum/modules.order      one .ko file name per line, in load order
//! ```
//!
//! The archive is newc cpio, compressed with gzip when the kernel has `CONFIG_RD_GZIP`. It is
//! deterministic: entries sorted by path (parents before children), inode numbers by position,
//! owner root, mtime 0 and a gzip header without a timestamp, so the same inputs give the same
//! bytes.
//!
//! The file is padded with zero bytes to a multiple of 4 KiB (the kernel skips NUL padding after
//! an archive). QEMU's PVH loader copies the initrd to `(top - size) & !4095`, `top` being the
//! end of low RAM, so an archive's end lands somewhere in the last page of RAM, and on microvm
//! that page holds the ACPI tables (XSDT, FACP, DSDT, APIC: about 0x380 bytes with two virtio
//! devices, 0x540 with eight). An archive ending in the last few hundred bytes of that page
//! overwrites the tables and the guest hangs in ACPI setup or loses its devices (observed with
//! QEMU 10.0, TCG, 512 MiB: ramdisk 0x1ff3c000-0x1ffffdab over a DSDT at 0x1ffffc80). A
//! page-multiple size makes the archive end exactly where that page begins.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use object::Endianness;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use serde::{Deserialize, Serialize};

use super::entry::{Built, Entry, KindDir, blocking, key_of};
use super::kernel::Kernel;
use super::manifest::{EntryKind, sha256_hex};
use super::progress::Progress;
use crate::error::{Error, IoContext, Result};

/// Where the modules go, and the file naming their order.
pub(crate) const MODULES_DIR: &str = "platinum/modules";
/// The load-order file.
pub(crate) const MODULES_ORDER: &str = "platinum/modules.order";

/// The archive's size is padded to a multiple of this.
const PAD_TO: usize = 4096;

/// Empty directories of the layout, with their modes.
const DIRS: [(&str, u32); 8] = [
    ("dev", 0o755),
    ("proc", 0o755),
    ("sys", 0o755),
    ("rootfs", 0o755),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("platinum", 0o755),
    (MODULES_DIR, 0o755),
];

/// How the archive is compressed; follows the kernel's `CONFIG_RD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitrdCompression {
    /// gzip (the kernel has `CONFIG_RD_GZIP`).
    Gzip,
    /// Plain cpio (any kernel with initramfs support reads it).
    None,
}

impl InitrdCompression {
    /// The file name the archive gets in its cache entry.
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            InitrdCompression::Gzip => "initramfs.cpio.gz",
            InitrdCompression::None => "initramfs.cpio",
        }
    }
}

/// One module to pack: its `.ko` file name and content.
pub(crate) struct ModuleFile {
    /// File name, e.g. `virtio-rng.ko`.
    pub name: String,
    /// The module.
    pub data: Vec<u8>,
}

/// What the initramfs key is computed from.
#[derive(Serialize)]
struct InitramfsInputs<'a> {
    builder_version: u32,
    kernel_key: &'a str,
    agent_sha256: &'a str,
    modules: Vec<String>,
    compression: InitrdCompression,
}

/// What an initramfs build records in its manifest.
#[derive(Serialize)]
struct InitramfsDetails<'a> {
    agent_path: String,
    agent_sha256: &'a str,
    agent_bytes: usize,
    kernel_release: &'a str,
    modules: &'a [String],
}

/// Returns the cached initramfs for `kernel` with `agent` as `/init`, building it if needed.
pub(crate) async fn ensure(
    images: &Path,
    kernel: &Kernel,
    agent: &Path,
    progress: &Progress,
) -> Result<(PathBuf, Entry)> {
    let shown = agent.display().to_string();
    let agent_bytes = std::fs::read(agent).ctx(|| format!("reading the guest agent {shown}"))?;
    check_agent(&agent_bytes, &shown)?;
    let agent_sha256 = sha256_hex(&agent_bytes);
    let module_names: Vec<String> = kernel
        .modules
        .iter()
        .map(|m| {
            m.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let inputs = InitramfsInputs {
        builder_version: super::BUILDER_VERSION,
        kernel_key: &kernel.key,
        agent_sha256: &agent_sha256,
        modules: module_names.clone(),
        compression: kernel.initrd_compression,
    };
    let key = key_of(&inputs)?;
    let file_name = kernel.initrd_compression.file_name();
    let agent_sha256 = agent_sha256.as_str();
    let entry = KindDir::new(images, EntryKind::Initramfs)
        .ensure(&key, &inputs, progress, |dir| async move {
            let step = progress.step("packing the initramfs");
            let details = InitramfsDetails {
                agent_path: shown,
                agent_sha256,
                agent_bytes: agent_bytes.len(),
                kernel_release: &kernel.release,
                modules: &module_names,
            };
            let details = serde_json::to_value(details).map_err(|e| Error::Image {
                step: "initramfs".into(),
                message: e.to_string(),
            })?;
            let (paths, compression, out) = (
                kernel.modules.clone(),
                kernel.initrd_compression,
                dir.join(file_name),
            );
            let size = blocking("initramfs", move || {
                let modules = paths
                    .iter()
                    .map(|path| {
                        let name = path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let data =
                            std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
                        Ok(ModuleFile { name, data })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let archive = build(&agent_bytes, &modules, compression)?;
                std::fs::write(&out, &archive).ctx(|| format!("writing {}", out.display()))?;
                Ok(archive.len())
            })
            .await?;
            step.done(format!("{file_name} {} KB", size / 1000));
            Ok(Built {
                label: format!("agent {} + kernel {}", &agent_sha256[..12], kernel.release),
                details,
            })
        })
        .await?;
    Ok((entry.dir.join(file_name), entry))
}

/// Checks that `data` is something the kernel can run as `/init` without any userspace around
/// it: an x86-64 ELF executable (static or static-pie) with no program interpreter.
pub(crate) fn check_agent(data: &[u8], shown_as: &str) -> Result<()> {
    let error = |why: String| Error::Image {
        step: "guest agent".into(),
        message: format!("{shown_as}: {why}"),
    };
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| {
        error(format!(
            "not a 64-bit ELF executable ({e}); pass the static platinum-guest build"
        ))
    })?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(error(format!(
            "built for ELF machine {}, the guest is x86-64",
            header.e_machine(endian)
        )));
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_EXEC && e_type != elf::ET_DYN {
        return Err(error(format!("ELF type {e_type} is not an executable")));
    }
    if header.e_entry(endian) == 0 {
        return Err(error(
            "the ELF has no entry point; is it a shared library?".into(),
        ));
    }
    if file
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == elf::PT_INTERP)
    {
        return Err(error(
            "dynamically linked (it has a PT_INTERP program interpreter); the initramfs has no libc. \
             Build it statically, e.g. for x86_64-unknown-linux-musl"
                .into(),
        ));
    }
    Ok(())
}

/// An entry of the archive.
enum Node<'a> {
    Dir(u32),
    File(u32, &'a [u8]),
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// Builds the archive for `agent` and `modules` (in load order).
pub(crate) fn build(
    agent: &[u8],
    modules: &[ModuleFile],
    compression: InitrdCompression,
) -> Result<Vec<u8>> {
    let order: String = modules.iter().map(|m| format!("{}\n", m.name)).collect();
    let mut nodes: BTreeMap<String, Node<'_>> = BTreeMap::new();
    for (dir, mode) in DIRS {
        nodes.insert(dir.to_owned(), Node::Dir(mode));
    }
    nodes.insert("init".into(), Node::File(0o755, agent));
    nodes.insert(
        "dev/console".into(),
        Node::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    );
    nodes.insert(MODULES_ORDER.into(), Node::File(0o644, order.as_bytes()));
    for module in modules {
        let path = format!("{MODULES_DIR}/{}", module.name);
        if nodes
            .insert(path.clone(), Node::File(0o644, &module.data))
            .is_some()
        {
            return Err(Error::Image {
                step: "initramfs".into(),
                message: format!("{path} would be packed twice"),
            });
        }
    }

    let cpio = write_cpio(&nodes).map_err(|e| Error::Image {
        step: "initramfs".into(),
        message: e.to_string(),
    })?;
    let mut archive = match compression {
        InitrdCompression::None => cpio,
        InitrdCompression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            gz.write_all(&cpio)
                .and_then(|()| gz.finish())
                .map_err(|e| Error::Image {
                    step: "initramfs".into(),
                    message: format!("gzip: {e}"),
                })?
        }
    };
    archive.resize(archive.len().next_multiple_of(PAD_TO), 0);
    Ok(archive)
}

fn write_cpio(nodes: &BTreeMap<String, Node<'_>>) -> std::io::Result<Vec<u8>> {
    use cpio::newc::{Builder, ModeFileType, trailer};
    let mut out = Vec::new();
    for (ino, (name, node)) in (1u32..).zip(nodes) {
        let entry = Builder::new(name).ino(ino).uid(0).gid(0).mtime(0);
        let (entry, data): (Builder, &[u8]) = match node {
            Node::Dir(mode) => (
                entry
                    .mode(*mode)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                &[],
            ),
            Node::File(mode, data) => (
                entry
                    .mode(*mode)
                    .set_mode_file_type(ModeFileType::Regular)
                    .nlink(1),
                data,
            ),
            Node::CharDevice { mode, major, minor } => (
                entry
                    .mode(*mode)
                    .set_mode_file_type(ModeFileType::Char)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name} is over 4 GiB"),
            )
        })?;
        let mut writer = entry.write(&mut out, size);
        writer.write_all(data)?;
        writer.finish()?;
    }
    trailer(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::vmlinux::tests::synthetic_elf;
    use std::io::Read;

    /// (name, mode, rdev major, rdev minor, content) of every entry of an archive.
    fn read_archive(mut data: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(data).unwrap();
            if reader.entry().is_trailer() {
                return entries;
            }
            let e = reader.entry().clone();
            let mut content = Vec::new();
            reader.read_to_end(&mut content).unwrap();
            entries.push((
                e.name().to_owned(),
                e.mode(),
                e.rdev_major(),
                e.rdev_minor(),
                content,
            ));
            data = reader.finish().unwrap();
        }
    }

    fn modules() -> Vec<ModuleFile> {
        vec![
            ModuleFile {
                name: "virtio_ring.ko".into(),
                data: b"ring".to_vec(),
            },
            ModuleFile {
                name: "virtio.ko".into(),
                data: b"virtio".to_vec(),
            },
            ModuleFile {
                name: "virtio-rng.ko".into(),
                data: b"rng".to_vec(),
            },
        ]
    }

    #[test]
    fn layout_matches_the_guest_contract() {
        let archive = build(b"agent", &modules(), InitrdCompression::None).unwrap();
        let entries = read_archive(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "platinum",
                "platinum/modules",
                "platinum/modules.order",
                "platinum/modules/virtio-rng.ko",
                "platinum/modules/virtio.ko",
                "platinum/modules/virtio_ring.ko",
                "proc",
                "rootfs",
                "run",
                "sys",
                "tmp"
            ]
        );
        let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(find("init").1, 0o100755);
        assert_eq!(find("init").4, b"agent");
        assert_eq!(find("dev/console").1, 0o020600);
        assert_eq!((find("dev/console").2, find("dev/console").3), (5, 1));
        assert_eq!(find("proc").1, 0o040755);
        assert_eq!(find("tmp").1, 0o041777);
        assert_eq!(find("platinum/modules/virtio.ko").4, b"virtio");
        assert_eq!(
            find("platinum/modules.order").4,
            b"virtio_ring.ko\nvirtio.ko\nvirtio-rng.ko\n"
        );
    }

    #[test]
    fn gzip_output_is_deterministic_and_decodes() {
        let first = build(b"agent", &modules(), InitrdCompression::Gzip).unwrap();
        let second = build(b"agent", &modules(), InitrdCompression::Gzip).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.len() % PAD_TO, 0);
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(first.as_slice())
            .read_to_end(&mut cpio)
            .unwrap();
        let plain = build(b"agent", &modules(), InitrdCompression::None).unwrap();
        assert_eq!(plain.len() % PAD_TO, 0);
        assert_eq!(cpio, plain[..cpio.len()]);
        assert!(plain[cpio.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn agent_must_be_a_static_x86_64_executable() {
        check_agent(&synthetic_elf(&[(elf::PT_LOAD.0, vec![0x90; 8])]), "agent").unwrap();
        let dynamic =
            synthetic_elf(&[(elf::PT_INTERP.0, b"/lib64/ld-linux-x86-64.so.2\0".to_vec())]);
        let err = check_agent(&dynamic, "agent").unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        let err = check_agent(b"#!/bin/sh\necho hi\n", "agent.sh").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image build failed at guest agent: agent.sh: not a 64-bit ELF"),
            "{err}"
        );
    }
}
