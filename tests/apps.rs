//! Real application libraries against real `tessera node` processes on
//! 127.0.0.1: BullMQ (npm, ioredis in Cluster mode) on a 3-shard cluster,
//! also across a primary failover, and Celery with the Redis broker (PyPI)
//! on a one-shard cluster (kombu's Redis transport has no Redis Cluster
//! support; its keys all carry one hash tag so its transactions stay in one
//! slot). Each installs its own dependencies
//! (`npm ci` into the target directory, a Python venv under it) from the
//! pinned lock files in tests/apps/, runs a driver script, and checks its
//! JSON summary: every job completed, none lost, none done twice.
//!
//! Each takes well under a minute once its dependencies are installed, so
//! `cargo test` runs them except the failover one (see its attribute);
//! `make test-apps` runs all of them. Without
//! `node`/`npm` (or `python3`) they fail, saying what is missing.

mod common;
#[path = "common/migration.rs"]
mod migration;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{http, TestNode};
use serde_json::{json, Value};

const PW: &str = "apps-secret";

/// A cluster of `shards` shards, each a primary and `replicas` replicas,
/// slots split evenly, the test playing operator (topology pushes).
struct AppCluster {
    /// shards[s][0] is shard s's primary at start.
    shards: Vec<Vec<TestNode>>,
    primary: Vec<usize>,
    shard_epoch: Vec<u64>,
    epoch: u64,
    _pw: tempfile::TempDir,
}

fn node_id(shard: usize, i: usize) -> String {
    format!("{:040x}", 0xa9900 + shard * 16 + i)
}

impl AppCluster {
    fn start(shards: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PW).expect("write the password file");
        let consistency = if replicas > 0 { "quorum" } else { "eventual" };
        let nodes = (0..shards)
            .map(|s| {
                (0..=replicas)
                    .map(|i| {
                        TestNode::start(&[
                            "--node-id",
                            &node_id(s, i),
                            "--consistency",
                            consistency,
                            "--replicas",
                            &replicas.to_string(),
                            "--requirepass-file",
                            pw.to_str().expect("UTF-8 path"),
                            "--lease-ms",
                            "1500",
                        ])
                    })
                    .collect()
            })
            .collect();
        let c = Self {
            shards: nodes,
            primary: vec![0; shards],
            shard_epoch: vec![if replicas > 0 { 1 } else { 0 }; shards],
            epoch: 1,
            _pw: dir,
        };
        c.push_all();
        if replicas > 0 {
            for s in 0..shards {
                for r in 1..=replicas {
                    migration::wait_replica_caught_up(&c.shards[s][0], &c.shards[s][r]);
                }
            }
        }
        c
    }

    fn addr(&self, s: usize, i: usize) -> Value {
        json!({"id": node_id(s, i), "host": "127.0.0.1", "port": self.shards[s][i].port})
    }

    fn topology(&self) -> Value {
        let n = self.shards.len();
        let shards: Vec<Value> = (0..n)
            .map(|s| {
                let (a, b) = (16384 * s / n, 16384 * (s + 1) / n - 1);
                let p = self.primary[s];
                let replicas: Vec<Value> = (0..self.shards[s].len())
                    .filter(|&i| i != p)
                    .map(|i| self.addr(s, i))
                    .collect();
                json!({"name": format!("s{s}"), "slots": [[a, b]], "primary": self.addr(s, p),
                       "replicas": replicas, "epoch": self.shard_epoch[s]})
            })
            .collect();
        json!({"epoch": self.epoch, "shards": shards})
    }

    fn push_to(&self, nodes: &[&TestNode]) {
        let t = self.topology().to_string();
        for n in nodes {
            let (s, b) = http(n.admin_port, "PUT", "/v1/topology", &t).expect("admin answers");
            assert_eq!(s, 200, "topology push: {b}");
        }
    }

    fn push_all(&self) {
        let all: Vec<&TestNode> = self.shards.iter().flatten().collect();
        self.push_to(&all);
    }

    /// host:port of every node, for the clients' startup lists.
    fn seeds(&self) -> String {
        let v: Vec<String> = self
            .shards
            .iter()
            .flatten()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        v.join(",")
    }

    /// The shard holding `slot`.
    fn shard_of(&self, slot: u16) -> usize {
        let n = self.shards.len();
        (0..n)
            .find(|&s| (16384 * s / n..16384 * (s + 1) / n).contains(&(slot as usize)))
            .expect("every slot has a shard")
    }

    /// kill -9 shard `s`'s primary and fail over to its first replica as
    /// the operator does: a topology with the replica as primary under a
    /// new shard epoch; the old primary comes back as a replica.
    fn kill_primary_and_fail_over(&mut self, s: usize) {
        let old = self.primary[s];
        self.shards[s][old].kill9();
        let new = (old + 1) % self.shards[s].len();
        self.primary[s] = new;
        self.shard_epoch[s] += 1;
        self.epoch += 1;
        let order: Vec<&TestNode> = std::iter::once(&self.shards[s][new])
            .chain(
                self.shards
                    .iter()
                    .enumerate()
                    .flat_map(|(i, sh)| sh.iter().enumerate().map(move |(j, n)| (i, j, n)))
                    .filter(|&(i, j, _)| !(i == s && (j == new || j == old)))
                    .map(|(_, _, n)| n),
            )
            .collect();
        self.push_to(&order);
        self.shards[s][old].restart();
        self.push_to(&[&self.shards[s][old]]);
    }
}

/// Held while an app's dependencies are checked and installed.
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether `cmd --version` runs.
fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A work directory under the target directory holding a copy of
/// tests/apps/<app>'s pinned files.
fn app_dir(app: &str, files: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(app);
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("apps-{app}"));
    std::fs::create_dir_all(&dst).expect("the app directory can be made");
    for f in files {
        std::fs::copy(src.join(f), dst.join(f)).expect("the app's files copy");
    }
    dst
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `npm ci` of the BullMQ driver (again only when the lock file changed).
fn bullmq_dir() -> PathBuf {
    // A missing runtime fails the test: a skip would pass for a run.
    assert!(
        have("node") && have("npm"),
        "the BullMQ tests need `node` and `npm` (Node.js) on PATH"
    );
    // The two BullMQ tests may run at once: one installs, the other waits.
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = app_dir("bullmq", &["package.json", "run.mjs"]);
    let lock_src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/bullmq/package-lock.json");
    let lock = std::fs::read(&lock_src).expect("package-lock.json is committed");
    let installed = dir.join("node_modules/.tessera-lock");
    if std::fs::read(&installed).ok().as_deref() != Some(&lock[..]) {
        std::fs::write(dir.join("package-lock.json"), &lock).expect("copy the lock file");
        run_checked(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&dir),
            "npm ci",
        );
        std::fs::write(&installed, &lock).expect("mark the install");
    }
    dir
}

/// A venv with Celery's pinned requirements.
fn celery_dir() -> (PathBuf, PathBuf) {
    assert!(have("python3"), "the Celery test needs `python3` on PATH");
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = app_dir("celery", &["requirements.txt", "run.py", "tasks.py"]);
    let py = dir.join("venv/bin/python");
    let req = std::fs::read(dir.join("requirements.txt")).expect("requirements.txt");
    let installed = dir.join("venv/.tessera-requirements");
    if std::fs::read(&installed).ok().as_deref() != Some(&req[..]) {
        run_checked(
            Command::new("python3")
                .args(["-m", "venv", "venv"])
                .current_dir(&dir),
            "python3 -m venv",
        );
        run_checked(
            Command::new(&py)
                .args(["-m", "pip", "install", "-q", "-r", "requirements.txt"])
                .current_dir(&dir),
            "pip install",
        );
        std::fs::write(&installed, &req).expect("mark the install");
    }
    (dir, py)
}

/// Runs a driver to its end (killing it past `timeout`); `on_line` sees
/// each stdout line as it comes. Returns (exit success, last line as JSON).
fn drive(mut cmd: Command, timeout: Duration, mut on_line: impl FnMut(&str)) -> (bool, Value) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the driver starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                on_line(&line);
                last = line;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the driver ran past {timeout:?}; last line: {last}");
                }
            }
        }
    }
    let status = child.wait().expect("the driver exits");
    let stderr = err.join().unwrap_or_default();
    if !stderr.is_empty() {
        eprintln!("driver stderr (tail): {}", tail(&stderr, 2000));
    }
    let summary = serde_json::from_str(&last).unwrap_or_else(|_| json!({"unparsed": last}));
    eprintln!("summary: {summary}");
    (status.success(), summary)
}

fn tail(s: &str, n: usize) -> &str {
    let cut = s.len().saturating_sub(n);
    let cut = (cut..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[cut..]
}

const NORMAL: u64 = 2_500;
const DELAYED: u64 = 400;
const REPEATS: u64 = 30;

fn bullmq_cmd(dir: &Path, c: &AppCluster) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg("run.mjs")
        .arg(c.seeds())
        .args([NORMAL, DELAYED, REPEATS].map(|n| n.to_string()))
        .env("TESSERA_PW", PW)
        .current_dir(dir);
    cmd
}

fn assert_bullmq_all_once(ok: bool, s: &Value) {
    assert_eq!(s["by_kind"]["repeat"], REPEATS, "repeatable job runs: {s}");
    assert_bullmq_none_lost(ok, s, REPEATS);
}

/// Every job completed once, the repeatable job's `repeats` runs included.
fn assert_bullmq_none_lost(ok: bool, s: &Value, repeats: u64) {
    let total = NORMAL + DELAYED + repeats;
    assert_eq!(s["by_kind"]["normal"], NORMAL, "normal jobs: {s}");
    assert_eq!(s["by_kind"]["delayed"], DELAYED, "delayed jobs: {s}");
    assert_eq!(s["distinct"], total, "distinct completed jobs: {s}");
    assert_eq!(s["done_set"], total, "jobs recorded by the processor: {s}");
    assert_eq!(s["twice"], 0, "jobs completed twice: {s}");
    assert_eq!(
        s["counts"]["completed"], total,
        "BullMQ's completed count: {s}"
    );
    assert!(ok, "the driver reported a failure: {s}");
}

#[test]
fn bullmq_completes_normal_delayed_and_repeatable_jobs_once_on_three_shards() {
    let dir = bullmq_dir();
    let c = AppCluster::start(3, 0);
    let (ok, s) = drive(bullmq_cmd(&dir, &c), Duration::from_secs(300), |_| {});
    assert_bullmq_all_once(ok, &s);
    assert_eq!(s["reruns"], 0, "jobs run twice: {s}");
}

/// Also the regression test of a script refused halfway: a BullMQ script
/// whose later write met the expired lease answered NOQUORUM with its first
/// writes applied, and the repeatable job ran past its limit.
/// BullMQ sends EVALSHA inside MULTI/EXEC, where ioredis cannot fall back
/// to EVAL: the new primary must know the scripts the old one loaded (it
/// does: no NOSCRIPT since scripts are replicated).
///
/// Jobs are counted from BullMQ's completed set, not the worker's events:
/// a completion answered NOREPLICAS while the new primary waits for its
/// replica is applied (only not acknowledged), and the worker, retrying it, meets
/// "Missing lock" and emits no `completed` (at-least-once, as on Redis).
/// Each such job must be one a "Missing lock" error names.
#[test]
fn bullmq_loses_no_job_across_a_primary_failover() {
    let dir = bullmq_dir();
    let mut c = AppCluster::start(3, 1);
    let s = c.shard_of(migration::key_slot(b"{q}"));
    let (tx, rx) = mpsc::channel();
    let mut cmd = bullmq_cmd(&dir, &c);
    cmd.env("TESSERA_APP_FAILOVER", "1");
    let driver = thread::spawn(move || {
        drive(cmd, Duration::from_secs(300), |l| {
            if l == "added" {
                let _ = tx.send(());
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the driver queued every job");
    // Let the worker get going, then fail the queue's shard over.
    thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    c.kill_primary_and_fail_over(s);
    eprintln!("failed shard {s} over in {:?}", t.elapsed());
    let (ok, sum) = driver.join().expect("the driver thread");
    // A repeatable job's run whose lock expired while the shard had no
    // quorum is redelivered (its completion meets "Missing lock", or, the
    // completion refused NOQUORUM, the processor runs it again), and BullMQ
    // schedules the next run again from the redelivery (BullMQ is
    // at-least-once): the job may run past its limit then, never short of
    // it, and only after a redelivery.
    let runs = sum["by_kind"]["repeat"].as_u64().unwrap_or(0);
    assert!(
        runs >= REPEATS,
        "repeatable job ran {runs} < {REPEATS} times: {sum}"
    );
    if runs > REPEATS {
        assert_eq!(
            sum["repeat_redelivered"], true,
            "extra repeatable runs without a redelivery: {sum}"
        );
    }
    assert_eq!(
        sum["no_event_unexplained"], 0,
        "completed jobs with no `completed` event and no lost lock: {sum}"
    );
    assert_bullmq_none_lost(ok, &sum, runs);
}

#[test]
fn celery_runs_every_task_once_on_a_one_shard_cluster() {
    let (dir, py) = celery_dir();
    let c = AppCluster::start(1, 0);
    let url = format!("redis://:{PW}@127.0.0.1:{}/0", c.shards[0][0].port);
    let tasks = 3_000;
    let mut cmd = Command::new(py);
    cmd.arg("run.py")
        .arg(tasks.to_string())
        .arg("8")
        .env("TESSERA_CELERY_URL", &url)
        .current_dir(&dir);
    let (ok, s) = drive(cmd, Duration::from_secs(300), |_| {});
    assert_eq!(s["ran"], tasks, "tasks that ran: {s}");
    assert_eq!(s["lost"], 0, "lost tasks: {s}");
    assert_eq!(s["twice"], 0, "tasks run twice: {s}");
    assert_eq!(s["left_in_queue"], 0, "tasks left in the queue: {s}");
    assert!(ok, "the driver reported a failure: {s}");
}
