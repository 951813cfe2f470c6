//! Write-ahead log. INTERFACE STUB — being implemented (segments, CRC32C,
//! group commit, fsync policies, recovery); this version only counts LSNs.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;

/// Slot value for records that touch every slot (FLUSHALL).
pub const GLOBAL_SLOT: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    EverySec,
    No,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            _ => Err(format!("unknown fsync policy '{s}' (always, everysec or no)")),
        }
    }
}

impl FsyncPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::No => "no",
        }
    }
}

/// One logged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub slot: u16,
    pub args: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("failed to open the log in {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("corrupt log segment {path} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("failed to write the log segment {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("failed to fsync the log segment {path}: {source}")]
    Sync { path: PathBuf, source: std::io::Error },
    #[error("the log has failed earlier and accepts no more writes")]
    Failed,
}

/// Counters for metrics and INFO.
#[derive(Debug, Clone, Default)]
pub struct WalStats {
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub segments: usize,
    pub fsync_latency_sum_secs: f64,
}

/// Iterates over logged records, segment by segment.
pub struct WalReader {
    _p: (),
}

impl Iterator for WalReader {
    type Item = Result<Record, WalError>;
    fn next(&mut self) -> Option<Self::Item> {
        None
    }
}

pub struct Wal {
    enabled: bool,
    policy: FsyncPolicy,
    last_lsn: Cell<u64>,
}

impl Wal {
    /// Memory only: LSNs are counted, nothing is written.
    pub fn disabled() -> Rc<Wal> {
        Rc::new(Wal {
            enabled: false,
            policy: FsyncPolicy::No,
            last_lsn: Cell::new(0),
        })
    }

    pub fn open(_dir: &Path, policy: FsyncPolicy) -> Result<Rc<Wal>, WalError> {
        Ok(Rc::new(Wal {
            enabled: true,
            policy,
            last_lsn: Cell::new(0),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// The records with an LSN above `after`, in order.
    pub fn read_from(&self, _after: u64) -> Result<WalReader, WalError> {
        Ok(WalReader { _p: () })
    }

    /// Makes the next LSN at least `lsn + 1` (after loading a snapshot that is
    /// newer than the retained log).
    pub fn ensure_after(&self, lsn: u64) {
        if self.last_lsn.get() < lsn {
            self.last_lsn.set(lsn);
        }
    }

    /// Appends a record to the pending batch and returns its LSN. No I/O.
    pub fn append(&self, _slot: u16, _args: &[&[u8]]) -> u64 {
        let lsn = self.last_lsn.get() + 1;
        self.last_lsn.set(lsn);
        lsn
    }

    /// Resolves when `lsn` is acknowledged by the fsync policy.
    pub async fn wait(&self, _lsn: u64) -> Result<(), WalError> {
        Ok(())
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn.get()
    }
    pub fn durable_lsn(&self) -> u64 {
        self.last_lsn.get()
    }

    /// Starts the flusher task (on the current LocalSet) and the sync thread.
    pub fn start(self: &Rc<Self>) {}

    /// Removes segments whose every record is at or below `lsn`.
    pub fn truncate_through(&self, _lsn: u64) -> Result<usize, WalError> {
        Ok(0)
    }

    pub fn stats(&self) -> WalStats {
        WalStats::default()
    }
}
