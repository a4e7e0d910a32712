//! The whole control plane as users run it: `ballast up` (three storage
//! members, the apiserver, the controller manager, the scheduler and three
//! kubelets with the process runtime), driven with the real `kubectl` and
//! the manifests in `examples/`; and the same with one kubelet process
//! hosting simulated nodes (`--runtime sim`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ballast_tests::cluster::workspace_bin;
use serde_json::Value;

/// `ballast up` binds etcd's fixed local-cluster ports: one at a time.
static UP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `ballast up`, stopped with SIGTERM when dropped (also when a test fails).
struct Up {
    child: Child,
    kubeconfig: PathBuf,
}

impl Up {
    /// Starts `ballast up` with `extra` flags and waits for its ready line.
    fn start(data_dir: &Path, extra: &[&str]) -> Up {
        // Its own process group, so a last-resort kill reaches every part.
        let mut child = Command::new(workspace_bin("ballast"))
            .args(["up", "--data-dir", data_dir.to_str().unwrap()])
            .args(extra)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ballast up");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let up = Up {
            child,
            kubeconfig: data_dir.join("kubeconfig"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("cluster ready") => return up,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "ballast up did not become ready within 120s; it printed:\n{}\nlogs:\n{}",
                    seen.join("\n"),
                    log_tails(data_dir)
                ),
            }
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "30s"])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and asserts it succeeded; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl printed JSON")
    }

    /// Polls `check` every 500 ms until it returns Some, for up to `timeout`.
    fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; pods:\n{}",
                String::from_utf8_lossy(&self.kubectl(&["get", "pods", "-A", "-o", "wide"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // Still running after a minute: kill the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

fn log_tails(data_dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("logs")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("== {}\n{tail}\n", e.path().display()));
        }
    }
    out
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn ready_pods(up: &Up, selector: &str) -> Vec<Value> {
    let list = up.json(&["get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .cloned()
        .collect()
}

/// One HTTP/1.0 GET to a pod; the status code.
fn http_status(ip: &str, port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().ok()?,
        Duration::from_secs(5),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.get(9..12)?.parse().ok()
}

#[test]
fn deployment_service_rollout_scale_logs_and_cleanup() {
    let _one_at_a_time = UP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--apiserver-port", "18080"]);

    // Three kubelets registered their Nodes.
    let nodes = up.json(&["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 3, "{nodes}");

    // A Deployment with a Service: three Running, Ready pods spread over the
    // nodes, each serving HTTP on its own pod IP, all in the endpoints.
    up.ok(&["apply", "-f", &example("web.yaml")]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pods = ready_pods(&up, "app=web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let mut ips: Vec<String> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    for ip in &ips {
        assert_eq!(http_status(ip, 8080, "/healthz"), Some(200), "pod {ip}");
    }
    ips.sort();
    let endpoints = up.eventually("3 ready endpoints", Duration::from_secs(30), || {
        let ep = up.json(&["get", "endpoints", "web"]);
        let mut got: Vec<String> = ep["subsets"][0]["addresses"]
            .as_array()?
            .iter()
            .map(|a| a["ip"].as_str().unwrap_or_default().to_string())
            .collect();
        got.sort();
        (got == ips).then_some(ep)
    });
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 8080);
    let rs = up.json(&["get", "replicasets", "-l", "app=web"]);
    assert_eq!(rs["items"].as_array().unwrap().len(), 1, "{rs}");

    // Logs through the apiserver and the pod's kubelet.
    let pod = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    up.ok(&["logs", &pod]);

    // A new template rolls out as a second ReplicaSet; undo goes back.
    up.ok(&["set", "env", "deployment/web", "GREETING=hello"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let rs = up.json(&["get", "replicasets", "-l", "app=web"]);
    assert_eq!(rs["items"].as_array().unwrap().len(), 2, "{rs}");
    let history = up.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    up.ok(&["rollout", "undo", "deployment/web"]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let deployment = up.json(&["get", "deployment", "web"]);
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.is_null() || env.as_array().unwrap().is_empty(),
        "{deployment}"
    );

    // Scale up and down.
    up.ok(&["scale", "deployment/web", "--replicas=5"]);
    up.eventually("5 ready pods", Duration::from_secs(90), || {
        (ready_pods(&up, "app=web").len() == 5).then_some(())
    });
    up.ok(&["scale", "deployment/web", "--replicas=0"]);
    up.eventually("no pods", Duration::from_secs(90), || {
        let list = up.json(&["get", "pods", "-l", "app=web"]);
        list["items"].as_array()?.is_empty().then_some(())
    });

    // Deleting the Deployment garbage-collects its ReplicaSets.
    up.ok(&["delete", "deployment", "web"]);
    up.eventually("ReplicaSets collected", Duration::from_secs(60), || {
        let list = up.json(&["get", "replicasets", "-l", "app=web"]);
        list["items"].as_array()?.is_empty().then_some(())
    });

    // A run-to-completion pod with init containers ends Succeeded.
    up.ok(&["apply", "-f", &example("init-pod.yaml")]);
    let phase = up.eventually("init-demo finished", Duration::from_secs(90), || {
        let pod = up.json(&["get", "pod", "init-demo"]);
        let phase = pod["status"]["phase"].as_str()?.to_string();
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    });
    assert_eq!(phase, "Succeeded");
    let logs = up.ok(&["logs", "init-demo"]);
    assert!(logs.contains("done"), "{logs}");
}

/// The scale set-up: one kubelet process hosting 20 simulated nodes, and a
/// Deployment whose pods spread over them and become Ready.
#[test]
fn simulated_nodes_run_a_deployment() {
    let _one_at_a_time = UP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(
        dir.path(),
        &[
            "--apiserver-port",
            "18081",
            "--runtime",
            "sim",
            "--nodes",
            "20",
        ],
    );
    let nodes = up.json(&["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 20, "{nodes}");
    // (`kubectl create deployment` sends protobuf, which the apiserver does
    // not decode for Deployments yet: apply a manifest.)
    let manifest = dir.path().join("sim.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: sim\nspec:\n  replicas: 60\n  \
         selector:\n    matchLabels:\n      app: sim\n  template:\n    metadata:\n      labels:\n        \
         app: sim\n    spec:\n      containers:\n      - name: app\n        image: busybox\n        \
         command: [sleep, \"3600\"]\n",
    )
    .unwrap();
    up.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let pods = up.eventually("60 ready pods", Duration::from_secs(90), || {
        let pods = ready_pods(&up, "app=sim");
        (pods.len() == 60).then_some(pods)
    });
    let mut per_node = std::collections::HashMap::new();
    for p in &pods {
        *per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // Spread: every node got some, none more than a fair share and a half.
    assert_eq!(per_node.len(), 20, "{per_node:?}");
    assert!(per_node.values().all(|&n| n <= 5), "{per_node:?}");
}
