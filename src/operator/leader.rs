//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Acquire and renew are read-modify-write with the Lease's resourceVersion,
//! so two replicas can never both believe they won the same term. A leader
//! that cannot renew before its lease runs out stops reconciling (the
//! process exits and restarts as a follower): a stale leader must not act.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {name}: {source}")]
    Kube { name: String, source: kube::Error },
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            lease_duration: Duration::from_secs(8),
            renew_every: Duration::from_secs(2),
        }
    }

    /// One attempt: take the lease if free or expired, renew it if ours.
    /// `Ok(true)` when we hold it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let err = |source| LeaderError::Kube {
            name: self.name.clone(),
            source,
        };
        let dur = self.lease_duration.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(err)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(dur),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(err(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(t), Some(d)) => {
                let until = t.0 + k8s_openapi::jiff::SignedDuration::from_secs(d as i64);
                until < k8s_openapi::jiff::Timestamp::now()
            }
            _ => true,
        };
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(dur);
        spec.renew_time = Some(now());
        // `replace` carries the resourceVersion we read: a concurrent writer
        // makes this fail with 409 instead of both winning.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !ours {
                    tracing::info!(lease = %self.name, identity = %self.identity, previous = %holder, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            // The stand-by's delay after the lease expires adds to every
            // failover that loses the leader with its node.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Renews until the lease is lost (taken by another replica, or not
    /// renewed in time); returns then.
    pub async fn hold(&self) {
        let mut last = Instant::now();
        // Stop acting a little before the lease could be taken over.
        let deadline = self.lease_duration.saturating_sub(Duration::from_secs(2));
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last = Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "another replica holds the leader lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease failed");
                    if last.elapsed() >= deadline {
                        tracing::error!(lease = %self.name, "leader lease not renewed in time");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up on shutdown so a stand-by takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader lease failed"),
        }
    }
}
