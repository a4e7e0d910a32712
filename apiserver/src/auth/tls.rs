//! Serving over TLS (rustls on ring; HTTP/1.1 and h2 by ALPN).
//!
//! [`TlsListener`] accepts TCP connections and runs each handshake in its
//! own task (bounded in time), so a slow or silent client never holds up
//! the others; finished handshakes are handed to axum's server. At most
//! [`MAX_HANDSHAKES`] run at once: past that, connections wait in the
//! listen backlog, so a flood of connections that never finish a handshake
//! costs a bounded number of tasks and buffers, each for at most
//! [`HANDSHAKE_TIMEOUT`]. With a
//! client CA, certificates are requested but optional: rustls verifies the
//! ones presented (a bad one fails the handshake), and [`Peer`] carries the
//! user a good one names into every request of the connection.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{authn, User};

/// How long a TLS handshake may take (Go's `http.Transport` default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 256;

/// Who the client certificate of a connection names (`None`: no certificate).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub user: Option<User>,
}

/// A TLS configuration problem (unreadable or invalid PEM).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// A root store of the certificates in `pem`.
pub fn roots_from_pem(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(pem, what)? {
        roots.add(c).map_err(|e| TlsError(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// The server side: its certificate chain and key (PEM), and, when given, the
/// CA that client certificates must chain to.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = certs_from_pem(cert_pem, "serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError(format!("serving key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let roots = roots_from_pem(ca, "client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("serving certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] from files (`--tls-cert-file`, `--tls-private-key-file`,
/// `--client-ca-file`).
pub fn load_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError(format!("{}: {e}", p.display())));
    let ca = client_ca.map(read).transpose()?;
    server_config(&read(cert)?, &read(key)?, ca.as_deref())
}

/// A listener whose connections have completed a TLS handshake.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        TlsListener::bounded(listener, config, MAX_HANDSHAKES, HANDSHAKE_TIMEOUT)
    }

    /// [`TlsListener::new`] with `max_handshakes` at once, each given
    /// `timeout`.
    fn bounded(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        max_handshakes: usize,
        timeout: Duration,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(max_handshakes));
        let acceptor_task = tokio::spawn(async move {
            loop {
                // Never closed: the task owns it.
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor_task,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task is gone (only when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Client TLS towards etcd, PEM (kube-apiserver's `--etcd-cafile`,
/// `--etcd-certfile`, `--etcd-keyfile`): the CA that signed the servers'
/// certificates, and this client's certificate and key (for etcd's
/// `--client-cert-auth`).
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    pub key_pem: Option<Vec<u8>>,
}

impl EtcdTls {
    /// Reads the files; a certificate needs its key and the other way round.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<EtcdTls, TlsError> {
        if cert.is_some() != key.is_some() {
            return Err(TlsError(
                "--etcd-certfile and --etcd-keyfile must be given together".into(),
            ));
        }
        let read = |p: Option<&Path>| {
            p.map(|p| {
                std::fs::read(p)
                    .map_err(|e| TlsError(format!("etcd TLS file {}: {e}", p.display())))
            })
            .transpose()
        };
        Ok(EtcdTls {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

impl Peer {
    /// The user a connection's verified client certificate names.
    pub fn of(stream: &TlsStream<TcpStream>) -> Peer {
        let (_, conn) = stream.get_ref();
        let user = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| authn::certificate_user(leaf));
        Peer { user }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    /// A server config for 127.0.0.1 and a client config trusting it.
    fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let ca = ballast_pki::Ca::new("test-ca").expect("ca");
        let leaf = ca
            .issue(&ballast_pki::CertSpec::loopback_server("apiserver", &[]))
            .expect("leaf");
        let server = server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), None)
            .expect("server config");
        let roots = roots_from_pem(ca.cert_pem().as_bytes(), "ca").expect("roots");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    async fn handshake(
        addr: SocketAddr,
        client: &Arc<rustls::ClientConfig>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
    }

    /// With one handshake allowed at a time, a client that connects and
    /// says nothing holds the next one back until it goes away or its
    /// handshake times out.
    #[tokio::test]
    async fn handshakes_are_capped_and_timed_out() {
        let (server, client) = configs();
        let bound = Duration::from_secs(20);
        for silent_ends_by in ["closing", "timing out"] {
            let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = tcp.local_addr().expect("addr");
            let timeout = match silent_ends_by {
                "closing" => Duration::from_secs(600),
                _ => Duration::from_millis(500),
            };
            let mut listener = TlsListener::bounded(tcp, server.clone(), 1, timeout).expect("tls");
            let silent = TcpStream::connect(addr).await.expect("connect");
            // The silent connection takes the one slot once accepted; a
            // real handshake behind it cannot finish while it holds it.
            let mut second = Box::pin(handshake(addr, &client));
            if silent_ends_by == "closing" {
                let early = tokio::time::timeout(Duration::from_millis(300), second.as_mut()).await;
                assert!(early.is_err(), "a second handshake ran past the cap");
                drop(silent);
            }
            let tls = tokio::time::timeout(bound, second)
                .await
                .unwrap_or_else(|_| panic!("{silent_ends_by}: the held slot never came back"))
                .expect("handshake");
            let (_server_side, _) = tokio::time::timeout(bound, listener.accept())
                .await
                .expect("accepted");
            drop(tls);
        }
    }
}
