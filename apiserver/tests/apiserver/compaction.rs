//! History compaction driven by the apiserver, against real storage: each
//! scenario starts its own one-member cluster (compaction is global, so a
//! shared cluster would leak into other tests), once on etcd and once on
//! Ballast. Waits are bounded polls; the only time-based check is an upper
//! bound the protocol guarantees (two compactions are at least one
//! interval apart), never a latency.

use std::time::{Duration, Instant};

use crate::common::{names, namespace, rv, start_on, start_on_with, urls, Api};
use ballast_apiserver::{CacheConfig, Etcd, Options, COMPACT_REV_KEY};
use ballast_tests::{Cluster, ClusterKind, Etcdctl};
use serde_json::json;

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ballast_tests::ClusterKind::Etcd).await
                }
            )*
        }
        mod ballast {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ballast_tests::ClusterKind::Ballast).await
                }
            )*
        }
    };
}

on_both!(
    compacts_each_interval_to_the_revision_seen_one_interval_earlier,
    apiservers_sharing_storage_take_turns,
    interval_zero_never_compacts_and_a_stopped_apiserver_stops,
    compacted_resource_versions_expire_and_watchers_keep_going,
);

/// The interval the compacting apiservers use here.
const INTERVAL: Duration = Duration::from_secs(1);
/// The longest any one condition is polled for.
const WAIT: Duration = Duration::from_secs(60);

/// A one-member cluster of its own, a client for it, and its endpoints.
struct Storage {
    cluster: Cluster,
    etcd: Etcd,
    endpoints: Vec<String>,
}

async fn storage(kind: ClusterKind) -> Storage {
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with_size(kind, 1))
        .await
        .expect("cluster start");
    let endpoints = urls(&cluster);
    let etcd = Etcd::connect(&endpoints).expect("etcd client");
    Storage {
        cluster,
        etcd,
        endpoints,
    }
}

fn compacting(interval: Duration) -> Options {
    Options {
        etcd_compaction_interval: interval,
        ..Options::default()
    }
}

/// `compact_rev_key` as stored: version, value (a revision), mod_revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    version: i64,
    value: i64,
    mod_revision: i64,
}

async fn mark(etcd: &Etcd) -> Option<Mark> {
    let kv = etcd
        .get(COMPACT_REV_KEY)
        .await
        .expect("get compact_rev_key")?;
    let value = std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("compact_rev_key holds {:?}", kv.value));
    Some(Mark {
        version: kv.version,
        value,
        mod_revision: kv.mod_revision,
    })
}

/// `etcdctl get compact_rev_key --rev <rev>`: `Ok` when the storage still
/// has that revision, `Err(stderr)` when it refuses.
async fn read_at(ctl: &Etcdctl, rev: i64) -> Result<(), String> {
    let ctl = ctl.clone();
    let out = tokio::task::spawn_blocking(move || {
        ctl.run(&["get", COMPACT_REV_KEY, "--rev", &rev.to_string()])
    })
    .await
    .expect("etcdctl");
    if out.code == 0 {
        Ok(())
    } else {
        Err(out.stderr)
    }
}

/// Whether the storage has compacted `rev` away (answering etcd's own
/// error); any other failure fails the test.
async fn compacted(ctl: &Etcdctl, rev: i64) -> bool {
    match read_at(ctl, rev).await {
        Ok(()) => false,
        Err(e) if e.contains("mvcc: required revision has been compacted") => true,
        Err(e) => panic!("etcdctl get --rev {rev}: {e}"),
    }
}

/// Creates configmap `name` in `ns`; returns its resourceVersion.
async fn write(api: &Api, ns: &str, name: &str) -> i64 {
    let (code, body) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"metadata": {"name": name}, "data": {"k": name}})),
        )
        .await;
    assert_eq!(code, 201, "create {ns}/{name}: {body}");
    rv(&body)
}

/// Polls `check` (writing one configmap per pass, so history keeps
/// growing) until it returns `Some`, for at most [`WAIT`].
macro_rules! poll_writing {
    ($api:expr, $ns:expr, $what:expr, $check:expr) => {{
        let deadline = Instant::now() + WAIT;
        let mut i = 0u32;
        loop {
            if let Some(v) = $check {
                break v;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {}", $what);
            i += 1;
            write($api, $ns, &format!("filler-{i}-{}", rand_suffix())).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

async fn compacts_each_interval_to_the_revision_seen_one_interval_earlier(kind: ClusterKind) {
    let s = storage(kind).await;
    let ctl = s.cluster.etcdctl();
    let api = start_on_with(s.endpoints.clone(), compacting(INTERVAL)).await;
    let ns = namespace(&api, "compaction").await;
    let rv0 = write(&api, &ns, "first").await;
    assert!(!compacted(&ctl, rv0).await, "nothing is compacted at start");

    // Watch the key's versions go by until two rounds in a row are seen
    // that both compacted past the first write.
    let mut seen: Vec<Mark> = Vec::new();
    let (before, after) = poll_writing!(&api, &ns, "two consecutive compactions", {
        if let Some(m) = mark(&s.etcd).await {
            if seen.last() != Some(&m) {
                if let Some(last) = seen.last() {
                    assert!(
                        m.version > last.version,
                        "the version only grows: {seen:?} {m:?}"
                    );
                    assert!(m.value >= last.value, "compactions only move forward");
                }
                seen.push(m);
            }
        }
        seen.windows(2)
            .find(|w| w[1].version == w[0].version + 1 && w[0].value > rv0)
            .map(|w| (w[0], w[1]))
    });
    // Each round compacts to the revision of the round before it: the
    // revision the previous Txn (its Put of the key) was written at.
    assert_eq!(after.value, before.mod_revision, "{seen:?}");
    assert!(after.value > before.value);

    // The storage refuses reads below the compacted revision, with etcd's
    // error (once the compaction that follows the Put has run), and still
    // serves the compacted revision itself.
    assert!(compacted(&ctl, rv0).await);
    poll_writing!(&api, &ns, "the compaction after the Put", {
        compacted(&ctl, after.value - 1).await.then_some(())
    });
    if let Err(e) = read_at(&ctl, after.value).await {
        // Only if a later round compacted further in between.
        let later = mark(&s.etcd).await.expect("key");
        assert!(later.value > after.value, "{e}");
    }
    // The apiserver knows how far storage is compacted.
    let deadline = Instant::now() + WAIT;
    loop {
        let known = api
            .server
            .as_ref()
            .and_then(|a| a.compacted_revision())
            .expect("compaction is on");
        if known >= after.value {
            break;
        }
        assert!(Instant::now() < deadline, "{known} < {}", after.value);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn apiservers_sharing_storage_take_turns(kind: ClusterKind) {
    let s = storage(kind).await;
    let ctl = s.cluster.etcdctl();
    let a = start_on_with(s.endpoints.clone(), compacting(INTERVAL)).await;
    let b = start_on_with(s.endpoints.clone(), compacting(INTERVAL)).await;
    let ns = namespace(&a, "turns").await;
    let rv0 = write(&a, &ns, "first").await;

    // From the first round on, count the rounds won over several intervals.
    poll_writing!(&a, &ns, "the first round", mark(&s.etcd).await);
    let started = Instant::now();
    let first = mark(&s.etcd).await.expect("key");
    let mut last = first;
    while started.elapsed() < 6 * INTERVAL {
        write(&b, &ns, &format!("w-{}", rand_suffix())).await;
        last = mark(&s.etcd).await.expect("key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let won = last.version - first.version;
    // Two compactors racing each other would win about twice per interval;
    // taking turns, wins are at least one interval apart.
    let most = (elapsed.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as i64 + 1;
    assert!(
        won >= 1 && won <= most,
        "{won} rounds won in {elapsed:?} (at most {most}): {first:?} -> {last:?}"
    );
    assert!(compacted(&ctl, rv0).await, "storage was compacted");

    // Both know the compacted revision: the winner from its compaction,
    // the other from the key it lost the round on.
    let deadline = Instant::now() + WAIT;
    let known = |api: &Api| api.server.as_ref().and_then(|s| s.compacted_revision());
    while known(&a) < Some(rv0) || known(&b) < Some(rv0) {
        assert!(
            Instant::now() < deadline,
            "a: {:?}, b: {:?}",
            known(&a),
            known(&b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Whichever one stops, the other carries on compacting.
    drop(a);
    let before = mark(&s.etcd).await.expect("key");
    let after = poll_writing!(&b, &ns, "b takes over", {
        let m = mark(&s.etcd).await.expect("key");
        (m.version >= before.version + 2 && m.value > before.value).then_some(m)
    });
    assert!(compacted(&ctl, after.value - 1).await);
}

async fn interval_zero_never_compacts_and_a_stopped_apiserver_stops(kind: ClusterKind) {
    let s = storage(kind).await;
    let ctl = s.cluster.etcdctl();
    let api = start_on_with(s.endpoints.clone(), compacting(Duration::ZERO)).await;
    assert_eq!(api.server.as_ref().unwrap().compacted_revision(), None);
    let ns = namespace(&api, "off").await;
    let rv0 = write(&api, &ns, "first").await;
    // Several intervals' worth of writes: no round ever runs.
    let started = Instant::now();
    while started.elapsed() < 4 * INTERVAL {
        write(&api, &ns, &format!("w-{}", rand_suffix())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mark(&s.etcd).await, None, "no compactor touched the key");
    assert!(!compacted(&ctl, rv0).await, "history is intact");
    let (code, list) = api
        .call(
            "GET",
            &format!(
                "/api/v1/namespaces/{ns}/configmaps?resourceVersion={rv0}&resourceVersionMatch=Exact"
            ),
            None,
        )
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(names(&list), vec!["first".to_string()]);

    // A compacting apiserver, stopped: its rounds stop with it.
    let c = start_on_with(s.endpoints.clone(), compacting(INTERVAL)).await;
    poll_writing!(&api, &ns, "a first round", {
        mark(&s.etcd).await.filter(|m| m.version >= 2)
    });
    drop(c);
    // Let a round that was in flight when it stopped land.
    tokio::time::sleep(INTERVAL).await;
    let stopped = mark(&s.etcd).await.expect("key");
    let started = Instant::now();
    while started.elapsed() < 4 * INTERVAL {
        write(&api, &ns, &format!("w-{}", rand_suffix())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        mark(&s.etcd).await,
        Some(stopped),
        "no rounds after the stop"
    );
}

async fn compacted_resource_versions_expire_and_watchers_keep_going(kind: ClusterKind) {
    let s = storage(kind).await;
    let ctl = s.cluster.etcdctl();
    let api = start_on_with(s.endpoints.clone(), compacting(INTERVAL)).await;
    let ns = namespace(&api, "expire").await;
    // History grows in another namespace, so the watchers below only see
    // the writes they wait for.
    let filler = namespace(&api, "expire-filler").await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    // A watcher from before any compaction.
    let mut watcher = api.watch(&format!("{cms}?watch=1")).await;
    let rv0 = write(&api, &ns, "a").await;
    write(&api, &ns, "b").await;
    let (code, page) = api.call("GET", &format!("{cms}?limit=1"), None).await;
    assert_eq!(code, 200, "{page}");
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let page_rv: i64 = page["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list resourceVersion");

    poll_writing!(&api, &filler, "compaction past the list", {
        compacted(&ctl, page_rv).await.then_some(())
    });

    // A list at a compacted revision, from storage: 410 Expired.
    let (code, status) = api
        .call(
            "GET",
            &format!("{cms}?resourceVersion={rv0}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["reason"], "Expired", "{status}");
    assert_eq!(status["code"], 410);
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("too old resource version: {rv0}")),
        "{message}"
    );
    // The next page of a list from before the compaction: 410 Expired.
    let (code, status) = api
        .call("GET", &format!("{cms}?limit=1&continue={token}"), None)
        .await;
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["reason"], "Expired", "{status}");

    // A watch from a compacted revision the watch cache does not hold
    // (here: on an apiserver started after the compaction) says 410
    // Expired and ends. (One the cache still holds in its window is
    // replayed from memory, as kube-apiserver's cacher does.)
    let late = start_on(s.endpoints.clone(), CacheConfig::default()).await;
    expect_expired_watch(&late, &format!("{cms}?watch=1&resourceVersion={rv0}"), rv0).await;

    // Meanwhile the apiserver keeps serving: the old watcher sees a new
    // write, and so does a watch from a recent revision.
    let (code, list) = api.call("GET", &cms, None).await;
    assert_eq!(code, 200, "{list}");
    let recent: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list resourceVersion");
    let mut from_recent = api
        .watch(&format!("{cms}?watch=1&resourceVersion={recent}"))
        .await;
    let mut from_late = late
        .watch(&format!("{cms}?watch=1&resourceVersion={recent}"))
        .await;
    // Let one more compaction pass first.
    let before = mark(&s.etcd).await.expect("key");
    poll_writing!(&api, &filler, "one more round", {
        mark(&s.etcd).await.filter(|m| m.version > before.version)
    });
    let last_rv = write(&api, &ns, "after-compaction").await;
    for (who, w) in [
        ("the first watcher", &mut watcher),
        ("a watch from a recent revision", &mut from_recent),
        ("a watch on the late apiserver", &mut from_late),
    ] {
        let mut got = None;
        for _ in 0..10_000 {
            let e = w
                .next_event(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("{who}: the stream ended"));
            assert_ne!(e["type"], "ERROR", "{who}: {e}");
            if e["object"]["metadata"]["name"] == "after-compaction" {
                got = Some(e);
                break;
            }
        }
        let e = got.unwrap_or_else(|| panic!("{who}: no event for the new write"));
        assert_eq!(e["type"], "ADDED", "{who}: {e}");
        assert_eq!(rv(&e["object"]), last_rv);
    }
}

async fn expect_expired_watch(api: &Api, path: &str, rv: i64) {
    let mut w = api.watch(path).await;
    let e = w
        .next(Duration::from_secs(20))
        .await
        .expect("an ERROR event");
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["code"], 410, "{e}");
    assert_eq!(e["object"]["reason"], "Expired", "{e}");
    let message = e["object"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("too old resource version: {rv}")),
        "{message}"
    );
    assert!(
        w.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
}
