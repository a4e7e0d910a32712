//! The ReplicaSet controller: keeps `spec.replicas` active pods per
//! ReplicaSet, adopting matching orphans and releasing pods that stop
//! matching, and reports the counts in `status`.
//!
//! It never over-creates while its pod cache lags: before creating (or
//! deleting) it records *expectations* — how many creations and which
//! deletions it awaits — and does not act on a ReplicaSet again until the
//! pod informer has shown them all (or 5 minutes passed, in case an event
//! was lost to a relist). Creations go out in slow-start batches (1, 2, 4,
//! …), at most 500 per sync, as Kubernetes does: a broken template fails
//! one request, not 500, and 3,000 replicas still go out in a few round
//! trips.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{
    claim, controller_ref, deleting, is_not_found, owner_ref, pod_active, pod_available, pod_ready,
    pod_ready_since, Selector,
};
use crate::Error;

/// Most pods created or deleted in one sync (Kubernetes' `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Expectations older than this are considered met (a lost event).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);
/// Events written one by one per sync; the rest are combined into one.
const EVENTS_PER_SYNC: usize = 10;

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: HashSet<Key>,
    at: Instant,
}

/// Creations and deletions a controller awaits per owner key.
#[derive(Clone, Default)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<Key, Expectation>>>,
}

impl Expectations {
    /// Whether the owner may be synced: nothing pending, or stale.
    pub fn satisfied(&self, key: &Key) -> bool {
        match self.inner.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del.is_empty()) || e.at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    /// Expect `n` pod creations to be observed.
    pub fn expect_creations(&self, key: &Key, n: usize) {
        self.inner.lock().insert(
            key.clone(),
            Expectation {
                add: n as i64,
                del: HashSet::new(),
                at: Instant::now(),
            },
        );
    }

    /// Expect these pods' deletions to be observed.
    pub fn expect_deletions(&self, key: &Key, pods: impl IntoIterator<Item = Key>) {
        self.inner.lock().insert(
            key.clone(),
            Expectation {
                add: 0,
                del: pods.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// One creation was observed (or will never happen).
    pub fn creation_observed(&self, key: &Key) {
        if let Some(e) = self.inner.lock().get_mut(key) {
            e.add -= 1;
        }
    }

    /// The deletion of `pod` was observed (or will never happen).
    pub fn deletion_observed(&self, key: &Key, pod: &Key) {
        if let Some(e) = self.inner.lock().get_mut(key) {
            e.del.remove(pod);
        }
    }

    /// Forgets an owner.
    pub fn forget(&self, key: &Key) {
        self.inner.lock().remove(key);
    }
}

/// The ReplicaSet controller; see the module doc.
#[derive(Clone)]
pub struct ReplicaSetController {
    client: Client,
    pods: Cache<Pod>,
    replicasets: Cache<ReplicaSet>,
    queue: Queue<Key>,
    expectations: Expectations,
    recorder: Recorder,
}

fn selector_of(rs: &ReplicaSet) -> Selector {
    Selector::from_label_selector(rs.spec.as_ref().map(|s| &s.selector))
        .unwrap_or_else(|_| Selector::from_label_selector(None).expect("nil selector"))
}

/// The key of the ReplicaSet controlling `pod`, if it is in the cache
/// with the same uid.
fn owner_key(replicasets: &Cache<ReplicaSet>, pod: &Pod) -> Option<Key> {
    let r = controller_ref(pod)?;
    if r.kind != "ReplicaSet" {
        return None;
    }
    let ns = pod.namespace().unwrap_or_default();
    let rs = replicasets.get(&ns, &r.name)?;
    (rs.uid().as_deref() == Some(r.uid.as_str())).then(|| (ns, r.name.clone()))
}

impl ReplicaSetController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        pods: &mut Informer<Pod>,
        replicasets: &mut Informer<ReplicaSet>,
    ) -> ReplicaSetController {
        let c = ReplicaSetController {
            recorder: Recorder::new(client.clone(), "replicaset-controller", None),
            client,
            pods: pods.cache(),
            replicasets: replicasets.cache(),
            queue: Queue::new(),
            expectations: Expectations::default(),
        };
        let (q, exp) = (c.queue.clone(), c.expectations.clone());
        replicasets.on_change(move |_old, new| match new {
            Some(rs) => q.add(key_of(rs)),
            None => {
                // Deleted: its expectations can never be met now.
                if let Some(rs) = _old {
                    exp.forget(&key_of(rs));
                }
            }
        });
        let h = c.clone();
        pods.on_change(move |old, new| h.pod_changed(old, new));
        c
    }

    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for rs in self.replicasets.namespace(&ns) {
            if selector_of(&rs).matches(pod.labels()) {
                self.queue.add(key_of(rs.as_ref()));
            }
        }
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        match (old, new) {
            (None, Some(pod)) => {
                if let Some(key) = owner_key(&self.replicasets, pod) {
                    self.expectations.creation_observed(&key);
                    if deleting(pod) {
                        self.expectations.deletion_observed(&key, &key_of(pod));
                    }
                    self.queue.add(key);
                } else if controller_ref(pod).is_none() {
                    self.enqueue_matching(pod);
                }
            }
            (Some(old), Some(pod)) => {
                let new_key = owner_key(&self.replicasets, pod);
                if deleting(pod) && !deleting(old) {
                    if let Some(key) = &new_key {
                        self.expectations.deletion_observed(key, &key_of(pod));
                    }
                }
                let old_key = owner_key(&self.replicasets, old);
                if let Some(k) = old_key.filter(|k| Some(k) != new_key.as_ref()) {
                    self.queue.add(k);
                }
                match new_key {
                    Some(key) => {
                        if pod_ready(old) != pod_ready(pod) {
                            let min_ready = self
                                .replicasets
                                .get(&key.0, &key.1)
                                .and_then(|rs| rs.spec.as_ref()?.min_ready_seconds)
                                .unwrap_or(0);
                            if min_ready > 0 {
                                self.queue.add_after(
                                    key.clone(),
                                    Duration::from_secs(min_ready as u64 + 1),
                                );
                            }
                        }
                        self.queue.add(key);
                    }
                    None if controller_ref(pod).is_none()
                        && (old.labels() != pod.labels() || controller_ref(old).is_some()) =>
                    {
                        self.enqueue_matching(pod)
                    }
                    None => {}
                }
            }
            (Some(pod), None) => {
                if let Some(key) = owner_key(&self.replicasets, pod) {
                    self.expectations.deletion_observed(&key, &key_of(pod));
                    self.queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    /// Processes queued ReplicaSets with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.replicasets.wait_ready().await;
        self.pods.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(rs) = self.replicasets.get(&key.0, &key.1) else {
            self.expectations.forget(&key);
            return Ok(None);
        };
        let selector = match Selector::from_label_selector(rs.spec.as_ref().map(|s| &s.selector)) {
            Ok(s) => s,
            Err(msg) => {
                self.recorder
                    .publish(rs.as_ref(), EventType::Warning, "InvalidSelector", &msg)
                    .await;
                return Ok(None);
            }
        };
        let needs_sync = self.expectations.satisfied(&key);
        let owned = self.claim_pods(&rs, &selector).await?;
        let mut failure = None;
        if needs_sync && !deleting(rs.as_ref()) {
            if let Err(e) = self.manage_replicas(&rs, &key, &owned).await {
                failure = Some(e);
            }
        }
        let status = calculate_status(&rs, &owned, failure.as_ref());
        if rs.status.as_ref() != Some(&status) {
            let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.0);
            let body = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
                status: Some(status.clone()),
            };
            match api
                .replace_status(&key.1, &PostParams::default(), &body)
                .await
            {
                Ok(updated) => self.replicasets.write_through(updated),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let min_ready = rs
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let replicas = status.replicas;
        if min_ready > 0
            && status.ready_replicas.unwrap_or(0) > status.available_replicas.unwrap_or(0)
            && replicas > 0
        {
            return Ok(Some(Duration::from_secs(1)));
        }
        Ok(None)
    }

    /// The active pods this ReplicaSet controls after adopting matching
    /// orphans and releasing controlled pods that no longer match.
    async fn claim_pods(
        &self,
        rs: &Arc<ReplicaSet>,
        selector: &Selector,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        let ns = rs.namespace().unwrap_or_default();
        let candidates = self.pods.namespace_filter(&ns, pod_active);
        claim(&self.client, rs.as_ref(), candidates, |p| {
            selector.matches(p.labels())
        })
        .await
    }

    async fn manage_replicas(
        &self,
        rs: &Arc<ReplicaSet>,
        key: &Key,
        owned: &[Arc<Pod>],
    ) -> Result<(), Error> {
        let desired = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        if owned.len() < desired {
            let n = (desired - owned.len()).min(BURST_REPLICAS);
            self.expectations.expect_creations(key, n);
            let template = pod_from_template(rs);
            let pp = PostParams::default();
            let mut batch = 1;
            let mut done = 0;
            let mut created = Vec::new();
            let mut first_error = None;
            while done < n && first_error.is_none() {
                let size = batch.min(n - done);
                let results = join_all((0..size).map(|_| api.create(&pp, &template))).await;
                done += size;
                for r in results {
                    match r {
                        Ok(pod) => created.push(pod.name_any()),
                        Err(e) => {
                            self.expectations.creation_observed(key);
                            first_error.get_or_insert(e);
                        }
                    }
                }
                batch *= 2;
            }
            // Batches never sent will never be observed either.
            for _ in done..n {
                self.expectations.creation_observed(key);
            }
            self.record_many(rs, "SuccessfulCreate", "Created pod", &created);
            if let Some(e) = first_error {
                self.recorder
                    .publish(
                        rs.as_ref(),
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    )
                    .await;
                return Err(e.into());
            }
        } else if owned.len() > desired {
            let n = (owned.len() - desired).min(BURST_REPLICAS);
            let mut ranked: Vec<&Arc<Pod>> = owned.iter().collect();
            ranked.sort_by_cached_key(|p| deletion_rank(p));
            let victims: Vec<&Arc<Pod>> = ranked.into_iter().take(n).collect();
            self.expectations
                .expect_deletions(key, victims.iter().map(|p| key_of(p.as_ref())));
            let results = join_all(victims.iter().map(|p| {
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
            let mut deleted = Vec::new();
            let mut first_error = None;
            for (pod, r) in victims.iter().zip(results) {
                match r {
                    Ok(_) => deleted.push(pod.name_any()),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        self.expectations
                            .deletion_observed(key, &key_of(pod.as_ref()));
                        first_error.get_or_insert(e);
                    }
                }
            }
            self.record_many(rs, "SuccessfulDelete", "Deleted pod", &deleted);
            if let Some(e) = first_error {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// One Normal event per pod, up to [`EVENTS_PER_SYNC`], then one
    /// combined event, written in the background.
    fn record_many(&self, rs: &ReplicaSet, reason: &'static str, what: &str, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let mut messages: Vec<String> = names
            .iter()
            .take(EVENTS_PER_SYNC)
            .map(|n| format!("{what}: {n}"))
            .collect();
        if names.len() > EVENTS_PER_SYNC {
            messages.push(format!(
                "(combined from similar events): {what}s: {} more, the last {}",
                names.len() - EVENTS_PER_SYNC,
                names.last().expect("non-empty")
            ));
        }
        let recorder = self.recorder.clone();
        let reference = crate::events::reference(rs);
        tokio::spawn(async move {
            for m in messages {
                recorder
                    .publish_about(reference.clone(), EventType::Normal, reason, &m)
                    .await;
            }
        });
    }
}

/// The pod a ReplicaSet creates: its template, named `<rs>-<random>`,
/// controlled by the ReplicaSet.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Sort key for scale-down, smallest deleted first: unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before
/// ready, ready for less time first, more restarts first, newest first.
type Rank = (
    bool,
    u8,
    bool,
    Reverse<Option<i64>>,
    Reverse<i64>,
    Reverse<i64>,
);

fn deletion_rank(p: &Pod) -> Rank {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let status = p.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready_since = pod_ready_since(p);
    let restarts: i64 = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
        .unwrap_or(0);
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond() as i64)
        .unwrap_or(i64::MAX);
    (
        assigned,
        phase,
        ready_since.is_some(),
        Reverse(ready_since.flatten().map(|t| t.as_second())),
        Reverse(restarts),
        Reverse(created),
    )
}

fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    failure: Option<&Error>,
) -> ReplicaSetStatus {
    let now = Timestamp::now();
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| owned.iter().filter(|p| f(p)).count() as i32;
    let fully_labeled = count(&|p| {
        template_labels
            .iter()
            .all(|(k, v)| p.labels().get(k) == Some(v))
    });
    let ready = count(&|p| pod_ready(p));
    let available = count(&|p| pod_available(p, min_ready, now));
    let mut conditions: Vec<ReplicaSetCondition> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(e) = failure {
        let old = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ReplicaFailure").cloned());
        let desired = spec.and_then(|s| s.replicas).unwrap_or(1) as usize;
        let reason = if owned.len() < desired {
            "FailedCreate"
        } else {
            "FailedDelete"
        };
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(e.to_string()),
            last_transition_time: old.and_then(|c| c.last_transition_time).or(Some(Time(now))),
        });
    }
    ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}
