//! `CLUSTER SLOTDIGEST start end`: a content digest of a slot range, to
//! compare the same slots on two nodes (a migration's source and target, a
//! primary and its replica).
//!
//! Each key contributes the SHA-256 of its name, type, deadline and value in
//! a canonical form (hash fields and set members sorted), and the
//! contributions are summed, so the digest depends on the contents only,
//! never on insertion order or hash-table layout. Like Redis' `DEBUG
//! DIGEST`, it reads every key of the range: O(N) in the range's size.
//! Only the keyspace is read: staged (not yet owned) data is not counted.

use sha2::{Digest, Sha256};

use crate::node::cmd::{Args, Ctx};
use crate::node::slots::SLOTS;
use crate::node::store::{Entry, Store, Value};

/// `CLUSTER SLOTDIGEST start end` → the range's digest (64 hex characters).
pub fn command(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let slot = |i: usize| match args.int(i) {
        Ok(n) if (0..SLOTS as i64).contains(&n) => Some(n as u16),
        _ => None,
    };
    match (slot(2), slot(3)) {
        (Some(a), Some(b)) if a <= b => {
            let d = range_digest(ctx.store, a, b);
            ctx.out.bulk(d.hex().as_bytes());
        }
        (Some(_), Some(_)) => ctx
            .out
            .error("ERR start slot number is greater than end slot number"),
        _ => ctx.out.error("ERR Invalid or out of range slot"),
    }
}

/// Sum of per-key hashes (four 64-bit lanes) and the key count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlotDigest {
    lanes: [u64; 4],
    pub keys: u64,
}

impl SlotDigest {
    fn add(&mut self, h: &[u8]) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i * 8..i * 8 + 8]);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.keys += 1;
    }

    pub fn merge(&mut self, other: &SlotDigest) {
        for (a, b) in self.lanes.iter_mut().zip(other.lanes) {
            *a = a.wrapping_add(b);
        }
        self.keys += other.keys;
    }

    /// 64 hex characters; all zeros for an empty range (as Redis' digest of
    /// an empty database).
    pub fn hex(&self) -> String {
        if self.keys == 0 {
            return "0".repeat(64);
        }
        let mut h = Sha256::new();
        for l in self.lanes {
            h.update(l.to_le_bytes());
        }
        h.update(self.keys.to_le_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn put(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

fn sorted<'a>(it: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    let mut v: Vec<&[u8]> = it.collect();
    v.sort_unstable();
    v
}

/// The hash of one key's contents.
pub fn key_hash(key: &[u8], e: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    put(&mut h, key);
    h.update(e.expire_at().to_le_bytes());
    h.update(e.value.type_name().as_bytes());
    match &e.value {
        Value::Str(s) => put(&mut h, s),
        Value::Hash(m) => {
            let mut pairs: Vec<(&[u8], &[u8])> = m.iter().collect();
            pairs.sort_unstable();
            for (f, v) in pairs {
                put(&mut h, f);
                put(&mut h, v);
            }
        }
        Value::List(l) => l.iter().for_each(|x| put(&mut h, x)),
        Value::Set(s) => sorted(s.iter().map(|m| &m[..]))
            .into_iter()
            .for_each(|m| put(&mut h, m)),
        Value::ZSet(z) => {
            for (m, score) in z.iter() {
                h.update(score.to_bits().to_le_bytes());
                put(&mut h, m);
            }
        }
        Value::Stream(s) => {
            h.update(s.last_id.ms.to_le_bytes());
            h.update(s.last_id.seq.to_le_bytes());
            for (id, fields) in &s.entries {
                h.update(id.ms.to_le_bytes());
                h.update(id.seq.to_le_bytes());
                fields.iter().for_each(|f| put(&mut h, f));
            }
            h.update(s.entries_added.to_le_bytes());
            h.update(s.max_deleted_id.ms.to_le_bytes());
            h.update(s.max_deleted_id.seq.to_le_bytes());
            for (name, g) in &s.groups {
                put(&mut h, name);
                h.update(g.last_id.ms.to_le_bytes());
                h.update(g.last_id.seq.to_le_bytes());
                h.update(g.entries_read.to_le_bytes());
                for (cname, c) in &g.consumers {
                    put(&mut h, cname);
                    h.update(c.seen_time.to_le_bytes());
                }
                for (id, p) in &g.pel {
                    h.update(id.ms.to_le_bytes());
                    h.update(id.seq.to_le_bytes());
                    put(&mut h, &p.consumer);
                    h.update(p.delivery_time.to_le_bytes());
                    h.update(p.delivery_count.to_le_bytes());
                }
            }
        }
    }
    h.finalize().into()
}

/// The digest of one slot of `store`.
pub fn slot_digest(store: &Store, slot: u16) -> SlotDigest {
    let mut d = SlotDigest::default();
    for (k, e) in store.slot_entries(slot) {
        d.add(&key_hash(k, e));
    }
    d
}

/// The digest of slots `start..=end`.
pub fn range_digest(store: &Store, start: u16, end: u16) -> SlotDigest {
    let mut d = SlotDigest::default();
    for slot in start..=end {
        if store.slot_len(slot) > 0 {
            d.merge(&slot_digest(store, slot));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::store::Store;

    #[test]
    fn digest_ignores_insertion_order_and_sees_every_change() {
        let mut a = Store::new();
        let mut b = Store::new();
        // 100 pairs: packed on one side, a table on the other, same digest.
        let mut ha = crate::node::store::Hash::default();
        let mut hb = crate::node::store::Hash::default();
        let pack = crate::node::store::listpack::Limits {
            entries: 128,
            value: 64,
        };
        let table = crate::node::store::listpack::Limits {
            entries: 0,
            value: 64,
        };
        for i in 0..100u32 {
            ha.insert_with(format!("f{i}").as_bytes(), b"v", pack);
        }
        for i in (0..100u32).rev() {
            hb.insert_with(format!("f{i}").as_bytes(), b"v", table);
        }
        assert_eq!((ha.encoding(), hb.encoding()), ("listpack", "hashtable"));
        a.set(5, b"h", Value::Hash(ha), 0);
        a.set(5, b"s", Value::Str(b"x".to_vec().into()), 0);
        b.set(5, b"s", Value::Str(b"x".to_vec().into()), 0);
        b.set(5, b"h", Value::Hash(hb), 0);
        assert_eq!(range_digest(&a, 0, 10).hex(), range_digest(&b, 0, 10).hex());
        assert_eq!(range_digest(&a, 0, 10).keys, 2);
        b.set_expire(5, b"s", 99);
        assert_ne!(range_digest(&a, 0, 10).hex(), range_digest(&b, 0, 10).hex());
        assert_eq!(range_digest(&a, 6, 10).hex(), "0".repeat(64));
    }
}
