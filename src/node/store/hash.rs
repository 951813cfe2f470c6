//! A hash value in one of its two encodings: packed field/value pairs
//! (small hashes, [`super::listpack`]) or a hash table. A hash starts
//! packed and becomes a table when it gets more pairs than
//! `hash-max-listpack-entries` or a field or value longer than
//! `hash-max-listpack-value`; it never goes back (as in Redis).

use hashbrown::HashMap;

use super::listpack::{self, Elems, Limits};
use super::Bytes;

#[derive(Debug, Clone)]
pub enum Hash {
    /// Field, value, field, value… in insertion order.
    Packed(Box<[u8]>),
    Table(Box<HashMap<Bytes, Bytes>>),
}

impl Default for Hash {
    fn default() -> Self {
        Hash::Packed(Box::default())
    }
}

/// Where a field's pair lies in a packed buffer, and its value.
struct Found<'a> {
    start: usize,
    value_at: usize,
    end: usize,
    value: &'a [u8],
}

fn find<'a>(buf: &'a [u8], field: &[u8]) -> Option<Found<'a>> {
    let mut it = Elems::new(buf);
    loop {
        let start = it.pos();
        let f = it.next()?;
        let value_at = it.pos();
        let v = it.next()?;
        if f == field {
            return Some(Found {
                start,
                value_at,
                end: it.pos(),
                value: v,
            });
        }
    }
}

impl Hash {
    /// An empty hash for `n` pairs about to be inserted (loading): a
    /// table from the start when they could not stay packed.
    pub fn with_capacity(n: usize) -> Self {
        if n > listpack::hash_limits().entries {
            Hash::Table(Box::new(HashMap::with_capacity(n)))
        } else {
            Hash::default()
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Hash::Packed(b) => listpack::count(b) / 2,
            Hash::Table(t) => t.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// OBJECT ENCODING's name for it.
    pub fn encoding(&self) -> &'static str {
        match self {
            Hash::Packed(_) => "listpack",
            Hash::Table(_) => "hashtable",
        }
    }
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        match self {
            Hash::Packed(b) => find(b, field).map(|f| f.value),
            Hash::Table(t) => t.get(field).map(|v| &**v),
        }
    }
    pub fn contains_key(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Sets `field` to `value` under the node's thresholds; true when the
    /// field is new.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        self.insert_with(field, value, listpack::hash_limits())
    }

    /// [`Hash::insert`] under explicit thresholds.
    pub fn insert_with(&mut self, field: &[u8], value: &[u8], lim: Limits) -> bool {
        let Hash::Packed(buf) = self else {
            return self.table_insert(field, value);
        };
        if field.len() > lim.value || value.len() > lim.value {
            self.convert();
            return self.table_insert(field, value);
        }
        if let Some(f) = find(buf, field) {
            let (value_at, end) = (f.value_at, f.end);
            let mut v = Vec::with_capacity(listpack::elem_size(value));
            listpack::put_elem(&mut v, value);
            listpack::splice(buf, value_at..end, &v);
            // A threshold lowered since: the next write converts (Redis).
            if listpack::count(buf) / 2 > lim.entries {
                self.convert();
            }
            return false;
        }
        if listpack::count(buf) / 2 >= lim.entries {
            self.convert();
            return self.table_insert(field, value);
        }
        let mut pair = Vec::with_capacity(listpack::elem_size(field) + listpack::elem_size(value));
        listpack::put_elem(&mut pair, field);
        listpack::put_elem(&mut pair, value);
        listpack::append(buf, 2, &pair);
        true
    }

    /// Sets every (field, value) of `pairs` in order under the node's
    /// thresholds; the number of new fields. A packed hash grows by one
    /// copy for all the new fields, not one per field.
    pub fn insert_all(&mut self, pairs: &[(&[u8], &[u8])]) -> usize {
        self.insert_all_with(pairs, listpack::hash_limits())
    }

    /// [`Hash::insert_all`] under explicit thresholds.
    pub fn insert_all_with(&mut self, pairs: &[(&[u8], &[u8])], lim: Limits) -> usize {
        let (mut added, mut tail, mut tail_fields) = (0, Vec::new(), Vec::new());
        for (i, &(f, v)) in pairs.iter().enumerate() {
            let new_here = matches!(self, Hash::Packed(b) if f.len() <= lim.value
                && v.len() <= lim.value
                && find(b, f).is_none()
                && !tail_fields.contains(&f));
            if new_here {
                // Appended at the end, with the others new in this call.
                listpack::put_elem(&mut tail, f);
                listpack::put_elem(&mut tail, v);
                tail_fields.push(f);
                added += 1;
                continue;
            }
            if !tail_fields.is_empty() {
                self.append_pairs(&tail, tail_fields.len(), lim);
                (tail, tail_fields) = (Vec::new(), Vec::new());
            }
            added += usize::from(self.insert_with(f, v, lim));
            // Pairs already taken are counted; the rest go one by one.
            if matches!(self, Hash::Table(_)) {
                for &(f, v) in &pairs[i + 1..] {
                    added += usize::from(self.table_insert(f, v));
                }
                return added;
            }
        }
        if !tail_fields.is_empty() {
            self.append_pairs(&tail, tail_fields.len(), lim);
        }
        added
    }

    /// Appends `n` new pairs (encoded in `bytes`) to a packed hash, then
    /// converts it if it has too many.
    fn append_pairs(&mut self, bytes: &[u8], n: usize, lim: Limits) {
        if let Hash::Packed(buf) = self {
            listpack::append(buf, 2 * n, bytes);
            if listpack::count(buf) / 2 > lim.entries {
                self.convert();
            }
        }
    }

    fn table_insert(&mut self, field: &[u8], value: &[u8]) -> bool {
        match self {
            Hash::Table(t) => t.insert(field.into(), value.into()).is_none(),
            Hash::Packed(_) => unreachable!("converted before"),
        }
    }

    /// Turns a packed hash into its table.
    fn convert(&mut self) {
        if let Hash::Packed(buf) = self {
            let mut t = HashMap::with_capacity(listpack::count(buf) / 2 + 1);
            let mut it = Elems::new(buf);
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                t.insert(Bytes::from(f), Bytes::from(v));
            }
            *self = Hash::Table(Box::new(t));
        }
    }

    /// Removes `field`; true when it was there.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self {
            Hash::Packed(buf) => match find(buf, field) {
                Some(f) => {
                    let range = f.start..f.end;
                    listpack::cut(buf, range, 2);
                    true
                }
                None => false,
            },
            Hash::Table(t) => t.remove(field).is_some(),
        }
    }

    /// Field/value pairs: insertion order when packed, table order else.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            Hash::Packed(b) => Iter::Packed(Elems::new(b)),
            Hash::Table(t) => Iter::Table(t.iter()),
        }
    }
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(f, _)| f)
    }
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(_, v)| v)
    }

    /// Heap bytes the value holds (MEMORY USAGE): exact for a packed hash;
    /// for a table its buckets plus, from the first `samples` pairs (0:
    /// all), the average pair times the pairs.
    pub fn heap_bytes(&self, samples: usize) -> usize {
        match self {
            Hash::Packed(b) => b.len(),
            Hash::Table(t) => {
                // A bucket: two boxed slices and a control byte.
                let buckets = t.capacity() * (2 * std::mem::size_of::<Bytes>() + 1);
                let n = if samples == 0 { t.len() } else { samples };
                let (mut seen, mut bytes) = (0usize, 0usize);
                for (f, v) in t.iter().take(n) {
                    seen += 1;
                    bytes += f.len() + v.len();
                }
                std::mem::size_of::<HashMap<Bytes, Bytes>>()
                    + buckets
                    + (bytes * t.len()).checked_div(seen).unwrap_or(0)
            }
        }
    }
}

pub enum Iter<'a> {
    Packed(Elems<'a>),
    Table(hashbrown::hash_map::Iter<'a, Bytes, Bytes>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(it) => Some((it.next()?, it.next()?)),
            Iter::Table(it) => it.next().map(|(f, v)| (&**f, &**v)),
        }
    }
}

impl<'a> FromIterator<(&'a [u8], &'a [u8])> for Hash {
    /// Builds a hash under the node's thresholds (loading a snapshot).
    fn from_iter<I: IntoIterator<Item = (&'a [u8], &'a [u8])>>(iter: I) -> Self {
        let mut h = Hash::default();
        for (f, v) in iter {
            h.insert(f, v);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        entries: 3,
        value: 8,
    };

    #[test]
    fn packed_hash_sets_replaces_and_removes_fields_in_place() {
        let mut h = Hash::default();
        assert!(h.insert_with(b"a", b"1", SMALL));
        assert!(h.insert_with(b"b", b"22", SMALL));
        assert!(!h.insert_with(b"a", b"longer", SMALL));
        assert!(!h.insert_with(b"b", b"33", SMALL));
        assert_eq!(h.encoding(), "listpack");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get(b"a"), Some(&b"longer"[..]));
        assert_eq!(h.get(b"b"), Some(&b"33"[..]));
        let pairs: Vec<_> = h.iter().collect();
        assert_eq!(
            pairs,
            vec![(&b"a"[..], &b"longer"[..]), (&b"b"[..], &b"33"[..])]
        );
        assert!(h.remove(b"a"));
        assert!(!h.remove(b"a"));
        assert_eq!(h.get(b"b"), Some(&b"33"[..]));
        assert!(h.remove(b"b"));
        assert!(h.is_empty());
        assert!(matches!(&h, Hash::Packed(b) if b.is_empty()));
    }

    #[test]
    fn hash_becomes_a_table_past_the_entry_count_and_keeps_every_pair() {
        let mut h = Hash::default();
        for f in [&b"a"[..], b"b", b"c"] {
            h.insert_with(f, f, SMALL);
        }
        assert_eq!(h.encoding(), "listpack");
        // Replacing a field at the limit does not convert.
        h.insert_with(b"c", b"x", SMALL);
        assert_eq!(h.encoding(), "listpack");
        assert!(h.insert_with(b"d", b"d", SMALL));
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.len(), 4);
        assert_eq!(h.get(b"c"), Some(&b"x"[..]));
        // Never back, even when small again.
        for f in [&b"a"[..], b"b", b"c"] {
            h.remove(f);
        }
        h.insert_with(b"e", b"e", SMALL);
        assert_eq!(h.encoding(), "hashtable");
    }

    #[test]
    fn hash_becomes_a_table_for_a_long_field_or_value() {
        let mut h = Hash::default();
        h.insert_with(b"f", b"12345678", SMALL);
        assert_eq!(h.encoding(), "listpack");
        h.insert_with(b"f", b"123456789", SMALL);
        assert_eq!(h.encoding(), "hashtable");
        let mut h = Hash::default();
        h.insert_with(b"123456789", b"v", SMALL);
        assert_eq!(h.encoding(), "hashtable");
        assert_eq!(h.get(b"123456789"), Some(&b"v"[..]));
    }

    #[test]
    fn inserting_pairs_at_once_equals_inserting_them_one_by_one() {
        let cases: [&[(&str, &str)]; 4] = [
            &[("a", "1"), ("b", "2")],
            // A field repeated in one call: the last value wins.
            &[("a", "1"), ("b", "2"), ("a", "3")],
            // Past the count, and a long value in the middle.
            &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            &[("a", "1"), ("b", "123456789"), ("c", "3")],
        ];
        for case in cases {
            let pairs: Vec<(&[u8], &[u8])> = case
                .iter()
                .map(|(f, v)| (f.as_bytes(), v.as_bytes()))
                .collect();
            for start in [&[][..], &[(&b"b"[..], &b"0"[..])][..]] {
                let (mut one, mut all) = (Hash::default(), Hash::default());
                for &(f, v) in start {
                    one.insert_with(f, v, SMALL);
                    all.insert_with(f, v, SMALL);
                }
                let added: usize = pairs
                    .iter()
                    .map(|&(f, v)| usize::from(one.insert_with(f, v, SMALL)))
                    .sum();
                assert_eq!(all.insert_all_with(&pairs, SMALL), added, "{pairs:?}");
                assert_eq!(all.encoding(), one.encoding(), "{pairs:?}");
                let mut a: Vec<_> = all.iter().collect();
                let mut b: Vec<_> = one.iter().collect();
                if all.encoding() == "listpack" {
                    assert_eq!(a, b, "insertion order kept: {pairs:?}");
                }
                a.sort();
                b.sort();
                assert_eq!(a, b, "{pairs:?}");
            }
        }
    }

    #[test]
    fn zero_entries_limit_makes_every_hash_a_table() {
        let mut h = Hash::default();
        h.insert_with(
            b"f",
            b"v",
            Limits {
                entries: 0,
                value: 64,
            },
        );
        assert_eq!(h.encoding(), "hashtable");
    }
}
