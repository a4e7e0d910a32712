//! How the apiserver reaches kubelets (`pods/log` today): kube-apiserver's
//! `--kubelet-client-certificate`, `--kubelet-client-key` and
//! `--kubelet-certificate-authority`.
//!
//! With none of them the kubelet is spoken to in plain HTTP (a kubelet
//! without a serving certificate, `ballast up --insecure`). With any of
//! them it is HTTPS: the client certificate, when given, authenticates the
//! apiserver to the kubelet (kubeadm issues it as
//! `kube-apiserver-kubelet-client` in `system:masters`); the CA, when
//! given, must have signed the kubelet's serving certificate for the
//! node's address. Without a CA the serving certificate is not checked, as
//! kube-apiserver does not check it then (kubelets often self-sign) — the
//! handshake's signatures still are.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::auth::tls::{roots_from_pem, TlsError};

/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a kubelet, plain or TLS.
pub(crate) trait KubeletIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> KubeletIo for T {}

/// The apiserver's side of its connections to kubelets; the default is
/// plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct KubeletClient {
    tls: Option<Arc<ClientConfig>>,
}

impl KubeletClient {
    /// HTTPS to kubelets with the given PEMs: the client certificate and
    /// its key (both or neither), and the CA of the kubelets' serving
    /// certificates (none: not verified).
    pub fn tls(
        cert_pem: Option<&[u8]>,
        key_pem: Option<&[u8]>,
        ca_pem: Option<&[u8]>,
    ) -> Result<KubeletClient, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let builder = match ca_pem {
            Some(ca) => builder
                .with_root_certificates(roots_from_pem(ca, "--kubelet-certificate-authority")?),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
        };
        let mut config = match (cert_pem, key_pem) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError(format!("--kubelet-client-certificate: {e}")))?;
                if chain.is_empty() {
                    return Err(TlsError(
                        "--kubelet-client-certificate: no certificate found".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| TlsError(format!("--kubelet-client-key: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError(format!(
                        "--kubelet-client-certificate and --kubelet-client-key do not go together: {e}"
                    ))
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError(
                    "--kubelet-client-certificate and --kubelet-client-key must be given together"
                        .into(),
                ))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Some(Arc::new(config)),
        })
    }

    /// [`KubeletClient::tls`] from files; plain HTTP when no file is given.
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<KubeletClient, TlsError> {
        if cert.is_none() && key.is_none() && ca.is_none() {
            return Ok(KubeletClient::default());
        }
        let read = |flag: &str, p: Option<&Path>| {
            p.map(|p| {
                std::fs::read(p).map_err(|e| TlsError(format!("{flag} {}: {e}", p.display())))
            })
            .transpose()
        };
        KubeletClient::tls(
            read("--kubelet-client-certificate", cert)?.as_deref(),
            read("--kubelet-client-key", key)?.as_deref(),
            read("--kubelet-certificate-authority", ca)?.as_deref(),
        )
    }

    /// Whether kubelets are spoken to over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to the kubelet at `host:port` (TLS when configured, the
    /// certificate checked for `host`).
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn KubeletIo>, String> {
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = &self.tls else {
                return Ok(Box::new(tcp) as Box<dyn KubeletIo>);
            };
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(Box::new(stream) as Box<dyn KubeletIo>)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| "connect timed out".to_string())?
    }
}

/// Accepts any serving certificate (no `--kubelet-certificate-authority`)
/// but still checks that the kubelet holds its key.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_with_their_names() {
        assert!(!KubeletClient::load(None, None, None).unwrap().is_tls());
        let ca = ballast_pki::Ca::new("ca").unwrap();
        let client = ca
            .issue(&ballast_pki::CertSpec::client(
                "kube-apiserver-kubelet-client",
                &["system:masters"],
            ))
            .unwrap();
        let (cert, key) = (client.cert_pem.as_bytes(), client.key_pem.as_bytes());
        let ca_pem = ca.cert_pem().as_bytes();
        assert!(KubeletClient::tls(Some(cert), Some(key), Some(ca_pem))
            .unwrap()
            .is_tls());
        assert!(KubeletClient::tls(None, None, Some(ca_pem))
            .unwrap()
            .is_tls());
        assert!(KubeletClient::tls(Some(cert), Some(key), None)
            .unwrap()
            .is_tls());
        let err = |r: Result<KubeletClient, TlsError>| r.unwrap_err().to_string();
        assert!(err(KubeletClient::tls(Some(cert), None, None)).contains("must be given together"));
        assert!(err(KubeletClient::tls(Some(b"x"), Some(key), None))
            .starts_with("--kubelet-client-certificate: no certificate"));
        assert!(err(KubeletClient::tls(Some(cert), Some(b"x"), None))
            .starts_with("--kubelet-client-key"));
        assert!(err(KubeletClient::tls(None, None, Some(b"")))
            .starts_with("--kubelet-certificate-authority"));
        let missing = Path::new("/nonexistent/ca.crt");
        assert!(err(KubeletClient::load(None, None, Some(missing)))
            .starts_with("--kubelet-certificate-authority /nonexistent/ca.crt"));
    }
}
