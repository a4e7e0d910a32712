//! The garbage collector and custom resources: a ConfigMap owned by a
//! custom resource (a kind the collector knows only through discovery)
//! stays while its owner exists and is deleted once the owner goes.

use crate::common::{env, eventually, quick_nodes};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::ResourceExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_owned_by_a_custom_resource_goes_with_it() {
    let mut env = env("ctl-gc-crd").await;
    env.start(&["garbagecollector"], quick_nodes());
    let crds = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(env.client.clone(), &crds);
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.gc.example.com"},
        "spec": {"group": "gc.example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]},
    }))
    .expect("crd");
    let pp = PostParams::default();
    match crds.create(&pp, &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    let widgets = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gc.example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &widgets);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gc.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1},
    }))
    .expect("widget");
    let widget = eventually("the widget is served", || async {
        widgets.create(&pp, &widget).await.ok()
    })
    .await;
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let owned: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "gc.example.com/v1", "kind": "Widget",
            "name": "w", "uid": widget.uid().expect("uid")}]},
        "data": {"k": "v"},
    }))
    .expect("configmap");
    configmaps.create(&pp, &owned).await.expect("configmap");
    // The owner exists: the ConfigMap stays (past a recheck).
    tokio::time::sleep(ballast_controllers::gc::CUSTOM_OWNER_RECHECK * 2).await;
    assert!(configmaps.get_opt("owned").await.expect("get").is_some());
    widgets
        .delete("w", &DeleteParams::default())
        .await
        .expect("delete widget");
    eventually("the owned ConfigMap is collected", || async {
        configmaps
            .get_opt("owned")
            .await
            .ok()
            .and_then(|c| c.is_none().then_some(()))
    })
    .await;
    let _ = crds
        .delete("widgets.gc.example.com", &DeleteParams::default())
        .await;
}
