//! Listeners, connections, recovery and the periodic jobs of a node.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::client_io::ClientIo;
use super::cmd::{self, Args, ConnState, Ctx, Effects};
use super::metrics::Stats;
use super::resp::{parse_request_as, Parsed, ReplyBuf};
use super::store::{ExpireMode, Store};
use super::wal::{FsyncPolicy, Wal};
use super::{admin, alloc, load_node_id, now_ms, snapshot, Node, NodeConfig, NodeError};

/// Replies pending for a client that has not authenticated: Redis closes
/// such a client once its reply list passes 1 KiB beyond the 16 KiB
/// buffer (CVE-2025-21605), so a peer without the password that never
/// reads cannot make the node hold its replies.
const UNAUTH_OUTPUT_LIMIT: usize = 17 * 1024;

/// A primary with replicas writes and streams its pending records once this
/// much has gathered, without waiting for the end of the event-loop round
/// (see `replication::push_to_replicas`). In `always` the flusher's fsync
/// per write decides the batching instead.
const EARLY_PUSH_BYTES: usize = 16 * 1024;

/// Addresses a started node listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub resp: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts a node on the current LocalSet and serves until shutdown.
/// `bound` learns the real addresses once the listeners are open.
pub async fn serve(
    cfg: NodeConfig,
    bound: Option<oneshot::Sender<Bound>>,
) -> Result<(), NodeError> {
    if cfg.persistence {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
    }
    let id = load_node_id(&cfg)?;
    let wal = if cfg.persistence {
        Wal::open(&cfg.data_dir.join("wal"), cfg.fsync)?
    } else {
        Wal::disabled()
    };
    let resp_addr = SocketAddr::new(cfg.bind, cfg.port);
    let admin_addr = SocketAddr::new(cfg.bind, cfg.admin_port);
    let listener = TcpListener::bind(resp_addr)
        .await
        .map_err(|source| NodeError::Bind {
            what: "the RESP port",
            addr: resp_addr.to_string(),
            source,
        })?;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| NodeError::Bind {
            what: "the admin port",
            addr: admin_addr.to_string(),
            source,
        })?;
    let metrics_listener = match cfg.metrics_port {
        Some(port) => {
            let addr = SocketAddr::new(cfg.bind, port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Bind {
                        what: "the metrics port",
                        addr: addr.to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let tls_listener = match &cfg.tls {
        Some(t) => Some(bind_tls(cfg.bind, t.port).await?),
        None => None,
    };
    let node = Rc::new(Node::new(cfg, id, wal.clone(), Store::new()));
    node.migrations.set_node(&node);
    let resp_local = listener.local_addr().map_err(NodeError::Runtime)?;
    let admin_local = admin_listener.local_addr().map_err(NodeError::Runtime)?;
    node.set_port(resp_local.port());
    // Before the admin port serves: a push is newer than the saved copy.
    super::saved_topology::restore(&node);
    node.admin_port.set(admin_local.port());
    info!(node_id = %node.id, resp = %resp_local, admin = %admin_local, "listening");
    if let Some(tx) = bound {
        let _ = tx.send(Bound {
            resp: resp_local,
            admin: admin_local,
        });
    }

    if let Some(l) = tls_listener {
        let port = l.local_addr().map_err(NodeError::Runtime)?.port();
        node.tls_port.set(port);
        info!(tls = port, "TLS client port listening");
        tokio::task::spawn_local(super::tls::serve_clients(node.clone(), l));
    }
    // Health answers while the data set loads.
    tokio::task::spawn_local(admin::serve(node.clone(), admin_listener));
    if let Some(l) = metrics_listener {
        let local = l.local_addr().map_err(NodeError::Runtime)?;
        info!(metrics = %local, "probes and metrics port listening");
        tokio::task::spawn_local(admin::serve_metrics(node.clone(), l));
    }

    node.memory.startup.set(alloc::allocated() as u64);
    let started = Instant::now();
    recover(&node).await?;
    node.wal.start();
    super::replication::start(&node).await?;
    node.ready.set(true);
    info!(
        keys = node.store.borrow().len(),
        lsn = node.wal.last_lsn(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ready"
    );

    tokio::task::spawn_local(expire_loop(node.clone()));
    tokio::task::spawn_local(super::load::sample_loop(node.clone()));
    tokio::task::spawn_local(super::pubsub_forward::supervise(node.clone()));
    if let Some(spin) = &node.idle_spin {
        let n = node.clone();
        tokio::task::spawn_local(spin.clone().run(move || n.waits_on_others()));
    }
    if node.cfg.persistence {
        tokio::task::spawn_local(snapshot_loop(node.clone()));
    }

    let mut shutdown = node.shutdown.subscribe();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(NodeError::Runtime)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    tokio::task::spawn_local(handle_connection(node.clone(), sock, peer));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("shutting down");
    // Everything acknowledged is already durable per policy; this makes the
    // tail durable too so a clean restart replays nothing it needn't.
    if let Err(e) = node.wal.wait(node.wal.last_lsn()).await {
        error!(error = %e, "final log flush failed");
    }
    Ok(())
}

async fn bind_tls(ip: std::net::IpAddr, port: u16) -> Result<TcpListener, NodeError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            what: "the TLS port",
            addr: addr.to_string(),
            source,
        })
}

/// Loads the newest snapshot (on a blocking thread) and replays the log
/// after it, honouring each slot's watermark.
async fn recover(node: &Rc<Node>) -> Result<(), NodeError> {
    if !node.cfg.persistence {
        return Ok(());
    }
    let dir = node.cfg.data_dir.join("snapshots");
    let (store, loaded) = tokio::task::spawn_blocking(move || {
        let mut store = Store::new();
        let loaded = snapshot::load_newest(&dir, &mut store)?;
        Ok::<_, snapshot::SnapshotError>((store, loaded))
    })
    .await
    .map_err(|e| NodeError::Runtime(std::io::Error::other(e)))??;
    *node.store.borrow_mut() = store;
    let (after, watermarks) = match &loaded {
        Some(l) => {
            info!(path = %l.info.path.display(), start_lsn = l.info.start_lsn, end_lsn = l.info.end_lsn, keys = l.info.keys, "snapshot loaded");
            node.wal.ensure_after(l.info.end_lsn);
            (l.info.start_lsn, Some(l.watermarks.clone()))
        }
        None => (0, None),
    };
    *node.last_snapshot.borrow_mut() = loaded.as_ref().map(|l| l.info.clone());

    node.store.borrow_mut().mode = ExpireMode::Passive;
    // The same applier a replica uses for what it receives.
    let mut applier = super::replication::Applier::with_watermarks(node, watermarks);
    let mut replayed = 0u64;
    for rec in node.wal.read_from(after)? {
        applier.apply(node, &rec?);
        replayed += 1;
        if replayed % 10_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut store = node.store.borrow_mut();
    store.mode = ExpireMode::Active;
    info!(records = replayed, keys = store.len(), "log replayed");
    Ok(())
}

/// Active expiry: ten times a second, sample volatile keys; go on while more
/// than a quarter of the sample had expired, for at most 25 ms.
async fn expire_loop(node: Rc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let start = Instant::now();
        loop {
            let mut store = node.store.borrow_mut();
            store.now_ms = now_ms();
            let (examined, expired) = store.active_expire_cycle(200);
            for (slot, key) in store.drain_expired() {
                let flags = node.notify.get();
                super::notify::publish(&node, flags, super::notify::EXPIRED, "expired", &key);
                node.wal.append(slot, &[b"DEL", &key]);
                // A WATCH on the key trips, as for any change.
                cmd::multi::touch_watched(&node, slot, &[b"DEL", &key]);
            }
            if examined == 0
                || expired * 4 < examined
                || start.elapsed() > Duration::from_millis(25)
            {
                break;
            }
        }
    }
}

/// Takes a snapshot whenever enough log has accumulated since the last one.
async fn snapshot_loop(node: Rc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut bytes_at_last = node.wal.stats().bytes_written;
    loop {
        tick.tick().await;
        super::alloc::collect();
        let written = node.wal.stats().bytes_written;
        // As Redis' auto-aof-rewrite-percentage 100: a snapshot costs time
        // in proportion to the dataset, so wait for at least as much log as
        // the last snapshot's size (never less than --snapshot-log-bytes).
        // The cost per write then stays constant as the dataset grows, and
        // replay at startup stays bounded by the snapshot's size.
        let last_size = node.last_snapshot.borrow().as_ref().map_or(0, |s| s.bytes);
        let threshold = node.cfg.snapshot_log_bytes.max(last_size);
        if written.saturating_sub(bytes_at_last) < threshold {
            continue;
        }
        if node.migrations.defer_snapshots() {
            // Not while an import stages data (or a pause is logged): asked
            // again every tick, so the log that a big import wrote is
            // snapshotted (and truncated) as soon as the import ends, not
            // after another threshold's worth of writes.
            continue;
        }
        bytes_at_last = written;
        if let Err(e) = run_snapshot(&node).await {
            error!(error = %e, "snapshot failed");
        }
    }
}

/// Takes one snapshot unless one is already running.
pub async fn run_snapshot(
    node: &Rc<Node>,
) -> Result<Option<snapshot::SnapshotInfo>, snapshot::SnapshotError> {
    if node.migrations.defer_snapshots() || node.snapshot_running.replace(true) {
        return Ok(None);
    }
    let res = snapshot::take(node).await;
    node.snapshot_running.set(false);
    let info = res?;
    info!(path = %info.path.display(), keys = info.keys, bytes = info.bytes, duration_ms = info.duration_ms, "snapshot written");
    *node.last_snapshot.borrow_mut() = Some(info.clone());
    Ok(Some(info))
}

/// Serves one client connection, plain TCP or TLS, until it ends.
pub async fn handle_connection<S: ClientIo>(node: Rc<Node>, mut sock: S, peer: SocketAddr) {
    node.stats
        .connections_received
        .set(node.stats.connections_received.get() + 1);
    if node.connected_clients.get() >= node.cfg.max_clients {
        node.stats
            .rejected_connections
            .set(node.stats.rejected_connections.get() + 1);
        let _ = sock.send(b"-ERR max number of clients reached\r\n").await;
        return;
    }
    let _ = sock.tcp().set_nodelay(true);
    node.connected_clients.set(node.connected_clients.get() + 1);
    let mut conn = node.new_conn(peer.to_string());
    {
        use std::os::fd::AsRawFd;
        node.clients.borrow_mut().register(
            conn.id,
            sock.tcp().as_raw_fd(),
            conn.addr.clone(),
            conn.idle.clone(),
        );
    }
    if let Err(e) = connection_loop(&node, &mut sock, &mut conn).await {
        tracing::debug!(peer = %peer, error = %e, "connection closed with an error");
    }
    node.conn_closed(&mut conn);
    node.connected_clients.set(node.connected_clients.get() - 1);
}

async fn connection_loop<S: ClientIo>(
    node: &Rc<Node>,
    sock: &mut S,
    conn: &mut ConnState,
) -> std::io::Result<()> {
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = ReplyBuf::new();
    // What this client's buffers hold, for INFO's mem_clients_normal.
    let mut client_mem = alloc::ClientBytes::default();
    client_mem.set(inbuf.capacity() + out.buf.capacity());
    let mut ranges = Vec::new();
    // Reply ranges of the batch's writes, for the acknowledgement rule.
    let mut write_replies: Vec<std::ops::Range<usize>> = Vec::new();
    // A WAIT ended the last batch early: parse the rest before reading.
    let mut parse_first = false;
    loop {
        let n = if std::mem::take(&mut parse_first) {
            0
        } else {
            // No per-read shutdown select: registering a watch waiter on
            // every read costs throughput; at shutdown the runtime drops
            // every connection task instead.
            // A script past its time limit may answer this client (BUSY,
            // SCRIPT KILL) straight from its socket while it waits here.
            // (Only on a raw socket: see `ClientIo::RAW`.)
            conn.idle
                .set(S::RAW && inbuf.is_empty() && conn.authenticated && conn.sub.is_none());
            let n = match conn.sub.clone() {
                // A subscriber also wakes for the messages published to it.
                Some(sub) => read_or_deliver(node, sock, &mut inbuf, &sub).await?,
                None => sock.read_some(&mut inbuf).await?,
            };
            conn.idle.set(false);
            if n == 0 {
                return Ok(());
            }
            if let Some(spin) = &node.idle_spin {
                spin.touch();
            }
            n
        };
        node.stats
            .net_input_bytes
            .set(node.stats.net_input_bytes.get() + n as u64);
        let mut effects = Effects::default();
        let mut close = false;
        let pipelined;
        {
            let mut store = node.store.borrow_mut();
            store.now_ms = now_ms();
            let mut consumed = 0;
            // Two clock reads per batch, not per command (a clock read was
            // ~10% of a primary's CPU): the lease checks of the batch use
            // its start, and each command is recorded with the batch's
            // average latency (parsing included).
            let batch_start = Instant::now();
            node.repl.set_batch_clock(Some(batch_start));
            let mut commands = 0u64;
            while consumed < inbuf.len() {
                let pending = &inbuf[consumed..];
                match parse_request_as(pending, &mut ranges, conn.authenticated) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Empty(used)) => consumed += used,
                    Ok(Parsed::Command(used)) => {
                        let args = Args {
                            buf: pending,
                            ranges: &ranges,
                        };
                        out.resp3 = conn.resp3;
                        let (lsn_before, reply_at) = (effects.last_lsn, out.buf.len());
                        let bound = ReplyBound::new(node, conn, reply_at);
                        out.limit = bound.limit();
                        run_command(node, &mut store, &mut out, conn, &mut effects, &args, used);
                        out.limit = usize::MAX;
                        if effects.blocked || effects.block {
                            // Not consumed: parsed again after the pause,
                            // or when a key it waits on is written.
                            parse_first = true;
                            break;
                        }
                        if conn.block.is_some() {
                            served_after_block(node, conn);
                        }
                        commands += 1;
                        consumed += used;
                        if out.overflowed && !bound.settle(node, conn, &mut out, &args) {
                            // Nothing of this batch is sent: the client is closed.
                            write_replies.clear();
                            close = true;
                            break;
                        }
                        if effects.last_lsn != lsn_before {
                            write_replies.push(reply_at..out.buf.len());
                        }
                        if effects.replicate.is_some() || effects.wait.is_some() {
                            parse_first = effects.wait.is_some();
                            break;
                        }
                        if conn.close_after_reply {
                            close = true;
                            break;
                        }
                    }
                    Err(e) => {
                        node.stats
                            .protocol_errors
                            .set(node.stats.protocol_errors.get() + 1);
                        out.error(&format!("ERR {e}"));
                        match e.skip {
                            Some(skip) => consumed += skip,
                            None => {
                                close = true;
                                break;
                            }
                        }
                    }
                }
            }
            node.repl.set_batch_clock(None);
            pipelined = commands > 1;
            if commands > 0 {
                let per = batch_start.elapsed().as_secs_f64() / commands as f64;
                node.stats.command_latency.observe_n(per, commands);
            }
            inbuf.advance(consumed.min(inbuf.len()));
            close = close || over_query_limit(node, conn, inbuf.len(), &mut out);
        }
        if effects.last_lsn > 0 {
            if node.wal.pending_bytes() >= EARLY_PUSH_BYTES
                && node.wal.policy() != FsyncPolicy::Always
                && node.repl.streaming()
            {
                node.wal.flush_now();
                super::replication::push_to_replicas(node);
            }
            if let Err(e) = node.wal.wait(effects.last_lsn).await {
                // Never acknowledge what the log did not take: drop the
                // replies of this batch and the connection.
                error!(error = %e, "write not acknowledged: the log failed");
                return Err(std::io::Error::other(e));
            }
            // Then the shard's rule (replicas); on failure every write of
            // the batch answers the error instead: never a success that did
            // not happen. Reads keep their replies.
            if let Err(msg) = super::replication::wait_rule(node, effects.last_lsn).await {
                replace_replies(&mut out, &write_replies, &msg);
            }
        }
        write_replies.clear();
        if let Some((want, timeout_ms)) = effects.wait.take() {
            let got = super::replication::wait_command(node, want, timeout_ms).await;
            out.int(got);
        }
        if out.errors > 0 {
            Stats::add(&node.stats.error_replies, out.errors);
            out.errors = 0;
        }
        if !out.buf.is_empty() {
            node.stats
                .net_output_bytes
                .set(node.stats.net_output_bytes.get() + out.buf.len() as u64);
            // Let the other clients whose requests are ready run theirs
            // first: the replies then leave in a burst after the loop's
            // next poll, and a client that reads many connections is woken
            // once per burst, not once per reply (on a VM a wakeup costs
            // the sending core about as much as serving a short script).
            // Only for a pipelined batch: one command per round trip
            // (and a client alone) would pay for the extra poll in latency
            // and gain nothing.
            if pipelined && node.connected_clients.get() > 1 {
                tokio::task::yield_now().await;
            }
            sock.send(&out.buf).await?;
            out.buf.clear();
            if out.buf.capacity() > 1024 * 1024 {
                out.buf.shrink_to(16 * 1024);
            }
        }
        client_mem.set(inbuf.capacity() + out.buf.capacity());
        if close {
            return Ok(());
        }
        if effects.blocked {
            node.migrations.wait_unblocked().await;
        }
        if effects.block && !wait_blocked(node, sock, conn, &mut inbuf).await? {
            return Ok(());
        }
        if let Some(args) = effects.replicate.take() {
            let rest = inbuf.split().to_vec();
            return sock.serve_replica(node, rest, args).await;
        }
        if inbuf.capacity() > 1024 * 1024 && inbuf.len() < 16 * 1024 {
            let rest = inbuf.split();
            inbuf = BytesMut::with_capacity(16 * 1024);
            inbuf.extend_from_slice(&rest);
        }
    }
}

/// Reads a subscribed client's input, writing the messages published to it
/// meanwhile. 0: the client went away, or it was closed for letting its
/// messages pile up past the output buffer limit.
async fn read_or_deliver<S: ClientIo>(
    node: &Node,
    sock: &mut S,
    inbuf: &mut BytesMut,
    sub: &super::pubsub::Subscriber,
) -> std::io::Result<usize> {
    loop {
        if sub.overflow.get() {
            warn!(
                client_id = sub.id,
                limit = sub.limit,
                "closing a subscriber over its output buffer limit"
            );
            Stats::add(&node.stats.output_buffer_disconnections, 1);
            return Ok(0);
        }
        let pending = std::mem::take(&mut *sub.queue.borrow_mut());
        if !pending.is_empty() {
            Stats::add(&node.stats.net_output_bytes, pending.len() as u64);
            sock.send(&pending).await?;
            continue;
        }
        tokio::select! {
            n = sock.read_some(inbuf) => return n,
            _ = sub.notify.notified() => {}
        }
    }
}

/// A blocking command finished (served, timed out or refused): if a write
/// had woken it, the next client waiting on its keys tries too (the write
/// may have pushed more than one element).
fn served_after_block(node: &Node, conn: &mut ConnState) {
    if let Some(b) = conn.block.take() {
        let mut blocked = node.blocked.borrow_mut();
        blocked.unregister(&b.keys, conn.id);
        if b.woken {
            for k in &b.keys {
                blocked.signal(k);
            }
        }
    }
}

/// Waits, at no cost, until a key the blocked command waits on is written,
/// its deadline passes, or the node's role or slots change; then the
/// command runs again. Input the client sends meanwhile is buffered (and
/// bounded by the query buffer limit). False: the client went away (its
/// command never runs, so nothing is popped for nobody).
async fn wait_blocked<S: ClientIo>(
    node: &Rc<Node>,
    sock: &mut S,
    conn: &mut ConnState,
    inbuf: &mut BytesMut,
) -> std::io::Result<bool> {
    let Some(state) = conn.block.as_mut() else {
        return Ok(true);
    };
    let waiter = Rc::new(super::blocking::Waiter {
        id: conn.id,
        arrival: state.arrival,
        notify: tokio::sync::Notify::new(),
    });
    node.blocked.borrow_mut().register(&state.keys, &waiter);
    let deadline = state.deadline;
    let alive = loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = waiter.notify.notified() => {
                state.woken = true;
                break true;
            }
            _ = timeout => {
                state.timed_out = true;
                break true;
            }
            n = sock.read_some(inbuf) => {
                if n? == 0 {
                    break false;
                }
                if inbuf.len() > node.cfg.limits.query_buffer {
                    break false;
                }
            }
        }
    };
    node.blocked.borrow_mut().unregister(&state.keys, conn.id);
    if !alive {
        conn.block = None;
    }
    Ok(alive)
}

/// Whether a client's unparsed input passed `--client-query-buffer-limit`;
/// then it gets an error and is closed, as in Redis.
fn over_query_limit(node: &Node, conn: &ConnState, pending: usize, out: &mut ReplyBuf) -> bool {
    let limit = node.cfg.limits.query_buffer;
    if pending <= limit {
        return false;
    }
    warn!(
        client_id = conn.id,
        addr = %conn.addr,
        bytes = pending,
        limit,
        "closing a client over the query buffer limit"
    );
    Stats::add(&node.stats.query_buffer_disconnections, 1);
    out.error("ERR Protocol error: client query buffer limit exceeded");
    true
}

/// Where one command's reply must stop: the per-command cap counted from
/// where its reply starts, and the client's output buffer limit.
struct ReplyBound {
    reply_at: usize,
    /// End of the per-command cap (`--max-reply-bytes`).
    command_end: usize,
    /// The client's output limit (`--client-output-buffer-limit`, or the
    /// small one before AUTH).
    output: usize,
}

impl ReplyBound {
    fn new(node: &Node, conn: &ConnState, reply_at: usize) -> Self {
        let limits = &node.cfg.limits;
        Self {
            reply_at,
            command_end: reply_at.saturating_add(limits.max_reply),
            output: if conn.authenticated {
                limits.output_buffer
            } else {
                UNAUTH_OUTPUT_LIMIT
            },
        }
    }

    fn limit(&self) -> usize {
        self.command_end.min(self.output)
    }

    /// After a command overflowed its bound: discard its partial reply.
    /// A reply over the per-command cap becomes an error and the
    /// connection goes on (true); a client over its output buffer limit is
    /// closed, as Redis does, and its pending replies dropped (false).
    fn settle(&self, node: &Node, conn: &ConnState, out: &mut ReplyBuf, args: &Args<'_>) -> bool {
        out.overflowed = false;
        let command = String::from_utf8_lossy(args.get(0)).to_ascii_lowercase();
        if self.command_end <= self.output {
            out.buf.truncate(self.reply_at);
            Stats::add(&node.stats.replies_over_limit, 1);
            warn!(
                client_id = conn.id,
                addr = %conn.addr,
                command = %command,
                limit = node.cfg.limits.max_reply,
                "a reply exceeded the per-command limit"
            );
            out.error(&format!(
                "ERR reply exceeds the limit of {} bytes (max-reply-bytes)",
                node.cfg.limits.max_reply
            ));
            return true;
        }
        warn!(
            client_id = conn.id,
            addr = %conn.addr,
            command = %command,
            authenticated = conn.authenticated,
            limit = self.output,
            "closing a client over its output buffer limit"
        );
        Stats::add(&node.stats.output_buffer_disconnections, 1);
        out.buf.clear();
        false
    }
}

/// Replaces the replies at `ranges` (in order, non-overlapping) with `-msg`.
fn replace_replies(out: &mut ReplyBuf, ranges: &[std::ops::Range<usize>], msg: &str) {
    let mut buf = Vec::with_capacity(out.buf.len());
    let mut at = 0;
    for r in ranges {
        buf.extend_from_slice(&out.buf[at..r.start]);
        buf.push(b'-');
        buf.extend_from_slice(msg.as_bytes());
        buf.extend_from_slice(b"\r\n");
        at = r.end;
    }
    buf.extend_from_slice(&out.buf[at..]);
    out.buf = buf;
    out.errors += ranges.len() as u64;
}

/// Runs one parsed command (`used` bytes of input) with its bookkeeping.
fn run_command(
    node: &Node,
    store: &mut Store,
    out: &mut ReplyBuf,
    conn: &mut ConnState,
    effects: &mut Effects,
    args: &Args<'_>,
    used: usize,
) {
    if !node.ready.get() {
        let loading_ok = node
            .commands
            .lookup(args.get(0))
            .is_some_and(|i| node.commands.spec(i).flags & cmd::flags::LOADING_OK != 0);
        if !loading_ok {
            out.error("LOADING Tessera is loading the dataset in memory");
            return;
        }
    }
    let reply_at = out.buf.len();
    let mut ctx = Ctx::new(node, store, out, conn, effects);
    let ran = cmd::dispatch(&mut ctx, args);
    if let Some(slot) = ctx.slot {
        // A keyed command this node served: dispatch found its slot.
        let reply = ctx.out.buf.len().saturating_sub(reply_at);
        node.load.count(slot, used, reply);
    }
    node.stats
        .commands_processed
        .set(node.stats.commands_processed.get() + 1);
    if let Some(i) = ran {
        let c = &node.stats.calls[i];
        c.set(c.get() + 1);
    }
}
