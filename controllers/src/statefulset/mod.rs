//! The StatefulSet controller (apps/v1): pods with stable names and
//! ordinals, created, replaced, scaled and updated in order, as
//! kube-controller-manager's statefulset controller does.
//!
//! # One sync
//! 1. Claim the pods: those the set controls, adopting orphans that match
//!    its selector and are named `<set>-<ordinal>`; releasing controlled
//!    pods that no longer match or are not so named ([`crate::util::claim`]).
//! 2. Revisions (`history`), from the shared ControllerRevision informer
//!    (claimed as the pods are): the update revision is the set's template
//!    now, the current revision is `status.currentRevision`'s.
//! 3. Pods are sorted into the replicas, ordinals `[start, start+replicas)`,
//!    and the condemned (every other ordinal). Then:
//!    - each replica in ordinal order: a Succeeded or Failed pod is deleted
//!      (it is recreated once it is gone); a missing pod is created, from
//!      the current revision below `partition`, the update revision from it
//!      on; under `OrderedReady` the sync stops at the first pod it creates
//!      or that is not yet Running and Ready (and available
//!      `minReadySeconds`), so each pod waits for all of its predecessors;
//!      `Parallel` goes on;
//!    - the condemned, highest ordinal first: deleted, under `OrderedReady`
//!      one at a time, each once its predecessor is gone, and only while
//!      every other pod is healthy;
//!    - `RollingUpdate`: from the highest ordinal down to `partition`, the
//!      first pod not at the update revision is deleted (and recreated at
//!      it by a later sync); the update waits for each updated pod to be
//!      Running and Ready. `OnDelete` only recreates what users delete.
//! 4. Status: the counts of every pod, the revisions and
//!    `observedGeneration`; once every pod is updated and ready the update
//!    revision becomes the current one. Revisions beyond
//!    `revisionHistoryLimit` that nothing uses are deleted.
//!
//! The pod cache may lag the controller's own writes: a create of a name
//! that exists is a 409 and a wait, deletions carry the pod's uid as a
//! precondition, so a lagging cache never deletes a pod's successor.

mod history;
mod pods;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;

pub use history::HASH_LABEL;
pub use pods::{parent_and_ordinal, POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{claim, controller_ref, deleting, is_conflict, is_not_found, Selector};
use crate::Error;

/// The StatefulSet controller; see the module doc.
#[derive(Clone)]
pub struct StatefulSetController {
    client: Client,
    pods: Cache<Pod>,
    sets: Cache<StatefulSet>,
    controller_revisions: Cache<ControllerRevision>,
    queue: Queue<Key>,
    recorder: Recorder,
}

fn selector_of(set: &StatefulSet) -> Result<Selector, String> {
    Selector::from_label_selector(set.spec.as_ref().map(|s| &s.selector))
}

/// The key of the StatefulSet controlling `pod`, if it is cached with the
/// same uid.
fn owner_key(sets: &Cache<StatefulSet>, pod: &Pod) -> Option<Key> {
    let r = controller_ref(pod)?;
    if r.kind != "StatefulSet" {
        return None;
    }
    let ns = pod.namespace().unwrap_or_default();
    let set = sets.get(&ns, &r.name)?;
    (set.uid().as_deref() == Some(r.uid.as_str())).then(|| (ns, r.name.clone()))
}

/// What the replicas/condemned pass decided.
enum Step {
    /// Go on to the next phase.
    Continue,
    /// Stop this sync here (waiting for something to change).
    Wait,
}

impl StatefulSetController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        pods: &mut Informer<Pod>,
        sets: &mut Informer<StatefulSet>,
        revisions: &Informer<ControllerRevision>,
    ) -> StatefulSetController {
        let c = StatefulSetController {
            recorder: Recorder::new(client.clone(), "statefulset-controller", None),
            client,
            pods: pods.cache(),
            sets: sets.cache(),
            controller_revisions: revisions.cache(),
            queue: Queue::new(),
        };
        let q = c.queue.clone();
        sets.on_change(move |_old, new| {
            if let Some(s) = new {
                q.add(key_of(s));
            }
        });
        let h = c.clone();
        pods.on_change(move |old, new| h.pod_changed(old, new));
        c
    }

    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for set in self.sets.namespace(&ns) {
            if selector_of(&set).is_ok_and(|s| s.matches(pod.labels())) {
                self.queue.add(key_of(set.as_ref()));
            }
        }
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let old_key = old.and_then(|p| owner_key(&self.sets, p));
        let new_key = new.and_then(|p| owner_key(&self.sets, p));
        if let Some(k) = old_key.clone().filter(|k| Some(k) != new_key.as_ref()) {
            self.queue.add(k);
        }
        match (new_key, new) {
            (Some(k), _) => self.queue.add(k),
            (None, Some(pod)) if controller_ref(pod).is_none() => self.enqueue_matching(pod),
            _ => {}
        }
    }

    /// Processes queued StatefulSets with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.sets.wait_ready().await;
        self.pods.wait_ready().await;
        self.controller_revisions.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(set) = self.sets.get(&key.0, &key.1) else {
            return Ok(None);
        };
        let selector = match selector_of(&set) {
            Ok(s) if !s.is_nothing() => s,
            Ok(_) => return Ok(None),
            Err(msg) => {
                self.recorder
                    .publish(set.as_ref(), EventType::Warning, "InvalidSelector", &msg)
                    .await;
                return Ok(None);
            }
        };
        let pods = self.claim_pods(&set, &selector).await?;
        let revisions_api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &key.0);
        let mut revisions = self.claim_revisions(&set, &selector).await?;
        let old_collisions = set.status.as_ref().and_then(|s| s.collision_count);
        let mut collisions = old_collisions.unwrap_or(0);
        let revs = self
            .revisions(&revisions_api, &set, &mut revisions, &mut collisions)
            .await;
        let (current, update) = match revs {
            Ok(r) => r,
            Err(e) => {
                if Some(collisions) != old_collisions {
                    let mut status = set.status.clone().unwrap_or_default();
                    status.collision_count = Some(collisions);
                    self.write_status(&set, status).await?;
                }
                return Err(e);
            }
        };
        let (mut status, outcome) = self
            .update_set(&set, &current, &update, collisions, &pods)
            .await;
        complete_rolling_update(&set, &mut status);
        if set.status.as_ref() != Some(&status) {
            self.write_status(&set, status.clone()).await?;
        }
        outcome?;
        self.truncate_history(&set, &revisions, &pods, &status)
            .await?;
        let min_ready = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if min_ready > 0
            && status.ready_replicas.unwrap_or(0) > status.available_replicas.unwrap_or(0)
        {
            return Ok(Some(Duration::from_secs(1)));
        }
        Ok(None)
    }

    async fn write_status(
        &self,
        set: &StatefulSet,
        status: StatefulSetStatus,
    ) -> Result<(), Error> {
        let (ns, name) = key_of(set);
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &ns);
        let body = StatefulSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        };
        match api
            .replace_status(&name, &PostParams::default(), &body)
            .await
        {
            Ok(updated) => {
                self.sets.write_through(updated);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The set's pods (any phase) after adopting matching orphans named
    /// after it and releasing controlled pods that stopped matching (or
    /// whose names are not its members').
    async fn claim_pods(
        &self,
        set: &Arc<StatefulSet>,
        selector: &Selector,
    ) -> Result<Vec<Arc<Pod>>, Error> {
        let ns = set.namespace().unwrap_or_default();
        claim(&self.client, set.as_ref(), self.pods.namespace(&ns), |p| {
            selector.matches(p.labels()) && pods::ordinal_in(set, p).is_some()
        })
        .await
    }

    /// The set's ControllerRevisions (from the shared informer), oldest
    /// first, adopting orphans that match its selector and releasing those
    /// that stopped matching. A revision this process created may not be
    /// cached yet: creating it again finds it (see [`history::create`]).
    async fn claim_revisions(
        &self,
        set: &StatefulSet,
        selector: &Selector,
    ) -> Result<Vec<ControllerRevision>, Error> {
        let ns = set.namespace().unwrap_or_default();
        let mut owned: Vec<ControllerRevision> = claim(
            &self.client,
            set,
            self.controller_revisions.namespace(&ns),
            |r| selector.matches(r.labels()),
        )
        .await?
        .into_iter()
        .map(Arc::unwrap_or_clone)
        .collect();
        history::sort(&mut owned);
        Ok(owned)
    }

    /// The current and update revisions (kube's `getStatefulSetRevisions`).
    async fn revisions(
        &self,
        api: &Api<ControllerRevision>,
        set: &StatefulSet,
        revisions: &mut Vec<ControllerRevision>,
        collisions: &mut i32,
    ) -> Result<(ControllerRevision, ControllerRevision), Error> {
        let data = history::data_of(set);
        let number = history::next_number(revisions);
        let equal = revisions.iter().rposition(|r| history::holds(r, &data));
        let update = match equal {
            Some(i) if i + 1 == revisions.len() => revisions[i].clone(),
            Some(i) => {
                let renumbered = history::renumber(api, &revisions[i], number).await?;
                revisions[i] = renumbered.clone();
                history::sort(revisions);
                renumbered
            }
            None => {
                let created = history::create(api, set, &data, number, collisions).await?;
                if !revisions.iter().any(|r| r.name_any() == created.name_any()) {
                    revisions.push(created.clone());
                }
                history::sort(revisions);
                created
            }
        };
        let wanted = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref());
        let current = revisions
            .iter()
            .find(|r| wanted.is_some_and(|w| r.metadata.name.as_deref() == Some(w)))
            .cloned()
            .unwrap_or_else(|| update.clone());
        Ok((current, update))
    }

    /// Creates, deletes and replaces pods toward the set's spec (kube's
    /// `updateStatefulSet`); the status of the pods seen, and the first
    /// error.
    async fn update_set(
        &self,
        set: &StatefulSet,
        current: &ControllerRevision,
        update: &ControllerRevision,
        collisions: i32,
        owned: &[Arc<Pod>],
    ) -> (StatefulSetStatus, Result<(), Error>) {
        let now = Timestamp::now();
        let spec = set.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; replicas as usize];
        let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
        for pod in owned {
            let Some(ord) = pods::ordinal_in(set, pod) else {
                continue;
            };
            if ord >= start && ord - start < replicas {
                slots[(ord - start) as usize] = Some(pod.clone());
            } else {
                condemned.push((ord, pod.clone()));
            }
        }
        condemned.sort_by_key(|(ord, _)| std::cmp::Reverse(*ord));
        let counted: Vec<&Pod> = slots
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
            .map(|p| p.as_ref())
            .collect();
        let status = replica_status(set, &counted, current, update, collisions, now);
        if deleting(set) {
            return (status, Ok(()));
        }
        // The first pod (replicas in order, then the condemned lowest
        // first) that is missing or unavailable; a missing replica is
        // named by the pod it will be.
        let first_unavailable: Option<String> = slots
            .iter()
            .enumerate()
            .find(|(_, p)| {
                p.as_ref()
                    .is_none_or(|p| pods::unavailable(p, min_ready, now))
            })
            .map(|(i, _)| pods::pod_name(set, start + i as i32))
            .or_else(|| {
                condemned
                    .iter()
                    .rev()
                    .find(|(_, p)| pods::unavailable(p, min_ready, now))
                    .map(|(_, p)| p.name_any())
            });
        let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
        let result = async {
            for (i, slot) in slots.iter().enumerate() {
                let ord = start + i as i32;
                if let Step::Wait = self
                    .process_replica(set, current, update, slot.as_deref(), ord, monotonic, now)
                    .await?
                {
                    return Ok(());
                }
            }
            for (_, pod) in &condemned {
                if deleting(pod.as_ref()) {
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
                let blocked = pods::unavailable(pod, min_ready, now)
                    && first_unavailable.as_deref() != Some(pod.name_any().as_str());
                if monotonic && blocked {
                    return Ok(());
                }
                self.delete_pod(set, pod).await?;
                if monotonic {
                    return Ok(());
                }
            }
            let strategy = spec.update_strategy.clone().unwrap_or_default();
            if strategy.type_.as_deref() == Some("OnDelete") {
                return Ok(());
            }
            let partition = strategy
                .rolling_update
                .and_then(|r| r.partition)
                .unwrap_or(0)
                .max(0);
            let update_name = update.name_any();
            for i in (0..slots.len()).rev() {
                if (i as i32) < partition {
                    break;
                }
                let Some(pod) = &slots[i] else {
                    return Ok(());
                };
                if pods::revision_of(pod) != update_name && !deleting(pod.as_ref()) {
                    self.delete_pod(set, pod).await?;
                    return Ok(());
                }
                if pods::unavailable(pod, min_ready, now) {
                    return Ok(());
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        (status, result)
    }

    /// One replica's step (kube's `processReplica`).
    #[allow(clippy::too_many_arguments)]
    async fn process_replica(
        &self,
        set: &StatefulSet,
        current: &ControllerRevision,
        update: &ControllerRevision,
        pod: Option<&Pod>,
        ord: i32,
        monotonic: bool,
        now: Timestamp,
    ) -> Result<Step, Error> {
        let wait = if monotonic {
            Step::Wait
        } else {
            Step::Continue
        };
        let Some(pod) = pod else {
            let fresh = self.versioned_pod(set, current, update, ord);
            let name = fresh.name_any();
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &fresh.namespace().unwrap_or_default());
            match api.create(&PostParams::default(), &fresh).await {
                Ok(_) => {
                    self.record(
                        set,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!(
                            "create Pod {name} in StatefulSet {} successful",
                            set.name_any()
                        ),
                    );
                }
                // Still there (the cache lags a deletion, or the old pod is
                // terminating): a later event brings the next sync.
                Err(e) if is_conflict(&e) => {}
                Err(e) => {
                    self.record(
                        set,
                        EventType::Warning,
                        "FailedCreate",
                        format!(
                            "create Pod {name} in StatefulSet {} failed error: {e}",
                            set.name_any()
                        ),
                    );
                    return Err(e.into());
                }
            }
            return Ok(wait);
        };
        if pods::finished(pod) {
            // Recreated by a later sync, once it is gone.
            if !deleting(pod) {
                self.record(
                    set,
                    EventType::Warning,
                    "RecreatingFailedPod",
                    format!(
                        "StatefulSet {}/{} is recreating failed Pod {}",
                        set.namespace().unwrap_or_default(),
                        set.name_any(),
                        pod.name_any()
                    ),
                );
                self.delete_pod(set, pod).await?;
            }
            return Ok(wait);
        }
        let min_ready = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if monotonic
            && (deleting(pod)
                || !pods::running_and_ready(pod)
                || !pods::running_and_available(pod, min_ready, now))
        {
            return Ok(Step::Wait);
        }
        if !pods::identity_matches(pod, ord) && !deleting(pod) {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({"metadata": {"uid": pod.uid(), "labels": {
                POD_NAME_LABEL: pod.name_any(), POD_INDEX_LABEL: ord.to_string()}}});
            match api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Step::Continue)
    }

    /// The pod for `ord`: from the current revision below the partition,
    /// from the update revision otherwise (kube's `newVersionedStatefulSetPod`).
    fn versioned_pod(
        &self,
        set: &StatefulSet,
        current: &ControllerRevision,
        update: &ControllerRevision,
        ord: i32,
    ) -> Pod {
        let spec = set.spec.clone().unwrap_or_default();
        let partition = spec
            .update_strategy
            .as_ref()
            .filter(|s| s.type_.as_deref() != Some("OnDelete"))
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition);
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        let rev = match partition {
            Some(p) if ord - start < p => current,
            _ => update,
        };
        let template = history::template_of(rev).unwrap_or(spec.template);
        pods::new_pod(set, &template, &rev.name_any(), ord)
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.name_any();
        match api.delete(&name, &dp).await {
            Ok(_) => {
                self.record(
                    set,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            // Gone already, or already replaced by a newer pod.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => {
                self.record(
                    set,
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} failed error: {e}",
                        set.name_any()
                    ),
                );
                Err(e.into())
            }
        }
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit` that no
    /// pod, nor the current or update revision, uses.
    async fn truncate_history(
        &self,
        set: &StatefulSet,
        revisions: &[ControllerRevision],
        owned: &[Arc<Pod>],
        status: &StatefulSetStatus,
    ) -> Result<(), Error> {
        let mut live: HashSet<&str> = owned.iter().map(|p| pods::revision_of(p)).collect();
        live.extend(status.current_revision.as_deref());
        live.extend(status.update_revision.as_deref());
        let limit = set
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        for rev in history::to_truncate(revisions, &live, limit) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rev.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&rev.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes an event in the background.
    fn record(&self, set: &StatefulSet, kind: EventType, reason: &'static str, message: String) {
        let recorder = self.recorder.clone();
        let reference = crate::events::reference(set);
        tokio::spawn(async move {
            recorder
                .publish_about(reference, kind, reason, &message)
                .await;
        });
    }
}

/// The status of the pods seen (kube's `computeReplicaStatus`): every pod
/// counts in `replicas`, Running and Ready ones in `readyReplicas` (and
/// `availableReplicas` after `minReadySeconds`), pods not being deleted
/// in `currentReplicas`/`updatedReplicas` by their revision.
fn replica_status(
    set: &StatefulSet,
    pods: &[&Pod],
    current: &ControllerRevision,
    update: &ControllerRevision,
    collisions: i32,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (current_name, update_name) = (current.name_any(), update.name_any());
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let at = |name: &str, p: &Pod| !deleting(p) && pods::revision_of(p) == name;
    StatefulSetStatus {
        replicas: pods.len() as i32,
        ready_replicas: Some(count(&|p| pods::running_and_ready(p))),
        available_replicas: Some(count(&|p| {
            pods::running_and_ready(p) && pods::running_and_available(p, min_ready, now)
        })),
        current_replicas: Some(count(&|p| at(&current_name, p))),
        updated_replicas: Some(count(&|p| at(&update_name, p))),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        observed_generation: set.metadata.generation,
        collision_count: Some(collisions),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

/// Once every pod is at the update revision and ready, the update
/// revision is the current one (kube's `completeRollingUpdate`).
fn complete_rolling_update(set: &StatefulSet, status: &mut StatefulSetStatus) {
    let rolling = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let updated = status.updated_replicas.unwrap_or(0);
    if rolling && updated == status.replicas && status.ready_replicas == Some(status.replicas) {
        status.current_replicas = Some(updated);
        status.current_revision = status.update_revision.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rev: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {REVISION_LABEL: rev}},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn rev(name: &str) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: None,
            revision: 1,
        }
    }

    #[test]
    fn status_counts_pods_by_revision_and_completes_updates() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 4},
            "spec": {"selector": {}, "template": {}}}))
        .unwrap();
        let (a, b) = (pod("web-0", "r1", true), pod("web-1", "r2", false));
        let mut s = replica_status(&set, &[&a, &b], &rev("r1"), &rev("r2"), 0, Timestamp::now());
        assert_eq!(s.replicas, 2);
        assert_eq!(s.ready_replicas, Some(1));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!((s.current_replicas, s.updated_replicas), (Some(1), Some(1)));
        assert_eq!(s.observed_generation, Some(4));
        complete_rolling_update(&set, &mut s);
        assert_eq!(s.current_revision.as_deref(), Some("r1"), "not done yet");
        let (a, b) = (pod("web-0", "r2", true), pod("web-1", "r2", true));
        let mut s = replica_status(&set, &[&a, &b], &rev("r1"), &rev("r2"), 0, Timestamp::now());
        assert_eq!(s.current_replicas, Some(0));
        complete_rolling_update(&set, &mut s);
        assert_eq!(s.current_revision.as_deref(), Some("r2"));
        assert_eq!(s.current_replicas, Some(2));
    }
}
