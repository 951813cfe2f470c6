//! Turns a `DatabaseCluster` plus what is already running into a
//! [`ValidatedCluster`]: every decision the builders need, checked once.
//!
//! The apiserver's CEL rules refuse most bad manifests at apply time; this
//! re-checks what CEL cannot see (a full cron parse, the shard count against
//! the bootstrapped topology) and objects created before a rule existed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::{DatabaseCluster, DatabaseClusterSpec, MAX_SHARDS};

/// Longest cluster name: pod names are `<name>-shard-<i>-<ordinal>` and the
/// StatefulSet controller adds a hash label that must stay within 63 bytes.
pub const MAX_NAME_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The spec can never work as written; waits for the user to change it.
    #[error("{message}")]
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// The object lacks what the apiserver always sets (name, uid).
    #[error("the object has no {0}")]
    Incomplete(&'static str),
}

impl ValidationError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { reason, .. } => reason,
            Self::Incomplete(_) => "Incomplete",
        }
    }
}

fn invalid(reason: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        reason,
        message: message.into(),
    }
}

/// A warning that does not stop the reconcile but shows in the conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Everything the builders read. Builders are pure functions of this.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub spec: DatabaseClusterSpec,
    /// Shards the spec asks for (the count resharding works towards).
    pub shards: u32,
    /// Shards whose StatefulSets exist: `shards`, or more while a scale-in
    /// drains the ones being removed.
    pub running_shards: u32,
    /// Nodes per shard (primary included).
    pub replicas: u32,
    pub image: String,
    /// Claim size per shard: a StatefulSet's claim template is immutable, so
    /// an existing one keeps its size (volumes grow by patching the PVCs).
    pub claim_sizes: Vec<String>,
    /// Changes refused but not fatal (e.g. a shard count change).
    pub refusals: Vec<Refusal>,
}

/// What validation needs to know about the running cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Existing {
    /// Shards in the bootstrapped topology (0: not bootstrapped).
    pub bootstrapped_shards: u32,
    /// Claim template size of each existing StatefulSet, by shard index.
    pub claim_sizes: BTreeMap<u32, String>,
}

pub fn validate(
    dbc: &DatabaseCluster,
    default_image: &str,
    existing: &Existing,
) -> Result<ValidatedCluster, ValidationError> {
    let name = dbc
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::Incomplete("name"))?;
    let namespace = dbc
        .namespace()
        .ok_or(ValidationError::Incomplete("namespace"))?;
    let uid = dbc
        .metadata
        .uid
        .clone()
        .ok_or(ValidationError::Incomplete("uid"))?;
    let spec = dbc.spec.clone();
    check_spec(&name, &spec)?;
    let image = spec
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| default_image.to_string());
    if image.is_empty() {
        return Err(invalid(
            "NoImage",
            "no image: set spec.image, or TESSERA_DEFAULT_IMAGE on the operator",
        ));
    }

    let mut refusals = Vec::new();
    let shards = spec.shards as u32;
    let running_shards = shards.max(existing.bootstrapped_shards);
    let replicas = kept_replicas(dbc, &spec, &mut refusals);
    let claim_sizes = (0..running_shards)
        .map(|i| {
            existing
                .claim_sizes
                .get(&i)
                .cloned()
                .unwrap_or_else(|| spec.storage.size.clone())
        })
        .collect();

    Ok(ValidatedCluster {
        generation: dbc.metadata.generation.unwrap_or(0),
        replicas,
        name,
        namespace,
        uid,
        spec,
        shards,
        running_shards,
        image,
        claim_sizes,
        refusals,
    })
}

/// The checks CEL cannot express (or an older apiserver skipped).
fn check_spec(name: &str, spec: &DatabaseClusterSpec) -> Result<(), ValidationError> {
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            "NameTooLong",
            format!("the cluster name is {} characters; use at most {MAX_NAME_LEN} (pod names are built from it)", name.len()),
        ));
    }
    if !(1..=MAX_SHARDS).contains(&spec.shards) {
        return Err(invalid(
            "InvalidShards",
            format!(
                "shards is {}; set it between 1 and {MAX_SHARDS}",
                spec.shards
            ),
        ));
    }
    if spec.replicas < 1 {
        return Err(invalid(
            "InvalidReplicas",
            format!("replicas is {}; set it to 1 or more", spec.replicas),
        ));
    }
    if spec.consistency.level != crate::api::ConsistencyLevel::Eventual && spec.replicas < 2 {
        return Err(invalid(
            "InsufficientReplicas",
            format!(
                "consistency.level {} needs replicas >= 2; set replicas to 2 or more, or use eventual",
                spec.consistency.level.as_str()
            ),
        ));
    }
    if let Some(p) = spec.consistency.quorum_percentage {
        if !(1..=100).contains(&p) {
            return Err(invalid(
                "InvalidQuorum",
                format!("consistency.quorumPercentage is {p}; set it between 1 and 100"),
            ));
        }
    }
    if let Some(b) = &spec.backup {
        check_cron(&b.schedule).map_err(|e| {
            invalid(
                "InvalidBackupSchedule",
                format!("backup.schedule {:?}: {e}", b.schedule),
            )
        })?;
    }
    if let Some(fb) = spec.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref()) {
        if fb.source.volume.is_some() == fb.source.s3.is_some() {
            return Err(invalid(
                "InvalidRestoreSource",
                "bootstrap.fromBackup.source takes exactly one of volume (an existing backup PersistentVolumeClaim) and s3",
            ));
        }
        if let Some(t) = &fb.target_time {
            crate::backup::parse_time(t).map_err(|e| {
                invalid(
                    "InvalidRestoreTargetTime",
                    format!("bootstrap.fromBackup.targetTime: {e}"),
                )
            })?;
        }
    }
    if let Some(a) = &spec.auth {
        if a.secret_name.is_empty() {
            return Err(invalid(
                "InvalidAuth",
                "auth.secretName is empty; name a Secret in this namespace",
            ));
        }
    }
    Ok(())
}

/// Nodes per shard: the spec's, unless scaling down would remove a primary.
fn kept_replicas(
    dbc: &DatabaseCluster,
    spec: &DatabaseClusterSpec,
    refusals: &mut Vec<Refusal>,
) -> u32 {
    // Scaling down removes the highest ordinals; a primary there (moved by
    // a failover or switchover) must not go with them. Keep enough nodes
    // for every primary and say why.
    let mut replicas = spec.replicas as u32;
    let mut blocked: Vec<String> = Vec::new();
    for sh in dbc.status.iter().flat_map(|s| s.shards.iter()) {
        let Some(p) = &sh.primary else { continue };
        let Some(ord) = p
            .pod
            .rsplit_once('-')
            .and_then(|(_, o)| o.parse::<u32>().ok())
        else {
            continue;
        };
        if ord >= spec.replicas as u32 {
            replicas = replicas.max(ord + 1);
            blocked.push(format!("{} (primary of {})", p.pod, sh.name));
        }
    }
    if !blocked.is_empty() {
        refusals.push(Refusal {
            reason: "ScaleDownWouldRemovePrimary",
            message: format!(
                "replicas {} would remove {}; keeping {replicas} nodes per shard until a switchover moves the primary to an ordinal below {}",
                spec.replicas,
                blocked.join(", "),
                spec.replicas
            ),
        });
    }
    replicas
}

impl ValidatedCluster {
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: DatabaseCluster::api_version(&()).into_owned(),
            kind: DatabaseCluster::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn shard_name(&self, shard: u32) -> String {
        shard_name(&self.name, shard)
    }

    /// The same cluster run with `n` shards: what a restore bootstraps
    /// with (the backup's count); resharding then goes to the spec's.
    pub fn with_shards(&self, n: u32) -> ValidatedCluster {
        let mut v = self.clone();
        v.shards = n;
        v.running_shards = n;
        v.claim_sizes
            .resize(n as usize, self.spec.storage.size.clone());
        v
    }
}

/// `<cluster>-shard-<i>`: the StatefulSet, headless Service and PDB name.
pub fn shard_name(cluster: &str, shard: u32) -> String {
    format!("{cluster}-shard-{shard}")
}

/// Checks a 5-field cron expression or macro, field by field.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let e = expr.trim();
    if e.starts_with('@') {
        return match e {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ => Err("unknown macro; use @hourly, @daily, @weekly, @monthly or @yearly".into()),
        };
    }
    let fields: Vec<&str> = e.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "has {} fields; a schedule has 5 (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\"",
            fields.len()
        ));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day-of-month", 1, 31, &[]),
        ("month", 1, 12, &MONTHS),
        ("day-of-week", 0, 7, &DAYS),
    ];
    for (field, (what, lo, hi, names)) in fields.iter().zip(specs) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(s) = step {
                match s.parse::<u32>() {
                    Ok(n) if n >= 1 && n <= hi => {}
                    _ => {
                        return Err(format!(
                            "{what} step {s:?} must be a number between 1 and {hi}"
                        ))
                    }
                }
            }
            if range == "*" || (range == "?" && (what == "day-of-month" || what == "day-of-week")) {
                continue;
            }
            let value = |v: &str| -> Result<u32, String> {
                if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
                    return Ok(i as u32 + if what == "month" { 1 } else { 0 });
                }
                match v.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => Err(format!("{what} value {v:?} must be between {lo} and {hi}")),
                }
            };
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("{what} range {range:?} runs backwards"));
                    }
                }
                None => {
                    value(range)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackupSpec, ConsistencyLevel};

    fn dbc(spec: DatabaseClusterSpec) -> DatabaseCluster {
        let mut d = DatabaseCluster::new("users", spec);
        d.metadata.namespace = Some("ns".into());
        d.metadata.uid = Some("uid-1".into());
        d
    }

    fn spec() -> DatabaseClusterSpec {
        serde_json::from_str("{}").expect("defaults")
    }

    #[test]
    fn defaults_validate() {
        let v = validate(&dbc(spec()), "img:1", &Existing::default()).expect("valid");
        assert_eq!((v.shards, v.replicas, v.image.as_str()), (3, 3, "img:1"));
        assert_eq!(v.claim_sizes, vec!["1Gi"; 3]);
        assert!(v.refusals.is_empty());
    }

    #[test]
    fn quorum_needs_two_replicas() {
        let mut s = spec();
        s.replicas = 1;
        s.consistency.level = ConsistencyLevel::Quorum;
        let e = validate(&dbc(s), "img", &Existing::default()).unwrap_err();
        assert_eq!(e.reason(), "InsufficientReplicas");
        assert!(e.to_string().contains("set replicas to 2 or more"));
    }

    #[test]
    fn a_shard_count_change_is_accepted_and_shards_being_removed_keep_running() {
        let mut s = spec();
        s.shards = 5;
        let existing = Existing {
            bootstrapped_shards: 3,
            claim_sizes: [(0, "2Gi".to_string())].into(),
        };
        let v = validate(&dbc(s.clone()), "img", &existing).expect("valid");
        assert_eq!((v.shards, v.running_shards), (5, 5));
        assert!(v.refusals.is_empty());
        assert_eq!(v.claim_sizes, vec!["2Gi", "1Gi", "1Gi", "1Gi", "1Gi"]);
        // Scaling in: the shards being drained keep their StatefulSets.
        s.shards = 2;
        let v = validate(&dbc(s), "img", &existing).expect("valid");
        assert_eq!((v.shards, v.running_shards), (2, 3));
        assert_eq!(v.claim_sizes.len(), 3);
    }

    #[test]
    fn scale_down_keeps_a_moved_primary() {
        let mut s = spec();
        s.replicas = 2;
        let mut d = dbc(s);
        d.status = Some(crate::api::DatabaseClusterStatus {
            epoch: 3,
            shards: vec![
                crate::api::ShardStatus {
                    name: "users-shard-0".into(),
                    primary: Some(crate::api::NodeStatus {
                        pod: "users-shard-0-0".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                crate::api::ShardStatus {
                    name: "users-shard-1".into(),
                    primary: Some(crate::api::NodeStatus {
                        pod: "users-shard-1-2".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let v = validate(&d, "img", &Existing::default()).expect("valid");
        assert_eq!(v.replicas, 3);
        assert_eq!(v.refusals[0].reason, "ScaleDownWouldRemovePrimary");
        assert!(v.refusals[0].message.contains("users-shard-1-2"));
    }

    #[test]
    fn cron_checks() {
        for ok in [
            "0 * * * *",
            "0 */6 * * *",
            "@hourly",
            "15 3 * * mon-fri",
            "0 0 1 jan,jul *",
        ] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
        for bad in [
            "every_6_hours",
            "61 * * * *",
            "* * *",
            "0 25 * * *",
            "@sometimes",
            "0 */0 * * *",
        ] {
            assert!(check_cron(bad).is_err(), "{bad}");
        }
        let mut s = spec();
        s.backup = Some(BackupSpec {
            schedule: "0 99 * * *".into(),
            retention: Some("30d".into()),
            keep: None,
            target: Default::default(),
            suspend: false,
        });
        let e = validate(&dbc(s), "img", &Existing::default()).unwrap_err();
        assert_eq!(e.reason(), "InvalidBackupSchedule");
    }

    #[test]
    fn missing_image_is_invalid() {
        let e = validate(&dbc(spec()), "", &Existing::default()).unwrap_err();
        assert_eq!(e.reason(), "NoImage");
    }
}
