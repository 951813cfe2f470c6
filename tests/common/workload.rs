//! A client workload for the end-to-end suites: a writer through the
//! `redis` crate's cluster client that records every acknowledged `SET`,
//! and the read-back that finds which acknowledged writes were lost.
//! Used by `tests/e2e_failover.rs` and `tests/e2e_nodes.rs` (each includes
//! `common/k8s.rs` as `k8s` beside this module).
// Each suite uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::k8s::{json, kubectl_in, rt, wait_until, E2E_AUTH_SPEC, R};

/// A cluster's status.
pub fn status_of(ns: &str, name: &str) -> R<Value> {
    Ok(json(&["get", "dbc", name, "-n", ns])?["status"].clone())
}

/// Ready at its generation, no failover running, every member ready.
pub fn is_ready(ns: &str, name: &str, nodes: u32) -> R<bool> {
    let d = json(&["get", "dbc", name, "-n", ns])?;
    let generation = d["metadata"]["generation"].as_i64();
    let s = &d["status"];
    let ready = s["conditions"].as_array().into_iter().flatten().any(|c| {
        c["type"] == "Ready"
            && c["status"] == "True"
            && c["observedGeneration"].as_i64() == generation
    });
    let busy = s["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| !s["failover"].is_null());
    Ok(ready && !busy && s["ready"] == format!("{nodes}/{nodes}").as_str())
}

/// Applies a `DatabaseCluster` (the suites' password, 32 Mi volumes,
/// `extra` spec lines) and waits until it is Ready.
pub fn create_cluster(
    ns: &str,
    name: &str,
    shards: u32,
    replicas: u32,
    level: &str,
    extra: &str,
) -> R<()> {
    let m = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: DatabaseCluster\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{E2E_AUTH_SPEC}  shards: {shards}\n  replicas: {replicas}\n  consistency:\n    level: {level}\n  storage:\n    size: 32Mi\n{extra}"
    );
    kubectl_in(&["apply", "-f", "-"], Some(&m))?;
    wait_until("Ready", Duration::from_secs(420), || {
        is_ready(ns, name, shards * replicas)
    })?;
    Ok(())
}

pub fn member_ips(st: &Value) -> Vec<String> {
    let mut out = vec![];
    for s in st["shards"].as_array().into_iter().flatten() {
        if let Some(ip) = s["primary"]["ip"].as_str() {
            out.push(ip.to_string());
        }
        for r in s["replicas"].as_array().into_iter().flatten() {
            if let Some(ip) = r["ip"].as_str() {
                out.push(ip.to_string());
            }
        }
    }
    out
}

/// A hash tag whose slot belongs to shard `shard` of `st`.
pub fn tag_for_shard(st: &Value, shard: usize) -> R<String> {
    let range = st["shards"][shard]["slots"][0]
        .as_str()
        .ok_or("no slots")?
        .to_string();
    let (a, b) = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .ok_or(format!("slot range {range}"))?;
    for i in 0..100_000 {
        let t = format!("t{i}");
        let slot = tessera::node::slots::key_slot(t.as_bytes());
        if (a..=b).contains(&slot) {
            return Ok(t);
        }
    }
    Err("no tag found".into())
}

#[derive(Default)]
pub struct Log {
    pub acked: Vec<(u64, Instant)>,
    pub errors: usize,
    pub last_error: String,
}

/// Writes `{tag}:i = v-i` in a loop, one at a time, recording every
/// acknowledged write. A connection that keeps failing is rebuilt from the
/// cluster's current members (what a long-running application does).
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Log>>,
    handle: Option<std::thread::JoinHandle<()>>,
    tag: String,
}

impl Writer {
    /// The suites' writer: 2 s per write, a new connection after 3
    /// failures in a row.
    pub fn start(ns: &str, cluster: &str, tag: &str) -> Writer {
        Self::start_with(ns, cluster, tag, Duration::from_secs(2), 3)
    }

    /// A writer with its response timeout and the failures in a row after
    /// which it connects again (asking the cluster for its slots afresh).
    pub fn start_with(
        ns: &str,
        cluster: &str,
        tag: &str,
        timeout: Duration,
        reconnect_after: u32,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let (s, l, c, t, ns) = (
            stop.clone(),
            log.clone(),
            cluster.to_string(),
            tag.to_string(),
            ns.to_string(),
        );
        let handle = std::thread::spawn(move || {
            rt().block_on(async move {
                let mut conn = None;
                let mut i = 0u64;
                let mut failures = 0u32;
                while !s.load(Ordering::Relaxed) {
                    if conn.is_none() || failures >= reconnect_after {
                        let seeds = status_of(&ns, &c)
                            .map(|st| member_ips(&st))
                            .unwrap_or_default();
                        let connect = super::k8s::cluster_conn(
                            &seeds,
                            Duration::from_millis(500),
                            timeout,
                            Some(1),
                        );
                        conn = tokio::time::timeout(Duration::from_secs(2), connect)
                            .await
                            .ok()
                            .and_then(|r| r.ok());
                        failures = 0;
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                    let Some(cn) = conn.as_mut() else { continue };
                    i += 1;
                    let r = tokio::time::timeout(
                        timeout,
                        redis::cmd("SET")
                            .arg(format!("{{{t}}}:{i}"))
                            .arg(format!("v-{i}"))
                            .query_async::<()>(cn),
                    )
                    .await;
                    {
                        let mut g = l.lock().unwrap_or_else(|e| e.into_inner());
                        match r {
                            Ok(Ok(())) => {
                                g.acked.push((i, Instant::now()));
                                failures = 0;
                            }
                            Ok(Err(e)) => {
                                g.errors += 1;
                                g.last_error = e.to_string();
                                failures += 1;
                            }
                            Err(_) => {
                                g.errors += 1;
                                g.last_error = "timeout".into();
                                failures += 1;
                            }
                        }
                    }
                    if failures > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        });
        Writer {
            stop,
            log,
            handle: Some(handle),
            tag: tag.to_string(),
        }
    }

    /// Waits (≤ 60 s) until writes are acknowledged again after `t0`.
    pub fn wait_writable(&self, t0: Instant) -> R<Duration> {
        wait_until("writes acknowledged again", Duration::from_secs(60), || {
            Ok(self.time_to_writable(t0).is_some()
                && self
                    .log
                    .lock()
                    .map(|g| {
                        g.acked
                            .last()
                            .is_some_and(|(_, at)| at.elapsed() < Duration::from_millis(300))
                    })
                    .unwrap_or(false)
                && t0.elapsed() > Duration::from_secs(3))
        })
    }

    pub fn acked_count(&self) -> usize {
        self.log.lock().map(|g| g.acked.len()).unwrap_or(0)
    }

    /// Every acknowledged write so far: (index, when its `OK` arrived).
    pub fn acked_log(&self) -> Vec<(u64, Instant)> {
        self.log.lock().map(|g| g.acked.clone()).unwrap_or_default()
    }

    /// Time from `t0` until writes were acknowledged again: the end of the
    /// longest gap between acknowledgements after `t0`.
    pub fn time_to_writable(&self, t0: Instant) -> Option<Duration> {
        let g = self.log.lock().ok()?;
        let mut prev = t0;
        let mut worst: Option<Instant> = None;
        let mut gap = Duration::ZERO;
        for &(_, at) in g.acked.iter().filter(|(_, at)| *at >= t0) {
            if at - prev > gap {
                gap = at - prev;
                worst = Some(at);
            }
            prev = at;
        }
        worst.map(|w| w - t0)
    }

    pub fn stop(mut self) -> (Vec<u64>, usize, String, String) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (
            g.acked.iter().map(|(i, _)| *i).collect(),
            g.errors,
            g.last_error.clone(),
            self.tag.clone(),
        )
    }
}

/// Which acknowledged writes cannot be read back, in write order.
pub fn lost_ids(ns: &str, cluster: &str, tag: &str, acked: &[u64]) -> R<Vec<u64>> {
    let seeds = member_ips(&status_of(ns, cluster)?);
    rt().block_on(async {
        let con = super::k8s::cluster_conn(
            &seeds,
            Duration::from_millis(500),
            Duration::from_secs(2),
            Some(1),
        )
        .await?;
        let mut lost = vec![];
        for chunk in acked.chunks(200) {
            let futs = chunk.iter().map(|i| {
                let mut c = con.clone();
                async move {
                    let mut last = String::new();
                    for _ in 0..5 {
                        match redis::cmd("GET")
                            .arg(format!("{{{tag}}}:{i}"))
                            .query_async::<Option<String>>(&mut c)
                            .await
                        {
                            Ok(v) => {
                                return Ok((*i, v.as_deref() == Some(format!("v-{i}").as_str())))
                            }
                            Err(e) => last = e.to_string(),
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(format!("GET {{{tag}}}:{i}: {last}"))
                }
            });
            for r in futures::future::join_all(futs).await {
                let (i, intact) = r?;
                if !intact {
                    lost.push(i);
                }
            }
        }
        lost.sort_unstable();
        Ok(lost)
    })
}
