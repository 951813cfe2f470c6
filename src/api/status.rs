//! What the operator records: `DatabaseCluster.status`, the topology
//! authority and the home of every operation's state (a restarted operator
//! resumes from it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written by the operator only (the topology authority).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseClusterStatus {
    /// `Creating`, `Bootstrapping`, `Ready`, `Scaling`, `Degraded` or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Machine-readable reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready nodes out of desired nodes, e.g. `9/9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `FailoverBlocked`,
    /// `LastBackupSucceeded` (with `spec.backup`), `Restored` (with
    /// `bootstrap.fromBackup`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Version of the topology pushed to the nodes (0: not bootstrapped).
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// Results of the backup jobs (with `spec.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The restore this cluster started from (with `bootstrap.fromBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// Shards in the recorded topology (the `/scale` subresource's
    /// replica count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_count: Option<i32>,
    /// Label selector of the cluster's node pods (for the `/scale`
    /// subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// What the autoscaler measured and decided (with `spec.autoscaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// The resharding in progress, or the last one (after `spec.shards`
    /// changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resharding: Option<ReshardingStatus>,
}

/// The autoscaler's state (kept in the status so a restarted operator
/// keeps its stabilization windows).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The figures it last read, e.g. `memory 82% (shard 1), 1200 ops/s (shard 0)`.
    #[serde(default)]
    pub signal: String,
    /// Since when (RFC 3339) a target has been exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_since: Option<String>,
    /// Since when the load has been under the scale-in thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_since: Option<String>,
    /// The last resize it made: when, and which figure crossed which
    /// threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale: Option<String>,
    /// Why it holds now (cooldown, bounds, a resharding in flight…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<String>,
}

/// Progress of a resharding (see docs/resharding.md). The operator resumes
/// from it after a restart; slot ownership itself is in `shards[].slots`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReshardingStatus {
    /// `WaitingForShards` (new shards are starting), `Moving`, `Paused`,
    /// `RemovingShards` (drained shards are being deleted), `Completed`,
    /// `Refused` (a scale-in without memory headroom; nothing moved) or
    /// `Cancelled` (the spec went back after a refusal).
    pub phase: String,
    /// Shard count when it started, and the one asked for.
    pub from: u32,
    pub to: u32,
    /// Slots moved so far, and slots this resharding moves in all.
    pub slots_moved: u32,
    pub slots_total: u32,
    /// Bytes the finished moves sent.
    #[serde(default)]
    pub bytes_moved: u64,
    /// Estimated seconds left, from the throughput so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// `3→4 1365/4096` for `kubectl get dbc`.
    pub progress: String,
    /// RFC 3339 times.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Moves in progress (at most one per source and per target shard).
    #[serde(default)]
    pub moves: Vec<SlotMove>,
    /// Moves that failed (and were retried from their start).
    #[serde(default)]
    pub retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last move failed (the next starts after a backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<String>,
    /// Sequence number of the next move (move ids are `<seq>-<n>`).
    #[serde(default)]
    pub next_move: u32,
    /// Sequence number of this resharding (the first is 1).
    #[serde(default)]
    pub seq: u32,
}

/// One slot migration the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotMove {
    /// The migration id on the nodes.
    pub id: String,
    /// Shard indexes.
    pub source: u32,
    pub target: u32,
    /// Slot ranges, e.g. `4096-5460`.
    pub slots: Vec<String>,
    /// `Starting`, `Copying` (the source copies and streams), `Flipped` (the
    /// topology gave the slots to the target; the source finishes and frees).
    pub phase: String,
    /// Node ids of the source and target primaries the move was started
    /// with (a failover of either aborts a move not yet flipped).
    pub source_node: String,
    pub target_node: String,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub keys_sent: u64,
    pub started_at: String,
}

/// What the backup jobs reported (their JSON summary, read from each
/// finished Job pod's termination message).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The most recent finished backup job, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<BackupRef>,
    /// The earliest time a restore can target (RFC 3339): the oldest kept
    /// backup's snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<String>,
    /// The latest time a restore can target when the last backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recoverability_point: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// The Job that ran it.
    pub job: String,
    /// Backup ID (absent when the job failed before taking one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub succeeded: bool,
    /// RFC 3339 time the Job finished (`lastSuccessfulBackup.time` is the
    /// backup's own finish time).
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed, or what retention pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    pub id: String,
    /// RFC 3339 time it finished.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Progress of `bootstrap.fromBackup`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `Planning`, `Restoring`, `Restored` or `Failed`.
    pub phase: String,
    /// The backup chosen by the plan (pinned: every node restores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The point in time every shard is restored to (RFC 3339, ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<String>,
    /// Slot ranges of the backup's shards, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_slots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Shard name, `<cluster>-<index>` (also its StatefulSet's name).
    pub name: String,
    /// Inclusive hash slot ranges, e.g. `0-5460`.
    pub slots: Vec<String>,
    /// Fencing token of the shard; grows whenever its primary changes.
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<NodeStatus>,
    #[serde(default)]
    pub replicas: Vec<NodeStatus>,
    /// A failover or switchover in progress (the state machine the operator
    /// resumes after a restart); absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverState>,
    /// The last completed failover or switchover of this shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
}

/// One step of the failover state machine (see docs/failover.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverState {
    /// `Fencing` (the new epoch is chosen, members are being fenced),
    /// `Promoting` (the target is chosen) or `Blocked` (the safety rule does
    /// not hold; the shard stays fenced until enough replicas return).
    pub phase: String,
    /// `Failover` (the primary failed) or `Switchover` (requested).
    pub kind: String,
    /// The shard's new fencing token.
    pub epoch: u64,
    /// Pod of the primary being replaced.
    pub from: String,
    /// Pod chosen for promotion (`Promoting`), or the requested target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// RFC 3339 time the failover started.
    pub started_at: String,
    /// Why the primary is being replaced, or why the failover is blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the time went so far (failovers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<FailoverTiming>,
}

/// Where a failover's time went, step by step (docs/failover.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverTiming {
    /// From `startedAt` (the primary's last sign of life, as its replicas or
    /// the operator's probes saw it) to the decision to fail over.
    pub detection_ms: u64,
    /// Fencing the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_ms: Option<u64>,
    /// Waiting out the old primary's lease after fencing (what the
    /// replicas' heartbeat ages left of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_wait_ms: Option<u64>,
    /// Choosing, promoting and recording the new primary, up to the
    /// topology push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_ms: Option<u64>,
}

/// A completed failover or switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailover {
    /// `Failover` or `Switchover`.
    pub kind: String,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    /// RFC 3339.
    pub started_at: String,
    /// From the start (detection for a failover) to the topology push.
    pub duration_ms: u64,
    /// True when the safety rule did not hold (eventual consistency, or
    /// `allowDataLoss`): writes the old primary acknowledged after the
    /// promoted replica's position may be gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_loss_possible: bool,
    /// Where the time went (failovers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<FailoverTiming>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name.
    pub pod: String,
    /// Node ID (40 hex characters).
    pub node_id: String,
    /// Pod IP the topology announces.
    pub ip: String,
    #[serde(default)]
    pub ready: bool,
    /// Last log sequence number the node reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
}
