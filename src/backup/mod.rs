//! Backups: per-shard snapshots plus continuously archived log segments, to
//! a PersistentVolumeClaim (a directory) or an S3-compatible bucket, with a
//! manifest of checksums; point-in-time restore into a node's data
//! directory; retention; verification. See docs/backup.md.
//!
//! Layout under the target's root:
//!
//! ```text
//! <cluster>/backups/<id>/manifest.json          written last: no manifest = incomplete
//! <cluster>/backups/<id>/<shard>/snapshot-….tsnap
//! <cluster>/wal/<shard>/<first>-<last>.wal       a log segment (or a prefix of the active one)
//! <cluster>/wal/<shard>/<first>-<last>.json      its size, SHA-256, LSN range
//! <cluster>/wal/<shard>/archived.json            how far the shard's log is archived, and when
//! ```
//!
//! Every file's entry ([`FileEntry`]) has its size and SHA-256; files over
//! one part (64 MiB) also the SHA-256 of every part, and then `sha256` is a
//! composite of those (see [`checksum`]).

pub mod checksum;
pub mod cli;
pub mod direct;
pub mod manage;
pub mod restore;
pub mod run;
pub mod target;

use serde::{Deserialize, Serialize};

pub use target::Target;

/// Version of the manifest format. 2: files may carry part checksums
/// (`partBytes`, `partSha256`, composite `sha256`); 1 never does. Readers
/// accept every version up to this one.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("invalid backup target {target:?}: {reason}")]
    ParseTarget { target: String, reason: String },
    #[error("failed to open the backup target {target}: {source}")]
    OpenTarget {
        target: String,
        source: object_store::Error,
    },
    #[error("failed to write {key} to the backup target: {source}")]
    Put {
        key: String,
        source: object_store::Error,
    },
    #[error("failed to read {key} from the backup target: {source}")]
    Get {
        key: String,
        source: object_store::Error,
    },
    #[error("failed to list {prefix} on the backup target: {source}")]
    List {
        prefix: String,
        source: object_store::Error,
    },
    #[error("failed to delete {key} from the backup target: {source}")]
    Delete {
        key: String,
        source: object_store::Error,
    },
    #[error("failed to call the node at {url}: {reason}")]
    NodeCall { url: String, reason: String },
    #[error("could not reach the whole cluster: {0}")]
    NoNodes(String),
    #[error("failed to decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("failed to write the local file {path}: {source}")]
    LocalWrite {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read the local file {path}: {source}")]
    LocalRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checksum mismatch in {key}: expected SHA-256 {expected}, got {actual} ({bytes} bytes)"
    )]
    Checksum {
        key: String,
        expected: String,
        actual: String,
        bytes: u64,
    },
    #[error("checksum mismatch in {key}, part {part} of {parts} (bytes {start}..{end}): expected SHA-256 {expected}, got {actual}")]
    PartChecksum {
        key: String,
        /// 1-based.
        part: usize,
        parts: usize,
        start: u64,
        end: u64,
        expected: String,
        actual: String,
    },
    #[error("size mismatch in {key}: expected {expected} bytes, got {actual}")]
    Size {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid checksums for {key} in the backup's metadata: {reason}")]
    Entry { key: String, reason: String },
    #[error("backup {id} has manifest format {version}; this tessera reads formats up to {FORMAT_VERSION}: use a newer tessera")]
    Format { id: String, version: u32 },
    #[error("backup {id} is incomplete: {reason}")]
    Incomplete { id: String, reason: String },
    #[error("no backup found: {0}")]
    NotFound(String),
    #[error("cannot restore: {0}")]
    Plan(String),
}

impl BackupError {
    /// True when running the same command again cannot help (a corrupt or
    /// incomplete backup, a refused plan): a Job should fail at once
    /// instead of retrying (`tessera backup` exits with 3 for these).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::ParseTarget { .. }
                | Self::Checksum { .. }
                | Self::PartChecksum { .. }
                | Self::Size { .. }
                | Self::Entry { .. }
                | Self::Format { .. }
                | Self::Incomplete { .. }
                | Self::NotFound(_)
                | Self::Plan(_)
                | Self::Decode { .. }
        )
    }
}

/// One file of a backup, with its checksums (format: [`checksum`],
/// docs/backup.md "Checksums").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Key relative to the target's root.
    pub key: String,
    pub bytes: u64,
    /// One part: the hex SHA-256 of the file. Several: the composite
    /// `hex(SHA-256(part digests concatenated))-<parts>`.
    pub sha256: String,
    /// Size of every part but the (shorter) last; absent: one part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_bytes: Option<u64>,
    /// Hex SHA-256 of every part, in order; absent: one part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_sha256: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotEntry {
    #[serde(flatten)]
    pub file: FileEntry,
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub keys: u64,
    /// When the node finished writing it (node clock, ms since the epoch):
    /// every record it reflects was appended before.
    pub finished_at_ms: u64,
}

/// An archived log segment (the `<first>-<last>.json` next to it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentEntry {
    #[serde(flatten)]
    pub file: FileEntry,
    pub first_lsn: u64,
    pub last_lsn: u64,
    /// false: a prefix of the segment the node was still writing.
    pub closed: bool,
    pub node_id: String,
    pub shard_epoch: u64,
    pub archived_at_ms: u64,
}

/// How far a shard's log is archived (`wal/<shard>/archived.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivePoint {
    pub last_lsn: u64,
    /// Every record the primary appended before this time (its clock) is
    /// archived.
    pub captured_at_ms: u64,
    pub node_id: String,
    pub shard_epoch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardBackup {
    pub name: String,
    pub shard_epoch: u64,
    pub slots: Vec<(u16, u16)>,
    /// Node the snapshot came from, and its role then.
    pub source_node: String,
    pub source_role: String,
    pub primary_node: String,
    pub snapshot: SnapshotEntry,
    /// The log archived by this run (segments shared with other backups).
    pub archive: ArchivePoint,
    pub segments: Vec<SegmentEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub cluster: String,
    pub id: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_ms: u64,
    /// Snapshot and newly archived segment bytes.
    pub bytes: u64,
    /// The cross-shard cut this backup restores to by default: the earliest
    /// of the shards' archive points (each after every shard's snapshot).
    pub consistent_at_ms: u64,
    pub shards: Vec<ShardBackup>,
}

impl Manifest {
    /// Refuses a manifest written by a newer tessera (it may hold checksums
    /// this one does not know how to check).
    pub fn check_format(&self) -> Result<(), BackupError> {
        if self.format_version > FORMAT_VERSION {
            return Err(BackupError::Format {
                id: self.id.clone(),
                version: self.format_version,
            });
        }
        Ok(())
    }

    /// The latest snapshot finish time: a point in time before it cannot be
    /// restored from this backup.
    pub fn snapshots_done_ms(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.snapshot.finished_at_ms)
            .max()
            .unwrap_or(0)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub fn now_ms() -> u64 {
    crate::node::now_ms()
}

/// RFC 3339 (UTC, ms) for logs and listings.
pub fn fmt_ms(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| ms.to_string())
}

/// Parses an RFC 3339 time into ms since the epoch.
pub fn parse_time(s: &str) -> Result<u64, BackupError> {
    let t: jiff::Timestamp = s.parse().map_err(|e| BackupError::Decode {
        what: format!("the time {s:?} (RFC 3339, e.g. 2026-01-02T03:04:05Z)"),
        reason: format!("{e}"),
    })?;
    Ok(t.as_millisecond().max(0) as u64)
}

/// Key prefixes.
pub fn backups_prefix(cluster: &str) -> String {
    format!("{cluster}/backups")
}
pub fn backup_prefix(cluster: &str, id: &str) -> String {
    format!("{cluster}/backups/{id}")
}
pub fn manifest_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/backups/{id}/manifest.json")
}
pub fn wal_prefix(cluster: &str, shard: &str) -> String {
    format!("{cluster}/wal/{shard}")
}
pub fn archive_point_key(cluster: &str, shard: &str) -> String {
    format!("{cluster}/wal/{shard}/archived.json")
}
pub fn segment_key(cluster: &str, shard: &str, first: u64, last: u64) -> String {
    format!("{cluster}/wal/{shard}/{first:020}-{last:020}.wal")
}

/// Installs rustls' process-wide crypto provider (ring) once: the HTTP
/// client for S3 needs one.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
