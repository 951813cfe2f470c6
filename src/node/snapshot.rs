//! Snapshots: the keyspace written slot by slot while the node keeps serving,
//! so the log can be truncated; and loading the newest valid one at start.
//!
//! Consistency without stopping the world: a snapshot visits the 16384 slots
//! in order on the event-loop thread. For each slot it borrows the store,
//! serializes that slot's entries together with the slot's *watermark* — the
//! last LSN assigned at that moment — and releases the borrow. Every command
//! runs to completion (store change and log append) inside one borrow, so the
//! slot's serialized state reflects exactly the records ≤ its watermark that
//! touch it. Every record touches one slot (CROSSSLOT) or every slot
//! (FLUSHALL), so recovery rebuilds each slot as "snapshot state + the later
//! records of that slot" by replaying the log from the smallest watermark and
//! skipping, per slot, records at or below that slot's watermark. Between
//! slots the task yields, so clients are served while a snapshot runs.
//!
//! The file I/O and fsync happen on a writer thread fed through a bounded
//! channel. See docs/storage-format.md.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use hashbrown::HashSet;
use tracing::{info, warn};

use super::slots::SLOTS;
use super::store::{Hash, Store, Value, ZSet};
use super::wal::{self, Wal};
use super::{now_ms, Node};

mod load;
mod scripts;
mod stream;
#[cfg(test)]
use load::decode_value;
pub use load::{load_bytes, load_file, load_newest, load_scripts_section, load_section};
use load::{read_footer, Cursor};
use scripts::{encode_scripts, load_scripts};
use stream::{decode_stream, encode_stream};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to write the snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt snapshot {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("failed to read the snapshot {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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

// ---------------------------------------------------------------------------
// File format (all integers little-endian; CRCs are CRC32C):
//
//   header:
//     magic       [u8; 8]  "TSSNAP\0\x01"
//     version     u32      2 (1 is still read)
//     id_len      u16      node ID length, then the node ID bytes
//     crc         u32      of the header bytes before it
//   16384 sections, one per slot in slot order (empty slots too, so every
//   slot's watermark is known):
//     len         u32      body length
//     crc         u32      of the body
//     body:
//       slot      u16
//       watermark u64      last LSN assigned when the slot was serialized
//       count     u64      entries, then `count` entries:
//         key       bytes
//         type      u8     0 string, 1 hash, 2 list, 3 set, 4 zset, 5/6 stream
//         expire_at u64    absolute ms since the Unix epoch; 0 = none
//         value:
//           string: bytes
//           hash:   u64 n, n × (field bytes, value bytes)
//           list:   u64 n, n × bytes (head first)
//           set:    u64 n, n × bytes
//           zset:   u64 n, n × (member bytes, score f64)
//           stream (type 5, still read; no longer written):
//                   last_id (u64 ms, u64 seq), u64 n,
//                   n × (id ms u64, id seq u64, u64 m, m × bytes)
//           stream (type 6): last_id, entries_added u64, max_deleted_id
//                   (u64 ms, u64 seq), the entries as type 5 has them, then
//                   u64 g, g × group:
//                     name bytes, last_id, entries_read i64 (-1 unknown),
//                     u64 c, c × (consumer name bytes, seen_time u64),
//                     u64 p, p × (id, consumer name bytes,
//                                 delivery_time u64, delivery_count u64)
//                   (a type 5 stream loads with entries_added = its length)
//       where `bytes` = u32 length + the bytes
//   (version 2) the scripts section, after slot 16383's in the same step:
//     len         u32      body length
//     crc         u32      of the body
//     body:
//       scripts   u64 n, n × bytes   script bodies (SCRIPT LOAD, EVAL)
//       libraries u64 m, m × bytes   function libraries' code (FUNCTION LOAD)
//   (a version 1 file has none: it loads with no scripts)
//   footer:
//     magic       [u8; 8]  "TSSNEND\x01"
//     start_lsn   u64      smallest watermark
//     end_lsn     u64      largest watermark
//     keys        u64
//     sections    u32      16384
//     finished_ms u64
//     crc         u32      of every byte of the file before it
//
// Files are `snapshot-<end_lsn, 20 digits>.tsnap`, written as a `.tmp`,
// fsynced, renamed, and the directory fsynced.
// ---------------------------------------------------------------------------

const MAGIC: [u8; 8] = *b"TSSNAP\0\x01";
const FOOTER_MAGIC: [u8; 8] = *b"TSSNEND\x01";
const VERSION: u32 = 2;
/// The first version with a scripts section.
const VERSION_SCRIPTS: u32 = 2;
const FOOTER_LEN: usize = 48;
/// slot + watermark + count.
const SECTION_MIN: usize = 18;
/// The snapshot task sends its bytes to the writer in chunks of about this.
const CHUNK_BYTES: usize = 1 << 20;
/// ... and yields to clients at least this often.
const YIELD_EVERY_SLOTS: usize = 128;

const T_STR: u8 = 0;
const T_HASH: u8 = 1;
const T_LIST: u8 = 2;
const T_SET: u8 = 3;
const T_ZSET: u8 = 4;
const T_STREAM: u8 = 5;
const T_STREAM2: u8 = 6;

fn snapshot_name(end_lsn: u64) -> String {
    format!("snapshot-{end_lsn:020}.tsnap")
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn encode_header(node_id: &str) -> Vec<u8> {
    encode_header_version(node_id, VERSION)
}

fn encode_header_version(node_id: &str, version: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&version.to_le_bytes());
    let id = &node_id.as_bytes()[..node_id.len().min(u16::MAX as usize)];
    b.extend_from_slice(&(id.len() as u16).to_le_bytes());
    b.extend_from_slice(id);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn encode_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => put_bytes(b, s),
        Value::Hash(h) => {
            put_u64(b, h.len() as u64);
            for (f, v) in h.iter() {
                put_bytes(b, f);
                put_bytes(b, v);
            }
        }
        Value::List(l) => {
            put_u64(b, l.len() as u64);
            for e in l.iter() {
                put_bytes(b, e);
            }
        }
        Value::Set(s) => {
            put_u64(b, s.len() as u64);
            for e in s.iter() {
                put_bytes(b, e);
            }
        }
        Value::ZSet(z) => {
            put_u64(b, z.len() as u64);
            for (m, score) in z.iter() {
                put_bytes(b, m);
                put_u64(b, score.to_bits());
            }
        }
        Value::Stream(s) => encode_stream(b, s),
    }
}

fn type_tag(v: &Value) -> u8 {
    match v {
        Value::Str(_) => T_STR,
        Value::Hash(_) => T_HASH,
        Value::List(_) => T_LIST,
        Value::Set(_) => T_SET,
        Value::ZSet(_) => T_ZSET,
        Value::Stream(_) => T_STREAM2,
    }
}

/// Appends one framed slot section to `b`; returns its number of keys.
fn encode_section(b: &mut Vec<u8>, store: &Store, slot: u16, watermark: u64) -> u64 {
    let start = b.len();
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&slot.to_le_bytes());
    put_u64(b, watermark);
    let count_at = b.len();
    put_u64(b, 0);
    let mut count = 0u64;
    for (key, entry) in store.slot_entries(slot) {
        put_bytes(b, key);
        b.push(type_tag(&entry.value));
        put_u64(b, entry.expire_at());
        encode_value(b, &entry.value);
        count += 1;
    }
    b[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let body = &b[start + 8..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    b[start..start + 4].copy_from_slice(&len.to_le_bytes());
    b[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    count
}

struct Footer {
    start_lsn: u64,
    end_lsn: u64,
    keys: u64,
    sections: u32,
    finished_ms: u64,
}

/// The footer for a file whose preceding bytes have CRC `file_crc`.
fn encode_footer(f: &Footer, file_crc: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(FOOTER_LEN);
    b.extend_from_slice(&FOOTER_MAGIC);
    put_u64(&mut b, f.start_lsn);
    put_u64(&mut b, f.end_lsn);
    put_u64(&mut b, f.keys);
    b.extend_from_slice(&f.sections.to_le_bytes());
    put_u64(&mut b, f.finished_ms);
    let crc = crc32c::crc32c_append(file_crc, &b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

// ---------------------------------------------------------------------------
// Taking a snapshot.
// ---------------------------------------------------------------------------

enum Msg {
    Data(Vec<u8>),
    Finish { footer: Footer, path: PathBuf },
}

/// The writer thread: writes chunks to `tmp`, then the footer, fsyncs,
/// renames and fsyncs the directory. On any failure the `.tmp` is removed.
fn writer(
    tmp: PathBuf,
    dir: PathBuf,
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(PathBuf, u64), SnapshotError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Write { path, source }
    };
    let res = (|| {
        let f = File::create(&tmp).map_err(write_err(&tmp))?;
        let mut w = BufWriter::with_capacity(CHUNK_BYTES, f);
        let mut crc = 0u32;
        let mut bytes = 0u64;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(mut b) => {
                    crc = crc32c::crc32c_append(crc, &b);
                    w.write_all(&b).map_err(write_err(&tmp))?;
                    bytes += b.len() as u64;
                    b.clear();
                    let _ = back.send(b);
                }
                Msg::Finish { footer, path } => {
                    let b = encode_footer(&footer, crc);
                    w.write_all(&b).map_err(write_err(&tmp))?;
                    bytes += b.len() as u64;
                    let f = w
                        .into_inner()
                        .map_err(|e| write_err(&tmp)(e.into_error()))?;
                    f.sync_all().map_err(write_err(&tmp))?;
                    drop(f);
                    // A snapshot at an unchanged LSN replaces a file of the
                    // same name. Renaming over it frees its blocks inside
                    // rename (about 1 s per GB on ext4) unless the file is
                    // still open: holding it makes the rename instant, and
                    // the release thread frees it in slices.
                    let replaced = std::fs::OpenOptions::new().write(true).open(&path).ok();
                    std::fs::rename(&tmp, &path).map_err(write_err(&path))?;
                    File::open(&dir)
                        .and_then(|d| d.sync_all())
                        .map_err(write_err(&dir))?;
                    if let Some(old) = replaced {
                        crate::node::release::release_open(old, path.clone());
                    }
                    return Ok((path, bytes));
                }
            }
        }
        Err(SnapshotError::Write {
            path: tmp.clone(),
            source: std::io::Error::other("the snapshot was abandoned"),
        })
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Takes a snapshot while the node keeps serving.
pub async fn take(node: &Rc<Node>) -> Result<SnapshotInfo, SnapshotError> {
    let started = Instant::now();
    let dir = node.cfg.data_dir.join("snapshots");
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Write { path, source }
    };
    if !node.cfg.persistence || !node.wal.enabled() {
        return Err(write_err(&dir)(std::io::Error::other(
            "persistence is disabled",
        )));
    }
    if !node.ready.get() {
        // While the log replays, the last LSN is not what the store holds.
        return Err(write_err(&dir)(std::io::Error::other(
            "the node is still loading its data set",
        )));
    }
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let tmp = dir.join(format!("snapshot-{}-{}.tmp", now_ms(), std::process::id()));
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(4);
    // The writer hands each written chunk's buffer back: a snapshot reuses
    // a handful of buffers instead of allocating one per MiB here and
    // freeing it on the writer thread, memory mimalloc gave back only at
    // this thread's next collection (up to ~90 MB resident after a 68 MB
    // snapshot).
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (tmp2, dir2) = (tmp.clone(), dir.clone());
    std::thread::Builder::new()
        .name("snapshot-writer".into())
        .spawn(move || {
            let _ = done_tx.send(writer(tmp2, dir2, rx, back_tx));
        })
        .map_err(write_err(&tmp))?;

    let mut chunk = encode_header(&node.id);
    let mut start_lsn = None;
    let mut end_lsn = 0;
    let mut keys = 0u64;
    let mut writer_gone = false;
    for slot in 0..SLOTS {
        let watermark = node.wal.last_lsn();
        keys += encode_section(&mut chunk, &node.store.borrow(), slot as u16, watermark);
        if slot == SLOTS - 1 {
            // At the last slot's watermark: no record between them.
            encode_scripts(&mut chunk, &node.store.borrow().scripts);
        }
        start_lsn.get_or_insert(watermark);
        end_lsn = watermark;
        if chunk.len() >= CHUNK_BYTES || slot % YIELD_EVERY_SLOTS == YIELD_EVERY_SLOTS - 1 {
            if !chunk.is_empty() {
                let next = back_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
                let full = std::mem::replace(&mut chunk, next);
                if tx.send(Msg::Data(full)).await.is_err() {
                    writer_gone = true;
                    break;
                }
            }
            // Let clients in between slots.
            tokio::task::yield_now().await;
        }
    }
    if !writer_gone && !chunk.is_empty() {
        writer_gone = tx.send(Msg::Data(chunk)).await.is_err();
    }
    let start_lsn = start_lsn.unwrap_or(end_lsn);
    if !writer_gone {
        // A snapshot must never be ahead of the durable log: recovery
        // continues the log after the snapshot, and a fallback to the older
        // snapshot replays the log across this one.
        if let Err(e) = node.wal.sync_through(end_lsn).await {
            drop(tx);
            let _ = done_rx.await;
            return Err(write_err(&tmp)(std::io::Error::other(format!(
                "the log could not be made durable: {e}"
            ))));
        }
        let footer = Footer {
            start_lsn,
            end_lsn,
            keys,
            sections: SLOTS as u32,
            finished_ms: now_ms(),
        };
        let path = dir.join(snapshot_name(end_lsn));
        let _ = tx.send(Msg::Finish { footer, path }).await;
    }
    drop(tx);
    let (path, bytes) = done_rx
        .await
        .map_err(|_| write_err(&tmp)(std::io::Error::other("the snapshot writer thread died")))??;
    let info = SnapshotInfo {
        path,
        start_lsn,
        end_lsn,
        keys,
        bytes,
        finished_at_ms: now_ms(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if let Err(e) = retain(&dir, &node.wal) {
        // The new snapshot is fine; old files just stay a while longer.
        warn!(error = %e, "failed to remove old snapshots or log segments");
    }
    Ok(info)
}

/// Keeps the two newest snapshots and truncates the log through the older
/// one's start LSN, so that falling back to it (if the newest turns out
/// corrupt) still finds every record it needs.
fn retain(dir: &Path, wal: &Wal) -> Result<(), Box<dyn std::error::Error>> {
    let snaps = list_snapshots(dir)?;
    if snaps.len() < 2 {
        return Ok(());
    }
    let keep_from = snaps.len() - 2;
    for (_, path) in &snaps[..keep_from] {
        super::release::unlink(path.clone());
        info!(path = %path.display(), "old snapshot removed");
    }
    let older = &snaps[keep_from].1;
    let footer = read_footer(older)?;
    wal.truncate_through(footer.start_lsn)?;
    Ok(())
}

/// Snapshot files in `dir`, oldest (smallest end LSN) first.
fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let lsn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("snapshot-"))
            .and_then(|n| n.strip_suffix(".tsnap"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(lsn) = lsn {
            v.push((lsn, path));
        }
    }
    v.sort();
    Ok(v)
}

/// Snapshot files in `dir` as (start LSN, end LSN, path), oldest first, from
/// their footers alone (no CRC check; unreadable ones are left out): what a
/// rejoining replica can rebuild its state from when it truncates its log.
pub fn list_bounds(dir: &Path) -> Vec<(u64, u64, PathBuf)> {
    let Ok(snaps) = list_snapshots(dir) else {
        return Vec::new();
    };
    snaps
        .into_iter()
        .filter_map(|(_, path)| {
            read_footer(&path)
                .ok()
                .map(|f| (f.start_lsn, f.end_lsn, path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::groups::Group;
    use crate::node::store::{Stream, StreamId};
    use std::collections::{BTreeMap, VecDeque};

    /// A whole snapshot file in memory, slot `s` at watermark `wm(s)`.
    pub(super) fn encode_all(store: &Store, wm: impl Fn(u16) -> u64) -> Vec<u8> {
        encode_all_version(store, wm, VERSION)
    }

    /// The same in a given format version (1: no scripts section).
    pub(super) fn encode_all_version(
        store: &Store,
        wm: impl Fn(u16) -> u64,
        version: u32,
    ) -> Vec<u8> {
        let mut b = encode_header_version("0123456789012345678901234567890123456789", version);
        let mut keys = 0;
        for s in 0..SLOTS as u16 {
            keys += encode_section(&mut b, store, s, wm(s));
        }
        if version >= VERSION_SCRIPTS {
            encode_scripts(&mut b, &store.scripts);
        }
        let f = Footer {
            start_lsn: wm(0),
            end_lsn: wm(SLOTS as u16 - 1),
            keys,
            sections: SLOTS as u32,
            finished_ms: 1,
        };
        let crc = crc32c::crc32c(&b);
        b.extend(encode_footer(&f, crc));
        b
    }

    pub(super) fn sample() -> Store {
        let mut st = Store::new();
        let k = |s: &str| Box::<[u8]>::from(s.as_bytes());
        st.load(1, k("s"), Value::Str(k("v")), 0);
        st.load(2, k("x"), Value::Str(k("")), 12345);
        let mut h = Hash::default();
        h.insert(b"f", b"v");
        st.load(3, k("h"), Value::Hash(h), 0);
        st.load(
            4,
            k("l"),
            Value::List(Box::new(VecDeque::from(vec![k("a"), k("b")]))),
            0,
        );
        let mut set = HashSet::new();
        set.insert(k("m"));
        st.load(5, k("set"), Value::Set(Box::new(set)), 0);
        let mut z = ZSet::default();
        z.insert(b"a", 1.5);
        z.insert(b"b", f64::NEG_INFINITY);
        st.load(6, k("z"), Value::ZSet(z), 0);
        let mut entries = BTreeMap::new();
        entries.insert(StreamId { ms: 5, seq: 1 }, vec![k("f"), k("v")]);
        let mut g = Group::new(StreamId { ms: 5, seq: 1 }, 1);
        g.consumer(b"idle", 40);
        g.set_pending(StreamId { ms: 5, seq: 1 }, b"busy", 50, 3);
        let mut groups = BTreeMap::new();
        groups.insert(k("g"), g);
        st.load(
            16383,
            k("st"),
            Value::Stream(Box::new(Stream {
                entries,
                last_id: StreamId { ms: 7, seq: 0 },
                entries_added: 3,
                max_deleted_id: StreamId { ms: 6, seq: 0 },
                groups,
            })),
            0,
        );
        st
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join(snapshot_name(20000));
        std::fs::write(&path, encode_all(&sample(), |s| 100 + s as u64)).expect("write");
        let mut st = Store::new();
        let l = load_file(&path, &mut st).expect("valid");
        assert_eq!(l.info.start_lsn, 100);
        assert_eq!(l.info.end_lsn, 100 + 16383);
        assert_eq!(l.info.keys, 7);
        assert_eq!(l.watermarks[5], 105);
        assert_eq!(st.len(), 7);
        assert_eq!(st.volatile_len(), 1);
        let e = st.get(6, b"z").expect("zset");
        match &e.value {
            Value::ZSet(z) => assert_eq!(z.score(b"b"), Some(f64::NEG_INFINITY)),
            v => panic!("wrong type {}", v.type_name()),
        }
        match &st.get(4, b"l").expect("list").value {
            Value::List(l) => assert_eq!(l.front().map(|v| &v[..]), Some(&b"a"[..])),
            v => panic!("wrong type {}", v.type_name()),
        }
        assert_eq!(st.get(2, b"x").map(|e| e.expire_at()), Some(12345));
        let Some(Value::Stream(s)) = st.get(16383, b"st").map(|e| &e.value) else {
            panic!("the stream is loaded as a stream");
        };
        assert_eq!(
            (s.last_id.ms, s.entries_added, s.max_deleted_id.ms),
            (7, 3, 6)
        );
        let g = &s.groups[&b"g"[..]];
        assert_eq!((g.last_id.ms, g.entries_read), (5, 1));
        assert_eq!(g.consumers[&b"idle"[..]].seen_time, 40);
        let p = &g.pel[&StreamId { ms: 5, seq: 1 }];
        assert_eq!(
            (&p.consumer[..], p.delivery_time, p.delivery_count),
            (&b"busy"[..], 50, 3)
        );
        assert!(g.consumers[&b"busy"[..]]
            .pel
            .contains(&StreamId { ms: 5, seq: 1 }));
    }

    #[test]
    fn a_stream_in_the_older_layout_loads_with_its_length_as_entries_added() {
        let mut b = Vec::new();
        put_u64(&mut b, 9);
        put_u64(&mut b, 0);
        put_u64(&mut b, 2);
        for ms in [3u64, 9] {
            put_u64(&mut b, ms);
            put_u64(&mut b, 0);
            put_u64(&mut b, 2);
            put_bytes(&mut b, b"f");
            put_bytes(&mut b, b"v");
        }
        let mut c = Cursor { b: &b, at: 0 };
        let Value::Stream(s) = decode_value(&mut c, T_STREAM).expect("valid") else {
            panic!("a stream");
        };
        assert_eq!((s.entries.len(), s.entries_added, s.last_id.ms), (2, 2, 9));
        assert!(s.groups.is_empty());
        assert_eq!(c.at, b.len(), "every byte is read");
    }

    #[test]
    fn flipped_bit_is_found_with_its_offset() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join(snapshot_name(1));
        let mut b = encode_all(&sample(), |_| 1);
        b[200] ^= 4;
        std::fs::write(&path, &b).expect("write");
        match load_file(&path, &mut Store::new()) {
            Err(SnapshotError::Corrupt { offset, .. }) => assert!(offset <= 200, "offset {offset}"),
            other => panic!("expected corruption, got ok={}", other.is_ok()),
        }
        // Truncated file: no footer.
        let good = encode_all(&sample(), |_| 1);
        std::fs::write(&path, &good[..good.len() - 10]).expect("write");
        assert!(load_file(&path, &mut Store::new()).is_err());
    }

    #[test]
    fn falls_back_only_when_the_log_reaches_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let snaps = tmp.path().join("snapshots");
        let wal_dir = tmp.path().join("wal");
        std::fs::create_dir_all(&snaps).expect("mkdir");
        std::fs::create_dir_all(&wal_dir).expect("mkdir");
        std::fs::write(snaps.join(snapshot_name(10)), encode_all(&sample(), |_| 10)).expect("w");
        let mut newest = encode_all(&Store::new(), |_| 20);
        newest[100] ^= 1;
        std::fs::write(snaps.join(snapshot_name(20)), &newest).expect("w");
        std::fs::write(snaps.join("snapshot-1-2.tmp"), b"junk").expect("w");

        // The log starts at 5: the older snapshot (start 10) is usable.
        std::fs::write(wal_dir.join("00000000000000000005.wal"), b"").expect("w");
        let mut st = Store::new();
        let l = load_newest(&snaps, &mut st)
            .expect("fallback")
            .expect("loaded");
        assert_eq!(l.info.end_lsn, 10);
        assert_eq!(st.len(), 7);
        assert!(!snaps.join("snapshot-1-2.tmp").exists());
        let aside = snaps.join(format!("{}.corrupt", snapshot_name(20)));
        assert!(aside.exists(), "the corrupt snapshot is set aside");
        std::fs::rename(&aside, snaps.join(snapshot_name(20))).expect("put it back");

        // The log starts at 15: records 11..14 are gone, refuse.
        std::fs::remove_file(wal_dir.join("00000000000000000005.wal")).expect("rm");
        std::fs::write(wal_dir.join("00000000000000000015.wal"), b"").expect("w");
        match load_newest(&snaps, &mut Store::new()) {
            Err(SnapshotError::Corrupt { path, .. }) => assert!(path.ends_with(snapshot_name(20))),
            other => panic!("expected a refusal, got ok={}", other.is_ok()),
        }
    }
}
