//! The primary's side: serving replicas, acknowledgements and the quorum wait.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::node::wal;
use crate::node::{Node, Role};

use super::frame::{self, encode_frame};
use super::{fence, PushLink, ReplicaLink, HEARTBEAT};

/// Records read from disk per frame when a replica is behind the ring.
const DISK_BATCH_BYTES: usize = 1024 * 1024;

/// Hands a primary's freshly written records to its replicas' sockets at
/// once, from the connection that wrote them, instead of in the streaming
/// tasks, which run only after every other ready connection: the replicas
/// then apply a batch while the primary parses the next one rather than all
/// waiting for the whole round (a quarter of both cores sat idle in
/// `quorum`). Non-blocking writes only; whatever does not fit is left to
/// the task.
pub fn push_to_replicas(node: &Node) {
    let links = node.repl.push_links.borrow();
    if links.is_empty() {
        return;
    }
    let written = node.wal.written_lsn();
    let mut out = Vec::new();
    for link in links.iter() {
        if link.busy.get() || link.next.get() >= written {
            continue;
        }
        let Some(chunks) = node.wal.ring_after(link.next.get()) else {
            continue;
        };
        out.clear();
        for c in &chunks {
            let skip = wal::skip_records_through(c, link.next.get());
            if skip < c.len() {
                encode_frame(&mut out, frame::RECORDS, &c[skip..]);
            }
        }
        if out.is_empty() {
            continue;
        }
        // SAFETY: `fd` is the streaming task's open socket (the link is
        // unregistered before the socket closes) and `out` is valid memory.
        let n = unsafe { libc::write(link.fd, out.as_ptr().cast(), out.len()) };
        if n < 0 {
            // Full or failing: the task sends (and sees any error).
            continue;
        }
        link.next.set(written);
        if (n as usize) < out.len() {
            link.backlog
                .borrow_mut()
                .extend_from_slice(&out[n as usize..]);
            link.busy.set(true);
            link.wake.notify_one();
        }
    }
}

/// Unregisters a push link when its streaming task ends.
struct PushGuard<'a> {
    node: &'a Node,
    link: Rc<PushLink>,
}

impl Drop for PushGuard<'_> {
    fn drop(&mut self) {
        self.node
            .repl
            .push_links
            .borrow_mut()
            .retain(|l| !Rc::ptr_eq(l, &self.link));
    }
}

/// The LSN after which the log of a node whose records end in `data_epoch`
/// may differ from this primary's (None: it cannot).
fn fork_point(history: &[(u64, u64)], data_epoch: u64) -> Option<u64> {
    history
        .iter()
        .find(|(e, _)| *e > data_epoch)
        .map(|&(_, lsn)| lsn)
}

fn heartbeat_frame(node: &Node, out: &mut Vec<u8>) {
    let mut p = Vec::with_capacity(24);
    p.extend_from_slice(&node.repl.epoch().to_le_bytes());
    p.extend_from_slice(&node.wal.last_lsn().to_le_bytes());
    p.extend_from_slice(&node.repl.mono_ms().to_le_bytes());
    encode_frame(out, frame::HEARTBEAT, &p);
}

/// Handles `TREPLICATE`: takes over the connection and streams to the
/// replica until it disconnects or this node stops being primary.
pub async fn serve_replica(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    args: Vec<Vec<u8>>,
) -> std::io::Result<()> {
    let text = |i: usize| {
        args.get(i)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .unwrap_or_default()
    };
    let num = |i: usize| text(i).parse::<u64>().ok();
    let (Some(epoch), Some(last), Some(data_epoch)) = (num(2), num(4), num(5)) else {
        sock.write_all(
            b"-ERR syntax: TREPLICATE <shard> <epoch> <node-id> <last-lsn> <data-epoch>\r\n",
        )
        .await?;
        return Ok(());
    };
    let replica_id = text(3);
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let my_epoch = node.repl.epoch();
    if epoch > my_epoch {
        // Someone has moved on: this primary is stale and steps down now.
        warn!(offered = epoch, current = my_epoch, replica = %replica_id, "a replica knows a newer epoch; demoting");
        if let Err(e) = fence(node, epoch) {
            warn!(error = %e, "failed to fence after seeing a newer epoch");
        }
    }
    if node.role.get() != Role::Primary {
        sock.write_all(b"-NOTPRIMARY this node is not a primary\r\n")
            .await?;
        return Ok(());
    }
    if epoch < my_epoch {
        sock.write_all(
            format!("-STALEEPOCH replica epoch {epoch} is older than {my_epoch}\r\n").as_bytes(),
        )
        .await?;
        return Ok(());
    }
    if !node.wal.enabled() {
        sock.write_all(b"-ERR replication needs persistence on the primary\r\n")
            .await?;
        return Ok(());
    }
    let history = node.repl.st.borrow().history.clone();
    let fork = fork_point(&history, data_epoch).filter(|&f| last > f);
    let my_last = node.wal.last_lsn();
    if fork.is_none() && last > my_last {
        // The replica holds records this primary never had and nothing
        // proves them divergent: they may be acknowledged writes (this
        // node may run on an old copy of a data directory). A resync would
        // destroy them, so refuse; the operator promotes the node with the
        // most data instead.
        warn!(replica = %replica_id, peer = %peer, replica_lsn = last, lsn = my_last, data_epoch, "a replica's log is ahead of this primary's: refusing it");
        sock.write_all(
            format!(
                "-AHEAD replica log ends at {last}, past this primary's {my_last}: it must not follow this primary\r\n"
            )
            .as_bytes(),
        )
        .await?;
        return Ok(());
    }
    // Records appended but not yet flushed count: before a primary's first
    // flush it has no segment, and a fresh replica must not get a full
    // resync for that (seen as a flaky full resync at LSN 0 in tests).
    let first = node.wal.first_sendable_lsn();
    let retained = last == my_last || (first > 0 && first <= last + 1);
    let partial = fork.is_none() && last <= my_last && retained;
    // A diverged replica that can rebuild its state at any LSN from `floor`
    // on (a local snapshot at or below it, and its log after that) cuts its
    // log at the fork and continues from there when this primary still has
    // every record after the fork.
    let floor = num(6);
    let truncate_at = fork.filter(|&f| {
        floor.is_some_and(|fl| fl <= f) && (f == my_last || (first > 0 && first <= f + 1))
    });

    let gen = node.repl.gen.get();
    let conn_id = node.repl.next_conn.get();
    node.repl.next_conn.set(conn_id + 1);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut next; // last LSN sent
    if partial {
        out.extend_from_slice(format!("+CONTINUE {last} {my_epoch}\r\n").as_bytes());
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        next = last;
        info!(replica = %replica_id, peer = %peer, from_lsn = last, "partial resync");
    } else if let Some(f) = truncate_at {
        out.extend_from_slice(format!("+TRUNCATE {f} {my_epoch}\r\n").as_bytes());
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        next = f;
        info!(replica = %replica_id, peer = %peer, replica_lsn = last, fork_lsn = f, "the replica cuts its log at the fork point; partial resync from there");
    } else {
        info!(replica = %replica_id, peer = %peer, replica_lsn = last, fork = ?fork, "full resync");
        let info = loop {
            match super::server::run_snapshot(node).await {
                Ok(Some(i)) => break i,
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    sock.write_all(
                        format!("-ERR full resync: snapshot failed: {e}\r\n").as_bytes(),
                    )
                    .await?;
                    return Ok(());
                }
            }
        };
        out.extend_from_slice(
            format!(
                "+FULLRESYNC {} {} {my_last}\r\n",
                info.start_lsn,
                fork.unwrap_or(0)
            )
            .as_bytes(),
        );
        encode_frame(
            &mut out,
            frame::HISTORY,
            &serde_json::to_vec(&history).unwrap_or_default(),
        );
        sock.write_all(&out).await?;
        out.clear();
        let mut f = tokio::fs::File::open(&info.path).await?;
        let mut chunk = vec![0u8; 1024 * 1024];
        loop {
            let n = f.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            encode_frame(&mut out, frame::SNAPSHOT, &chunk[..n]);
            sock.write_all(&out).await?;
            out.clear();
        }
        encode_frame(&mut out, frame::SNAPSHOT_END, &info.start_lsn.to_le_bytes());
        sock.write_all(&out).await?;
        out.clear();
        next = info.start_lsn;
    }
    node.repl.replicas.borrow_mut().insert(
        replica_id.clone(),
        ReplicaLink {
            addr: peer.clone(),
            acked_lsn: if partial {
                last
            } else {
                truncate_at.unwrap_or(0)
            },
            connected: true,
            lease_from_ms: 0,
            caught_up_at: Instant::now(),
            conn: conn_id,
        },
    );
    let res = stream_to_replica(node, sock, leftover, &replica_id, gen, conn_id, &mut next).await;
    if let Some(r) = node.repl.replicas.borrow_mut().get_mut(&replica_id) {
        if r.conn == conn_id {
            r.connected = false;
        }
    }
    info!(replica = %replica_id, peer = %peer, sent_lsn = next, result = ?res.as_ref().err().map(|e| e.to_string()), "replica disconnected");
    res
}

/// The steady state: records as they are written, heartbeats, acks.
async fn stream_to_replica(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    replica_id: &str,
    gen: u64,
    conn_id: u64,
    next: &mut u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let link = Rc::new(PushLink {
        fd: sock.as_raw_fd(),
        next: Cell::new(*next),
        busy: Cell::new(false),
        backlog: RefCell::new(Vec::new()),
        wake: Notify::new(),
    });
    node.repl.push_links.borrow_mut().push(link.clone());
    let _guard = PushGuard {
        node,
        link: link.clone(),
    };
    let res = stream_loop(node, sock, leftover, replica_id, gen, conn_id, &link).await;
    *next = link.next.get();
    res
}

async fn stream_loop(
    node: &Rc<Node>,
    sock: &mut TcpStream,
    leftover: Vec<u8>,
    replica_id: &str,
    gen: u64,
    conn_id: u64,
    link: &PushLink,
) -> std::io::Result<()> {
    node.wal.activate_ring();
    let (mut rd, mut wr) = sock.split();
    let mut inbuf = leftover;
    let mut rbuf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut shutdown = node.shutdown.subscribe();
    loop {
        if node.repl.gen.get() != gen || node.role.get() != Role::Primary {
            return Ok(());
        }
        link.busy.set(true);
        // What a push could not write goes first.
        let backlog = std::mem::take(&mut *link.backlog.borrow_mut());
        if !backlog.is_empty() {
            wr.write_all(&backlog).await?;
        }
        // Everything written since the last send.
        out.clear();
        let mut budget = DISK_BATCH_BYTES * 4;
        while link.next.get() < node.wal.written_lsn() && budget > 0 {
            let next = link.next.get();
            match node.wal.ring_after(next) {
                Some(chunks) => {
                    for c in chunks {
                        let skip = wal::skip_records_through(&c, next);
                        let body = &c[skip..];
                        if body.is_empty() {
                            continue;
                        }
                        encode_frame(&mut out, frame::RECORDS, body);
                        budget = budget.saturating_sub(body.len());
                    }
                    link.next.set(node.wal.written_lsn());
                }
                None => {
                    // Behind the ring: read the segments.
                    let written = node.wal.written_lsn();
                    let mut batch = Vec::new();
                    let reader = node.wal.read_from(next).map_err(std::io::Error::other)?;
                    let mut last = next;
                    for rec in reader {
                        let rec = rec.map_err(std::io::Error::other)?;
                        if rec.lsn > written {
                            break;
                        }
                        let args: Vec<&[u8]> = rec.args.iter().map(|a| a.as_slice()).collect();
                        wal::encode_record(&mut batch, rec.lsn, rec.slot, &args);
                        last = rec.lsn;
                        if batch.len() >= DISK_BATCH_BYTES {
                            break;
                        }
                    }
                    if last == next {
                        return Err(std::io::Error::other(format!(
                            "record {} is neither in memory nor on disk any more",
                            next + 1
                        )));
                    }
                    budget = budget.saturating_sub(batch.len());
                    encode_frame(&mut out, frame::RECORDS, &batch);
                    link.next.set(last);
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            // A catch-up can fill it with the whole ring; between sends it
            // goes back to its usual size instead of holding that memory.
            if out.capacity() > 1024 * 1024 {
                out = Vec::with_capacity(64 * 1024);
            }
        }
        link.busy.set(false);
        let ring = node.wal.ring_changed().notified();
        let pushed = link.wake.notified();
        tokio::pin!(ring, pushed);
        ring.as_mut().enable();
        pushed.as_mut().enable();
        if link.next.get() < node.wal.written_lsn() || !link.backlog.borrow().is_empty() {
            continue;
        }
        tokio::select! {
            _ = &mut ring => {}
            _ = &mut pushed => {}
            _ = tick.tick() => {
                out.clear();
                heartbeat_frame(node, &mut out);
                link.busy.set(true);
                wr.write_all(&out).await?;
                link.busy.set(false);
            }
            r = rd.read(&mut rbuf) => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                inbuf.extend_from_slice(&rbuf[..n]);
                handle_acks(node, &mut inbuf, replica_id, conn_id)?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
        if !inbuf.is_empty() {
            handle_acks(node, &mut inbuf, replica_id, conn_id)?;
        }
    }
}

/// Parses `TACK <lsn> <echo-ms>` lines.
fn handle_acks(
    node: &Rc<Node>,
    inbuf: &mut Vec<u8>,
    replica_id: &str,
    conn_id: u64,
) -> std::io::Result<()> {
    let mut consumed = 0;
    while let Some(pos) = inbuf[consumed..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&inbuf[consumed..consumed + pos]).to_string();
        consumed += pos + 1;
        let mut it = line.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(c), Some(lsn), Some(echo)) if c.eq_ignore_ascii_case("TACK") => {
                let (Ok(lsn), Ok(echo)) = (lsn.parse::<u64>(), echo.parse::<u64>()) else {
                    return Err(std::io::Error::other(format!("malformed ack {line:?}")));
                };
                let last = node.wal.last_lsn();
                let mut reps = node.repl.replicas.borrow_mut();
                if let Some(r) = reps.get_mut(replica_id) {
                    if r.conn == conn_id {
                        r.acked_lsn = r.acked_lsn.max(lsn);
                        r.lease_from_ms = r.lease_from_ms.max(echo);
                        if r.acked_lsn >= last {
                            r.caught_up_at = Instant::now();
                        }
                    }
                }
                drop(reps);
                node.repl.acks_progressed(node);
            }
            (Some(c), Some(epoch), _) if c.eq_ignore_ascii_case("TFENCED") => {
                let epoch = epoch.parse::<u64>().unwrap_or(0);
                if epoch > node.repl.epoch() {
                    warn!(replica = %replica_id, epoch, "a replica moved to a newer epoch; demoting");
                    if let Err(e) = fence(node, epoch) {
                        warn!(error = %e, "failed to fence after seeing a newer epoch");
                    }
                }
                return Err(std::io::Error::other(format!(
                    "the replica left at epoch {epoch}"
                )));
            }
            _ if line.trim().is_empty() => {}
            _ => return Err(std::io::Error::other(format!("unexpected line {line:?}"))),
        }
    }
    inbuf.drain(..consumed);
    Ok(())
}

/// Waits until the acknowledgement rule holds for `lsn` (the local log has
/// already taken it). The error replaces the replies of the batch's writes.
pub async fn wait_rule(node: &Node, lsn: u64) -> Result<(), String> {
    let (k, _n) = node.repl.required(node);
    if k == 0 {
        return Ok(());
    }
    if node.role.get() != Role::Primary {
        return Err(
            "READONLY this node stopped being the primary before the write was acknowledged".into(),
        );
    }
    let start = Instant::now();
    let timeout = node.repl.cfg.borrow().ack_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    loop {
        if node.role.get() != Role::Primary {
            return Err(
                "READONLY this node stopped being the primary before the write was acknowledged"
                    .into(),
            );
        }
        let got = node.repl.count_acked(lsn);
        if got >= k {
            node.repl.ack_latency.observe(start.elapsed().as_secs_f64());
            return Ok(());
        }
        // The lease is judged a few heartbeats into the wait: a batch that
        // held the event loop past the lease (a long script) finds it
        // expired only because no acknowledgement could be read meanwhile.
        let lease = (start.elapsed() >= 3 * HEARTBEAT)
            .then(|| node.repl.lease_error(node))
            .flatten();
        if let Some(e) = lease {
            // Applied and logged already: not a refusal (NOQUORUM means the
            // write was not applied), an unknown outcome like NOREPLICAS'.
            let why = e.strip_prefix("NOQUORUM ").unwrap_or(&e);
            return Err(format!(
                "NOREPLICAS the write is applied but not acknowledged: {why}"
            ));
        }
        tokio::select! {
            _ = node.repl.rule_covers(node, lsn) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let got = node.repl.count_acked(lsn);
                if got >= k {
                    return Ok(());
                }
                return Err(format!(
                    "NOREPLICAS Not enough replicas acknowledged the write: {got} of {k} required (timeout {timeout} ms)"
                ));
            }
            // The lease can run out while nothing is acknowledged.
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// `WAIT numreplicas timeout`: replicas that acknowledged everything logged
/// so far, waiting up to `timeout_ms` (0: forever) for `want` of them.
pub async fn wait_command(node: &Node, want: usize, timeout_ms: u64) -> i64 {
    let lsn = node.wal.last_lsn();
    // A deadline past what the clock can represent is no deadline.
    let deadline = (timeout_ms > 0)
        .then(|| tokio::time::Instant::now().checked_add(Duration::from_millis(timeout_ms)))
        .flatten();
    loop {
        let notified = node.repl.acked.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let got = node.repl.count_acked(lsn);
        if got >= want || node.role.get() != Role::Primary {
            return got as i64;
        }
        match deadline {
            Some(d) => tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(d) => return node.repl.count_acked(lsn) as i64,
            },
            None => notified.await,
        }
    }
}
