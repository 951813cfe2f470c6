//! Write-ahead log: every change to the keyspace, in LSN order, in segment
//! files under `<data-dir>/wal/`.
//!
//! Threads: the event-loop thread encodes records into a pending buffer
//! ([`Wal::append`], no I/O), and a flusher task on the same thread writes the
//! whole buffer with one write(2) when it gets to run. A dedicated sync thread
//! does the fsyncs, so the loop keeps serving (and writing later records)
//! while one runs, and the next fsync covers everything written meanwhile:
//! group commit.
//!
//! What a client's write waits for ([`Wal::wait`]):
//! - `always`: the record is fsynced (durable LSN ≥ its LSN);
//! - `everysec`: the record is written to the file (page cache); the sync
//!   thread fsyncs once a second, so a power loss loses at most ~1 s;
//! - `no`: the record is written; fsync only at segment roll and shutdown.
//!
//! A failed write or fsync is never acknowledged: the log enters a failed
//! state, every waiter gets [`WalError::Failed`], and the process exits. The
//! keyspace in memory already holds the change the log could not take, so
//! serving on would answer with data that a restart would not have.
//!
//! See docs/storage-format.md for the formats and the recovery rules.
//!
//! Here: the shared types and the [`Wal`]'s state. `format.rs`: the segment
//! and record format (documented there); `reader.rs`: validating segments and
//! reading records back; `writer.rs`: opening, appending, flushing, syncing,
//! rolling and truncating; `ring.rs`: what replicas are fed from, and a
//! replica's appends and resets.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::Notify;

use super::metrics::LATENCY_BUCKETS;
// The moved code names this as `super::release` (as it did in one file).
use super::release;

mod format;
mod reader;
mod ring;
mod writer;

pub use format::{
    decode_record, decode_records_in_place, encode_record, skip_records_through, RecordView,
    SEGMENT_HEADER_LEN,
};
pub use reader::WalReader;

/// Recovery's validation of one segment held in memory (see
/// `reader::scan_segment`): the last valid LSN and the valid length. For
/// the fuzz harness (`node::fuzzing`).
pub(crate) fn scan_segment_bytes(
    path: &std::path::Path,
    b: &[u8],
    name_lsn: u64,
    is_last: bool,
) -> Result<(u64, u64), String> {
    reader::scan_segment(path, b, name_lsn, is_last)
        .map(|s| (s.last_lsn, s.valid_len))
        .map_err(|e| e.to_string())
}

/// Slot value for records that touch every slot (FLUSHALL).
pub const GLOBAL_SLOT: u16 = u16::MAX;

/// Slot value of time-marker records: not a command, replay skips them. A
/// marker `[TESSERA.TIME, ms u64 LE]` is appended before a write whenever
/// the previous marker is [`MARKER_INTERVAL_MS`] or more older, so every
/// record after a marker of time `t` (up to the next marker) was appended in
/// `[t, t + MARKER_INTERVAL_MS)` (plus the coarse clock's ~4 ms): what a
/// point-in-time restore stops on (see docs/backup.md).
pub const MARKER_SLOT: u16 = u16::MAX - 1;

/// Whether `slot` can be a record's: a hash slot, [`GLOBAL_SLOT`] or
/// [`MARKER_SLOT`]. Anything else indexes no slot: a record carrying it is
/// malformed, however valid its CRC.
pub fn is_record_slot(slot: u16) -> bool {
    (slot as usize) < super::slots::SLOTS || slot >= MARKER_SLOT
}

/// First argument of a time-marker record.
pub const TIME_MARKER: &[u8] = b"TESSERA.TIME";

/// Smallest interval between two time markers (only written with writes:
/// an idle log gets none).
pub const MARKER_INTERVAL_MS: u64 = 10;

/// Name of the file (in the log directory) holding the archive hold: the
/// LSN through which closed segments have been archived by a backup. While
/// it exists, truncation never removes a segment above it.
pub const ARCHIVE_HOLD_FILE: &str = "archived-lsn";

/// The time (ms since the Unix epoch) of a time-marker record.
pub fn marker_time(rec: &Record) -> Option<u64> {
    if rec.slot != MARKER_SLOT || rec.args.len() != 2 || rec.args[0] != TIME_MARKER {
        return None;
    }
    let b: [u8; 8] = rec.args[1].as_slice().try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Wall-clock ms from the coarse clock (a few ns per call; ~4 ms steps):
/// called on every logged write.
pub(crate) fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return super::now_ms();
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A log segment as the backup sees it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_lsn: u64,
    /// Last LSN in the file (for the active segment: the last written).
    pub last_lsn: u64,
    /// false for the segment being written.
    pub closed: bool,
    /// Bytes holding records through `last_lsn` (known for the active one;
    /// None: the whole file).
    pub bytes: Option<u64>,
}

/// A segment is closed and a new one started once it holds this much.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Overrides [`DEFAULT_SEGMENT_BYTES`] (tests use small segments).
pub const SEGMENT_BYTES_ENV: &str = "TESSERA_WAL_SEGMENT_BYTES";

/// Exit status of a node whose log failed.
pub const EXIT_LOG_FAILED: i32 = 3;

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
            _ => Err(format!(
                "unknown fsync policy '{s}' (always, everysec or no)"
            )),
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
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt log segment {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("failed to write the log segment {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to fsync the log segment {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read the log segment {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to remove the log segment {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// fsync latencies, per bucket of [`LATENCY_BUCKETS`] (plus +Inf last);
    /// not cumulative.
    pub fsync_latency_buckets: Vec<u64>,
}

/// Segment files in `dir`, by first LSN.
fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let lsn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(lsn) = lsn {
            segs.push((lsn, path));
        }
    }
    segs.sort();
    Ok(segs)
}

/// First LSN of the oldest segment in a log directory (None: no segments):
/// how far back the retained log reaches, without opening it.
pub fn first_retained_lsn(dir: &Path) -> Option<u64> {
    list_segments(dir).ok()?.first().map(|(lsn, _)| *lsn)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An open segment, shared with the sync thread.
struct SegFile {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    /// A new file's directory entry must be durable too, once.
    dir_synced: AtomicBool,
}

struct Segment {
    first_lsn: u64,
    path: PathBuf,
}

struct Active {
    seg: Arc<SegFile>,
    size: u64,
    has_records: bool,
}

enum SyncMsg {
    /// fsync this file; then every LSN up to this one is durable.
    Sync(Arc<SegFile>, u64),
}

/// State shared with the sync thread.
struct Shared {
    durable: AtomicU64,
    failed: AtomicBool,
    /// Signalled whenever `durable` advances or the log fails.
    changed: Notify,
    /// The segment being written and the LSN written to it so far (for the
    /// once-a-second fsync).
    current: Mutex<Option<(Arc<SegFile>, u64)>>,
    fsyncs: AtomicU64,
    fsync_nanos: AtomicU64,
    fsync_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    exit_on_failure: AtomicBool,
}

pub struct Wal {
    enabled: bool,
    policy: FsyncPolicy,
    dir: PathBuf,
    segment_bytes: u64,
    last_lsn: Cell<u64>,
    /// Encoded records not yet written, and the LSN of the first (0: none).
    pending: RefCell<Vec<u8>>,
    pending_first: Cell<u64>,
    spare: RefCell<Vec<u8>>,
    /// Highest LSN written to a segment file.
    written: Cell<u64>,
    written_changed: Notify,
    /// Set when the next batch must start a new segment (LSN jump).
    roll_next: Cell<bool>,
    segments: RefCell<Vec<Segment>>,
    active: RefCell<Option<Active>>,
    bytes_written: Cell<u64>,
    flush_wake: Notify,
    started: Cell<bool>,
    shared: Arc<Shared>,
    sync_tx: RefCell<Option<mpsc::Sender<SyncMsg>>>,
    sync_thread: RefCell<Option<JoinHandle<()>>>,
    /// Recently written batches kept for replicas (see [`Ring`]).
    ring: RefCell<Ring>,
    /// Signalled whenever a batch reaches the ring.
    ring_changed: Notify,
    /// Whether writes get time markers (the node's log; not the unit tests').
    time_markers: Cell<bool>,
    /// Time of the last time-marker record appended (0: none yet).
    last_marker_ms: Cell<u64>,
    /// Archived-through LSN set by backups: truncation keeps everything
    /// above it (None: no backup archives this log).
    archive_hold: Cell<Option<u64>>,
}

/// The most recent written batches, encoded exactly as in the segment files,
/// so replicas can be fed without reading the disk. Bounded in bytes: a
/// replica further behind reads the segments (or resyncs from a snapshot).
#[derive(Default)]
struct Ring {
    /// (first LSN, last LSN, encoded records).
    batches: VecDeque<(u64, u64, bytes::Bytes)>,
    bytes: usize,
    /// 0: disabled (no replicas expected).
    cap: usize,
    /// Filled only once a replica has streamed from this node (as Redis
    /// creates its backlog with the first replica): a node without
    /// replicas keeps no copy of its log in memory, and a replica's first
    /// catch-up reads the segment files anyway.
    active: bool,
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::format::*;
    use super::reader::*;
    use super::*;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    fn all(wal: &Wal, after: u64) -> Vec<Record> {
        wal.read_from(after)
            .expect("reader")
            .collect::<Result<Vec<_>, _>>()
            .expect("valid records")
    }

    fn write_n(dir: &Path, policy: FsyncPolicy, seg: u64, n: u64) -> Vec<u64> {
        run(async {
            let wal = Wal::open_with(dir, policy, seg).expect("open");
            wal.start();
            let mut lsns = Vec::new();
            for i in 0..n {
                let v = format!("v{i}");
                let l = wal.append((i % 16384) as u16, &[b"SET", b"k", v.as_bytes()]);
                // One batch per record, so small segments roll.
                wal.wait(l).await.expect("acked");
                lsns.push(l);
            }
            lsns
        })
    }

    #[test]
    fn record_round_trip() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 42, &[b"SET", b"key", b""]);
        encode_record(&mut buf, 8, GLOBAL_SLOT, &[b"FLUSHALL"]);
        let (r, n) = decode_record(&buf).expect("first");
        assert_eq!(
            r,
            Record {
                lsn: 7,
                slot: 42,
                args: vec![b"SET".to_vec(), b"key".to_vec(), vec![]]
            }
        );
        let (r2, n2) = decode_record(&buf[n..]).expect("second");
        assert_eq!(r2.lsn, 8);
        assert_eq!(r2.slot, GLOBAL_SLOT);
        assert_eq!(n + n2, buf.len());
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert!(decode_record(&bad).is_err());
        assert!(decode_record(&buf[..n - 1]).is_err());
        assert_eq!(decode_header(&encode_header(99)), Ok(99));
    }

    #[test]
    fn reopen_continues_and_reads_across_segments() {
        let tmp = tempfile::tempdir().expect("tmp");
        write_n(tmp.path(), FsyncPolicy::Always, 512, 100);
        let segs = list_segments(tmp.path()).expect("list").len();
        assert!(segs > 3, "small segments roll: {segs}");
        let wal = Wal::open_with(tmp.path(), FsyncPolicy::No, 512).expect("reopen");
        assert_eq!(wal.last_lsn(), 100);
        let recs = all(&wal, 0);
        assert_eq!(recs.len(), 100);
        assert!(recs.iter().enumerate().all(|(i, r)| r.lsn == i as u64 + 1));
        assert_eq!(all(&wal, 60).first().map(|r| r.lsn), Some(61));
        drop(wal);
        write_n(tmp.path(), FsyncPolicy::EverySec, 512, 10);
        let wal = Wal::open_with(tmp.path(), FsyncPolicy::No, 512).expect("reopen");
        assert_eq!(all(&wal, 0).len(), 110);
        // Truncation keeps the active segment and everything above the LSN.
        let removed = wal.truncate_through(50).expect("truncate");
        assert!(removed > 0);
        let rest = all(&wal, 50);
        assert_eq!(rest.first().map(|r| r.lsn), Some(51));
        assert_eq!(rest.len(), 60);
        wal.truncate_through(u64::MAX).expect("truncate");
        assert_eq!(wal.stats().segments, 1, "the active segment always remains");
    }

    #[test]
    fn records_waiting_for_the_first_flush_are_sendable() {
        let tmp = tempfile::tempdir().expect("tmp");
        run(async {
            let wal = Wal::open_with(tmp.path(), FsyncPolicy::EverySec, 1 << 20).expect("open");
            wal.start();
            assert_eq!((wal.first_retained_lsn(), wal.first_sendable_lsn()), (0, 0));
            // No await until the flush: the flusher task cannot run between.
            let l = wal.append(1, &[b"SET", b"a", b"1"]);
            assert_eq!(wal.first_retained_lsn(), 0, "no segment before the flush");
            assert_eq!(wal.first_sendable_lsn(), l);
            wal.flush_now();
            assert_eq!((wal.first_retained_lsn(), wal.first_sendable_lsn()), (l, l));
        });
    }

    /// Copies the log directory as a crash would leave it (the `Wal` is
    /// still open, so nothing is cut).
    fn copy_dir(from: &Path, to: &Path) {
        for e in std::fs::read_dir(from).expect("list") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }

    fn file_len(p: &Path) -> u64 {
        std::fs::metadata(p).expect("stat").len()
    }

    #[test]
    fn segments_are_preallocated_and_cut_to_their_records_when_closed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let crashed = tempfile::tempdir().expect("tmp");
        const SEG: u64 = 64 << 10;
        const N: usize = 1000;
        run(async {
            let wal = Wal::open_with(tmp.path(), FsyncPolicy::Always, SEG).expect("open");
            wal.start();
            for i in 0..N {
                let v = format!("value-{i:0100}");
                let l = wal.append(7, &[b"SET", b"k", v.as_bytes()]);
                wal.wait(l).await.expect("acked");
            }
            let segs = list_segments(tmp.path()).expect("list");
            assert!(segs.len() >= 2, "the log rolled: {segs:?}");
            let (_, active) = segs.last().expect("active");
            assert_eq!(file_len(active), SEG, "the active segment is preallocated");
            for (first, closed) in &segs[..segs.len() - 1] {
                let b = std::fs::read(closed).expect("read");
                let scan = scan_segment(closed, &b, *first, false).expect("a closed segment scans");
                assert_eq!(
                    scan.valid_len,
                    b.len() as u64,
                    "{}: cut at roll",
                    closed.display()
                );
                assert!(!scan.unwritten_tail);
            }
            // The reader stops where the active segment's records end.
            let recs: Vec<_> = wal.read_from(0).expect("reader").collect();
            assert_eq!(recs.len(), N);
            assert!(recs.iter().all(|r| r.is_ok()), "no error at the zero tail");
            copy_dir(tmp.path(), crashed.path());
        });
        // Clean shutdown: the active segment is cut too.
        let (name_lsn, active) = list_segments(tmp.path())
            .expect("list")
            .pop()
            .expect("active");
        assert!(
            file_len(&active) < SEG,
            "cut at close: {}",
            file_len(&active)
        );
        let b = std::fs::read(&active).expect("read");
        assert!(
            !scan_segment(&active, &b, name_lsn, true)
                .expect("scan")
                .unwritten_tail
        );

        // After a crash: the zeros are where writing stopped, not a torn
        // tail; reopening keeps every record and cuts them.
        let active = last_segment(crashed.path());
        assert_eq!(file_len(&active), SEG);
        let b = std::fs::read(&active).expect("read");
        let scan = scan_segment(&active, &b, name_lsn, true).expect("scan");
        assert!(scan.unwritten_tail && scan.torn.is_none(), "{scan:?}");
        let wal = Wal::open_with(crashed.path(), FsyncPolicy::No, SEG).expect("reopen");
        assert_eq!(wal.last_lsn(), N as u64);
        assert_eq!(all(&wal, 0).len(), N);
        assert_eq!(
            file_len(&active),
            SEG,
            "the last segment stays preallocated"
        );
        // New records go right after the valid ones, not after the zeros.
        run(async {
            wal.start();
            let l = wal.append(7, &[b"SET", b"k", b"after"]);
            wal.wait(l).await.expect("acked");
        });
        drop(wal);
        let wal = Wal::open_with(crashed.path(), FsyncPolicy::No, SEG).expect("reopen");
        let recs = all(&wal, 0);
        assert_eq!(recs.len(), N + 1);
        assert_eq!(
            recs.last().map(|r| r.args[2].as_slice()),
            Some(&b"after"[..])
        );
    }

    #[test]
    fn zeros_after_an_older_segment_are_cut_only_if_the_next_segment_follows() {
        let tmp = tempfile::tempdir().expect("tmp");
        write_n(tmp.path(), FsyncPolicy::Always, 512, 40);
        let segs = list_segments(tmp.path()).expect("list");
        assert!(segs.len() > 3);
        // A crash before the cut at roll was durable: zeros after the
        // records of a closed segment.
        let (_, older) = &segs[1];
        let len = file_len(older);
        let f = OpenOptions::new().write(true).open(older).expect("open");
        f.set_len(len + 4096).expect("extend");
        drop(f);
        let wal = Wal::open_with(tmp.path(), FsyncPolicy::No, 512).expect("reopen");
        assert_eq!(wal.last_lsn(), 40);
        assert_eq!(all(&wal, 0).len(), 40);
        assert_eq!(file_len(older), len, "cut back");
        drop(wal);
        // Zeros in place of records: the next segment does not follow.
        let (_, victim) = &list_segments(tmp.path()).expect("list")[1];
        let b = std::fs::read(victim).expect("read");
        let first_record = HEADER_LEN + check_frame(&b[HEADER_LEN..]).expect("a record");
        let mut zeroed = b.clone();
        zeroed[first_record..].fill(0);
        std::fs::write(victim, &zeroed).expect("write");
        let e = Wal::open_with(tmp.path(), FsyncPolicy::No, 512)
            .err()
            .expect("a gap is refused");
        assert!(e.to_string().contains("gap or overlap"), "{e}");
    }

    fn last_segment(dir: &Path) -> PathBuf {
        list_segments(dir)
            .expect("list")
            .pop()
            .expect("a segment")
            .1
    }

    #[test]
    fn torn_tail_is_truncated() {
        let tmp = tempfile::tempdir().expect("tmp");
        write_n(tmp.path(), FsyncPolicy::Always, 1 << 20, 20);
        let path = last_segment(tmp.path());
        let len = std::fs::metadata(&path).expect("meta").len();
        // Cut the last record in half, then add garbage.
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 5).expect("truncate");
        drop(f);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0xAB; 37]).expect("garbage");
        drop(f);
        let wal =
            Wal::open_with(tmp.path(), FsyncPolicy::No, 1 << 20).expect("torn tail tolerated");
        assert_eq!(wal.last_lsn(), 19);
        assert_eq!(all(&wal, 0).len(), 19);
        drop(wal);
        // Writes continue after the cut.
        write_n(tmp.path(), FsyncPolicy::Always, 1 << 20, 5);
        let wal = Wal::open_with(tmp.path(), FsyncPolicy::No, 1 << 20).expect("open");
        let recs = all(&wal, 0);
        assert_eq!(recs.len(), 24);
        assert_eq!(recs.last().map(|r| r.lsn), Some(24));
    }

    #[test]
    fn corruption_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        write_n(tmp.path(), FsyncPolicy::Always, 1 << 20, 20);
        let path = last_segment(tmp.path());
        let mut bytes = std::fs::read(&path).expect("read");
        // Flip a bit in the body of the third record: valid records follow.
        let mut at = HEADER_LEN;
        for _ in 0..2 {
            at += decode_record(&bytes[at..]).expect("valid").1;
        }
        bytes[at + 12] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        match Wal::open_with(tmp.path(), FsyncPolicy::No, 1 << 20) {
            Err(WalError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, at as u64);
            }
            other => panic!("expected corruption, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn corruption_in_an_older_segment_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        write_n(tmp.path(), FsyncPolicy::Always, 256, 40);
        let first = list_segments(tmp.path()).expect("list")[0].1.clone();
        let mut bytes = std::fs::read(&first).expect("read");
        let n = bytes.len();
        bytes[n - 3] ^= 1; // the last record of a non-last segment
        std::fs::write(&first, &bytes).expect("write");
        assert!(matches!(
            Wal::open_with(tmp.path(), FsyncPolicy::No, 256),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[test]
    fn failure_is_never_acknowledged() {
        let tmp = tempfile::tempdir().expect("tmp");
        run(async {
            let wal = Wal::open_with(tmp.path(), FsyncPolicy::EverySec, 1 << 20).expect("open");
            wal.set_exit_on_failure(false);
            wal.start();
            let l = wal.append(1, &[b"SET", b"a", b"1"]);
            wal.wait(l).await.expect("first write");
            wal.fail(WalError::Failed);
            let l = wal.append(1, &[b"SET", b"a", b"2"]);
            assert!(matches!(wal.wait(l).await, Err(WalError::Failed)));
        });
    }

    #[test]
    fn disabled_counts_only() {
        let wal = Wal::disabled();
        assert_eq!(wal.append(0, &[b"SET"]), 1);
        assert_eq!(wal.append(0, &[b"SET"]), 2);
        assert_eq!(wal.durable_lsn(), 2);
        run(async { wal.wait(2).await.expect("at once") });
    }
}
