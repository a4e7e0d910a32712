//! The pod garbage collector (kube-controller-manager's `podgc`): removes
//! pods that nothing else will ever remove.
//!
//! Every `period` it looks at the pod and node caches and, in this order:
//!
//! 1. **Terminated pods** (phase Succeeded or Failed) beyond
//!    `terminated_pod_threshold` are deleted, evicted ones first, then the
//!    oldest by creation time (name breaks ties), until the threshold is
//!    met. A threshold of 0 turns this off.
//! 2. **Terminating pods on out-of-service nodes**: a pod being deleted
//!    whose node is not Ready and carries the
//!    `node.kubernetes.io/out-of-service` taint has no kubelet to finish
//!    the deletion; it is marked Failed and force deleted.
//! 3. **Orphaned pods**, bound to a node that does not exist. A node the
//!    cache lacks may only be late to arrive, so, as Kubernetes, the name
//!    is quarantined first: only if the cache still lacks it `quarantine`
//!    later *and* a GET of the node answers 404 are its pods marked Failed
//!    with a `DisruptionTarget` condition (reason `DeletionByPodGC`) and
//!    force deleted.
//! 4. **Unscheduled terminating pods** (being deleted, no node): marked
//!    Failed and force deleted. Such a pod is kept only by a finalizer,
//!    whose holder typically waits for a terminal phase to release it.
//!
//! "Force deleted" is a DELETE with grace period 0 and a precondition on
//! the pod's uid, so a newer pod of the same name is never hit; marking
//! Failed writes `pods/status` pinned to the live pod's uid and
//! resourceVersion. A pod this controller removed is not counted again
//! while the cache still lags behind, so a slow watch cannot make it
//! delete more terminated pods than the threshold asks.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::informer::{Cache, Informer};
use crate::util::{is_conflict, is_not_found};
use crate::Error;

/// The taint that declares a node out of service (its pods may go).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Deletes in flight at once within one pass.
const CONCURRENT_DELETES: usize = 16;
/// Conflicting attempts to mark one pod Failed before giving up until the
/// next pass.
const STATUS_RETRIES: usize = 3;

/// Settings of the pod garbage collector (Kubernetes' defaults).
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// Terminated pods kept (`--terminated-pod-gc-threshold`, 12500);
    /// 0 keeps them all.
    pub terminated_pod_threshold: usize,
    /// Time between passes (20 s).
    pub period: Duration,
    /// How long a node must stay missing before its pods count as
    /// orphaned (40 s).
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_threshold: 12500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// The condition an orphaned pod gets before it is deleted.
struct Disruption {
    reason: &'static str,
    message: &'static str,
}

const NODE_GONE: Disruption = Disruption {
    reason: "DeletionByPodGC",
    message: "PodGC: node no longer exists",
};

/// Node names pods are bound to but the node cache lacks, with when each
/// was first seen missing.
#[derive(Debug, Default)]
struct Quarantine {
    since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Records the names missing now (forgetting those no longer missing)
    /// and returns the ones that have been missing for at least `period`.
    fn observe(
        &mut self,
        missing: &HashSet<String>,
        now: Instant,
        period: Duration,
    ) -> Vec<String> {
        self.since.retain(|name, _| missing.contains(name));
        let mut due = Vec::new();
        for name in missing {
            let since = *self.since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) >= period {
                due.push(name.clone());
            }
        }
        due.sort();
        due
    }

    /// Starts `name`'s quarantine over (it was found to exist).
    fn release(&mut self, name: &str) {
        self.since.remove(name);
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn terminated(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// A pod the kubelet evicted (Kubernetes' `PodIsEvicted`).
fn evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The order terminated pods go in: evicted first, then oldest, then by
/// name (and namespace).
fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    evicted(b)
        .cmp(&evicted(a))
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.name_any().cmp(&b.name_any()))
        .then_with(|| a.namespace().cmp(&b.namespace()))
}

/// The terminated pods to delete so that `threshold` remain, in order.
fn excess_terminated(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    let mut done: Vec<Arc<Pod>> = pods.iter().filter(|p| terminated(p)).cloned().collect();
    let excess = done.len().saturating_sub(threshold);
    if threshold == 0 || excess == 0 {
        return Vec::new();
    }
    done.sort_by(|a, b| deletion_order(a, b));
    done.truncate(excess);
    done
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn out_of_service(node: &Node) -> bool {
    !node_ready(node)
        && node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == OUT_OF_SERVICE_TAINT)
}

/// The pod garbage collector; see the module doc.
#[derive(Clone)]
pub struct PodGcController {
    client: Client,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    config: PodGcConfig,
    quarantine: Arc<Mutex<Quarantine>>,
    /// Uids of pods this controller removed that the cache may still
    /// hold; pruned as the cache catches up.
    removed: Arc<Mutex<HashSet<String>>>,
}

impl PodGcController {
    /// Reads the shared pod and node caches.
    pub fn new(
        client: Client,
        pods: &Informer<Pod>,
        nodes: &Informer<Node>,
        config: PodGcConfig,
    ) -> PodGcController {
        PodGcController {
            client,
            pods: pods.cache(),
            nodes: nodes.cache(),
            config,
            quarantine: Arc::default(),
            removed: Arc::default(),
        }
    }

    /// Runs a pass every `period` until dropped.
    pub async fn run(self) {
        self.pods.wait_ready().await;
        self.nodes.wait_ready().await;
        let mut tick = tokio::time::interval(self.config.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
        }
    }

    /// One look at every pod (see the module doc for the four steps).
    pub async fn pass(&self) {
        let all = self.pods.all();
        let pods: Vec<Arc<Pod>> = {
            let mut removed = self.removed.lock();
            let present: HashSet<String> = all.iter().filter_map(|p| p.uid()).collect();
            removed.retain(|uid| present.contains(uid));
            all.into_iter()
                .filter(|p| p.uid().is_none_or(|uid| !removed.contains(&uid)))
                .collect()
        };
        let nodes: HashMap<String, Arc<Node>> = self
            .nodes
            .all()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();

        if self.config.terminated_pod_threshold > 0 {
            let excess = excess_terminated(&pods, self.config.terminated_pod_threshold);
            if !excess.is_empty() {
                tracing::info!(count = excess.len(), "garbage collecting terminated pods");
            }
            self.force_delete_all(excess, None).await;
        }

        let stranded: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .filter(|p| nodes.get(node_name(p)).is_some_and(|n| out_of_service(n)))
            .cloned()
            .collect();
        self.force_delete_all(stranded, None).await;

        let gone = self.deleted_nodes(&pods, &nodes).await;
        let orphans: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| gone.contains(node_name(p)))
            .cloned()
            .collect();
        self.force_delete_all(orphans, Some(&NODE_GONE)).await;

        let unscheduled: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty())
            .cloned()
            .collect();
        self.force_delete_all(unscheduled, None).await;
    }

    /// The nodes pods are bound to that were missing from the cache a
    /// quarantine ago, still are, and that the apiserver says are gone.
    async fn deleted_nodes(
        &self,
        pods: &[Arc<Pod>],
        nodes: &HashMap<String, Arc<Node>>,
    ) -> HashSet<String> {
        let missing: HashSet<String> = pods
            .iter()
            .map(|p| node_name(p))
            .filter(|n| !n.is_empty() && !nodes.contains_key(*n))
            .map(str::to_string)
            .collect();
        let due = self
            .quarantine
            .lock()
            .observe(&missing, Instant::now(), self.config.quarantine);
        let api: Api<Node> = Api::all(self.client.clone());
        let mut gone = HashSet::new();
        for name in due {
            match api.get_opt(&name).await {
                Ok(None) => {
                    gone.insert(name);
                }
                Ok(Some(_)) => self.quarantine.lock().release(&name),
                Err(e) => tracing::warn!(node = %name, error = %e, "cannot check node"),
            }
        }
        gone
    }

    async fn force_delete_all(&self, pods: Vec<Arc<Pod>>, disruption: Option<&Disruption>) {
        futures::stream::iter(pods)
            .for_each_concurrent(CONCURRENT_DELETES, |pod| async move {
                let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                match self.fail_and_delete(&pod, disruption).await {
                    Ok(()) => tracing::info!(pod = %format!("{ns}/{name}"), "PodGC force deleted pod"),
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "PodGC could not delete pod")
                    }
                }
            })
            .await;
    }

    /// Marks `pod` Failed unless it is terminal already (with the
    /// disruption condition, if given), then deletes it with grace period 0.
    async fn fail_and_delete(
        &self,
        pod: &Pod,
        disruption: Option<&Disruption>,
    ) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        if !terminated(pod) && !self.mark_failed(&api, &name, &uid, disruption).await? {
            self.removed.lock().insert(uid);
            return Ok(());
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let removed = match api.delete(&name, &dp).await {
            // The last state of a removed pod, or one kept by finalizers.
            Ok(answer) => answer.left().is_none_or(|p| p.finalizers().is_empty()),
            // Gone already, or replaced by a pod of another uid.
            Err(e) if is_not_found(&e) || is_conflict(&e) => true,
            Err(e) => return Err(e.into()),
        };
        if removed {
            self.removed.lock().insert(uid);
        }
        Ok(())
    }

    /// Writes phase Failed on the live pod of `uid`; `false` if that pod
    /// is gone.
    async fn mark_failed(
        &self,
        api: &Api<Pod>,
        name: &str,
        uid: &str,
        disruption: Option<&Disruption>,
    ) -> Result<bool, Error> {
        let mut last = None;
        for _ in 0..STATUS_RETRIES {
            let Some(live) = api.get_opt(name).await? else {
                return Ok(false);
            };
            if live.uid().as_deref() != Some(uid) {
                return Ok(false);
            }
            if terminated(&live) {
                return Ok(true);
            }
            let mut status = json!({"phase": "Failed"});
            if let Some(d) = disruption {
                status["conditions"] = json!([{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": d.reason,
                    "message": d.message,
                    "lastTransitionTime": Timestamp::now().to_string(),
                }]);
            }
            let patch = json!({
                "metadata": {"uid": uid, "resourceVersion": live.resource_version()},
                "status": status,
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map(Error::from).unwrap_or_else(|| {
            Error::Other(format!(
                "pod {name} kept changing while being marked Failed"
            ))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, created: i64, phase: &str, reason: Option<&str>) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name},
            "status": {"phase": phase},
        }))
        .unwrap();
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p.status.as_mut().unwrap().reason = reason.map(str::to_string);
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn excess_terminated_pods_go_evicted_first_then_oldest_then_by_name() {
        let pods = vec![
            pod("running-oldest", 1, "Running", None),
            pod("b-done", 10, "Succeeded", None),
            pod("a-done", 10, "Failed", None),
            pod("new-evicted", 50, "Failed", Some("Evicted")),
            pod("old-done", 5, "Succeeded", None),
            pod("newest-done", 60, "Succeeded", None),
            pod("pending", 2, "Pending", None),
        ];
        // Five terminated, keep two: the evicted one, then the oldest two.
        assert_eq!(
            names(&excess_terminated(&pods, 2)),
            ["new-evicted", "old-done", "a-done"]
        );
        assert_eq!(
            names(&excess_terminated(&pods, 4)),
            ["new-evicted"],
            "one over the threshold"
        );
        assert!(excess_terminated(&pods, 5).is_empty(), "at the threshold");
        assert!(excess_terminated(&pods, 0).is_empty(), "0 disables");
    }

    #[test]
    fn a_node_is_due_only_after_a_full_quarantine_while_missing() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(40);
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<HashSet<_>>();
        assert!(q.observe(&set(&["a", "b"]), t0, period).is_empty());
        assert!(q
            .observe(&set(&["a", "b"]), t0 + Duration::from_secs(39), period)
            .is_empty());
        // "b" shows up, then goes missing again: its quarantine restarts.
        assert!(q
            .observe(&set(&["a"]), t0 + Duration::from_secs(39), period)
            .is_empty());
        let t40 = t0 + Duration::from_secs(40);
        assert_eq!(q.observe(&set(&["a", "b"]), t40, period), ["a"]);
        assert_eq!(
            q.observe(&set(&["a", "b"]), t40 + period, period),
            ["a", "b"]
        );
        // Found to exist by a GET: released, and quarantined afresh.
        q.release("a");
        assert_eq!(q.observe(&set(&["a", "b"]), t40 + period, period), ["b"]);
        assert!(q.observe(&set(&[]), t40 + period, period).is_empty());
        assert!(q.since.is_empty());
    }

    #[test]
    fn out_of_service_needs_the_taint_and_a_node_not_ready() {
        let node = |ready: &str, taint: Option<&str>| -> Node {
            let mut v = json!({"metadata": {"name": "n"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}});
            if let Some(t) = taint {
                v["spec"] = json!({"taints": [{"key": t, "effect": "NoExecute"}]});
            }
            serde_json::from_value(v).unwrap()
        };
        assert!(out_of_service(&node("False", Some(OUT_OF_SERVICE_TAINT))));
        assert!(out_of_service(&node("Unknown", Some(OUT_OF_SERVICE_TAINT))));
        assert!(!out_of_service(&node("True", Some(OUT_OF_SERVICE_TAINT))));
        assert!(!out_of_service(&node("False", Some("other"))));
        assert!(!out_of_service(&node("False", None)));
    }
}
