//! One StatefulSet per shard, its node container and its volume claim.

use super::*;

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
            port: IntOrString::String("metrics".into()),
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

pub(super) fn node_container(c: &ValidatedCluster) -> Container {
    let mut args: Vec<String> = [
        "node",
        "--port",
        "6379",
        "--admin-port",
        "9121",
        "--metrics-port",
        "9122",
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
    // The node derives maxmemory from the pod's memory limit; the policy
    // says what happens above it.
    args.extend([
        "--maxmemory-policy".to_string(),
        c.spec.memory.policy.as_str().to_string(),
    ]);
    // Always a password: the user's Secret, or the one the operator
    // generated (`<cluster>-auth`).
    args.push("--requirepass-file".into());
    args.push(format!("{AUTH_DIR}/password"));
    mounts.push(VolumeMount {
        name: "auth".into(),
        mount_path: AUTH_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    // Application users: rules on the command line, passwords from files.
    let users = c
        .spec
        .auth
        .as_ref()
        .map(|a| a.users.as_slice())
        .unwrap_or_default();
    for u in users {
        args.push("--acl-user".into());
        args.push(format!("{} on ~* {}", u.name, u.access.rules()));
    }
    if !users.is_empty() {
        args.extend(["--acl-password-dir".into(), USERS_DIR.into()]);
        mounts.push(VolumeMount {
            name: "users".into(),
            mount_path: USERS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // TLS: a port beside the plaintext one, and the links to peers' TLS
    // ports (peers verified against the cluster's CA).
    if c.spec.tls.enabled {
        let f = |name: &str| format!("{TLS_DIR}/{name}");
        args.extend([
            "--tls-port".into(),
            REDIS_TLS_PORT.to_string(),
            "--tls-cert-file".into(),
            f("tls.crt"),
            "--tls-key-file".into(),
            f("tls.key"),
            "--tls-ca-cert-file".into(),
            f("ca.crt"),
            "--tls-replication".into(),
            // Internal traffic is encrypted: the admin API over HTTPS
            // (plain HTTP keeps only the probes and /metrics).
            TLS_ADMIN_FLAG.into(),
        ]);
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // The admin API's token, re-read by the node when the Secret changes.
    args.push("--admin-token-file".into());
    args.push(format!("{INTERNAL_DIR}/{INTERNAL_TOKEN_KEY}"));
    mounts.push(internal_mount());
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
        ports: Some(
            [
                Some(("redis", REDIS_PORT)),
                c.spec.tls.enabled.then_some(("redis-tls", REDIS_TLS_PORT)),
                Some(("admin", ADMIN_PORT)),
                Some(("metrics", METRICS_PORT)),
            ]
            .into_iter()
            .flatten()
            .map(|(name, port)| ContainerPort {
                name: Some(name.into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
        ),
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
pub(super) fn claim_spec(c: &ValidatedCluster, shard: u32) -> PersistentVolumeClaimSpec {
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
    let (auth_name, auth_key) = auth_secret(c);
    volumes.push(Volume {
        name: "auth".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(auth_name),
            items: Some(vec![KeyToPath {
                key: auth_key,
                path: "password".into(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(internal_volume(&c.name));
    if let Some(v) = users_volume(c) {
        volumes.push(v);
    }
    if c.spec.tls.enabled {
        volumes.push(tls_volume(c, &["tls.crt", "tls.key", "ca.crt"]));
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
                    security_context: Some(pod_security()),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod security every pod the operator builds runs with (nodes, backup
/// and restore Jobs): non-root as the image's user, the default seccomp profile.
pub(super) fn pod_security() -> PodSecurityContext {
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

/// The `<cluster>-internal` Secret as a volume (the admin token only).
pub(super) fn internal_volume(cluster: &str) -> Volume {
    Volume {
        name: "internal".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(internal_secret_name(cluster)),
            items: Some(vec![KeyToPath {
                key: INTERNAL_TOKEN_KEY.into(),
                path: INTERNAL_TOKEN_KEY.into(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node flag that turns on HTTPS on the admin port; the operator reads
/// it back from a pod's spec to know how to call it ([`pod_admin_https`]).
pub const TLS_ADMIN_FLAG: &str = "--tls-admin";

/// Whether a node pod's admin port speaks HTTPS (its container runs with
/// [`TLS_ADMIN_FLAG`]): during a rolling update old and new pods differ.
pub fn pod_admin_https(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .any(|c| c.args.iter().flatten().any(|a| a == TLS_ADMIN_FLAG))
    })
}

/// The cluster's TLS Secret as a volume of the given keys.
pub(super) fn tls_volume(c: &ValidatedCluster, keys: &[&str]) -> Volume {
    Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls_secret(c)),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: (*k).into(),
                        path: (*k).into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn internal_mount() -> VolumeMount {
    VolumeMount {
        name: "internal".into(),
        mount_path: INTERNAL_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Every application user's password as `<name>` (one projected volume
/// over their Secrets).
fn users_volume(c: &ValidatedCluster) -> Option<Volume> {
    let users = c
        .spec
        .auth
        .as_ref()
        .map(|a| a.users.as_slice())
        .unwrap_or_default();
    if users.is_empty() {
        return None;
    }
    let sources = users
        .iter()
        .map(|u| VolumeProjection {
            secret: Some(SecretProjection {
                name: user_secret(&c.name, u),
                items: Some(vec![KeyToPath {
                    key: AUTH_PASSWORD_KEY.into(),
                    path: u.name.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Some(Volume {
        name: "users".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
        }),
        ..Default::default()
    })
}
