//! TLS towards storage: a real etcd started here with `--client-cert-auth`
//! on loopback; the apiserver round-trips objects through it with
//! `--etcd-cafile/--etcd-certfile/--etcd-keyfile`, and a missing client
//! certificate or a wrong CA is a clear error, not a hang.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ballast_apiserver::{Apiserver, CacheConfig, Config, EtcdTls, Options};
use ballast_pki::{Ca, CertSpec};
use serde_json::json;

/// A TLS etcd in a temporary directory; killed when dropped.
struct TlsEtcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_etcd(ca: &Ca) -> TlsEtcd {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ca
        .issue(&CertSpec::loopback_server("etcd", &[]))
        .expect("server cert");
    let (cert, key) = server.write(dir.path(), "etcd").expect("write");
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).expect("write ca");
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()))
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .arg("--trusted-ca-file")
        .arg(&ca_path)
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    TlsEtcd {
        child,
        url,
        _dir: dir,
    }
}

fn apiserver(url: &str, tls: EtcdTls) -> Apiserver {
    Apiserver::with_options(
        Config {
            etcd_servers: vec![url.to_string()],
            cache: CacheConfig::default(),
        },
        Options {
            etcd_tls: Some(tls),
            ..Options::default()
        },
    )
    .expect("apiserver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_stores_through_etcd_over_tls() {
    let ca = Ca::new("etcd-ca").unwrap();
    let etcd = start_etcd(&ca);
    let client = ca.issue(&CertSpec::client("kube-apiserver", &[])).unwrap();
    let good = EtcdTls {
        ca_pem: Some(ca.cert_pem().as_bytes().to_vec()),
        cert_pem: Some(client.cert_pem.as_bytes().to_vec()),
        key_pem: Some(client.key_pem.as_bytes().to_vec()),
    };

    // Wait (bounded) for etcd to come up, through the TLS client.
    let probe = apiserver(&etcd.url, good.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match probe.check_storage().await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "etcd over TLS never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(probe);

    let api = common::start_on_with(
        vec![etcd.url.clone()],
        Options {
            etcd_tls: Some(good),
            ..Options::default()
        },
    )
    .await;
    common::namespace(&api, "tls-store").await;
    let (code, body) = api
        .call(
            "POST",
            "/api/v1/namespaces/tls-store/configmaps",
            Some(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, got) = api
        .call("GET", "/api/v1/namespaces/tls-store/configmaps/c", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(got["data"]["k"], "v");

    // No client certificate: etcd refuses the handshake.
    let no_cert = apiserver(
        &etcd.url,
        EtcdTls {
            ca_pem: Some(ca.cert_pem().as_bytes().to_vec()),
            ..EtcdTls::default()
        },
    );
    let start = Instant::now();
    let err = no_cert.check_storage().await.expect_err("no client cert");
    assert!(start.elapsed() < Duration::from_secs(15));
    println!("without a client certificate: {err}");
    assert!(err.to_string().starts_with("etcd: "), "{err}");

    // A CA that did not sign etcd's certificate.
    let other = Ca::new("other-ca").unwrap();
    let wrong_ca = apiserver(
        &etcd.url,
        EtcdTls {
            ca_pem: Some(other.cert_pem().as_bytes().to_vec()),
            cert_pem: Some(client.cert_pem.as_bytes().to_vec()),
            key_pem: Some(client.key_pem.as_bytes().to_vec()),
        },
    );
    let start = Instant::now();
    let err = wrong_ca.check_storage().await.expect_err("wrong CA");
    assert!(start.elapsed() < Duration::from_secs(15));
    println!("with the wrong CA: {err}");
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "{err}"
    );

    // Unreadable PEM paths are reported by name.
    let e = EtcdTls::load(
        Some(std::path::Path::new("/nonexistent/ca.crt")),
        None,
        None,
    )
    .expect_err("missing file");
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
}
