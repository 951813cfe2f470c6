//! kubectl helpers shared by the end-to-end suites (tests/e2e_*.rs), which
//! include it with `#[path = "common/k8s.rs"] mod k8s;`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub type R<T = String> = Result<T, String>;

pub fn kubectl_bin() -> String {
    std::env::var("KUBECTL")
        .unwrap_or_else(|_| format!("{}/e2e/.run/bin/kubectl", env!("CARGO_MANIFEST_DIR")))
}

pub fn kubectl_in(args: &[&str], stdin: Option<&str>) -> R {
    let mut cmd = Command::new(kubectl_bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("kubectl: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("kubectl stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "kubectl {}: {}{}",
            args.join(" "),
            text,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn kubectl(args: &[&str]) -> R {
    kubectl_in(args, None)
}

/// A fresh namespace: what an earlier run left in it is deleted first.
pub fn ensure_namespace(ns: &str) -> R<()> {
    let _ = kubectl(&[
        "delete",
        "namespace",
        ns,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=180s",
    ]);
    kubectl(&["create", "namespace", ns])?;
    // The password the suites' clusters use (`spec.auth.secretName`), so
    // every client in them knows it.
    kubectl(&[
        "create",
        "secret",
        "generic",
        E2E_AUTH_SECRET,
        "-n",
        ns,
        &format!("--from-literal=password={E2E_PASSWORD}"),
    ])
    .map(|_| ())
}

/// The `default` user's password of every suite cluster (not a secret:
/// test clusters only).
pub const E2E_PASSWORD: &str = "e2e-password";
pub const E2E_AUTH_SECRET: &str = "e2e-auth";
/// The spec lines naming it (right under `spec:`).
pub const E2E_AUTH_SPEC: &str = "  auth:\n    secretName: e2e-auth\n";

/// A node's client URL with the suites' password.
pub fn redis_url(ip: &str) -> String {
    format!("redis://:{E2E_PASSWORD}@{ip}:6379/")
}

fn secret_value(ns: &str, name: &str, key: &str) -> R {
    let b64 = kubectl(&[
        "get",
        "secret",
        "-n",
        ns,
        name,
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ])?;
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .map(|mut i| i.write_all(b64.trim().as_bytes()));
            c.wait_with_output()
        })
        .map_err(|e| format!("base64: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Binds every cluster pod's IP in `ns` to its cluster's admin token
/// (`<cluster>-internal`), so the suites' admin calls carry it, and pods
/// that serve HTTPS admin (`--tls-admin`) to the cluster's CA
/// (`<cluster>-tls`'s `ca.crt`), as the operator does.
pub fn bind_admin_tokens(ns: &str) -> R<()> {
    type Ips = Vec<std::net::IpAddr>;
    let pods = json(&["get", "pods", "-n", ns, "-l", "tessera.dev/cluster"])?;
    let mut by_cluster: std::collections::BTreeMap<String, (Ips, Ips)> = Default::default();
    for p in pods["items"].as_array().into_iter().flatten() {
        let cluster = p["metadata"]["labels"]["tessera.dev/cluster"].as_str();
        let ip = p["status"]["podIP"].as_str().and_then(|i| i.parse().ok());
        let https = p["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["args"].as_array().cloned().unwrap_or_default())
            .any(|a| a == "--tls-admin");
        if let (Some(c), Some(ip)) = (cluster, ip) {
            let e = by_cluster.entry(c.to_string()).or_default();
            if https {
                e.1.push(ip);
            } else {
                e.0.push(ip);
            }
        }
    }
    for (cluster, (plain, https)) in by_cluster {
        let token = secret_value(ns, &format!("{cluster}-internal"), "token")?;
        tessera::client::auth::set_cluster_token(ns, &cluster, token.trim());
        if !https.is_empty() {
            let ca = secret_value(ns, &format!("{cluster}-tls"), "ca\\.crt")?;
            tessera::client::auth::set_cluster_ca(ns, &cluster, Some(&ca));
        }
        tessera::client::auth::bind_ips(ns, &cluster, plain);
        tessera::client::auth::bind_https_ips(ns, &cluster, https);
    }
    Ok(())
}

/// The Kubernetes suites run only from their scripts, which set
/// TESSERA_E2E=1 once the cluster is up; run any other way (e.g. `cargo
/// test -- --ignored`), a suite fails and says so instead of passing.
pub fn require_e2e(script: &str) {
    assert_eq!(
        std::env::var("TESSERA_E2E").as_deref(),
        Ok("1"),
        "needs the local Kubernetes: run {script} (it sets TESSERA_E2E=1)"
    );
}

pub fn json(args: &[&str]) -> R<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&a)?).map_err(|e| format!("decoding kubectl output: {e}"))
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> R<bool>) -> R<Duration> {
    let start = Instant::now();
    let mut last_err = String::new();
    loop {
        match f() {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => {}
            Err(e) => last_err = e,
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what} {last_err}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every process the host sees (the pods' containers included), with its
/// command line (NUL-separated).
pub fn processes() -> R<Vec<(u32, Vec<u8>)>> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").map_err(|e| e.to_string())? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        out.push((
            pid,
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// Host PID of the `tessera node` process announcing `ip`.
pub fn node_pid(ip: &str) -> R<u32> {
    let want = format!("\0--announce-host\0{ip}\0");
    for (pid, mut cmd) in processes()? {
        cmd.insert(0, 0);
        if cmd.windows(6).any(|w| w == b"\0node\0")
            && cmd.windows(want.len()).any(|w| w == want.as_bytes())
        {
            return Ok(pid);
        }
    }
    Err(format!("no node process announcing {ip}"))
}

/// Host PID of the operator process running in `pod`: found by its command
/// line and POD_NAME.
pub fn operator_pid(pod: &str) -> R<u32> {
    let want = format!("POD_NAME={pod}");
    for (pid, cmd) in processes()? {
        if !cmd.windows(9).any(|w| w == b"\0operator") {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            return Ok(pid);
        }
    }
    Err(format!("no operator process for {pod}"))
}

/// The pod holding the operator's leader lease.
pub fn operator_leader_pod() -> R {
    let lease = json(&[
        "get",
        "lease",
        "tessera-operator-leader",
        "-n",
        "tessera-system",
    ])?;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok(holder
        .rsplit_once('_')
        .map(|(p, _)| p.to_string())
        .unwrap_or(holder))
}

/// A pod's container restarts, summed over its containers (`pod` as
/// `kubectl get pod -o json` prints it).
pub fn restart_count(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_u64().unwrap_or(0))
        .sum()
}

/// Host PID of the leading operator process.
pub fn operator_leader_pid() -> R<u32> {
    operator_pid(&operator_leader_pod()?)
}

/// `kill <sig> <pid>` (e.g. `-KILL`, `-STOP`).
pub fn signal(pid: u32, sig: &str) -> R<()> {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    st.success()
        .then_some(())
        .ok_or(format!("kill {sig} {pid} failed"))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A cluster client on the pods' addresses: `connect` and `response`
/// timeouts, `retries` redirects/reconnects per command (None: the
/// library's default).
pub async fn cluster_conn(
    seeds: &[String],
    connect: Duration,
    response: Duration,
    retries: Option<u32>,
) -> R<redis::cluster_async::ClusterConnection> {
    let urls: Vec<String> = seeds.iter().map(|ip| redis_url(ip)).collect();
    let mut b = redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(connect)
        .response_timeout(response);
    if let Some(n) = retries {
        b = b.retries(n);
    }
    let client = b.build().map_err(|e| format!("cluster client: {e}"))?;
    client
        .get_async_connection()
        .await
        .map_err(|e| format!("connecting: {e}"))
}

/// How many Events with `reason` the object `name` in `ns` has (repeats
/// the recorder folded into one Event counted by its `count`).
pub fn events(ns: &str, name: &str, reason: &str) -> R<usize> {
    Ok(events_of(ns, name, reason)?
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1).max(1) as usize)
        .sum())
}

/// The Events with `reason` on the object `name` in `ns`.
fn events_of(ns: &str, name: &str, reason: &str) -> R<Vec<Value>> {
    let v = json(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={name},reason={reason}"),
    ])?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

/// The messages of the Events with `reason` on the object `name` in `ns`.
pub fn event_messages(ns: &str, name: &str, reason: &str) -> R<Vec<String>> {
    Ok(events_of(ns, name, reason)?
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect())
}

/// A suite's steps: each prints `=== name`, then `PASS`/`FAIL name (secs)`
/// with its note; the suite ends with `N passed, M failed`.
#[derive(Default)]
pub struct Run {
    pub passed: usize,
    pub failed: usize,
}

impl Run {
    pub fn step(&mut self, name: &str, f: impl FnOnce() -> R) {
        let start = Instant::now();
        println!("=== {name}");
        let _ = std::io::stdout().flush();
        let r = f();
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
        let _ = std::io::stdout().flush();
    }
}

/// Ends a benchmark run of an e2e test: the `N passed, M failed` line its
/// script reads, and a failed test when the benchmark failed.
pub fn finish_bench(ok: R<bool>) {
    let passed = match ok {
        Ok(true) => {
            println!("1 passed, 0 failed");
            true
        }
        Ok(false) => {
            println!("0 passed, 1 failed");
            false
        }
        Err(e) => {
            println!("FAIL bench: {e}\n0 passed, 1 failed");
            false
        }
    };
    assert!(passed, "the benchmark run failed");
}
