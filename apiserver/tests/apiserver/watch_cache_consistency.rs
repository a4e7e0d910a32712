//! The watch cache against its storage: two apiservers on one etcd agree
//! with each other, and a cache rides out a compaction past its revision
//! and a restarted storage member, closing watches with 410 Expired only
//! when it cannot serve them.
//!
//! Apiservers run in process; the first test shares the process's real
//! etcd, the others start their own (they cut connections, compact and
//! kill members, which a shared cluster must not see).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_apiserver::{Apiserver, CacheConfig, Config};
use ballast_proto::etcdserverpb::kv_client::KvClient;
use ballast_proto::etcdserverpb::{CompactionRequest, PutRequest};
use ballast_tests::{Cluster, ClusterKind};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// An in-process apiserver on 127.0.0.1; stops when dropped.
struct Server {
    client: kube::Client,
    _stop: oneshot::Sender<()>,
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn start(etcd_servers: Vec<String>, cache: CacheConfig) -> Server {
    let apiserver = Apiserver::new(Config {
        etcd_servers: etcd_servers.iter().map(|e| url(e)).collect(),
        cache,
    })
    .expect("apiserver");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.serve(listener, async move {
        let _ = stopped.await;
    }));
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !ready(addr).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "apiserver not ready in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        client,
        _stop: stop,
    }
}

/// Whether `/readyz` answers 200 (every cache has listed).
async fn ready(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await?;
        let mut head = Vec::new();
        s.read_to_end(&mut head).await?;
        std::io::Result::Ok(head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Ok(true))
    )
}

/// Waits until a put through `endpoint` succeeds (the cluster has a
/// leader again); the key lies outside `/registry/`.
async fn wait_writable(endpoint: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let put = async {
            let mut kv = KvClient::connect(url(endpoint)).await.ok()?;
            kv.put(PutRequest {
                key: b"/wcc-probe".to_vec(),
                value: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .ok()
        };
        if tokio::time::timeout(Duration::from_secs(5), put)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{endpoint} not writable in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A cluster of `size` etcd members of this test's own.
async fn own_cluster(size: usize) -> Cluster {
    tokio::task::spawn_blocking(move || Cluster::start_with_size(ClusterKind::Etcd, size))
        .await
        .expect("cluster")
}

async fn shared_endpoints() -> Vec<String> {
    tokio::task::spawn_blocking(|| Cluster::shared(ClusterKind::Etcd).endpoints())
        .await
        .expect("cluster")
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("v".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

fn rv_of(cm: &ConfigMap) -> i64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion")
}

fn name_of(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

/// `(type, name, resourceVersion)` of a watch event, or `("ERROR", reason, code)`.
type Seen = (String, String, i64);

fn seen(e: WatchEvent<ConfigMap>) -> Option<Seen> {
    let (kind, cm) = match e {
        WatchEvent::Added(cm) => ("ADDED", cm),
        WatchEvent::Modified(cm) => ("MODIFIED", cm),
        WatchEvent::Deleted(cm) => ("DELETED", cm),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(e) => return Some(("ERROR".into(), e.reason, i64::from(e.code))),
    };
    Some((kind.into(), name_of(&cm), rv_of(&cm)))
}

type Events = std::pin::Pin<Box<dyn Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Send>>;

async fn watch_from(api: &Api<ConfigMap>, rv: i64) -> Events {
    api.watch(&WatchParams::default(), &rv.to_string())
        .await
        .expect("watch request")
        .boxed()
}

/// The next `n` events (bookmarks skipped), or fewer if the stream ends or
/// the deadline passes first.
async fn next_events(events: &mut Events, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(e))) => out.extend(seen(e)),
            Ok(Some(Err(e))) => panic!("watch stream failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Whether a watch from `rv` is refused with 410 Expired (it opens, then
/// its first event is the error).
async fn expired(api: &Api<ConfigMap>, rv: i64) -> bool {
    let mut events = watch_from(api, rv).await;
    let first = next_events(&mut events, 1).await;
    matches!(first.first(), Some((kind, _, 410)) if kind == "ERROR")
}

/// `(name, value, resourceVersion)` of every ConfigMap in the list, by name.
fn contents(list: &kube::api::ObjectList<ConfigMap>) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = list
        .items
        .iter()
        .map(|cm| {
            let value = cm
                .data
                .as_ref()
                .and_then(|d| d.get("v").cloned())
                .unwrap_or_default();
            (name_of(cm), value, rv_of(cm))
        })
        .collect();
    v.sort();
    v
}

/// Retries a consistent List until it succeeds (the apiserver may still be
/// reconnecting to its storage) and returns it.
async fn consistent_list(api: &Api<ConfigMap>) -> kube::api::ObjectList<ConfigMap> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => return list,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no consistent List in time: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_on_one_storage_agree() {
    let eps = shared_endpoints().await;
    let a = start(eps.clone(), CacheConfig::default()).await;
    // B wakes its watchers in batches (every 20 ms): same events, same order.
    let b = start(
        eps,
        CacheConfig {
            flush_interval: Duration::from_millis(20),
            ..CacheConfig::default()
        },
    )
    .await;
    let ns = "wcc-two-apiservers";
    create_namespace(&a.client, ns).await;
    let on_a = Api::<ConfigMap>::namespaced(a.client.clone(), ns);
    let on_b = Api::<ConfigMap>::namespaced(b.client.clone(), ns);
    let start_rv: i64 = on_a
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion")
        .parse()
        .expect("numeric");
    let mut from_start = watch_from(&on_b, start_rv).await;

    let mut written = Vec::new();
    for i in 0..10 {
        let cm = on_a
            .create(&PostParams::default(), &config_map(&format!("c{i}"), "one"))
            .await
            .expect("create through A");
        let rv = rv_of(&cm);
        // Immediately, a consistent List through B has it, at A's version.
        let list = on_b.list(&ListParams::default()).await.expect("list on B");
        let list_rv: i64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("list resourceVersion");
        assert!(
            list_rv >= rv,
            "B's list at {list_rv} predates A's write at {rv}"
        );
        let found = list.items.iter().find(|c| name_of(c) == format!("c{i}"));
        assert_eq!(
            found.map(rv_of),
            Some(rv),
            "B's list has c{i} at A's version"
        );
        // A watch on B from the version A returned sees what follows it.
        let mut after = watch_from(&on_b, rv).await;
        let updated = on_a
            .replace(
                &format!("c{i}"),
                &PostParams::default(),
                &ConfigMap {
                    metadata: ObjectMeta {
                        resource_version: Some(rv.to_string()),
                        ..config_map(&format!("c{i}"), "two").metadata
                    },
                    ..config_map(&format!("c{i}"), "two")
                },
            )
            .await
            .expect("update through A");
        let got = next_events(&mut after, 1).await;
        assert_eq!(
            got,
            [("MODIFIED".into(), format!("c{i}"), rv_of(&updated))],
            "the watch on B from A's version delivered A's update"
        );
        // B reads the same object at the same version.
        let on_b_now = on_b.get(&format!("c{i}")).await.expect("get on B");
        assert_eq!(rv_of(&on_b_now), rv_of(&updated));
        written.push(("ADDED".to_string(), format!("c{i}"), rv));
        written.push(("MODIFIED".to_string(), format!("c{i}"), rv_of(&updated)));
    }
    let deleted = on_a
        .delete("c0", &DeleteParams::default())
        .await
        .expect("delete");
    drop(deleted);
    // The watch on B from before the writes saw all of them, in order.
    let got = next_events(&mut from_start, written.len() + 1).await;
    assert_eq!(got[..written.len()], written[..]);
    let last = got.last().expect("the deletion");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("DELETED", "c0"));
    assert!(last.2 > written.last().unwrap().2);
    // Both caches list the same thing.
    let on_a_list = contents(&on_a.list(&ListParams::default()).await.expect("list A"));
    let on_b_list = contents(&on_b.list(&ListParams::default()).await.expect("list B"));
    assert_eq!(on_a_list.len(), 9);
    assert_eq!(on_a_list, on_b_list);
}

/// A loopback TCP proxy that can cut every connection and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<parking_lot::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, conns) = (open.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection closes at once
                    }
                    let target = target.clone();
                    conns.lock().push(tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            })
        };
        Proxy {
            addr,
            open,
            conns,
            accept,
        }
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_past_the_cache_relists_and_expires_only_skipped_versions() {
    let cluster = own_cluster(1).await;
    let etcd = cluster.endpoints()[0].clone();
    let proxy = Proxy::start(etcd.trim_start_matches("http://").to_string()).await;
    // A reaches etcd only through the proxy; B directly.
    let a = start(
        vec![proxy.addr.to_string()],
        CacheConfig {
            window: 8,
            ..CacheConfig::default()
        },
    )
    .await;
    let b = start(vec![etcd.clone()], CacheConfig::default()).await;
    let ns = "wcc-compaction";
    create_namespace(&a.client, ns).await;
    let on_a = Api::<ConfigMap>::namespaced(a.client.clone(), ns);
    let on_b = Api::<ConfigMap>::namespaced(b.client.clone(), ns);
    let mut rvs = Vec::new();
    for i in 0..5 {
        let cm = on_a
            .create(&PostParams::default(), &config_map(&format!("c{i}"), "one"))
            .await
            .expect("create");
        rvs.push(rv_of(&cm));
    }
    let cached = rvs[4];
    let mut open_watch = watch_from(&on_a, cached).await;

    // A loses etcd; meanwhile B writes, and etcd compacts past A's revision.
    proxy.cut();
    let c1 = on_b.get("c1").await.expect("get c1");
    let c1 = on_b
        .replace(
            "c1",
            &PostParams::default(),
            &ConfigMap {
                data: config_map("c1", "two").data,
                ..c1
            },
        )
        .await
        .expect("update c1 through B");
    let skipped = rv_of(&c1);
    on_b.delete("c2", &DeleteParams::default())
        .await
        .expect("delete c2 through B");
    let c5 = on_b
        .create(&PostParams::default(), &config_map("c5", "one"))
        .await
        .expect("create c5 through B");
    on_b.create(&PostParams::default(), &config_map("c6", "short-lived"))
        .await
        .expect("create c6 through B");
    on_b.delete("c6", &DeleteParams::default())
        .await
        .expect("delete c6 through B");
    let now = rv_of(
        &on_b
            .create(&PostParams::default(), &config_map("c7", "one"))
            .await
            .expect("create c7 through B"),
    );
    let mut kv = KvClient::connect(url(&etcd)).await.expect("etcd client");
    kv.compact(CompactionRequest {
        revision: now,
        physical: true,
    })
    .await
    .expect("compact");
    proxy.restore();

    // The open watch stays open and gets the difference: the changed and
    // new objects at their versions, then the deletion.
    let got = next_events(&mut open_watch, 4).await;
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|(k, n, _)| (k.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("MODIFIED", "c1"),
            ("ADDED", "c5"),
            ("ADDED", "c7"),
            ("DELETED", "c2")
        ],
        "{got:?}"
    );
    assert_eq!(got[0].2, skipped);
    assert_eq!(got[1].2, rv_of(&c5));
    assert_eq!(got[2].2, now);
    assert!(got[3].2 >= now);

    // A List through A is right, and agrees with B's.
    let listed = contents(&consistent_list(&on_a).await);
    let names: Vec<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["c0", "c1", "c3", "c4", "c5", "c7"]);
    assert_eq!(listed, contents(&consistent_list(&on_b).await));

    // Resuming from a version the cache holds works; from one it skipped
    // (written while it was away) or one older than its window: 410.
    let mut resumed = watch_from(&on_a, cached).await;
    let again = next_events(&mut resumed, 4).await;
    assert_eq!(again, got, "a watch from a cached version replays the same");
    assert!(
        expired(&on_a, skipped).await,
        "a skipped version is expired"
    );
    assert!(
        expired(&on_a, rvs[0] - 1).await,
        "a version before the window is expired"
    );

    // The cache watches etcd again: a new write reaches the open watch.
    let c8 = on_a
        .create(&PostParams::default(), &config_map("c8", "one"))
        .await
        .expect("create c8");
    assert_eq!(
        next_events(&mut open_watch, 1).await,
        [("ADDED".into(), "c8".into(), rv_of(&c8))]
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_storage_member_is_rewatched_without_expiring_anyone() {
    let mut cluster = own_cluster(3).await;
    let eps = cluster.endpoints();
    // A talks to member 0 only; B to the two others.
    let a = start(vec![eps[0].clone()], CacheConfig::default()).await;
    let b = start(eps[1..].to_vec(), CacheConfig::default()).await;
    let ns = "wcc-restart";
    create_namespace(&a.client, ns).await;
    let on_a = Api::<ConfigMap>::namespaced(a.client.clone(), ns);
    let on_b = Api::<ConfigMap>::namespaced(b.client.clone(), ns);
    let mut last = 0;
    for i in 0..3 {
        last = rv_of(
            &on_a
                .create(&PostParams::default(), &config_map(&format!("c{i}"), "one"))
                .await
                .expect("create"),
        );
    }
    let mut open_watch = watch_from(&on_a, last).await;

    // Member 0 dies; the others keep taking writes.
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.kill(0);
        cluster
    })
    .await
    .expect("kill");
    wait_writable(&eps[1]).await;
    let c0 = on_b.get("c0").await.expect("get c0");
    let c0 = on_b
        .replace(
            "c0",
            &PostParams::default(),
            &ConfigMap {
                data: config_map("c0", "two").data,
                ..c0
            },
        )
        .await
        .expect("update through B");
    let while_away = rv_of(&c0);
    let c3 = on_b
        .create(&PostParams::default(), &config_map("c3", "one"))
        .await
        .expect("create through B");
    on_b.delete("c1", &DeleteParams::default())
        .await
        .expect("delete through B");
    // A cannot answer a consistent List while its storage is gone.
    assert!(on_a.list(&ListParams::default()).await.is_err());

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0);
        cluster
    })
    .await
    .expect("restart");

    // The open watch was never closed: it gets the writes made meanwhile,
    // at their own versions.
    let got = next_events(&mut open_watch, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], ("MODIFIED".into(), "c0".into(), while_away));
    assert_eq!(got[1], ("ADDED".into(), "c3".into(), rv_of(&c3)));
    assert_eq!((got[2].0.as_str(), got[2].1.as_str()), ("DELETED", "c1"));
    // The cache re-watched rather than re-listed: a version written while
    // it was away is still servable.
    let mut resumed = watch_from(&on_a, while_away).await;
    assert_eq!(next_events(&mut resumed, 2).await, got[1..]);
    let listed = contents(&consistent_list(&on_a).await);
    assert_eq!(listed, contents(&consistent_list(&on_b).await));
    let names: Vec<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["c0", "c2", "c3"]);

    // Writes through A work again and reach its watchers.
    let c4 = on_a
        .create(&PostParams::default(), &config_map("c4", "one"))
        .await
        .expect("create through A after the restart");
    assert_eq!(
        next_events(&mut open_watch, 1).await,
        [("ADDED".into(), "c4".into(), rv_of(&c4))]
    );
    drop(cluster);
}
