//! Reading snapshots back: the footer alone (retention), one file with
//! every check (header, sections, scripts, footer, whole-file CRC), and the
//! newest valid file of a directory. The format is described in the parent
//! module.

use super::*;

/// The footer alone (no CRC check of the file): for retention decisions.
pub(super) fn read_footer(path: &Path) -> Result<Footer, SnapshotError> {
    use std::io::{Seek, SeekFrom};
    let read_err = |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?;
    let len = f.metadata().map_err(read_err)?.len();
    if len < FOOTER_LEN as u64 {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "file shorter than a footer".into(),
        });
    }
    let at = len - FOOTER_LEN as u64;
    f.seek(SeekFrom::Start(at)).map_err(read_err)?;
    let mut b = [0u8; FOOTER_LEN];
    f.read_exact(&mut b).map_err(read_err)?;
    decode_footer(&b).map_err(|reason| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset: at,
        reason,
    })
}

fn decode_footer(b: &[u8]) -> Result<Footer, String> {
    if b.len() != FOOTER_LEN || b[..8] != FOOTER_MAGIC {
        return Err("bad footer magic (the snapshot is incomplete)".into());
    }
    let mut c = Cursor { b, at: 8 };
    Ok(Footer {
        start_lsn: c.u64()?,
        end_lsn: c.u64()?,
        keys: c.u64()?,
        sections: c.u32()?,
        finished_ms: c.u64()?,
    })
}

// ---------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------

pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!(
                "truncated: wanted {n} bytes, {} left",
                self.b.len() - self.at
            ));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(super) fn bytes(&mut self) -> Result<Box<[u8]>, String> {
        let n = self.u32()? as usize;
        Ok(Box::from(self.take(n)?))
    }
    /// An element count, refused when the rest could not hold that many.
    pub(super) fn count(&mut self, min_size: usize) -> Result<usize, String> {
        let n = self.u64()?;
        if n > ((self.b.len() - self.at) / min_size) as u64 {
            return Err(format!("count {n} exceeds the section"));
        }
        Ok(n as usize)
    }
}

pub(super) fn decode_value(c: &mut Cursor<'_>, tag: u8) -> Result<Value, String> {
    Ok(match tag {
        T_STR => Value::Str(c.bytes()?),
        T_HASH => {
            let n = c.count(8)?;
            let mut h = Hash::with_capacity(n);
            for _ in 0..n {
                let f = c.bytes()?;
                h.insert(&f, &c.bytes()?);
            }
            Value::Hash(h)
        }
        T_LIST => {
            let n = c.count(4)?;
            let mut l = std::collections::VecDeque::with_capacity(n);
            for _ in 0..n {
                l.push_back(c.bytes()?);
            }
            Value::List(Box::new(l))
        }
        T_SET => {
            let n = c.count(4)?;
            let mut s = HashSet::with_capacity(n);
            for _ in 0..n {
                s.insert(c.bytes()?);
            }
            Value::Set(Box::new(s))
        }
        T_ZSET => {
            let n = c.count(12)?;
            let mut z = ZSet::with_capacity(n);
            for _ in 0..n {
                let m = c.bytes()?;
                let score = f64::from_bits(c.u64()?);
                if score.is_nan() {
                    return Err("NaN score".into());
                }
                z.insert(&m, score);
            }
            Value::ZSet(z)
        }
        T_STREAM | T_STREAM2 => Value::Stream(Box::new(decode_stream(c, tag == T_STREAM2)?)),
        t => return Err(format!("unknown value type {t}")),
    })
}

/// Reads exactly `buf.len()` bytes, feeding them to the running CRC.
fn read_crc(r: &mut impl Read, buf: &mut [u8], crc: &mut u32) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => {
            *crc = crc32c::crc32c_append(*crc, buf);
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Decodes the body of slot `slot`'s section (its CRC checked) into
/// `store`: the slot's watermark and its number of keys, or the offset in
/// the body where decoding failed and why. Public for the fuzz harness
/// (`fuzz/`): the section is where a snapshot's lengths and counts are read.
pub fn load_section(
    body: &[u8],
    slot: usize,
    store: &mut Store,
) -> Result<(u64, u64), (usize, String)> {
    let mut c = Cursor { b: body, at: 0 };
    let res = (|| {
        let s = c.u16()?;
        if s as usize != slot {
            return Err(format!(
                "section of slot {s} where slot {slot} was expected"
            ));
        }
        let watermark = c.u64()?;
        let n = c.count(13)?;
        for _ in 0..n {
            let key = c.bytes()?;
            let tag = c.u8()?;
            let expire_at = c.u64()?;
            let value = decode_value(&mut c, tag)?;
            store.load(slot as u16, key, value, expire_at);
        }
        if c.at != body.len() {
            return Err(format!(
                "{} trailing bytes in the section",
                body.len() - c.at
            ));
        }
        Ok((watermark, n as u64))
    })();
    res.map_err(|reason| (c.at, reason))
}

/// Decodes the body of a scripts section (its CRC checked) into `reg`; the
/// offset in the body where decoding failed and why. Public for the fuzz
/// harness, as [`load_section`].
pub fn load_scripts_section(
    body: &[u8],
    reg: &mut crate::node::script_registry::ScriptRegistry,
) -> Result<(), (usize, String)> {
    load_scripts(body, reg)
}

/// Loads and validates one snapshot file into `store` (which may hold a
/// partial load when this fails).
pub fn load_file(path: &Path, store: &mut Store) -> Result<Loaded, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(read_err)?;
    let file_len = f.metadata().map_err(read_err)?.len();
    load_from(
        BufReader::with_capacity(CHUNK_BYTES, f),
        file_len,
        path,
        store,
    )
}

/// [`load_file`] on a snapshot held in memory (errors name `<memory>`):
/// the fuzz harness's way into the header, footer and checksum checks.
pub fn load_bytes(data: &[u8], store: &mut Store) -> Result<Loaded, SnapshotError> {
    load_from(data, data.len() as u64, Path::new("<memory>"), store)
}

/// The checks of [`load_file`] on `file_len` bytes read from `r`.
fn load_from(
    mut r: impl Read,
    file_len: u64,
    path: &Path,
    store: &mut Store,
) -> Result<Loaded, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |offset: u64, reason: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut crc = 0u32;
    let mut at = 0u64;

    let mut head = [0u8; 14];
    if !read_crc(&mut r, &mut head, &mut crc).map_err(read_err)? {
        return Err(corrupt(0, "file shorter than a header".into()));
    }
    if head[..8] != MAGIC {
        return Err(corrupt(0, "bad magic (not a tessera snapshot)".into()));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if !(1..=VERSION).contains(&version) {
        return Err(corrupt(
            8,
            format!("unsupported snapshot version {version}"),
        ));
    }
    let id_len = u16::from_le_bytes([head[12], head[13]]) as usize;
    let mut id = vec![0u8; id_len];
    let mut hcrc = [0u8; 4];
    if !read_crc(&mut r, &mut id, &mut crc).map_err(read_err)? {
        return Err(corrupt(14, "header truncated".into()));
    }
    let expected = crc;
    if !read_crc(&mut r, &mut hcrc, &mut crc).map_err(read_err)?
        || u32::from_le_bytes(hcrc) != expected
    {
        return Err(corrupt(0, "header checksum mismatch".into()));
    }
    at += (14 + id_len + 4) as u64;

    let mut watermarks = vec![0u64; SLOTS];
    let mut keys = 0u64;
    let mut body = Vec::new();
    for (slot, watermark) in watermarks.iter_mut().enumerate() {
        let mut prefix = [0u8; 8];
        if !read_crc(&mut r, &mut prefix, &mut crc).map_err(read_err)? {
            return Err(corrupt(
                at,
                format!("file ends before the section of slot {slot}"),
            ));
        }
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let sum = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if len < SECTION_MIN || at + 8 + len as u64 + FOOTER_LEN as u64 > file_len {
            return Err(corrupt(
                at,
                format!("implausible section length {len} for slot {slot}"),
            ));
        }
        body.resize(len, 0);
        if !read_crc(&mut r, &mut body, &mut crc).map_err(read_err)? {
            return Err(corrupt(at, "section truncated".into()));
        }
        if crc32c::crc32c(&body) != sum {
            return Err(corrupt(
                at,
                format!("checksum mismatch in the section of slot {slot}"),
            ));
        }
        match load_section(&body, slot, store) {
            Ok((w, n)) => {
                *watermark = w;
                keys += n;
            }
            Err((offset, reason)) => return Err(corrupt(at + 8 + offset as u64, reason)),
        }
        at += 8 + len as u64;
    }

    if version >= VERSION_SCRIPTS {
        let mut prefix = [0u8; 8];
        if !read_crc(&mut r, &mut prefix, &mut crc).map_err(read_err)? {
            return Err(corrupt(at, "file ends before the scripts section".into()));
        }
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let sum = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        if len < 16 || at + 8 + len as u64 + FOOTER_LEN as u64 > file_len {
            return Err(corrupt(
                at,
                format!("implausible scripts section length {len}"),
            ));
        }
        body.resize(len, 0);
        if !read_crc(&mut r, &mut body, &mut crc).map_err(read_err)? {
            return Err(corrupt(at, "scripts section truncated".into()));
        }
        if crc32c::crc32c(&body) != sum {
            return Err(corrupt(
                at,
                "checksum mismatch in the scripts section".into(),
            ));
        }
        load_scripts(&body, &mut store.scripts)
            .map_err(|(offset, reason)| corrupt(at + 8 + offset as u64, reason))?;
        at += 8 + len as u64;
    }

    let mut fb = [0u8; FOOTER_LEN];
    let before_footer = crc;
    if !read_crc(&mut r, &mut fb, &mut crc).map_err(read_err)? {
        return Err(corrupt(at, "footer truncated".into()));
    }
    let footer = decode_footer(&fb).map_err(|reason| corrupt(at, reason))?;
    let sum = u32::from_le_bytes([fb[44], fb[45], fb[46], fb[47]]);
    if crc32c::crc32c_append(before_footer, &fb[..44]) != sum {
        return Err(corrupt(at, "footer checksum mismatch".into()));
    }
    let min = watermarks.iter().copied().min().unwrap_or(0);
    let max = watermarks.iter().copied().max().unwrap_or(0);
    if footer.sections as usize != SLOTS
        || footer.keys != keys
        || footer.start_lsn != min
        || footer.end_lsn != max
    {
        return Err(corrupt(at, "footer disagrees with the sections".into()));
    }
    if at + FOOTER_LEN as u64 != file_len {
        return Err(corrupt(
            at + FOOTER_LEN as u64,
            "trailing bytes after the footer".into(),
        ));
    }
    Ok(Loaded {
        info: SnapshotInfo {
            path: path.to_path_buf(),
            start_lsn: footer.start_lsn,
            end_lsn: footer.end_lsn,
            keys,
            bytes: file_len,
            finished_at_ms: footer.finished_ms,
            duration_ms: 0,
        },
        watermarks,
    })
}

/// Loads the newest valid snapshot in `dir` into `store`.
///
/// A corrupt newest snapshot is skipped for the previous one only if the log
/// (in the sibling `wal` directory) still reaches back to that one's start
/// LSN; otherwise, and when no snapshot is valid while the log has been
/// truncated, this fails naming the newest corrupt file: refusing to start
/// beats silently losing data.
pub fn load_newest(dir: &Path, store: &mut Store) -> Result<Option<Loaded>, SnapshotError> {
    let snaps = match list_snapshots(dir) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    remove_leftovers(dir);
    if snaps.is_empty() {
        return Ok(None);
    }
    let log_first = dir
        .parent()
        .and_then(|d| wal::first_retained_lsn(&d.join("wal")));
    let mut first_err: Option<SnapshotError> = None;
    for (i, (_, path)) in snaps.iter().rev().enumerate() {
        if i > 0 {
            *store = Store::new();
        }
        match load_file(path, store) {
            Ok(loaded) => {
                if let Some(err) = first_err {
                    let reaches = log_first.is_some_and(|f| f <= loaded.info.start_lsn + 1);
                    if !reaches {
                        *store = Store::new();
                        warn!(path = %path.display(), start_lsn = loaded.info.start_lsn, log_first_lsn = ?log_first, "the older snapshot is valid but the log no longer reaches back to it");
                        return Err(err);
                    }
                    warn!(path = %path.display(), "falling back to an older snapshot; the log covers the difference");
                    // Set the invalid newer ones aside (kept for inspection)
                    // so retention counts only usable snapshots.
                    for (_, bad) in snaps.iter().rev().take(i) {
                        let aside = bad.with_extension("tsnap.corrupt");
                        if let Err(e) = std::fs::rename(bad, &aside) {
                            warn!(path = %bad.display(), error = %e, "failed to set a corrupt snapshot aside");
                        }
                    }
                }
                return Ok(Some(loaded));
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "snapshot invalid; trying an older one");
                first_err.get_or_insert(e);
            }
        }
    }
    *store = Store::new();
    match (log_first, first_err) {
        (Some(f), _) if f <= 1 => {
            warn!("no valid snapshot; replaying the whole log");
            Ok(None)
        }
        (_, Some(err)) => Err(err),
        (_, None) => Ok(None),
    }
}

/// Removes `.tmp` files a crash left behind.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            match std::fs::remove_file(&p) {
                Ok(()) => info!(path = %p.display(), "removed an unfinished snapshot"),
                Err(e) => {
                    warn!(path = %p.display(), error = %e, "failed to remove an unfinished snapshot")
                }
            }
        }
    }
}
