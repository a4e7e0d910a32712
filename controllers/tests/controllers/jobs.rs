//! The Job controller against an in-process apiserver over a real etcd.
//! The tests play the kubelet themselves: they move pods to Succeeded or
//! Failed through `pods/status`, so every outcome is chosen, not timed.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use ballast_controllers::job::{COMPLETION_INDEX, COMPLETION_INDEX_ENV, TRACKING_FINALIZER};
use ballast_controllers::{Config, ControllerManager, JobConfig};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

/// Starts the named controllers with a 1 s (doubling, 8 s at most)
/// back-off for failed pods instead of Kubernetes' 10 s.
fn start(env: &mut Env, controllers: &[&str]) {
    let config = Config {
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        namespace: Some(env.ns.clone()),
        node_lifecycle: quick_nodes(),
        job: JobConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        },
        ..Config::default()
    };
    let client = env.client.clone();
    env.spawn(async move {
        ControllerManager::run(client, config, std::future::pending())
            .await
            .expect("controller manager");
    });
}

fn job(name: &str, spec: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}});
    serde_json::from_value(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name}, "spec": spec}))
    .expect("job")
}

async fn pods_of(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    pods.list(&lp).await.expect("list pods").items
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn running(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
}

async fn finish(pods: &Api<Pod>, name: &str, phase: &str) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": phase}})),
    )
    .await
    .unwrap_or_else(|e| panic!("set {name} {phase}: {e}"));
}

fn condition(j: &Job, t: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn counts(j: &Job) -> (i32, i32, i32) {
    let s = j.status.clone().unwrap_or_default();
    (
        s.active.unwrap_or(0),
        s.succeeded.unwrap_or(0),
        s.failed.unwrap_or(0),
    )
}

async fn wait_condition(jobs: &Api<Job>, name: &str, t: &str) -> Job {
    eventually(&format!("job {name} {t}"), || async {
        let j = jobs.get(name).await.ok()?;
        (condition(&j, t).is_some_and(|(s, _)| s == "True")).then_some(j)
    })
    .await
}

/// Waits for exactly `n` running pods (never more than `n` seen) and
/// returns them.
async fn running_pods(pods: &Api<Pod>, job: &str, n: usize) -> Vec<Pod> {
    eventually(&format!("{n} running pods of {job}"), || async {
        let running: Vec<Pod> = pods_of(pods, job)
            .await
            .into_iter()
            .filter(running)
            .collect();
        assert!(
            running.len() <= n,
            "{} pods of {job} running, parallelism {n}",
            running.len()
        );
        (running.len() == n).then_some(running)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_parallelism_and_a_retried_failure() {
    let mut env = env("job-completions").await;
    start(&mut env, &["job"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let created = jobs
        .create(
            &PostParams::default(),
            &job("five", json!({"completions": 5, "parallelism": 2})),
        )
        .await
        .expect("create job");
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(6));
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    assert_eq!(spec.suspend, Some(false));
    let uid = created.uid().unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );

    // The first pod fails: it is counted and replaced (after the back-off).
    let first = running_pods(&pods, "five", 2).await;
    for p in &first {
        assert!(p.finalizers().contains(&TRACKING_FINALIZER.to_string()));
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("Job", uid.as_str(), Some(true))
        );
    }
    finish(&pods, &first[0].name_any(), "Failed").await;
    eventually("the failure counted", || async {
        let j = jobs.get("five").await.ok()?;
        (counts(&j).2 == 1).then_some(())
    })
    .await;
    // Then everything succeeds, two at a time, until five have.
    let mut succeeded = BTreeSet::new();
    finish(&pods, &first[1].name_any(), "Succeeded").await;
    succeeded.insert(first[1].name_any());
    while succeeded.len() < 5 {
        let want = (5 - succeeded.len()).min(2);
        for p in running_pods(&pods, "five", want).await {
            finish(&pods, &p.name_any(), "Succeeded").await;
            succeeded.insert(p.name_any());
        }
    }
    let done = wait_condition(&jobs, "five", "Complete").await;
    assert_eq!(counts(&done), (0, 5, 1));
    assert_eq!(
        condition(&done, "SuccessCriteriaMet"),
        Some(("True".into(), "CompletionsReached".into()))
    );
    let st = done.status.clone().unwrap();
    assert!(st.start_time.is_some() && st.completion_time.is_some());
    // Six pods in all (five successes and the failure), none left with
    // the finalizer, none created after completion.
    let all = eventually("finalizers removed", || async {
        let all = pods_of(&pods, "five").await;
        all.iter()
            .all(|p| !p.finalizers().contains(&TRACKING_FINALIZER.to_string()))
            .then_some(all)
    })
    .await;
    assert_eq!(
        all.len(),
        6,
        "{:?}",
        all.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_fails_the_job_after_exponential_back_off() {
    let mut env = env("job-backoff").await;
    start(&mut env, &["job"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    jobs.create(
        &PostParams::default(),
        &job("flaky", json!({"backoffLimit": 2})),
    )
    .await
    .expect("create job");
    let failed_job = eventually("job failed", || async {
        for p in pods_of(&pods, "flaky").await.iter().filter(|p| running(p)) {
            finish(&pods, &p.name_any(), "Failed").await;
        }
        let j = jobs.get("flaky").await.ok()?;
        condition(&j, "Failed")
            .is_some_and(|(s, _)| s == "True")
            .then_some(j)
    })
    .await;
    assert_eq!(
        condition(&failed_job, "Failed"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(
        condition(&failed_job, "FailureTarget"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(counts(&failed_job), (0, 0, 3));
    assert!(failed_job.status.unwrap().completion_time.is_none());
    // Three pods (the first and two retries), each created at least the
    // back-off after the previous failure: 1 s, then 2 s.
    let mut all = pods_of(&pods, "flaky").await;
    assert_eq!(all.len(), 3);
    all.sort_by_key(|p| p.metadata.creation_timestamp.clone().unwrap().0);
    let t: Vec<i64> = all
        .iter()
        .map(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .unwrap()
                .0
                .as_second()
        })
        .collect();
    assert!(t[1] - t[0] >= 1 && t[2] - t[1] >= 2, "created at {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_run_each_index_until_it_succeeds() {
    let mut env = env("job-indexed").await;
    start(&mut env, &["job"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"});
    jobs.create(&PostParams::default(), &job("idx", spec))
        .await
        .expect("create job");
    let first = running_pods(&pods, "idx", 3).await;
    let index = |p: &Pod| p.annotations()[COMPLETION_INDEX].clone();
    let indexes: BTreeSet<String> = first.iter().map(index).collect();
    assert_eq!(
        indexes,
        BTreeSet::from(["0".into(), "1".into(), "2".into()])
    );
    for p in &first {
        let i = index(p);
        assert_eq!(p.labels()[COMPLETION_INDEX], i);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == COMPLETION_INDEX_ENV));
    }
    // Index 1 fails: only index 1 is recreated; 0 and 2 succeed.
    for p in &first {
        let phase = if index(p) == "1" {
            "Failed"
        } else {
            "Succeeded"
        };
        finish(&pods, &p.name_any(), phase).await;
    }
    let retry = running_pods(&pods, "idx", 1).await;
    assert_eq!(index(&retry[0]), "1");
    let j = jobs.get("idx").await.unwrap();
    assert_eq!(j.status.unwrap().completed_indexes.as_deref(), Some("0,2"));
    finish(&pods, &retry[0].name_any(), "Succeeded").await;
    let done = wait_condition(&jobs, "idx", "Complete").await;
    assert_eq!(counts(&done), (0, 3, 1));
    assert_eq!(
        done.status.unwrap().completed_indexes.as_deref(),
        Some("0-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_deletes_active_pods_and_resume_recreates_them() {
    let mut env = env("job-suspend").await;
    start(&mut env, &["job"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    jobs.create(
        &PostParams::default(),
        &job("pausable", json!({"completions": 4, "parallelism": 2})),
    )
    .await
    .expect("create job");
    running_pods(&pods, "pausable", 2).await;
    let pp = PatchParams::default();
    jobs.patch(
        "pausable",
        &pp,
        &Patch::Merge(&json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("suspend");
    let suspended = wait_condition(&jobs, "pausable", "Suspended").await;
    assert_eq!(
        condition(&suspended, "Suspended"),
        Some(("True".into(), "JobSuspended".into()))
    );
    eventually("pods of the suspended job gone", || async {
        pods_of(&pods, "pausable").await.is_empty().then_some(())
    })
    .await;
    let j = jobs.get("pausable").await.unwrap();
    assert_eq!(counts(&j), (0, 0, 0), "suspension is not failure");
    jobs.patch(
        "pausable",
        &pp,
        &Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    for p in running_pods(&pods, "pausable", 2).await {
        finish(&pods, &p.name_any(), "Succeeded").await;
    }
    for p in running_pods(&pods, "pausable", 2).await {
        finish(&pods, &p.name_any(), "Succeeded").await;
    }
    let done = wait_condition(&jobs, "pausable", "Complete").await;
    assert_eq!(
        condition(&done, "Suspended"),
        Some(("False".into(), "JobResumed".into()))
    );
    assert_eq!(counts(&done), (0, 4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_is_deleted_after_its_ttl_and_its_pods_collected() {
    let mut env = env("job-ttl").await;
    start(&mut env, &["job", "garbagecollector"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    jobs.create(
        &PostParams::default(),
        &job("short", json!({"ttlSecondsAfterFinished": 1})),
    )
    .await
    .expect("create job");
    let pod = running_pods(&pods, "short", 1).await.remove(0);
    finish(&pods, &pod.name_any(), "Succeeded").await;
    wait_condition(&jobs, "short", "Complete").await;
    eventually("job deleted after its TTL", || async {
        matches!(jobs.get_opt("short").await, Ok(None)).then_some(())
    })
    .await;
    eventually("its pod collected", || async {
        matches!(pods.get_opt(&pod.name_any()).await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_deleted_at_once_is_still_counted() {
    let mut env = env("job-fast-delete").await;
    start(&mut env, &["job"]);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    jobs.create(&PostParams::default(), &job("quick", json!({})))
        .await
        .expect("create job");
    let pod = running_pods(&pods, "quick", 1).await.remove(0);
    finish(&pods, &pod.name_any(), "Succeeded").await;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(&pod.name_any(), &dp).await.expect("delete pod");
    let done = wait_condition(&jobs, "quick", "Complete").await;
    assert_eq!(counts(&done), (0, 1, 0));
    eventually("the counted pod released and gone", || async {
        matches!(pods.get_opt(&pod.name_any()).await, Ok(None)).then_some(())
    })
    .await;
    assert!(pods_of(&pods, "quick").await.is_empty(), "no pod recreated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_jobs_get_kubernetes_messages() {
    let env = env("job-invalid").await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let mut always = job("always", json!({}));
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let Err(kube::Error::Api(e)) = jobs.create(&PostParams::default(), &always).await else {
        panic!("restartPolicy Always accepted");
    };
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains(
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ),
        "{}",
        e.message
    );
    let mut own: Job = job("own", json!({"selector": {"matchLabels": {"a": "b"}}}));
    own.spec.as_mut().unwrap().template.metadata =
        Some(serde_json::from_value(json!({"labels": {"a": "b"}})).unwrap());
    let Err(kube::Error::Api(e)) = jobs.create(&PostParams::default(), &own).await else {
        panic!("a selector without manualSelector accepted");
    };
    assert!(
        e.message.contains("`selector` not auto-generated"),
        "{}",
        e.message
    );
    // The template is fixed once created.
    jobs.create(
        &PostParams::default(),
        &job("fixed", json!({"suspend": false})),
    )
    .await
    .expect("create");
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "pause"}]}}}});
    let Err(kube::Error::Api(e)) = jobs
        .patch("fixed", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    else {
        panic!("template change accepted");
    };
    assert!(
        e.message.contains("spec.template: Invalid value"),
        "{}",
        e.message
    );
    assert!(e.message.contains("field is immutable"), "{}", e.message);
}
