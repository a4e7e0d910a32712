//! The EndpointSlice controller against an in-process apiserver over a
//! real etcd: slices follow pods (ready, not ready, terminating, gone) and
//! the Service (its ports, its deletion); slices it does not manage are
//! left alone.

use crate::common::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use ballast_controllers::endpointslice::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};

fn pod(name: &str, finalizer: bool) -> Pod {
    let mut meta = json!({"name": name, "labels": {"app": "web"}});
    if finalizer {
        meta["finalizers"] = json!(["example.com/hold"]);
    }
    serde_json::from_value(json!({"metadata": meta,
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}]}]}}))
    .expect("pod")
}

async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    let lp = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={svc}"));
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

/// `(pod name, ready, serving, terminating)` of every endpoint, sorted.
fn endpoints(slices: &[EndpointSlice]) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<_> = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .unwrap_or_default(),
                c.ready == Some(true),
                c.serving == Some(true),
                c.terminating == Some(true),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_follow_pods_and_the_service() {
    let mut env = env("ctl-endpointslices").await;
    env.start(&["endpointslice"], quick_nodes());
    env.fake_kubelet();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.ns);

    // A slice of the user's, for the same Service: never touched.
    let theirs: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-manual", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["127.9.9.9"]}]}))
    .unwrap();
    slices
        .create(&PostParams::default(), &theirs)
        .await
        .expect("manual slice");

    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    .unwrap();
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("service");
    for (name, hold) in [("a", false), ("b", false), ("c", true)] {
        pods.create(&PostParams::default(), &pod(name, hold))
            .await
            .expect("pod");
    }
    let managed = |all: Vec<EndpointSlice>| -> Vec<EndpointSlice> {
        all.into_iter()
            .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
            .collect()
    };
    let got = eventually("three ready endpoints", || async {
        let s = managed(slices_of(&slices, "web").await);
        (endpoints(&s).iter().filter(|e| e.1).count() == 3).then_some(s)
    })
    .await;
    assert_eq!(got.len(), 1);
    let s = &got[0];
    assert_eq!(s.address_type, "IPv4");
    assert!(s.name_any().starts_with("web-"), "{}", s.name_any());
    let port = &s.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let owner = &s.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", svc.uid().unwrap().as_str(), Some(true))
    );
    assert!(s
        .endpoints
        .iter()
        .all(|e| e.node_name.as_deref() == Some("n1") && e.addresses[0].starts_with("127.42.")));

    // Not ready: ready and serving go false.
    set_ready(&pods, "a", false, None).await.expect("status");
    eventually("a not ready", || async {
        let e = endpoints(&managed(slices_of(&slices, "web").await));
        e.contains(&("a".into(), false, false, false)).then_some(())
    })
    .await;

    // Terminating (kept by a finalizer): serving but not ready.
    pods.delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    eventually("c terminating", || async {
        let e = endpoints(&managed(slices_of(&slices, "web").await));
        e.contains(&("c".into(), false, true, true)).then_some(())
    })
    .await;
    // Gone: out of the slice.
    pods.delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    eventually("b gone", || async {
        let e = endpoints(&managed(slices_of(&slices, "web").await));
        (!e.iter().any(|x| x.0 == "b")).then_some(())
    })
    .await;

    // The Service's ports change: the slice's follow.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090}]}}),
            ),
        )
        .await
        .expect("patch service");
    eventually("port 9090", || async {
        let s = managed(slices_of(&slices, "web").await);
        s.iter()
            .all(|s| s.ports.as_ref().is_some_and(|p| p[0].port == Some(9090)))
            .then_some(())
    })
    .await;

    // The Service goes: so do its slices, but not the user's.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("managed slices deleted", || async {
        managed(slices_of(&slices, "web").await)
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(slices.get_opt("web-manual").await.unwrap().is_some());
    // Let the held pod go. Other modules' controllers share this etcd and
    // may be writing the terminating pod too (a 409 after the apiserver's
    // own retries): try again until it goes.
    eventually("finalizer dropped", || async {
        pods.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .ok()
        .map(|_| ())
    })
    .await;
}
