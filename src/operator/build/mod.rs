//! Pure builders: `ValidatedCluster` in, Kubernetes object out. No I/O, so
//! every child is unit-tested (`tests.rs`) and server-side apply sends
//! exactly what these return. One file per concern: the StatefulSet and its
//! node container, the Services, the PodDisruptionBudget, the ConfigMap,
//! and the backup and restore Jobs (one pod template helper for both).

mod config_map;
mod jobs;
mod network_policy;
mod pdb;
mod secrets;
mod services;
mod statefulset;
#[cfg(test)]
mod tests;

pub use config_map::build_config_map;
pub use jobs::{
    build_backup_cronjob, build_backup_pvc, build_data_pvc, build_restore_job,
    build_restore_plan_job, data_claim_name, restore_job_name, restore_plan_job_name,
};
pub use network_policy::{build_network_policy, network_policy_name, OperatorPeer};
pub use pdb::{build_pdbs, primary_pdb_name};
pub use secrets::{
    auth_secret, build_auth_secret, build_internal_secret, build_tls_secret, build_user_secret,
    generated_auth_secret_name, generated_tls_secret_name, generated_user_secret_name,
    generates_auth_secret, internal_secret_name, tls_secret, user_secret, SecretOwner,
    AUTH_PASSWORD_KEY, INTERNAL_TOKEN_KEY,
};
pub use services::{build_client_service, build_headless_service, build_primary_service};
pub use statefulset::{build_statefulset, duration_ms, pod_admin_https, TLS_ADMIN_FLAG};

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
    ProjectedVolumeSource, SeccompProfile, SecretKeySelector, SecretProjection, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeProjection, VolumeResourceRequirements, WeightedPodAffinityTerm,
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
/// Probes and `/metrics` only (plain HTTP), apart from the admin port so
/// the NetworkPolicy can admit scrapers here and nowhere else.
pub const METRICS_PORT: i32 = 9122;
/// TLS client port (with `spec.tls.enabled`), as Redis' `tls-port`.
pub const REDIS_TLS_PORT: i32 = 6380;
/// Where node pods find the TLS certificate, key and CA.
pub const TLS_DIR: &str = "/etc/tessera/tls";
/// The image's user (see the Dockerfile).
pub const RUN_AS: i64 = 10001;
const CONFIG_DIR: &str = "/etc/tessera/config";
const AUTH_DIR: &str = "/etc/tessera/auth";
/// Where node pods find the application users' passwords (one file each).
const USERS_DIR: &str = "/etc/tessera/users";
/// Where node pods and backup Jobs find the admin token.
pub const INTERNAL_DIR: &str = "/etc/tessera/internal";

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
