//! What the user asks for: `DatabaseCluster.spec`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::DatabaseClusterStatus;

/// A sharded, replicated, Redis-protocol key-value cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "DatabaseCluster",
    plural = "databaseclusters",
    singular = "databasecluster",
    shortname = "dbc",
    category = "tessera",
    namespaced,
    status = "DatabaseClusterStatus",
    scale = r#"{"specReplicasPath":".spec.shards","statusReplicasPath":".status.shardCount","labelSelectorPath":".status.selector"}"#,
    derive = "PartialEq",
    doc = "A sharded, replicated, Redis-protocol key-value cluster run by the Tessera operator.",
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Consistency",
        type_ = "string",
        json_path = ".spec.consistency.level"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Resharding",
        type_ = "string",
        json_path = ".status.resharding.progress"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.consistency.level == 'eventual' || self.replicas >= 2")
        .message("consistency.level quorum and strong need replicas >= 2 (a primary plus at least one replica); set replicas to 2 or more, or use consistency.level: eventual")
        .field_path(".replicas"),
    validation = Rule::new("has(self.shardingKey) == has(oldSelf.shardingKey)")
        .message("shardingKey is immutable: keys already written are placed by it; create a new cluster to change it")
        .field_path(".shardingKey"),
    validation = Rule::new("has(self.zones) == has(oldSelf.zones)")
        .message("zones are immutable: pods and volumes are already placed in them; create a new cluster to change them")
        .field_path(".zones"),
    validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)")
        .message("bootstrap is immutable: it says how the cluster's data started; to restore again, create a new cluster with bootstrap.fromBackup")
        .field_path(".bootstrap"),
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseClusterSpec {
    /// Number of shards; the 16384 hash slots are split evenly between them.
    /// Changing it reshards online: new shards come up, then slots move to
    /// them (or off the shards being removed) while clients keep working
    /// (see docs/resharding.md).
    #[serde(default = "default_shards")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 16384").message("shards must be between 1 and 16384 (one hash slot per shard at most)"))]
    pub shards: i32,

    /// Copies of each shard, the primary included: the replication factor.
    /// Scaling it up or down keeps every shard's primary in place.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1 (the primary); use 2 or more for redundancy"))]
    pub replicas: i32,

    /// When a write is acknowledged, and where reads may go.
    #[serde(default)]
    pub consistency: ConsistencySpec,

    /// The application field whose value goes in the `{hash tag}` of every
    /// key (e.g. `user_id` → `user:{12345}:profile`), so all of one entity's
    /// keys share a hash slot and a shard. Documentation for clients and
    /// tools; the nodes hash whatever is inside the braces. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("shardingKey is immutable: keys already written are placed by it; create a new cluster to change it"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_.-]*$')").message("shardingKey must be a field name: letters, digits, '_', '.', '-', starting with a letter or '_'"))]
    #[schemars(length(max = 63))]
    pub sharding_key: Option<String>,

    /// Persistent volume per node.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory for each node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// What a node does when its data reaches its memory limit (its
    /// `maxmemory`, three quarters of `resources.limits.memory`).
    #[serde(default)]
    pub memory: MemorySpec,

    /// Availability zones (values of `topology.kubernetes.io/zone`) to spread
    /// each shard's pods over, evenly. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("zones are immutable: pods and volumes are already placed in them; create a new cluster to change them"))]
    #[x_kube(validation = Rule::new("self.all(z, self.exists_one(y, y == z))").message("zones must not repeat a zone"))]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63)))]
    pub zones: Option<Vec<String>>,

    /// Scheduled backups (a CronJob running `tessera backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Where the cluster's data comes from when it is created (default:
    /// empty). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bootstrap is immutable: it says how the cluster's data started; to restore again, create a new cluster with bootstrap.fromBackup"))]
    pub bootstrap: Option<BootstrapSpec>,

    /// When and how a shard's primary is replaced.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Container image for the nodes (default: the operator's own
    /// `TESSERA_DEFAULT_IMAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Client credentials: the `default` user's password (a Secret in this
    /// namespace; without one the operator generates `<cluster>-auth`) and
    /// application users with read-only or read-write access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// TLS for clients (a TLS port beside the plaintext one) and for the
    /// replication and migration links (on by default).
    #[serde(default)]
    pub tls: TlsSpec,

    /// The NetworkPolicy the operator keeps for the cluster (on by default).
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// How slots move when `shards` changes.
    #[serde(default)]
    pub resharding: ReshardingSpec,

    /// Let the operator change `shards` from measured load
    /// (docs/autoscaling.md). Absent: the shard count changes only by hand
    /// (or through the `/scale` subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Stop changing the cluster's children (status is still reported).
    #[serde(default)]
    pub paused: bool,
}

/// How resharding moves slots.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReshardingSpec {
    /// Throughput limit of each slot move, in bytes per second of data sent
    /// from the source shard's primary (a change applies to the moves in
    /// progress within a second). 0 means unlimited.
    #[serde(default = "default_reshard_bytes_per_second")]
    #[x_kube(validation = Rule::new("self >= 0").message("resharding.maxBytesPerSecond must be 0 (unlimited) or more"))]
    pub max_bytes_per_second: i64,
    /// Most slots one move carries; a shard's share is moved in moves of
    /// at most this many slots (a failed move is retried from its start).
    #[serde(default = "default_slots_per_move")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 16384").message("resharding.slotsPerMove must be between 1 and 16384"))]
    pub slots_per_move: i32,
    /// Stop starting moves (the ones in progress finish); resharding
    /// continues when this is false again.
    #[serde(default)]
    pub paused: bool,
}

/// When the operator adds or removes shards by itself. Targets apply to the
/// hottest primary; a scale-in also needs the data to fit the remaining
/// shards with 1.5× headroom.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minShards <= self.maxShards").message("autoscaling.minShards must not exceed autoscaling.maxShards"),
    validation = Rule::new("self.scaleInMemoryPercent < self.memoryTargetPercent").message("autoscaling.scaleInMemoryPercent must be below memoryTargetPercent (the gap keeps the shard count from flapping)"),
    validation = Rule::new("self.scaleInOpsPercent < 100").message("autoscaling.scaleInOpsPercent must be below 100 (a share of opsTargetPerSecond)"),
)]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_shards")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 16384").message("autoscaling.minShards must be between 1 and 16384"))]
    pub min_shards: i32,
    #[serde(default = "default_max_shards")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 16384").message("autoscaling.maxShards must be between 1 and 16384"))]
    pub max_shards: i32,
    /// Add shards when the hottest primary's used memory exceeds this share
    /// of its `maxmemory` (which the node derives from the pod's memory
    /// limit: without one, memory is not a signal).
    #[serde(default = "default_memory_target")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("autoscaling.memoryTargetPercent must be between 1 and 100"))]
    pub memory_target_percent: i32,
    /// Remove a shard only while the hottest primary stays under this share.
    #[serde(default = "default_scale_in_memory")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("autoscaling.scaleInMemoryPercent must be between 0 and 100"))]
    pub scale_in_memory_percent: i32,
    /// Add shards when the hottest primary serves more commands per second
    /// than this; 0 (the default) leaves operations out.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("autoscaling.opsTargetPerSecond must be 0 (off) or more"))]
    pub ops_target_per_second: i64,
    /// Remove a shard only while the hottest primary serves under this
    /// share of `opsTargetPerSecond`.
    #[serde(default = "default_scale_in_ops")]
    #[x_kube(validation = Rule::new("self >= 0").message("autoscaling.scaleInOpsPercent must be 0 or more"))]
    pub scale_in_ops_percent: i32,
    /// How long a target must stay exceeded before shards are added.
    #[serde(default = "default_scale_out_window")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("autoscaling.scaleOutStabilizationSeconds must be between 0 and 86400"))]
    pub scale_out_stabilization_seconds: i32,
    /// How long the load must stay under the scale-in thresholds before a
    /// shard is removed.
    #[serde(default = "default_scale_in_window")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("autoscaling.scaleInStabilizationSeconds must be between 0 and 86400"))]
    pub scale_in_stabilization_seconds: i32,
    /// Quiet time after a resize finishes before the next one.
    #[serde(default = "default_cooldown")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("autoscaling.cooldownSeconds must be between 0 and 86400"))]
    pub cooldown_seconds: i32,
    /// `false`: never remove shards.
    #[serde(default = "default_true")]
    pub scale_in: bool,
}

fn default_min_shards() -> i32 {
    1
}
fn default_max_shards() -> i32 {
    16
}
fn default_memory_target() -> i32 {
    70
}
fn default_scale_in_memory() -> i32 {
    30
}
fn default_scale_in_ops() -> i32 {
    40
}
fn default_scale_out_window() -> i32 {
    60
}
fn default_scale_in_window() -> i32 {
    1800
}
fn default_cooldown() -> i32 {
    300
}
fn default_true() -> bool {
    true
}

/// 64 MiB/s per move: on small machines this keeps the client p99 within
/// about 2× while moving a GB in under 20 s (docs/resharding.md).
fn default_reshard_bytes_per_second() -> i64 {
    64 * 1024 * 1024
}

fn default_slots_per_move() -> i32 {
    2048
}

impl Default for ReshardingSpec {
    fn default() -> Self {
        Self {
            max_bytes_per_second: default_reshard_bytes_per_second(),
            slots_per_move: default_slots_per_move(),
            paused: false,
        }
    }
}

fn default_shards() -> i32 {
    3
}
fn default_replicas() -> i32 {
    3
}

/// What a node does when a write finds its used memory above `maxmemory`
/// (Redis' `maxmemory-policy`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum MemoryPolicy {
    /// Refuse the write with `-OOM`; never delete data (a database).
    #[default]
    #[serde(rename = "noeviction")]
    NoEviction,
    /// Evict the least recently used keys (a cache).
    #[serde(rename = "allkeys-lru")]
    AllKeysLru,
    /// Evict the least frequently used keys.
    #[serde(rename = "allkeys-lfu")]
    AllKeysLfu,
    /// Evict random keys.
    #[serde(rename = "allkeys-random")]
    AllKeysRandom,
    /// Evict the least recently used keys among those with a TTL.
    #[serde(rename = "volatile-lru")]
    VolatileLru,
    /// Evict the least frequently used keys among those with a TTL.
    #[serde(rename = "volatile-lfu")]
    VolatileLfu,
    /// Evict random keys among those with a TTL.
    #[serde(rename = "volatile-random")]
    VolatileRandom,
    /// Evict the keys whose TTL ends soonest.
    #[serde(rename = "volatile-ttl")]
    VolatileTtl,
}

impl MemoryPolicy {
    /// The name the node's `--maxmemory-policy` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoEviction => "noeviction",
            Self::AllKeysLru => "allkeys-lru",
            Self::AllKeysLfu => "allkeys-lfu",
            Self::AllKeysRandom => "allkeys-random",
            Self::VolatileLru => "volatile-lru",
            Self::VolatileLfu => "volatile-lfu",
            Self::VolatileRandom => "volatile-random",
            Self::VolatileTtl => "volatile-ttl",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySpec {
    /// `noeviction` (default: writes above the limit get `-OOM`), or which
    /// keys to evict: `allkeys-lru`, `allkeys-lfu`, `allkeys-random`,
    /// `volatile-lru`, `volatile-lfu`, `volatile-random`, `volatile-ttl`.
    /// Evictions replicate as deletes. A change reaches the nodes with the
    /// next rolling update of the pods.
    #[serde(default)]
    pub policy: MemoryPolicy,
}

/// Acknowledgement rule for writes (see docs/api.md).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyLevel {
    /// Acknowledged once in the primary's log; replicas follow asynchronously.
    #[default]
    Eventual,
    /// Also durable on a quorum of replicas; the rest follow asynchronously.
    Quorum,
    /// Durable on every replica; reads from the primary only.
    Strong,
}

impl ConsistencyLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eventual => "eventual",
            Self::Quorum => "quorum",
            Self::Strong => "strong",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencySpec {
    /// `eventual` (async), `quorum` (semi-sync) or `strong` (sync).
    #[serde(default)]
    pub level: ConsistencyLevel,

    /// For `quorum`: percentage of a shard's replicas that must have a write
    /// durably before it is acknowledged (rounded up). Default: a majority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("consistency.quorumPercentage must be between 1 and 100"))]
    pub quorum_percentage: Option<i32>,

    /// Most a replica may lag (a duration such as `500ms`, `5s`, `1m`) and
    /// still serve `READONLY` reads; a staler replica redirects to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+(ms|s|m)$')").message("consistency.maxStaleness must be a duration like 500ms, 5s or 1m"))]
    #[schemars(length(max = 32))]
    pub max_staleness: Option<String>,
}

/// What happens to the volumes when the cluster is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum VolumeDeletePolicy {
    /// Volumes are deleted with the cluster.
    #[default]
    Delete,
    /// Volumes are kept; a new cluster of the same name reuses them.
    Retain,
}

impl VolumeDeletePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "Delete",
            Self::Retain => "Retain",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size per node (a quantity such as `1Gi`). May grow, never shrink.
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storage.size must be a quantity such as 512Mi or 10Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message(Message::Expression("'storage.size may only grow (volumes cannot shrink): it is ' + oldSelf + ', so set it to ' + oldSelf + ' or more'".into())))]
    #[schemars(length(max = 32))]
    pub size: String,

    /// StorageClass of the volumes (default: the cluster's default class).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.storageClassName is immutable: existing volumes keep their class"))]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,

    /// `Delete` (default) removes the volumes with the cluster; `Retain` keeps
    /// them. Volumes of replicas removed by scaling down are always kept so
    /// scaling back up reuses them.
    #[serde(default)]
    pub delete_policy: VolumeDeletePolicy,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_policy: VolumeDeletePolicy::Delete,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule (5 fields: minute hour day-of-month month day-of-week)
    /// or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    #[serde(default = "default_backup_schedule")]
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$')").message("backup.schedule must be a cron expression with 5 fields (minute hour day-of-month month day-of-week), e.g. '0 */6 * * *', or one of @hourly, @daily, @weekly, @monthly, @yearly"))]
    #[schemars(length(max = 128))]
    pub schedule: String,

    /// How long backups are kept: a number and a unit, `h` (hours), `d`
    /// (days) or `w` (weeks), e.g. `30d`. Default: `7d` when `keep` is not
    /// set either (with only `keep`, backups are kept by count alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]*(h|d|w)$')").message("backup.retention must be a number and a unit h, d or w, e.g. 30d"))]
    #[schemars(length(max = 16))]
    pub retention: Option<String>,

    /// How many backups are kept (the newest). With `retention` too, a
    /// backup is pruned when either rule says so; the newest complete
    /// backup is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("backup.keep must be between 1 and 10000 (the newest backup is always kept)"))]
    pub keep: Option<i32>,

    /// Where backups go (default: a PersistentVolumeClaim in this namespace).
    #[serde(default)]
    pub target: BackupTarget,

    /// Stop scheduling backups without deleting the CronJob.
    #[serde(default)]
    pub suspend: bool,
}

fn default_backup_schedule() -> String {
    "0 * * * *".into()
}
/// Age retention when neither `retention` nor `keep` is set.
pub const DEFAULT_BACKUP_RETENTION: &str = "7d";

impl BackupSpec {
    /// The `--max-age` the backup job prunes with: `retention`, or the
    /// default when no rule is set at all.
    pub fn max_age(&self) -> Option<&str> {
        match (&self.retention, self.keep) {
            (Some(r), _) => Some(r),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_BACKUP_RETENTION),
        }
    }
}

/// Exactly one of `volume` and `s3`; neither means a default volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("!(has(self.volume) && has(self.s3))").message("backup.target takes one of volume and s3, not both"))]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<BackupVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// Size of the backup volume.
    #[serde(default = "default_backup_volume_size")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("backup.target.volume.size must be a quantity such as 10Gi"))]
    #[schemars(length(max = 32))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_backup_volume_size() -> String {
    "10Gi".into()
}

/// An S3-compatible bucket. A `region` other than the cluster's is how
/// backups are kept cross-region.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores other than AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub endpoint: Option<String>,
    /// Key prefix inside the bucket (default: `<namespace>/<cluster>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// How a new cluster's data starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore every shard from a backup (taken by `spec.backup` of this or
    /// another cluster) before the nodes start; optionally to a point in
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to restore: where the backups are, whose they are, which one,
/// and to what time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// The cluster the backups were taken from (backups are kept under its
    /// name; with the same name, the cluster is restoring its own backups).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("bootstrap.fromBackup.cluster must be the source DatabaseCluster's name (lowercase letters, digits and '-')"))]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,

    /// Where the backups are: the same kind of place as `spec.backup.target`.
    pub source: BackupSource,

    /// A backup ID as `tessera backup list` prints it, or `latest` (the
    /// newest backup plus the log archived since).
    #[serde(default = "default_backup_id")]
    #[x_kube(validation = Rule::new("self == 'latest' || self.matches('^[0-9]{8}T[0-9]{9}Z$')").message("bootstrap.fromBackup.backupId must be latest or a backup ID as `tessera backup list` prints it, e.g. 20260102T030405123Z"))]
    #[schemars(length(max = 32))]
    pub backup_id: String,

    /// Restore to this time (RFC 3339, e.g. `2026-01-02T03:04:05Z`): every
    /// write before it, none after. Default: the backup's own cut (with
    /// `latest`: the last archived point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$')").message("bootstrap.fromBackup.targetTime must be an RFC 3339 time with a zone, e.g. 2026-01-02T03:04:05Z or 2026-01-02T05:04:05.250+02:00"))]
    #[schemars(length(max = 40))]
    pub target_time: Option<String>,
}

fn default_backup_id() -> String {
    "latest".into()
}

/// Exactly one of `volume` (an existing backup PVC) and `s3`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.volume) != has(self.s3)").message("bootstrap.fromBackup.source takes exactly one of volume ({claimName: <source>-backup}, an existing backup PersistentVolumeClaim in this namespace) and s3 (bucket, endpoint, region, prefix, credentialsSecret)"))]
#[serde(rename_all = "camelCase")]
pub struct BackupSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<BackupSourceVolume>,
    /// As in `spec.backup.target.s3`; the default prefix is
    /// `<namespace>/<fromBackup.cluster>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSourceVolume {
    /// An existing PersistentVolumeClaim in this namespace holding backups
    /// (`<cluster>-backup` for a cluster whose `spec.backup` used a volume).
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Seconds a primary must be unhealthy (unreachable, not ready, or
    /// without its lease while all its replicas are up) before it is
    /// replaced.
    #[serde(default = "default_detection_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("failover.detectionSeconds must be between 1 and 3600"))]
    pub detection_seconds: i32,
    /// Promote even when too few replicas are reachable to be sure no
    /// acknowledged write is lost (availability over durability).
    #[serde(default)]
    pub allow_data_loss: bool,
}

/// Two seconds: with the default 2 s lease, detection + fence + 1.1 × lease
/// + promotion keeps time-to-writable within 5 s (docs/failover.md).
fn default_detection_seconds() -> i32 {
    2
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            detection_seconds: default_detection_seconds(),
            allow_data_loss: false,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret in the cluster's namespace holding the `default` user's
    /// password (default: `<cluster>-auth`, generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Key in the Secret holding the password.
    #[serde(default = "default_auth_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// Application users (Redis ACL users; `AUTH <name> <password>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v.name == u.name))").message("auth.users names must be unique"))]
    #[schemars(length(max = 32))]
    pub users: Vec<AclUserSpec>,
}

fn default_auth_key() -> String {
    "password".into()
}

/// What an application user may do.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum UserAccess {
    /// Read commands only (`+@read`): writes answer `-NOPERM`.
    #[default]
    ReadOnly,
    /// Reads and writes (`+@read +@write`); no administrative command.
    ReadWrite,
}

impl UserAccess {
    /// The user's rules in Redis ACL syntax.
    pub fn rules(self) -> &'static str {
        match self {
            Self::ReadOnly => "+@read",
            Self::ReadWrite => "+@read +@write",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclUserSpec {
    /// User name (not `default`).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$') && self != 'default'").message("auth.users[].name must be lowercase letters, digits, '-' or '_' (not 'default')"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// `ReadOnly` (default) or `ReadWrite`.
    #[serde(default)]
    pub access: UserAccess,
    /// Secret with the user's password under `password` (default:
    /// `<cluster>-user-<name>`, generated, with `username` and `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.secretName) || !has(self.nodeCertificateDays)")
        .message("tls.nodeCertificateDays applies to the certificates the operator issues; with tls.secretName your issuer (e.g. cert-manager) decides their lifetime")
        .field_path(".nodeCertificateDays"),
)]
pub struct TlsSpec {
    /// Serve TLS on port 6380 and encrypt replication and migration links.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A Secret in cert-manager's layout (`tls.crt`, `tls.key`, `ca.crt`)
    /// used as is (default: `<cluster>-tls`, a CA and node certificate the
    /// operator issues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Lifetime of the node certificate the operator issues (default 90
    /// days). It is renewed when a third of its lifetime is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 3 && self <= 3650").message("tls.nodeCertificateDays must be between 3 and 3650"))]
    pub node_certificate_days: Option<i32>,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            secret_name: None,
            node_certificate_days: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Admit only the operator, the cluster's own pods and its Jobs to the
    /// admin port; clients to the client port from anywhere.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Namespaces whose pods may also reach the admin port, for metrics
    /// scrapers such as Prometheus (the `/v1` calls still need the
    /// cluster's token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub metrics_namespaces: Vec<String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics_namespaces: vec![],
        }
    }
}
