//! Snapshots. INTERFACE STUB — being implemented.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::store::Store;
use super::Node;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to write the snapshot {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("corrupt snapshot {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("failed to read the snapshot {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// Every record at or below this LSN is reflected in every slot.
    pub start_lsn: u64,
    /// No record above this LSN is reflected in any slot.
    pub end_lsn: u64,
    pub keys: u64,
    pub bytes: u64,
    pub finished_at_ms: u64,
    pub duration_ms: u64,
}

/// A snapshot loaded into a store.
pub struct Loaded {
    pub info: SnapshotInfo,
    /// Per slot, the LSN the slot's content reflects: replay applies a record
    /// of slot `s` only when its LSN is above `watermarks[s]`.
    pub watermarks: Vec<u64>,
}

/// Loads the newest valid snapshot in `dir` into `store`.
pub fn load_newest(_dir: &Path, _store: &mut Store) -> Result<Option<Loaded>, SnapshotError> {
    Ok(None)
}

/// Takes a snapshot while the node keeps serving.
pub async fn take(_node: &Rc<Node>) -> Result<SnapshotInfo, SnapshotError> {
    Err(SnapshotError::Write {
        path: PathBuf::new(),
        source: std::io::Error::other("snapshots are not implemented yet"),
    })
}
