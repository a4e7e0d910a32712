//! batch/v1 Jobs end to end on `ballast up` (process runtime, `busybox`
//! = the host's `sh`), driven with the real `kubectl`: `kubectl create job`
//! (a protobuf body), `kubectl wait --for=condition=complete|failed`,
//! `kubectl logs job/x`; completions with parallelism and a retried pod,
//! a Job failing past its backoffLimit, an Indexed Job; a CronJob from
//! `kubectl create cronjob` and a Job made from it (`--from=cronjob/x`);
//! then a Job created and polled by the official Python `kubernetes`
//! client, a client nobody on the team wrote (installed by
//! `scripts/setup.sh` into `$HOME/.cache/ballast/pyenv`).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ballast_tests::up::{python, Up};
use serde_json::Value;

/// Creates a Job with the official client and polls its status until it
/// is Complete or Failed (at most 90 s); prints what it saw.
const PYTHON_CLIENT: &str = r#"
import sys, time
from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1])
batch = client.BatchV1Api()
job = client.V1Job(
    metadata=client.V1ObjectMeta(name="py-job"),
    spec=client.V1JobSpec(
        backoff_limit=2,
        template=client.V1PodTemplateSpec(
            spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(
                    name="main", image="busybox", command=["sh", "-c", "echo hi"])]))))
created = batch.create_namespaced_job(namespace="default", body=job)
print("created", created.metadata.uid, "completions", created.spec.completions,
      "selector", created.spec.selector.match_labels)
deadline = time.time() + 90
while time.time() < deadline:
    st = batch.read_namespaced_job_status("py-job", "default").status
    kinds = sorted(c.type for c in (st.conditions or []) if c.status == "True")
    if "Complete" in kinds or "Failed" in kinds:
        print("succeeded", st.succeeded, "conditions", ",".join(kinds))
        sys.exit(0)
    time.sleep(0.5)
print("not finished in 90s; last status:", st)
sys.exit(1)
"#;

/// A batch/v1 Job of `sh -c script` (busybox) with extra `spec` fields.
fn job(name: &str, spec: Value, script: &str) -> Value {
    let mut spec = spec;
    spec["template"] = serde_json::json!({"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox",
                        "command": ["sh", "-c", script]}]}});
    serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
                       "metadata": {"name": name}, "spec": spec})
}

/// The Job's pods (by the `job-name` label Kubernetes' defaults put on the
/// template).
fn pods_of(up: &Up, job: &str) -> Vec<Value> {
    let list = up.json(&["get", "pods", "-l", &format!("job-name={job}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// A finished Job has counted every pod: nothing left in
/// `uncountedTerminatedPods`, no pod still carrying the tracking finalizer.
fn all_counted(up: &Up, name: &str, job: &Value) {
    let uncounted = &job["status"]["uncountedTerminatedPods"];
    for list in ["succeeded", "failed"] {
        assert!(
            uncounted[list].as_array().is_none_or(|l| l.is_empty()),
            "{name}: uncounted pods left in a finished Job: {}",
            job["status"]
        );
    }
    for pod in pods_of(up, name) {
        let finalizers = pod["metadata"]["finalizers"].as_array().cloned();
        assert!(
            !finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "{name}: pod {} still has the tracking finalizer",
            pod["metadata"]["name"]
        );
    }
}

#[test]
fn jobs_complete_retry_fail_and_index_through_kubectl_and_the_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &[]);
    // The process runtime has no mount namespace: pods see the host's
    // files, so this directory (outside `ballast up`'s private data
    // directory) is shared by the pods (user nobody) and the test.
    let shared_dir = tempfile::tempdir().unwrap();
    let shared = shared_dir.path();
    std::fs::create_dir(shared.join("run")).unwrap();
    for path in [shared.to_path_buf(), shared.join("run")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let shared = shared.to_str().unwrap();

    // All Jobs at once (each waits on its own back-off), then the waits.
    // 1. `kubectl create job` (protobuf), one pod.
    up.ok(&[
        "create",
        "job",
        "pi",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "echo pi done",
    ]);
    // 2. 5 completions, 2 at a time; the first pod to run fails once
    //    (`mkdir` is atomic), so it is retried after the back-off. Each pod
    //    records how many pods run while it runs (its own directory exists
    //    only while it runs; `$$$$` is the shell's `$$`, as the kubelet
    //    expands `$(VAR)` and `$$` in commands).
    let retry = format!(
        r#"set -e; d={shared}; mkdir "$d/run/$$$$"; ls "$d/run" | wc -l >> "$d/concurrency"; sleep 1;
           rmdir "$d/run/$$$$"; if mkdir "$d/failed-once" 2>/dev/null; then exit 1; fi"#
    );
    up.create(&job(
        "retry",
        serde_json::json!({"completions": 5, "parallelism": 2, "backoffLimit": 3}),
        &retry,
    ));
    // 3. Always fails: backoffLimit 1 allows two failed pods, then Failed.
    up.create(&job(
        "doomed",
        serde_json::json!({"backoffLimit": 1}),
        "exit 3",
    ));
    // 4. Indexed: each pod gets its index in JOB_COMPLETION_INDEX.
    up.create(&job(
        "idx",
        serde_json::json!({"completions": 3, "parallelism": 3,
                               "completionMode": "Indexed"}),
        "echo index=$JOB_COMPLETION_INDEX",
    ));
    // restartPolicy Always is refused with Kubernetes' message.
    let mut bad = job("bad", serde_json::json!({}), "true");
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always".into();
    let out = up.kubectl_stdin(&["create", "-f", "-"], &bad.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{err}"
    );

    up.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "job/idx",
        "job/retry",
        "--timeout=90s",
    ]);
    up.ok(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=60s",
    ]);

    // pi: one success, its output through `kubectl logs job/pi`.
    let pi = up.json(&["get", "job", "pi"]);
    assert_eq!(pi["status"]["succeeded"], 1, "{}", pi["status"]);
    assert!(
        pi["status"]["completionTime"].is_string(),
        "{}",
        pi["status"]
    );
    assert!(
        condition(&pi, "SuccessCriteriaMet").is_some(),
        "{}",
        pi["status"]
    );
    all_counted(&up, "pi", &pi);
    assert_eq!(up.ok(&["logs", "job/pi"]).trim(), "pi done");
    let table = up.ok(&["get", "jobs"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .to_string()
    };
    assert!(
        row("pi").contains("Complete") && row("pi").contains("1/1"),
        "{table}"
    );
    assert!(row("retry").contains("5/5"), "{table}");
    assert!(
        row("doomed").contains("Failed") && row("doomed").contains("0/1"),
        "{table}"
    );
    // `kubectl get all` lists Jobs (category `all`).
    assert!(up.ok(&["get", "all"]).contains("job.batch/pi"));

    // retry: five successes, the one failure, never more than 2 at once.
    let retry = up.json(&["get", "job", "retry"]);
    assert_eq!(retry["status"]["succeeded"], 5, "{}", retry["status"]);
    assert_eq!(retry["status"]["failed"], 1, "{}", retry["status"]);
    all_counted(&up, "retry", &retry);
    let pods = pods_of(&up, "retry");
    let phases: Vec<&str> = pods
        .iter()
        .map(|p| p["status"]["phase"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(phases.len(), 6, "{phases:?}");
    assert_eq!(
        phases.iter().filter(|p| **p == "Failed").count(),
        1,
        "{phases:?}"
    );
    let seen = std::fs::read_to_string(format!("{shared}/concurrency")).unwrap();
    let counts: Vec<u32> = seen
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 6, "{seen}");
    assert!(
        counts.iter().all(|n| (1..=2).contains(n)),
        "parallelism 2 exceeded: {seen}"
    );

    // doomed: two failed pods, Failed with BackoffLimitExceeded, no
    // Complete, no active pod.
    let doomed = up.json(&["get", "job", "doomed"]);
    let failed = condition(&doomed, "Failed").expect("Failed condition");
    assert_eq!(
        failed["reason"], "BackoffLimitExceeded",
        "{}",
        doomed["status"]
    );
    assert!(
        condition(&doomed, "FailureTarget").is_some(),
        "{}",
        doomed["status"]
    );
    assert!(
        condition(&doomed, "Complete").is_none(),
        "{}",
        doomed["status"]
    );
    assert_eq!(doomed["status"]["failed"], 2, "{}", doomed["status"]);
    assert!(doomed["status"]["active"].is_null(), "{}", doomed["status"]);
    assert!(
        doomed["status"]["completionTime"].is_null(),
        "{}",
        doomed["status"]
    );
    all_counted(&up, "doomed", &doomed);
    let pods = pods_of(&up, "doomed");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    let events = up.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=doomed",
    ]);
    assert!(events.contains("BackoffLimitExceeded"), "{events}");

    // idx: indexes 0-2, each pod's annotation, label, hostname and env agree.
    let idx = up.json(&["get", "job", "idx"]);
    assert_eq!(
        idx["status"]["completedIndexes"], "0-2",
        "{}",
        idx["status"]
    );
    assert_eq!(idx["status"]["succeeded"], 3, "{}", idx["status"]);
    all_counted(&up, "idx", &idx);
    let mut indexes = Vec::new();
    for pod in pods_of(&up, "idx") {
        let meta = &pod["metadata"];
        let key = "batch.kubernetes.io/job-completion-index";
        let index = meta["annotations"][key].as_str().expect("index annotation");
        assert_eq!(meta["labels"][key], index, "{meta}");
        assert_eq!(pod["spec"]["hostname"], format!("idx-{index}"));
        let name = meta["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("idx-{index}-")), "{name}");
        let logs = up.ok(&["logs", name]);
        assert_eq!(logs.trim(), format!("index={index}"), "{name}");
        indexes.push(index.to_string());
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    // A CronJob from `kubectl create cronjob` (a protobuf body), its Table,
    // and a Job made from it by hand, which runs to completion.
    up.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    let table = up.ok(&["get", "cronjobs"]);
    assert!(
        table.starts_with("NAME") && table.contains("SCHEDULE") && table.contains("*/5 * * * *"),
        "{table}"
    );
    up.ok(&["create", "job", "tick-now", "--from=cronjob/tick"]);
    let made = up.json(&["get", "job", "tick-now"]);
    assert_eq!(
        made["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual",
        "{made}"
    );
    assert_eq!(made["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    up.ok(&[
        "wait",
        "--for=condition=complete",
        "job/tick-now",
        "--timeout=90s",
    ]);
    assert_eq!(up.ok(&["logs", "job/tick-now"]).trim(), "tick");

    // The official Python client.
    let Some(py) = python() else {
        eprintln!(
            "skipping the Python client half: no venv at $HOME/.cache/ballast/pyenv \
             (run scripts/setup.sh; CI does)"
        );
        return;
    };
    let out = Command::new(py)
        .args(["-c", PYTHON_CLIENT])
        .arg(&up.kubeconfig)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("completions 1"), "{stdout}");
    // The generated selector: the Job's own uid.
    let uid = stdout.split_whitespace().nth(1).unwrap_or_default();
    assert!(
        stdout.contains(&format!(
            "selector {{'batch.kubernetes.io/controller-uid': '{uid}'}}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("succeeded 1 conditions Complete,SuccessCriteriaMet"),
        "{stdout}"
    );
}
