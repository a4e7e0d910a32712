//! The namespace controller against an in-process apiserver over the
//! shared real etcd (issue 21): a deleted namespace's objects are deleted
//! through the API — a bound pod gracefully, with its own grace period,
//! an object with a finalizer only marked — the namespace reports what is
//! left in its conditions, and is finalized and gone once it is empty.

use crate::common;

use crate::common::{env, eventually, quick_nodes};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// `(status, reason, message)` of the namespace's condition `kind`.
fn condition(ns: &Namespace, kind: &str) -> Option<(String, String, String)> {
    ns.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_is_emptied_through_the_api_then_finalized() {
    let name = format!("nsctl-{}", std::process::id());
    let mut env = env(&name).await;
    let pp = PostParams::default();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &name);
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &name);
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &name);
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    pods.create(
        &pp,
        &from(
            json!({"metadata": {"name": "bound"}, "spec": {"nodeName": "n1",
            "terminationGracePeriodSeconds": 7,
            "containers": [{"name": "c", "image": "busybox"}]}}),
        ),
    )
    .await
    .expect("pod");
    cms.create(
        &pp,
        &from(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await
    .expect("configmap");
    cms.create(&pp, &from(json!({"metadata": {"name": "plain"}})))
        .await
        .expect("configmap");
    deploys
        .create(&pp, &from(common::deployment("web", 0, "busybox")))
        .await
        .expect("deployment");
    env.start(&["namespace"], quick_nodes());
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete namespace");
    // The bound pod is deleted gracefully, with its own grace period: only
    // its kubelet (none here) could finish it.
    let pod = eventually("pod deleting", || async {
        let p = pods.get("bound").await.ok()?;
        p.metadata.deletion_timestamp.is_some().then_some(p)
    })
    .await;
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(7));
    // The rest without finalizers is gone; the held one is only marked.
    eventually("plain content deleted", || async {
        let plain = cms.get_opt("plain").await.ok()?;
        let web = deploys.get_opt("web").await.ok()?;
        (plain.is_none() && web.is_none()).then_some(())
    })
    .await;
    let held = cms.get("held").await.expect("held stays");
    assert!(held.metadata.deletion_timestamp.is_some());
    // The namespace says what is left.
    let ns = eventually("conditions", || async {
        let ns = namespaces.get(&name).await.ok()?;
        let c = condition(&ns, "NamespaceContentRemaining")?;
        (c.2 == "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 resource instances")
            .then_some(ns)
    })
    .await;
    assert_eq!(
        ns.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining"),
        Some((
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure").map(|c| c.1),
        Some("ContentDeleted".into())
    );
    assert_eq!(
        ns.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec!["kubernetes".to_string()])
    );
    // The kubelet finishes the pod; the finalizer's owner lets go.
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .expect("final pod delete");
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release held");
    eventually("namespace gone", || async {
        namespaces
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
