//! Clients blocked on keys (BLPOP and friends), by key, in arrival order.
//!
//! A blocked connection waits on its own `Notify` and costs nothing while
//! it waits. A write to a key (any logged command that names it) wakes the
//! first waiter of that key only; the woken client runs its command again:
//! if it got an element it wakes the next waiter of its keys (there may be
//! more), if another client was first it waits again in its arrival place
//! (ahead of every client that blocked after it, however many were woken
//! at once). So clients are served first-come first-served, and one push
//! wakes one client, not all of them. A role or topology change wakes every
//! waiter: each runs its command again and gets the redirect or error the
//! node's new state gives (`MOVED`, `READONLY`), never a silent hang.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use tokio::sync::Notify;

/// One blocked connection.
pub struct Waiter {
    pub id: u64,
    /// When its command first blocked ([`next_arrival`]): its place in
    /// every queue, kept when it is woken and waits again.
    pub arrival: u64,
    pub notify: Notify,
}

/// Arrival order of blocking commands, node-wide.
static ARRIVALS: AtomicU64 = AtomicU64::new(1);

pub fn next_arrival() -> u64 {
    ARRIVALS.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
pub struct Blocked {
    keys: HashMap<Vec<u8>, VecDeque<Rc<Waiter>>>,
}

impl Blocked {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Clients waiting on at least one key (`INFO`'s `blocked_clients`).
    pub fn clients(&self) -> usize {
        let ids: std::collections::HashSet<u64> =
            self.keys.values().flatten().map(|w| w.id).collect();
        ids.len()
    }

    /// Queues `w` on `keys` in arrival order: a client woken that found
    /// nothing keeps its place ahead of those that came after it, even when
    /// several were woken at once and wait again in any order.
    pub fn register(&mut self, keys: &[Vec<u8>], w: &Rc<Waiter>) {
        for k in keys {
            let q = self.keys.entry(k.clone()).or_default();
            if q.iter().any(|x| x.id == w.id) {
                continue;
            }
            // Usually the newest: found from the back in one step.
            let at = q
                .iter()
                .rposition(|x| x.arrival < w.arrival)
                .map_or(0, |i| i + 1);
            q.insert(at, w.clone());
        }
    }

    pub fn unregister(&mut self, keys: &[Vec<u8>], id: u64) {
        for k in keys {
            if let Some(q) = self.keys.get_mut(k.as_slice()) {
                q.retain(|x| x.id != id);
                if q.is_empty() {
                    self.keys.remove(k.as_slice());
                }
            }
        }
    }

    /// A write to `key`: its first waiter tries again.
    pub fn signal(&mut self, key: &[u8]) {
        if let Some(q) = self.keys.get_mut(key) {
            if let Some(w) = q.pop_front() {
                w.notify.notify_one();
            }
            if q.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Every waiter tries again (the node's role or slots changed).
    pub fn wake_all(&mut self) {
        for (_, q) in self.keys.drain() {
            for w in q {
                w.notify.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(id: u64, arrival: u64) -> Rc<Waiter> {
        Rc::new(Waiter {
            id,
            arrival,
            notify: Notify::new(),
        })
    }

    #[test]
    fn a_signal_wakes_the_first_waiter_only_and_a_woken_waiter_keeps_its_place() {
        let mut b = Blocked::default();
        let (w1, w2, w3) = (waiter(1, 10), waiter(2, 20), waiter(3, 30));
        let k = vec![b"k".to_vec()];
        b.register(&k, &w1);
        b.register(&k, &w2);
        b.register(&k, &w3);
        b.signal(b"k");
        b.signal(b"k");
        assert_eq!(b.keys[b"k".as_slice()].len(), 1);
        assert_eq!(b.keys[b"k".as_slice()][0].id, 3);
        // Both woken found nothing and wait again, the later one first:
        // the queue is still in arrival order.
        b.register(&k, &w2);
        b.register(&k, &w1);
        let order: Vec<u64> = b.keys[b"k".as_slice()].iter().map(|w| w.id).collect();
        assert_eq!(order, vec![1, 2, 3]);
        // One client on two keys counts once.
        b.register(&[b"other".to_vec()], &w1);
        assert_eq!(b.clients(), 3);
        b.unregister(&[b"other".to_vec()], 1);
        for id in 1..=3 {
            b.unregister(&k, id);
        }
        assert!(b.is_empty());
    }
}
