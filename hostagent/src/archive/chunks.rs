//! Files as content-addressed chunks: a file is cut into [`CHUNK_SIZE`] pieces, each stored once
//! under `chunks/<2 hex>/<BLAKE3 hex>`; pieces that are all zeros (holes included, found with
//! `SEEK_DATA` without reading them) are stored nowhere. A file that was archived before, or
//! shares pieces with one (a fork, another sandbox of the same template), uploads only the pieces
//! the store lacks.
//!
//! A download checks every piece's length and hash before writing it, and writes into a file
//! that the caller renames into place only when all of it arrived.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::store::ObjectStore;
use crate::error::{Error, IoContext, Result};

/// Bytes per chunk (the last one of a file may be shorter).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// Chunks moved at once per file.
const PARALLEL: usize = 4;

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// Its name in its directory (one path component).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// The BLAKE3 (hex) of each chunk in order; `None` for a chunk of zeros.
    pub chunks: Vec<Option<String>>,
}

/// What an upload or download moved.
#[derive(Debug, Default)]
pub struct Counts {
    /// Chunks sent to (or fetched from) the store.
    pub moved: AtomicU64,
    /// Chunks the store had already.
    pub reused: AtomicU64,
    /// Chunks of zeros (stored nowhere).
    pub zero: AtomicU64,
    /// Bytes sent or fetched.
    pub bytes: AtomicU64,
}

/// The key of a chunk.
pub fn chunk_key(hash: &str) -> String {
    format!("chunks/{}/{hash}", &hash[..2])
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Reads chunk `index` of `file`: `None` when it is all zeros.
fn read_chunk(file: &std::fs::File, size: u64, index: u64) -> std::io::Result<Option<Vec<u8>>> {
    let offset = index * CHUNK_SIZE;
    let len = CHUNK_SIZE.min(size - offset);
    if !has_data(file, offset, len)? {
        return Ok(None);
    }
    let mut buf = vec![0u8; usize::try_from(len).expect("a chunk fits in memory")];
    file.read_exact_at(&mut buf, offset)?;
    Ok((!buf.iter().all(|b| *b == 0)).then_some(buf))
}

/// Whether `[offset, offset + len)` of `file` has any data (not only holes).
fn has_data(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsFd;
    let start = i64::try_from(offset).map_err(std::io::Error::other)?;
    match nix::unistd::lseek(file.as_fd(), start, nix::unistd::Whence::SeekData) {
        Ok(next) => Ok(u64::try_from(next).unwrap_or(u64::MAX) < offset + len),
        // No data at or after `offset`.
        Err(nix::errno::Errno::ENXIO) => Ok(false),
        // A filesystem without SEEK_DATA: read it.
        Err(nix::errno::Errno::EINVAL) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Uploads `path` as `name`: every chunk the store lacks. `counts` adds up what moved.
pub async fn upload_file(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    name: &str,
    counts: &Counts,
) -> Result<ArchivedFile> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?;
    let size = meta.len();
    let file = Arc::new(file);
    let mut chunks = Vec::new();
    let mut pending = FuturesUnordered::new();
    for index in 0..size.div_ceil(CHUNK_SIZE) {
        let f = file.clone();
        let data = tokio::task::spawn_blocking(move || read_chunk(&f, size, index))
            .await
            .map_err(|e| Error::Invalid(format!("chunk read task: {e}")))?
            .ctx(|| format!("reading {}", path.display()))?;
        let Some(data) = data else {
            counts.zero.fetch_add(1, Ordering::Relaxed);
            chunks.push(None);
            continue;
        };
        let hash = blake3::hash(&data).to_hex().to_string();
        chunks.push(Some(hash.clone()));
        let store = store.clone();
        pending.push(async move {
            let key = chunk_key(&hash);
            if store.has(&key).await? {
                counts.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let len = data.len() as u64;
            store.put(&key, Bytes::from(data)).await?;
            counts.moved.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(len, Ordering::Relaxed);
            Ok::<(), Error>(())
        });
        if pending.len() >= PARALLEL
            && let Some(done) = pending.next().await
        {
            done?;
        }
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    Ok(ArchivedFile {
        name: name.to_string(),
        size,
        mode: meta.permissions().mode() & 0o7777,
        chunks,
    })
}

fn count_download(counts: &Counts, bytes: u64) {
    counts.moved.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// Checks a file name from an archive: one plain path component.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::ArchiveCorrupt(format!(
            "the archive names a file {name:?}"
        )));
    }
    Ok(())
}

/// Checks that `file` describes a file this host can write: a plain name, and as many chunks as
/// its size needs, each a BLAKE3 hash.
pub fn check_file(file: &ArchivedFile) -> Result<()> {
    check_name(&file.name)?;
    if file.chunks.len() as u64 != file.size.div_ceil(CHUNK_SIZE) {
        return Err(Error::ArchiveCorrupt(format!(
            "{} has {} chunks for {} bytes",
            file.name,
            file.chunks.len(),
            file.size
        )));
    }
    if let Some(bad) = file.chunks.iter().flatten().find(|h| !is_hash(h)) {
        return Err(Error::ArchiveCorrupt(format!(
            "{} lists a chunk {bad:?}",
            file.name
        )));
    }
    Ok(())
}

/// Downloads `file` into `dest` (created; sparse where its chunks are zeros), checking every
/// chunk. A chunk the store lacks, or whose bytes do not match its hash, is
/// [`Error::ArchiveCorrupt`].
pub async fn download_file(
    store: &Arc<dyn ObjectStore>,
    file: &ArchivedFile,
    dest: &Path,
    counts: &Counts,
) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    check_file(file)?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .ctx(|| format!("creating {}", dest.display()))?;
    out.set_len(file.size)
        .ctx(|| format!("sizing {}", dest.display()))?;
    let out = Arc::new(out);
    let mut pending = FuturesUnordered::new();
    for (index, hash) in file.chunks.iter().enumerate() {
        let Some(hash) = hash.clone() else { continue };
        let (store, out) = (store.clone(), out.clone());
        let (name, size) = (file.name.clone(), file.size);
        pending.push(async move {
            let offset = index as u64 * CHUNK_SIZE;
            let want = CHUNK_SIZE.min(size - offset);
            let data = store.get(&chunk_key(&hash)).await?.ok_or_else(|| {
                Error::ArchiveCorrupt(format!(
                    "chunk {index} of {name} ({hash}) is missing from {}",
                    store.describe()
                ))
            })?;
            if data.len() as u64 != want || blake3::hash(&data).to_hex().as_str() != hash {
                return Err(Error::ArchiveCorrupt(format!(
                    "chunk {index} of {name} ({hash}) in {} does not match its hash",
                    store.describe()
                )));
            }
            tokio::task::spawn_blocking(move || out.write_all_at(&data, offset))
                .await
                .map_err(|e| Error::Invalid(format!("chunk write task: {e}")))?
                .ctx(|| format!("writing {name}"))?;
            Ok::<u64, Error>(want)
        });
        if pending.len() >= PARALLEL
            && let Some(done) = pending.next().await
        {
            count_download(counts, done?);
        }
    }
    while let Some(done) = pending.next().await {
        count_download(counts, done?);
    }
    out.sync_all()
        .ctx(|| format!("syncing {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(file.mode & 0o777))
        .ctx(|| format!("setting the mode of {}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::store::DirStore;

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(DirStore::new(&dir.join("objects")).unwrap())
    }

    /// A sparse file: data in chunk 0 and at the start of chunk 3, a hole between, a short tail.
    fn sample(path: &Path) -> Vec<u8> {
        let size = 3 * CHUNK_SIZE + 1000;
        let f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(b"first", 10).unwrap();
        f.write_all_at(b"tail", 3 * CHUNK_SIZE + 5).unwrap();
        std::fs::read(path).unwrap()
    }

    #[tokio::test]
    async fn a_file_round_trips_and_a_second_upload_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let src = dir.path().join("disk");
        let bytes = sample(&src);
        let counts = Counts::default();
        let file = upload_file(&store, &src, "rootfs.disk", &counts)
            .await
            .unwrap();
        assert_eq!(file.chunks.len(), 4);
        assert_eq!(file.chunks.iter().filter(|c| c.is_none()).count(), 2);
        assert_eq!(counts.moved.load(Ordering::Relaxed), 2);

        let again = Counts::default();
        let same = upload_file(&store, &src, "rootfs.disk", &again)
            .await
            .unwrap();
        assert_eq!(same, file);
        assert_eq!(again.moved.load(Ordering::Relaxed), 0);
        assert_eq!(again.reused.load(Ordering::Relaxed), 2);

        let dest = dir.path().join("restored");
        download_file(&store, &file, &dest, &Counts::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        // Zero chunks stay holes.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&dest).unwrap().blocks() * 512 < 3 * CHUNK_SIZE);
    }

    #[tokio::test]
    async fn missing_or_altered_chunks_and_bad_lists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let src = dir.path().join("disk");
        sample(&src);
        let file = upload_file(&store, &src, "d", &Counts::default())
            .await
            .unwrap();
        let hash = file.chunks[0].clone().unwrap();
        let chunk = dir.path().join("objects").join(chunk_key(&hash));

        std::fs::write(&chunk, b"tampered").unwrap();
        let e = download_file(&store, &file, &dir.path().join("a"), &Counts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::ArchiveCorrupt(m) if m.contains("does not match")),
            "{e}"
        );

        std::fs::remove_file(&chunk).unwrap();
        let e = download_file(&store, &file, &dir.path().join("b"), &Counts::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::ArchiveCorrupt(m) if m.contains("missing")),
            "{e}"
        );

        for bad in [
            ArchivedFile {
                name: "../x".into(),
                ..file.clone()
            },
            ArchivedFile {
                size: file.size + CHUNK_SIZE,
                ..file.clone()
            },
            ArchivedFile {
                chunks: vec![Some("../../etc".into()); file.chunks.len()],
                ..file.clone()
            },
        ] {
            assert!(matches!(check_file(&bad), Err(Error::ArchiveCorrupt(_))));
        }
    }
}
