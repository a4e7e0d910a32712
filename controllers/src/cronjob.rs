//! The CronJob controller (batch/v1): creates a Job from a CronJob's
//! template at each scheduled time, as kube-controller-manager's
//! `cronjob_controllerv2` does.
//!
//! # A sync
//! 1. History: finished Jobs beyond `successfulJobsHistoryLimit` /
//!    `failedJobsHistoryLimit` are deleted, oldest start first.
//! 2. `status.active` is reconciled with the Jobs the CronJob controls:
//!    finished ones leave it (`SawCompletedJob`), missing ones too
//!    (`MissingJob`, checked with a live GET: the Job informer may lag
//!    behind the controller's own create), a Job it controls but does not
//!    list is reported (`UnexpectedJob`, e.g. `kubectl create job
//!    --from=cronjob/x`); `lastSuccessfulTime` follows the latest
//!    completion.
//! 3. Unless being deleted or `suspend`ed: the most recent unmet schedule
//!    time after `lastScheduleTime` (or the creation time, or now minus
//!    `startingDeadlineSeconds`) on the wall clock of `timeZone` (UTC when
//!    unset). More than 100 missed times → `TooManyMissedTimes`; a time
//!    older than the deadline → `MissSchedule` and no Job.
//! 4. `Forbid` with an active Job skips the time (`JobAlreadyActive`);
//!    `Replace` deletes the active Jobs first (`SuccessfulDelete`).
//! 5. The Job `<name>-<scheduled minutes since the epoch>` is created —
//!    the name is the lock against creating a time twice, across restarts
//!    — controlled by the CronJob (the garbage collector deletes it with
//!    its CronJob), with the template's labels and annotations and
//!    `batch.kubernetes.io/cronjob-scheduled-timestamp`; it joins
//!    `status.active` and `lastScheduleTime` is set.
//! 6. The CronJob is re-queued for its next time (plus 100 ms).
//!
//! Time comes from a [`Clock`], so tests can run a schedule without
//! waiting for it: [`FakeClock`], then [`CronJobController::resync`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ballast_cron::Schedule;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;

use crate::events::{EventType, Recorder};
use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{controller_ref, deleting, is_conflict, is_not_found, owner_ref};
use crate::Error;

/// The annotation with a Job's scheduled time (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this are reported and not all looked at.
pub const MANY_MISSED: i64 = 100;
/// Slack after a scheduled time before the CronJob is synced for it.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// The longest re-queue: a CronJob due in years (`0 0 29 2 *`) is looked
/// at daily rather than put on a timer that long.
const MAX_REQUEUE: Duration = Duration::from_secs(86_400);

/// The source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    /// A clock standing at `t`.
    pub fn new(t: Timestamp) -> FakeClock {
        FakeClock(Mutex::new(t))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        *self.0.lock() = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

/// How many schedule times were missed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

/// The last scheduled (or creation) time, a CronJob's deadline, and when
/// the schedule was last met.
#[derive(Debug, Clone, Copy)]
struct Times {
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    deadline_secs: Option<i64>,
}

fn ts(t: &Time) -> Timestamp {
    t.0
}

fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// kube's `mostRecentScheduleTime`: the earliest time considered, the
/// most recent schedule time at or before `now` (if any), and how many
/// were missed. Errors when the schedule has no two run times a second
/// apart within five years (`0 0 30 2 *`).
fn most_recent(
    times: Times,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
    with_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = times.last_scheduled.unwrap_or(times.created);
    if let (true, Some(d)) = (with_deadline, times.deadline_secs) {
        if let Ok(limit) = now.checked_sub(secs(d)) {
            earliest = earliest.max(limit);
        }
    }
    let too_close = || "time difference between two schedules is less than 1 second".to_string();
    let t1 = sched.next(earliest, tz).ok_or_else(too_close)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let t2 = sched.next(t1, tz).ok_or_else(too_close)?;
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let interval = (t2.as_millisecond() - t1.as_millisecond() + 500) / 1000;
    if interval < 1 {
        return Err(too_close());
    }
    let missed = (now.as_second() - t1.as_second()) / interval + 1;
    // Jump close to now, then walk the last few times exactly (irregular
    // schedules such as `30 6-16/4 * * 1-5` may find none: kube's too).
    let start = t1.checked_add(secs((missed - 2) * interval)).unwrap_or(t1);
    let mut latest = None;
    let mut t = sched.next(start, tz);
    for _ in 0..10_000 {
        match t {
            Some(at) if at <= now => {
                latest = Some(at);
                t = sched.next(at, tz);
            }
            _ => break,
        }
    }
    let missed = if missed > MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, latest, missed))
}

/// kube's `nextScheduleTimeDuration`: how long until the next run (plus
/// a little), counted from the most recent time met.
fn next_delay(times: Times, now: Timestamp, sched: &Schedule, tz: &TimeZone) -> Duration {
    let from = match most_recent(times, now, sched, tz, false) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let Some(next) = sched.next(from, tz) else {
        return MAX_REQUEUE;
    };
    let ms = (next.as_millisecond() - now.as_millisecond()).max(0);
    (Duration::from_millis(ms as u64) + NEXT_SCHEDULE_DELTA).min(MAX_REQUEUE)
}

/// The Job's name for a scheduled time: minutes since the epoch.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, `Z` for UTC, as Go's `time.RFC3339`.
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// `Complete` or `Failed`, if the Job has finished.
fn finished_as(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"]
        .into_iter()
        .find(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: job.namespace(),
        name: Some(job.name_any()),
        uid: job.uid(),
        resource_version: job.resource_version(),
        field_path: None,
    }
}

fn remove_active(status: &mut CronJobStatus, uid: &str) {
    if let Some(active) = status.active.as_mut() {
        active.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

/// The CronJob controller; see the module doc.
#[derive(Clone)]
pub struct CronJobController {
    client: Client,
    cron_jobs: Cache<CronJob>,
    jobs: Cache<Job>,
    queue: Queue<Key>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
}

impl CronJobController {
    /// Wires the controller to the shared informers; `clock` tells the time.
    pub fn new(
        client: Client,
        cron_jobs: &mut Informer<CronJob>,
        jobs: &mut Informer<Job>,
        clock: Arc<dyn Clock>,
    ) -> CronJobController {
        let c = CronJobController {
            recorder: Recorder::new(client.clone(), "cronjob-controller", None),
            client,
            cron_jobs: cron_jobs.cache(),
            jobs: jobs.cache(),
            queue: Queue::new(),
            clock,
        };
        let h = c.clone();
        cron_jobs.on_change(move |_, new| {
            if let Some(cj) = new {
                h.queue.add(key_of(cj));
            }
        });
        let h = c.clone();
        jobs.on_change(move |old, new| {
            for job in [old, new].into_iter().flatten() {
                if let Some(r) = controller_ref(job).filter(|r| r.kind == "CronJob") {
                    h.queue
                        .add((job.namespace().unwrap_or_default(), r.name.clone()));
                }
            }
        });
        c
    }

    /// Queues every CronJob for a sync (after a [`FakeClock`] moved).
    pub fn resync(&self) {
        for cj in self.cron_jobs.all() {
            self.queue.add(key_of(cj.as_ref()));
        }
    }

    /// Processes queued CronJobs with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.cron_jobs.wait_ready().await;
        self.jobs.wait_ready().await;
        let c = self.clone();
        self.queue
            .clone()
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await;
    }

    async fn record(&self, cj: &CronJob, kind: EventType, reason: &str, message: &str) {
        self.recorder.publish(cj, kind, reason, message).await;
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let Some(cj) = self.cron_jobs.get(&key.0, &key.1) else {
            return Ok(None);
        };
        let uid = cj.uid().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .namespace(&key.0)
            .into_iter()
            .filter(|j| {
                controller_ref(j.as_ref()).is_some_and(|r| r.kind == "CronJob" && r.uid == uid)
            })
            .collect();
        let before = cj.status.clone().unwrap_or_default();
        let mut status = before.clone();
        let cleaned = self.clean_up_history(&cj, &mut jobs, &mut status).await;
        let result = match cleaned {
            Ok(()) => self.sync_cron_job(&cj, &jobs, &mut status).await,
            Err(e) => Err(e),
        };
        if status != before {
            self.write_status(&cj, status).await?;
        }
        result
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn clean_up_history(
        &self,
        cj: &CronJob,
        jobs: &mut Vec<Arc<Job>>,
        status: &mut CronJobStatus,
    ) -> Result<(), Error> {
        let spec = cj.spec.as_ref();
        let limits = [
            (
                "Complete",
                spec.and_then(|s| s.successful_jobs_history_limit),
            ),
            ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
        ];
        for (outcome, limit) in limits {
            let Some(limit) = limit else { continue };
            let mut done: Vec<Arc<Job>> = jobs
                .iter()
                .filter(|j| finished_as(j) == Some(outcome) && !deleting(j.as_ref()))
                .cloned()
                .collect();
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            if excess == 0 {
                continue;
            }
            // Oldest start first; never-started last; names break ties.
            done.sort_by_key(|j| {
                let start = j
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(ts);
                (start.is_none(), start, j.name_any())
            });
            for job in done.into_iter().take(excess) {
                self.delete_job(cj, &job, status).await?;
                jobs.retain(|j| j.uid() != job.uid());
            }
        }
        Ok(())
    }

    /// Deletes a Job (its pods go in the background) and drops it from
    /// the active list.
    async fn delete_job(
        &self,
        cj: &CronJob,
        job: &Job,
        status: &mut CronJobStatus,
    ) -> Result<(), Error> {
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                let message = format!("Deleted job: {e}");
                self.record(cj, EventType::Warning, "FailedDelete", &message)
                    .await;
                return Err(e.into());
            }
        }
        remove_active(status, &job.uid().unwrap_or_default());
        let message = format!("Deleted job {}", job.name_any());
        self.record(cj, EventType::Normal, "SuccessfulDelete", &message)
            .await;
        Ok(())
    }

    /// Steps 2–6 of the module doc; the re-queue delay.
    async fn sync_cron_job(
        &self,
        cj: &CronJob,
        jobs: &[Arc<Job>],
        status: &mut CronJobStatus,
    ) -> Result<Requeue, Error> {
        let ns = cj.namespace().unwrap_or_default();
        let name = cj.name_any();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let mut children = HashSet::new();
        for job in jobs {
            let uid = job.uid().unwrap_or_default();
            children.insert(uid.clone());
            let listed = status
                .active
                .iter()
                .flatten()
                .any(|r| r.uid.as_deref() == Some(uid.as_str()));
            let outcome = finished_as(job);
            match (listed, outcome) {
                (false, None) => {
                    let message = format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        job.name_any()
                    );
                    self.record(cj, EventType::Warning, "UnexpectedJob", &message)
                        .await;
                }
                (true, Some(condition)) => {
                    remove_active(status, &uid);
                    let message = format!(
                        "Saw completed job: {}, condition: {condition}",
                        job.name_any()
                    );
                    self.record(cj, EventType::Normal, "SawCompletedJob", &message)
                        .await;
                }
                _ => {}
            }
            if outcome == Some("Complete") {
                let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                if let Some(done) = done {
                    let later = status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| ts(t) < done.0);
                    if later {
                        status.last_successful_time = Some(done);
                    }
                }
            }
        }
        let gone: Vec<ObjectReference> = status
            .active
            .iter()
            .flatten()
            .filter(|r| !children.contains(r.uid.as_deref().unwrap_or_default()))
            .cloned()
            .collect();
        for r in gone {
            let job_name = r.name.clone().unwrap_or_default();
            let live = jobs_api.get_opt(&job_name).await?;
            if live.is_none_or(|j| j.uid() != r.uid) {
                let message = format!("Active job went missing: {job_name}");
                self.record(cj, EventType::Normal, "MissingJob", &message)
                    .await;
                remove_active(status, r.uid.as_deref().unwrap_or_default());
            }
        }
        if deleting(cj) {
            return Ok(None);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let tz = match spec.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(zone) => match ballast_cron::time_zone(zone) {
                Ok(tz) => tz,
                Err(e) => {
                    let message = format!("invalid timeZone: {zone:?}: {e}");
                    self.record(cj, EventType::Warning, "UnknownTimeZone", &message)
                        .await;
                    return Ok(None);
                }
            },
        };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.record(cj, EventType::Warning, "UnparseableSchedule", &message)
                    .await;
                return Ok(None);
            }
        };
        let now = self.clock.now();
        let mut times = Times {
            created: cj
                .metadata
                .creation_timestamp
                .as_ref()
                .map(ts)
                .unwrap_or(now),
            last_scheduled: status.last_schedule_time.as_ref().map(ts),
            deadline_secs: spec.starting_deadline_seconds,
        };
        let scheduled = match most_recent(times, now, &sched, &tz, true) {
            Err(e) => {
                let message = format!("invalid schedule: {} : {e}", spec.schedule);
                self.record(cj, EventType::Warning, "InvalidSchedule", &message)
                    .await;
                return Ok(None);
            }
            Ok((_, latest, missed)) => {
                if missed == Missed::Many && latest.is_some() {
                    self.record(
                        cj,
                        EventType::Warning,
                        "TooManyMissedTimes",
                        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                    )
                    .await;
                }
                latest
            }
        };
        let Some(scheduled) = scheduled else {
            return Ok(Some(next_delay(times, now, &sched, &tz)));
        };
        if let Some(d) = spec.starting_deadline_seconds {
            if scheduled.checked_add(secs(d)).is_ok_and(|t| t < now) {
                let when = scheduled
                    .to_zoned(TimeZone::UTC)
                    .strftime("%a, %d %b %Y %H:%M:%S %z")
                    .to_string();
                let message = format!("Missed scheduled time to start a job: {when}");
                self.record(cj, EventType::Warning, "MissSchedule", &message)
                    .await;
                return Ok(Some(next_delay(times, now, &sched, &tz)));
            }
        }
        let name_for_time = job_name(&name, scheduled);
        let already = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name_for_time.as_str()))
            || times.last_scheduled == Some(scheduled);
        if already {
            return Ok(Some(next_delay(times, now, &sched, &tz)));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let active: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
        if policy == "Forbid" && !active.is_empty() {
            self.record(
                cj,
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            .await;
            return Ok(Some(next_delay(times, now, &sched, &tz)));
        }
        if policy == "Replace" {
            for r in &active {
                let job_name = r.name.clone().unwrap_or_default();
                match jobs_api.get_opt(&job_name).await? {
                    Some(job) => self.delete_job(cj, &job, status).await?,
                    None => remove_active(status, r.uid.as_deref().unwrap_or_default()),
                }
            }
        }
        let template = spec.job_template;
        let mut annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, &tz));
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name_for_time.clone()),
                namespace: Some(ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref(cj)]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        let created = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let message = format!("Created job {name_for_time}");
                self.record(cj, EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                created
            }
            Err(e) if is_conflict(&e) => {
                // Created before the status write that would have listed
                // it was lost (or by someone else: then it is theirs).
                let Some(existing) = jobs_api.get_opt(&name_for_time).await? else {
                    return Err(e.into());
                };
                let ours =
                    controller_ref(&existing).is_some_and(|r| Some(&r.uid) == cj.uid().as_ref());
                let listed = active.iter().any(|r| r.uid == existing.uid());
                if !ours || listed {
                    return Ok(None);
                }
                existing
            }
            Err(e) => {
                let message = format!("Error creating job: {e}");
                self.record(cj, EventType::Warning, "FailedCreate", &message)
                    .await;
                return Err(e.into());
            }
        };
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(job_ref(&created));
        status.last_schedule_time = Some(Time(scheduled));
        times.last_scheduled = Some(scheduled);
        Ok(Some(next_delay(times, now, &sched, &tz)))
    }

    /// Replaces the CronJob's status; a conflict is retried by the queue.
    async fn write_status(&self, cj: &CronJob, status: CronJobStatus) -> Result<(), Error> {
        let ns = cj.namespace().unwrap_or_default();
        let api: Api<CronJob> = Api::namespaced(self.client.clone(), &ns);
        let body = CronJob {
            metadata: ObjectMeta {
                name: Some(cj.name_any()),
                namespace: Some(ns),
                resource_version: cj.resource_version(),
                uid: cj.uid(),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        };
        match api
            .replace_status(&cj.name_any(), &PostParams::default(), &body)
            .await
        {
            Ok(updated) => {
                self.cron_jobs.write_through(updated);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn times(created: &str, last: Option<&str>, deadline: Option<i64>) -> Times {
        Times {
            created: at(created),
            last_scheduled: last.map(at),
            deadline_secs: deadline,
        }
    }

    fn recent(t: Times, now: &str, spec: &str, zone: &str) -> (Option<String>, Missed) {
        let tz = ballast_cron::time_zone(zone).unwrap();
        let (_, latest, missed) =
            most_recent(t, at(now), &Schedule::parse(spec).unwrap(), &tz, true).unwrap();
        (latest.map(|t| t.to_string()), missed)
    }

    #[test]
    fn the_most_recent_unmet_time() {
        let t = times("2026-12-07T00:00:30Z", None, None);
        // Nothing due yet.
        assert_eq!(
            recent(t, "2026-12-07T00:00:59Z", "*/1 * * * *", "UTC"),
            (None, Missed::None)
        );
        // Exactly one due.
        assert_eq!(
            recent(t, "2026-12-07T00:01:00Z", "*/1 * * * *", "UTC"),
            (Some("2026-12-07T00:01:00Z".into()), Missed::None)
        );
        // Several missed: the latest wins.
        assert_eq!(
            recent(t, "2026-12-07T00:05:10Z", "*/1 * * * *", "UTC"),
            (Some("2026-12-07T00:05:00Z".into()), Missed::Few)
        );
        // A day of minutes missed is too many.
        assert_eq!(
            recent(t, "2026-12-08T00:00:10Z", "*/1 * * * *", "UTC"),
            (Some("2026-12-08T00:00:00Z".into()), Missed::Many)
        );
        // ... unless the starting deadline bounds the look back.
        let d = times("2026-12-07T00:00:30Z", None, Some(200));
        assert_eq!(
            recent(d, "2026-12-08T00:00:10Z", "*/1 * * * *", "UTC"),
            (Some("2026-12-08T00:00:00Z".into()), Missed::Few)
        );
        // After the last scheduled time, not the creation.
        let l = times("2026-12-01T00:00:00Z", Some("2026-12-07T00:04:00Z"), None);
        assert_eq!(
            recent(l, "2026-12-07T00:04:30Z", "*/1 * * * *", "UTC"),
            (None, Missed::None)
        );
        // In the CronJob's zone: 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            recent(t, "2026-12-08T00:00:01Z", "0 9 * * *", "Asia/Tokyo"),
            (Some("2026-12-08T00:00:00Z".into()), Missed::None)
        );
    }

    #[test]
    fn requeue_waits_for_the_next_time() {
        let sched = Schedule::parse("*/5 * * * *").unwrap();
        let t = times("2026-12-07T00:00:30Z", Some("2026-12-07T00:05:00Z"), None);
        let d = next_delay(t, at("2026-12-07T00:06:00Z"), &sched, &TimeZone::UTC);
        assert_eq!(d, Duration::from_secs(240) + NEXT_SCHEDULE_DELTA);
        let never = Schedule::parse("0 0 30 2 *").unwrap();
        assert!(most_recent(t, at("2026-12-07T00:06:00Z"), &never, &TimeZone::UTC, true).is_err());
        assert_eq!(
            next_delay(t, at("2026-12-07T00:06:00Z"), &never, &TimeZone::UTC),
            MAX_REQUEUE
        );
        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            next_delay(t, at("2026-12-07T00:06:00Z"), &leap, &TimeZone::UTC),
            MAX_REQUEUE
        );
    }

    #[test]
    fn job_names_and_scheduled_annotations() {
        assert_eq!(
            job_name("tick", at("2026-12-07T00:05:00Z")),
            "tick-29943365"
        );
        let tokyo = ballast_cron::time_zone("Asia/Tokyo").unwrap();
        assert_eq!(
            rfc3339_in(at("2026-12-07T00:05:00Z"), &tokyo),
            "2026-12-07T09:05:00+09:00"
        );
        assert_eq!(
            rfc3339_in(at("2026-12-07T00:05:00Z"), &TimeZone::UTC),
            "2026-12-07T00:05:00Z"
        );
    }
}
