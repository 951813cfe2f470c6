//! What every reconcile step shares: the error type, the settings, the
//! clients and the in-memory detector state. A leaf module: the pipeline
//! and the operations depend on it, it depends on neither.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::detector::Detector;
use super::metrics::{ErrorCategory, Metrics};
use crate::api::DatabaseCluster;
use crate::client::NodeClient;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the status changed underneath (another writer): {0}")]
    Conflict(kube::Error),
    #[error("pushing the topology: {0}")]
    Node(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kube,
            Error::Conflict(_) => ErrorCategory::Conflict,
            Error::Node(_) => ErrorCategory::Node,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => ErrorCategory::Finalizer,
            },
            Error::Other(_) => ErrorCategory::Other,
        }
    }
}

/// Operator settings (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Image for nodes whose spec names none.
    pub default_image: String,
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// The operator's own namespace: its pods are the ones cluster
    /// NetworkPolicies admit to the nodes' admin port.
    pub operator_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub metrics_addr: SocketAddr,
    /// Skip leader election (a single replica, or local development).
    pub no_leader_election: bool,
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub nodes: NodeClient,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Failure detection shared with the health monitor (in memory on
    /// purpose: after a restart detection starts over, which only delays a
    /// failover, never causes a wrong one).
    pub detector: Arc<Detector>,
    /// Consecutive failures per cluster, for exponential back-off.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub async fn event(
        &self,
        dbc: &DatabaseCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &dbc.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "failed to publish an event");
        }
    }

    pub fn key(dbc: &DatabaseCluster) -> String {
        format!("{}/{}", dbc.namespace().unwrap_or_default(), dbc.name_any())
    }
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
