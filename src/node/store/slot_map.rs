//! One slot's keys: a dense array of `(key, entry)` pairs and a hash index
//! of 32-bit positions into it.
//!
//! Why not a `HashMap<Key, Entry>`: its buckets hold the pair itself (56
//! bytes), and its bucket count is a power of two at most 7/8 full. With
//! keys spread evenly over 16384 slots every slot's table doubles at about
//! the same key count, so right after a doubling the whole keyspace sits at
//! 44% load: ~120 bytes of table per key. Here the pairs are packed (grown
//! by a quarter at a time, so at least ~80% full) and only the index's
//! 4-byte positions are spread out: ~75 bytes per key at any load.
//!
//! A removal moves the last pair into the hole (one index update), so
//! positions are not stable: nothing outside keeps them.

use std::hash::BuildHasher;
use std::sync::LazyLock;

use hashbrown::HashTable;

use super::{Entry, Key};

/// One hasher for every slot of every store: a slot's data moves between
/// stores whole (an import's staging into the keyspace), index included.
/// Seeded at random per process, like Redis' siphash seed.
static HASHER: LazyLock<hashbrown::DefaultHashBuilder> = LazyLock::new(Default::default);

fn hash(key: &[u8]) -> u64 {
    HASHER.hash_one(key)
}

#[derive(Default)]
pub(super) struct SlotMap {
    index: HashTable<u32>,
    pairs: Vec<(Key, Entry)>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("len", &self.pairs.len())
            .finish()
    }
}

impl SlotMap {
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Where `key` is (0..len), valid until the next insert or removal.
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        let pairs = &self.pairs;
        self.index
            .find(hash(key), |&i| pairs[i as usize].0.as_bytes() == key)
            .map(|&i| i as usize)
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.position(key).map(|i| &self.pairs[i].1)
    }
    pub fn get_key_value(&self, key: &[u8]) -> Option<(&Key, &Entry)> {
        self.position(key).map(|i| {
            let (k, e) = &self.pairs[i];
            (k, e)
        })
    }
    pub fn get_key_value_mut(&mut self, key: &[u8]) -> Option<(&Key, &mut Entry)> {
        let i = self.position(key)?;
        let (k, e) = &mut self.pairs[i];
        Some((&*k, e))
    }
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.get_key_value_mut(key).map(|(_, e)| e)
    }
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }
    /// The pair at a position (0..len).
    pub fn at(&self, i: usize) -> Option<(&Key, &Entry)> {
        self.pairs.get(i).map(|(k, e)| (k, e))
    }
    pub fn at_mut(&mut self, i: usize) -> Option<(&Key, &mut Entry)> {
        self.pairs.get_mut(i).map(|(k, e)| (&*k, e))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> + Clone {
        self.pairs.iter().map(|(k, e)| (k, e))
    }
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.pairs.iter().map(|(k, _)| k)
    }

    /// Room for one more pair: a quarter more at a time (not double), so
    /// the array stays mostly full.
    fn grow_pairs(&mut self) {
        if self.pairs.len() == self.pairs.capacity() {
            let more = (self.pairs.len() / 4).max(4);
            self.pairs.reserve_exact(more);
        }
    }

    /// Puts `entry` at `key`: returns the key as stored and the entry it
    /// replaced (None: `make_key` made a new key).
    pub fn upsert(
        &mut self,
        key: &[u8],
        make_key: impl FnOnce() -> Key,
        entry: Entry,
    ) -> (&Key, Option<Entry>) {
        let h = hash(key);
        let pairs = &self.pairs;
        if let Some(&i) = self
            .index
            .find(h, |&i| pairs[i as usize].0.as_bytes() == key)
        {
            let (k, e) = &mut self.pairs[i as usize];
            return (&*k, Some(std::mem::replace(e, entry)));
        }
        let i = self.push(h, make_key(), entry);
        (&self.pairs[i].0, None)
    }

    /// Inserts a pair whose key is known to be absent; returns its position.
    fn push(&mut self, h: u64, key: Key, entry: Entry) -> usize {
        let i = self.pairs.len();
        let pos = u32::try_from(i).expect("fewer than 2^32 keys in one slot");
        self.grow_pairs();
        self.pairs.push((key, entry));
        let pairs = &self.pairs;
        self.index
            .insert_unique(h, pos, |&j| hash(pairs[j as usize].0.as_bytes()));
        i
    }

    pub fn insert(&mut self, key: Key, entry: Entry) -> Option<Entry> {
        let h = hash(key.as_bytes());
        let pairs = &self.pairs;
        if let Some(&i) = self
            .index
            .find(h, |&i| pairs[i as usize].0.as_bytes() == key.as_bytes())
        {
            return Some(std::mem::replace(&mut self.pairs[i as usize].1, entry));
        }
        self.push(h, key, entry);
        None
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let pairs = &self.pairs;
        let found = self
            .index
            .find_entry(hash(key), |&i| pairs[i as usize].0.as_bytes() == key)
            .ok()?;
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.pairs.len() - 1;
        if i != last {
            // The last pair fills the hole: its index entry follows it.
            let h = hash(self.pairs[last].0.as_bytes());
            if let Some(p) = self.index.find_mut(h, |&j| j as usize == last) {
                *p = i as u32;
            }
        }
        let (_, entry) = self.pairs.swap_remove(i);
        self.shrink_if_sparse();
        Some(entry)
    }

    /// Gives memory back once three quarters of it are unused (a slot that
    /// was emptied by deletes or eviction).
    fn shrink_if_sparse(&mut self) {
        let len = self.pairs.len();
        if self.pairs.capacity() > 16 && len < self.pairs.capacity() / 4 {
            self.pairs.shrink_to(len + len / 4);
        }
        if self.index.capacity() > 16 && len < self.index.capacity() / 4 {
            let pairs = &self.pairs;
            self.index
                .shrink_to(len, |&j| hash(pairs[j as usize].0.as_bytes()));
        }
    }

    /// Bytes of table this map holds per pair it could hold (for MEMORY
    /// USAGE): the pair, plus its index slot at the index's 7/8 load.
    pub fn bytes_per_pair() -> usize {
        std::mem::size_of::<(Key, Entry)>() + (std::mem::size_of::<u32>() + 1) * 8 / 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::store::Value;

    fn entry(n: u8) -> Entry {
        Entry {
            value: Value::Str(vec![n].into_boxed_slice()),
            expire_at: 0,
        }
    }
    fn val(e: &Entry) -> u8 {
        match &e.value {
            Value::Str(b) => b[0],
            _ => unreachable!(),
        }
    }

    #[test]
    fn removals_move_the_last_pair_and_every_key_stays_findable() {
        let mut m = SlotMap::default();
        for n in 0..200u8 {
            assert!(m.insert(Key::from(&[b'k', n][..]), entry(n)).is_none());
        }
        // Remove every third key, in an order that moves many pairs.
        for n in (0..200u8).step_by(3) {
            let e = m.remove(&[b'k', n]).expect("present");
            assert_eq!(val(&e), n);
        }
        assert!(m.remove(b"k\x00").is_none());
        for n in 0..200u8 {
            let got = m.get(&[b'k', n]).map(val);
            assert_eq!(got, (n % 3 != 0).then_some(n), "key {n}");
        }
        assert_eq!(m.len(), 200 - 67);
        assert_eq!(m.iter().count(), m.len());
    }

    #[test]
    fn upsert_replaces_in_place_and_reports_a_new_key() {
        let mut m = SlotMap::default();
        let (_, old) = m.upsert(b"a", || Key::from(&b"a"[..]), entry(1));
        assert!(old.is_none());
        let (k, old) = m.upsert(b"a", || unreachable!("the key exists"), entry(2));
        assert_eq!(k.as_bytes(), b"a");
        assert_eq!(old.map(|e| val(&e)), Some(1));
        assert_eq!(m.get(b"a").map(val), Some(2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn an_emptied_map_gives_its_memory_back() {
        let mut m = SlotMap::default();
        for n in 0..10_000u32 {
            m.insert(Key::from(&n.to_be_bytes()[..]), entry(0));
        }
        let full = m.pairs.capacity();
        for n in 0..9_990u32 {
            m.remove(&n.to_be_bytes()).expect("present");
        }
        assert!(
            m.pairs.capacity() < full / 10,
            "{} of {full}",
            m.pairs.capacity()
        );
        assert!(m.index.capacity() < 1000);
        for n in 9_990..10_000u32 {
            assert!(m.contains_key(&n.to_be_bytes()));
        }
    }

    #[test]
    fn the_pairs_array_grows_by_a_quarter() {
        let mut m = SlotMap::default();
        for n in 0..1000u32 {
            m.insert(Key::from(&n.to_be_bytes()[..]), entry(0));
            assert!(m.pairs.capacity() * 4 <= (m.len().max(16)) * 5 + 20);
        }
    }
}
