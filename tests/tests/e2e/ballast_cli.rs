//! The `ballast` binary's own commands: `snapshot save|status|restore`
//! against a running cluster, and `up` (storage and apiserver) started,
//! used with etcdctl and kubectl, stopped and started again.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_tests::cluster::{workspace_bin, Cluster, ClusterKind};
use ballast_tests::etcdctl::{ClientTls, Etcdctl};
use ballast_tests::process::free_ports;
use ballast_tests::up::Up;

fn ballast(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("ballast"))
        .args(args)
        .output()
        .expect("run ballast")
}

#[test]
fn snapshot_save_and_status() {
    let cluster = Cluster::start(ClusterKind::Ballast);
    let ctl = cluster.etcdctl();
    for i in 0..5 {
        ctl.run(&["put", &format!("snap/{i}"), "v"]).ok();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    let endpoint = cluster.endpoints()[1].clone();
    let out = ballast(&["snapshot", "save", file_s, "--endpoint", &endpoint]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Snapshot saved at {file_s}\n")
    );

    let out = ballast(&["snapshot", "status", file_s]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("revision  6\n"), "{text}");
    assert!(text.contains("keys      5\n"), "{text}");

    // Restored into a new one-member cluster: same data, same revision,
    // and it takes new writes.
    let restored = dir.path().join("restored");
    let out = ballast(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = ballast(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "restoring over existing data must fail"
    );
    let ports = free_ports(2);
    let (client, peer) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
    );
    let mut member = Command::new(workspace_bin("ballast"))
        .args([
            "server",
            "--name",
            "r1",
            "--data-dir",
            restored.to_str().unwrap(),
        ])
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("r1={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rctl = Etcdctl::new([client.clone()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let out = rctl.run(&["get", "snap/", "--prefix", "--keys-only", "-w", "json"]);
        if out.code == 0 {
            break out.json();
        }
        assert!(
            Instant::now() < deadline,
            "restored member never answered: {out:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got["count"], 5, "{got}");
    assert_eq!(got["header"]["revision"], 6, "{got}");
    rctl.run(&["put", "snap/new", "v"]).ok();
    let got = rctl.run(&["get", "snap/new", "-w", "json"]).ok().json();
    assert_eq!(got["kvs"][0]["mod_revision"], 7, "{got}");
    let _ = member.kill();
    let _ = member.wait();

    // A damaged file is refused with a clear message.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = ballast(&["snapshot", "status", file_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{out:?}"
    );
}

/// Uses etcd's fixed local-cluster ports (2379/22379/32379), as users do.
#[test]
fn up_runs_stops_and_comes_back_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let endpoints: Vec<String> = [2379, 22379, 32379]
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    // `up` is secure by default: mutual TLS with the certificates it made.
    let pki = dir.path().join("pki").join("etcd");
    let ctl = Etcdctl::new(endpoints.clone()).with_tls(ClientTls {
        cacert: Some(pki.join("ca.crt")),
        cert: Some(pki.join("etcdctl.crt")),
        key: Some(pki.join("etcdctl.key")),
    });
    // Without a client certificate the members refuse the connection.
    let anonymous = Etcdctl::new(endpoints.clone())
        .with_timeout(Duration::from_secs(10))
        .with_tls(ClientTls {
            cacert: Some(pki.join("ca.crt")),
            ..Default::default()
        });

    let first = Up::start(dir.path(), &[]);
    let refused = anonymous.run(&["get", "greeting"]);
    assert!(refused.code != 0 || refused.timed_out, "{refused:#?}");
    ctl.run(&["put", "greeting", "hello"]).ok();
    // The apiserver over the same storage answers kubectl through the
    // kubeconfig `up` wrote.
    let kubeconfig = dir.path().join("kubeconfig");
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    };
    let out = kubectl(&["create", "namespace", "up-test"]);
    assert!(out.status.success(), "{out:?}");
    let out = kubectl(&[
        "get",
        "namespace",
        "up-test",
        "-o",
        "jsonpath={.metadata.name}",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "up-test", "{out:?}");
    let status = ctl.run(&["endpoint", "status", "-w", "json"]).ok().json();
    assert_eq!(status.as_array().unwrap().len(), 3, "{status}");
    assert!(first.stop().success());
    // Every member process is gone: the ports are free again.
    for p in [2379u16, 22379, 32379, 2380, 22380, 32380, 6443] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still held after ballast up stopped"
        );
    }

    let second = Up::start(dir.path(), &[]);
    let out = ctl.run(&["get", "greeting", "--print-value-only"]);
    assert_eq!(out.ok().stdout, "hello\n");
    let out = kubectl(&[
        "get",
        "namespace",
        "up-test",
        "-o",
        "jsonpath={.metadata.name}",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "up-test", "{out:?}");
    assert!(second.stop().success());
}
