//! TLS (rustls) for the node: a `--tls-port` beside the plaintext client
//! port (as Redis' `tls-port`), replication and migration links to peers'
//! TLS ports, and the admin port.
//!
//! A TLS client's connection task does the handshake and then runs the
//! node's connection loop on the TLS stream itself (`server::
//! handle_connection`, generic over `client_io::ClientIo`), so TLS and
//! plaintext clients get the same limits, AUTH, ACLs and commands, with no
//! extra hop. Outgoing links (a replica to its primary, a migration source to its
//! target) go the other way: the link code connects to a loopback tunnel
//! that carries its bytes over TLS to the peer's TLS port.
//!
//! Certificates are files (in Kubernetes a Secret volume in cert-manager's
//! layout: `tls.crt`, `tls.key`, `ca.crt`). They are read again when they
//! change (checked at each accept and each outgoing link), so a rotated
//! Secret takes effect for new connections without a restart. Peers are
//! verified against the CA: every node of a cluster holds a certificate of
//! the cluster's CA, whatever address it is reached at (peers are addressed
//! by pod IP, which no certificate issued before the pod existed can name).

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Node;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("CA certificates: {0}")]
    Verifier(String),
}

/// The node's TLS settings (`--tls-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Port for TLS clients (0: any free port).
    pub port: u16,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA that peers' certificates must chain to (links, and clients with
    /// `auth_clients`).
    pub ca_file: Option<PathBuf>,
    /// Replication and migration links go to peers' TLS ports.
    pub replication: bool,
    /// The admin port speaks HTTPS.
    pub admin: bool,
    /// Clients of the TLS port must present a certificate of the CA.
    pub auth_clients: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: certificate and key, and the client CA when clients
/// must present certificates.
pub fn server_config(
    s: &TlsSettings,
    auth_clients: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match (&s.ca_file, auth_clients) {
        (Some(ca), true) => {
            let v =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(certs(&s.cert_file)?, key(&s.key_file)?)?)
}

/// Verifies a peer's chain against the cluster's CA and accepts any name:
/// peers are reached by IP, and holding a certificate of the cluster's CA
/// is what makes a peer a member.
#[derive(Debug)]
pub struct CaOnlyVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl CaOnlyVerifier {
    pub fn new(roots: Arc<rustls::RootCertStore>) -> Result<Self, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Self { inner })
    }

    /// From PEM bytes of the CA (the operator's clients).
    pub fn from_pem(ca: &[u8]) -> Result<Self, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            let c = c.map_err(|e| TlsError::Verifier(e.to_string()))?;
            store.add(c)?;
        }
        Self::new(Arc::new(store))
    }
}

impl rustls::client::danger::ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config that trusts `verifier` and presents `identity` (the
/// node's own certificate) when given.
pub fn client_config(
    verifier: CaOnlyVerifier,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    Ok(match identity {
        Some((c, k)) => builder.with_client_auth_cert(c, k)?,
        None => builder.with_no_client_auth(),
    })
}

/// When a set of files last changed (modification times and sizes).
type Stamp = Vec<(Option<SystemTime>, u64)>;
/// A TLS object with the stamp of the files it was built from.
type Cached<T> = RefCell<Option<(Stamp, T)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        })
        .collect()
}

/// The node's TLS state: acceptors and the link connector, rebuilt when
/// the files change.
pub struct Tls {
    pub settings: TlsSettings,
    clients: Cached<TlsAcceptor>,
    admin: Cached<TlsAcceptor>,
    links: Cached<TlsConnector>,
}

impl Tls {
    /// Checks the files once (a node with unusable certificates must not
    /// start).
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        server_config(&settings, settings.auth_clients)?;
        if settings.replication && settings.ca_file.is_none() {
            return Err(TlsError::Verifier(
                "--tls-replication needs --tls-ca-cert-file (peers are verified against it)".into(),
            ));
        }
        let t = Self {
            settings,
            clients: RefCell::new(None),
            admin: RefCell::new(None),
            links: RefCell::new(None),
        };
        Ok(t)
    }

    fn files(&self) -> Vec<&Path> {
        let s = &self.settings;
        let mut v = vec![s.cert_file.as_path(), s.key_file.as_path()];
        if let Some(ca) = &s.ca_file {
            v.push(ca.as_path());
        }
        v
    }

    fn acceptor(&self, slot: &Cached<TlsAcceptor>, auth_clients: bool) -> Option<TlsAcceptor> {
        let now = stamp(&self.files());
        if let Some((st, a)) = slot.borrow().as_ref() {
            if *st == now {
                return Some(a.clone());
            }
        }
        match server_config(&self.settings, auth_clients) {
            Ok(cfg) => {
                tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate (re)loaded");
                let a = TlsAcceptor::from(Arc::new(cfg));
                *slot.borrow_mut() = Some((now, a.clone()));
                Some(a)
            }
            Err(e) => {
                // Keep serving with the last good certificate (a Secret
                // update may be half written).
                tracing::warn!(error = %e, "TLS files unusable; keeping the previous certificate");
                slot.borrow().as_ref().map(|(_, a)| a.clone())
            }
        }
    }

    pub fn client_acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor(&self.clients, self.settings.auth_clients)
    }

    pub fn admin_acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor(&self.admin, false)
    }

    /// The connector for links to peers (None: TLS links are off or the
    /// files are unusable).
    pub fn link_connector(&self) -> Option<TlsConnector> {
        let ca = self.settings.ca_file.as_ref()?;
        if !self.settings.replication {
            return None;
        }
        let now = stamp(&self.files());
        if let Some((st, c)) = self.links.borrow().as_ref() {
            if *st == now {
                return Some(c.clone());
            }
        }
        let built = (|| {
            let verifier = CaOnlyVerifier::new(roots(ca)?)?;
            let identity = (
                certs(&self.settings.cert_file)?,
                key(&self.settings.key_file)?,
            );
            client_config(verifier, Some(identity))
        })();
        match built {
            Ok(cfg) => {
                let c = TlsConnector::from(Arc::new(cfg));
                *self.links.borrow_mut() = Some((now, c.clone()));
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS link configuration unusable");
                self.links.borrow().as_ref().map(|(_, c)| c.clone())
            }
        }
    }
}

/// Serves the TLS client port until the process ends.
pub async fn serve_clients(node: Rc<Node>, listener: TcpListener) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(tls) = node.tls.as_ref() else {
            return;
        };
        let Some(acceptor) = tls.client_acceptor() else {
            continue;
        };
        let node = node.clone();
        tokio::task::spawn_local(async move {
            let _ = sock.set_nodelay(true);
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(sock))
                    .await;
            let tls = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            super::server::handle_connection(node, tls, peer).await;
        });
    }
}

/// A connection to a peer's client port for a link (replication,
/// migration): plain TCP, or, with TLS links, a loopback tunnel whose
/// other end speaks TLS to the peer's TLS port (`tls_port`, or this node's
/// own when the peer's address does not say).
pub async fn connect_peer(
    node: &Node,
    host: &str,
    port: u16,
    tls_port: Option<u16>,
) -> std::io::Result<TcpStream> {
    let connector = node.tls.as_ref().and_then(|t| t.link_connector());
    // A peer named without its TLS port listens where this node does (the
    // operator gives every node of a cluster the same ports).
    let tls_port = tls_port.or_else(|| connector.as_ref().map(|_| node.tls_port.get()));
    let (Some(connector), Some(tls_port)) = (connector, tls_port) else {
        return TcpStream::connect((host, port)).await;
    };
    let remote = TcpStream::connect((host, tls_port)).await?;
    let _ = remote.set_nodelay(true);
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
    };
    let mut tls = connector.connect(name, remote).await?;
    let (client, mut end) = super::client_io::loopback_pair().await?;
    tokio::task::spawn_local(async move {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut end).await;
    });
    Ok(client)
}
