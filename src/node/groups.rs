//! Consumer-group state of a stream: each group's last delivered ID and
//! read counter, its pending entries list (PEL) and its consumers; and the
//! counters Redis derives from a stream's history (a group's lag).
//!
//! A pending entry names its consumer; each consumer keeps the IDs it owns,
//! so a consumer's history and XPENDING for one consumer never scan the
//! whole PEL. Every change goes through [`Group`]'s methods, which keep the
//! two in step.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{Bytes, Stream, StreamId};

/// A group's read counter when it is not known (Redis' -1).
pub const ENTRIES_READ_UNKNOWN: i64 = -1;

#[derive(Debug, Clone)]
pub struct Pending {
    pub consumer: Bytes,
    /// Last delivery, in ms since the Unix epoch.
    pub delivery_time: u64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Consumer {
    /// Last time the consumer read or claimed, in ms since the Unix epoch.
    pub seen_time: u64,
    pub pel: BTreeSet<StreamId>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub last_id: StreamId,
    /// Entries the group has read, or [`ENTRIES_READ_UNKNOWN`].
    pub entries_read: i64,
    pub pel: BTreeMap<StreamId, Pending>,
    pub consumers: BTreeMap<Bytes, Consumer>,
}

impl Group {
    pub fn new(last_id: StreamId, entries_read: i64) -> Self {
        Self {
            last_id,
            entries_read,
            pel: BTreeMap::new(),
            consumers: BTreeMap::new(),
        }
    }

    /// The consumer `name`, created when missing (true: it was created).
    pub fn consumer(&mut self, name: &[u8], now: u64) -> (&mut Consumer, bool) {
        let created = !self.consumers.contains_key(name);
        let c = self
            .consumers
            .entry(Bytes::from(name))
            .or_insert_with(|| Consumer {
                seen_time: now,
                pel: BTreeSet::new(),
            });
        (c, created)
    }

    /// Makes `id` pending for `consumer` (created when missing) with this
    /// delivery time and count, taking it from another consumer if needed.
    pub fn set_pending(&mut self, id: StreamId, consumer: &[u8], time: u64, count: u64) {
        if let Some(old) = self.pel.get(&id) {
            if &old.consumer[..] != consumer {
                if let Some(c) = self.consumers.get_mut(&old.consumer) {
                    c.pel.remove(&id);
                }
            }
        }
        self.consumer(consumer, time).0.pel.insert(id);
        self.pel.insert(
            id,
            Pending {
                consumer: Bytes::from(consumer),
                delivery_time: time,
                delivery_count: count,
            },
        );
    }

    /// Removes `id` from the PEL; true when it was pending.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(p) => {
                if let Some(c) = self.consumers.get_mut(&p.consumer) {
                    c.pel.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Deletes a consumer and its pending entries; returns how many it had
    /// (None: no such consumer).
    pub fn delete_consumer(&mut self, name: &[u8]) -> Option<usize> {
        let c = self.consumers.remove(name)?;
        for id in &c.pel {
            self.pel.remove(id);
        }
        Some(c.pel.len())
    }
}

impl Stream {
    /// The first entry's ID (0-0 when empty), as Redis records it.
    pub fn first_id(&self) -> StreamId {
        self.entries
            .first_key_value()
            .map(|(id, _)| *id)
            .unwrap_or_default()
    }

    /// Whether a deleted entry may lie at or after `start`.
    pub fn has_tombstones_from(&self, start: StreamId) -> bool {
        let max = self.max_deleted_id;
        if self.entries.is_empty() || max == StreamId::default() || self.first_id() > max {
            return false;
        }
        start <= max
    }

    /// How many entries were added up to and including `id`, when the
    /// stream's history tells (Redis' estimate; None: it cannot tell).
    pub fn entries_up_to(&self, id: StreamId) -> Option<i64> {
        let added = self.entries_added as i64;
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.entries.is_empty() && id <= self.last_id {
            return Some(added);
        }
        match id.cmp(&self.last_id) {
            std::cmp::Ordering::Equal => return Some(added),
            std::cmp::Ordering::Greater => return None,
            std::cmp::Ordering::Less => {}
        }
        let first = self.first_id();
        let max = self.max_deleted_id;
        if max == StreamId::default() || max < first {
            let len = self.entries.len() as i64;
            if id < first {
                return Some(added - len);
            }
            if id == first {
                return Some(added - len + 1);
            }
        }
        None
    }

    /// A group's lag: entries added that it has not read (None: unknown).
    pub fn lag(&self, g: &Group) -> Option<i64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.has_tombstones_from(g.last_id) {
            return Some(self.entries_added as i64 - g.entries_read);
        }
        self.entries_up_to(g.last_id)
            .map(|read| self.entries_added as i64 - read)
    }

    /// A group read `id` (above its last ID): its counter and last ID move.
    pub fn advance_group(&self, g: &mut Group, id: StreamId) {
        if g.entries_read != ENTRIES_READ_UNKNOWN && !self.has_tombstones_from(id) {
            g.entries_read += 1;
        } else if self.entries_added != 0 {
            g.entries_read = self.entries_up_to(id).unwrap_or(ENTRIES_READ_UNKNOWN);
        }
        g.last_id = id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn pending_entries_move_between_consumers_and_leave_with_them() {
        let mut g = Group::new(id(0, 0), 0);
        g.set_pending(id(1, 0), b"a", 10, 1);
        g.set_pending(id(2, 0), b"a", 10, 1);
        g.set_pending(id(1, 0), b"b", 20, 3);
        assert_eq!(g.consumers[&b"a"[..]].pel.len(), 1);
        assert_eq!(g.consumers[&b"b"[..]].pel.len(), 1);
        assert_eq!(g.pel[&id(1, 0)].delivery_count, 3);
        assert!(g.ack(id(2, 0)));
        assert!(!g.ack(id(2, 0)));
        assert_eq!(g.delete_consumer(b"b"), Some(1));
        assert!(g.pel.is_empty());
        assert_eq!(g.delete_consumer(b"b"), None);
    }

    #[test]
    fn lag_follows_the_read_counter_until_a_deletion_makes_it_unknown() {
        let mut s = Stream::default();
        for ms in 1..=4 {
            s.entries.insert(id(ms, 0), Vec::new());
            s.entries_added += 1;
            s.last_id = id(ms, 0);
        }
        let mut g = Group::new(id(0, 0), ENTRIES_READ_UNKNOWN);
        assert_eq!(s.lag(&g), Some(4));
        s.advance_group(&mut g, id(1, 0));
        assert_eq!((g.entries_read, s.lag(&g)), (1, Some(3)));
        // A deleted entry ahead of the group: the counter cannot be trusted.
        s.entries.remove(&id(3, 0));
        s.max_deleted_id = id(3, 0);
        let mut unknown = Group::new(id(1, 0), ENTRIES_READ_UNKNOWN);
        assert_eq!(s.lag(&unknown), None);
        s.advance_group(&mut unknown, id(2, 0));
        assert_eq!(unknown.entries_read, ENTRIES_READ_UNKNOWN);
        s.advance_group(&mut unknown, id(4, 0));
        assert_eq!((unknown.entries_read, s.lag(&unknown)), (4, Some(0)));
    }
}
