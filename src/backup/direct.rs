//! Writing a streamed file into a directory target with direct I/O.
//!
//! A backup's files are written once and not read back by this machine, and
//! every one must be on stable storage before the manifest refers to it.
//! Through the page cache that means the kernel copies every byte in, then
//! writes it back and waits for it (`fsync`): in `bench-backup` the page
//! cache writes and their writeback were about half of the backup's kernel
//! CPU. With `O_DIRECT` the device reads the bytes straight from our
//! buffers, and the final `fsync` only has the size and the device cache to
//! flush.
//!
//! The stream's chunks are copied into page-aligned blocks (what `O_DIRECT`
//! requires of buffers, offsets and lengths). Each full block is handed, as
//! one `Bytes`, to the SHA-256 threads and to a writer thread, so it is
//! neither copied again nor hashed on the async runtime. The last block is
//! padded to the alignment and the file cut back to its length after.
//!
//! The file is written under a staging name (`<name>#<n>`, which
//! object_store's listing ignores, as it does its own staging files), then
//! fsynced and renamed into place: a reader never sees a partial file. A
//! filesystem that refuses `O_DIRECT` (tmpfs, some network filesystems) gets
//! the same writes through the page cache, still fsynced.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tracing::debug;

use super::checksum::PartHasher;
use super::BackupError;

/// Alignment of `O_DIRECT` buffers, offsets and lengths: the largest logical
/// block size in common use.
const ALIGN: usize = 4096;
/// Bytes per write. Small enough that a block just filled is still in the
/// cache when a hashing thread reads it, large enough that the device sees
/// few requests.
pub const BLOCK: usize = 1 << 20;
/// Blocks queued for the writer thread.
const WRITE_QUEUE: usize = 8;
/// Free blocks kept for reuse (a fresh allocation page-faults on first use).
const POOL_KEEP: usize = 32;

type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A page-aligned window of `BLOCK` bytes inside a vector; back to the pool
/// when the last `Bytes` referring to it is dropped.
struct Block {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    pool: Pool,
}

impl Block {
    fn take(pool: &Pool) -> Block {
        let buf = pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| vec![0u8; BLOCK + ALIGN]);
        let start = buf.as_ptr().align_offset(ALIGN);
        Block {
            buf,
            start,
            len: 0,
            pool: pool.clone(),
        }
    }

    fn room(&self) -> usize {
        BLOCK - self.len
    }

    fn push(&mut self, data: &[u8]) {
        let at = self.start + self.len;
        self.buf[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Zero-pads to the alignment; returns the length before padding.
    fn pad(&mut self) -> usize {
        let n = self.len;
        let padded = n.div_ceil(ALIGN) * ALIGN;
        let at = self.start;
        self.buf[at + n..at + padded].fill(0);
        self.len = padded;
        n
    }
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL_KEEP {
                p.push(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// The staging path of `dest`: `<dest>#<n>` with the first free `n`.
fn create_staging(dest: &Path) -> Result<(File, PathBuf, bool), BackupError> {
    let err = |path: &Path, source| BackupError::LocalWrite {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    }
    for n in 1u32.. {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        let open = |direct: bool| {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(&path)
        };
        match open(true) {
            Ok(f) => return Ok((f, path, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match open(false) {
                Ok(f) => return Ok((f, path, false)),
                Err(e) => return Err(err(&path, e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(&path, e)),
        }
    }
    Err(err(dest, std::io::Error::other("no free staging name")))
}

/// Leaves direct I/O for the rest of the file (a filesystem that opened
/// with `O_DIRECT` but refuses a write of our alignment).
fn clear_direct(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this File owns; no memory is passed.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes blocks in order; returns the file and whether it stayed direct.
fn write_blocks(
    file: File,
    mut direct: bool,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<(File, bool)> {
    let mut off = 0u64;
    while let Some(b) = rx.blocking_recv() {
        match file.write_all_at(&b, off) {
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                clear_direct(&file)?;
                direct = false;
                file.write_all_at(&b, off)?;
            }
            r => r?,
        }
        off += b.len() as u64;
    }
    Ok((file, direct))
}

/// A blocking task of the write that panicked or was cancelled.
fn join_err(path: &Path, e: tokio::task::JoinError) -> BackupError {
    BackupError::LocalWrite {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    }
}

/// Writes `stream` to `dest` (replacing it), hashing every byte with
/// `hasher`; `dest` is complete and fsynced when this returns Ok. The
/// directories are the caller's to fsync. Returns the byte count.
pub async fn write_stream<S, E>(
    dest: &Path,
    mut stream: S,
    hasher: &mut PartHasher,
) -> Result<u64, BackupError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let d = dest.to_path_buf();
    let (file, staging, direct) = tokio::task::spawn_blocking(move || create_staging(&d))
        .await
        .map_err(|e| join_err(dest, e))??;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_blocks(file, direct, rx));
    let pool: Pool = Arc::default();
    let filled: Result<u64, BackupError> = async {
        let mut total = 0u64;
        let mut block = Block::take(&pool);
        let mut writer_gone = false;
        while let Some(chunk) = stream.next().await {
            let mut c = chunk.map_err(|e| BackupError::NodeCall {
                url: dest.display().to_string(),
                reason: format!("the stream broke: {e}"),
            })?;
            total += c.len() as u64;
            while !c.is_empty() {
                let n = c.len().min(block.room());
                block.push(&c.split_to(n));
                if block.room() == 0 {
                    let full = Bytes::from_owner(std::mem::replace(&mut block, Block::take(&pool)));
                    hasher.update(full.clone()).await;
                    if tx.send(full).await.is_err() {
                        // The writer stopped on an error: it is reported below.
                        writer_gone = true;
                        break;
                    }
                }
            }
            if writer_gone {
                break;
            }
        }
        if block.len > 0 && !writer_gone {
            let n = block.pad();
            let last = Bytes::from_owner(block);
            hasher.update(last.slice(..n)).await;
            // An error of the writer is reported below.
            let _ = tx.send(last).await;
        }
        Ok(total)
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(|e| join_err(&staging, e));
    let result = match (filled, written) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(Err(source))) => Err(BackupError::LocalWrite {
            path: staging.clone(),
            source,
        }),
        (Ok(total), Ok(Ok((file, direct)))) => {
            let (staging2, dest2) = (staging.clone(), dest.to_path_buf());
            tokio::task::spawn_blocking(move || {
                let err = |source| BackupError::LocalWrite {
                    path: staging2.clone(),
                    source,
                };
                // Cut the last block's padding, then make the data, the
                // size and the device's cache durable before the name.
                file.set_len(total).map_err(err)?;
                file.sync_all().map_err(err)?;
                std::fs::rename(&staging2, &dest2).map_err(err)?;
                debug!(path = %dest2.display(), bytes = total, direct, "file written");
                Ok(total)
            })
            .await
            .map_err(|e| join_err(&staging, e))?
        }
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    async fn write(dir: &Path, data: &[u8], chunk: usize) -> (u64, Vec<[u8; 32]>) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut h = PartHasher::new(u64::MAX, 1).expect("hashing thread");
        let n = write_stream(
            &dir.join("a/b/f.tsnap"),
            futures::stream::iter(chunks),
            &mut h,
        )
        .await
        .expect("write");
        let (bytes, digests) = h.finish().await.expect("digests");
        assert_eq!(n, bytes);
        (n, digests)
    }

    #[tokio::test]
    async fn writes_exactly_the_stream_whatever_its_length_and_chunking() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (len, chunk) in [
            (0usize, 7usize),
            (1, 1),
            (ALIGN - 1, 100),
            (BLOCK, 65536),
            (BLOCK + 1, 3000),
            (3 * BLOCK + 12345, 1 << 20),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (n, digests) = write(dir.path(), &data, chunk).await;
            assert_eq!(n, len as u64);
            let got = std::fs::read(dir.path().join("a/b/f.tsnap")).expect("read back");
            assert!(got == data, "len {len} chunk {chunk}: the file differs");
            let want: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(digests, vec![want], "len {len}: digest");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec!["f.tsnap"], "no staging file is left");
    }

    #[tokio::test]
    async fn a_broken_stream_leaves_neither_the_file_nor_its_staging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; BLOCK + 5])),
            Err(std::io::Error::other("connection reset")),
        ];
        let mut h = PartHasher::new(u64::MAX, 1).expect("hashing thread");
        let dest = dir.path().join("f.wal");
        let e = write_stream(&dest, futures::stream::iter(chunks), &mut h)
            .await
            .expect_err("a broken stream fails");
        assert!(e.to_string().contains("connection reset"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            0,
            "nothing left behind"
        );
    }
}
