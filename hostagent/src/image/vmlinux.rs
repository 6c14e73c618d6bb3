//! Turning a compressed x86 kernel (`vmlinuz`, a bzImage) into the PVH-bootable ELF `vmlinux`.
//!
//! QEMU's microvm and Cloud Hypervisor start a kernel fastest through its PVH entry point, which
//! only the uncompressed ELF has. A bzImage is real-mode setup code, then the protected-mode
//! decompressor with the compressed ELF embedded. The x86 boot protocol header (2.08 and later)
//! says where that payload is: `setup_sects` at 0x1f1, the magic `HdrS` at 0x202, the protocol
//! version at 0x206, and `payload_offset`/`payload_length` at 0x248/0x24c, counted from the
//! start of the protected-mode code at `(setup_sects + 1) * 512`.
//!
//! Debian compresses with LZ4 in its *legacy* framing: the magic `02 21 4C 18`, then
//! `[u32 LE compressed size][block]` pairs, each block decompressing to at most 8 MiB. The build
//! appends the uncompressed size as a little-endian u32, so decoding stops at the first size that
//! cannot be a block, and that trailer is then checked against the output length.
//!
//! The result must be an x86-64 ELF with a `PT_NOTE` segment holding the Xen note
//! `XEN_ELFNOTE_PHYS32_ENTRY` (type 18): the 32-bit PVH entry the VMMs jump to.

use object::Endianness;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};

use crate::error::{Error, Result};

/// Magic of the legacy LZ4 frame format.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Largest decompressed block of the legacy format.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Largest compressed block: LZ4's compress bound of [`LZ4_LEGACY_BLOCK`].
const LZ4_LEGACY_MAX_COMPRESSED: usize = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK / 255 + 16;

/// Xen ELF note type of the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn error(message: impl Into<String>) -> Error {
    Error::Image {
        step: "vmlinux".into(),
        message: message.into(),
    }
}

/// Extracts the ELF kernel from a bzImage. `on_progress` gets the number of payload bytes
/// decoded so far (the payload is nearly all of the bzImage).
pub(crate) fn extract(bzimage: &[u8], on_progress: &mut dyn FnMut(usize)) -> Result<Vec<u8>> {
    let payload = payload(bzimage)?;
    if payload.starts_with(&elf::ELFMAG) {
        // CONFIG_KERNEL_UNCOMPRESSED: the payload is the ELF itself.
        return Ok(payload.to_vec());
    }
    if !payload.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err(error(format!(
            "the kernel payload is {}-compressed; only LZ4 (CONFIG_KERNEL_LZ4) is supported",
            compression_name(payload)
        )));
    }
    let (vmlinux, consumed) = decode_lz4_legacy(payload, on_progress)?;
    if let Ok(trailer) = <[u8; 4]>::try_from(&payload[consumed..]) {
        let recorded = u32::from_le_bytes(trailer) as usize;
        if recorded != vmlinux.len() {
            return Err(error(format!(
                "decompressed {} bytes but the bzImage records {recorded}; the payload is corrupt",
                vmlinux.len()
            )));
        }
    }
    Ok(vmlinux)
}

/// The compressed payload of a bzImage, located through the boot protocol header.
fn payload(bzimage: &[u8]) -> Result<&[u8]> {
    let u8_at = |offset: usize| bzimage.get(offset).copied();
    let u16_at = |offset: usize| {
        bzimage
            .get(offset..offset + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |offset: usize| {
        bzimage
            .get(offset..offset + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(error(
            "not a bzImage: no `HdrS` boot header at offset 0x202",
        ));
    }
    let version = u16_at(0x206).unwrap_or(0);
    if version < 0x0208 {
        return Err(error(format!(
            "boot protocol {version:#06x} is too old to locate the payload (needs 2.08)"
        )));
    }
    let setup_sects = match u8_at(0x1f1) {
        Some(0) | None => 4,
        Some(n) => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err(error("truncated bzImage header"));
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    bzimage.get(start..start + length as usize).ok_or_else(|| {
        error(format!(
            "payload at {start}+{length} lies outside the {}-byte bzImage",
            bzimage.len()
        ))
    })
}

fn compression_name(payload: &[u8]) -> &'static str {
    const KNOWN: [(&[u8], &str); 6] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
        (&[0x5d, 0x00, 0x00], "lzma"),
    ];
    KNOWN
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map_or("unknown", |(_, name)| name)
}

/// Decodes a legacy LZ4 frame (starting with its magic). Returns the data and the number of
/// input bytes consumed; decoding stops at the first size that cannot be a block (the trailing
/// bytes after the last block). `on_progress` gets the bytes consumed after each block.
pub(crate) fn decode_lz4_legacy(
    data: &[u8],
    on_progress: &mut dyn FnMut(usize),
) -> Result<(Vec<u8>, usize)> {
    let Some(mut rest) = data.strip_prefix(&LZ4_LEGACY_MAGIC) else {
        return Err(error("no legacy LZ4 magic (02 21 4C 18)"));
    };
    let mut out = Vec::new();
    while let Some((size, after)) = rest.split_first_chunk::<4>() {
        if *size == LZ4_LEGACY_MAGIC {
            // Concatenated legacy frames repeat the magic.
            rest = after;
            continue;
        }
        let size = u32::from_le_bytes(*size) as usize;
        if size == 0 || size > LZ4_LEGACY_MAX_COMPRESSED || size > after.len() {
            break;
        }
        let (block, tail) = after.split_at(size);
        let start = out.len();
        out.resize(start + LZ4_LEGACY_BLOCK, 0);
        let written = lz4_flex::block::decompress_into(block, &mut out[start..]).map_err(|e| {
            error(format!(
                "LZ4 block at payload offset {} is corrupt: {e}",
                data.len() - rest.len()
            ))
        })?;
        out.truncate(start + written);
        rest = tail;
        on_progress(data.len() - rest.len());
    }
    if out.is_empty() {
        return Err(error("the LZ4 frame holds no blocks"));
    }
    Ok((out, data.len() - rest.len()))
}

/// Checks that `image` is an x86-64 ELF executable with a PVH entry note and returns the entry
/// address.
pub(crate) fn pvh_entry(image: &[u8]) -> Result<u64> {
    let file = ElfFile64::<Endianness>::parse(image)
        .map_err(|e| error(format!("not a 64-bit ELF file: {e}")))?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(error(format!(
            "the ELF is for machine {}, not x86-64",
            header.e_machine(endian)
        )));
    }
    for segment in file.elf_program_headers() {
        if segment.p_type(endian) != elf::PT_NOTE {
            continue;
        }
        let notes = segment
            .notes(endian, image)
            .map_err(|e| error(format!("bad PT_NOTE segment: {e}")))?;
        let Some(mut notes) = notes else { continue };
        while let Some(note) = notes
            .next()
            .map_err(|e| error(format!("bad ELF note: {e}")))?
        {
            if note.name() != b"Xen"
                || note.n_type(endian) != elf::NoteType(XEN_ELFNOTE_PHYS32_ENTRY)
            {
                continue;
            }
            let desc = note.desc();
            return match desc.len() {
                4 => Ok(u64::from(u32::from_le_bytes([
                    desc[0], desc[1], desc[2], desc[3],
                ]))),
                8.. => Ok(u64::from_le_bytes([
                    desc[0], desc[1], desc[2], desc[3], desc[4], desc[5], desc[6], desc[7],
                ])),
                n => Err(error(format!(
                    "the PVH entry note has a {n}-byte descriptor"
                ))),
            };
        }
    }
    Err(error(
        "the kernel ELF has no PVH entry note (Xen note type 18, XEN_ELFNOTE_PHYS32_ENTRY); it needs CONFIG_PVH=y",
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use object::pod::bytes_of;
    use object::{LittleEndian as LE, U16, U32, U64};

    /// A minimal x86-64 ELF executable with the given program headers' (type, content).
    pub(crate) fn synthetic_elf(segments: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let header_len = size_of::<elf::FileHeader64<LE>>();
        let ph_len = size_of::<elf::ProgramHeader64<LE>>();
        let mut data_offset = header_len + ph_len * segments.len();
        let mut phdrs = Vec::new();
        for (p_type, content) in segments {
            phdrs.push(elf::ProgramHeader64::<LE> {
                p_type: U32::new(LE, elf::ProgramType(*p_type)),
                p_flags: U32::new(LE, elf::ProgramFlags(elf::PF_R.0)),
                p_offset: U64::new(LE, data_offset as u64),
                p_vaddr: U64::new(LE, 0x100_0000),
                p_paddr: U64::new(LE, 0x100_0000),
                p_filesz: U64::new(LE, content.len() as u64),
                p_memsz: U64::new(LE, content.len() as u64),
                p_align: U64::new(LE, 4),
            });
            data_offset += content.len();
        }
        let header = elf::FileHeader64::<LE> {
            e_ident: elf::Ident {
                magic: elf::ELFMAG,
                class: elf::ELFCLASS64,
                data: elf::ELFDATA2LSB,
                version: elf::EV_CURRENT,
                os_abi: elf::ELFOSABI_SYSV,
                abi_version: 0,
                padding: [0; 7],
            },
            e_type: U16::new(LE, elf::ET_EXEC),
            e_machine: U16::new(LE, elf::EM_X86_64),
            e_version: U32::new(LE, elf::EV_CURRENT.0.into()),
            e_entry: U64::new(LE, 0x100_0000),
            e_phoff: U64::new(LE, header_len as u64),
            e_shoff: U64::new(LE, 0),
            e_flags: U32::new(LE, elf::FileFlags(0)),
            e_ehsize: U16::new(LE, header_len as u16),
            e_phentsize: U16::new(LE, ph_len as u16),
            e_phnum: U16::new(LE, segments.len() as u16),
            e_shentsize: U16::new(LE, 64),
            e_shnum: U16::new(LE, 0),
            e_shstrndx: U16::new(LE, elf::SHN_UNDEF),
        };
        let mut out = bytes_of(&header).to_vec();
        for ph in &phdrs {
            out.extend_from_slice(bytes_of(ph));
        }
        for (_, content) in segments {
            out.extend_from_slice(content);
        }
        out
    }

    /// One ELF note (4-byte aligned, as in a PT_NOTE segment).
    pub(crate) fn note(name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
        let pad = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&n_type.to_le_bytes());
        out.extend_from_slice(name);
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(desc);
        pad(&mut out);
        out
    }

    fn legacy_lz4(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    /// Data that compresses, but not to nothing: 20 MiB, so three legacy blocks.
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 7 == 0 {
                    state as u8
                } else {
                    (i / 1024) as u8
                }
            })
            .collect()
    }

    #[test]
    fn legacy_lz4_decodes_several_blocks_and_stops_at_trailing_bytes() {
        let data = sample(20 << 20);
        let mut frame = legacy_lz4(&data);
        let frame_len = frame.len();
        frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
        frame.extend_from_slice(&[0xff; 13]);
        let mut calls = 0;
        let (out, consumed) = decode_lz4_legacy(&frame, &mut |_| calls += 1).unwrap();
        assert_eq!(out, data);
        assert_eq!(consumed, frame_len);
        assert_eq!(calls, 3);
    }

    #[test]
    fn corrupt_block_is_an_error() {
        let mut frame = legacy_lz4(&sample(1 << 16));
        let last = frame.len() - 1;
        frame[8..last].iter_mut().for_each(|b| *b = 0xff);
        assert!(decode_lz4_legacy(&frame, &mut |_| {}).is_err());
        assert!(decode_lz4_legacy(b"not lz4", &mut |_| {}).is_err());
    }

    /// A bzImage-shaped buffer: a boot header pointing at `payload`.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3usize;
        let offset = 0x40usize;
        let mut image = vec![0u8; (setup_sects + 1) * 512 + offset];
        image[0x1f1] = setup_sects as u8;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&(offset as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"decompressor code after the payload");
        image
    }

    #[test]
    fn bzimage_payload_is_found_decoded_and_size_checked() {
        let elf = synthetic_elf(&[(
            elf::PT_NOTE.0,
            note(b"Xen", 18, &0x0100_0850u32.to_le_bytes()),
        )]);
        let mut payload = legacy_lz4(&elf);
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let out = extract(&bzimage(&payload), &mut |_| {}).unwrap();
        assert_eq!(out, elf);
        assert_eq!(pvh_entry(&out).unwrap(), 0x0100_0850);

        let last = payload.len() - 4;
        payload[last..].copy_from_slice(&1234u32.to_le_bytes());
        let err = extract(&bzimage(&payload), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("records 1234"), "{err}");
    }

    #[test]
    fn other_compressions_and_non_bzimages_are_refused() {
        let err = extract(&bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        assert!(extract(&[0u8; 4096], &mut |_| {}).is_err());
    }

    #[test]
    fn pvh_note_is_required() {
        let with_other_notes = synthetic_elf(&[
            (elf::PT_LOAD.0, vec![0x90; 16]),
            (
                elf::PT_NOTE.0,
                [note(b"GNU", 3, &[1; 20]), note(b"Xen", 5, b"xen-3.0\0")].concat(),
            ),
        ]);
        let err = pvh_entry(&with_other_notes).unwrap_err();
        assert!(err.to_string().contains("no PVH entry note"), "{err}");
        assert!(pvh_entry(b"\x7fELF garbage").is_err());

        let with_pvh = synthetic_elf(&[(
            elf::PT_NOTE.0,
            [
                note(b"Xen", 5, b"xen-3.0\0"),
                note(b"Xen", 18, &0x1000850u64.to_le_bytes()),
            ]
            .concat(),
        )]);
        assert_eq!(pvh_entry(&with_pvh).unwrap(), 0x1000850);
    }
}
