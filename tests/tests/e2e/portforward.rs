//! `pods/portforward` against `ballast up`, end to end: the official
//! Python client's WebSocket protocol (`kubernetes.stream.portforward`,
//! channels `2i`/`2i+1` per port) through the apiserver to the kubelet
//! and the pod's HTTP server; a port nothing listens on reported on its
//! error channel while the other port is served; kube's 400s and RBAC on
//! `pods/portforward`; real kubectl (SPDY/3.1 tunnelled in a WebSocket,
//! and plain SPDY/3.1): two connections through one `kubectl
//! port-forward`, and a refused port reported while another is served.

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ballast_tests::process::output_within;
use ballast_tests::up::{python, Up};
use serde_json::json;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Forwards `ports` of `pod` with the Python client; for each port an
/// HTTP/1.0 GET of `/` through its socket, printed as
/// `<port> response: <first line>` or `<port> error: <error channel>`.
const PYTHON_PORTFORWARD: &str = r#"
import sys, time
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
ports = [int(p) for p in sys.argv[3].split(",")]
pf = portforward(api.connect_get_namespaced_pod_portforward, sys.argv[2], "default",
                 ports=sys.argv[3])
for port in ports:
    sock = pf.socket(port)
    sock.settimeout(20)
    try:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
    except OSError:
        pass
    got = b""
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            part = sock.recv(65536)
        except OSError:
            break
        if not part:
            break
        got += part
    if got:
        print(port, "response:", got.split(b"\r\n")[0].decode(), "|", got.split(b"\r\n\r\n", 1)[-1].decode().strip())
    for _ in range(100):
        if pf.error(port) is not None:
            break
        if got:
            break
        time.sleep(0.1)
    if pf.error(port) is not None:
        print(port, "error:", pf.error(port))
    sys.stdout.flush()
"#;

#[test]
fn python_client_forwards_to_a_pods_http_server() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    up.create(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "ballast/httpd"}]}}),
    );
    let pod = up.eventually("pod web Running", Duration::from_secs(60), || {
        let p = up.json(&["get", "pod", "web"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();

    // kube's 400s: ports of no number, port 0, out of range; a pod that
    // is not scheduled; a pod that is not running.
    let raw = |path: &str| {
        let out = up.kubectl(&["get", "--raw", path]);
        assert!(
            !out.status.success(),
            "{path} answered {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    };
    let base = "/api/v1/namespaces/default/pods/web/portforward";
    for (query, expected) in [
        ("ports=0", "port \\\"0\\\" must be > 0"),
        ("ports=80,x", "unable to parse \\\"80,x\\\" as a port"),
        ("ports=65536", "value out of range"),
    ] {
        let err = raw(&format!("{base}?{query}"));
        assert!(
            err.contains(expected) || err.contains(&expected.replace("\\\"", "\"")),
            "{query}: {err}"
        );
    }
    up.create(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
        "spec": {"nodeSelector": {"no-such": "node"},
            "containers": [{"name": "main", "image": "ballast/httpd"}]}}),
    );
    let err = raw("/api/v1/namespaces/default/pods/nowhere/portforward?ports=8080");
    assert!(
        err.contains("pod nowhere does not have a host assigned"),
        "{err}"
    );
    up.create(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}),
    );
    up.eventually("pod done Succeeded", Duration::from_secs(60), || {
        let p = up.json(&["get", "pod", "done"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    let err = raw("/api/v1/namespaces/default/pods/done/portforward?ports=8080");
    assert!(
        err.contains("unable to forward port because pod is not running. Current status=Succeeded"),
        "{err}"
    );

    // RBAC: `get` on pods/portforward is not enough for a GET upgrade.
    up.ok(&[
        "create",
        "role",
        "pf-getter",
        "--verb=get",
        "--resource=pods,pods/portforward",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "pf-getter",
        "--role=pf-getter",
        "--user=getter",
    ]);
    let denied = up.eventually("getter is refused", Duration::from_secs(20), || {
        let out = up.kubectl(&[
            "--as",
            "getter",
            "get",
            "--raw",
            &format!("{base}?ports=8080"),
        ]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        err.contains("forbidden").then_some(err)
    });
    assert!(
        denied.contains("cannot create resource \\\"pods/portforward\\\"")
            || denied.contains("cannot create resource \"pods/portforward\""),
        "{denied}"
    );

    // The Python client: port 8080 answers; 8081, where nothing listens,
    // is reported on its error channel in kube's words.
    let Some(py) = python() else {
        eprintln!(
            "skipping the Python client part: no venv at $HOME/.cache/ballast/pyenv \
             (run scripts/setup.sh; CI does)"
        );
        return;
    };
    let mut cmd = Command::new(&py);
    cmd.args(["-c", PYTHON_PORTFORWARD])
        .arg(&up.kubeconfig)
        .args(["web", "8080,8081"]);
    let out = output_within(cmd, Duration::from_secs(90));
    let shown = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("8080 response: HTTP/1.0 200 OK | ballast httpd")
            || shown.contains("8080 response: HTTP/1.1 200 OK | ballast httpd"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "8081 error: error forwarding port 8081 to pod web, uid {uid}: dial tcp4 "
        )) && shown.contains("connection refused"),
        "{shown}"
    );
    // A second session works as the first.
    let mut cmd = Command::new(&py);
    cmd.args(["-c", PYTHON_PORTFORWARD])
        .arg(&up.kubeconfig)
        .args(["web", "8080"]);
    let out = output_within(cmd, Duration::from_secs(90));
    let shown = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("8080 response: HTTP/1."), "{shown}");
    assert!(shown.contains("| ballast httpd"), "{shown}");
}

/// A running `kubectl port-forward`, killed when dropped.
struct Forwarder {
    child: std::process::Child,
    /// What kubectl printed, line by line (stdout and stderr).
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Forwarder {
    /// `kubectl port-forward <args…>` on 127.0.0.1, over the WebSocket
    /// tunnel or (`websockets` false) plain SPDY.
    fn start(up: &Up, args: &[&str], websockets: bool) -> Forwarder {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&up.kubeconfig)
            .args(["port-forward", "--address", "127.0.0.1"])
            .args(args)
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl port-forward");
        let (tx, lines) = std::sync::mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Forwarder {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 30 s) for a line containing `part`.
    fn wait_for(&mut self, part: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(part) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("kubectl port-forward never said {part:?}: {:#?}", self.seen);
    }

    /// The local port of `Forwarding from 127.0.0.1:P -> R`.
    fn local_port(&mut self) -> u16 {
        let line = self.wait_for("Forwarding from 127.0.0.1:");
        let rest = line.split("127.0.0.1:").nth(1).unwrap();
        rest.split_whitespace()
            .next()
            .unwrap()
            .parse()
            .expect("a port")
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 GET of `/` on 127.0.0.1:`port`: the whole answer
/// (empty when the connection closed without one).
fn get(port: u16) -> String {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n");
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    text(&answer)
}

#[test]
fn kubectl_port_forward_over_the_websocket_tunnel_and_spdy() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    up.create(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "ballast/httpd"}]}}),
    );
    up.eventually("pod web Running", Duration::from_secs(60), || {
        let p = up.json(&["get", "pod", "web"]);
        (p["status"]["phase"] == "Running").then_some(())
    });
    // kubectl 1.31+ tunnels SPDY in a WebSocket; without it (or from
    // older kubectl) plain SPDY/3.1.
    for websockets in [true, false] {
        let mut pf = Forwarder::start(&up, &["pod/web", ":8080"], websockets);
        let local = pf.local_port();
        for round in 0..2 {
            let answer = get(local);
            assert!(
                answer.starts_with("HTTP/1.")
                    && answer.contains(" 200 ")
                    && answer.ends_with("ballast httpd\n"),
                "websockets={websockets} round {round}: {answer:?}; kubectl: {:#?}",
                pf.seen
            );
        }
        assert!(pf.child.try_wait().unwrap().is_none(), "kubectl exited");
    }
    // A port nothing listens on: that connection closes with no answer
    // and kubectl prints kube's error (the kubelet keeps the session: see
    // its SPDY unit test and the Python client above). kubectl 1.29+
    // then closes the whole connection itself and exits ("lost
    // connection to pod"), as it does against kube's kubelet.
    for websockets in [true, false] {
        let mut pf = Forwarder::start(&up, &["pod/web", ":8081"], websockets);
        let closed = pf.local_port();
        assert_eq!(get(closed), "", "websockets={websockets}");
        let said = pf.wait_for("an error occurred forwarding");
        assert!(
            said.contains("-> 8081: error forwarding port 8081 to pod web, uid ")
                && said.contains("connection refused"),
            "{said}"
        );
    }
}
