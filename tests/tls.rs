//! TLS with real node processes: redis-cli over the TLS port with the CA,
//! refused without it or with another CA; replication over TLS links (and
//! none when the peer's certificate is of another CA); the admin port over
//! HTTPS; a rotated certificate used by new connections without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, http_get, TestNode, ADMIN_TOKEN};
use tessera::operator::certs::{issue_ca, issue_node_cert, Issued};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA and a node certificate for 127.0.0.1 in a fresh directory.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = Self { dir };
        p.write(&issue_ca("test").unwrap(), "ca");
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, ca: &Issued, name: &str) {
        let leaf = issue_node_cert(
            ca,
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        // Written then renamed, as a Secret volume swaps its files.
        for (file, text) in [
            ("ca.crt", &ca.cert_pem),
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
        ] {
            let tmp = self.path(&format!("{file}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(file)).unwrap();
        }
        std::fs::write(self.path(&format!("{name}.pem")), &ca.cert_pem).unwrap();
    }

    fn args(&self, tls_port: u16) -> Vec<String> {
        [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            self.path("tls.crt").display().to_string(),
            "--tls-key-file".into(),
            self.path("tls.key").display().to_string(),
            "--tls-ca-cert-file".into(),
            self.path("ca.crt").display().to_string(),
        ]
        .into()
    }
}

fn start(args: &[String]) -> TestNode {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    TestNode::start(&a)
}

/// redis-cli over TLS: (success, stdout+stderr).
fn cli_tls(port: u16, cacert: &Path, cmd: &[&str]) -> (bool, String) {
    let tool = common::redis_tool("redis-cli");
    let out = Command::new(tool)
        .args(["--tls", "--cacert"])
        .arg(cacert)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(cmd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("Could not"), text)
}

#[test]
fn redis_cli_with_tls_and_the_ca_works_and_is_refused_otherwise() {
    let pki = Pki::new();
    let other = issue_ca("other").unwrap();
    std::fs::write(pki.path("other.pem"), &other.cert_pem).unwrap();
    let tls_port = free_port();
    let pw = pki.path("pw");
    std::fs::write(&pw, "tls-pw").unwrap();
    let mut args = pki.args(tls_port);
    args.extend(["--requirepass-file".into(), pw.display().to_string()]);
    let n = start(&args);

    let (ok, out) = cli_tls(
        tls_port,
        &pki.path("ca.pem"),
        &["-a", "tls-pw", "--no-auth-warning", "SET", "k", "over-tls"],
    );
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = cli_tls(
        tls_port,
        &pki.path("ca.pem"),
        &["-a", "tls-pw", "--no-auth-warning", "GET", "k"],
    );
    assert!(ok && out.trim() == "over-tls", "{out}");
    // Without the password: refused, over TLS as in plaintext.
    let (_, out) = cli_tls(tls_port, &pki.path("ca.pem"), &["GET", "k"]);
    assert!(out.contains("NOAUTH"), "{out}");
    // A CA that did not sign the node's certificate: no connection.
    let (ok, out) = cli_tls(tls_port, &pki.path("other.pem"), &["-a", "tls-pw", "PING"]);
    assert!(!ok, "{out}");
    // Plaintext RESP to the TLS port: no reply.
    let out = Command::new(common::redis_tool("redis-cli"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &tls_port.to_string(),
            "-a",
            "tls-pw",
            "PING",
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PONG"));
    // The plaintext port is still there, with the same data.
    let mut c = redis::Client::open(format!("redis://:tls-pw@127.0.0.1:{}/", n.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "over-tls");
}

#[test]
fn a_rotated_certificate_serves_new_connections_without_a_restart() {
    let pki = Pki::new();
    let tls_port = free_port();
    let _n = start(&pki.args(tls_port));
    assert!(cli_tls(tls_port, &pki.path("ca.pem"), &["PING"]).0);
    let second = issue_ca("second").unwrap();
    pki.write(&second, "second");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let new_ok = cli_tls(tls_port, &pki.path("second.pem"), &["PING"]).0;
        let old_ok = cli_tls(tls_port, &pki.path("ca.pem"), &["PING"]).0;
        if new_ok && !old_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(n: &TestNode) -> serde_json::Value {
    let (s, b) = http_get(n.admin_port, "/v1/status").unwrap();
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

/// Makes `replica` follow `primary` at epoch 1 through its TLS port.
fn follow(primary: &TestNode, primary_tls: u16, replica: &TestNode) {
    let id = status(primary)["nodeId"].as_str().unwrap().to_string();
    let (s, b) = common::http(
        primary.admin_port,
        "POST",
        "/v1/promote",
        r#"{"epoch":1,"replicas":1}"#,
    )
    .unwrap();
    assert_eq!(s, 200, "{b}");
    let body = serde_json::json!({
        "epoch": 1,
        "primary": {"id": id, "host": "127.0.0.1", "port": primary.port, "tlsPort": primary_tls}
    });
    let (s, b) = common::http(replica.admin_port, "POST", "/v1/follow", &body.to_string()).unwrap();
    assert_eq!(s, 200, "{b}");
}

#[test]
fn replication_runs_over_tls_links_verified_against_the_ca() {
    let pki = Pki::new();
    let (p_tls, r_tls) = (free_port(), free_port());
    let mut pa = pki.args(p_tls);
    pa.push("--tls-replication".into());
    let mut ra = pki.args(r_tls);
    ra.push("--tls-replication".into());
    let primary = start(&pa);
    let replica = start(&ra);
    follow(&primary, p_tls, &replica);
    let mut c = primary.conn();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&replica)["keys"] != 100 {
        assert!(
            Instant::now() < deadline,
            "replica did not catch up: {}",
            status(&replica)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(&replica)["replication"]["linkUp"], true);
}

#[test]
fn a_replica_refuses_a_primary_whose_certificate_is_of_another_ca() {
    let pki = Pki::new();
    let foreign = Pki::new();
    // Same CA file name, different CA: the replica trusts only its own.
    foreign.write(&issue_ca("foreign").unwrap(), "foreign");
    let (p_tls, r_tls) = (free_port(), free_port());
    let mut pa = foreign.args(p_tls);
    pa.push("--tls-replication".into());
    let mut ra = pki.args(r_tls);
    ra.push("--tls-replication".into());
    let primary = start(&pa);
    let replica = start(&ra);
    follow(&primary, p_tls, &replica);
    let mut c = primary.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    // The replica tried, and the handshake failed on the certificate.
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = status(&replica);
        let err = st["replication"]["lastError"].as_str().unwrap_or("");
        if err.to_ascii_lowercase().contains("certificate") {
            break st;
        }
        assert!(Instant::now() < deadline, "no certificate error: {st}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st["keys"], 0, "{st}");
    assert_eq!(st["replication"]["linkUp"], false, "{st}");
}

#[test]
fn the_admin_port_speaks_https_with_tls_admin_and_plain_http_only_serves_probes() {
    let pki = Pki::new();
    let mut args = pki.args(free_port());
    args.push("--tls-admin".into());
    // Ready is waited for over plain HTTP: /readyz stays there.
    let n = start(&args);
    let admin = n.admin_port;
    let curl = |extra: &[&str], path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "3", "--cacert"])
            .arg(pki.path("ca.pem"))
            .args(extra)
            .arg(format!("https://127.0.0.1:{admin}{path}"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (ok, body) = curl(&["-H", &auth], "/v1/status");
    assert!(ok && body.contains("\"role\""), "{body}");
    assert!(curl(&[], "/readyz").0);
    // Plain HTTP: the probes and /metrics, nothing under /v1 even with
    // the right token.
    assert_eq!(http_get(admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(admin, "/readyz").unwrap().0, 200);
    let (s, metrics) = http_get(admin, "/metrics").unwrap();
    assert!(s == 200 && metrics.contains("tessera_"), "{s}");
    let (s, body) = http_get(admin, "/v1/status").unwrap();
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("HTTPS"), "{body}");
    let (s, _) = common::http(admin, "POST", "/v1/fence", r#"{"epoch":99}"#).unwrap();
    assert_eq!(s, 403);
    let (_, body) = curl(&["-H", &auth], "/v1/status");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        st["fencingEpoch"], 0,
        "the plaintext fence changed nothing: {st}"
    );
}

#[test]
fn the_operators_node_client_calls_https_admin_with_the_cluster_ca_only() {
    use tessera::client::{auth, NodeClient};
    let pki = Pki::new();
    let mut args = pki.args(free_port());
    args.push("--tls-admin".into());
    let n = start(&args);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", n.admin_port).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nodes = NodeClient::default();
    let ca = std::fs::read_to_string(pki.path("ca.pem")).unwrap();
    auth::set_cluster_token("test", "https", ADMIN_TOKEN);
    // The pod runs --tls-admin, the CA is not known yet: no call at all.
    auth::bind_https_ips("test", "https", [addr.ip()]);
    let err = rt.block_on(nodes.status(addr)).unwrap_err();
    assert!(err.to_string().contains("CA is not known"), "{err}");
    // With the cluster's CA: HTTPS works, and role calls too.
    auth::set_cluster_ca("test", "https", Some(&ca));
    let st = rt.block_on(nodes.status(addr)).unwrap();
    assert_eq!(st.role, "primary");
    let st = rt.block_on(nodes.fence(addr, 3)).unwrap();
    assert_eq!(st.fencing_epoch, 3);
    // Another CA: the node's certificate is refused.
    let other = issue_ca("other").unwrap();
    auth::set_cluster_ca("test", "https", Some(&other.cert_pem));
    let err = rt.block_on(nodes.status(addr)).unwrap_err();
    assert!(
        matches!(
            err,
            tessera::client::ClientError::Connect { .. } | tessera::client::ClientError::Io { .. }
        ),
        "{err}"
    );
    // Called in plaintext (a pod bound as plain): refused by the node.
    auth::bind_ips("test", "https", [addr.ip()]);
    let err = rt.block_on(nodes.status(addr)).unwrap_err();
    assert!(
        matches!(
            err,
            tessera::client::ClientError::Status { status: 403, .. }
        ),
        "{err}"
    );
    auth::forget_cluster("test", "https");
}

#[test]
fn redis_cli_checks_the_ca_not_the_address_the_certificate_names() {
    // The operator's certificate names Services, not pod IPs: redis-cli to
    // a pod IP with the CA must still work.
    let pki = Pki::new();
    let ca = issue_ca("names").unwrap();
    let leaf = issue_node_cert(&ca, &["users.prod.svc".to_string()], &[]).unwrap();
    std::fs::write(pki.path("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(pki.path("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(pki.path("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(pki.path("names.pem"), &ca.cert_pem).unwrap();
    let tls_port = free_port();
    let _n = start(&pki.args(tls_port));
    let (ok, out) = cli_tls(tls_port, &pki.path("names.pem"), &["PING"]);
    assert!(ok && out.trim() == "PONG", "{out}");
}

/// A RESP client over TLS (rustls), trusting the CA in `ca_pem_file`.
struct TlsClient {
    s: tokio_rustls::rustls::StreamOwned<
        tokio_rustls::rustls::ClientConnection,
        std::net::TcpStream,
    >,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(port: u16, ca_pem_file: &Path) -> Self {
        use tessera::node::tls::{client_config, CaOnlyVerifier};
        use tokio_rustls::rustls;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let v = CaOnlyVerifier::from_pem(&std::fs::read(ca_pem_file).unwrap()).unwrap();
        let cfg = client_config(v, None).unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        Self { s, buf: Vec::new() }
    }

    /// The client's own address, as the node should see it.
    fn local(&self) -> std::net::SocketAddr {
        self.s.sock.local_addr().unwrap()
    }

    fn send(&mut self, args: &[&str]) {
        use std::io::Write;
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        self.s.write_all(&b).unwrap();
        self.s.flush().unwrap();
    }

    /// Reads until the input holds `want`; returns everything read up to
    /// and including it (the rest stays for the next call).
    fn expect(&mut self, want: &str) -> String {
        use std::io::Read;
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            if let Some(at) = text.find(want) {
                let end = at + want.len();
                self.buf.drain(..end);
                return text[..end].to_string();
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => panic!("connection ended before {want:?}; got {text:?}"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the node closed the connection (within the read timeout).
    fn closed(&mut self) -> bool {
        use std::io::Read;
        let mut chunk = [0u8; 64];
        match self.s.read(&mut chunk) {
            Ok(n) => n == 0,
            // Still open, only quiet.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => true,
        }
    }
}

#[test]
fn a_tls_client_is_served_in_the_connection_loop_with_its_own_address() {
    let pki = Pki::new();
    let tls_port = free_port();
    let n = start(&pki.args(tls_port));
    let ca = pki.path("ca.pem");
    let mut plain = n.conn();

    // Listed, and killable, under its own address (not a loopback hop's).
    let mut a = TlsClient::connect(tls_port, &ca);
    let addr = a.local().to_string();
    a.send(&["CLIENT", "INFO"]);
    a.expect(&format!("addr={addr} "));
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut plain).unwrap();
    assert!(list.contains(&format!("addr={addr} ")), "{list}");

    // MULTI, pub/sub and a blocking pop over TLS.
    a.send(&["MULTI"]);
    a.send(&["SET", "tk", "v1"]);
    a.send(&["EXEC"]);
    a.expect("*1\r\n+OK\r\n");
    let mut b = TlsClient::connect(tls_port, &ca);
    b.send(&["BLPOP", "tq", "5"]);
    a.send(&["SUBSCRIBE", "tch"]);
    a.expect(":1\r\n");
    let _: () = redis::cmd("RPUSH")
        .arg("tq")
        .arg("x")
        .query(&mut plain)
        .unwrap();
    b.expect("$2\r\ntq\r\n$1\r\nx\r\n");
    let got: i64 = redis::cmd("PUBLISH")
        .arg("tch")
        .arg("hi")
        .query(&mut plain)
        .unwrap();
    assert_eq!(got, 1);
    a.expect("$3\r\ntch\r\n$2\r\nhi\r\n");

    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ADDR")
        .arg(&addr)
        .query(&mut plain)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(a.closed(), "the killed TLS client's connection stays open");
    // The other TLS client is untouched.
    b.send(&["GET", "tk"]);
    b.expect("$2\r\nv1\r\n");
}

/// PUBLISH forwarded between TLS nodes goes through the peer's TLS port:
/// the topology names the peer's plaintext port as a closed one, so only
/// the TLS link can carry the message.
#[test]
fn publish_is_forwarded_over_tls_links() {
    let pki = Pki::new();
    let (a_tls, b_tls) = (free_port(), free_port());
    let mut aa = pki.args(a_tls);
    aa.push("--tls-replication".into());
    let mut ba = pki.args(b_tls);
    ba.push("--tls-replication".into());
    let a = start(&aa);
    let b = start(&ba);
    let closed = free_port();
    let node = |n: &TestNode, port: u16, tls: u16| {
        serde_json::json!({
            "id": status(n)["nodeId"], "host": "127.0.0.1", "port": port, "tlsPort": tls
        })
    };
    let topo = serde_json::json!({"epoch": 1, "shards": [
        {"name": "a", "slots": [[0, 8191]], "primary": node(&a, a.port, a_tls), "replicas": []},
        {"name": "b", "slots": [[8192, 16383]], "primary": node(&b, closed, b_tls), "replicas": []},
    ]});
    for n in [&a, &b] {
        let (s, body) =
            common::http(n.admin_port, "PUT", "/v1/topology", &topo.to_string()).unwrap();
        assert_eq!(s, 200, "{body}");
    }
    let mut sub = b.client().get_connection().unwrap();
    let mut ps = sub.as_pubsub();
    ps.subscribe("over-tls").unwrap();
    ps.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let got: i64 = redis::cmd("PUBLISH")
        .arg("over-tls")
        .arg("sealed")
        .query(&mut a.conn())
        .unwrap();
    assert_eq!(got, 0, "no subscriber on the publishing node");
    let msg = ps.get_message().expect("the message crossed the TLS link");
    assert_eq!(msg.get_channel_name(), "over-tls");
    assert_eq!(msg.get_payload::<String>().unwrap(), "sealed");
}
