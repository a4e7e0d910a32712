//! PodDisruptionBudgets and `kubectl drain` end to end on `ballast up` with
//! two nodes (process runtime), driven with the real `kubectl`: a
//! Deployment of 3 with a budget of minAvailable 2 drains off node-1 one
//! eviction at a time (the node cordoned, the pods moved to node-2); with
//! maxUnavailable 0 a drain retries on "Cannot evict pod as it would violate
//! the pod's disruption budget" until its timeout and fails; `kubectl
//! uncordon`; the official Python client's `create_namespaced_pod_eviction`.

use std::process::Command;
use std::time::Duration;

use ballast_tests::up::{python, Up};
use serde_json::{json, Value};

const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget";

fn web() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": "busybox",
                                    "command": ["sh", "-c", "sleep 3600"]}]
                }
            }
        }
    })
}

/// The web pods that are Running, Ready and not being deleted, by node.
fn ready_nodes(up: &Up) -> Vec<String> {
    let list = up.json(&["get", "pods", "-l", "app=web"]);
    let mut nodes: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    nodes.sort();
    nodes
}

/// The budget's `disruptionsAllowed` once observed at its generation.
fn allowed(up: &Up) -> Option<i64> {
    let pdb = up.json(&["get", "pdb", "web"]);
    (pdb["status"]["observedGeneration"] == pdb["metadata"]["generation"])
        .then(|| pdb["status"]["disruptionsAllowed"].as_i64())
        .flatten()
}

const PYTHON_EVICTION: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
name = sys.argv[2]
body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace="default"))
try:
    core.create_namespaced_pod_eviction(name=name, namespace="default", body=body)
    print("evicted", name)
except ApiException as e:
    print("refused", e.status, e.reason)
"#;

fn python_evict(up: &Up, py: &std::path::Path, pod: &str) -> String {
    let out = Command::new(py)
        .args(["-c", PYTHON_EVICTION])
        .arg(&up.kubeconfig)
        .arg(pod)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_drain_evicts_politely_and_respects_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Up::start(dir.path(), &["--nodes", "2"]);
    up.apply(&web());
    let out = up.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);
    assert!(
        out.contains("poddisruptionbudget.policy/web created"),
        "{out}"
    );
    up.eventually("3 web pods ready", Duration::from_secs(90), || {
        (ready_nodes(&up).len() == 3).then_some(())
    });
    up.eventually("the budget allows 1", Duration::from_secs(30), || {
        (allowed(&up) == Some(1)).then_some(())
    });
    let table = up.ok(&["get", "pdb"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["web", "2", "N/A", "1"], "{table}");

    // Make sure node-1 has something to drain.
    if !ready_nodes(&up).iter().any(|n| n == "node-1") {
        up.ok(&["cordon", "node-2"]);
        up.ok(&["rollout", "restart", "deployment/web"]);
        up.eventually("a web pod on node-1", Duration::from_secs(90), || {
            let nodes = ready_nodes(&up);
            (nodes.len() == 3 && nodes.iter().any(|n| n == "node-1")).then_some(())
        });
        up.ok(&["uncordon", "node-2"]);
        up.eventually("the budget allows 1 again", Duration::from_secs(30), || {
            (allowed(&up) == Some(1)).then_some(())
        });
    }

    let out = up.kubectl(&[
        "drain",
        "node-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("node/node-1 cordoned"), "{stdout}");
    assert!(
        stdout.contains("evicting pod default/web-"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("node/node-1 drained"), "{stdout}");
    let node = up.json(&["get", "node", "node-1"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    let moved = up.eventually(
        "3 web pods ready on node-2",
        Duration::from_secs(90),
        || {
            let nodes = ready_nodes(&up);
            (nodes == ["node-2", "node-2", "node-2"]).then_some(nodes)
        },
    );
    assert_eq!(moved.len(), 3);

    // maxUnavailable 0: nothing may be evicted, and drain says why.
    up.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":null,"maxUnavailable":0}}"#,
    ]);
    up.eventually("the budget allows 0", Duration::from_secs(30), || {
        let pdb = up.json(&["get", "pdb", "web"]);
        (allowed(&up) == Some(0) && pdb["status"]["expectedPods"] == 3).then_some(())
    });
    let out = up.ok(&["uncordon", "node-1"]);
    assert!(out.contains("node/node-1 uncordoned"), "{out}");
    let out = up.kubectl(&[
        "drain",
        "node-2",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=12s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "drain should time out:\n{stderr}");
    assert!(stderr.contains(VIOLATION), "{stderr}");
    assert!(stderr.contains("will retry after 5s"), "{stderr}");
    assert_eq!(ready_nodes(&up), ["node-2", "node-2", "node-2"]);
    let out = up.ok(&["uncordon", "node-2"]);
    assert!(out.contains("node/node-2 uncordoned"), "{out}");

    // The official Python client: refused under the budget, then allowed.
    let Some(py) = python() else {
        eprintln!(
            "skipping the Python client half: no venv at $HOME/.cache/ballast/pyenv \
             (run scripts/setup.sh; CI does)"
        );
        return;
    };
    let pods = up.json(&["get", "pods", "-l", "app=web"]);
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_string();
    let out = python_evict(&up, &py, &victim);
    assert!(out.contains("refused 429 Too Many Requests"), "{out}");
    up.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":1}}"#,
    ]);
    up.eventually("the budget allows 1", Duration::from_secs(30), || {
        (allowed(&up) == Some(1)).then_some(())
    });
    let out = python_evict(&up, &py, &victim);
    assert!(out.contains(&format!("evicted {victim}")), "{out}");
    up.eventually("the evicted pod goes", Duration::from_secs(60), || {
        let out = up.kubectl(&["get", "pod", &victim]);
        (!out.status.success()).then_some(())
    });
}
