//! The disruption controller, as kube-controller-manager's `disruption`
//! controller (pkg/controller/disruption): keeps each PodDisruptionBudget's
//! status current, so the eviction subresource can decide from it alone.
//!
//! For a budget selecting the pods P of its namespace:
//!
//! ```text
//! minAvailable: 2        expectedPods = |P|             desiredHealthy = 2
//! minAvailable: "50%"    expectedPods = Σ scale(c)      desiredHealthy = ⌈50% · expectedPods⌉
//! maxUnavailable: "50%"  expectedPods = Σ scale(c)      desiredHealthy = expectedPods − ⌈50% · expectedPods⌉
//! currentHealthy     = pods of P Ready, not being deleted, not just evicted (in disruptedPods)
//! disruptionsAllowed = max(currentHealthy − desiredHealthy, 0), and 0 while expectedPods is 0
//! ```
//!
//! `scale(c)` is the replica count of each distinct controller c of the
//! pods: a Deployment (through its ReplicaSet), a bare ReplicaSet, a
//! StatefulSet or a ReplicationController, found through `ownerReferences`.
//! A pod with no controller is reported (`UnmanagedPods`) and ignored; one
//! whose controller cannot be found fails the sync, and the budget falls to
//! `disruptionsAllowed: 0` with the `DisruptionAllowed` condition
//! `False/SyncFailed` until it succeeds.
//!
//! `disruptedPods` holds the pods the eviction subresource has charged to
//! the budget and is about to delete; they do not count as healthy. An
//! entry is dropped once its pod is gone or being deleted, or after
//! [`DELETION_TIMEOUT`] (the pod was not deleted after all): the budget is
//! synced again when the first remaining entry expires.
//!
//! Budgets are synced when they change and when a pod they select appears,
//! changes or goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::events::{EventType, Recorder};
use crate::informer::{Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{controller_ref, is_not_found, pod_ready, Selector};
use crate::Error;

/// How long an evicted pod may take to go before the budget stops
/// counting it as disrupted (kube's `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition type the status carries.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// The disruption controller; see the module doc.
pub struct DisruptionController {
    client: Client,
    queue: Queue<Key>,
    budgets: Cache<PodDisruptionBudget>,
    pods: Cache<Pod>,
    replicasets: Cache<ReplicaSet>,
    deployments: Cache<Deployment>,
    statefulsets: Cache<StatefulSet>,
    recorder: Recorder,
}

/// The budgets of `pod`'s namespace whose selector matches it.
fn budgets_of(budgets: &Cache<PodDisruptionBudget>, pod: &Pod) -> Vec<Key> {
    let ns = pod.namespace().unwrap_or_default();
    budgets
        .namespace(&ns)
        .iter()
        .filter(|b| selector(b).is_ok_and(|s| s.matches(pod.labels())))
        .map(|b| (ns.clone(), b.name_any()))
        .collect()
}

fn selector(pdb: &PodDisruptionBudget) -> Result<Selector, String> {
    Selector::from_label_selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()))
}

impl DisruptionController {
    /// The controller over shared informers: it queues a budget when the
    /// budget changes and when one of the pods it selects does.
    pub fn new(
        client: Client,
        budgets: &mut Informer<PodDisruptionBudget>,
        pods: &mut Informer<Pod>,
        replicasets: &Informer<ReplicaSet>,
        deployments: &Informer<Deployment>,
        statefulsets: &Informer<StatefulSet>,
    ) -> DisruptionController {
        let queue: Queue<Key> = Queue::new();
        let q = queue.clone();
        budgets.on_change(move |old, new| {
            if let Some(b) = new.or(old) {
                q.add((b.namespace().unwrap_or_default(), b.name_any()));
            }
        });
        let (q, cache) = (queue.clone(), budgets.cache());
        pods.on_change(move |old, new| {
            let mut keys = Vec::new();
            for pod in [old, new].into_iter().flatten() {
                keys.extend(budgets_of(&cache, pod));
            }
            for key in keys {
                q.add(key);
            }
        });
        DisruptionController {
            recorder: Recorder::new(client.clone(), "controllermanager", None),
            client,
            queue,
            budgets: budgets.cache(),
            pods: pods.cache(),
            replicasets: replicasets.cache(),
            deployments: deployments.cache(),
            statefulsets: statefulsets.cache(),
        }
    }

    /// Syncs budgets with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.budgets.wait_ready().await;
        self.pods.wait_ready().await;
        self.replicasets.wait_ready().await;
        self.deployments.wait_ready().await;
        self.statefulsets.wait_ready().await;
        let queue = self.queue.clone();
        let this = Arc::new(self);
        queue
            .run(workers, move |key| {
                let this = this.clone();
                async move { this.sync(key).await }
            })
            .await;
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(pdb) = self.budgets.get(&key.0, &key.1) else {
            return Ok(None);
        };
        match self.try_sync(&pdb).await {
            Ok(recheck) => Ok(recheck),
            Err(e) => {
                tracing::debug!(budget = ?key, error = %e, "disruption budget sync failed");
                self.fail_safe(&pdb, &e.to_string()).await?;
                Err(e)
            }
        }
    }

    async fn try_sync(&self, pdb: &PodDisruptionBudget) -> Result<Requeue, Error> {
        let ns = pdb.namespace().unwrap_or_default();
        let selector = selector(pdb).map_err(Error::Other)?;
        let pods = self
            .pods
            .namespace_filter(&ns, |p| selector.matches(p.labels()));
        if pods.is_empty() {
            self.recorder
                .publish(pdb, EventType::Normal, "NoPods", "No matching pods found")
                .await;
        }
        let (expected, desired, unmanaged) = self.expected_pods(pdb, &pods).await?;
        if !unmanaged.is_empty() {
            let message = format!(
                "Pods selected by this PodDisruptionBudget (selector: {:?}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                pdb.spec.as_ref().and_then(|s| s.selector.as_ref())
            );
            self.recorder
                .publish(pdb, EventType::Warning, "UnmanagedPods", &message)
                .await;
        }
        let now = Timestamp::now();
        let (disrupted, recheck) = disrupted_pods(pdb, &pods, now);
        let healthy = count_healthy(&pods, &disrupted, now);
        if let Some(status) = next_status(pdb, healthy, desired, expected, disrupted) {
            self.write_status(pdb, status).await?;
        }
        Ok(recheck)
    }

    /// `(expectedPods, desiredHealthy, unmanaged pod names)`.
    async fn expected_pods(
        &self,
        pdb: &PodDisruptionBudget,
        pods: &[Arc<Pod>],
    ) -> Result<(i32, i32, Vec<String>), Error> {
        let spec = pdb.spec.clone().unwrap_or_default();
        if let Some(max) = &spec.max_unavailable {
            let (expected, unmanaged) = self.expected_scale(pods).await?;
            let max = scaled(max, expected)?;
            return Ok((expected, (expected - max).max(0), unmanaged));
        }
        match &spec.min_available {
            Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, Vec::new())),
            Some(min) => {
                let (expected, unmanaged) = self.expected_scale(pods).await?;
                Ok((expected, scaled(min, expected)?, unmanaged))
            }
            None => Ok((0, 0, Vec::new())),
        }
    }

    /// The sum of the scales of the pods' distinct controllers, and the
    /// pods without one (kube's `getExpectedScale`).
    async fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<(i32, Vec<String>), Error> {
        let mut scales: BTreeMap<String, i32> = BTreeMap::new();
        let mut unmanaged = Vec::new();
        for pod in pods {
            let Some(owner) = controller_ref(pod.as_ref()) else {
                unmanaged.push(pod.name_any());
                continue;
            };
            if scales.contains_key(&owner.uid) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            match self
                .controller_scale(&ns, &owner.kind, &owner.name, &owner.uid)
                .await?
            {
                Some((uid, scale)) => {
                    scales.insert(uid, scale);
                }
                None => {
                    return Err(Error::Other(format!(
                        "found no controllers for pod {:?}",
                        pod.name_any()
                    )))
                }
            }
        }
        Ok((scales.values().sum(), unmanaged))
    }

    /// The controller a pod's controllerRef names, as the `(uid, scale)`
    /// that counts: a ReplicaSet owned by a Deployment counts as the
    /// Deployment. `None` when it does not exist (or is another object of
    /// the same name).
    async fn controller_scale(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<(String, i32)>, Error> {
        let replicas = |r: Option<i32>| r.unwrap_or(1);
        let same = |have: Option<&String>| have.map(String::as_str) == Some(uid);
        match kind {
            "ReplicaSet" => {
                let Some(rs) = self
                    .replicasets
                    .get(ns, name)
                    .filter(|rs| same(rs.metadata.uid.as_ref()))
                else {
                    return Ok(None);
                };
                if let Some(d) = controller_ref(rs.as_ref()).filter(|r| r.kind == "Deployment") {
                    let found = self
                        .deployments
                        .get(ns, &d.name)
                        .filter(|dep| dep.metadata.uid.as_deref() == Some(d.uid.as_str()));
                    return Ok(found.map(|dep| {
                        let scale = replicas(dep.spec.as_ref().and_then(|s| s.replicas));
                        (d.uid.clone(), scale)
                    }));
                }
                let scale = replicas(rs.spec.as_ref().and_then(|s| s.replicas));
                Ok(Some((uid.to_string(), scale)))
            }
            "StatefulSet" => Ok(self
                .statefulsets
                .get(ns, name)
                .filter(|s| same(s.metadata.uid.as_ref()))
                .map(|s| {
                    let scale = replicas(s.spec.as_ref().and_then(|s| s.replicas));
                    (uid.to_string(), scale)
                })),
            "ReplicationController" => {
                let api: Api<ReplicationController> = Api::namespaced(self.client.clone(), ns);
                match api.get(name).await {
                    Ok(rc) if same(rc.metadata.uid.as_ref()) => {
                        let scale = replicas(rc.spec.as_ref().and_then(|s| s.replicas));
                        Ok(Some((uid.to_string(), scale)))
                    }
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(None),
        }
    }

    async fn write_status(
        &self,
        pdb: &PodDisruptionBudget,
        status: PodDisruptionBudgetStatus,
    ) -> Result<(), Error> {
        let ns = pdb.namespace().unwrap_or_default();
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &ns);
        let mut body = pdb.clone();
        body.status = Some(status);
        match api
            .replace_status(&pdb.name_any(), &PostParams::default(), &body)
            .await
        {
            Ok(updated) => {
                self.budgets.write_through(updated);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// After a failed sync: no disruptions until the next good one, with
    /// the reason in the condition (kube's `failSafe`).
    async fn fail_safe(&self, pdb: &PodDisruptionBudget, message: &str) -> Result<(), Error> {
        let mut status = pdb.status.clone().unwrap_or_default();
        status.disruptions_allowed = 0;
        let observed = status.observed_generation;
        set_condition(&mut status, "False", "SyncFailed", message, observed);
        if Some(&status) == pdb.status.as_ref() {
            return Ok(());
        }
        self.write_status(pdb, status).await
    }
}

/// `GetScaledValueFromIntOrPercent(v, total, roundUp = true)`.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, Error> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "invalid value for IntOrString: invalid value {s:?}"
                    ))
                })?;
            let value = (percent * i64::from(total) + 99) / 100;
            Ok(value.clamp(0, i64::from(i32::MAX)) as i32)
        }
    }
}

fn expires(at: &Time) -> Timestamp {
    at.0 + SignedDuration::try_from(DELETION_TIMEOUT).expect("two minutes fit")
}

/// The `disruptedPods` entries still to honour, and when the first of them
/// expires (kube's `buildDisruptedPodMap`): entries of pods that are gone
/// or being deleted are dropped, as are those older than
/// [`DELETION_TIMEOUT`].
fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Requeue) {
    let mut kept = BTreeMap::new();
    let mut first: Option<Timestamp> = None;
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (kept, None);
    };
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else {
            continue;
        };
        let expiry = expires(at);
        if expiry > now {
            first = Some(first.map_or(expiry, |f| f.min(expiry)));
            kept.insert(pod.name_any(), at.clone());
        }
    }
    let recheck = first.map(|f| Duration::try_from(f.duration_since(now)).unwrap_or_default());
    (kept, recheck)
}

/// Ready pods that are neither being deleted nor just evicted.
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|at| expires(at) <= now)
        })
        .filter(|p| pod_ready(p))
        .count() as i32
}

/// Sets the `DisruptionAllowed` condition; the transition time moves only
/// when the status does (as `meta.SetStatusCondition`).
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    state: &str,
    reason: &str,
    message: &str,
    observed: Option<i64>,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = Time(Timestamp::now());
    match conditions
        .iter_mut()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
    {
        Some(c) => {
            if c.status != state {
                c.last_transition_time = now;
            }
            c.status = state.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = observed;
        }
        None => conditions.push(Condition {
            type_: DISRUPTION_ALLOWED.to_string(),
            status: state.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: observed,
            last_transition_time: now,
        }),
    }
}

/// The status to write, or `None` when the current one is up to date
/// (kube's `updatePdbStatus`).
fn next_status(
    pdb: &PodDisruptionBudget,
    healthy: i32,
    desired: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
) -> Option<PodDisruptionBudgetStatus> {
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let generation = pdb.metadata.generation;
    let old = pdb.status.clone().unwrap_or_default();
    let (state, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let condition_current = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
        .is_some_and(|c| {
            c.status == state && c.reason == reason && c.observed_generation == generation
        });
    let unchanged = old.current_healthy == healthy
        && old.desired_healthy == desired
        && old.expected_pods == expected
        && old.disruptions_allowed == allowed
        && old.disrupted_pods.clone().unwrap_or_default() == disrupted
        && old.observed_generation == generation
        && condition_current;
    if unchanged {
        return None;
    }
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: old.conditions,
    };
    set_condition(&mut status, state, reason, "", generation);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use kube::api::ObjectMeta;

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then(|| Time(Timestamp::now())),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })
    }

    fn budget(disrupted: &[(&str, Timestamp)]) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec::default()),
            status: Some(PodDisruptionBudgetStatus {
                disrupted_pods: Some(
                    disrupted
                        .iter()
                        .map(|(n, at)| (n.to_string(), Time(*at)))
                        .collect(),
                ),
                ..PodDisruptionBudgetStatus::default()
            }),
        }
    }

    #[test]
    fn percentages_round_up() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&pct("50%"), 3).unwrap(), 2);
        assert_eq!(scaled(&pct("34%"), 3).unwrap(), 2);
        assert_eq!(scaled(&pct("33%"), 3).unwrap(), 1);
        assert_eq!(scaled(&pct("0%"), 3).unwrap(), 0);
        assert_eq!(scaled(&pct("100%"), 7).unwrap(), 7);
        assert_eq!(scaled(&IntOrString::Int(4), 3).unwrap(), 4);
        assert!(scaled(&pct("half"), 3).is_err());
    }

    #[test]
    fn evicted_pods_count_as_disrupted_until_they_go_or_two_minutes_pass() {
        let now = Timestamp::now();
        let fresh = now - SignedDuration::from_secs(30);
        let stale = now - SignedDuration::from_secs(121);
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, false),
            pod("d", true, true),
        ];
        let pdb = budget(&[("a", fresh), ("b", stale), ("d", fresh), ("gone", fresh)]);
        let (kept, recheck) = disrupted_pods(&pdb, &pods, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["a"]);
        let recheck = recheck.unwrap();
        assert!(recheck > Duration::from_secs(85) && recheck <= Duration::from_secs(90));
        // a is disrupted, d is being deleted: b and c are healthy.
        assert_eq!(count_healthy(&pods, &kept, now), 2);
        let unready = vec![pod("x", false, false)];
        assert_eq!(count_healthy(&unready, &BTreeMap::new(), now), 0);
    }

    #[test]
    fn status_allows_what_is_above_the_desired_health() {
        let pdb = budget(&[]);
        let s = next_status(&pdb, 3, 2, 3, BTreeMap::new()).unwrap();
        assert_eq!(
            (
                s.current_healthy,
                s.desired_healthy,
                s.expected_pods,
                s.disruptions_allowed
            ),
            (3, 2, 3, 1)
        );
        assert_eq!(s.observed_generation, Some(2));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        // Nothing expected: nothing allowed, however healthy.
        let none = next_status(&pdb, 3, 0, 0, BTreeMap::new()).unwrap();
        assert_eq!(none.disruptions_allowed, 0);
        assert_eq!(
            none.conditions.as_ref().unwrap()[0].reason,
            "InsufficientPods"
        );
        // Written once, then up to date.
        let mut synced = pdb.clone();
        synced.status = Some(s);
        assert!(next_status(&synced, 3, 2, 3, BTreeMap::new()).is_none());
        assert!(next_status(&synced, 2, 2, 3, BTreeMap::new()).is_some());
    }
}
