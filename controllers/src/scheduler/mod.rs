//! The scheduler: binds each pending pod (no `spec.nodeName`, our
//! `spec.schedulerName`) to a node.
//!
//! # Layout
//! - `quantity` — Kubernetes quantities (`100m`, `1.5Gi`, `1e3`) to integers.
//! - `pod_info` — a pod's requests, constraints and host ports, compiled once.
//! - `affinity` — inter-pod affinity and anti-affinity: terms, per-cycle
//!   counts by topology pair, filter and scores.
//! - `spread` — topology spread constraints: the `DoNotSchedule` filter and
//!   the `ScheduleAnyway` (and system default) scores.
//! - `node_info` — a node's allocatable, labels, taints, and the running
//!   totals of the pods placed on it.
//! - `cache` — nodes and placed pods, with assumed (not yet confirmed) pods.
//! - `queue` — active / backing-off / unschedulable pending pods.
//! - `algorithm` — filters, scores and the "0/3 nodes are available" message.
//! - `binder` — the writes: binding, PodScheduled condition, events.
//! - `metrics` — kube-scheduler's Prometheus series from [`SchedulerStats`].
//! - `decide_tests` — decisions with pod affinity, topology spread and
//!   preferred node affinity against kube-scheduler's outcomes (tests only).
//!
//! # How it runs
//! One task owns the cache and the queue and makes every decision, one pod
//! at a time, against the cache *including* pods it has just assumed — so
//! decisions never race each other. Binds go out concurrently (up to
//! [`SchedulerConfig::max_binds_in_flight`]) from spawned tasks that report
//! back; a failed bind forgets its assumption and the pod retries after a
//! back-off. Nodes, pods and namespaces (their labels, for affinity terms'
//! namespaceSelector) come from three kube-runtime watchers (list, then
//! watch, re-listing on errors); until all have listed once nothing is
//! scheduled, so no decision is made on a partial view.
//!
//! Unschedulable pods are retried on the cluster events that may make them
//! fit: a pod deleted, moved, relabelled or shrunk, a node added or
//! changed, a namespace relabelled (all of them); a pod placed (only the
//! pods whose required pod affinity or `DoNotSchedule` spread selector it
//! matches).
//!
//! ```no_run
//! # async fn f(client: kube::Client) {
//! use ballast_controllers::scheduler::{Scheduler, SchedulerConfig};
//! let scheduler = Scheduler::new(client, SchedulerConfig::default());
//! let stats = scheduler.stats();
//! tokio::spawn(scheduler.run(std::future::pending()));
//! // … later: stats.bound() pods have been bound.
//! # }
//! ```

mod affinity;
mod algorithm;
mod binder;
mod cache;
#[cfg(test)]
mod decide_tests;
mod metrics;
mod node_info;
mod pod_info;
mod quantity;
mod queue;
mod spread;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use quantity::{parse_milli, parse_units, QuantityError};

use affinity::Namespaces;
use algorithm::{Cluster, Decider};
use binder::{EventSink, PodRef, WriteError};
use cache::{Cache, Placement};
use pod_info::PodInfo;
use queue::{Backoff, Condition, Queue};

use crate::events::Recorder;

/// Events waiting to be written before new ones are dropped.
const EVENT_QUEUE: usize = 16_384;
/// Event writes in flight at once (binds get the rest of the apiserver).
const EVENT_WRITES: usize = 4;

/// Default binds in flight: enough for the apiserver and etcd to batch
/// writes (measured: 3,000 pods over 100 nodes bind at ~1,100 pods/s with
/// 48 in flight, ~1,200–1,800 with 128, on 2 cores with the apiserver and
/// etcd on the same machine).
pub const DEFAULT_MAX_BINDS_IN_FLIGHT: usize = 128;

/// The longest an unschedulable pod waits for a cluster change before it
/// is tried again anyway (kube-scheduler's
/// `--pod-max-in-unschedulable-pods-duration`, 5 minutes); a longer
/// [`SchedulerConfig::unschedulable_retry`] is cut to this.
pub const MAX_IN_UNSCHEDULABLE_PODS: Duration = Duration::from_secs(300);

/// How often the unschedulable pods are scanned for the flush.
const FLUSH_CHECK: Duration = Duration::from_secs(1);

/// The scheduler name pods get when they name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or unset, for the default
    /// name) are scheduled; it is also the events' reporting component.
    pub scheduler_name: String,
    /// Binding requests in flight at once.
    pub max_binds_in_flight: usize,
    /// Back-off after the first failed attempt; it doubles per attempt.
    pub initial_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often even if nothing
    /// changes.
    pub unschedulable_retry: Duration,
    /// Write Scheduled / FailedScheduling events.
    pub events: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            max_binds_in_flight: DEFAULT_MAX_BINDS_IN_FLIGHT,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_retry: Duration::from_secs(60),
            events: true,
        }
    }
}

/// Counters a running scheduler updates; read them from any thread.
#[derive(Debug)]
pub struct SchedulerStats {
    bound: AtomicU64,
    bind_failures: AtomicU64,
    unschedulable: AtomicU64,
    /// Pending pods per sub-queue (active, backoff, unschedulable), as
    /// last published by the loop (about once a second).
    pending: [AtomicU64; 3],
    /// From a pod's first entry in the queue to its successful bind.
    scheduling_latency: ballast_metrics::AtomicHistogram,
}

impl Default for SchedulerStats {
    fn default() -> Self {
        SchedulerStats {
            bound: AtomicU64::default(),
            bind_failures: AtomicU64::default(),
            unschedulable: AtomicU64::default(),
            pending: Default::default(),
            scheduling_latency: ballast_metrics::AtomicHistogram::new(
                metrics::SCHEDULING_LATENCY_BUCKETS,
            ),
        }
    }
}

impl SchedulerStats {
    /// Pods bound successfully.
    pub fn bound(&self) -> u64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// Binding requests that failed (the pods were retried).
    pub fn bind_failures(&self) -> u64 {
        self.bind_failures.load(Ordering::Relaxed)
    }

    /// Scheduling attempts that found no node.
    pub fn unschedulable(&self) -> u64 {
        self.unschedulable.load(Ordering::Relaxed)
    }
}

/// The scheduler; see the module docs.
pub struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    stats: Arc<SchedulerStats>,
}

/// What a spawned write reports back to the scheduling loop.
enum Outcome {
    Bound {
        key: String,
        result: Result<(), WriteError>,
        /// When the pod entered the queue (its scheduling latency ends at
        /// the acknowledged bind, even if its bound update came first).
        added: Instant,
    },
    /// The PodScheduled=False write failed: write it again next time.
    StatusFailed { key: String },
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler talking to the apiserver through `client`.
    pub fn new(client: Client, config: SchedulerConfig) -> Scheduler {
        Scheduler {
            client,
            config,
            stats: Arc::new(SchedulerStats::default()),
        }
    }

    /// The counters of this scheduler.
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// Schedules until `shutdown` completes. Apiserver errors are logged and
    /// retried (the watchers re-list with back-off), never fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Scheduler {
            client,
            config,
            stats,
        } = self;
        let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .boxed();
        let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .boxed();
        let namespaces = watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let (mut state, rx) = Loop::new(client, config, stats);
        state
            .run(
                Watches {
                    pods,
                    nodes,
                    namespaces,
                },
                rx,
                shutdown,
            )
            .await;
    }
}

/// The scheduling loop's state, owned by one task.
struct Loop {
    client: Client,
    events: Option<EventSink>,
    config: SchedulerConfig,
    stats: Arc<SchedulerStats>,
    cache: Cache,
    queue: Queue,
    decider: Decider,
    tx: mpsc::UnboundedSender<Outcome>,
    /// Binds spawned and not yet reported.
    in_flight: usize,
    pods_listed: bool,
    nodes_listed: bool,
    namespaces_listed: bool,
    /// Keys seen during a pod (re-)list, to drop what the list no longer has.
    pod_relist: Option<HashSet<String>>,
    node_relist: Option<HashSet<String>>,
    namespace_relist: Option<HashSet<String>>,
    /// Namespace labels, for affinity terms' namespaceSelector.
    namespaces: Namespaces,
}

impl Loop {
    /// A loop with empty cache and queue, and the receiver of its writes'
    /// outcomes.
    fn new(
        client: Client,
        config: SchedulerConfig,
        stats: Arc<SchedulerStats>,
    ) -> (Loop, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let events = config.events.then(|| {
            EventSink::start(
                Recorder::new(client.clone(), &config.scheduler_name, None),
                EVENT_QUEUE,
                EVENT_WRITES,
            )
        });
        let state = Loop {
            events,
            client,
            cache: Cache::default(),
            queue: Queue::new(Backoff {
                initial: config.initial_backoff,
                max: config.max_backoff,
                flush: config.unschedulable_retry.min(MAX_IN_UNSCHEDULABLE_PODS),
            }),
            decider: Decider::new(seed),
            config,
            stats,
            tx,
            in_flight: 0,
            pods_listed: false,
            nodes_listed: false,
            namespaces_listed: false,
            pod_relist: None,
            node_relist: None,
            namespace_relist: None,
            namespaces: Namespaces::new(),
        };
        (state, rx)
    }
}

type Watch<K> = futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// The loop's inputs from the apiserver.
struct Watches {
    pods: Watch<Pod>,
    nodes: Watch<Node>,
    namespaces: Watch<Namespace>,
}

impl Loop {
    async fn run(
        &mut self,
        watches: Watches,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
        shutdown: impl Future<Output = ()>,
    ) {
        let Watches {
            mut pods,
            mut nodes,
            mut namespaces,
        } = watches;
        tokio::pin!(shutdown);
        let far = || Instant::now() + Duration::from_secs(3600);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushed = Instant::now();
        loop {
            // Expired back-offs and the periodic flush are checked on every
            // turn, not only when their timers win the select below: a
            // steady flood of pod events (thousands of pods changing
            // status) kept those branches from ever running, and
            // unschedulable pods waited for the flood to end.
            let now = Instant::now();
            self.queue.tick(now);
            if now.duration_since(flushed) >= FLUSH_CHECK {
                self.queue.flush(now);
                flushed = now;
                self.publish_pending();
            }
            if self.pods_listed && self.nodes_listed && self.namespaces_listed {
                self.schedule();
            }
            let wake = self.queue.next_wakeup();
            if wake != armed {
                timer.as_mut().reset(wake.unwrap_or_else(far));
                armed = wake;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                // Nodes before pods: node events are few, and a flood of
                // pod events must not hide a node that just became usable.
                event = nodes.next() => match event {
                    Some(Ok(e)) => self.on_node_event(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "node watch"),
                    None => break,
                },
                event = namespaces.next() => match event {
                    Some(Ok(e)) => self.on_namespace_event(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "namespace watch"),
                    None => break,
                },
                event = pods.next() => match event {
                    Some(Ok(e)) => self.on_pod_event(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
                    None => break,
                },
                _ = &mut timer => {
                    // An elapsed Sleep stays ready: park it until re-armed.
                    timer.as_mut().reset(far());
                    armed = None;
                    self.queue.tick(Instant::now());
                }
                _ = flush.tick() => {
                    flushed = Instant::now();
                    self.queue.flush(flushed);
                    self.publish_pending();
                }
            }
        }
    }

    fn publish_pending(&self) {
        let c = self.queue.pending_counts();
        for (gauge, n) in self
            .stats
            .pending
            .iter()
            .zip([c.active, c.backoff, c.unschedulable])
        {
            gauge.store(n as u64, Ordering::Relaxed);
        }
    }

    /// Decides for active pods while bind slots are free.
    fn schedule(&mut self) {
        let now = Instant::now();
        while self.in_flight < self.config.max_binds_in_flight.max(1) {
            let Some(entry) = self.queue.pop(now) else {
                return;
            };
            let key = entry.info.uid.clone();
            let pod = PodRef {
                namespace: entry.info.namespace.clone(),
                name: entry.info.name.clone(),
                uid: Some(entry.info.uid.clone()).filter(|u| !u.contains('/')),
            };
            let cluster = Cluster {
                nodes: self.cache.nodes(),
                namespaces: &self.namespaces,
                affinity_pods: self.cache.has_affinity_pods(),
                zoned: self.cache.zoned(),
            };
            let decision = match &entry.info.invalid {
                Some(why) => Err(why.clone()),
                None => self
                    .decider
                    .decide(&entry.info, &cluster)
                    .map_err(|d| d.message()),
            };
            match decision {
                Ok(index) => {
                    let usage = entry.info.usage.clone();
                    let added = entry.added;
                    let node = self.cache.nodes()[index].name.clone();
                    let placed = usage.pod.clone();
                    self.cache.place(&key, &node, usage, true);
                    self.queue.pod_added(&placed, &self.namespaces, now);
                    self.in_flight += 1;
                    self.spawn_bind(key, pod, node, added);
                }
                Err(message) => {
                    self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                    let wanted: Condition = (
                        "False".to_string(),
                        "Unschedulable".to_string(),
                        message.clone(),
                    );
                    let write = entry.condition.as_ref() != Some(&wanted);
                    self.queue.unschedulable(&key, now);
                    if write {
                        self.queue.set_condition(&key, wanted);
                        self.spawn_unschedulable(key, pod, message);
                    }
                }
            }
        }
    }

    fn spawn_bind(&self, key: String, pod: PodRef, node: String, added: Instant) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = binder::bind(&client, &pod, &node).await;
            if let (Ok(()), Some(events)) = (&result, events) {
                events.scheduled(&pod, &node);
            }
            let _ = tx.send(Outcome::Bound { key, result, added });
        });
    }

    fn spawn_unschedulable(&self, key: String, pod: PodRef, message: String) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        if let Some(events) = &self.events {
            events.failed(&pod, &message);
        }
        tokio::spawn(async move {
            match binder::mark_unschedulable(&client, &pod, &message).await {
                Ok(()) | Err(WriteError::Gone(_)) => {}
                Err(e) => {
                    tracing::debug!(pod = %pod.name, error = %e, "PodScheduled condition not written");
                    let _ = tx.send(Outcome::StatusFailed { key });
                }
            }
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let now = Instant::now();
        match outcome {
            Outcome::Bound { key, result, added } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                match result {
                    Ok(()) => {
                        let took = now.duration_since(added);
                        self.stats.scheduling_latency.observe(took.as_secs_f64());
                        self.stats.bound.fetch_add(1, Ordering::Relaxed);
                        self.queue.remove(&key);
                    }
                    Err(e) => {
                        self.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(pod = %key, error = %e, "bind failed");
                        self.cache.forget(&key);
                        if matches!(e, WriteError::Gone(_)) {
                            self.queue.remove(&key);
                        } else {
                            self.queue.retry(&key, now);
                        }
                        self.queue.cluster_changed(now);
                    }
                }
            }
            Outcome::StatusFailed { key } => {
                if let Some(e) = self.queue.get(&key) {
                    if e.condition.is_some() {
                        self.queue
                            .set_condition(&key, (String::new(), String::new(), String::new()));
                    }
                }
            }
        }
    }

    fn on_pod_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.pod_relist = Some(HashSet::new()),
            Event::InitApply(pod) => {
                let key = pod_info::key(&pod);
                self.apply_pod(&pod);
                if let Some(seen) = self.pod_relist.as_mut() {
                    seen.insert(key);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.pod_relist.take() {
                    let mut gone: HashSet<String> = self.cache.placed_keys().into_iter().collect();
                    gone.extend(self.queue.keys());
                    for key in gone.difference(&seen) {
                        self.delete_pod(key);
                    }
                }
                self.pods_listed = true;
            }
            Event::Apply(pod) => self.apply_pod(&pod),
            Event::Delete(pod) => self.delete_pod(&pod_info::key(&pod)),
        }
    }

    fn delete_pod(&mut self, key: &str) {
        self.queue.remove(key);
        if self.cache.unplace(key) {
            self.queue.cluster_changed(Instant::now());
        }
    }

    fn apply_pod(&mut self, pod: &Pod) {
        let now = Instant::now();
        let key = pod_info::key(pod);
        let spec = pod.spec.as_ref();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let terminal = matches!(phase, Some("Succeeded" | "Failed"));
        let node = spec
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        if let Some(node) = node {
            self.queue.remove(&key);
            if terminal {
                if self.cache.unplace(&key) {
                    self.queue.cluster_changed(now);
                }
            } else {
                // Requests were validated when the pod was created; an
                // invalid one still occupies a pod slot. A bound pod whose
                // requests shrank (or that moved) may have made room.
                let usage = pod_info::usage(pod).unwrap_or_else(|_| pod_info::Usage {
                    pod: Arc::new(pod_info::meta(pod)),
                    ..pod_info::Usage::default()
                });
                let placed = usage.pod.clone();
                match self.cache.place(&key, node, usage, false) {
                    Placement::Replaced => self.queue.cluster_changed(now),
                    Placement::New => self.queue.pod_added(&placed, &self.namespaces, now),
                    Placement::Unchanged => {}
                }
            }
            return;
        }
        let name = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        let ours = name == self.config.scheduler_name
            && pod.metadata.deletion_timestamp.is_none()
            && !terminal
            && !gated;
        if !ours {
            // Its bind, if in flight, fails or lands; either way the watch
            // has the last word.
            self.queue.remove(&key);
            return;
        }
        if self.cache.is_assumed(&key) {
            // Being bound by us; the watch has not caught up yet.
            return;
        }
        if self.cache.unplace(&key) {
            self.queue.cluster_changed(now);
        }
        let condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .map(|c| {
                (
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            });
        self.queue.upsert(PodInfo::new(pod), condition, now);
    }

    fn on_node_event(&mut self, event: Event<Node>) {
        let now = Instant::now();
        match event {
            Event::Init => self.node_relist = Some(HashSet::new()),
            Event::InitApply(node) => {
                if let (Some(seen), Some(name)) =
                    (self.node_relist.as_mut(), node.metadata.name.clone())
                {
                    seen.insert(name);
                }
                if self.cache.upsert_node(&node) {
                    self.queue.cluster_changed(now);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.node_relist.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
                self.nodes_listed = true;
            }
            Event::Apply(node) => {
                if self.cache.upsert_node(&node) {
                    self.queue.cluster_changed(now);
                }
            }
            Event::Delete(node) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    self.cache.remove_node(name);
                }
            }
        }
    }

    fn on_namespace_event(&mut self, event: Event<Namespace>) {
        let now = Instant::now();
        match event {
            Event::Init => self.namespace_relist = Some(HashSet::new()),
            Event::InitApply(ns) | Event::Apply(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return;
                };
                if let Some(seen) = self.namespace_relist.as_mut() {
                    seen.insert(name.clone());
                }
                let labels = ns.metadata.labels.unwrap_or_default();
                if self.namespaces.get(&name) != Some(&labels) {
                    self.namespaces.insert(name, labels);
                    self.queue.cluster_changed(now);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.namespace_relist.take() {
                    self.namespaces.retain(|name, _| seen.contains(name));
                }
                self.namespaces_listed = true;
            }
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    self.namespaces.remove(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::sync::oneshot;

    /// A loop whose client points at a closed port: every write fails.
    fn offline() -> (Loop, mpsc::UnboundedReceiver<Outcome>) {
        let url = "http://127.0.0.1:1".parse().expect("url");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        let config = SchedulerConfig {
            events: false,
            ..SchedulerConfig::default()
        };
        Loop::new(client, config, Arc::default())
    }

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node")
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "600m"}}}]}
        }))
        .expect("pod")
    }

    fn listed(l: &mut Loop, nodes: &[Node], pods: &[Pod]) {
        l.on_namespace_event(Event::Init);
        l.on_namespace_event(Event::InitDone);
        l.on_node_event(Event::Init);
        for n in nodes {
            l.on_node_event(Event::InitApply(n.clone()));
        }
        l.on_node_event(Event::InitDone);
        l.on_pod_event(Event::Init);
        for p in pods {
            l.on_pod_event(Event::InitApply(p.clone()));
        }
        l.on_pod_event(Event::InitDone);
    }

    #[tokio::test]
    async fn assumed_pods_count_at_once_and_failed_binds_forget_them() {
        let (mut l, mut outcomes) = offline();
        listed(
            &mut l,
            &[node("a", "1"), node("b", "1")],
            &[pod("p1", None), pod("p2", None)],
        );
        l.schedule();
        // Two 600m pods on two 1-cpu nodes: the second decision saw the
        // first pod assumed and took the other node.
        assert_eq!(l.in_flight, 2);
        let used: Vec<i64> = l
            .cache
            .nodes()
            .iter()
            .map(|n| n.requested.milli_cpu)
            .collect();
        assert_eq!(used, vec![600, 600]);
        // A late watch event of the still-unbound pod changes nothing.
        l.on_pod_event(Event::Apply(pod("p1", None)));
        assert!(l.cache.is_assumed("uid-p1"));
        for _ in 0..2 {
            let outcome = tokio::time::timeout(Duration::from_secs(20), outcomes.recv())
                .await
                .expect("bind outcome in time")
                .expect("an outcome");
            l.on_outcome(outcome);
        }
        assert_eq!(l.in_flight, 0);
        assert_eq!(l.stats.bind_failures(), 2);
        assert!(!l.cache.is_assumed("uid-p1") && !l.cache.is_assumed("uid-p2"));
        assert!(l.cache.nodes().iter().all(|n| n.requested.milli_cpu == 0));
        // Both wait for their back-off, then are tried again.
        assert!(l.queue.get("uid-p1").is_some());
        assert!(!l.queue.has_active());
        l.queue.tick(Instant::now() + Duration::from_secs(2));
        assert!(l.queue.has_active());
    }

    /// A steady flood of pod events (here: one bound pod re-sent without
    /// pause) must not keep an unschedulable pod from its retry after a
    /// cluster change. Before the fix the back-off timer lost every select
    /// to the pod watch and the pod was never tried again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_pod_events_does_not_starve_retries() {
        let (mut l, outcomes) = offline();
        l.queue = Queue::new(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
            flush: Duration::from_secs(3600),
        });
        let stats = l.stats.clone();
        // p (600m) never fits node a (500m): each attempt counts once.
        let nodes = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(node("a", "500m"))),
            Ok(Event::InitDone),
        ])
        .chain(futures::stream::pending())
        .boxed();
        let noise = pod("noise", Some("elsewhere"));
        let pods = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(pod("p", None))),
            Ok(Event::InitApply(pod("q", Some("a")))),
            Ok(Event::InitDone),
            // Seen after p's first attempt: a pod deleted from a node.
            Ok(Event::Delete(pod("q", Some("a")))),
        ])
        .chain(futures::stream::repeat_with(move || {
            Ok(Event::Apply(noise.clone()))
        }))
        .boxed();
        let namespaces = futures::stream::iter([Ok(Event::Init), Ok(Event::InitDone)])
            .chain(futures::stream::pending())
            .boxed();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let watches = Watches {
                pods,
                nodes,
                namespaces,
            };
            l.run(watches, outcomes, async move {
                let _ = stopped.await;
            })
            .await;
        });
        let mut retried = false;
        for _ in 0..400 {
            if stats.unschedulable() >= 2 {
                retried = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = stop.send(());
        task.await.expect("loop");
        assert!(
            retried,
            "p was tried {} time(s); the deletion of q never retried it",
            stats.unschedulable()
        );
    }

    #[tokio::test]
    async fn the_watch_confirms_bindings_and_relists_drop_the_missing() {
        let (mut l, _outcomes) = offline();
        listed(
            &mut l,
            &[node("a", "2")],
            &[pod("p1", None), pod("bound", Some("a"))],
        );
        assert_eq!(l.cache.nodes()[0].requested.milli_cpu, 600);
        l.schedule();
        assert!(l.cache.is_assumed("uid-p1"));
        // The watch shows p1 bound before the bind's answer arrives.
        l.on_pod_event(Event::Apply(pod("p1", Some("a"))));
        assert!(!l.cache.is_assumed("uid-p1"));
        assert!(l.queue.get("uid-p1").is_none());
        assert_eq!(l.cache.nodes()[0].requested.milli_cpu, 1200);
        // A terminal pod frees its node.
        let mut done = pod("bound", Some("a"));
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        l.on_pod_event(Event::Apply(done));
        assert_eq!(l.cache.nodes()[0].requested.milli_cpu, 600);
        // A re-list without p1 or node a drops both.
        l.on_pod_event(Event::Init);
        l.on_pod_event(Event::InitDone);
        assert_eq!(l.cache.placed_keys(), Vec::<String>::new());
        l.on_node_event(Event::Init);
        l.on_node_event(Event::InitDone);
        assert!(l.cache.nodes().is_empty());
        // Pods being deleted, or for another scheduler, are not queued.
        let mut deleting = pod("d", None);
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).expect("time"));
        l.on_pod_event(Event::Apply(deleting));
        let mut other = pod("o", None);
        other.spec.as_mut().expect("spec").scheduler_name = Some("other".into());
        l.on_pod_event(Event::Apply(other));
        assert!(l.queue.get("uid-d").is_none() && l.queue.get("uid-o").is_none());
    }
}
