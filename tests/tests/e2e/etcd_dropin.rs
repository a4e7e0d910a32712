//! `ballast server` as a drop-in for etcd's binary: kubeadm's exact
//! generated etcd command line (TLS on client and peer URLs, client-cert
//! auth, a plain-HTTP metrics URL), an environment-only configuration
//! (`ETCD_*`), etcd's health endpoints (`/health`, `/livez`, `/readyz` with
//! `exclude`/`verbose` and per-check paths, `/version`) on the client and
//! metrics URLs, `grpc.health.v1` through a tonic client, every flag of the
//! installed etcd's `--help` accepted, and bad values refused with Go's
//! errors and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast_pki::{Ca, CertSpec};
use ballast_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest,
};
use ballast_proto::grpc_health_v1::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use ballast_tests::cluster::workspace_bin;
use ballast_tests::etcdctl::ClientTls;
use ballast_tests::process::{self, Io, Launch};
use ballast_tests::Etcdctl;
use tokio_stream::StreamExt as _;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `ballast server` process, killed on drop.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(args: &[String], env: &[(&str, String)], log: &Path) -> Server {
        let mut launch = Launch::new(workspace_bin("ballast"))
            .arg("server")
            .args(args.iter().cloned())
            .io(Io::Log(log.to_path_buf()));
        for (k, v) in env {
            launch = launch.env(*k, v.clone());
        }
        let child = process::spawn(launch).expect("spawn ballast server");
        Server {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn stop(mut self) -> Option<i32> {
        process::terminate(&mut self.child, Duration::from_secs(30)).and_then(|s| s.code())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        process::kill(&mut self.child);
    }
}

/// `etcdctl endpoint health` until it passes; the log on failure.
fn wait_healthy(ctl: &Etcdctl, server: &Server) {
    let ok = process::poll(START_TIMEOUT, Duration::from_millis(200), || {
        (ctl.run(&["endpoint", "health"]).code == 0).then_some(())
    });
    assert!(ok.is_some(), "server never healthy:\n{}", server.log());
}

/// An HTTP answer: status code and body.
struct Answer {
    code: u16,
    body: String,
}

/// `curl` (plain or with the client TLS files): status and body.
fn curl(method: &str, url: &str, tls: Option<&ClientTls>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", method])
        .args(["-w", "\n%{http_code}", url]);
    if let Some(tls) = tls {
        for (flag, file) in [
            ("--cacert", &tls.cacert),
            ("--cert", &tls.cert),
            ("--key", &tls.key),
        ] {
            if let Some(file) = file {
                cmd.arg(flag).arg(file);
            }
        }
    }
    let out = cmd.stderr(Stdio::inherit()).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    Answer {
        code: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// The health endpoints as etcd answers them on a healthy one-member
/// cluster, at `base` (`http://host:port`).
fn check_health_endpoints(base: &str, tls: Option<&ClientTls>) {
    let get = |path: &str| curl("GET", &format!("{base}{path}"), tls);
    let a = get("/health");
    assert_eq!(
        (a.code, a.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let a = get("/health?serializable=true");
    assert_eq!(
        (a.code, a.body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    let a = get("/health?exclude=NOSPACE");
    assert_eq!(a.code, 200, "{}", a.body);

    for path in ["/livez", "/readyz"] {
        let a = get(path);
        assert_eq!((a.code, a.body.as_str()), (200, "ok\n"), "{path}");
    }
    let a = get("/livez?verbose");
    assert_eq!(a.body, "[+]serializable_read ok\nok\n");
    let a = get("/readyz?verbose");
    assert_eq!(
        a.body,
        "[+]data_corruption ok\n[+]linearizable_read ok\n[+]non_learner ok\n\
         [+]serializable_read ok\nok\n"
    );
    let a = get("/readyz?verbose&exclude=linearizable_read&exclude=non_learner&exclude=nonsense");
    assert_eq!(
        a.body,
        "[+]data_corruption ok\n[+]serializable_read ok\nok\n"
    );
    for check in [
        "data_corruption",
        "linearizable_read",
        "non_learner",
        "serializable_read",
    ] {
        let a = get(&format!("/readyz/{check}?verbose"));
        assert_eq!((a.code, a.body), (200, format!("[+]{check} ok\nok\n")));
    }
    let a = get("/livez/serializable_read");
    assert_eq!((a.code, a.body.as_str()), (200, "ok\n"));
    for path in [
        "/readyz/nonsense",
        "/livez/linearizable_read",
        "/readyz/a/b",
    ] {
        let a = get(path);
        assert_eq!(
            (a.code, a.body.trim()),
            (404, "404 page not found"),
            "{path}"
        );
    }
    // etcd answers only GET.
    let a = curl("POST", &format!("{base}/livez"), tls);
    assert_eq!(a.code, 405);

    let a = get("/version");
    assert_eq!(a.code, 200);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("/version is JSON");
    assert!(v["etcdserver"].as_str().unwrap().starts_with("3.5."), "{v}");
    assert_eq!(v["etcdcluster"], "3.5.0");
    let a = get("/metrics");
    assert_eq!(a.code, 200);
    assert!(a.body.contains("etcd_server_has_leader 1"), "{}", a.body);
}

/// kubeadm's `etcd.yaml` command (`cmd/kubeadm/app/phases/etcd/local.go`
/// `getEtcdCommand`), flags in its (sorted) order, for a member `name`
/// with certificates under `pki`.
fn kubeadm_flags(name: &str, data: &Path, pki: &Path, ports: &[u16]) -> Vec<String> {
    let (client, peer, metrics) = (ports[0], ports[1], ports[2]);
    let p = |f: &str| pki.join(f).display().to_string();
    vec![
        format!("--advertise-client-urls=https://127.0.0.1:{client}"),
        format!("--cert-file={}", p("server.crt")),
        "--client-cert-auth=true".into(),
        format!("--data-dir={}", data.display()),
        "--experimental-initial-corrupt-check=true".into(),
        "--experimental-watch-progress-notify-interval=5s".into(),
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
        format!("--initial-cluster={name}=https://127.0.0.1:{peer}"),
        format!("--key-file={}", p("server.key")),
        format!("--listen-client-urls=https://127.0.0.1:{client}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
        format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
        format!("--name={name}"),
        format!("--peer-cert-file={}", p("peer.crt")),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-key-file={}", p("peer.key")),
        format!("--peer-trusted-ca-file={}", p("ca.crt")),
        "--snapshot-count=10000".into(),
        format!("--trusted-ca-file={}", p("ca.crt")),
    ]
}

/// kubeadm's etcd PKI (`/etc/kubernetes/pki/etcd`): a CA, the server and
/// peer certificates, and the apiserver's client certificate.
fn kubeadm_pki(dir: &Path, name: &str) -> ClientTls {
    std::fs::create_dir_all(dir).unwrap();
    let ca = Ca::new("etcd-ca").unwrap();
    let ca_file = ca.write(dir).unwrap();
    for file in ["server", "peer"] {
        ca.issue(&CertSpec::loopback_server(name, &[]))
            .unwrap()
            .write(dir, file)
            .unwrap();
    }
    let (cert, key) = ca
        .issue(&CertSpec::client("kube-apiserver-etcd-client", &[]))
        .unwrap()
        .write(dir, "apiserver-etcd-client")
        .unwrap();
    ClientTls {
        cacert: Some(ca_file),
        cert: Some(cert),
        key: Some(key),
    }
}

#[test]
fn kubeadm_generated_command_line() {
    let dir = process::cluster_dir("kubeadm");
    let pki = dir.path().join("pki/etcd");
    let client_tls = kubeadm_pki(&pki, "node-1");
    let ports = process::free_ports(3);
    let flags = kubeadm_flags("node-1", &dir.path().join("etcd"), &pki, &ports);
    let server = Server::start(&flags, &[], &dir.path().join("server.log"));

    let endpoint = format!("https://127.0.0.1:{}", ports[0]);
    let ctl = Etcdctl::new([endpoint.clone()]).with_tls(client_tls.clone());
    wait_healthy(&ctl, &server);
    assert_eq!(ctl.run(&["put", "/registry/k", "v"]).ok().stdout, "OK\n");
    assert_eq!(
        ctl.run(&["get", "/registry/k"]).ok().stdout,
        "/registry/k\nv\n"
    );
    // Without a client certificate the client URL refuses the handshake.
    let bare = Etcdctl::new([endpoint.clone()])
        .with_tls(ClientTls {
            cacert: client_tls.cacert.clone(),
            cert: None,
            key: None,
        })
        .with_timeout(Duration::from_secs(5));
    assert_ne!(bare.run(&["get", "/registry/k"]).code, 0);

    // The metrics URL: plain HTTP, no client certificate needed.
    let metrics = format!("http://127.0.0.1:{}", ports[2]);
    check_health_endpoints(&metrics, None);
    // The client URL serves them too (over its TLS).
    check_health_endpoints(&endpoint, Some(&client_tls));

    let log = server.log();
    // kubeadm turns the initial corruption check on: it runs (a lone
    // member has no peer to differ from).
    assert!(log.contains("initial corruption check passed"), "{log}");
    assert!(!log.contains("unrecognized environment variable"), "{log}");
    assert_eq!(server.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_only_configuration() {
    let dir = process::cluster_dir("etcd-env");
    let ports = process::free_ports(3);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let metrics = format!("http://127.0.0.1:{}", ports[2]);
    let env = [
        ("ETCD_NAME", "envy".to_string()),
        (
            "ETCD_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("ETCD_LISTEN_CLIENT_URLS", client.clone()),
        ("ETCD_ADVERTISE_CLIENT_URLS", client.clone()),
        ("ETCD_LISTEN_PEER_URLS", peer.clone()),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer.clone()),
        ("ETCD_INITIAL_CLUSTER", format!("envy={peer}")),
        ("ETCD_INITIAL_CLUSTER_STATE", "new".into()),
        ("ETCD_LISTEN_METRICS_URLS", metrics.clone()),
        ("ETCD_SNAPSHOT_COUNT", "5000".into()),
        (
            "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
            "1s".into(),
        ),
        ("ETCD_PRE_VOTE", "true".into()),
        ("ETCD_NO_SUCH_SETTING", "1".into()),
    ];
    let log = dir.path().join("server.log");
    let server = tokio::task::block_in_place(|| Server::start(&[], &env, &log));
    let ctl = Etcdctl::new([client.clone()]);
    tokio::task::block_in_place(|| {
        wait_healthy(&ctl, &server);
        assert_eq!(ctl.run(&["put", "k", "v"]).ok().stdout, "OK\n");
        let members = ctl.run(&["member", "list", "-w", "json"]).ok().json();
        assert_eq!(members["members"][0]["name"], "envy");
        assert_eq!(members["members"][0]["peerURLs"][0], peer.as_str());
        check_health_endpoints(&metrics, None);
    });

    // The progress interval from the environment: a watch asking for
    // progress notifications gets one (etcd's default is 10 minutes).
    let mut watch_client = WatchClient::connect(client.clone()).await.expect("connect");
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"k".to_vec(),
            progress_notify: true,
            ..Default::default()
        })),
    };
    let mut responses = watch_client
        .watch(tokio_stream::iter([create]).chain(tokio_stream::pending()))
        .await
        .expect("Watch")
        .into_inner();
    let created = responses.message().await.expect("stream").expect("created");
    assert!(created.created);
    let progress = tokio::time::timeout(Duration::from_secs(30), responses.message())
        .await
        .expect("a progress notification within 30 s (the interval is 1 s)")
        .expect("stream")
        .expect("a response");
    assert!(progress.events.is_empty() && !progress.created && !progress.canceled);
    assert_eq!(progress.watch_id, created.watch_id);

    // grpc.health.v1 on the client URL.
    let mut health = HealthClient::connect(client.clone())
        .await
        .expect("connect");
    let whole = HealthCheckRequest {
        service: String::new(),
    };
    let status = health
        .check(whole.clone())
        .await
        .expect("Check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "unknown service");
    let mut watch = health.watch(whole).await.expect("Watch").into_inner();
    let first = watch
        .message()
        .await
        .expect("Watch stream")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let text = server.log();
    assert!(
        text.contains("unrecognized environment variable") && text.contains("ETCD_NO_SUCH_SETTING"),
        "{text}"
    );
    assert!(
        text.contains("recognized and used environment variable"),
        "{text}"
    );
    assert!(
        text.contains("--pre-vote=true is accepted for etcd compatibility and ignored"),
        "{text}"
    );
    let code = tokio::task::block_in_place(|| server.stop());
    assert_eq!(code, Some(0));
}

/// Runs `ballast server` expected to refuse to start: its exit code and
/// stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(workspace_bin("ballast"));
    cmd.arg("server").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let dir = process::cluster_dir("refused");
    cmd.current_dir(dir.path());
    let out = cmd.output().expect("run ballast server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_values_get_etcds_errors() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--snapshot-count=ten"], &[], "'ten' for '--snapshot-count"),
        (&["--snapshot-count=ten"], &[], "parse error"),
        (&["--client-cert-auth=yes"], &[], "parse error"),
        (&["--heartbeat-interval=99999999999999999999"], &[], "value out of range"),
        (
            &["--experimental-watch-progress-notify-interval=5"],
            &[],
            "time: missing unit in duration \"5\"",
        ),
        (&["--initial-cluster-state=sideways"], &[], "'sideways'"),
        (&["--proxy=maybe"], &[], "invalid value \"maybe\""),
        (&[], &[("ETCD_SNAPSHOT_COUNT", "lots")], "parse error"),
        (&[], &[("ETCD_AUTO_TLS", "perhaps")], "parse error"),
        (
            &["--name=a"],
            &[("ETCD_NAME", "b")],
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag",
        ),
        (&["--config-file=/etc/etcd.yaml"], &[], "--config-file /etc/etcd.yaml: etcd's configuration file is not supported"),
        (&["--quota-backend-bytes=-1"], &[], "--quota-backend-bytes -1 must not be negative"),
        (&["--listen-metrics-urls=ftp://127.0.0.1:1"], &[], "URL scheme must be http or https"),
        (
            &["--listen-metrics-urls=https://127.0.0.1:1"],
            &[],
            "TLS key/cert (--cert-file, --key-file) must be provided for metrics url https://127.0.0.1:1",
        ),
        (&["--no-such-flag"], &[], "unexpected argument '--no-such-flag'"),
        // Go's single-dash spelling reads the same flags.
        (&["-snapshot-count=ten"], &[], "'ten' for '--snapshot-count"),
        (&["-initial-cluster-state", "sideways"], &[], "'sideways'"),
        (&["-name=a"], &[("ETCD_NAME", "b")], "conflicting environment variable \"ETCD_NAME\""),
    ];
    for (args, env, needle) in cases {
        let (code, stderr) = refused(args, env);
        assert_ne!(code, 0, "{args:?} {env:?} started");
        assert!(stderr.contains(needle), "{args:?} {env:?}: {stderr}");
    }
}

/// Every `--flag` of the installed etcd's `--help` is one `ballast server`
/// takes (listed in its `--help`).
#[test]
fn every_flag_of_etcds_help_is_accepted() {
    let etcd = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    let out = Command::new(&etcd)
        .arg("--help")
        .output()
        .expect("run etcd --help");
    let help =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '\'', '=']).next().unwrap())
        .collect();
    assert!(flags.len() > 60, "etcd --help listed {} flags", flags.len());

    let ours = Command::new(workspace_bin("ballast"))
        .args(["server", "--help"])
        .output()
        .expect("run ballast server --help");
    assert!(ours.status.success());
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    for flag in flags {
        let listed = ours.lines().any(|l| {
            l.trim_start().starts_with(&format!("--{flag} "))
                || l.trim_start().starts_with(&format!("--{flag}["))
                || l.trim_start() == format!("--{flag}")
        });
        assert!(
            listed,
            "--{flag} is missing from `ballast server --help`:\n{ours}"
        );
    }
    // And `--version` answers as etcd's does.
    let v = Command::new(workspace_bin("ballast"))
        .args(["server", "--version"])
        .output()
        .unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("etcd Version: 3.5."));
}
