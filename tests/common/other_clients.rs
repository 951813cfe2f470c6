//! redis-py's RedisCluster and redis-cli as failover clients, beside the
//! `redis` crate's: `bench/failover_clients.py` runs both, driven over its
//! stdin/stdout (the protocol is described there). Used by
//! `make bench-failover` only; its Python (a venv with redis-py) is named
//! by `TESSERA_BENCH_PYTHON`, which bench/failover.sh sets.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::SystemTime;

use serde_json::Value;

use super::k8s::{json, E2E_PASSWORD, R};
use super::workload::{member_ips, status_of};

pub struct OtherClients {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the two clients saw of one fault.
#[derive(Default, Clone)]
pub struct Seen {
    /// Per client: seconds from the fault to writable again, acknowledged,
    /// failed attempts, lost.
    pub rows: Vec<(String, f64, u64, u64, u64)>,
}

impl Seen {
    pub fn writable(&self, client: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.0 == client)
            .map_or(f64::NAN, |r| r.1)
    }
    pub fn lost(&self) -> u64 {
        self.rows.iter().map(|r| r.4).sum()
    }
    pub fn acked(&self) -> u64 {
        self.rows.iter().map(|r| r.2).sum()
    }
}

impl OtherClients {
    /// Starts both clients on `tag` (a hash tag of the shard under test)
    /// and returns once each has written.
    pub fn start(ns: &str, cluster: &str, tag: &str) -> R<Self> {
        let python = std::env::var("TESSERA_BENCH_PYTHON").map_err(|_| {
            "TESSERA_BENCH_PYTHON is not set: run the benchmark with `make bench-failover` (it makes the venv with redis-py)".to_string()
        })?;
        let seeds = member_ips(&status_of(ns, cluster)?).join(",");
        let svc = json(&["get", "service", cluster, "-n", ns])?;
        let service = svc["spec"]["clusterIP"]
            .as_str()
            .ok_or(format!("service {cluster} has no clusterIP"))?
            .to_string();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/failover_clients.py");
        let mut child = Command::new(python)
            .args([script, "--seeds", &seeds, "--service", &service])
            .args(["--password", E2E_PASSWORD, "--tag", tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {script}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut me = Self {
            child,
            stdin,
            stdout,
        };
        let line = me.read_line()?;
        if line != "ready" {
            return Err(format!("redis-py/redis-cli clients did not start: {line}"));
        }
        Ok(me)
    }

    fn read_line(&mut self) -> R<String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the clients' answer: {e}"))?;
        if line.is_empty() {
            return Err("the clients' script ended early".into());
        }
        Ok(line.trim().to_string())
    }

    fn send(&mut self, line: &str) -> R<()> {
        writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("telling the clients `{line}`: {e}"))
    }

    fn answer(&mut self, word: &str) -> R<Value> {
        let line = self.read_line()?;
        let body = line
            .strip_prefix(word)
            .ok_or(format!("expected `{word} …`, got: {line}"))?;
        serde_json::from_str(body.trim()).map_err(|e| format!("{word}: {e}: {body}"))
    }

    pub fn fault(&mut self, at: SystemTime) -> R<()> {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        self.send(&format!("fault {secs:.6}"))
    }

    /// Waits until both clients are writable again (bounded by the
    /// script's `--max-wait`), stops them and returns their times.
    pub fn stop(&mut self) -> R<Value> {
        self.send("stop")?;
        self.answer("writable")
    }

    /// Reads every acknowledged key back (the cluster whole again).
    pub fn verify(mut self, writable: &Value) -> R<Seen> {
        self.send("verify")?;
        let v = self.answer("verified")?;
        let _ = self.child.wait();
        let mut seen = Seen::default();
        for client in ["redis-py", "redis-cli"] {
            let w = &writable[client];
            let lost = v[client]["lost"]
                .as_u64()
                .ok_or(format!("no read-back for {client}: {v}"))?;
            seen.rows.push((
                client.to_string(),
                w["writable_s"].as_f64().unwrap_or(f64::NAN),
                v[client]["acked"].as_u64().unwrap_or(0),
                w["errors"].as_u64().unwrap_or(0),
                lost,
            ));
        }
        Ok(seen)
    }
}

impl Drop for OtherClients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
