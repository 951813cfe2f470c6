//! Pure builders: `ValidatedCluster` in, Kubernetes object out. No I/O, so
//! every child is unit-tested here and server-side apply sends exactly what
//! these return.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::ValidatedCluster;
use crate::api::{S3Target, VolumeDeletePolicy};

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_CLUSTER: &str = "tessera.dev/cluster";
pub const LABEL_SHARD: &str = "tessera.dev/shard";
/// `primary` or `replica`; moved by the operator, never in a pod template.
pub const LABEL_ROLE: &str = "tessera.dev/role";
/// `true` once a node is in the pushed topology; the client Service selects
/// on it so clients never land on a node that does not know the cluster yet.
pub const LABEL_MEMBER: &str = "tessera.dev/member";
/// On restore Jobs and their pods: `plan`, or `<shard>-<ordinal>`.
pub const LABEL_RESTORE: &str = "tessera.dev/restore";

pub const REDIS_PORT: i32 = 6379;
pub const ADMIN_PORT: i32 = 9121;
/// The image's user (see the Dockerfile).
pub const RUN_AS: i64 = 10001;
const CONFIG_DIR: &str = "/etc/tessera/config";
const AUTH_DIR: &str = "/etc/tessera/auth";

fn labels(c: &ValidatedCluster) -> BTreeMap<String, String> {
    [
        (LABEL_NAME, "tessera".to_string()),
        (LABEL_INSTANCE, c.name.clone()),
        (LABEL_MANAGED_BY, "tessera-operator".to_string()),
        (LABEL_CLUSTER, c.name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Selector for every node of the cluster.
pub fn cluster_selector(cluster: &str) -> BTreeMap<String, String> {
    [(LABEL_CLUSTER.to_string(), cluster.to_string())].into()
}

/// Selector for one shard's nodes.
pub fn shard_selector(cluster: &str, shard: u32) -> BTreeMap<String, String> {
    [
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_SHARD.to_string(), shard.to_string()),
    ]
    .into()
}

fn shard_labels(c: &ValidatedCluster, shard: u32) -> BTreeMap<String, String> {
    let mut l = labels(c);
    l.insert(LABEL_COMPONENT.into(), "node".into());
    l.insert(LABEL_SHARD.into(), shard.to_string());
    l
}

fn meta(c: &ValidatedCluster, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(c.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![c.owner_reference()]),
        ..Default::default()
    }
}

pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
pub fn client_service_name(cluster: &str) -> String {
    cluster.to_string()
}
pub fn primary_service_name(cluster: &str, shard: u32) -> String {
    format!("{cluster}-shard-{shard}-primary")
}
pub fn backup_name(cluster: &str) -> String {
    format!("{cluster}-backup")
}

fn port(name: &str, p: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: p,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Settings the nodes and tools read (consistency, failover, sharding key).
pub fn build_config_map(c: &ValidatedCluster) -> ConfigMap {
    let s = &c.spec;
    let doc = serde_json::json!({
        "cluster": c.name,
        "shards": c.shards,
        "replicas": c.replicas,
        "shardingKey": s.sharding_key,
        "consistency": {
            "level": s.consistency.level.as_str(),
            "quorumPercentage": s.consistency.quorum_percentage,
            "maxStaleness": s.consistency.max_staleness,
        },
        "failover": {
            "detectionSeconds": s.failover.detection_seconds,
            "allowDataLoss": s.failover.allow_data_loss,
        },
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    ConfigMap {
        metadata: meta(c, config_map_name(&c.name), labels(c)),
        data: Some([("cluster.json".to_string(), text)].into()),
        ..Default::default()
    }
}

pub fn build_headless_service(c: &ValidatedCluster, shard: u32) -> Service {
    Service {
        metadata: meta(c, c.shard_name(shard), shard_labels(c, shard)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must find each other before they pass readiness.
            publish_not_ready_addresses: Some(true),
            selector: Some(shard_selector(&c.name, shard)),
            ports: Some(vec![port("redis", REDIS_PORT), port("admin", ADMIN_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One address for the whole cluster; any member answers and redirects.
pub fn build_client_service(c: &ValidatedCluster) -> Service {
    let mut selector = cluster_selector(&c.name);
    selector.insert(LABEL_MEMBER.into(), "true".into());
    Service {
        metadata: meta(c, client_service_name(&c.name), labels(c)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![port("redis", REDIS_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Follows the shard's primary through the role label the operator moves.
pub fn build_primary_service(c: &ValidatedCluster, shard: u32) -> Service {
    let mut selector = shard_selector(&c.name, shard);
    selector.insert(LABEL_ROLE.into(), "primary".into());
    Service {
        metadata: meta(
            c,
            primary_service_name(&c.name, shard),
            shard_labels(c, shard),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![port("redis", REDIS_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_pdb(c: &ValidatedCluster, shard: u32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(c, c.shard_name(shard), shard_labels(c, shard)),
        spec: Some(PodDisruptionBudgetSpec {
            // One node of a shard at a time; a single-node shard can still be
            // drained (it has no redundancy to protect).
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(shard_selector(&c.name, shard)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn affinity(c: &ValidatedCluster, shard: u32) -> Affinity {
    let same_shard = LabelSelector {
        match_labels: Some(shard_selector(&c.name, shard)),
        ..Default::default()
    };
    let node_affinity = c.spec.zones.as_ref().map(|zones| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "topology.kubernetes.io/zone".into(),
                    operator: "In".into(),
                    values: Some(zones.clone()),
                }]),
                ..Default::default()
            }],
        }),
        ..Default::default()
    });
    Affinity {
        node_affinity,
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(same_shard),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn zone_spread(c: &ValidatedCluster, shard: u32) -> Option<Vec<TopologySpreadConstraint>> {
    c.spec.zones.as_ref().map(|_| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(shard_selector(&c.name, shard)),
                ..Default::default()
            }),
            ..Default::default()
        }]
    })
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// `500ms`, `5s`, `1m` → milliseconds (the schema allows only these forms).
pub fn duration_ms(s: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        return None;
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn node_container(c: &ValidatedCluster) -> Container {
    let mut args: Vec<String> = [
        "node",
        "--port",
        "6379",
        "--admin-port",
        "9121",
        "--bind",
        "0.0.0.0",
        "--data-dir",
        "/data",
        "--announce-host",
        "$(POD_IP)",
        "--log-json",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    // The acknowledgement rule (spec.consistency, docs/api.md): the node
    // enforces it; the operator only passes it on.
    let cons = &c.spec.consistency;
    args.extend(["--consistency".to_string(), cons.level.as_str().to_string()]);
    if let Some(p) = cons.quorum_percentage {
        args.extend(["--quorum-percent".to_string(), p.to_string()]);
    }
    if let Some(ms) = cons.max_staleness.as_deref().and_then(duration_ms) {
        args.extend(["--max-staleness-ms".to_string(), ms.to_string()]);
    }
    if c.spec.auth.is_some() {
        args.push("--requirepass-file".into());
        args.push(format!("{AUTH_DIR}/password"));
        mounts.push(VolumeMount {
            name: "auth".into(),
            mount_path: AUTH_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: "tessera".into(),
        image: Some(c.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("redis".into()),
                container_port: REDIS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        // Recovery (log replay) may take a while on a big volume.
        startup_probe: Some(http_probe("/healthz", 2, 150)),
        resources: c.spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node's data volume: the StatefulSet's claim template, and the claims
/// created ahead of it for a restore.
fn claim_spec(c: &ValidatedCluster, shard: u32) -> PersistentVolumeClaimSpec {
    let claim_size = c
        .claim_sizes
        .get(shard as usize)
        .cloned()
        .unwrap_or_else(|| c.spec.storage.size.clone());
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: c.spec.storage.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some([("storage".to_string(), Quantity(claim_size))].into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn build_statefulset(c: &ValidatedCluster, shard: u32) -> StatefulSet {
    let name = c.shard_name(shard);
    let pod_labels = shard_labels(c, shard);
    let mut volumes = vec![
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&c.name),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(a) = &c.spec.auth {
        volumes.push(Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(a.secret_name.clone()),
                items: Some(vec![KeyToPath {
                    key: a.key.clone(),
                    path: "password".into(),
                    ..Default::default()
                }]),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(shard_selector(&c.name, shard)),
            ..Default::default()
        },
        spec: Some(claim_spec(c, shard)),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(c, name.clone(), shard_labels(c, shard)),
        spec: Some(StatefulSetSpec {
            replicas: Some(c.replicas as i32),
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            // The operator orders restarts (replicas first, primary last).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(c.spec.storage.delete_policy.as_str().into()),
                    // A replica scaled away keeps its volume: scaling back up
                    // resumes from it.
                    when_scaled: Some(VolumeDeletePolicy::Retain.as_str().into()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(shard_selector(&c.name, shard)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![node_container(c)],
                    volumes: Some(volumes),
                    affinity: Some(affinity(c, shard)),
                    topology_spread_constraints: zone_spread(c, shard),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Volume for backups when the target is a volume (or unspecified).
pub fn build_backup_pvc(c: &ValidatedCluster) -> Option<PersistentVolumeClaim> {
    let b = c.spec.backup.as_ref()?;
    if b.target.s3.is_some() {
        return None;
    }
    let (size, class) = match &b.target.volume {
        Some(v) => (v.size.clone(), v.storage_class_name.clone()),
        None => ("10Gi".to_string(), None),
    };
    let mut l = labels(c);
    l.insert(LABEL_COMPONENT.into(), "backup".into());
    // No owner reference: backups outlive the cluster (deleting a cluster
    // and restoring it from its backups is the point). Delete it by hand.
    let mut m = meta(c, backup_name(&c.name), l);
    m.owner_references = None;
    Some(PersistentVolumeClaim {
        metadata: m,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class,
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// How a container reaches a backup target: `--target` and S3 flags,
/// credentials from the Secret, or the claim mounted at `/backup`.
#[derive(Debug, Default)]
struct TargetAccess {
    args: Vec<String>,
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

const BACKUP_MOUNT: &str = "/backup";

fn s3_access(s3: &S3Target, default_prefix: String) -> TargetAccess {
    let mut args = Vec::new();
    if let Some(r) = &s3.region {
        args.extend(["--s3-region".into(), r.clone()]);
    }
    if let Some(e) = &s3.endpoint {
        args.extend(["--s3-endpoint".into(), e.clone()]);
    }
    let prefix = s3.prefix.clone().unwrap_or(default_prefix);
    args.extend([
        "--target".into(),
        format!("s3://{}/{}", s3.bucket, prefix.trim_matches('/')),
    ]);
    let env = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .into_iter()
        .map(|key| EnvVar {
            name: key.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s3.credentials_secret.clone(),
                    key: key.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    TargetAccess {
        args,
        env,
        ..Default::default()
    }
}

fn volume_access(claim: String, read_only: bool) -> TargetAccess {
    TargetAccess {
        args: vec!["--target".into(), BACKUP_MOUNT.into()],
        env: vec![],
        volumes: vec![Volume {
            name: "backup".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: Some(read_only),
            }),
            ..Default::default()
        }],
        mounts: vec![VolumeMount {
            name: "backup".into(),
            mount_path: BACKUP_MOUNT.into(),
            read_only: Some(read_only),
            ..Default::default()
        }],
    }
}

fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    )
}

/// A `tessera backup …` container: the node container's image and
/// security settings, no ports or probes.
fn tool_container(
    c: &ValidatedCluster,
    name: &str,
    args: Vec<String>,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let mut container = node_container(c);
    container.name = name.into();
    container.args = Some(args);
    container.env = Some(env);
    container.ports = None;
    container.readiness_probe = None;
    container.liveness_probe = None;
    container.startup_probe = None;
    container.volume_mounts = Some(mounts);
    // The JSON summary the operator reads back (`--termination-log`).
    container.termination_message_path = Some("/dev/termination-log".into());
    container.termination_message_policy = Some("File".into());
    container
}

fn tool_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The backup CronJob: `tessera backup run` against every node, retention,
/// and the JSON summary in the termination message.
pub fn build_backup_cronjob(c: &ValidatedCluster) -> Option<CronJob> {
    let b = c.spec.backup.as_ref()?;
    let mut l = labels(c);
    l.insert(LABEL_COMPONENT.into(), "backup".into());
    // Every pod's admin port, through the shard's headless Service: the
    // job asks each node its role itself (no Kubernetes API access needed).
    let nodes: Vec<String> = (0..c.shards)
        .flat_map(|shard| {
            let sts = c.shard_name(shard);
            (0..c.replicas)
                .map(move |i| format!("{sts}-{i}.{sts}.{}.svc:{ADMIN_PORT}", c.namespace))
        })
        .collect();
    let mut args: Vec<String> = vec![
        "backup".into(),
        "run".into(),
        "--cluster".into(),
        c.name.clone(),
    ];
    if let Some(age) = b.max_age() {
        args.extend(["--max-age".into(), age.to_string()]);
    }
    if let Some(keep) = b.keep {
        args.extend(["--keep".into(), keep.to_string()]);
    }
    args.extend([
        "--nodes".into(),
        nodes.join(","),
        "--termination-log".into(),
        "/dev/termination-log".into(),
    ]);
    let access = match &b.target.s3 {
        Some(s3) => s3_access(s3, format!("{}/{}/", c.namespace, c.name)),
        None => volume_access(backup_name(&c.name), false),
    };
    args.extend(access.args);
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    volumes.extend(access.volumes);
    let mut mounts = vec![tmp_mount];
    mounts.extend(access.mounts);
    let container = tool_container(c, "backup", args, access.env, mounts);
    Some(CronJob {
        metadata: meta(c, backup_name(&c.name), l.clone()),
        spec: Some(CronJobSpec {
            schedule: b.schedule.clone(),
            suspend: Some(b.suspend),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                // `kubectl create job --from=cronjob/…` copies these labels
                // too: the operator finds every backup Job by them.
                metadata: Some(ObjectMeta {
                    labels: Some(l.clone()),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    pod_failure_policy: Some(fail_on_permanent_errors("backup")),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(l),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".into()),
                            containers: vec![container],
                            volumes: Some(volumes),
                            enable_service_links: Some(false),
                            automount_service_account_token: Some(false),
                            security_context: Some(tool_pod_security()),
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Exit status 3 (`tessera backup`: a corrupt or incomplete backup, a
/// refused plan) fails the Job at once; anything else is retried.
fn fail_on_permanent_errors(container: &str) -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: "FailJob".into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(container.into()),
                operator: "In".into(),
                values: vec![crate::backup::cli::EXIT_PERMANENT],
            }),
            ..Default::default()
        }],
    }
}

pub fn restore_plan_job_name(cluster: &str) -> String {
    format!("{cluster}-restore-plan")
}

pub fn restore_job_name(cluster: &str, shard: u32, ordinal: u32) -> String {
    format!("{cluster}-restore-{shard}-{ordinal}")
}

/// `data-<statefulset>-<ordinal>`: the claim a StatefulSet pod uses (and
/// adopts when it already exists).
pub fn data_claim_name(cluster: &str, shard: u32, ordinal: u32) -> String {
    format!(
        "data-{}-{ordinal}",
        super::validate::shard_name(cluster, shard)
    )
}

/// The restore source of `bootstrap.fromBackup`, as a container sees it
/// (a backup claim is mounted read-only).
fn restore_access(c: &ValidatedCluster) -> Option<(Vec<String>, TargetAccess)> {
    let fb = c.spec.bootstrap.as_ref()?.from_backup.as_ref()?;
    let access = match (&fb.source.s3, &fb.source.volume) {
        (Some(s3), _) => s3_access(s3, format!("{}/{}/", c.namespace, fb.cluster)),
        (None, Some(v)) => volume_access(v.claim_name.clone(), true),
        (None, None) => return None,
    };
    Some((vec!["--cluster".into(), fb.cluster.clone()], access))
}

fn restore_labels(c: &ValidatedCluster, what: String) -> BTreeMap<String, String> {
    let mut l = labels(c);
    l.insert(LABEL_COMPONENT.into(), "restore".into());
    l.insert(LABEL_RESTORE.into(), what);
    l
}

fn restore_job(
    c: &ValidatedCluster,
    name: String,
    what: String,
    args: Vec<String>,
    access: TargetAccess,
    data: Option<String>,
) -> Job {
    let l = restore_labels(c, what);
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    volumes.extend(access.volumes);
    let mut mounts = vec![tmp_mount];
    mounts.extend(access.mounts);
    if let Some(claim) = data {
        volumes.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        });
    }
    let container = tool_container(c, "restore", args, access.env, mounts);
    Job {
        metadata: meta(c, name, l.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            pod_failure_policy: Some(fail_on_permanent_errors("restore")),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    security_context: Some(tool_pod_security()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Job that chooses what a `bootstrap.fromBackup` restore brings back
/// (`tessera backup plan`): one backup and one time for every node.
pub fn build_restore_plan_job(c: &ValidatedCluster) -> Option<Job> {
    let fb = c.spec.bootstrap.as_ref()?.from_backup.as_ref()?;
    let (mut args, access) = restore_access(c)?;
    args.splice(0..0, ["backup".to_string(), "plan".to_string()]);
    args.extend(access.args.iter().cloned());
    args.extend(["--backup".into(), fb.backup_id.clone()]);
    if let Some(t) = &fb.target_time {
        args.extend(["--target-time".into(), t.clone()]);
    }
    args.extend(["--termination-log".into(), "/dev/termination-log".into()]);
    Some(restore_job(
        c,
        restore_plan_job_name(&c.name),
        "plan".into(),
        args,
        access,
        None,
    ))
}

/// The Job that restores shard `shard` into node `ordinal`'s volume, pinned
/// to the plan's backup and time (every node of every shard restores the
/// same point).
pub fn build_restore_job(
    c: &ValidatedCluster,
    shard: u32,
    ordinal: u32,
    backup_id: &str,
    target_time: &str,
) -> Option<Job> {
    let (mut args, access) = restore_access(c)?;
    args.splice(0..0, ["backup".to_string(), "restore".to_string()]);
    args.extend(access.args.iter().cloned());
    args.extend([
        "--backup".into(),
        backup_id.to_string(),
        "--target-time".into(),
        target_time.to_string(),
        "--shard".into(),
        shard.to_string(),
        "--data-dir".into(),
        "/data".into(),
        "--termination-log".into(),
        "/dev/termination-log".into(),
    ]);
    Some(restore_job(
        c,
        restore_job_name(&c.name, shard, ordinal),
        format!("{shard}-{ordinal}"),
        args,
        access,
        Some(data_claim_name(&c.name, shard, ordinal)),
    ))
}

/// A node's data claim, created before its StatefulSet so a restore Job can
/// fill it; the StatefulSet adopts it by name. It goes with the cluster
/// under `storage.deletePolicy: Delete` (owner reference) and stays under
/// `Retain`.
pub fn build_data_pvc(c: &ValidatedCluster, shard: u32, ordinal: u32) -> PersistentVolumeClaim {
    let mut m = meta(
        c,
        data_claim_name(&c.name, shard, ordinal),
        shard_selector(&c.name, shard),
    );
    m.owner_references = match c.spec.storage.delete_policy {
        VolumeDeletePolicy::Delete => Some(vec![OwnerReference {
            controller: Some(false),
            ..c.owner_reference()
        }]),
        VolumeDeletePolicy::Retain => None,
    };
    PersistentVolumeClaim {
        metadata: m,
        spec: Some(claim_spec(c, shard)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseCluster, DatabaseClusterSpec};
    use crate::operator::validate::{validate, Existing};

    fn cluster(json: &str) -> ValidatedCluster {
        let spec: DatabaseClusterSpec = serde_json::from_str(json).expect("spec");
        let mut d = DatabaseCluster::new("users", spec);
        d.metadata.namespace = Some("prod".into());
        d.metadata.uid = Some("u-1".into());
        validate(&d, "tessera:test", &Existing::default()).expect("valid")
    }

    #[test]
    fn statefulset_shape() {
        let c = cluster(r#"{"shards":3,"replicas":3}"#);
        let s = build_statefulset(&c, 1);
        assert_eq!(s.metadata.name.as_deref(), Some("users-shard-1"));
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DatabaseCluster", Some(true))
        );
        let spec = s.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("OnDelete")
        );
        let pod = spec.template.spec.expect("pod");
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("labels");
        assert_eq!(labels[LABEL_SHARD], "1");
        assert!(
            !labels.contains_key(LABEL_ROLE),
            "the role label is the operator's to move"
        );
        let ctr = &pod.containers[0];
        let sc = ctr.security_context.as_ref().expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        let probe = ctr
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let args = ctr.args.as_ref().expect("args").join(" ");
        assert!(args.contains("--announce-host $(POD_IP)"), "{args}");
        assert!(!args.contains("requirepass"));
        let mounts: Vec<_> = ctr
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/data") && mounts.contains(&"/tmp"));
        // No zones: no spread constraint, but hostname anti-affinity.
        assert!(pod.topology_spread_constraints.is_none());
        let anti = pod
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .expect("anti-affinity");
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .expect("preferred")[0]
                .pod_affinity_term
                .topology_key,
            "kubernetes.io/hostname"
        );
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        let size = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone());
        assert_eq!(size.as_deref(), Some("1Gi"));
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn zones_spread_and_restrict() {
        let c = cluster(r#"{"zones":["us-east-1a","us-east-1b","us-west-2a"]}"#);
        let pod = build_statefulset(&c, 0)
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let spread = pod.topology_spread_constraints.expect("spread");
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].max_skew, 1);
        assert_eq!(spread[0].when_unsatisfiable, "DoNotSchedule");
        let req = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("node affinity");
        let expr = &req.node_selector_terms[0]
            .match_expressions
            .as_ref()
            .expect("exprs")[0];
        assert_eq!(expr.values.as_ref().map(|v| v.len()), Some(3));
    }

    #[test]
    fn auth_mounts_the_secret() {
        let c = cluster(r#"{"auth":{"secretName":"pw"}}"#);
        let pod = build_statefulset(&c, 0)
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let args = pod.containers[0].args.clone().expect("args").join(" ");
        assert!(args.contains("--requirepass-file /etc/tessera/auth/password"));
        let vol = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "auth")
            .expect("auth volume");
        assert_eq!(
            vol.secret.and_then(|s| s.secret_name).as_deref(),
            Some("pw")
        );
    }

    #[test]
    fn services_and_pdb() {
        let c = cluster("{}");
        let h = build_headless_service(&c, 2).spec.expect("spec");
        assert_eq!(h.cluster_ip.as_deref(), Some("None"));
        let p = build_primary_service(&c, 2);
        assert_eq!(p.metadata.name.as_deref(), Some("users-shard-2-primary"));
        assert_eq!(
            p.spec.and_then(|s| s.selector).expect("selector")[LABEL_ROLE],
            "primary"
        );
        let cs = build_client_service(&c)
            .spec
            .and_then(|s| s.selector)
            .expect("selector");
        assert_eq!(cs[LABEL_MEMBER], "true");
        let pdb = build_pdb(&c, 0).spec.expect("spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn backup_cronjob_from_spec() {
        assert!(build_backup_cronjob(&cluster("{}")).is_none());
        let c = cluster(r#"{"backup":{"schedule":"0 */6 * * *","retention":"30d"}}"#);
        let cj = build_backup_cronjob(&c)
            .expect("cronjob")
            .spec
            .expect("spec");
        assert_eq!(cj.schedule, "0 */6 * * *");
        assert_eq!(cj.concurrency_policy.as_deref(), Some("Forbid"));
        assert!(build_backup_pvc(&c).is_some());
        let s3 = cluster(
            r#"{"backup":{"target":{"s3":{"bucket":"b","region":"us-west-2","credentialsSecret":"s"}}}}"#,
        );
        assert!(build_backup_pvc(&s3).is_none());
        let args = build_backup_cronjob(&s3)
            .expect("cj")
            .spec
            .expect("spec")
            .job_template
            .spec
            .expect("job")
            .template
            .spec
            .expect("pod")
            .containers[0]
            .args
            .clone()
            .expect("args")
            .join(" ");
        assert!(args.contains("--s3-region us-west-2"), "{args}");
        assert!(args.contains("backup run --cluster"), "{args}");
        assert!(args.contains("--target s3://b/prod/users"), "{args}");
        assert!(args.contains("--nodes "), "{args}");
        assert!(
            args.contains("--termination-log /dev/termination-log"),
            "{args}"
        );
        assert!(args.contains("--max-age 7d"), "{args}");
        // The backup volume outlives the cluster.
        assert!(build_backup_pvc(&c)
            .expect("pvc")
            .metadata
            .owner_references
            .is_none());
    }

    fn job_args(j: &Job) -> (String, PodSpec) {
        let pod = j
            .spec
            .clone()
            .expect("job spec")
            .template
            .spec
            .expect("pod spec");
        (pod.containers[0].args.clone().expect("args").join(" "), pod)
    }

    #[test]
    fn retention_by_count_or_age_reaches_the_job() {
        let arg = |json: &str| {
            let cj = build_backup_cronjob(&cluster(json)).expect("cronjob");
            let job = Job {
                spec: cj.spec.expect("spec").job_template.spec,
                ..Default::default()
            };
            job_args(&job).0
        };
        let a = arg(r#"{"backup":{"keep":3}}"#);
        assert!(a.contains("--keep 3") && !a.contains("--max-age"), "{a}");
        let a = arg(r#"{"backup":{"keep":3,"retention":"2w"}}"#);
        assert!(a.contains("--keep 3") && a.contains("--max-age 2w"), "{a}");
    }

    #[test]
    fn restore_jobs_from_a_volume_and_from_s3() {
        let c = cluster(
            r#"{"shards":2,"replicas":2,"storage":{"size":"2Gi"},"bootstrap":{"fromBackup":{"cluster":"old","backupId":"latest","targetTime":"2026-01-02T03:04:05Z","source":{"volume":{"claimName":"old-backup"}}}}}"#,
        );
        let plan = build_restore_plan_job(&c).expect("plan job");
        assert_eq!(plan.metadata.name.as_deref(), Some("users-restore-plan"));
        let (args, pod) = job_args(&plan);
        assert_eq!(
            args,
            "backup plan --cluster old --target /backup --backup latest --target-time 2026-01-02T03:04:05Z --termination-log /dev/termination-log"
        );
        let vol = pod
            .volumes
            .clone()
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "backup")
            .expect("backup volume");
        let claim = vol.persistent_volume_claim.expect("claim");
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("old-backup", Some(true))
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let labels = plan.metadata.labels.clone().expect("labels");
        assert_eq!(labels[LABEL_CLUSTER], "users");
        assert!(
            !labels.contains_key(LABEL_SHARD),
            "restore pods are not nodes"
        );
        let rule = &plan
            .spec
            .as_ref()
            .and_then(|s| s.pod_failure_policy.clone())
            .expect("policy")
            .rules[0];
        assert_eq!(rule.action, "FailJob");
        assert_eq!(
            rule.on_exit_codes.as_ref().map(|e| e.values.clone()),
            Some(vec![3])
        );

        let job = build_restore_job(&c, 1, 1, "20260102T030405123Z", "2026-01-02T03:04:05.000Z")
            .expect("restore job");
        assert_eq!(job.metadata.name.as_deref(), Some("users-restore-1-1"));
        let (args, pod) = job_args(&job);
        assert!(args.starts_with("backup restore --cluster old --target /backup --backup 20260102T030405123Z --target-time 2026-01-02T03:04:05.000Z --shard 1 --data-dir /data"), "{args}");
        let data = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "data")
            .expect("data volume");
        assert_eq!(
            data.persistent_volume_claim
                .map(|c| c.claim_name)
                .as_deref(),
            Some("data-users-shard-1-1")
        );
        let ctr = &pod.containers[0];
        assert_eq!(
            ctr.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            ctr.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(RUN_AS)
        );

        let pvc = build_data_pvc(&c, 1, 1);
        assert_eq!(pvc.metadata.name.as_deref(), Some("data-users-shard-1-1"));
        let owner = &pvc.metadata.owner_references.clone().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DatabaseCluster", Some(false))
        );
        assert_eq!(
            pvc.spec
                .and_then(|s| s.resources)
                .and_then(|r| r.requests)
                .map(|r| r["storage"].0.clone())
                .as_deref(),
            Some("2Gi")
        );
        let kept = cluster(
            r#"{"storage":{"deletePolicy":"Retain"},"bootstrap":{"fromBackup":{"cluster":"old","source":{"volume":{"claimName":"b"}}}}}"#,
        );
        assert!(build_data_pvc(&kept, 0, 0)
            .metadata
            .owner_references
            .is_none());

        let s3 = cluster(
            r#"{"bootstrap":{"fromBackup":{"cluster":"old","source":{"s3":{"bucket":"bk","endpoint":"http://198.18.0.1:7070","credentialsSecret":"creds"}}}}}"#,
        );
        let (args, pod) = job_args(&build_restore_plan_job(&s3).expect("plan"));
        assert!(
            args.contains("--s3-endpoint http://198.18.0.1:7070 --target s3://bk/prod/old"),
            "{args}"
        );
        let env = pod.containers[0].env.clone().expect("env");
        assert!(env.iter().any(|e| e.name == "AWS_SECRET_ACCESS_KEY"
            && e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|r| r.name.as_str())
                == Some("creds")));
        assert!(build_restore_plan_job(&cluster("{}")).is_none());
    }

    #[test]
    fn consistency_reaches_the_node_arguments() {
        let c = cluster(
            r#"{"consistency":{"level":"quorum","quorumPercentage":60,"maxStaleness":"2s"}}"#,
        );
        let pod = build_statefulset(&c, 0)
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        let args = pod.containers[0].args.clone().expect("args").join(" ");
        assert!(
            args.contains("--consistency quorum --quorum-percent 60 --max-staleness-ms 2000"),
            "{args}"
        );
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("1m"), Some(60_000));
        assert_eq!(duration_ms("soon"), None);
    }

    #[test]
    fn config_map_carries_consistency() {
        let c = cluster(
            r#"{"consistency":{"level":"quorum","quorumPercentage":60},"shardingKey":"user_id"}"#,
        );
        let data = build_config_map(&c).data.expect("data");
        let v: serde_json::Value = serde_json::from_str(&data["cluster.json"]).expect("json");
        assert_eq!(v["consistency"]["quorumPercentage"], 60);
        assert_eq!(v["shardingKey"], "user_id");
    }
}
