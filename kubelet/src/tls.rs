//! The kubelet API over TLS (`--tls-cert-file`, `--tls-private-key-file`,
//! `--client-ca-file`), rustls on ring, HTTP/1.1.
//!
//! [`TlsListener`] runs every handshake in a task of its own, bounded in
//! time ([`HANDSHAKE_TIMEOUT`]) and in number ([`MAX_HANDSHAKES`] at once;
//! more connections wait in the listen backlog), so clients that connect
//! and never finish a handshake cost bounded memory and never hold up the
//! others. With a client CA, certificates are asked for but optional
//! (anonymous requests are the authenticator's business): rustls verifies
//! a presented one against the CA and fails the handshake when it does
//! not chain, and [`Peer`] carries the user a verified one names into each
//! request of its connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::User;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 64;

/// A serving certificate, key or client CA that cannot be used; the text
/// names the flag's file and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no certificate found")));
    }
    Ok(certs)
}

/// The server side of the kubelet API: its certificate chain and key
/// (PEM) and, when given, the CA client certificates must chain to.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certs(cert_pem, "--tls-cert-file")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError(format!("--tls-private-key-file: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs(pem, "--client-ca-file")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("--client-ca-file: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError(format!("--client-ca-file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "--tls-cert-file and --tls-private-key-file do not go together: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections have finished a TLS handshake.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    /// Accepts on `listener`, at most `max_handshakes` handshakes at once,
    /// each given `timeout`.
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        max_handshakes: usize,
        timeout: Duration,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(16);
        let tls = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(max_handshakes.max(1)));
        let acceptor = tokio::spawn(async move {
            loop {
                // The semaphore is never closed: this task owns it.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors and the like: back off a little.
                        tracing::warn!(error = %e, "kubelet API accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tls = tls.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(timeout, tls.accept(tcp)).await;
                    drop(slot);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "kubelet API TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%addr, "kubelet API TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            acceptor,
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // Only once the acceptor task is gone, when this is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Who a connection's verified client certificate names (`None`: no
/// certificate, or plain HTTP).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub user: Option<User>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        let (_, conn) = stream.io().get_ref();
        let user = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate_user(leaf));
        Peer { user }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(_: IncomingStream<'_, TcpListener>) -> Peer {
        Peer::default()
    }
}

/// The user a client certificate names, as Kubernetes' x509 authenticator
/// reads it: the subject's CN is the user (none: no user), each O a group.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_in_the_error() {
        let ca = ballast_pki::Ca::new("test-ca").unwrap();
        let leaf = ca
            .issue(&ballast_pki::CertSpec::loopback_server("node-1", &[]))
            .unwrap();
        let (cert, key) = (leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes());
        assert!(server_config(cert, key, Some(ca.cert_pem().as_bytes())).is_ok());
        let err = |r: Result<Arc<ServerConfig>, TlsError>| r.err().unwrap().to_string();
        assert!(
            err(server_config(b"junk", key, None)).starts_with("--tls-cert-file: no certificate")
        );
        assert!(err(server_config(cert, b"junk", None)).starts_with("--tls-private-key-file"));
        assert!(err(server_config(cert, key, Some(b""))).starts_with("--client-ca-file"));
        let other = ca
            .issue(&ballast_pki::CertSpec::loopback_server("node-2", &[]))
            .unwrap();
        assert!(
            err(server_config(cert, other.key_pem.as_bytes(), None)).contains("do not go together")
        );
    }

    #[test]
    fn certificate_users_are_cn_and_o() {
        let ca = ballast_pki::Ca::new("test-ca").unwrap();
        let leaf = ca
            .issue(&ballast_pki::CertSpec::client(
                "kube-apiserver-kubelet-client",
                &["system:masters"],
            ))
            .unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let user = certificate_user(&der).unwrap();
        assert_eq!(user.name, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, ["system:masters"]);
        assert!(certificate_user(b"not a certificate").is_none());
    }
}
