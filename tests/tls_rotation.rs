//! Certificate rotation on real node processes: the files are swapped the
//! way the kubelet updates a Secret volume (a new timestamped directory,
//! then one atomic rename of the `..data` link), through every step the
//! operator takes (docs/security.md, "Rotation"): a new node certificate
//! from the same CA, a new CA trusted beside the old, the node certificate
//! from the new CA, the old CA dropped. Throughout, a client keeps writing
//! over TLS; no acknowledged write is lost, the client reconnects at most
//! once, the client port, the admin port and the replication link all
//! present or accept the new certificates without a restart.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, TestNode, ADMIN_TOKEN};
use tessera::client::{auth, NodeAddr, NodeClient};
use tessera::node::tls::{client_config, CaOnlyVerifier};
use tessera::operator::cert_rotation::{apply, NodeReason, Plan, Policy, TlsFiles};
use tessera::operator::certs::{issue_ca, issue_node_cert};
use tokio_rustls::rustls;

/// A Secret volume: `<dir>/<key>` → `..data/<key>`, `..data` → a
/// timestamped directory, swapped atomically.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl SecretVolume {
    fn new(files: &TlsFiles) -> Self {
        let mut v = Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        v.write(files);
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{key}"), v.path(key)).unwrap();
        }
        v
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&mut self, f: &TlsFiles) {
        self.generation += 1;
        let gen = format!("..gen_{}", self.generation);
        std::fs::create_dir(self.path(&gen)).unwrap();
        for (key, text) in [
            ("tls.crt", &f.tls_crt),
            ("tls.key", &f.tls_key),
            ("ca.crt", &f.ca_crt),
        ] {
            std::fs::write(self.path(&gen).join(key), text).unwrap();
        }
        let tmp = self.path("..data_tmp");
        std::os::unix::fs::symlink(&gen, &tmp).unwrap();
        std::fs::rename(&tmp, self.path("..data")).unwrap();
    }

    fn args(&self, tls_port: u16) -> Vec<String> {
        let f = |k: &str| self.path(k).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            f("tls.crt"),
            "--tls-key-file".into(),
            f("tls.key"),
            "--tls-ca-cert-file".into(),
            f("ca.crt"),
            "--tls-replication".into(),
            "--tls-admin".into(),
        ]
    }
}

/// A TLS connection trusting `ca_pem` (the bundle as the client read it).
fn tls_connect(
    port: u16,
    ca_pem: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let v = CaOnlyVerifier::from_pem(ca_pem.as_bytes()).map_err(std::io::Error::other)?;
    let cfg = client_config(v, None).map_err(std::io::Error::other)?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The certificate a fresh TLS handshake to `port` is shown (PEM-less DER).
fn presented(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let s = tls_connect(port, ca_pem).ok()?;
    Some(s.conn.peer_certificates()?.first()?.to_vec())
}

fn leaf_der(f: &TlsFiles) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(f.tls_crt.as_bytes())
        .unwrap()
        .to_vec()
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut b = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    b
}

/// What the writer did: acknowledged keys and how often it reconnected.
#[derive(Default)]
struct Writes {
    acked: Vec<u64>,
    reconnects: u32,
}

/// Writes `w<i>` = i over TLS until `stop`, one at a time, reading the CA
/// bundle from the volume whenever it (re)connects, as an application
/// with the Secret mounted would.
fn writer(port: u16, ca_file: PathBuf, stop: Arc<AtomicBool>, out: Arc<Mutex<Writes>>) {
    let mut conn = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            let ca = std::fs::read_to_string(&ca_file).unwrap();
            match tls_connect(port, &ca) {
                Ok(c) => conn = Some(BufReader::new(c)),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        i += 1;
        let (k, v) = (format!("w{i}"), i.to_string());
        let mut line = String::new();
        let ok = c.get_mut().write_all(&resp(&["SET", &k, &v])).is_ok()
            && c.read_line(&mut line).is_ok()
            && line == "+OK\r\n";
        if ok {
            out.lock().unwrap().acked.push(i);
        } else {
            conn = None;
            out.lock().unwrap().reconnects += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_presented(what: &str, port: u16, ca: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(port, ca).as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{what} did not pick up the new certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admin(n: &TestNode) -> SocketAddr {
    format!("127.0.0.1:{}", n.admin_port).parse().unwrap()
}

#[test]
fn certificate_and_ca_rotation_under_writes_loses_nothing_and_needs_no_restart() {
    let ca = issue_ca("rot").unwrap();
    let names = vec!["localhost".to_string()];
    let leaf = issue_node_cert(&ca, &names, &[]).unwrap();
    let mut files = TlsFiles {
        tls_crt: leaf.cert_pem,
        tls_key: leaf.key_pem,
        ca_crt: ca.cert_pem,
        ca_key: ca.key_pem,
    };
    // One volume per node, as each pod mounts the Secret.
    let mut pv = SecretVolume::new(&files);
    let mut rv = SecretVolume::new(&files);
    let (p_tls, r_tls) = (free_port(), free_port());
    let pa = pv.args(p_tls);
    let ra = rv.args(r_tls);
    let primary = TestNode::start(&pa.iter().map(String::as_str).collect::<Vec<_>>());
    let replica = TestNode::start(&ra.iter().map(String::as_str).collect::<Vec<_>>());

    // The operator's client: token and CA bound as for a cluster's pods.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nodes = NodeClient::default();
    auth::set_cluster_token("test", "rot", ADMIN_TOKEN);
    auth::set_cluster_ca("test", "rot", Some(&files.ca_crt));
    auth::bind_https_ips("test", "rot", ["127.0.0.1".parse().unwrap()]);
    let primary_addr = |id: &str| NodeAddr {
        id: id.to_string(),
        host: "127.0.0.1".into(),
        port: primary.port,
        tls_port: Some(p_tls),
    };
    let pid = rt.block_on(nodes.status(admin(&primary))).unwrap().node_id;
    rt.block_on(nodes.promote(admin(&primary), 1, 1)).unwrap();
    rt.block_on(nodes.follow(admin(&replica), 1, &primary_addr(&pid)))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let w = {
        let (stop, writes, ca_file) = (stop.clone(), writes.clone(), pv.path("ca.crt"));
        std::thread::spawn(move || writer(p_tls, ca_file, stop, writes))
    };
    let acked = || writes.lock().unwrap().acked.len();
    let wait_writes = |more: usize| {
        let until = acked() + more;
        let deadline = Instant::now() + Duration::from_secs(10);
        while acked() < until {
            assert!(Instant::now() < deadline, "writes stalled at {}", acked());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_writes(200);

    let policy = Policy::new(None);
    let steps = [
        Plan::RenewNode(NodeReason::Expiring),
        Plan::RotateCa,
        Plan::RenewNode(NodeReason::NewCa),
        Plan::DropOldCas,
    ];
    for plan in steps {
        let now = time::OffsetDateTime::now_utc();
        files = apply(plan, &files, "rot", &names, now, &policy)
            .unwrap()
            .unwrap();
        // Both pods' volumes change (not at the same instant).
        pv.write(&files);
        wait_writes(50);
        rv.write(&files);
        auth::set_cluster_ca("test", "rot", Some(&files.ca_crt));
        let want = leaf_der(&files);
        for (what, port) in [
            ("primary client port", p_tls),
            ("replica client port", r_tls),
            ("primary admin port", primary.admin_port),
        ] {
            wait_presented(
                &format!("{what} after {plan:?}"),
                port,
                &files.ca_crt,
                &want,
            );
        }
        // The operator's HTTPS calls go on with the bundle of this step.
        rt.block_on(nodes.status(admin(&replica)))
            .unwrap_or_else(|e| panic!("admin call after {plan:?}: {e}"));
        wait_writes(200);
    }

    // A new replication link, made after the last step: the replica's
    // link side (its trust and its own certificate) was reloaded too.
    rt.block_on(nodes.promote(admin(&primary), 2, 1)).unwrap();
    rt.block_on(nodes.follow(admin(&replica), 2, &primary_addr(&pid)))
        .unwrap();
    wait_writes(200);
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let Writes { acked, reconnects } = std::mem::take(&mut *writes.lock().unwrap());
    assert!(reconnects <= 1, "the writer reconnected {reconnects} times");
    assert!(acked.len() > 1000, "only {} writes", acked.len());

    // Every acknowledged write, on the primary and on the replica (read
    // over TLS with the final bundle: only the new CA).
    let read_all = |port: u16| -> Vec<Option<String>> {
        let mut c = BufReader::new(tls_connect(port, &files.ca_crt).unwrap());
        // Replicas serve reads after READONLY (a primary just says OK).
        c.get_mut().write_all(&resp(&["READONLY"])).unwrap();
        let mut ok = String::new();
        c.read_line(&mut ok).unwrap();
        let mut out = Vec::with_capacity(acked.len());
        for i in &acked {
            let key = format!("w{i}");
            c.get_mut().write_all(&resp(&["GET", &key])).unwrap();
            let mut head = String::new();
            c.read_line(&mut head).unwrap();
            if head.starts_with("$-1") {
                out.push(None);
                continue;
            }
            let mut val = String::new();
            c.read_line(&mut val).unwrap();
            out.push(Some(val.trim_end().to_string()));
        }
        out
    };
    let want: Vec<Option<String>> = acked.iter().map(|i| Some(i.to_string())).collect();
    assert!(
        read_all(p_tls) == want,
        "an acknowledged write is missing on the primary"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.block_on(nodes.status(admin(&replica))).unwrap();
        let caught_up = st.replication.link_up
            && rt.block_on(nodes.status(admin(&primary))).unwrap().lsn == st.lsn;
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica's new link did not come up with the rotated certificates: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        read_all(r_tls) == want,
        "an acknowledged write is missing on the replica"
    );
    auth::forget_cluster("test", "rot");
}
