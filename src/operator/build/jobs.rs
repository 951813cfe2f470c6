//! The backup CronJob and its volume, the restore Jobs and the data claims
//! they fill. Both kinds of Job run `tessera backup …` in one pod template
//! ([`tool_job_spec`]).

use super::statefulset::{
    claim_spec, internal_mount, internal_volume, node_container, pod_security, tls_volume,
};
use super::*;

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
    let mut access = match &b.target.s3 {
        Some(s3) => s3_access(s3, format!("{}/{}/", c.namespace, c.name)),
        None => volume_access(backup_name(&c.name), false),
    };
    args.extend(access.args.iter().cloned());
    // The backup calls the nodes' admin API: it holds the cluster's token
    // (restore Jobs call no node and get none).
    access.env.push(EnvVar {
        name: crate::client::auth::TOKEN_FILE_ENV.into(),
        value: Some(format!("{INTERNAL_DIR}/{INTERNAL_TOKEN_KEY}")),
        ..Default::default()
    });
    access.volumes.push(internal_volume(&c.name));
    access.mounts.push(internal_mount());
    // With TLS the nodes' admin ports speak HTTPS: the Job verifies them
    // against the cluster's CA (the CA only, no key of any kind).
    if c.spec.tls.enabled {
        access.env.push(EnvVar {
            name: crate::client::auth::CA_FILE_ENV.into(),
            value: Some(format!("{TLS_DIR}/ca.crt")),
            ..Default::default()
        });
        access.volumes.push(tls_volume(c, &["ca.crt"]));
        access.mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
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
                spec: Some(tool_job_spec(c, l, "backup", args, access, vec![])),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The Job spec of a `tessera backup …` tool (backup and restore alike):
/// a scratch `/tmp`, the target's volumes, any `extra` volume, two retries
/// unless the tool reports a permanent error, no API access.
fn tool_job_spec(
    c: &ValidatedCluster,
    labels: BTreeMap<String, String>,
    name: &str,
    args: Vec<String>,
    access: TargetAccess,
    extra: Vec<(Volume, VolumeMount)>,
) -> JobSpec {
    let (tmp, tmp_mount) = tmp_volume();
    let mut volumes = vec![tmp];
    volumes.extend(access.volumes);
    let mut mounts = vec![tmp_mount];
    mounts.extend(access.mounts);
    for (v, m) in extra {
        volumes.push(v);
        mounts.push(m);
    }
    let container = tool_container(c, name, args, access.env, mounts);
    JobSpec {
        backoff_limit: Some(2),
        pod_failure_policy: Some(fail_on_permanent_errors(name)),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                containers: vec![container],
                volumes: Some(volumes),
                enable_service_links: Some(false),
                automount_service_account_token: Some(false),
                security_context: Some(pod_security()),
                ..Default::default()
            }),
        },
        ..Default::default()
    }
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
        crate::operator::validate::shard_name(cluster, shard)
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
    let extra = data
        .map(|claim| {
            (
                Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim,
                        read_only: Some(false),
                    }),
                    ..Default::default()
                },
                VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    ..Default::default()
                },
            )
        })
        .into_iter()
        .collect();
    Job {
        metadata: meta(c, name, l.clone()),
        spec: Some(tool_job_spec(c, l, "restore", args, access, extra)),
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
