//! The disruption controller and the eviction subresource against an
//! in-process apiserver over a real etcd: a budget's status numbers for
//! minAvailable and maxUnavailable (integers and percentages, rounded up
//! as Kubernetes rounds them), evictions charged to the budget and refused
//! with 429 once it is spent, `disruptedPods` pruned, and the apiserver's
//! refusals (422 validation, 500 for two budgets, dry runs that change
//! nothing).

use crate::common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, EvictParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

/// A budget over the pods labelled app=`app`; `bound` is its
/// `minAvailable` / `maxUnavailable` part.
fn budget(name: &str, app: &str, bound: Value) -> PodDisruptionBudget {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    for (k, v) in bound.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    serde_json::from_value(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name}, "spec": spec}),
    )
    .expect("budget")
}

/// The budget's (expectedPods, currentHealthy, desiredHealthy,
/// disruptionsAllowed) once it is observed at its generation.
async fn numbers(pdbs: &Api<PodDisruptionBudget>, name: &str) -> Option<(i32, i32, i32, i32)> {
    let pdb = pdbs.get(name).await.ok()?;
    let s = pdb.status?;
    (s.observed_generation == pdb.metadata.generation).then_some((
        s.expected_pods,
        s.current_healthy,
        s.desired_healthy,
        s.disruptions_allowed,
    ))
}

async fn wait_numbers(pdbs: &Api<PodDisruptionBudget>, name: &str, want: (i32, i32, i32, i32)) {
    eventually(&format!("{name} status {want:?}"), || async {
        (numbers(pdbs, name).await == Some(want)).then_some(())
    })
    .await;
}

async fn web(env: &mut Env, name: &str, replicas: i32) -> Vec<Pod> {
    env.start(&["deployment", "replicaset", "disruption"], quick_nodes());
    env.fake_kubelet();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let d: Deployment = serde_json::from_value(deployment(name, replicas, "busybox")).unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("deployment");
    ready_pods(env, name, replicas as usize).await
}

async fn ready_pods(env: &Env, app: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    eventually(&format!("{n} ready {app} pods"), || async {
        let lp = ListParams::default().labels(&format!("app={app}"));
        let list = pods.list(&lp).await.ok()?;
        let ready: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        (ready.len() == n).then_some(ready)
    })
    .await
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    }
}

/// Bare pods labelled app=`app` (no controller: minAvailable as an
/// integer counts them as they are), made Running and Ready.
async fn bare_pods(env: &mut Env, app: &str, names: &[&str]) {
    env.start(&["disruption"], quick_nodes());
    env.fake_kubelet();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    for name in names {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
            .unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    ready_pods(env, app, names.len()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn min_available_two_allows_evictions_down_to_two_then_429() {
    let mut env = env("pdb-min").await;
    bare_pods(&mut env, "solo", &["a", "b", "c", "d"]).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), &env.ns);
    pdbs.create(
        &PostParams::default(),
        &budget("solo", "solo", json!({"minAvailable": 2})),
    )
    .await
    .expect("create pdb");
    wait_numbers(&pdbs, "solo", (4, 4, 2, 2)).await;
    let pdb = pdbs.get("solo").await.unwrap();
    let cond = &pdb.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );
    assert_eq!(cond.observed_generation, Some(1));

    // Each eviction is charged to the budget at once; the third is a 429.
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    api.evict("a", &EvictParams::default())
        .await
        .expect("evict a");
    let after = pdbs.get("solo").await.unwrap().status.unwrap();
    assert_eq!(after.disruptions_allowed, 1);
    // Charged, then deleted (the controller may already have pruned
    // a's entry once it saw the pod go).
    assert!(api.get_opt("a").await.unwrap().is_none());
    api.evict("b", &EvictParams::default())
        .await
        .expect("evict b");
    let refused = api_error(
        api.evict("c", &EvictParams::default())
            .await
            .expect_err("the budget is spent"),
    );
    assert_eq!(refused.code, 429);
    assert_eq!(refused.reason, "TooManyRequests");
    assert_eq!(
        refused.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let cause = &refused.details.as_ref().unwrap().causes[0];
    assert_eq!(cause.reason, "DisruptionBudget");
    // The counts are the status's at that moment (the controller may
    // already have seen a and b go).
    assert!(
        cause
            .message
            .starts_with("The disruption budget solo needs 2 healthy pods and has "),
        "{}",
        cause.message
    );
    assert!(api.get("c").await.is_ok(), "the refused pod stays");

    // The evicted pods are gone: their entries go, the numbers settle.
    wait_numbers(&pdbs, "solo", (2, 2, 2, 0)).await;
    eventually("disruptedPods pruned", || async {
        let s = pdbs.get("solo").await.ok()?.status?;
        s.disrupted_pods
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    let cond = pdbs
        .get("solo")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()[0]
        .clone();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InsufficientPods")
    );

    // An unready pod counts as unhealthy; with AlwaysAllow it may go while
    // the ready one may not.
    set_ready(&api, "c", false, None).await.expect("unready");
    wait_numbers(&pdbs, "solo", (2, 1, 2, 0)).await;
    let e = api_error(
        api.evict("c", &EvictParams::default())
            .await
            .expect_err("IfHealthyBudget: the budget is not healthy"),
    );
    assert_eq!(e.code, 429);
    pdbs.patch(
        "solo",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})),
    )
    .await
    .expect("patch pdb");
    wait_numbers(&pdbs, "solo", (2, 1, 2, 0)).await;
    assert_eq!(pdbs.get("solo").await.unwrap().metadata.generation, Some(2));
    let e = api_error(
        api.evict("d", &EvictParams::default())
            .await
            .expect_err("d is healthy"),
    );
    assert_eq!(e.code, 429);
    api.evict("c", &EvictParams::default())
        .await
        .expect("evicting the unready pod");
    eventually("c is gone", || async {
        api.get_opt("c").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn percentages_scale_with_the_deployment_and_round_up() {
    let mut env = env("pdb-pct").await;
    web(&mut env, "web", 3).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), &env.ns);
    for (name, bound) in [
        ("max-half", json!({"maxUnavailable": "50%"})),
        ("min-half", json!({"minAvailable": "50%"})),
        ("min-third", json!({"minAvailable": "34%"})),
        ("max-one", json!({"maxUnavailable": 1})),
    ] {
        pdbs.create(&PostParams::default(), &budget(name, "web", bound))
            .await
            .expect("create pdb");
    }
    // maxUnavailable 50% of 3 = ⌈1.5⌉ = 2 → desired 1, allowed 2.
    wait_numbers(&pdbs, "max-half", (3, 3, 1, 2)).await;
    // minAvailable 50% of 3 = ⌈1.5⌉ = 2 → allowed 1.
    wait_numbers(&pdbs, "min-half", (3, 3, 2, 1)).await;
    // minAvailable 34% of 3 = ⌈1.02⌉ = 2.
    wait_numbers(&pdbs, "min-third", (3, 3, 2, 1)).await;
    wait_numbers(&pdbs, "max-one", (3, 3, 2, 1)).await;

    // Scaled to 5, the percentages follow the Deployment's replicas.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    deployments
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    ready_pods(&env, "web", 5).await;
    // 50% of 5 = ⌈2.5⌉ = 3: desired 2 (max) and 3 (min).
    wait_numbers(&pdbs, "max-half", (5, 5, 2, 3)).await;
    wait_numbers(&pdbs, "min-half", (5, 5, 3, 2)).await;

    // Two budgets over one pod: the eviction subresource refuses.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let any = ready_pods(&env, "web", 5).await[0].name_any();
    let e = api_error(
        pods.evict(&any, &EvictParams::default())
            .await
            .expect_err("two budgets"),
    );
    assert_eq!(e.code, 500);
    assert_eq!(
        e.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn evictions_respect_dry_run_and_stale_entries_are_pruned() {
    let mut env = env("pdb-misc").await;
    let pods = web(&mut env, "web", 2).await;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), &env.ns);

    // Kubernetes' validation messages.
    let both = api_error(
        pdbs.create(
            &PostParams::default(),
            &budget(
                "bad",
                "web",
                json!({"minAvailable": 1, "maxUnavailable": 1}),
            ),
        )
        .await
        .expect_err("both bounds"),
    );
    assert_eq!(both.code, 422);
    assert!(
        both.message
            .contains("minAvailable and maxUnavailable cannot be both set"),
        "{}",
        both.message
    );
    let over = api_error(
        pdbs.create(
            &PostParams::default(),
            &budget("bad", "web", json!({"maxUnavailable": "120%"})),
        )
        .await
        .expect_err("over 100%"),
    );
    assert!(over.message.contains("must not be greater than 100%"));

    pdbs.create(
        &PostParams::default(),
        &budget("web", "web", json!({"maxUnavailable": 1})),
    )
    .await
    .expect("create pdb");
    wait_numbers(&pdbs, "web", (2, 2, 1, 1)).await;

    // A dry run decides but neither charges the budget nor deletes.
    let api: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let name = pods[0].name_any();
    let dry = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        ..EvictParams::default()
    };
    api.evict(&name, &dry).await.expect("dry-run eviction");
    assert!(api.get(&name).await.is_ok());
    assert_eq!(numbers(&pdbs, "web").await, Some((2, 2, 1, 1)));

    // Entries older than two minutes, or of pods that are gone, are dropped.
    let mut pdb = pdbs.get("web").await.unwrap();
    let recent = Timestamp::now();
    let old = recent - SignedDuration::from_secs(180);
    let status = pdb.status.as_mut().unwrap();
    status.disrupted_pods = Some(
        [
            (name.clone(), Time(old)),
            ("gone".to_string(), Time(recent)),
        ]
        .into(),
    );
    pdbs.replace_status("web", &PostParams::default(), &pdb)
        .await
        .expect("status with stale entries");
    eventually("stale disruptedPods pruned", || async {
        let s = pdbs.get("web").await.ok()?.status?;
        s.disrupted_pods
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    wait_numbers(&pdbs, "web", (2, 2, 1, 1)).await;

    // With the allowance back, a real eviction deletes the pod.
    api.evict(&name, &EvictParams::default())
        .await
        .expect("eviction");
    eventually("the evicted pod is gone", || async {
        api.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
}
