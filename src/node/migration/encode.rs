//! A key as the write commands that rebuild it, big collections split into
//! commands of at most [`CHUNK_ELEMS`] elements / about [`CHUNK_BYTES`]
//! bytes, so no single command (or log record at the target) holds a whole
//! large collection (the MIGRATE/DUMP big-key failures of Redis Cluster).

use std::ops::Bound;

use hashbrown::{hash_map, hash_set};

use crate::node::cmd::stream_log::Ops;
use crate::node::resp::encode_command;
use crate::node::store::{Bytes, Entry, Hash, Score, SlotStamp, Stream, StreamId, Value};

pub const CHUNK_ELEMS: usize = 256;
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Appends commands to `out` in element chunks.
struct Chunker<'a> {
    out: &'a mut Vec<u8>,
    ends: &'a mut Vec<usize>,
    head: [&'a [u8]; 2],
    args: Vec<&'a [u8]>,
    bytes: usize,
    elems: usize,
    commands: usize,
}

impl<'a> Chunker<'a> {
    fn new(out: &'a mut Vec<u8>, ends: &'a mut Vec<usize>, cmd: &'a [u8], key: &'a [u8]) -> Self {
        Self {
            out,
            ends,
            head: [cmd, key],
            args: Vec::new(),
            bytes: 0,
            elems: 0,
            commands: 0,
        }
    }
    fn push(&mut self, elem: &[&'a [u8]]) {
        self.args.extend_from_slice(elem);
        self.bytes += elem.iter().map(|e| e.len()).sum::<usize>();
        self.elems += 1;
        if self.elems >= CHUNK_ELEMS || self.bytes >= CHUNK_BYTES {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.args.is_empty() {
            return;
        }
        let mut all: Vec<&[u8]> = Vec::with_capacity(2 + self.args.len());
        all.extend_from_slice(&self.head);
        all.append(&mut self.args);
        encode_command(&all, self.out);
        self.ends.push(self.out.len());
        self.bytes = 0;
        self.elems = 0;
        self.commands += 1;
    }
}

/// The next `take` elements of a hash or set as HSET / SADD commands.
fn table_part(
    key: &[u8],
    t: Table<'_>,
    stamp: Option<SlotStamp>,
    cursor: &mut Cursor,
    take: usize,
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    let cmd: &[u8] = match t {
        Table::Hash(_) => b"HSET",
        Table::Set(_) => b"SADD",
    };
    // The items live only in this function (the chunker's commands are
    // written out by its last flush).
    let mut c = Chunker::new(out, ends, cmd, key);
    for (m, v) in cursor.table_iter(t, stamp).take(take) {
        match v {
            Some(v) => c.push(&[&m[..], &v[..]]),
            None => c.push(&[&m[..]]),
        }
    }
    c.flush();
}

/// Formats a score so that parsing it gives the same f64 (Rust's shortest
/// round-trip form; "inf"/"-inf" as Redis parses them).
fn score_text(s: f64) -> String {
    format!("{s}")
}

/// Elements of a value (a string is one).
pub fn elements(e: &Entry) -> usize {
    match &e.value {
        Value::Str(_) => 1,
        Value::Hash(h) => h.len(),
        Value::List(l) => l.len(),
        Value::Set(s) => s.len(),
        Value::ZSet(z) => z.len(),
        Value::Stream(st) => st.entries.len(),
    }
}

/// Appends the commands that rebuild `key` to `out`, and the offset where
/// each ends to `ends` (a sender splits batches there); returns how many.
pub fn entry_commands(key: &[u8], e: &Entry, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> usize {
    let before = ends.len();
    entry_commands_part(key, e, None, &mut Cursor::default(), usize::MAX, out, ends);
    ends.len() - before
}

/// Where the encoding of one key stopped. Ordered values (sorted sets,
/// streams) resume after their last element sent, so each part costs
/// O(log n + part); a list resumes at its position (O(1)); a hash or set
/// keeps its table iterator between parts (O(part)) while its slot's
/// stamp shows nothing changed, and walks the table again otherwise.
#[derive(Default)]
pub struct Cursor {
    /// Elements taken so far.
    pub taken: usize,
    zset_last: Option<(Score, Bytes)>,
    stream_last: Option<StreamId>,
    table: Option<TablePos>,
    /// Times a hash's or set's table was walked from its start to resume.
    pub rewalks: usize,
}

/// A hash's or set's table iterator, with its lifetime erased so that it
/// outlives the store borrow of one part (see [`Cursor::table_iter`]).
enum TableIter {
    Hash(hash_map::Iter<'static, Bytes, Bytes>),
    Set(hash_set::Iter<'static, Bytes>),
}

impl Iterator for TableIter {
    /// A field and its value, or a member.
    type Item = (&'static Bytes, Option<&'static Bytes>);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Hash(it) => it.next().map(|(f, v)| (f, Some(v))),
            Self::Set(it) => it.next().map(|m| (m, None)),
        }
    }
}

struct TablePos {
    iter: TableIter,
    /// The value's address and its slot's stamp when `iter` was made.
    value: usize,
    stamp: Option<SlotStamp>,
}

/// A hash or a set, the values whose parts resume in their table.
#[derive(Clone, Copy)]
enum Table<'v> {
    Hash(&'v hashbrown::HashMap<Bytes, Bytes>),
    Set(&'v hashbrown::HashSet<Bytes>),
}

impl Cursor {
    /// The iterator of table `t` (of a slot whose stamp is now `stamp`)
    /// past the `taken` elements already encoded: the one kept from the
    /// previous part when the slot's stamp and the value's address are
    /// unchanged, else a new one walked up to there. Its items must not be
    /// kept beyond the borrow of `t`.
    fn table_iter(&mut self, t: Table<'_>, stamp: Option<SlotStamp>) -> &mut TableIter {
        let addr = match t {
            Table::Hash(h) => h as *const _ as usize,
            Table::Set(s) => s as *const _ as usize,
        };
        let kept = matches!(&self.table, Some(p) if p.stamp.is_some() && p.stamp == stamp && p.value == addr);
        if !kept {
            self.table = None;
        }
        let (taken, rewalks) = (self.taken, &mut self.rewalks);
        let pos = self.table.get_or_insert_with(|| {
            let mut iter = table_iter_static(t);
            if taken > 0 {
                *rewalks += 1;
                iter.nth(taken - 1);
            }
            TablePos {
                iter,
                value: addr,
                stamp,
            }
        });
        &mut pos.iter
    }
}

/// A new iterator over `t` with its lifetime erased.
fn table_iter_static(t: Table<'_>) -> TableIter {
    // SAFETY (both transmutes change only the lifetime): the iterator is
    // used while `t` is borrowed, and in a later part only if the slot's
    // stamp and the value's address are still those it was made under
    // (`Cursor::table_iter`). The store changes a slot's stamp on every
    // mutable access to its keys, so the table is then still allocated,
    // unmoved and unmodified. (During a migration writes to the slot wait
    // while it is encoded: the stamp changes only if a key of the slot
    // expires.) Dropping the iterator does not touch the table.
    match t {
        Table::Hash(h) => TableIter::Hash(unsafe {
            std::mem::transmute::<
                hash_map::Iter<'_, Bytes, Bytes>,
                hash_map::Iter<'static, Bytes, Bytes>,
            >(h.iter())
        }),
        Table::Set(s) => TableIter::Set(unsafe {
            std::mem::transmute::<hash_set::Iter<'_, Bytes>, hash_set::Iter<'static, Bytes>>(
                s.iter(),
            )
        }),
    }
}

/// Like [`entry_commands`] for the next `max` elements of the value after
/// `cursor`; the stream's last ID and the expiry follow the last part.
/// `stamp` is the key's slot's stamp now (None: no part follows). The
/// caller keeps the slot unchanged between parts (writes to it wait while
/// it is encoded); if the stamp changes anyway (a key of the slot expired),
/// a hash or set resumes by walking its table. Returns whether the key is
/// complete.
pub fn entry_commands_part(
    key: &[u8],
    e: &Entry,
    stamp: Option<SlotStamp>,
    cursor: &mut Cursor,
    max: usize,
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> bool {
    let total = elements(e);
    let skip = cursor.taken;
    let take = max.min(total.saturating_sub(skip));
    match &e.value {
        Value::Str(s) => {
            if take > 0 {
                encode_command(&[b"SET", key, &s[..]], out);
                ends.push(out.len());
            }
        }
        Value::Hash(Hash::Table(h)) => {
            table_part(key, Table::Hash(h), stamp, cursor, take, out, ends)
        }
        // Small (packed): walking to the position costs little.
        Value::Hash(h @ Hash::Packed(_)) => {
            let mut c = Chunker::new(out, ends, b"HSET", key);
            for (f, v) in h.iter().skip(skip).take(take) {
                c.push(&[f, v]);
            }
            c.flush();
        }
        Value::Set(st) => table_part(key, Table::Set(st), stamp, cursor, take, out, ends),
        Value::List(l) => {
            let mut c = Chunker::new(out, ends, b"RPUSH", key);
            for x in l.range(skip..skip + take) {
                c.push(&[x]);
            }
            c.flush();
        }
        Value::ZSet(z) => {
            let last = cursor.zset_last.take();
            let part: Vec<(&[u8], f64)> = z
                .iter_after(last.as_ref().map(|(s, m)| (*s, &m[..])))
                .take(take)
                .collect();
            cursor.zset_last = part.last().map(|&(m, sc)| (Score(sc), Bytes::from(m)));
            let texts: Vec<String> = part.iter().map(|&(_, sc)| score_text(sc)).collect();
            let mut c = Chunker::new(out, ends, b"ZADD", key);
            for (t, (m, _)) in texts.iter().zip(&part) {
                c.push(&[t.as_bytes(), m]);
            }
            c.flush();
        }
        Value::Stream(st) => {
            // One XADD per entry with its explicit ID, in ID order.
            let from = match cursor.stream_last {
                Some(last) => Bound::Excluded(last),
                None => Bound::Unbounded,
            };
            for (id, fields) in st.entries.range((from, Bound::Unbounded)).take(take) {
                let text = format!("{}-{}", id.ms, id.seq);
                let mut args: Vec<&[u8]> = vec![b"XADD", key, text.as_bytes()];
                args.extend(fields.iter().map(|f| &f[..]));
                encode_command(&args, out);
                ends.push(out.len());
                cursor.stream_last = Some(*id);
            }
        }
    }
    cursor.taken += take;
    let done = cursor.taken >= total;
    if done {
        if let Value::Stream(st) = &e.value {
            stream_state(key, st, out, ends);
        }
    }
    // An empty stream is a key too (other empty values do not exist).
    let exists = total > 0 || matches!(e.value, Value::Stream(_));
    if done && e.expire_at() != 0 && exists {
        let at = e.expire_at().to_string();
        encode_command(&[b"PEXPIREAT", key, at.as_bytes()], out);
        ends.push(out.len());
    }
    done
}

/// What XADD cannot rebuild: a stream's last ID, counters and consumer
/// groups, as TXSTREAM commands (their PELs in chunks).
fn stream_state(key: &[u8], st: &Stream, out: &mut Vec<u8>, ends: &mut Vec<usize>) {
    let mut emit = |ops: &mut Ops| {
        if let Some(args) = ops.command(key) {
            encode_command(&args, out);
            ends.push(out.len());
        }
        *ops = Ops::default();
    };
    let mut ops = Ops::default();
    ops.meta(st);
    for (name, g) in &st.groups {
        ops.group(name, g);
    }
    emit(&mut ops);
    let mut n = 0;
    for (name, g) in &st.groups {
        for (cname, c) in &g.consumers {
            ops.consumer(name, cname, c.seen_time);
            n += 1;
            if n % CHUNK_ELEMS == 0 {
                emit(&mut ops);
            }
        }
        for (id, p) in &g.pel {
            ops.pending(name, *id, p);
            n += 1;
            if n % CHUNK_ELEMS == 0 {
                emit(&mut ops);
            }
        }
    }
    emit(&mut ops);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::resp::{parse_request, Parsed};
    use crate::node::store::Store;

    fn commands(buf: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut ranges = Vec::new();
        while at < buf.len() {
            match parse_request(&buf[at..], &mut ranges).expect("valid RESP") {
                Parsed::Command(used) => {
                    out.push(
                        ranges
                            .iter()
                            .map(|r| buf[at..][r.clone()].to_vec())
                            .collect(),
                    );
                    at += used;
                }
                _ => panic!("incomplete"),
            }
        }
        out
    }

    #[test]
    fn a_big_set_is_sent_in_element_chunks() {
        let mut st = Store::new();
        let mut set = hashbrown::HashSet::new();
        for i in 0..1000u32 {
            set.insert(format!("m{i}").into_bytes().into_boxed_slice());
        }
        st.set(3, b"s", Value::Set(Box::new(set)), 4_000_000_000_000);
        let (k, e) = st.slot_entries(3).next().expect("one key");
        let (mut buf, mut ends) = (Vec::new(), Vec::new());
        let n = entry_commands(k, e, &mut buf, &mut ends);
        let cmds = commands(&buf);
        assert_eq!(n, cmds.len());
        assert_eq!(ends.len(), n);
        assert_eq!(ends.last().copied(), Some(buf.len()));
        assert_eq!(cmds.len(), 1000usize.div_ceil(CHUNK_ELEMS) + 1);
        assert!(cmds.iter().all(|c| c.len() <= 2 + CHUNK_ELEMS));
        assert_eq!(cmds.last().expect("expiry")[0], b"PEXPIREAT");
    }

    #[test]
    fn a_key_encoded_in_parts_equals_the_key_encoded_whole() {
        let mut st = Store::new();
        let mut z = crate::node::store::ZSet::default();
        for i in 0..1000u32 {
            z.insert(format!("m{i}").as_bytes(), i as f64 / 3.0);
        }
        st.set(9, b"z", Value::ZSet(z), 5_000_000_000_000);
        let (k, e) = st.slot_entries(9).next().expect("one key");
        let (mut whole, mut ends) = (Vec::new(), Vec::new());
        entry_commands(k, e, &mut whole, &mut ends);
        let mut parts = Vec::new();
        let mut cursor = Cursor::default();
        while !entry_commands_part(k, e, None, &mut cursor, 300, &mut parts, &mut ends) {}
        let flat = |b: &[u8]| -> Vec<Vec<u8>> {
            commands(b)
                .into_iter()
                .flat_map(|c| c.into_iter().skip(2))
                .collect()
        };
        assert_eq!(flat(&parts), flat(&whole));
        assert_eq!(cursor.taken, 1000);
    }

    /// Encodes `key` of `slot` in parts of 300 elements as a migration
    /// does (a fresh look-up and the slot's stamp each part), calling
    /// `between` after each part but the last.
    fn in_parts(
        st: &mut Store,
        slot: u16,
        key: &[u8],
        mut between: impl FnMut(&mut Store),
    ) -> (Vec<u8>, Cursor) {
        let (mut out, mut ends, mut cursor) = (Vec::new(), Vec::new(), Cursor::default());
        loop {
            let e = st.peek(slot, key).expect("the key");
            let stamp = Some(st.slot_stamp(slot));
            if entry_commands_part(key, e, stamp, &mut cursor, 300, &mut out, &mut ends) {
                return (out, cursor);
            }
            between(st);
        }
    }

    fn elements_of(buf: &[u8]) -> Vec<Vec<u8>> {
        commands(buf)
            .into_iter()
            .filter(|c| c[0] != b"PEXPIREAT")
            .flat_map(|c| c.into_iter().skip(2))
            .collect()
    }

    fn big_hash_and_set(st: &mut Store) {
        let mut h = Hash::default();
        let mut set = hashbrown::HashSet::new();
        for i in 0..5000u32 {
            h.insert(format!("f{i}").as_bytes(), format!("{i}").as_bytes());
            set.insert(format!("m{i}").into_bytes().into());
        }
        st.set(4, b"h", Value::Hash(h), 0);
        st.set(4, b"s", Value::Set(Box::new(set)), 0);
    }

    #[test]
    fn a_hash_and_a_set_in_parts_resume_their_table_without_walking_it_again() {
        let mut st = Store::new();
        big_hash_and_set(&mut st);
        for key in [&b"h"[..], b"s"] {
            let (mut whole, mut ends) = (Vec::new(), Vec::new());
            entry_commands(key, st.peek(4, key).expect("key"), &mut whole, &mut ends);
            // Reads and writes elsewhere between parts leave the slot as it was.
            let (parts, cursor) = in_parts(&mut st, 4, key, |st| {
                assert!(st.get(4, b"h").is_some());
                st.set(5, b"other", Value::Str(b"v".to_vec().into()), 0);
            });
            assert_eq!(elements_of(&parts), elements_of(&whole));
            assert_eq!(cursor.taken, 5000);
            assert_eq!(cursor.rewalks, 0, "each part went on from the last");
        }
    }

    #[test]
    fn a_hash_whose_slot_changed_between_parts_resumes_by_walking_its_table() {
        let mut st = Store::new();
        big_hash_and_set(&mut st);
        let (mut whole, mut ends) = (Vec::new(), Vec::new());
        entry_commands(b"h", st.peek(4, b"h").expect("key"), &mut whole, &mut ends);
        let mut n = 0;
        // Another key of the slot written (as an expiry would delete one).
        let (parts, cursor) = in_parts(&mut st, 4, b"h", |st| {
            n += 1;
            if n == 3 {
                st.set(4, b"other", Value::Str(b"v".to_vec().into()), 0);
            }
        });
        let mut got = elements_of(&parts);
        assert_eq!(got.len(), 10_000);
        assert_eq!(got, elements_of(&whole));
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 10_000, "every field and value once");
        assert_eq!(cursor.rewalks, 1);
    }

    #[test]
    fn scores_round_trip() {
        for s in [0.1, -0.0, 1e300, f64::INFINITY, f64::NEG_INFINITY, 3.0] {
            let t = score_text(s);
            let back = crate::node::cmd::parse_f64(t.as_bytes()).expect("parses");
            assert_eq!(back.to_bits(), s.to_bits(), "{t}");
        }
    }
}
