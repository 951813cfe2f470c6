//! Clients blocked on keys (BLPOP and friends), by key, in arrival order.
//!
//! A blocked connection waits on its own `Notify` and costs nothing while
//! it waits. A write to a key (any logged command that names it) wakes the
//! first waiter of that key only; the woken client runs its command again:
//! if it got an element it wakes the next waiter of its keys (there may be
//! more), if another client was first it blocks again at the front of the
//! queues. So clients are served first-come first-served, and one push
//! wakes one client, not all of them. A role or topology change wakes every
//! waiter: each runs its command again and gets the redirect or error the
//! node's new state gives (`MOVED`, `READONLY`), never a silent hang.

use std::collections::VecDeque;
use std::rc::Rc;

use hashbrown::HashMap;
use tokio::sync::Notify;

/// One blocked connection.
pub struct Waiter {
    pub id: u64,
    pub notify: Notify,
}

#[derive(Default)]
pub struct Blocked {
    keys: HashMap<Vec<u8>, VecDeque<Rc<Waiter>>>,
}

impl Blocked {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Queues `w` on `keys` (at the front: a client woken that found
    /// nothing keeps its turn).
    pub fn register(&mut self, keys: &[Vec<u8>], w: &Rc<Waiter>, front: bool) {
        for k in keys {
            let q = self.keys.entry(k.clone()).or_default();
            if q.iter().any(|x| x.id == w.id) {
                continue;
            }
            if front {
                q.push_front(w.clone());
            } else {
                q.push_back(w.clone());
            }
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

    fn waiter(id: u64) -> Rc<Waiter> {
        Rc::new(Waiter {
            id,
            notify: Notify::new(),
        })
    }

    #[test]
    fn a_signal_wakes_the_first_waiter_only_and_front_registration_keeps_its_turn() {
        let mut b = Blocked::default();
        let (w1, w2) = (waiter(1), waiter(2));
        let k = vec![b"k".to_vec()];
        b.register(&k, &w1, false);
        b.register(&k, &w2, false);
        b.signal(b"k");
        assert_eq!(b.keys[b"k".as_slice()].len(), 1);
        assert_eq!(b.keys[b"k".as_slice()][0].id, 2);
        // w1 found nothing: back in front of w2.
        b.register(&k, &w1, true);
        assert_eq!(b.keys[b"k".as_slice()][0].id, 1);
        b.unregister(&k, 1);
        b.unregister(&k, 2);
        assert!(b.is_empty());
    }
}
