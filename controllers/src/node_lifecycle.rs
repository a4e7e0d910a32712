//! The node lifecycle controller: notices nodes whose kubelet went silent
//! and moves their pods elsewhere.
//!
//! Every `monitor_period` it looks at each node's Lease (in
//! `kube-node-lease`, named after the node) and its Ready heartbeat. Like
//! Kubernetes it trusts its own clock, not the node's: it notes *when it
//! saw* either change. A node unseen for `grace_period` gets its Ready
//! (and pressure) conditions set to Unknown ("Kubelet stopped posting
//! node status."), the `node.kubernetes.io/unreachable` taints (NoSchedule
//! and NoExecute; `not-ready` for a node reporting Ready=False), and its
//! pods Ready=False, so Services drop them. After `eviction_timeout` not
//! ready (or a pod's own `tolerationSeconds` for the taint) its pods are
//! deleted, so their owners recreate them on other nodes. A node that
//! comes back loses the taints.
//!
//! # Failure safety
//! Evictions are rate limited per zone (`topology.kubernetes.io/region`
//! and `zone` labels), as kube-controller-manager does: a node's pods may
//! be evicted only once the node has taken a token from its zone's bucket
//! (burst 1), refilled at `eviction_rate` nodes/s in a healthy zone. A zone
//! with more than 2 not-ready nodes making at least
//! `unhealthy_zone_threshold` of it is *partially disrupted*: it evicts at
//! `secondary_eviction_rate` if it has more than
//! `large_cluster_size_threshold` nodes, else not at all. A zone with no
//! ready node is *fully disrupted*; when every zone is, nothing is evicted
//! at all ("master disruption mode") — the likelier cause is the control
//! plane's own network or the apiserver, not every kubelet at once — and on
//! leaving that mode every node's eviction timeout starts afresh.
//!
//! ```text
//! zone (ready, not ready)   state               rate (nodes/s)
//! (9, 1)                    Normal              eviction_rate
//! (4, 6)                    PartialDisruption   0 (≤ 50 nodes) / secondary
//! (0, 3), others healthy    FullDisruption      eviction_rate
//! (0, n) in every zone      all down            0 — no evictions
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;

use crate::events::{EventType, Recorder};
use crate::informer::{Cache, Informer};
use crate::util::{deleting, is_not_found, pod_ready};
use crate::Error;

/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose status is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports Ready=False.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Timings of the node lifecycle controller (Kubernetes' defaults).
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How often nodes are checked (`--node-monitor-period`, 5 s).
    pub monitor_period: Duration,
    /// Silence after which a node is Unknown (`--node-monitor-grace-period`, 40 s).
    pub grace_period: Duration,
    /// Not ready for this long → its pods are evicted (`--pod-eviction-timeout`, 5 min).
    pub eviction_timeout: Duration,
    /// Nodes per second whose pods may be evicted in a healthy zone
    /// (`--node-eviction-rate`, 0.1).
    pub eviction_rate: f64,
    /// The same in a partially disrupted large zone
    /// (`--secondary-node-eviction-rate`, 0.01).
    pub secondary_eviction_rate: f64,
    /// Share of not-ready nodes (more than 2 of them) that makes a zone
    /// partially disrupted (`--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_zone_threshold: f64,
    /// A partially disrupted zone of at most this many nodes evicts nothing
    /// (`--large-cluster-size-threshold`, 50).
    pub large_cluster_size_threshold: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// What this controller saw of one node, by its own clock.
struct Health {
    /// When a lease renewal or heartbeat change was last seen.
    probe: Instant,
    lease_renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    /// When the node was first seen not ready (cleared when ready again).
    not_ready_since: Option<Instant>,
    /// The node took a token from its zone's eviction bucket: its pods may
    /// be evicted (cleared when ready again, or in master disruption mode).
    eviction_admitted: bool,
}

/// The health of one zone, as kube-controller-manager computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    /// Evictions at the normal rate.
    Normal,
    /// Many nodes not ready: evictions slowed or stopped.
    PartialDisruption,
    /// No node ready.
    FullDisruption,
}

/// The state of a zone with `ready` and `not_ready` nodes (kube's
/// `ComputeZoneState`).
pub fn zone_state(ready: usize, not_ready: usize, unhealthy_threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (not_ready + ready) as f64 >= unhealthy_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes per second a zone of `size` nodes in `state` may have evicted;
/// `all_down` when every zone is fully disrupted.
pub fn zone_eviction_rate(
    config: &NodeLifecycleConfig,
    state: ZoneState,
    size: usize,
    all_down: bool,
) -> f64 {
    if all_down {
        return 0.0;
    }
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => config.eviction_rate,
        ZoneState::PartialDisruption if size > config.large_cluster_size_threshold => {
            config.secondary_eviction_rate
        }
        ZoneState::PartialDisruption => 0.0,
    }
}

/// A token bucket of burst 1 (kube's eviction limiter).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            tokens: 1.0,
            rate: 0.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.last = now;
    }

    /// Changes the rate, keeping the tokens earned at the old one.
    fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.rate > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-zone eviction state.
#[derive(Debug, Default)]
struct Zones {
    buckets: HashMap<String, Bucket>,
    states: HashMap<String, ZoneState>,
    /// Every zone fully disrupted at the last check.
    all_down: bool,
}

/// The zone of a node: region and zone labels, as kube's `GetZoneKey`.
fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str, old: &str| {
        labels
            .and_then(|l| l.get(k).or_else(|| l.get(old)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = get(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\x00:{zone}")
    }
}

/// The node lifecycle controller; see the module doc.
#[derive(Clone)]
pub struct NodeLifecycleController {
    client: Client,
    nodes: Cache<Node>,
    leases: Cache<Lease>,
    pods: Cache<Pod>,
    config: NodeLifecycleConfig,
    health: Arc<Mutex<HashMap<String, Health>>>,
    zones: Arc<Mutex<Zones>>,
    /// Poked when a node's Ready status changes, so taints follow at once
    /// rather than at the next period.
    changed: Arc<Notify>,
    recorder: Recorder,
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Whether `pod` tolerates a NoExecute taint `key`, and for how long
/// (`Some(None)`: forever).
fn toleration(pod: &Pod, key: &str) -> Option<Option<i64>> {
    pod.spec
        .as_ref()?
        .tolerations
        .iter()
        .flatten()
        .find_map(|t| {
            let key_ok = match t.operator.as_deref() {
                Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == key),
                _ => t.key.as_deref() == Some(key) && t.value.as_deref().unwrap_or("").is_empty(),
            };
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoExecute");
            (key_ok && effect_ok).then_some(t.toleration_seconds)
        })
}

impl NodeLifecycleController {
    /// Wires the controller to the shared informers (leases of
    /// `kube-node-lease`).
    pub fn new(
        client: Client,
        nodes: &mut Informer<Node>,
        leases: &mut Informer<Lease>,
        pods: &mut Informer<Pod>,
        config: NodeLifecycleConfig,
    ) -> NodeLifecycleController {
        let changed = Arc::new(Notify::new());
        let poke = changed.clone();
        nodes.on_change(move |old, new| {
            let status = |n: Option<&Node>| n.and_then(ready_condition).map(|c| c.status.clone());
            if status(old) != status(new) {
                poke.notify_one();
            }
        });
        NodeLifecycleController {
            recorder: Recorder::new(client.clone(), "node-controller", None),
            client,
            nodes: nodes.cache(),
            leases: leases.cache(),
            pods: pods.cache(),
            config,
            health: Arc::default(),
            zones: Arc::default(),
            changed,
        }
    }

    /// Checks the nodes every `monitor_period` until dropped.
    pub async fn run(self) {
        self.nodes.wait_ready().await;
        self.leases.wait_ready().await;
        self.pods.wait_ready().await;
        let mut tick = tokio::time::interval(self.config.monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
            }
            self.monitor().await;
        }
    }

    async fn monitor(&self) {
        let now = Instant::now();
        let nodes = self.nodes.all();
        self.health
            .lock()
            .retain(|name, _| nodes.iter().any(|n| &n.name_any() == name));
        // 1. Each node's Ready status, marked Unknown when it went silent.
        let mut seen = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = node.name_any();
            let lease = self
                .leases
                .get(LEASE_NAMESPACE, &name)
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let ready = ready_condition(&node);
            let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
            let stale = {
                let mut health = self.health.lock();
                let h = health.entry(name.clone()).or_insert(Health {
                    probe: now,
                    lease_renew: lease,
                    heartbeat,
                    not_ready_since: None,
                    eviction_admitted: false,
                });
                if lease != h.lease_renew {
                    h.lease_renew = lease;
                    h.probe = now;
                }
                if heartbeat != h.heartbeat {
                    h.heartbeat = heartbeat;
                    h.probe = now;
                }
                now.duration_since(h.probe) > self.config.grace_period
            };
            let mut status = ready.map(|c| c.status.clone()).unwrap_or_default();
            if stale && status != "Unknown" {
                match self.mark_unknown(&node).await {
                    Ok(()) => status = "Unknown".into(),
                    Err(e) => tracing::warn!(node = %name, error = %e, "cannot mark node Unknown"),
                }
            }
            if let Err(e) = self.sync_taints(&node, &status).await {
                tracing::debug!(node = %name, error = %e, "taints not updated");
            }
            seen.push((node, name, status, stale));
        }
        // 2. Zone states and eviction rates.
        let all_down = {
            let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
            for (node, _, status, _) in &seen {
                let c = counts.entry(zone_key(node)).or_default();
                if status == "True" {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
            self.update_zones(&counts, now)
        };
        // 3. Evictions, each node admitted by its zone's bucket first.
        let mut by_node: Option<HashMap<String, Vec<Arc<Pod>>>> = None;
        for (node, name, status, stale) in seen {
            if status == "True" || (status.is_empty() && !stale) {
                if let Some(h) = self.health.lock().get_mut(&name) {
                    h.not_ready_since = None;
                    h.eviction_admitted = false;
                }
                continue;
            }
            let since = {
                let mut health = self.health.lock();
                let h = health.get_mut(&name).expect("inserted above");
                *h.not_ready_since.get_or_insert(now)
            };
            let pods = by_node.get_or_insert_with(|| {
                let mut m: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
                for p in self.pods.all() {
                    if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                        m.entry(n).or_default().push(p);
                    }
                }
                m
            });
            let on_node = pods.get(&name).cloned().unwrap_or_default();
            let taint = if status == "False" {
                NOT_READY_TAINT
            } else {
                UNREACHABLE_TAINT
            };
            let not_ready_for = now.duration_since(since);
            let zone = zone_key(&node);
            for pod in on_node {
                if deleting(pod.as_ref()) {
                    continue;
                }
                let limit = match toleration(&pod, taint) {
                    Some(None) => None,
                    Some(Some(secs)) => Some(Duration::from_secs(secs.max(0) as u64)),
                    None => Some(self.config.eviction_timeout),
                };
                let due = limit.is_some_and(|l| not_ready_for >= l);
                if due && !all_down && self.admit(&name, &zone, now) {
                    self.evict(&pod).await;
                } else if pod_ready(&pod) {
                    if let Err(e) = self.mark_pod_not_ready(&pod).await {
                        tracing::debug!(pod = %pod.name_any(), error = %e, "pod not marked not ready");
                    }
                }
            }
        }
    }

    /// Sets each zone's state and eviction rate from its `(ready, not
    /// ready)` node counts; returns whether every zone is fully disrupted
    /// (master disruption mode: no evictions).
    fn update_zones(&self, counts: &HashMap<String, (usize, usize)>, now: Instant) -> bool {
        let mut zones = self.zones.lock();
        let states: HashMap<String, ZoneState> = counts
            .iter()
            .map(|(z, &(ready, not_ready))| {
                let state = zone_state(ready, not_ready, self.config.unhealthy_zone_threshold);
                (z.clone(), state)
            })
            .collect();
        let all_down =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        if all_down && !zones.all_down {
            tracing::warn!(
                "Controller detected that all Nodes are not-Ready. Entering master disruption mode."
            );
            for h in self.health.lock().values_mut() {
                h.eviction_admitted = false;
            }
        } else if !all_down && zones.all_down {
            tracing::info!(
                "Controller detected that some Nodes are Ready. Exiting master disruption mode."
            );
            // Every node gets a fresh grace period and eviction timeout.
            for h in self.health.lock().values_mut() {
                h.probe = now;
                h.not_ready_since = None;
            }
        }
        zones.all_down = all_down;
        for (zone, state) in &states {
            if zones.states.get(zone) != Some(state) {
                tracing::info!(zone = %zone.replace('\0', ""), ?state, "zone state");
            }
            let (ready, not_ready) = counts[zone];
            let rate = zone_eviction_rate(&self.config, *state, ready + not_ready, all_down);
            zones
                .buckets
                .entry(zone.clone())
                .or_insert_with(|| Bucket::new(now))
                .set_rate(rate, now);
        }
        zones.buckets.retain(|z, _| states.contains_key(z));
        zones.states = states;
        all_down
    }

    /// Whether node `name`'s pods may be evicted: once admitted it stays so
    /// until ready again; admission takes a token of its zone's bucket.
    fn admit(&self, name: &str, zone: &str, now: Instant) -> bool {
        if self
            .health
            .lock()
            .get(name)
            .is_none_or(|h| h.eviction_admitted)
        {
            return self.health.lock().contains_key(name);
        }
        let taken = self
            .zones
            .lock()
            .buckets
            .get_mut(zone)
            .is_some_and(|b| b.take(now));
        if taken {
            tracing::info!(node = %name, "node admitted for eviction");
            if let Some(h) = self.health.lock().get_mut(name) {
                h.eviction_admitted = true;
            }
        }
        taken
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), Error> {
        let now = Time(Timestamp::now());
        let mut updated = node.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if !conditions.iter().any(|c| c.type_ == "Ready") {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: None,
                last_transition_time: Some(now.clone()),
            });
        }
        for c in conditions.iter_mut() {
            if matches!(
                c.type_.as_str(),
                "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
            ) && c.status != "Unknown"
            {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
            }
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let written = api
            .replace_status(&node.name_any(), &PostParams::default(), &updated)
            .await?;
        self.nodes.write_through(written);
        self.recorder
            .publish(
                node,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {} status is now: NodeNotReady", node.name_any()),
            )
            .await;
        Ok(())
    }

    /// Puts the NoSchedule and NoExecute taints matching the Ready status
    /// on the node, and takes the others off.
    async fn sync_taints(&self, node: &Node, ready: &str) -> Result<(), Error> {
        let want: &[&str] = match ready {
            "Unknown" => &[UNREACHABLE_TAINT],
            "False" => &[NOT_READY_TAINT],
            _ => &[],
        };
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ours = |t: &Taint| t.key == UNREACHABLE_TAINT || t.key == NOT_READY_TAINT;
        let mut taints: Vec<Taint> = current
            .iter()
            .filter(|t| !ours(t) || want.contains(&t.key.as_str()))
            .cloned()
            .collect();
        for key in want {
            for effect in ["NoSchedule", "NoExecute"] {
                if !taints.iter().any(|t| t.key == *key && t.effect == effect) {
                    taints.push(Taint {
                        key: key.to_string(),
                        effect: effect.into(),
                        value: None,
                        time_added: (effect == "NoExecute").then(|| Time(Timestamp::now())),
                    });
                }
            }
        }
        if taints == current {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": taints}});
        let written = api
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        self.nodes.write_through(written);
        Ok(())
    }

    async fn mark_pod_not_ready(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
            "lastTransitionTime": Timestamp::now().to_string()}]}});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn evict(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {
                self.recorder
                    .publish(
                        pod,
                        EventType::Normal,
                        "TaintManagerEviction",
                        &format!(
                            "Marking for deletion Pod {}/{}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        ),
                    )
                    .await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "eviction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_states_as_kube_computes_them() {
        let t = 0.55;
        assert_eq!(zone_state(9, 1, t), ZoneState::Normal);
        assert_eq!(zone_state(1, 1, t), ZoneState::Normal);
        // Two not ready are never a disruption, whatever the share.
        assert_eq!(zone_state(0, 2, t), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 2, t), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, t), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, t), ZoneState::Normal);
        assert_eq!(zone_state(0, 0, t), ZoneState::Normal);
    }

    #[test]
    fn eviction_rates_by_zone_state() {
        let c = NodeLifecycleConfig::default();
        let rate = |s, n, all| zone_eviction_rate(&c, s, n, all);
        assert_eq!(rate(ZoneState::Normal, 10, false), 0.1);
        assert_eq!(rate(ZoneState::PartialDisruption, 50, false), 0.0);
        assert_eq!(rate(ZoneState::PartialDisruption, 51, false), 0.01);
        // One zone down while others are up: a real zone outage.
        assert_eq!(rate(ZoneState::FullDisruption, 3, false), 0.1);
        // Every zone down: nothing is evicted anywhere.
        assert_eq!(rate(ZoneState::FullDisruption, 3, true), 0.0);
        assert_eq!(rate(ZoneState::Normal, 3, true), 0.0);
    }

    #[test]
    fn the_bucket_admits_one_node_per_interval() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        assert!(!b.take(t0), "rate 0 admits nothing");
        b.set_rate(0.1, t0);
        assert!(b.take(t0), "burst of one");
        assert!(!b.take(t0 + Duration::from_secs(9)));
        assert!(b.take(t0 + Duration::from_secs(10)));
        b.set_rate(f64::NAN, t0 + Duration::from_secs(10));
        assert!(!b.take(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn zone_keys_from_labels() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": labels}}))
                .expect("node")
        };
        assert_eq!(zone_key(&node(serde_json::json!({}))), "");
        assert_eq!(
            zone_key(&node(serde_json::json!({
                "topology.kubernetes.io/region": "r",
                "failure-domain.beta.kubernetes.io/zone": "z"
            }))),
            "r:\x00:z"
        );
    }
}
