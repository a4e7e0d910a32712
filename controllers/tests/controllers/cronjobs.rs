//! The CronJob controller against an in-process apiserver over a real
//! etcd, on a fake clock: each test moves the clock to a schedule time and
//! asks for a resync, so a `*/1 * * * *` CronJob runs many "minutes" in a
//! second. The tests play the Job controller themselves (they set the
//! Jobs' `Complete`/`Failed` conditions through `jobs/status`).

use std::sync::Arc;

use crate::common::*;
use ballast_controllers::cronjob::{job_name, CronJobController, FakeClock, SCHEDULED_TIMESTAMP};
use ballast_controllers::informer::Informer;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

struct World {
    env: Env,
    clock: Arc<FakeClock>,
    controller: CronJobController,
    cron_jobs: Api<CronJob>,
    jobs: Api<Job>,
}

/// The controller on its own informers over the test's namespace, with
/// a fake clock at the epoch (every test sets it first).
async fn world(ns: &str) -> World {
    let mut env = env(ns).await;
    let clock = Arc::new(FakeClock::new(Timestamp::UNIX_EPOCH));
    let cron_jobs: Api<CronJob> = Api::namespaced(env.client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    let mut cj_informer = Informer::new(cron_jobs.clone(), watcher::Config::default());
    let mut job_informer = Informer::new(jobs.clone(), watcher::Config::default());
    let controller = CronJobController::new(
        env.client.clone(),
        &mut cj_informer,
        &mut job_informer,
        clock.clone(),
    );
    env.spawn(cj_informer.run());
    env.spawn(job_informer.run());
    env.spawn(controller.clone().run(2));
    World {
        env,
        clock,
        controller,
        cron_jobs,
        jobs,
    }
}

fn cron_job(name: &str, spec: Value) -> CronJob {
    let mut spec = spec;
    spec["jobTemplate"] = json!({
        "metadata": {"labels": {"app": name}, "annotations": {"team": "batch"}},
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name}, "spec": spec}))
    .expect("cronjob")
}

impl World {
    /// Creates the CronJob; its creation time. The clock is first set
    /// just before the real time, so the new CronJob finds nothing due
    /// from the times earlier steps of a test moved the clock to.
    async fn create(&self, cj: CronJob) -> Timestamp {
        self.clock.set(
            Timestamp::now()
                .checked_sub(SignedDuration::from_secs(2))
                .unwrap(),
        );
        let created = self
            .cron_jobs
            .create(&PostParams::default(), &cj)
            .await
            .expect("create cronjob");
        created.creation_timestamp().expect("creationTimestamp").0
    }

    /// Moves the clock to `t` and syncs every CronJob.
    fn at(&self, t: Timestamp) {
        self.clock.set(t);
        self.controller.resync();
    }

    async fn job_names(&self, cj: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("app={cj}"));
        let mut names: Vec<String> = self
            .jobs
            .list(&lp)
            .await
            .expect("list jobs")
            .items
            .iter()
            .map(|j| j.name_any())
            .collect();
        names.sort();
        names
    }

    /// Waits until the CronJob's Jobs are exactly `want`.
    async fn expect_jobs(&self, cj: &str, want: &[String]) {
        let mut want = want.to_vec();
        want.sort();
        eventually(&format!("{cj}'s jobs are {want:?}"), || async {
            let have = self.job_names(cj).await;
            (have == want).then_some(())
        })
        .await;
    }

    async fn active(&self, cj: &str) -> Vec<String> {
        let cj = self.cron_jobs.get(cj).await.expect("get cronjob");
        cj.status
            .and_then(|s| s.active)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.name)
            .collect()
    }

    /// Waits until the CronJob's `status.active` names `want`.
    async fn expect_active(&self, cj: &str, want: &[String]) {
        eventually(&format!("{cj} active = {want:?}"), || async {
            let mut have = self.active(cj).await;
            have.sort();
            let mut want = want.to_vec();
            want.sort();
            (have == want).then_some(())
        })
        .await;
    }

    /// Finishes a Job as the Job controller would.
    async fn finish(&self, name: &str, condition: &str, start: Timestamp, end: Timestamp) {
        let status = json!({"status": {
            "startTime": start.to_string(),
            "completionTime": if condition == "Complete" { json!(end.to_string()) } else { Value::Null },
            "conditions": [{"type": condition, "status": "True",
                            "lastTransitionTime": end.to_string()}]}});
        self.jobs
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("finish {name}: {e}"));
    }

    /// Waits for an Event with `reason` about the CronJob.
    async fn expect_event(&self, cj: &str, reason: &str) -> String {
        let events: Api<Event> = Api::namespaced(self.env.client.clone(), &self.env.ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={cj}"));
        eventually(&format!("{reason} event about {cj}"), || async {
            let list = events.list(&lp).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
                .and_then(|e| e.message)
        })
        .await
    }

    async fn events_with(&self, cj: &str, reason: &str) -> usize {
        let events: Api<Event> = Api::namespaced(self.env.client.clone(), &self.env.ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={cj}"));
        events
            .list(&lp)
            .await
            .expect("events")
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .count()
    }
}

/// The first whole minute after `t`, plus `secs` seconds.
fn minute_after(t: Timestamp, minutes: i64, secs: i64) -> Timestamp {
    let base = t.as_second().div_euclid(60) * 60;
    Timestamp::from_second(base + 60 * minutes + secs).expect("time")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_minute_allows_concurrency_and_keeps_history() {
    let w = world("cj-allow").await;
    let created = w
        .create(cron_job(
            "tick",
            json!({"schedule": "*/1 * * * *", "successfulJobsHistoryLimit": 2,
                   "failedJobsHistoryLimit": 1}),
        ))
        .await;
    // Before the first minute: nothing.
    w.at(created
        .checked_add(SignedDuration::from_millis(10))
        .unwrap());
    let first = minute_after(created, 1, 0);
    w.at(first.checked_add(SignedDuration::from_secs(2)).unwrap());
    let name1 = job_name("tick", first);
    w.expect_jobs("tick", std::slice::from_ref(&name1)).await;
    let job = w.jobs.get(&name1).await.expect("job");
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "tick")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(job.labels().get("app").map(String::as_str), Some("tick"));
    assert_eq!(
        job.annotations().get("team").map(String::as_str),
        Some("batch")
    );
    assert_eq!(
        job.annotations().get(SCHEDULED_TIMESTAMP).cloned(),
        Some(first.to_string())
    );
    w.expect_active("tick", std::slice::from_ref(&name1)).await;
    let cj = w.cron_jobs.get("tick").await.expect("cronjob");
    let last = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.clone());
    assert_eq!(last.map(|t| t.0), Some(first));
    assert!(w
        .expect_event("tick", "SuccessfulCreate")
        .await
        .contains(&name1));

    // Allow: the next minute starts another while the first runs.
    let second = minute_after(created, 2, 0);
    w.at(second.checked_add(SignedDuration::from_secs(1)).unwrap());
    let name2 = job_name("tick", second);
    w.expect_active("tick", &[name1.clone(), name2.clone()])
        .await;
    // A resync at the same time creates nothing more.
    w.at(second.checked_add(SignedDuration::from_secs(3)).unwrap());

    // Finished Jobs leave the active list; the success is recorded.
    w.finish(&name1, "Complete", first, second).await;
    w.finish(&name2, "Failed", second, second).await;
    w.expect_active("tick", &[]).await;
    assert!(w
        .expect_event("tick", "SawCompletedJob")
        .await
        .contains("condition: "));
    let cj = w.cron_jobs.get("tick").await.expect("cronjob");
    let success = cj
        .status
        .as_ref()
        .and_then(|s| s.last_successful_time.clone());
    assert_eq!(success.map(|t| t.0), Some(second));

    // Three more successes and a failure: 2 successes and 1 failure stay,
    // the oldest go.
    let mut names = vec![name1.clone(), name2.clone()];
    for m in 3..=6 {
        let t = minute_after(created, m, 0);
        w.at(t.checked_add(SignedDuration::from_secs(1)).unwrap());
        let name = job_name("tick", t);
        w.expect_active("tick", std::slice::from_ref(&name)).await;
        let outcome = if m == 6 { "Failed" } else { "Complete" };
        w.finish(&name, outcome, t, t).await;
        w.expect_active("tick", &[]).await;
        names.push(name);
    }
    // names: 1 ok, 2 failed, 3 ok, 4 ok, 5 ok, 6 failed.
    w.at(minute_after(created, 6, 30));
    w.expect_jobs(
        "tick",
        &[names[3].clone(), names[4].clone(), names[5].clone()],
    )
    .await;
    assert!(w
        .expect_event("tick", "SuccessfulDelete")
        .await
        .starts_with("Deleted job "));
    assert_eq!(w.events_with("tick", "UnexpectedJob").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn forbid_replace_and_suspend() {
    let w = world("cj-policy").await;
    let created = w
        .create(cron_job(
            "once",
            json!({"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid"}),
        ))
        .await;
    let t1 = minute_after(created, 1, 0);
    w.at(t1.checked_add(SignedDuration::from_secs(1)).unwrap());
    let name1 = job_name("once", t1);
    w.expect_active("once", std::slice::from_ref(&name1)).await;

    // Forbid: the next minute is skipped while the first Job runs.
    let t2 = minute_after(created, 2, 0);
    w.at(t2.checked_add(SignedDuration::from_secs(1)).unwrap());
    let msg = w.expect_event("once", "JobAlreadyActive").await;
    assert!(msg.contains("concurrency policy is Forbid"), "{msg}");
    w.expect_jobs("once", std::slice::from_ref(&name1)).await;

    // Replace: the running Job is deleted for the new one.
    w.cron_jobs
        .patch(
            "once",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"concurrencyPolicy": "Replace"}})),
        )
        .await
        .expect("replace policy");
    let t3 = minute_after(created, 3, 0);
    w.at(t3.checked_add(SignedDuration::from_secs(1)).unwrap());
    let name3 = job_name("once", t3);
    w.expect_active("once", std::slice::from_ref(&name3)).await;
    w.expect_jobs("once", std::slice::from_ref(&name3)).await;
    assert_eq!(
        w.expect_event("once", "SuccessfulDelete").await,
        format!("Deleted job {name1}")
    );

    // Suspended: no more Jobs.
    w.cron_jobs
        .patch(
            "once",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    eventually("suspend seen", || async {
        let cj = w.cron_jobs.get("once").await.ok()?;
        (cj.spec?.suspend == Some(true)).then_some(())
    })
    .await;
    w.at(minute_after(created, 5, 1));
    // An unsuspended one in the same namespace runs, so the suspended one
    // had its chance in the same resync.
    let other = w
        .create(cron_job("other", json!({"schedule": "*/1 * * * *"})))
        .await;
    let t = minute_after(other, 1, 0).max(minute_after(created, 6, 0));
    w.at(t.checked_add(SignedDuration::from_secs(1)).unwrap());
    w.expect_active("other", &[job_name("other", t)]).await;
    w.expect_jobs("once", std::slice::from_ref(&name3)).await;

    // Deleting the CronJob (with the garbage collector running) takes its
    // Jobs along.
    let mut env_gc = w;
    env_gc.env.start(&["garbagecollector"], quick_nodes());
    env_gc
        .cron_jobs
        .delete("once", &DeleteParams::default())
        .await
        .expect("delete cronjob");
    env_gc.expect_jobs("once", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_deadline_and_missed_times() {
    let w = world("cj-missed").await;
    let created = w
        .create(cron_job(
            "late",
            json!({"schedule": "*/5 * * * *", "startingDeadlineSeconds": 10}),
        ))
        .await;
    // 30 s after a time with a 10 s deadline: that time is not looked
    // at any more (the deadline bounds how far back the controller looks);
    // the next time, within its deadline, runs.
    let due = {
        let mut t = minute_after(created, 1, 0);
        while t.as_second() % 300 != 0 {
            t = t.checked_add(SignedDuration::from_mins(1)).unwrap();
        }
        t
    };
    w.at(due.checked_add(SignedDuration::from_secs(30)).unwrap());
    let next = due.checked_add(SignedDuration::from_mins(5)).unwrap();
    w.at(next.checked_add(SignedDuration::from_secs(5)).unwrap());
    w.expect_jobs("late", &[job_name("late", next)]).await;

    // Hours of minutes missed without a deadline: reported, the latest runs.
    let created = w
        .create(cron_job("behind", json!({"schedule": "*/1 * * * *"})))
        .await;
    let latest = minute_after(created, 300, 0);
    w.at(latest.checked_add(SignedDuration::from_secs(1)).unwrap());
    let msg = w.expect_event("behind", "TooManyMissedTimes").await;
    assert_eq!(
        msg,
        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
    );
    w.expect_jobs("behind", &[job_name("behind", latest)]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cron_jobs_are_refused_with_kubernetes_messages() {
    let env = env("cj-invalid").await;
    let api: Api<CronJob> = Api::namespaced(env.client.clone(), &env.ns);
    let refuse = |cj: CronJob| {
        let api = api.clone();
        async move {
            match api.create(&PostParams::default(), &cj).await {
                Err(kube::Error::Api(s)) => (s.code, s.message),
                other => panic!("accepted: {other:?}"),
            }
        }
    };
    let (code, msg) = refuse(cron_job("tz", json!({"schedule": "CRON_TZ=UTC 0 * * * *"}))).await;
    assert_eq!(code, 422);
    assert!(
        msg.contains("spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        "{msg}"
    );
    let (_, msg) = refuse(cron_job(
        "zone",
        json!({"schedule": "0 * * * *", "timeZone": "Europe/Atlantis"}),
    ))
    .await;
    assert!(
        msg.contains(
            "spec.timeZone: Invalid value: \"Europe/Atlantis\": unknown time zone Europe/Atlantis"
        ),
        "{msg}"
    );
    let (_, msg) = refuse(cron_job("fields", json!({"schedule": "* * * *"}))).await;
    assert!(
        msg.contains("expected exactly 5 fields, found 4: [* * * *]"),
        "{msg}"
    );
    let long = "x".repeat(53);
    let (_, msg) = refuse(cron_job(&long, json!({"schedule": "@hourly"}))).await;
    assert!(msg.contains("must be no more than 52 characters"), "{msg}");
    // Defaults and the zone are kept.
    let ok = api
        .create(
            &PostParams::default(),
            &cron_job(
                "ok",
                json!({"schedule": "@daily", "timeZone": "Asia/Tokyo"}),
            ),
        )
        .await
        .expect("valid cronjob");
    let spec = ok.spec.expect("spec");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Allow"));
    assert_eq!(spec.successful_jobs_history_limit, Some(3));
    assert_eq!(spec.failed_jobs_history_limit, Some(1));
    assert_eq!(spec.suspend, Some(false));
    assert_eq!(spec.time_zone.as_deref(), Some("Asia/Tokyo"));
    // startingDeadlineSeconds < 0 on update.
    let err = api
        .patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"startingDeadlineSeconds": -5}})),
        )
        .await
        .expect_err("negative deadline");
    assert!(
        err.to_string().contains(
            "spec.startingDeadlineSeconds: Invalid value: -5: must be greater than or equal to 0"
        ),
        "{err}"
    );
}
