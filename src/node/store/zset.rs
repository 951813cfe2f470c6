//! A sorted-set value in one of its two encodings: packed members in score
//! order ([`super::listpack`]) or the full structure (a member → score map
//! and an ordered tree). A sorted set starts packed and becomes full when it
//! gets more members than `zset-max-listpack-entries` or a member longer
//! than `zset-max-listpack-value`; it never goes back (as in Redis).

use std::collections::BTreeSet;
use std::ops::Bound;

use hashbrown::HashMap;

use super::listpack::{self, Elems, Limits};
use super::{Bytes, Score};

/// The full structure: scores by member, and (score, member) in order.
#[derive(Debug, Clone, Default)]
pub struct Sorted {
    pub scores: HashMap<Bytes, f64>,
    pub ordered: BTreeSet<(Score, Bytes)>,
}

impl Sorted {
    /// Inserts or updates; returns true when the member is new.
    fn insert(&mut self, member: &[u8], score: f64) -> bool {
        match self.scores.get_mut(member) {
            Some(old) => {
                if *old != score {
                    self.ordered.remove(&(Score(*old), Bytes::from(member)));
                    self.ordered.insert((Score(score), Bytes::from(member)));
                    *old = score;
                }
                false
            }
            None => {
                self.scores.insert(Bytes::from(member), score);
                self.ordered.insert((Score(score), Bytes::from(member)));
                true
            }
        }
    }
    fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.ordered.remove(&(Score(score), Bytes::from(member)));
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum ZSet {
    /// Per member: its bytes as an element, then its score (a tag byte and
    /// an integer of 1–8 bytes, or a raw f64), in (score, member) order.
    Packed(Box<[u8]>),
    Full(Box<Sorted>),
}

impl Default for ZSet {
    fn default() -> Self {
        ZSet::Packed(Box::default())
    }
}

/// One packed member: where it starts and ends, its bytes and score.
struct PackedMember<'a> {
    start: usize,
    end: usize,
    member: &'a [u8],
    score: f64,
}

/// The members of a packed buffer in order.
struct PackedIter<'a>(Elems<'a>);

impl<'a> Iterator for PackedIter<'a> {
    type Item = PackedMember<'a>;
    fn next(&mut self) -> Option<PackedMember<'a>> {
        let start = self.0.pos();
        let member = self.0.next()?;
        let score = read_score(&mut self.0)?;
        Some(PackedMember {
            start,
            end: self.0.pos(),
            member,
            score,
        })
    }
}

/// A score's integer form, when it has one: integral scores (ranks,
/// counters, timestamps) take 1 to 8 bytes instead of a double's 8 plus tag.
fn as_int(s: f64) -> Option<i64> {
    let i = s as i64;
    // -0.0 never gets here (stored as 0.0); ±2^63 saturate and differ.
    (i as f64 == s && s.fract() == 0.0).then_some(i)
}

/// A fractional score a 4-byte float holds exactly (halves, quarters,
/// most short binary fractions: 1.5, 0.25, 1e10 + 0.5 does not).
fn as_f32(s: f64) -> Option<f32> {
    let f = s as f32;
    (f as f64 == s).then_some(f)
}

/// Bytes a score takes packed: a tag byte, then the integer's 1, 2, 4 or
/// 8 bytes (the tag says which), (tag 3) an exact 4-byte float, or (tag 0)
/// the double's 8.
fn score_size(s: f64) -> usize {
    1 + match as_int(s) {
        Some(i) if i8::try_from(i).is_ok() => 1,
        Some(i) if i16::try_from(i).is_ok() => 2,
        Some(i) if i32::try_from(i).is_ok() => 4,
        Some(_) => 8,
        None if as_f32(s).is_some() => 4,
        None => 8,
    }
}

fn put_score(b: &mut listpack::Builder, s: f64) {
    match as_int(s) {
        Some(i) if i8::try_from(i).is_ok() => b.raw(&[1, i as u8]),
        Some(i) if i16::try_from(i).is_ok() => {
            b.raw(&[2]);
            b.raw(&(i as i16).to_le_bytes());
        }
        Some(i) if i32::try_from(i).is_ok() => {
            b.raw(&[4]);
            b.raw(&(i as i32).to_le_bytes());
        }
        Some(i) => {
            b.raw(&[8]);
            b.raw(&i.to_le_bytes());
        }
        None => match as_f32(s) {
            Some(f) => {
                b.raw(&[3]);
                b.raw(&f.to_le_bytes());
            }
            None => {
                b.raw(&[0]);
                b.raw(&s.to_le_bytes());
            }
        },
    }
}

fn read_score(it: &mut Elems<'_>) -> Option<f64> {
    let [tag] = it.fixed::<1>()?;
    Some(match tag {
        1 => i8::from_le_bytes(it.fixed::<1>()?) as f64,
        2 => i16::from_le_bytes(it.fixed::<2>()?) as f64,
        3 => f32::from_le_bytes(it.fixed::<4>()?) as f64,
        4 => i32::from_le_bytes(it.fixed::<4>()?) as f64,
        8 => i64::from_le_bytes(it.fixed::<8>()?) as f64,
        _ => f64::from_le_bytes(it.fixed::<8>()?),
    })
}

fn packed(buf: &[u8]) -> PackedIter<'_> {
    PackedIter(Elems::new(buf))
}

impl ZSet {
    /// An empty sorted set for `n` members about to be inserted (loading):
    /// full from the start when they could not stay packed.
    pub fn with_capacity(n: usize) -> Self {
        if n > listpack::zset_limits().entries {
            ZSet::Full(Box::new(Sorted {
                scores: HashMap::with_capacity(n),
                ordered: BTreeSet::new(),
            }))
        } else {
            ZSet::default()
        }
    }
    pub fn len(&self) -> usize {
        match self {
            ZSet::Packed(b) => listpack::count(b),
            ZSet::Full(z) => z.scores.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// OBJECT ENCODING's name for it.
    pub fn encoding(&self) -> &'static str {
        match self {
            ZSet::Packed(_) => "listpack",
            ZSet::Full(_) => "skiplist",
        }
    }
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            ZSet::Packed(b) => packed(b).find(|m| m.member == member).map(|m| m.score),
            ZSet::Full(z) => z.scores.get(member).copied(),
        }
    }

    /// Inserts or updates under the node's thresholds; true when the
    /// member is new.
    pub fn insert(&mut self, member: &[u8], score: f64) -> bool {
        self.insert_with(member, score, listpack::zset_limits())
    }

    /// [`ZSet::insert`] under explicit thresholds.
    pub fn insert_with(&mut self, member: &[u8], score: f64, lim: Limits) -> bool {
        // One zero: -0.0 and 0.0 compare equal as f64 but not in order.
        let score = if score == 0.0 { 0.0 } else { score };
        let ZSet::Packed(buf) = self else {
            return self.full_insert(member, score);
        };
        let old = packed(buf).find(|m| m.member == member);
        match old {
            Some(m) if m.score == score => return false,
            Some(_) => {}
            None if member.len() > lim.value || listpack::count(buf) >= lim.entries => {
                self.convert();
                return self.full_insert(member, score);
            }
            None => {}
        }
        let existed = old.is_some();
        let old_size = old.as_ref().map_or(0, |m| m.end - m.start);
        let new_size = listpack::elem_size(member) + score_size(score);
        let mut b = listpack::Builder::with_body(listpack::body_len(buf) - old_size + new_size);
        let key = (Score(score), member);
        let mut placed = false;
        for m in packed(buf) {
            if m.member == member {
                continue;
            }
            if !placed && key < (Score(m.score), m.member) {
                b.elem(member);
                put_score(&mut b, score);
                placed = true;
            }
            b.elem(m.member);
            put_score(&mut b, m.score);
        }
        if !placed {
            b.elem(member);
            put_score(&mut b, score);
        }
        let n = listpack::count(buf) + usize::from(!existed);
        *buf = b.finish(n);
        !existed
    }

    fn full_insert(&mut self, member: &[u8], score: f64) -> bool {
        match self {
            ZSet::Full(z) => z.insert(member, score),
            ZSet::Packed(_) => unreachable!("converted before"),
        }
    }

    /// Turns a packed sorted set into its full structure.
    fn convert(&mut self) {
        if let ZSet::Packed(buf) = self {
            let mut z = Sorted {
                scores: HashMap::with_capacity(listpack::count(buf) + 1),
                ordered: BTreeSet::new(),
            };
            for m in packed(buf) {
                z.insert(m.member, m.score);
            }
            *self = ZSet::Full(Box::new(z));
        }
    }

    /// Removes `member`; true when it was there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        match self {
            ZSet::Packed(buf) => match packed(buf).find(|m| m.member == member) {
                Some(m) => {
                    let range = m.start..m.end;
                    listpack::cut(buf, range, 1);
                    true
                }
                None => false,
            },
            ZSet::Full(z) => z.remove(member),
        }
    }

    /// (member, score) in (score, member) order; reversible.
    pub fn iter(&self) -> Iter<'_> {
        match self {
            ZSet::Packed(b) => Iter::Packed(
                packed(b)
                    .map(|m| (m.member, m.score))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            ZSet::Full(z) => Iter::Full(z.ordered.range::<(Score, Bytes), _>(..)),
        }
    }

    /// Members after (`score`, `member`) in order (a migration resuming).
    pub fn iter_after(&self, after: Option<(Score, &[u8])>) -> Iter<'_> {
        let Some((s, m)) = after else {
            return self.iter();
        };
        match self {
            ZSet::Packed(b) => Iter::Packed(
                packed(b)
                    .filter(|x| (Score(x.score), x.member) > (s, m))
                    .map(|x| (x.member, x.score))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            ZSet::Full(z) => Iter::Full(
                z.ordered
                    .range((Bound::Excluded((s, Bytes::from(m))), Bound::Unbounded)),
            ),
        }
    }

    /// The members in no particular order (scans, random picks).
    pub fn members(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        match self {
            ZSet::Packed(b) => Box::new(packed(b).map(|m| m.member)),
            ZSet::Full(z) => Box::new(z.scores.keys().map(|m| &**m)),
        }
    }

    /// The 0-based rank of `member` from the lowest score, and its score.
    pub fn rank(&self, member: &[u8]) -> Option<(usize, f64)> {
        match self {
            ZSet::Packed(b) => packed(b)
                .enumerate()
                .find(|(_, m)| m.member == member)
                .map(|(i, m)| (i, m.score)),
            ZSet::Full(z) => {
                let score = *z.scores.get(member)?;
                let below = z
                    .ordered
                    .iter()
                    .take_while(|(s, m)| (s.0, &**m) != (score, member))
                    .count();
                Some((below, score))
            }
        }
    }

    /// Heap bytes the value holds (MEMORY USAGE): exact for a packed set;
    /// for the full structure its map and tree nodes plus, from the first
    /// `samples` members (0: all), the average member bytes times the
    /// members (each member is held twice).
    pub fn heap_bytes(&self, samples: usize) -> usize {
        match self {
            ZSet::Packed(b) => b.len(),
            ZSet::Full(z) => {
                let entry = std::mem::size_of::<(Score, Bytes)>();
                let map = z.scores.capacity() * (std::mem::size_of::<(Bytes, f64)>() + 1);
                // B-tree leaves hold up to 11 entries; count them two-thirds full.
                let tree = z.ordered.len() * entry * 3 / 2;
                let n = if samples == 0 {
                    z.scores.len()
                } else {
                    samples
                };
                let (mut seen, mut bytes) = (0usize, 0usize);
                for m in z.scores.keys().take(n) {
                    seen += 1;
                    bytes += m.len();
                }
                std::mem::size_of::<Sorted>()
                    + map
                    + tree
                    + (2 * bytes * z.scores.len()).checked_div(seen).unwrap_or(0)
            }
        }
    }
}

pub enum Iter<'a> {
    Packed(std::vec::IntoIter<(&'a [u8], f64)>),
    Full(std::collections::btree_set::Range<'a, (Score, Bytes)>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], f64);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(it) => it.next(),
            Iter::Full(it) => it.next().map(|(s, m)| (&**m, s.0)),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(it) => it.next_back(),
            Iter::Full(it) => it.next_back().map(|(s, m)| (&**m, s.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        entries: 3,
        value: 8,
    };

    fn order(z: &ZSet) -> Vec<(Vec<u8>, f64)> {
        z.iter().map(|(m, s)| (m.to_vec(), s)).collect()
    }

    #[test]
    fn packed_zset_keeps_score_then_member_order_through_updates() {
        let mut z = ZSet::default();
        assert!(z.insert_with(b"b", 2.0, SMALL));
        assert!(z.insert_with(b"a", 2.0, SMALL));
        assert!(z.insert_with(b"c", 1.0, SMALL));
        assert!(!z.insert_with(b"c", 3.0, SMALL));
        assert!(!z.insert_with(b"c", 3.0, SMALL));
        assert_eq!(z.encoding(), "listpack");
        assert_eq!(
            order(&z),
            vec![
                (b"a".to_vec(), 2.0),
                (b"b".to_vec(), 2.0),
                (b"c".to_vec(), 3.0)
            ]
        );
        assert_eq!(z.iter().next_back(), Some((&b"c"[..], 3.0)));
        assert_eq!(z.rank(b"b"), Some((1, 2.0)));
        assert_eq!(z.score(b"a"), Some(2.0));
        let after: Vec<_> = z.iter_after(Some((Score(2.0), b"a"))).collect();
        assert_eq!(after, vec![(&b"b"[..], 2.0), (&b"c"[..], 3.0)]);
        assert!(z.remove(b"a"));
        assert!(!z.remove(b"a"));
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn every_kind_of_score_reads_back_exactly_and_in_order() {
        let scores = [
            0.0,
            -1.0,
            127.0,
            -129.0,
            40000.0,
            -3e9,
            1.7e12,
            9.2e18,
            -9.223372036854776e18,
            1.5,
            -0.1,
            -2.25,
            3.4e38,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
        ];
        let big = Limits {
            entries: 128,
            value: 64,
        };
        let mut z = ZSet::default();
        for (i, s) in scores.iter().enumerate() {
            z.insert_with(format!("m{i}").as_bytes(), *s, big);
        }
        assert_eq!(z.encoding(), "listpack");
        for (i, s) in scores.iter().enumerate() {
            assert_eq!(z.score(format!("m{i}").as_bytes()), Some(*s), "{s}");
        }
        let got: Vec<f64> = z.iter().map(|(_, s)| s).collect();
        let mut want = scores.to_vec();
        want.sort_by(f64::total_cmp);
        assert_eq!(got, want);
        // A small integer takes two bytes, a fraction a 4-byte float holds
        // five, any other nine.
        assert_eq!(score_size(3.0), 2);
        assert_eq!(score_size(1.5), 5);
        assert_eq!(score_size(0.1), 9);
    }

    #[test]
    fn negative_zero_is_stored_as_zero() {
        let mut z = ZSet::default();
        z.insert_with(b"m", -0.0, SMALL);
        assert!(z.score(b"m").is_some_and(|s| s.is_sign_positive()));
    }

    #[test]
    fn zset_becomes_full_past_the_thresholds_and_keeps_every_member() {
        let mut z = ZSet::default();
        for (i, m) in [&b"a"[..], b"b", b"c"].iter().enumerate() {
            z.insert_with(m, i as f64, SMALL);
        }
        // A score change at the limit does not convert.
        z.insert_with(b"a", 9.0, SMALL);
        assert_eq!(z.encoding(), "listpack");
        let before = order(&z);
        z.insert_with(b"d", -1.0, SMALL);
        assert_eq!(z.encoding(), "skiplist");
        let mut expect = vec![(b"d".to_vec(), -1.0)];
        expect.extend(before);
        assert_eq!(order(&z), expect);
        // Never back.
        for m in [&b"a"[..], b"b", b"c"] {
            z.remove(m);
        }
        assert_eq!(z.encoding(), "skiplist");

        let mut z = ZSet::default();
        z.insert_with(b"12345678", 1.0, SMALL);
        assert_eq!(z.encoding(), "listpack");
        z.insert_with(b"123456789", 1.0, SMALL);
        assert_eq!(z.encoding(), "skiplist");
        assert_eq!(z.rank(b"123456789"), Some((1, 1.0)));
    }
}
