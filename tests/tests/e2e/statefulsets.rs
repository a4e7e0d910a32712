//! apps/v1 StatefulSets end to end on `ballast up` (process runtime,
//! `busybox` = the host's `sh`), driven with the real `kubectl`:
//! `kubectl apply -f`, `kubectl rollout status sts/x`, `kubectl scale sts`,
//! `kubectl get sts`, `kubectl set env` for a rolling update; pods keep
//! their names and ordinals, are created each after its predecessor is
//! Ready, and scale down from the highest ordinal.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_tests::up::Up;
use serde_json::{json, Value};

fn statefulset(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
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

/// The set's pods by name.
fn pods(up: &Up) -> BTreeMap<String, Value> {
    let list = up.json(&["get", "pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p.clone(),
            )
        })
        .collect()
}

fn names(pods: &BTreeMap<String, Value>) -> Vec<String> {
    pods.keys().cloned().collect()
}

/// When the pod's Ready condition last became True.
fn ready_since(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(str::to_string)
}

/// Each pod was created no earlier than its predecessor became Ready
/// (RFC 3339 UTC timestamps compare as strings).
fn assert_created_in_order(pods: &BTreeMap<String, Value>, upto: usize) {
    for i in 1..upto {
        let prev = &pods[&format!("web-{}", i - 1)];
        let pod = &pods[&format!("web-{i}")];
        let created = pod["metadata"]["creationTimestamp"].as_str().unwrap();
        let ready = ready_since(prev).expect("predecessor Ready");
        assert!(
            created >= ready.as_str(),
            "web-{i} created at {created}, before web-{} was Ready at {ready}",
            i - 1
        );
    }
}

fn rollout(up: &Up) -> String {
    up.ok(&["rollout", "status", "sts/web", "--timeout=120s"])
}

#[test]
fn statefulset_with_kubectl_apply_rollout_scale_and_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    let out = up.apply(&statefulset(3));
    assert!(out.contains("statefulset.apps/web created"), "{out}");
    let out = rollout(&up);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let first = pods(&up);
    assert_eq!(names(&first), ["web-0", "web-1", "web-2"]);
    assert_created_in_order(&first, 3);
    for (name, p) in &first {
        assert_eq!(p["spec"]["hostname"], name.as_str());
        assert_eq!(p["spec"]["subdomain"], "web");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            name.as_str()
        );
        assert_eq!(p["status"]["phase"], "Running");
    }
    let table = up.ok(&["get", "sts"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..2], ["web", "3/3"], "{table}");
    assert!(table.starts_with("NAME"), "{table}");
    let all = up.ok(&["get", "all"]);
    assert!(all.contains("statefulset.apps/web"), "{all}");

    // Up to 5 and back to 3: the first three pods are never touched.
    let out = up.ok(&["scale", "sts", "web", "--replicas=5"]);
    assert!(out.contains("statefulset.apps/web scaled"), "{out}");
    rollout(&up);
    let five = pods(&up);
    assert_eq!(names(&five), ["web-0", "web-1", "web-2", "web-3", "web-4"]);
    assert_created_in_order(&five, 5);
    up.ok(&["scale", "sts/web", "--replicas=3"]);
    let three = up.eventually("scaled down to 3", Duration::from_secs(60), || {
        let p = pods(&up);
        (p.len() == 3).then_some(p)
    });
    assert_eq!(names(&three), ["web-0", "web-1", "web-2"]);
    for (name, p) in &three {
        assert_eq!(
            p["metadata"]["uid"], first[name]["metadata"]["uid"],
            "{name} was replaced by the scale down"
        );
    }
    let sts = up.json(&["get", "sts", "web"]);
    assert_eq!(sts["status"]["replicas"], 3);
    let old_rev = sts["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();

    // A template change rolls every pod over to the new revision.
    up.ok(&["set", "env", "sts/web", "GREETING=hi"]);
    rollout(&up);
    let sts = up.eventually("update revision current", Duration::from_secs(60), || {
        let s = up.json(&["get", "sts", "web"]);
        (s["status"]["currentRevision"] == s["status"]["updateRevision"]
            && s["status"]["readyReplicas"] == 3)
            .then_some(s)
    });
    let new_rev = sts["status"]["updateRevision"].as_str().unwrap();
    assert_ne!(new_rev, old_rev);
    for (name, p) in pods(&up) {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"], new_rev,
            "{name}"
        );
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["value"], "hi",
            "{name}"
        );
    }
    let revisions = up.json(&["get", "controllerrevisions", "-l", "app=web"]);
    assert_eq!(
        revisions["items"].as_array().map(Vec::len),
        Some(2),
        "{revisions}"
    );

    // A fixed field cannot change; the message says which may.
    let mut changed = statefulset(3);
    changed["spec"]["serviceName"] = json!("other");
    let out = up.kubectl_stdin(&["apply", "-f", "-"], &changed.to_string());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("updates to statefulset spec for fields other than"),
        "{err}"
    );
}
