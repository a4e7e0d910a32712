//! One chaos run: three members on their own test hosts, clients writing,
//! reading, compare-and-setting and watching from the client host while a
//! seeded nemesis injects faults; then the histories are checked.
//!
//! Everything that talks gRPC runs on one thread that entered the client
//! namespace, on a current-thread tokio runtime (its sockets stay in that
//! namespace). The checks that need no network run afterwards.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::{
    compare, kv_client::KvClient, maintenance_client::MaintenanceClient, request_op,
    watch_client::WatchClient, watch_request, Compare, HashKvRequest, PutRequest, RangeRequest,
    RequestOp, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use ballast_proto::mvccpb::event::EventType;
use nix::sys::signal::Signal;
use tonic::transport::Channel;

use super::checker::{self, Call, Operation, Outcome, Value};
use super::hostile;
use super::members::{Members, CLIENT_PORT, PEER_PORT};
use super::net::{self, Block, TestNet};
use super::proxy::LinkFault;
use super::rng::Rng;

/// Every key of a run lives under this prefix.
pub const PREFIX: &str = "chaos/";

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Cut a member off from both peers (both directions, blackhole).
    Isolate,
    /// Cut one direction of one link (blackhole or prohibit on one side).
    Asymmetric,
    /// Cut one link both ways; both ends still reach the third member
    /// (a non-transitive partition).
    Bridge,
    /// SIGKILL a member, restart it later on its data.
    Kill,
    /// SIGSTOP a member, SIGCONT it later.
    Pause,
    /// 20–200 ms extra latency on a member's peer links (proxy).
    Delay,
    /// Stalls and connection resets on a member's peer links (proxy).
    Loss,
    /// Hostile requests and bytes at one member (see [`super::hostile`]).
    Hostile,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Isolate,
        FaultKind::Asymmetric,
        FaultKind::Bridge,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Delay,
        FaultKind::Loss,
        FaultKind::Hostile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Isolate => "isolate",
            FaultKind::Asymmetric => "asymmetric",
            FaultKind::Bridge => "bridge",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::Hostile => "hostile",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// How long clients run under faults.
    pub duration: Duration,
    pub clients: usize,
    pub keys: usize,
    pub watchers: usize,
    pub faults: Vec<FaultKind>,
    /// The `ballast` binary.
    pub bin: PathBuf,
}

impl ChaosConfig {
    /// Seed from `BALLAST_SEED` (else from the clock), duration from
    /// `BALLAST_CHAOS_SECS` (else `default_secs`), binary from
    /// `BALLAST_BIN` (else the workspace build next to the test).
    pub fn from_env(default_secs: u64) -> ChaosConfig {
        let seed = std::env::var("BALLAST_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    % 1_000_000_000
            });
        let secs = std::env::var("BALLAST_CHAOS_SECS")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default_secs);
        ChaosConfig {
            seed,
            duration: Duration::from_secs(secs),
            clients: 5,
            keys: 4,
            watchers: 2,
            faults: FaultKind::ALL.to_vec(),
            bin: std::env::var_os("BALLAST_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::cluster::workspace_bin("ballast")),
        }
    }
}

/// The summary of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration: Duration,
    pub faults: BTreeMap<&'static str, u32>,
    /// Faults aimed at the member that was leader when injected.
    pub leader_faults: u32,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    /// Operations that entered the linearizability search.
    pub ops_checked: usize,
    pub acked_writes: usize,
    pub watch_events_checked: usize,
    pub watch_reconnects: usize,
    pub final_revision: i64,
    pub proxy_connections: u64,
    pub proxy_stalls: u64,
    pub proxy_resets: u64,
    /// Time the linearizability search took (seconds).
    pub check_secs: f64,
    pub inconclusive_keys: Vec<String>,
    pub anomalies: Vec<String>,
    pub log: Vec<String>,
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos summary: seed {} (replay: BALLAST_SEED={}), {:?} of faults",
            self.seed, self.seed, self.duration
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "  faults injected: {} (total {}, {} aimed at the leader)",
            faults.join(" "),
            self.faults.values().sum::<u32>(),
            self.leader_faults
        )?;
        writeln!(
            f,
            "  operations: {} ok, {} unknown outcome; {} checked for linearizability in {:.1}s; \
             {} acknowledged writes found in the log",
            self.ops_ok, self.ops_unknown, self.ops_checked, self.check_secs, self.acked_writes
        )?;
        writeln!(
            f,
            "  watch: {} events checked, {} reconnects; final revision {}",
            self.watch_events_checked, self.watch_reconnects, self.final_revision
        )?;
        writeln!(
            f,
            "  proxy: {} peer connections, {} injected stalls, {} injected resets",
            self.proxy_connections, self.proxy_stalls, self.proxy_resets
        )?;
        if !self.inconclusive_keys.is_empty() {
            writeln!(
                f,
                "  inconclusive keys (search budget): {:?}",
                self.inconclusive_keys
            )?;
        }
        writeln!(f, "  anomalies: {}", self.anomalies.len())?;
        for a in &self.anomalies {
            writeln!(f, "    - {a}")?;
        }
        Ok(())
    }
}

/// An acknowledged write: `value` was put on `key` at `revision`.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: Value,
    revision: i64,
}

/// One watch event as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    revision: i64,
    key: String,
    value: Vec<u8>,
    delete: bool,
}

/// Everything the client thread brings back.
#[derive(Debug, Default)]
struct Observed {
    history: Vec<Operation>,
    acks: Vec<Ack>,
    watches: Vec<(Vec<Ev>, usize, bool)>,
    full_log: Vec<Ev>,
    final_revision: i64,
    faults: BTreeMap<&'static str, u32>,
    leader_faults: u32,
    anomalies: Vec<String>,
    log: Vec<String>,
}

/// Runs one chaos run. Panics with a clear message when the machine cannot
/// run it (not root, no `ip netns`, no binary); anomalies are returned in
/// the report, not panicked on.
pub fn run(cfg: &ChaosConfig) -> ChaosReport {
    if let Err(e) = net::preflight() {
        panic!("chaos suite cannot run: {e}");
    }
    assert!(
        cfg.bin.exists(),
        "chaos suite: no ballast binary at {} (build it: `cargo build --release -p ballast --bin ballast`, \
         or set BALLAST_BIN)",
        cfg.bin.display()
    );
    eprintln!(
        "chaos: seed {} (replay with BALLAST_SEED={}), {:?}",
        cfg.seed, cfg.seed, cfg.duration
    );
    let net = Arc::new(TestNet::create(3).unwrap_or_else(|e| panic!("create test hosts: {e}")));
    let members = Members::start(&net, cfg.bin.clone(), cfg.seed)
        .unwrap_or_else(|e| panic!("start members: {e}"));
    let members = Arc::new(Mutex::new(members));
    let urls: Vec<String> = {
        let m = lock(&members);
        (0..m.len()).map(|i| m.client_url(i)).collect()
    };

    let client_ns = net.client.ns.clone();
    let thread_cfg = cfg.clone();
    let (m2, n2) = (members.clone(), net.clone());
    let observed = std::thread::Builder::new()
        .name("chaos-clients".into())
        .spawn(move || {
            net::enter(&client_ns).unwrap_or_else(|e| panic!("enter {client_ns}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(drive(thread_cfg, urls, m2, n2))
        })
        .expect("spawn the client thread")
        .join();
    let observed = match observed {
        Ok(o) => o,
        Err(p) => {
            let tails = lock(&members).log_tails(30);
            eprintln!("{tails}");
            std::panic::resume_unwind(p)
        }
    };
    let (connections, stalls, resets) = lock(&members).proxy_totals();
    let mut report = analyse(cfg, observed);
    report.proxy_connections = connections;
    report.proxy_stalls = stalls;
    report.proxy_resets = resets;
    if !report.anomalies.is_empty() {
        eprintln!("{}", lock(&members).log_tails(20));
    }
    report
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("member url")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
}

fn key_name(i: usize) -> String {
    format!("{PREFIX}k{i}")
}

fn prefix_end() -> Vec<u8> {
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// The client thread's whole job: wait for the cluster, run clients,
/// watchers and the nemesis, heal, converge, collect the final state.
async fn drive(
    cfg: ChaosConfig,
    urls: Vec<String>,
    members: Arc<Mutex<Members>>,
    net: Arc<TestNet>,
) -> Observed {
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let say = {
        let log = log.clone();
        move |msg: String| {
            let line = format!("[{:7.2}s] {msg}", start.elapsed().as_secs_f64());
            eprintln!("chaos: {line}");
            lock(&log).push(line);
        }
    };
    let channels: Vec<Channel> = urls.iter().map(|u| channel(u)).collect();

    // 1. The cluster is up when a put goes through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ok = false;
        for ch in &channels {
            let put = PutRequest {
                key: format!("{PREFIX}ready").into_bytes(),
                value: b"1".to_vec(),
                ..Default::default()
            };
            if let Ok(Ok(_)) =
                tokio::time::timeout(OP_TIMEOUT, KvClient::new(ch.clone()).put(put)).await
            {
                ok = true;
                break;
            }
        }
        if ok {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "chaos: the cluster did not accept a write within 60 s\n{}",
                lock(&members).log_tails(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    say(format!("cluster ready ({} members)", urls.len()));

    let history = Arc::new(Mutex::new(Vec::<Operation>::new()));
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let anomalies = Arc::new(Mutex::new(Vec::<String>::new()));
    let origin = Instant::now();
    let stop_at = origin + cfg.duration;
    let root = Rng::new(cfg.seed);

    // Watchers run until told the final revision and reaching it.
    let (final_tx, final_rx) = tokio::sync::watch::channel::<Option<i64>>(None);
    let mut watchers = Vec::new();
    for w in 0..cfg.watchers {
        watchers.push(tokio::spawn(watcher(
            w,
            channels.clone(),
            1,
            final_rx.clone(),
        )));
    }
    let mut clients = Vec::new();
    for c in 0..cfg.clients {
        clients.push(tokio::spawn(client(
            c,
            cfg.keys,
            channels.clone(),
            root.fork(100 + c as u64),
            origin,
            stop_at,
            history.clone(),
            acks.clone(),
            anomalies.clone(),
        )));
    }
    let nemesis = nemesis(&cfg, root.fork(7), &channels, &members, &net, stop_at, &say).await;
    for c in clients {
        let _ = c.await;
    }
    say("clients stopped; cluster healed".into());

    // 2. Converge: all members at one revision, then compare HashKV.
    let (final_revision, hash_anomalies) = converge(&channels, &say).await;
    let mut anomalies = std::mem::take(&mut *lock(&anomalies));
    anomalies.extend(nemesis.2);
    anomalies.extend(hash_anomalies);

    // 3. A final linearizable read of every key, recorded like any read.
    for k in 0..cfg.keys {
        let key = key_name(k);
        for attempt in 0..10 {
            let ch = channels[attempt % channels.len()].clone();
            let invoke = origin.elapsed().as_nanos() as u64;
            let r = tokio::time::timeout(
                OP_TIMEOUT,
                KvClient::new(ch).range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                }),
            )
            .await;
            let complete = origin.elapsed().as_nanos() as u64;
            if let Ok(Ok(resp)) = r {
                let v = match read_value(&resp.into_inner().kvs) {
                    Ok(v) => v,
                    Err(e) => {
                        anomalies.push(e);
                        break;
                    }
                };
                lock(&history).push(Operation {
                    client: usize::MAX,
                    key: key.clone(),
                    call: Call::Read,
                    outcome: Outcome::Read(v),
                    invoke,
                    complete,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // 4. Watchers catch up to the final revision; then the full log.
    let _ = final_tx.send(Some(final_revision));
    let mut watches = Vec::new();
    for (w, h) in watchers.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(60), h).await {
            Ok(Ok(r)) => watches.push(r),
            Ok(Err(e)) => anomalies.push(format!("watcher {w} panicked: {e}")),
            Err(_) => anomalies.push(format!(
                "watcher {w} did not reach the final revision {final_revision} within 60 s"
            )),
        }
    }
    let (done_tx, done_rx) = tokio::sync::watch::channel(Some(final_revision));
    let full = tokio::time::timeout(
        Duration::from_secs(60),
        watcher(usize::MAX, channels.clone(), 1, done_rx),
    )
    .await;
    drop(done_tx);
    let full_log = match full {
        Ok((events, _, true)) => events,
        _ => {
            anomalies.push(format!(
                "could not read the full event log up to revision {final_revision}"
            ));
            Vec::new()
        }
    };
    let history = std::mem::take(&mut *lock(&history));
    let acks = std::mem::take(&mut *lock(&acks));
    let log = std::mem::take(&mut *lock(&log));
    Observed {
        history,
        acks,
        watches,
        full_log,
        final_revision,
        faults: nemesis.0,
        leader_faults: nemesis.1,
        anomalies,
        log,
    }
}

/// Parses a register value (a decimal id) from a range response.
fn read_value(kvs: &[ballast_proto::mvccpb::KeyValue]) -> Result<Value, String> {
    match kvs.first() {
        None => Ok(0),
        Some(kv) => std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|s| s.parse::<Value>().ok())
            .filter(|v| *v != 0)
            .ok_or_else(|| {
                format!(
                    "read of {} returned a value no client wrote: {:?}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                )
            }),
    }
}

/// One client: random reads, puts and compare-and-sets on the key set,
/// sticking to one member and moving on when an outcome is unknown.
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    keys: usize,
    channels: Vec<Channel>,
    mut rng: Rng,
    origin: Instant,
    stop_at: Instant,
    history: Arc<Mutex<Vec<Operation>>>,
    acks: Arc<Mutex<Vec<Ack>>>,
    anomalies: Arc<Mutex<Vec<String>>>,
) {
    let mut target = id % channels.len();
    let mut seq: u64 = 0;
    let mut last_seen: HashMap<usize, Value> = HashMap::new();
    while Instant::now() < stop_at {
        let k = rng.below(keys as u64) as usize;
        let key = key_name(k);
        let mut kv = KvClient::new(channels[target].clone());
        seq += 1;
        let fresh = ((id as u64 + 1) << 32) | seq;
        let dice = rng.below(100);
        let call = match last_seen.get(&k) {
            _ if dice < 40 => Call::Read,
            Some(&expect) if dice >= 70 && expect != 0 => Call::Cas { expect, new: fresh },
            _ => Call::Write(fresh),
        };
        let invoke = origin.elapsed().as_nanos() as u64;
        let (outcome, revision) = match call {
            Call::Read => {
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    kv.range(RangeRequest {
                        key: key.clone().into_bytes(),
                        ..Default::default()
                    }),
                )
                .await;
                match r {
                    Ok(Ok(resp)) => match read_value(&resp.into_inner().kvs) {
                        Ok(v) => {
                            last_seen.insert(k, v);
                            (Outcome::Read(v), 0)
                        }
                        Err(e) => {
                            lock(&anomalies).push(e);
                            (Outcome::Unknown, 0)
                        }
                    },
                    _ => (Outcome::Unknown, 0),
                }
            }
            Call::Write(v) => {
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    kv.put(PutRequest {
                        key: key.clone().into_bytes(),
                        value: v.to_string().into_bytes(),
                        ..Default::default()
                    }),
                )
                .await;
                match r {
                    Ok(Ok(resp)) => {
                        last_seen.insert(k, v);
                        let rev = resp.into_inner().header.map_or(0, |h| h.revision);
                        (Outcome::Written, rev)
                    }
                    _ => (Outcome::Unknown, 0),
                }
            }
            Call::Cas { expect, new } => {
                let txn = TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(compare::TargetUnion::Value(
                            expect.to_string().into_bytes(),
                        )),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: new.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                };
                match tokio::time::timeout(OP_TIMEOUT, kv.txn(txn)).await {
                    Ok(Ok(resp)) => {
                        let resp = resp.into_inner();
                        let rev = resp.header.map_or(0, |h| h.revision);
                        if resp.succeeded {
                            last_seen.insert(k, new);
                        } else {
                            last_seen.remove(&k);
                        }
                        (
                            Outcome::Cas(resp.succeeded),
                            if resp.succeeded { rev } else { 0 },
                        )
                    }
                    _ => (Outcome::Unknown, 0),
                }
            }
        };
        let complete = origin.elapsed().as_nanos() as u64;
        if revision > 0 {
            let value = match call {
                Call::Write(v) | Call::Cas { new: v, .. } => v,
                Call::Read => 0,
            };
            lock(&acks).push(Ack {
                key: key.clone(),
                value,
                revision,
            });
        }
        lock(&history).push(Operation {
            client: id,
            key,
            call,
            outcome,
            invoke,
            complete,
        });
        if outcome == Outcome::Unknown {
            target = (target + 1) % channels.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A watcher on the prefix from `start`; reconnects to the next member on
/// any error, cancel or 8 s of silence, resuming at the last revision + 1.
/// Returns (events, reconnects, reached the final revision).
async fn watcher(
    id: usize,
    channels: Vec<Channel>,
    start: i64,
    final_rx: tokio::sync::watch::Receiver<Option<i64>>,
) -> (Vec<Ev>, usize, bool) {
    let mut events = Vec::new();
    let mut next = start;
    let mut reconnects = 0usize;
    let mut target = if id == usize::MAX {
        0
    } else {
        id % channels.len()
    };
    let done = |next: i64| matches!(*final_rx.borrow(), Some(f) if next > f);
    loop {
        if done(next) {
            return (events, reconnects, true);
        }
        // The full-log reader gives up after a bounded number of attempts.
        if id == usize::MAX && reconnects > 30 {
            return (events, reconnects, false);
        }
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(),
                    start_revision: next,
                    ..Default::default()
                },
            )),
        };
        let requests =
            tokio_stream::StreamExt::chain(tokio_stream::iter([req]), tokio_stream::pending());
        let mut wc = WatchClient::new(channels[target].clone());
        if let Ok(Ok(resp)) = tokio::time::timeout(OP_TIMEOUT, wc.watch(requests)).await {
            let mut stream = resp.into_inner();
            // Any error, end of stream or 8 s of silence: reconnect.
            while let Ok(Ok(Some(msg))) =
                tokio::time::timeout(Duration::from_secs(8), stream.message()).await
            {
                if msg.canceled || msg.compact_revision > 0 {
                    break;
                }
                for e in msg.events {
                    let Some(kv) = e.kv else { continue };
                    next = next.max(kv.mod_revision + 1);
                    events.push(Ev {
                        revision: kv.mod_revision,
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        value: kv.value,
                        delete: e.r#type == EventType::Delete as i32,
                    });
                }
                if done(next) {
                    return (events, reconnects, true);
                }
            }
        }
        reconnects += 1;
        target = (target + 1) % channels.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The index of the member most members name as leader.
async fn find_leader(channels: &[Channel]) -> Option<usize> {
    let mut ids: HashMap<u64, usize> = HashMap::new();
    let mut votes: HashMap<u64, usize> = HashMap::new();
    for (i, ch) in channels.iter().enumerate() {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            MaintenanceClient::new(ch.clone()).status(StatusRequest {}),
        )
        .await;
        if let Ok(Ok(s)) = r {
            let s = s.into_inner();
            if let Some(h) = s.header {
                ids.insert(h.member_id, i);
            }
            if s.leader != 0 {
                *votes.entry(s.leader).or_default() += 1;
            }
        }
    }
    let (leader, _) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    ids.get(&leader).copied()
}

/// The nemesis: until `stop_at`, pick a fault kind (in shuffled rounds of
/// all kinds) and a target (the leader half of the time), hold the fault
/// 1.5–4 s, heal, rest 1–2.5 s.
/// Returns the count per kind and how many aimed at the leader.
async fn nemesis(
    cfg: &ChaosConfig,
    mut rng: Rng,
    channels: &[Channel],
    members: &Mutex<Members>,
    net: &TestNet,
    stop_at: Instant,
    say: &(impl Fn(String) + Sync),
) -> (BTreeMap<&'static str, u32>, u32, Vec<String>) {
    let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut anomalies = Vec::new();
    let mut at_leader = 0u32;
    let n = channels.len();
    // Kinds come in shuffled rounds, so a short run sees each kind once.
    let mut bag: Vec<FaultKind> = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() + Duration::from_millis(1500) < stop_at && !cfg.faults.is_empty() {
        if bag.is_empty() {
            bag = cfg.faults.clone();
            for i in (1..bag.len()).rev() {
                bag.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let Some(kind) = bag.pop() else { break };
        let aim_leader = rng.chance(0.5);
        let random = rng.below(n as u64) as usize;
        let other = rng.below(n as u64 - 1) as usize;
        let hold = Duration::from_millis(rng.range(1500, 4000));
        let rest = Duration::from_millis(rng.range(1000, 2500));
        let leader = if aim_leader {
            find_leader(channels).await
        } else {
            None
        };
        let target = leader.unwrap_or(random);
        let peer = (target + 1 + other) % n;
        let who = format!(
            "m{target}{}",
            if leader.is_some() { " (leader)" } else { "" }
        );
        let desc = match kind {
            FaultKind::Isolate => {
                for p in (0..n).filter(|p| *p != target) {
                    let (a, b) = {
                        let m = lock(members);
                        (m.addr(target), m.addr(p))
                    };
                    report_err(net.block(target, b, Block::Blackhole), say);
                    report_err(net.block(p, a, Block::Blackhole), say);
                }
                format!("isolate {who}")
            }
            FaultKind::Asymmetric => {
                let block = if rng.chance(0.5) {
                    Block::Blackhole
                } else {
                    Block::Prohibit
                };
                let to = lock(members).addr(peer);
                report_err(net.block(target, to, block), say);
                format!("asymmetric {block:?}: {who} -> m{peer} cut")
            }
            FaultKind::Bridge => {
                let (a, b) = {
                    let m = lock(members);
                    (m.addr(target), m.addr(peer))
                };
                report_err(net.block(target, b, Block::Blackhole), say);
                report_err(net.block(peer, a, Block::Blackhole), say);
                format!("bridge: {who} <-> m{peer} cut, both reach the third")
            }
            FaultKind::Kill => {
                lock(members).kill(target);
                format!("SIGKILL {who}")
            }
            FaultKind::Pause => {
                lock(members).signal(target, Signal::SIGSTOP);
                format!("SIGSTOP {who}")
            }
            FaultKind::Delay => {
                lock(members).set_link_fault(
                    target,
                    LinkFault::Delay {
                        min_ms: 20,
                        max_ms: 200,
                    },
                );
                format!("delay 20-200ms on {who}'s peer links")
            }
            FaultKind::Loss => {
                lock(members).set_link_fault(
                    target,
                    LinkFault::Loss {
                        stall: 0.05,
                        reset: 0.01,
                    },
                );
                format!("loss (5% stalls, 1% resets) on {who}'s peer links")
            }
            FaultKind::Hostile => format!("hostile inputs at {who}"),
        };
        *counts.entry(kind.name()).or_default() += 1;
        if leader.is_some() {
            at_leader += 1;
        }
        say(format!("fault: {desc} for {:.1}s", hold.as_secs_f64()));
        let hold = hold.min(stop_at.saturating_duration_since(Instant::now()));
        if kind == FaultKind::Hostile {
            let addr = lock(members).addr(target);
            let outcome = hostile::barrage(
                channels[target].clone(),
                SocketAddr::from((addr, CLIENT_PORT)),
                SocketAddr::from((addr, PEER_PORT)),
                &mut rng,
                Instant::now() + hold,
            )
            .await;
            say(format!("hostile answers: {}", outcome.summary()));
            anomalies.extend(outcome.anomalies);
        } else {
            tokio::time::sleep(hold).await;
        }
        // A member that is down without the nemesis killing it crashed.
        for i in 0..n {
            let killed = kind == FaultKind::Kill && i == target;
            if !killed && !lock(members).is_running(i) {
                anomalies.push(format!(
                    "m{i} exited during `{desc}` (not killed by the nemesis)"
                ));
            }
        }
        heal(members, net, say);
        tokio::time::sleep(rest.min(stop_at.saturating_duration_since(Instant::now()))).await;
    }
    heal(members, net, say);
    (counts, at_leader, anomalies)
}

fn report_err(r: std::io::Result<()>, say: &impl Fn(String)) {
    if let Err(e) = r {
        say(format!("nemesis error: {e}"));
    }
}

/// Undoes every fault: routes, proxies, stopped and dead members.
fn heal(members: &Mutex<Members>, net: &TestNet, say: &impl Fn(String)) {
    report_err(net.heal(), say);
    let mut m = lock(members);
    m.clear_link_faults();
    for i in 0..m.len() {
        m.signal(i, Signal::SIGCONT);
        if !m.is_running(i) {
            if let Err(e) = m.spawn(i) {
                say(format!("restart m{i} failed: {e}"));
            }
        }
    }
}

/// Waits (up to 60 s) until every member reports the same revision twice
/// in a row, then compares their HashKV at it. Returns the revision and
/// the anomalies found.
async fn converge(channels: &[Channel], say: &impl Fn(String)) -> (i64, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut anomalies = Vec::new();
    let mut previous: Option<i64> = None;
    let revision = loop {
        let mut revs = Vec::new();
        for ch in channels {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                MaintenanceClient::new(ch.clone()).status(StatusRequest {}),
            )
            .await;
            revs.push(match r {
                Ok(Ok(s)) => s.into_inner().header.map(|h| h.revision),
                _ => None,
            });
        }
        let first = revs[0];
        let agree = first.is_some() && revs.iter().all(|r| *r == first);
        if agree && previous == first {
            break first.unwrap_or_default();
        }
        previous = if agree { first } else { None };
        if Instant::now() > deadline {
            anomalies.push(format!(
                "members did not converge on one revision within 60 s after healing: {revs:?}"
            ));
            return (revs.iter().flatten().copied().max().unwrap_or(0), anomalies);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut hashes = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            MaintenanceClient::new(ch.clone()).hash_kv(HashKvRequest { revision }),
        )
        .await;
        match r {
            Ok(Ok(h)) => {
                let h = h.into_inner();
                hashes.push((i, h.hash, h.hash_revision));
            }
            other => anomalies.push(format!("HashKV at {revision} on m{i} failed: {other:?}")),
        }
    }
    if hashes.windows(2).any(|w| w[0].1 != w[1].1) {
        anomalies.push(format!(
            "members disagree on HashKV at revision {revision}: (member, hash, hash_revision) {hashes:?}"
        ));
    }
    say(format!(
        "converged at revision {revision}; HashKV {:?}",
        hashes.iter().map(|h| h.1).collect::<Vec<_>>()
    ));
    (revision, anomalies)
}

/// The checks that need no network.
fn analyse(cfg: &ChaosConfig, o: Observed) -> ChaosReport {
    let mut anomalies = o.anomalies;

    // The full log: strictly increasing revisions, only values clients wrote.
    let full = &o.full_log;
    if full.windows(2).any(|w| w[1].revision <= w[0].revision) {
        anomalies.push("the full event log has non-increasing revisions".into());
    }
    let at: HashMap<i64, &Ev> = full.iter().map(|e| (e.revision, e)).collect();
    let mut written: HashMap<Value, ()> = HashMap::new();
    for op in &o.history {
        if let Call::Write(v) | Call::Cas { new: v, .. } = op.call {
            written.insert(v, ());
        }
    }
    for e in full {
        if e.key.starts_with(&format!("{PREFIX}k")) {
            let v = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.parse::<Value>().ok());
            if e.delete || !v.is_some_and(|v| written.contains_key(&v)) {
                anomalies.push(format!(
                    "phantom event in the log (no client wrote it): {e:?}"
                ));
            }
        }
    }

    // Every acknowledged write is in the log, at the revision it was acked with.
    let mut acked_found = 0usize;
    for a in &o.acks {
        match at.get(&a.revision) {
            Some(e) if e.key == a.key && e.value == a.value.to_string().as_bytes() && !e.delete => {
                acked_found += 1;
            }
            other => anomalies.push(format!(
                "acknowledged write of {} = {} at revision {} is not in the log there (found {other:?})",
                a.key, a.value, a.revision
            )),
        }
    }

    // Watchers saw exactly the log: in order, no gaps, no duplicates.
    let mut events_checked = 0usize;
    let mut reconnects = 0usize;
    for (w, (events, rc, reached)) in o.watches.iter().enumerate() {
        reconnects += rc;
        events_checked += events.len();
        if !reached {
            anomalies.push(format!("watcher {w} did not reach the final revision"));
        }
        if let Some(i) = (0..events.len().max(full.len())).find(|&i| events.get(i) != full.get(i)) {
            anomalies.push(format!(
                "watcher {w} diverges from the log at event {i}: saw {:?}, log has {:?} \
                 ({} events seen, {} in the log)",
                events.get(i),
                full.get(i),
                events.len(),
                full.len()
            ));
        }
    }

    // Final read of every key = the last put on it in the log.
    let mut last_put: HashMap<&str, Value> = HashMap::new();
    for e in full {
        if let Some(v) = std::str::from_utf8(&e.value)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            last_put.insert(e.key.as_str(), v);
        }
    }
    for op in o.history.iter().filter(|op| op.client == usize::MAX) {
        if let Outcome::Read(v) = op.outcome {
            let expected = last_put.get(op.key.as_str()).copied().unwrap_or(0);
            if v != expected && !full.is_empty() {
                anomalies.push(format!(
                    "final read of {} returned {v}, the log's last write is {expected}",
                    op.key
                ));
            }
        }
    }

    // Linearizability per key.
    let check_started = Instant::now();
    let check = checker::check(&o.history);
    let check_secs = check_started.elapsed().as_secs_f64();
    anomalies.extend(check.violations());

    ChaosReport {
        seed: cfg.seed,
        duration: cfg.duration,
        faults: o.faults,
        leader_faults: o.leader_faults,
        ops_ok: o
            .history
            .iter()
            .filter(|op| op.outcome != Outcome::Unknown)
            .count(),
        ops_unknown: o
            .history
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count(),
        ops_checked: check.ops_checked,
        acked_writes: acked_found,
        watch_events_checked: events_checked + full.len(),
        watch_reconnects: reconnects,
        final_revision: o.final_revision,
        proxy_connections: 0,
        proxy_stalls: 0,
        proxy_resets: 0,
        check_secs,
        inconclusive_keys: check.inconclusive(),
        anomalies,
        log: o.log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: i64, key: &str, value: u64) -> Ev {
        Ev {
            revision,
            key: key.into(),
            value: value.to_string().into_bytes(),
            delete: false,
        }
    }

    fn write(client: usize, key: &str, v: u64, t: u64) -> Operation {
        Operation {
            client,
            key: key.into(),
            call: Call::Write(v),
            outcome: Outcome::Written,
            invoke: t,
            complete: t + 1,
        }
    }

    /// Two acknowledged writes, their log, one watcher that saw it all.
    fn clean() -> Observed {
        let log = vec![ev(2, "chaos/k0", 11), ev(3, "chaos/k0", 12)];
        Observed {
            history: vec![write(0, "chaos/k0", 11, 0), write(0, "chaos/k0", 12, 10)],
            acks: vec![
                Ack {
                    key: "chaos/k0".into(),
                    value: 11,
                    revision: 2,
                },
                Ack {
                    key: "chaos/k0".into(),
                    value: 12,
                    revision: 3,
                },
            ],
            watches: vec![(log.clone(), 1, true)],
            full_log: log,
            final_revision: 3,
            ..Default::default()
        }
    }

    fn cfg() -> ChaosConfig {
        ChaosConfig::from_env(1)
    }

    #[test]
    fn clean_history_has_no_anomalies() {
        let r = analyse(&cfg(), clean());
        assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
        assert_eq!(r.acked_writes, 2);
    }

    #[test]
    fn watch_gap_duplicate_and_reorder_are_caught() {
        for events in [
            vec![ev(3, "chaos/k0", 12)],
            vec![
                ev(2, "chaos/k0", 11),
                ev(2, "chaos/k0", 11),
                ev(3, "chaos/k0", 12),
            ],
            vec![ev(3, "chaos/k0", 12), ev(2, "chaos/k0", 11)],
        ] {
            let mut o = clean();
            o.watches[0].0 = events.clone();
            let r = analyse(&cfg(), o);
            assert_eq!(r.anomalies.len(), 1, "{events:?}: {:?}", r.anomalies);
            assert!(r.anomalies[0].contains("diverges"), "{:?}", r.anomalies);
        }
    }

    #[test]
    fn lost_acknowledged_write_and_phantom_are_caught() {
        let mut o = clean();
        // The log lost revision 3 (and the watcher agrees with the log).
        o.full_log.pop();
        o.watches[0].0.pop();
        let r = analyse(&cfg(), o);
        assert!(
            r.anomalies.iter().any(|a| a.contains("not in the log")),
            "{:?}",
            r.anomalies
        );

        let mut o = clean();
        o.full_log.push(ev(4, "chaos/k0", 99));
        o.watches[0].0.push(ev(4, "chaos/k0", 99));
        let r = analyse(&cfg(), o);
        assert!(
            r.anomalies.iter().any(|a| a.contains("phantom")),
            "{:?}",
            r.anomalies
        );
    }

    #[test]
    fn stale_final_read_is_caught() {
        let mut o = clean();
        o.history.push(Operation {
            client: usize::MAX,
            key: "chaos/k0".into(),
            call: Call::Read,
            outcome: Outcome::Read(11),
            invoke: 20,
            complete: 21,
        });
        let r = analyse(&cfg(), o);
        // Both the final-read check and the linearizability check object.
        assert!(
            r.anomalies.iter().any(|a| a.contains("final read")),
            "{:?}",
            r.anomalies
        );
        assert!(
            r.anomalies.iter().any(|a| a.contains("not linearizable")),
            "{:?}",
            r.anomalies
        );
    }
}
