//! Pub/sub state: which connections subscribe to which channels, patterns
//! and shard channels, and the messages waiting to be sent to each.
//!
//! PUBLISH encodes the message for each subscriber (RESP2 array or RESP3
//! push) into that subscriber's queue and wakes its connection, which
//! writes the queue out; a subscriber that does not read is closed once
//! its queue passes the client output buffer limit, as Redis closes a
//! pub/sub client past its output limit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use hashbrown::{HashMap, HashSet};
use tokio::sync::Notify;

use super::resp::ReplyBuf;

/// What a subscription is to: the three name spaces of Redis pub/sub.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

/// One subscribed connection.
pub struct Subscriber {
    pub id: u64,
    pub resp3: Cell<bool>,
    /// Encoded messages not yet written to the socket.
    pub queue: RefCell<Vec<u8>>,
    pub notify: Notify,
    /// The queue passed the output limit: the connection closes.
    pub overflow: Cell<bool>,
    pub limit: usize,
    subs: RefCell<[HashSet<Vec<u8>>; 3]>,
}

impl Subscriber {
    pub fn new(id: u64, resp3: bool, limit: usize) -> Self {
        Self {
            id,
            resp3: Cell::new(resp3),
            queue: RefCell::new(Vec::new()),
            notify: Notify::new(),
            overflow: Cell::new(false),
            limit,
            subs: RefCell::new(Default::default()),
        }
    }

    /// Channels plus patterns (what SUBSCRIBE's count reports).
    pub fn count(&self) -> usize {
        let s = self.subs.borrow();
        s[0].len() + s[1].len()
    }

    pub fn shard_count(&self) -> usize {
        self.subs.borrow()[2].len()
    }

    pub fn names(&self, kind: Kind) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self.subs.borrow()[kind as usize].iter().cloned().collect();
        v.sort();
        v
    }

    pub fn is_subscribed(&self) -> bool {
        self.subs.borrow().iter().any(|s| !s.is_empty())
    }

    fn push(&self, parts: &[&[u8]]) {
        if self.overflow.get() {
            return;
        }
        let mut out = ReplyBuf::new();
        if self.resp3.get() {
            out.buf
                .extend_from_slice(format!(">{}\r\n", parts.len()).as_bytes());
        } else {
            out.array(parts.len());
        }
        for p in parts {
            out.bulk(p);
        }
        let mut q = self.queue.borrow_mut();
        q.extend_from_slice(&out.buf);
        if q.len() > self.limit {
            q.clear();
            self.overflow.set(true);
        }
        self.notify.notify_one();
    }
}

/// Every subscription of the node, by name.
#[derive(Default)]
pub struct PubSub {
    by_name: [HashMap<Vec<u8>, Vec<Rc<Subscriber>>>; 3],
}

impl PubSub {
    /// Adds a subscription; false when the subscriber already had it.
    pub fn subscribe(&mut self, sub: &Rc<Subscriber>, kind: Kind, name: &[u8]) -> bool {
        if !sub.subs.borrow_mut()[kind as usize].insert(name.to_vec()) {
            return false;
        }
        self.by_name[kind as usize]
            .entry(name.to_vec())
            .or_default()
            .push(sub.clone());
        true
    }

    /// Removes a subscription; false when the subscriber did not have it.
    pub fn unsubscribe(&mut self, sub: &Subscriber, kind: Kind, name: &[u8]) -> bool {
        if !sub.subs.borrow_mut()[kind as usize].remove(name) {
            return false;
        }
        let map = &mut self.by_name[kind as usize];
        if let Some(v) = map.get_mut(name) {
            v.retain(|s| s.id != sub.id);
            if v.is_empty() {
                map.remove(name);
            }
        }
        true
    }

    /// Drops every subscription of a closed connection.
    pub fn remove_all(&mut self, sub: &Subscriber) {
        for kind in [Kind::Channel, Kind::Pattern, Kind::Shard] {
            for name in sub.names(kind) {
                self.unsubscribe(sub, kind, &name);
            }
        }
    }

    /// PUBLISH / SPUBLISH: queues the message for every subscriber (and,
    /// for a channel, every matching pattern); the number reached.
    pub fn publish(&self, shard: bool, channel: &[u8], msg: &[u8]) -> usize {
        let mut n = 0;
        if shard {
            for s in self.by_name[Kind::Shard as usize]
                .get(channel)
                .into_iter()
                .flatten()
            {
                s.push(&[b"smessage", channel, msg]);
                n += 1;
            }
            return n;
        }
        for s in self.by_name[Kind::Channel as usize]
            .get(channel)
            .into_iter()
            .flatten()
        {
            s.push(&[b"message", channel, msg]);
            n += 1;
        }
        for (pat, subs) in &self.by_name[Kind::Pattern as usize] {
            if super::cmd::server::glob_match(pat, channel) {
                for s in subs {
                    s.push(&[b"pmessage", pat, channel, msg]);
                    n += 1;
                }
            }
        }
        n
    }

    /// Active channels (PUBSUB CHANNELS / SHARDCHANNELS), optionally
    /// matching a pattern.
    pub fn active(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self.by_name[kind as usize]
            .keys()
            .filter(|c| pattern.is_none_or(|p| super::cmd::server::glob_match(p, c)))
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn subscribers(&self, kind: Kind, name: &[u8]) -> usize {
        self.by_name[kind as usize].get(name).map_or(0, Vec::len)
    }

    pub fn patterns(&self) -> usize {
        self.by_name[Kind::Pattern as usize].len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_reaches_channel_and_pattern_subscribers_once_each() {
        let mut ps = PubSub::default();
        let a = Rc::new(Subscriber::new(1, false, 1 << 20));
        let b = Rc::new(Subscriber::new(2, true, 1 << 20));
        assert!(ps.subscribe(&a, Kind::Channel, b"news"));
        assert!(!ps.subscribe(&a, Kind::Channel, b"news"));
        assert!(ps.subscribe(&b, Kind::Pattern, b"n*"));
        assert_eq!(ps.publish(false, b"news", b"hi"), 2);
        assert_eq!(
            a.queue.borrow().as_slice(),
            b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(
            b.queue.borrow().as_slice(),
            b">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(ps.publish(true, b"news", b"hi"), 0);
        ps.remove_all(&a);
        assert_eq!(ps.subscribers(Kind::Channel, b"news"), 0);
        assert_eq!(ps.active(Kind::Channel, None), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn a_subscriber_past_its_limit_is_marked_and_its_queue_dropped() {
        let mut ps = PubSub::default();
        let a = Rc::new(Subscriber::new(1, false, 64));
        ps.subscribe(&a, Kind::Channel, b"c");
        ps.publish(false, b"c", &[b'x'; 100]);
        assert!(a.overflow.get());
        assert!(a.queue.borrow().is_empty());
    }
}
