//! The replica's side: following a primary and applying its stream.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::node::cmd::{self, Args, Ctx, Effects};
use crate::node::resp::ReplyBuf;
use crate::node::slots::SLOTS;
use crate::node::store::{ExpireMode, Store};
use crate::node::wal::{self, GLOBAL_SLOT};
use crate::node::Node;

use super::frame::{self, read_frame, read_line, u64_at};
use super::{
    discard_held, discard_local_state, hold_snapshots, ForkInfo, LinkState, PendingResync,
    ReplError, HEARTBEAT, RESYNC_FILE_PREFIX,
};

/// The longest wait between attempts to reach a primary that went away.
/// Short: a primary restarted in place (quorum, strong) acknowledges nothing
/// until enough replicas are back, so every second spent here is a second
/// of refused writes.
const RECONNECT_MAX: Duration = Duration::from_millis(500);
/// The same for a primary that refused this replica as ahead of it: that
/// lasts until the operator acts, and each attempt logs a warning.
const REFUSED_MAX: Duration = Duration::from_secs(2);

pub(super) async fn follow_loop(node: Rc<Node>, gen: u64) {
    let mut backoff = Duration::from_millis(100);
    // Offer to cut the log at a fork point (TREPLICATE's optional last
    // argument) until a primary that predates it refuses the argument.
    let mut offer_truncation = true;
    loop {
        if node.repl.gen.get() != gen {
            return;
        }
        let started = Instant::now();
        let res = follow_once(&node, gen, offer_truncation).await;
        // A superseded loop stops here without touching the link state.
        if node.repl.gen.get() != gen {
            return;
        }
        let mut cap = RECONNECT_MAX;
        match res {
            Err(ReplError::Refused { reply, .. })
                if offer_truncation && reply.contains("wrong number of arguments") =>
            {
                info!("the primary does not take a truncation floor; asking without it");
                offer_truncation = false;
                continue;
            }
            Ok(()) => {
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::Down;
                });
            }
            Err(ReplError::Ahead { addr, reply }) => {
                let e = ReplError::Ahead {
                    addr,
                    reply: reply.clone(),
                };
                cap = REFUSED_MAX;
                warn!(error = %e, lsn = node.wal.last_lsn(), retry_in_ms = backoff.min(cap).as_millis() as u64, "the primary refused this replica: its log is ahead of the primary's");
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::RefusedAhead;
                    f.follow_error = Some(reply);
                    f.last_error = Some(e.to_string());
                });
            }
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.min(cap).as_millis() as u64, "replication link down");
                node.repl.set_link(gen, |f| {
                    f.link_up = false;
                    f.link_state = LinkState::Down;
                    f.last_error = Some(e.to_string());
                });
            }
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        let wait = backoff.min(cap);
        tokio::time::sleep(wait).await;
        backoff = (wait * 2).min(cap);
    }
}

/// A received record applied to the keyspace, as recovery applies it.
/// Applies logged records to the keyspace: a replica's received frames, and
/// recovery's log replay (with the loaded snapshot's watermarks).
pub(crate) struct Applier {
    conn: cmd::ConnState,
    out: ReplyBuf,
    effects: Effects,
    buf: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
    /// A received frame's records, decoded in place (reused per frame).
    views: Vec<wal::RecordView>,
    view_ranges: Vec<std::ops::Range<usize>>,
    /// After a full resync: per-slot LSNs the loaded snapshot reflects.
    watermarks: Option<Vec<u64>>,
}

impl Applier {
    pub(crate) fn new(node: &Node) -> Self {
        let mut conn = node.new_conn("replication".into());
        conn.authenticated = true;
        Self {
            conn,
            out: ReplyBuf::new(),
            effects: Effects::default(),
            buf: Vec::new(),
            ranges: Vec::new(),
            views: Vec::new(),
            view_ranges: Vec::new(),
            watermarks: None,
        }
    }

    /// Applies a decoded record (copies its arguments into one buffer).
    /// Recovery: records at or below a slot's watermark are already in the
    /// loaded snapshot.
    pub(crate) fn with_watermarks(node: &Node, watermarks: Option<Vec<u64>>) -> Self {
        Self {
            watermarks,
            ..Self::new(node)
        }
    }

    pub(crate) fn apply(&mut self, node: &Node, rec: &wal::Record) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut ranges = std::mem::take(&mut self.ranges);
        buf.clear();
        ranges.clear();
        for a in &rec.args {
            let start = buf.len();
            buf.extend_from_slice(a);
            ranges.push(start..buf.len());
        }
        self.apply_args(node, rec.lsn, rec.slot, &buf, &ranges);
        self.buf = buf;
        self.ranges = ranges;
    }

    /// Logs and applies a RECORDS frame's payload: the LSN of its last
    /// record (None when it holds none). Decoded in place and applied from
    /// the frame: a replica copies each record once, into its own log.
    pub(crate) fn apply_records(
        &mut self,
        node: &Node,
        payload: &[u8],
    ) -> Result<Option<u64>, String> {
        let mut views = std::mem::take(&mut self.views);
        let mut ranges = std::mem::take(&mut self.view_ranges);
        views.clear();
        ranges.clear();
        let res = wal::decode_records_in_place(payload, &mut views, &mut ranges).and_then(|()| {
            let (Some(first), Some(last)) = (views.first(), views.last()) else {
                return Ok(None);
            };
            let (first, last) = (first.lsn, last.lsn);
            // The log takes the frame whole under its first and last LSN:
            // the ones between must follow each other too.
            if let Some(w) = views
                .windows(2)
                .find(|w| w[0].lsn.checked_add(1) != Some(w[1].lsn))
            {
                return Err(format!(
                    "record LSN {} follows {} in a frame",
                    w[1].lsn, w[0].lsn
                ));
            }
            node.wal.append_encoded(first, last, payload)?;
            for v in &views {
                self.apply_args(node, v.lsn, v.slot, payload, &ranges[v.args.clone()]);
            }
            Ok(Some(last))
        });
        self.views = views;
        self.view_ranges = ranges;
        res
    }

    /// Applies a record whose arguments are `ranges` into `buf` (for a
    /// received frame: the frame itself, no copy).
    fn apply_args(
        &mut self,
        node: &Node,
        lsn: u64,
        slot: u16,
        buf: &[u8],
        ranges: &[std::ops::Range<usize>],
    ) {
        if slot == wal::MARKER_SLOT {
            // A time marker (for point-in-time restores), not a command; or
            // a slot migration's record (staging lives outside the store).
            // Or a change of the loaded scripts.
            let first = ranges.first().map(|r| &buf[r.clone()]);
            if first == Some(crate::node::migration::RECORD) {
                let args: Vec<&[u8]> = ranges.iter().map(|r| &buf[r.clone()]).collect();
                crate::node::migration::target::apply_record(node, lsn, &args);
            } else if first == Some(crate::node::script_registry::RECORD) {
                let args: Vec<&[u8]> = ranges.iter().map(|r| &buf[r.clone()]).collect();
                crate::node::script_registry::apply_record(node, lsn, &args);
            }
            return;
        }
        if ranges.first().map(|r| &buf[r.clone()]) == Some(cmd::multi::GROUP) {
            self.apply_group(node, lsn, buf, &ranges[1..]);
            return;
        }
        let wm = &self.watermarks;
        let applies = |slot: u16| wm.as_ref().is_none_or(|w| lsn > w[slot as usize]);
        if slot == GLOBAL_SLOT {
            let mut store = node.store.borrow_mut();
            for slot in 0..SLOTS as u16 {
                if applies(slot) {
                    store.flush_slot(slot);
                }
            }
            return;
        }
        if !applies(slot) {
            return;
        }
        let args = Args { buf, ranges };
        let mut store = node.store.borrow_mut();
        // Per record: the coarse clock (a replica never expires by clock; the
        // logged DELs decide), a precise read here cost ~10% of a replica.
        store.now_ms = wal::coarse_now_ms();
        let mut ctx = Ctx::new(
            node,
            &mut store,
            &mut self.out,
            &mut self.conn,
            &mut self.effects,
        );
        ctx.replaying = true;
        ctx.logged_slot = Some(slot);
        cmd::dispatch(&mut ctx, &args);
        self.out.buf.clear();
    }
}

impl Applier {
    /// A transaction's or a script's record: each part as the record it
    /// would have been, at the group's LSN (so a slot's watermark decides
    /// for each part as it would for a plain record).
    fn apply_group(&mut self, node: &Node, lsn: u64, buf: &[u8], parts: &[std::ops::Range<usize>]) {
        for r in parts {
            let Some((slot, ranges)) = cmd::multi::decode_part(&buf[r.clone()]) else {
                warn!(lsn, "a malformed part of a group record was skipped");
                continue;
            };
            let abs: Vec<_> = ranges
                .iter()
                .map(|x| x.start + r.start..x.end + r.start)
                .collect();
            if abs.first().map(|x| &buf[x.clone()]) == Some(cmd::multi::GROUP) {
                continue;
            }
            self.apply_args(node, lsn, slot, buf, &abs);
        }
    }
}

async fn follow_once(node: &Rc<Node>, gen: u64, offer_truncation: bool) -> Result<(), ReplError> {
    let Some(primary) = node.repl.primary_addr() else {
        return Ok(());
    };
    let addr = format!("{}:{}", primary.host, primary.port);
    let link_err = |source| ReplError::Link {
        addr: addr.clone(),
        source,
    };
    let proto = |reason: String| ReplError::Protocol {
        addr: addr.clone(),
        reason,
    };
    let sock = tokio::time::timeout(
        Duration::from_secs(2),
        crate::node::tls::connect_peer(node, &primary.host, primary.port, primary.tls_port),
    )
    .await
    .map_err(|_| ReplError::Connect {
        addr: addr.clone(),
        source: std::io::ErrorKind::TimedOut.into(),
    })?
    .map_err(|source| ReplError::Connect {
        addr: addr.clone(),
        source,
    })?;
    node.repl.current(gen)?;
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let (epoch, data_epoch) = {
        let st = node.repl.st.borrow();
        (st.epoch, st.data_epoch)
    };
    let shard = node.slot_map.borrow().my_shard().name.clone();
    let last = node.wal.last_lsn();
    let mut hello = Vec::new();
    if let Some(pw) = &node.cfg.password {
        hello.extend_from_slice(&resp_command(&["AUTH", pw]));
    }
    let floor = if offer_truncation {
        truncation_floor(node)
    } else {
        None
    };
    let mut treplicate = vec![
        "TREPLICATE".to_string(),
        shard,
        epoch.to_string(),
        node.id.clone(),
        last.to_string(),
        data_epoch.to_string(),
    ];
    treplicate.extend(floor.map(|f| f.to_string()));
    let treplicate: Vec<&str> = treplicate.iter().map(String::as_str).collect();
    hello.extend_from_slice(&resp_command(&treplicate));
    wr.write_all(&hello).await.map_err(link_err)?;
    let mut buf = BytesMut::new();
    if node.cfg.password.is_some() {
        let line = read_line(&mut rd, &mut buf).await.map_err(link_err)?;
        if !line.starts_with('+') {
            return Err(ReplError::Refused { addr, reply: line });
        }
    }
    let line = read_line(&mut rd, &mut buf).await.map_err(link_err)?;
    node.repl.current(gen)?;
    // Nothing may have been appended while waiting (only this loop writes
    // a replica's log), but the decisions below rest on it.
    if node.wal.last_lsn() != last {
        return Err(proto(format!(
            "the local log moved from {last} to {} during the handshake",
            node.wal.last_lsn()
        )));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    let mut truncate_at = None;
    let full = match words.first().copied() {
        Some("+CONTINUE") => false,
        Some("+FULLRESYNC") => true,
        Some("+TRUNCATE") => {
            // TRUNCATE <fork> <epoch>: cut the log after <fork>, then the
            // stream continues from there.
            match (num(1), floor) {
                (Some(f), Some(fl)) if fl <= f && f < last => truncate_at = Some(f),
                _ => {
                    return Err(proto(format!(
                        "unexpected truncation offer {line:?} (log ends at {last}, floor {floor:?})"
                    )))
                }
            }
            false
        }
        Some("-AHEAD") => {
            return Err(ReplError::Ahead {
                addr,
                reply: line.trim_start_matches('-').to_string(),
            })
        }
        _ => return Err(ReplError::Refused { addr, reply: line }),
    };
    // FULLRESYNC <start> <fork> <primary-last>
    let (start, primary_fork) = (num(1).unwrap_or(0), num(2).unwrap_or(0));
    let theirs = read_history(node, gen, &mut rd, &mut buf, &addr).await?;
    // Local records are dropped only when a fork point proves that the
    // records past it were never on this primary, or when this log is
    // behind the primary's (the primary no longer has the records after
    // it). A primary behind this log would make it lose records that may be
    // acknowledged writes: refuse. The epoch histories tell where the two
    // logs part (the primary judges by this node's data epoch alone, which
    // misses a log that ends in an epoch the primary never had).
    let mine = node.repl.st.borrow().history.clone();
    let split = common_prefix(&mine, &theirs).filter(|&l| l < last);
    if let Some(l) = split {
        let (my_epoch, their_epoch) = (epoch_at(&mine, l + 1), epoch_at(&theirs, l + 1));
        if my_epoch > their_epoch {
            // This node's records after `l` come from a newer primary than
            // the primary's own there: the primary is the stale one.
            return Err(ReplError::Ahead {
                addr,
                reply: format!(
                    "this replica's records after LSN {l} are of epoch {my_epoch}, newer than the primary's there (epoch {their_epoch}): it must not follow this primary"
                ),
            });
        }
    } else if full && !(primary_fork > 0 && primary_fork < last) {
        if let Some(primary_last) = num(3) {
            if last > primary_last {
                return Err(ReplError::Ahead {
                    addr,
                    reply: format!(
                        "the primary offered a full resync but its log ends at {primary_last}, before this replica's {last}"
                    ),
                });
            }
        }
    }
    let mut applier = Applier::new(node);
    // After a full resync: snapshot locally once caught up past this LSN.
    let mut snapshot_after: Option<u64> = None;
    if !full {
        // (A truncation at or before the histories' split point drops every
        // divergent record already.)
        if let Some(fork) = split.filter(|&l| truncate_at.is_none_or(|f| l < f)) {
            // The primary offered to continue a log that diverged from its
            // own: drop this node's state (its records past the fork were
            // never on the primary) and resync from scratch.
            let dropped = last - fork;
            warn!(fork_lsn = fork, dropped_records = dropped, local_lsn = last, primary = %addr, "this node's log diverged from the primary's (epoch histories): dropping the records past the fork point and resyncing");
            node.repl.st.borrow_mut().fork = Some(ForkInfo {
                fork_lsn: fork,
                dropped_records: dropped,
                at_ms: super::now_ms(),
                resolved_by: "fullResync".into(),
            });
            discard_local_state(node)
                .await
                .map_err(|reason| ReplError::Resync {
                    addr: addr.clone(),
                    reason,
                })?;
            return Err(ReplError::Diverged {
                addr,
                fork,
                dropped,
            });
        }
        if let Some(fork) = truncate_at {
            rejoin_by_truncation(node, gen, fork, last, theirs, &addr).await?;
        } else {
            install_history(node, theirs)?;
        }
        if truncate_at.is_some() {
            // The log and keyspace now end at the fork: a plain partial resync.
        } else if node.repl.st.borrow().resyncing {
            // A full resync of this process was cut short: go on with
            // its watermarks (records its snapshot already reflects are
            // skipped), or, when nothing was loaded, from the empty
            // state the log rebuilds; snapshot locally once complete.
            let pending = node.repl.resync.borrow().clone();
            let end = pending.as_ref().map_or(0, |p| p.end_lsn);
            applier.watermarks = pending.map(|p| p.watermarks);
            snapshot_after = Some(end);
            info!(primary = %addr, from_lsn = last, end_lsn = end, "resuming an interrupted full resync");
        }
        node.repl.set_link(gen, |f| f.partial_resyncs += 1);
        info!(primary = %addr, from_lsn = last, "partial resync");
    } else {
        let fork = match (primary_fork > 0 && primary_fork < last, split) {
            (true, Some(l)) => Some(primary_fork.min(l)),
            (true, None) => Some(primary_fork),
            (false, l) => l,
        };
        let fork = fork.map(|f| ForkInfo {
            fork_lsn: f,
            dropped_records: last - f,
            at_ms: super::now_ms(),
            resolved_by: "fullResync".into(),
        });
        let resync = Resync {
            start,
            history: theirs,
            fork,
            local_lsn: last,
        };
        let (wm, end) = full_resync(node, gen, &mut rd, &mut buf, &addr, resync).await?;
        applier.watermarks = Some(wm);
        snapshot_after = Some(end);
        node.repl.set_link(gen, |f| f.full_resyncs += 1);
    }
    node.repl.set_link(gen, |f| {
        f.link_up = true;
        f.link_state = LinkState::Up;
        f.last_error = None;
        f.follow_error = None;
    });

    // Acknowledgements go out from their own task so that reading records
    // never waits for the local log.
    let received = Rc::new(Cell::new(node.wal.last_lsn()));
    let echo = Rc::new(Cell::new(0u64));
    let wake = Rc::new(Notify::new());
    let acker = {
        let (node, received, echo, wake) =
            (node.clone(), received.clone(), echo.clone(), wake.clone());
        tokio::task::spawn_local(async move {
            let mut sent = 0u64;
            let mut last_sent = Instant::now();
            loop {
                let woke = wake.notified();
                tokio::pin!(woke);
                woke.as_mut().enable();
                if node.repl.gen.get() != gen {
                    // Tell the old primary it has been left behind.
                    let line = format!("TFENCED {}\r\n", node.repl.epoch());
                    let _ = wr.write_all(line.as_bytes()).await;
                    return;
                }
                let target = received.get();
                if node.wal.acked_lsn() < target {
                    // Local durability per this node's fsync policy.
                    let _ = tokio::time::timeout(HEARTBEAT, node.wal.wait(target)).await;
                }
                let acked = node.wal.acked_lsn().min(received.get());
                if acked > sent || last_sent.elapsed() >= HEARTBEAT {
                    let line = format!("TACK {acked} {}\r\n", echo.get());
                    if wr.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    sent = acked;
                    last_sent = Instant::now();
                }
                if received.get() <= node.wal.acked_lsn().min(received.get()) {
                    let _ = tokio::time::timeout(HEARTBEAT, &mut woke).await;
                }
            }
        })
    };
    let res = follow_stream(
        node,
        gen,
        &mut rd,
        &mut buf,
        &addr,
        &mut applier,
        &received,
        &echo,
        &wake,
        &mut snapshot_after,
    )
    .await;
    if node.repl.gen.get() != gen {
        wake.notify_one();
        if tokio::time::timeout(Duration::from_millis(300), acker)
            .await
            .is_err()
        {
            warn!("the acknowledgement task did not stop in time");
        }
    } else {
        acker.abort();
    }
    res.map_err(|e| match e {
        StreamErr::Io(source) => link_err(source),
        StreamErr::Proto(r) => proto(r),
    })
}

enum StreamErr {
    Io(std::io::Error),
    Proto(String),
}

#[allow(clippy::too_many_arguments)]
async fn follow_stream(
    node: &Rc<Node>,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    applier: &mut Applier,
    received: &Cell<u64>,
    echo: &Cell<u64>,
    wake: &Notify,
    snapshot_after: &mut Option<u64>,
) -> Result<(), StreamErr> {
    let mut shutdown = node.shutdown.subscribe();
    let mut check = tokio::time::interval(HEARTBEAT);
    loop {
        let (kind, payload) = tokio::select! {
            r = read_frame(rd, buf) => r.map_err(StreamErr::Io)?,
            _ = check.tick() => {
                if node.repl.gen.get() != gen {
                    return Ok(());
                }
                continue;
            }
            _ = shutdown.changed() => return Ok(()),
        };
        if node.repl.gen.get() != gen {
            return Ok(());
        }
        match kind {
            frame::RECORDS => {
                let Some(last) = applier
                    .apply_records(node, &payload)
                    .map_err(StreamErr::Proto)?
                else {
                    continue;
                };
                received.set(last);
                wake.notify_one();
                let primary_last = node.repl.follower.borrow().primary_last_lsn;
                if last >= primary_last {
                    node.repl
                        .set_link(gen, |f| f.caught_up_at = Some(Instant::now()));
                }
                if let Some(end) = *snapshot_after {
                    if last >= end {
                        applier.watermarks = None;
                        *snapshot_after = None;
                        finish_resync(node, gen).await;
                    }
                }
            }
            frame::HEARTBEAT => {
                let epoch = u64_at(&payload, 0);
                let primary_last = u64_at(&payload, 8);
                let sent_ms = u64_at(&payload, 16);
                if epoch < node.repl.epoch() {
                    return Err(StreamErr::Proto(format!(
                        "the primary {addr} is at epoch {epoch}, older than {}",
                        node.repl.epoch()
                    )));
                }
                echo.set(sent_ms);
                let mine = node.wal.last_lsn();
                node.repl.set_link(gen, |f| {
                    f.heartbeat_at = Some(Instant::now());
                    f.primary_last_lsn = primary_last;
                    if mine >= primary_last {
                        f.caught_up_at = Some(Instant::now());
                    }
                });
                if let Some(end) = *snapshot_after {
                    if mine >= end {
                        applier.watermarks = None;
                        *snapshot_after = None;
                        finish_resync(node, gen).await;
                    }
                }
                wake.notify_one();
            }
            other => {
                return Err(StreamErr::Proto(format!(
                    "unexpected frame type {other} while streaming"
                )))
            }
        }
    }
}

async fn read_history(
    node: &Node,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
) -> Result<Vec<(u64, u64)>, ReplError> {
    let (kind, payload) = read_frame(rd, buf)
        .await
        .map_err(|source| ReplError::Link {
            addr: addr.to_string(),
            source,
        })?;
    node.repl.current(gen)?;
    if kind != frame::HISTORY {
        return Err(ReplError::Protocol {
            addr: addr.to_string(),
            reason: format!("expected the epoch history, got frame type {kind}"),
        });
    }
    serde_json::from_slice(&payload).map_err(|e| ReplError::Protocol {
        addr: addr.to_string(),
        reason: format!("bad epoch history: {e}"),
    })
}

/// Takes the primary's epoch history as this node's. Only once the local
/// log is a prefix of the primary's (partial resync) or empty (full resync,
/// after the discard): the history describes the log it goes with.
fn install_history(node: &Node, history: Vec<(u64, u64)>) -> Result<(), ReplError> {
    {
        let mut st = node.repl.st.borrow_mut();
        st.data_epoch = st.epoch;
        st.history = history;
    }
    // Persisted before any record of this primary enters the log.
    node.repl.persist()
}

/// The epoch of the record at `lsn` in a log described by `history`
/// (0 before the first entry).
pub(crate) fn epoch_at(history: &[(u64, u64)], lsn: u64) -> u64 {
    history
        .iter()
        .rev()
        .find(|&&(_, start)| start < lsn)
        .map_or(0, |&(e, _)| e)
}

/// The last LSN up to which logs described by these two epoch histories
/// hold records of the same epochs (so the same records: one epoch has one
/// primary); None when they never differ.
fn common_prefix(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<u64> {
    let mut bounds: Vec<u64> = a.iter().chain(b).map(|&(_, start)| start).collect();
    bounds.push(0);
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .into_iter()
        .find(|&at| epoch_at(a, at + 1) != epoch_at(b, at + 1))
}

/// A state this node can rebuild without its primary: a local snapshot (or
/// the empty keyspace) plus its own log after the snapshot's start.
struct Base {
    start: u64,
    end: u64,
    snapshot: Option<PathBuf>,
}

/// The bases whose records the local log still holds, oldest first.
fn rebuild_bases(node: &Node) -> Vec<Base> {
    let first = node.wal.first_retained_lsn();
    let reaches = |start: u64| first > 0 && first <= start + 1;
    let mut bases = Vec::new();
    if reaches(0) {
        bases.push(Base {
            start: 0,
            end: 0,
            snapshot: None,
        });
    }
    for (start, end, path) in super::snapshot::list_bounds(&node.cfg.data_dir.join("snapshots")) {
        if reaches(start) && end <= node.wal.last_lsn() {
            bases.push(Base {
                start,
                end,
                snapshot: Some(path),
            });
        }
    }
    bases
}

/// The lowest LSN this node could cut its log back to (rebuilding its
/// keyspace from a base and its own log), offered in the handshake.
fn truncation_floor(node: &Node) -> Option<u64> {
    if node.wal.last_lsn() == 0 || node.repl.st.borrow().resyncing {
        return None;
    }
    rebuild_bases(node).iter().map(|b| b.end).min()
}

/// A rejoining node whose log diverged after `fork` cuts it there instead of
/// a full resync: rebuilds its keyspace from the newest local base at or
/// below the fork plus its own records up to the fork, rewrites its log to
/// end at the fork, and records the fork. Marked `resyncing` throughout, so
/// a crash in between discards the state at restart (as for a full resync).
async fn rejoin_by_truncation(
    node: &Rc<Node>,
    gen: u64,
    fork: u64,
    local_last: u64,
    history: Vec<(u64, u64)>,
    addr: &str,
) -> Result<(), ReplError> {
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason: format!("cutting the log at the fork point {fork}: {reason}"),
    };
    let base = rebuild_bases(node)
        .into_iter()
        .filter(|b| b.end <= fork)
        .max_by_key(|b| b.end)
        .ok_or_else(|| fail("no local snapshot at or below it any more".into()))?;
    // Load the base off the loop; nothing local changes yet.
    let (store, loaded) = match &base.snapshot {
        Some(path) => {
            let path = path.clone();
            let (store, loaded) = tokio::task::spawn_blocking(move || {
                let mut store = Store::new();
                let loaded = super::snapshot::load_file(&path, &mut store);
                (store, loaded)
            })
            .await
            .map_err(|e| fail(e.to_string()))?;
            let loaded = loaded.map_err(|e| fail(e.to_string()))?;
            (store, Some(loaded))
        }
        None => (Store::new(), None),
    };
    let held = hold_snapshots(node).await;
    // The old log's outstanding fsyncs finish before it is rewritten.
    node.wal
        .sync_through(node.wal.last_lsn())
        .await
        .map_err(|e| fail(e.to_string()))?;
    node.repl.current(gen)?;
    if node.wal.last_lsn() != local_last {
        return Err(fail("the local log moved".into()));
    }
    node.repl.st.borrow_mut().resyncing = true;
    if let Err(e) = node.repl.persist() {
        node.repl.st.borrow_mut().resyncing = false;
        return Err(e);
    }
    // From here to the log rewrite nothing awaits: no other task sees a
    // half-rebuilt keyspace or log.
    let rebuilt = rebuild_at(node, &base, fork, store, loaded);
    drop(held);
    match rebuilt {
        Ok(()) => {}
        Err(reason) => {
            // The keyspace may be half rebuilt: start over from nothing.
            warn!(error = %reason, "cutting the log at the fork point failed; discarding the local state");
            discard_local_state(node).await.map_err(&fail)?;
            return Err(fail(reason));
        }
    }
    let dropped = local_last - fork;
    warn!(fork_lsn = fork, dropped_records = dropped, local_lsn = local_last, primary = %addr, base_end_lsn = base.end, "this node's log diverged from the primary's: cut at the fork point, continuing from there");
    node.repl.st.borrow_mut().fork = Some(ForkInfo {
        fork_lsn: fork,
        dropped_records: dropped,
        at_ms: super::now_ms(),
        resolved_by: "truncate".into(),
    });
    // The rewritten log is durable before the mark goes.
    node.wal
        .sync_through(fork)
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Superseded meanwhile: the mark stays, and the next partial resync
    // (which resumes with a complete keyspace) or a restart clears it.
    node.repl.current(gen)?;
    node.repl.st.borrow_mut().resyncing = false;
    install_history(node, history)
}

/// The synchronous part of [`rejoin_by_truncation`]: snapshots past the
/// fork go, the keyspace becomes the base plus the records up to the fork,
/// and the log is rewritten to end at the fork.
fn rebuild_at(
    node: &Rc<Node>,
    base: &Base,
    fork: u64,
    store: Store,
    loaded: Option<super::snapshot::Loaded>,
) -> Result<(), String> {
    let snapshots = node.cfg.data_dir.join("snapshots");
    for (_, end, path) in super::snapshot::list_bounds(&snapshots) {
        if end > fork {
            // It reflects records that were never on the primary.
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut store = store;
    store.mode = ExpireMode::Passive;
    *node.store.borrow_mut() = store;
    let mut applier = Applier::new(node);
    applier.watermarks = loaded.as_ref().map(|l| l.watermarks.clone());
    let mut encoded = Vec::new();
    let mut expect = base.start + 1;
    for rec in node.wal.read_from(base.start).map_err(|e| e.to_string())? {
        let rec = rec.map_err(|e| e.to_string())?;
        if rec.lsn > fork {
            break;
        }
        if rec.lsn != expect {
            return Err(format!("record {expect} is missing from the local log"));
        }
        expect += 1;
        applier.apply(node, &rec);
        let args: Vec<&[u8]> = rec.args.iter().map(|a| a.as_slice()).collect();
        wal::encode_record(&mut encoded, rec.lsn, rec.slot, &args);
    }
    if expect != fork + 1 {
        return Err(format!(
            "the local log ends at {} before the fork point",
            expect - 1
        ));
    }
    node.wal.reset(base.start).map_err(|e| e.to_string())?;
    if fork > base.start {
        node.wal.append_encoded(base.start + 1, fork, &encoded)?;
    }
    *node.last_snapshot.borrow_mut() = loaded.map(|l| l.info);
    Ok(())
}

/// What a full resync replaces the local state with.
struct Resync {
    /// The snapshot's start LSN (the log continues after it).
    start: u64,
    /// The primary's epoch history, installed once the local state is gone.
    history: Vec<(u64, u64)>,
    /// Where this node's log left the primary's, if it did.
    fork: Option<ForkInfo>,
    local_lsn: u64,
}

/// Receives a snapshot, loads it, and sets the log to continue after its
/// start LSN. Returns the per-slot watermarks and the end LSN.
async fn full_resync(
    node: &Rc<Node>,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    resync: Resync,
) -> Result<(Vec<u64>, u64), ReplError> {
    let start = resync.start;
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason,
    };
    // The whole snapshot is received before anything local is discarded:
    // a transfer cut short leaves this node with all its data. One file per
    // generation: a superseded loop never writes into the current one's.
    let tmp = node
        .cfg
        .data_dir
        .join(format!("{RESYNC_FILE_PREFIX}{gen}.tsnap"));
    let received = receive_snapshot(node, gen, rd, buf, addr, &tmp).await;
    let bytes = match received {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = node.repl.current(gen) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(fork) = &resync.fork {
        warn!(fork_lsn = fork.fork_lsn, dropped_records = fork.dropped_records, local_lsn = resync.local_lsn, primary = %addr, "this node's log diverged from the primary's: dropping the records past the fork point");
        node.repl.st.borrow_mut().fork = Some(fork.clone());
    }
    // Snapshots stay off until the received one is the keyspace.
    let held = hold_snapshots(node).await;
    if let Err(e) = discard_held(node, &held).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    if let Err(e) = install_history(node, resync.history) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let path = tmp.clone();
    let loading = tokio::task::spawn_blocking(move || {
        let mut store = Store::new();
        let loaded = super::snapshot::load_file(&path, &mut store);
        (store, loaded)
    })
    .await;
    let _ = std::fs::remove_file(&tmp);
    let (store, loaded) = loading.map_err(|e| fail(e.to_string()))?;
    // Superseded while loading: the state stays discarded and marked
    // `resyncing`, so the current loop (or a restart) starts over.
    node.repl.current(gen)?;
    let loaded = loaded.map_err(|e| fail(e.to_string()))?;
    if loaded.info.start_lsn != start {
        return Err(fail(format!(
            "the snapshot starts at {} but the primary announced {start}",
            loaded.info.start_lsn
        )));
    }
    let mut store = store;
    store.mode = ExpireMode::Passive;
    *node.store.borrow_mut() = store;
    node.wal.reset(start).map_err(|e| fail(e.to_string()))?;
    *node.repl.resync.borrow_mut() = Some(PendingResync {
        watermarks: loaded.watermarks.clone(),
        end_lsn: loaded.info.end_lsn,
    });
    info!(primary = %addr, bytes, keys = loaded.info.keys, start_lsn = start, end_lsn = loaded.info.end_lsn, "snapshot received and loaded");
    Ok((loaded.watermarks, loaded.info.end_lsn))
}

/// Writes the streamed snapshot to `tmp`; returns its size.
async fn receive_snapshot(
    node: &Node,
    gen: u64,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    addr: &str,
    tmp: &Path,
) -> Result<u64, ReplError> {
    let fail = |reason: String| ReplError::Resync {
        addr: addr.to_string(),
        reason,
    };
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
    let mut bytes = 0u64;
    loop {
        let (kind, payload) = read_frame(rd, buf)
            .await
            .map_err(|source| ReplError::Link {
                addr: addr.to_string(),
                source,
            })?;
        // A superseded transfer stops at once.
        node.repl.current(gen)?;
        match kind {
            frame::SNAPSHOT => {
                file.write_all(&payload)
                    .await
                    .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
                bytes += payload.len() as u64;
            }
            frame::SNAPSHOT_END => break,
            frame::HEARTBEAT => {}
            other => return Err(fail(format!("unexpected frame type {other} in a snapshot"))),
        }
    }
    file.flush().await.map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// Once a resynced replica has the records its snapshot needed, a local
/// snapshot makes its state restartable; until then a restart starts over.
async fn finish_resync(node: &Rc<Node>, gen: u64) {
    let res = loop {
        match super::server::run_snapshot(node).await {
            // Another snapshot is running (it may predate the resync).
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
            res => break res,
        }
        if node.repl.gen.get() != gen {
            return;
        }
    };
    if node.repl.gen.get() != gen {
        // A newer follow call may have begun its own resync: its mark stays
        // (the current loop finishes, or a restart starts over).
        return;
    }
    match res {
        Ok(Some(_)) => {
            *node.repl.resync.borrow_mut() = None;
            node.repl.st.borrow_mut().resyncing = false;
            if let Err(e) = node.repl.persist() {
                warn!(error = %e, "failed to record the end of the full resync");
            }
            info!(lsn = node.wal.last_lsn(), "full resync complete");
        }
        Ok(None) => {}
        Err(e) => {
            *node.repl.resync.borrow_mut() = None;
            warn!(error = %e, "snapshot after the full resync failed; a restart will resync again")
        }
    }
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        b.extend_from_slice(a.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::{common_prefix, epoch_at};

    #[test]
    fn epoch_at_reads_the_entry_a_record_falls_under() {
        let h = [(1, 0), (2, 50), (4, 120)];
        assert_eq!(epoch_at(&h, 1), 1);
        assert_eq!(epoch_at(&h, 50), 1);
        assert_eq!(epoch_at(&h, 51), 2);
        assert_eq!(epoch_at(&h, 121), 4);
        assert_eq!(epoch_at(&[], 7), 0);
        // Promoted twice without writing in between: the later epoch.
        assert_eq!(epoch_at(&[(1, 0), (2, 10), (3, 10)], 11), 3);
    }

    #[test]
    fn common_prefix_is_where_the_epochs_of_two_logs_part() {
        // An old primary rejoining: its epoch-1 suffix after 51.
        assert_eq!(common_prefix(&[(1, 0)], &[(1, 0), (2, 51)]), Some(51));
        // The same lineage, one history longer.
        assert_eq!(
            common_prefix(&[(1, 0), (2, 50)], &[(1, 0), (2, 50), (4, 120)]),
            Some(120)
        );
        assert_eq!(common_prefix(&[(1, 0), (2, 50)], &[(1, 0), (2, 50)]), None);
        // No history (a node that never followed) against a shard's.
        assert_eq!(common_prefix(&[], &[(1, 0)]), Some(0));
        assert_eq!(common_prefix(&[], &[(5, 80)]), Some(80));
        // A replica whose log ends in epoch 3, which the primary never had.
        let mine = [(1, 0), (2, 50), (3, 100)];
        let theirs = [(1, 0), (2, 50), (4, 200)];
        assert_eq!(common_prefix(&mine, &theirs), Some(100));
        assert_eq!(epoch_at(&mine, 101), 3);
        assert_eq!(epoch_at(&theirs, 101), 2);
        // Symmetric.
        assert_eq!(common_prefix(&theirs, &mine), Some(100));
    }
}
