//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, rolled by the RollingUpdate or
//! Recreate strategy, scaled proportionally, old ones pruned to
//! `revisionHistoryLimit`, and the Deployment's status and conditions
//! (Available, Progressing with `progressDeadlineSeconds`) kept current
//! so `kubectl rollout status|history|undo` work.
//!
//! It follows Kubernetes' deployment controller step for step, with one
//! deliberate tightening: when counting pods against maxSurge and
//! maxUnavailable it takes a ReplicaSet's size as the larger of its spec
//! and its status (pods not yet deleted still exist), and its available
//! pods as the smaller of its status and spec (a ReplicaSet scaled down
//! will lose some). So a rollout never has more than replicas + maxSurge
//! pods, nor fewer than replicas − maxUnavailable available, even while
//! the ReplicaSet controller is catching up.
//!
//! `kubectl rollout undo` is done by kubectl itself: it patches the
//! Deployment's template back to the old ReplicaSet's; this controller
//! then finds that ReplicaSet (templates equal but for the hash), gives it
//! the next revision and records its old one in `revision-history`.

mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{
    claim, controller_ref, deleting, is_conflict, is_not_found, owner_ref, Selector,
};
use crate::Error;
use util::*;
pub use util::{template_hash, HASH_LABEL, REVISION, REVISION_HISTORY};

/// The Deployment controller; see the module doc.
#[derive(Clone)]
pub struct DeploymentController {
    client: Client,
    deployments: Cache<Deployment>,
    replicasets: Cache<ReplicaSet>,
    pods: Cache<Pod>,
    queue: Queue<Key>,
    recorder: Recorder,
}

/// The Deployment key controlling `rs`, if any.
fn deployment_of(rs: &ReplicaSet) -> Option<Key> {
    let r = controller_ref(rs)?;
    (r.kind == "Deployment").then(|| (rs.namespace().unwrap_or_default(), r.name.clone()))
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(ReplicaSetSpec::default).replicas = Some(n);
}

/// A ReplicaSet's pods for the surge count: its spec, or more while
/// deleted pods are still being removed.
fn pods_of(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs_status_replicas(rs))
}

/// A ReplicaSet's available pods, at most its spec.
fn available_of(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

impl DeploymentController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        deployments: &mut Informer<Deployment>,
        replicasets: &mut Informer<ReplicaSet>,
        pods: &mut Informer<Pod>,
    ) -> DeploymentController {
        let c = DeploymentController {
            recorder: Recorder::new(client.clone(), "deployment-controller", None),
            client,
            deployments: deployments.cache(),
            replicasets: replicasets.cache(),
            pods: pods.cache(),
            queue: Queue::new(),
        };
        let q = c.queue.clone();
        deployments.on_change(move |_, new| {
            if let Some(d) = new {
                q.add(key_of(d));
            }
        });
        let (q, ds) = (c.queue.clone(), c.deployments.clone());
        replicasets.on_change(move |old, new| {
            let old_key = old.and_then(deployment_of);
            let new_key = new.and_then(deployment_of);
            if let Some(k) = &old_key {
                if new_key.as_ref() != Some(k) {
                    q.add(k.clone());
                }
            }
            match (new_key, new) {
                (Some(k), _) => q.add(k),
                (None, Some(rs)) if controller_ref(rs).is_none() => {
                    // An orphan: any Deployment selecting it may adopt it.
                    let ns = rs.namespace().unwrap_or_default();
                    for d in ds.namespace(&ns) {
                        let sel = d.spec.as_ref().map(|s| &s.selector);
                        if Selector::from_label_selector(sel).is_ok_and(|s| s.matches(rs.labels()))
                        {
                            q.add(key_of(d.as_ref()));
                        }
                    }
                }
                _ => {}
            }
        });
        // Recreate waits for old pods to be gone: a deleted pod may unblock it.
        let (q, rss) = (c.queue.clone(), c.replicasets.clone());
        pods.on_change(move |old, new| {
            if new.is_some() {
                return;
            }
            let Some(pod) = old else { return };
            let Some(r) = controller_ref(pod) else { return };
            let ns = pod.namespace().unwrap_or_default();
            if let Some(rs) = rss.get(&ns, &r.name) {
                if let Some(k) = deployment_of(&rs) {
                    q.add(k);
                }
            }
        });
        c
    }

    /// Processes queued Deployments with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.deployments.wait_ready().await;
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
        let Some(d) = self.deployments.get(&key.0, &key.1) else {
            return Ok(None);
        };
        let mut d: Deployment = (*d).clone();
        let spec = d.spec.clone().unwrap_or_default();
        let selector = match Selector::from_label_selector(Some(&spec.selector)) {
            Ok(s) => s,
            Err(msg) => {
                self.warn(&d, "InvalidSelector", &msg).await;
                return Ok(None);
            }
        };
        if spec
            .selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && spec
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|m| m.is_empty())
        {
            self.warn(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        }
        if let Err(msg) = fenceposts(&d) {
            self.warn(&d, "InvalidStrategy", &msg).await;
            return Ok(None);
        }
        let mut rs_list = self.claim_replicasets(&d, &selector).await?;
        if deleting(&d) {
            let (new, old) = self.find_new_and_old(&d, &rs_list);
            let all = all_of(&old, &new);
            return self.sync_status_only(&mut d, &all, new.as_ref()).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if spec.paused == Some(true) || self.is_scaling_event(&d, &rs_list) {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if is_recreate(&d) {
            self.rollout_recreate(&mut d, &mut rs_list).await
        } else {
            self.rollout_rolling(&mut d, &mut rs_list).await
        }
    }

    async fn warn(&self, d: &Deployment, reason: &str, message: &str) {
        self.recorder
            .publish(d, EventType::Warning, reason, message)
            .await;
    }

    /// The ReplicaSets this Deployment controls, after adopting orphans
    /// its selector matches and releasing those it no longer matches.
    async fn claim_replicasets(
        &self,
        d: &Deployment,
        selector: &Selector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let ns = d.namespace().unwrap_or_default();
        let claimed = claim(&self.client, d, self.replicasets.namespace(&ns), |rs| {
            selector.matches(rs.labels())
        })
        .await?;
        let mut owned: Vec<ReplicaSet> = claimed.into_iter().map(Arc::unwrap_or_clone).collect();
        for rs in &owned {
            // Adopted ones are newer than the cache: later syncs see them.
            self.replicasets.write_through(rs.clone());
        }
        owned.sort_by(by_creation);
        Ok(owned)
    }

    /// The ReplicaSet running the current template (the oldest if several)
    /// and the others.
    fn find_new_and_old(
        &self,
        d: &Deployment,
        rs_list: &[ReplicaSet],
    ) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut new = None;
        let mut old = Vec::new();
        for rs in rs_list {
            let t = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.clone())
                .unwrap_or_default();
            if new.is_none() && equal_ignore_hash(&t, &template) {
                new = Some(rs.clone());
            } else {
                old.push(rs.clone());
            }
        }
        (new, old)
    }

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet
    /// (created if asked and missing) with its revision brought up to date,
    /// and the old ones.
    async fn new_and_old(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (existing, old) = self.find_new_and_old(d, rs_list);
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let ns = d.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let new = match existing {
            Some(mut rs) => {
                let mut changed = set_new_rs_annotations(d, &mut rs, new_revision);
                let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
                let spec = rs.spec.get_or_insert_with(ReplicaSetSpec::default);
                if spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
                    spec.min_ready_seconds = min_ready;
                    changed = true;
                }
                if changed {
                    rs = api
                        .replace(&rs.name_any(), &PostParams::default(), &rs)
                        .await?;
                    self.replicasets.write_through(rs.clone());
                }
                if d.status
                    .as_ref()
                    .and_then(|s| condition(s, "Progressing"))
                    .is_none()
                {
                    let c = new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    );
                    set_condition(d.status.get_or_insert_with(Default::default), c);
                }
                rs
            }
            None if !create => return Ok((None, old)),
            None => self.create_new_rs(d, &old, new_revision).await?,
        };
        self.set_deployment_revision(d, &revision(&new).to_string())
            .await?;
        Ok((Some(new), old))
    }

    async fn create_new_rs(
        &self,
        d: &mut Deployment,
        old: &[ReplicaSet],
        new_revision: i64,
    ) -> Result<ReplicaSet, Error> {
        let ns = d.namespace().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{}", d.name_any(), hash);
        let replicas = new_rs_new_replicas(d, old, None);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![owner_ref(d)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        set_new_rs_annotations(d, &mut rs, new_revision);
        set_replicas_annotations(&mut rs, replicas_of(d), replicas_of(d) + max_surge(d));
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.replicasets.write_through(created.clone());
                if replicas > 0 {
                    self.recorder
                        .publish(
                            d,
                            EventType::Normal,
                            "ScalingReplicaSet",
                            &format!("Scaled up replica set {name} from 0 to {replicas}"),
                        )
                        .await;
                }
                let c = new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                );
                set_condition(d.status.get_or_insert_with(Default::default), c);
                Ok(created)
            }
            Err(e) if is_conflict(&e) => {
                // Ours, not yet in the cache? Otherwise a hash collision:
                // count it so the next hash differs.
                if let Some(existing) = api.get_opt(&name).await? {
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                    let ours =
                        controller_ref(&existing).is_some_and(|r| Some(&r.uid) == d.uid().as_ref());
                    if same && ours {
                        self.replicasets.write_through(existing.clone());
                        return Ok(existing);
                    }
                }
                let status = d.status.get_or_insert_with(Default::default);
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                self.write_status(d).await?;
                Err(Error::Other(format!(
                    "hash collision on replica set {name}"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn set_deployment_revision(&self, d: &mut Deployment, rev: &str) -> Result<(), Error> {
        if d.annotations().get(REVISION).map(String::as_str) == Some(rev) {
            return Ok(());
        }
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        let updated = api
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        d.metadata.annotations = updated.metadata.annotations.clone();
        d.metadata.resource_version = updated.metadata.resource_version.clone();
        self.deployments.write_through(updated);
        Ok(())
    }

    /// Sets a ReplicaSet's size (and the replicas annotations); an event
    /// when the size changed. Whether anything was written.
    async fn scale(&self, rs: &mut ReplicaSet, size: i32, d: &Deployment) -> Result<bool, Error> {
        let old = rs_replicas(rs);
        let mut copy = rs.clone();
        let annotations =
            set_replicas_annotations(&mut copy, replicas_of(d), replicas_of(d) + max_surge(d));
        if old == size && !annotations {
            return Ok(false);
        }
        set_rs_replicas(&mut copy, size);
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
        let updated = api
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        self.replicasets.write_through(updated.clone());
        *rs = updated;
        if old != size {
            let dir = if size > old { "up" } else { "down" };
            self.recorder
                .publish(
                    d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled {dir} replica set {} from {old} to {size}",
                        rs.name_any()
                    ),
                )
                .await;
        }
        Ok(true)
    }

    fn is_scaling_event(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> bool {
        rs_list
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| int_annotation(rs, DESIRED_REPLICAS).is_some_and(|n| n != replicas_of(d)))
    }

    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), Error> {
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let status = d.status.clone().unwrap_or_default();
        let cond = condition(&status, "Progressing");
        let reason = cond.and_then(|c| c.reason.as_deref());
        if reason == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let c = if paused && reason != Some("DeploymentPaused") {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if !paused && reason == Some("DeploymentPaused") {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        let mut s = status;
        set_condition(&mut s, c);
        d.status = Some(s);
        self.write_status(d).await
    }

    async fn write_status(&self, d: &mut Deployment) -> Result<(), Error> {
        let ns = d.namespace().unwrap_or_default();
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let body = Deployment {
            metadata: ObjectMeta {
                name: Some(d.name_any()),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            spec: None,
            status: d.status.clone(),
        };
        match api
            .replace_status(&d.name_any(), &PostParams::default(), &body)
            .await
        {
            Ok(updated) => {
                d.metadata.resource_version = updated.metadata.resource_version.clone();
                self.deployments.write_through(updated);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Scaling only (a paused Deployment, or replicas changed): proportional
    /// across the active ReplicaSets, no rollout.
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        rs_list: &mut [ReplicaSet],
    ) -> Result<Requeue, Error> {
        let (mut new, mut old) = self.new_and_old(d, rs_list, false).await?;
        self.scale_all(d, &mut new, &mut old).await?;
        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(d, &old).await?;
        }
        let all = all_of(&old, &new);
        self.sync_status_only(d, &all, new.as_ref()).await
    }

    async fn scale_all(
        &self,
        d: &Deployment,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), Error> {
        let want = replicas_of(d);
        // One active ReplicaSet (or none): it takes the whole size.
        let active = old.iter().filter(|r| rs_replicas(r) > 0).count()
            + new.iter().filter(|r| rs_replicas(r) > 0).count();
        if active <= 1 {
            let target: Option<&mut ReplicaSet> =
                if let Some(n) = new.as_mut().filter(|n| rs_replicas(n) > 0 || active == 0) {
                    Some(n)
                } else if let Some(o) = old.iter_mut().find(|r| rs_replicas(r) > 0) {
                    Some(o)
                } else {
                    old.iter_mut().max_by(|a, b| by_creation(a, b))
                };
            if let Some(rs) = target {
                if rs_replicas(rs) != want {
                    self.scale(rs, want, d).await?;
                }
            }
            return Ok(());
        }
        if let Some(n) = new.as_ref() {
            if rs_replicas(n) == want && rs_available(n) == want {
                for rs in old.iter_mut() {
                    self.scale(rs, 0, d).await?;
                }
                return Ok(());
            }
        }
        if is_recreate(d) {
            return Ok(());
        }
        // Proportional scaling: share the difference by each ReplicaSet's
        // share of the size it was last scaled for.
        let surge = max_surge(d);
        let allowed = if want > 0 { want + surge } else { 0 };
        let mut all: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .chain(new.iter_mut())
            .filter(|r| rs_replicas(r) > 0)
            .collect();
        let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let to_add = allowed - current;
        if to_add == 0 {
            return Ok(());
        }
        // Larger first; on ties newer first when growing, older when shrinking.
        all.sort_by(|a, b| {
            rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
                if to_add > 0 {
                    by_creation(b, a)
                } else {
                    by_creation(a, b)
                }
            })
        });
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in &all {
            let cur = rs_replicas(rs);
            let mut delta = 0;
            if cur > 0 && added != to_add {
                let fraction = if want == 0 {
                    -cur
                } else {
                    let annotated = int_annotation(rs, MAX_REPLICAS).unwrap_or(status_replicas);
                    if annotated <= 0 {
                        0
                    } else {
                        ((f64::from(cur) * f64::from(want + surge)) / f64::from(annotated)).round()
                            as i32
                            - cur
                    }
                };
                let left = to_add - added;
                delta = if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                };
            }
            added += delta;
            sizes.push(cur + delta);
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale(rs, size, d).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut [ReplicaSet],
    ) -> Result<Requeue, Error> {
        let (new, mut old) = self.new_and_old(d, rs_list, true).await?;
        let mut new = new.expect("created when missing");
        // Scale the new ReplicaSet up as far as maxSurge allows.
        let want = replicas_of(d);
        let cur = rs_replicas(&new);
        let scaled_up = if cur > want {
            self.scale(&mut new, want, d).await?
        } else if cur < want {
            let size = new_rs_new_replicas(d, &old, Some(&new));
            size != cur && self.scale(&mut new, size, d).await?
        } else {
            false
        };
        if scaled_up {
            let all = all_of(&old, &Some(new.clone()));
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        // Scale old ones down as far as maxUnavailable allows.
        let scaled_down = self.reconcile_old(d, &mut old, &new).await?;
        let all = all_of(&old, &Some(new.clone()));
        if scaled_down {
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        let status = calculate_status(d, &all, Some(&new));
        if deployment_complete(d, &status) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, Some(&new)).await
    }

    async fn reconcile_old(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        new: &ReplicaSet,
    ) -> Result<bool, Error> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i32 = old_pods + rs_replicas(new);
        let min_available = replicas_of(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new) - available_of(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(by_creation);
        // First the unhealthy pods of old ReplicaSets: they add nothing.
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (size, avail) = (rs_replicas(rs), available_of(rs));
            if size == 0 || size == avail {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(size - avail);
            self.scale(rs, size - n, d).await?;
            cleaned += n;
        }
        // Then healthy ones, keeping minAvailable.
        let available: i32 = old.iter().map(available_of).sum::<i32>() + available_of(new);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let size = rs_replicas(rs);
                if size == 0 {
                    continue;
                }
                let n = size.min(total - scaled);
                self.scale(rs, size - n, d).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut [ReplicaSet],
    ) -> Result<Requeue, Error> {
        let (new, mut old) = self.new_and_old(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
            scaled_down |= self.scale(rs, 0, d).await?;
        }
        if scaled_down || self.old_pods_running(&old) {
            let all = all_of(&old, &new);
            return self.sync_rollout_status(d, &all, new.as_ref()).await;
        }
        let (new, old) = match new {
            Some(n) => (n, old),
            None => {
                let (n, o) = self.new_and_old(d, rs_list, true).await?;
                (n.expect("created when missing"), o)
            }
        };
        let mut new = new;
        let want = replicas_of(d);
        if rs_replicas(&new) != want {
            self.scale(&mut new, want, d).await?;
        }
        let all = all_of(&old, &Some(new.clone()));
        if deployment_complete(d, &calculate_status(d, &all, Some(&new))) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, Some(&new)).await
    }

    /// Whether any pod of an old ReplicaSet still exists and is not
    /// finished (terminating ones count: Recreate means no overlap).
    fn old_pods_running(&self, old: &[ReplicaSet]) -> bool {
        if old.iter().any(|r| rs_status_replicas(r) > 0) {
            return true;
        }
        let uids: Vec<String> = old.iter().filter_map(|r| r.uid()).collect();
        let Some(ns) = old.first().and_then(|r| r.namespace()) else {
            return false;
        };
        !self
            .pods
            .namespace_filter(&ns, |p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
                    && controller_ref(p).is_some_and(|r| uids.contains(&r.uid))
            })
            .is_empty()
    }

    /// Deletes the oldest idle ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old.iter().filter(|r| !deleting(*r)).collect();
        let excess = cleanable.len() as i64 - i64::from(limit.max(0));
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
        for rs in cleanable.into_iter().take(excess as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_status_only(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<Requeue, Error> {
        let status = calculate_status(d, all, new);
        if d.status.as_ref() != Some(&status) {
            d.status = Some(status);
            self.write_status(d).await?;
        }
        Ok(None)
    }

    /// The status with the Progressing condition brought up to date;
    /// requeued for the progress deadline while the rollout runs.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<Requeue, Error> {
        let mut status = calculate_status(d, all, new);
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let current = condition(&status, "Progressing").cloned();
        let complete = deployment_complete(d, &status);
        let timed_out_before =
            current.as_ref().and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded");
        let name = new.map(|n| n.name_any()).unwrap_or_default();
        match deadline {
            None => remove_condition(&mut status, "Progressing"),
            Some(_) if paused || timed_out_before => {}
            Some(secs) => {
                if complete {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            format!("ReplicaSet \"{name}\" has successfully progressed."),
                        ),
                    );
                } else if deployment_progressing(d, &status) {
                    let mut c = new_condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{name}\" is progressing."),
                    );
                    if let Some(cur) = current.as_ref().filter(|c| c.status == "True") {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                    set_condition(&mut status, c);
                } else if timed_out(current.as_ref(), secs) {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{name}\" has timed out progressing."),
                        ),
                    );
                }
            }
        }
        // A ReplicaSet failing to create pods shows on the Deployment.
        let failure = all.iter().find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut status,
                new_condition(
                    "ReplicaFailure",
                    "True",
                    f.reason.as_deref().unwrap_or("FailedCreate"),
                    f.message.unwrap_or_default(),
                ),
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() != Some(&status) {
            d.status = Some(status);
            self.write_status(d).await?;
            return Ok(None);
        }
        // Unchanged: come back when the progress deadline would pass.
        let Some(secs) = deadline else {
            return Ok(None);
        };
        if complete || paused || timed_out_before {
            return Ok(None);
        }
        let Some(cur) = current.and_then(|c| c.last_update_time) else {
            return Ok(None);
        };
        let due = cur.0.as_second() + i64::from(secs);
        let left = due - Timestamp::now().as_second();
        Ok(Some(Duration::from_secs(left.max(1) as u64)))
    }
}

fn replicas_of(d: &Deployment) -> i32 {
    replicas(d)
}

fn all_of(old: &[ReplicaSet], new: &Option<ReplicaSet>) -> Vec<ReplicaSet> {
    old.iter().chain(new.iter()).cloned().collect()
}

/// The new ReplicaSet's size for this step of the rollout.
fn new_rs_new_replicas(d: &Deployment, old: &[ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
    let want = replicas_of(d);
    if is_recreate(d) {
        return want;
    }
    let cur = new.map(rs_replicas).unwrap_or(0);
    let current: i32 = old.iter().map(pods_of).sum::<i32>() + new.map(pods_of).unwrap_or(0);
    let max_total = want + max_surge(d);
    if current >= max_total {
        return cur;
    }
    cur + (max_total - current).min(want - cur).max(0)
}

fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(rs_available).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let mut status = d.status.clone().unwrap_or_default();
    status.observed_generation = d.metadata.generation;
    status.replicas = Some(all.iter().map(rs_status_replicas).sum());
    status.updated_replicas = Some(new.map(rs_status_replicas).unwrap_or(0));
    status.ready_replicas = Some(
        all.iter()
            .map(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
            })
            .sum(),
    );
    status.available_replicas = Some(available);
    status.unavailable_replicas = Some((total - available).max(0));
    let c = if available >= replicas_of(d) - max_unavailable(d) {
        new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    set_condition(&mut status, c);
    status
}

fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas_of(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn timed_out(current: Option<&k8s_openapi::api::apps::v1::DeploymentCondition>, secs: i32) -> bool {
    let Some(c) = current else { return false };
    if c.reason.as_deref() == Some("NewReplicaSetAvailable") {
        return false;
    }
    let Some(from) = c.last_update_time.as_ref() else {
        return false;
    };
    Timestamp::now().as_second() > from.0.as_second() + i64::from(secs)
}
