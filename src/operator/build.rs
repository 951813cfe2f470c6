//! Pure builders: `ValidatedCluster` in, Kubernetes object out. No I/O, so
//! every child is unit-tested here and server-side apply sends exactly what
//! these return.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::ValidatedCluster;
use crate::api::VolumeDeletePolicy;

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
    // The acknowledgement rule (DESIGN.md §2): the node enforces it.
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
    let claim_size = c
        .claim_sizes
        .get(shard as usize)
        .cloned()
        .unwrap_or_else(|| c.spec.storage.size.clone());
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(shard_selector(&c.name, shard)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: c.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(claim_size))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
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
    Some(PersistentVolumeClaim {
        metadata: meta(c, backup_name(&c.name), l),
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

/// The backup CronJob; what `tessera backup` does is the backup issue's.
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
        "--max-age".into(),
        b.retention.clone(),
        "--nodes".into(),
        nodes.join(","),
        "--termination-log".into(),
        "/dev/termination-log".into(),
    ];
    let mut env = vec![];
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    match &b.target.s3 {
        Some(s3) => {
            if let Some(r) = &s3.region {
                args.extend(["--s3-region".into(), r.clone()]);
            }
            if let Some(e) = &s3.endpoint {
                args.extend(["--s3-endpoint".into(), e.clone()]);
            }
            let prefix = s3
                .prefix
                .clone()
                .unwrap_or_else(|| format!("{}/{}/", c.namespace, c.name));
            args.extend([
                "--target".into(),
                format!("s3://{}/{}", s3.bucket, prefix.trim_matches('/')),
            ]);
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                env.push(EnvVar {
                    name: key.into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                            name: s3.credentials_secret.clone(),
                            key: key.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        None => {
            args.extend(["--target".into(), "/backup".into()]);
            volumes.push(Volume {
                name: "backup".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: backup_name(&c.name),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "backup".into(),
                mount_path: "/backup".into(),
                ..Default::default()
            });
        }
    }
    let mut container = node_container(c);
    container.name = "backup".into();
    container.args = Some(args);
    container.env = Some(env);
    container.ports = None;
    container.readiness_probe = None;
    container.liveness_probe = None;
    container.startup_probe = None;
    container.volume_mounts = Some(mounts);
    Some(CronJob {
        metadata: meta(c, backup_name(&c.name), l.clone()),
        spec: Some(CronJobSpec {
            schedule: b.schedule.clone(),
            suspend: Some(b.suspend),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l.clone()),
                    ..Default::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
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
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
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
        assert!(args.contains("--target s3://b/"), "{args}");
        assert!(args.contains("--nodes "), "{args}");
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
