//! The chart's alerting rules and Grafana dashboard against what Tessera
//! really exports: every query parses with Prometheus' own parser
//! (scripts/promql-check.sh), every metric it reads is exported by a running
//! primary, a running replica or the operator, and every metric they export
//! is on the dashboard or in a rule. Every alert fires, in Prometheus'
//! engine, on the series it describes and stays quiet on others. The chart
//! renders the monitoring objects from those very files.

#[path = "common/chart.rs"]
mod chart;
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http, http_get, TestNode};
use serde_json::json;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Metric names a Prometheus scrape of `text` yields: every `# TYPE`
/// family, with a histogram's `_bucket`, `_sum` and `_count` series.
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (w.next(), w.next(), w.next(), w.next())
        {
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            out.insert(name.to_string());
        }
    }
    out
}

fn node_id(i: usize) -> String {
    format!("{:040x}", 0xd00d00 + i)
}

fn metrics_of(node: &TestNode) -> String {
    let (status, body) = http_get(node.admin_port, "/metrics").expect("the admin port answers");
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// A primary and a linked replica, as the operator sets them up; the
/// replica only exports its link's gauges once it follows.
fn primary_and_replica() -> (TestNode, TestNode) {
    let start = |i: usize| {
        let id = node_id(i);
        TestNode::start(&[
            "--node-id",
            &id,
            "--consistency",
            "quorum",
            "--replicas",
            "1",
        ])
    };
    let (p, r) = (start(0), start(1));
    let post = |n: &TestNode, path: &str, body: serde_json::Value| {
        let (s, b) = http(n.admin_port, "POST", path, &body.to_string()).expect("admin answers");
        assert_eq!(s, 200, "{path}: {b}");
    };
    post(&p, "/v1/promote", json!({"epoch": 1, "replicas": 1}));
    post(
        &r,
        "/v1/follow",
        json!({"epoch": 1, "primary": {"id": node_id(0), "host": "127.0.0.1", "port": p.port}}),
    );
    let end = Instant::now() + Duration::from_secs(30);
    while !metrics_of(&r)
        .lines()
        .any(|l| l == "tessera_replication_link_up 1")
    {
        assert!(Instant::now() < end, "the replica never linked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (p, r)
}

#[test]
fn alerts_and_dashboard_parse_and_read_exactly_the_exported_metrics() {
    let out = Command::new(root().join("scripts/promql-check.sh"))
        .output()
        .expect("scripts/promql-check.sh runs");
    assert!(
        out.status.success(),
        "the rules or the dashboard do not parse with Prometheus' parser:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();

    let (p, r) = primary_and_replica();
    let mut exported = families(&metrics_of(&p));
    exported.extend(families(&metrics_of(&r)));
    exported.extend(families(
        &tessera::operator::metrics::Metrics::default().render(),
    ));
    assert!(
        exported.contains("tessera_replication_link_up")
            && exported.contains("tessera_operator_leader"),
        "the scrape found too little: {exported:?}"
    );

    // Prometheus adds `up` to every target.
    let unknown: Vec<&String> = read
        .iter()
        .filter(|n| *n != "up" && !exported.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules or the dashboard read metrics nothing exports: {unknown:?}"
    );
    // A histogram is read through its buckets.
    let unread: Vec<&String> = exported
        .iter()
        .filter(|n| {
            let base = n
                .strip_suffix("_bucket")
                .or_else(|| n.strip_suffix("_sum"))
                .or_else(|| n.strip_suffix("_count"))
                .unwrap_or(n);
            let histogram = exported.contains(&format!("{base}_bucket"));
            if histogram {
                !read.contains(&format!("{base}_bucket"))
            } else {
                !read.contains(*n)
            }
        })
        .collect();
    assert!(
        unread.is_empty(),
        "exported metrics no panel or rule reads (add them to charts/tessera/files/grafana-dashboard.json): {unread:?}"
    );
}

/// scripts/promql-check/alerts_test.go: each alert, evaluated by
/// Prometheus' engine over series that must make it fire (honouring its
/// `for:`) and series that must not; an alert without a case fails.
#[test]
fn every_alert_fires_on_its_case_and_only_then() {
    let out = Command::new(root().join("scripts/promql-check.sh"))
        .arg("test")
        .output()
        .expect("scripts/promql-check.sh runs");
    assert!(
        out.status.success(),
        "the alert evaluation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_renders_the_monitoring_objects_from_its_files() {
    let helm = chart::helm();
    let docs = chart::render(
        &helm,
        "mon",
        &[
            "metrics.podMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "grafanaDashboard.enabled=true",
        ],
    )
    .expect("the chart renders");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} rendered"))
    };
    let read = |rel: &str| std::fs::read_to_string(root().join(rel)).expect("chart file");

    let rule = kind("PrometheusRule");
    let alerts: serde_json::Value =
        serde_yaml::from_str(&read("charts/tessera/files/alerts.yaml")).expect("alerts parse");
    assert_eq!(
        rule["spec"], alerts,
        "the PrometheusRule is files/alerts.yaml"
    );

    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "t-tessera-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dash: serde_json::Value =
        serde_json::from_str(cm["data"]["tessera.json"].as_str().expect("data")).expect("JSON");
    let file: serde_json::Value =
        serde_json::from_str(&read("charts/tessera/files/grafana-dashboard.json")).expect("JSON");
    assert_eq!(
        dash, file,
        "the ConfigMap holds files/grafana-dashboard.json"
    );

    let pm = kind("PodMonitor");
    assert_eq!(pm["spec"]["namespaceSelector"]["any"], true);
    let sel = &pm["spec"]["selector"]["matchLabels"];
    assert_eq!(sel["app.kubernetes.io/component"], "node");
    assert_eq!(sel["app.kubernetes.io/managed-by"], "tessera-operator");
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        ep["port"], "metrics",
        "the node container's metrics port name"
    );
    let targets: Vec<&str> = ep["relabelings"]
        .as_array()
        .expect("relabelings")
        .iter()
        .filter_map(|r| r["targetLabel"].as_str())
        .collect();
    for l in ["cluster", "shard", "role", "tessera_component"] {
        assert!(targets.contains(&l), "no {l} label: {targets:?}");
    }
    assert_eq!(
        kind("ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        true,
        "the backup series keep their DatabaseCluster's namespace"
    );
}
