//! Every workload, briefly, against a real etcd cluster and a Ballast
//! cluster (one shared cluster per kind), asserting the JSON result; and
//! the `ballast bench` command line itself (one JSON line, clear errors).
//!
//! Needs `target/release/ballast` (`cargo build --release -p ballast`, or
//! `cargo test --release --workspace`, which builds it).

use std::process::Command;
use std::time::{Duration, Instant};

use ballast_bench::{ClientLibrary, Config, Consistency, KubeTxn, WatchConfig, Workload};
use ballast_tests::{workspace_bin, Cluster, ClusterKind};
use serde_json::Value;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn config(cluster: &Cluster, prefix: &str) -> Config {
    Config {
        endpoints: cluster.endpoints(),
        clients: 4,
        conns: 2,
        key_size: 24,
        val_size: 64,
        key_space: 100,
        duration: Duration::from_millis(1500),
        timeout: Duration::from_secs(5),
        prefix: prefix.to_string(),
        progress: false,
        ..Config::default()
    }
}

/// Runs `workload` and returns its JSON, with the fields every kind has checked.
fn run(cfg: &Config, workload: &Workload) -> Value {
    let t = Instant::now();
    let report = block_on(ballast_bench::run(cfg, workload)).expect("bench run");
    let v = report.to_json();
    let line = report.to_line();
    assert!(!line.contains('\n'), "{line}");
    assert_eq!(v["kind"], workload.name(), "{v}");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    assert!(v["first_error"].is_null(), "{v}");
    assert!(v["ops_per_s"].as_f64().unwrap() > 0.0, "{v}");
    for f in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(v[f].as_f64().unwrap() > 0.0, "{f}: {v}");
    }
    assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64(), "{v}");
    assert!(v["p99_ms"].as_f64() <= v["max_ms"].as_f64(), "{v}");
    // Bounded by the duration plus at most one RPC timeout (and the prefill).
    assert!(
        t.elapsed() < cfg.duration + cfg.timeout + Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    v
}

fn put_range_txn(kind: ClusterKind) {
    let cluster = Cluster::shared(kind);
    let tag = kind.name();

    let cfg = config(cluster, &format!("put-{tag}/"));
    let v = run(&cfg, &Workload::Put);
    assert_eq!(v["clients"], 4);
    assert_eq!(v["conns"], 2);

    // Bounded by --total before the duration.
    let cfg_total = Config {
        total: Some(50),
        duration: Duration::from_secs(30),
        ..config(cluster, &format!("tot-{tag}/"))
    };
    let v = run(&cfg_total, &Workload::Put);
    assert_eq!(v["requests"], 50, "{v}");

    for c in [Consistency::Linearizable, Consistency::Serializable] {
        let cfg = config(cluster, &format!("rng-{tag}/"));
        let v = run(&cfg, &Workload::Range(c));
        assert_eq!(v["consistency"], c.letter());
    }

    let cfg = config(cluster, &format!("txn-{tag}/"));
    let v = run(&cfg, &Workload::Txn(Consistency::Linearizable));
    assert!(v["txn_conflicts"].as_u64().is_some(), "{v}");
}

/// The apiserver's transactions and paged list, over both client
/// libraries: the guards hold (a second create of the same keys conflicts
/// every time; one updater or deleter that knows each key's revision never
/// conflicts) and a delete run ends when its keys are gone.
fn kube_txns_and_lists(kind: ClusterKind, client: ClientLibrary) {
    let cluster = Cluster::shared(kind);
    let tag = format!("{}-{}", kind.name(), client.name());
    let one = |prefix: &str| Config {
        clients: 1,
        conns: 1,
        client,
        key_size: 40,
        ..config(cluster, &format!("{prefix}-{tag}/"))
    };

    let create = Config {
        total: Some(200),
        duration: Duration::from_secs(20),
        sequential_keys: true,
        key_space: 1000,
        ..one("kc")
    };
    let v = run(&create, &Workload::Kube(KubeTxn::Create));
    assert_eq!(
        (v["requests"].as_u64(), v["txn_conflicts"].as_u64()),
        (Some(200), Some(0)),
        "{v}"
    );
    assert_eq!(v["client"], client.name(), "{v}");
    let again = Config {
        total: Some(50),
        ..create
    };
    let v = run(&again, &Workload::Kube(KubeTxn::Create));
    assert_eq!(
        v["txn_conflicts"].as_u64(),
        Some(50),
        "every key exists: {v}"
    );

    let v = run(&one("ku"), &Workload::Kube(KubeTxn::Update));
    assert_eq!(v["txn_conflicts"].as_u64(), Some(0), "{v}");
    assert_eq!(v["kind"], "txn-update");

    let delete = Config {
        duration: Duration::from_secs(20),
        ..one("kd")
    };
    let v = run(&delete, &Workload::Kube(KubeTxn::Delete));
    assert_eq!(
        (v["requests"].as_u64(), v["txn_conflicts"].as_u64()),
        (Some(100), Some(0)),
        "{v}"
    );

    let list = Workload::List {
        consistency: Consistency::Serializable,
        limit: 10,
    };
    let v = run(&one("kl"), &list);
    assert_eq!(v["limit"], 10, "{v}");
    assert_eq!(v["consistency"], "s", "{v}");
}

fn paced_put(kind: ClusterKind) {
    let cluster = Cluster::shared(kind);
    let cfg = Config {
        rate: 100,
        duration: Duration::from_secs(1),
        ..config(cluster, &format!("paced-{}/", kind.name()))
    };
    let v = run(&cfg, &Workload::Put);
    let n = v["requests"].as_u64().unwrap();
    assert!((80..=101).contains(&n), "100/s for 1s made {n}: {v}");
}

/// Every acknowledged put reaches every watcher once, in order, with the
/// load generator's lean client and with the `etcd-client` crate.
fn watch(kind: ClusterKind, client: ClientLibrary) {
    let cluster = Cluster::shared(kind);
    let pids: Vec<u32> = cluster.members().iter().filter_map(|m| m.pid()).collect();
    assert_eq!(pids.len(), 3);
    let cfg = Config {
        clients: 4,
        conns: 2,
        rate: 200,
        duration: Duration::from_millis(1500),
        client,
        ..config(cluster, &format!("watch-{}-{client:?}/", kind.name()))
    };
    let w = WatchConfig {
        watchers: 50,
        streams: 5,
        server_pids: pids,
        drain_timeout: Duration::from_secs(10),
        ..WatchConfig::default()
    };
    let v = run(&cfg, &Workload::Watch(w));
    let puts = v["requests"].as_u64().unwrap();
    assert_eq!(v["events_expected"].as_u64(), Some(puts * 50), "{v}");
    assert_eq!(v["events_received"], v["events_expected"], "{v}");
    assert_eq!(v["missed"], 0, "{v}");
    assert_eq!(v["missed_skipped"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["watch_errors"], 0, "{v}");
    assert_eq!(v["watchers"], 50, "{v}");
    assert!(v["bytes_per_watcher"].is_i64(), "{v}");
    assert!(v["delivery_max_ms"].as_f64().is_some(), "{v}");
    assert!(v["e2e_p50_ms"].as_f64().unwrap() > 0.0, "{v}");
    let peaks = v["rss_peak_bytes"].as_array().expect("sampled RSS");
    assert_eq!(peaks.len(), 3, "{v}");
    assert!(peaks.iter().all(|p| p.as_u64() > Some(0)), "{v}");
}

/// `ballast bench …` as a user runs it.
fn ballast(args: &[&str]) -> std::process::Output {
    let bin = workspace_bin("ballast");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p ballast` first",
        bin.display()
    );
    Command::new(&bin)
        .arg("bench")
        .args(args)
        .output()
        .expect("run ballast bench")
}

fn cli(kind: ClusterKind) {
    let cluster = Cluster::shared(kind);
    let endpoints = cluster.endpoints().join(",");
    let out = ballast(&[
        "put",
        "--endpoints",
        &endpoints,
        "--clients=2",
        "--conns=2",
        "--duration=1s",
        "--prefix=cli/",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {stdout}");
    let v: Value = serde_json::from_str(lines[0]).expect("JSON result");
    assert_eq!(v["kind"], "put");
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(3), "{v}");
}

/// A request the server refuses is counted as an error, with the server's
/// own code and message.
fn server_errors_are_reported(kind: ClusterKind) {
    let cluster = Cluster::shared(kind);
    let cfg = Config {
        clients: 1,
        conns: 1,
        // Over the 1.5 MiB request limit of etcd and Ballast alike, under
        // gRPC's 2 MiB message limit (past it both answer ResourceExhausted).
        val_size: 1_600_000,
        duration: Duration::from_millis(500),
        ..config(cluster, &format!("too-large-{}/", kind.name()))
    };
    let report = block_on(ballast_bench::run(&cfg, &Workload::Put)).expect("bench run");
    let v = report.to_json();
    assert!(v["errors"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["requests"].as_u64(), Some(0), "{v}");
    let first = v["first_error"].as_str().unwrap_or_default();
    assert!(
        first.contains("InvalidArgument") && first.contains("request is too large"),
        "{v}"
    );
}

macro_rules! suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            #[test]
            fn put_range_txn() {
                super::put_range_txn($kind);
            }
            #[test]
            fn paced_put() {
                super::paced_put($kind);
            }
            #[test]
            fn kube_txns_and_lists() {
                super::kube_txns_and_lists($kind, super::ClientLibrary::Lean);
            }
            #[test]
            fn kube_txns_and_lists_etcd_client() {
                super::kube_txns_and_lists($kind, super::ClientLibrary::EtcdClient);
            }
            #[test]
            fn watch() {
                super::watch($kind, super::ClientLibrary::Lean);
            }
            #[test]
            fn watch_etcd_client() {
                super::watch($kind, super::ClientLibrary::EtcdClient);
            }
            #[test]
            fn cli() {
                super::cli($kind);
            }
            #[test]
            fn server_errors_are_reported() {
                super::server_errors_are_reported($kind);
            }
        }
    };
}

suite!(etcd, ballast_tests::ClusterKind::Etcd);
suite!(ballast, ballast_tests::ClusterKind::Ballast);

#[test]
fn bad_arguments_are_refused_clearly() {
    let cases: &[(&[&str], &str)] = &[
        (&["put", "--clients=0"], "--clients"),
        (&["put", "--clients=2", "--conns=3"], "--conns"),
        (&["put", "--key-size=4"], "--key-size"),
        (&["put", "--duration=0s"], "--duration"),
        (&["put", "--duration=soon"], "soon"),
        (&["put", "--endpoints=nohost"], "nohost"),
        (&["range", "--consistency=x"], "consistency"),
        (&["list", "--limit=0"], "--limit must be at least 1"),
        (&["txn", "--shape=upsert"], "upsert"),
        (&["put", "--client=grpcurl"], "grpcurl"),
        (&["watch", "--rate=0"], "--rate"),
        (
            &["watch", "--watchers=2", "--watch-streams=3"],
            "--watch-streams",
        ),
        (&["watch", "--val-size=4"], "--val-size"),
    ];
    for (args, needle) in cases {
        let out = ballast(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Nothing listening: a clear connection error within the RPC timeout.
    let port = ballast_tests::process::free_ports(1)[0];
    let t = Instant::now();
    let out = ballast(&[
        "put",
        &format!("--endpoints=127.0.0.1:{port}"),
        "--timeout=2s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("connecting to"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
