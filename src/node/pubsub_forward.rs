//! Cluster-wide PUBLISH without a gossip bus: the node that receives a
//! PUBLISH forwards it to every other node of its current topology as
//! `TPUBLISH channel message`, which delivers to that node's subscribers
//! only (never forwarded again, so there are no loops). SPUBLISH goes to
//! the other nodes of this node's shard only, as `TPUBLISH channel
//! message SHARD` (the replicas' shard-channel subscribers).
//!
//! Each peer has one long-lived link, opened at its first message, and a
//! bounded queue. PUBLISH only queues: it never waits on a peer. A message
//! that finds its peer's queue full, or the peer unreachable, is dropped
//! and counted (pub/sub is at-most-once in Redis too), with a warning at
//! most every [`WARN_EVERY`] per peer.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::resp::encode_command;
use super::slots::{NodeAddr, Topology};
use super::Node;

/// What one peer's queue may hold before new messages are dropped.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A write (or the AUTH reply) that takes longer means the peer is stuck.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, messages to that peer are dropped this long
/// before the next attempt, so an unreachable peer costs nothing.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Bytes written to the socket in one go.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{addr} refused AUTH: {reply}")]
    Auth { addr: String, reply: String },
    #[error("link to {addr}: {reason}")]
    Io { addr: String, reason: String },
}

/// The links of this node to its peers, and the counters of what went
/// through them.
#[derive(Default)]
pub struct Forwarder {
    links: RefCell<HashMap<String, Rc<Peer>>>,
    /// New links whose task the supervisor has yet to start.
    to_start: RefCell<Vec<Rc<Peer>>>,
    wake: Notify,
    /// Messages written to a peer's link.
    pub forwarded: Cell<u64>,
    /// Messages dropped (queue full, peer unreachable, link broken).
    pub dropped: Cell<u64>,
}

/// One peer: its address, queue and link state.
struct Peer {
    addr: NodeAddr,
    queue: RefCell<VecDeque<Rc<[u8]>>>,
    queued_bytes: Cell<usize>,
    wake: Notify,
    /// The peer left the topology (or moved): the task ends.
    closed: Cell<bool>,
    /// Messages are dropped until then (the last connect failed).
    down_until: Cell<Option<Instant>>,
    unwarned_drops: Cell<u64>,
    last_warn: Cell<Option<Instant>>,
    /// When a refusal by the peer (an error reply) was last logged.
    last_refusal_warn: Cell<Option<Instant>>,
}

impl Peer {
    fn new(addr: NodeAddr) -> Self {
        Self {
            addr,
            queue: Default::default(),
            queued_bytes: Cell::new(0),
            wake: Notify::new(),
            closed: Cell::new(false),
            down_until: Cell::new(None),
            unwarned_drops: Cell::new(0),
            last_warn: Cell::new(None),
            last_refusal_warn: Cell::new(None),
        }
    }

    fn label(&self) -> String {
        format!("{}:{}", self.addr.host, self.addr.port)
    }

    fn drop_messages(&self, fwd: &Forwarder, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        fwd.dropped.set(fwd.dropped.get() + n);
        let pending = self.unwarned_drops.get() + n;
        let now = Instant::now();
        if self
            .last_warn
            .get()
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.unwarned_drops.set(pending);
            return;
        }
        self.last_warn.set(Some(now));
        self.unwarned_drops.set(0);
        tracing::warn!(peer = %self.addr.id, addr = %self.label(), dropped = pending, reason = why, "PUBLISH messages not forwarded to a peer");
    }

    /// Empties the queue, counting its messages as dropped.
    fn drop_queue(&self, fwd: &Forwarder, why: &str) {
        let n = self.queue.borrow().len() as u64;
        self.queue.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.drop_messages(fwd, n, why);
    }

    /// Up to [`BATCH_BYTES`] of queued commands, and how many.
    fn take_batch(&self, buf: &mut Vec<u8>) -> u64 {
        let mut q = self.queue.borrow_mut();
        let mut n = 0;
        while let Some(m) = q.front() {
            if !buf.is_empty() && buf.len() + m.len() > BATCH_BYTES {
                break;
            }
            buf.extend_from_slice(m);
            self.queued_bytes.set(self.queued_bytes.get() - m.len());
            q.pop_front();
            n += 1;
        }
        n
    }
}

/// Every node of the topology but this one.
fn peers<'t>(topology: &'t Topology, me: &'t str) -> impl Iterator<Item = &'t NodeAddr> + 't {
    topology
        .shards
        .iter()
        .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
        .filter(move |a| a.id != me)
}

/// The other nodes of this node's shard.
fn shard_peers<'t>(
    topology: &'t Topology,
    shard: usize,
    me: &'t str,
) -> impl Iterator<Item = &'t NodeAddr> + 't {
    topology
        .shards
        .get(shard)
        .into_iter()
        .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
        .filter(move |a| a.id != me)
}

/// Queues a PUBLISH for every other node of the topology (an SPUBLISH, when
/// `shard`, for the other nodes of this node's shard); never waits.
pub fn forward(node: &Node, shard: bool, channel: &[u8], msg: &[u8]) {
    let map = node.slot_map.borrow();
    let fwd = &node.forwarder;
    let mut cmd: Option<Rc<[u8]>> = None;
    let mut seen = hashbrown::HashSet::new();
    let targets: Box<dyn Iterator<Item = &NodeAddr>> = if shard {
        Box::new(shard_peers(&map.topology, map.my_shard, &node.id))
    } else {
        Box::new(peers(&map.topology, &node.id))
    };
    for addr in targets {
        if !seen.insert(addr.id.as_str()) {
            continue;
        }
        let peer = fwd.link(addr);
        if peer.down_until.get().is_some_and(|t| Instant::now() < t) {
            peer.drop_messages(fwd, 1, "peer unreachable");
            continue;
        }
        let cmd = cmd
            .get_or_insert_with(|| {
                let mut b = Vec::with_capacity(channel.len() + msg.len() + 48);
                if shard {
                    encode_command(&[b"TPUBLISH", channel, msg, b"SHARD"], &mut b);
                } else {
                    encode_command(&[b"TPUBLISH", channel, msg], &mut b);
                }
                b.into()
            })
            .clone();
        if peer.queued_bytes.get() + cmd.len() > QUEUE_BYTES {
            peer.drop_messages(fwd, 1, "peer queue full");
            continue;
        }
        peer.queued_bytes.set(peer.queued_bytes.get() + cmd.len());
        peer.queue.borrow_mut().push_back(cmd);
        peer.wake.notify_one();
    }
}

impl Forwarder {
    /// The link to `addr`, created (and its task requested) at first use.
    fn link(&self, addr: &NodeAddr) -> Rc<Peer> {
        if let Some(p) = self.links.borrow().get(&addr.id) {
            if p.addr == *addr {
                return p.clone();
            }
            // Same node, new address: the old link is done.
            p.closed.set(true);
            p.wake.notify_one();
        }
        let p = Rc::new(Peer::new(addr.clone()));
        self.links.borrow_mut().insert(addr.id.clone(), p.clone());
        self.to_start.borrow_mut().push(p.clone());
        self.wake.notify_one();
        p
    }

    /// Closes the links of nodes no longer in the topology.
    pub fn on_topology(&self, topology: &Topology, me: &str) {
        let current: hashbrown::HashSet<&str> =
            peers(topology, me).map(|a| a.id.as_str()).collect();
        self.links.borrow_mut().retain(|id, p| {
            let keep = current.contains(id.as_str());
            if !keep {
                p.closed.set(true);
                p.wake.notify_one();
            }
            keep
        });
    }

    /// Peers with a link (for tests and status).
    pub fn links(&self) -> usize {
        self.links.borrow().len()
    }
}

/// Starts the task of every new link, for the life of the node.
pub async fn supervise(node: Rc<Node>) {
    loop {
        node.forwarder.wake.notified().await;
        let new = std::mem::take(&mut *node.forwarder.to_start.borrow_mut());
        for peer in new {
            tokio::task::spawn_local(run_link(node.clone(), peer));
        }
    }
}

/// A connected link: the write half; a reader task consumes the replies
/// and sets `dead` when the peer goes away.
struct Conn {
    wr: OwnedWriteHalf,
    dead: Rc<Cell<bool>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    /// A dropped link's reader must not wait on a peer that never closes.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn open(node: &Node, peer: &Rc<Peer>) -> Result<Conn, LinkError> {
    let a = &peer.addr;
    let connect_err = |reason: String| LinkError::Connect {
        addr: peer.label(),
        reason,
    };
    let sock = tokio::time::timeout(
        CONNECT_TIMEOUT,
        super::tls::connect_peer(node, &a.host, a.port, a.tls_port),
    )
    .await
    .map_err(|_| connect_err("timed out".into()))?
    .map_err(|e| connect_err(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(4096, rd);
    let io_err = |reason: String| LinkError::Io {
        addr: peer.label(),
        reason,
    };
    // The cluster shares one password: the link authenticates with it.
    if let Some(pw) = &node.cfg.password {
        let mut buf = Vec::new();
        encode_command(&[b"AUTH".as_slice(), pw.as_bytes()], &mut buf);
        let mut line = String::new();
        let auth = async {
            wr.write_all(&buf).await?;
            rd.read_line(&mut line).await
        };
        match tokio::time::timeout(IO_TIMEOUT, auth).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => return Err(io_err("closed during AUTH".into())),
            Ok(Err(e)) => return Err(io_err(e.to_string())),
            Err(_) => return Err(io_err("no AUTH reply".into())),
        }
        if !line.starts_with("+OK") {
            return Err(LinkError::Auth {
                addr: peer.label(),
                reply: line.trim_end().to_string(),
            });
        }
    }
    let dead = Rc::new(Cell::new(false));
    let reader = tokio::task::spawn_local(read_replies(rd, peer.clone(), dead.clone()));
    Ok(Conn { wr, dead, reader })
}

/// Consumes the peer's replies (integers); logs refusals; marks the link
/// dead at EOF or on an error.
async fn read_replies(
    mut rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    peer: Rc<Peer>,
    dead: Rc<Cell<bool>>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match rd.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) if line.starts_with('-') => {
                let now = Instant::now();
                let quiet = peer
                    .last_refusal_warn
                    .get()
                    .is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
                if quiet {
                    peer.last_refusal_warn.set(Some(now));
                    tracing::warn!(peer = %peer.addr.id, addr = %peer.label(), reply = %line.trim_end(), "a peer refused a forwarded PUBLISH");
                }
            }
            Ok(_) => {}
        }
        if peer.closed.get() {
            break;
        }
    }
    dead.set(true);
    peer.wake.notify_one();
}

/// The life of one peer link: connect when there is something to send,
/// write batches, reconnect after a failure.
async fn run_link(node: Rc<Node>, peer: Rc<Peer>) {
    let fwd = &node.forwarder;
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    loop {
        if peer.closed.get() {
            peer.drop_queue(fwd, "peer left the topology");
            return;
        }
        if conn.as_ref().is_some_and(|c| c.dead.get()) {
            conn = None;
        }
        if peer.queue.borrow().is_empty() {
            peer.wake.notified().await;
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match open(&node, &peer).await {
                Ok(c) => {
                    peer.down_until.set(None);
                    conn.insert(c)
                }
                Err(e) => {
                    peer.down_until.set(Some(Instant::now() + RETRY_AFTER));
                    peer.drop_queue(fwd, &e.to_string());
                    continue;
                }
            },
        };
        buf.clear();
        let n = peer.take_batch(&mut buf);
        match tokio::time::timeout(IO_TIMEOUT, c.wr.write_all(&buf)).await {
            Ok(Ok(())) => fwd.forwarded.set(fwd.forwarded.get() + n),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "write timed out".to_string(),
                };
                c.dead.set(true);
                conn = None;
                peer.drop_messages(fwd, n, &why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::slots::ShardTopology;

    fn addr(id: &str, port: u16) -> NodeAddr {
        NodeAddr {
            id: id.into(),
            host: "127.0.0.1".into(),
            port,
            tls_port: None,
        }
    }

    #[test]
    fn peers_are_every_other_node_primaries_and_replicas() {
        let t = Topology {
            epoch: 1,
            shards: vec![
                ShardTopology {
                    name: "a".into(),
                    slots: vec![(0, 100)],
                    primary: addr("me", 1),
                    replicas: vec![addr("r1", 2)],
                    epoch: 1,
                },
                ShardTopology {
                    name: "b".into(),
                    slots: vec![(101, 200)],
                    primary: addr("p2", 3),
                    replicas: vec![addr("r2", 4)],
                    epoch: 1,
                },
            ],
        };
        let ids: Vec<&str> = peers(&t, "me").map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["r1", "p2", "r2"]);
        let ids: Vec<&str> = shard_peers(&t, 1, "r2").map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["p2"]);
    }

    #[test]
    fn a_batch_takes_whole_commands_and_keeps_the_byte_count() {
        let p = Peer::new(addr("x", 1));
        for _ in 0..3 {
            let m: Rc<[u8]> = vec![b'x'; BATCH_BYTES / 2].into();
            p.queued_bytes.set(p.queued_bytes.get() + m.len());
            p.queue.borrow_mut().push_back(m);
        }
        let mut buf = Vec::new();
        assert_eq!(p.take_batch(&mut buf), 2);
        assert_eq!(buf.len(), BATCH_BYTES);
        assert_eq!(p.queued_bytes.get(), BATCH_BYTES / 2);
        buf.clear();
        assert_eq!(p.take_batch(&mut buf), 1);
        assert_eq!(p.queued_bytes.get(), 0);
    }

    #[test]
    fn drops_are_counted_even_when_the_warning_is_held_back() {
        let f = Forwarder::default();
        let p = Peer::new(addr("x", 1));
        p.drop_messages(&f, 3, "test");
        p.drop_messages(&f, 2, "test");
        assert_eq!(f.dropped.get(), 5);
        assert_eq!(p.unwarned_drops.get(), 2);
    }
}
