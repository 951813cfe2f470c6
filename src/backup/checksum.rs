//! SHA-256 of backup files, whole or in fixed-size parts, so that a big
//! file (a snapshot) is verified on every core instead of one SHA-256
//! stream (~2 GB/s per core).
//!
//! What a [`FileEntry`] records (manifest, segment `.json`; docs/backup.md,
//! "Checksums"):
//!
//! - a file of at most one part (and every file of a backup written before
//!   parts existed): `sha256` is the hex SHA-256 of its bytes; no
//!   `partBytes`, no `partSha256`;
//! - a file of `n > 1` parts of `partBytes` = P bytes (the last one
//!   shorter): `partSha256[i]` is the hex SHA-256 of bytes
//!   `[i·P, min((i+1)·P, size))`, and `sha256` is the composite
//!   `hex(SHA-256(d₀ ‖ d₁ ‖ … ‖ dₙ₋₁)) + "-" + n`, `dᵢ` the 32-byte binary
//!   part digests (the shape of S3's composite checksums). The suffix keeps
//!   it from being mistaken for a whole-file SHA-256.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{hex, BackupError, FileEntry};

/// Part size of new backups. 64 MiB: a 1 GB snapshot has 16 parts, so two
/// to eight workers stay busy to within one part (~30 ms of hashing), while
/// the manifest grows by ~1 KB per GB of snapshot (a listing reads every
/// manifest). WAL segments (64 MiB by default) stay one part.
pub const DEFAULT_PART_BYTES: u64 = 64 << 20;
/// The smallest part size `--part-bytes` accepts (tests use small parts).
pub const MIN_PART_BYTES: u64 = 64 << 10;

/// Bytes handed to a hashing thread per message: small stream chunks are
/// batched so the channel is not the cost.
const HASH_BATCH: usize = 1 << 20;
/// Messages queued per hashing thread.
const HASH_QUEUE: usize = 8;
/// Read/hash/write unit of a local parallel copy: fits the L2 cache, so
/// the bytes read are still cached when hashed and written.
const COPY_CHUNK: usize = 1 << 20;
/// Upper bound on hashing threads per file.
const MAX_WORKERS: usize = 8;

/// How many threads hash one file's parts: the available cores (the
/// cgroup's quota in a pod), at least 2 so that reading (a cold volume)
/// overlaps hashing.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, MAX_WORKERS)
}

/// Number of parts of a file: an empty file is one (empty) part.
pub fn part_count(bytes: u64, part_bytes: u64) -> usize {
    if bytes == 0 {
        1
    } else {
        bytes.div_ceil(part_bytes) as usize
    }
}

/// The composite checksum of a multi-part file (see the module comment).
pub fn composite(digests: &[[u8; 32]]) -> String {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    format!("{}-{}", hex(&h.finalize()), digests.len())
}

/// A checked view of an entry's parts.
#[derive(Debug, Clone)]
pub struct Parts {
    pub part_bytes: u64,
    pub digests: Vec<[u8; 32]>,
}

impl Parts {
    /// Byte range of part `i`.
    fn range(&self, i: usize, size: u64) -> (u64, u64) {
        let start = i as u64 * self.part_bytes;
        (start, (start + self.part_bytes).min(size))
    }
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl FileEntry {
    /// The entry for a file hashed in parts of `part_bytes`: one part keeps
    /// the plain whole-file form.
    pub fn from_parts(key: &str, bytes: u64, part_bytes: u64, digests: &[[u8; 32]]) -> FileEntry {
        if digests.len() <= 1 {
            let sha256 = match digests.first() {
                Some(d) => hex(d),
                None => hex(&Sha256::digest(b"")),
            };
            return FileEntry {
                key: key.to_string(),
                bytes,
                sha256,
                part_bytes: None,
                part_sha256: Vec::new(),
            };
        }
        FileEntry {
            key: key.to_string(),
            bytes,
            sha256: composite(digests),
            part_bytes: Some(part_bytes),
            part_sha256: digests.iter().map(|d| hex(d)).collect(),
        }
    }

    /// None: a whole-file checksum. Otherwise the parts, after checking
    /// that they are consistent with the size and the composite `sha256`
    /// (a damaged manifest is refused, not half-trusted).
    pub fn parts(&self) -> Result<Option<Parts>, BackupError> {
        let bad = |reason: String| BackupError::Entry {
            key: self.key.clone(),
            reason,
        };
        let part_bytes = match (self.part_bytes, self.part_sha256.is_empty()) {
            (None, true) => return Ok(None),
            (Some(p), false) if p > 0 => p,
            _ => {
                return Err(bad(
                    "partBytes and partSha256 must be given together (partBytes > 0)".into(),
                ))
            }
        };
        let n = part_count(self.bytes, part_bytes);
        if self.part_sha256.len() != n {
            return Err(bad(format!(
                "{} part checksums for {} bytes in parts of {part_bytes} (expected {n})",
                self.part_sha256.len(),
                self.bytes
            )));
        }
        let mut digests = Vec::with_capacity(n);
        for (i, s) in self.part_sha256.iter().enumerate() {
            digests.push(
                parse_digest(s).ok_or_else(|| {
                    bad(format!("part {} checksum {s:?} is not a SHA-256", i + 1))
                })?,
            );
        }
        let c = composite(&digests);
        if c != self.sha256 {
            return Err(bad(format!(
                "the part checksums compose to {c}, the entry says {}",
                self.sha256
            )));
        }
        Ok(Some(Parts {
            part_bytes,
            digests,
        }))
    }
}

/// Compares what was read (`bytes`, and the digests of its parts of
/// `parts.part_bytes`, or of the whole file when `parts` is None) with the
/// entry.
pub fn check(
    want: &FileEntry,
    parts: Option<&Parts>,
    bytes: u64,
    digests: &[[u8; 32]],
) -> Result<(), BackupError> {
    let Some(parts) = parts else {
        let actual = digests.first().map(|d| hex(d)).unwrap_or_default();
        if actual != want.sha256 || bytes != want.bytes {
            return Err(BackupError::Checksum {
                key: want.key.clone(),
                expected: format!("{} ({} bytes)", want.sha256, want.bytes),
                actual,
                bytes,
            });
        }
        return Ok(());
    };
    if bytes != want.bytes {
        return Err(BackupError::Size {
            key: want.key.clone(),
            expected: want.bytes,
            actual: bytes,
        });
    }
    for (i, (got, exp)) in digests.iter().zip(&parts.digests).enumerate() {
        if got != exp {
            return Err(part_mismatch(want, parts, i, got));
        }
    }
    if digests.len() != parts.digests.len() {
        return Err(BackupError::Size {
            key: want.key.clone(),
            expected: want.bytes,
            actual: bytes,
        });
    }
    Ok(())
}

fn part_mismatch(want: &FileEntry, parts: &Parts, i: usize, got: &[u8; 32]) -> BackupError {
    let (start, end) = parts.range(i, want.bytes);
    BackupError::PartChecksum {
        key: want.key.clone(),
        part: i + 1,
        parts: parts.digests.len(),
        start,
        end,
        expected: hex(&parts.digests[i]),
        actual: hex(got),
    }
}

/// A part's index and its SHA-256.
type IndexedDigest = (usize, [u8; 32]);

/// One message to a hashing thread: bytes of the part it is hashing, and
/// whether that part ends with them.
struct Piece {
    chunks: Vec<Bytes>,
    ends_part: Option<usize>,
}

/// SHA-256 of a byte stream in parts of `part_bytes`, on threads of their
/// own (never on the async runtime's): part `i` goes to thread
/// `i % threads`, so consecutive parts are hashed at the same time when the
/// stream outruns one thread. `part_bytes = u64::MAX` hashes the whole
/// stream as one part.
pub struct PartHasher {
    part_bytes: u64,
    txs: Vec<tokio::sync::mpsc::Sender<Piece>>,
    results: Vec<tokio::sync::oneshot::Receiver<Vec<IndexedDigest>>>,
    part: usize,
    in_part: u64,
    total: u64,
    batch: Vec<Bytes>,
    batch_len: usize,
}

impl PartHasher {
    pub fn new(part_bytes: u64, threads: usize) -> Result<PartHasher, std::io::Error> {
        let mut txs = Vec::new();
        let mut results = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(HASH_QUEUE);
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("sha256-{i}"))
                .spawn(move || {
                    let mut h = Sha256::new();
                    let mut out = Vec::new();
                    while let Some(p) = rx.blocking_recv() {
                        p.chunks.iter().for_each(|c| h.update(c));
                        if let Some(part) = p.ends_part {
                            out.push((part, h.finalize_reset().into()));
                        }
                    }
                    let _ = done_tx.send(out);
                })?;
            txs.push(tx);
            results.push(done_rx);
        }
        Ok(PartHasher {
            part_bytes: part_bytes.max(1),
            txs,
            results,
            part: 0,
            in_part: 0,
            total: 0,
            batch: Vec::new(),
            batch_len: 0,
        })
    }

    pub async fn update(&mut self, mut c: Bytes) {
        while !c.is_empty() {
            let room = self.part_bytes - self.in_part;
            let piece = if c.len() as u64 > room {
                c.split_to(room as usize)
            } else {
                std::mem::take(&mut c)
            };
            self.in_part += piece.len() as u64;
            self.total += piece.len() as u64;
            self.batch_len += piece.len();
            self.batch.push(piece);
            if self.in_part == self.part_bytes {
                self.send(true).await;
                self.part += 1;
                self.in_part = 0;
            } else if self.batch_len >= HASH_BATCH {
                self.send(false).await;
            }
        }
    }

    async fn send(&mut self, ends: bool) {
        if self.batch.is_empty() && !ends {
            return;
        }
        self.batch_len = 0;
        let p = Piece {
            chunks: std::mem::take(&mut self.batch),
            ends_part: ends.then_some(self.part),
        };
        // A closed channel (the thread died) shows in finish().
        let _ = self.txs[self.part % self.txs.len()].send(p).await;
    }

    /// The size and every part's digest, in order.
    pub async fn finish(mut self) -> Result<(u64, Vec<[u8; 32]>), std::io::Error> {
        if self.in_part > 0 || self.part == 0 {
            self.send(true).await;
        }
        self.txs.clear();
        let mut all = Vec::new();
        for r in self.results.drain(..) {
            all.extend(
                r.await
                    .map_err(|_| std::io::Error::other("a hashing thread stopped"))?,
            );
        }
        all.sort_by_key(|(i, _)| *i);
        if all.iter().enumerate().any(|(n, (i, _))| n != *i) {
            return Err(std::io::Error::other("a hashing thread lost a part"));
        }
        Ok((self.total, all.into_iter().map(|(_, d)| d).collect()))
    }
}

/// Verifies a local multi-part file, copying it to `dst` (fsynced) when
/// given: `workers` threads take parts in turn, each reading a part with
/// its own file handle (its own readahead), hashing it and writing it at
/// the same offset of `dst`, 1 MiB at a time. The first mismatch stops the
/// others; on any failure `dst` is removed.
pub fn copy_parts(
    src: &Path,
    dst: Option<&Path>,
    want: &FileEntry,
    parts: &Parts,
    workers: usize,
) -> Result<(), BackupError> {
    let res = copy_parts_inner(src, dst, want, parts, workers);
    if res.is_err() {
        if let Some(p) = dst {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

fn open_src(src: &Path) -> Result<std::fs::File, BackupError> {
    match std::fs::File::open(src) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BackupError::Incomplete {
            id: src.display().to_string(),
            reason: format!("the file {} is missing", src.display()),
        }),
        Err(source) => Err(BackupError::LocalRead {
            path: src.to_path_buf(),
            source,
        }),
    }
}

fn copy_parts_inner(
    src: &Path,
    dst: Option<&Path>,
    want: &FileEntry,
    parts: &Parts,
    workers: usize,
) -> Result<(), BackupError> {
    let read_err = |source| BackupError::LocalRead {
        path: src.to_path_buf(),
        source,
    };
    let size = open_src(src)?.metadata().map_err(read_err)?.len();
    if size != want.bytes {
        return Err(BackupError::Size {
            key: want.key.clone(),
            expected: want.bytes,
            actual: size,
        });
    }
    let out = match dst {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|source| BackupError::LocalWrite {
                path: p.to_path_buf(),
                source,
            })?;
            Some((f, p))
        }
        None => None,
    };
    let n = parts.digests.len();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The failure of the lowest part index seen (deterministic when one
    // part is bad).
    let failed: Mutex<Option<(usize, BackupError)>> = Mutex::new(None);
    let fail = |i: usize, e: BackupError| {
        stop.store(true, Ordering::Relaxed);
        let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.as_ref().is_none_or(|(j, _)| i < *j) {
            *f = Some((i, e));
        }
    };
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, n) {
            s.spawn(|| {
                let f = match open_src(src) {
                    Ok(f) => f,
                    Err(e) => return fail(0, e),
                };
                advise_sequential(&f);
                let mut buf = vec![0u8; COPY_CHUNK];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (start, end) = parts.range(i, size);
                    let mut h = Sha256::new();
                    let mut at = start;
                    while at < end {
                        let len = (end - at).min(COPY_CHUNK as u64) as usize;
                        let chunk = &mut buf[..len];
                        if let Err(e) = f.read_exact_at(chunk, at) {
                            return fail(
                                i,
                                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                    // Shrunk since the size was checked.
                                    BackupError::Size {
                                        key: want.key.clone(),
                                        expected: want.bytes,
                                        actual: at,
                                    }
                                } else {
                                    read_err(e)
                                },
                            );
                        }
                        h.update(&*chunk);
                        if let Some((o, p)) = &out {
                            if let Err(source) = o.write_all_at(chunk, at) {
                                return fail(
                                    i,
                                    BackupError::LocalWrite {
                                        path: p.to_path_buf(),
                                        source,
                                    },
                                );
                            }
                        }
                        at += len as u64;
                    }
                    let got: [u8; 32] = h.finalize().into();
                    if got != parts.digests[i] {
                        return fail(i, part_mismatch(want, parts, i, &got));
                    }
                    if let Some((o, _)) = &out {
                        start_writeback(o, start, end - start);
                    }
                }
            });
        }
    });
    if let Some((_, e)) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if let Some((o, p)) = &out {
        o.sync_all().map_err(|source| BackupError::LocalWrite {
            path: p.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Starts writing a written part to disk now, without waiting: the final
/// `fsync` then finds most of the file already written instead of writing
/// all of it after the copy (the disk works while later parts are hashed).
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only queues writeback (a
    // failure shows in the fsync that follows).
    unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Each worker reads its parts front to back: let the kernel read ahead.
fn advise_sequential(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only sets a hint.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_of(data: &[u8], part_bytes: u64) -> FileEntry {
        let digests: Vec<[u8; 32]> = if data.is_empty() {
            vec![Sha256::digest(b"").into()]
        } else {
            data.chunks(part_bytes as usize)
                .map(|c| Sha256::digest(c).into())
                .collect()
        };
        FileEntry::from_parts("k", data.len() as u64, part_bytes, &digests)
    }

    #[test]
    fn one_part_is_the_plain_sha256_and_several_compose() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let one = entry_of(&data, 1 << 20);
        assert_eq!(one.sha256, hex(&Sha256::digest(&data)));
        assert!(one.part_bytes.is_none() && one.part_sha256.is_empty());
        assert!(one.parts().expect("consistent").is_none());
        let many = entry_of(&data, 4096);
        assert_eq!(many.part_sha256.len(), 3);
        assert_eq!(many.part_sha256[2], hex(&Sha256::digest(&data[8192..])));
        let mut cat = Vec::new();
        for c in data.chunks(4096) {
            cat.extend_from_slice(&Sha256::digest(c));
        }
        assert_eq!(many.sha256, format!("{}-3", hex(&Sha256::digest(&cat))));
        assert_eq!(
            many.parts()
                .expect("consistent")
                .expect("parts")
                .digests
                .len(),
            3
        );
        // Serialized camelCase; the old form has neither field.
        let v = serde_json::to_value(&many).expect("json");
        assert_eq!(v["partBytes"], 4096);
        assert_eq!(v["partSha256"].as_array().map(Vec::len), Some(3));
        let v = serde_json::to_value(&one).expect("json");
        assert!(v.get("partBytes").is_none() && v.get("partSha256").is_none());
    }

    #[test]
    fn inconsistent_parts_are_refused() {
        let data = vec![1u8; 10_000];
        let good = entry_of(&data, 4096);
        let mut e = good.clone();
        e.part_sha256.pop();
        assert!(matches!(e.parts(), Err(BackupError::Entry { .. })));
        let mut e = good.clone();
        e.part_sha256[1] = hex(&Sha256::digest(b"other"));
        assert!(matches!(e.parts(), Err(BackupError::Entry { .. })));
        let mut e = good.clone();
        e.part_bytes = None;
        assert!(matches!(e.parts(), Err(BackupError::Entry { .. })));
    }

    #[tokio::test]
    async fn streamed_parts_match_whatever_the_chunking() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let want = entry_of(&data, 65_536);
        for chunk in [1000, 65_536, 70_000, 300_000] {
            let mut h = PartHasher::new(65_536, 3).expect("threads");
            for c in data.chunks(chunk) {
                h.update(Bytes::copy_from_slice(c)).await;
            }
            let (bytes, digests) = h.finish().await.expect("digests");
            let got = FileEntry::from_parts("k", bytes, 65_536, &digests);
            assert_eq!(got, want, "chunks of {chunk}");
        }
        let h = PartHasher::new(65_536, 2).expect("threads");
        let (bytes, digests) = h.finish().await.expect("digests");
        assert_eq!((bytes, digests.len()), (0, 1));
        assert_eq!(
            FileEntry::from_parts("k", 0, 65_536, &digests).sha256,
            hex(&Sha256::digest(b""))
        );
    }

    #[test]
    fn local_copy_checks_every_part_and_names_the_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&src, &data).expect("write");
        let want = entry_of(&data, 1 << 20);
        let parts = want.parts().expect("consistent").expect("parts");
        copy_parts(&src, Some(&dst), &want, &parts, 2).expect("copied");
        assert_eq!(std::fs::read(&dst).expect("read"), data);
        copy_parts(&src, None, &want, &parts, 3).expect("verified");
        let mut bad = data.clone();
        bad[2_500_000] ^= 1;
        std::fs::write(&src, &bad).expect("write");
        std::fs::remove_file(&dst).expect("rm");
        let e = copy_parts(&src, Some(&dst), &want, &parts, 2).expect_err("refused");
        assert!(
            matches!(
                e,
                BackupError::PartChecksum {
                    part: 3,
                    parts: 5,
                    start: 2_097_152,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("checksum mismatch in k, part 3 of 5"),
            "{e}"
        );
        assert!(!dst.exists(), "a refused copy is removed");
        std::fs::write(&src, &data[..4_000_000]).expect("write");
        let e = copy_parts(&src, None, &want, &parts, 2).expect_err("refused");
        assert!(
            matches!(
                e,
                BackupError::Size {
                    actual: 4_000_000,
                    ..
                }
            ),
            "{e}"
        );
    }
}
