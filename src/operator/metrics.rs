//! Operator metrics (Prometheus text) and the small HTTP server that serves
//! `/metrics`, `/healthz` and `/readyz`. Labels are bounded: error
//! categories are a fixed enum, never a message. The backup metrics are the
//! one per-cluster family (`namespace`, `cluster` labels: one series set per
//! DatabaseCluster with `spec.backup`, removed when it is deleted).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Why a reconcile failed; one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    Kube,
    Node,
    Conflict,
    Finalizer,
    Other,
}

impl ErrorCategory {
    const ALL: [ErrorCategory; 5] = [
        Self::Kube,
        Self::Node,
        Self::Conflict,
        Self::Finalizer,
        Self::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kube => "kube",
            Self::Node => "node",
            Self::Conflict => "conflict",
            Self::Finalizer => "finalizer",
            Self::Other => "other",
        }
    }
}

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    reconciles_ok: AtomicU64,
    reconciles_err: AtomicU64,
    errors: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    topology_pushes: AtomicU64,
    reshard_slots: AtomicU64,
    reshard_moves_ok: AtomicU64,
    reshard_moves_failed: AtomicU64,
    pub leader: AtomicBool,
    pub ready: AtomicBool,
    /// Per cluster (namespace, name).
    backups: Mutex<BTreeMap<(String, String), ClusterBackups>>,
}

/// One cluster's backup figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterBackups {
    /// Of the last successful backup (None: none seen).
    pub last_success_seconds: Option<f64>,
    pub last_size_bytes: Option<u64>,
    pub last_duration_seconds: Option<f64>,
    /// Backup Jobs seen finishing by this operator process.
    pub succeeded: u64,
    pub failed: u64,
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, error: Option<ErrorCategory>) {
        match error {
            None => self.reconciles_ok.fetch_add(1, Ordering::Relaxed),
            Some(c) => {
                self.errors[c as usize].fetch_add(1, Ordering::Relaxed);
                self.reconciles_err.fetch_add(1, Ordering::Relaxed)
            }
        };
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn topology_pushed(&self) {
        self.topology_pushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Slots whose owner a resharding move changed (counted at the flip).
    pub fn reshard_slots_moved(&self, n: u64) {
        self.reshard_slots.fetch_add(n, Ordering::Relaxed);
    }

    /// A resharding move ended: done, or failed (and planned again).
    pub fn reshard_move(&self, ok: bool) {
        let c = if ok {
            &self.reshard_moves_ok
        } else {
            &self.reshard_moves_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the gauges from a cluster's recorded status (also right after
    /// an operator restart, when the counters start over).
    pub fn backup_status(&self, namespace: &str, cluster: &str, st: &crate::api::BackupStatus) {
        let Ok(mut m) = self.backups.lock() else {
            return;
        };
        let e = m
            .entry((namespace.to_string(), cluster.to_string()))
            .or_default();
        if let Some(ok) = &st.last_successful_backup {
            e.last_success_seconds = ok
                .time
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
                .map(|t| t.as_millisecond() as f64 / 1000.0);
            e.last_size_bytes = ok.size_bytes;
            e.last_duration_seconds = ok.duration_ms.map(|d| d as f64 / 1000.0);
        }
    }

    /// Counts a backup Job that finished.
    pub fn backup_finished(&self, namespace: &str, cluster: &str, succeeded: bool) {
        let Ok(mut m) = self.backups.lock() else {
            return;
        };
        let e = m
            .entry((namespace.to_string(), cluster.to_string()))
            .or_default();
        if succeeded {
            e.succeeded += 1;
        } else {
            e.failed += 1;
        }
    }

    /// Drops a deleted cluster's series.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        if let Ok(mut m) = self.backups.lock() {
            m.remove(&(namespace.to_string(), cluster.to_string()));
        }
    }

    pub fn cluster_backups(&self, namespace: &str, cluster: &str) -> Option<ClusterBackups> {
        self.backups
            .lock()
            .ok()?
            .get(&(namespace.to_string(), cluster.to_string()))
            .cloned()
    }

    fn render_backups(&self, o: &mut String) {
        let Ok(m) = self.backups.lock() else {
            return;
        };
        let families: [(&str, &str, &str); 4] = [
            (
                "tessera_backup_last_success_timestamp_seconds",
                "gauge",
                "When the last successful backup finished (Unix time).",
            ),
            (
                "tessera_backup_last_size_bytes",
                "gauge",
                "Bytes the last successful backup copied (snapshots and new log segments).",
            ),
            (
                "tessera_backup_last_duration_seconds",
                "gauge",
                "How long the last successful backup took.",
            ),
            (
                "tessera_backups_total",
                "counter",
                "Backup jobs seen finishing, by result.",
            ),
        ];
        for (name, kind, help) in families {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((ns, cluster), b) in m.iter() {
                let l = format!("namespace=\"{ns}\",cluster=\"{cluster}\"");
                let v = match name {
                    "tessera_backup_last_success_timestamp_seconds" => b.last_success_seconds,
                    "tessera_backup_last_size_bytes" => b.last_size_bytes.map(|v| v as f64),
                    "tessera_backup_last_duration_seconds" => b.last_duration_seconds,
                    _ => {
                        let _ = writeln!(o, "{name}{{{l},result=\"succeeded\"}} {}", b.succeeded);
                        let _ = writeln!(o, "{name}{{{l},result=\"failed\"}} {}", b.failed);
                        continue;
                    }
                };
                if let Some(v) = v {
                    let _ = writeln!(o, "{name}{{{l}}} {v}");
                }
            }
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::with_capacity(2048);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(o, "# HELP tessera_operator_reconciles_total Reconciles finished, by result.\n# TYPE tessera_operator_reconciles_total counter");
        let _ = writeln!(
            o,
            "tessera_operator_reconciles_total{{result=\"ok\"}} {}",
            r(&self.reconciles_ok)
        );
        let _ = writeln!(
            o,
            "tessera_operator_reconciles_total{{result=\"error\"}} {}",
            r(&self.reconciles_err)
        );
        let _ = writeln!(o, "# HELP tessera_operator_reconcile_errors_total Failed reconciles, by category.\n# TYPE tessera_operator_reconcile_errors_total counter");
        for c in ErrorCategory::ALL {
            let _ = writeln!(
                o,
                "tessera_operator_reconcile_errors_total{{category=\"{}\"}} {}",
                c.as_str(),
                r(&self.errors[c as usize])
            );
        }
        let _ = writeln!(o, "# HELP tessera_operator_reconcile_duration_seconds Time one reconcile took.\n# TYPE tessera_operator_reconcile_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "tessera_operator_reconcile_duration_seconds_bucket{{le=\"{b}\"}} {}",
                r(&self.buckets[i])
            );
        }
        let _ = writeln!(
            o,
            "tessera_operator_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            r(&self.count)
        );
        let _ = writeln!(
            o,
            "tessera_operator_reconcile_duration_seconds_sum {}",
            r(&self.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "tessera_operator_reconcile_duration_seconds_count {}",
            r(&self.count)
        );
        let _ = writeln!(o, "# HELP tessera_operator_topology_pushes_total Topology documents pushed to nodes.\n# TYPE tessera_operator_topology_pushes_total counter\ntessera_operator_topology_pushes_total {}", r(&self.topology_pushes));
        let _ = writeln!(o, "# HELP tessera_operator_reshard_slots_moved_total Slots whose owner a resharding move changed.\n# TYPE tessera_operator_reshard_slots_moved_total counter\ntessera_operator_reshard_slots_moved_total {}", r(&self.reshard_slots));
        let _ = writeln!(o, "# HELP tessera_operator_reshard_moves_total Resharding slot moves that ended, by result (failed moves are planned again).\n# TYPE tessera_operator_reshard_moves_total counter\ntessera_operator_reshard_moves_total{{result=\"done\"}} {}\ntessera_operator_reshard_moves_total{{result=\"failed\"}} {}", r(&self.reshard_moves_ok), r(&self.reshard_moves_failed));
        let _ = writeln!(o, "# HELP tessera_operator_leader 1 while this replica holds the lease.\n# TYPE tessera_operator_leader gauge\ntessera_operator_leader {}", self.leader.load(Ordering::Relaxed) as u8);
        let _ = writeln!(o, "# HELP tessera_operator_resident_memory_bytes Resident set size.\n# TYPE tessera_operator_resident_memory_bytes gauge\ntessera_operator_resident_memory_bytes {}", crate::node::alloc::rss_bytes());
        self.render_backups(&mut o);
        o
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn route(m: &Metrics, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, m.render()),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n"),
        // Ready once connected to the apiserver; followers are ready too
        // (they are healthy stand-bys).
        (&Method::GET, "/readyz") => {
            if m.ready.load(Ordering::Relaxed) {
                reply(StatusCode::OK, "ready\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health endpoints listening");
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = route(&m, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_and_categories_render() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(30), None);
        m.reconciled(Duration::from_millis(3), Some(ErrorCategory::Node));
        let t = m.render();
        assert!(t.contains("tessera_operator_reconciles_total{result=\"ok\"} 1"));
        assert!(t.contains("tessera_operator_reconcile_errors_total{category=\"node\"} 1"));
        assert!(t.contains("tessera_operator_reconcile_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("tessera_operator_reconcile_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(t.contains("tessera_operator_reconcile_duration_seconds_count 2"));
    }

    #[test]
    fn backup_metrics_per_cluster() {
        let m = Metrics::default();
        let st = crate::api::BackupStatus {
            last_successful_backup: Some(crate::api::BackupRef {
                id: "20260102T030405123Z".into(),
                time: "2026-01-02T03:04:07.500Z".into(),
                size_bytes: Some(4096),
                duration_ms: Some(1500),
            }),
            ..Default::default()
        };
        m.backup_status("prod", "users", &st);
        m.backup_finished("prod", "users", true);
        m.backup_finished("prod", "users", false);
        m.backup_finished("prod", "users", false);
        let t = m.render();
        let l = "namespace=\"prod\",cluster=\"users\"";
        assert!(
            t.contains(&format!(
                "tessera_backup_last_success_timestamp_seconds{{{l}}} 1767323047.5"
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!("tessera_backup_last_size_bytes{{{l}}} 4096")),
            "{t}"
        );
        assert!(
            t.contains(&format!("tessera_backup_last_duration_seconds{{{l}}} 1.5")),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "tessera_backups_total{{{l},result=\"succeeded\"}} 1"
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!("tessera_backups_total{{{l},result=\"failed\"}} 2")),
            "{t}"
        );
        m.forget_cluster("prod", "users");
        assert!(!m.render().contains("cluster=\"users\""));
    }
}
