//! Reading the log: validating a segment (recovery), and iterating over
//! its records.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::format::{
    decode_body, decode_header, decode_record, is_unwritten_tail, u32_at, valid_record_after,
    HEADER_LEN, MAX_BODY, MIN_BODY, PREFIX_LEN,
};
use super::{Record, WalError};

/// What validating one segment found.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) first_lsn: u64,
    /// LSN of the last valid record; `first_lsn - 1` when there is none.
    pub(super) last_lsn: u64,
    /// Length of the valid prefix of the file.
    pub(super) valid_len: u64,
    /// A torn tail to cut: offset and why.
    pub(super) torn: Option<(u64, String)>,
    /// Zeros after `valid_len` to the end: a preallocated segment's
    /// unwritten part (cut without a warning).
    pub(super) unwritten_tail: bool,
}

/// Validates the records of one segment (held in memory: one segment at a
/// time, so opening a big log needs one segment's worth of memory).
pub(super) fn scan_segment(
    path: &Path,
    b: &[u8],
    name_lsn: u64,
    is_last: bool,
) -> Result<Scan, WalError> {
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
                expected = expected
                    .checked_add(1)
                    .ok_or_else(|| corrupt(at, "no LSN can follow this record's".into()))?;
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

/// Iterates over logged records, segment by segment, reading lazily.
pub struct WalReader {
    pub(super) segments: VecDeque<PathBuf>,
    pub(super) after: u64,
    pub(super) cur: Option<(BufReader<File>, PathBuf, u64)>,
    pub(super) body: Vec<u8>,
    pub(super) done: bool,
}

impl WalReader {
    pub(super) fn empty() -> Self {
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
