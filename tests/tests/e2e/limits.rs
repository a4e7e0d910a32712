//! Resource limits on `ballast up`'s process runtime: cgroups hold a
//! container's memory and cpu (an OOM kill is `OOMKilled`, exit 137, and
//! the container restarts per its policy), and `status.qosClass` is
//! computed as Kubernetes does. Needs root and cgroups with a memory
//! controller (v1 or v2); skipped with a printed reason elsewhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_tests::up::Up;
use serde_json::{json, Value};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why this machine cannot enforce limits, if it cannot.
fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    if uid.as_deref() != Some("0") {
        return Some("not running as root".into());
    }
    let v2 = std::fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    let v1 = Path::new(CGROUP_ROOT).join("memory").is_dir();
    (!v2 && !v1).then(|| "no cgroup memory controller".into())
}

/// The directories named `name` beneath `dir`, at most `depth` levels down.
fn find_dirs(dir: &Path, name: &str, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy() == name {
            found.push(path);
        } else if depth > 0 {
            find_dirs(&path, name, depth - 1, found);
        }
    }
}

/// The value of cgroup file `file` in the (single) directory of pod
/// `uid`'s cgroup, or of its leaf `leaf`, that has such a file.
fn cgroup_file(uid: &str, leaf: Option<&str>, file: &str) -> Option<String> {
    let mut pods = Vec::new();
    find_dirs(Path::new(CGROUP_ROOT), &format!("pod{uid}"), 8, &mut pods);
    pods.iter()
        .map(|p| leaf.map_or(p.clone(), |l| p.join(l)).join(file))
        .find_map(|f| std::fs::read_to_string(f).ok())
        .map(|v| v.trim().to_string())
}

fn pod(name: &str, command: &[&str], resources: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": "busybox",
                "command": command,
                "resources": resources,
            }],
        },
    })
}

#[test]
fn memory_limit_oom_kills_cpu_limit_sets_quota_and_qos_classes() {
    if let Some(reason) = unsupported() {
        println!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);

    // A Guaranteed pod: requests default to the limits; its cgroups carry
    // a quota of 250m per 100 ms, 256 shares and a 64Mi memory limit.
    up.create(&pod(
        "steady",
        &["sleep", "3600"],
        json!({"limits": {"cpu": "250m", "memory": "64Mi"}}),
    ));
    let steady = up.eventually("steady running", Duration::from_secs(60), || {
        let p = up.json(&["get", "pod", "steady"]);
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(steady["status"]["qosClass"], "Guaranteed", "{steady}");
    assert_eq!(
        steady["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "250m", "memory": "64Mi"})
    );
    let described = up.ok(&["describe", "pod", "steady"]);
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("QoS Class:") && l.ends_with("Guaranteed")),
        "{described}"
    );
    let uid = steady["metadata"]["uid"].as_str().unwrap().to_string();
    let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
    for leaf in [None, Some("app.0")] {
        if v2 {
            assert_eq!(
                cgroup_file(&uid, leaf, "cpu.max").as_deref(),
                Some("25000 100000")
            );
            assert_eq!(
                cgroup_file(&uid, leaf, "memory.max").as_deref(),
                Some("67108864")
            );
        } else {
            assert_eq!(
                cgroup_file(&uid, leaf, "cpu.cfs_quota_us").as_deref(),
                Some("25000"),
                "{leaf:?}"
            );
            assert_eq!(
                cgroup_file(&uid, leaf, "cpu.shares").as_deref(),
                Some("256")
            );
            assert_eq!(
                cgroup_file(&uid, leaf, "memory.limit_in_bytes").as_deref(),
                Some("67108864")
            );
        }
    }
    // The container's process is in its leaf.
    let procs = cgroup_file(&uid, Some("app.0"), "cgroup.procs").unwrap_or_default();
    assert!(!procs.is_empty(), "no process in the container's cgroup");

    // A pod without resources is BestEffort.
    up.create(&pod("idle", &["sleep", "3600"], json!({})));
    let idle = up.json(&["get", "pod", "idle"]);
    assert_eq!(idle["status"]["qosClass"], "BestEffort", "{idle}");

    // A memory hog under a 32Mi limit is OOMKilled with exit code 137 and
    // restarted (restartPolicy Always); the pod is Burstable.
    up.create(&pod(
        "hog",
        &["tail", "/dev/zero"],
        json!({"limits": {"memory": "32Mi"}}),
    ));
    let hog = up.eventually(
        "hog OOMKilled and restarted",
        Duration::from_secs(120),
        || {
            let p = up.json(&["get", "pod", "hog"]);
            let cs = &p["status"]["containerStatuses"][0];
            let last = &cs["lastState"]["terminated"];
            (cs["restartCount"].as_i64()? >= 1 && !last.is_null()).then_some(p)
        },
    );
    assert_eq!(hog["status"]["qosClass"], "Burstable", "{hog}");
    let last = &hog["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{hog}");
    assert_eq!(last["exitCode"], 137, "{hog}");

    // Deleting a pod removes its cgroups.
    up.ok(&["delete", "pod", "steady", "--wait=true"]);
    up.eventually("steady's cgroups removed", Duration::from_secs(30), || {
        let mut left = Vec::new();
        find_dirs(Path::new(CGROUP_ROOT), &format!("pod{uid}"), 8, &mut left);
        left.is_empty().then_some(())
    });
}
