//! The Job controller (batch/v1): runs pods until `completions` of them
//! succeed, at most `parallelism` at a time, as kube-controller-manager's
//! job controller does (1.31+ condition order).
//!
//! # Counting without losing a pod
//! Every pod it creates carries the `batch.kubernetes.io/job-tracking`
//! finalizer, so a finished pod cannot vanish before it is counted, however
//! fast it is deleted. A sync first records each newly finished pod's uid
//! in `status.uncountedTerminatedPods` *and* adds it to `succeeded` or
//! `failed` in the same status write; only after that write succeeds are
//! the finalizers removed; a uid leaves the uncounted list once its pod has
//! no finalizer (or is gone). So a pod is counted exactly once: before the
//! write it is not counted, after it its uid guards against a second count,
//! and once its finalizer is off it is never looked at again. Pods the
//! controller deletes itself (excess, suspension, success) lose the
//! finalizer first and are not failures; pods deleted by anyone else count
//! as failed, as in Kubernetes.
//!
//! # Lifecycle
//! - Pods: `parallelism` at a time, never more than the completions still
//!   missing; `Indexed` jobs give each pod its index (annotation and label
//!   `batch.kubernetes.io/job-completion-index`, env `JOB_COMPLETION_INDEX`,
//!   hostname `<job>-<index>`) and recreate only missing indexes.
//! - Failed pods are replaced after an exponential back-off (10 s doubling,
//!   6 min at most) counted from the last failure; a success resets it.
//! - `failed > backoffLimit` (or, under `OnFailure`, container restarts
//!   reaching it), or `activeDeadlineSeconds` passed: `FailureTarget`, the
//!   active pods are deleted, and `Failed` follows once none is left
//!   (reasons `BackoffLimitExceeded`, `DeadlineExceeded`).
//! - Success: `SuccessCriteriaMet`, lingering pods deleted, then `Complete`
//!   with `completionTime` once none is running.
//! - `suspend: true` deletes the active pods and sets `Suspended`; resuming
//!   resets `startTime` (and with it the deadline).
//! - `ttlSecondsAfterFinished`: the finished Job is deleted (propagation
//!   Background: its pods go through the garbage collector).
//!
//! The pods themselves (the template made into a pod, and what is read
//! back from one) are in `pods`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

pub use pods::pod_for;
use pods::{
    excess, format_indexes, has_finalizer, index_of, outcome, parse_indexes, phase, restarts_exceed,
};

mod pods;

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::replicaset::{Expectations, BURST_REPLICAS};
use crate::util::{controller_ref, deleting, is_not_found, pod_active, pod_ready};
use crate::Error;

/// The finalizer on every pod of a Job until the pod is counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable with the completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Timings of the Job controller.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Delay before the first replacement of a failed pod; doubles with
    /// each further failure (Kubernetes: 10 s).
    pub backoff_base: Duration,
    /// The longest back-off (Kubernetes: 6 min).
    pub backoff_max: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(360),
        }
    }
}

/// Failures since the last success and when the last was seen.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    last: Instant,
}

/// The Job controller; see the module doc.
#[derive(Clone)]
pub struct JobController {
    client: Client,
    pods: Cache<Pod>,
    jobs: Cache<Job>,
    queue: Queue<Key>,
    /// Pods still carrying the finalizer whose Job may be gone.
    orphans: Queue<Key>,
    expectations: Expectations,
    backoff: Arc<Mutex<HashMap<Key, Backoff>>>,
    recorder: Recorder,
    config: JobConfig,
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has its final condition (Complete or Failed).
pub fn finished(job: &Job) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition, keeping its transition time when nothing changes.
fn set_condition(conds: &mut Vec<JobCondition>, c: JobCondition) {
    match conds.iter_mut().find(|o| o.type_ == c.type_) {
        Some(o) if o.status == c.status && o.reason == c.reason => {}
        Some(o) => *o = c,
        None => conds.push(c),
    }
}

/// What a sync decided about the Job's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Running,
    Failing(&'static str, &'static str),
    Succeeding,
}

impl JobController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        pods: &mut Informer<Pod>,
        jobs: &mut Informer<Job>,
        config: JobConfig,
    ) -> JobController {
        let c = JobController {
            recorder: Recorder::new(client.clone(), "job-controller", None),
            client,
            pods: pods.cache(),
            jobs: jobs.cache(),
            queue: Queue::new(),
            orphans: Queue::new(),
            expectations: Expectations::default(),
            backoff: Arc::default(),
            config,
        };
        let h = c.clone();
        jobs.on_change(move |old, new| match new {
            Some(job) => h.queue.add(key_of(job)),
            None => {
                if let Some(job) = old {
                    let key = key_of(job);
                    h.expectations.forget(&key);
                    h.backoff.lock().remove(&key);
                    // Its pods lose their finalizers (the GC deletes them).
                    for pod in h.pods.namespace(&key.0) {
                        if has_finalizer(&pod) && h.owner_key(&pod).is_none() {
                            h.orphans.add(key_of(pod.as_ref()));
                        }
                    }
                }
            }
        });
        let h = c.clone();
        pods.on_change(move |old, new| h.pod_changed(old, new));
        c
    }

    /// The key of the Job in the cache controlling `pod`.
    fn owner_key(&self, pod: &Pod) -> Option<Key> {
        let r = controller_ref(pod)?;
        if r.kind != "Job" {
            return None;
        }
        let ns = pod.namespace().unwrap_or_default();
        let job = self.jobs.get(&ns, &r.name)?;
        (job.uid().as_deref() == Some(r.uid.as_str())).then(|| (ns, r.name.clone()))
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        if let Some(pod) = new {
            let job_owned = controller_ref(pod).is_some_and(|r| r.kind == "Job");
            match self.owner_key(pod) {
                Some(key) => {
                    if old.is_none() {
                        self.expectations.creation_observed(&key);
                    }
                    if deleting(pod) && !old.is_some_and(deleting) {
                        self.expectations.deletion_observed(&key, &key_of(pod));
                    }
                    self.queue.add(key);
                }
                None if job_owned && has_finalizer(pod) => self.orphans.add(key_of(pod)),
                None => {}
            }
        }
        if let Some(pod) = old {
            if let Some(key) = self.owner_key(pod) {
                if new.is_none() {
                    self.expectations.deletion_observed(&key, &key_of(pod));
                }
                self.queue.add(key);
            }
        }
    }

    /// Processes queued Jobs with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.jobs.wait_ready().await;
        self.pods.wait_ready().await;
        let c = self.clone();
        let orphans = self.orphans.clone().run(1, move |key| {
            let c = c.clone();
            async move { c.sync_orphan(key).await }
        });
        let c = self.clone();
        let jobs = self.queue.clone().run(workers, move |key| {
            let c = c.clone();
            async move { c.sync(key).await }
        });
        futures::join!(orphans, jobs);
    }

    /// Removes the finalizer from a pod whose Job is gone (checked live:
    /// the cache may simply not have seen the Job yet).
    async fn sync_orphan(&self, key: Key) -> Result<Requeue, Error> {
        let Some(pod) = self.pods.get(&key.0, &key.1) else {
            return Ok(None);
        };
        if !has_finalizer(&pod) || self.owner_key(&pod).is_some() {
            return Ok(None);
        }
        if let Some(r) = controller_ref(pod.as_ref()) {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &key.0);
            if let Some(live) = jobs.get_opt(&r.name).await? {
                if live.uid().as_deref() == Some(r.uid.as_str()) {
                    self.queue.add((key.0.clone(), r.name.clone()));
                    return Ok(None);
                }
            }
        }
        self.remove_finalizers(&key.0, &[pod]).await?;
        Ok(None)
    }

    /// Replaces the Job's status (at `version`); the new resourceVersion,
    /// or None if the Job is gone.
    async fn write_status(
        &self,
        job: &Job,
        key: &Key,
        version: Option<String>,
        status: JobStatus,
    ) -> Result<Option<String>, Error> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &key.0);
        let body = Job {
            metadata: ObjectMeta {
                name: Some(key.1.clone()),
                namespace: Some(key.0.clone()),
                resource_version: version,
                uid: job.uid(),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        };
        match jobs
            .replace_status(&key.1, &PostParams::default(), &body)
            .await
        {
            Ok(updated) => {
                let version = updated.resource_version();
                self.jobs.write_through(updated);
                Ok(version)
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Strips the tracking finalizer from `pods` (those that carry it).
    async fn remove_finalizers(&self, ns: &str, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let results = join_all(pods.iter().filter(|p| has_finalizer(p)).map(|p| {
            let api = api.clone();
            let name = p.name_any();
            let patch = json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                "uid": p.uid()}});
            async move {
                api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
            }
        }))
        .await;
        for r in results {
            match r {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn record(&self, job: &Job, kind: EventType, reason: &'static str, message: String) {
        let recorder = self.recorder.clone();
        let reference = crate::events::reference(job);
        tokio::spawn(async move {
            recorder
                .publish_about(reference, kind, reason, &message)
                .await
        });
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(job) = self.jobs.get(&key.0, &key.1) else {
            self.expectations.forget(&key);
            self.backoff.lock().remove(&key);
            return Ok(None);
        };
        let uid = job.uid().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = self
            .pods
            .namespace(&key.0)
            .into_iter()
            .filter(|p| controller_ref(p.as_ref()).is_some_and(|r| r.uid == uid))
            .collect();
        if deleting(job.as_ref()) {
            self.remove_finalizers(&key.0, &owned).await?;
            return Ok(None);
        }
        if finished(&job) {
            self.remove_finalizers(&key.0, &owned).await?;
            return self.expire(&job).await;
        }
        let spec = job.spec.clone().unwrap_or_default();
        let old = job.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);

        // Count newly finished pods (see the module doc).
        let uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_ok: BTreeSet<String> = uncounted.succeeded.into_iter().flatten().collect();
        let mut unc_failed: BTreeSet<String> = uncounted.failed.into_iter().flatten().collect();
        let mut succeeded = old.succeeded.unwrap_or(0);
        let mut failed = old.failed.unwrap_or(0);
        let mut done_indexes = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
        let (mut new_ok, mut new_failed) = (0, 0);
        for pod in owned.iter().filter(|p| has_finalizer(p)) {
            let pod_uid = pod.uid().unwrap_or_default();
            if unc_ok.contains(&pod_uid) || unc_failed.contains(&pod_uid) {
                continue;
            }
            match outcome(pod) {
                Some(true) => {
                    if indexed {
                        if let Some(i) = index_of(pod).filter(|i| Some(*i) < completions) {
                            done_indexes.insert(i);
                        }
                    } else {
                        succeeded += 1;
                    }
                    unc_ok.insert(pod_uid);
                    new_ok += 1;
                }
                Some(false) => {
                    failed += 1;
                    unc_failed.insert(pod_uid);
                    new_failed += 1;
                }
                None => {}
            }
        }
        if indexed {
            succeeded = done_indexes.len() as i32;
        }
        let tracked: HashSet<String> = owned
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(|p| p.uid())
            .collect();
        let keep_tracked = |set: &mut BTreeSet<String>| set.retain(|u| tracked.contains(u));
        keep_tracked(&mut unc_ok);
        keep_tracked(&mut unc_failed);
        {
            let mut backoff = self.backoff.lock();
            if new_ok > 0 {
                backoff.remove(&key);
            }
            if new_failed > 0 {
                let b = backoff.entry(key.clone()).or_insert(Backoff {
                    failures: 0,
                    last: Instant::now(),
                });
                b.failures += new_failed;
                b.last = Instant::now();
            }
        }

        let active: Vec<Arc<Pod>> = owned.iter().filter(|p| pod_active(p)).cloned().collect();
        let terminating = owned
            .iter()
            .filter(|p| deleting(p.as_ref()) && !matches!(phase(p), "Succeeded" | "Failed"))
            .count() as i32;
        let suspended = spec.suspend == Some(true);
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let mut start_time = old.start_time.clone();
        let was_suspended = condition(&job, "Suspended").is_some();
        let mut requeue: Option<Duration> = None;
        let mut earliest = |d: Duration| {
            requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
        };

        // The verdict: already decided, or decided now.
        let verdict = if let Some(c) = condition(&job, "FailureTarget") {
            match c.reason.as_deref() {
                Some("DeadlineExceeded") => Verdict::Failing("DeadlineExceeded", DEADLINE_MSG),
                _ => Verdict::Failing("BackoffLimitExceeded", BACKOFF_MSG),
            }
        } else if condition(&job, "SuccessCriteriaMet").is_some() {
            Verdict::Succeeding
        } else {
            let backoff_limit = spec.backoff_limit.unwrap_or(6);
            let succeeded_all = match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            let deadline_left = match (spec.active_deadline_seconds, &start_time) {
                (Some(ads), Some(start)) if !suspended => {
                    let end = start.0.as_second().saturating_add(ads);
                    Some(end - now.as_second())
                }
                _ => None,
            };
            if succeeded_all {
                Verdict::Succeeding
            } else if failed > backoff_limit || restarts_exceed(&spec, &active, backoff_limit) {
                Verdict::Failing("BackoffLimitExceeded", BACKOFF_MSG)
            } else if deadline_left.is_some_and(|s| s <= 0) {
                Verdict::Failing("DeadlineExceeded", DEADLINE_MSG)
            } else {
                if let Some(s) = deadline_left {
                    earliest(Duration::from_secs(s as u64));
                }
                Verdict::Running
            }
        };

        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        let can_manage = self.expectations.satisfied(&key);
        let mut active_count = active.len() as i32;
        let mut failure = None;
        match verdict {
            Verdict::Failing(reason, message) => {
                if condition(&job, "FailureTarget").is_none() {
                    set_condition(
                        &mut conditions,
                        new_condition("FailureTarget", "True", reason, message, now),
                    );
                    self.record(&job, EventType::Warning, reason, message.into());
                }
                // Deleted without losing the finalizer: counted as failed.
                if let Err(e) = self.delete_pods(&key, &api, &active, false).await {
                    failure = Some(e);
                }
                active_count = 0;
                if active.is_empty() && terminating == 0 {
                    set_condition(
                        &mut conditions,
                        new_condition("Failed", "True", reason, message, now),
                    );
                }
            }
            Verdict::Succeeding => {
                if condition(&job, "SuccessCriteriaMet").is_none() {
                    set_condition(
                        &mut conditions,
                        new_condition(
                            "SuccessCriteriaMet",
                            "True",
                            COMPLETIONS_REACHED,
                            COMPLETE_MSG,
                            now,
                        ),
                    );
                }
                if let Err(e) = self.delete_pods(&key, &api, &active, true).await {
                    failure = Some(e);
                }
                active_count = 0;
                if active.is_empty() && terminating == 0 {
                    set_condition(
                        &mut conditions,
                        new_condition("Complete", "True", COMPLETIONS_REACHED, COMPLETE_MSG, now),
                    );
                    self.record(&job, EventType::Normal, "Completed", "Job completed".into());
                }
            }
            Verdict::Running if suspended => {
                if !was_suspended {
                    set_condition(
                        &mut conditions,
                        new_condition("Suspended", "True", "JobSuspended", "Job suspended", now),
                    );
                    self.record(&job, EventType::Normal, "Suspended", "Job suspended".into());
                }
                if can_manage {
                    if let Err(e) = self.delete_pods(&key, &api, &active, true).await {
                        failure = Some(e);
                    }
                    active_count = 0;
                }
            }
            Verdict::Running => {
                if was_suspended {
                    set_condition(
                        &mut conditions,
                        new_condition("Suspended", "False", "JobResumed", "Job resumed", now),
                    );
                    self.record(&job, EventType::Normal, "Resumed", "Job resumed".into());
                    start_time = Some(Time(now));
                }
                if start_time.is_none() {
                    start_time = Some(Time(now));
                    if let Some(ads) = spec.active_deadline_seconds {
                        earliest(Duration::from_secs(ads.max(0) as u64));
                    }
                }
                if can_manage {
                    let plan = self.plan(
                        indexed,
                        completions,
                        parallelism,
                        succeeded,
                        &active,
                        &done_indexes,
                    );
                    match self.carry_out(&job, &key, &api, plan).await {
                        Ok((delta, wait)) => {
                            active_count += delta;
                            if let Some(w) = wait {
                                earliest(w);
                            }
                        }
                        Err(e) => failure = Some(e),
                    }
                }
            }
        }

        // As in Kubernetes, the final condition waits until every finished
        // pod is counted and rid of its finalizer: a Job seen Complete or
        // Failed has nothing left in `uncountedTerminatedPods`. It is
        // written after the finalizers are removed below.
        let is_final =
            |c: &JobCondition| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True";
        let mut pending_final = None;
        if !unc_ok.is_empty() || !unc_failed.is_empty() {
            if let Some(i) = conditions.iter().position(is_final) {
                pending_final = Some(conditions.remove(i));
            }
        }
        let finishing = conditions.iter().any(is_final);
        let positive = |n: i32| (n > 0).then_some(n);
        let list = |s: &BTreeSet<String>| (!s.is_empty()).then(|| s.iter().cloned().collect());
        let uncounted_pods = UncountedTerminatedPods {
            succeeded: list(&unc_ok),
            failed: list(&unc_failed),
        };
        let status = JobStatus {
            active: positive(active_count),
            succeeded: positive(succeeded),
            failed: positive(failed),
            ready: Some(active.iter().filter(|p| pod_ready(p)).count() as i32),
            terminating: Some(terminating),
            start_time,
            completion_time: if finishing && conditions.iter().any(|c| c.type_ == "Complete") {
                old.completion_time.clone().or(Some(Time(now)))
            } else {
                old.completion_time.clone()
            },
            completed_indexes: indexed.then(|| format_indexes(&done_indexes)),
            failed_indexes: None,
            conditions: (!conditions.is_empty()).then_some(conditions),
            uncounted_terminated_pods: Some(uncounted_pods),
        };
        let mut version = job.resource_version();
        if Some(&status) != job.status.as_ref() {
            match self.write_status(&job, &key, version, status.clone()).await {
                Ok(Some(v)) => version = Some(v),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        // Counted: now the finalizers may go.
        let counted: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| {
                p.uid()
                    .is_some_and(|u| unc_ok.contains(&u) || unc_failed.contains(&u))
            })
            .cloned()
            .collect();
        self.remove_finalizers(&key.0, &counted).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(cond) = pending_final {
            // Everything counted: the uncounted lists empty, the final
            // condition on.
            let complete = cond.type_ == "Complete";
            let mut last = status;
            last.conditions.get_or_insert_with(Vec::new).push(cond);
            last.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
            if complete {
                last.completion_time = old.completion_time.clone().or(Some(Time(now)));
            }
            if self
                .write_status(&job, &key, version, last)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            self.queue.add(key);
            return Ok(None);
        }
        if finishing {
            // The finished Job's TTL, if any, starts now.
            self.queue.add(key);
            return Ok(None);
        }
        Ok(requeue)
    }

    /// Deletes `pods`; `uncounted` ones lose their finalizer first, so
    /// their end is not a failure.
    async fn delete_pods(
        &self,
        key: &Key,
        api: &Api<Pod>,
        pods: &[Arc<Pod>],
        uncounted: bool,
    ) -> Result<(), Error> {
        if pods.is_empty() {
            return Ok(());
        }
        if uncounted {
            self.remove_finalizers(&key.0, pods).await?;
        }
        self.expectations
            .expect_deletions(key, pods.iter().map(|p| key_of(p.as_ref())));
        let results = join_all(pods.iter().map(|p| {
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
        let mut first = None;
        for (pod, r) in pods.iter().zip(results) {
            match r {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => self
                    .expectations
                    .deletion_observed(key, &key_of(pod.as_ref())),
                Err(e) => {
                    self.expectations
                        .deletion_observed(key, &key_of(pod.as_ref()));
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The pods to create (their indexes, `None` for NonIndexed) and to
    /// delete for a running Job.
    fn plan(
        &self,
        indexed: bool,
        completions: Option<i32>,
        parallelism: i32,
        succeeded: i32,
        active: &[Arc<Pod>],
        done: &BTreeSet<i32>,
    ) -> Plan {
        let mut plan = Plan::default();
        if indexed {
            let total = completions.unwrap_or(0);
            let mut seen = HashSet::new();
            let mut valid = Vec::new();
            for p in active {
                match index_of(p) {
                    Some(i) if i < total && !done.contains(&i) && seen.insert(i) => {
                        valid.push(p.clone())
                    }
                    _ => plan.delete.push(p.clone()),
                }
            }
            let room = (parallelism as usize).saturating_sub(valid.len());
            if valid.len() > parallelism as usize {
                plan.delete
                    .extend(excess(&valid, valid.len() - parallelism as usize));
            }
            plan.create = (0..total)
                .filter(|i| !done.contains(i) && !seen.contains(i))
                .take(room)
                .map(Some)
                .collect();
        } else {
            let want = match completions {
                Some(c) => (c - succeeded).clamp(0, parallelism),
                None if succeeded > 0 => active.len() as i32,
                None => parallelism,
            } as usize;
            if active.len() > want {
                plan.delete = excess(active, active.len() - want);
            } else {
                plan.create = vec![None; want - active.len()];
            }
        }
        plan.create.truncate(BURST_REPLICAS);
        plan
    }

    /// Deletes and creates what `plan` says, the creations held back
    /// while a failure's back-off lasts. Returns the change in active
    /// pods and how long the back-off still holds.
    async fn carry_out(
        &self,
        job: &Job,
        key: &Key,
        api: &Api<Pod>,
        plan: Plan,
    ) -> Result<(i32, Option<Duration>), Error> {
        let mut delta = 0;
        if !plan.delete.is_empty() {
            self.delete_pods(key, api, &plan.delete, true).await?;
            delta -= plan.delete.len() as i32;
        }
        if plan.create.is_empty() {
            return Ok((delta, None));
        }
        if let Some(b) = self.backoff.lock().get(key).copied() {
            let exp = b.failures.saturating_sub(1).min(16);
            let delay = self
                .config
                .backoff_base
                .saturating_mul(1u32 << exp)
                .min(self.config.backoff_max);
            let waited = b.last.elapsed();
            if waited < delay {
                return Ok((delta, Some(delay - waited)));
            }
        }
        let n = plan.create.len();
        self.expectations.expect_creations(key, n);
        let pp = PostParams::default();
        let (mut done, mut batch) = (0, 1);
        let mut created = Vec::new();
        let mut first_error = None;
        while done < n && first_error.is_none() {
            let size = batch.min(n - done);
            let pods: Vec<Pod> = plan.create[done..done + size]
                .iter()
                .map(|i| pod_for(job, *i))
                .collect();
            let results = join_all(pods.iter().map(|p| api.create(&pp, p))).await;
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
        for _ in done..n {
            self.expectations.creation_observed(key);
        }
        delta += created.len() as i32;
        for name in created.iter().take(10) {
            self.record(
                job,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
        match first_error {
            Some(e) => {
                self.record(
                    job,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Error creating: {e}"),
                );
                Err(e.into())
            }
            None => Ok((delta, None)),
        }
    }

    /// Deletes a finished Job whose `ttlSecondsAfterFinished` has passed
    /// (re-read live first: the TTL may have been changed); otherwise
    /// asks to be called again when it will have.
    async fn expire(&self, job: &Job) -> Result<Requeue, Error> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(None);
        };
        let finished_at = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .or_else(|| condition(job, "Failed").and_then(|c| c.last_transition_time.clone()))
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let left = finished_at.as_second() + i64::from(ttl) - Timestamp::now().as_second();
        if left > 0 {
            return Ok(Some(Duration::from_secs(left as u64)));
        }
        let ns = job.namespace().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let Some(fresh) = jobs.get_opt(&job.name_any()).await? else {
            return Ok(None);
        };
        let fresh_ttl = fresh
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished);
        if fresh.uid() != job.uid() || fresh_ttl != Some(ttl) || deleting(&fresh) {
            return Ok(None);
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.uid(),
                resource_version: fresh.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match jobs.delete(&job.name_any(), &dp).await {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

const BACKOFF_MSG: &str = "Job has reached the specified backoff limit";
const DEADLINE_MSG: &str = "Job was active longer than specified deadline";
const COMPLETIONS_REACHED: &str = "CompletionsReached";
const COMPLETE_MSG: &str = "Reached expected number of succeeded pods";

#[derive(Default)]
struct Plan {
    create: Vec<Option<i32>>,
    delete: Vec<Arc<Pod>>,
}
