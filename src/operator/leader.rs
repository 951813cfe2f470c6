//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Acquire and renew are read-modify-write with the Lease's resourceVersion,
//! so two replicas can never both believe they won the same term. A leader
//! that cannot renew before its lease runs out stops reconciling and stands
//! by again (a new term starts with fresh state): a stale leader must not
//! act.
//!
//! Expiry is judged on the stand-by's own clock, as client-go does: the
//! lease has run out when the record has not changed for a whole lease
//! duration since the stand-by first saw it, so clock skew between nodes
//! cannot hand the lease over early. The leader stops acting
//! [`STEP_DOWN_MARGIN`] before that, counted from the moment it sent its
//! last successful renewal.
//!
//! Timing: the lease is short because a node lost together with the leader
//! adds the stand-by's takeover to every failover on that node (budget:
//! 10 s as a client sees it). 5 s lease, renewed every second, stand-by
//! polling every 500 ms: takeover 4.5–5.5 s after the leader stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {name}: {source}")]
    Kube { name: String, source: kube::Error },
    #[error("lease {name}: no answer within {timeout:?}")]
    Timeout { name: String, timeout: Duration },
}

/// How long before the stand-by could take over the leader stops acting.
pub const STEP_DOWN_MARGIN: Duration = Duration::from_millis(1500);
/// How often a stand-by looks at the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);

/// What a stand-by last saw of the lease record, on its own clock.
#[derive(Debug, Default)]
struct Sighting {
    record: Option<(String, Instant)>,
}

impl Sighting {
    /// Notes the record (holder and renew time) and says whether it has
    /// stood unchanged for `duration` since this replica first saw it.
    fn expired(&mut self, record: String, duration: Duration, now: Instant) -> bool {
        match &self.record {
            Some((seen, since)) if *seen == record => now.duration_since(*since) >= duration,
            _ => {
                self.record = Some((record, now));
                false
            }
        }
    }
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    sighting: Arc<Mutex<Sighting>>,
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
            lease_duration: Duration::from_secs(5),
            renew_every: Duration::from_secs(1),
            sighting: Arc::default(),
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
                let record = format!("{holder}@{}", t.0);
                let duration = Duration::from_secs(d.max(1) as u64);
                let mut sighting = self.sighting.lock().unwrap_or_else(|p| p.into_inner());
                sighting.expired(record, duration, Instant::now())
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

    /// One attempt that gives up after `timeout`: a request the apiserver
    /// never answers must not hold a leader past its deadline.
    async fn attempt(&self, timeout: Duration) -> Result<bool, LeaderError> {
        match tokio::time::timeout(timeout, self.try_acquire_or_renew()).await {
            Ok(r) => r,
            Err(_) => Err(LeaderError::Timeout {
                name: self.name.clone(),
                timeout,
            }),
        }
    }

    /// Waits until this replica holds the lease; returns when it sent the
    /// winning write (its term dates from then at the latest).
    pub async fn acquire(&self) -> Instant {
        loop {
            let sent = Instant::now();
            match self.attempt(self.renew_every).await {
                Ok(true) => return sent,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            // The stand-by's delay after the lease expires adds to every
            // failover that loses the leader with its node.
            tokio::time::sleep(STANDBY_POLL).await;
        }
    }

    /// Renews until the lease is lost (taken by another replica, or not
    /// renewed in time); returns then.
    pub async fn hold(&self, acquired: Instant) {
        let mut last = acquired;
        // Stop acting a little before the lease could be taken over.
        let deadline = self.lease_duration.saturating_sub(STEP_DOWN_MARGIN);
        loop {
            let left = deadline.saturating_sub(last.elapsed());
            tokio::time::sleep(self.renew_every.min(left)).await;
            // Counted from before the request: the renewal dates from then
            // at the latest.
            let sent = Instant::now();
            let left = deadline.saturating_sub(last.elapsed());
            if left.is_zero() {
                tracing::error!(lease = %self.name, "leader lease not renewed in time");
                return;
            }
            match self.attempt(left.min(self.renew_every)).await {
                Ok(true) => last = sent,
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "another replica holds the leader lease");
                    return;
                }
                // The deadline check at the top of the loop ends the term.
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_a_whole_duration_after_it_was_first_seen_unchanged() {
        let mut s = Sighting::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(5);
        // First sight: never expired, however old its renew time claims to be.
        assert!(!s.expired("a@1".into(), d, t0));
        assert!(!s.expired("a@1".into(), d, t0 + Duration::from_millis(4999)));
        assert!(s.expired("a@1".into(), d, t0 + d));
    }

    #[test]
    fn a_renewal_restarts_the_count() {
        let mut s = Sighting::default();
        let t0 = Instant::now();
        let d = Duration::from_secs(5);
        assert!(!s.expired("a@1".into(), d, t0));
        assert!(!s.expired("a@2".into(), d, t0 + Duration::from_secs(4)));
        assert!(!s.expired("a@2".into(), d, t0 + Duration::from_secs(8)));
        assert!(s.expired("a@2".into(), d, t0 + Duration::from_secs(9)));
        // A new holder is a new record too.
        assert!(!s.expired("b@2".into(), d, t0 + Duration::from_secs(10)));
    }
}
