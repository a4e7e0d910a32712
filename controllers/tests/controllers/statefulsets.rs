//! The StatefulSet controller against an in-process apiserver over a real
//! etcd. The ordered tests play scheduler and kubelet themselves: they bind
//! each pod (so its deletion is graceful and waits for them), mark it
//! Running and Ready, and finish its termination, one step at a time, so
//! every ordering claim is checked at a point where the controller has
//! provably synced (its `observedGeneration` caught up) — never timed.

use std::collections::BTreeSet;

use crate::common::*;
use ballast_controllers::statefulset::{POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

fn manifest(name: &str, replicas: i32, image: &str, extra: Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name}, "spec": spec}))
    .expect("statefulset")
}

/// The set's pods, by ordinal.
async fn pods_of(pods: &Api<Pod>, set: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app={set}"));
    let mut list = pods.list(&lp).await.expect("list pods").items;
    list.sort_by_key(|p| {
        p.name_any()
            .rsplit_once('-')
            .and_then(|(_, o)| o.parse::<i32>().ok())
    });
    list
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Binds the pod to a (fictitious) node, as the scheduler would: from now
/// on its deletion is graceful and waits for [`finish_termination`].
async fn bind(pods: &Api<Pod>, name: &str) {
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name}, "target": {"kind": "Node", "name": "node-a"}});
    let _: Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind {name}: {e}"));
}

/// Ends a graceful deletion, as the kubelet does once the containers stop.
async fn finish_termination(pods: &Api<Pod>, name: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(name, &dp)
        .await
        .unwrap_or_else(|e| panic!("finish {name}: {e}"));
}

/// Makes the controller sync the set once more (a spec change it has to
/// observe) and waits until it has: everything it wanted to do with the
/// pods as they are now has been done when this returns.
async fn resync(sets: &Api<StatefulSet>, name: &str) {
    let set = sets.get(name).await.expect("get set");
    let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit);
    let next = if limit == Some(10) { 9 } else { 10 };
    let patched = sets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"revisionHistoryLimit": next}})),
        )
        .await
        .expect("patch set");
    let generation = patched.metadata.generation;
    eventually(
        &format!("{name} observed generation {generation:?}"),
        || async {
            let s = sets.get(name).await.ok()?;
            (s.status?.observed_generation >= generation).then_some(())
        },
    )
    .await;
}

async fn status_of(
    sets: &Api<StatefulSet>,
    name: &str,
) -> k8s_openapi::api::apps::v1::StatefulSetStatus {
    sets.get(name)
        .await
        .expect("get set")
        .status
        .unwrap_or_default()
}

/// Waits for `web-<ord>` to exist, checks that its predecessors are all
/// there and Ready and nothing after it exists, binds it, checks that a
/// sync which saw it not Ready created nothing more, then marks it Running
/// and Ready.
async fn next_pod_in_order(sets: &Api<StatefulSet>, pods: &Api<Pod>, set: &str, ord: usize) -> Pod {
    let name = format!("{set}-{ord}");
    let pod = eventually(&format!("{name} created"), || async {
        let list = pods_of(pods, set).await;
        list.iter().find(|p| p.name_any() == name).cloned()
    })
    .await;
    let list = pods_of(pods, set).await;
    let want: Vec<String> = (0..=ord).map(|i| format!("{set}-{i}")).collect();
    assert_eq!(names(&list), want, "pods when {name} appeared");
    for p in &list[..ord] {
        assert!(
            is_ready(p),
            "{} not Ready when {name} was created",
            p.name_any()
        );
    }
    bind(pods, &name).await;
    // Not yet Ready: a sync that has seen it creates nothing more.
    resync(sets, set).await;
    assert_eq!(
        names(&pods_of(pods, set).await),
        want,
        "{name} not Ready yet"
    );
    set_ready(pods, &name, true, Some("127.42.0.9"))
        .await
        .expect("ready");
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_creation_scale_up_and_down_in_reverse() {
    let mut env = env("sts-ordered").await;
    env.start(&["statefulset", "garbagecollector"], quick_nodes());
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let created = sets
        .create(
            &PostParams::default(),
            &manifest("web", 3, "busybox", json!({})),
        )
        .await
        .expect("create");
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
    assert_eq!(spec.revision_history_limit, Some(10));
    let uid = created.uid().unwrap();

    // web-0 alone until it is Ready, even after a sync that saw it.
    let first = eventually("web-0 created", || async {
        pods_of(&pods, "web").await.into_iter().next()
    })
    .await;
    bind(&pods, "web-0").await;
    resync(&sets, "web").await;
    assert_eq!(names(&pods_of(&pods, "web").await), ["web-0"]);
    let labels = first.labels();
    assert_eq!(labels[POD_NAME_LABEL], "web-0");
    assert_eq!(labels[POD_INDEX_LABEL], "0");
    let pod_spec = first.spec.as_ref().unwrap();
    assert_eq!(pod_spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(pod_spec.subdomain.as_deref(), Some("web"));
    let owner = &first.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("StatefulSet", uid.as_str())
    );
    set_ready(&pods, "web-0", true, Some("127.42.0.9"))
        .await
        .expect("ready");
    for ord in 1..3 {
        next_pod_in_order(&sets, &pods, "web", ord).await;
    }
    let status = eventually("3 ready replicas", || async {
        let s = status_of(&sets, "web").await;
        (s.ready_replicas == Some(3) && s.available_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.current_revision, status.update_revision);
    let revision = status.update_revision.clone().unwrap();
    assert!(revision.starts_with("web-"), "{revision}");
    for p in pods_of(&pods, "web").await {
        assert_eq!(p.labels()[REVISION_LABEL], revision);
    }
    let revisions: Api<ControllerRevision> = Api::namespaced(env.client.clone(), &env.ns);
    let rev = revisions.get(&revision).await.expect("controller revision");
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.owner_references()[0].uid, uid);

    // Scale to 5 through /scale: web-3, then web-4, each after the last.
    let scale = sets
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale up");
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    for ord in 3..5 {
        next_pod_in_order(&sets, &pods, "web", ord).await;
    }
    eventually("5 ready replicas", || async {
        (status_of(&sets, "web").await.ready_replicas == Some(5)).then_some(())
    })
    .await;

    // Back to 3: web-4 goes first, and web-3 only once web-4 is gone.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scale down");
    for ord in [4, 3] {
        let name = format!("web-{ord}");
        eventually(&format!("{name} terminating"), || async {
            let list = pods_of(&pods, "web").await;
            let doomed: Vec<String> = list
                .iter()
                .filter(|p| terminating(p))
                .map(|p| p.name_any())
                .collect();
            assert!(
                doomed.len() <= 1,
                "more than one pod terminating: {doomed:?}"
            );
            (doomed == [name.clone()]).then_some(())
        })
        .await;
        resync(&sets, "web").await;
        let list = pods_of(&pods, "web").await;
        let doomed: Vec<String> = list
            .iter()
            .filter(|p| terminating(p))
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            doomed,
            std::slice::from_ref(&name),
            "only {name} terminating after a sync"
        );
        finish_termination(&pods, &name).await;
    }
    let status = eventually("3 replicas again", || async {
        let s = status_of(&sets, "web").await;
        (s.replicas == 3 && s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.current_replicas, Some(3));
    assert_eq!(
        names(&pods_of(&pods, "web").await),
        ["web-0", "web-1", "web-2"]
    );

    // Deleting the set takes its pods with it (garbage collector).
    sets.delete("web", &DeleteParams::background())
        .await
        .expect("delete set");
    eventually("pods collected", || async {
        let list = pods_of(&pods, "web").await;
        for p in list.iter().filter(|p| terminating(p)) {
            let _ = pods
                .delete(
                    &p.name_any(),
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await;
        }
        list.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_rolling_update_rollback_and_failed_pod() {
    let mut env = env("sts-update").await;
    env.start(&["statefulset"], quick_nodes());
    env.fake_kubelet();
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let revisions: Api<ControllerRevision> = Api::namespaced(env.client.clone(), &env.ns);
    sets.create(
        &PostParams::default(),
        &manifest("db", 3, "busybox", json!({})),
    )
    .await
    .expect("create");
    let first = eventually("3 ready", || async {
        let s = status_of(&sets, "db").await;
        (s.ready_replicas == Some(3) && s.current_replicas == Some(3)).then_some(s)
    })
    .await;
    let old_rev = first.current_revision.clone().unwrap();

    // A watch records the order pods are deleted in.
    let deleted = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    {
        let deleted = deleted.clone();
        let pods = pods.clone();
        env.spawn(async move {
            use futures::StreamExt;
            use kube::runtime::{watcher, WatchStreamExt};
            let mut seen = BTreeSet::new();
            let mut s = watcher(pods, watcher::Config::default().labels("app=db"))
                .default_backoff()
                .boxed();
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Delete(p) = ev {
                    if seen.insert(p.uid().unwrap_or_default()) {
                        deleted.lock().push(p.name_any());
                    }
                }
            }
        });
    }

    // New image, partition 1: db-2 then db-1 move to the new revision,
    // db-0 stays.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {
            "updateStrategy": {"rollingUpdate": {"partition": 1}},
            "template": {"spec": {"containers": [{"name": "c", "image": "pause"}]}}}})),
    )
    .await
    .expect("update");
    let status = eventually("partitioned update done", || async {
        let s = status_of(&sets, "db").await;
        (s.updated_replicas == Some(2) && s.ready_replicas == Some(3) && s.replicas == 3)
            .then_some(s)
    })
    .await;
    let new_rev = status.update_revision.clone().unwrap();
    assert_ne!(new_rev, old_rev);
    assert_eq!(status.current_revision.as_deref(), Some(old_rev.as_str()));
    assert_eq!(status.current_replicas, Some(1));
    let image = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    let list = pods_of(&pods, "db").await;
    let revs: Vec<&str> = list
        .iter()
        .map(|p| p.labels()[REVISION_LABEL].as_str())
        .collect();
    assert_eq!(revs, [old_rev.as_str(), new_rev.as_str(), new_rev.as_str()]);
    assert_eq!(image(&list[0]), "busybox");
    assert_eq!(image(&list[2]), "pause");
    assert_eq!(*deleted.lock(), ["db-2", "db-1"], "reverse ordinal order");
    assert_eq!(
        revisions
            .get(&new_rev)
            .await
            .expect("new revision")
            .revision,
        2
    );

    // Partition 0 finishes it: db-0 too, and the update revision is current.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .expect("partition 0");
    let status = eventually("update complete", || async {
        let s = status_of(&sets, "db").await;
        (s.current_revision.as_deref() == Some(new_rev.as_str()) && s.ready_replicas == Some(3))
            .then_some(s)
    })
    .await;
    assert_eq!(status.current_replicas, Some(3));
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(*deleted.lock(), ["db-2", "db-1", "db-0"]);

    // Rolling back to the first template reuses its revision, renumbered.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "busybox"}]}}}})),
    )
    .await
    .expect("rollback");
    eventually("rolled back", || async {
        let s = status_of(&sets, "db").await;
        (s.current_revision.as_deref() == Some(old_rev.as_str()) && s.ready_replicas == Some(3))
            .then_some(())
    })
    .await;
    assert_eq!(
        revisions
            .get(&old_rev)
            .await
            .expect("old revision")
            .revision,
        3
    );
    let lp = ListParams::default().labels("app=db");
    assert_eq!(revisions.list(&lp).await.expect("revisions").items.len(), 2);

    // A failed pod is deleted and a new one takes its name.
    let before = pods.get("db-1").await.expect("db-1");
    pods.patch_status(
        "db-1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    )
    .await
    .expect("fail db-1");
    let after = eventually("db-1 recreated", || async {
        let p = pods.get_opt("db-1").await.ok()??;
        (p.uid() != before.uid() && is_ready(&p)).then_some(p)
    })
    .await;
    assert_eq!(after.labels()[REVISION_LABEL], old_rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pods_and_refusals() {
    let mut env = env("sts-parallel").await;
    env.start(&["statefulset"], quick_nodes());
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    // Parallel: every pod at once, none of them ready.
    sets.create(
        &PostParams::default(),
        &manifest(
            "par",
            3,
            "busybox",
            json!({"podManagementPolicy": "Parallel"}),
        ),
    )
    .await
    .expect("create");
    eventually("3 pods at once", || async {
        (names(&pods_of(&pods, "par").await) == ["par-0", "par-1", "par-2"]).then_some(())
    })
    .await;
    assert!(pods_of(&pods, "par").await.iter().all(|p| !is_ready(p)));

    // Fixed fields: 422 with Kubernetes' message.
    let err = sets
        .patch(
            "par",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"podManagementPolicy": "OrderedReady"}})),
        )
        .await
        .expect_err("policy change");
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{}",
        s.message
    );
    // No volumes yet: claim templates are refused, saying why.
    let claims = manifest(
        "data",
        1,
        "busybox",
        json!({"volumeClaimTemplates": [{"metadata": {"name": "d"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]}),
    );
    let err = sets
        .create(&PostParams::default(), &claims)
        .await
        .expect_err("claims");
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains(
            "spec.volumeClaimTemplates: Forbidden: this cluster has no PersistentVolumeClaims"
        ),
        "{}",
        s.message
    );
    let mut bad = manifest("bad", 1, "busybox", json!({}));
    bad.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    let err = sets
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("selector");
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert!(
        s.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        s.message
    );
    assert!(sets.get_opt("data").await.expect("get").is_none());
    // The scale subresource reports the selector.
    let scale = sets.get_scale("par").await.expect("scale");
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=par"));
}
