//! The DaemonSet controller (apps/v1): one pod per eligible node, as
//! kube-controller-manager's daemon controller runs them.
//!
//! # Which nodes
//! A node is eligible when it matches the template's `nodeSelector` and
//! required node affinity and the pod tolerates its `NoSchedule` and
//! `NoExecute` taints. Every daemon pod tolerates what Kubernetes adds to
//! them: `not-ready` and `unreachable` (NoExecute), `disk-pressure`,
//! `memory-pressure`, `pid-pressure` and `unschedulable` (NoSchedule), and
//! `network-unavailable` for host-network pods — so a cordoned or not-ready
//! node keeps its daemon. A pod already on a node whose new `NoExecute`
//! taint it does not tolerate, or whose labels stopped matching, is
//! deleted; a pod on a node that no longer exists is deleted too (kube
//! leaves a scheduled one to the pod GC; here the DaemonSet cleans up after
//! itself at once).
//!
//! # Placement
//! The pod names its node by a required node affinity on the node's
//! `metadata.name` (`matchFields`), as Kubernetes ≥ 1.12 does, and the
//! scheduler binds it — so resource checks still apply.
//!
//! # History and updates
//! Each distinct template is a ControllerRevision `<ds>-<hash>` owned by
//! the DaemonSet (`data` = `{"spec":{"template":{…,"$patch":"replace"}}}`,
//! what `kubectl rollout undo` patches back), labelled with the selector's
//! labels and `controller-revision-hash`; its pods carry the same label and
//! `pod-template-generation`. Returning to an older template renumbers its
//! revision to the newest. Old revisions beyond `revisionHistoryLimit` that
//! no pod uses are deleted.
//!
//! `RollingUpdate` replaces old pods node by node: with `maxSurge: 0`, at
//! most `maxUnavailable` nodes are without an available pod (an old pod
//! that is not available is replaced at once); with `maxSurge > 0`, a new
//! pod starts beside the old one on up to `maxSurge` nodes and the old one
//! goes once the new one is available. `OnDelete` only replaces pods the
//! user deletes.
//!
//! # Status
//! `desiredNumberScheduled` (eligible nodes), `currentNumberScheduled`
//! (eligible nodes with a daemon pod), `numberMisscheduled` (ineligible
//! nodes with one), `numberReady`, `numberAvailable`, `numberUnavailable`,
//! `updatedNumberScheduled`, `observedGeneration` — what `kubectl rollout
//! status ds/x` and `kubectl get ds` read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodTemplateSpec, Taint,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::replicaset::BURST_REPLICAS;
use crate::util::{
    claim, controller_ref, deleting, is_not_found, owner_ref, pod_available, pod_ready, Selector,
};
use crate::Error;

/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";
/// The label with the template generation a pod was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The DaemonSet annotation carrying its template generation.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";
/// First delay before a failed daemon pod is replaced; doubles per failure.
const FAILED_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay before a failed daemon pod is replaced.
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// Expectations older than this are considered met (a lost event).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
/// Name-collision retries when storing a revision.
const COLLISION_RETRIES: i32 = 5;

/// The tolerations every daemon pod gets: (key, effect).
const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
/// Added for host-network pods only.
const NETWORK_UNAVAILABLE: (&str, &str) = ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// Pod creations and deletions awaited per DaemonSet: it is not synced
/// again until its pod cache has shown them (or 5 minutes passed, in case
/// an event was lost), so a lagging cache never doubles a daemon.
#[derive(Clone, Default)]
struct Expectations {
    inner: Arc<Mutex<HashMap<Key, Expected>>>,
}

/// Creations still to see, deletions still to see, and since when.
type Expected = (i64, HashSet<Key>, Instant);

/// Per (DaemonSet, node): when a failed pod may next be replaced, and the
/// delay after that.
type Backoffs = HashMap<(Key, String), (Instant, Duration)>;

impl Expectations {
    fn satisfied(&self, key: &Key) -> bool {
        match self.inner.lock().get(key) {
            None => true,
            Some((add, del, at)) => {
                (*add <= 0 && del.is_empty()) || at.elapsed() > EXPECTATIONS_TTL
            }
        }
    }

    fn expect(&self, key: &Key, creations: usize, deletions: impl IntoIterator<Item = Key>) {
        let entry = (
            creations as i64,
            deletions.into_iter().collect(),
            Instant::now(),
        );
        self.inner.lock().insert(key.clone(), entry);
    }

    fn creation_observed(&self, key: &Key) {
        if let Some(e) = self.inner.lock().get_mut(key) {
            e.0 -= 1;
        }
    }

    fn deletion_observed(&self, key: &Key, pod: &Key) {
        if let Some(e) = self.inner.lock().get_mut(key) {
            e.1.remove(pod);
        }
    }

    fn forget(&self, key: &Key) {
        self.inner.lock().remove(key);
    }
}

/// The DaemonSet controller; see the module doc.
#[derive(Clone)]
pub struct DaemonSetController {
    client: Client,
    daemonsets: Cache<DaemonSet>,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
    revisions: Cache<ControllerRevision>,
    queue: Queue<Key>,
    expectations: Expectations,
    recorder: Recorder,
    backoff: Arc<Mutex<Backoffs>>,
}

/// The key of the DaemonSet controlling `obj`, if cached with that uid.
fn owner_key<K: kube::Resource>(daemonsets: &Cache<DaemonSet>, obj: &K) -> Option<Key> {
    let r = controller_ref(obj)?;
    if r.kind != "DaemonSet" {
        return None;
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let ds = daemonsets.get(&ns, &r.name)?;
    (ds.uid().as_deref() == Some(r.uid.as_str())).then(|| (ns, r.name.clone()))
}

impl DaemonSetController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        daemonsets: &mut Informer<DaemonSet>,
        pods: &mut Informer<Pod>,
        nodes: &mut Informer<Node>,
        revisions: &mut Informer<ControllerRevision>,
    ) -> DaemonSetController {
        let c = DaemonSetController {
            recorder: Recorder::new(client.clone(), "daemonset-controller", None),
            client,
            daemonsets: daemonsets.cache(),
            pods: pods.cache(),
            nodes: nodes.cache(),
            revisions: revisions.cache(),
            queue: Queue::new(),
            expectations: Expectations::default(),
            backoff: Arc::default(),
        };
        let (q, exp) = (c.queue.clone(), c.expectations.clone());
        daemonsets.on_change(move |old, new| match (old, new) {
            (_, Some(ds)) => q.add(key_of(ds)),
            (Some(ds), None) => exp.forget(&key_of(ds)),
            (None, None) => {}
        });
        let h = c.clone();
        pods.on_change(move |old, new| h.pod_changed(old, new));
        let h = c.clone();
        nodes.on_change(move |old, new| {
            // A node's labels, taints or existence decide where daemons
            // run; status-only changes (heartbeats) do not.
            let relevant = match (old, new) {
                (Some(o), Some(n)) => o.labels() != n.labels() || o.spec != n.spec,
                _ => true,
            };
            if relevant {
                for ds in h.daemonsets.all() {
                    h.queue.add(key_of(ds.as_ref()));
                }
            }
        });
        let h = c.clone();
        revisions.on_change(move |old, new| {
            if let Some(k) = new.or(old).and_then(|r| owner_key(&h.daemonsets, r)) {
                h.queue.add(k);
            }
        });
        c
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        match (old, new) {
            (None, Some(pod)) => {
                if let Some(key) = owner_key(&self.daemonsets, pod) {
                    self.expectations.creation_observed(&key);
                    self.queue.add(key);
                } else if controller_ref(pod).is_none() {
                    self.enqueue_matching(pod);
                }
            }
            (Some(old), Some(pod)) => {
                let key = owner_key(&self.daemonsets, pod);
                if deleting(pod) && !deleting(old) {
                    if let Some(key) = &key {
                        self.expectations.deletion_observed(key, &key_of(pod));
                    }
                }
                if let Some(k) =
                    owner_key(&self.daemonsets, old).filter(|k| Some(k) != key.as_ref())
                {
                    self.queue.add(k);
                }
                match key {
                    Some(key) => {
                        if pod_ready(old) != pod_ready(pod) {
                            let min_ready = self
                                .daemonsets
                                .get(&key.0, &key.1)
                                .and_then(|ds| ds.spec.as_ref()?.min_ready_seconds)
                                .unwrap_or(0);
                            if min_ready > 0 {
                                self.queue.add_after(
                                    key.clone(),
                                    Duration::from_secs(min_ready as u64 + 1),
                                );
                            }
                        }
                        self.queue.add(key)
                    }
                    None if controller_ref(pod).is_none() => self.enqueue_matching(pod),
                    None => {}
                }
            }
            (Some(pod), None) => {
                if let Some(key) = owner_key(&self.daemonsets, pod) {
                    self.expectations.deletion_observed(&key, &key_of(pod));
                    self.queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for ds in self.daemonsets.namespace(&ns) {
            if selector_of(&ds).is_ok_and(|s| s.matches(pod.labels())) {
                self.queue.add(key_of(ds.as_ref()));
            }
        }
    }

    /// Processes queued DaemonSets with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.daemonsets.wait_ready().await;
        self.pods.wait_ready().await;
        self.nodes.wait_ready().await;
        self.revisions.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(ds) = self.daemonsets.get(&key.0, &key.1) else {
            self.expectations.forget(&key);
            self.backoff.lock().retain(|(k, _), _| *k != key);
            return Ok(None);
        };
        let selector = match selector_of(&ds) {
            Ok(s) if !s.is_nothing() && !empty_selector(&ds) => s,
            Ok(_) => {
                let msg = "empty selector is invalid for daemonset";
                self.recorder
                    .publish(ds.as_ref(), EventType::Warning, "SelectingAll", msg)
                    .await;
                return Ok(None);
            }
            Err(msg) => {
                self.recorder
                    .publish(ds.as_ref(), EventType::Warning, "InvalidSelector", &msg)
                    .await;
                return Ok(None);
            }
        };
        if deleting(ds.as_ref()) {
            return Ok(None);
        }
        let pods = self.claim_pods(&ds, &selector).await?;
        let (current, old) = self.construct_history(&ds, &selector).await?;
        let hash = current
            .labels()
            .get(REVISION_HASH)
            .cloned()
            .unwrap_or_default();
        let nodes = self.nodes.all();
        let plan = Plan::new(&ds, &nodes, &pods, &hash);
        let mut requeue = None;
        let mut failure = None;
        if self.expectations.satisfied(&key) {
            let (delete, failed_wait) = self.failed_pods(&key, &plan, &ds).await;
            requeue = failed_wait;
            let mut create: Vec<String> = plan
                .nodes
                .iter()
                .filter(|n| n.should_run && n.pods.is_empty() && n.terminating == 0)
                .filter(|n| !self.backing_off(&key, &n.name))
                .map(|n| n.name.clone())
                .collect();
            let mut delete = delete;
            for n in &plan.nodes {
                if !n.should_continue {
                    delete.extend(n.pods.iter().cloned());
                } else if n.pods.len() > 1 && !plan.surge_allowed() {
                    // Several daemons on one node: keep the oldest.
                    delete.extend(n.sorted_pods().into_iter().skip(1));
                }
            }
            delete.extend(plan.orphaned.iter().cloned());
            if plan.rolling() {
                let (more_delete, surge) = plan.rolling_update(&ds);
                delete.extend(more_delete);
                create.extend(surge);
            }
            delete.sort_by_key(|p| p.name_any());
            delete.dedup_by_key(|p| p.name_any());
            if let Err(e) = self.sync_nodes(&ds, &key, &create, &delete, &hash).await {
                failure = Some(e);
            }
            self.cleanup_history(&ds, &old).await?;
        }
        let status = plan.status(&ds, current_collisions(&ds));
        if ds.status.as_ref() != Some(&status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &key.0);
            let body = DaemonSet {
                metadata: ObjectMeta {
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
                status: Some(status.clone()),
            };
            let patch = Patch::Merge(json!({"status": body.status}));
            match api
                .patch_status(&key.1, &PatchParams::default(), &patch)
                .await
            {
                Ok(updated) => self.daemonsets.write_through(updated),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // An available count still waiting on minReadySeconds.
        let min_ready = ds
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if min_ready > 0 && status.number_ready > status.number_available.unwrap_or(0) {
            requeue = Some(Duration::from_secs(1));
        }
        Ok(requeue)
    }

    fn backing_off(&self, key: &Key, node: &str) -> bool {
        self.backoff
            .lock()
            .get(&(key.clone(), node.to_string()))
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// Starts the next back-off of (DaemonSet, node) and returns its delay,
    /// or the time left of the running one.
    fn next_backoff(&self, key: &Key, node: &str, now: Instant) -> Result<Duration, Duration> {
        let mut backoff = self.backoff.lock();
        let bk = (key.clone(), node.to_string());
        let entry = backoff.get(&bk).copied();
        if let Some((until, _)) = entry.filter(|(until, _)| now < *until) {
            return Err(until - now);
        }
        let delay = entry.map_or(FAILED_BACKOFF_BASE, |(_, d)| {
            (d * 2).min(FAILED_BACKOFF_MAX)
        });
        backoff.insert(bk, (now + delay, delay));
        Ok(delay)
    }

    /// Failed daemon pods to delete, with a back-off per node before the
    /// next one is replaced; also when to look again.
    async fn failed_pods(
        &self,
        key: &Key,
        plan: &Plan,
        ds: &DaemonSet,
    ) -> (Vec<Arc<Pod>>, Option<Duration>) {
        let mut delete = Vec::new();
        let mut wait: Option<Duration> = None;
        let now = Instant::now();
        for n in &plan.nodes {
            let failed: Vec<&Arc<Pod>> = n.pods.iter().filter(|p| phase(p) == "Failed").collect();
            if failed.is_empty() || !n.should_continue {
                continue;
            }
            let delay = match self.next_backoff(key, &n.name, now) {
                Ok(delay) => delay,
                Err(left) => {
                    wait = Some(wait.map_or(left, |w| w.min(left)));
                    continue;
                }
            };
            wait = Some(wait.map_or(delay, |w| w.min(delay)));
            for p in failed {
                let msg = format!(
                    "Found failed daemon pod {}/{} on node {}, will try to kill it",
                    key.0,
                    p.name_any(),
                    n.name
                );
                self.recorder
                    .publish(ds, EventType::Warning, "FailedDaemonPod", &msg)
                    .await;
                delete.push(p.clone());
            }
        }
        (delete, wait)
    }

    /// The pods this DaemonSet controls after adopting matching orphans
    /// and releasing controlled pods that stopped matching.
    async fn claim_pods(
        &self,
        ds: &Arc<DaemonSet>,
        selector: &Selector,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        let ns = ds.namespace().unwrap_or_default();
        claim(&self.client, ds.as_ref(), self.pods.namespace(&ns), |p| {
            selector.matches(p.labels())
        })
        .await
    }

    /// The revision of the current template (created, or renumbered to the
    /// newest, as needed) and the older ones.
    async fn construct_history(
        &self,
        ds: &Arc<DaemonSet>,
        selector: &Selector,
    ) -> Result<(ControllerRevision, Vec<ControllerRevision>), Error> {
        let ns = ds.namespace().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
        // Orphaned revisions of ours (the owner was deleted with orphan
        // propagation and recreated) are adopted.
        let history: Vec<ControllerRevision> = claim(
            &self.client,
            ds.as_ref(),
            self.revisions.namespace(&ns),
            |r| selector.matches(r.labels()),
        )
        .await?
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();
        let data = revision_data(ds);
        let max = history.iter().map(|r| r.revision).max().unwrap_or(0);
        let mut matching: Vec<ControllerRevision> = history
            .iter()
            .filter(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
            .cloned()
            .collect();
        matching.sort_by_key(|r| r.revision);
        let current = match matching.pop() {
            Some(cur) if cur.revision >= max => cur,
            Some(cur) => {
                // Back to an older template (a rollback): it becomes the
                // newest revision.
                let patch = Patch::Merge(json!({"revision": max + 1}));
                api.patch(&cur.name_any(), &PatchParams::default(), &patch)
                    .await?
            }
            None => self.create_revision(ds, &api, data, max + 1).await?,
        };
        let cur_name = current.name_any();
        let old = history
            .into_iter()
            .filter(|r| r.name_any() != cur_name)
            .collect();
        Ok((current, old))
    }

    async fn create_revision(
        &self,
        ds: &Arc<DaemonSet>,
        api: &Api<ControllerRevision>,
        data: Value,
        revision: i64,
    ) -> Result<ControllerRevision, Error> {
        let mut collisions = current_collisions(ds);
        for _ in 0..COLLISION_RETRIES {
            let hash = template_hash(&data, collisions);
            let mut labels = ds
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.clone());
            let body = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", ds.name_any())),
                    namespace: ds.namespace(),
                    labels: Some(labels),
                    owner_references: Some(vec![owner_ref(ds.as_ref())]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(data.clone())),
                revision,
            };
            match api.create(&PostParams::default(), &body).await {
                Ok(r) => return Ok(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = api.get(&body.name_any()).await?;
                    let ours =
                        controller_ref(&existing).map(|r| r.uid.as_str()) == ds.uid().as_deref();
                    if ours && existing.data.as_ref().map(|d| &d.0) == Some(&data) {
                        return Ok(existing);
                    }
                    // Someone else's revision under our name: next hash.
                    collisions += 1;
                    let dss: Api<DaemonSet> =
                        Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
                    let patch = Patch::Merge(json!({"status": {"collisionCount": collisions}}));
                    dss.patch_status(&ds.name_any(), &PatchParams::default(), &patch)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Other(format!(
            "daemonset {}: no free revision name after {COLLISION_RETRIES} hash collisions",
            ds.name_any()
        )))
    }

    /// Deletes old revisions beyond `revisionHistoryLimit` that no pod
    /// uses, oldest first.
    async fn cleanup_history(
        &self,
        ds: &Arc<DaemonSet>,
        old: &[ControllerRevision],
    ) -> Result<(), Error> {
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        if old.len() <= limit {
            return Ok(());
        }
        let ns = ds.namespace().unwrap_or_default();
        let live: Vec<String> = self
            .pods
            .namespace(&ns)
            .iter()
            .filter_map(|p| p.labels().get(REVISION_HASH).cloned())
            .collect();
        let mut candidates: Vec<&ControllerRevision> = old
            .iter()
            .filter(|r| {
                r.labels()
                    .get(REVISION_HASH)
                    .is_none_or(|h| !live.contains(h))
            })
            .collect();
        candidates.sort_by_key(|r| r.revision);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
        for r in candidates.into_iter().take(old.len() - limit) {
            match api.delete(&r.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates a pod on each node of `create` and deletes `delete`, with
    /// expectations so a lagging cache never doubles a daemon.
    async fn sync_nodes(
        &self,
        ds: &Arc<DaemonSet>,
        key: &Key,
        create: &[String],
        delete: &[Arc<Pod>],
        hash: &str,
    ) -> Result<(), Error> {
        let create = &create[..create.len().min(BURST_REPLICAS)];
        let delete = &delete[..delete.len().min(BURST_REPLICAS)];
        if create.is_empty() && delete.is_empty() {
            return Ok(());
        }
        self.expectations
            .expect(key, create.len(), delete.iter().map(|p| key_of(p.as_ref())));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let generation = template_generation(ds);
        let mut first_error: Option<kube::Error> = None;
        let pp = PostParams::default();
        let mut batch = 1;
        let mut done = 0;
        while done < create.len() && first_error.is_none() {
            let size = batch.min(create.len() - done);
            let chunk = &create[done..done + size];
            let results = join_all(chunk.iter().map(|node| {
                let pod = daemon_pod(ds, node, hash, generation.clone());
                let api = api.clone();
                let pp = pp.clone();
                async move { api.create(&pp, &pod).await }
            }))
            .await;
            done += size;
            for r in results {
                match r {
                    Ok(pod) => {
                        let msg = format!("Created pod: {}", pod.name_any());
                        self.recorder
                            .publish(ds.as_ref(), EventType::Normal, "SuccessfulCreate", &msg)
                            .await;
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        first_error.get_or_insert(e);
                    }
                }
            }
            batch *= 2;
        }
        for _ in done..create.len() {
            self.expectations.creation_observed(key);
        }
        if let Some(e) = &first_error {
            self.recorder
                .publish(
                    ds.as_ref(),
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
        }
        let results = join_all(delete.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            let name = p.name_any();
            async move { api.delete(&name, &dp).await }
        }))
        .await;
        for (pod, r) in delete.iter().zip(results) {
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {}", pod.name_any());
                    self.recorder
                        .publish(ds.as_ref(), EventType::Normal, "SuccessfulDelete", &msg)
                        .await;
                }
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &key_of(pod.as_ref()));
                    if !is_not_found(&e) && !is_precondition_failure(&e) {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

fn is_precondition_failure(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn selector_of(ds: &DaemonSet) -> Result<Selector, String> {
    Selector::from_label_selector(ds.spec.as_ref().map(|s| &s.selector))
}

fn empty_selector(ds: &DaemonSet) -> bool {
    ds.spec.as_ref().is_none_or(|s| {
        s.selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && s.selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty())
    })
}

fn current_collisions(ds: &DaemonSet) -> i32 {
    ds.status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0)
}

fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.annotations().get(TEMPLATE_GENERATION).cloned()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The template as a revision stores it (what `kubectl rollout undo`
/// patches back): `{"spec":{"template":{…,"$patch":"replace"}}}`.
pub fn revision_data(ds: &DaemonSet) -> Value {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The revision hash of a template (FNV-1a of its JSON and the collision
/// count, spelled with Kubernetes' safe alphabet of consonants and digits).
pub fn template_hash(data: &Value, collisions: i32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let text = data.to_string();
    let count = collisions.to_string();
    let bytes = text.as_bytes().iter().chain(count.as_bytes());
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHABET[usize::from(c) % ALPHABET.len()] as char)
        .collect()
}

/// The node a daemon pod is for: its `nodeName`, else the single node its
/// required affinity names by `metadata.name`.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let vs = r.values.as_ref()?;
            (r.key == "metadata.name" && r.operator == "In" && vs.len() == 1).then(|| vs[0].clone())
        })
    })
}

/// The tolerations of a daemon pod: the template's plus the defaults.
pub fn daemon_tolerations(template: &PodTemplateSpec) -> Vec<Toleration> {
    let spec = template.spec.as_ref();
    let mut tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let extra = host_network.then_some(NETWORK_UNAVAILABLE);
    for (key, effect) in DEFAULT_TOLERATIONS.iter().copied().chain(extra) {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
    tolerations
}

/// The pod a DaemonSet runs on `node`.
pub fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str, generation: Option<String>) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tolerations = daemon_tolerations(&template);
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    if let Some(g) = generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g);
    }
    let mut spec = template.spec.unwrap_or_default();
    spec.tolerations = Some(tolerations);
    let mut affinity = spec.affinity.take().unwrap_or_default();
    let mut node_affinity = affinity.node_affinity.take().unwrap_or_default();
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    });
    affinity.node_affinity = Some(node_affinity);
    spec.affinity = Some(affinity);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(num), values.first().and_then(|b| num(b)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node.name_any();
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels().get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name.as_str());
            requirement_matches(r, value)
        })
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// (should run, should keep running) for a daemon of `template` on
/// `node`: selector and required affinity must match; untolerated
/// NoSchedule/NoExecute taints stop new daemons, NoExecute ones evict.
pub fn node_should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let spec = template.spec.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .all(|(k, v)| node.labels().get(k) == Some(v));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let tolerations = daemon_tolerations(template);
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let (mut run, mut keep) = (true, true);
    for taint in &taints {
        if !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            || tolerations.iter().any(|t| tolerates(t, taint))
        {
            continue;
        }
        run = false;
        if taint.effect == "NoExecute" {
            keep = false;
        }
    }
    (run, keep)
}

/// One node's situation.
struct NodePlan {
    name: String,
    should_run: bool,
    should_continue: bool,
    /// The DaemonSet's pods for this node that are not being deleted.
    pods: Vec<Arc<Pod>>,
    /// Its pods for this node that are being deleted: no new daemon
    /// starts until they are gone (host ports, as Kubernetes).
    terminating: usize,
}

impl NodePlan {
    fn sorted_pods(&self) -> Vec<Arc<Pod>> {
        let mut pods = self.pods.clone();
        pods.sort_by_key(|p| {
            (
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second())
                    .unwrap_or(i64::MAX),
                p.name_any(),
            )
        });
        pods
    }
}

/// Every node with what should run there, for one sync.
struct Plan {
    nodes: Vec<NodePlan>,
    /// Pods for nodes that do not exist.
    orphaned: Vec<Arc<Pod>>,
    hash: String,
    generation: Option<String>,
    min_ready: i32,
    now: Timestamp,
    strategy: Strategy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    OnDelete,
    /// (maxUnavailable, maxSurge) as counts of nodes.
    Rolling(usize, usize),
}

/// An int-or-percent of `total`: a percentage rounds up (maxUnavailable
/// and maxSurge alike, as Kubernetes' DaemonSet does).
fn scaled(v: Option<&IntOrString>, total: usize, default: usize) -> usize {
    match v {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0) as usize,
        Some(IntOrString::String(s)) => {
            let pct: usize = s.trim_end_matches('%').parse().unwrap_or(0);
            (pct * total).div_ceil(100)
        }
    }
}

impl Plan {
    fn new(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], hash: &str) -> Plan {
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        let mut terminating: HashMap<String, usize> = HashMap::new();
        for p in pods {
            let Some(n) = target_node(p) else {
                continue;
            };
            if deleting(p.as_ref()) {
                *terminating.entry(n).or_default() += 1;
            } else {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        let mut plans = Vec::new();
        for node in nodes {
            let name = node.name_any();
            let (should_run, should_continue) = node_should_run(&template, node);
            plans.push(NodePlan {
                pods: by_node.remove(&name).unwrap_or_default(),
                terminating: terminating.get(&name).copied().unwrap_or(0),
                name,
                should_run,
                should_continue,
            });
        }
        let desired = plans.iter().filter(|n| n.should_run).count();
        let spec = ds.spec.as_ref();
        let strategy = match spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
        {
            Some("OnDelete") => Strategy::OnDelete,
            _ => {
                let ru = spec
                    .and_then(|s| s.update_strategy.as_ref())
                    .and_then(|u| u.rolling_update.as_ref());
                let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0);
                let mut unavailable =
                    scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
                if surge == 0 && unavailable == 0 {
                    // A percentage that rounds to nothing still lets one go.
                    unavailable = 1;
                }
                Strategy::Rolling(unavailable, surge)
            }
        };
        Plan {
            nodes: plans,
            orphaned: by_node.into_values().flatten().collect(),
            hash: hash.to_string(),
            generation: template_generation(ds),
            min_ready: spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
            now: Timestamp::now(),
            strategy,
        }
    }

    fn rolling(&self) -> bool {
        matches!(self.strategy, Strategy::Rolling(..))
    }

    fn surge_allowed(&self) -> bool {
        matches!(self.strategy, Strategy::Rolling(_, s) if s > 0)
    }

    fn updated(&self, p: &Pod) -> bool {
        let labels = p.labels();
        (!self.hash.is_empty() && labels.get(REVISION_HASH) == Some(&self.hash))
            || (self.generation.is_some()
                && labels.get(TEMPLATE_GENERATION_LABEL) == self.generation.as_ref())
    }

    fn available(&self, p: &Pod) -> bool {
        pod_available(p, self.min_ready, self.now)
    }

    /// The rolling update's old pods to delete now, and the nodes that get
    /// a surge pod beside their old one.
    fn rolling_update(&self, ds: &DaemonSet) -> (Vec<Arc<Pod>>, Vec<String>) {
        let Strategy::Rolling(max_unavailable, max_surge) = self.strategy else {
            return (Vec::new(), Vec::new());
        };
        let _ = ds;
        let mut delete = Vec::new();
        let mut surge = Vec::new();
        if max_surge == 0 {
            let mut unavailable = 0usize;
            let mut candidates = Vec::new();
            for n in self.nodes.iter().filter(|n| n.should_continue) {
                let live: Vec<&Arc<Pod>> = n.pods.iter().filter(|p| phase(p) != "Failed").collect();
                let (new, old): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                    live.iter().partition(|p| self.updated(p));
                match (new.first(), old.first()) {
                    _ if live.len() > 1 => unavailable += 1,
                    (None, None) => unavailable += usize::from(n.should_run),
                    (Some(p), None) => unavailable += usize::from(!self.available(p)),
                    (None, Some(p)) if !self.available(p) => {
                        // Replaced at once, but it counts as unavailable.
                        unavailable += 1;
                        delete.push((*p).clone());
                    }
                    (None, Some(p)) => candidates.push((*p).clone()),
                    (Some(_), Some(_)) => unavailable += 1,
                }
            }
            let budget = max_unavailable.saturating_sub(unavailable);
            delete.extend(candidates.into_iter().take(budget));
            return (delete, surge);
        }
        // Surge: a new pod beside the old one, the old one deleted once
        // the new one is available.
        let mut surging = 0usize;
        let mut want = Vec::new();
        for n in self.nodes.iter().filter(|n| n.should_continue) {
            let live: Vec<&Arc<Pod>> = n.pods.iter().filter(|p| phase(p) != "Failed").collect();
            let (new, old): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                live.iter().partition(|p| self.updated(p));
            match (new.first(), old.is_empty()) {
                (Some(p), false) => {
                    if self.available(p) {
                        delete.extend(old.into_iter().cloned());
                    } else {
                        surging += 1;
                    }
                }
                (None, false) => {
                    if old.iter().any(|p| !self.available(p)) {
                        // Nothing to keep available: replace at once.
                        delete.extend(old.into_iter().cloned());
                    } else if n.should_run {
                        want.push(n.name.clone());
                    }
                }
                _ => {}
            }
        }
        surge.extend(want.into_iter().take(max_surge.saturating_sub(surging)));
        (delete, surge)
    }

    fn status(&self, ds: &DaemonSet, collisions: i32) -> DaemonSetStatus {
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        for n in &self.nodes {
            if n.should_run {
                desired += 1;
            }
            let sorted = n.sorted_pods();
            let Some(first) = sorted.first() else {
                continue;
            };
            if !n.should_run {
                misscheduled += 1;
                continue;
            }
            current += 1;
            if pod_ready(first) {
                ready += 1;
                if self.available(first) {
                    available += 1;
                }
            }
            if sorted.iter().any(|p| self.updated(p)) {
                updated += 1;
            }
        }
        let old = ds.status.as_ref();
        DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: current,
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_available: Some(available),
            number_unavailable: Some(desired - available),
            updated_number_scheduled: Some(updated),
            observed_generation: ds.metadata.generation,
            collision_count: (collisions > 0).then_some(collisions),
            conditions: old.and_then(|s| s.conditions.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints}}))
            .unwrap(),
        )
    }

    fn ds(spec_extra: Value) -> DaemonSet {
        let mut spec = json!({"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "ns",
            "uid": "u-1", "generation": 2,
            "annotations": {TEMPLATE_GENERATION: "2"}}, "spec": spec}))
        .unwrap()
    }

    fn template(d: &DaemonSet) -> PodTemplateSpec {
        d.spec.as_ref().unwrap().template.clone()
    }

    #[test]
    fn eligibility_follows_selector_affinity_and_taints() {
        let mut d = ds(json!({}));
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("role".to_string(), "edge".to_string())].into());
        let t = template(&d);
        assert_eq!(
            node_should_run(&t, &node("a", json!({"role": "edge"}), json!([]))),
            (true, true)
        );
        assert_eq!(
            node_should_run(&t, &node("b", json!({}), json!([]))),
            (false, false)
        );
        // Default tolerations: a cordoned, not-ready or pressured node keeps its daemon.
        let tolerated = json!([
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]);
        assert_eq!(
            node_should_run(&t, &node("c", json!({"role": "edge"}), tolerated)),
            (true, true)
        );
        let no_schedule = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
        assert_eq!(
            node_should_run(&t, &node("d", json!({"role": "edge"}), no_schedule.clone())),
            (false, true)
        );
        let no_execute = json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]);
        assert_eq!(
            node_should_run(&t, &node("e", json!({"role": "edge"}), no_execute)),
            (false, false)
        );
        let prefer = json!([{"key": "x", "effect": "PreferNoSchedule"}]);
        assert_eq!(
            node_should_run(&t, &node("f", json!({"role": "edge"}), prefer)),
            (true, true)
        );
        // A toleration of the user's taint lets the daemon on.
        let mut tol = d.clone();
        tol.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .tolerations = Some(vec![serde_json::from_value(
            json!({"key": "dedicated", "operator": "Equal",
                "value": "gpu", "effect": "NoSchedule"}),
        )
        .unwrap()]);
        assert_eq!(
            node_should_run(
                &template(&tol),
                &node("d", json!({"role": "edge"}), no_schedule)
            ),
            (true, true)
        );
        // Required node affinity, by label and by name.
        let aff = ds(
            json!({"template": {"metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]}]}}}}}}),
        );
        let t = template(&aff);
        assert!(node_should_run(&t, &node("n1", json!({"zone": "z1"}), json!([]))).0);
        assert!(node_should_run(&t, &node("n9", json!({}), json!([]))).0);
        assert!(!node_should_run(&t, &node("n2", json!({"zone": "z2"}), json!([]))).0);
    }

    #[test]
    fn daemon_pods_name_their_node_and_tolerate_the_defaults() {
        let d = ds(json!({}));
        let p = daemon_pod(&d, "n1", "abc", Some("2".into()));
        assert_eq!(target_node(&p).as_deref(), Some("n1"));
        assert_eq!(p.labels()[REVISION_HASH], "abc");
        assert_eq!(p.labels()[TEMPLATE_GENERATION_LABEL], "2");
        assert_eq!(p.labels()["app"], "agent");
        let tol = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(tol.len(), DEFAULT_TOLERATIONS.len());
        assert!(tol.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.effect.as_deref() == Some("NoExecute")
        ));
        let r = controller_ref(&p).unwrap();
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("DaemonSet", "u-1"));
        // Host-network pods also tolerate network-unavailable.
        let mut hn = d.clone();
        hn.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .host_network = Some(true);
        assert_eq!(
            daemon_tolerations(&template(&hn)).len(),
            DEFAULT_TOLERATIONS.len() + 1
        );
    }

    #[test]
    fn hashes_and_revision_data() {
        let d = ds(json!({}));
        let data = revision_data(&d);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["metadata"]["labels"]["app"],
            "agent"
        );
        let h = template_hash(&data, 0);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        assert_eq!(h, template_hash(&data, 0));
        assert_ne!(h, template_hash(&data, 1));
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let status = if ready { "True" } else { "False" };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "creationTimestamp": "2020-01-01T00:00:00Z",
                "labels": {"app": "agent", REVISION_HASH: hash}},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status,
                    "lastTransitionTime": "2020-01-01T00:00:00Z"}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn rolling_update_keeps_within_max_unavailable() {
        let d = ds(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}}));
        let nodes: Vec<Arc<Node>> = ["a", "b", "c"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let pods = vec![
            pod("p1", "a", "old", true),
            pod("p2", "b", "old", true),
            pod("p3", "c", "old", false),
        ];
        let plan = Plan::new(&d, &nodes, &pods, "new");
        let (delete, surge) = plan.rolling_update(&d);
        // The unavailable old pod goes at once; it uses the one slot.
        let names: Vec<String> = delete.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["p3"]);
        assert!(surge.is_empty());
        let pods = vec![
            pod("p1", "a", "old", true),
            pod("p2", "b", "old", true),
            pod("p3", "c", "new", true),
        ];
        let plan = Plan::new(&d, &nodes, &pods, "new");
        assert_eq!(plan.rolling_update(&d).0.len(), 1);
        let st = plan.status(&d, 0);
        assert_eq!(
            (
                st.desired_number_scheduled,
                st.current_number_scheduled,
                st.number_ready
            ),
            (3, 3, 3)
        );
        assert_eq!(st.updated_number_scheduled, Some(1));
        assert_eq!(st.observed_generation, Some(2));
        // Node b without a pod: unavailable already, no old pod goes.
        let pods = vec![pod("p1", "a", "old", true), pod("p3", "c", "new", true)];
        let plan = Plan::new(&d, &nodes, &pods, "new");
        assert!(plan.rolling_update(&d).0.is_empty());
        // A pod for a node that is gone is orphaned.
        let pods = vec![pod("p9", "gone", "new", true)];
        assert_eq!(Plan::new(&d, &nodes, &pods, "new").orphaned.len(), 1);
    }

    #[test]
    fn surge_starts_new_pods_beside_old_ones() {
        let d = ds(json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}}));
        let nodes: Vec<Arc<Node>> = ["a", "b", "c"]
            .iter()
            .map(|n| node(n, json!({}), json!([])))
            .collect();
        let pods = vec![
            pod("p1", "a", "old", true),
            pod("p2", "b", "old", true),
            pod("p3", "c", "old", true),
        ];
        let plan = Plan::new(&d, &nodes, &pods, "new");
        let (delete, surge) = plan.rolling_update(&d);
        assert!(delete.is_empty());
        assert_eq!(surge, ["a", "b"]);
        let pods = vec![
            pod("p1", "a", "old", true),
            pod("n1", "a", "new", true),
            pod("p2", "b", "old", true),
        ];
        let plan = Plan::new(&d, &nodes, &pods, "new");
        let (delete, _) = plan.rolling_update(&d);
        assert_eq!(
            delete.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["p1"]
        );
    }
}
