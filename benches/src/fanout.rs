//! `ballast bench watch-fanout`: the apiserver's watch cache under load.
//!
//! 1. Creates `pods` pods in `namespaces` namespaces, bound (by
//!    `spec.nodeName`) round-robin to `nodes` node names that need not
//!    exist: no kubelet runs them, only their watch events matter.
//! 2. Opens `watchers` watches: half on a namespace, half on
//!    `spec.nodeName=<node>` across all namespaces, each from the
//!    resourceVersion of the initial list. Each watch is its own plain
//!    HTTP/1.0 connection, or, with `h2_conns` > 0, a stream on one of that
//!    many HTTP/2 (h2c) connections, as client-go multiplexes the watches
//!    of one process over one connection.
//! 3. A writer patches an annotation of pod after pod at `rate` for
//!    `duration`, recording when each new resourceVersion is acknowledged.
//! 4. Each watcher counts the updates it receives, checks resourceVersions
//!    only grow, and records delivery latency (acknowledged → received; 0
//!    when the event beat the acknowledgement). After the writer stops the
//!    watchers get `drain` to catch up; what is still missing then counts
//!    as `missed`.
//! 5. Lists every pod (from the cache) `list_samples` times for the List
//!    latency, and reads the apiserver's RSS when its pid is given.
//!
//! Watch lines are scanned for the few fields the check needs instead of
//! being parsed as JSON, so the client's CPU goes to receiving.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use memchr::memmem::Finder;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::report::Latencies;

/// What `ballast bench watch-fanout` runs.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The apiserver's address (`127.0.0.1:8080`), for the raw watch streams.
    pub address: String,
    pub watchers: usize,
    pub pods: usize,
    pub namespaces: usize,
    pub nodes: usize,
    /// Pod updates per second.
    pub rate: u64,
    pub duration: Duration,
    /// How long watchers may take to catch up after the writer stops.
    pub drain: Duration,
    /// Full Lists timed at the end.
    pub list_samples: usize,
    /// The apiserver's pid, for its RSS.
    pub apiserver_pid: Option<u32>,
    /// HTTP/2 connections the watches share (0: one HTTP/1.0 connection
    /// per watch).
    pub h2_conns: usize,
    pub progress: bool,
}

/// What the writer acknowledged: resourceVersion → when.
type Acks = Arc<RwLock<HashMap<u64, Instant>>>;

/// One watcher's tally.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    out_of_order: u64,
    reconnects: u64,
    /// Shared with other watchers: a histogram each would spread every
    /// record over thousands of cold ones (~160 KB each).
    latency: Arc<Mutex<Latencies>>,
}

/// Latency histograms the watchers share.
const LATENCY_SHARDS: usize = 16;

impl Tally {
    /// Counts one watch event line; returns the newest resourceVersion seen.
    fn record_line(&mut self, line: &[u8], rv: u64, acks: &Acks) -> u64 {
        let received = Instant::now();
        if field(line, &TYPE) != Some(&b"MODIFIED"[..]) {
            return rv;
        }
        let version = field(line, &RESOURCE_VERSION)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok());
        let Some(version) = version else {
            return rv;
        };
        let acked = acks.read().get(&version).copied();
        self.received += 1;
        if version <= rv {
            self.out_of_order += 1;
        }
        self.latency
            .lock()
            .record(acked.map_or(Duration::ZERO, |a| received.saturating_duration_since(a)));
        rv.max(version)
    }
}

/// A watch stream's transport.
#[derive(Clone)]
enum Transport {
    /// A new HTTP/1.0 connection per watch.
    Http1 { address: String },
    /// A stream on a shared HTTP/2 connection.
    Http2 {
        address: String,
        sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    },
}

/// Opens `n` h2c connections to `address`.
async fn connect_h2(address: &str, n: usize) -> anyhow::Result<Vec<Transport>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(64 << 20)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        out.push(Transport::Http2 {
            address: address.to_string(),
            sender,
        });
    }
    Ok(out)
}

fn node_name(i: usize) -> String {
    format!("fanout-node-{i}")
}

/// The first `"<field>":"<value>"` string value in `line`, given the
/// field's opening pattern `"<field>":"`.
fn field<'a>(line: &'a [u8], pattern: &Finder<'static>) -> Option<&'a [u8]> {
    let start = pattern.find(line)? + pattern.needle().len();
    let len = memchr::memchr(b'"', &line[start..])?;
    Some(&line[start..start + len])
}

static TYPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\""));
static RESOURCE_VERSION: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"resourceVersion\":\""));

/// Runs the fan-out benchmark; the result is one JSON object.
pub async fn run(client: kube::Client, config: FanoutConfig) -> anyhow::Result<Value> {
    if config.watchers == 0 || config.pods == 0 || config.namespaces == 0 || config.nodes == 0 {
        bail!("--watchers, --pods, --namespaces and --nodes must be at least 1");
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let namespaces: Vec<String> = (0..config.namespaces)
        .map(|i| format!("fanout-{stamp}-{i}"))
        .collect();
    let ns_api = Api::<Namespace>::all(client.clone());
    for ns in &namespaces {
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        ns_api
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
    }
    let result = measure(&client, &namespaces, &config).await;
    for ns in &namespaces {
        let _ = ns_api.delete(ns, &DeleteParams::background()).await;
    }
    result
}

/// How long pod creation waits for a new namespace's `default`
/// ServiceAccount.
const SERVICE_ACCOUNT_WAIT: Duration = Duration::from_secs(30);

/// Pod `i`: (namespace index, node index, name).
fn pod_slot(config: &FanoutConfig, i: usize) -> (usize, usize, String) {
    (
        i % config.namespaces,
        i % config.nodes,
        format!("fanout-{i}"),
    )
}

async fn create_pods(
    client: &kube::Client,
    namespaces: &[String],
    config: &FanoutConfig,
) -> anyhow::Result<()> {
    let created = futures::stream::iter(0..config.pods)
        .map(|i| {
            let (ns, node, name) = pod_slot(config, i);
            let api = Api::<Pod>::namespaced(client.clone(), &namespaces[ns]);
            async move {
                let pod = Pod {
                    metadata: ObjectMeta {
                        name: Some(name),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PodSpec {
                        node_name: Some(node_name(node)),
                        containers: vec![Container {
                            name: "app".into(),
                            image: Some("busybox".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..Pod::default()
                };
                // An apiserver with the ServiceAccount admission plugin
                // refuses pods in a new namespace until the controller
                // manager has made its `default` ServiceAccount.
                let deadline = Instant::now() + SERVICE_ACCOUNT_WAIT;
                loop {
                    match api.create(&PostParams::default(), &pod).await {
                        Err(kube::Error::Api(s))
                            if s.code == 403
                                && s.message.contains("service account")
                                && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        result => return result,
                    }
                }
            }
        })
        .buffer_unordered(64);
    futures::pin_mut!(created);
    while let Some(result) = created.next().await {
        result.context("creating a pod")?;
    }
    Ok(())
}

/// One watch stream: (path without resourceVersion, updates it must see per write slot).
fn watch_paths(namespaces: &[String], config: &FanoutConfig) -> Vec<String> {
    (0..config.watchers)
        .map(|w| {
            if w % 2 == 0 {
                let ns = &namespaces[(w / 2) % namespaces.len()];
                format!("/api/v1/namespaces/{ns}/pods?watch=1")
            } else {
                let node = node_name((w / 2) % config.nodes);
                format!("/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3D{node}")
            }
        })
        .collect()
}

/// One watch stream: what it asks for, where it has got to, and where its
/// counts go.
struct Watch {
    path: String,
    /// The newest resourceVersion seen: where a reconnect resumes.
    rv: u64,
    acks: Acks,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
}

impl Watch {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// The request target, resuming from the newest version seen.
    fn target(&self) -> String {
        format!("{}&resourceVersion={}", self.path, self.rv)
    }
}

/// Streams `w` until it is stopped (or its task is aborted), reconnecting
/// from the last resourceVersion seen if the server closes the stream.
async fn watch(transport: Transport, w: Watch) {
    match transport {
        Transport::Http1 { address } => watch_http1(address, w).await,
        Transport::Http2 { address, sender } => watch_http2(address, sender, w).await,
    }
}

/// [`watch`] on HTTP/2 streams of one shared connection. Frames are split
/// into lines in one reused buffer.
async fn watch_http2(
    address: String,
    mut sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    mut w: Watch,
) {
    use http_body_util::BodyExt;
    let mut pending = Vec::with_capacity(4096);
    while w.running() {
        let request = hyper::Request::get(format!("http://{address}{}", w.target()))
            .body(http_body_util::Empty::new());
        let Ok(request) = request else { return };
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut body = response.into_body();
        pending.clear();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            // Whole lines are scanned where they arrived; only a line split
            // across frames is copied.
            let mut t = w.tally.lock();
            let mut rest = &data[..];
            if !pending.is_empty() {
                let Some(end) = memchr::memchr(b'\n', rest) else {
                    pending.extend_from_slice(rest);
                    continue;
                };
                pending.extend_from_slice(&rest[..end]);
                w.rv = t.record_line(&pending, w.rv, &w.acks);
                pending.clear();
                rest = &rest[end + 1..];
            }
            while let Some(end) = memchr::memchr(b'\n', rest) {
                w.rv = t.record_line(&rest[..end], w.rv, &w.acks);
                rest = &rest[end + 1..];
            }
            pending.extend_from_slice(rest);
        }
        w.tally.lock().reconnects += 1;
    }
}

/// [`watch`] on one HTTP/1.0 connection. Lines are read into one reused
/// buffer and scanned in place.
async fn watch_http1(address: String, mut w: Watch) {
    let mut line = Vec::with_capacity(4096);
    while w.running() {
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let request = format!("GET {} HTTP/1.0\r\nHost: {address}\r\n\r\n", w.target());
        if stream.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let mut reader = BufReader::with_capacity(64 << 10, stream);
        let mut in_body = false;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !in_body {
                in_body = line.trim_ascii().is_empty();
                continue;
            }
            w.rv = w.tally.lock().record_line(&line, w.rv, &w.acks);
        }
        w.tally.lock().reconnects += 1;
    }
}

async fn measure(
    client: &kube::Client,
    namespaces: &[String],
    config: &FanoutConfig,
) -> anyhow::Result<Value> {
    let t = Instant::now();
    create_pods(client, namespaces, config).await?;
    if config.progress {
        eprintln!(
            "watch-fanout: {} pods created in {:.1?}",
            config.pods,
            t.elapsed()
        );
    }
    let list = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await?;
    let start_rv: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("0")
        .parse()
        .context("list resourceVersion")?;
    let rss_before = match config.apiserver_pid {
        Some(pid) => Some(crate::watch::rss_bytes(&[pid])?),
        None => None,
    };

    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let paths = watch_paths(namespaces, config);
    let shards: Vec<Arc<Mutex<Latencies>>> = (0..LATENCY_SHARDS).map(|_| Arc::default()).collect();
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..paths.len())
        .map(|i| {
            Arc::new(Mutex::new(Tally {
                latency: shards[i % LATENCY_SHARDS].clone(),
                ..Tally::default()
            }))
        })
        .collect();
    let transports = match config.h2_conns {
        0 => vec![Transport::Http1 {
            address: config.address.clone(),
        }],
        n => connect_h2(&config.address, n).await?,
    };
    let mut tasks = Vec::with_capacity(paths.len());
    for (i, (path, tally)) in paths.iter().zip(&tallies).enumerate() {
        let w = Watch {
            path: path.clone(),
            rv: start_rv,
            acks: acks.clone(),
            stop: stop.clone(),
            tally: tally.clone(),
        };
        tasks.push(tokio::spawn(watch(
            transports[i % transports.len()].clone(),
            w,
        )));
    }
    // Let the streams open before the first write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_watching = match config.apiserver_pid {
        Some(pid) => Some(crate::watch::rss_bytes(&[pid])?),
        None => None,
    };

    // The writer: one patch per tick, up to 64 in flight.
    let written = Arc::new(AtomicU64::new(0));
    let total = (config.rate as f64 * config.duration.as_secs_f64()) as usize;
    let mut per_ns = vec![0u64; config.namespaces];
    let mut per_node = vec![0u64; config.nodes];
    for n in 0..total {
        let (ns, node, _) = pod_slot(config, n % config.pods);
        per_ns[ns] += 1;
        per_node[node] += 1;
    }
    let started = Instant::now();
    let patches = futures::stream::iter(0..total)
        .map(|n| {
            let (ns, _, name) = pod_slot(config, n % config.pods);
            let api = Api::<Pod>::namespaced(client.clone(), &namespaces[ns]);
            let acks = acks.clone();
            let written = written.clone();
            let due = started + Duration::from_secs_f64(n as f64 / config.rate as f64);
            async move {
                tokio::time::sleep_until(due.into()).await;
                let patch =
                    json!({"metadata": {"annotations": {"bench.ballast.dev/seq": n.to_string()}}});
                let pod = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("patching {name}"))?;
                let rv: u64 = pod
                    .metadata
                    .resource_version
                    .as_deref()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                acks.write().insert(rv, Instant::now());
                written.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64);
    futures::pin_mut!(patches);
    let mut last_progress = Instant::now();
    while let Some(result) = patches.next().await {
        result?;
        if config.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let received: u64 = tallies.iter().map(|t| t.lock().received).sum();
            eprintln!(
                "watch-fanout {:>5.1}s: {} updates written, {received} events delivered",
                started.elapsed().as_secs_f64(),
                written.load(Ordering::Relaxed)
            );
        }
    }
    let write_time = started.elapsed();

    // Each watcher must see every update of its namespace or node.
    let expected: Vec<u64> = (0..config.watchers)
        .map(|w| {
            if w % 2 == 0 {
                per_ns[(w / 2) % config.namespaces]
            } else {
                per_node[(w / 2) % config.nodes]
            }
        })
        .collect();
    let drain_deadline = Instant::now() + config.drain;
    while Instant::now() < drain_deadline
        && tallies
            .iter()
            .zip(&expected)
            .any(|(t, e)| t.lock().received < *e)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let delivery_time = started.elapsed();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }

    let mut latency = Latencies::new();
    for shard in &shards {
        latency.merge(&shard.lock());
    }
    let (mut received, mut missed, mut extra, mut out_of_order, mut reconnects) = (0, 0, 0, 0, 0);
    for (t, e) in tallies.iter().zip(&expected) {
        let t = t.lock();
        received += t.received;
        missed += e.saturating_sub(t.received);
        extra += t.received.saturating_sub(*e);
        out_of_order += t.out_of_order;
        reconnects += t.reconnects;
    }

    // Lists of every pod, served from the cache.
    let mut list_latency = Latencies::new();
    let all = Api::<Pod>::all(client.clone());
    for _ in 0..config.list_samples {
        let t = Instant::now();
        let listed = all.list(&ListParams::default()).await?;
        list_latency.record(t.elapsed());
        if listed.items.len() < config.pods {
            bail!(
                "a List returned {} pods, expected at least {}",
                listed.items.len(),
                config.pods
            );
        }
    }

    let mut out = serde_json::Map::new();
    out.insert("workload".into(), json!("watch-fanout"));
    out.insert("watchers".into(), json!(config.watchers));
    out.insert("h2_conns".into(), json!(config.h2_conns));
    out.insert("pods".into(), json!(config.pods));
    out.insert("updates".into(), json!(written.load(Ordering::Relaxed)));
    out.insert(
        "updates_per_s".into(),
        json!((written.load(Ordering::Relaxed) as f64 / write_time.as_secs_f64()).round()),
    );
    out.insert("events_delivered".into(), json!(received));
    out.insert(
        "delivered_per_s".into(),
        json!((received as f64 / delivery_time.as_secs_f64()).round()),
    );
    out.insert("missed".into(), json!(missed));
    out.insert("duplicates".into(), json!(extra));
    out.insert("out_of_order".into(), json!(out_of_order));
    out.insert("reconnects".into(), json!(reconnects));
    latency.write_percentiles("delivery_", &mut out);
    list_latency.write_percentiles("list_", &mut out);
    if let (Some(before), Some(watching)) = (rss_before, rss_watching) {
        out.insert("apiserver_rss_mib".into(), json!(watching / (1 << 20)));
        out.insert(
            "bytes_per_watcher".into(),
            json!(watching.saturating_sub(before) / config.watchers as u64),
        );
    }
    if let Some(pid) = config.apiserver_pid {
        out.insert(
            "apiserver_rss_end_mib".into(),
            json!(crate::watch::rss_bytes(&[pid])? / (1 << 20)),
        );
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_modified_events_and_order() {
        let acks: Acks = Arc::default();
        let mut t = Tally::default();
        let event = |kind: &str, rv: u64| {
            format!(
                r#"{{"type":"{kind}","object":{{"metadata":{{"name":"p","resourceVersion":"{rv}"}}}}}}"#
            )
        };
        let rv = t.record_line(event("MODIFIED", 7).as_bytes(), 5, &acks);
        assert_eq!((rv, t.received, t.out_of_order), (7, 1, 0));
        // Other kinds and bookmarks are not counted; an old version is.
        let rv = t.record_line(event("BOOKMARK", 9).as_bytes(), rv, &acks);
        let rv = t.record_line(event("MODIFIED", 6).as_bytes(), rv, &acks);
        assert_eq!((rv, t.received, t.out_of_order), (7, 2, 1));
        let rv = t.record_line(b"not json", rv, &acks);
        assert_eq!((rv, t.received), (7, 2));
    }
}
