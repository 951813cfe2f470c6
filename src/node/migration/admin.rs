//! The admin API of slot migrations (the operator's calls):
//!
//! | call | on | does |
//! |---|---|---|
//! | `POST /v1/migrations` | source primary | start: `{id, slots: [[a,b]…], target: {id,host,port}, maxBytesPerSec?, writePauseTimeoutMs?, handoffMaxLagBytes?}` |
//! | `GET /v1/migrations` | any node | every migration this node sends or receives |
//! | `GET /v1/migrations/{id}` | any node | one migration |
//! | `PATCH /v1/migrations/{id}` | source primary | change the limits while it runs |
//! | `POST /v1/migrations/{id}/cancel[?force=true]` | source or target primary | cancel |
//! | `GET /v1/slots/digest?slots=a-b[,c-d]` | any node | the range's content digest and key count |

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::source::{self, StartRequest};
use super::target::Incoming;
use super::{format_ranges, parse_ranges, Limits, MigrationError, Outgoing};
use crate::node::slots::NodeAddr;
use crate::node::Node;

const MAX_BODY: usize = 64 * 1024;

pub fn handles(path: &str) -> bool {
    path == "/v1/migrations" || path.starts_with("/v1/migrations/") || path == "/v1/slots/digest"
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec_pretty(v) {
        Ok(b) => (status, b),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\": \"encoding: {e}\"}}").into_bytes(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static status and header values are valid")
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

fn error_status(e: &MigrationError) -> StatusCode {
    match e {
        MigrationError::BadRange(_) => StatusCode::BAD_REQUEST,
        MigrationError::Exists(_) | MigrationError::Busy { .. } => StatusCode::CONFLICT,
        MigrationError::Unknown(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingStatus {
    pub id: String,
    pub direction: &'static str,
    pub phase: &'static str,
    pub slots: String,
    pub target: NodeAddr,
    pub keys_sent: u64,
    pub bytes_sent: u64,
    /// Captured writes not yet sent.
    pub lag_bytes: u64,
    pub last_captured_lsn: u64,
    pub write_pause_ms: u64,
    pub last_error: Option<String>,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub limits: Limits,
}

impl From<&Outgoing> for OutgoingStatus {
    fn from(m: &Outgoing) -> Self {
        let live_pause = m
            .pause_started
            .get()
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        Self {
            id: m.id.clone(),
            direction: "out",
            phase: m.phase.get().as_str(),
            slots: format_ranges(&m.ranges),
            target: m.target.clone(),
            keys_sent: m.keys_sent.get(),
            bytes_sent: m.bytes_sent.get(),
            lag_bytes: m.captured_bytes.get(),
            last_captured_lsn: m.last_captured_lsn.get(),
            write_pause_ms: m.write_pause_ms.get() + live_pause,
            last_error: m.last_error.borrow().clone(),
            started_ms: m.started_ms,
            finished_ms: m.finished_ms.get(),
            limits: m.limits.get(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomingStatus {
    pub id: String,
    pub direction: &'static str,
    pub phase: &'static str,
    pub slots: String,
    pub source: String,
    pub bytes_received: u64,
    pub commands: u64,
    pub staged_keys: usize,
    pub last_error: Option<String>,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub commit_lsn: u64,
}

impl From<&Incoming> for IncomingStatus {
    fn from(m: &Incoming) -> Self {
        Self {
            id: m.id.clone(),
            direction: "in",
            phase: m.phase.as_str(),
            slots: format_ranges(&m.ranges),
            source: m.source.clone(),
            bytes_received: m.bytes_received,
            commands: m.commands,
            staged_keys: m.staged_keys(),
            last_error: m.last_error.clone(),
            started_ms: m.started_ms,
            finished_ms: m.finished_ms,
            commit_lsn: m.commit_lsn,
        }
    }
}

#[derive(Serialize)]
struct List {
    outgoing: Vec<OutgoingStatus>,
    incoming: Vec<IncomingStatus>,
}

fn list(node: &Node, id: Option<&str>) -> List {
    let keep = |m_id: &str| id.is_none_or(|i| i == m_id);
    List {
        outgoing: node
            .migrations
            .outgoing
            .borrow()
            .iter()
            .filter(|m| keep(&m.id))
            .map(|m| OutgoingStatus::from(&**m))
            .collect(),
        incoming: node
            .migrations
            .incoming
            .borrow()
            .iter()
            .filter(|m| keep(&m.id))
            .map(IncomingStatus::from)
            .collect(),
    }
}

async fn body(req: Request<Body>) -> Result<Bytes, Response<Full<Bytes>>> {
    match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("failed to read the body: {e}"),
        )),
    }
}

fn query<'a>(req: &'a Request<Body>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LimitsPatch {
    max_bytes_per_sec: Option<u64>,
    write_pause_timeout_ms: Option<u64>,
    handoff_max_lag_bytes: Option<u64>,
}

pub async fn route(node: &Rc<Node>, req: Request<Body>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/v1/slots/digest" {
        let ranges = match query(&req, "slots").map(parse_ranges) {
            Some(Ok(r)) => r,
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            None => vec![(0, (crate::node::slots::SLOTS - 1) as u16)],
        };
        let store = node.store.borrow();
        let mut d = super::digest::SlotDigest::default();
        for (a, b) in &ranges {
            d.merge(&super::digest::range_digest(&store, *a, *b));
        }
        return json(
            StatusCode::OK,
            &serde_json::json!({ "slots": format_ranges(&ranges), "digest": d.hex(), "keys": d.keys }),
        );
    }
    let rest = path
        .trim_start_matches("/v1/migrations")
        .trim_start_matches('/');
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id.to_string(), Some(action.to_string())),
        None => (rest.to_string(), None),
    };
    match (method, id.is_empty(), action.as_deref()) {
        (Method::GET, true, None) => json(StatusCode::OK, &list(node, None)),
        (Method::POST, true, None) => {
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let call: StartRequest = match serde_json::from_slice(&b) {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
            };
            match source::start(node, call) {
                Ok(m) => json(StatusCode::CREATED, &OutgoingStatus::from(&*m)),
                Err(e) => error(error_status(&e), e.to_string()),
            }
        }
        (Method::GET, false, None) => {
            let l = list(node, Some(&id));
            if l.outgoing.is_empty() && l.incoming.is_empty() {
                return error(StatusCode::NOT_FOUND, format!("no migration {id}"));
            }
            json(StatusCode::OK, &l)
        }
        (Method::PATCH, false, None) => {
            let Some(m) = node.migrations.find_outgoing(&id) else {
                return error(StatusCode::NOT_FOUND, format!("no outgoing migration {id}"));
            };
            let b = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let p: LimitsPatch = match serde_json::from_slice(&b) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
            };
            let mut l = m.limits.get();
            if let Some(v) = p.max_bytes_per_sec {
                l.max_bytes_per_sec = v;
            }
            if let Some(v) = p.write_pause_timeout_ms {
                l.write_pause_timeout_ms = v.max(1);
            }
            if let Some(v) = p.handoff_max_lag_bytes {
                l.handoff_max_lag_bytes = v;
            }
            m.limits.set(l);
            m.wake.notify_one();
            tracing::info!(migration = %id, max_bytes_per_sec = l.max_bytes_per_sec, "slot migration limits changed");
            json(StatusCode::OK, &OutgoingStatus::from(&*m))
        }
        (Method::POST, false, Some("cancel")) => {
            let force = query(&req, "force") == Some("true");
            if let Some(m) = node.migrations.find_outgoing(&id) {
                if m.phase.get().is_final() {
                    return error(
                        StatusCode::CONFLICT,
                        format!("migration {id} is already {}", m.phase.get().as_str()),
                    );
                }
                source::cancel(&m, force);
                return json(StatusCode::ACCEPTED, &OutgoingStatus::from(&*m));
            }
            match super::target::cancel(node, &id) {
                Ok(()) => json(StatusCode::OK, &list(node, Some(&id))),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (method, _, _) => error(
            StatusCode::NOT_FOUND,
            format!("no route for {method} {path}"),
        ),
    }
}
