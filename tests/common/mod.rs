//! Helpers for process-level tests: a real `tessera node` process on
//! 127.0.0.1 with a temporary data directory.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 for a node to listen on.
///
/// Taken below the kernel's ephemeral range (32768-60999): a port the OS
/// handed out for `bind(0)` and released can be reused at once as the source
/// port of any outgoing connection (the tests' own clients), and the node
/// then fails to bind it. Each test process starts at its own offset (by
/// PID) and walks on; a port is handed out only if it binds right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// The admin token every test node is started with (`--admin-token-file`)
/// and every admin call of these helpers carries.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A file holding [`ADMIN_TOKEN`], written once per test process.
pub fn admin_token_file() -> &'static Path {
    use std::sync::OnceLock;
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("tessera-test-admin-token-{}", std::process::id()));
        std::fs::write(&path, ADMIN_TOKEN).expect("the token file can be written");
        path
    })
}

/// `--admin-token-file <the shared file>` unless `extra` names its own.
fn token_args<S: AsRef<str>>(extra: &[S]) -> Vec<String> {
    if extra.iter().any(|a| a.as_ref() == "--admin-token-file") {
        return vec![];
    }
    vec![
        "--admin-token-file".into(),
        admin_token_file()
            .to_str()
            .expect("temp paths are UTF-8")
            .into(),
    ]
}

pub struct TestNode {
    pub port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    pub extra: Vec<String>,
    /// RLIMIT_AS for the node process, when its address space is capped.
    pub as_limit: Option<u64>,
    /// Environment variables for the node process (beside the test's own).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node with extra command-line arguments, in a fresh directory.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_env(extra, &[])
    }

    /// The same with environment variables for the node process (kept for
    /// its restarts), e.g. `TESSERA_WAL_SEGMENT_BYTES` for this node only.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("a temporary directory can be made");
        let dir = tmp.path().to_path_buf();
        let mut n = Self {
            port: free_port(),
            admin_port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            as_limit: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            _tmp: Some(tmp),
        };
        n.spawn();
        n.wait_ready(Duration::from_secs(30));
        n
    }

    /// Starts a node whose address space is capped at `bytes` (RLIMIT_AS):
    /// an allocation past it fails, and the process aborts.
    pub fn start_capped(extra: &[&str], bytes: u64) -> Self {
        let tmp = tempfile::tempdir().expect("a temporary directory can be made");
        let mut n = Self {
            port: free_port(),
            admin_port: free_port(),
            dir: tmp.path().to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            as_limit: Some(bytes),
            env: Vec::new(),
            child: None,
            _tmp: Some(tmp),
        };
        n.spawn();
        n.wait_ready(Duration::from_secs(30));
        n
    }

    /// Starts a node on an existing data directory (kept by the caller).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let mut n = Self {
            port: free_port(),
            admin_port: free_port(),
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            as_limit: None,
            env: Vec::new(),
            child: None,
            _tmp: None,
        };
        n.spawn();
        n.wait_ready(Duration::from_secs(60));
        n
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        if let Some(limit) = self.as_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches no memory
            // of the parent; it runs in the child between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args([
                "node",
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--admin-port",
                &self.admin_port.to_string(),
                "--data-dir",
                self.dir
                    .join("data")
                    .to_str()
                    .expect("temp paths are UTF-8"),
            ])
            .args(token_args(&self.extra))
            .args(&self.extra)
            // TESSERA_TEST_NODE_LOG=info shows the nodes' decisions (e.g.
            // which resync a replica got) when chasing a flaky test.
            .env(
                "RUST_LOG",
                std::env::var("TESSERA_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the tessera binary starts");
        self.child = Some(child);
    }

    /// Spawns the node process without waiting; returns its exit status if it
    /// exits within `wait` (for tests of refusals to start).
    pub fn try_start_in(
        dir: &Path,
        extra: &[&str],
        wait: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "node",
                "--bind",
                "127.0.0.1",
                "--port",
                &free_port().to_string(),
                "--admin-port",
                &free_port().to_string(),
                "--data-dir",
                dir.join("data").to_str().expect("temp paths are UTF-8"),
            ])
            .args(token_args(extra))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tessera binary starts");
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait works") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (Some(status), err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (None, err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.admin_port, "/readyz") {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node on port {} not ready within {timeout:?}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid redis URL")
    }

    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("connect to the node")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL then start again on the same directory and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready(Duration::from_secs(60));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the node process is still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("the node runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the node's /proc status is readable");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc status")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.1 GET against the admin port: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http(port, "GET", path, "")
}

/// An admin call with [`ADMIN_TOKEN`].
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    http_as(port, method, path, body, Some(ADMIN_TOKEN))
}

/// An admin call with the given bearer token (None: no Authorization).
pub fn http_as(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Path of a Debian redis tool, installing redis-tools when missing.
pub fn redis_tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    if !path.exists() {
        let status = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools redis-server"])
            .status()
            .expect("sh runs");
        assert!(status.success(), "installing redis-tools failed");
    }
    path
}
