//! Entry points for the fuzz harnesses (`fuzz/`, docs/testing.md): the
//! readers of untrusted bytes whose code is private to its module, reached
//! without a socket or a data directory. Thin wrappers: the logic they run
//! is the one the node runs.

use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;

use super::replication::frame;
use super::replication::Applier;
use super::wal;
use super::Node;

/// Validates `bytes` as a log segment file named for `name_lsn`, as
/// recovery does: the last valid LSN and the valid length, or why not.
pub fn wal_segment(bytes: &[u8], name_lsn: u64, is_last: bool) -> Result<(u64, u64), String> {
    wal::scan_segment_bytes(Path::new("fuzz.wal"), bytes, name_lsn, is_last)
}

/// Reads `bytes` as the frames a primary sends once streaming, applying
/// RECORDS frames to `node` as a replica does (`watermarks`: after a full
/// resync, the per-slot LSNs of the loaded snapshot). Stops at the first
/// error, or when the bytes end (a partial frame is left unread).
pub fn replication_stream(
    node: &Node,
    bytes: &[u8],
    watermarks: Option<Vec<u64>>,
) -> Result<usize, String> {
    let mut applier = Applier::with_watermarks(node, watermarks);
    let mut rd = bytes;
    let mut buf = BytesMut::new();
    let mut frames = 0;
    loop {
        // A byte slice never blocks: the future completes on first poll.
        let next = futures::executor::block_on(frame::read_frame(&mut rd, &mut buf));
        let (kind, payload) = match next {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(frames),
            Err(e) => return Err(e.to_string()),
        };
        frames += 1;
        match kind {
            frame::RECORDS => {
                applier.apply_records(node, &payload)?;
            }
            frame::HEARTBEAT => {
                let _ = (frame::u64_at(&payload, 0), frame::u64_at(&payload, 8));
            }
            frame::HISTORY => {
                let history: Vec<(u64, u64)> =
                    serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                let last = history.last().map_or(0, |&(_, start)| start);
                let _ = super::replication::epoch_at(&history, last.saturating_add(1));
            }
            other => return Err(format!("unexpected frame type {other}")),
        }
    }
}

/// Which admin API body [`admin_body`] decodes.
#[derive(Debug, Clone, Copy)]
pub enum AdminBody {
    /// PUT /v1/topology: decoded, built into a slot map, checked against
    /// the node's migrations; its replication settings applied.
    Topology,
    /// POST /v1/promote, /v1/follow, /v1/fence.
    RoleCall,
    /// POST /v1/wal/archived.
    Archived,
    /// POST /v1/migrations: decoded and its slot ranges checked.
    MigrationStart,
    /// PATCH /v1/migrations/<id>.
    MigrationLimits,
    /// The `slots=` query parameter of /v1/slots/digest.
    SlotRanges,
}

/// Decodes `body` as the admin API handler for `kind` does and runs the
/// checks that need no network; Err: the 4xx the handler would answer.
pub fn admin_body(node: &Rc<Node>, kind: AdminBody, body: &[u8]) -> Result<(), String> {
    let e = |e: serde_json::Error| e.to_string();
    match kind {
        AdminBody::Topology => {
            let t: super::slots::Topology = serde_json::from_slice(body).map_err(e)?;
            let map = super::slots::SlotMap::build(t, &node.id).map_err(|e| e.to_string())?;
            super::migration::check_topology(node, &map)?;
            super::replication::apply_settings_json(node, body);
        }
        AdminBody::RoleCall => {
            serde_json::from_slice::<super::admin::RoleCall>(body).map_err(e)?;
        }
        AdminBody::Archived => {
            serde_json::from_slice::<super::admin::ArchivedCall>(body).map_err(e)?;
        }
        AdminBody::MigrationStart => {
            let r: super::migration::source::StartRequest =
                serde_json::from_slice(body).map_err(e)?;
            super::migration::SlotSet::from_ranges(&r.slots).map_err(|e| e.to_string())?;
        }
        AdminBody::MigrationLimits => {
            serde_json::from_slice::<super::migration::admin::LimitsPatch>(body).map_err(e)?;
        }
        AdminBody::SlotRanges => {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            super::migration::parse_ranges(text).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Bounds the Lua code `node` runs from now until the next call (EVAL,
/// FCALL, FUNCTION LOAD, …) to `ticks` runs of the instruction hook (100k
/// instructions each) in all; past them every script fails with an error. A script may
/// loop for ever by design (until SCRIPT KILL), which a fuzzer would take
/// for a hang. A node never sets this: its scripts run unbounded.
pub fn bound_scripts(node: &Node, ticks: u64) {
    node.script_running.budget.set(Some(ticks));
}
