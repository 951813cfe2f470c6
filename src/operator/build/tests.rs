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
    // Probes go to the metrics port, which the NetworkPolicy may open to
    // scrapers, never to the admin port.
    assert_eq!(probe.port, IntOrString::String("metrics".into()));
    let metrics = ctr
        .ports
        .as_ref()
        .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some("metrics")))
        .expect("a metrics container port");
    assert_eq!(metrics.container_port, METRICS_PORT);
    let args = ctr.args.as_ref().expect("args").join(" ");
    assert!(args.contains("--metrics-port 9122"), "{args}");
    assert!(args.contains("--announce-host $(POD_IP)"), "{args}");
    // Always a password (generated without spec.auth) and the admin token.
    assert!(args.contains("--requirepass-file /etc/tessera/auth/password"));
    assert!(args.contains("--admin-token-file /etc/tessera/internal/token"));
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
    let [replicas, primary] = build_pdbs(&c, 0);
    let (r, p) = (replicas.spec.expect("spec"), primary.spec.expect("spec"));
    assert_eq!(
        r.min_available,
        Some(IntOrString::Int(c.replicas as i32 - 2))
    );
    let role = |s: &PodDisruptionBudgetSpec| {
        s.selector
            .as_ref()
            .and_then(|l| l.match_labels.as_ref())
            .map(|m| m[LABEL_ROLE].clone())
    };
    assert_eq!(role(&r).as_deref(), Some("replica"));
    assert_eq!(role(&p).as_deref(), Some("primary"));
    // The primary is never evicted while it has a replica to switch to.
    assert_eq!(p.min_available, Some(IntOrString::Int(1)));
    assert!(r.max_unavailable.is_none() && p.max_unavailable.is_none());
    assert_eq!(primary.metadata.name, Some(primary_pdb_name(&c, 0)));
    // A single-node shard can be drained: nothing to protect, nowhere to switch.
    let single = cluster(r#"{"replicas":1}"#);
    let [r, p] = build_pdbs(&single, 0).map(|b| b.spec.expect("spec").min_available);
    assert_eq!(
        (r, p),
        (Some(IntOrString::Int(0)), Some(IntOrString::Int(0)))
    );
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
fn memory_policy_reaches_the_node_arguments_and_defaults_to_noeviction() {
    let args_of = |spec: &str| {
        let pod = build_statefulset(&cluster(spec), 0)
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod");
        pod.containers[0].args.clone().expect("args").join(" ")
    };
    let default = args_of("{}");
    assert!(
        default.contains("--maxmemory-policy noeviction"),
        "{default}"
    );
    let lru = args_of(r#"{"memory":{"policy":"allkeys-lru"}}"#);
    assert!(lru.contains("--maxmemory-policy allkeys-lru"), "{lru}");
    let bad: Result<crate::api::DatabaseClusterSpec, _> =
        serde_json::from_str(r#"{"memory":{"policy":"lru"}}"#);
    assert!(bad.is_err(), "an unknown policy is refused");
    // Every CRD name is a name the node takes.
    for p in [
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let spec: crate::api::MemorySpec =
            serde_json::from_str(&format!(r#"{{"policy":"{p}"}}"#)).expect("a CRD policy");
        assert_eq!(spec.policy.as_str(), p);
        let node: crate::node::evict::Policy = p.parse().expect("a node policy");
        assert_eq!(node.as_str(), p);
    }
}

#[test]
fn consistency_reaches_the_node_arguments() {
    let c =
        cluster(r#"{"consistency":{"level":"quorum","quorumPercentage":60,"maxStaleness":"2s"}}"#);
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

fn node_pod(c: &ValidatedCluster) -> PodSpec {
    build_statefulset(c, 0)
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
}

fn secret_of(pod: &PodSpec, volume: &str) -> SecretVolumeSource {
    pod.volumes
        .as_ref()
        .expect("volumes")
        .iter()
        .find(|v| v.name == volume)
        .and_then(|v| v.secret.clone())
        .unwrap_or_else(|| panic!("no Secret volume {volume}"))
}

#[test]
fn without_spec_auth_nodes_use_the_generated_password_secret() {
    let pod = node_pod(&cluster("{}"));
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(args.contains("--requirepass-file /etc/tessera/auth/password"));
    let s = secret_of(&pod, "auth");
    assert_eq!(s.secret_name.as_deref(), Some("users-auth"));
    assert_eq!(s.items.expect("items")[0].key, "password");
}

#[test]
fn nodes_and_backup_jobs_mount_the_internal_token() {
    let c = cluster(r#"{"backup":{"schedule":"@daily"}}"#);
    let pod = node_pod(&c);
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(args.contains("--admin-token-file /etc/tessera/internal/token"));
    assert_eq!(
        secret_of(&pod, "internal").secret_name.as_deref(),
        Some("users-internal")
    );
    let job = build_backup_cronjob(&c)
        .and_then(|cj| cj.spec)
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .expect("job pod");
    assert_eq!(
        secret_of(&job, "internal").secret_name.as_deref(),
        Some("users-internal")
    );
    let ct = &job.containers[0];
    let env = ct.env.as_ref().expect("env");
    assert!(env.iter().any(|e| e.name == "TESSERA_ADMIN_TOKEN_FILE"
        && e.value.as_deref() == Some("/etc/tessera/internal/token")));
    assert!(ct
        .volume_mounts
        .as_ref()
        .expect("mounts")
        .iter()
        .any(|m| m.name == "internal" && m.mount_path == "/etc/tessera/internal"));
}

#[test]
fn generated_secrets_are_owned_by_the_cluster_and_hold_one_key() {
    let c = cluster("{}");
    let o = SecretOwner {
        namespace: &c.namespace,
        cluster: &c.name,
        owner: c.owner_reference(),
    };
    let s = build_internal_secret(&o, "tok".into());
    assert_eq!(s.metadata.name.as_deref(), Some("users-internal"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("prod"));
    assert_eq!(
        s.metadata.owner_references.as_ref().expect("owner")[0].uid,
        "u-1"
    );
    assert_eq!(
        s.string_data
            .as_ref()
            .expect("data")
            .get("token")
            .map(String::as_str),
        Some("tok")
    );
    let a = build_auth_secret(&o, "pw".into());
    assert_eq!(a.metadata.name.as_deref(), Some("users-auth"));
    assert_eq!(
        a.string_data
            .as_ref()
            .expect("data")
            .get("password")
            .map(String::as_str),
        Some("pw")
    );
}

#[test]
fn application_users_get_acl_rules_and_their_passwords_mounted() {
    let c = cluster(
        r#"{"auth":{"users":[{"name":"reader"},{"name":"app","access":"ReadWrite","secretName":"app-pw"}]}}"#,
    );
    let pod = node_pod(&c);
    let args = pod.containers[0].args.clone().expect("args");
    let joined = args.join(" ");
    assert!(
        args.contains(&"reader on ~* +@read".to_string()),
        "{joined}"
    );
    assert!(
        args.contains(&"app on ~* +@read +@write".to_string()),
        "{joined}"
    );
    assert!(joined.contains("--acl-password-dir /etc/tessera/users"));
    // No auth.secretName: the default user still gets the generated one.
    assert_eq!(
        secret_of(&pod, "auth").secret_name.as_deref(),
        Some("users-auth")
    );
    let sources = pod
        .volumes
        .as_ref()
        .expect("volumes")
        .iter()
        .find(|v| v.name == "users")
        .and_then(|v| v.projected.clone())
        .and_then(|p| p.sources)
        .expect("projected users volume");
    let got: Vec<(String, String)> = sources
        .iter()
        .map(|s| {
            let s = s.secret.as_ref().expect("secret");
            (
                s.name.clone(),
                s.items.as_ref().expect("items")[0].path.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("users-user-reader".to_string(), "reader".to_string()),
            ("app-pw".to_string(), "app".to_string())
        ]
    );
}

#[test]
fn without_users_no_acl_flags_or_users_volume() {
    let pod = node_pod(&cluster("{}"));
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(!args.contains("--acl-user") && !args.contains("--acl-password-dir"));
    assert!(!pod
        .volumes
        .expect("volumes")
        .iter()
        .any(|v| v.name == "users"));
}

#[test]
fn tls_is_on_by_default_with_the_issued_secret_and_a_second_port() {
    let c = cluster("{}");
    let pod = node_pod(&c);
    let ctr = &pod.containers[0];
    let args = ctr.args.clone().expect("args").join(" ");
    assert!(args.contains("--tls-port 6380"), "{args}");
    assert!(args.contains("--tls-cert-file /etc/tessera/tls/tls.crt"));
    assert!(args.contains("--tls-key-file /etc/tessera/tls/tls.key"));
    assert!(args.contains("--tls-ca-cert-file /etc/tessera/tls/ca.crt"));
    assert!(args.contains("--tls-replication"));
    let tls = secret_of(&pod, "tls");
    assert_eq!(tls.secret_name.as_deref(), Some("users-tls"));
    let keys: Vec<String> = tls
        .items
        .expect("items")
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        keys,
        ["tls.crt", "tls.key", "ca.crt"],
        "the CA key is never mounted"
    );
    let ports: Vec<i32> = ctr
        .ports
        .as_ref()
        .expect("ports")
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [6379, 6380, 9121, 9122]);
    for svc in [
        build_client_service(&c),
        build_headless_service(&c, 0),
        build_primary_service(&c, 0),
    ] {
        let ports: Vec<i32> = svc
            .spec
            .expect("spec")
            .ports
            .expect("ports")
            .iter()
            .map(|p| p.port)
            .collect();
        assert!(ports.contains(&6379) && ports.contains(&6380), "{ports:?}");
    }
}

#[test]
fn with_tls_the_admin_port_is_https_and_backups_verify_it_with_the_ca_only() {
    let c = cluster(r#"{"backup":{"schedule":"@daily"}}"#);
    let pod = node_pod(&c);
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(args.contains("--tls-admin"), "{args}");
    // Probes stay plain HTTP (the node serves them beside HTTPS).
    let probe = pod.containers[0].readiness_probe.clone().expect("probe");
    assert_eq!(probe.http_get.expect("httpGet").scheme, None);
    let as_pod = |spec: PodSpec| k8s_openapi::api::core::v1::Pod {
        spec: Some(spec),
        ..Default::default()
    };
    assert!(pod_admin_https(&as_pod(pod.clone())));
    let job = build_backup_cronjob(&c)
        .and_then(|cj| cj.spec)
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .expect("job pod");
    let tls = secret_of(&job, "tls");
    assert_eq!(tls.secret_name.as_deref(), Some("users-tls"));
    let keys: Vec<String> = tls
        .items
        .expect("items")
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["ca.crt"], "the job gets the CA and no key");
    let env = job.containers[0].env.clone().expect("env");
    assert!(env.iter().any(|e| e.name == "TESSERA_ADMIN_CA_FILE"
        && e.value.as_deref() == Some("/etc/tessera/tls/ca.crt")));
    // Without TLS: plaintext admin, no CA for the job.
    let plain = cluster(r#"{"tls":{"enabled":false},"backup":{"schedule":"@daily"}}"#);
    let pod = node_pod(&plain);
    assert!(!pod_admin_https(&as_pod(pod)));
    let job = build_backup_cronjob(&plain)
        .and_then(|cj| cj.spec)
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .expect("job pod");
    let env = job.containers[0].env.clone().expect("env");
    assert!(!env.iter().any(|e| e.name == "TESSERA_ADMIN_CA_FILE"));
}

#[test]
fn a_users_tls_secret_is_mounted_as_is_and_tls_can_be_turned_off() {
    let pod = node_pod(&cluster(r#"{"tls":{"secretName":"from-cert-manager"}}"#));
    assert_eq!(
        secret_of(&pod, "tls").secret_name.as_deref(),
        Some("from-cert-manager")
    );
    let c = cluster(r#"{"tls":{"enabled":false}}"#);
    let pod = node_pod(&c);
    let args = pod.containers[0].args.clone().expect("args").join(" ");
    assert!(!args.contains("--tls"), "{args}");
    assert!(!pod
        .volumes
        .expect("volumes")
        .iter()
        .any(|v| v.name == "tls"));
    let ports: Vec<i32> = build_client_service(&c)
        .spec
        .expect("spec")
        .ports
        .expect("ports")
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [6379]);
}

#[test]
fn the_issued_tls_secret_has_cert_managers_layout() {
    let c = cluster("{}");
    let o = SecretOwner {
        namespace: &c.namespace,
        cluster: &c.name,
        owner: c.owner_reference(),
    };
    let ca = crate::operator::certs::issue_ca("users").expect("ca");
    let node = crate::operator::certs::issue_node_cert(&ca, &["users.prod.svc".into()], &[])
        .expect("leaf");
    let s = build_tls_secret(&o, &ca, &node);
    assert_eq!(s.metadata.name.as_deref(), Some("users-tls"));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    let d = s.string_data.expect("data");
    assert_eq!(d["tls.crt"], node.cert_pem);
    assert_eq!(d["tls.key"], node.key_pem);
    assert_eq!(d["ca.crt"], ca.cert_pem);
}
