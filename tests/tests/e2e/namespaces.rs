//! Namespace deletion as Kubernetes does it, end to end under `ballast up`
//! with kubectl (issue 21): the namespace goes Terminating, new content is
//! refused, the namespace controller deletes its pods through the API — so
//! a pod gets its preStop hook and its grace period, not a SIGKILL — and the
//! namespace is gone once they are. The built-in namespaces stay.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ballast_tests::up::Up;
use serde_json::json;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deleting_a_namespace_gives_its_pods_their_grace() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    // The process runtime shares the host's files: the pod (user nobody)
    // records its preStop hook and SIGTERM handling here.
    let shared_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = shared_dir.path().to_str().unwrap().to_string();

    // The built-in namespaces cannot be deleted.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let out = up.kubectl(&["delete", "namespace", ns, "--wait=false"]);
        assert!(!out.status.success(), "{ns} deleted");
        assert!(
            stderr(&out).contains(&format!(
                "namespaces \"{ns}\" is forbidden: this namespace may not be deleted"
            )),
            "{ns}: {}",
            stderr(&out)
        );
    }

    up.ok(&["create", "namespace", "doomed"]);
    let ns = up.json(&["get", "namespace", "doomed"]);
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    // SIGTERM: note it, take 2 s to shut down cleanly, note that too. A
    // SIGKILL would leave no "done".
    let script = format!(
        "trap 'echo term >> {shared}/log; sleep 2; echo done >> {shared}/log; exit 0' TERM; \
         echo started >> {shared}/log; while true; do sleep 0.2; done"
    );
    up.create(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "graceful", "namespace": "doomed"},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", script],
                "lifecycle": {"preStop": {"exec": {"command":
                    ["sh", "-c", format!("echo prestop >> {shared}/log")]}}}
            }]
        }
    }));
    up.create(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "doomed"},
        "data": {"a": "1"}
    }));
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/graceful",
        "-n",
        "doomed",
        "--timeout=120s",
    ]);
    up.eventually("the pod started", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(format!("{shared}/log")).unwrap_or_default();
        log.contains("started").then_some(())
    });

    up.ok(&["delete", "namespace", "doomed", "--wait=false"]);
    let ns = up.json(&["get", "namespace", "doomed"]);
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");
    // Nothing new in a terminating namespace (403, kube's message).
    let out = up.kubectl(&["create", "configmap", "late", "-n", "doomed"]);
    assert!(!out.status.success(), "created in a terminating namespace");
    assert!(
        stderr(&out).contains(
            "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
        ),
        "{}",
        stderr(&out)
    );
    up.ok(&["wait", "--for=delete", "namespace/doomed", "--timeout=120s"]);
    let out = up.kubectl(&["get", "namespace", "doomed"]);
    assert!(
        stderr(&out).contains("namespaces \"doomed\" not found"),
        "{}",
        stderr(&out)
    );
    // The pod was stopped as a pod deletion stops it: preStop first, then
    // SIGTERM, and it had time to finish.
    let log = std::fs::read_to_string(format!("{shared}/log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines, ["started", "prestop", "term", "done"], "{log}");
    // A namespace of the same name starts empty.
    up.ok(&["create", "namespace", "doomed"]);
    let left = up.json(&["get", "configmaps,pods", "-n", "doomed"]);
    let names: Vec<&str> = left["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"settings") && !names.contains(&"graceful"),
        "{names:?}"
    );
    up.ok(&["delete", "namespace", "doomed", "--timeout=120s"]);
}
