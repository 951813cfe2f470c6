//! `bootstrap.fromBackup`: a new cluster's nodes start from a backup.
//!
//! 1. **Plan**: a Job (`<cluster>-restore-plan`) runs `tessera backup plan`
//!    against the source and leaves, in its termination message, the backup
//!    it chose and the exact time (ms) to restore to. The operator records
//!    both in `status.restore` (so every node of every shard restores the
//!    same point, even with `latest` while the source keeps archiving), and
//!    checks the backup's shard count and slot ranges against the spec.
//! 2. **Restore**: every node's data claim (`data-<cluster>-shard-<i>-<j>`)
//!    is created ahead of its StatefulSet, and a Job per node
//!    (`<cluster>-restore-<i>-<j>`) runs `tessera backup restore` into it,
//!    pinned to the plan. The command checks every SHA-256 before anything
//!    is moved into place. Replicas are restored too (the same point as
//!    their primary): they start with the data, resume replication with a
//!    partial resync, and a failover right after the restore loses nothing.
//! 3. **Restored**: only when every Job succeeded are the StatefulSets
//!    created (they adopt the filled claims); the cluster then bootstraps
//!    as usual. A failed plan or restore sets `Restored=False` with the
//!    Job's message and the StatefulSets are never created, so the cluster
//!    is never Ready half-restored.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::api::RestoreStatus;
use crate::backup::restore::PlanSummary;
use crate::operator::build;
use crate::operator::jobs::{self, JobState};
use crate::operator::status::Cond;
use crate::operator::validate::ValidatedCluster;

pub mod execute;

/// Condition type of the restore.
pub const RESTORED: &str = "Restored";
const CONTAINER: &str = "restore";

/// `status.restore.phase`, as written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Planning,
    Restoring,
    Restored,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Planning,
        Phase::Restoring,
        Phase::Restored,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planning => "Planning",
            Phase::Restoring => "Restoring",
            Phase::Restored => "Restored",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl PartialEq<Phase> for String {
    fn eq(&self, p: &Phase) -> bool {
        self == p.as_str()
    }
}

/// What the restore needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Restored: reconcile as usual (and create the StatefulSets).
    Proceed,
    /// Failed: nothing to create; wait for a change.
    Stop,
    /// Create the plan Job (idempotent) and wait for it.
    Plan,
    /// Create the claims and restore Jobs (idempotent) and wait for them.
    Restore {
        backup_id: String,
        target_time: String,
    },
}

/// The outcome of one look at the restore: the status to record, the
/// `Restored` condition, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: RestoreStatus,
    pub cond: Cond,
    /// True when waiting cannot help (a failed Job, a shard mismatch).
    pub failed: bool,
    pub next: Next,
}

/// Decides from the spec, the recorded restore status and the Jobs.
pub fn decide(
    v: &ValidatedCluster,
    bootstrapped: bool,
    prev: Option<&RestoreStatus>,
    jobs: &[Job],
    pods: &[Pod],
) -> Option<Outcome> {
    let fb = v.spec.bootstrap.as_ref()?.from_backup.as_ref()?;
    if bootstrapped || prev.is_some_and(|p| Phase::parse(&p.phase) == Some(Phase::Restored)) {
        return None;
    }
    let find = |name: &str| {
        jobs.iter()
            .find(|j| j.metadata.name.as_deref() == Some(name))
    };
    let source = format!("cluster {}'s backup {}", fb.cluster, fb.backup_id);
    let pinned = prev.and_then(|p| {
        Some((
            p.backup_id.clone()?,
            p.target_time.clone()?,
            p.shard_slots.clone(),
        ))
    });
    let Some((backup_id, target_time, shard_slots)) = pinned else {
        // Planning.
        let plan_job = find(&build::restore_plan_job_name(&v.name));
        let state = plan_job.map(|j| jobs::state(j, pods, CONTAINER));
        let stuck = plan_job
            .and_then(|j| jobs::stuck(j, pods))
            .map(|w| format!("; waiting: {w}"))
            .unwrap_or_default();
        return Some(match state {
            None | Some(JobState::Running { failed_attempt: None }) => waiting(
                Phase::Planning,
                "PlanningRestore",
                format!("choosing the backup and the time to restore from {source}{stuck}"),
                Next::Plan,
            ),
            Some(JobState::Running {
                failed_attempt: Some(m),
            }) => waiting(
                Phase::Planning,
                "PlanningRestore",
                format!("planning the restore failed and is retried: {}", jobs::error_text(&m)),
                Next::Plan,
            ),
            Some(JobState::Failed { message, .. }) => failed(
                RestoreStatus {
                    phase: Phase::Failed.as_str().into(),
                    ..Default::default()
                },
                "RestoreFailed",
                format!(
                    "no restore plan for {source}: {} (fix the source, then delete the Job {} to plan again, or recreate the cluster)",
                    jobs::error_text(&message),
                    build::restore_plan_job_name(&v.name)
                ),
            ),
            Some(JobState::Succeeded { message, .. }) => {
                match serde_json::from_str::<PlanSummary>(&message) {
                    Ok(p) if p.error.is_none() && !p.backup_id.is_empty() => {
                        let status = RestoreStatus {
                            phase: Phase::Restoring.as_str().into(),
                            backup_id: Some(p.backup_id.clone()),
                            target_time: Some(p.target_time.clone()),
                            shard_slots: if p.slots.is_empty() {
                                // Too many shards to list in a termination
                                // message: the count is still checked.
                                vec![String::new(); p.shards]
                            } else {
                                p.slots.clone()
                            },
                            message: None,
                        };
                        check_and_restore(v, status, pods, jobs)
                    }
                    _ => failed(
                        RestoreStatus {
                            phase: Phase::Failed.as_str().into(),
                            ..Default::default()
                        },
                        "RestoreFailed",
                        format!(
                            "the restore plan Job succeeded but its result is unreadable: {message:?}"
                        ),
                    ),
                }
            }
        });
    };
    let status = RestoreStatus {
        phase: Phase::Restoring.as_str().into(),
        backup_id: Some(backup_id),
        target_time: Some(target_time),
        shard_slots,
        message: None,
    };
    Some(check_and_restore(v, status, pods, jobs))
}

fn waiting(phase: Phase, reason: &str, message: String, next: Next) -> Outcome {
    Outcome {
        status: RestoreStatus {
            phase: phase.as_str().into(),
            message: Some(message.clone()),
            ..Default::default()
        },
        cond: Cond::new(RESTORED, false, reason, message),
        failed: false,
        next,
    }
}

fn failed(mut status: RestoreStatus, reason: &str, message: String) -> Outcome {
    status.phase = Phase::Failed.as_str().into();
    status.message = Some(message.clone());
    Outcome {
        status,
        cond: Cond::new(RESTORED, false, reason, message),
        failed: true,
        next: Next::Stop,
    }
}

/// The backup's slot layout must give every slot exactly one shard (the
/// cluster bootstraps with it: the backup's shard count and ranges; a
/// different `spec.shards` is reached by resharding afterwards). Entries
/// left empty (too many shards to list) are not checked.
pub fn check_shards(shard_slots: &[String]) -> Result<(), (&'static str, String)> {
    if shard_slots.iter().any(|s| s.is_empty()) {
        return Ok(());
    }
    let owned: Vec<Vec<String>> = shard_slots
        .iter()
        .map(|s| s.split(',').map(str::to_string).collect())
        .collect();
    let parsed = crate::operator::operations::reshard::plan::parse_owned(&owned);
    let listed: usize = owned.iter().map(Vec::len).sum();
    let valid: usize = parsed.iter().map(Vec::len).sum();
    if listed != valid || !crate::operator::operations::reshard::plan::covers_all_once(&parsed) {
        return Err((
            "SlotRangesMismatch",
            format!(
                "the backup's shards hold slots {shard_slots:?}, which do not give each of the 16384 slots exactly one shard: the backup is damaged or not a whole cluster's"
            ),
        ));
    }
    Ok(())
}

/// The shards a restore bootstraps with: the backup's.
pub fn bootstrap_shards(status: &RestoreStatus) -> Option<u32> {
    (!status.shard_slots.is_empty()).then_some(status.shard_slots.len() as u32)
}

fn check_and_restore(
    v: &ValidatedCluster,
    status: RestoreStatus,
    pods: &[Pod],
    jobs: &[Job],
) -> Outcome {
    if let Err((reason, message)) = check_shards(&status.shard_slots) {
        return failed(status, reason, message);
    }
    let v = &bootstrap_shards(&status).map_or_else(|| v.clone(), |n| v.with_shards(n));
    let backup_id = status.backup_id.clone().unwrap_or_default();
    let target_time = status.target_time.clone().unwrap_or_default();
    let mut done = 0;
    let mut total = 0;
    let mut retrying: Option<String> = None;
    let mut stuck: Option<String> = None;
    for shard in 0..v.shards {
        for ordinal in 0..v.replicas {
            total += 1;
            let name = build::restore_job_name(&v.name, shard, ordinal);
            let Some(job) = jobs
                .iter()
                .find(|j| j.metadata.name.as_deref() == Some(&name))
            else {
                continue;
            };
            match jobs::state(job, pods, CONTAINER) {
                JobState::Succeeded { .. } => done += 1,
                JobState::Failed { message, .. } => {
                    return failed(
                        status,
                        "RestoreFailed",
                        format!(
                            "restoring shard {shard} into {} failed: {} (nothing was started; the cluster will not become Ready. Fix the backup or choose another, and recreate the cluster — or delete the Job {name} to retry)",
                            build::data_claim_name(&v.name, shard, ordinal),
                            jobs::error_text(&message)
                        ),
                    )
                }
                JobState::Running {
                    failed_attempt: Some(m),
                } => {
                    retrying.get_or_insert_with(|| format!("{name}: {}", jobs::error_text(&m)));
                }
                JobState::Running { .. } => {
                    if stuck.is_none() {
                        stuck = jobs::stuck(job, pods);
                    }
                }
            }
        }
    }
    let what = format!("backup {backup_id} to {target_time}",);
    if done == total {
        let message = format!("restored {what} into {total} node volume(s)");
        return Outcome {
            status: RestoreStatus {
                phase: Phase::Restored.as_str().into(),
                message: Some(message.clone()),
                ..status
            },
            cond: Cond::new(RESTORED, true, "Restored", message),
            failed: false,
            next: Next::Proceed,
        };
    }
    let mut message = format!("restoring {what}: {done}/{total} node volume(s) done");
    if let Some(r) = retrying {
        message.push_str(&format!("; an attempt failed and is retried ({r})"));
    }
    if let Some(w) = stuck {
        message.push_str(&format!("; waiting: {w}"));
    }
    Outcome {
        status: RestoreStatus {
            message: Some(message.clone()),
            ..status
        },
        cond: Cond::new(RESTORED, false, "Restoring", message),
        failed: false,
        next: Next::Restore {
            backup_id,
            target_time,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseCluster, DatabaseClusterSpec};
    use crate::operator::jobs::tests::{job, pod};
    use crate::operator::validate::{validate, Existing};

    fn cluster(shards: u32, replicas: u32) -> ValidatedCluster {
        let spec: DatabaseClusterSpec = serde_json::from_str(&format!(
            r#"{{"shards":{shards},"replicas":{replicas},"bootstrap":{{"fromBackup":{{"cluster":"old","source":{{"volume":{{"claimName":"old-backup"}}}}}}}}}}"#
        ))
        .expect("spec");
        let mut d = DatabaseCluster::new("new", spec);
        d.metadata.namespace = Some("prod".into());
        d.metadata.uid = Some("u-1".into());
        validate(&d, "tessera:test", &Existing::default()).expect("valid")
    }

    const PLAN: &str = r#"{"cluster":"old","backupId":"20260102T030405123Z","targetTime":"2026-01-02T03:04:06.900Z","targetMs":1767323046900,"shards":2,"slots":["0-8191","8192-16383"]}"#;

    #[test]
    fn plan_then_restore_then_proceed() {
        let c = cluster(2, 2);
        // Nothing yet: plan.
        let o = decide(&c, false, None, &[], &[]).expect("a restore");
        assert_eq!(o.next, Next::Plan);
        assert_eq!(o.status.phase, Phase::Planning);
        assert!(!o.cond.status && !o.failed);
        // The plan Job succeeded: pinned, restoring.
        let plan_job = job("new-restore-plan", Some(("Complete", 10)));
        let pods = vec![pod("new-restore-plan", "restore", 5, 0, PLAN)];
        let o = decide(&c, false, None, std::slice::from_ref(&plan_job), &pods).expect("a restore");
        assert_eq!(
            o.next,
            Next::Restore {
                backup_id: "20260102T030405123Z".into(),
                target_time: "2026-01-02T03:04:06.900Z".into()
            }
        );
        assert_eq!(o.status.shard_slots, ["0-8191", "8192-16383"]);
        assert!(o.cond.message.contains("0/4"), "{}", o.cond.message);
        // Three of four restored, one retrying.
        let recorded = o.status.clone();
        let mut jobs = vec![];
        let mut pods = vec![];
        for (s, r) in [(0, 0), (0, 1), (1, 0)] {
            let n = format!("new-restore-{s}-{r}");
            jobs.push(job(&n, Some(("Complete", 20))));
            pods.push(pod(&n, "restore", 15, 0, "{}"));
        }
        jobs.push(job("new-restore-1-1", None));
        pods.push(pod(
            "new-restore-1-1",
            "restore",
            16,
            1,
            r#"{"error":"timeout reading s3"}"#,
        ));
        let o = decide(&c, false, Some(&recorded), &jobs, &pods).expect("a restore");
        assert!(matches!(o.next, Next::Restore { .. }));
        assert!(
            o.cond.message.contains("3/4") && o.cond.message.contains("timeout reading s3"),
            "{}",
            o.cond.message
        );
        // All four: restored, proceed.
        jobs[3] = job("new-restore-1-1", Some(("Complete", 30)));
        let o = decide(&c, false, Some(&recorded), &jobs, &pods).expect("a restore");
        assert_eq!(o.next, Next::Proceed);
        assert!(o.cond.status);
        assert_eq!(o.status.phase, Phase::Restored);
        // Recorded as restored (or bootstrapped): nothing more to do.
        assert!(decide(&c, false, Some(&o.status), &jobs, &pods).is_none());
        assert!(decide(&c, true, None, &[], &[]).is_none());
    }

    #[test]
    fn a_failed_restore_job_is_a_condition_with_its_message() {
        let c = cluster(2, 1);
        let recorded = RestoreStatus {
            phase: Phase::Restoring.as_str().into(),
            backup_id: Some("20260102T030405123Z".into()),
            target_time: Some("2026-01-02T03:04:06.900Z".into()),
            shard_slots: vec!["0-8191".into(), "8192-16383".into()],
            message: None,
        };
        let jobs = vec![
            job("new-restore-0-0", Some(("Complete", 20))),
            job("new-restore-1-0", Some(("Failed", 21))),
        ];
        let pods = vec![pod(
            "new-restore-1-0",
            "restore",
            18,
            3,
            r#"{"error":"checksum mismatch in old/backups/x/old-shard-1/snapshot-1.tsnap: expected SHA-256 ab, got cd (10 bytes)","permanent":true}"#,
        )];
        let o = decide(&c, false, Some(&recorded), &jobs, &pods).expect("a restore");
        assert!(o.failed);
        assert_eq!(o.cond.reason, "RestoreFailed");
        assert!(
            o.cond.message.contains("checksum mismatch"),
            "{}",
            o.cond.message
        );
        assert_eq!(o.status.phase, Phase::Failed);
        // The pinned plan stays recorded.
        assert_eq!(o.status.backup_id.as_deref(), Some("20260102T030405123Z"));
    }

    #[test]
    fn a_backup_restores_into_its_own_shards_whatever_the_spec_says() {
        let plan_job = job("new-restore-plan", Some(("Complete", 10)));
        let pods = vec![pod("new-restore-plan", "restore", 5, 0, PLAN)];
        // The backup has 2 shards, the spec asks for 3: the restore goes
        // on with 2 (resharding to 3 comes after the bootstrap).
        let o = decide(
            &cluster(3, 1),
            false,
            None,
            std::slice::from_ref(&plan_job),
            &pods,
        )
        .expect("a restore");
        assert!(!o.failed, "{}", o.cond.message);
        assert_eq!(bootstrap_shards(&o.status), Some(2));
        // A resharded cluster's uneven layout is fine; a damaged one is not.
        assert!(check_shards(&["0-100".into(), "101-16383".into()]).is_ok());
        assert!(
            check_shards(&["0-4095,8192-12287".into(), "4096-8191,12288-16383".into()]).is_ok()
        );
        let err = check_shards(&["0-100".into(), "200-16383".into()]).expect_err("a gap");
        assert_eq!(err.0, "SlotRangesMismatch");
        let err = check_shards(&["0-9000".into(), "8192-16383".into()]).expect_err("overlap");
        assert_eq!(err.0, "SlotRangesMismatch");
        assert!(check_shards(&[String::new(), String::new()]).is_ok());
    }

    #[test]
    fn a_failed_plan_says_why() {
        let c = cluster(2, 1);
        let jobs = vec![job("new-restore-plan", Some(("Failed", 10)))];
        let pods = vec![pod(
            "new-restore-plan",
            "restore",
            5,
            3,
            r#"{"error":"no backup found: no complete backup of cluster old in file:///backup","permanent":true}"#,
        )];
        let o = decide(&c, false, None, &jobs, &pods).expect("a restore");
        assert!(o.failed);
        assert!(
            o.cond.message.contains("no complete backup of cluster old"),
            "{}",
            o.cond.message
        );
    }

    /// A restarted operator has only `status.restore` and the Jobs: in
    /// every phase it resumes the restore where it stood (never plans
    /// again once a backup is pinned, never restores twice once restored).
    #[test]
    fn an_operator_restarted_in_every_phase_resumes_correctly() {
        let c = cluster(2, 1);
        let reread = |st: RestoreStatus| -> RestoreStatus {
            let json = serde_json::to_string(&st).expect("serializes");
            serde_json::from_str(&json).expect("parses")
        };
        let pinned = |phase: Phase| RestoreStatus {
            phase: phase.as_str().into(),
            backup_id: Some("20260102T030405123Z".into()),
            target_time: Some("2026-01-02T03:04:06.900Z".into()),
            shard_slots: vec!["0-8191".into(), "8192-16383".into()],
            message: None,
        };
        let restore_next = Next::Restore {
            backup_id: "20260102T030405123Z".into(),
            target_time: "2026-01-02T03:04:06.900Z".into(),
        };
        // Planning: the plan Job (created or not yet) is waited for.
        let planning = reread(RestoreStatus {
            phase: Phase::Planning.as_str().into(),
            message: Some("choosing".into()),
            ..Default::default()
        });
        for jobs in [vec![], vec![job("new-restore-plan", None)]] {
            let o = decide(&c, false, Some(&planning), &jobs, &[]).expect("a restore");
            assert_eq!((o.next, o.status.phase.as_str()), (Next::Plan, "Planning"));
        }
        // Restoring: the pinned plan is kept, even with the plan Job gone
        // and no restore Job created yet.
        let o = decide(&c, false, Some(&reread(pinned(Phase::Restoring))), &[], &[])
            .expect("a restore");
        assert_eq!(o.next, restore_next);
        assert_eq!(o.status.backup_id.as_deref(), Some("20260102T030405123Z"));
        // Restored: nothing more (the StatefulSets are created as usual).
        assert!(decide(&c, false, Some(&reread(pinned(Phase::Restored))), &[], &[]).is_none());
        // Failed (a restore Job failed): still failed, nothing created.
        let jobs = vec![
            job("new-restore-0-0", Some(("Complete", 20))),
            job("new-restore-1-0", Some(("Failed", 21))),
        ];
        let pods = vec![pod(
            "new-restore-1-0",
            "restore",
            18,
            3,
            r#"{"error":"x","permanent":true}"#,
        )];
        let o = decide(
            &c,
            false,
            Some(&reread(pinned(Phase::Failed))),
            &jobs,
            &pods,
        )
        .expect("a restore");
        assert!(o.failed);
        assert_eq!((o.next, o.status.phase.as_str()), (Next::Stop, "Failed"));
        // Failed planning (nothing pinned): still failed while the Job is.
        let failed_plan = reread(RestoreStatus {
            phase: Phase::Failed.as_str().into(),
            ..Default::default()
        });
        let jobs = vec![job("new-restore-plan", Some(("Failed", 10)))];
        let pods = vec![pod(
            "new-restore-plan",
            "restore",
            5,
            3,
            r#"{"error":"no backup","permanent":true}"#,
        )];
        let o = decide(&c, false, Some(&failed_plan), &jobs, &pods).expect("a restore");
        assert_eq!(o.next, Next::Stop);
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }
}
