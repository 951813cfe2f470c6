//! `tessera backup run` and `tessera backup archive`: snapshots of every
//! shard plus the log archived from the primaries, then the manifest.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future::join_all;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::SegmentEntry;
use super::{
    archive_point_key, backup_prefix, manifest_key, now_ms, segment_key, wal_prefix, ArchivePoint,
    BackupError, Manifest, ShardBackup, SnapshotEntry, Target, FORMAT_VERSION,
};
use crate::client::backup::{NodeClient, NodeStatus};

/// A replica this many records behind its primary (or more) is not "caught
/// up": the snapshot is taken from the primary instead.
const CAUGHT_UP_RECORDS: u64 = 10_000;

/// Log segments of a shard copied at the same time.
const SEGMENTS_IN_FLIGHT: usize = 2;

/// One shard's nodes, as found.
#[derive(Debug, Clone)]
pub struct ShardNodes {
    pub name: String,
    pub primary: (NodeClient, NodeStatus),
    pub replicas: Vec<(NodeClient, NodeStatus)>,
}

impl ShardNodes {
    fn all(&self) -> impl Iterator<Item = &(NodeClient, NodeStatus)> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// The snapshot source: the most advanced linked replica within
    /// [`CAUGHT_UP_RECORDS`] of the primary, else the primary.
    pub fn snapshot_source(&self) -> &(NodeClient, NodeStatus) {
        let plsn = self.primary.1.lsn;
        self.replicas
            .iter()
            .filter(|(_, s)| {
                s.ready && s.replication.link_up && plsn.saturating_sub(s.lsn) < CAUGHT_UP_RECORDS
            })
            .max_by_key(|(_, s)| s.lsn)
            .unwrap_or(&self.primary)
    }
}

/// [`discover_once`], again for up to about a minute while some shard has
/// no primary that answers: a Job's pod can start before the network plugin
/// admits it through the cluster's NetworkPolicy (its IP is not yet in the
/// policy's sets, which may be filled for one shard's pods before
/// another's), and for that moment calls are dropped.
pub async fn discover(addrs: &[String]) -> Result<Vec<ShardNodes>, BackupError> {
    use backon::{ExponentialBuilder, Retryable};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_max_times(15);
    (|| discover_once(addrs))
        .retry(backoff)
        .when(|e| matches!(e, BackupError::NoNodes(_)))
        .notify(|e, after| warn!(error = %e, retry_in_ms = after.as_millis() as u64, "the whole cluster did not answer yet"))
        .await
}

/// Asks every node for its status and groups them by shard. A shard whose
/// primary cannot be found fails the backup: its log cannot be archived.
async fn discover_once(addrs: &[String]) -> Result<Vec<ShardNodes>, BackupError> {
    let mut clients = Vec::new();
    for a in addrs {
        clients.push(NodeClient::new(a)?);
    }
    let statuses = join_all(clients.iter().map(|c| c.status())).await;
    let mut by_shard: BTreeMap<String, Vec<(NodeClient, NodeStatus)>> = BTreeMap::new();
    let mut errors = Vec::new();
    for (c, s) in clients.into_iter().zip(statuses) {
        match s {
            Ok(s) => by_shard.entry(s.shard.clone()).or_default().push((c, s)),
            Err(e) => {
                warn!(node = %c.base, error = %e, "node unreachable; skipped");
                errors.push(e.to_string());
            }
        }
    }
    if by_shard.is_empty() {
        return Err(BackupError::NoNodes(errors.join("; ")));
    }
    let mut shards = Vec::new();
    for (name, mut nodes) in by_shard {
        // The primary with the newest shard epoch (a deposed one may still
        // say "primary" until it is told).
        nodes.sort_by_key(|(_, s)| (s.role == "primary", s.shard_epoch));
        let Some(p) = nodes.pop().filter(|(_, s)| s.role == "primary") else {
            return Err(BackupError::NoNodes(format!(
                "shard {name}: no primary among the reachable nodes"
            )));
        };
        shards.push(ShardNodes {
            name,
            primary: p,
            replicas: nodes,
        });
    }
    shards.sort_by_key(|s| s.primary.1.slots.first().map(|r| r.0).unwrap_or(0));
    // A backup holds the whole cluster or nothing: a shard whose nodes
    // all failed to answer (down, or not yet reachable through the
    // NetworkPolicy) would otherwise just be missing from it.
    let ranges: Vec<(u16, u16)> = shards
        .iter()
        .flat_map(|s| s.primary.1.slots.iter().copied())
        .collect();
    if let Err(gap) = slots_once(&ranges) {
        let unreachable = if errors.is_empty() {
            String::new()
        } else {
            format!("; unreachable: {}", errors.join("; "))
        };
        return Err(BackupError::NoNodes(format!(
            "the primaries that answered ({}) do not hold every slot exactly once ({gap}){unreachable}",
            shards
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(shards)
}

/// Whether `ranges` (inclusive) give each of the 16384 slots exactly one
/// owner; otherwise the first slot missing or held twice.
fn slots_once(ranges: &[(u16, u16)]) -> Result<(), String> {
    const SLOTS: usize = 16384;
    let mut seen = vec![false; SLOTS];
    for &(a, b) in ranges {
        let end = (b as usize).min(SLOTS - 1);
        for (s, held) in seen.iter_mut().enumerate().take(end + 1).skip(a as usize) {
            if std::mem::replace(held, true) {
                return Err(format!("slot {s} is held twice"));
            }
        }
    }
    match seen.iter().position(|x| !x) {
        Some(s) => Err(format!("slot {s} has no owner")),
        None => Ok(()),
    }
}

/// A backup ID: the UTC start time, which sorts like time.
pub fn new_id(ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(ms as i64) {
        Ok(t) => format!("{}{:03}Z", t.strftime("%Y%m%dT%H%M%S"), (ms % 1000)),
        Err(_) => format!("{ms}"),
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub id: String,
    pub cluster: String,
    pub target: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub bytes: u64,
    pub consistent_at: String,
    pub shards: usize,
    /// What retention deleted: `backup <id>` and `segment <key>` entries.
    pub pruned: Vec<String>,
    /// Complete backups kept after retention.
    pub backups: Option<usize>,
    /// The recoverability window after this run (None: listing failed).
    pub first_recoverability_point: Option<String>,
    pub last_recoverability_point: Option<String>,
}

/// Kubernetes keeps at most 4096 bytes of a termination message.
pub const TERMINATION_MESSAGE_MAX: usize = 4096;

/// What a backup Job leaves in its termination message (and the operator
/// reads back into `status.backup`): a run's summary, or its error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// IDs of the backups retention deleted (possibly cut short: see
    /// `pruned_backups_count`).
    #[serde(default)]
    pub pruned_backups: Vec<String>,
    #[serde(default)]
    pub pruned_backups_count: usize,
    /// Log segments retention deleted (counted, not listed).
    #[serde(default)]
    pub pruned_segments: usize,
    /// Complete backups kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverability_point: Option<String>,
}

impl JobSummary {
    /// A failed run; the message is cut to fit a termination message.
    pub fn failed(error: &str) -> JobSummary {
        let mut e = error.to_string();
        let max = TERMINATION_MESSAGE_MAX - 64;
        if e.len() > max {
            let mut cut = max;
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
            e.push('…');
        }
        JobSummary {
            error: Some(e),
            ..Default::default()
        }
    }

    /// JSON that fits in [`TERMINATION_MESSAGE_MAX`]: the list of pruned
    /// backups is halved until it does.
    pub fn to_termination_message(&self) -> String {
        let mut s = self.clone();
        loop {
            let doc = serde_json::to_string(&s).unwrap_or_else(|_| "{}".into());
            if doc.len() <= TERMINATION_MESSAGE_MAX {
                return doc;
            }
            if !s.pruned_backups.is_empty() {
                let keep = s.pruned_backups.len() / 2;
                s.pruned_backups.truncate(keep);
            } else if let Some(e) = s.error.as_mut().filter(|e| e.len() > 64) {
                // Escaping can make the JSON longer than the text.
                let mut cut = e.len() / 2;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
                e.push('…');
            } else {
                return doc;
            }
        }
    }
}

impl RunReport {
    pub fn summary(&self) -> JobSummary {
        let pruned_backups: Vec<String> = self
            .pruned
            .iter()
            .filter_map(|p| p.strip_prefix("backup ").map(String::from))
            .collect();
        JobSummary {
            error: None,
            id: Some(self.id.clone()),
            started_at: Some(self.started_at.clone()),
            finished_at: Some(self.finished_at.clone()),
            duration_ms: Some(self.duration_ms),
            bytes: Some(self.bytes),
            consistent_at: Some(self.consistent_at.clone()),
            shards: Some(self.shards),
            pruned_backups_count: pruned_backups.len(),
            pruned_backups,
            pruned_segments: self
                .pruned
                .iter()
                .filter(|p| p.starts_with("segment "))
                .count(),
            backups: self.backups,
            first_recoverability_point: self.first_recoverability_point.clone(),
            last_recoverability_point: self.last_recoverability_point.clone(),
        }
    }
}

/// Takes a backup: first every shard's snapshot (in parallel), then every
/// shard's log archived from its primary (each after all snapshots, so the
/// earliest archive point is a cut every snapshot precedes), then the
/// manifest, then retention.
pub async fn run(
    target: &Target,
    cluster: &str,
    addrs: &[String],
    retention: &super::manage::Retention,
    reuse_snapshot_within_ms: u64,
) -> Result<RunReport, BackupError> {
    let started = Instant::now();
    let started_at_ms = now_ms();
    let id = new_id(started_at_ms);
    let shards = discover(addrs).await?;
    info!(cluster, id = %id, shards = shards.len(), target = %target.describe, "backup started");

    let needed = log_needed_from(target, cluster).await?;
    let snaps = join_all(
        shards
            .iter()
            .map(|s| snapshot_shard(target, cluster, &id, s, reuse_snapshot_within_ms)),
    )
    .await;
    let mut snapshots = Vec::new();
    for s in snaps {
        snapshots.push(s?);
    }
    let archives = join_all(shards.iter().zip(&snapshots).map(|(s, (_, snap))| {
        let this = snap.start_lsn + 1;
        let from = needed.get(&s.name).map_or(this, |&n| n.min(this));
        archive_shard(target, cluster, s, from)
    }))
    .await;
    let mut out = Vec::new();
    let mut bytes = 0;
    for ((shard, snap), arch) in shards.iter().zip(snapshots).zip(archives) {
        let (point, segments) = arch?;
        let (source, snapshot) = snap;
        bytes += snapshot.file.bytes + segments.iter().map(|s| s.file.bytes).sum::<u64>();
        out.push(ShardBackup {
            name: shard.name.clone(),
            shard_epoch: shard.primary.1.shard_epoch,
            slots: shard.primary.1.slots.clone(),
            source_node: source.node_id.clone(),
            source_role: source.role.clone(),
            primary_node: shard.primary.1.node_id.clone(),
            snapshot,
            archive: point,
            segments,
        });
    }
    let consistent_at_ms = out
        .iter()
        .map(|s| s.archive.captured_at_ms)
        .min()
        .unwrap_or(started_at_ms);
    let finished_at_ms = now_ms();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        cluster: cluster.to_string(),
        id: id.clone(),
        started_at_ms,
        finished_at_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        bytes,
        consistent_at_ms,
        shards: out,
    };
    // Written last: a backup without a manifest is incomplete.
    target
        .put_json(&manifest_key(cluster, &id), &manifest)
        .await?;
    info!(cluster, id = %id, bytes, duration_ms = manifest.duration_ms, consistent_at = %super::fmt_ms(consistent_at_ms), "backup finished");
    let pruned = if retention.is_set() {
        super::manage::prune(target, cluster, retention).await?
    } else {
        Vec::new()
    };
    let listing = match super::manage::list(target, cluster).await {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(cluster, error = %e, "listing the backups after the run failed; the recoverability window is not reported");
            None
        }
    };
    Ok(RunReport {
        id,
        cluster: cluster.to_string(),
        target: target.describe.clone(),
        started_at: super::fmt_ms(started_at_ms),
        finished_at: super::fmt_ms(finished_at_ms),
        duration_ms: manifest.duration_ms,
        bytes,
        consistent_at: super::fmt_ms(consistent_at_ms),
        shards: manifest.shards.len(),
        pruned,
        backups: listing
            .as_ref()
            .map(|l| l.backups.iter().filter(|b| b.complete).count()),
        first_recoverability_point: listing
            .as_ref()
            .and_then(|l| l.first_recoverability_point.clone()),
        last_recoverability_point: listing.and_then(|l| l.last_recoverability_point),
    })
}

/// [`super::manage::log_needed_from`] over the complete backups: log
/// before that serves no restore, so it is not copied (retention prunes
/// it by the same rule).
async fn log_needed_from(
    target: &Target,
    cluster: &str,
) -> Result<BTreeMap<String, u64>, BackupError> {
    let complete = super::manage::complete(target, cluster).await?;
    Ok(super::manage::log_needed_from(complete.iter()))
}

/// Archives every shard's log (no snapshot): run more often than backups
/// to shorten what a restore can lose.
pub async fn archive(
    target: &Target,
    cluster: &str,
    addrs: &[String],
) -> Result<Vec<ArchivePoint>, BackupError> {
    let shards = discover(addrs).await?;
    let needed = log_needed_from(target, cluster).await?;
    let res = join_all(shards.iter().map(|s| {
        let from = needed.get(&s.name).copied().unwrap_or(0);
        archive_shard(target, cluster, s, from)
    }))
    .await;
    let mut out = Vec::new();
    for r in res {
        out.push(r?.0);
    }
    Ok(out)
}

async fn snapshot_shard(
    target: &Target,
    cluster: &str,
    id: &str,
    shard: &ShardNodes,
    reuse_within_ms: u64,
) -> Result<(NodeStatus, SnapshotEntry), BackupError> {
    let (client, status) = shard.snapshot_source();
    let asked_ms = now_ms();
    let mut done = client.snapshot(reuse_within_ms).await?;
    // Finished before we asked (by our clock): the node's newest snapshot,
    // reused. Then the log after its start must still be had, or the
    // backup could not be restored past it.
    let mut reused = done.finished_at_ms < asked_ms;
    if reuse_within_ms > 0 && !log_after_is_kept(target, cluster, shard, done.start_lsn).await? {
        warn!(shard = %shard.name, start_lsn = done.start_lsn, "the log after the node's newest snapshot is neither on the primary nor archived: taking a fresh snapshot");
        done = client.snapshot(0).await?;
        reused = false;
    }
    let name = std::path::Path::new(&done.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupError::Decode {
            what: "the snapshot path".into(),
            reason: done.path.clone(),
        })?;
    let key = format!("{}/{}/{name}", backup_prefix(cluster, id), shard.name);
    let stream = client
        .stream(&format!("/v1/backup/snapshot?name={name}"))
        .await?;
    let file = target.put_stream(&key, stream).await?;
    if file.bytes != done.bytes {
        return Err(BackupError::NodeCall {
            url: client.base.clone(),
            reason: format!(
                "snapshot {name}: received {} bytes, the node wrote {}",
                file.bytes, done.bytes
            ),
        });
    }
    info!(shard = %shard.name, node = %status.node_id, role = %status.role, key = %key, bytes = file.bytes,
        start_lsn = done.start_lsn, end_lsn = done.end_lsn, reused, age_ms = asked_ms.saturating_sub(done.finished_at_ms),
        "snapshot copied");
    Ok((
        status.clone(),
        SnapshotEntry {
            file,
            start_lsn: done.start_lsn,
            end_lsn: done.end_lsn,
            keys: done.keys,
            finished_at_ms: done.finished_at_ms,
        },
    ))
}

/// Whether the shard's log after `start_lsn` (a reused snapshot's start)
/// can still be archived. First the primary's archive hold is lowered to
/// `start_lsn` if it is above or unset, so from then on the primary keeps
/// every record after it whatever its own snapshots allow (this run's
/// archive pass moves the hold forward again). Then: true if the primary's
/// log reaches back to `start_lsn + 1`, or the target already has every
/// record from there up to where the primary's log begins.
async fn log_after_is_kept(
    target: &Target,
    cluster: &str,
    shard: &ShardNodes,
    start_lsn: u64,
) -> Result<bool, BackupError> {
    let (primary, pstatus) = &shard.primary;
    let list = primary.segments().await?;
    if list.archive_hold.is_none_or(|h| h > start_lsn) {
        primary.archived(start_lsn).await?;
    }
    // Listed again: the primary may have truncated before the hold moved.
    let list = primary.segments().await?;
    let first = list
        .segments
        .iter()
        .map(|s| s.first_lsn)
        .min()
        .unwrap_or(pstatus.lsn + 1);
    if first <= start_lsn + 1 {
        return Ok(true);
    }
    let archived: Vec<(u64, u64)> = target
        .list(&wal_prefix(cluster, &shard.name))
        .await?
        .iter()
        .filter_map(|(k, _)| parse_segment_key(k))
        .collect();
    Ok(covered_until(&archived, start_lsn + 1) >= first)
}

/// The first LSN from `from` on that none of the `(first, last)` ranges
/// holds, following them while they chain.
pub fn covered_until(ranges: &[(u64, u64)], from: u64) -> u64 {
    let mut next = from;
    while let Some(&(_, last)) = ranges
        .iter()
        .filter(|&&(f, l)| f <= next && l >= next)
        .max_by_key(|r| r.1)
    {
        next = last + 1;
    }
    next
}

/// Parses `<first>-<last>.wal`.
pub fn parse_segment_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".wal")?;
    let (a, b) = name.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Copies the primary's log segments the target does not have yet (closed
/// segments, and the written prefix of the active one) except those that
/// end before `needed_from`, moves the nodes' archive hold, and records the
/// shard's archive point.
async fn archive_shard(
    target: &Target,
    cluster: &str,
    shard: &ShardNodes,
    needed_from: u64,
) -> Result<(ArchivePoint, Vec<SegmentEntry>), BackupError> {
    let (client, _) = &shard.primary;
    let list = client.segments().await?;
    let prefix = wal_prefix(cluster, &shard.name);
    let existing: Vec<(u64, u64)> = target
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|(k, _)| parse_segment_key(k))
        .collect();
    let have_last = existing.iter().map(|e| e.1).max().unwrap_or(0);
    if let Some(first) = list.segments.first() {
        if have_last > 0 && first.first_lsn > (have_last + 1).max(needed_from) {
            warn!(shard = %shard.name, missing_from = have_last + 1, missing_to = first.first_lsn - 1,
                "the primary's log no longer holds records that were never archived: no point-in-time restore across this gap");
        }
    }
    let todo = list.segments.iter().filter(|seg| {
        seg.last_lsn >= seg.first_lsn
            && seg.last_lsn >= needed_from
            && !existing
                .iter()
                .any(|&(f, l)| f == seg.first_lsn && l >= seg.last_lsn)
    });
    // Two segments at a time: each is one stream hashed on one thread (a
    // segment is about one checksum part), so two use both cores.
    let new: Vec<SegmentEntry> = futures::stream::iter(todo)
        .map(|seg| async {
            let key = segment_key(cluster, &shard.name, seg.first_lsn, seg.last_lsn);
            let stream = client
                .stream(&format!(
                    "/v1/wal/segments/{}?bytes={}",
                    seg.name, seg.bytes
                ))
                .await?;
            let file = target.put_stream(&key, stream).await?;
            let entry = SegmentEntry {
                file,
                first_lsn: seg.first_lsn,
                last_lsn: seg.last_lsn,
                closed: seg.closed,
                node_id: list.node_id.clone(),
                shard_epoch: list.shard_epoch,
                archived_at_ms: now_ms(),
            };
            target
                .put_json(&key.replace(".wal", ".json"), &entry)
                .await?;
            // A prefix archived earlier is superseded by the longer copy.
            for &(f, l) in &existing {
                if f == seg.first_lsn && l < seg.last_lsn {
                    let old = segment_key(cluster, &shard.name, f, l);
                    target.delete(&old).await?;
                    target.delete(&old.replace(".wal", ".json")).await?;
                }
            }
            Ok::<_, BackupError>(entry)
        })
        .buffered(SEGMENTS_IN_FLIGHT)
        .try_collect()
        .await?;
    let last = list
        .segments
        .iter()
        .map(|s| s.last_lsn)
        .max()
        .unwrap_or(0)
        .max(have_last);
    for (c, _) in shard.all() {
        // Replicas too: one of them may be promoted and must not have
        // dropped what is not archived yet.
        if let Err(e) = c.archived(last).await {
            warn!(node = %c.base, error = %e, "failed to move the archive hold");
        }
    }
    let point = ArchivePoint {
        last_lsn: last,
        captured_at_ms: list.captured_at_ms,
        node_id: list.node_id.clone(),
        shard_epoch: list.shard_epoch,
    };
    target
        .put_json(&archive_point_key(cluster, &shard.name), &point)
        .await?;
    info!(shard = %shard.name, segments = new.len(), last_lsn = last, captured_at = %super::fmt_ms(point.captured_at_ms), "log archived");
    Ok((point, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pruned: Vec<String>) -> RunReport {
        RunReport {
            id: "20260102T030405123Z".into(),
            cluster: "users".into(),
            target: "file:///backup".into(),
            started_at: "2026-01-02T03:04:05.123Z".into(),
            finished_at: "2026-01-02T03:04:07.000Z".into(),
            duration_ms: 1877,
            bytes: 123_456,
            consistent_at: "2026-01-02T03:04:06.900Z".into(),
            shards: 2,
            pruned,
            backups: Some(2),
            first_recoverability_point: Some("2026-01-01T03:04:06.000Z".into()),
            last_recoverability_point: Some("2026-01-02T03:04:06.900Z".into()),
        }
    }

    #[test]
    fn a_backup_needs_every_slot_exactly_once() {
        assert_eq!(slots_once(&[(0, 8191), (8192, 16383)]), Ok(()));
        assert_eq!(
            slots_once(&[(8192, 16383)]),
            Err("slot 0 has no owner".to_string())
        );
        assert_eq!(
            slots_once(&[(0, 8191), (8000, 16383)]),
            Err("slot 8000 is held twice".to_string())
        );
        assert_eq!(
            slots_once(&[(0, 100), (102, 16383)]),
            Err("slot 101 has no owner".to_string())
        );
    }

    #[test]
    fn covered_until_follows_chained_segments_and_stops_at_a_gap() {
        let segs = [(1, 10), (11, 20), (21, 25), (30, 40)];
        assert_eq!(covered_until(&segs, 5), 26);
        assert_eq!(covered_until(&segs, 26), 26);
        assert_eq!(covered_until(&segs, 30), 41);
        // A longer copy of a segment's prefix wins over the shorter one.
        assert_eq!(covered_until(&[(1, 5), (1, 12), (13, 13)], 1), 14);
        assert_eq!(covered_until(&[], 7), 7);
    }

    #[test]
    fn summary_counts_segments_and_lists_backups() {
        let r = report(vec![
            "backup 20260101T000000000Z".into(),
            "segment users/wal/s0/1-2.wal".into(),
            "segment users/wal/s1/1-9.wal".into(),
        ]);
        let s: JobSummary =
            serde_json::from_str(&r.summary().to_termination_message()).expect("round trip");
        assert_eq!(s.id.as_deref(), Some("20260102T030405123Z"));
        assert_eq!(s.pruned_backups, vec!["20260101T000000000Z".to_string()]);
        assert_eq!(s.pruned_segments, 2);
        assert_eq!(s.bytes, Some(123_456));
        assert!(s.error.is_none());
    }

    #[test]
    fn termination_message_always_fits() {
        let mut pruned: Vec<String> = (0..500)
            .map(|i| format!("backup 2026010{}T00000{i:04}Z", i % 9))
            .collect();
        pruned.extend((0..5000).map(|i| format!("segment users/wal/s0/{i}-{i}.wal")));
        let msg = report(pruned).summary().to_termination_message();
        assert!(msg.len() <= TERMINATION_MESSAGE_MAX, "{} bytes", msg.len());
        let s: JobSummary = serde_json::from_str(&msg).expect("still JSON");
        assert_eq!(s.pruned_backups_count, 500);
        assert_eq!(s.pruned_segments, 5000);
        assert!(!s.pruned_backups.is_empty() && s.pruned_backups.len() < 500);
        for text in ["é".repeat(5000), "\"".repeat(5000)] {
            let long = JobSummary::failed(&text).to_termination_message();
            assert!(
                long.len() <= TERMINATION_MESSAGE_MAX,
                "{} bytes",
                long.len()
            );
            let s: JobSummary = serde_json::from_str(&long).expect("still JSON");
            assert!(s.error.is_some_and(|e| e.ends_with('…')));
        }
    }
}
