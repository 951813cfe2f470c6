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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::metrics::LATENCY_BUCKETS;

/// Slot value for records that touch every slot (FLUSHALL).
pub const GLOBAL_SLOT: u16 = u16::MAX;

/// Slot value of time-marker records: not a command, replay skips them. A
/// marker `[TESSERA.TIME, ms u64 LE]` is appended before a write whenever
/// the previous marker is [`MARKER_INTERVAL_MS`] or more older, so every
/// record after a marker of time `t` (up to the next marker) was appended in
/// `[t, t + MARKER_INTERVAL_MS)` (plus the coarse clock's ~4 ms): what a
/// point-in-time restore stops on (see docs/backup.md).
pub const MARKER_SLOT: u16 = u16::MAX - 1;

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

// ---------------------------------------------------------------------------
// On-disk format.
//
// A segment file is named after the LSN of its first record, 20 decimal
// digits: `00000000000000000001.wal`. It starts with a header
//
//     magic    [u8; 8]  "TSWAL\0\0\x01"
//     version  u32      1
//     first    u64      LSN of the first record (= the file name)
//     crc      u32      CRC32C of the 20 bytes above
//
// followed by records, back to back:
//
//     len      u32      length of the body (everything after `crc`)
//     crc      u32      CRC32C (Castagnoli) of the body
//     body:
//       lsn    u64      previous record's LSN + 1 (the first: header `first`)
//       slot   u16      hash slot of the command's keys; 0xFFFF = every slot
//       argc   u32      number of arguments
//       argc × { len u32, bytes [u8; len] }   the command as executed
//
// All integers are little-endian. A record is written with the batch it
// belongs to in one write(2); segments roll between batches, so a segment may
// exceed the configured size by at most one batch.
//
// A new segment is preallocated to the configured size (`fallocate`; where
// the filesystem cannot, it grows as written): an `fdatasync` then has no
// file size to commit with each write, which made it 25-33% cheaper for the
// small batches of `--fsync always` (docs/storage-format.md). The part not
// yet written reads as zeros, and zeros where a record's `len` would be
// (nothing but zeros to the end of the file) end the segment's records: no
// record has `len` 0. A segment is cut to its written length when it is
// closed (roll, clean shutdown), so only the last segment, or one a crash
// caught before its cut was durable, has such a tail; recovery cuts it.
// ---------------------------------------------------------------------------

const MAGIC: [u8; 8] = *b"TSWAL\0\0\x01";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
/// Size of a segment file's header (records start after it).
pub const SEGMENT_HEADER_LEN: usize = HEADER_LEN;
/// `len` + `crc`.
const PREFIX_LEN: usize = 8;
/// lsn + slot + argc.
const MIN_BODY: usize = 14;
/// A record is one command; the RESP query buffer limit is 1 GiB.
const MAX_BODY: usize = 1 << 31;

/// Whether `b` (what follows the last valid record) is the unwritten,
/// zero-filled part of a preallocated segment.
fn is_unwritten_tail(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Reserves the blocks of a segment up to `len` bytes (its size grows to
/// `len`; the unwritten part reads as zeros). Best effort: a filesystem
/// without `fallocate`, or a disk too full for the whole segment, leaves the
/// file to grow as it is written.
fn preallocate(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    // SAFETY: fallocate on a descriptor this File owns; no memory is passed.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "no log segment preallocation");
    }
}

fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn encode_header(first_lsn: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first LSN a segment header declares, or why the header is invalid.
fn decode_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < HEADER_LEN {
        return Err(format!(
            "header truncated ({} of {HEADER_LEN} bytes)",
            h.len()
        ));
    }
    if h[..8] != MAGIC {
        return Err("bad magic (not a tessera log segment)".into());
    }
    let crc = u32_at(h, 20);
    if crc32c::crc32c(&h[..20]) != crc {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(h, 8);
    if version != VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    Ok(u64_at(h, 12))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one framed record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, lsn: u64, slot: u16, args: &[&[u8]]) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(&slot.to_le_bytes());
    buf.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        buf.extend_from_slice(&(a.len() as u32).to_le_bytes());
        buf.extend_from_slice(a);
    }
    let body = &buf[start + PREFIX_LEN..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a record's framing and CRC at the start of `b`; returns the body
/// range end (= the record's total length).
fn check_frame(b: &[u8]) -> Result<usize, String> {
    if b.len() < PREFIX_LEN {
        return Err(format!("record prefix truncated ({} bytes left)", b.len()));
    }
    let len = u32_at(b, 0) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&len) {
        return Err(format!("implausible record length {len}"));
    }
    if b.len() < PREFIX_LEN + len {
        return Err(format!(
            "record truncated ({} of {} body bytes)",
            b.len() - PREFIX_LEN,
            len
        ));
    }
    let crc = u32_at(b, 4);
    if crc32c::crc32c(&b[PREFIX_LEN..PREFIX_LEN + len]) != crc {
        return Err("record checksum mismatch".into());
    }
    Ok(PREFIX_LEN + len)
}

/// Parses the record body at `b[start..end]` (CRC already checked): its LSN
/// and slot; the argument ranges (into `b`) are appended to `ranges`.
fn parse_body(
    b: &[u8],
    start: usize,
    end: usize,
    ranges: &mut Vec<std::ops::Range<usize>>,
) -> Result<(u64, u16), String> {
    if end - start < MIN_BODY {
        return Err("record body too short".into());
    }
    let lsn = u64_at(b, start);
    let slot = u16_at(b, start + 8);
    let argc = u32_at(b, start + 10) as usize;
    let mut at = start + MIN_BODY;
    // Each argument takes at least 4 bytes: bounds the reservation.
    if argc > (end - at) / 4 {
        return Err(format!("argument count {argc} exceeds the record"));
    }
    ranges.reserve(argc);
    for _ in 0..argc {
        if end - at < 4 {
            return Err("argument length truncated".into());
        }
        let n = u32_at(b, at) as usize;
        at += 4;
        if end - at < n {
            return Err("argument truncated".into());
        }
        ranges.push(at..at + n);
        at += n;
    }
    if at != end {
        return Err(format!("{} trailing bytes in record", end - at));
    }
    Ok((lsn, slot))
}

/// Decodes a record body whose CRC has been checked.
fn decode_body(body: &[u8]) -> Result<Record, String> {
    let mut ranges = Vec::new();
    let (lsn, slot) = parse_body(body, 0, body.len(), &mut ranges)?;
    let args = ranges.into_iter().map(|r| body[r].to_vec()).collect();
    Ok(Record { lsn, slot, args })
}

/// A record decoded in place: its arguments are `ranges` into the encoded
/// bytes it was read from (no copy).
#[derive(Debug, Clone)]
pub struct RecordView {
    pub lsn: u64,
    pub slot: u16,
    /// This record's arguments: `ranges[args]`.
    pub args: std::ops::Range<usize>,
}

/// Decodes back-to-back encoded records (CRC-checked) without copying their
/// arguments: the replica applies records straight from the frame it
/// received. Argument ranges are appended to `ranges`, relative to `b`.
pub fn decode_records_in_place(
    b: &[u8],
    views: &mut Vec<RecordView>,
    ranges: &mut Vec<std::ops::Range<usize>>,
) -> Result<(), String> {
    let mut at = 0;
    while at < b.len() {
        let end = at + check_frame(&b[at..])?;
        let first = ranges.len();
        let (lsn, slot) = parse_body(b, at + PREFIX_LEN, end, ranges)?;
        views.push(RecordView {
            lsn,
            slot,
            args: first..ranges.len(),
        });
        at = end;
    }
    Ok(())
}

/// Decodes the record at the start of `b`: the record and its total length.
pub fn decode_record(b: &[u8]) -> Result<(Record, usize), String> {
    let total = check_frame(b)?;
    let rec = decode_body(&b[PREFIX_LEN..total])?;
    Ok((rec, total))
}

/// Offset of a record at or after `from` whose CRC validates and whose LSN
/// could follow `last_lsn`: tells corruption (valid data after the bad
/// record) from a torn tail (nothing valid after it).
fn valid_record_after(b: &[u8], from: usize, last_lsn: u64) -> Option<usize> {
    let mut p = from;
    while p + PREFIX_LEN + MIN_BODY <= b.len() {
        let len = u32_at(b, p) as usize;
        if (MIN_BODY..=MAX_BODY).contains(&len) && p + PREFIX_LEN + len <= b.len() {
            let lsn = u64_at(b, p + PREFIX_LEN);
            let slot = u16_at(b, p + PREFIX_LEN + 8);
            // Every record is at least 22 bytes, which bounds how far the
            // LSN can have advanced: cheap filters before the CRC.
            let plausible = lsn > last_lsn
                && lsn - last_lsn <= (b.len() / (PREFIX_LEN + MIN_BODY)) as u64 + 1
                && (slot < 16384 || slot == GLOBAL_SLOT);
            if plausible && check_frame(&b[p..]).is_ok() {
                return Some(p);
            }
        }
        p += 1;
    }
    None
}

/// What validating one segment found.
#[derive(Debug)]
struct Scan {
    first_lsn: u64,
    /// LSN of the last valid record; `first_lsn - 1` when there is none.
    last_lsn: u64,
    /// Length of the valid prefix of the file.
    valid_len: u64,
    /// A torn tail to cut: offset and why.
    torn: Option<(u64, String)>,
    /// Zeros after `valid_len` to the end: a preallocated segment's
    /// unwritten part (cut without a warning).
    unwritten_tail: bool,
}

/// Validates the records of one segment (held in memory: one segment at a
/// time, so opening a big log needs one segment's worth of memory).
fn scan_segment(path: &Path, b: &[u8], name_lsn: u64, is_last: bool) -> Result<Scan, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let first_lsn = match decode_header(b) {
        Ok(first) if first == name_lsn => first,
        Ok(first) => {
            return Err(corrupt(
                0,
                format!("header says first LSN {first} but the file is named for {name_lsn}"),
            ))
        }
        Err(reason) => {
            // A crash while creating the segment can leave a short or
            // zero-filled header; that is a torn tail only if nothing valid
            // follows it.
            if is_last && valid_record_after(b, 0, name_lsn.saturating_sub(1)).is_none() {
                return Ok(Scan {
                    first_lsn: name_lsn,
                    last_lsn: name_lsn.saturating_sub(1),
                    valid_len: 0,
                    torn: Some((0, reason)),
                    unwritten_tail: false,
                });
            }
            return Err(corrupt(0, reason));
        }
    };
    let mut at = HEADER_LEN;
    let mut expected = first_lsn;
    while at < b.len() {
        match decode_record(&b[at..]) {
            Ok((rec, n)) => {
                if rec.lsn != expected {
                    return Err(corrupt(
                        at,
                        format!("record has LSN {} where {expected} was expected", rec.lsn),
                    ));
                }
                expected += 1;
                at += n;
            }
            Err(_) if is_unwritten_tail(&b[at..]) => {
                // In the last segment: where writing stopped. In an older
                // one: a crash came before its cut at roll was durable;
                // that nothing is missing shows in the next segment
                // starting at the following LSN (checked by the caller).
                return Ok(Scan {
                    first_lsn,
                    last_lsn: expected - 1,
                    valid_len: at as u64,
                    torn: None,
                    unwritten_tail: true,
                });
            }
            Err(reason) => {
                if !is_last {
                    return Err(corrupt(at, reason));
                }
                if let Some(next) = valid_record_after(b, at + 1, expected - 1) {
                    return Err(corrupt(
                        at,
                        format!("{reason}, followed by a valid record at offset {next}"),
                    ));
                }
                return Ok(Scan {
                    first_lsn,
                    last_lsn: expected - 1,
                    valid_len: at as u64,
                    torn: Some((at as u64, reason)),
                    unwritten_tail: false,
                });
            }
        }
    }
    Ok(Scan {
        first_lsn,
        last_lsn: expected - 1,
        valid_len: at as u64,
        torn: None,
        unwritten_tail: false,
    })
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

// ---------------------------------------------------------------------------
// Reading.
// ---------------------------------------------------------------------------

/// Iterates over logged records, segment by segment, reading lazily.
pub struct WalReader {
    segments: VecDeque<PathBuf>,
    after: u64,
    cur: Option<(BufReader<File>, PathBuf, u64)>,
    body: Vec<u8>,
    done: bool,
}

impl WalReader {
    fn empty() -> Self {
        Self {
            segments: VecDeque::new(),
            after: 0,
            cur: None,
            body: Vec::new(),
            done: true,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        loop {
            if self.cur.is_none() {
                let Some(path) = self.segments.pop_front() else {
                    return Ok(None);
                };
                let read_err = |source| WalError::Read {
                    path: path.clone(),
                    source,
                };
                let mut f = BufReader::with_capacity(1 << 20, File::open(&path).map_err(read_err)?);
                let mut h = [0u8; HEADER_LEN];
                let got = read_full(&mut f, &mut h).map_err(read_err)?;
                if got == 0 {
                    continue;
                }
                decode_header(&h[..got]).map_err(|reason| WalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason,
                })?;
                self.cur = Some((f, path, HEADER_LEN as u64));
            }
            let (f, path, offset) = self.cur.as_mut().expect("a segment is open here");
            let read_err = |source| WalError::Read {
                path: path.clone(),
                source,
            };
            let corrupt = |offset: u64, reason: String| WalError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            };
            let mut prefix = [0u8; PREFIX_LEN];
            let got = read_full(f, &mut prefix).map_err(read_err)?;
            // The end of the file, or of what is written of the newest
            // segment (preallocated: zeros follow; no record has len 0).
            // An older segment was cut at roll, so zeros there are damage.
            if got == 0 || (self.segments.is_empty() && is_unwritten_tail(&prefix[..got])) {
                self.cur = None;
                continue;
            }
            if got < PREFIX_LEN {
                return Err(corrupt(*offset, "record prefix truncated".into()));
            }
            let len = u32_at(&prefix, 0) as usize;
            if !(MIN_BODY..=MAX_BODY).contains(&len) {
                return Err(corrupt(*offset, format!("implausible record length {len}")));
            }
            self.body.resize(len, 0);
            if read_full(f, &mut self.body).map_err(read_err)? < len {
                return Err(corrupt(*offset, "record truncated".into()));
            }
            if crc32c::crc32c(&self.body) != u32_at(&prefix, 4) {
                return Err(corrupt(*offset, "record checksum mismatch".into()));
            }
            let rec = decode_body(&self.body).map_err(|r| corrupt(*offset, r))?;
            *offset += (PREFIX_LEN + len) as u64;
            if rec.lsn > self.after {
                return Ok(Some(rec));
            }
        }
    }
}

/// Reads until `buf` is full or EOF; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Iterator for WalReader {
    type Item = Result<Record, WalError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------

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

impl Shared {
    /// Enters the failed state; stops the process unless tests said not to.
    fn fail(&self, err: &WalError) {
        error!(
            error = %err,
            "the write-ahead log failed; stopping the node: memory already holds changes the log \
             may not have, so serving on would answer with data a restart would not have"
        );
        self.failed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
        if self.exit_on_failure.load(Ordering::SeqCst) {
            std::process::exit(EXIT_LOG_FAILED);
        }
    }

    fn sync(&self, seg: &SegFile) -> Result<(), WalError> {
        let start = Instant::now();
        seg.file.sync_data().map_err(|source| WalError::Sync {
            path: seg.path.clone(),
            source,
        })?;
        if !seg.dir_synced.swap(true, Ordering::SeqCst) {
            sync_dir(&seg.dir).map_err(|source| WalError::Sync {
                path: seg.dir.clone(),
                source,
            })?;
        }
        let secs = start.elapsed().as_secs_f64();
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos
            .fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.fsync_buckets[i].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The sync thread: fsyncs what it is asked to (group commit: everything
/// queued while the previous fsync ran is covered by one fsync per file) and,
/// under `everysec`, the current segment once a second.
fn sync_thread(shared: Arc<Shared>, rx: mpsc::Receiver<SyncMsg>, policy: FsyncPolicy) {
    let tick = Duration::from_secs(1);
    let mut next_tick = Instant::now() + tick;
    loop {
        let mut batch: Vec<(Arc<SegFile>, u64)> = Vec::new();
        let mut periodic = false;
        if policy == FsyncPolicy::EverySec {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(SyncMsg::Sync(f, l)) => batch.push((f, l)),
                Err(mpsc::RecvTimeoutError::Timeout) => periodic = true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(SyncMsg::Sync(f, l)) => batch.push((f, l)),
                Err(_) => return,
            }
        }
        if periodic {
            next_tick = Instant::now() + tick;
            let cur = shared
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // Requests sent before `current` moved on (a roll) are drained
            // after reading it, so an older segment is synced first.
            while let Ok(SyncMsg::Sync(f, l)) = rx.try_recv() {
                batch.push((f, l));
            }
            if let Some((f, l)) = cur {
                if l > shared.durable.load(Ordering::SeqCst) {
                    batch.push((f, l));
                }
            }
        } else {
            while let Ok(SyncMsg::Sync(f, l)) = rx.try_recv() {
                batch.push((f, l));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut upto = 0;
        let mut prev: Option<&Arc<SegFile>> = None;
        for (f, l) in &batch {
            if !prev.is_some_and(|p| Arc::ptr_eq(p, f)) {
                // Consecutive requests for one file share one fsync.
                if let Err(e) = shared.sync(f) {
                    shared.fail(&e);
                    return;
                }
            }
            prev = Some(f);
            upto = upto.max(*l);
        }
        shared.durable.fetch_max(upto, Ordering::SeqCst);
        shared.changed.notify_waiters();
    }
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
}

impl Wal {
    fn new(enabled: bool, policy: FsyncPolicy, dir: PathBuf, segment_bytes: u64) -> Wal {
        Wal {
            enabled,
            policy,
            dir,
            segment_bytes,
            last_lsn: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            pending_first: Cell::new(0),
            spare: RefCell::new(Vec::new()),
            written: Cell::new(0),
            written_changed: Notify::new(),
            roll_next: Cell::new(false),
            segments: RefCell::new(Vec::new()),
            active: RefCell::new(None),
            bytes_written: Cell::new(0),
            flush_wake: Notify::new(),
            started: Cell::new(false),
            shared: Arc::new(Shared {
                durable: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                changed: Notify::new(),
                current: Mutex::new(None),
                fsyncs: AtomicU64::new(0),
                fsync_nanos: AtomicU64::new(0),
                fsync_buckets: Default::default(),
                exit_on_failure: AtomicBool::new(true),
            }),
            sync_tx: RefCell::new(None),
            sync_thread: RefCell::new(None),
            ring: RefCell::new(Ring::default()),
            ring_changed: Notify::new(),
            time_markers: Cell::new(false),
            last_marker_ms: Cell::new(0),
            archive_hold: Cell::new(None),
        }
    }

    /// Memory only: LSNs are counted, nothing is written.
    pub fn disabled() -> Rc<Wal> {
        Rc::new(Wal::new(
            false,
            FsyncPolicy::No,
            PathBuf::new(),
            DEFAULT_SEGMENT_BYTES,
        ))
    }

    /// Opens (or creates) the log in `dir`, validating every record. The
    /// segment size comes from `TESSERA_WAL_SEGMENT_BYTES` when set.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<Rc<Wal>, WalError> {
        let segment_bytes = std::env::var(SEGMENT_BYTES_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_SEGMENT_BYTES);
        let wal = Self::open_with(dir, policy, segment_bytes)?;
        wal.time_markers.set(true);
        Ok(wal)
    }

    /// [`Wal::open`] with an explicit segment size.
    pub fn open_with(
        dir: &Path,
        policy: FsyncPolicy,
        segment_bytes: u64,
    ) -> Result<Rc<Wal>, WalError> {
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::Open { path, source }
        };
        std::fs::create_dir_all(dir).map_err(open_err(dir))?;
        let found = list_segments(dir).map_err(open_err(dir))?;
        let wal = Wal::new(true, policy, dir.to_path_buf(), segment_bytes);
        let mut segments = Vec::new();
        let mut last_lsn: Option<u64> = None;
        let mut active: Option<(PathBuf, u64, u64, bool)> = None;
        let n = found.len();
        for (i, (name_lsn, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let bytes = std::fs::read(&path).map_err(|source| WalError::Read {
                path: path.clone(),
                source,
            })?;
            let scan = scan_segment(&path, &bytes, name_lsn, is_last)?;
            drop(bytes);
            if let Some(prev) = last_lsn {
                if scan.first_lsn != prev + 1 {
                    return Err(WalError::Corrupt {
                        path,
                        offset: 0,
                        reason: format!(
                            "segment starts at LSN {} but the previous one ends at {prev} (a gap or overlap in the log)",
                            scan.first_lsn
                        ),
                    });
                }
            }
            if scan.unwritten_tail && !is_last {
                info!(path = %path.display(), offset = scan.valid_len, "cutting the unwritten preallocated tail of a closed log segment (a crash came before its cut)");
            }
            // The last segment keeps its unwritten tail: it is still
            // preallocated, and new records go after its valid ones.
            if scan.torn.is_some() || (scan.unwritten_tail && !is_last) {
                if let Some((offset, reason)) = &scan.torn {
                    warn!(path = %path.display(), offset, reason = %reason, "truncating a torn tail of the log (a write cut short by a crash)");
                }
                if scan.valid_len < HEADER_LEN as u64 {
                    std::fs::remove_file(&path).map_err(|source| WalError::Remove {
                        path: path.clone(),
                        source,
                    })?;
                    last_lsn = Some(scan.last_lsn);
                    continue;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(open_err(&path))?;
                f.set_len(scan.valid_len)
                    .and_then(|_| f.sync_all())
                    .map_err(|source| WalError::Write {
                        path: path.clone(),
                        source,
                    })?;
            }
            last_lsn = Some(scan.last_lsn);
            if is_last {
                active = Some((
                    path.clone(),
                    scan.first_lsn,
                    scan.valid_len,
                    scan.last_lsn >= scan.first_lsn,
                ));
            }
            segments.push(Segment {
                first_lsn: scan.first_lsn,
                path,
            });
        }
        let last = last_lsn.unwrap_or(0);
        wal.last_lsn.set(last);
        wal.written.set(last);
        wal.shared.durable.store(last, Ordering::SeqCst);
        // New writes append to the last segment (after its valid records).
        if let Some((path, _first, size, has_records)) = active {
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(open_err(&path))?;
            file.seek(SeekFrom::Start(size)).map_err(open_err(&path))?;
            let on_disk = file.metadata().map_err(open_err(&path))?.len();
            if on_disk < segment_bytes {
                preallocate(&file, segment_bytes);
            }
            let seg = Arc::new(SegFile {
                file,
                path,
                dir: dir.to_path_buf(),
                dir_synced: AtomicBool::new(true),
            });
            *wal.shared.current.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((seg.clone(), last));
            *wal.active.borrow_mut() = Some(Active {
                seg,
                size,
                has_records,
            });
        }
        let hold = std::fs::read_to_string(dir.join(ARCHIVE_HOLD_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        wal.archive_hold.set(hold);
        info!(dir = %dir.display(), segments = segments.len(), last_lsn = last, archive_hold = ?hold, "log opened");
        *wal.segments.borrow_mut() = segments;
        Ok(Rc::new(wal))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    /// Tests: report failures through `wait` instead of exiting.
    pub fn set_exit_on_failure(&self, exit: bool) {
        self.shared.exit_on_failure.store(exit, Ordering::SeqCst);
    }

    /// The records with an LSN above `after`, in order.
    pub fn read_from(&self, after: u64) -> Result<WalReader, WalError> {
        if !self.enabled {
            return Ok(WalReader::empty());
        }
        let segs = self.segments.borrow();
        let mut paths = VecDeque::new();
        for (i, s) in segs.iter().enumerate() {
            // Skip segments whose every record is at or below `after`.
            if let Some(next) = segs.get(i + 1) {
                if next.first_lsn <= after + 1 {
                    continue;
                }
            }
            paths.push_back(s.path.clone());
        }
        Ok(WalReader {
            segments: paths,
            after,
            cur: None,
            body: Vec::new(),
            done: false,
        })
    }

    /// Makes the next LSN at least `lsn + 1` (after loading a snapshot that is
    /// newer than the retained log).
    pub fn ensure_after(&self, lsn: u64) {
        if self.last_lsn.get() < lsn {
            if self.enabled && self.active.borrow().is_some() {
                warn!(
                    log_last_lsn = self.last_lsn.get(),
                    snapshot_lsn = lsn,
                    "the snapshot is newer than the log; continuing in a new segment"
                );
                self.roll_next.set(true);
            }
            self.last_lsn.set(lsn);
            self.written.set(lsn);
            self.shared.durable.fetch_max(lsn, Ordering::SeqCst);
        }
    }

    /// Appends a record to the pending batch and returns its LSN. No I/O.
    pub fn append(&self, slot: u16, args: &[&[u8]]) -> u64 {
        if self.enabled && self.time_markers.get() {
            let now = coarse_now_ms();
            if now >= self.last_marker_ms.get() + MARKER_INTERVAL_MS {
                self.last_marker_ms.set(now);
                self.append_record(MARKER_SLOT, &[TIME_MARKER, &now.to_le_bytes()]);
            }
        }
        self.append_record(slot, args)
    }

    fn append_record(&self, slot: u16, args: &[&[u8]]) -> u64 {
        let lsn = self.last_lsn.get() + 1;
        self.last_lsn.set(lsn);
        if !self.enabled {
            return lsn;
        }
        let mut pending = self.pending.borrow_mut();
        encode_record(&mut pending, lsn, slot, args);
        if self.pending_first.get() == 0 {
            self.pending_first.set(lsn);
            // The flusher takes the whole buffer, so only the first record
            // of a batch needs to wake it.
            self.flush_wake.notify_one();
        }
        lsn
    }

    fn acked(&self, lsn: u64) -> bool {
        match self.policy {
            FsyncPolicy::Always => self.shared.durable.load(Ordering::SeqCst) >= lsn,
            _ => self.written.get() >= lsn,
        }
    }

    /// Resolves when `lsn` is acknowledged by the fsync policy.
    pub async fn wait(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.started.get() {
            // No flusher yet (recovery, tests): do its work inline.
            self.flush_pending();
            if self.policy == FsyncPolicy::Always {
                self.sync_now()?;
            }
        }
        loop {
            let durable = self.shared.changed.notified();
            let written = self.written_changed.notified();
            tokio::pin!(durable, written);
            durable.as_mut().enable();
            written.as_mut().enable();
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(WalError::Failed);
            }
            if self.acked(lsn) {
                return Ok(());
            }
            if self.policy == FsyncPolicy::Always {
                durable.await;
            } else {
                tokio::select! {
                    _ = durable => {}
                    _ = written => {}
                }
            }
        }
    }

    /// Resolves when `lsn` is fsynced, whatever the policy (a snapshot must
    /// never be newer than the durable log).
    pub async fn sync_through(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        if !self.started.get() {
            self.flush_pending();
            return self.sync_now();
        }
        let mut requested = false;
        loop {
            let durable = self.shared.changed.notified();
            let written = self.written_changed.notified();
            tokio::pin!(durable, written);
            durable.as_mut().enable();
            written.as_mut().enable();
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(WalError::Failed);
            }
            if self.shared.durable.load(Ordering::SeqCst) >= lsn {
                return Ok(());
            }
            if !requested && self.written.get() >= lsn {
                if let Some(a) = self.active.borrow().as_ref() {
                    self.send_sync(a.seg.clone(), self.written.get());
                }
                requested = true;
            }
            tokio::select! {
                _ = durable => {}
                _ = written => {}
            }
        }
    }

    pub fn last_lsn(&self) -> u64 {
        self.last_lsn.get()
    }
    /// Highest LSN fsynced (for a disabled log: the last assigned).
    pub fn durable_lsn(&self) -> u64 {
        if !self.enabled {
            return self.last_lsn.get();
        }
        self.shared.durable.load(Ordering::SeqCst)
    }
    /// Highest LSN written to a segment file (maybe not yet fsynced).
    pub fn written_lsn(&self) -> u64 {
        if !self.enabled {
            return self.last_lsn.get();
        }
        self.written.get()
    }
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Starts the flusher task (on the current LocalSet) and, except under
    /// `always`, the sync thread.
    pub fn start(self: &Rc<Self>) {
        if !self.enabled || self.started.replace(true) {
            return;
        }
        if self.policy != FsyncPolicy::Always {
            self.start_sync_thread();
        }
        let wal = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                wal.flush_wake.notified().await;
                if wal.shared.failed.load(Ordering::SeqCst) {
                    return;
                }
                wal.flush_pending();
            }
        });
    }

    /// `always` has no sync thread: the flusher fsyncs on the event loop, as
    /// Redis does. Every client of the group waits for that fsync anyway,
    /// and handing it to a thread and back cost two wake-ups per group (-P 1
    /// SET at 0.7x Redis); requests that arrive meanwhile form the next
    /// group. Under `everysec` and `no` the thread keeps fsyncs off the loop.
    fn start_sync_thread(&self) {
        let (tx, rx) = mpsc::channel();
        let shared = self.shared.clone();
        let policy = self.policy;
        let handle = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_thread(shared, rx, policy));
        match handle {
            Ok(h) => {
                *self.sync_tx.borrow_mut() = Some(tx);
                *self.sync_thread.borrow_mut() = Some(h);
            }
            Err(source) => self.shared.fail(&WalError::Sync {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    fn send_sync(&self, seg: Arc<SegFile>, lsn: u64) {
        let sent = self
            .sync_tx
            .borrow()
            .as_ref()
            .is_some_and(|tx| tx.send(SyncMsg::Sync(seg.clone(), lsn)).is_ok());
        if !sent {
            // No sync thread (`always`, not started, or it died failing):
            // sync here. Segments are synced in order, so `durable` never
            // passes an unsynced record.
            match self.shared.sync(&seg) {
                Ok(()) => {
                    self.shared.durable.fetch_max(lsn, Ordering::SeqCst);
                    self.shared.changed.notify_waiters();
                }
                Err(e) => self.shared.fail(&e),
            }
        }
    }

    /// fsyncs the active segment on this thread.
    fn sync_now(&self) -> Result<(), WalError> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(WalError::Failed);
        }
        let seg = self.active.borrow().as_ref().map(|a| a.seg.clone());
        if let Some(seg) = seg {
            if let Err(e) = self.shared.sync(&seg) {
                self.shared.fail(&e);
                return Err(e);
            }
        }
        self.shared
            .durable
            .fetch_max(self.written.get(), Ordering::SeqCst);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    fn fail(&self, e: WalError) {
        self.shared.fail(&e);
        self.written_changed.notify_waiters();
    }

    /// Starts a new segment whose first record will be `first_lsn`.
    fn roll(&self, first_lsn: u64) -> Result<(), WalError> {
        let path = self.dir.join(segment_name(first_lsn));
        let write_err = |source| WalError::Write {
            path: path.clone(),
            source,
        };
        if let Some(old) = self.active.borrow_mut().take() {
            if old.has_records {
                // Cut the preallocated part never written, so a closed
                // segment's size is its records' (the sync below makes the
                // cut durable with them).
                old.seg
                    .file
                    .set_len(old.size)
                    .map_err(|source| WalError::Write {
                        path: old.seg.path.clone(),
                        source,
                    })?;
                // Closing a segment makes it durable whatever the policy.
                self.send_sync(old.seg, first_lsn - 1);
            } else {
                // A segment without records would break LSN continuity.
                drop(old);
                let old_path = self.segments.borrow_mut().pop().map(|s| s.path);
                if let Some(p) = old_path {
                    std::fs::remove_file(&p)
                        .map_err(|source| WalError::Remove { path: p, source })?;
                }
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(&encode_header(first_lsn))
            .map_err(write_err)?;
        preallocate(&file, self.segment_bytes);
        let seg = Arc::new(SegFile {
            file,
            path: path.clone(),
            dir: self.dir.clone(),
            dir_synced: AtomicBool::new(false),
        });
        self.segments.borrow_mut().push(Segment { first_lsn, path });
        *self.active.borrow_mut() = Some(Active {
            seg,
            size: HEADER_LEN as u64,
            has_records: false,
        });
        self.bytes_written
            .set(self.bytes_written.get() + HEADER_LEN as u64);
        Ok(())
    }

    /// Writes the pending batch to the active segment (the flusher's work).
    /// Bytes appended but not yet written to the segment file.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Writes the pending records now instead of waiting for the flusher
    /// task (a primary streaming to replicas: see `push_to_replicas`).
    pub fn flush_now(&self) {
        if self.enabled && self.started.get() {
            self.flush_pending();
        }
    }

    fn flush_pending(&self) {
        let first = self.pending_first.replace(0);
        if first == 0 || self.shared.failed.load(Ordering::SeqCst) {
            return;
        }
        let mut buf = std::mem::replace(&mut *self.pending.borrow_mut(), self.spare.take());
        let last = self.last_lsn.get();
        let needs_roll = self.roll_next.replace(false)
            || match self.active.borrow().as_ref() {
                None => true,
                Some(a) => a.has_records && a.size >= self.segment_bytes,
            };
        if needs_roll {
            if let Err(e) = self.roll(first) {
                return self.fail(e);
            }
        }
        let seg = {
            let mut active = self.active.borrow_mut();
            let a = active.as_mut().expect("a segment is active after rolling");
            if let Err(source) = (&a.seg.file).write_all(&buf) {
                let path = a.seg.path.clone();
                drop(active);
                return self.fail(WalError::Write { path, source });
            }
            a.size += buf.len() as u64;
            a.has_records = true;
            a.seg.clone()
        };
        self.bytes_written
            .set(self.bytes_written.get() + buf.len() as u64);
        self.written.set(last);
        self.feed_ring(first, last, &buf);
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((seg.clone(), last));
        match self.policy {
            FsyncPolicy::Always => self.send_sync(seg, last),
            _ => self.written_changed.notify_waiters(),
        }
        buf.clear();
        if buf.capacity() <= 16 * 1024 * 1024 {
            *self.spare.borrow_mut() = buf;
        }
    }

    /// Writes and fsyncs everything pending and stops the sync thread
    /// (clean shutdown; also done on drop).
    pub fn close(&self) -> Result<(), WalError> {
        if !self.enabled || self.shared.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.flush_pending();
        // Cut the active segment's unwritten tail before the last sync:
        // a cleanly stopped log has no preallocated zeros.
        let cut = match self.active.borrow().as_ref() {
            Some(a) => a
                .seg
                .file
                .set_len(a.size)
                .map_err(|source| WalError::Write {
                    path: a.seg.path.clone(),
                    source,
                }),
            None => Ok(()),
        };
        let res = cut.and_then(|()| self.sync_now());
        self.sync_tx.borrow_mut().take();
        if let Some(h) = self.sync_thread.borrow_mut().take() {
            let _ = h.join();
        }
        res
    }

    /// Removes segments whose every record is at or below `lsn` (never the
    /// segment being written). Returns how many were removed.
    pub fn truncate_through(&self, lsn: u64) -> Result<usize, WalError> {
        if !self.enabled {
            return Ok(0);
        }
        // A backup that has not archived a segment yet still needs it.
        let lsn = self.archive_hold.get().map_or(lsn, |h| h.min(lsn));
        let mut segs = self.segments.borrow_mut();
        let mut removable = 0;
        while removable + 1 < segs.len() && segs[removable + 1].first_lsn - 1 <= lsn {
            removable += 1;
        }
        for s in segs.iter().take(removable) {
            super::release::unlink(s.path.clone());
        }
        segs.drain(..removable);
        if removable > 0 {
            info!(
                through_lsn = lsn,
                removed = removable,
                "log segments truncated"
            );
        }
        Ok(removable)
    }

    /// The segments on disk, oldest first (for backups). The active one's
    /// `bytes` and `last_lsn` are consistent: both as of the last write.
    pub fn segment_list(&self) -> Vec<SegmentInfo> {
        if !self.enabled {
            return Vec::new();
        }
        let segs = self.segments.borrow();
        let active = self.active.borrow();
        let mut out = Vec::with_capacity(segs.len());
        for (i, s) in segs.iter().enumerate() {
            match segs.get(i + 1) {
                Some(next) => out.push(SegmentInfo {
                    path: s.path.clone(),
                    first_lsn: s.first_lsn,
                    last_lsn: next.first_lsn - 1,
                    closed: true,
                    bytes: None,
                }),
                None => {
                    let (bytes, has) = match active.as_ref() {
                        Some(a) if a.seg.path == s.path => (Some(a.size), a.has_records),
                        _ => (None, true),
                    };
                    if has {
                        out.push(SegmentInfo {
                            path: s.path.clone(),
                            first_lsn: s.first_lsn,
                            last_lsn: self.written.get(),
                            closed: false,
                            bytes,
                        });
                    }
                }
            }
        }
        out
    }

    /// Sets the archive hold (a backup archived everything through `lsn`),
    /// persisted in the log directory so a restart keeps honouring it.
    pub fn set_archive_hold(&self, lsn: u64) -> Result<(), WalError> {
        if !self.enabled {
            return Ok(());
        }
        let path = self.dir.join(ARCHIVE_HOLD_FILE);
        let tmp = self.dir.join(format!("{ARCHIVE_HOLD_FILE}.tmp"));
        let write_err = |source| WalError::Write {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, format!("{lsn}\n")).map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        self.archive_hold.set(Some(lsn));
        Ok(())
    }

    /// The archive hold, if a backup set one.
    pub fn archive_hold(&self) -> Option<u64> {
        self.archive_hold.get()
    }

    pub fn stats(&self) -> WalStats {
        WalStats {
            bytes_written: self.bytes_written.get(),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            segments: self.segments.borrow().len(),
            fsync_latency_sum_secs: self.shared.fsync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            fsync_latency_buckets: self
                .shared
                .fsync_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------
// Replication support: the ring of recent batches a primary feeds replicas
// from, and the appends and resets a replica makes.
// ---------------------------------------------------------------------------

impl Wal {
    /// Keeps up to `cap` bytes of recently written batches in memory for
    /// replicas (0 disables).
    pub fn set_ring_capacity(&self, cap: usize) {
        let mut r = self.ring.borrow_mut();
        r.cap = cap;
        while r.bytes > r.cap {
            match r.batches.pop_front() {
                Some((_, _, b)) => r.bytes -= b.len(),
                None => break,
            }
        }
    }

    fn feed_ring(&self, first: u64, last: u64, buf: &[u8]) {
        let mut r = self.ring.borrow_mut();
        if r.cap == 0 {
            return;
        }
        r.batches
            .push_back((first, last, bytes::Bytes::copy_from_slice(buf)));
        r.bytes += buf.len();
        while r.bytes > r.cap && r.batches.len() > 1 {
            if let Some((_, _, b)) = r.batches.pop_front() {
                r.bytes -= b.len();
            }
        }
        drop(r);
        self.ring_changed.notify_waiters();
    }

    /// The written records after `after`, from the ring, as encoded chunks
    /// (the first may start with records at or below `after`: callers skip
    /// them with [`skip_records_through`]). `None` when the ring no longer
    /// (or not yet) holds the record after `after`; empty when nothing newer
    /// has been written.
    pub fn ring_after(&self, after: u64) -> Option<Vec<bytes::Bytes>> {
        let r = self.ring.borrow();
        if after >= self.written.get() {
            return Some(Vec::new());
        }
        let oldest = r.batches.front()?.0;
        if oldest > after + 1 {
            return None;
        }
        // Batches are in LSN order: find the first one not yet sent by
        // binary search (the ring holds thousands of small batches when
        // records are pushed early; scanning it per send was a sixth of a
        // primary's CPU).
        let from = r.batches.partition_point(|(_, last, _)| *last <= after);
        Some(r.batches.range(from..).map(|(_, _, b)| b.clone()).collect())
    }

    /// Resolves once a new batch reached the ring (register before checking).
    pub fn ring_changed(&self) -> &Notify {
        &self.ring_changed
    }

    /// LSN of the oldest record still on disk (0: none).
    pub fn first_retained_lsn(&self) -> u64 {
        self.segments
            .borrow()
            .first()
            .map(|s| s.first_lsn)
            .unwrap_or(0)
    }

    /// LSN of the oldest record a primary can still send a replica: on disk,
    /// or, before the first segment exists, appended and waiting for the
    /// flusher (which feeds the ring the sender reads). 0: none.
    pub fn first_sendable_lsn(&self) -> u64 {
        match self.first_retained_lsn() {
            0 => self.pending_first.get(),
            first => first,
        }
    }

    /// Appends records received from a primary, already encoded, keeping
    /// their LSNs. `first` must follow the last LSN: a replica's log is a
    /// copy of its primary's, gaps included never.
    pub fn append_encoded(&self, first: u64, last: u64, encoded: &[u8]) -> Result<(), String> {
        let expected = self.last_lsn.get() + 1;
        if first != expected || last < first {
            return Err(format!(
                "records {first}..={last} do not follow the log's last LSN {}",
                expected - 1
            ));
        }
        self.last_lsn.set(last);
        if !self.enabled {
            return Ok(());
        }
        self.pending.borrow_mut().extend_from_slice(encoded);
        if self.pending_first.get() == 0 {
            self.pending_first.set(first);
            self.flush_wake.notify_one();
        }
        Ok(())
    }

    /// Discards the whole log and continues after `lsn` (a replica starting a
    /// full resync). The segment directory is fsynced so a crash cannot bring
    /// the old records back.
    pub fn reset(&self, lsn: u64) -> Result<(), WalError> {
        self.pending.borrow_mut().clear();
        self.pending_first.set(0);
        self.active.borrow_mut().take();
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        let segs: Vec<Segment> = self.segments.borrow_mut().drain(..).collect();
        for s in &segs {
            std::fs::remove_file(&s.path).map_err(|source| WalError::Remove {
                path: s.path.clone(),
                source,
            })?;
        }
        if self.enabled {
            sync_dir(&self.dir).map_err(|source| WalError::Sync {
                path: self.dir.clone(),
                source,
            })?;
        }
        self.last_lsn.set(lsn);
        self.written.set(lsn);
        self.shared.durable.store(lsn, Ordering::SeqCst);
        let mut r = self.ring.borrow_mut();
        r.batches.clear();
        r.bytes = 0;
        info!(dir = %self.dir.display(), removed = segs.len(), continue_after = lsn, "log discarded for a full resync");
        Ok(())
    }

    /// The LSN acknowledged under the fsync policy (what a replica reports).
    pub fn acked_lsn(&self) -> u64 {
        match self.policy {
            FsyncPolicy::Always => self.durable_lsn(),
            _ => self.written_lsn(),
        }
    }
}

/// Splits `b` (encoded records) into the records at or below `lsn` and the
/// rest; returns the rest's offset.
pub fn skip_records_through(b: &[u8], lsn: u64) -> usize {
    let mut at = 0;
    while at + PREFIX_LEN + 8 <= b.len() {
        let len = u32_at(b, at) as usize;
        if u64_at(b, at + PREFIX_LEN) > lsn {
            break;
        }
        at += PREFIX_LEN + len;
    }
    at.min(b.len())
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            error!(error = %e, "final log flush failed");
        }
    }
}

#[cfg(test)]
mod tests {
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
