//! Resharding: after `spec.shards` changes, new shards come up empty, then
//! slots move to them (or off the shards being removed) through the nodes'
//! slot migration (docs/migration.md), one move per source and per target
//! shard at a time, until the split is even (docs/resharding.md).
//!
//! The recorded status is the authority: `shards[].slots` says who owns
//! each slot and `resharding.moves` which migrations run. A move's slots
//! change owner only in a status write (the same one that records the
//! move as `Flipped`) followed by the topology push, so the status and the
//! nodes never disagree about an owner and no slot is ever unowned. Each
//! step is idempotent: a restarted operator polls the recorded moves and
//! carries on; a start whose status write was lost is found again by its
//! deterministic id.
//!
//! A failover has priority (the scheduler runs it first). A move whose
//! source or target primary changed before its flip is cancelled on both
//! sides and planned again; after the flip the nodes finish it by
//! themselves (the source's logged pause).

pub mod plan;
pub mod remove;

use std::net::SocketAddr;
use std::time::Duration;

use kube::runtime::events::EventType;

use super::super::build::REDIS_PORT;
use super::super::context::{now, Context, Error};
use super::super::observe::Observed;
use super::super::topology::admin_addr;
use super::super::validate::ValidatedCluster;
use crate::api::{DatabaseCluster, DatabaseClusterStatus, NodeStatus, ReshardingStatus, SlotMove};
use crate::client::migration::StartMigration;
use crate::client::NodeAddr;
use plan::Move;

pub const WAITING: &str = "WaitingForShards";
pub const MOVING: &str = "Moving";
pub const PAUSED: &str = "Paused";
pub const REMOVING: &str = "RemovingShards";
pub const REFUSED: &str = "Refused";
pub const COMPLETED: &str = "Completed";
pub const CANCELLED: &str = "Cancelled";

const STARTING: &str = "Starting";
const COPYING: &str = "Copying";
const FLIPPED: &str = "Flipped";

/// Longest write pause of a move: the pause lasts from the source's seal
/// to the flip this operator pushes, so it must cover a reconcile or two.
const WRITE_PAUSE_TIMEOUT_MS: u64 = 10_000;

/// What a resharding step decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The new `status.resharding`.
    pub status: Option<ReshardingStatus>,
    /// Moves whose slots the topology gives to their target now.
    pub flips: Vec<Move>,
    /// Shards still in a move (kept in the topology even when empty).
    pub busy: Vec<u32>,
}

impl Outcome {
    /// Poll soon: a sealed source blocks writes to its slots until the
    /// flip, so the operator must notice quickly.
    pub fn requeue(&self) -> Option<Duration> {
        let r = self.status.as_ref()?;
        if is_running(r) {
            Some(Duration::from_millis(if r.moves.is_empty() {
                1000
            } else {
                250
            }))
        } else {
            None
        }
    }
}

pub fn is_running(r: &ReshardingStatus) -> bool {
    r.phase != COMPLETED && r.phase != REFUSED && r.phase != CANCELLED
}

/// True while a resharding runs (a switchover waits for it).
pub fn in_progress(prev: &DatabaseClusterStatus) -> bool {
    prev.resharding
        .as_ref()
        .is_some_and(|r| !r.moves.is_empty())
}

/// The slots each shard of `prev` owns, with `flips` applied.
fn owned_after(prev: &DatabaseClusterStatus, flips: &[Move]) -> Vec<plan::Ranges> {
    let slots: Vec<Vec<String>> = prev.shards.iter().map(|s| s.slots.clone()).collect();
    let mut owned = plan::parse_owned(&slots);
    for f in flips {
        plan::apply(&mut owned, f);
    }
    owned
}

fn move_of(m: &SlotMove) -> Move {
    Move {
        source: m.source,
        target: m.target,
        slots: plan::parse_owned(std::slice::from_ref(&m.slots))
            .pop()
            .unwrap_or_default(),
    }
}

fn primary(prev: &DatabaseClusterStatus, shard: u32) -> Option<&NodeStatus> {
    prev.shards.get(shard as usize)?.primary.as_ref()
}

fn admin(n: &NodeStatus) -> Option<SocketAddr> {
    admin_addr(&n.ip)
}

/// A shard whose every member is ready (new shards: replicas in sync).
fn shard_ready(prev: &DatabaseClusterStatus, shard: u32) -> bool {
    prev.shards.get(shard as usize).is_some_and(|s| {
        s.failover.is_none()
            && s.primary.as_ref().is_some_and(|p| p.ready)
            && s.replicas.iter().all(|r| r.ready)
    })
}

/// One resharding step; `None` when there is nothing to reshard.
pub async fn step(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    observed: &Observed,
) -> Result<Option<Outcome>, Error> {
    let desired = v.shards;
    let running = prev.resharding.as_ref().is_some_and(is_running);
    let balanced = plan::remaining(&owned_after(prev, &[]), desired).is_empty();
    if !running && prev.shards.len() as u32 == desired && balanced {
        // A refused scale-in whose spec went back: nothing moved.
        return Ok(prev
            .resharding
            .as_ref()
            .filter(|r| r.phase == REFUSED)
            .map(|r| Outcome {
                status: Some(ReshardingStatus {
                    phase: CANCELLED.into(),
                    finished_at: Some(now().0.to_string()),
                    progress: format!("{}→{} cancelled", r.from, r.to),
                    ..r.clone()
                }),
                ..Default::default()
            }));
    }
    let mut r = match prev.resharding.clone() {
        Some(r) if is_running(&r) => r,
        // Still refused, or no longer: judged again below.
        Some(r) if r.phase == REFUSED && r.to == desired => r,
        _ => {
            let r = ReshardingStatus {
                phase: WAITING.into(),
                from: prev.shards.len() as u32,
                to: desired,
                started_at: now().0.to_string(),
                seq: prev.resharding.as_ref().map_or(1, |r| r.seq + 1),
                ..Default::default()
            };
            ctx.event(
                dbc,
                EventType::Normal,
                "ReshardingStarted",
                "Reshard",
                format!(
                    "shards {} → {desired}: adding shards first, then moving slots",
                    r.from
                ),
            )
            .await;
            r
        }
    };
    if r.to != desired {
        ctx.event(
            dbc,
            EventType::Normal,
            "ReshardingReplanned",
            "Reshard",
            format!(
                "shards changed to {desired} (was {}): planning from where the slots are now",
                r.to
            ),
        )
        .await;
        r.to = desired;
    }
    let mut out = Outcome::default();
    advance_moves(ctx, dbc, v, prev, &mut r, &mut out).await;

    let mut projected = owned_after(prev, &out.flips);
    for m in &r.moves {
        if m.phase != FLIPPED {
            plan::apply(&mut projected, &move_of(m));
        }
    }
    let pending = plan::remaining(&projected, desired);
    let in_flight: u32 = r
        .moves
        .iter()
        .filter(|m| m.phase != FLIPPED)
        .map(|m| plan::count(&move_of(m).slots))
        .sum();
    r.slots_total = r.slots_moved
        + r.moves
            .iter()
            .filter(|m| m.phase == FLIPPED)
            .map(|m| plan::count(&move_of(m).slots))
            .sum::<u32>()
        + in_flight
        + pending.iter().map(Move::count).sum::<u32>();

    // The memory rule, before anything moves off a shard being removed.
    if desired < prev.shards.len() as u32 && r.slots_moved == 0 && r.moves.is_empty() {
        let primaries: Vec<_> = (0..prev.shards.len() as u32)
            .map(|s| {
                primary(prev, s).and_then(|p| {
                    observed
                        .nodes
                        .iter()
                        .find(|n| n.pod == p.pod)
                        .and_then(|n| n.info.as_ref())
                })
            })
            .collect();
        let used: Vec<u64> = primaries
            .iter()
            .map(|i| i.map_or(0, |i| i.used_memory_dataset.unwrap_or(i.used_memory)))
            .collect();
        let limit: Vec<u64> = primaries
            .iter()
            .map(|i| i.map_or(0, |i| i.maxmemory))
            .collect();
        if let Some(why) = plan::scale_in_refusal(&used, &limit, desired) {
            if prev
                .resharding
                .as_ref()
                .is_none_or(|p| p.phase != REFUSED || p.to != desired)
            {
                ctx.event(
                    dbc,
                    EventType::Warning,
                    "ScaleInRefused",
                    "Reshard",
                    why.clone(),
                )
                .await;
            }
            r.phase = REFUSED.into();
            r.last_error = Some(why);
            r.finished_at = Some(now().0.to_string());
            r.progress = format!("{}→{} refused", r.from, r.to);
            out.status = Some(r);
            return Ok(Some(out));
        }
    }

    if r.phase == REFUSED {
        // Room now (limits raised or data freed): go ahead.
        r.phase = MOVING.into();
        r.last_error = None;
        r.finished_at = None;
    }
    start_moves(ctx, dbc, v, prev, &pending, &mut r).await;
    out.busy = r.moves.iter().flat_map(|m| [m.source, m.target]).collect();
    finish(ctx, dbc, prev, &pending, &mut r).await;
    out.status = Some(r);
    Ok(Some(out))
}

/// Polls every move in progress: progress, flips, completions, failures.
async fn advance_moves(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    r: &mut ReshardingStatus,
    out: &mut Outcome,
) {
    let rate = v.spec.resharding.max_bytes_per_second.max(0) as u64;
    let mut kept = Vec::with_capacity(r.moves.len());
    for mut m in std::mem::take(&mut r.moves) {
        let src = primary(prev, m.source);
        let dst = primary(prev, m.target);
        let same = |n: Option<&NodeStatus>, id: &str| n.is_some_and(|n| n.node_id == id);
        let failed_over = !same(src, &m.source_node) || !same(dst, &m.target_node);
        let removed_target = m.target >= r.to && m.phase != FLIPPED;
        if m.phase != FLIPPED && (failed_over || removed_target) {
            let why = if removed_target {
                format!("shard {} is no longer wanted", m.target)
            } else {
                format!("the primary of shard {} or {} changed", m.source, m.target)
            };
            cancel(ctx, prev, &m).await;
            fail(ctx, dbc, r, &m, why, !removed_target).await;
            continue;
        }
        let Some(addr) = src.and_then(admin) else {
            kept.push(m);
            continue;
        };
        let known = match ctx.nodes.migration(addr, &m.id).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(migration = %m.id, error = %e, "polling a slot move");
                kept.push(m);
                continue;
            }
        };
        let Some(o) = known.outgoing else {
            if m.phase == FLIPPED {
                // The source restarted after the flip: its logged pause
                // makes it confirm the commit and free the slots itself.
                complete(ctx, dbc, r, &m).await;
            } else if m.phase == STARTING {
                // Never started (the start's answer was lost before it
                // reached the node): start it again below.
                kept.push(m);
            } else {
                fail(
                    ctx,
                    dbc,
                    r,
                    &m,
                    "the source forgot the move (it restarted)".into(),
                    true,
                )
                .await;
            }
            continue;
        };
        m.bytes_sent = o.bytes_sent;
        m.keys_sent = o.keys_sent;
        if m.phase == STARTING {
            m.phase = COPYING.into();
        }
        match (m.phase.as_str(), o.phase.as_str()) {
            (_, "done") => complete(ctx, dbc, r, &m).await,
            (FLIPPED, "aborted") => {
                // Cannot happen while the target keeps its sealed import;
                // reported rather than retried (the topology is recorded).
                let why = o.last_error.unwrap_or_default();
                r.last_error = Some(format!("move {} failed after its flip: {why}", m.id));
                tracing::error!(migration = %m.id, error = %why, "a flipped slot move aborted");
            }
            (_, "aborted") => {
                cancel(ctx, prev, &m).await;
                fail(
                    ctx,
                    dbc,
                    r,
                    &m,
                    o.last_error.unwrap_or_else(|| "aborted".into()),
                    true,
                )
                .await;
            }
            (COPYING, "handoff-ready") => {
                m.phase = FLIPPED.into();
                let mv = move_of(&m);
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "SlotsMoved",
                    "Reshard",
                    format!(
                        "slots {} → shard {} from shard {} ({} keys, {} bytes, writes to them paused {} ms)",
                        m.slots.join(","), m.target, m.source, o.keys_sent, o.bytes_sent, o.write_pause_ms
                    ),
                )
                .await;
                ctx.metrics.reshard_slots_moved(mv.count() as u64);
                out.flips.push(mv);
                kept.push(m);
            }
            _ => {
                if o.limits.max_bytes_per_sec != rate && m.phase == COPYING {
                    if let Err(e) = ctx.nodes.set_migration_rate(addr, &m.id, rate).await {
                        tracing::warn!(migration = %m.id, error = %e, "changing a move's rate");
                    }
                }
                kept.push(m);
            }
        }
    }
    r.moves = kept;
}

/// Cancels a move on its source and its target (best effort: an
/// unreachable node cancels its side by itself, see docs/migration.md).
async fn cancel(ctx: &Context, prev: &DatabaseClusterStatus, m: &SlotMove) {
    for shard in [m.source, m.target] {
        if let Some(addr) = primary(prev, shard).and_then(admin) {
            if let Err(e) = ctx.nodes.cancel_migration(addr, &m.id).await {
                tracing::warn!(migration = %m.id, shard, error = %e, "cancelling a slot move");
            }
        }
    }
}

async fn fail(
    ctx: &Context,
    dbc: &DatabaseCluster,
    r: &mut ReshardingStatus,
    m: &SlotMove,
    why: String,
    retry: bool,
) {
    let note =
        format!(
        "move {} of slots {} from shard {} to shard {} stopped: {why}; the source kept its data{}",
        m.id,
        m.slots.join(","),
        m.source,
        m.target,
        if retry { ", it will be planned again" } else { "" }
    );
    ctx.event(
        dbc,
        EventType::Warning,
        "SlotMoveFailed",
        "Reshard",
        note.clone(),
    )
    .await;
    ctx.metrics.reshard_move(false);
    if retry {
        r.retries += 1;
    }
    r.last_error = Some(note);
    r.last_failure_at = Some(now().0.to_string());
}

async fn complete(ctx: &Context, dbc: &DatabaseCluster, r: &mut ReshardingStatus, m: &SlotMove) {
    let n = plan::count(&move_of(m).slots);
    r.slots_moved += n;
    r.bytes_moved += m.bytes_sent;
    ctx.metrics.reshard_move(true);
    tracing::info!(cluster = %dbc.metadata.name.as_deref().unwrap_or_default(), migration = %m.id, slots = n, "slot move done");
}

/// Seconds to wait after a failed move before starting another.
fn backoff(r: &ReshardingStatus) -> Duration {
    Duration::from_secs((5 * r.retries as u64).min(60))
}

fn since(t: &str) -> Option<Duration> {
    let t: k8s_openapi::jiff::Timestamp = t.parse().ok()?;
    let d = now().0.duration_since(t);
    Duration::try_from(d).ok()
}

/// Starts the next moves the planner allows now.
async fn start_moves(
    ctx: &Context,
    dbc: &DatabaseCluster,
    v: &ValidatedCluster,
    prev: &DatabaseClusterStatus,
    pending: &[Move],
    r: &mut ReshardingStatus,
) {
    if v.spec.resharding.paused {
        return;
    }
    if let Some(t) = &r.last_failure_at {
        if since(t).is_some_and(|d| d < backoff(r)) {
            return;
        }
    }
    let busy: Vec<u32> = r.moves.iter().flat_map(|m| [m.source, m.target]).collect();
    // Only between shards in the topology whose members are all ready.
    let ready: Vec<Move> = pending
        .iter()
        .filter(|m| shard_ready(prev, m.source) && shard_ready(prev, m.target))
        .cloned()
        .collect();
    let max = v.spec.resharding.slots_per_move.max(1) as u32;
    let rate = v.spec.resharding.max_bytes_per_second.max(0) as u64;
    for mv in plan::next_moves(&ready, &busy, max) {
        let (Some(src), Some(dst)) = (primary(prev, mv.source), primary(prev, mv.target)) else {
            continue;
        };
        let Some(addr) = admin(src) else { continue };
        let id = format!("reshard-{}-{}", r.seq, r.next_move);
        let call = StartMigration {
            id: id.clone(),
            slots: mv.slots.clone(),
            target: NodeAddr {
                id: dst.node_id.clone(),
                host: dst.ip.clone(),
                port: REDIS_PORT as u16,
                // The source links to its own TLS port number (every node of
                // a cluster has the same ports).
                tls_port: None,
            },
            max_bytes_per_sec: rate,
            write_pause_timeout_ms: WRITE_PAUSE_TIMEOUT_MS,
        };
        let want = plan::format_ranges(&mv.slots).join(",");
        match ctx.nodes.start_migration(addr, &call).await {
            Ok(o) if o.slots != want => {
                // A start of an earlier plan under this id whose status
                // write was lost: cancel it and use the next id.
                tracing::warn!(migration = %id, slots = %o.slots, planned = %want, "an earlier start under this id: cancelling it");
                if let Err(e) = ctx.nodes.cancel_migration(addr, &id).await {
                    tracing::warn!(migration = %id, error = %e, "cancelling an earlier start");
                }
                r.next_move += 1;
            }
            Ok(o) => {
                r.next_move += 1;
                let m = SlotMove {
                    id,
                    source: mv.source,
                    target: mv.target,
                    slots: plan::format_ranges(&mv.slots),
                    phase: COPYING.into(),
                    source_node: src.node_id.clone(),
                    target_node: dst.node_id.clone(),
                    bytes_sent: o.bytes_sent,
                    keys_sent: o.keys_sent,
                    started_at: now().0.to_string(),
                };
                ctx.event(
                    dbc,
                    EventType::Normal,
                    "SlotMoveStarted",
                    "Reshard",
                    format!(
                        "moving slots {} ({} slots) from shard {} to shard {} (move {})",
                        m.slots.join(","),
                        mv.count(),
                        m.source,
                        m.target,
                        m.id
                    ),
                )
                .await;
                r.moves.push(m);
            }
            Err(e) => {
                tracing::warn!(migration = %id, error = %e, "starting a slot move");
                r.last_error = Some(format!("starting move {id}: {e}"));
            }
        }
    }
}

/// Phase, progress, ETA, and the end of a resharding.
async fn finish(
    ctx: &Context,
    dbc: &DatabaseCluster,
    prev: &DatabaseClusterStatus,
    pending: &[Move],
    r: &mut ReshardingStatus,
) {
    let shards = prev.shards.len() as u32;
    let waiting = shards < r.to || (0..shards.min(r.to)).any(|s| !shard_ready(prev, s));
    let paused = dbc.spec.resharding.paused;
    r.phase = if !r.moves.is_empty() {
        MOVING
    } else if !pending.is_empty() {
        if paused {
            PAUSED
        } else if waiting {
            WAITING
        } else {
            MOVING
        }
    } else if shards > r.to {
        REMOVING
    } else if shards < r.to {
        WAITING
    } else {
        COMPLETED
    }
    .into();
    r.eta_seconds = since(&r.started_at).and_then(|d| {
        (r.slots_moved > 0 && r.slots_total > r.slots_moved)
            .then(|| d.as_secs() * (r.slots_total - r.slots_moved) as u64 / r.slots_moved as u64)
    });
    r.progress = format!("{}→{} {}/{}", r.from, r.to, r.slots_moved, r.slots_total);
    if r.phase == COMPLETED {
        r.finished_at = Some(now().0.to_string());
        r.eta_seconds = None;
        ctx.event(
            dbc,
            EventType::Normal,
            "ReshardingCompleted",
            "Reshard",
            format!(
                "{} → {} shards: {} slots moved ({} bytes), {} retried move(s)",
                r.from, r.to, r.slots_moved, r.bytes_moved, r.retries
            ),
        )
        .await;
    }
}
