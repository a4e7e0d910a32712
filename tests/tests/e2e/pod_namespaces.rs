//! `ballast up --pod-namespaces` (root only) with real kubectl: each pod in
//! network, UTS and IPC namespaces of its own — `kubectl exec hostname`
//! prints the pod's name, a pod reaches a Service's cluster IP (served by
//! `ballast proxy` on the host) and another pod's IP, `kubectl
//! port-forward` reaches the built-in httpd (bound to the pod IP), and
//! deleting the pods leaves neither their holder process nor their route
//! on the host.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_tests::up::Up;
use serde_json::json;

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Live processes whose command line holds every one of `parts`.
fn processes_with(parts: &[&str]) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| parts.iter().all(|p| c.contains(p)))
        .count()
}

/// The host's `local` table route to `ip` (empty when there is none).
fn local_route(ip: &str) -> String {
    let out = Command::new("ip")
        .args(["route", "show", "table", "local", ip])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `kubectl port-forward pod/<pod> :<port>` until the local port is
/// known; then one HTTP/1.0 GET of `/` through it: the whole answer.
fn get_through_port_forward(up: &Up, pod: &str, port: u16) -> String {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args(["port-forward", "--address", "127.0.0.1"])
        .arg(format!("pod/{pod}"))
        .arg(format!(":{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let local: Option<u16> = loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break None;
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    break rest.split_whitespace().next().and_then(|p| p.parse().ok());
                }
            }
            Err(_) => break None,
        }
    };
    let answer = local.map(|local| {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n");
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let _ = child.kill();
    let _ = child.wait();
    answer.expect("kubectl port-forward never said where it listens")
}

#[test]
fn pods_get_their_own_namespaces_under_ballast_up() {
    if !is_root() {
        eprintln!("pods_get_their_own_namespaces_under_ballast_up: skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1", "--pod-namespaces"]);
    up.create(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "web", "image": "ballast/httpd",
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                   "periodSeconds": 1}}]}}));
    up.create(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox",
                            "command": ["sleep", "3600"]}]}}),
    );
    up.create(
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/web",
        "pod/client",
        "--timeout=60s",
    ]);
    let web = up.json(&["get", "pod", "web"]);
    let web_ip = web["status"]["podIP"].as_str().expect("pod IP").to_string();
    let uids: Vec<String> = ["web", "client"]
        .iter()
        .map(|p| {
            up.json(&["get", "pod", p])["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // kubectl exec joins the pod's UTS namespace.
    assert_eq!(up.ok(&["exec", "web", "--", "hostname"]), "web\n");
    assert_eq!(up.ok(&["exec", "client", "--", "hostname"]), "client\n");
    // Pod to pod at its IP, and pod to a cluster IP served on the host.
    let curl = |url: &str| up.ok(&["exec", "client", "--", "curl", "-s", "-m", "10", url]);
    assert_eq!(curl(&format!("http://{web_ip}:8080/healthz")), "ok\n");
    let cluster_ip = up.eventually("the Service's endpoints", Duration::from_secs(30), || {
        let svc = up.json(&["get", "service", "web"]);
        let ip = svc["spec"]["clusterIP"].as_str()?.to_string();
        let out = up.kubectl(&[
            "exec",
            "client",
            "--",
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{ip}/healthz"),
        ]);
        (String::from_utf8_lossy(&out.stdout) == "ok\n").then_some(ip)
    });
    assert!(cluster_ip.starts_with("127.96."), "{cluster_ip}");
    // The client's own localhost has nothing on 8080.
    let out = up.kubectl(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        "-m",
        "5",
        "http://127.0.0.1:8080/",
    ]);
    assert!(
        !out.status.success(),
        "the client's localhost answered on 8080"
    );

    // Port-forward reaches the httpd bound to the pod's IP.
    let answer = get_through_port_forward(&up, "web", 8080);
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(answer.ends_with("ballast httpd\n"), "{answer}");

    assert!(!local_route(&web_ip).is_empty(), "the web pod's route");
    for uid in &uids {
        assert_eq!(
            processes_with(&["image sandbox", uid]),
            1,
            "holder of {uid}"
        );
    }
    up.ok(&[
        "delete",
        "pod",
        "web",
        "client",
        "--wait=true",
        "--timeout=60s",
    ]);
    up.eventually(
        "the pods' holders and route gone",
        Duration::from_secs(30),
        || {
            (local_route(&web_ip).is_empty()
                && uids
                    .iter()
                    .all(|uid| processes_with(&["image sandbox", uid]) == 0))
            .then_some(())
        },
    );
}
