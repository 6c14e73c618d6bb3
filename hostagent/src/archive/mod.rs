//! Sandboxes archived to object storage, content-addressed.
//!
//! An archive is a list of [`ArchivedSet`]s: named groups of files that go back into one
//! directory each. The `sandbox` set is what a host needs to boot the sandbox again (its record
//! and its disks, flattened to raw so no base image or layer of this host is needed); further
//! sets are directories the caller names (a paused-to-disk sandbox's memory image). Every file is
//! stored as [`chunks`] under their BLAKE3, so what another archive already stored is not sent
//! again, and a download checks every byte.
//!
//! The store is either a directory ([`store::DirStore`], the default `<data>/archive`) or an
//! S3-compatible bucket ([`s3::S3Store`]); both run the same code above the three store
//! operations. The host agent never signs an archive: the engine signs the [`Archive`] it gets
//! back and keeps it, and hands it back on restore.

pub mod chunks;
pub mod s3;
pub mod store;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

pub use chunks::{ArchivedFile, CHUNK_SIZE};
pub use s3::{S3Config, S3Credentials};
pub use store::{DirStore, ObjectStore};

use crate::error::{Error, Result};

/// The set holding the sandbox's own directory.
pub const SANDBOX_SET: &str = "sandbox";
/// The set holding a snapshot directory uploaded on its own (a backup).
pub const SNAPSHOT_SET: &str = "snapshot";

/// Where archives go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObjectStoreConfig {
    /// Files under a directory.
    Dir {
        /// The directory.
        path: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// Opens the store `config` names.
pub fn open_store(config: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>> {
    Ok(match config {
        ObjectStoreConfig::Dir { path } => Arc::new(DirStore::new(path)?),
        ObjectStoreConfig::S3(s3) => Arc::new(s3::S3Store::new(s3)?),
    })
}

/// Files that go back into one directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedSet {
    /// The set's name ([`SANDBOX_SET`], or one the caller gave).
    pub name: String,
    /// Its files.
    pub files: Vec<ArchivedFile>,
    /// Files of this set that were the sandbox's own disks (hard links of a pause to disk):
    /// `(file name, disk id)`. They are not stored twice; a restore links the disk back in.
    #[serde(default)]
    pub disk_links: Vec<(String, String)>,
}

/// A whole archive, as the host made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// The sets, [`SANDBOX_SET`] first.
    pub sets: Vec<ArchivedSet>,
}

impl Archive {
    /// The set called `name`.
    pub fn set(&self, name: &str) -> Option<&ArchivedSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Checks what a restore relies on: this host's chunk size, set `required` present, every
    /// file well formed.
    pub fn check(&self, required: &str) -> Result<()> {
        if self.chunk_size != CHUNK_SIZE {
            return Err(Error::ArchiveCorrupt(format!(
                "the archive's chunks are {} bytes, this host's {CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        if self.set(required).is_none() {
            return Err(Error::ArchiveCorrupt(format!(
                "the archive has no {required} set"
            )));
        }
        for set in &self.sets {
            for file in &set.files {
                chunks::check_file(file)?;
            }
        }
        Ok(())
    }
}

/// A directory to archive with the sandbox, or to restore one of its sets into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveDir {
    /// The set's name (not [`SANDBOX_SET`]).
    pub set: String,
    /// The directory.
    pub dir: PathBuf,
}

/// What an archive or a restore moved and took.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// Files.
    pub files: u64,
    /// Bytes of all files.
    pub bytes_total: u64,
    /// Chunks sent to (or fetched from) the store.
    pub chunks_moved: u64,
    /// Chunks the store had already (uploads only).
    pub chunks_reused: u64,
    /// Chunks of zeros, stored nowhere.
    pub chunks_zero: u64,
    /// Bytes sent or fetched.
    pub bytes_moved: u64,
    /// Milliseconds.
    pub ms: u64,
}

/// An archive and its cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archived {
    /// What to hand back to restore it.
    pub archive: Archive,
    /// What the upload moved.
    pub report: TransferReport,
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// What the download moved.
    pub report: TransferReport,
    /// Per extra set, the files the host changed after download (their content differs from
    /// what was archived: disks now raw, the host record saying so), for the caller to re-seal.
    pub changed: Vec<(String, Vec<String>)>,
}
