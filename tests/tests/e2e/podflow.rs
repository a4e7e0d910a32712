//! The whole control plane as users run it: `ballast up` (three storage
//! members, the apiserver, the controller manager, the scheduler and three
//! kubelets with the process runtime), driven with the real `kubectl` and
//! the manifests in `examples/`; and the same with one kubelet process
//! hosting simulated nodes (`--runtime sim`).

use std::path::Path;
use std::time::Duration;

use ballast_tests::up::Up;
use serde_json::Value;

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
    let addr = format!("{ip}:{port}").parse().ok()?;
    ballast_tests::http::get(addr, path)
        .ok()
        .map(|(code, _)| code)
}

#[test]
fn deployment_service_rollout_scale_logs_and_cleanup() {
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
