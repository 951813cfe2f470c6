//! What every reconcile step shares: the error type, the settings, the
//! clients and the in-memory detector state. A leaf module: the pipeline
//! and the operations depend on it, it depends on neither.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
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
    pub events: Events,
    /// Failure detection shared with the health monitor (in memory on
    /// purpose: after a restart detection starts over, which only delays a
    /// failover, never causes a wrong one).
    pub detector: Arc<Detector>,
    /// Consecutive failures per cluster, for exponential back-off.
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Which clusters run on which Kubernetes node (a Node event
    /// reconciles those).
    pub hosts: Arc<super::placement::HostIndex>,
}

/// Publishes Events. kube's `Recorder` folds every repeat of (object,
/// reason, action) into the first Event's series and keeps that Event's
/// note, so a second `Autoscaled` ("2 → 1") would show as the first
/// ("1 → 2") seen twice. Here a repeat folds only when its note is the same
/// too: a different note gets a fresh `Recorder` (an empty fold cache), so
/// it becomes an Event of its own.
/// (object, reason, action), mapped to the last note and its recorder.
type EventKey = (String, String, String);

pub struct Events {
    client: Client,
    reporter: Reporter,
    last: Mutex<HashMap<EventKey, (String, Recorder)>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            last: Mutex::new(HashMap::new()),
        }
    }

    fn recorder(&self, object: &str, ev: &KubeEvent) -> Recorder {
        let note = ev.note.clone().unwrap_or_default();
        let key = (object.to_string(), ev.reason.clone(), ev.action.clone());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get(&key) {
            Some((n, r)) if *n == note => r.clone(),
            _ => {
                let r = Recorder::new(self.client.clone(), self.reporter.clone());
                last.insert(key, (note, r.clone()));
                r
            }
        }
    }
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
        let recorder = self.events.recorder(&Self::key(dbc), &ev);
        if let Err(e) = recorder.publish(&ev, &dbc.object_ref(&())).await {
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
