//! The in-memory keyspace.
//!
//! Keys live in one hash map per slot, so per-slot questions (COUNTKEYSINSLOT,
//! GETKEYSINSLOT, moving a slot, snapshotting slot by slot) never scan the
//! whole keyspace.
//!
//! Expiry: keys carry an absolute deadline in milliseconds since the Unix
//! epoch. In [`ExpireMode::Active`] a read of an expired key deletes it and
//! queues a `DEL` for the write-ahead log (so replaying the log or a replica
//! applying it never has to decide about time); the periodic
//! [`Store::active_expire_cycle`] samples volatile keys the same way. While
//! replaying a log or following a primary the store runs in
//! [`ExpireMode::Passive`]: nothing expires by itself, the log says when.
//!
//! Every mutable access to a slot's keys changes that slot's
//! [`SlotStamp`], so a reader that kept a position inside a value between
//! event-loop steps (a migration encoding a big hash) can tell that nothing
//! in the slot changed since.
//!
//! The store never reads the system clock: the server sets [`Store::now_ms`]
//! once per batch of commands, and tests set it to whatever they like.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashSet;

use super::slots::SLOTS;

pub mod hash;
pub mod listpack;
mod slot_map;
mod usage;
pub mod zset;

pub use hash::Hash;
pub use zset::ZSet;

pub type Bytes = Box<[u8]>;

/// Longest key kept inline, without a heap allocation of its own.
const INLINE_KEY: usize = 18;

/// A key: short keys (most keys: `user:1234:name`) live inside the hash
/// table's bucket, so a lookup compares them without another cache miss and
/// they cost no allocation; longer ones live on the heap.
///
/// Each key also carries the entry's access clock (see [`super::evict`]):
/// 24 bits of last access in seconds and an 8-bit logarithmic frequency
/// counter, like Redis' `lru` field. It lives in the key's spare bytes, so
/// the bucket stays 24 + 32 bytes; it is not part of the key's identity.
#[derive(Clone)]
pub struct Key(KeyRepr);

#[derive(Clone)]
enum KeyRepr {
    Inline {
        len: u8,
        buf: [u8; INLINE_KEY],
        clock: Cell<u32>,
    },
    Heap {
        bytes: Box<[u8]>,
        clock: Cell<u32>,
    },
}

// The clock must not cost bucket space.
const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyRepr::Inline { len, buf, .. } => &buf[..*len as usize],
            KeyRepr::Heap { bytes, .. } => bytes,
        }
    }
    fn clock_cell(&self) -> &Cell<u32> {
        match &self.0 {
            KeyRepr::Inline { clock, .. } | KeyRepr::Heap { clock, .. } => clock,
        }
    }
    /// The entry's access clock (see [`super::evict::touch`]).
    pub fn clock(&self) -> u32 {
        self.clock_cell().get()
    }
    pub fn set_clock(&self, v: u32) {
        self.clock_cell().set(v)
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        if b.len() <= INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[..b.len()].copy_from_slice(b);
            Key(KeyRepr::Inline {
                len: b.len() as u8,
                buf,
                clock: Cell::new(0),
            })
        } else {
            Key(KeyRepr::Heap {
                bytes: b.into(),
                clock: Cell::new(0),
            })
        }
    }
}

impl From<Box<[u8]>> for Key {
    fn from(b: Box<[u8]>) -> Self {
        if b.len() <= INLINE_KEY {
            Key::from(&*b)
        } else {
            Key(KeyRepr::Heap {
                bytes: b,
                clock: Cell::new(0),
            })
        }
    }
}

impl From<&Key> for Key {
    fn from(k: &Key) -> Self {
        k.clone()
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Hash and Eq exactly as the byte slice, so `&[u8]` lookups find keys.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes().escape_ascii().to_string())
    }
}

/// A score with a total order (NaN is refused before it gets here). Every
/// comparison goes through `total_cmp`, so equality and order agree (a
/// BTreeSet needs that; -0.0 and 0.0 are distinct here).
#[derive(Debug, Clone, Copy)]
pub struct Score(pub f64);
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A stream entry ID `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// Field/value pairs, flattened.
    pub entries: BTreeMap<StreamId, Vec<Bytes>>,
    pub last_id: StreamId,
    /// Entries ever added (XINFO's `entries-added`; consumer-group lag).
    pub entries_added: u64,
    /// Highest ID XDEL removed (0-0: none): IDs at or below it may have
    /// gaps, so a group's read counter cannot be derived across them.
    pub max_deleted_id: StreamId,
    /// Consumer groups by name, in name order as Redis lists them.
    pub groups: BTreeMap<Bytes, super::groups::Group>,
}

#[derive(Debug, Clone)]
pub enum Value {
    Str(Bytes),
    Hash(Hash),
    List(Box<VecDeque<Bytes>>),
    Set(Box<HashSet<Bytes>>),
    ZSet(ZSet),
    Stream(Box<Stream>),
}

impl Value {
    /// The name TYPE answers with.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }
    /// True for an aggregate that has become empty (Redis deletes those keys).
    pub fn is_empty_aggregate(&self) -> bool {
        match self {
            Value::Str(_) | Value::Stream(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::List(l) => l.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }
}

// Packed encodings must not make every key's entry bigger.
const _: () = assert!(std::mem::size_of::<Value>() == 24);

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Absolute deadline in ms since the Unix epoch; 0 = persistent. Changed
    /// only through [`Store::set_expire`], which keeps the volatile counts.
    expire_at: u64,
}

impl Entry {
    pub fn expire_at(&self) -> u64 {
        self.expire_at
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireMode {
    /// A serving primary: expired keys are deleted and a DEL is logged.
    Active,
    /// Replaying a log or following a primary: the log decides.
    Passive,
}

#[derive(Debug, Default)]
struct SlotDb {
    map: slot_map::SlotMap,
    volatile: usize,
}

/// One slot's keys, moved out of a store whole (see [`Store::take_slot`]).
/// Sendable: a freed slot is dropped on another thread.
pub struct SlotData(SlotDb);

impl SlotData {
    pub fn len(&self) -> usize {
        self.0.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

/// The WRONGTYPE error, as Redis words it.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

/// Which store and which version of one of its slots: equal stamps mean
/// no key of the slot was created, replaced, changed, expired or removed in
/// between (see [`Store::slot_stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStamp {
    store: u64,
    version: u64,
}

/// Distinguishes stores, so a stamp never matches a later store's.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

pub struct Store {
    slots: Vec<SlotDb>,
    id: u64,
    /// Per slot, bumped by every `&mut` access to its keys.
    versions: Vec<u64>,
    keys: usize,
    volatile: usize,
    pub now_ms: u64,
    pub mode: ExpireMode,
    /// Keys deleted by expiry since the last drain: each must be logged as a
    /// DEL before the record of the command that found it.
    expired: Vec<(u16, Key)>,
    pub expired_total: u64,
    /// Round-robin position of the active expiry cycle.
    expire_cursor: usize,
    /// Keys evicted since the last drain (logged as DELs like expired ones).
    pub(super) evicted: Vec<(u16, Key)>,
    pub evicted_total: u64,
    /// Sampling and the LFU counter's coin.
    pub(super) rng: super::evict::Rng,
    /// Eviction candidates kept between evictions, for `pool_policy`.
    pub(super) pool: super::evict::Pool,
    pub(super) pool_policy: super::evict::Policy,
    pub(super) sample_slots: super::evict::SampleSlots,
    /// Loaded scripts and function libraries (replicated and snapshotted
    /// with the keyspace; see `node::script_registry`).
    pub scripts: super::script_registry::ScriptRegistry,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let mut slots = Vec::with_capacity(SLOTS);
        slots.resize_with(SLOTS, SlotDb::default);
        Self {
            slots,
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            versions: vec![0; SLOTS],
            keys: 0,
            volatile: 0,
            now_ms: 0,
            mode: ExpireMode::Active,
            expired: Vec::new(),
            expired_total: 0,
            expire_cursor: 0,
            evicted: Vec::new(),
            evicted_total: 0,
            rng: super::evict::Rng::new(0x9e37_79b9_7f4a_7c15),
            pool: Default::default(),
            pool_policy: Default::default(),
            sample_slots: Default::default(),
            scripts: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys
    }
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }
    pub fn volatile_len(&self) -> usize {
        self.volatile
    }
    pub fn slot_len(&self, slot: u16) -> usize {
        self.slots[slot as usize].map.len()
    }
    pub(super) fn slot_volatile(&self, slot: u16) -> usize {
        self.slots[slot as usize].volatile
    }
    /// The key at position `i` (0..slot_len) of a slot, for sampling.
    pub(super) fn slot_key_at(&self, slot: u16, i: usize) -> Option<(&Key, &Entry)> {
        self.slots[slot as usize].map.at(i)
    }
    pub(super) fn peek_key(&self, slot: u16, key: &[u8]) -> Option<(&Key, &Entry)> {
        self.slots[slot as usize].map.get_key_value(key)
    }

    /// The clock of an access now, and the LFU counter's coin.
    fn access_clock(&mut self) -> (u32, u32) {
        let rnd = self.rng.next_u64() as u32;
        (super::evict::clock_at(self.now_ms), rnd)
    }

    /// Records an access to `key` (for the LRU and LFU policies).
    fn touch_key(&mut self, slot: u16, key: &[u8]) {
        if let Some((k, _)) = self.slots[slot as usize].map.get_key_value(key) {
            let meta = k.clock();
            let rnd = self.rng.next_u64() as u32;
            k.set_clock(super::evict::touched(
                meta,
                super::evict::clock_at(self.now_ms),
                rnd,
            ));
        }
    }

    /// The slot's current stamp. It changes with every method that may
    /// modify, add or remove a key of the slot (including by expiry), so
    /// while it stays the same every value of the slot is untouched: not
    /// freed, not moved, its table not changed.
    pub fn slot_stamp(&self, slot: u16) -> SlotStamp {
        SlotStamp {
            store: self.id,
            version: self.versions[slot as usize],
        }
    }

    /// Every `&mut` path to a slot's keys calls this first.
    fn touch(&mut self, slot: u16) {
        self.versions[slot as usize] += 1;
    }

    fn is_expired(&self, e: &Entry) -> bool {
        self.mode == ExpireMode::Active && e.expire_at != 0 && e.expire_at <= self.now_ms
    }

    /// Deletes `key` if it has expired, queueing its DEL for the log.
    fn expire_if_needed(&mut self, slot: u16, key: &[u8]) {
        if self.mode != ExpireMode::Active {
            return;
        }
        let expired = match self.slots[slot as usize].map.get(key) {
            Some(e) => self.is_expired(e),
            None => false,
        };
        if expired {
            self.remove(slot, key);
            self.expired.push((slot, Key::from(key)));
            self.expired_total += 1;
        }
    }

    /// Keys expired since the last call, oldest first.
    pub fn drain_expired(&mut self) -> std::vec::Drain<'_, (u16, Key)> {
        self.expired.drain(..)
    }
    pub fn has_expired_pending(&self) -> bool {
        !self.expired.is_empty() || !self.evicted.is_empty()
    }

    /// Keys evicted since the last call, oldest first.
    pub fn drain_evicted(&mut self) -> std::vec::Drain<'_, (u16, Key)> {
        self.evicted.drain(..)
    }

    pub fn get(&mut self, slot: u16, key: &[u8]) -> Option<&Entry> {
        // One probe finds the entry, judges its deadline and records the
        // access; only an expired key is looked up again (to delete it).
        let i = self.live_position(slot, key)?;
        let (now, rnd) = self.access_clock();
        let (k, e) = self.slots[slot as usize].map.at(i)?;
        k.set_clock(super::evict::touched(k.clock(), now, rnd));
        Some(e)
    }

    /// Where `key` is in its slot's table, deleting it (and queueing its
    /// DEL) if it has expired.
    fn live_position(&mut self, slot: u16, key: &[u8]) -> Option<usize> {
        let i = self.slots[slot as usize].map.position(key)?;
        let expired = self.slots[slot as usize]
            .map
            .at(i)
            .is_some_and(|(_, e)| self.is_expired(e));
        if expired {
            self.remove(slot, key);
            self.expired.push((slot, Key::from(key)));
            self.expired_total += 1;
            return None;
        }
        Some(i)
    }

    /// The entry at `key` as stored, expired or not, without touching it:
    /// for a command that already looked it up with [`Store::get`] and needs
    /// several entries at once, or for a migration's copy.
    /// Whether `key` exists and has not expired (no side effects).
    pub fn contains_live(&self, slot: u16, key: &[u8]) -> bool {
        self.slots[slot as usize]
            .map
            .get(key)
            .is_some_and(|e| !self.is_expired(e))
    }

    pub fn peek(&self, slot: u16, key: &[u8]) -> Option<&Entry> {
        self.slots[slot as usize].map.get(key)
    }

    pub fn get_mut(&mut self, slot: u16, key: &[u8]) -> Option<&mut Entry> {
        let found = self.live_position(slot, key);
        self.touch(slot);
        let (now, rnd) = self.access_clock();
        let (k, e) = self.slots[slot as usize].map.at_mut(found?)?;
        k.set_clock(super::evict::touched(k.clock(), now, rnd));
        Some(e)
    }

    pub fn contains(&mut self, slot: u16, key: &[u8]) -> bool {
        self.get(slot, key).is_some()
    }

    /// Sets `key` to `value`, replacing whatever was there; `expire_at` 0
    /// makes it persistent. Returns the previous entry.
    pub fn set(&mut self, slot: u16, key: &[u8], value: Value, expire_at: u64) -> Option<Entry> {
        self.touch(slot);
        let fresh = super::evict::fresh(super::evict::clock_at(self.now_ms));
        let rnd = self.rng.next_u64() as u32;
        let now = super::evict::clock_at(self.now_ms);
        let db = &mut self.slots[slot as usize];
        let entry = Entry { value, expire_at };
        // One probe: replacing an expired key is the same as replacing a
        // live one (its DEL need not be logged: this write supersedes it).
        let (k, old) = db.map.upsert(key, || Key::from(key), entry);
        match old {
            Some(_) => k.set_clock(super::evict::touched(k.clock(), now, rnd)),
            None => {
                k.set_clock(fresh);
                self.keys += 1;
            }
        }
        let was_volatile = old.as_ref().is_some_and(|o| o.expire_at != 0);
        let is_volatile = expire_at != 0;
        match (was_volatile, is_volatile) {
            (false, true) => {
                db.volatile += 1;
                self.volatile += 1;
            }
            (true, false) => {
                db.volatile -= 1;
                self.volatile -= 1;
            }
            _ => {}
        }
        // An expired previous value is reported as absent.
        old.filter(|o| {
            !(self.mode == ExpireMode::Active && o.expire_at != 0 && o.expire_at <= self.now_ms)
        })
    }

    /// The value at `key`, created with `make` when absent; `Err(WrongType)`
    /// when `check` refuses the existing value's type.
    pub fn get_or_create(
        &mut self,
        slot: u16,
        key: &[u8],
        check: fn(&Value) -> bool,
        make: fn() -> Value,
    ) -> Result<&mut Value, WrongType> {
        self.expire_if_needed(slot, key);
        self.touch(slot);
        let fresh = super::evict::fresh(super::evict::clock_at(self.now_ms));
        let db = &mut self.slots[slot as usize];
        if !db.map.contains_key(key) {
            let k = Key::from(key);
            k.set_clock(fresh);
            db.map.insert(
                k,
                Entry {
                    value: make(),
                    expire_at: 0,
                },
            );
            self.keys += 1;
        } else {
            self.touch_key(slot, key);
        }
        let db = &mut self.slots[slot as usize];
        let e = db
            .map
            .get_mut(key)
            .expect("the key was inserted just above when absent");
        if check(&e.value) {
            Ok(&mut e.value)
        } else {
            Err(WrongType)
        }
    }

    pub fn remove(&mut self, slot: u16, key: &[u8]) -> Option<Entry> {
        self.touch(slot);
        let db = &mut self.slots[slot as usize];
        let old = db.map.remove(key)?;
        self.keys -= 1;
        if old.expire_at != 0 {
            db.volatile -= 1;
            self.volatile -= 1;
        }
        Some(old)
    }

    /// Deletes `key` when it holds an empty aggregate.
    pub fn remove_if_empty(&mut self, slot: u16, key: &[u8]) {
        let empty = self.slots[slot as usize]
            .map
            .get(key)
            .is_some_and(|e| e.value.is_empty_aggregate());
        if empty {
            self.remove(slot, key);
        }
    }

    /// Sets or clears (0) the deadline of an existing key; false if absent.
    pub fn set_expire(&mut self, slot: u16, key: &[u8], expire_at: u64) -> bool {
        self.expire_if_needed(slot, key);
        self.touch(slot);
        let db = &mut self.slots[slot as usize];
        let Some(e) = db.map.get_mut(key) else {
            return false;
        };
        match (e.expire_at != 0, expire_at != 0) {
            (false, true) => {
                db.volatile += 1;
                self.volatile += 1;
            }
            (true, false) => {
                db.volatile -= 1;
                self.volatile -= 1;
            }
            _ => {}
        }
        e.expire_at = expire_at;
        true
    }

    pub fn flush(&mut self) {
        for v in &mut self.versions {
            *v += 1;
        }
        for db in &mut self.slots {
            db.map = Default::default();
            db.volatile = 0;
        }
        self.keys = 0;
        self.volatile = 0;
    }

    /// Drops every key of one slot (after it has moved elsewhere).
    pub fn flush_slot(&mut self, slot: u16) -> usize {
        self.touch(slot);
        let db = &mut self.slots[slot as usize];
        let n = db.map.len();
        self.keys -= n;
        self.volatile -= db.volatile;
        *db = SlotDb::default();
        n
    }

    /// Moves one slot's keys out (a moved slot freed elsewhere, or an
    /// import's staging committed into the keyspace).
    pub fn take_slot(&mut self, slot: u16) -> SlotData {
        self.touch(slot);
        let db = std::mem::take(&mut self.slots[slot as usize]);
        self.keys -= db.map.len();
        self.volatile -= db.volatile;
        SlotData(db)
    }

    /// Installs a slot's keys taken from another store, replacing (and
    /// returning) whatever the slot held.
    pub fn put_slot(&mut self, slot: u16, data: SlotData) -> SlotData {
        let old = self.take_slot(slot);
        self.keys += data.0.map.len();
        self.volatile += data.0.volatile;
        self.slots[slot as usize] = data.0;
        old
    }

    /// Up to `count` keys of a slot (expired ones included: this is
    /// administration, like Redis' GETKEYSINSLOT).
    pub fn keys_in_slot(&self, slot: u16, count: usize) -> Vec<&[u8]> {
        self.slots[slot as usize]
            .map
            .keys()
            .take(count)
            .map(|k| &**k)
            .collect()
    }

    /// Every entry of one slot, for snapshots.
    pub fn slot_entries(&self, slot: u16) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.slots[slot as usize].map.iter().map(|(k, e)| (&**k, e))
    }

    /// Loads one entry from a snapshot (no expiry checks, no logging).
    pub fn load(&mut self, slot: u16, key: impl Into<Key>, value: Value, expire_at: u64) {
        let key = key.into();
        key.set_clock(super::evict::fresh(super::evict::clock_at(self.now_ms)));
        self.touch(slot);
        let db = &mut self.slots[slot as usize];
        if expire_at != 0 {
            db.volatile += 1;
            self.volatile += 1;
        }
        if let Some(old) = db.map.insert(key, Entry { value, expire_at }) {
            if old.expire_at != 0 {
                db.volatile -= 1;
                self.volatile -= 1;
            }
        } else {
            self.keys += 1;
        }
    }

    /// One step of incremental iteration for SCAN.
    ///
    /// The cursor is `slot << 32 | h`: every key of slots before `slot` has
    /// been returned, and within `slot` every key whose 32-bit CRC is below
    /// `h`. Since the order depends only on the key, a key present for the
    /// whole iteration is returned exactly once, whatever is inserted or
    /// deleted meanwhile (Redis promises "at least once"). `filter` sees each
    /// candidate; returning false skips it without counting.
    pub fn scan(
        &mut self,
        cursor: u64,
        count: usize,
        mut filter: impl FnMut(&[u8], &Value) -> bool,
    ) -> (u64, Vec<Key>) {
        let mut slot = (cursor >> 32) as usize;
        let mut from = (cursor & 0xffff_ffff) as u32;
        let mut out = Vec::new();
        let mut visited = 0usize;
        let now = self.now_ms;
        let active = self.mode == ExpireMode::Active;
        while slot < SLOTS {
            let db = &self.slots[slot];
            if !db.map.is_empty() {
                let mut cands: Vec<(u32, &Key, &Entry)> = db
                    .map
                    .iter()
                    .map(|(k, e)| (crc32c::crc32c(k), k, e))
                    .filter(|(h, _, _)| *h >= from)
                    .collect();
                cands.sort_unstable_by_key(|c| c.0);
                let mut i = 0;
                while i < cands.len() {
                    // Keys sharing a hash are taken together so the cursor
                    // never splits them.
                    let h = cands[i].0;
                    while i < cands.len() && cands[i].0 == h {
                        let (_, k, e) = cands[i];
                        let expired = active && e.expire_at != 0 && e.expire_at <= now;
                        if !expired && filter(k, &e.value) {
                            out.push(k.clone());
                        }
                        visited += 1;
                        i += 1;
                    }
                    if visited >= count && i < cands.len() {
                        let next = cands[i].0;
                        return (((slot as u64) << 32) | next as u64, out);
                    }
                }
            }
            slot += 1;
            from = 0;
            if visited >= count && slot < SLOTS {
                return ((slot as u64) << 32, out);
            }
        }
        (0, out)
    }

    /// Deletes expired keys among a bounded sample of volatile keys, Redis
    /// style: visits slots round-robin, at most `budget` entries, and reports
    /// how many were examined and how many expired (a caller repeats while the
    /// expired share stays high). Deleted keys are queued for the log.
    pub fn active_expire_cycle(&mut self, budget: usize) -> (usize, usize) {
        if self.mode != ExpireMode::Active || self.volatile == 0 {
            return (0, 0);
        }
        let mut examined = 0;
        let mut victims: Vec<(u16, Key)> = Vec::new();
        let mut slots_seen = 0;
        while examined < budget && slots_seen < SLOTS {
            let slot = self.expire_cursor;
            self.expire_cursor = (self.expire_cursor + 1) % SLOTS;
            slots_seen += 1;
            let db = &self.slots[slot];
            if db.volatile == 0 {
                continue;
            }
            for (k, e) in db.map.iter() {
                if e.expire_at != 0 {
                    examined += 1;
                    if e.expire_at <= self.now_ms {
                        victims.push((slot as u16, k.clone()));
                    }
                }
            }
        }
        let n = victims.len();
        for (slot, key) in victims {
            self.remove(slot, &key);
            self.expired.push((slot, key));
            self.expired_total += 1;
        }
        (examined, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.as_bytes().into())
    }

    #[test]
    fn lazy_expiry_with_paused_time_queues_a_del() {
        let mut st = Store::new();
        st.now_ms = 1_000;
        st.set(7, b"k", s("v"), 1_500);
        assert_eq!(st.volatile_len(), 1);
        st.now_ms = 1_499;
        assert!(st.get(7, b"k").is_some());
        assert!(!st.has_expired_pending());
        st.now_ms = 1_500;
        assert!(st.get(7, b"k").is_none());
        let expired: Vec<_> = st.drain_expired().collect();
        assert_eq!(expired, vec![(7u16, Key::from(&b"k"[..]))]);
        assert_eq!(st.len(), 0);
        assert_eq!(st.volatile_len(), 0);
    }

    #[test]
    fn every_change_to_a_slot_changes_its_stamp_and_reads_do_not() {
        let mut st = Store::new();
        st.now_ms = 1_000;
        let mut last = st.slot_stamp(7);
        let mut changed = |st: &Store, what: &str| {
            let now = st.slot_stamp(7);
            assert_ne!(now, last, "{what}");
            last = now;
        };
        st.set(7, b"k", s("v"), 0);
        changed(&st, "set");
        st.get_mut(7, b"k");
        changed(&st, "get_mut");
        let _ = st.get_or_create(7, b"h", |_| true, || Value::Hash(Default::default()));
        changed(&st, "get_or_create");
        st.set_expire(7, b"k", 1_500);
        changed(&st, "set_expire");
        st.now_ms = 2_000;
        assert!(st.get(7, b"k").is_none());
        changed(&st, "expiry on read");
        st.remove_if_empty(7, b"h");
        changed(&st, "remove");
        st.load(7, &b"l"[..], s("v"), 0);
        changed(&st, "load");
        let data = st.take_slot(7);
        changed(&st, "take_slot");
        st.put_slot(7, data);
        changed(&st, "put_slot");
        st.flush_slot(7);
        changed(&st, "flush_slot");
        st.flush();
        changed(&st, "flush");
        st.set(7, b"k", s("v"), 0);
        let before = st.slot_stamp(7);
        assert!(st.get(7, b"k").is_some());
        assert!(st.peek(7, b"k").is_some());
        st.set(8, b"k", s("v"), 0);
        assert_eq!(st.slot_stamp(7), before, "reads, and writes to other slots");
        assert_ne!(Store::new().slot_stamp(7), Store::new().slot_stamp(7));
    }

    #[test]
    fn passive_mode_never_expires_by_itself() {
        let mut st = Store::new();
        st.mode = ExpireMode::Passive;
        st.now_ms = 10_000;
        st.set(1, b"k", s("v"), 5);
        assert!(st.get(1, b"k").is_some());
        assert_eq!(st.active_expire_cycle(100), (0, 0));
        st.mode = ExpireMode::Active;
        assert!(st.get(1, b"k").is_none());
    }

    #[test]
    fn active_cycle_removes_only_due_keys() {
        let mut st = Store::new();
        st.now_ms = 100;
        for i in 0..50u32 {
            let key = format!("k{i}");
            let at = if i % 2 == 0 { 150 } else { 0 };
            st.set((i % 5) as u16, key.as_bytes(), s("v"), at);
        }
        st.set(9, b"later", s("v"), 10_000);
        st.now_ms = 200;
        let mut removed = 0;
        for _ in 0..10 {
            removed += st.active_expire_cycle(1_000).1;
        }
        assert_eq!(removed, 25);
        assert_eq!(st.len(), 26);
        assert_eq!(st.volatile_len(), 1);
        assert_eq!(st.drain_expired().count(), 25);
    }

    #[test]
    fn scan_returns_every_key_once_despite_inserts() {
        let mut st = Store::new();
        for i in 0..1000u32 {
            let k = format!("key:{i}");
            st.set(
                super::super::slots::key_slot(k.as_bytes()),
                k.as_bytes(),
                s("v"),
                0,
            );
        }
        let mut seen = std::collections::HashMap::new();
        let mut cursor = 0;
        let mut extra = 0u32;
        loop {
            let (next, keys) = st.scan(cursor, 10, |_, _| true);
            for k in keys {
                *seen.entry(k).or_insert(0) += 1;
            }
            // Inserting during the scan must not make old keys repeat or vanish.
            let k = format!("new:{extra}");
            extra += 1;
            st.set(
                super::super::slots::key_slot(k.as_bytes()),
                k.as_bytes(),
                s("v"),
                0,
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..1000u32 {
            let k = Key::from(format!("key:{i}").as_bytes());
            assert_eq!(seen.get(&k), Some(&1), "key:{i}");
        }
    }

    #[test]
    fn get_or_create_checks_type() {
        let mut st = Store::new();
        st.set(0, b"s", s("x"), 0);
        let r = st.get_or_create(
            0,
            b"s",
            |v| matches!(v, Value::Hash(_)),
            || Value::Hash(Default::default()),
        );
        assert_eq!(r.err(), Some(WrongType));
        let h = st
            .get_or_create(
                0,
                b"h",
                |v| matches!(v, Value::Hash(_)),
                || Value::Hash(Default::default()),
            )
            .unwrap();
        assert!(h.is_empty_aggregate());
        st.remove_if_empty(0, b"h");
        assert_eq!(st.len(), 1);
    }
}
