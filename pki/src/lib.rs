//! A small certificate authority for loopback clusters.
//!
//! [`Ca`] makes a self-signed CA and issues leaf certificates from a
//! [`CertSpec`]: a common name (the user for etcd's client-cert auth and the
//! apiserver), organizations (Kubernetes groups), subject alternative names
//! (DNS names and IP addresses) and the usages (server, client or both).
//! Everything is PEM, ready for rustls, etcd's and Kubernetes' flags.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Why a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key` (the key readable by
    /// the owner only) and returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        Ok((cert, key))
    }
}

/// What a leaf certificate says and may be used for.
#[derive(Debug, Clone, Default)]
pub struct CertSpec {
    /// The subject's CN: the user name for client certificates.
    pub common_name: String,
    /// The subject's O entries: Kubernetes groups for client certificates.
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (written as text) the certificate is valid for.
    pub hosts: Vec<String>,
    /// Usable by a TLS server.
    pub server: bool,
    /// Usable by a TLS client.
    pub client: bool,
}

impl CertSpec {
    /// A certificate for a server (and peer) on loopback: `localhost` and
    /// 127.0.0.1, plus `extra_hosts`; usable as server and client, as etcd's
    /// peer certificates must be.
    pub fn loopback_server(common_name: &str, extra_hosts: &[&str]) -> Self {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        hosts.extend(extra_hosts.iter().map(|h| h.to_string()));
        CertSpec {
            common_name: common_name.to_string(),
            organizations: Vec::new(),
            hosts,
            server: true,
            client: true,
        }
    }

    /// A client certificate for `user` in `groups`.
    pub fn client(user: &str, groups: &[&str]) -> Self {
        CertSpec {
            common_name: user.to_string(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            hosts: Vec::new(),
            server: false,
            client: true,
        }
    }
}

/// A certificate authority: its certificate and signing key.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA named `common_name` with a fresh key.
    pub fn new(common_name: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name)?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            params,
            key,
            cert_pem,
        })
    }

    /// A CA made earlier by [`Ca::new`] with the same `common_name`, from its
    /// certificate and key (as written by [`Ca::write`]).
    pub fn from_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        Ok(Ca {
            params: ca_params(common_name)?,
            key: KeyPair::from_pem(key_pem)?,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Loads `<dir>/ca.crt` and `<dir>/ca.key` if both exist, otherwise makes
    /// a new CA and writes them there.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<Ca, Error> {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert.exists() && key.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|source| Error::Io {
                    path: p.to_path_buf(),
                    source,
                })
            };
            return Ca::from_pem(common_name, &read(&cert)?, &read(&key)?);
        }
        let ca = Ca::new(common_name)?;
        ca.write(dir)?;
        Ok(ca)
    }

    /// The CA certificate, PEM: what clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `<dir>/ca.crt` and `<dir>/ca.key`, creating `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cert = dir.join("ca.crt");
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&dir.join("ca.key"), &self.key.serialize_pem(), true)?;
        Ok(cert)
    }

    /// Issues a leaf certificate with a fresh key.
    pub fn issue(&self, spec: &CertSpec) -> Result<Issued, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(spec.hosts.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        for org in &spec.organizations {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Ten years: a loopback cluster's CA should not expire under its users.
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// Writes `contents`; a private file (a key) is created with mode 0600 and
/// tightened before anything is written, so it is never readable by others.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    if private {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(contents.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates_and_reloads_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "ballast-ca").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let server = ca
            .issue(&CertSpec::loopback_server("member-1", &["127.0.0.2"]))
            .unwrap();
        assert!(server.key_pem.contains("PRIVATE KEY"));
        let (crt, key) = server.write(dir.path(), "member-1").unwrap();
        assert!(crt.exists() && key.exists());
        let again = Ca::load_or_create(dir.path(), "ballast-ca").unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // The reloaded CA still signs.
        again
            .issue(&CertSpec::client("system:node:node-1", &["system:nodes"]))
            .unwrap();
    }

    #[test]
    fn bad_key_is_an_error() {
        assert!(Ca::from_pem("x", "not a cert", "not a key").is_err());
    }
}
