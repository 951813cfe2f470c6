//! Restoring a shard's data directory from a backup, optionally to a point
//! in time: the snapshot and the archived log are written into
//! `<data-dir>/snapshots` and `<data-dir>/wal`, the log cut at the target,
//! and the node's normal recovery (snapshot + replay) does the rest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::info;

use super::manage::{chain, complete, latest_point, segments};
use super::{fmt_ms, manifest_key, BackupError, Manifest, ShardBackup, Target};
use crate::node::wal;

/// What a restore will bring back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub manifest: Manifest,
    /// Replay stops at the first time marker after this (ms since the
    /// epoch, each node's own clock).
    pub target_ms: u64,
}

/// What `tessera backup plan` reports (and the operator pins): the backup
/// and the exact time every node of every shard restores to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the error cannot go away by retrying.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub backup_id: String,
    /// RFC 3339 with milliseconds: passing it back loses nothing.
    #[serde(default)]
    pub target_time: String,
    #[serde(default)]
    pub target_ms: u64,
    /// Number of shards in the backup.
    #[serde(default)]
    pub shards: usize,
    /// Each shard's slot ranges (`0-5460`, comma-separated when several),
    /// in slot order; empty when the list would not fit in a termination
    /// message.
    #[serde(default)]
    pub slots: Vec<String>,
}

impl Plan {
    pub fn summary(&self) -> PlanSummary {
        let slots: Vec<String> = self
            .manifest
            .shards
            .iter()
            .map(|s| {
                s.slots
                    .iter()
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let mut p = PlanSummary {
            error: None,
            permanent: false,
            cluster: self.manifest.cluster.clone(),
            backup_id: self.manifest.id.clone(),
            target_time: fmt_ms(self.target_ms),
            target_ms: self.target_ms,
            shards: self.manifest.shards.len(),
            slots,
        };
        if serde_json::to_string(&p).map_or(0, |s| s.len()) > super::run::TERMINATION_MESSAGE_MAX {
            p.slots.clear();
        }
        p
    }
}

/// Chooses the backup and the target time.
/// - `backup` None or "latest", no time: the newest backup plus all the
///   log archived since, cut at the shards' earliest archive point.
/// - a time: the newest backup whose snapshots all finished before it.
/// - a backup ID, no time: that backup's own cut.
pub async fn plan(
    target: &Target,
    cluster: &str,
    backup: Option<&str>,
    target_ms: Option<u64>,
) -> Result<Plan, BackupError> {
    let backup = backup.filter(|b| *b != "latest");
    if let Some(id) = backup {
        let Some(m) = target
            .get_json::<Manifest>(&manifest_key(cluster, id))
            .await?
        else {
            let exists = !target
                .list(&super::backup_prefix(cluster, id))
                .await?
                .is_empty();
            return Err(if exists {
                BackupError::Incomplete {
                    id: id.into(),
                    reason: "no manifest: the backup did not finish".into(),
                }
            } else {
                BackupError::NotFound(format!(
                    "no backup {id} of cluster {cluster} in {}",
                    target.describe
                ))
            });
        };
        m.check_format()?;
        let t = target_ms.unwrap_or(m.consistent_at_ms);
        if t < m.snapshots_done_ms() {
            return Err(BackupError::Plan(format!(
                "target time {} is before backup {id}'s snapshots finished ({})",
                fmt_ms(t),
                fmt_ms(m.snapshots_done_ms())
            )));
        }
        return Ok(Plan {
            manifest: m,
            target_ms: t,
        });
    }
    let all = complete(target, cluster).await?;
    let Some(newest) = all.last() else {
        return Err(BackupError::NotFound(format!(
            "no complete backup of cluster {cluster} in {}",
            target.describe
        )));
    };
    let latest = latest_point(target, cluster, newest)
        .await?
        .unwrap_or(newest.consistent_at_ms);
    let t = target_ms.unwrap_or(latest);
    if t > latest {
        return Err(BackupError::Plan(format!(
            "target time {} is after the last archived point {}",
            fmt_ms(t),
            fmt_ms(latest)
        )));
    }
    let Some(m) = all.iter().rev().find(|m| m.snapshots_done_ms() <= t) else {
        return Err(BackupError::Plan(format!(
            "target time {} is before the first recoverability point {}",
            fmt_ms(t),
            fmt_ms(all[0].snapshots_done_ms())
        )));
    };
    m.check_format()?;
    Ok(Plan {
        manifest: m.clone(),
        target_ms: t,
    })
}

/// Written into the data directory once a restore is complete.
pub const RESTORED_FILE: &str = "restored.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub cluster: String,
    pub backup_id: String,
    pub shard: String,
    pub target_ms: u64,
    pub target_time: String,
    pub snapshot_end_lsn: u64,
    /// The last LSN the restored log holds.
    pub last_lsn: u64,
    pub segments: usize,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// Picks a shard of the plan by name or by position ("0", "1", … in slot
/// order).
pub fn shard<'a>(plan: &'a Plan, sel: Option<&str>) -> Result<&'a ShardBackup, BackupError> {
    let shards = &plan.manifest.shards;
    match sel {
        None if shards.len() == 1 => Ok(&shards[0]),
        None => Err(BackupError::Plan(format!(
            "the backup has {} shards; say which (--shard NAME or index)",
            shards.len()
        ))),
        Some(s) => shards
            .iter()
            .find(|b| b.name == s)
            .or_else(|| s.parse::<usize>().ok().and_then(|i| shards.get(i)))
            .ok_or_else(|| {
                BackupError::Plan(format!(
                    "no shard {s:?} in backup {} (shards: {})",
                    plan.manifest.id,
                    shards
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
    }
}

fn lw(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::LocalWrite {
        path: path.to_path_buf(),
        source,
    }
}

/// Restores one shard into `data_dir`. Refuses a data directory that
/// already holds data (unless it holds exactly this restore: then it is a
/// no-op, so an init container may run again). Files are written under
/// `<data-dir>/.restore` and moved into place only when everything checked
/// out, so a node never starts from half a restore.
pub async fn restore_shard(
    target: &Target,
    plan: &Plan,
    shard: &ShardBackup,
    data_dir: &Path,
) -> Result<Restored, BackupError> {
    let started = std::time::Instant::now();
    let cluster = &plan.manifest.cluster;
    let done_path = data_dir.join(RESTORED_FILE);
    if let Ok(b) = std::fs::read(&done_path) {
        if let Ok(r) = serde_json::from_slice::<Restored>(&b) {
            if r.backup_id == plan.manifest.id && r.shard == shard.name {
                info!(data_dir = %data_dir.display(), backup = %r.backup_id, "already restored");
                return Ok(r);
            }
        }
        return Err(BackupError::Plan(format!(
            "{} already holds another restore ({})",
            data_dir.display(),
            done_path.display()
        )));
    }
    for sub in ["wal", "snapshots"] {
        let p = data_dir.join(sub);
        let has_data = std::fs::read_dir(&p)
            .map(|mut d| {
                d.any(|e| {
                    e.map(|e| !e.file_name().to_string_lossy().starts_with("archived-lsn"))
                        .unwrap_or(true)
                })
            })
            .unwrap_or(false);
        if has_data {
            return Err(BackupError::Plan(format!(
                "{} is not empty: restoring over existing data is refused",
                p.display()
            )));
        }
    }
    let work = data_dir.join(".restore");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(lw(&work))?;
    }
    let snap_dir = work.join("snapshots");
    let wal_dir = work.join("wal");
    std::fs::create_dir_all(&snap_dir).map_err(lw(&snap_dir))?;
    std::fs::create_dir_all(&wal_dir).map_err(lw(&wal_dir))?;

    let snap = &shard.snapshot;
    let snap_name = snap
        .file
        .key
        .rsplit('/')
        .next()
        .unwrap_or("snapshot.tsnap")
        .to_string();
    target
        .fetch_checked(&snap.file, Some(&snap_dir.join(&snap_name)))
        .await?;
    let mut bytes = snap.file.bytes;

    let segs = segments(target, cluster, &shard.name).await?;
    let chain = chain(&segs, snap.start_lsn + 1);
    let mut last_lsn = snap.end_lsn;
    let mut written = 0;
    let mut stopped = false;
    for seg in &chain {
        let path = wal_dir.join(format!("{:020}.wal", seg.first_lsn));
        target.fetch_checked(&seg.file, Some(&path)).await?;
        bytes += seg.file.bytes;
        written += 1;
        match cut_at_time(&path, plan.target_ms)? {
            Cut::Whole(last) => last_lsn = last_lsn.max(last),
            Cut::At { stop_lsn, last } => {
                if stop_lsn <= snap.end_lsn {
                    return Err(BackupError::Plan(format!(
                        "shard {}: the snapshot reflects records up to LSN {} but the target time stops the log at {stop_lsn}",
                        shard.name, snap.end_lsn
                    )));
                }
                last_lsn = last.max(snap.end_lsn);
                if last < seg.first_lsn {
                    std::fs::remove_file(&path).map_err(lw(&path))?;
                    written -= 1;
                }
                stopped = true;
                break;
            }
        }
    }
    if !stopped {
        // No marker after the target: the archive must reach the shard's
        // archive point, or records that existed at the target are missing.
        let reached = chain.last().map(|c| c.last_lsn).unwrap_or(snap.start_lsn);
        let need =
            super::manage::archive_points(target, cluster, std::slice::from_ref(&shard.name))
                .await?
                .get(&shard.name)
                .map_or(shard.archive.last_lsn, |p| p.last_lsn);
        if reached < need.max(snap.end_lsn) {
            return Err(BackupError::Incomplete {
                id: plan.manifest.id.clone(),
                reason: format!(
                    "shard {}: the archived log stops at LSN {reached} (a missing segment), it must reach {}",
                    shard.name,
                    need.max(snap.end_lsn)
                ),
            });
        }
    }
    for d in [&snap_dir, &wal_dir] {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(lw(d))?;
    }
    std::fs::create_dir_all(data_dir).map_err(lw(data_dir))?;
    for sub in ["snapshots", "wal"] {
        let to = data_dir.join(sub);
        if to.exists() {
            std::fs::remove_dir_all(&to).map_err(lw(&to))?;
        }
        std::fs::rename(work.join(sub), &to).map_err(lw(&to))?;
    }
    let restored = Restored {
        cluster: cluster.clone(),
        backup_id: plan.manifest.id.clone(),
        shard: shard.name.clone(),
        target_ms: plan.target_ms,
        target_time: fmt_ms(plan.target_ms),
        snapshot_end_lsn: snap.end_lsn,
        last_lsn,
        segments: written,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let body = serde_json::to_vec_pretty(&restored).map_err(|e| BackupError::Decode {
        what: RESTORED_FILE.into(),
        reason: e.to_string(),
    })?;
    std::fs::write(&done_path, body).map_err(lw(&done_path))?;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::File::open(data_dir)
        .and_then(|f| f.sync_all())
        .map_err(lw(data_dir))?;
    info!(shard = %shard.name, backup = %plan.manifest.id, target_time = %restored.target_time, last_lsn, segments = written, bytes, "shard restored");
    Ok(restored)
}

enum Cut {
    /// No marker after the target: the whole file stays; its last LSN.
    Whole(u64),
    /// Cut before the first marker after the target (`stop_lsn`); `last` is
    /// the last LSN kept in this file (< first LSN: the file is empty).
    At { stop_lsn: u64, last: u64 },
}

/// Finds the first time marker later than `target_ms` in a segment file and
/// truncates the file before it.
fn cut_at_time(path: &PathBuf, target_ms: u64) -> Result<Cut, BackupError> {
    let b = std::fs::read(path).map_err(|source| BackupError::LocalRead {
        path: path.clone(),
        source,
    })?;
    let corrupt = |at: usize, reason: String| BackupError::Decode {
        what: format!("{} at offset {at}", path.display()),
        reason,
    };
    let mut at = wal::SEGMENT_HEADER_LEN;
    if b.len() < at {
        return Err(corrupt(0, "shorter than a segment header".into()));
    }
    let mut last = 0u64;
    while at < b.len() {
        let (rec, len) = wal::decode_record(&b[at..]).map_err(|r| corrupt(at, r))?;
        if wal::marker_time(&rec).is_some_and(|t| t > target_ms) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(lw(path))?;
            f.set_len(at as u64)
                .and_then(|_| f.sync_all())
                .map_err(lw(path))?;
            return Ok(Cut::At {
                stop_lsn: rec.lsn,
                last: rec.lsn - 1,
            });
        }
        last = rec.lsn;
        at += len;
    }
    Ok(Cut::Whole(last))
}
