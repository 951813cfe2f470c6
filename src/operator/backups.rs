//! `status.backup` from the backup Jobs: each finished Job's JSON summary
//! (its pod's termination message, written by `tessera backup run
//! --termination-log`) becomes the last backup, the last successful one,
//! the recoverability window, the `LastBackupSucceeded` condition, an Event
//! and metrics. Jobs belong to the CronJob, not to the cluster: they are
//! found (and watched) by the `tessera.dev/cluster` label the CronJob's job
//! template carries, so `kubectl create job --from=cronjob/…` counts too.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::build::LABEL_COMPONENT;
use super::context::Context;
use super::jobs::{self, JobState};
use super::status::Cond;
use crate::api::{BackupRef, BackupRun, BackupStatus, DatabaseCluster};
use crate::backup::run::JobSummary;

pub const LAST_BACKUP_SUCCEEDED: &str = "LastBackupSucceeded";
/// The backup CronJob's container.
const CONTAINER: &str = "backup";

/// A backup Job that finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub job: String,
    pub succeeded: bool,
    pub at: Timestamp,
    pub summary: JobSummary,
}

impl Finished {
    fn time(&self) -> String {
        format!("{:.0}", self.at)
    }

    fn run(&self) -> BackupRun {
        let s = &self.summary;
        let message = if self.succeeded {
            pruned_note(s)
        } else {
            Some(
                s.error
                    .clone()
                    .unwrap_or_else(|| "the backup job failed without a summary".into()),
            )
        };
        BackupRun {
            job: self.job.clone(),
            id: s.id.clone(),
            succeeded: self.succeeded,
            // The Job's own finish time: what `fold` orders results by.
            time: self.time(),
            size_bytes: s.bytes,
            duration_ms: s.duration_ms,
            message,
        }
    }
}

/// "retention pruned …" when it pruned anything.
pub fn pruned_note(s: &JobSummary) -> Option<String> {
    if s.pruned_backups_count == 0 && s.pruned_segments == 0 {
        return None;
    }
    let mut ids = s.pruned_backups.join(", ");
    if s.pruned_backups.len() < s.pruned_backups_count {
        ids.push_str(&format!(
            " and {} more",
            s.pruned_backups_count - s.pruned_backups.len()
        ));
    }
    let backups = match s.pruned_backups_count {
        0 => "no backup".to_string(),
        1 => format!("backup {ids}"),
        _ => format!("{} backups ({ids})", s.pruned_backups_count),
    };
    Some(format!(
        "retention pruned {backups} and {} log segment(s){}",
        s.pruned_segments,
        s.backups
            .map(|k| format!("; {k} backup(s) kept"))
            .unwrap_or_default()
    ))
}

fn is_backup_job(j: &Job) -> bool {
    j.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_COMPONENT))
        .is_some_and(|c| c == "backup")
}

/// Every finished backup Job, oldest first.
pub fn finished(jobs: &[Job], pods: &[Pod]) -> Vec<Finished> {
    let mut out: Vec<Finished> = jobs
        .iter()
        .filter(|j| is_backup_job(j))
        .filter_map(|j| {
            let name = j.metadata.name.clone()?;
            let (succeeded, message, at) = match jobs::state(j, pods, CONTAINER) {
                JobState::Running { .. } => return None,
                JobState::Succeeded { message, at } => (true, message, at),
                JobState::Failed { message, at } => (false, message, at),
            };
            let summary = serde_json::from_str::<JobSummary>(&message)
                .ok()
                .filter(|s| succeeded || s.error.is_some())
                .unwrap_or_else(|| {
                    if succeeded {
                        JobSummary::default()
                    } else {
                        JobSummary::failed(&jobs::error_text(&message))
                    }
                });
            Some(Finished {
                job: name,
                succeeded,
                at: at.unwrap_or(Timestamp::UNIX_EPOCH),
                summary,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.at, &a.job).cmp(&(b.at, &b.job)));
    out
}

/// Folds the Jobs that finished after the recorded last backup into the
/// status. Returns the new status and the newly seen results (for Events
/// and metrics), oldest first. Jobs already recorded, or older (history
/// kept by the CronJob), change nothing.
pub fn fold(
    prev: Option<&BackupStatus>,
    finished: Vec<Finished>,
) -> (Option<BackupStatus>, Vec<Finished>) {
    let last = prev.and_then(|p| p.last_backup.as_ref());
    let recorded_at =
        |r: &BackupRun| -> Timestamp { r.time.parse().unwrap_or(Timestamp::UNIX_EPOCH) };
    let new: Vec<Finished> = finished
        .into_iter()
        .filter(|f| match last {
            None => true,
            Some(r) if r.job == f.job => false,
            Some(r) => (f.at, &f.job) > (recorded_at(r), &r.job),
        })
        .collect();
    if new.is_empty() {
        return (prev.cloned(), new);
    }
    let mut st = prev.cloned().unwrap_or_default();
    for f in &new {
        st.last_backup = Some(f.run());
        if f.succeeded {
            if let Some(id) = &f.summary.id {
                st.last_successful_backup = Some(BackupRef {
                    id: id.clone(),
                    time: f.summary.finished_at.clone().unwrap_or_else(|| f.time()),
                    size_bytes: f.summary.bytes,
                    duration_ms: f.summary.duration_ms,
                });
            }
            if f.summary.first_recoverability_point.is_some() {
                st.first_recoverability_point = f.summary.first_recoverability_point.clone();
            }
            if f.summary.last_recoverability_point.is_some() {
                st.last_recoverability_point = f.summary.last_recoverability_point.clone();
            }
        }
    }
    (Some(st), new)
}

/// `LastBackupSucceeded`, once there is a last backup.
pub fn condition(st: Option<&BackupStatus>) -> Option<Cond> {
    let r = st?.last_backup.as_ref()?;
    Some(if r.succeeded {
        Cond::new(
            LAST_BACKUP_SUCCEEDED,
            true,
            "BackupSucceeded",
            format!(
                "backup {} ({} bytes in {} ms) by job {}",
                r.id.as_deref().unwrap_or("?"),
                r.size_bytes.unwrap_or(0),
                r.duration_ms.unwrap_or(0),
                r.job
            ),
        )
    } else {
        Cond::new(
            LAST_BACKUP_SUCCEEDED,
            false,
            "BackupFailed",
            format!(
                "job {}: {}",
                r.job,
                r.message.as_deref().unwrap_or("failed")
            ),
        )
    })
}

/// Events, logs and metrics for backup Jobs that finished since the last
/// reconcile.
pub async fn report(
    ctx: &Context,
    dbc: &DatabaseCluster,
    new: &[Finished],
    st: Option<&BackupStatus>,
) {
    let ns = dbc.namespace().unwrap_or_default();
    let name = dbc.name_any();
    for f in new {
        ctx.metrics.backup_finished(&ns, &name, f.succeeded);
        let s = &f.summary;
        if f.succeeded {
            let note = format!(
                "backup {} finished: {} bytes, {} shard(s) in {} ms, consistent at {} (job {})",
                s.id.as_deref().unwrap_or("?"),
                s.bytes.unwrap_or(0),
                s.shards.unwrap_or(0),
                s.duration_ms.unwrap_or(0),
                s.consistent_at.as_deref().unwrap_or("?"),
                f.job
            );
            tracing::info!(cluster = %name, namespace = %ns, job = %f.job, id = ?s.id, bytes = ?s.bytes, "backup succeeded");
            ctx.event(dbc, EventType::Normal, "BackupSucceeded", "Backup", note)
                .await;
            if let Some(p) = pruned_note(s) {
                tracing::info!(cluster = %name, namespace = %ns, job = %f.job, pruned = %p, "retention pruned");
                ctx.event(dbc, EventType::Normal, "BackupsPruned", "Retention", p)
                    .await;
            }
        } else {
            let why = s.error.clone().unwrap_or_else(|| "failed".into());
            tracing::warn!(cluster = %name, namespace = %ns, job = %f.job, error = %why, "backup failed");
            ctx.event(
                dbc,
                EventType::Warning,
                "BackupFailed",
                "Backup",
                format!("backup job {} failed: {why}", f.job),
            )
            .await;
        }
    }
    if let Some(st) = st {
        ctx.metrics.backup_status(&ns, &name, st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::jobs::tests::{job, pod};

    fn backup_job(name: &str, finished: Option<(&str, i64)>) -> Job {
        let mut j = job(name, finished);
        j.metadata.labels = Some([(LABEL_COMPONENT.to_string(), "backup".to_string())].into());
        j
    }

    const OK: &str = r#"{"id":"20260102T030405123Z","startedAt":"2026-01-02T03:04:05.123Z","finishedAt":"2026-01-02T03:04:07.000Z","durationMs":1877,"bytes":4096,"consistentAt":"2026-01-02T03:04:06.900Z","shards":2,"prunedBackups":["20260101T000000000Z"],"prunedBackupsCount":1,"prunedSegments":3,"backups":2,"firstRecoverabilityPoint":"2026-01-01T10:00:00.000Z","lastRecoverabilityPoint":"2026-01-02T03:04:06.900Z"}"#;

    #[test]
    fn a_successful_job_fills_the_status_and_condition() {
        let jobs = vec![backup_job("b-1", Some(("Complete", 100)))];
        let pods = vec![pod("b-1", "backup", 90, 0, OK)];
        let (st, new) = fold(None, finished(&jobs, &pods));
        assert_eq!(new.len(), 1);
        let st = st.expect("status");
        let last = st.last_backup.clone().expect("last backup");
        assert!(last.succeeded);
        assert_eq!(last.id.as_deref(), Some("20260102T030405123Z"));
        assert_eq!(last.size_bytes, Some(4096));
        assert_eq!(last.duration_ms, Some(1877));
        assert_eq!(last.time, "1970-01-01T00:01:40Z");
        assert!(
            last.message.as_deref().is_some_and(|m| {
                m.contains(
            "retention pruned backup 20260101T000000000Z and 3 log segment(s); 2 backup(s) kept"
        )
            }),
            "{last:?}"
        );
        let ok = st.last_successful_backup.clone().expect("last successful");
        assert_eq!(ok.id, "20260102T030405123Z");
        assert_eq!(
            st.first_recoverability_point.as_deref(),
            Some("2026-01-01T10:00:00.000Z")
        );
        let c = condition(Some(&st)).expect("condition");
        assert!(c.status);
        assert_eq!(c.reason, "BackupSucceeded");
        // Seen again: nothing new, nothing changes.
        let (again, new) = fold(Some(&st), finished(&jobs, &pods));
        assert!(new.is_empty());
        assert_eq!(again.as_ref(), Some(&st));
    }

    #[test]
    fn a_failed_job_keeps_the_last_successful_backup() {
        let jobs = vec![
            backup_job("b-1", Some(("Complete", 100))),
            backup_job("b-2", Some(("Failed", 200))),
            backup_job("b-3", None),
        ];
        let pods = vec![
            pod("b-1", "backup", 90, 0, OK),
            pod(
                "b-2",
                "backup",
                150,
                1,
                r#"{"error":"shard s1: no primary among the reachable nodes"}"#,
            ),
        ];
        let (first, _) = fold(None, finished(&jobs[..1], &pods));
        let (st, new) = fold(first.as_ref(), finished(&jobs, &pods));
        assert_eq!(
            new.iter().map(|f| f.job.as_str()).collect::<Vec<_>>(),
            ["b-2"]
        );
        let st = st.expect("status");
        let last = st.last_backup.clone().expect("last");
        assert!(!last.succeeded);
        assert_eq!(last.job, "b-2");
        assert_eq!(
            last.message.as_deref(),
            Some("shard s1: no primary among the reachable nodes")
        );
        assert_eq!(
            st.last_successful_backup.as_ref().map(|b| b.id.as_str()),
            Some("20260102T030405123Z")
        );
        let c = condition(Some(&st)).expect("condition");
        assert!(!c.status);
        assert_eq!(c.reason, "BackupFailed");
        assert!(c.message.contains("no primary"), "{}", c.message);
    }

    #[test]
    fn only_backup_jobs_count_and_no_jobs_no_condition() {
        let mut restore = job("r", Some(("Complete", 10)));
        restore.metadata.labels =
            Some([(LABEL_COMPONENT.to_string(), "restore".to_string())].into());
        assert!(finished(&[restore], &[]).is_empty());
        assert!(condition(None).is_none());
        let (st, new) = fold(None, vec![]);
        assert!(st.is_none() && new.is_empty());
    }
}
