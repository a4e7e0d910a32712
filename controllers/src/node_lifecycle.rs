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
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            eviction_timeout: Duration::from_secs(300),
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
        let mut by_node: Option<HashMap<String, Vec<Arc<Pod>>>> = None;
        self.health
            .lock()
            .retain(|name, _| nodes.iter().any(|n| &n.name_any() == name));
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
            if status == "True" || (status.is_empty() && !stale) {
                if let Some(h) = self.health.lock().get_mut(&name) {
                    h.not_ready_since = None;
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
            for pod in on_node {
                if deleting(pod.as_ref()) {
                    continue;
                }
                let limit = match toleration(&pod, taint) {
                    Some(None) => None,
                    Some(Some(secs)) => Some(Duration::from_secs(secs.max(0) as u64)),
                    None => Some(self.config.eviction_timeout),
                };
                if limit.is_some_and(|l| not_ready_for >= l) {
                    self.evict(&pod).await;
                } else if pod_ready(&pod) {
                    if let Err(e) = self.mark_pod_not_ready(&pod).await {
                        tracing::debug!(pod = %pod.name_any(), error = %e, "pod not marked not ready");
                    }
                }
            }
        }
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
