//! End-to-end tests of the operator on a real Kubernetes (the local e2e
//! cluster). Run by `scripts/e2e-operator.sh`, which builds the image and
//! installs the chart first; `#[ignore]`d in plain `cargo test` (the script
//! runs it with `--ignored`), and fails without `TESSERA_E2E=1`.
//!
//! Steps run in order (each bounded by a timeout, each timed) and the run
//! ends with `N passed, M failed` and the measurements the issue asks for.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::client::NodeClient;

const NS: &str = "tessera-e2e-op";
const OPERATOR_NS: &str = "tessera-system";
const KEYS: usize = 10_000;

#[path = "common/chart.rs"]
mod chart;
#[path = "common/k8s.rs"]
mod k8s;
use k8s::{
    ensure_namespace, json, kubectl, kubectl_in, operator_pid, require_e2e, rt, wait_until,
    E2E_AUTH_SPEC, R,
};

async fn cluster_conn(seeds: &[String]) -> R<redis::cluster_async::ClusterConnection> {
    k8s::cluster_conn(seeds, Duration::from_secs(5), Duration::from_secs(10), None).await
}

fn cluster_manifest(name: &str, ns: &str, shards: u32, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: DatabaseCluster\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{E2E_AUTH_SPEC}  shards: {shards}\n  replicas: {replicas}\n  storage:\n    size: 32Mi\n{extra}"
    )
}

/// Ready=True for the current generation, and `ready` says all nodes.
fn is_ready(ns: &str, name: &str, nodes: u32) -> R<bool> {
    let d = json(&["get", "dbc", name, "-n", ns])?;
    let generation = d["metadata"]["generation"].as_i64();
    let s = &d["status"];
    let ready_cond = s["conditions"].as_array().into_iter().flatten().any(|c| {
        c["type"] == "Ready"
            && c["status"] == "True"
            && c["observedGeneration"].as_i64() == generation
    });
    Ok(ready_cond && s["ready"] == format!("{nodes}/{nodes}").as_str())
}

fn status_of(ns: &str, name: &str) -> R<Value> {
    Ok(json(&["get", "dbc", name, "-n", ns])?["status"].clone())
}

/// (pod, ip, role) of every member in the status.
fn members(status: &Value) -> Vec<(String, String, &'static str)> {
    let mut out = vec![];
    for s in status["shards"].as_array().into_iter().flatten() {
        if let Some(p) = s["primary"].as_object() {
            out.push((
                p["pod"].as_str().unwrap_or_default().to_string(),
                p["ip"].as_str().unwrap_or_default().to_string(),
                "primary",
            ));
        }
        for r in s["replicas"].as_array().into_iter().flatten() {
            out.push((
                r["pod"].as_str().unwrap_or_default().to_string(),
                r["ip"].as_str().unwrap_or_default().to_string(),
                "replica",
            ));
        }
    }
    out
}

fn primaries(status: &Value) -> Vec<String> {
    members(status)
        .into_iter()
        .filter(|m| m.2 == "primary")
        .map(|m| m.1)
        .collect()
}

/// Every member answers and follows the status epoch.
fn nodes_converged(status: &Value) -> R<bool> {
    let epoch = status["epoch"].as_u64().unwrap_or(0);
    k8s::bind_admin_tokens(NS)?;
    let nodes = NodeClient::default();
    rt().block_on(async {
        for (pod, ip, _) in members(status) {
            let addr: SocketAddr = format!("{ip}:9121")
                .parse()
                .map_err(|e| format!("{pod} {ip}: {e}"))?;
            let info = nodes
                .status(addr)
                .await
                .map_err(|e| format!("{pod}: {e}"))?;
            if info.epoch != epoch {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

fn cluster_check(ip: &str) -> R {
    let out = Command::new("timeout")
        .args([
            "30",
            "redis-cli",
            "--cluster",
            "check",
            &format!("{ip}:6379"),
            "-a",
            k8s::E2E_PASSWORD,
            "--no-auth-warning",
        ])
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains("All nodes agree about slots configuration")
        && text.contains("All 16384 slots covered")
        && !text.contains("[ERR]")
    {
        Ok(text)
    } else {
        Err(format!("redis-cli --cluster check {ip}: {text}"))
    }
}

fn write_keys(seeds: &[String]) -> R<Duration> {
    let start = Instant::now();
    rt().block_on(async {
        let mut con = cluster_conn(seeds).await?;
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(200) {
            let futs = chunk.iter().map(|i| {
                let mut c = con.clone();
                async move {
                    redis::cmd("SET")
                        .arg(format!("user:{{{i}}}:name"))
                        .arg(format!("v{i}"))
                        .query_async::<()>(&mut c)
                        .await
                }
            });
            for r in futures::future::join_all(futs).await {
                r.map_err(|e| format!("SET: {e}"))?;
            }
        }
        let _ = &mut con;
        Ok(start.elapsed())
    })
}

fn read_keys(seeds: &[String]) -> R<usize> {
    rt().block_on(async {
        let con = cluster_conn(seeds).await?;
        let mut bad = 0;
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(200) {
            let futs = chunk.iter().map(|i| {
                let mut c = con.clone();
                async move {
                    let v: Option<String> = redis::cmd("GET")
                        .arg(format!("user:{{{i}}}:name"))
                        .query_async(&mut c)
                        .await?;
                    Ok::<_, redis::RedisError>((v, format!("v{i}")))
                }
            });
            for r in futures::future::join_all(futs).await {
                let (got, want) = r.map_err(|e| format!("GET: {e}"))?;
                if got.as_deref() != Some(want.as_str()) {
                    bad += 1;
                }
            }
        }
        Ok(bad)
    })
}

fn operator_pods() -> R<Vec<(String, String)>> {
    let v = json(&[
        "get",
        "pods",
        "-n",
        OPERATOR_NS,
        "-l",
        "app.kubernetes.io/name=tessera-operator",
    ])?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running"
        })
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

fn lease_holder() -> R<String> {
    let v = json(&["get", "lease", "tessera-operator-leader", "-n", OPERATOR_NS])?;
    Ok(v["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Pod name of the lease holder (the identity is `<pod>_<random>`).
fn leader_pod() -> R<String> {
    let h = lease_holder()?;
    Ok(h.rsplit_once('_').map(|(p, _)| p.to_string()).unwrap_or(h))
}

/// Crashes the leader (SIGKILL: no graceful hand-over of the lease).
fn crash_leader() -> R<String> {
    let holder = lease_holder()?;
    let pod = leader_pod()?;
    let pid = operator_pid(&pod)?;
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("kill -9 {pid} failed"));
    }
    Ok(holder)
}

fn leader_metrics() -> R<String> {
    let holder = leader_pod()?;
    let (_, ip) = operator_pods()?
        .into_iter()
        .find(|(n, _)| *n == holder)
        .ok_or_else(|| format!("leader {holder} not running"))?;
    http_get(&format!("{ip}:8080"), "/metrics")
}

fn http_get(addr: &str, path: &str) -> R {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

/// The reconcile duration histogram: (upper bound in seconds, cumulative
/// count) per bucket, `+Inf` last.
fn reconcile_histogram(text: &str) -> R<Vec<(f64, f64)>> {
    let mut buckets = vec![];
    for l in text
        .lines()
        .filter(|l| l.starts_with("tessera_operator_reconcile_duration_seconds_bucket"))
    {
        let le = l
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or(format!("bucket line {l}"))?;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().map_err(|e| format!("bucket {le}: {e}"))?
        };
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .ok_or(format!("bucket line {l}"))?;
        buckets.push((le, v));
    }
    if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
        return Err("no reconcile duration histogram in the leader's metrics".into());
    }
    Ok(buckets)
}

/// The p99 upper bound (a bucket bound) of the reconciles between two
/// readings of the histogram, and how many there were.
fn p99_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> R<(f64, f64)> {
    if before.len() != after.len() {
        return Err("the histogram's buckets changed".into());
    }
    let delta: Vec<(f64, f64)> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.0, a.1 - b.1))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    if total <= 0.0 {
        return Err("no reconcile in the window".into());
    }
    let bound = delta
        .iter()
        .find(|(_, v)| *v >= 0.99 * total)
        .map_or(f64::INFINITY, |d| d.0);
    Ok((bound, total))
}

/// The reconcile p99 bound asserted: a steady reconcile must finish inside
/// the default failover detection window (2 s), since detection, fencing
/// and promotion run in reconciles; 1 s is the largest histogram bucket
/// under it.
const RECONCILE_P99_MAX_S: f64 = 1.0;
/// The operator's RSS bound: the memory the chart requests for it
/// (charts/tessera/values.yaml `resources.requests.memory: 64Mi`).
const OPERATOR_RSS_MAX: f64 = 64.0 * 1048576.0;

/// Reconcile p99 of Ready clusters: each of `clusters` in `ns` gets an
/// annotation change (a watch event, so one reconcile), one at a time,
/// each waited for on the leader's reconcile count; the p99 is over the
/// reconciles of that window. The leader must not change during it.
fn nudged_reconcile_p99(ns: &str, clusters: &[String]) -> R<(f64, f64)> {
    let leader = lease_holder()?;
    let count = |m: &str| metric(m, "tessera_operator_reconcile_duration_seconds_count");
    let first = leader_metrics()?;
    let before = reconcile_histogram(&first)?;
    let mut seen = count(&first).ok_or("no reconcile count")?;
    for (i, c) in clusters.iter().enumerate() {
        kubectl(&[
            "annotate",
            "dbc",
            c,
            "-n",
            ns,
            "--overwrite",
            &format!("tessera.dev/e2e-nudge={i}"),
        ])?;
        wait_until(
            &format!("a reconcile of {c} after its annotation"),
            Duration::from_secs(30),
            || {
                let now = count(&leader_metrics()?).unwrap_or(seen);
                let more = now > seen;
                seen = now;
                Ok(more)
            },
        )?;
    }
    // The last reconcile may still be writing status: let it finish.
    std::thread::sleep(Duration::from_millis(500));
    let after = reconcile_histogram(&leader_metrics()?)?;
    if lease_holder()? != leader {
        return Err(format!(
            "the leader changed during the window (was {leader})"
        ));
    }
    p99_between(&before, &after)
}

struct Run {
    passed: usize,
    failed: usize,
    measurements: BTreeMap<&'static str, String>,
}

impl Run {
    fn step(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) {
        let start = Instant::now();
        println!("=== {name}");
        let r = f(self);
        let took = start.elapsed().as_secs_f64();
        match r {
            Ok(note) => {
                self.passed += 1;
                println!("PASS {name} ({took:.1}s) {note}");
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name} ({took:.1}s): {e}");
            }
        }
    }
}

fn invalid_manifests() -> R {
    let cases: [(&str, &str, &str); 6] = [
        (
            "shards: 0",
            "spec:\n  shards: 0\n",
            "shards must be between 1 and 16384",
        ),
        (
            "shards: 20000",
            "spec:\n  shards: 20000\n",
            "shards must be between 1 and 16384",
        ),
        (
            "replicas: 0",
            "spec:\n  replicas: 0\n",
            "replicas must be at least 1",
        ),
        (
            "quorum with 1 replica",
            "spec:\n  replicas: 1\n  consistency:\n    level: quorum\n",
            "need replicas >= 2",
        ),
        (
            "quorumPercentage 0",
            "spec:\n  consistency:\n    level: quorum\n    quorumPercentage: 0\n",
            "quorumPercentage must be between 1 and 100",
        ),
        (
            "bad cron",
            "spec:\n  backup:\n    schedule: every_6_hours\n",
            "backup.schedule must be a cron expression",
        ),
    ];
    let mut refused = 0;
    for (what, spec, want) in cases {
        let m = format!("apiVersion: tessera.dev/v1alpha1\nkind: DatabaseCluster\nmetadata:\n  name: invalid\n  namespace: {NS}\n{spec}");
        match kubectl_in(&["apply", "--dry-run=server", "-f", "-"], Some(&m)) {
            Ok(_) => return Err(format!("{what}: accepted")),
            Err(e) if e.contains(want) => refused += 1,
            Err(e) => {
                return Err(format!(
                    "{what}: refused without the expected message {want:?}: {e}"
                ))
            }
        }
    }
    Ok(format!(
        "{refused} invalid manifests refused with their CEL message"
    ))
}

fn transition_rules(name: &str) -> R {
    // Against the live object: storage may not shrink, zones and the
    // sharding key may not change.
    let base = cluster_manifest(name, NS, 3, 3, "");
    let cases = [
        (
            "storage shrink",
            base.replace("size: 32Mi", "size: 16Mi"),
            "storage.size may only grow",
        ),
        (
            "zones added",
            format!("{base}  zones: [zone-a]\n"),
            "zones are immutable",
        ),
        (
            "shardingKey added",
            format!("{base}  shardingKey: user_id\n"),
            "shardingKey is immutable",
        ),
    ];
    for (what, m, want) in cases {
        match kubectl_in(&["apply", "--dry-run=server", "-f", "-"], Some(&m)) {
            Ok(_) => return Err(format!("{what}: accepted")),
            Err(e) if e.contains(want) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Ok("shrink, zone and sharding-key changes refused".into())
}

fn scale(name: &str, replicas: u32, seeds: &mut Vec<String>) -> R {
    kubectl(&[
        "patch",
        "dbc",
        name,
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        &format!("{{\"spec\":{{\"replicas\":{replicas}}}}}"),
    ])?;
    let took = wait_until("Ready after scaling", Duration::from_secs(240), || {
        is_ready(NS, name, 3 * replicas)
    })?;
    let st = status_of(NS, name)?;
    let m = members(&st);
    if m.len() != (3 * replicas) as usize {
        return Err(format!(
            "{} members in the topology, want {}",
            m.len(),
            3 * replicas
        ));
    }
    wait_until("nodes on the new epoch", Duration::from_secs(60), || {
        nodes_converged(&status_of(NS, name)?)
    })?;
    *seeds = primaries(&st);
    cluster_check(&seeds[0])?;
    let bad = read_keys(seeds)?;
    if bad > 0 {
        return Err(format!(
            "{bad} of {KEYS} keys wrong after scaling to {replicas}"
        ));
    }
    Ok(format!(
        "Ready in {:.1}s, {KEYS} keys intact, epoch {}",
        took.as_secs_f64(),
        st["epoch"]
    ))
}

fn children_gone(ns: &str, name: &str) -> R<bool> {
    let sel = format!("tessera.dev/cluster={name}");
    let left = kubectl(&[
        "get",
        "statefulsets,services,configmaps,poddisruptionbudgets,cronjobs,pods",
        "-n",
        ns,
        "-l",
        &sel,
        "-o",
        "name",
    ])?;
    Ok(left.trim().is_empty())
}

fn pvcs(ns: &str, name: &str) -> R<usize> {
    let out = kubectl(&[
        "get",
        "pvc",
        "-n",
        ns,
        "-l",
        &format!("tessera.dev/cluster={name}"),
        "-o",
        "name",
    ])?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The chart's PodMonitor (rendered by helm) against the running pods: its
/// selector picks exactly the cluster's `nodes` node pods, each has the
/// named port, carries the labels it relabels from, and serves /metrics
/// there.
fn podmonitor_targets(cluster: &str, nodes: usize) -> R {
    let helm = chart::helm();
    let pm = chart::render(&helm, NS, &["metrics.podMonitor.enabled=true"])?
        .into_iter()
        .find(|d| d["kind"] == "PodMonitor")
        .ok_or("helm rendered no PodMonitor")?;
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or("no matchLabels")?
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let port_name = endpoint["port"].as_str().ok_or("no port")?;
    let path = endpoint["path"].as_str().ok_or("no path")?;
    let pods = json(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        &format!("{selector},tessera.dev/cluster={cluster}"),
    ])?;
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    if pods.len() != nodes {
        return Err(format!(
            "{selector} selects {} pods, want {nodes}",
            pods.len()
        ));
    }
    let mut roles = BTreeMap::new();
    for p in &pods {
        let pod = p["metadata"]["name"].as_str().unwrap_or_default();
        let labels = &p["metadata"]["labels"];
        for l in [
            "tessera.dev/cluster",
            "tessera.dev/shard",
            "tessera.dev/role",
        ] {
            if labels[l].as_str().is_none_or(str::is_empty) {
                return Err(format!("{pod} has no {l} label to relabel from"));
            }
        }
        *roles
            .entry(
                labels["tessera.dev/role"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_insert(0) += 1;
        let port = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|cp| cp["name"] == port_name)
            .and_then(|cp| cp["containerPort"].as_u64())
            .ok_or(format!("{pod} has no container port named {port_name}"))?;
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let m = http_get(&format!("{ip}:{port}"), path)?;
        if metric(&m, "tessera_ready") != Some(1.0) {
            return Err(format!(
                "{pod}: {path} on {port_name} has no tessera_ready 1"
            ));
        }
    }
    Ok(format!(
        "{} pods by {selector}, roles {roles:?}, {path} on port {port_name}",
        pods.len()
    ))
}

#[test]
#[ignore = "needs the local Kubernetes: make e2e-operator runs it (--ignored, TESSERA_E2E=1)"]
fn operator_e2e() {
    require_e2e("scripts/e2e-operator.sh");
    let mut run = Run {
        passed: 0,
        failed: 0,
        measurements: BTreeMap::new(),
    };
    let name = "e2e";
    let mut seeds: Vec<String> = vec![];

    run.step("namespace", |_| {
        ensure_namespace(NS).map(|_| NS.to_string())
    });
    run.step("operator installed, one leader", |_| {
        wait_until("2 operator pods", Duration::from_secs(120), || {
            Ok(operator_pods()?.len() == 2)
        })?;
        // Right after an install or upgrade the lease can still name a pod
        // that has gone, or the new holder has not yet published its
        // metric: wait for one pod that both holds the lease and says it
        // leads. Two pods saying they lead at once fails at once.
        let (mut holder, mut leading) = (String::new(), Vec::<String>::new());
        let waited = wait_until(
            "one operator pod that holds the lease and acts as leader",
            Duration::from_secs(90),
            || {
                holder = leader_pod()?;
                leading.clear();
                for (pod, ip) in operator_pods()? {
                    let m = http_get(&format!("{ip}:8080"), "/metrics")?;
                    if metric(&m, "tessera_operator_leader") == Some(1.0) {
                        leading.push(pod);
                    }
                }
                Ok(leading.len() > 1 || (leading.len() == 1 && leading[0] == holder))
            },
        );
        let seen = format!("(lease holder {holder:?}, acting as leader {leading:?})");
        waited.map_err(|e| format!("{e} {seen}"))?;
        if leading.len() > 1 {
            return Err(format!("more than one replica acts as leader {seen}"));
        }
        Ok(format!("leader {holder}"))
    });
    run.step("invalid manifests are refused at apply time", |_| {
        invalid_manifests()
    });

    run.step("3 shards x 3 replicas become Ready", |run| {
        let start = Instant::now();
        kubectl_in(
            &["apply", "-f", "-"],
            Some(&cluster_manifest(name, NS, 3, 3, "")),
        )?;
        wait_until("Ready", Duration::from_secs(600), || is_ready(NS, name, 9))?;
        let took = start.elapsed();
        run.measurements
            .insert("apply to Ready, 3x3", format!("{:.1}s", took.as_secs_f64()));
        let st = status_of(NS, name)?;
        seeds = primaries(&st);
        if seeds.len() != 3 || members(&st).len() != 9 {
            return Err(format!("topology in status: {st}"));
        }
        wait_until("nodes on the status epoch", Duration::from_secs(60), || {
            nodes_converged(&status_of(NS, name)?)
        })?;
        Ok(format!("{:.1}s", took.as_secs_f64()))
    });
    run.step("redis-cli --cluster check passes", |_| {
        let st = status_of(NS, name)?;
        let any = members(&st)
            .last()
            .map(|m| m.1.clone())
            .ok_or("no members")?;
        cluster_check(&any).map(|_| format!("against {any}"))
    });
    run.step("cluster client writes and reads 10000 keys", |_| {
        let took = write_keys(&seeds)?;
        let bad = read_keys(&seeds)?;
        if bad > 0 {
            return Err(format!("{bad} keys wrong"));
        }
        k8s::bind_admin_tokens(NS)?;
        let nodes = NodeClient::default();
        let per_primary = rt().block_on(async {
            let mut v = vec![];
            for ip in &seeds {
                let addr: SocketAddr = format!("{ip}:9121").parse().map_err(|e| format!("{e}"))?;
                v.push(nodes.status(addr).await.map_err(|e| e.to_string())?.keys);
            }
            Ok::<_, String>(v)
        })?;
        if per_primary.contains(&0) {
            return Err(format!(
                "keys per primary {per_primary:?}: not spread over the shards"
            ));
        }
        Ok(format!(
            "written in {:.1}s, keys per primary {per_primary:?}",
            took.as_secs_f64()
        ))
    });
    run.step(
        "the chart's PodMonitor finds every node and its metrics",
        |_| podmonitor_targets(name, 9),
    );
    run.step("CEL transition rules refuse changes", |_| {
        transition_rules(name)
    });
    run.step("replicas 3 -> 2 keeps data", |_| scale(name, 2, &mut seeds));
    run.step("replicas 2 -> 3 keeps data", |_| scale(name, 3, &mut seeds));
    run.step("shards 3 -> 4 -> 3 reshards online and keeps data", |_| {
        let mut notes = vec![];
        for shards in [4u32, 3] {
            kubectl(&[
                "patch",
                "dbc",
                name,
                "-n",
                NS,
                "--type",
                "merge",
                "-p",
                &format!("{{\"spec\":{{\"shards\":{shards}}}}}"),
            ])?;
            let took = wait_until("resharded and Ready", Duration::from_secs(300), || {
                let st = status_of(NS, name)?;
                Ok(is_ready(NS, name, 3 * shards)?
                    && st["shards"].as_array().map_or(0, |a| a.len()) == shards as usize
                    && st["resharding"]["phase"] == "Completed"
                    && st["resharding"]["to"] == shards)
            })?;
            let st = status_of(NS, name)?;
            seeds = primaries(&st);
            cluster_check(&seeds[0])?;
            let bad = read_keys(&seeds)?;
            if bad > 0 {
                return Err(format!("{bad} of {KEYS} keys wrong at {shards} shards"));
            }
            notes.push(format!(
                "→{shards} in {:.1}s ({} slots moved)",
                took.as_secs_f64(),
                st["resharding"]["slotsMoved"]
            ));
        }
        Ok(format!("{}; {KEYS} keys intact", notes.join(", ")))
    });
    run.step("operator killed mid-reconcile converges", |_| {
        // Mid-bootstrap: a new cluster is being created (children applied,
        // pods starting, topology not yet pushed) when the leader dies.
        let n = "midway";
        kubectl_in(&["apply", "-f", "-"], Some(&cluster_manifest(n, NS, 2, 2, "")))?;
        wait_until("children being created", Duration::from_secs(60), || {
            Ok(!kubectl(&["get", "statefulsets", "-n", NS, "-l", &format!("tessera.dev/cluster={n}"), "-o", "name"])?.trim().is_empty())
        })?;
        let killed = crash_leader()?;
        let took = wait_until("Ready under a new leader", Duration::from_secs(300), || {
            let h = lease_holder()?;
            Ok(!h.is_empty() && h != killed && is_ready(NS, n, 4)?)
        })?;
        wait_until("nodes converged", Duration::from_secs(60), || nodes_converged(&status_of(NS, n)?))?;
        cluster_check(&primaries(&status_of(NS, n)?)[0])?;
        kubectl(&["delete", "dbc", n, "-n", NS, "--wait=false"])?;
        // Mid-scale: the leader dies right after a change is accepted.
        kubectl(&["patch", "dbc", name, "-n", NS, "--type", "merge", "-p", "{\"spec\":{\"replicas\":2}}"])?;
        let killed2 = crash_leader()?;
        wait_until("Ready at 2 replicas under a new leader", Duration::from_secs(240), || {
            let h = lease_holder()?;
            Ok(!h.is_empty() && h != killed2 && is_ready(NS, name, 6)?)
        })?;
        wait_until("nodes converged", Duration::from_secs(60), || nodes_converged(&status_of(NS, name)?))?;
        let bad = read_keys(&primaries(&status_of(NS, name)?))?;
        if bad > 0 {
            return Err(format!("{bad} keys wrong"));
        }
        kubectl(&["patch", "dbc", name, "-n", NS, "--type", "merge", "-p", "{\"spec\":{\"replicas\":3}}"])?;
        wait_until("Ready at 3 replicas", Duration::from_secs(240), || is_ready(NS, name, 9))?;
        Ok(format!(
            "SIGKILLed the leader mid-bootstrap (Ready {:.1}s later under {}) and mid-scale; {KEYS} keys intact",
            took.as_secs_f64(),
            lease_holder()?
        ))
    });
    run.step("leader takeover", |run| {
        wait_until(
            "2 operator pods and a leader",
            Duration::from_secs(120),
            || Ok(operator_pods()?.len() == 2 && !lease_holder()?.is_empty()),
        )?;
        // A crash: the lease is not released, the stand-by waits it out.
        let start = Instant::now();
        let crashed = crash_leader()?;
        wait_until(
            "a new leader after a crash",
            Duration::from_secs(60),
            || {
                let h = lease_holder()?;
                Ok(!h.is_empty() && h != crashed)
            },
        )?;
        let crash_took = start.elapsed();
        run.measurements.insert(
            "leader takeover after a crash (SIGKILL)",
            format!("{:.1}s", crash_took.as_secs_f64()),
        );
        wait_until("2 operator pods", Duration::from_secs(120), || {
            Ok(operator_pods()?.len() == 2)
        })?;
        // A graceful stop: the leader hands the lease over on SIGTERM.
        let leader = lease_holder()?;
        let start = Instant::now();
        kubectl(&[
            "delete",
            "pod",
            &leader_pod()?,
            "-n",
            OPERATOR_NS,
            "--wait=false",
        ])?;
        wait_until(
            "a new leader after a graceful stop",
            Duration::from_secs(60),
            || {
                let h = lease_holder()?;
                Ok(!h.is_empty() && h != leader)
            },
        )?;
        let graceful_took = start.elapsed();
        run.measurements.insert(
            "leader takeover after a graceful stop",
            format!("{:.1}s", graceful_took.as_secs_f64()),
        );
        // The new leader reconciles: a restarted node rejoins the topology.
        let st = status_of(NS, name)?;
        let victim = members(&st)
            .last()
            .map(|m| m.0.clone())
            .ok_or("no members")?;
        let uid = |pod: &str| -> R {
            Ok(json(&["get", "pod", pod, "-n", NS])?["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string())
        };
        let old_uid = uid(&victim)?;
        kubectl(&["delete", "pod", &victim, "-n", NS])?;
        // Whatever IP the new pod gets, the node must end up on the
        // recorded epoch with every other node.
        wait_until(
            "the restarted node rejoins",
            Duration::from_secs(180),
            || {
                Ok(uid(&victim).is_ok_and(|u| !u.is_empty() && u != old_uid)
                    && is_ready(NS, name, 9)?
                    && members(&status_of(NS, name)?).len() == 9
                    && nodes_converged(&status_of(NS, name)?)?)
            },
        )?;
        Ok(format!(
            "after SIGKILL {:.1}s, after SIGTERM {:.1}s; now {}",
            crash_took.as_secs_f64(),
            graceful_took.as_secs_f64(),
            lease_holder()?
        ))
    });
    run.step(
        "metrics: 3x3 Ready: operator RSS <= 64 MiB, reconcile p99 <= 1 s",
        |run| {
            wait_until("Ready and converged", Duration::from_secs(180), || {
                Ok(is_ready(NS, name, 9)? && nodes_converged(&status_of(NS, name)?)?)
            })?;
            let nudges: Vec<String> = (0..20).map(|_| name.to_string()).collect();
            let (p99, n) = nudged_reconcile_p99(NS, &nudges)?;
            let m = leader_metrics()?;
            let rss =
                metric(&m, "tessera_operator_resident_memory_bytes").ok_or("no RSS metric")?;
            let note = format!(
                "RSS {:.1} MiB, reconcile p99 <= {p99}s of {n} reconciles",
                rss / 1048576.0
            );
            run.measurements.insert(
                "operator RSS, 1 cluster",
                format!("{:.1} MiB", rss / 1048576.0),
            );
            run.measurements.insert(
                "reconcile p99, 1 cluster (20 annotation changes)",
                format!("<= {p99}s of {n} reconciles"),
            );
            if rss > OPERATOR_RSS_MAX || p99 > RECONCILE_P99_MAX_S {
                return Err(format!("over the bounds (RSS 64 MiB, p99 1 s): {note}"));
            }
            Ok(note)
        },
    );
    run.step("delete the cluster: children and volumes go", |_| {
        let before = pvcs(NS, name)?;
        kubectl(&[
            "delete",
            "dbc",
            name,
            "-n",
            NS,
            "--wait=true",
            "--timeout=120s",
        ])?;
        wait_until("children gone", Duration::from_secs(120), || {
            children_gone(NS, name)
        })?;
        wait_until(
            "volumes gone (deletePolicy Delete)",
            Duration::from_secs(120),
            || Ok(pvcs(NS, name)? == 0),
        )?;
        Ok(format!("{before} PVCs deleted with it"))
    });
    run.step("deletePolicy Retain keeps the volumes", |_| {
        let n = "keep";
        kubectl_in(
            &["apply", "-f", "-"],
            Some(&cluster_manifest(n, NS, 1, 1, "    deletePolicy: Retain\n")),
        )?;
        wait_until("Ready", Duration::from_secs(300), || is_ready(NS, n, 1))?;
        kubectl(&[
            "delete",
            "dbc",
            n,
            "-n",
            NS,
            "--wait=true",
            "--timeout=120s",
        ])?;
        wait_until("children gone", Duration::from_secs(120), || {
            children_gone(NS, n)
        })?;
        std::thread::sleep(Duration::from_secs(5));
        let left = pvcs(NS, n)?;
        kubectl(&[
            "delete",
            "pvc",
            "-n",
            NS,
            "-l",
            &format!("tessera.dev/cluster={n}"),
        ])?;
        if left == 1 {
            Ok("1 PVC kept".into())
        } else {
            Err(format!("{left} PVCs left, want 1"))
        }
    });
    let scale_n: usize = std::env::var("TESSERA_E2E_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    if scale_n > 0 {
        run.step(
            &format!(
                "{scale_n} clusters Ready: operator RSS <= 64 MiB, reconcile p99 <= 1 s"
            ),
            |run| {
                let ns = "tessera-e2e-scale";
                ensure_namespace(ns)?;
                let names: Vec<String> = (0..scale_n).map(|i| format!("c{i}")).collect();
                let mut all = String::new();
                for n in &names {
                    all.push_str(&cluster_manifest(n, ns, 1, 1, ""));
                    all.push_str("---\n");
                }
                let start = Instant::now();
                kubectl_in(&["apply", "-f", "-"], Some(&all))?;
                let r = (|| {
                    wait_until("all Ready", Duration::from_secs(900), || {
                        let v = json(&["get", "dbc", "-n", ns])?;
                        let ready = v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|d| d["status"]["phase"] == "Ready")
                            .count();
                        Ok(ready == scale_n)
                    })?;
                    let took = start.elapsed();
                    let (p99, n) = nudged_reconcile_p99(ns, &names)?;
                    let m = leader_metrics()?;
                    let rss = metric(&m, "tessera_operator_resident_memory_bytes")
                        .ok_or("no RSS metric")?;
                    Ok::<_, String>((took, p99, n, rss))
                })();
                let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
                let (took, p99, n, rss) = r?;
                run.measurements.insert(
                    "operator RSS with many clusters",
                    format!("{:.1} MiB with {scale_n} clusters", rss / 1048576.0),
                );
                run.measurements.insert(
                    "reconcile p99 (many clusters, one annotation change each)",
                    format!("<= {p99}s of {n} reconciles"),
                );
                let note = format!(
                    "{scale_n} clusters Ready in {:.1}s; RSS {:.1} MiB; reconcile p99 <= {p99}s of {n} reconciles",
                    took.as_secs_f64(),
                    rss / 1048576.0
                );
                if rss > OPERATOR_RSS_MAX || p99 > RECONCILE_P99_MAX_S {
                    return Err(format!("over the bounds (RSS 64 MiB, p99 1 s): {note}"));
                }
                Ok(note)
            },
        );
    }
    let _ = kubectl(&["delete", "namespace", NS, "--wait=false"]);

    println!("\nmeasurements:");
    for (k, v) in &run.measurements {
        println!("  {k}: {v}");
    }
    println!("{} passed, {} failed", run.passed, run.failed);
    assert_eq!(run.failed, 0, "operator e2e failures");
}
