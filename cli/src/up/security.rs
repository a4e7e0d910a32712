//! What makes `ballast up` secure by default: one CA under
//! `<data-dir>/pki`, a certificate for every member and component, and a
//! kubeconfig per identity with the certificates embedded.
//!
//! Identities follow Kubernetes' conventions, so the apiserver's bootstrap
//! RBAC policy and Node authorizer apply to them unchanged:
//!
//! | who | CN | O |
//! |---|---|---|
//! | admin (`<data-dir>/kubeconfig`) | `ballast-admin` | `system:masters` |
//! | controller manager | `system:kube-controller-manager` | |
//! | scheduler | `system:kube-scheduler` | |
//! | kubelet of node N | `system:node:node-N` | `system:nodes` |
//! | sim kubelet (all simulated nodes) | `ballast:sim-kubelet` | bound to `cluster-admin` by `up` |
//! | apiserver → kubelets | `kube-apiserver-kubelet-client` | `system:masters` |
//! | kubelet API of node N (serving, for 127.0.0.1 and `node-N`) | `system:node:node-N` | `system:nodes` |
//! | apiserver → storage | `kube-apiserver-etcd-client` | |
//! | etcdctl | `root` (etcd's root user, should auth be enabled) | |
//!
//! The storage members, the apiserver's storage client and etcdctl have a
//! CA of their own (`<data-dir>/pki/etcd`), as kubeadm does: the members
//! trust nothing else.
//!
//! The apiserver signs service account tokens with `pki/sa.key` and
//! verifies them with `pki/sa.pub`.
//!
//! Certificates and keys are made once and reused when `up` runs again on
//! the same directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ballast_pki::{Ca, CertSpec};
use base64::Engine as _;

/// The common names of the two CAs: one for the storage members and their
/// clients (the apiserver, etcdctl), one for the Kubernetes side. Storage
/// trusts only its own, so a kubelet's or component's certificate cannot
/// reach etcd directly and bypass the apiserver's authorization.
const CA_NAME: &str = "ballast-ca";
const STORAGE_CA_NAME: &str = "ballast-etcd-ca";

/// The user of the simulated kubelet, which acts for many nodes at once.
pub const SIM_KUBELET_USER: &str = "ballast:sim-kubelet";

/// The file name (`pki/<name>.crt`, `.key`) of the apiserver's client
/// certificate towards kubelets, as kubeadm names it.
pub const KUBELET_CLIENT_FILE: &str = "apiserver-kubelet-client";

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    fn read(&self) -> anyhow::Result<(String, String)> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// The cluster's CA and the certificates issued from it.
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    /// Loads `<data_dir>/pki`, creating the CA the first time.
    pub fn open(data_dir: &Path) -> anyhow::Result<Pki> {
        let dir = data_dir.join("pki");
        private_dir(&dir)?;
        let ca = Ca::load_or_create(&dir, CA_NAME).context("the cluster CA")?;
        Ok(Pki { dir, ca })
    }

    /// Loads `<data_dir>/pki/etcd`, the storage's own CA, creating it the
    /// first time.
    pub fn open_storage(data_dir: &Path) -> anyhow::Result<Pki> {
        let dir = data_dir.join("pki").join("etcd");
        private_dir(&dir)?;
        let ca = Ca::load_or_create(&dir, STORAGE_CA_NAME).context("the storage CA")?;
        Ok(Pki { dir, ca })
    }

    /// The CA certificate every part trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<name>.crt`/`<name>.key`, issued from `spec` unless both exist.
    pub fn ensure(&self, name: &str, spec: &CertSpec) -> anyhow::Result<CertFiles> {
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        if !(files.cert.exists() && files.key.exists()) {
            self.ca
                .issue(spec)
                .and_then(|issued| issued.write(&self.dir, name))
                .with_context(|| format!("issuing the certificate {name}"))?;
        }
        Ok(files)
    }

    /// The service account token key pair, `sa.key` (ECDSA P-256, PKCS#8)
    /// and `sa.pub`, both 0600, made once: the apiserver signs tokens
    /// with the one and verifies them with the other.
    pub fn service_account_key(&self) -> anyhow::Result<CertFiles> {
        let files = CertFiles {
            cert: self.dir.join("sa.pub"),
            key: self.dir.join("sa.key"),
        };
        if !(files.cert.exists() && files.key.exists()) {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("generating the service account key")?;
            write_private(&files.key, &key.serialize_pem())?;
            write_private(&files.cert, &key.public_key_pem())?;
        }
        Ok(files)
    }

    /// A storage member's certificate: serves clients and peers, and is
    /// its client certificate towards the other members.
    pub fn member(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.ensure(name, &CertSpec::loopback_server(name, &[]))
    }

    /// A client certificate for `user` in `groups`, kept as `<file>`.
    pub fn client(&self, file: &str, user: &str, groups: &[&str]) -> anyhow::Result<CertFiles> {
        self.ensure(file, &CertSpec::client(user, groups))
    }

    /// The serving certificate of the kubelet API of `node`, for its
    /// address (`address`, 127.x) and its name, as a kubelet's serving
    /// certificate from the cluster's signer reads (`system:node:<node>`
    /// in `system:nodes`); kept as `kubelet-<node>-serving`.
    pub fn kubelet_serving(&self, node: &str, address: &str) -> anyhow::Result<CertFiles> {
        let spec = CertSpec {
            common_name: format!("system:node:{node}"),
            organizations: vec!["system:nodes".into()],
            hosts: vec![address.to_string(), node.to_string()],
            server: true,
            client: false,
        };
        self.ensure(&format!("kubelet-{node}-serving"), &spec)
    }

    /// The apiserver's client certificate towards kubelets, as kubeadm
    /// issues it: `kube-apiserver-kubelet-client` in `system:masters`.
    pub fn apiserver_kubelet_client(&self) -> anyhow::Result<CertFiles> {
        self.client(
            KUBELET_CLIENT_FILE,
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )
    }

    /// Writes a kubeconfig for `server` authenticating with `cert`, with the
    /// CA and the certificate embedded, so it works from anywhere.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        cert: &CertFiles,
    ) -> anyhow::Result<()> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ca = std::fs::read_to_string(self.ca_file())?;
        let (cert_pem, key_pem) = cert.read()?;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
             contexts:\n- name: ballast\n  context:\n    cluster: ballast\n    user: ballast\n\
             current-context: ballast\nusers:\n- name: ballast\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca),
            b64(&cert_pem),
            b64(&key_pem),
        );
        write_private(path, &text)
    }
}

/// A kubeconfig for a plain-HTTP apiserver on loopback (`up --insecure`).
pub fn write_plain_kubeconfig(path: &Path, server: &str) -> anyhow::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: {server}\n\
         contexts:\n- name: ballast\n  context:\n    cluster: ballast\n    user: ballast\n\
         current-context: ballast\nusers:\n- name: ballast\n  user: {{}}\n"
    );
    write_private(path, &text)
}

/// Writes a file only its owner can read, never readable by others, even
/// for a moment.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        private_dir(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file that existed keeps its mode through open: tighten it first.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Creates `dir` (and missing parents) if needed and makes it its
/// owner's alone (0700): where keys, kubeconfigs and cluster data live.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Creates (or truncates) `path` as its owner's alone (0600), also when
/// an older run left it open: logs may name users, tokens' subjects and
/// request bodies.
pub fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// gRPC TLS settings for a storage client with `cert`.
pub fn storage_tls(
    pki: &Pki,
    cert: &CertFiles,
) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let ca = std::fs::read_to_string(pki.ca_file())?;
    let (cert_pem, key_pem) = cert.read()?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert_pem, key_pem)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_once_and_kubeconfigs_embed_them() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        let admin = pki
            .client("admin", "ballast-admin", &["system:masters"])
            .unwrap();
        let first = std::fs::read_to_string(&admin.cert).unwrap();
        let again = Pki::open(dir.path()).unwrap();
        let admin2 = again
            .client("admin", "ballast-admin", &["system:masters"])
            .unwrap();
        assert_eq!(std::fs::read_to_string(&admin2.cert).unwrap(), first);

        let path = dir.path().join("kubeconfig");
        pki.write_kubeconfig(&path, "https://127.0.0.1:6443", &admin)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("client-key-data: "));
        let parsed = kube::config::Kubeconfig::read_from(&path).unwrap();
        assert_eq!(parsed.auth_infos.len(), 1);
    }

    /// The kubelet's serving certificate is for its address and name,
    /// server-only; the apiserver's kubelet client is kubeadm's identity.
    #[test]
    fn kubelet_certificates_name_the_node_and_the_apiserver() {
        use x509_parser::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        let read = |files: &CertFiles| {
            let pem = std::fs::read(&files.cert).unwrap();
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            pem.contents
        };
        let serving = read(&pki.kubelet_serving("node-1", "127.0.0.1").unwrap());
        let (_, cert) = X509Certificate::from_der(&serving).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "system:node:node-1");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names = &san.value.general_names;
        assert!(
            names
                .iter()
                .any(|n| matches!(n, GeneralName::IPAddress(ip) if *ip == [127, 0, 0, 1])),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName("node-1"))),
            "{names:?}"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let client = read(&pki.apiserver_kubelet_client().unwrap());
        let (_, cert) = X509Certificate::from_der(&client).unwrap();
        let subject = cert.subject();
        assert_eq!(
            subject.iter_common_name().next().unwrap().as_str().unwrap(),
            "kube-apiserver-kubelet-client"
        );
        assert_eq!(
            subject
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:masters"
        );
    }

    #[test]
    fn keys_and_kubeconfigs_are_private_and_so_are_their_directories() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        // A pki directory left world-readable (an older layout) is tightened.
        std::fs::create_dir_all(dir.path().join("pki/etcd")).unwrap();
        std::fs::set_permissions(
            dir.path().join("pki"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let pki = Pki::open(dir.path()).unwrap();
        let storage = Pki::open_storage(dir.path()).unwrap();
        let member = storage.member("member-1").unwrap();
        let admin = pki
            .client("admin", "ballast-admin", &["system:masters"])
            .unwrap();
        for d in ["pki", "pki/etcd"] {
            assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
        }
        for key in [
            dir.path().join("pki/ca.key"),
            dir.path().join("pki/etcd/ca.key"),
            member.key,
            admin.key.clone(),
        ] {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        let kc = dir.path().join("kubeconfigs/admin.kubeconfig");
        pki.write_kubeconfig(&kc, "https://127.0.0.1:6443", &admin)
            .unwrap();
        assert_eq!(mode(&kc), 0o600);
        assert_eq!(mode(&dir.path().join("kubeconfigs")), 0o700);
        let plain = dir.path().join("kubeconfig");
        std::fs::write(&plain, "old").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_plain_kubeconfig(&plain, "http://127.0.0.1:8080").unwrap();
        assert_eq!(mode(&plain), 0o600);
        let log = dir.path().join("apiserver.log");
        std::fs::write(&log, "old").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(private_file(&log).unwrap());
        assert_eq!(mode(&log), 0o600);
        assert_eq!(std::fs::read(&log).unwrap(), b"");
    }
}
