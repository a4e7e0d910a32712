//! The closed-loop request driver: `clients` tasks share the connections
//! round-robin and take request slots from one counter. With a `rate`, slot
//! `k` is due at `start + k / rate`, and its latency is measured from that
//! due time (so a stalled server shows up as latency rather than as
//! requests silently not sent: no coordinated omission).

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::kv::{self, Guard, KvConn, Then};
use crate::report::{Latencies, Report};
use crate::{key_digits, Config, Consistency, KubeTxn, Workload};

/// A boxed request future: `Ok(true)` = succeeded but conflicted (txn).
pub(crate) type ReqFuture = Pin<Box<dyn Future<Output = Result<bool, tonic::Status>> + Send>>;

/// One kind of request. `slot` is the request's number in the run, `key`
/// the key number chosen for it.
pub(crate) trait Request: Send + Sync + 'static {
    fn call(&self, kv: KvConn, slot: u64, key: u64) -> ReqFuture;
}

/// Counters shared by the clients and the progress line.
#[derive(Default)]
pub(crate) struct Shared {
    issued: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub conflicts: AtomicU64,
    lat_sum_us: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// When and how many requests may be sent.
pub(crate) struct Bounds {
    pub start: Instant,
    pub deadline: Instant,
    pub total: u64,
    /// Time between slots; zero = unlimited rate.
    interval: Duration,
}

impl Bounds {
    pub fn new(cfg: &Config, total: u64) -> Bounds {
        let start = Instant::now();
        Bounds {
            start,
            deadline: start + cfg.duration,
            total,
            interval: if cfg.rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(1.0 / cfg.rate as f64)
            },
        }
    }

    pub fn paced(&self) -> bool {
        !self.interval.is_zero()
    }

    /// Claims the next slot and waits until it is due: `(slot, due time)`,
    /// or `None` once the run is over (total reached or past the deadline).
    async fn next(&self, shared: &Shared) -> Option<(u64, Instant)> {
        let k = shared.issued.fetch_add(1, Ordering::Relaxed);
        if k >= self.total {
            return None;
        }
        let due = if self.paced() {
            self.start + self.interval.mul_f64(k as f64)
        } else {
            Instant::now()
        };
        if due >= self.deadline {
            return None;
        }
        if self.paced() {
            tokio::time::sleep_until(due.into()).await;
        }
        // Slots that fell behind a slow server are not sent after the
        // deadline: the run ends on time, and the shortfall shows in ops/s.
        if Instant::now() >= self.deadline {
            return None;
        }
        Some((k, due))
    }
}

/// A tiny PRNG (splitmix64): uniform key choice without a shared RNG.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Fixed-width keys: the prefix, then the key number zero-padded.
#[derive(Clone)]
pub(crate) struct Keys {
    prefix: Vec<u8>,
    width: usize,
}

impl Keys {
    pub fn new(prefix: &str, width: usize) -> Keys {
        Keys {
            prefix: prefix.as_bytes().to_vec(),
            width,
        }
    }

    /// `key_size` bytes in total (validated: the number fits).
    pub fn sized(cfg: &Config) -> Keys {
        Keys::new(&cfg.prefix, cfg.key_size - cfg.prefix.len())
    }

    pub fn key(&self, n: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + self.width);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(format!("{n:0w$}", w = self.width).as_bytes());
        k
    }
}

struct Put {
    keys: Keys,
    values: Values,
}

impl Request for Put {
    fn call(&self, kv: KvConn, _slot: u64, key: u64) -> ReqFuture {
        let (k, v) = (self.keys.key(key), self.values.of(key));
        Box::pin(async move { kv.put(k, v).await.map(|_| false) })
    }
}

struct Range {
    keys: Keys,
    serializable: bool,
}

impl Request for Range {
    fn call(&self, kv: KvConn, _slot: u64, key: u64) -> ReqFuture {
        let (k, serializable) = (self.keys.key(key), self.serializable);
        Box::pin(async move { kv.get(k, None, 0, serializable).await.map(|_| false) })
    }
}

/// The apiserver's paged list: from the chosen key to the prefix's end.
struct List {
    keys: Keys,
    end: Vec<u8>,
    limit: i64,
    serializable: bool,
}

impl Request for List {
    fn call(&self, kv: KvConn, _slot: u64, key: u64) -> ReqFuture {
        let (k, end) = (self.keys.key(key), self.end.clone());
        let (limit, serializable) = (self.limit, self.serializable);
        Box::pin(async move {
            kv.get(k, Some(end), limit, serializable)
                .await
                .map(|_| false)
        })
    }
}

/// Read a key's mod_revision, then update it guarded by that revision.
struct Txn {
    keys: Keys,
    values: Values,
    serializable: bool,
}

impl Request for Txn {
    fn call(&self, kv: KvConn, _slot: u64, key: u64) -> ReqFuture {
        let value = self.values.of(key);
        let key = self.keys.key(key);
        let serializable = self.serializable;
        Box::pin(async move {
            let got = kv.get(key.clone(), None, 0, serializable).await?;
            let rev = got.mod_revision.unwrap_or(0);
            let done = kv
                .txn(key, Guard::ModRevision(rev), Then::Put(value))
                .await?;
            Ok(!done.succeeded)
        })
    }
}

/// The mod_revision each key was last seen at (0: absent), as the
/// apiserver's watch cache knows its objects'.
#[derive(Clone)]
struct Known(Arc<Vec<AtomicI64>>);

impl Known {
    fn new(keys: u64) -> Known {
        Known(Arc::new((0..keys).map(|_| AtomicI64::new(0)).collect()))
    }

    fn get(&self, key: u64) -> i64 {
        self.0[key as usize].load(Ordering::Relaxed)
    }

    /// Notes `revision` for `key`; nothing for a key not tracked (creates).
    fn set(&self, key: u64, revision: i64) {
        if let Some(slot) = self.0.get(key as usize) {
            slot.store(revision, Ordering::Relaxed);
        }
    }
}

/// [`KubeTxn`]: one transaction guarded as the apiserver guards it.
struct Kube {
    shape: KubeTxn,
    keys: Keys,
    values: Values,
    known: Known,
    key_space: u64,
}

impl Request for Kube {
    fn call(&self, kv: KvConn, slot: u64, key: u64) -> ReqFuture {
        let n = match self.shape {
            KubeTxn::Create | KubeTxn::Delete => slot % self.key_space,
            KubeTxn::Update => key,
        };
        let (guard, then) = match self.shape {
            KubeTxn::Create => (Guard::Absent, Then::Put(self.values.of(n))),
            KubeTxn::Update => (
                Guard::ModRevision(self.known.get(n)),
                Then::Put(self.values.of(n)),
            ),
            KubeTxn::Delete => (Guard::ModRevision(self.known.get(n)), Then::Delete),
        };
        let (k, known) = (self.keys.key(n), self.known.clone());
        let deletes = then == Then::Delete;
        Box::pin(async move {
            let done = kv.txn(k, guard, then).await?;
            let seen = match (done.succeeded, deletes) {
                (true, true) => 0,
                (true, false) => done.revision,
                (false, _) => done.current.unwrap_or(0),
            };
            known.set(n, seen);
            Ok(!done.succeeded)
        })
    }
}

/// What every client of one run shares.
struct Client {
    req: Arc<dyn Request>,
    bounds: Arc<Bounds>,
    shared: Arc<Shared>,
    key_space: u64,
    sequential: bool,
    timeout: Duration,
    timeline: Option<Arc<Timeline>>,
}

/// One client (number `index`): takes slots until the run is over.
async fn client_loop(kv: KvConn, c: Arc<Client>, index: usize, seed: u64) -> Latencies {
    let Client {
        req,
        bounds,
        shared,
        key_space,
        sequential,
        timeout,
        timeline,
    } = &*c;
    let (key_space, sequential, timeout) = (*key_space, *sequential, *timeout);
    let mut lat = Latencies::new();
    let mut rng = Rng::new(seed);
    while let Some((slot, due)) = bounds.next(shared).await {
        let key = if sequential {
            slot % key_space
        } else {
            rng.next_u64() % key_space
        };
        let t0 = if bounds.paced() { due } else { Instant::now() };
        let res = tokio::time::timeout(timeout, req.call(kv.clone(), slot, key)).await;
        let took = t0.elapsed();
        match res {
            Ok(Ok(conflict)) => {
                lat.record(took);
                if let Some(timeline) = timeline {
                    timeline.record(index, took);
                }
                shared.ok.fetch_add(1, Ordering::Relaxed);
                shared
                    .lat_sum_us
                    .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                if conflict {
                    shared.conflicts.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(status)) => {
                shared.error(format!("{:?}: {}", status.code(), status.message()));
                // Don't spin on a failing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => shared.error(format!("timed out after {timeout:?}")),
        }
    }
    lat
}

/// Prints `label  3.0s  ok N  errors N  N/s  mean N ms` on stderr once a
/// second until `stop` is set.
pub(crate) fn spawn_progress(
    label: String,
    shared: Arc<Shared>,
    start: Instant,
    stop: Arc<AtomicBool>,
    extra: Option<Arc<dyn Fn() -> String + Send + Sync>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            (Instant::now() + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        let (mut last_ok, mut last_sum, mut last_t) = (0u64, 0u64, Instant::now());
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let ok = shared.ok.load(Ordering::Relaxed);
            let sum = shared.lat_sum_us.load(Ordering::Relaxed);
            let now = Instant::now();
            let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
            let n = ok - last_ok;
            let mean = if n > 0 {
                (sum - last_sum) as f64 / n as f64 / 1000.0
            } else {
                0.0
            };
            let more = extra.as_ref().map(|f| f()).unwrap_or_default();
            eprintln!(
                "{label} {:6.1}s  ok {ok}  errors {}  {:.0}/s  mean {mean:.2} ms{more}",
                now.duration_since(start).as_secs_f64(),
                shared.errors.load(Ordering::Relaxed),
                n as f64 / dt,
            );
            (last_ok, last_sum, last_t) = (ok, sum, now);
        }
    })
}

/// Per-second samples of a run (`--timeline FILE`): requests that succeeded
/// in each second, their latency percentiles and the errors, one CSV line a
/// second, written as it goes so a run cut short keeps its samples.
///
/// Clients record into shards (client `i` into shard `i % shards`), so a
/// thousand clients do not queue on one lock; the sampler swaps every shard
/// for an empty histogram once a second and merges what it took.
pub(crate) struct Timeline {
    shards: Vec<parking_lot::Mutex<Latencies>>,
    /// The file and the end of the last sample, taken together.
    out: parking_lot::Mutex<TimelineOut>,
    start: Instant,
}

struct TimelineOut {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    last_t: Instant,
    last_errors: u64,
}

impl Timeline {
    /// Most shards, whatever the number of clients.
    const SHARDS: usize = 16;
    /// The shortest sample written.
    const SHORTEST: Duration = Duration::from_millis(500);
    /// The CSV header.
    pub(crate) const HEADER: &'static str = "t_s,ops_per_s,p50_ms,p99_ms,max_ms,errors";

    /// Creates `path` (so a bad path fails before the run) and writes the header.
    fn create(path: &Path, clients: usize, start: Instant) -> anyhow::Result<Timeline> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--timeline {}", path.display()))?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "{}", Self::HEADER)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Timeline {
            shards: (0..clients.clamp(1, Self::SHARDS))
                .map(|_| parking_lot::Mutex::new(Latencies::new()))
                .collect(),
            out: parking_lot::Mutex::new(TimelineOut {
                path: path.to_path_buf(),
                file,
                last_t: start,
                last_errors: 0,
            }),
            start,
        })
    }

    fn record(&self, client: usize, took: Duration) {
        self.shards[client % self.shards.len()].lock().record(took);
    }

    /// Takes one sample: the requests since the last one. A run's tail
    /// shorter than [`Self::SHORTEST`] is left out: too short to be a rate.
    fn sample(&self, shared: &Shared) -> anyhow::Result<()> {
        let mut out = self.out.lock();
        let now = Instant::now();
        let dt = now.duration_since(out.last_t).as_secs_f64();
        if dt < Self::SHORTEST.as_secs_f64() {
            return Ok(());
        }
        let mut lat = Latencies::new();
        for shard in &self.shards {
            lat.merge(&std::mem::take(&mut *shard.lock()));
        }
        let errors = shared.errors.load(Ordering::Relaxed);
        let line = format!(
            "{:.3},{:.1},{:.3},{:.3},{:.3},{}",
            now.duration_since(self.start).as_secs_f64(),
            lat.count() as f64 / dt,
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99),
            lat.max_ms(),
            errors - out.last_errors,
        );
        out.last_t = now;
        out.last_errors = errors;
        let TimelineOut { path, file, .. } = &mut *out;
        writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Samples once a second until aborted; a write error ends the sampling
    /// (and is reported by the final sample).
    fn spawn_sampler(timeline: Arc<Timeline>, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                (timeline.start + Duration::from_secs(1)).into(),
                Duration::from_secs(1),
            );
            loop {
                tick.tick().await;
                if timeline.sample(&shared).is_err() {
                    return;
                }
            }
        })
    }
}

/// Runs `clients` client loops of `req` over `conns` until `bounds` end;
/// returns the merged latencies and the elapsed time.
pub(crate) async fn drive(
    cfg: &Config,
    label: String,
    conns: &[KvConn],
    req: Arc<dyn Request>,
    bounds: Arc<Bounds>,
    shared: Arc<Shared>,
    extra_progress: Option<Arc<dyn Fn() -> String + Send + Sync>>,
) -> anyhow::Result<(Latencies, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let progress = cfg.progress.then(|| {
        spawn_progress(
            label,
            shared.clone(),
            bounds.start,
            stop.clone(),
            extra_progress,
        )
    });
    let mut seed = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64),
    );
    let timeline = match &cfg.timeline {
        Some(path) => Some(Arc::new(Timeline::create(path, cfg.clients, bounds.start)?)),
        None => None,
    };
    let sampler = timeline
        .clone()
        .map(|t| Timeline::spawn_sampler(t, shared.clone()));
    let client = Arc::new(Client {
        req,
        bounds: bounds.clone(),
        shared,
        key_space: cfg.key_space,
        sequential: cfg.sequential_keys,
        timeout: cfg.timeout,
        timeline,
    });
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|i| {
            tokio::spawn(client_loop(
                conns[i % conns.len()].clone(),
                client.clone(),
                i,
                seed.next_u64(),
            ))
        })
        .collect();
    let mut lat = Latencies::new();
    for t in tasks {
        lat.merge(&t.await.context("client task panicked")?);
    }
    let elapsed = bounds.start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    if let (Some(timeline), Some(sampler)) = (&client.timeline, sampler) {
        sampler.abort();
        // The last, partial second.
        timeline.sample(&client.shared)?;
    }
    Ok((lat, elapsed))
}

/// Puts every key of the key space once (for the workloads that read or
/// change existing keys), 64 at a time, noting each key's revision.
async fn prefill(
    cfg: &Config,
    conns: &[KvConn],
    keys: &Keys,
    values: &Values,
    known: &Known,
) -> anyhow::Result<()> {
    if cfg.progress {
        eprintln!("prefilling {} keys under {:?}", cfg.key_space, cfg.prefix);
    }
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64.min(cfg.key_space as usize))
        .map(|i| {
            let kv = conns[i % conns.len()].clone();
            let (next, keys, values, known) =
                (next.clone(), keys.clone(), values.clone(), known.clone());
            let (n, timeout) = (cfg.key_space, cfg.timeout);
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        return Ok(());
                    }
                    match tokio::time::timeout(timeout, kv.put(keys.key(k), values.of(k))).await {
                        Ok(Ok(revision)) => known.set(k, revision),
                        Ok(Err(s)) => bail!("prefill put: {:?}: {}", s.code(), s.message()),
                        Err(_) => bail!("prefill put: timed out after {timeout:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.context("prefill task panicked")??;
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (etcd's
/// `--prefix` range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the key space.
    vec![0]
}

pub(crate) fn value_of(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The value written for each key: one repeated `abc…z` value (which
/// storage engines compress ~20×), or with `random_values` one of a pool of
/// pseudo-random values, different for neighbouring keys, which no
/// compressor can shrink.
#[derive(Clone)]
pub(crate) struct Values(Arc<Vec<Vec<u8>>>);

impl Values {
    /// Distinct random values in the pool: keys that share a value are
    /// 4096 apart, never in one storage block.
    const POOL: usize = 4096;

    pub(crate) fn new(cfg: &Config) -> Values {
        if !cfg.random_values {
            return Values(Arc::new(vec![value_of(cfg.val_size)]));
        }
        // SplitMix64: deterministic, so runs write the same bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let pool = (0..Self::POOL)
            .map(|_| {
                let mut v: Vec<u8> = (0..cfg.val_size.div_ceil(8))
                    .flat_map(|_| next().to_le_bytes())
                    .collect();
                v.truncate(cfg.val_size);
                v
            })
            .collect();
        Values(Arc::new(pool))
    }

    /// The value for key number `key`.
    pub(crate) fn of(&self, key: u64) -> Vec<u8> {
        self.0[(key % self.0.len() as u64) as usize].clone()
    }
}

/// Every workload but watch.
pub async fn run(cfg: &Config, workload: &Workload) -> anyhow::Result<Report> {
    let conns = kv::connect_all(cfg).await?;
    let keys = Keys::sized(cfg);
    debug_assert!(keys.width >= key_digits(cfg.key_space));
    let values = Values::new(cfg);
    let mut extra = serde_json::Map::new();
    extra.insert("rate".into(), json!(cfg.rate));
    extra.insert("key_size".into(), json!(cfg.key_size));
    extra.insert("val_size".into(), json!(cfg.val_size));
    extra.insert("key_space".into(), json!(cfg.key_space));
    extra.insert("sequential_keys".into(), json!(cfg.sequential_keys));
    extra.insert("random_values".into(), json!(cfg.random_values));
    extra.insert("client".into(), json!(cfg.client.name()));
    // The revisions the updates and deletes guard on (a create guards on
    // absence and needs none).
    let known = Known::new(if workload.prefills() {
        cfg.key_space
    } else {
        0
    });
    if workload.prefills() {
        prefill(cfg, &conns, &keys, &values, &known).await?;
    }
    let mut total = cfg.total.unwrap_or(u64::MAX);
    let req: Arc<dyn Request> = match *workload {
        Workload::Put => Arc::new(Put { keys, values }),
        Workload::Range(c) => {
            extra.insert("consistency".into(), json!(c.letter()));
            Arc::new(Range {
                keys,
                serializable: c.serializable(),
            })
        }
        Workload::List { consistency, limit } => {
            extra.insert("consistency".into(), json!(consistency.letter()));
            extra.insert("limit".into(), json!(limit));
            let end = prefix_end(cfg.prefix.as_bytes());
            Arc::new(List {
                keys,
                end,
                limit,
                serializable: consistency.serializable(),
            })
        }
        Workload::Txn(c) => {
            extra.insert("consistency".into(), json!(c.letter()));
            Arc::new(Txn {
                keys,
                values,
                serializable: c == Consistency::Serializable,
            })
        }
        Workload::Kube(shape) => {
            if shape == KubeTxn::Delete {
                // Each key is deleted once.
                total = total.min(cfg.key_space);
            }
            Arc::new(Kube {
                shape,
                keys,
                values,
                known,
                key_space: cfg.key_space,
            })
        }
        Workload::Watch(_) => unreachable!("watch runs in crate::watch"),
    };
    let shared = Arc::new(Shared::default());
    let bounds = Arc::new(Bounds::new(cfg, total));
    let (latency, elapsed) = drive(
        cfg,
        workload.name().to_string(),
        &conns,
        req,
        bounds,
        shared.clone(),
        None,
    )
    .await?;
    if matches!(workload, Workload::Txn(_) | Workload::Kube(_)) {
        extra.insert(
            "txn_conflicts".into(),
            json!(shared.conflicts.load(Ordering::Relaxed)),
        );
    }
    Ok(Report {
        kind: workload.name().to_string(),
        endpoints: cfg.endpoints.clone(),
        clients: cfg.clients,
        conns: cfg.conns,
        requests: shared.ok.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed_s: elapsed.as_secs_f64(),
        latency,
        first_error: shared.first_error(),
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width() {
        let k = Keys::new("bench/", 5);
        assert_eq!(k.key(42), b"bench/00042".to_vec());
        assert_eq!(k.key(99_999).len(), 11);
    }

    #[test]
    fn rng_spreads() {
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..200 {
            seen[(r.next_u64() % 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bounds_pace_and_stop() {
        let cfg = Config {
            rate: 1000,
            duration: Duration::from_millis(100),
            ..Config::default()
        };
        let b = Bounds::new(&cfg, u64::MAX);
        let shared = Shared::default();
        let mut n = 0;
        while let Some((k, _)) = b.next(&shared).await {
            assert_eq!(k, n);
            n += 1;
        }
        // 100 slots are due before the deadline; a late timer may cost the last ones.
        assert!((90..=100).contains(&n), "{n}");
        assert!(b.start.elapsed() < Duration::from_millis(150));

        // A client far behind its slots stops at the deadline all the same.
        let cfg = Config {
            rate: 1000,
            duration: Duration::from_millis(50),
            ..Config::default()
        };
        let b = Bounds::new(&cfg, u64::MAX);
        let shared = Shared::default();
        let mut n = 0;
        while b.next(&shared).await.is_some() {
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(n <= 4, "{n}");
        let b = Bounds::new(&Config::default(), 3);
        let shared = Shared::default();
        let mut n = 0;
        while b.next(&shared).await.is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn timeline_writes_a_line_per_sample_and_refuses_a_bad_path() {
        let dir = std::env::temp_dir().join(format!("ballast-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.csv");
        let start = Instant::now() - Duration::from_secs(1);
        let t = Timeline::create(&path, 40, start).unwrap();
        assert_eq!(t.shards.len(), Timeline::SHARDS);
        let shared = Shared::default();
        for i in 0..100 {
            t.record(i, Duration::from_millis(if i < 98 { 1 } else { 50 }));
        }
        shared.error("boom".into());
        t.sample(&shared).unwrap();
        // Too soon for a sample; then one of zero requests, no new error.
        t.sample(&shared).unwrap();
        std::thread::sleep(Timeline::SHORTEST);
        t.sample(&shared).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], Timeline::HEADER);
        assert_eq!(lines.len(), 3, "{text}");
        let first: Vec<f64> = lines[1].split(',').map(|f| f.parse().unwrap()).collect();
        assert!(first[0] >= 1.0, "{text}");
        assert!(
            (80.0..=100.0).contains(&first[1]),
            "about 100 requests in ~1 s: {text}"
        );
        assert!(
            first[2] < 2.0 && first[3] > 40.0,
            "p50 1 ms, p99 50 ms: {text}"
        );
        assert_eq!(first[5], 1.0);
        assert!(lines[2].ends_with(",0.0,0.000,0.000,0.000,0"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);

        let err = Timeline::create(&dir.join("missing/run.csv"), 1, start)
            .err()
            .expect("no such directory");
        assert!(format!("{err:#}").starts_with("--timeline "), "{err:#}");
    }
}
