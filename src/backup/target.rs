//! Where backups go: a directory (a mounted PersistentVolumeClaim) or an
//! S3-compatible bucket, both through the `object_store` crate so the rest of
//! the backup code is one code path — except that a directory target's
//! streamed files (snapshots, log segments) are written by
//! [`super::direct`], with direct I/O.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::checksum::{self, PartHasher};
use super::{BackupError, FileEntry};
use crate::node::release;

/// Objects up to this size are written with one PUT; larger ones in parts.
const SINGLE_PUT_MAX: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 needs ≥ 5 MiB).
const PART_BYTES: usize = 16 * 1024 * 1024;

/// Buffers of a local whole-file copy (one being filled, the rest being
/// hashed).
const COPY_BUF: usize = 4 << 20;
const COPY_BUFS: usize = 4;

/// SHA-256 of a local whole-file copy on its own thread: the caller keeps
/// reading and writing while earlier buffers are hashed and handed back.
/// (Files with part checksums use [`checksum::copy_parts`] instead.)
struct HashThread {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<u8>, usize)>>,
    /// Hashed buffers, for reuse.
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: Option<std::thread::JoinHandle<Sha256>>,
}

impl HashThread {
    fn new(in_flight: usize) -> HashThread {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(in_flight);
        let (back_tx, back) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                while let Ok((b, n)) = rx.recv() {
                    h.update(&b[..n]);
                    let _ = back_tx.send(b);
                }
                h
            })
            .ok();
        HashThread {
            tx: Some(tx),
            back,
            handle,
        }
    }

    /// Hashes the buffer's first `n` bytes (blocking when enough are in
    /// flight).
    fn send_buf(&self, buf: Vec<u8>, n: usize) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((buf, n));
        }
    }

    /// The digest of everything sent.
    fn finish(mut self) -> Result<[u8; 32], std::io::Error> {
        self.tx.take();
        let h = self
            .handle
            .take()
            .ok_or_else(|| std::io::Error::other("the hashing thread did not start"))?
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        Ok(h.finalize().into())
    }
}

/// S3 settings besides the bucket and prefix (from flags or the
/// environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:7070` (path-style requests); None: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

#[derive(Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    /// For messages: `file:///backups` or `s3://bucket/prefix`.
    pub describe: String,
    /// The directory of a filesystem target: reads bypass object_store's
    /// small-chunk stream (4 MiB reads on a blocking thread instead).
    local_root: Option<PathBuf>,
    /// The same directory through object_store, for its key → path mapping.
    local_fs: Option<Arc<object_store::local::LocalFileSystem>>,
    /// Part size of the checksums of files written ([`Target::put_stream`]).
    part_bytes: u64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Target {
    /// `file:///dir`, a plain absolute or relative path, or
    /// `s3://bucket[/prefix]`.
    pub fn open(spec: &str, s3: &S3Options) -> Result<Target, BackupError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::ParseTarget {
                    target: spec.into(),
                    reason: "no bucket (s3://bucket/prefix)".into(),
                });
            }
            return Self::s3(bucket, prefix.trim_matches('/'), s3);
        }
        let dir = spec.strip_prefix("file://").unwrap_or(spec);
        if dir.is_empty() {
            return Err(BackupError::ParseTarget {
                target: spec.into(),
                reason: "empty path".into(),
            });
        }
        Self::dir(Path::new(dir))
    }

    pub fn dir(dir: &Path) -> Result<Target, BackupError> {
        std::fs::create_dir_all(dir).map_err(|source| BackupError::LocalWrite {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| BackupError::OpenTarget {
                target: dir.display().to_string(),
                source,
            })?
            // Empty directories left by deleted backups are noise.
            .with_automatic_cleanup(true);
        let store = Arc::new(store);
        Ok(Target {
            local_fs: Some(store.clone()),
            store,
            describe: format!("file://{}", dir.display()),
            local_root: Some(dir.to_path_buf()),
            part_bytes: checksum::DEFAULT_PART_BYTES,
        })
    }

    pub fn s3(bucket: &str, prefix: &str, o: &S3Options) -> Result<Target, BackupError> {
        super::init_crypto();
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(ep) = &o.endpoint {
            b = b
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let region = o
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.with_region(region);
        let describe = format!("s3://{bucket}/{prefix}");
        let store = b.build().map_err(|source| BackupError::OpenTarget {
            target: describe.clone(),
            source,
        })?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Target {
            store,
            describe,
            local_root: None,
            local_fs: None,
            part_bytes: checksum::DEFAULT_PART_BYTES,
        })
    }

    /// Files written from now on are checksummed in parts of this size (at
    /// least [`checksum::MIN_PART_BYTES`]).
    pub fn with_part_bytes(mut self, part_bytes: u64) -> Target {
        self.part_bytes = part_bytes.max(checksum::MIN_PART_BYTES);
        self
    }

    /// Writes a stream to `key`, returning its size and checksums (SHA-256
    /// of every part, on threads of their own). On a directory target the
    /// file is durable (with its directories) when this returns.
    pub async fn put_stream<S, E>(&self, key: &str, stream: S) -> Result<FileEntry, BackupError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = ObjPath::from(key);
        let put_err = |source| BackupError::Put {
            key: key.to_string(),
            source,
        };
        let mut stream = stream;
        let hash_err = |source: std::io::Error| BackupError::LocalRead {
            path: PathBuf::from(key),
            source,
        };
        let mut hasher = PartHasher::new(self.part_bytes, checksum::workers()).map_err(hash_err)?;
        if let Some(fs) = &self.local_fs {
            let dest = fs
                .path_to_filesystem(&path)
                .map_err(|source| BackupError::Put {
                    key: key.to_string(),
                    source,
                })?;
            super::direct::write_stream(&dest, stream, &mut hasher).await?;
            // The file is fsynced; its new directories are not yet.
            self.make_durable(key, false).await?;
            let (bytes, digests) = hasher.finish().await.map_err(hash_err)?;
            return Ok(FileEntry::from_parts(key, bytes, self.part_bytes, &digests));
        }
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        let read_err = |e: E| BackupError::NodeCall {
            url: key.to_string(),
            reason: format!("the stream broke: {e}"),
        };
        // Small objects: one PUT (S3 multipart parts must be ≥ 5 MiB).
        while head_len <= SINGLE_PUT_MAX {
            match stream.next().await {
                Some(chunk) => {
                    let c = chunk.map_err(read_err)?;
                    hasher.update(c.clone()).await;
                    head_len += c.len();
                    head.push(c);
                }
                None => {
                    self.store
                        .put(&path, PutPayload::from_iter(head))
                        .await
                        .map_err(put_err)?;
                    self.make_durable(key, true).await?;
                    let (bytes, digests) = hasher.finish().await.map_err(hash_err)?;
                    return Ok(FileEntry::from_parts(key, bytes, self.part_bytes, &digests));
                }
            }
        }
        let upload = self.store.put_multipart(&path).await.map_err(put_err)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        for c in head {
            w.put(c);
        }
        let res: Result<(), BackupError> = async {
            while let Some(chunk) = stream.next().await {
                let c = chunk.map_err(read_err)?;
                hasher.update(c.clone()).await;
                w.wait_for_capacity(4).await.map_err(put_err)?;
                w.put(c);
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish().await.map_err(put_err)?;
        self.make_durable(key, true).await?;
        let (bytes, digests) = hasher.finish().await.map_err(hash_err)?;
        Ok(FileEntry::from_parts(key, bytes, self.part_bytes, &digests))
    }

    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), BackupError> {
        self.store
            .put(&ObjPath::from(key), PutPayload::from(data))
            .await
            .map_err(|source| BackupError::Put {
                key: key.to_string(),
                source,
            })?;
        self.make_durable(key, true).await
    }

    /// A directory target: fsyncs the file just written (unless `file` is
    /// false: it was fsynced already) and each directory from its own up to
    /// the target's root (a backup's directories are new).
    /// The object store's local backend only renames its staging file into
    /// place, so without this a "complete" backup (its manifest written
    /// last) could lose its files, or have only the manifest, after a crash
    /// of the machine holding the volume. A PUT to S3 is durable when it
    /// returns.
    async fn make_durable(&self, key: &str, file: bool) -> Result<(), BackupError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let (path, top) = (root.join(key), root.clone());
        tokio::task::spawn_blocking(move || {
            let sync = |p: &Path| {
                std::fs::File::open(p)
                    .and_then(|f| f.sync_all())
                    .map_err(|source| BackupError::LocalWrite {
                        path: p.to_path_buf(),
                        source,
                    })
            };
            if file {
                sync(&path)?;
            }
            for dir in path.ancestors().skip(1) {
                sync(dir)?;
                if dir == top {
                    break;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| BackupError::LocalWrite {
            path: root.join(key),
            source: std::io::Error::other(e),
        })?
    }

    pub async fn put_json<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), BackupError> {
        let data = serde_json::to_vec_pretty(v).map_err(|e| BackupError::Decode {
            what: key.to_string(),
            reason: e.to_string(),
        })?;
        self.put_bytes(key, data).await
    }

    /// None when the object does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, BackupError> {
        let get_err = |source| BackupError::Get {
            key: key.to_string(),
            source,
        };
        match self.store.get(&ObjPath::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(get_err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(get_err(e)),
        }
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, BackupError> {
        match self.get_bytes(key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| BackupError::Decode {
                    what: key.to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Reads an object, optionally into a local file, and checks it against
    /// `want`: size and SHA-256, of every part when it has part checksums
    /// (hashed on several threads), else of the whole file. On a mismatch
    /// the local file is removed and the error names the key (and the part).
    pub async fn fetch_checked(
        &self,
        want: &FileEntry,
        to: Option<&Path>,
    ) -> Result<(), BackupError> {
        let key = &want.key;
        let parts = want.parts()?;
        if let Some(root) = &self.local_root {
            let src = root.join(key);
            let dst = to.map(Path::to_path_buf);
            let want = want.clone();
            return tokio::task::spawn_blocking(move || match parts {
                Some(p) => {
                    checksum::copy_parts(&src, dst.as_deref(), &want, &p, checksum::workers())
                }
                None => {
                    let (bytes, digest) = copy_hashing(&src, dst.as_deref())?;
                    let res = checksum::check(&want, None, bytes, &[digest]);
                    if let (Err(_), Some(p)) = (&res, &dst) {
                        let _ = std::fs::remove_file(p);
                    }
                    res
                }
            })
            .await
            .map_err(|e| BackupError::LocalRead {
                path: root.join(key),
                source: std::io::Error::other(e),
            })?;
        }
        let res = self.stream_checked(want, parts.as_ref(), to).await;
        if let (Err(_), Some(p)) = (&res, to) {
            let _ = tokio::fs::remove_file(p).await;
        }
        res
    }

    /// [`Target::fetch_checked`] from an object store: one GET streamed
    /// into the file, its parts hashed on threads as they arrive.
    async fn stream_checked(
        &self,
        want: &FileEntry,
        parts: Option<&checksum::Parts>,
        to: Option<&Path>,
    ) -> Result<(), BackupError> {
        let key = &want.key;
        let get_err = |source| BackupError::Get {
            key: key.to_string(),
            source,
        };
        let res = match self.store.get(&ObjPath::from(key.as_str())).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BackupError::Incomplete {
                    id: key.clone(),
                    reason: format!("the file {key} is missing"),
                })
            }
            Err(e) => return Err(get_err(e)),
        };
        let mut file = match to {
            Some(p) => Some((
                tokio::fs::File::create(p)
                    .await
                    .map_err(|source| BackupError::LocalWrite {
                        path: p.to_path_buf(),
                        source,
                    })?,
                p.to_path_buf(),
            )),
            None => None,
        };
        let hash_err = |source| BackupError::LocalRead {
            path: PathBuf::from(key),
            source,
        };
        let (part_bytes, threads) = match parts {
            Some(p) => (p.part_bytes, checksum::workers()),
            // The whole object is one part.
            None => (u64::MAX, 1),
        };
        let mut hasher = PartHasher::new(part_bytes, threads).map_err(hash_err)?;
        let mut stream = res.into_stream().map_err(get_err);
        while let Some(c) = stream.next().await {
            let c = c?;
            hasher.update(c.clone()).await;
            if let Some((f, p)) = file.as_mut() {
                f.write_all(&c)
                    .await
                    .map_err(|source| BackupError::LocalWrite {
                        path: p.clone(),
                        source,
                    })?;
            }
        }
        if let Some((f, p)) = file.as_mut() {
            f.sync_all()
                .await
                .map_err(|source| BackupError::LocalWrite {
                    path: p.clone(),
                    source,
                })?;
        }
        let (bytes, digests) = hasher.finish().await.map_err(hash_err)?;
        checksum::check(want, parts, bytes, &digests)
    }

    /// Every key under `prefix` (recursively), with sizes.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, BackupError> {
        let p = ObjPath::from(prefix);
        let metas: Vec<_> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|source| BackupError::List {
                prefix: prefix.to_string(),
                source,
            })?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The immediate "directories" under `prefix`.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, BackupError> {
        let p = ObjPath::from(prefix);
        let res = self
            .store
            .list_with_delimiter(Some(&p))
            .await
            .map_err(|source| BackupError::List {
                prefix: prefix.to_string(),
                source,
            })?;
        let mut out: Vec<String> = res
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes `key`; a missing key is no error. On a directory target a
    /// file larger than one release slice is held open across the unlink
    /// and then given back in paced slices (`node::release`): on a disk
    /// mounted with `discard`, a pruned 1 GB snapshot freed at once stalls
    /// every other request on the disk (the nodes' log fsyncs when they
    /// share it) for about a second.
    pub async fn delete(&self, key: &str) -> Result<(), BackupError> {
        let held = self.local_root.as_ref().and_then(|root| {
            let path = root.join(key);
            // Not openable for writing (or gone): deleted the plain way.
            let file = std::fs::OpenOptions::new().write(true).open(&path).ok()?;
            let big = file.metadata().is_ok_and(|m| m.len() > release::SLICE);
            big.then_some((file, path))
        });
        match self.store.delete(&ObjPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(BackupError::Delete {
                    key: key.to_string(),
                    source,
                })
            }
        }
        if let Some((file, path)) = held {
            let freed = tokio::task::spawn_blocking(move || release::free_paced(file, &path)).await;
            // Only a panic on the blocking pool gets here; the file's
            // name is gone either way and its blocks go with the handle.
            if let Err(e) = freed {
                tracing::warn!(key, error = %e, "freeing a deleted file in slices failed");
            }
        }
        Ok(())
    }
}

/// Reads `src` in 4 MiB blocks through SHA-256, writing them to `dst` (then
/// fsynced) when given; returns the size and the SHA-256.
fn copy_hashing(src: &Path, dst: Option<&Path>) -> Result<(u64, [u8; 32]), BackupError> {
    use std::io::Write;
    let mut f = match std::fs::File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Incomplete {
                id: src.display().to_string(),
                reason: format!("the file {} is missing", src.display()),
            })
        }
        Err(source) => {
            return Err(BackupError::LocalRead {
                path: src.to_path_buf(),
                source,
            })
        }
    };
    let mut out = match dst {
        Some(p) => Some(
            std::fs::File::create(p).map_err(|source| BackupError::LocalWrite {
                path: p.to_path_buf(),
                source,
            })?,
        ),
        None => None,
    };
    // This thread reads and writes; the hashing thread hashes the buffers
    // behind it and hands them back.
    let hasher = HashThread::new(COPY_BUFS - 1);
    let mut fresh = COPY_BUFS;
    let mut bytes = 0u64;
    loop {
        let mut buf = match hasher.back.try_recv() {
            Ok(b) => b,
            Err(_) if fresh > 0 => {
                fresh -= 1;
                vec![0u8; COPY_BUF]
            }
            Err(_) => hasher.back.recv().map_err(|_| BackupError::LocalRead {
                path: src.to_path_buf(),
                source: std::io::Error::other("the hashing thread stopped"),
            })?,
        };
        let n = read_full(&mut f, &mut buf).map_err(|source| BackupError::LocalRead {
            path: src.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if let (Some(o), Some(p)) = (out.as_mut(), dst) {
            o.write_all(&buf[..n])
                .map_err(|source| BackupError::LocalWrite {
                    path: p.to_path_buf(),
                    source,
                })?;
        }
        hasher.send_buf(buf, n);
    }
    if let (Some(o), Some(p)) = (out.as_mut(), dst) {
        o.sync_all().map_err(|source| BackupError::LocalWrite {
            path: p.to_path_buf(),
            source,
        })?;
    }
    let digest = hasher.finish().map_err(|source| BackupError::LocalRead {
        path: src.to_path_buf(),
        source,
    })?;
    Ok((bytes, digest))
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A local file's path joined under a directory, for restores.
pub fn local(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deleting_a_large_file_frees_its_blocks_before_returning_and_cleans_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Target::dir(dir.path()).expect("target");
        let key = "c/backups/b1/c-shard-0/snapshot-1.tsnap";
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        // Sparse: only the size matters to the slicing.
        let size = 2 * release::SLICE + 7;
        std::fs::File::create(&path)
            .expect("create")
            .set_len(size)
            .expect("size");
        let watch = std::fs::File::open(&path).expect("watch");
        t.delete(key).await.expect("delete");
        assert!(!path.exists(), "the name is gone");
        // A plain unlink would leave the blocks to the last handle (this
        // one, still at full size); the paced free has cut them all.
        assert_eq!(watch.metadata().expect("stat").len(), 0);
        assert!(
            !dir.path().join("c/backups/b1").exists(),
            "empty directories are cleaned up as before"
        );
    }

    #[tokio::test]
    async fn deleting_a_small_or_missing_file_is_a_plain_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Target::dir(dir.path()).expect("target");
        let key = "c/wal/shard-0/0-9.json";
        let path = dir.path().join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, b"{}").expect("write");
        let watch = std::fs::File::open(&path).expect("watch");
        t.delete(key).await.expect("delete");
        assert!(!path.exists());
        assert_eq!(watch.metadata().expect("stat").len(), 2, "not cut");
        t.delete(key).await.expect("a missing key is no error");
    }
}
