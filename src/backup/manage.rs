//! Listing, verification and retention of backups.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{info, warn};

use super::run::parse_segment_key;
use super::{
    archive_point_key, backup_prefix, backups_prefix, fmt_ms, manifest_key, now_ms, wal_prefix,
    ArchivePoint, BackupError, Manifest, SegmentEntry, Target,
};

/// What retention keeps: the newest `keep` backups and/or those younger
/// than `max_age_ms` (a backup is pruned when either rule says so; the
/// newest complete backup is always kept).
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub keep: Option<usize>,
    pub max_age_ms: Option<u64>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.keep.is_some() || self.max_age_ms.is_some()
    }
}

/// Parses `30d`, `12h`, `90m`, `3600s`.
pub fn parse_age(s: &str) -> Result<u64, BackupError> {
    let bad = || BackupError::Decode {
        what: format!("the age {s:?}"),
        reason: "expected a number and a unit: s, m, h, d, w (e.g. 7d)".into(),
    };
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    Ok(n * mult)
}

/// A backup as listed: complete (manifest) or not.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub manifest: Option<Manifest>,
}

/// Every backup of a cluster, oldest first.
pub async fn backups(target: &Target, cluster: &str) -> Result<Vec<Listed>, BackupError> {
    let ids = target.list_dirs(&backups_prefix(cluster)).await?;
    let mut out = Vec::new();
    for id in ids {
        let manifest = target
            .get_json::<Manifest>(&manifest_key(cluster, &id))
            .await?;
        out.push(Listed { id, manifest });
    }
    Ok(out)
}

/// The complete backups, oldest first.
pub async fn complete(target: &Target, cluster: &str) -> Result<Vec<Manifest>, BackupError> {
    Ok(backups(target, cluster)
        .await?
        .into_iter()
        .filter_map(|l| l.manifest)
        .collect())
}

/// Each shard's archive point.
pub async fn archive_points(
    target: &Target,
    cluster: &str,
    shards: &[String],
) -> Result<BTreeMap<String, ArchivePoint>, BackupError> {
    let mut out = BTreeMap::new();
    for s in shards {
        if let Some(p) = target
            .get_json::<ArchivePoint>(&archive_point_key(cluster, s))
            .await?
        {
            out.insert(s.clone(), p);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEntry {
    pub id: String,
    pub complete: bool,
    pub started_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub bytes: Option<u64>,
    pub shards: Option<usize>,
    pub consistent_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub cluster: String,
    pub target: String,
    pub backups: Vec<ListEntry>,
    /// The earliest time a restore can target (the oldest backup's
    /// snapshots), and the latest (the shards' earliest archive point).
    pub first_recoverability_point: Option<String>,
    pub last_recoverability_point: Option<String>,
    pub first_recoverability_point_ms: Option<u64>,
    pub last_recoverability_point_ms: Option<u64>,
}

pub async fn list(target: &Target, cluster: &str) -> Result<Listing, BackupError> {
    let all = backups(target, cluster).await?;
    let entries = all
        .iter()
        .map(|l| ListEntry {
            id: l.id.clone(),
            complete: l.manifest.is_some(),
            started_at: l.manifest.as_ref().map(|m| fmt_ms(m.started_at_ms)),
            duration_ms: l.manifest.as_ref().map(|m| m.duration_ms),
            bytes: l.manifest.as_ref().map(|m| m.bytes),
            shards: l.manifest.as_ref().map(|m| m.shards.len()),
            consistent_at: l.manifest.as_ref().map(|m| fmt_ms(m.consistent_at_ms)),
        })
        .collect();
    let complete: Vec<&Manifest> = all.iter().filter_map(|l| l.manifest.as_ref()).collect();
    let first = complete.first().map(|m| m.snapshots_done_ms());
    let last = match complete.last() {
        Some(m) => latest_point(target, cluster, m).await?,
        None => None,
    };
    Ok(Listing {
        cluster: cluster.to_string(),
        target: target.describe.clone(),
        backups: entries,
        first_recoverability_point: first.map(fmt_ms),
        last_recoverability_point: last.map(fmt_ms),
        first_recoverability_point_ms: first,
        last_recoverability_point_ms: last,
    })
}

/// The latest time every shard of `m` is archived through (None: a shard
/// has no archive point).
pub async fn latest_point(
    target: &Target,
    cluster: &str,
    m: &Manifest,
) -> Result<Option<u64>, BackupError> {
    let names: Vec<String> = m.shards.iter().map(|s| s.name.clone()).collect();
    let points = archive_points(target, cluster, &names).await?;
    let mut t = u64::MAX;
    for n in &names {
        match points.get(n) {
            Some(p) => t = t.min(p.captured_at_ms),
            None => return Ok(None),
        }
    }
    Ok(Some(t.max(m.consistent_at_ms)))
}

/// All archived segment metadata of a shard, by first LSN.
pub async fn segments(
    target: &Target,
    cluster: &str,
    shard: &str,
) -> Result<Vec<SegmentEntry>, BackupError> {
    let mut out = Vec::new();
    for (key, _) in target.list(&wal_prefix(cluster, shard)).await? {
        if parse_segment_key(&key).is_none() {
            continue;
        }
        let meta_key = key.replace(".wal", ".json");
        match target.get_json::<SegmentEntry>(&meta_key).await? {
            Some(m) => out.push(m),
            None => {
                warn!(key = %key, "archived segment without its metadata (an interrupted archive); ignored")
            }
        }
    }
    out.sort_by_key(|s| (s.first_lsn, s.last_lsn));
    Ok(out)
}

/// The segments that continue the log from `from` (inclusive) as far as
/// the archive goes: for each position the longest copy. Stops at a gap.
pub fn chain(segs: &[SegmentEntry], from: u64) -> Vec<SegmentEntry> {
    let mut out = Vec::new();
    let mut cur = from;
    loop {
        let next = segs
            .iter()
            .filter(|s| s.first_lsn <= cur && s.last_lsn >= cur)
            .max_by_key(|s| s.last_lsn);
        match next {
            Some(s) => {
                cur = s.last_lsn + 1;
                out.push(s.clone());
            }
            None => return out,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub id: String,
    pub ok: bool,
    pub files: usize,
    pub bytes: u64,
    pub problems: Vec<String>,
}

/// Reads every file of a backup — its snapshots and the log from each
/// snapshot through the backup's archive point — checking sizes and SHA-256.
pub async fn verify(target: &Target, cluster: &str, id: &str) -> Result<VerifyReport, BackupError> {
    let Some(m) = target
        .get_json::<Manifest>(&manifest_key(cluster, id))
        .await?
    else {
        let exists = !target.list(&backup_prefix(cluster, id)).await?.is_empty();
        return Ok(VerifyReport {
            id: id.to_string(),
            ok: false,
            files: 0,
            bytes: 0,
            problems: vec![if exists {
                "incomplete: no manifest (the backup did not finish)".into()
            } else {
                "no such backup".into()
            }],
        });
    };
    if let Err(e) = m.check_format() {
        return Ok(VerifyReport {
            id: id.to_string(),
            ok: false,
            files: 0,
            bytes: 0,
            problems: vec![e.to_string()],
        });
    }
    let mut problems = Vec::new();
    let mut files = 0;
    let mut bytes = 0;
    for s in &m.shards {
        files += 1;
        bytes += s.snapshot.file.bytes;
        if let Err(e) = target.fetch_checked(&s.snapshot.file, None).await {
            problems.push(format!("shard {}: {e}", s.name));
        }
        let segs = segments(target, cluster, &s.name).await?;
        let chain = chain(&segs, s.snapshot.start_lsn + 1);
        let reached = chain
            .last()
            .map(|c| c.last_lsn)
            .unwrap_or(s.snapshot.start_lsn);
        if reached < s.archive.last_lsn {
            problems.push(format!(
                "shard {}: the archived log stops at LSN {reached}, the backup needs it through {}",
                s.name, s.archive.last_lsn
            ));
        }
        for c in chain.iter().filter(|c| c.first_lsn <= s.archive.last_lsn) {
            files += 1;
            bytes += c.file.bytes;
            if let Err(e) = target.fetch_checked(&c.file, None).await {
                problems.push(format!("shard {}: {e}", s.name));
            }
        }
    }
    Ok(VerifyReport {
        id: id.to_string(),
        ok: problems.is_empty(),
        files,
        bytes,
        problems,
    })
}

/// Per shard, the first LSN a restore from these backups can replay: one
/// past the oldest of their snapshots. Restores start from a snapshot, so
/// the log before that serves nothing. Shards without a backup are absent.
pub fn log_needed_from<'a>(backups: impl Iterator<Item = &'a Manifest>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for m in backups {
        for s in &m.shards {
            let e = out.entry(s.name.clone()).or_insert(u64::MAX);
            *e = (*e).min(s.snapshot.start_lsn + 1);
        }
    }
    out
}

/// Applies retention: deletes pruned backups, incomplete ones older than
/// the newest complete one, and archived segments no kept backup needs.
/// Returns what it deleted (backup IDs and segment keys).
pub async fn prune(
    target: &Target,
    cluster: &str,
    r: &Retention,
) -> Result<Vec<String>, BackupError> {
    let all = backups(target, cluster).await?;
    let complete: Vec<&Manifest> = all.iter().filter_map(|l| l.manifest.as_ref()).collect();
    let Some(newest) = complete.last() else {
        return Ok(Vec::new());
    };
    let now = now_ms();
    let n = complete.len();
    let mut kept: Vec<&Manifest> = Vec::new();
    let mut doomed: Vec<String> = Vec::new();
    for (i, m) in complete.iter().enumerate() {
        let too_many = r.keep.is_some_and(|k| n - i > k.max(1));
        let too_old = r
            .max_age_ms
            .is_some_and(|a| now.saturating_sub(m.finished_at_ms) > a);
        if (too_many || too_old) && m.id != newest.id {
            doomed.push(m.id.clone());
        } else {
            kept.push(m);
        }
    }
    for l in &all {
        if l.manifest.is_none() && l.id < newest.id {
            doomed.push(l.id.clone());
        }
    }
    let mut pruned = Vec::new();
    for id in doomed {
        for (key, _) in target.list(&backup_prefix(cluster, &id)).await? {
            // The manifest goes first: a half-deleted backup is incomplete,
            // never "complete with missing files".
            if key.ends_with("/manifest.json") {
                target.delete(&key).await?;
            }
        }
        for (key, _) in target.list(&backup_prefix(cluster, &id)).await? {
            target.delete(&key).await?;
        }
        info!(cluster, backup = %id, "retention: backup pruned");
        pruned.push(format!("backup {id}"));
    }
    for (shard, from) in log_needed_from(kept.iter().copied()) {
        for (key, _) in target.list(&wal_prefix(cluster, &shard)).await? {
            let Some((_, last)) = parse_segment_key(&key) else {
                continue;
            };
            if last < from {
                target.delete(&key).await?;
                target.delete(&key.replace(".wal", ".json")).await?;
                info!(cluster, shard = %shard, key = %key, "retention: log segment pruned");
                pruned.push(format!("segment {key}"));
            }
        }
    }
    Ok(pruned)
}
