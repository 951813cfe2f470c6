//! The in-memory state of failure detection. A leaf module: the context
//! holds one, failover detection and the health monitor use it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// What failure detection remembers between reconciles, shared by the
/// reconcile and the health monitor (`operations::failover::monitor`). In memory on purpose: after an
/// operator restart detection starts over, which only delays a failover,
/// never causes a wrong one.
#[derive(Debug, Default)]
pub struct Detector {
    /// When each shard's primary was first seen failed (`ns/cluster/shard`).
    pub(crate) suspect: Mutex<HashMap<String, Instant>>,
    /// Primaries (per shard epoch) whose lease was seen held at least once.
    pub(crate) lease_seen: Mutex<HashSet<String>>,
    /// When the monitor last woke the controller for a lost lease.
    pub(crate) lease_nudged: Mutex<HashMap<String, Instant>>,
    /// Members last seen refused by their primary as ahead of it
    /// (`ns/cluster/pod`): the Event goes out once per refusal, not per
    /// reconcile.
    pub(crate) refused_ahead: Mutex<HashSet<String>>,
    /// When each replica (`ns/cluster/pod`) was first seen not answering.
    pub(crate) silent: Mutex<HashMap<String, Instant>>,
}

impl Detector {
    /// The replicas silent for at least `window`, from this observation:
    /// `(pod, answering)` for every replica of the recorded topology. A
    /// replica that answers is forgotten; one seen silent for the first
    /// time starts its clock now.
    pub fn departed<'a>(
        &self,
        cluster: &str,
        replicas: impl Iterator<Item = (&'a str, bool)>,
        window: std::time::Duration,
        now: Instant,
    ) -> Vec<String> {
        let mut g = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("{cluster}/");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (pod, answering) in replicas {
            let key = format!("{prefix}{pod}");
            seen.insert(key.clone());
            if answering {
                g.remove(&key);
                continue;
            }
            let since = *g.entry(key).or_insert(now);
            if now.duration_since(since) >= window {
                out.push(pod.to_string());
            }
        }
        // Members no longer in the topology start over when they return.
        g.retain(|k, _| !k.starts_with(&prefix) || seen.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn a_replica_departs_after_the_window_of_silence_and_returns_when_it_answers() {
        let d = super::Detector::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        let obs = |a: bool, b: bool| vec![("c-0-1", a), ("c-0-2", b)];
        assert!(d
            .departed("ns/c", obs(true, false).into_iter(), w, t0)
            .is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert!(d
            .departed("ns/c", obs(true, false).into_iter(), w, t1)
            .is_empty());
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(
            d.departed("ns/c", obs(true, false).into_iter(), w, t2),
            vec!["c-0-2"]
        );
        // It answers: a member again, and its next silence starts over.
        assert!(d
            .departed("ns/c", obs(true, true).into_iter(), w, t2)
            .is_empty());
        let t3 = t0 + Duration::from_secs(3);
        assert!(d
            .departed("ns/c", obs(true, false).into_iter(), w, t3)
            .is_empty());
        // Another cluster's clock is its own.
        assert!(d
            .departed("ns/d", obs(false, false).into_iter(), w, t3)
            .is_empty());
    }
}
