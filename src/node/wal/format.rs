//! The log's on-disk format: segment files and records.
//!
//! A segment file is named after the LSN of its first record, 20 decimal
//! digits: `00000000000000000001.wal`. It starts with a header
//!
//! ```text
//! magic    [u8; 8]  "TSWAL\0\0\x01"
//! version  u32      1
//! first    u64      LSN of the first record (= the file name)
//! crc      u32      CRC32C of the 20 bytes above
//! ```
//!
//! followed by records, back to back:
//!
//! ```text
//! len      u32      length of the body (everything after `crc`)
//! crc      u32      CRC32C (Castagnoli) of the body
//! body:
//!   lsn    u64      previous record's LSN + 1 (the first: header `first`)
//!   slot   u16      hash slot of the command's keys; 0xFFFF = every slot
//!   argc   u32      number of arguments
//!   argc × { len u32, bytes [u8; len] }   the command as executed
//! ```
//!
//! All integers are little-endian. A record is written with the batch it
//! belongs to in one write(2); segments roll between batches, so a segment may
//! exceed the configured size by at most one batch.
//!
//! A new segment is preallocated to the configured size (`fallocate`; where
//! the filesystem cannot, it grows as written): an `fdatasync` then has no
//! file size to commit with each write, which made it 25-33% cheaper for the
//! small batches of `--fsync always` (docs/storage-format.md). The part not
//! yet written reads as zeros, and zeros where a record's `len` would be
//! (nothing but zeros to the end of the file) end the segment's records: no
//! record has `len` 0. A segment is cut to its written length when it is
//! closed (roll, clean shutdown), so only the last segment, or one a crash
//! caught before its cut was durable, has such a tail; recovery cuts it.

use std::fs::File;

use super::{is_record_slot, Record};

const MAGIC: [u8; 8] = *b"TSWAL\0\0\x01";
const VERSION: u32 = 1;
pub(super) const HEADER_LEN: usize = 24;
/// Size of a segment file's header (records start after it).
pub const SEGMENT_HEADER_LEN: usize = HEADER_LEN;
/// `len` + `crc`.
pub(super) const PREFIX_LEN: usize = 8;
/// lsn + slot + argc.
pub(super) const MIN_BODY: usize = 14;
/// A record is one command; the RESP query buffer limit is 1 GiB.
pub(super) const MAX_BODY: usize = 1 << 31;

/// Whether `b` (what follows the last valid record) is the unwritten,
/// zero-filled part of a preallocated segment.
pub(super) fn is_unwritten_tail(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Reserves the blocks of a segment up to `len` bytes (its size grows to
/// `len`; the unwritten part reads as zeros). Best effort: a filesystem
/// without `fallocate`, or a disk too full for the whole segment, leaves the
/// file to grow as it is written.
pub(super) fn preallocate(file: &File, len: u64) {
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

pub(super) fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

pub(super) fn encode_header(first_lsn: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The first LSN a segment header declares, or why the header is invalid.
pub(super) fn decode_header(h: &[u8]) -> Result<u64, String> {
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
    // The log's first record has LSN 1 (a segment is named after the LSN
    // following the one before it): 0 is no segment's, and reading it as
    // one would put "the last LSN before it" below zero.
    match u64_at(h, 12) {
        0 => Err("header declares first LSN 0".into()),
        first => Ok(first),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
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
pub(super) fn check_frame(b: &[u8]) -> Result<usize, String> {
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
    if !is_record_slot(slot) {
        return Err(format!("record slot {slot} is not a slot"));
    }
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
pub(super) fn decode_body(body: &[u8]) -> Result<Record, String> {
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
pub(super) fn valid_record_after(b: &[u8], from: usize, last_lsn: u64) -> Option<usize> {
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
                && is_record_slot(slot);
            if plausible && check_frame(&b[p..]).is_ok() {
                return Some(p);
            }
        }
        p += 1;
    }
    None
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
