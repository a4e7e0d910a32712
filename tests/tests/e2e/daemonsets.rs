//! apps/v1 DaemonSets end to end on `ballast up` (three process-runtime
//! nodes, `busybox` = the host's `sh`), driven with the real `kubectl`:
//! `kubectl apply -f`, `kubectl rollout status|history|undo ds/x`,
//! `kubectl get ds` and `kubectl get controllerrevisions` Tables, a node
//! tainted out and back, a refused manifest, and the pods garbage
//! collected with their DaemonSet. One `ballast up` for the whole file.

use std::collections::BTreeSet;
use std::time::Duration;

use ballast_tests::up::Up;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

fn daemonset(restart: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "restartPolicy": restart,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox",
                                    "command": ["sh", "-c", "sleep 3600"]}]
                }
            }
        }
    })
}

/// The live pods of the DaemonSet: (node, revision hash, env names).
fn pods(up: &Up) -> Vec<(String, String, Vec<String>)> {
    let list = up.json(&["get", "pods", "-l", "app=agent"]);
    let mut out: Vec<(String, String, Vec<String>)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let env = p["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str().map(str::to_string))
                .collect();
            (
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                env,
            )
        })
        .collect();
    out.sort();
    out
}

fn rollout_status(up: &Up) {
    let out = up.ok(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
}

/// The `kubectl get ds agent` row's columns.
fn ds_row(up: &Up) -> Vec<String> {
    let out = up.ok(&["get", "ds", "agent"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ],
        "{out}"
    );
    lines[1].split_whitespace().map(str::to_string).collect()
}

/// (revision, hash) of the DaemonSet's ControllerRevisions.
fn revisions(up: &Up) -> Vec<(i64, String)> {
    let list = up.json(&["get", "controllerrevisions", "-l", "app=agent"]);
    let mut out: Vec<(i64, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["revision"].as_i64().unwrap_or(-1),
                r["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn daemonset_rollout_undo_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "3"]);

    // Bad input first: Kubernetes' message, nothing stored.
    let bad = up.kubectl_stdin(&["apply", "-f", "-"], &daemonset("Never").to_string());
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
        "{err}"
    );

    // One pod per node, rolled out.
    let out = up.apply(&daemonset("Always"));
    assert!(out.contains("daemonset.apps/agent created"), "{out}");
    rollout_status(&up);
    let first = pods(&up);
    let nodes: BTreeSet<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "{first:?}");
    assert_eq!(
        &ds_row(&up)[..7],
        ["agent", "3", "3", "3", "3", "3", "<none>"]
    );
    let short = up.ok(&["get", "ds"]);
    assert!(short.contains("agent"), "{short}");
    let all = up.ok(&["get", "all"]);
    assert!(all.contains("daemonset.apps/agent"), "{all}");
    let hash1 = first[0].1.clone();

    // A template change rolls node by node; the history has two revisions.
    up.ok(&["set", "env", "ds/agent", "VERSION=2"]);
    rollout_status(&up);
    let second = up.eventually("every pod updated", WAIT, || {
        let p = pods(&up);
        (p.len() == 3
            && p.iter()
                .all(|(_, h, env)| *h != hash1 && env == &["VERSION"]))
        .then_some(p)
    });
    let hash2 = second[0].1.clone();
    assert_eq!(revisions(&up), [(1, hash1.clone()), (2, hash2.clone())]);
    let history = up.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains("REVISION"), "{history}");
    let table = up.ok(&["get", "controllerrevisions"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CONTROLLER", "REVISION", "AGE"], "{table}");
    assert!(table.contains("daemonset.apps/agent"), "{table}");

    // kubectl rollout undo patches revision 1's template back: it becomes
    // revision 3 and the pods return to its hash.
    let undo = up.ok(&["rollout", "undo", "ds/agent"]);
    assert!(undo.contains("rolled back"), "{undo}");
    rollout_status(&up);
    up.eventually("every pod rolled back", WAIT, || {
        let p = pods(&up);
        (p.len() == 3 && p.iter().all(|(_, h, env)| *h == hash1 && env.is_empty())).then_some(())
    });
    assert_eq!(revisions(&up), [(2, hash2), (3, hash1)]);

    // A node tainted NoExecute loses its daemon; untainted, gets it back.
    let node = first[2].0.clone();
    up.ok(&["taint", "nodes", &node, "maint=now:NoExecute"]);
    up.eventually("daemon gone from the tainted node", WAIT, || {
        let p = pods(&up);
        (p.len() == 2 && p.iter().all(|(n, _, _)| *n != node)).then_some(())
    });
    up.eventually("desired 2", WAIT, || (ds_row(&up)[1] == "2").then_some(()));
    up.ok(&["taint", "nodes", &node, "maint-"]);
    rollout_status(&up);
    up.eventually("daemon back on the node", WAIT, || {
        let p = pods(&up);
        (p.len() == 3 && p.iter().any(|(n, _, _)| *n == node)).then_some(())
    });
    assert_eq!(&ds_row(&up)[..6], ["agent", "3", "3", "3", "3", "3"]);

    // Deleting the DaemonSet takes its pods and revisions with it.
    up.ok(&["delete", "ds", "agent"]);
    up.eventually("pods and revisions collected", WAIT, || {
        (pods(&up).is_empty() && revisions(&up).is_empty()).then_some(())
    });
}
