//! The source's side: one task per outgoing migration streams the moving
//! slots to the target's primary over a client connection (AUTH with this
//! node's requirepass, then `TMIGRATE …`), throttled, then hands off.
//!
//! Consistency of the copy: slots are encoded one at a time while writes
//! to that slot alone wait (in ~5 ms steps of the event loop, so nothing
//! else waits), and from the moment the encoding ends every write to the
//! slot is captured (with its LSN) by the write path. A slot's captured
//! writes are sent only after the whole slot, so the target applies each
//! slot's writes exactly once, in log order, on top of the state they
//! followed.
//!
//! Write pause: writes to the moving slots (only) wait while the phase is
//! `paused` or `handoff-ready`. The source resumes them on its own only
//! when the target cannot commit: before a seal was sent, or after the
//! target confirmed an abort. Otherwise it waits for the operator's
//! topology (the flip) or its forced cancel — never both sides writable.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{encode, format_ranges, Limits, MigrationError, Outgoing, Phase, SlotSet};
use crate::node::resp::{encode_command, encode_command_head};
use crate::node::slots::{NodeAddr, SlotOwner};
use crate::node::store::{Key, SlotData};
use crate::node::{now_ms, Node, Role};

/// Bytes of commands per `TMIGRATE APPLY`.
/// Small, so the target's event loop spends little time on one (its
/// other clients wait for it); [`WINDOW`] keeps enough on the wire.
const BATCH_BYTES: usize = 32 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a chunk or the seal is resent while the target shard cannot
/// meet its acknowledgement rule.
const QUORUM_WAIT: Duration = Duration::from_secs(15);

/// What the operator asks for (POST /v1/migrations on the source primary).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub id: String,
    /// Inclusive ranges.
    pub slots: Vec<(u16, u16)>,
    /// The target shard's primary.
    pub target: NodeAddr,
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub write_pause_timeout_ms: Option<u64>,
    #[serde(default)]
    pub handoff_max_lag_bytes: Option<u64>,
}

pub fn start(node: &Rc<Node>, req: StartRequest) -> Result<Rc<Outgoing>, MigrationError> {
    if node.role.get() != Role::Primary {
        return Err(MigrationError::NotPrimary("send a migration"));
    }
    let valid_id = !req.id.is_empty()
        && req.id.len() <= 64
        && req
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid_id {
        return Err(MigrationError::BadRange(format!(
            "id {:?} (1-64 of [A-Za-z0-9._-])",
            req.id
        )));
    }
    let slots = SlotSet::from_ranges(&req.slots)?;
    {
        let map = node.slot_map.borrow();
        if let Some(slot) = slots.iter().find(|&s| map.owner(s) != SlotOwner::Local) {
            return Err(MigrationError::NotOwned { slot });
        }
    }
    for m in node.migrations.outgoing.borrow().iter() {
        if m.id == req.id {
            return Err(MigrationError::Exists(req.id));
        }
        if m.phase.get().is_final() {
            continue;
        }
        if let Some(slot) = m.slots.overlaps(&slots) {
            return Err(MigrationError::Busy {
                slot,
                id: m.id.clone(),
            });
        }
    }
    let mut limits = Limits::default();
    if let Some(v) = req.max_bytes_per_sec {
        limits.max_bytes_per_sec = v;
    }
    if let Some(v) = req.write_pause_timeout_ms {
        limits.write_pause_timeout_ms = v.max(1);
    }
    if let Some(v) = req.handoff_max_lag_bytes {
        limits.handoff_max_lag_bytes = v;
    }
    let m = Rc::new(Outgoing::new(
        req.id,
        req.slots,
        slots,
        req.target,
        limits,
        Phase::Connecting,
        false,
    ));
    node.migrations.add_outgoing(m.clone());
    tracing::info!(migration = %m.id, slots = %format_ranges(&m.ranges), target = %m.target.id, "slot migration started");
    tokio::task::spawn_local(run(node.clone(), m.clone()));
    Ok(m)
}

/// The client connection to the target's primary. Replies come back in
/// the order the commands went out; `pending` counts those not yet read.
struct Link {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    addr: String,
    line: String,
    /// The encoded head of the command being sent.
    head: Vec<u8>,
    pending: usize,
    /// A send or a read did not complete (timed out, or its future was
    /// dropped): the stream is out of step, so the link is done.
    broken: bool,
}

impl Link {
    async fn open(node: &Node, target: &NodeAddr) -> Result<Self, MigrationError> {
        let addr = format!("{}:{}", target.host, target.port);
        let err = |reason: String| MigrationError::Link {
            addr: addr.clone(),
            reason,
        };
        let sock = tokio::time::timeout(
            CONNECT_TIMEOUT,
            crate::node::tls::connect_peer(node, &target.host, target.port, target.tls_port),
        )
        .await
        .map_err(|_| err("connect timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
        let _ = sock.set_nodelay(true);
        let (rd, wr) = sock.into_split();
        let mut link = Self {
            rd: BufReader::with_capacity(4096, rd),
            wr,
            addr: addr.clone(),
            line: String::new(),
            head: Vec::with_capacity(256),
            pending: 0,
            broken: false,
        };
        // The cluster shares one password: the link authenticates with it.
        if let Some(pw) = node.cfg.password.clone() {
            link.call(&[b"AUTH", pw.as_bytes()])
                .await?
                .map_err(|e| MigrationError::Refused(format!("AUTH: {e}")))?;
        }
        Ok(link)
    }

    fn io_error(&self, reason: String) -> MigrationError {
        MigrationError::Link {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Writes one command without waiting for its reply.
    async fn send(&mut self, args: &[&[u8]]) -> Result<(), MigrationError> {
        if self.broken {
            return Err(self.io_error("an earlier call did not complete".into()));
        }
        // The last argument (a chunk's payload) goes out from where it is:
        // only the command's head is encoded.
        self.head.clear();
        encode_command_head(args, &mut self.head);
        let last = args.last().copied().unwrap_or_default();
        self.broken = true;
        let parts: [&[u8]; 3] = [&self.head, last, b"\r\n"];
        let write = write_all_vectored(&mut self.wr, &parts);
        match tokio::time::timeout(CALL_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.io_error(e.to_string())),
            Err(_) => return Err(self.io_error("no progress within 10 s".into())),
        }
        self.broken = false;
        self.pending += 1;
        Ok(())
    }

    /// Reads the oldest pending reply: Ok(Ok(line)) for `+…`, Ok(Err(msg))
    /// for `-…`.
    async fn recv(&mut self) -> Result<Result<String, String>, MigrationError> {
        if self.broken {
            return Err(self.io_error("an earlier call did not complete".into()));
        }
        self.broken = true;
        self.line.clear();
        let n = match tokio::time::timeout(CALL_TIMEOUT, self.rd.read_line(&mut self.line)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(self.io_error(e.to_string())),
            Err(_) => return Err(self.io_error("no reply within 10 s".into())),
        };
        if n == 0 {
            return Err(self.io_error("connection closed".into()));
        }
        let line = self.line.trim_end();
        let reply = match line.as_bytes().first() {
            Some(b'+') => Ok(line[1..].to_string()),
            Some(b'-') => Err(line[1..].to_string()),
            // Out of step with the target: the link is done.
            _ => return Err(self.io_error(format!("unexpected reply {line:?}"))),
        };
        self.broken = false;
        self.pending -= 1;
        Ok(reply)
    }

    /// Sends one command and reads its reply; replies still pending from
    /// earlier sends are read and dropped first (their chunks' fate no
    /// longer matters to a caller that starts a new exchange: an abort, a
    /// commit check).
    async fn call(&mut self, args: &[&[u8]]) -> Result<Result<String, String>, MigrationError> {
        while self.pending > 0 {
            let _stale = self.recv().await?;
        }
        self.send(args).await?;
        self.recv().await
    }
}

/// Writes every part, in order, with as few system calls as the socket
/// allows.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, parts: &[&[u8]]) -> std::io::Result<()> {
    let (mut part, mut at) = (0, 0);
    while part < parts.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[part][at..])
            .chain(parts[part + 1..].iter().copied())
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while part < parts.len() && n >= parts[part].len() - at {
            n -= parts[part].len() - at;
            part += 1;
            at = 0;
        }
        at += n;
    }
    Ok(())
}

/// Bytes per batch: a tenth of a second at the limit, 4 KiB to
/// [`BATCH_BYTES`], so a low limit is still a steady stream.
fn batch_bytes(m: &Outgoing) -> usize {
    match m.limits.get().max_bytes_per_sec {
        0 => BATCH_BYTES,
        l => ((l / 10) as usize).clamp(4096, BATCH_BYTES),
    }
}

/// The bytes/s limit as a token bucket holding one batch.
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            tokens: 0.0,
            refilled: now,
        }
    }

    /// Takes `bytes` at `limit` bytes/s (0: no limit) and None, or how long
    /// to wait before asking again.
    fn take(&mut self, limit: u64, burst: usize, bytes: usize, now: Instant) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        // The bucket holds a batch, or 10 ms at the limit if more: sleeps
        // last a millisecond or more, so a bucket of one small batch would
        // cap the rate at a batch per sleep.
        let burst = (burst as f64).max(limit as f64 / 100.0);
        // A debt from a higher limit never delays a lowered one by more
        // than one bucket: a new limit applies within ~0.1 s.
        self.tokens = (self.tokens.max(-burst)
            + now.duration_since(self.refilled).as_secs_f64() * limit as f64)
            .min(burst);
        self.refilled = now;
        if self.tokens >= bytes as f64 || self.tokens >= burst {
            self.tokens -= bytes as f64;
            return None;
        }
        // As long as the missing tokens take, at most 20 ms: a changed
        // limit applies within one.
        let missing = (bytes as f64).min(burst) - self.tokens;
        Some(
            Duration::from_secs_f64(missing / limit as f64)
                .clamp(Duration::from_millis(1), Duration::from_millis(20)),
        )
    }
}

/// Chunks on the wire at once: the source encodes the next while the
/// target applies one, so neither side waits for the other's turn.
const WINDOW: usize = 4;

/// A reply that leaves a chunk unacknowledged but can be sent again: the
/// target shard cannot meet its acknowledgement rule for now (a replica
/// away), or the chunk followed one refused that way.
fn resendable(reply: &str) -> bool {
    reply.starts_with("NOQUORUM") || reply.starts_with("NOREPLICAS")
}

/// The `TMIGRATE APPLY` of one chunk.
fn apply<'a>(id: &'a str, seq: &'a str, payload: &'a [u8]) -> [&'a [u8]; 5] {
    [
        b"TMIGRATE",
        b"APPLY",
        id.as_bytes(),
        seq.as_bytes(),
        payload,
    ]
}

/// Sends batches, paced by the (changeable) bytes/s limit, up to
/// [`WINDOW`] of them unacknowledged.
struct Sender {
    link: Link,
    seq: u64,
    buf: Vec<u8>,
    bucket: Bucket,
    /// Sent, not yet acknowledged, oldest first: (seq, payload).
    inflight: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// Payload buffers of acknowledged chunks, for reuse.
    spare: Vec<Vec<u8>>,
}

impl Sender {
    fn new(link: Link) -> Self {
        Self {
            link,
            seq: 0,
            buf: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
            bucket: Bucket::new(Instant::now()),
            inflight: Default::default(),
            spare: Vec::new(),
        }
    }

    async fn pace(&mut self, m: &Outgoing, bytes: usize) {
        loop {
            let limit = m.limits.get().max_bytes_per_sec;
            let burst = batch_bytes(m);
            match self.bucket.take(limit, burst, bytes, Instant::now()) {
                None => return,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Sends the buffer as the next chunk; waits for the oldest chunk's
    /// reply while [`WINDOW`] are on the wire.
    async fn flush(&mut self, node: &Node, m: &Outgoing) -> Result<(), MigrationError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.pace(m, self.buf.len()).await;
        let seq = self.seq.to_string();
        let payload = std::mem::take(&mut self.buf);
        self.link.send(&apply(&m.id, &seq, &payload)).await?;
        self.inflight.push_back((self.seq, payload));
        self.seq += 1;
        self.buf = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + 64 * 1024));
        while self.inflight.len() >= WINDOW {
            self.recv_one(node, m).await?;
        }
        Ok(())
    }

    /// Waits until every chunk sent is acknowledged.
    async fn settle(&mut self, node: &Node, m: &Outgoing) -> Result<(), MigrationError> {
        while !self.inflight.is_empty() {
            self.recv_one(node, m).await?;
        }
        Ok(())
    }

    fn acknowledged(&mut self, node: &Node, m: &Outgoing, mut payload: Vec<u8>) {
        m.bytes_sent.set(m.bytes_sent.get() + payload.len() as u64);
        let t = &node.migrations.totals.bytes_out;
        t.set(t.get() + payload.len() as u64);
        payload.clear();
        self.spare.push(payload);
    }

    /// Reads the oldest chunk's reply.
    async fn recv_one(&mut self, node: &Node, m: &Outgoing) -> Result<(), MigrationError> {
        match self.link.recv().await? {
            Ok(_) => {
                if let Some((_, p)) = self.inflight.pop_front() {
                    self.acknowledged(node, m, p);
                }
                Ok(())
            }
            Err(e) if resendable(&e) => self.resend_window(node, m).await,
            Err(e) => Err(MigrationError::Refused(e)),
        }
    }

    /// The oldest chunk on the wire was refused with a resendable reply:
    /// reads the replies of the chunks behind it (refused unapplied with
    /// `OUTOFORDER`, or answered like it), then sends again, one at a time,
    /// every chunk after the last one acknowledged. An acknowledged chunk
    /// covers every earlier one: the target applies chunks in order and
    /// acknowledges a record once every record before it is durable too.
    async fn resend_window(&mut self, node: &Node, m: &Outgoing) -> Result<(), MigrationError> {
        let mut last_acked = None;
        for i in 1..self.inflight.len() {
            match self.link.recv().await? {
                Ok(_) => last_acked = Some(i),
                Err(e) if resendable(&e) || e.starts_with("OUTOFORDER") => {}
                Err(e) => return Err(MigrationError::Refused(e)),
            }
        }
        let from = last_acked.map_or(0, |i| i + 1);
        let chunks: Vec<(u64, Vec<u8>)> = self.inflight.drain(..).collect();
        for (i, (seq, payload)) in chunks.into_iter().enumerate() {
            if i >= from {
                let seq = seq.to_string();
                self.call_resending(m, &apply(&m.id, &seq, &payload))
                    .await?;
            }
            self.acknowledged(node, m, payload);
        }
        Ok(())
    }

    /// Sends `args` (an APPLY or the SEAL); while the target shard cannot
    /// meet its acknowledgement rule (a replica away: `NOQUORUM`, or
    /// `NOREPLICAS` after its ack timeout) sends the same again, for up to
    /// [`QUORUM_WAIT`]. The target answers a repeated chunk or seal from
    /// the log record of its first application, so nothing is applied
    /// twice whether or not the refused attempt was.
    async fn call_resending(&mut self, m: &Outgoing, args: &[&[u8]]) -> Result<(), MigrationError> {
        let mut waited = Duration::ZERO;
        loop {
            match self.link.call(args).await? {
                Ok(_) => return Ok(()),
                Err(e) if resendable(&e) && waited < QUORUM_WAIT => {
                    if waited.is_zero() {
                        let cmd = String::from_utf8_lossy(args.get(1).copied().unwrap_or_default());
                        tracing::warn!(migration = %m.id, command = %cmd, reply = %e, "the target shard cannot acknowledge for now; resending");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    waited += Duration::from_millis(200);
                    check_cancel(m)?;
                }
                Err(e) => return Err(MigrationError::Refused(e)),
            }
        }
    }

    async fn maybe_flush(&mut self, node: &Node, m: &Outgoing) -> Result<(), MigrationError> {
        if self.buf.len() >= batch_bytes(m) {
            self.flush(node, m).await?;
        }
        Ok(())
    }
}

/// Moves the captured writes into the send buffer, in LSN order.
fn drain_captured(m: &Outgoing, buf: &mut Vec<u8>) {
    let mut q = m.captured.borrow_mut();
    for c in q.drain(..) {
        encode_command(&c.args, buf);
    }
    m.captured_bytes.set(0);
}

fn check_cancel(m: &Outgoing) -> Result<(), MigrationError> {
    match m.cancel.get() {
        Some(_) => Err(MigrationError::Aborted(
            m.last_error
                .borrow()
                .clone()
                .unwrap_or_else(|| "cancelled by the operator".into()),
        )),
        None => Ok(()),
    }
}

fn set_phase(node: &Node, m: &Outgoing, p: Phase) {
    tracing::info!(migration = %m.id, phase = p.as_str(), "slot migration phase");
    m.phase.set(p);
    node.migrations.refresh();
}

/// Event-loop time one encoding step may take: a client's command that
/// arrives meanwhile waits for the step's end.
const STEP: Duration = Duration::from_micros(500);
/// Elements of one key encoded per step at most.
const STEP_ELEMS: usize = 4096;
/// An encoded slot is held in pieces of about this size: one growing
/// buffer would be copied whole (tens of MB for a big key) each time it
/// outgrew its allocation, inside one step.
const PIECE_BYTES: usize = 1 << 20;

/// Encoded commands, and the offset where each ends.
struct Piece {
    cmds: Vec<u8>,
    ends: Vec<usize>,
}

/// Encodes one slot as write commands while writes to that slot (only)
/// wait, in steps of ~[`STEP`] between which the event loop serves
/// everything else: nothing changes the slot meanwhile, so the copy is
/// consistent, and no single step stalls the node (a big collection is
/// encoded a few thousand elements at a time). Capture of the slot's writes
/// starts as the writes resume. Returns the commands in pieces, and the
/// number of keys.
async fn encode_slot(node: &Node, m: &Outgoing, slot: u16) -> (Vec<Piece>, u64) {
    m.encoding.set(Some(slot));
    node.migrations.refresh();
    let keys: Vec<Key> = node
        .store
        .borrow()
        .slot_entries(slot)
        .map(|(k, _)| Key::from(k))
        .collect();
    let mut pieces = Vec::new();
    let (mut out, mut ends) = (Vec::new(), Vec::new());
    let (mut i, mut done_keys) = (0, 0u64);
    let mut cursor = encode::Cursor::default();
    let mut step = Instant::now();
    while i < keys.len() {
        {
            let store = node.store.borrow();
            match store.peek(slot, &keys[i]) {
                // Expired (by a read or the expiry cycle) meanwhile: drop
                // what was sent of it.
                None => {
                    if cursor.taken > 0 {
                        encode_command(&[&b"DEL"[..], &keys[i]], &mut out);
                        ends.push(out.len());
                    }
                    i += 1;
                    cursor = encode::Cursor::default();
                }
                Some(e) => {
                    if encode::entry_commands_part(
                        &keys[i],
                        e,
                        Some(store.slot_stamp(slot)),
                        &mut cursor,
                        STEP_ELEMS,
                        &mut out,
                        &mut ends,
                    ) {
                        i += 1;
                        cursor = encode::Cursor::default();
                        done_keys += 1;
                    }
                }
            }
        }
        if out.len() >= PIECE_BYTES {
            pieces.push(Piece {
                cmds: std::mem::replace(
                    &mut out,
                    Vec::with_capacity(PIECE_BYTES + PIECE_BYTES / 4),
                ),
                ends: std::mem::take(&mut ends),
            });
        }
        if step.elapsed() >= STEP {
            tokio::task::yield_now().await;
            step = Instant::now();
        }
    }
    m.mark_cloned(slot);
    m.encoding.set(None);
    node.migrations.refresh();
    pieces.push(Piece { cmds: out, ends });
    (pieces, done_keys)
}

/// Sends the slots (each encoded consistently), then captured writes until
/// the lag is small.
async fn copy(node: &Rc<Node>, m: &Outgoing, tx: &mut Sender) -> Result<(), MigrationError> {
    set_phase(node, m, Phase::Snapshot);
    for slot in m.slots.iter() {
        check_cancel(m)?;
        if node.slot_map.borrow().owner(slot) != SlotOwner::Local {
            return Err(MigrationError::Aborted(format!(
                "slot {slot} left this shard before it was sent"
            )));
        }
        let (pieces, keys) = encode_slot(node, m, slot).await;
        // A big collection spans batches, split between its commands.
        for p in pieces {
            let mut at = 0;
            for &end in &p.ends {
                tx.buf.extend_from_slice(&p.cmds[at..end]);
                at = end;
                tx.maybe_flush(node, m).await?;
            }
        }
        m.keys_sent.set(m.keys_sent.get() + keys);
        let t = &node.migrations.totals.keys_out;
        t.set(t.get() + keys);
        // This slot's writes (and earlier slots') follow its data.
        drain_captured(m, &mut tx.buf);
        tx.maybe_flush(node, m).await?;
        if m.captured_bytes.get() > m.limits.get().max_buffer_bytes {
            return Err(MigrationError::Aborted(
                "captured writes exceed the buffer limit: the target does not keep up".into(),
            ));
        }
    }
    tx.flush(node, m).await?;
    tx.settle(node, m).await?;
    set_phase(node, m, Phase::Streaming);
    loop {
        check_cancel(m)?;
        let limits = m.limits.get();
        if m.captured_bytes.get() > limits.max_buffer_bytes {
            return Err(MigrationError::Aborted(
                "captured writes exceed the buffer limit: the target does not keep up".into(),
            ));
        }
        if m.captured_bytes.get() <= limits.handoff_max_lag_bytes {
            return tx.settle(node, m).await;
        }
        drain_captured(m, &mut tx.buf);
        tx.flush(node, m).await?;
    }
}

/// Ends the write pause, adding its length to the counters.
fn end_pause(node: &Node, m: &Outgoing) {
    if let Some(t) = m.pause_started.take() {
        let ms = t.elapsed().as_millis() as u64;
        m.write_pause_ms.set(m.write_pause_ms.get() + ms);
        let tot = &node.migrations.totals.write_pause_ms;
        tot.set(tot.get() + ms);
    }
}

/// How a handoff attempt ended.
enum Handoff {
    /// The topology flipped the slots away.
    Flipped,
    /// The target dropped its staging (or never sealed): safe to resume.
    Aborted(String),
}

fn flipped(node: &Node, m: &Outgoing) -> bool {
    let map = node.slot_map.borrow();
    m.slots.iter().any(|s| map.owner(s) != SlotOwner::Local)
}

/// Pause, seal, and wait for the operator's topology.
async fn handoff(node: &Rc<Node>, m: &Outgoing, tx: &mut Sender) -> Handoff {
    set_phase(node, m, Phase::Paused);
    m.pause_started.set(Some(Instant::now()));
    let deadline = Instant::now() + Duration::from_millis(m.limits.get().write_pause_timeout_ms);
    let seal = async {
        drain_captured(m, &mut tx.buf);
        tx.flush(node, m).await?;
        tx.settle(node, m).await?;
        // The pause is logged, and durable by this shard's rule, before the
        // target may seal: a restarted (or promoted) source keeps writes
        // to the slots blocked until the target's fate is known.
        log_pause(node, m)
            .await
            .map_err(|e| MigrationError::Aborted(format!("logging the pause: {e}")))?;
        let seq = tx.seq.to_string();
        tx.call_resending(m, &[b"TMIGRATE", b"SEAL", m.id.as_bytes(), seq.as_bytes()])
            .await
    };
    match tokio::time::timeout_at(deadline.into(), seal).await {
        Ok(Ok(_)) => {
            tracing::info!(migration = %m.id, pause_ms = m.pause_started.get().map_or(0, |t| t.elapsed().as_millis() as u64), "sealed at the target; waiting for the topology");
            set_phase(node, m, Phase::HandoffReady);
        }
        // Even a refused seal may have sealed (a reply replaced by the
        // target's acknowledgement-rule error): resume only once the
        // target confirms an abort.
        Ok(Err(e)) => m.fail(format!("sealing: {e}")),
        Err(_) => m.fail("the write pause timed out before the target sealed"),
    }
    await_flip(node, m, tx, deadline).await
}

/// From a seal on, the target may commit: resume only on its word (or the
/// operator's forced cancel); otherwise wait for the flip.
async fn await_flip(node: &Node, m: &Outgoing, tx: &mut Sender, deadline: Instant) -> Handoff {
    let mut warned = false;
    loop {
        if flipped(node, m) {
            return Handoff::Flipped;
        }
        let timed_out = Instant::now() >= deadline;
        if timed_out || m.cancel.get().is_some() || m.last_error.borrow().is_some() {
            match abort_at_target(node, m, tx).await {
                Ok(()) => {
                    let why = m.last_error.borrow().clone();
                    return Handoff::Aborted(why.unwrap_or_else(|| {
                        if timed_out {
                            "the write pause exceeded its limit".into()
                        } else {
                            "cancelled by the operator".into()
                        }
                    }));
                }
                Err(e) if m.cancel.get() == Some(true) => {
                    return Handoff::Aborted(format!(
                        "forced cancel; the target did not confirm its abort: {e}"
                    ));
                }
                Err(e) => {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(migration = %m.id, error = %e, "the target did not confirm an abort: writes stay blocked until the topology or a forced cancel");
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), m.wake.notified()).await;
    }
}

/// The target shard's primary as the topology names it now (after a
/// failover of the target shard the flip names its new primary), else the
/// address the migration started with.
fn target_now(node: &Node, m: &Outgoing) -> NodeAddr {
    let map = node.slot_map.borrow();
    match m.slots.iter().next().map(|s| map.owner(s)) {
        Some(SlotOwner::Remote(i)) => map.topology.shards[i].primary.clone(),
        _ => m.target.clone(),
    }
}

/// Asks the target to drop its staging; Ok once it confirmed.
async fn abort_at_target(node: &Node, m: &Outgoing, tx: &mut Sender) -> Result<(), String> {
    let mut reply = tx
        .link
        .call(&[b"TMIGRATE", b"ABORT", m.id.as_bytes()])
        .await;
    if reply.is_err() {
        // The link may be gone: one fresh connection.
        match Link::open(node, &target_now(node, m)).await {
            Ok(l) => {
                tx.link = l;
                reply = tx
                    .link
                    .call(&[b"TMIGRATE", b"ABORT", m.id.as_bytes()])
                    .await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    match reply {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps asking an unreachable target to drop an unsealed import (a cut
/// link, a target restarting), so its staging goes as soon as it hears the
/// source again rather than when its idle watchdog fires.
async fn abort_later(node: Rc<Node>, id: String, target: NodeAddr) {
    let deadline = Instant::now() + super::target::ORPHAN_AFTER;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(mut link) = Link::open(&node, &target).await else {
            continue;
        };
        match link.call(&[b"TMIGRATE", b"ABORT", id.as_bytes()]).await {
            Ok(Ok(_)) => {
                tracing::info!(migration = %id, "the target confirmed the abort");
                return;
            }
            Ok(Err(e)) if e.starts_with("COMMITTED") => {
                // Cannot happen for an unsealed import; never hide it.
                tracing::error!(migration = %id, reply = %e, "the target committed an import the source aborted");
                return;
            }
            _ => {}
        }
    }
}

/// After the flip: waits until the target's commit is durable by its
/// shard's rule (`TMIGRATE FINISH`), reconnecting as needed.
async fn confirm_commit(node: &Node, m: &Outgoing, tx: &mut Sender) -> Result<(), String> {
    let mut waited = Instant::now();
    loop {
        let reply = tx
            .link
            .call(&[b"TMIGRATE", b"FINISH", m.id.as_bytes()])
            .await;
        match reply {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.starts_with("ABORTED") => return Err(e),
            Ok(Err(e)) => {
                if waited.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(migration = %m.id, reply = %e, "the target has not committed yet");
                    waited = Instant::now();
                }
            }
            Err(e) => {
                tracing::warn!(migration = %m.id, error = %e, "confirming the commit: reconnecting");
                if let Ok(l) = Link::open(node, &target_now(node, m)).await {
                    tx.link = l;
                }
            }
        }
        if m.cancel.get() == Some(true) {
            return Err("forced cancel while confirming the commit".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Frees the moved slots' data: each slot is detached in one cheap step
/// and dropped on a thread of its own, one at a time with pauses, so
/// neither the event loop nor the allocator stalls clients.
async fn release(node: &Node, m: &Outgoing) {
    let (send, recv) = std::sync::mpsc::channel::<SlotData>();
    let spawned = std::thread::Builder::new()
        .name("slot-release".into())
        .spawn(move || {
            for data in recv {
                let t = Instant::now();
                drop(data);
                std::thread::sleep(t.elapsed().min(Duration::from_millis(50)));
            }
        });
    let gone: Vec<u16> = {
        let map = node.slot_map.borrow();
        m.slots
            .iter()
            .filter(|&s| map.owner(s) != SlotOwner::Local)
            .collect()
    };
    // Logged first, so this shard's replicas (and a recovery) free them too.
    let ranges = format_ranges(&super::to_ranges(&gone));
    node.wal.append(
        crate::node::wal::MARKER_SLOT,
        &[
            super::RECORD,
            b"RELEASE",
            m.id.as_bytes(),
            ranges.as_bytes(),
        ],
    );
    let mut freed = 0usize;
    for slot in gone {
        let data = node.store.borrow_mut().take_slot(slot);
        freed += data.len();
        if spawned.is_ok() {
            let _ = send.send(data);
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(migration = %m.id, keys = freed, "moved slots freed");
}

async fn run(node: Rc<Node>, m: Rc<Outgoing>) {
    let result = drive(&node, &m).await;
    end_pause(&node, &m);
    m.finished_ms.set(now_ms());
    match result {
        Ok(()) => {
            let t = &node.migrations.totals.done;
            t.set(t.get() + 1);
            set_phase(&node, &m, Phase::Done);
            tracing::info!(migration = %m.id, keys = m.keys_sent.get(), bytes = m.bytes_sent.get(), write_pause_ms = m.write_pause_ms.get(), "slot migration done");
        }
        Err(e) => {
            if m.last_error.borrow().is_none() {
                m.fail(e.to_string());
            }
            let t = &node.migrations.totals.aborted;
            t.set(t.get() + 1);
            set_phase(&node, &m, Phase::Aborted);
        }
    }
    m.captured.borrow_mut().clear();
    m.captured_bytes.set(0);
    log_resume(&node, &m);
}

/// Logs the start of the write pause: `TMIGRATE PAUSE id target-id host
/// port ranges`, waiting until it is durable by this shard's rule.
async fn log_pause(node: &Node, m: &Outgoing) -> Result<(), String> {
    let (port, ranges) = (m.target.port.to_string(), format_ranges(&m.ranges));
    let lsn = node.wal.append(
        crate::node::wal::MARKER_SLOT,
        &[
            super::RECORD,
            b"PAUSE",
            m.id.as_bytes(),
            m.target.id.as_bytes(),
            m.target.host.as_bytes(),
            port.as_bytes(),
            ranges.as_bytes(),
        ],
    );
    m.pause_logged.set(true);
    node.wal.wait(lsn).await.map_err(|e| e.to_string())?;
    crate::node::replication::wait_rule(node, lsn).await
}

/// Logs the end of a logged pause (resumed, or the slots moved away).
fn log_resume(node: &Node, m: &Outgoing) {
    if m.pause_logged.replace(false) {
        node.wal.append(
            crate::node::wal::MARKER_SLOT,
            &[super::RECORD, b"RESUME", m.id.as_bytes()],
        );
    }
}

/// A pause rebuilt from the log (`TMIGRATE PAUSE` without its `RESUME`):
/// on a replica it waits; on a primary it settles the target's fate as the
/// original task would have after its seal.
pub fn recovered_pause(node: &Node, args: &[&[u8]]) -> Result<(), String> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let [_, _, id, tid, host, port, ranges] = args else {
        return Err("malformed PAUSE record".into());
    };
    let ranges = super::parse_ranges(&text(ranges)).map_err(|e| e.to_string())?;
    let slots = SlotSet::from_ranges(&ranges).map_err(|e| e.to_string())?;
    let target = NodeAddr {
        id: text(tid),
        host: text(host),
        port: text(port)
            .parse()
            .map_err(|_| "bad port in PAUSE".to_string())?,
        tls_port: None,
    };
    let m = Rc::new(Outgoing::new(
        text(id),
        ranges,
        slots,
        target,
        Limits::default(),
        Phase::HandoffReady,
        true,
    ));
    m.pause_logged.set(true);
    m.pause_started.set(Some(Instant::now()));
    node.migrations
        .outgoing
        .borrow_mut()
        .retain(|o| o.id != m.id);
    node.migrations.add_outgoing(m.clone());
    if node.role.get() == Role::Replica {
        // The normal case on a source's replica: its primary is pausing.
        tracing::debug!(migration = %m.id, "the primary paused writes for a migration");
    } else {
        tracing::warn!(migration = %m.id, "a logged write pause without its end: writes to its slots stay blocked until the target confirms an abort or the topology flips");
    }
    if let Some(node) = node.migrations.node() {
        tokio::task::spawn_local(settle_recovered(node, m));
    }
    Ok(())
}

/// Ends a recovered pause from the log (RESUME, or RELEASE of its slots).
pub fn end_recovered(node: &Node, id: &str, phase: Phase) {
    for m in node.migrations.outgoing.borrow().iter() {
        if m.id == id && m.recovered && !m.phase.get().is_final() {
            m.pause_logged.set(false);
            m.phase.set(phase);
            m.wake.notify_one();
        }
    }
    node.migrations.refresh();
}

async fn settle_recovered(node: Rc<Node>, m: Rc<Outgoing>) {
    // Only a ready primary acts; the log may also end the pause first.
    let link = loop {
        if m.phase.get().is_final() {
            return;
        }
        if node.role.get() == Role::Primary && node.ready.get() {
            if flipped(&node, &m) {
                break None;
            }
            match Link::open(&node, &m.target).await {
                Ok(l) => break Some(l),
                Err(e) => {
                    tracing::warn!(migration = %m.id, error = %e, "recovered pause: the target is unreachable")
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), m.wake.notified()).await;
    };
    let link = match link {
        Some(l) => l,
        None => {
            match Link::open(&node, &target_now(&node, &m)).await {
                Ok(l) => l,
                Err(e) => {
                    m.fail(format!("recovered after the flip; the target is unreachable: {e}; the data stays here"));
                    m.phase.set(Phase::Aborted);
                    node.migrations.refresh();
                    return;
                }
            }
        }
    };
    let mut tx = Sender::new(link);
    let result = match await_flip(&node, &m, &mut tx, Instant::now()).await {
        Handoff::Aborted(why) => Err(MigrationError::Aborted(why)),
        Handoff::Flipped => finish_flip(&node, &m, &mut tx).await,
    };
    end_pause(&node, &m);
    match result {
        Ok(()) => set_phase(&node, &m, Phase::Done),
        Err(e) => {
            m.fail(e.to_string());
            set_phase(&node, &m, Phase::Aborted);
        }
    }
    log_resume(&node, &m);
}

/// After the flip: confirm the commit at the target, then free the data.
async fn finish_flip(node: &Node, m: &Outgoing, tx: &mut Sender) -> Result<(), MigrationError> {
    // Writes now answer MOVED (the topology): the pause is over.
    end_pause(node, m);
    set_phase(node, m, Phase::Finishing);
    confirm_commit(node, m, tx)
        .await
        .map_err(|e| MigrationError::Aborted(format!("{e}; the data stays here")))?;
    set_phase(node, m, Phase::Releasing);
    release(node, m).await;
    Ok(())
}

async fn drive(node: &Rc<Node>, m: &Outgoing) -> Result<(), MigrationError> {
    let link = Link::open(node, &m.target).await?;
    let mut tx = Sender::new(link);
    let ranges = format_ranges(&m.ranges);
    tx.link
        .call(&[
            b"TMIGRATE",
            b"START",
            m.id.as_bytes(),
            node.id.as_bytes(),
            ranges.as_bytes(),
        ])
        .await?
        .map_err(MigrationError::Refused)?;
    if let Err(e) = copy(node, m, &mut tx).await {
        // Nothing sealed: the target cannot commit; tell it to drop.
        if let Err(a) = abort_at_target(node, m, &mut tx).await {
            tracing::warn!(migration = %m.id, error = %a, "the target did not confirm the abort; retrying in the background");
            tokio::task::spawn_local(abort_later(node.clone(), m.id.clone(), target_now(node, m)));
        }
        return Err(e);
    }
    match handoff(node, m, &mut tx).await {
        Handoff::Aborted(why) => Err(MigrationError::Aborted(why)),
        Handoff::Flipped => finish_flip(node, m, &mut tx).await,
    }
}

/// Cancel from the operator; `force` resumes writes even when the target
/// cannot confirm it dropped the staging (the operator then guarantees it
/// will not flip the slots).
pub fn cancel(m: &Outgoing, force: bool) {
    if m.last_error.borrow().is_none() {
        *m.last_error.borrow_mut() = Some("cancelled by the operator".into());
    }
    m.cancel.set(Some(force));
    m.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `total` bytes in `batch`-byte pieces through the bucket on a
    /// simulated clock whose sleeps overshoot; returns the seconds it took.
    fn simulate(limit: u64, batch: usize, total: usize) -> f64 {
        let t0 = Instant::now();
        let mut now = t0;
        let mut b = Bucket::new(now);
        let mut sent = 0;
        while sent < total {
            match b.take(limit, batch, batch, now) {
                None => sent += batch,
                // tokio's timer wakes on whole milliseconds, late.
                Some(wait) => now += Duration::from_millis(wait.as_millis() as u64 + 1),
            }
        }
        now.duration_since(t0).as_secs_f64()
    }

    #[test]
    fn the_bucket_holds_high_and_low_limits() {
        // 100 MB/s in 32 KiB batches: faster than one batch per sleep.
        let secs = simulate(100_000_000, BATCH_BYTES, 100_000_000);
        assert!((0.95..1.05).contains(&secs), "100 MB took {secs} s");
        let secs = simulate(300_000_000, BATCH_BYTES, 300_000_000);
        assert!((0.95..1.05).contains(&secs), "300 MB took {secs} s");
        let secs = simulate(200_000, 20_000, 1_000_000);
        assert!((4.8..5.1).contains(&secs), "1 MB at 200 kB/s took {secs} s");
    }
}
