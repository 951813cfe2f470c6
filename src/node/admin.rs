//! The admin HTTP surface on the second port: health, readiness, metrics
//! (rendered in `metrics.rs`), status, and the calls the operator makes
//! (topology push).
//!
//! The operator's calls are plain functions on [`Node`] so that a RESP
//! command and an HTTP endpoint can never drift apart.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use super::metrics::render_metrics;
use super::slots::{SlotMap, Topology, TopologyError};
use super::{alloc, now_ms, Node};

/// Largest request body the admin port accepts (a topology of many shards).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// First byte of a TLS handshake record: what tells an HTTPS client from a
/// plaintext one on the one admin port.
const TLS_HANDSHAKE: u8 = 0x16;

pub async fn serve(node: Rc<Node>, listener: TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let node = node.clone();
        // HTTPS with --tls-admin (the certificate is re-read when it changes).
        let acceptor = node
            .tls
            .as_ref()
            .filter(|t| t.settings.admin)
            .map(|t| t.admin_acceptor());
        tokio::task::spawn_local(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let Some(acceptor) = acceptor else {
                let svc = service(node, Scheme::Http);
                let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                return;
            };
            // With HTTPS on, a plaintext connection is still served, but
            // only the probes and /metrics (the kubelet and Prometheus hold
            // no CA; neither endpoint carries data or needs a credential).
            let mut first = [0u8; 1];
            let peek =
                tokio::time::timeout(std::time::Duration::from_secs(10), sock.peek(&mut first));
            if !matches!(peek.await, Ok(Ok(1))) {
                return;
            }
            if first[0] != TLS_HANDSHAKE {
                let svc = service(node, Scheme::PlainBesideHttps);
                let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                return;
            }
            let Some(a) = acceptor else {
                return;
            };
            let accept = a.accept(sock);
            if let Ok(Ok(tls)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), accept).await
            {
                let svc = service(node, Scheme::Https);
                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
            }
        });
    }
}

/// The probes-and-metrics port: plain HTTP, /healthz, /readyz and /metrics
/// only. It exists so that a NetworkPolicy can admit the kubelet and
/// Prometheus here while the admin port admits only the cluster's own.
pub async fn serve_metrics(node: Rc<Node>, listener: TcpListener) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let svc = service(node.clone(), Scheme::ProbesOnly);
        tokio::task::spawn_local(async move {
            let http = hyper::server::conn::http1::Builder::new();
            let _ = http.serve_connection(TokioIo::new(sock), svc).await;
        });
    }
}

/// How a request reached the admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// Plain HTTP, HTTPS off: everything (behind the token).
    Http,
    Https,
    /// Plain HTTP while HTTPS is on: probes and metrics only.
    PlainBesideHttps,
    /// The metrics port: probes and metrics only, whatever the admin
    /// port's scheme.
    ProbesOnly,
}

fn service(
    node: Rc<Node>,
    scheme: Scheme,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<AnyBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<AnyBody>, Infallible>>,
> {
    hyper::service::service_fn(move |req| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(route_any(&node, req, scheme).await) }
    })
}

/// Responses that may stream a file (backups) besides the buffered ones.
type AnyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn route_any(node: &Rc<Node>, req: Request<Incoming>, scheme: Scheme) -> Response<AnyBody> {
    let path = req.uri().path();
    let probe = matches!(path, "/healthz" | "/readyz" | "/metrics");
    if scheme == Scheme::ProbesOnly && !probe {
        return error(
            StatusCode::NOT_FOUND,
            "this port serves /healthz, /readyz and /metrics only (the admin API is on the admin port)",
        )
        .map(|b| b.map_err(|never| match never {}).boxed());
    }
    if scheme == Scheme::PlainBesideHttps && !probe {
        // Refused before the token is looked at: a credential sent in the
        // clear is not to be honoured.
        tracing::warn!(method = %req.method(), path, "admin call over plaintext refused: this port needs HTTPS");
        return error(
            StatusCode::FORBIDDEN,
            "the admin API needs HTTPS on this port (plain HTTP serves /healthz, /readyz and /metrics only)",
        )
        .map(|b| b.map_err(|never| match never {}).boxed());
    }
    // Everything under /v1 reads data or changes state: the bearer token
    // first, before the body is read. Probes and /metrics stay open.
    if path.starts_with("/v1/") || path == "/v1" {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !node.admin_token.admits(auth) {
            tracing::warn!(method = %req.method(), path, "admin call refused: missing or wrong bearer token");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this call needs the cluster's admin token (Authorization: Bearer <token>)",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"tessera-admin\""),
            );
            return r.map(|b| b.map_err(|never| match never {}).boxed());
        }
    }
    if req.method() == Method::GET
        && (path == "/v1/backup/snapshot" || path.starts_with("/v1/wal/segments/"))
    {
        return backup_file(node, req).await;
    }
    route(node, req)
        .await
        .map(|b| b.map_err(|never| match never {}).boxed())
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static status and header values are valid")
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => reply(status, "application/json", b),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("failed to encode the response: {e}\n"),
        ),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &ErrorBody { error: msg.into() })
}

async fn route(node: &Rc<Node>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if super::migration::admin::handles(req.uri().path()) {
        return super::migration::admin::route(node, req).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            if node.ready.get() {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "loading\n")
            }
        }
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(node),
        ),
        (&Method::GET, "/v1/status") => json(StatusCode::OK, &status(node)),
        (&Method::GET, "/v1/topology") => json(StatusCode::OK, &node.slot_map.borrow().topology),
        (&Method::PUT, "/v1/topology") | (&Method::POST, "/v1/topology") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let topology: Topology = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid topology: {e}")),
            };
            match apply_topology(node, topology, &body) {
                Ok(()) => {
                    super::replication::apply_settings_json(node, &body);
                    json(StatusCode::OK, &node.slot_map.borrow().topology)
                }
                Err(e @ TopologyError::StaleEpoch { .. }) => {
                    error(StatusCode::CONFLICT, e.to_string())
                }
                Err(e @ TopologyError::Persist(_)) => {
                    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            }
        }
        (&Method::POST, "/v1/promote")
        | (&Method::POST, "/v1/follow")
        | (&Method::POST, "/v1/fence") => {
            let path = req.uri().path().to_string();
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let call: RoleCall = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
            };
            let res = match (path.as_str(), call.primary) {
                ("/v1/promote", _) => super::replication::promote(node, call.epoch, call.replicas),
                ("/v1/follow", Some(p)) => super::replication::follow(node, call.epoch, p),
                ("/v1/follow", None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "follow needs a primary {id, host, port}",
                    )
                }
                _ => super::replication::fence(node, call.epoch),
            };
            match res {
                Ok(()) => json(StatusCode::OK, &status(node)),
                Err(e @ super::replication::ReplError::StaleEpoch { .. }) => {
                    error(StatusCode::CONFLICT, e.to_string())
                }
                Err(e @ super::replication::ReplError::FollowSelf)
                | Err(e @ super::replication::ReplError::NoPersistence) => {
                    error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::GET, "/v1/wal/segments") => wal_segments(node).await,
        (&Method::POST, "/v1/wal/archived") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let call: ArchivedCall = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
            };
            match node.wal.set_archive_hold(call.lsn) {
                Ok(()) => {
                    tracing::info!(lsn = call.lsn, "log archived through (backup hold moved)");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "archiveHold": call.lsn }),
                    )
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::POST, "/v1/snapshot") => {
            let within = match query_param(&req, "reuse_within_ms").map(str::parse::<u64>) {
                None => None,
                Some(Ok(ms)) => Some(ms),
                Some(Err(e)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid reuse_within_ms (milliseconds): {e}"),
                    )
                }
            };
            if let Some(info) = within.and_then(|ms| reusable_snapshot(node, ms)) {
                tracing::info!(path = %info.path.display(), end_lsn = info.end_lsn, age_ms = now_ms().saturating_sub(info.finished_at_ms), "snapshot requested: the newest one reused");
                return json(StatusCode::OK, &SnapshotStatus::from(&info));
            }
            take_snapshot(node).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no route for {} {}", req.method(), req.uri().path()),
        ),
    }
}

/// The node's newest snapshot, if it finished less than `within_ms` ago,
/// is still on disk at the size it was written, and the log after its start
/// LSN is still here (this node truncates only through the older of its two
/// newest snapshots' start, and never above a backup's archive hold).
fn reusable_snapshot(node: &Node, within_ms: u64) -> Option<super::snapshot::SnapshotInfo> {
    let info = node.last_snapshot.borrow().clone()?;
    let fresh = now_ms().saturating_sub(info.finished_at_ms) < within_ms;
    let on_disk = std::fs::metadata(&info.path).is_ok_and(|m| m.len() == info.bytes);
    let first = node.wal.first_retained_lsn();
    let log_kept = first == 0 || first <= info.start_lsn + 1;
    (fresh && on_disk && log_kept).then_some(info)
}

async fn take_snapshot(node: &Rc<Node>) -> Response<Full<Bytes>> {
    match super::server::run_snapshot(node).await {
        Ok(Some(info)) => json(StatusCode::OK, &SnapshotStatus::from(&info)),
        Ok(None) => error(StatusCode::CONFLICT, "a snapshot is already running"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("failed to read the body: {e}"),
        )),
    }
}

/// Body of the promote / follow / fence calls.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoleCall {
    epoch: u64,
    #[serde(default)]
    primary: Option<super::slots::NodeAddr>,
    /// Promote: how many replicas the shard has (for quorum/strong).
    #[serde(default)]
    replicas: Option<usize>,
}

/// Installs a topology pushed by the operator (`body`, as received),
/// refusing an older epoch (of the topology, or of this node's shard).
pub fn apply_topology(
    node: &Rc<Node>,
    topology: Topology,
    body: &[u8],
) -> Result<(), TopologyError> {
    let current = node.slot_map.borrow().topology.epoch;
    if topology.epoch < current {
        return Err(TopologyError::StaleEpoch {
            offered: topology.epoch,
            current,
        });
    }
    let map = SlotMap::build(topology, &node.id)?;
    super::migration::check_topology(node, &map).map_err(TopologyError::Migration)?;
    let shard_epoch = map.my_shard().epoch;
    let seen = node.repl.epoch();
    if shard_epoch < seen {
        return Err(TopologyError::StaleEpoch {
            offered: shard_epoch,
            current: seen,
        });
    }
    if map.topology.epoch > 0 {
        // On disk before the map is in use: a restart must route and count
        // replicas (read as `required` does) as this topology says.
        let replicas = map.my_shard().replicas.len();
        if replicas > 0 {
            node.repl
                .remember_shard_size(replicas)
                .map_err(|e| TopologyError::Persist(e.to_string()))?;
        }
        if node.cfg.persistence {
            super::saved_topology::save(&node.cfg.data_dir, body)
                .map_err(|e| TopologyError::Persist(e.to_string()))?;
        }
    }
    let primary = map.my_shard().primary.clone();
    tracing::info!(epoch = map.topology.epoch, shard = %map.my_shard().name, shard_epoch, primary = %primary.id, "topology applied");
    node.forwarder.on_topology(&map.topology, &node.id);
    *node.slot_map.borrow_mut() = map;
    // One code path for role changes: the same as the admin calls.
    if let Err(e) = super::replication::apply_topology_role(node, shard_epoch, &primary) {
        tracing::warn!(error = %e, "the topology's role change failed");
    }
    super::migration::on_topology(node);
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub path: String,
    pub start_lsn: u64,
    pub end_lsn: u64,
    pub keys: u64,
    pub bytes: u64,
    pub finished_at_ms: u64,
    pub age_seconds: f64,
    pub duration_ms: u64,
}

impl From<&super::snapshot::SnapshotInfo> for SnapshotStatus {
    fn from(i: &super::snapshot::SnapshotInfo) -> Self {
        Self {
            path: i.path.display().to_string(),
            start_lsn: i.start_lsn,
            end_lsn: i.end_lsn,
            keys: i.keys,
            bytes: i.bytes,
            finished_at_ms: i.finished_at_ms,
            age_seconds: now_ms().saturating_sub(i.finished_at_ms) as f64 / 1000.0,
            duration_ms: i.duration_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node_id: String,
    pub role: &'static str,
    pub ready: bool,
    pub epoch: u64,
    pub shard: String,
    pub shard_epoch: u64,
    pub lsn: u64,
    pub durable_lsn: u64,
    pub keys: usize,
    pub slots: Vec<(u16, u16)>,
    pub fsync: &'static str,
    pub persistence: bool,
    pub used_memory: usize,
    /// `used_memory` less the replicas' log ring: the memory the data
    /// takes, which is what moves with slots (Redis' used_memory_dataset).
    pub used_memory_dataset: usize,
    /// 0: no limit.
    pub maxmemory: u64,
    pub connected_clients: usize,
    pub uptime_seconds: u64,
    pub last_snapshot: Option<SnapshotStatus>,
    /// Highest shard epoch seen (the fencing token this node enforces).
    pub fencing_epoch: u64,
    pub replication: super::replication::ReplicationStatus,
    /// Commands per second over the last ~1.5 s (all commands; writes).
    pub ops_per_sec: f64,
    pub write_ops_per_sec: f64,
    /// The slot carrying most keyed commands over the last 10-20 s (null
    /// under 100 keyed commands).
    pub hot_slot: Option<super::load::HotSlot>,
}

pub fn status(node: &Node) -> Status {
    let map = node.slot_map.borrow();
    let rates = node.load.rates();
    let shard = map.my_shard();
    Status {
        node_id: node.id.clone(),
        role: node.role.get().as_str(),
        ready: node.ready.get(),
        epoch: map.topology.epoch,
        shard: shard.name.clone(),
        shard_epoch: shard.epoch,
        lsn: node.wal.last_lsn(),
        durable_lsn: node.wal.durable_lsn(),
        keys: node.store.borrow().len(),
        slots: shard.slots.clone(),
        fsync: node.wal.policy().as_str(),
        persistence: node.cfg.persistence,
        used_memory: alloc::allocated(),
        used_memory_dataset: alloc::allocated().saturating_sub(node.wal.ring_bytes()),
        maxmemory: node.memory.maxmemory.get(),
        connected_clients: node.connected_clients.get(),
        uptime_seconds: node.started.elapsed().as_secs(),
        last_snapshot: node
            .last_snapshot
            .borrow()
            .as_ref()
            .map(SnapshotStatus::from),
        fencing_epoch: node.repl.epoch(),
        replication: super::replication::status(node),
        ops_per_sec: rates.ops,
        write_ops_per_sec: rates.writes,
        hot_slot: node.load.hot_slot(),
    }
}

// ---------------------------------------------------------------------------
// Backups (src/backup): the log segments and snapshot files, streamed, and
// the archive hold that keeps segments until a backup has copied them.
// ---------------------------------------------------------------------------

#[derive(serde::Deserialize)]
pub(crate) struct ArchivedCall {
    lsn: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SegmentEntry {
    name: String,
    first_lsn: u64,
    last_lsn: u64,
    closed: bool,
    bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SegmentList {
    node_id: String,
    role: &'static str,
    shard: String,
    shard_epoch: u64,
    /// Every record appended before this time (ms) is in the listed
    /// segments and durable.
    captured_at_ms: u64,
    archive_hold: Option<u64>,
    segments: Vec<SegmentEntry>,
}

/// Lists the log segments after making everything appended so far durable,
/// so the listing covers every write acknowledged before the call.
async fn wal_segments(node: &Rc<Node>) -> Response<Full<Bytes>> {
    if !node.cfg.persistence {
        return error(StatusCode::CONFLICT, "the node runs without persistence");
    }
    let captured_at_ms = now_ms();
    if let Err(e) = node.wal.sync_through(node.wal.last_lsn()).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let mut segments = Vec::new();
    for s in node.wal.segment_list() {
        let bytes = match s.bytes {
            Some(b) => b,
            None => match std::fs::metadata(&s.path) {
                Ok(m) => m.len(),
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("failed to stat {}: {e}", s.path.display()),
                    )
                }
            },
        };
        let name = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        segments.push(SegmentEntry {
            name,
            first_lsn: s.first_lsn,
            last_lsn: s.last_lsn,
            closed: s.closed,
            bytes,
        });
    }
    let map = node.slot_map.borrow();
    json(
        StatusCode::OK,
        &SegmentList {
            node_id: node.id.clone(),
            role: node.role.get().as_str(),
            shard: map.my_shard().name.clone(),
            shard_epoch: map.my_shard().epoch,
            captured_at_ms,
            archive_hold: node.wal.archive_hold(),
            segments,
        },
    )
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Streams a snapshot (`/v1/backup/snapshot?name=<file>`, default the
/// newest) or a log segment (`/v1/wal/segments/<file>?bytes=N`: the first N
/// bytes — an active segment only grows, so a prefix read later is still
/// the one listed).
async fn backup_file(node: &Rc<Node>, req: Request<Incoming>) -> Response<AnyBody> {
    let boxed = |r: Response<Full<Bytes>>| r.map(|b| b.map_err(|never| match never {}).boxed());
    let path = req.uri().path();
    let (dir, name) = if let Some(name) = path.strip_prefix("/v1/wal/segments/") {
        (node.cfg.data_dir.join("wal"), name.to_string())
    } else {
        let name = match query_param(&req, "name") {
            Some(n) => n.to_string(),
            None => match node.last_snapshot.borrow().as_ref() {
                Some(s) => s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => return boxed(error(StatusCode::NOT_FOUND, "no snapshot yet")),
            },
        };
        (node.cfg.data_dir.join("snapshots"), name)
    };
    let plain = !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
        && (name.ends_with(".wal") || name.ends_with(".tsnap"));
    if !plain {
        return boxed(error(
            StatusCode::BAD_REQUEST,
            format!("not a log segment or snapshot file name: {name:?}"),
        ));
    }
    let limit = query_param(&req, "bytes").and_then(|b| b.parse::<u64>().ok());
    let full = dir.join(&name);
    let file = match tokio::fs::File::open(&full).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return boxed(error(StatusCode::NOT_FOUND, format!("no file {name}")))
        }
        Err(e) => {
            return boxed(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to open {}: {e}", full.display()),
            ))
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            return boxed(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to stat {}: {e}", full.display()),
            ))
        }
    };
    let len = limit.map_or(len, |l| l.min(len));
    use tokio::io::AsyncReadExt;
    // 1 MiB reads: the file is read on the blocking pool, not the loop.
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20);
    let body = http_body_util::StreamBody::new(futures::StreamExt::map(stream, |r| {
        r.map(hyper::body::Frame::data)
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .body(BodyExt::boxed(body))
        .unwrap_or_else(|e| {
            boxed(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to build the response: {e}"),
            ))
        })
}
