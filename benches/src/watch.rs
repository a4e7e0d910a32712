//! The watch workload.
//!
//! 1. `watchers` watches on one fresh prefix, spread round-robin over
//!    `streams` gRPC watch streams (themselves spread over the connections);
//!    every creation is confirmed before anything is written. The server
//!    processes' RSS (`server_pids`) is read before and after, giving
//!    `bytes_per_watcher`.
//! 2. `clients` writers put `prefix + slot` (slot = 0, 1, 2, …) at `rate`
//!    until `duration`; each value starts with its send time; the moment a
//!    put is acknowledged is recorded per slot.
//! 3. Every watcher checks that it receives each acknowledged put exactly
//!    once and in revision order; delivery latency is *acknowledged →
//!    received* (0 when the event beat the acknowledgement), and
//!    `e2e` latency is *sent → received*.
//! 4. After the writers stop, watchers get `drain_timeout` to catch up;
//!    whatever has not arrived by then counts as `missed`, split into
//!    `missed_skipped` (older than an event the watcher did receive: a hole
//!    in the stream) and `missed_late` (newer: still in flight when the
//!    drain ended — the server was behind, not wrong).
//!
//! Watch responses are decoded with a lean message that skips the header
//! and the fields the check does not need, so the client spends its CPU on
//! receiving rather than on allocating; `--client etcd-client` receives with
//! the `etcd-client` crate instead, as a typical Rust user would. With
//! `server_pids`, each server's RSS is also sampled every 250 ms from the
//! watchers' creation to the drain's end (`rss_peak_bytes`, per server).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::kv::KvConn;
use anyhow::{bail, Context};
use ballast_proto::etcdserverpb::{watch_request, WatchCreateRequest, WatchRequest};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch as signal};
use tonic::codegen::http::uri::PathAndQuery;

use crate::load::{self, Bounds, Keys, ReqFuture, Request, Shared};
use crate::report::{Latencies, Report};
use crate::{conn, ClientLibrary, Config, WatchConfig};

/// Smallest value: a 20-digit send timestamp and a space.
pub const MIN_VAL_SIZE: usize = 21;

/// Digits of the slot number in watch keys.
const SLOT_DIGITS: usize = 10;

/// The most puts a run can make: what `rate × duration` and `total` allow.
pub fn max_puts(cfg: &Config) -> u64 {
    let by_rate = if cfg.rate > 0 {
        (cfg.rate as f64 * cfg.duration.as_secs_f64()).ceil() as u64 + 1
    } else {
        u64::MAX
    };
    by_rate.min(cfg.total.unwrap_or(u64::MAX))
}

/// `WatchResponse` with only what the check needs.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanWatchResponse {
    #[prost(int64, tag = "2")]
    watch_id: i64,
    #[prost(bool, tag = "3")]
    created: bool,
    #[prost(bool, tag = "4")]
    canceled: bool,
    #[prost(int64, tag = "5")]
    compact_revision: i64,
    #[prost(string, tag = "6")]
    cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    events: Vec<LeanEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeanEvent {
    #[prost(int32, tag = "1")]
    kind: i32,
    #[prost(message, optional, tag = "2")]
    kv: Option<LeanKv>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeanKv {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(bytes = "bytes", tag = "5")]
    value: Bytes,
}

/// Nanoseconds since `start`.
fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// A put's acknowledgement, per slot.
#[derive(Default)]
struct Ack {
    /// 0 = not acknowledged, else ack time in ns since `start` + 1.
    at: AtomicU64,
    /// The put's revision (from the response header).
    rev: AtomicI64,
}

impl Ack {
    fn acked(&self) -> bool {
        self.at.load(Ordering::Relaxed) != 0
    }
}

/// The writer: puts `prefix + slot`, value = send time, records the ack.
struct Writer {
    keys: Keys,
    val_size: usize,
    start: Instant,
    acks: Arc<Vec<Ack>>,
}

impl Request for Writer {
    fn call(&self, kv: KvConn, slot: u64, _key: u64) -> ReqFuture {
        let mut value = format!("{:020} ", nanos_since(self.start)).into_bytes();
        value.resize(self.val_size, b'w');
        let key = self.keys.key(slot);
        let (acks, start) = (self.acks.clone(), self.start);
        Box::pin(async move {
            let rev = kv.put(key, value).await?;
            if let Some(a) = acks.get(slot as usize) {
                a.rev.store(rev, Ordering::Relaxed);
                a.at.store(nanos_since(start) + 1, Ordering::Relaxed);
            }
            Ok(false)
        })
    }
}

/// What one watcher saw.
#[derive(Default)]
struct Watcher {
    /// Bit per slot: received.
    seen: Vec<u64>,
    /// Distinct slots received.
    distinct: u64,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
    last_rev: i64,
    /// Canceled by the server (compaction or an error).
    canceled: bool,
}

impl Watcher {
    fn has(&self, slot: u64) -> bool {
        self.seen
            .get((slot / 64) as usize)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// Records `slot` at `rev`; true if it was new.
    fn record(&mut self, slot: u64, rev: i64) -> bool {
        self.received += 1;
        let (i, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
        if i >= self.seen.len() {
            self.seen.resize(i + 1, 0);
        }
        if self.seen[i] & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[i] |= bit;
        self.distinct += 1;
        if rev <= self.last_rev {
            self.out_of_order += 1;
        } else {
            self.last_rev = rev;
        }
        true
    }
}

/// Told to the stream tasks when the writers are done.
#[derive(Clone, Copy)]
struct Finish {
    acked: u64,
    deadline: Instant,
}

/// What one stream task returns.
struct StreamResult {
    watchers: Vec<Watcher>,
    delivery: Latencies,
    e2e: Latencies,
    /// Events on keys that are not ours, unparsable values, stream errors.
    errors: u64,
    first_error: Option<String>,
}

struct StreamCtx {
    prefix: Vec<u8>,
    start: Instant,
    acks: Arc<Vec<Ack>>,
    create_deadline: Instant,
    events: AtomicU64,
}

/// What a watch stream is opened on.
#[derive(Clone)]
enum StreamConn {
    Lean(Conn),
    EtcdClient(Box<etcd_client::Client>),
}

/// An open watch stream with every create request sent.
enum Source {
    Lean {
        responses: tonic::Streaming<LeanWatchResponse>,
        /// Kept open for the stream's life: closing it ends the call.
        _requests: mpsc::Sender<WatchRequest>,
    },
    EtcdClient(etcd_client::WatchStream),
}

impl Source {
    async fn message(&mut self) -> Result<Option<LeanWatchResponse>, String> {
        match self {
            Source::Lean { responses, .. } => responses
                .message()
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
            Source::EtcdClient(s) => s
                .message()
                .await
                .map(|r| r.as_ref().map(lean))
                .map_err(|e| e.to_string()),
        }
    }
}

/// What the check needs of an `etcd-client` response.
fn lean(r: &etcd_client::WatchResponse) -> LeanWatchResponse {
    LeanWatchResponse {
        watch_id: r.watch_id(),
        created: r.created(),
        canceled: r.canceled(),
        compact_revision: r.compact_revision(),
        cancel_reason: r.cancel_reason().to_string(),
        events: r
            .events()
            .iter()
            .map(|e| LeanEvent {
                kind: e.event_type() as i32,
                kv: e.kv().map(|kv| LeanKv {
                    key: Bytes::copy_from_slice(kv.key()),
                    mod_revision: kv.mod_revision(),
                    value: Bytes::copy_from_slice(kv.value()),
                }),
            })
            .collect(),
    }
}

/// Opens a stream on `conn` and sends `n` creates for `[prefix, end)`.
async fn open_stream(
    conn: StreamConn,
    n: usize,
    prefix: &[u8],
    end: &[u8],
) -> anyhow::Result<Source> {
    match conn {
        StreamConn::Lean(ch) => {
            // Every create request is queued before the call: a server may
            // send the response headers only with the first response.
            let (tx, rx) = mpsc::channel(n + 1);
            for _ in 0..n {
                let req = WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(
                        WatchCreateRequest {
                            key: prefix.to_vec(),
                            range_end: end.to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                tx.try_send(req).expect("channel sized for every create");
            }
            let mut grpc = tonic::client::Grpc::new(ch);
            grpc.ready()
                .await
                .map_err(|e| anyhow::anyhow!("not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<WatchRequest, LeanWatchResponse>::default();
            let resp = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                    codec,
                )
                .await
                .map_err(|s| anyhow::anyhow!("watch: {:?}: {}", s.code(), s.message()))?;
            Ok(Source::Lean {
                responses: resp.into_inner(),
                _requests: tx,
            })
        }
        StreamConn::EtcdClient(client) => {
            let opts = || Some(etcd_client::WatchOptions::new().with_range(end.to_vec()));
            let mut ws = client
                .watch_client()
                .watch(prefix.to_vec(), opts())
                .await
                .context("etcd-client: watch")?;
            for _ in 1..n {
                ws.watch(prefix.to_vec(), opts())
                    .await
                    .context("etcd-client: watch")?;
            }
            Ok(Source::EtcdClient(ws))
        }
    }
}

/// One watch stream carrying `n` watchers, from creation to the drain.
async fn stream_task(
    conn: StreamConn,
    n: usize,
    ctx: Arc<StreamCtx>,
    created: oneshot::Sender<anyhow::Result<()>>,
    mut finish: signal::Receiver<Option<Finish>>,
) -> StreamResult {
    let mut res = StreamResult {
        watchers: (0..n).map(|_| Watcher::default()).collect(),
        delivery: Latencies::new(),
        e2e: Latencies::new(),
        errors: 0,
        first_error: None,
    };
    let mut created = Some(created);
    let err = |res: &mut StreamResult, msg: String| {
        res.errors += 1;
        res.first_error.get_or_insert(msg);
    };
    let end = {
        let mut end = ctx.prefix.clone();
        *end.last_mut().expect("non-empty prefix") += 1;
        end
    };
    let call = open_stream(conn, n, &ctx.prefix, &end);
    let mut stream = match tokio::time::timeout_at(ctx.create_deadline.into(), call).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = created.take().map(|c| c.send(Err(e)));
            return res;
        }
        Err(_) => {
            let _ = created
                .take()
                .map(|c| c.send(Err(anyhow::anyhow!("opening a watch stream timed out"))));
            return res;
        }
    };
    // Creation: the server answers creates in order with its watch ids.
    let mut ids: HashMap<i64, usize> = HashMap::with_capacity(n);
    while ids.len() < n {
        let msg = tokio::time::timeout_at(ctx.create_deadline.into(), stream.message()).await;
        let r = match msg {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => {
                let _ = created.take().map(|c| {
                    c.send(Err(anyhow::anyhow!(
                        "watch stream closed while creating watchers"
                    )))
                });
                return res;
            }
            Ok(Err(e)) => {
                let _ = created
                    .take()
                    .map(|c| c.send(Err(anyhow::anyhow!("creating watchers: {e}"))));
                return res;
            }
            Err(_) => {
                let _ = created.take().map(|c| {
                    c.send(Err(anyhow::anyhow!(
                        "creating watchers timed out ({} of {n} created on a stream)",
                        ids.len()
                    )))
                });
                return res;
            }
        };
        if r.created && !r.canceled {
            let i = ids.len();
            ids.insert(r.watch_id, i);
        } else if r.canceled {
            let _ = created.take().map(|c| {
                c.send(Err(anyhow::anyhow!(
                    "watch create refused: {}",
                    r.cancel_reason
                )))
            });
            return res;
        }
    }
    let _ = created.take().map(|c| c.send(Ok(())));

    // Events, until every watcher has every acknowledged put or the drain ends.
    let prefix_len = ctx.prefix.len();
    let mut fin: Option<Finish> = None;
    let mut caught_up = 0usize;
    loop {
        if fin.is_none() {
            if let Some(f) = *finish.borrow() {
                fin = Some(f);
                caught_up = res
                    .watchers
                    .iter()
                    .filter(|w| w.distinct >= f.acked)
                    .count();
            }
        }
        if fin.is_some() && caught_up == n {
            break;
        }
        let deadline = fin.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |f| f.deadline,
        );
        let r = tokio::select! {
            m = stream.message() => m,
            changed = finish.changed(), if fin.is_none() => {
                if changed.is_err() {
                    // The run was abandoned.
                    break;
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline.into()) => break,
        };
        let r = match r {
            Ok(Some(r)) => r,
            Ok(None) => {
                err(&mut res, "watch stream closed by the server".into());
                break;
            }
            Err(e) => {
                err(&mut res, format!("watch stream: {e}"));
                break;
            }
        };
        let now = nanos_since(ctx.start);
        let Some(&wi) = ids.get(&r.watch_id) else {
            err(
                &mut res,
                format!("response for unknown watch id {}", r.watch_id),
            );
            continue;
        };
        if r.canceled {
            res.watchers[wi].canceled = true;
            err(
                &mut res,
                format!(
                    "watcher canceled: {} (compact revision {})",
                    r.cancel_reason, r.compact_revision
                ),
            );
            continue;
        }
        ctx.events
            .fetch_add(r.events.len() as u64, Ordering::Relaxed);
        for ev in r.events {
            let Some(kv) = ev.kv else {
                err(&mut res, "event without kv".into());
                continue;
            };
            let slot = kv
                .key
                .get(prefix_len..)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse::<u64>().ok());
            let Some(slot) = slot else {
                err(
                    &mut res,
                    format!(
                        "event on a foreign key {:?}",
                        String::from_utf8_lossy(&kv.key)
                    ),
                );
                continue;
            };
            let w = &mut res.watchers[wi];
            if w.record(slot, kv.mod_revision) {
                if let Some(f) = fin {
                    if w.distinct == f.acked {
                        caught_up += 1;
                    }
                }
                let ack = ctx
                    .acks
                    .get(slot as usize)
                    .map_or(0, |a| a.at.load(Ordering::Relaxed));
                res.delivery.record_micros(if ack == 0 {
                    0
                } else {
                    now.saturating_sub(ack - 1) / 1000
                });
                let sent = kv
                    .value
                    .get(..20)
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse::<u64>().ok());
                match sent {
                    Some(sent) => res.e2e.record_micros(now.saturating_sub(sent) / 1000),
                    None => err(&mut res, "event value without a send timestamp".into()),
                }
            }
        }
    }
    drop(stream);
    res
}

/// Stream tasks are aborted if the run ends early (an error while creating).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<StreamResult>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Summed `VmRSS` of `pids`, in bytes.
pub fn rss_bytes(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| {
            format!("--server-pids: reading {path} (is process {pid} running on this machine?)")
        })?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS in {path}"))?;
        total += kb * 1024;
    }
    Ok(total)
}

pub async fn run(cfg: &Config, w: &WatchConfig) -> anyhow::Result<Report> {
    let start = Instant::now();
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("{}watch-{run_id:x}/", cfg.prefix);
    let width = cfg.key_size.saturating_sub(prefix.len()).max(SLOT_DIGITS);
    let max = max_puts(cfg);
    let acks: Arc<Vec<Ack>> = Arc::new((0..max).map(|_| Ack::default()).collect());
    let conns: Vec<StreamConn> = match cfg.client {
        ClientLibrary::Lean => conn::connect_all(cfg)
            .await?
            .into_iter()
            .map(StreamConn::Lean)
            .collect(),
        ClientLibrary::EtcdClient => conn::connect_all_etcd_client(cfg)
            .await?
            .into_iter()
            .map(|c| StreamConn::EtcdClient(Box::new(c)))
            .collect(),
    };

    if !w.server_pids.is_empty() {
        // Check the pids before any work.
        rss_bytes(&w.server_pids)?;
    }
    let rss_before = if w.server_pids.is_empty() {
        None
    } else {
        Some(rss_bytes(&w.server_pids)?)
    };

    let ctx = Arc::new(StreamCtx {
        prefix: prefix.clone().into_bytes(),
        start,
        acks: acks.clone(),
        create_deadline: Instant::now() + w.create_timeout,
        events: AtomicU64::new(0),
    });
    let (finish_tx, finish_rx) = signal::channel(None);
    let mut streams = AbortOnDrop(Vec::with_capacity(w.streams));
    let mut created = Vec::with_capacity(w.streams);
    let t_create = Instant::now();
    for s in 0..w.streams {
        // Watchers round-robin over streams: stream s gets these many.
        let n = w.watchers / w.streams + usize::from(s < w.watchers % w.streams);
        let (ctx_tx, ctx_rx) = oneshot::channel();
        created.push(ctx_rx);
        streams.0.push(tokio::spawn(stream_task(
            conns[s % conns.len()].clone(),
            n,
            ctx.clone(),
            ctx_tx,
            finish_rx.clone(),
        )));
    }
    for c in created {
        match c.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context(format!("creating {} watchers", w.watchers))),
            Err(_) => bail!("a watch stream task ended while creating watchers"),
        }
    }
    let create_s = t_create.elapsed().as_secs_f64();
    if cfg.progress {
        eprintln!(
            "watch: {} watchers on {} streams created in {create_s:.2}s under {prefix:?}",
            w.watchers, w.streams
        );
    }
    let rss_after = match rss_before {
        Some(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(rss_bytes(&w.server_pids)?)
        }
        None => None,
    };
    let rss_peaks = Arc::new(parking_lot::Mutex::new(vec![0u64; w.server_pids.len()]));
    let sampler = (!w.server_pids.is_empty()).then(|| {
        let (pids, peaks) = (w.server_pids.clone(), rss_peaks.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                for (i, pid) in pids.iter().enumerate() {
                    if let Ok(rss) = rss_bytes(&[*pid]) {
                        let mut p = peaks.lock();
                        p[i] = p[i].max(rss);
                    }
                }
            }
        })
    });

    // The writers, on lean connections of their own (`--client` picks the
    // watchers' library).
    let writer_conns: Vec<KvConn> = conn::connect_all_unary(cfg)
        .await?
        .into_iter()
        .map(KvConn::Lean)
        .collect();
    let shared = Arc::new(Shared::default());
    let bounds = Arc::new(Bounds::new(cfg, max));
    let writer: Arc<dyn Request> = Arc::new(Writer {
        keys: Keys::new(&prefix, width),
        val_size: cfg.val_size,
        start,
        acks: acks.clone(),
    });
    let events_ctx = ctx.clone();
    let (latency, write_elapsed) = load::drive(
        cfg,
        "watch".into(),
        &writer_conns,
        writer,
        bounds,
        shared.clone(),
        Some(Arc::new(move || {
            format!("  events {}", events_ctx.events.load(Ordering::Relaxed))
        })),
    )
    .await?;

    // The drain.
    let acked = acks.iter().filter(|a| a.acked()).count() as u64;
    let drain_start = Instant::now();
    let _ = finish_tx.send(Some(Finish {
        acked,
        deadline: drain_start + w.drain_timeout,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let drain_progress = cfg.progress.then(|| {
        let (ctx, stop, expected) = (ctx.clone(), stop.clone(), acked * w.watchers as u64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                (Instant::now() + Duration::from_secs(1)).into(),
                Duration::from_secs(1),
            );
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                eprintln!(
                    "watch draining {:5.1}s  events {} of {expected}",
                    drain_start.elapsed().as_secs_f64(),
                    ctx.events.load(Ordering::Relaxed)
                );
            }
        })
    });
    let mut results = Vec::with_capacity(streams.0.len());
    for s in streams.0.iter_mut() {
        results.push(s.await.context("watch stream task panicked")?);
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = drain_progress {
        p.abort();
    }
    if let Some(s) = sampler {
        s.abort();
    }
    let drain_s = drain_start.elapsed().as_secs_f64();

    // The verdict.
    // (slot, revision) of every acknowledged put.
    let acked_slots: Vec<(u64, i64)> = (0..max)
        .filter(|&s| acks[s as usize].acked())
        .map(|s| (s, acks[s as usize].rev.load(Ordering::Relaxed)))
        .collect();
    let (mut received, mut missed, mut duplicated, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    let mut skipped = 0u64;
    let (mut lagging, mut canceled, mut watch_errors) = (0u64, 0u64, 0u64);
    let mut delivery = Latencies::new();
    let mut e2e = Latencies::new();
    let mut first_error = shared.first_error();
    for r in &results {
        delivery.merge(&r.delivery);
        e2e.merge(&r.e2e);
        watch_errors += r.errors;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
        for wt in &r.watchers {
            received += wt.received;
            duplicated += wt.duplicated;
            out_of_order += wt.out_of_order;
            canceled += u64::from(wt.canceled);
            for &(slot, rev) in &acked_slots {
                if !wt.has(slot) {
                    missed += 1;
                    // Older than an event the watcher did get: skipped, not late.
                    skipped += u64::from(rev < wt.last_rev);
                }
            }
            lagging += u64::from(wt.distinct < acked);
        }
    }
    let mut extra = serde_json::Map::new();
    extra.insert("rate".into(), json!(cfg.rate));
    extra.insert("val_size".into(), json!(cfg.val_size));
    extra.insert("watchers".into(), json!(w.watchers));
    extra.insert("watch_streams".into(), json!(w.streams));
    extra.insert(
        "create_s".into(),
        json!((create_s * 1000.0).round() / 1000.0),
    );
    extra.insert("events_expected".into(), json!(acked * w.watchers as u64));
    extra.insert("events_received".into(), json!(received));
    extra.insert("missed".into(), json!(missed));
    extra.insert("missed_skipped".into(), json!(skipped));
    extra.insert("missed_late".into(), json!(missed - skipped));
    extra.insert("duplicated".into(), json!(duplicated));
    extra.insert("out_of_order".into(), json!(out_of_order));
    extra.insert("watchers_missing_events".into(), json!(lagging));
    extra.insert("watchers_canceled".into(), json!(canceled));
    extra.insert("watch_errors".into(), json!(watch_errors));
    extra.insert("drain_s".into(), json!((drain_s * 1000.0).round() / 1000.0));
    delivery.write_percentiles("delivery_", &mut extra);
    e2e.write_percentiles("e2e_", &mut extra);
    let per_watcher = match (rss_before, rss_after) {
        (Some(b), Some(a)) => json!((a as i64 - b as i64) / w.watchers as i64),
        _ => serde_json::Value::Null,
    };
    extra.insert("bytes_per_watcher".into(), per_watcher);
    extra.insert("rss_before_bytes".into(), json!(rss_before));
    extra.insert("rss_after_bytes".into(), json!(rss_after));
    if !w.server_pids.is_empty() {
        let peaks = rss_peaks.lock().clone();
        extra.insert(
            "rss_peak_max_bytes".into(),
            json!(peaks.iter().max().copied()),
        );
        extra.insert("rss_peak_bytes".into(), json!(peaks));
    }
    extra.insert("client".into(), json!(cfg.client.name()));
    Ok(Report {
        kind: "watch".into(),
        endpoints: cfg.endpoints.clone(),
        clients: cfg.clients,
        conns: cfg.conns,
        requests: shared.ok.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed_s: write_elapsed.as_secs_f64(),
        latency,
        first_error,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_counts_duplicates_and_order() {
        let mut w = Watcher::default();
        assert!(w.record(0, 10));
        assert!(w.record(2, 12));
        assert!(w.record(1, 11)); // late: out of order
        assert!(!w.record(2, 12)); // duplicate
        assert!(w.record(200, 300));
        assert_eq!(
            (w.distinct, w.received, w.duplicated, w.out_of_order),
            (4, 5, 1, 1)
        );
        assert!(w.has(200) && w.has(1) && !w.has(3) && !w.has(100_000));
    }

    #[test]
    fn max_puts_bounds() {
        let cfg = Config {
            rate: 1000,
            duration: Duration::from_secs(10),
            ..Config::default()
        };
        assert_eq!(max_puts(&cfg), 10_001);
        let cfg = Config {
            total: Some(5),
            ..cfg
        };
        assert_eq!(max_puts(&cfg), 5);
    }

    #[test]
    fn rss_of_self() {
        assert!(rss_bytes(&[std::process::id()]).unwrap() > 0);
        assert!(rss_bytes(&[u32::MAX]).is_err());
    }
}
