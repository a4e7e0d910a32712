//! TLS on the client and peer URLs, with etcd's flags: real `etcdctl`
//! with `--cacert/--cert/--key` against three-member clusters serving
//! `https://` client and peer URLs with client-cert auth on both, refused
//! clients, a member whose peer certificate comes from another CA, and the
//! start-up errors for `https://` URLs without certificates.
//!
//! Every case runs against real etcd and against Ballast ([`tls_suite!`]);
//! a few Ballast-only checks (its own error messages) are at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use ballast_pki::{Ca, CertSpec};
use ballast_tests::cluster::{workspace_bin, ClusterOptions, HEALTHY_TIMEOUT};
use ballast_tests::etcdctl::ClientTls;
use ballast_tests::process::{self, Io, Launch};
use ballast_tests::{Cluster, ClusterKind, Etcdctl, Output};

/// A three-member TLS cluster of `kind` shared by this file's read-mostly
/// cases (each under its own key prefix). Never dropped: its members die
/// with the test process.
fn shared_tls(kind: ClusterKind) -> &'static Cluster {
    static SHARED: Mutex<Vec<(ClusterKind, &'static Cluster)>> = Mutex::new(Vec::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = shared.iter().find(|(k, _)| *k == kind) {
        return c;
    }
    let c: &'static Cluster = Box::leak(Box::new(tls_cluster(kind)));
    process::remove_dir_after_exit(c.dir());
    shared.push((kind, c));
    c
}

fn tls_cluster(kind: ClusterKind) -> Cluster {
    Cluster::start_with(kind, ClusterOptions { size: 3, tls: true })
}

/// A client certificate for `user` from a CA the cluster does not trust,
/// written to `dir`.
fn foreign_client(dir: &Path, user: &str) -> (PathBuf, PathBuf) {
    let other = Ca::new("some-other-ca").unwrap();
    other
        .issue(&CertSpec::client(user, &[]))
        .unwrap()
        .write(dir, &format!("foreign-{user}"))
        .unwrap()
}

/// `etcdctl` against the cluster's members with these TLS files and a
/// short deadline (a refused client may otherwise retry until it).
fn ctl_with(cluster: &Cluster, tls: ClientTls) -> Etcdctl {
    Etcdctl::new(cluster.endpoints())
        .with_tls(tls)
        .with_timeout(Duration::from_secs(20))
}

fn refused(out: &Output) {
    assert!(
        out.code != 0 && out.stdout.trim().is_empty(),
        "expected the request to be refused: {out:#?}"
    );
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl")
}

/// Runs `program args` (a server expected to refuse to start) with a
/// deadline; returns its exit code and its output.
fn run_to_exit(program: PathBuf, args: &[String], log: &Path) -> (Option<i32>, String) {
    let launch = Launch::new(program)
        .args(args.iter().cloned())
        .io(Io::Log(log.to_path_buf()));
    let mut child = process::spawn(launch).expect("spawn the server");
    let status = process::wait_timeout(&mut child, Duration::from_secs(30));
    if status.is_none() {
        process::kill(&mut child);
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (status.map(|s| s.code().unwrap_or(-1)), text)
}

fn program(kind: ClusterKind) -> (PathBuf, Vec<String>) {
    match kind {
        ClusterKind::Etcd => (
            std::env::var_os("ETCD_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd")),
            vec![],
        ),
        ClusterKind::Ballast => (workspace_bin("ballast"), vec!["server".to_string()]),
    }
}

/// A one-member server's flags with the given URL schemes.
fn single_member_flags(
    dir: &Path,
    client_scheme: &str,
    peer_scheme: &str,
) -> (Vec<String>, u16, u16) {
    let ports = process::free_ports(2);
    let client = format!("{client_scheme}://127.0.0.1:{}", ports[0]);
    let peer = format!("{peer_scheme}://127.0.0.1:{}", ports[1]);
    let flags = vec![
        "--name=solo".to_string(),
        format!("--data-dir={}", dir.join("solo.data").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=solo={peer}"),
    ];
    (flags, ports[0], ports[1])
}

mod cases {
    use super::*;

    /// put, get, watch, endpoint status and member list over https with
    /// the cluster's CA and a client certificate.
    pub fn etcdctl_over_https(kind: ClusterKind) {
        let cluster = shared_tls(kind);
        let ctl = cluster.etcdctl();
        assert!(ctl.endpoints().iter().all(|e| e.starts_with("https://")));

        let out = ctl.run(&["put", "https/a", "1"]);
        assert_eq!(out.ok().stdout, "OK\n");
        let out = ctl.run(&["get", "https/a"]);
        assert_eq!(out.ok().stdout, "https/a\n1\n");

        let put = ctl.run(&["put", "https/w", "v", "-w", "json"]);
        let rev = put.ok().json()["header"]["revision"].as_i64().unwrap();
        let out = ctl.stream(
            &["watch", "https/w", &format!("--rev={rev}")],
            3,
            Duration::from_secs(15),
        );
        assert!(!out.timed_out, "{out:#?}");
        assert_eq!(out.stdout, "PUT\nhttps/w\nv\n");

        let out = ctl.run(&["endpoint", "status", "-w", "json"]);
        let statuses = out.ok().json();
        let statuses = statuses.as_array().unwrap();
        assert_eq!(statuses.len(), 3, "{out:#?}");
        let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
        assert_ne!(leader, 0);
        for s in statuses {
            assert_eq!(s["Status"]["leader"].as_u64(), Some(leader), "{out:#?}");
            assert!(s["Endpoint"].as_str().unwrap().starts_with("https://"));
        }

        let out = ctl.run(&["member", "list", "-w", "json"]);
        let json = out.ok().json();
        let members = json["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{out:#?}");
        for m in members {
            for field in ["peerURLs", "clientURLs"] {
                let urls = m[field].as_array().unwrap();
                assert!(!urls.is_empty(), "{field} of {m}");
                assert!(
                    urls.iter()
                        .all(|u| u.as_str().unwrap().starts_with("https://127.0.0.1:")),
                    "{field} of {m}"
                );
            }
        }
        let out = ctl.run(&["endpoint", "health"]);
        out.ok();
    }

    /// `/health` and `/metrics` over https, with a client certificate;
    /// without one the handshake is refused.
    pub fn http_routes_over_https(kind: ClusterKind) {
        let cluster = shared_tls(kind);
        let tls = &cluster.tls().unwrap().client;
        let (ca, cert, key) = (
            tls.cacert.as_ref().unwrap().to_str().unwrap(),
            tls.cert.as_ref().unwrap().to_str().unwrap(),
            tls.key.as_ref().unwrap().to_str().unwrap(),
        );
        let base = cluster.member(0).client_url();
        let health = format!("{base}/health");
        let out = curl(&["-f", "--cacert", ca, "--cert", cert, "--key", key, &health]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(body.contains("\"health\":\"true\""), "{body}");
        let metrics = format!("{base}/metrics");
        let out = curl(&["-f", "--cacert", ca, "--cert", cert, "--key", key, &metrics]);
        assert!(out.status.success(), "{out:?}");
        assert!(!out.stdout.is_empty());

        let out = curl(&["-f", "--cacert", ca, &health]);
        assert!(!out.status.success(), "no client certificate: {out:?}");
    }

    /// With `--client-cert-auth` a client without a certificate is refused,
    /// and so is one that does not trust the server's CA.
    pub fn client_without_cert_is_refused(kind: ClusterKind) {
        let cluster = shared_tls(kind);
        let ca = cluster.tls().unwrap().ca_file.clone();
        let no_cert = ctl_with(
            cluster,
            ClientTls {
                cacert: Some(ca),
                ..ClientTls::default()
            },
        );
        refused(&no_cert.run(&["get", "refused/a", "--command-timeout=5s"]));
        refused(&no_cert.run(&["put", "refused/a", "x", "--command-timeout=5s"]));

        // A client certificate, but no --cacert: the server's certificate
        // cannot be verified.
        let mut untrusting = cluster.tls().unwrap().client.clone();
        untrusting.cacert = None;
        let out = ctl_with(cluster, untrusting).run(&["get", "refused/a", "--command-timeout=5s"]);
        refused(&out);

        // Nothing was written by the refused clients.
        let out = cluster.etcdctl().run(&["get", "refused/a"]);
        assert_eq!(out.ok().stdout, "");
    }

    /// A client certificate signed by another CA is refused.
    pub fn client_cert_from_other_ca_is_refused(kind: ClusterKind) {
        let cluster = shared_tls(kind);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = foreign_client(dir.path(), "root");
        let ctl = ctl_with(
            cluster,
            ClientTls {
                cacert: Some(cluster.tls().unwrap().ca_file.clone()),
                cert: Some(cert),
                key: Some(key),
            },
        );
        refused(&ctl.run(&["put", "foreign/a", "x", "--command-timeout=5s"]));
        let out = cluster.etcdctl().run(&["get", "foreign/a"]);
        assert_eq!(out.ok().stdout, "");
    }

    /// A member added to a TLS cluster whose peer certificate comes from
    /// another CA never becomes a working member: the others refuse its
    /// connections and it refuses theirs. The cluster stays healthy.
    pub fn peer_cert_from_other_ca_cannot_join(kind: ClusterKind) {
        let mut cluster = tls_cluster(kind);
        let ctl = cluster.etcdctl();
        ctl.run(&["put", "peer/before", "1"]).ok();

        let bad = cluster.prepare_member("bad");
        let other = Ca::new("rogue-ca").unwrap();
        let tls_dir = cluster.tls().unwrap().dir.clone();
        let (cert, key) = other
            .issue(&CertSpec::loopback_server("bad", &[]))
            .unwrap()
            .write(&tls_dir, "bad-rogue")
            .unwrap();
        {
            let m = cluster.member_mut(bad);
            let tls = m.tls.as_mut().unwrap();
            tls.peer_cert_file = cert;
            tls.peer_key_file = key;
        }
        let peer = cluster.member(bad).peer_url();
        // A just-started etcd refuses new members ("unhealthy cluster")
        // until its peers have been connected for 5 s.
        let out = process::poll(Duration::from_secs(30), Duration::from_millis(250), || {
            let out = ctl.run(&["member", "add", "bad", &format!("--peer-urls={peer}")]);
            (!out.stderr.contains("unhealthy cluster")).then_some(out)
        })
        .expect("member add kept failing with: unhealthy cluster");
        out.ok();
        let initial = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out:#?}"))
            .to_string();
        cluster.spawn_added_member(bad, &initial);

        // The bad member reports TLS errors (or gives up and exits).
        let tls_error = |log: &str| {
            let log = log.to_ascii_lowercase();
            [
                "certificate",
                "unknown ca",
                "unknownca",
                "unknownissuer",
                "tls:",
            ]
            .iter()
            .any(|n| log.contains(n))
        };
        let reported = process::poll(HEALTHY_TIMEOUT, Duration::from_millis(200), || {
            let m = cluster.member_mut(bad);
            let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            (tls_error(&text) || !m.is_running()).then_some(())
        });
        assert!(
            reported.is_some(),
            "the bad member reported no TLS error:\n{}",
            cluster.log_tails(30)
        );
        // The good members refused it too.
        let good_logs: String = (0..3)
            .map(|i| std::fs::read_to_string(&cluster.member(i).log_path).unwrap_or_default())
            .collect();
        let rejected = process::poll(Duration::from_secs(20), Duration::from_millis(200), || {
            let logs: String = (0..3)
                .map(|i| std::fs::read_to_string(&cluster.member(i).log_path).unwrap_or_default())
                .collect();
            logs.to_ascii_lowercase()
                .contains("rejected connection")
                .then_some(())
        });
        assert!(
            rejected.is_some() || tls_error(&good_logs),
            "no member logged a rejected connection:\n{}",
            cluster.log_tails(30)
        );

        // It does not serve: no linearizable read succeeds there.
        if cluster.member_mut(bad).is_running() {
            let out = cluster
                .etcdctl_at(bad)
                .with_timeout(Duration::from_secs(15))
                .run(&["get", "peer/before", "--command-timeout=3s"]);
            assert!(out.code != 0, "the bad member served a read: {out:#?}");
        }

        // The three good members are healthy and take writes; the bad one
        // is listed but never started (no client URLs published).
        let good = Etcdctl::new((0..3).map(|i| cluster.member(i).endpoint()))
            .with_tls(cluster.tls().unwrap().client.clone());
        good.run(&["endpoint", "health", "--command-timeout=5s"])
            .ok();
        good.run(&["put", "peer/after", "2"]).ok();
        assert_eq!(
            good.run(&["get", "peer/after"]).ok().stdout,
            "peer/after\n2\n"
        );
        let json = good.run(&["member", "list", "-w", "json"]).ok().json();
        let members = json["members"].as_array().unwrap();
        assert_eq!(members.len(), 4, "{json}");
        let listed = members
            .iter()
            .find(|m| {
                m["peerURLs"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u.as_str() == Some(peer.as_str())))
            })
            .unwrap_or_else(|| panic!("bad member not listed: {json}"));
        assert!(
            listed["clientURLs"].as_array().is_none_or(|u| u.is_empty()),
            "the bad member published client URLs: {listed}"
        );
    }

    /// An https client URL without --cert-file/--key-file: the server
    /// exits at once with etcd's message.
    pub fn https_client_url_without_cert_is_an_error(kind: ClusterKind) {
        let dir = tempfile::tempdir().unwrap();
        let (program, mut args) = program(kind);
        let (flags, client_port, _) = single_member_flags(dir.path(), "https", "http");
        args.extend(flags);
        let (code, log) = run_to_exit(program, &args, &dir.path().join("log"));
        assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {log}");
        let want = format!(
            "TLS key/cert (--cert-file, --key-file) must be provided for client url \
             https://127.0.0.1:{client_port} with HTTP"
        );
        assert!(log.contains(&want), "{log}");
    }

    /// An https peer URL without --peer-cert-file/--peer-key-file.
    pub fn https_peer_url_without_cert_is_an_error(kind: ClusterKind) {
        let dir = tempfile::tempdir().unwrap();
        let (program, mut args) = program(kind);
        let (flags, _, peer_port) = single_member_flags(dir.path(), "http", "https");
        args.extend(flags);
        let (code, log) = run_to_exit(program, &args, &dir.path().join("log"));
        assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {log}");
        let want = format!(
            "cannot listen on TLS for 127.0.0.1:{peer_port}: KeyFile and CertFile are not presented"
        );
        assert!(log.contains(&want), "{log}");
    }
}

macro_rules! tls_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;
            tls_suite!(@cases $kind;
                etcdctl_over_https,
                http_routes_over_https,
                client_without_cert_is_refused,
                client_cert_from_other_ca_is_refused,
                peer_cert_from_other_ca_cannot_join,
                https_client_url_without_cert_is_an_error,
                https_peer_url_without_cert_is_an_error,
            );
        }
    };
    (@cases $kind:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                cases::$case($kind);
            }
        )*
    };
}

tls_suite!(etcd, ClusterKind::Etcd);
tls_suite!(ballast, ClusterKind::Ballast);

/// Ballast's own start-up errors for unusable certificate files.
mod ballast_errors {
    use super::*;

    fn start_with_cert(cert: &Path, key: &Path) -> (Option<i32>, String) {
        let dir = tempfile::tempdir().unwrap();
        let (program, mut args) = program(ClusterKind::Ballast);
        let (flags, _, _) = single_member_flags(dir.path(), "https", "http");
        args.extend(flags);
        args.push(format!("--cert-file={}", cert.display()));
        args.push(format!("--key-file={}", key.display()));
        run_to_exit(program, &args, &dir.path().join("log"))
    }

    #[test]
    fn unreadable_or_invalid_pem_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca").unwrap();
        let (cert, key) = ca
            .issue(&CertSpec::loopback_server("solo", &[]))
            .unwrap()
            .write(dir.path(), "solo")
            .unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();

        let (code, log) = start_with_cert(&dir.path().join("missing.crt"), &key);
        assert!(matches!(code, Some(c) if c != 0), "{log}");
        assert!(log.contains("--cert-file: open"), "{log}");

        let (code, log) = start_with_cert(&junk, &key);
        assert!(matches!(code, Some(c) if c != 0), "{log}");
        assert!(
            log.contains("failed to find any PEM data in certificate input"),
            "{log}"
        );

        let (code, log) = start_with_cert(&cert, &junk);
        assert!(matches!(code, Some(c) if c != 0), "{log}");
        assert!(
            log.contains("failed to find any PEM data in key input"),
            "{log}"
        );
    }

    #[test]
    fn client_cert_auth_without_trusted_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (program, mut args) = program(ClusterKind::Ballast);
        let (flags, _, _) = single_member_flags(dir.path(), "http", "http");
        args.extend(flags);
        args.push("--peer-client-cert-auth".into());
        args.push("--peer-cert-file=/nonexistent.crt".into());
        args.push("--peer-key-file=/nonexistent.key".into());
        let (code, log) = run_to_exit(program, &args, &dir.path().join("log"));
        assert!(matches!(code, Some(c) if c != 0), "{log}");
        assert!(
            log.contains("--peer-client-cert-auth needs --peer-trusted-ca-file"),
            "{log}"
        );
    }
}
