//! TLS on a member's client and peer URLs, with etcd's flags and meaning.
//!
//! - [`TlsInfo`] — one side's files (`--cert-file`, `--key-file`,
//!   `--trusted-ca-file`, `--client-cert-auth`, or their `--peer-` twins).
//! - [`ServerTls::load`] — the rustls server config for an `https://`
//!   listener. As in etcd, a client certificate is required (and verified
//!   against the trusted CA) when `--trusted-ca-file` is given or
//!   `--client-cert-auth` is on.
//! - [`incoming`] — accepts TCP connections, does the TLS handshake off the
//!   accept loop, and yields [`TlsConn`]s wrapped in
//!   [`AuthorityFix`](crate::h2_authority::AuthorityFix) (which must see the
//!   decrypted HTTP/2 bytes) for tonic's `serve_with_incoming`.
//! - [`TlsConnectInfo`] — what tonic puts into each request's extensions for
//!   a TLS connection, including the verified client certificate's common
//!   name; [`client_common_name`] reads it back in a handler.
//! - [`peer_client_tls`] / [`peer_endpoint`] — the client side of peer TLS
//!   (raft transport, forwarding to the leader): the peer certificate as
//!   client identity, the peer trusted CA as roots.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Result, ServerError};
use crate::h2_authority::AuthorityFix;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One side's TLS files and policy (etcd's `transport.TLSInfo`): the client
/// side (`--cert-file` …) or the peer side (`--peer-cert-file` …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `--cert-file` / `--peer-cert-file`: the certificate (chain), PEM.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`: its private key, PEM.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`: the CA(s) that sign
    /// accepted client certificates (and, for peers, other members' server
    /// certificates).
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
}

impl TlsInfo {
    /// No certificate and no key given (etcd's `TLSInfo.Empty`).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Whether a server on this side demands a verified client certificate:
    /// as in etcd, when a trusted CA is given or client-cert-auth is on.
    pub fn requires_client_cert(&self) -> bool {
        self.trusted_ca_file.is_some() || self.client_cert_auth
    }

    /// Checks the flags fit together (not the files). `side` is `""` for the
    /// client side or `"peer-"` for the peer side, naming the flags.
    pub fn validate(&self, side: &str) -> Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ServerError::InvalidArgument(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}] \
                 (--{side}key-file, --{side}cert-file)",
                show(&self.key_file),
                show(&self.cert_file)
            )));
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(ServerError::InvalidArgument(format!(
                "--{side}client-cert-auth needs --{side}trusted-ca-file \
                 (the CA that signs accepted client certificates)"
            )));
        }
        Ok(())
    }
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn bad(msg: String) -> ServerError {
    ServerError::InvalidArgument(msg)
}

fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| bad(format!("{flag}: open {}: {e}", path.display())))
}

fn parse_certs(pem: &[u8], path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{flag}: {}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{flag}: {}: tls: failed to find any PEM data in certificate input",
            path.display()
        )));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| bad(format!("{flag}: {}: invalid PEM: {e}", path.display())))?
        .ok_or_else(|| {
            bad(format!(
                "{flag}: {}: tls: failed to find any PEM data in key input",
                path.display()
            ))
        })
}

/// The files of one side, read and parsed.
struct Loaded {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca: Option<(Vec<u8>, RootCertStore)>,
}

fn load(info: &TlsInfo, side: &str) -> Result<Loaded> {
    info.validate(side)?;
    let (Some(cert_file), Some(key_file)) = (&info.cert_file, &info.key_file) else {
        return Err(bad(format!(
            "TLS key/cert (--{side}cert-file, --{side}key-file) must be provided"
        )));
    };
    let cert_flag = format!("--{side}cert-file");
    let key_flag = format!("--{side}key-file");
    let cert_pem = read_file(cert_file, &cert_flag)?;
    let key_pem = read_file(key_file, &key_flag)?;
    let certs = parse_certs(&cert_pem, cert_file, &cert_flag)?;
    let key = parse_key(&key_pem, key_file, &key_flag)?;
    let ca = match &info.trusted_ca_file {
        None => None,
        Some(path) => {
            let flag = format!("--{side}trusted-ca-file");
            let pem = read_file(path, &flag)?;
            let mut roots = RootCertStore::empty();
            for c in parse_certs(&pem, path, &flag)? {
                roots
                    .add(c)
                    .map_err(|e| bad(format!("{flag}: {}: {e}", path.display())))?;
            }
            Some((pem, roots))
        }
    };
    Ok(Loaded {
        certs,
        key,
        cert_pem,
        key_pem,
        ca,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration for one side's listeners.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the certificate, key and trusted CA. `side` is `""`
    /// (client URLs) or `"peer-"` (peer URLs); errors name the flags.
    pub fn load(info: &TlsInfo, side: &str) -> Result<ServerTls> {
        let loaded = load(info, side)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Internal(format!("TLS setup: {e}")))?;
        let builder = match (&loaded.ca, info.requires_client_cert()) {
            (Some((_, roots)), true) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots.clone()),
                    provider(),
                )
                .build()
                .map_err(|e| bad(format!("--{side}trusted-ca-file: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            // `validate` made sure client-cert-auth comes with a CA.
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(loaded.certs, loaded.key)
            .map_err(|e| {
                bad(format!(
                    "--{side}cert-file/--{side}key-file: {}: {e}",
                    show(&info.cert_file)
                ))
            })?;
        // h2 for gRPC; http/1.1 for `/health` and `/metrics` with curl.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// What tonic records about a TLS connection, in each request's extensions.
#[derive(Debug, Clone, Default)]
pub struct TlsConnectInfo {
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
    /// The common name of the client's verified certificate, if it sent one.
    pub common_name: Option<String>,
}

/// A server-side TLS connection after the handshake.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl TlsConn {
    fn new(stream: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = stream.get_ref();
        let common_name = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|c| common_name(c.as_ref()));
        let info = TlsConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
            common_name,
        };
        TlsConn { stream, info }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The common name of the verified client certificate of the connection a
/// request came on; `None` on plain HTTP or when the client sent none.
/// (etcd uses it as the user name when client-cert-auth is on.)
pub fn client_common_name<T>(req: &tonic::Request<T>) -> Option<String> {
    req.extensions()
        .get::<TlsConnectInfo>()
        .and_then(|i| i.common_name.clone())
}

/// Accepts connections on `listener` until `stop`, handshaking each on its
/// own task so a slow client never holds up the others. Failed handshakes
/// (no or untrusted client certificate, plain HTTP on an https port) are
/// logged like etcd's "rejected connection" and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<AuthorityFix<TlsConn>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(AuthorityFix::new(TlsConn::new(stream)))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "rejected connection");
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "rejected connection: TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The client side of peer TLS: the peer certificate as identity (peers
/// may demand it), the peer trusted CA as roots. `None` when the peer side
/// has no certificate (plain `http://` peer URLs).
pub fn peer_client_tls(info: &TlsInfo) -> Result<Option<ClientTlsConfig>> {
    if info.is_empty() {
        return Ok(None);
    }
    let loaded = load(info, "peer-")?;
    let mut tls =
        ClientTlsConfig::new().identity(Identity::from_pem(loaded.cert_pem, loaded.key_pem));
    if let Some((pem, _)) = loaded.ca {
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(Some(tls))
}

/// An endpoint for another member's peer URL, with peer TLS for `https://`.
pub fn peer_endpoint(url: &str, peer_tls: &TlsInfo) -> Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ServerError::Internal(format!("peer URL {url}: {e}")))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = peer_client_tls(peer_tls)?.ok_or_else(|| {
        bad(format!(
            "peer URL {url} is https but --peer-cert-file/--peer-key-file are not set"
        ))
    })?;
    endpoint
        .tls_config(tls)
        .map_err(|e| ServerError::Internal(format!("peer TLS for {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_pki::{Ca, CertSpec};

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn common_name_is_read_from_the_certificate() {
        let ca = Ca::new("test-ca").unwrap();
        let c = ca
            .issue(&CertSpec::client("alice", &["system:masters"]))
            .unwrap();
        assert_eq!(common_name(&der(&c.cert_pem)).as_deref(), Some("alice"));
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn client_common_name_reads_the_connect_info() {
        let mut req = tonic::Request::new(());
        assert_eq!(client_common_name(&req), None);
        req.extensions_mut().insert(TlsConnectInfo {
            common_name: Some("root".into()),
            ..Default::default()
        });
        assert_eq!(client_common_name(&req).as_deref(), Some("root"));
    }

    /// Writes a CA and a server certificate to `dir`; returns the CA and
    /// the server side's files with client-cert auth on.
    fn server_files(dir: &Path) -> (Ca, TlsInfo) {
        let ca = Ca::new("test-ca").unwrap();
        let ca_path = ca.write(dir).unwrap();
        let (crt, key) = ca
            .issue(&CertSpec::loopback_server("m1", &[]))
            .unwrap()
            .write(dir, "m1")
            .unwrap();
        let info = TlsInfo {
            cert_file: Some(crt),
            key_file: Some(key),
            trusted_ca_file: Some(ca_path),
            client_cert_auth: true,
        };
        (ca, info)
    }

    fn client_config(ca: &Ca, client: Option<&ballast_pki::Issued>) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(der(ca.cert_pem()))).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(der(&c.cert_pem))],
                    parse_key(c.key_pem.as_bytes(), Path::new("k"), "key").unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    /// A real handshake: the verified client's CN reaches the connect info
    /// tonic hands to request handlers; a client without a certificate is
    /// refused.
    #[tokio::test]
    async fn handshake_exposes_the_client_common_name() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_stream::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let (ca, info) = server_files(dir.path());
        let tls = ServerTls::load(&info, "").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let mut conns = incoming(listener, tls, stop);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();

        let alice = ca.issue(&CertSpec::client("alice", &["dev"])).unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(&ca, Some(&alice)));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut client = connector.connect(name.clone(), tcp).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(10), conns.next())
            .await
            .expect("a connection")
            .expect("stream open")
            .expect("handshake ok");
        let info = conn.connect_info();
        assert_eq!(info.common_name.as_deref(), Some("alice"));
        assert_eq!(info.local_addr, Some(addr));
        let mut req = tonic::Request::new(());
        req.extensions_mut().insert(info);
        assert_eq!(client_common_name(&req).as_deref(), Some("alice"));

        // No client certificate: the server aborts the handshake, so the
        // client's first read fails (or sees the connection closed).
        let connector = tokio_rustls::TlsConnector::from(client_config(&ca, None));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let refused = match connector.connect(name, tcp).await {
            Err(_) => true,
            Ok(mut s) => {
                let _ = s.write_all(b"ping").await;
                let mut buf = [0u8; 16];
                let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                    .await
                    .expect("the server answers");
                matches!(read, Err(_) | Ok(0))
            }
        };
        assert!(refused, "a client without a certificate was accepted");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca").unwrap();
        let ca_path = ca.write(dir.path()).unwrap();
        let (crt, key) = ca
            .issue(&CertSpec::loopback_server("m1", &[]))
            .unwrap()
            .write(dir.path(), "m1")
            .unwrap();
        let good = TlsInfo {
            cert_file: Some(crt.clone()),
            key_file: Some(key.clone()),
            trusted_ca_file: Some(ca_path.clone()),
            client_cert_auth: true,
        };
        ServerTls::load(&good, "").unwrap();
        assert!(peer_client_tls(&good).unwrap().is_some());

        let err = |info: &TlsInfo| ServerTls::load(info, "").unwrap_err().to_string();
        let missing = TlsInfo {
            cert_file: Some(dir.path().join("nope.crt")),
            ..good.clone()
        };
        assert!(
            err(&missing).contains("--cert-file: open"),
            "{}",
            err(&missing)
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let not_pem = TlsInfo {
            trusted_ca_file: Some(junk.clone()),
            ..good.clone()
        };
        assert!(
            err(&not_pem).contains("failed to find any PEM data"),
            "{}",
            err(&not_pem)
        );
        let key_is_cert = TlsInfo {
            key_file: Some(crt.clone()),
            ..good.clone()
        };
        assert!(
            err(&key_is_cert).contains("--key-file"),
            "{}",
            err(&key_is_cert)
        );
        let only_cert = TlsInfo {
            key_file: None,
            ..good.clone()
        };
        assert!(err(&only_cert).contains("KeyFile and CertFile must both be present"));
        let auth_without_ca = TlsInfo {
            trusted_ca_file: None,
            ..good.clone()
        };
        assert!(err(&auth_without_ca).contains("--client-cert-auth needs --trusted-ca-file"));
        // A key that does not belong to the certificate.
        let (_, other_key) = ca
            .issue(&CertSpec::loopback_server("m2", &[]))
            .unwrap()
            .write(dir.path(), "m2")
            .unwrap();
        let mismatched = TlsInfo {
            key_file: Some(other_key),
            ..good
        };
        assert!(ServerTls::load(&mismatched, "").is_err());
    }
}
