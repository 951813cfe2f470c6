//! The admin API's authentication, with real node processes: every `/v1/*`
//! call needs the bearer token; without it or with a wrong one the answer
//! is 401 and nothing changes; probes and metrics stay open; a rotated
//! token file takes effect without a restart; the metrics port serves the
//! probes and metrics and no admin call, token or not.

mod common;

use std::time::Duration;

use common::{free_port, http, http_as, TestNode, ADMIN_TOKEN};
use serde_json::{json, Value};

fn get(n: &TestNode, path: &str) -> Value {
    let (s, b) = http(n.admin_port, "GET", path, "").expect("admin answers");
    assert_eq!(s, 200, "GET {path}: {b}");
    serde_json::from_str(&b).expect("JSON")
}

/// What the refused calls could change: fencing epoch, role, topology,
/// replication target, archive hold, newest snapshot, migrations.
fn state(n: &TestNode) -> Value {
    let st = get(n, "/v1/status");
    let segs = get(n, "/v1/wal/segments");
    json!({
        "fencingEpoch": st["fencingEpoch"],
        "role": st["role"],
        "epoch": st["epoch"],
        "shardEpoch": st["shardEpoch"],
        "primary": st["replication"]["primary"],
        "lastSnapshot": st["lastSnapshot"]["path"],
        "topology": get(n, "/v1/topology"),
        "archiveHold": segs["archiveHold"],
        "migrations": get(n, "/v1/migrations"),
    })
}

/// Every `/v1` call the node serves: (method, path, body).
fn calls(segment: &str, snapshot: &str) -> Vec<(&'static str, String, String)> {
    let topo = json!({
        "epoch": 99,
        "shards": [{
            "name": "evil", "epoch": 99,
            "slots": [[0, 16383]],
            "primary": {"id": "f".repeat(40), "host": "127.0.0.1", "port": 1},
            "replicas": []
        }]
    })
    .to_string();
    let max = json!({"epoch": u64::MAX}).to_string();
    vec![
        ("GET", "/v1/status".into(), String::new()),
        ("GET", "/v1/topology".into(), String::new()),
        ("PUT", "/v1/topology".into(), topo.clone()),
        ("POST", "/v1/topology".into(), topo),
        ("POST", "/v1/fence".into(), max.clone()),
        ("POST", "/v1/promote".into(), max),
        (
            "POST",
            "/v1/follow".into(),
            json!({"epoch": u64::MAX, "primary": {"id": "e".repeat(40), "host": "127.0.0.1", "port": 1}})
                .to_string(),
        ),
        ("POST", "/v1/wal/archived".into(), json!({"lsn": u64::MAX}).to_string()),
        ("GET", "/v1/wal/segments".into(), String::new()),
        ("GET", format!("/v1/wal/segments/{segment}"), String::new()),
        ("POST", "/v1/snapshot".into(), String::new()),
        ("GET", "/v1/backup/snapshot".into(), String::new()),
        ("GET", format!("/v1/backup/snapshot?name={snapshot}"), String::new()),
        (
            "POST",
            "/v1/migrations".into(),
            json!({"id": "m", "slots": [[0, 99]], "target": {"id": "d".repeat(40), "host": "127.0.0.1", "port": 1}})
                .to_string(),
        ),
        ("GET", "/v1/migrations".into(), String::new()),
        ("GET", "/v1/migrations/m".into(), String::new()),
        ("PATCH", "/v1/migrations/m".into(), json!({"maxBytesPerSec": 1}).to_string()),
        ("POST", "/v1/migrations/m/cancel?force=true".into(), String::new()),
        ("GET", "/v1/slots/digest?slots=0-16383".into(), String::new()),
        ("GET", "/v1/no-such-call".into(), String::new()),
    ]
}

#[test]
fn every_v1_call_without_the_right_token_is_refused_and_changes_nothing() {
    let n = TestNode::start(&[]);
    let mut c = n.conn();
    let _: () = redis::cmd("SET")
        .arg("secret-key")
        .arg("secret-value")
        .query(&mut c)
        .unwrap();
    // A snapshot and a segment exist, so the file downloads have something
    // to leak.
    let (s, snap) = http(n.admin_port, "POST", "/v1/snapshot", "").unwrap();
    assert_eq!(s, 200, "{snap}");
    let snap: Value = serde_json::from_str(&snap).unwrap();
    let snapshot = snap["path"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_string();
    let segment = get(&n, "/v1/wal/segments")["segments"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let before = state(&n);

    let mut refused = 0;
    for token in [None, Some("wrong-token"), Some(&ADMIN_TOKEN[1..]), Some("")] {
        for (method, path, body) in calls(&segment, &snapshot) {
            let (s, b) = http_as(n.admin_port, method, &path, &body, token).unwrap();
            assert_eq!(s, 401, "{method} {path} with {token:?}: {b}");
            assert!(
                !b.contains("secret-value") && !b.contains(&n.port.to_string()),
                "{method} {path}: the refusal reveals data: {b}"
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 4 * calls("", "").len());
    assert_eq!(state(&n), before, "a refused call changed the node");
    assert_eq!(
        redis::cmd("GET")
            .arg("secret-key")
            .query::<String>(&mut c)
            .unwrap(),
        "secret-value"
    );

    // Probes and metrics need no token and carry no keys or values.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, b) = http_as(n.admin_port, "GET", path, "", None).unwrap();
        assert_eq!(s, 200, "{path}");
        assert!(
            !b.contains("secret-key") && !b.contains("secret-value"),
            "{path}: {b}"
        );
    }

    // With the token: the downloads and the state-changing calls work.
    let body = download(
        n.admin_port,
        &format!("/v1/backup/snapshot?name={snapshot}"),
    );
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &body[..40.min(body.len())]
    );
    assert!(body.len() as u64 > snap["bytes"].as_u64().unwrap());
    let (s, b) = http(n.admin_port, "POST", "/v1/wal/archived", r#"{"lsn": 1}"#).unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(get(&n, "/v1/wal/segments")["archiveHold"], 1);
    let (s, b) = http(n.admin_port, "POST", "/v1/fence", r#"{"epoch": 7}"#).unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(get(&n, "/v1/status")["fencingEpoch"], 7);
}

#[test]
fn the_metrics_port_serves_probes_and_metrics_and_no_admin_call() {
    let metrics = free_port();
    let n = TestNode::start(&["--metrics-port", &metrics.to_string()]);
    let before = state(&n);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, b) = http_as(metrics, "GET", path, "", None).unwrap();
        assert_eq!(s, 200, "{path}: {b}");
    }
    let (_, m) = http_as(metrics, "GET", "/metrics", "", None).unwrap();
    assert!(
        m.contains("tessera_"),
        "node metrics on the metrics port: {m}"
    );
    // Every admin call, even with the right token, is not there.
    for (method, path, body) in calls("x", "y") {
        let (s, b) = http_as(metrics, method, &path, &body, Some(ADMIN_TOKEN)).unwrap();
        assert_eq!(s, 404, "{method} {path} on the metrics port: {b}");
    }
    assert_eq!(
        state(&n),
        before,
        "a call on the metrics port changed the node"
    );
    // The admin port is unchanged beside it.
    assert_eq!(get(&n, "/v1/status")["role"], before["role"]);
}

/// The whole raw response of a GET with the token (a binary body).
fn download(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_rotated_token_file_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "first-token\n").unwrap();
    let n = TestNode::start(&["--admin-token-file", file.to_str().unwrap()]);
    let status = |t: &str| {
        http_as(n.admin_port, "GET", "/v1/status", "", Some(t))
            .unwrap()
            .0
    };
    assert_eq!(status("first-token"), 200);
    assert_eq!(status(ADMIN_TOKEN), 401);
    // As a Secret volume does: a new file swapped in by rename.
    let tmp = dir.path().join("token.new");
    std::fs::write(&tmp, "second-token-longer\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_eq!(status("second-token-longer"), 200);
    assert_eq!(status("first-token"), 401);
    // A missing file refuses everything (fail closed).
    std::fs::remove_file(&file).unwrap();
    assert_eq!(status("second-token-longer"), 401);
}

#[test]
fn the_operators_client_sends_the_token_it_holds() {
    use tessera::client::{auth, NodeClient};
    let n = TestNode::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("127.0.0.1:{}", n.admin_port).parse().unwrap();
    let c = NodeClient {
        timeout: Duration::from_secs(5),
    };
    // No token held: refused.
    auth::set_default_token(None);
    let err = rt.block_on(c.status(addr)).unwrap_err();
    assert!(
        matches!(
            err,
            tessera::client::ClientError::Status { status: 401, .. }
        ),
        "{err}"
    );
    // The cluster's token, bound to the node's address (as the operator
    // does when it observes the cluster's pods).
    auth::set_cluster_token("ns", "db", ADMIN_TOKEN);
    auth::bind_ips("ns", "db", [addr.ip()]);
    let info = rt.block_on(c.status(addr)).unwrap();
    assert_eq!(info.role, "primary");
    // A fence with the right token is applied.
    let info = rt.block_on(c.fence(addr, 5)).unwrap();
    assert_eq!(info.fencing_epoch, 5);
    auth::forget_cluster("ns", "db");
}
