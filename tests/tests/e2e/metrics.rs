//! Every `/metrics` of a running `ballast up --insecure`, read with a real
//! Prometheus text parser (the Python `prometheus_client` package's
//! `text_string_to_metric_families`, installed by scripts/setup.sh): the
//! three storage members, the apiserver, the controller manager, the
//! scheduler and the kubelet export the series etcd's and Kubernetes'
//! dashboards and alerts read, with sane values, and request counters grow
//! with requests.

use std::process::Command;
use std::time::{Duration, Instant};

use ballast_tests::up::{python, Up};
use serde_json::{json, Value};

/// Fetches a URL and prints its samples as JSON lines: `[family, type,
/// sample name, labels, value]` (values as strings: `+Inf`, `NaN`).
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=20).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps([family.name, family.type, s.name, s.labels, repr(s.value)]))
"#;

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: Value,
    value: f64,
}

/// The samples of `url`, parsed by the Python parser (which refuses text
/// that is not valid exposition format, failing the test).
fn scrape(url: &str) -> Vec<Sample> {
    let py = python().expect(
        "no Python venv at $HOME/.cache/ballast/pyenv with prometheus_client: run scripts/setup.sh",
    );
    let out = Command::new(py)
        .args(["-c", SCRAPE, url])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "scraping {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            Sample {
                family: v[0].as_str().unwrap().into(),
                kind: v[1].as_str().unwrap().into(),
                name: v[2].as_str().unwrap().into(),
                labels: v[3].clone(),
                value: v[4].as_str().unwrap().parse().expect("a float"),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
        .map(|s| s.value)
}

/// The type Prometheus was told for `family`.
fn kind(samples: &[Sample], family: &str) -> Option<String> {
    samples
        .iter()
        .find(|s| s.family == family)
        .map(|s| s.kind.clone())
}

fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Scrapes `url` until `ok` holds for its samples (bounded); the last
/// samples.
fn scrape_until(url: &str, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = scrape(url);
        if ok(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{url}: never {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_component_exports_the_standard_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Up::start(dir.path(), &["--insecure", "--nodes", "1"]);

    // Storage members: etcd's names, types and labels.
    let members = ["2379", "22379", "32379"].map(|p| format!("http://127.0.0.1:{p}/metrics"));
    let mut leaders = 0.0;
    for url in &members {
        let s = scrape(url);
        assert_eq!(value(&s, "etcd_server_has_leader", &[]), Some(1.0), "{url}");
        leaders += value(&s, "etcd_server_is_leader", &[]).expect("is_leader");
        for (family, want) in [
            ("etcd_server_leader_changes_seen", "counter"),
            ("etcd_server_proposals_committed_total", "gauge"),
            ("etcd_server_proposals_applied_total", "gauge"),
            ("etcd_server_proposals_pending", "gauge"),
            ("etcd_server_proposals_failed", "counter"),
            ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
            ("etcd_disk_backend_commit_duration_seconds", "histogram"),
            ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
            ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"),
            ("etcd_debugging_mvcc_watcher_total", "gauge"),
            ("etcd_server_version", "gauge"),
            ("grpc_server_started", "counter"),
            ("grpc_server_handled", "counter"),
            ("process_cpu_seconds", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert_eq!(kind(&s, family).as_deref(), Some(want), "{family} on {url}");
        }
        assert!(value(&s, "etcd_server_leader_changes_seen_total", &[]) >= Some(1.0));
        assert!(value(&s, "etcd_server_proposals_applied_total", &[]) > Some(0.0));
        assert!(value(&s, "etcd_mvcc_db_total_size_in_bytes", &[]) > Some(0.0));
        assert!(value(&s, "etcd_disk_wal_fsync_duration_seconds_count", &[]) > Some(0.0));
        assert!(value(&s, "process_resident_memory_bytes", &[]) > Some(1e6));
        assert!(value(&s, "etcd_server_version", &[]).is_some_and(|v| v == 1.0));
        let version = s.iter().find(|x| x.name == "etcd_server_version").unwrap();
        assert!(version.labels["server_version"]
            .as_str()
            .unwrap()
            .starts_with("3.5."));
        // Every method and code exists from the start, as etcd's.
        let unused = [
            ("grpc_type", "unary"),
            ("grpc_service", "etcdserverpb.Maintenance"),
            ("grpc_method", "Defragment"),
            ("grpc_code", "DataLoss"),
        ];
        assert_eq!(value(&s, "grpc_server_handled_total", &unused), Some(0.0));
    }
    assert_eq!(leaders, 1.0, "exactly one member leads");
    // The apiserver watches (bidi streams) and writes (Txn) through them.
    let watched = members.iter().any(|url| {
        value(
            &scrape(url),
            "grpc_server_started_total",
            &[("grpc_method", "Watch"), ("grpc_type", "bidi_stream")],
        ) > Some(0.0)
    });
    assert!(watched, "some member serves the apiserver's watches");
    let txns = |members: &[String]| -> f64 {
        members
            .iter()
            .filter_map(|url| {
                value(
                    &scrape(url),
                    "grpc_server_handled_total",
                    &[("grpc_method", "Txn"), ("grpc_code", "OK")],
                )
            })
            .sum()
    };
    let txns_before = txns(&members);

    // The apiserver: Kubernetes' names; requests counted as they come.
    let apiserver = "http://127.0.0.1:8080/metrics";
    let created = [
        ("verb", "POST"),
        ("resource", "configmaps"),
        ("code", "201"),
        ("scope", "resource"),
    ];
    let before = scrape(apiserver);
    for (family, want) in [
        ("apiserver_request", "counter"),
        ("apiserver_request_duration_seconds", "histogram"),
        ("apiserver_current_inflight_requests", "gauge"),
        ("apiserver_storage_objects", "gauge"),
        ("apiserver_registered_watchers", "gauge"),
        ("apiserver_watch_events", "counter"),
        ("apiserver_watch_cache_events_received", "counter"),
        ("apiserver_watch_cache_events_dispatched", "counter"),
        ("apiserver_terminated_watchers", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(kind(&before, family).as_deref(), Some(want), "{family}");
    }
    let was = value(&before, "apiserver_request_total", &created).unwrap_or(0.0);
    for i in 0..3 {
        up.ok(&["create", "configmap", &format!("counted-{i}")]);
    }
    let after = scrape(apiserver);
    assert_eq!(
        value(&after, "apiserver_request_total", &created),
        Some(was + 3.0),
        "three creates through kubectl"
    );
    assert!(
        value(
            &after,
            "apiserver_storage_objects",
            &[("resource", "configmaps")]
        ) >= Some(3.0)
    );
    assert!(
        value(
            &after,
            "apiserver_registered_watchers",
            &[("group", ""), ("version", "v1"), ("kind", "Pod")]
        ) >= Some(1.0),
        "the scheduler and the kubelet watch pods"
    );
    assert!(txns(&members) >= txns_before + 3.0, "the creates were Txns");

    // The scheduler (kube-scheduler's port): a pod bound is `scheduled`.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "scheduled"},
        "spec": {"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "exec sleep 3600"]}]}});
    up.create(&pod);
    let scheduled = [("result", "scheduled"), ("profile", "default-scheduler")];
    // The attempt is counted when the pod is placed, its latency once the
    // bind is acknowledged: wait for both.
    let scheduler = scrape_until("http://127.0.0.1:10259/metrics", "scheduled the pod", |s| {
        value(s, "scheduler_schedule_attempts_total", &scheduled) >= Some(1.0)
            && value(
                s,
                "scheduler_pod_scheduling_sli_duration_seconds_count",
                &[],
            ) >= Some(1.0)
    });
    assert!(value(&scheduler, "scheduler_pending_pods", &[("queue", "active")]).is_some());
    assert_eq!(get("http://127.0.0.1:10259/healthz"), (200, "ok".into()));

    // The controller manager (kube-controller-manager's port): its queues.
    up.ok(&["create", "deployment", "web", "--image=busybox"]);
    let kcm = scrape_until(
        "http://127.0.0.1:10257/metrics",
        "queued the deployment",
        |s| value(s, "workqueue_adds_total", &[("name", "deployment")]) >= Some(1.0),
    );
    assert!(value(&kcm, "workqueue_depth", &[("name", "replicaset")]).is_some());
    assert_eq!(get("http://127.0.0.1:10257/healthz"), (200, "ok".into()));

    // The kubelet, on its API port (published in its Node).
    let node: Value =
        serde_json::from_str(&up.ok(&["get", "node", "node-1", "-o", "json"])).expect("node");
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("kubelet port");
    let kubelet = scrape_until(
        &format!("http://127.0.0.1:{port}/metrics"),
        "ran the pod",
        |s| value(s, "kubelet_running_pods", &[]) >= Some(1.0),
    );
    assert!(value(&kubelet, "process_open_fds", &[]) > Some(0.0));

    // A path that is not a metric endpoint is still a 404, not a scrape.
    assert_eq!(get("http://127.0.0.1:10257/nothing-here").0, 404);
    assert!(up.stop().success());
}
