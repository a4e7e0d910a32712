//! Server-side apply against the real apiserver over a real cluster: the
//! real `kubectl apply --server-side` creates and changes a Deployment,
//! conflicts with the manager `kubectl create` recorded (409 with
//! Kubernetes' message) until `--force-conflicts`, merges containers and
//! env by name with a second manager, removes what its manager alone
//! stopped applying and keeps what another manager also set, and takes
//! over a client-side-applied object (kubectl's managed-fields upgrade, a
//! JSON patch of `metadata.managedFields`). A custom resource merges its
//! lists by `x-kubernetes-list-type`. kube-rs' `Patch::Apply` and the
//! official Python client — clients nobody on the team wrote — apply,
//! conflict and force. Bad requests get Kubernetes' codes and messages.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{
    endpoints, kubectl, kubectl_ok, namespace, plain_kubeconfig, python_client, Api,
};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use bytes::Bytes;
use serde_json::{json, Value};

const APPLY: &str = "application/apply-patch+yaml";

async fn start() -> Api {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    common::start_on(eps, CacheConfig::default()).await
}

/// A suffix no earlier run on the same storage used.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff)
}

/// The managers of `obj` as `manager/operation` strings.
fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["manager"].as_str().unwrap_or(""),
                        e["operation"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `fieldsV1` of `manager`'s entry with `operation`.
fn fields_of<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["manager"] == manager && e["operation"] == operation)
        })
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

fn write(dir: &Path, name: &str, doc: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, doc.to_string()).expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn web(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1",
                                         "env": [{"name": "A", "value": "1"}]}]}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply() {
    let api = start().await;
    let ns = namespace(&api, "ssa-kubectl").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let d = dir.path();
    let name = format!("web-{}", run_id());
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");

    // kubectl create records its manager; the same values applied share.
    let one = write(d, "one.json", &web(&name, 1));
    kubectl_ok(d, &["create", "-n", &ns, "-f", &one]);
    let (_, created) = api.call("GET", &path, None).await;
    assert_eq!(managers(&created), ["kubectl-create/Update"], "{created}");
    let out = kubectl_ok(d, &["apply", "--server-side", "-n", &ns, "-f", &one]);
    assert!(out.contains("serverside-applied"), "{out}");

    // A change to a field kubectl create set conflicts until forced.
    let three = write(d, "three.json", &web(&name, 3));
    let (ok, _, stderr) = kubectl(d, &["apply", "--server-side", "-n", &ns, "-f", &three]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        ),
        "{stderr}"
    );
    let (_, still) = api.call("GET", &path, None).await;
    assert_eq!(still["spec"]["replicas"], 1);
    kubectl_ok(
        d,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-n",
            &ns,
            "-f",
            &three,
        ],
    );
    let (_, forced) = api.call("GET", &path, None).await;
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(
        fields_of(&forced, "kubectl", "Apply")["f:spec"]["f:replicas"],
        json!({})
    );
    assert!(fields_of(&forced, "kubectl-create", "Update")["f:spec"]
        .get("f:replicas")
        .is_none());

    // A server dry run changes nothing.
    let seven = write(d, "seven.json", &web(&name, 7));
    kubectl_ok(
        d,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            &ns,
            "-f",
            &seven,
        ],
    );
    let (_, same) = api.call("GET", &path, None).await;
    assert_eq!(same["spec"]["replicas"], 3);

    // kubectl adds an annotation and a label; a second manager sets the
    // same label, a container and an env entry of kubectl's container.
    let mut more = web(&name, 3);
    more["metadata"]["annotations"] = json!({"note": "mine"});
    more["metadata"]["labels"]["team"] = json!("blue");
    let more = write(d, "more.json", &more);
    kubectl_ok(d, &["apply", "--server-side", "-n", &ns, "-f", &more]);
    let sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"team": "blue"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "busybox"}]}}}
    });
    let sidecar = write(d, "sidecar.json", &sidecar);
    kubectl_ok(
        d,
        &[
            "apply",
            "--server-side",
            "--field-manager=sidecar",
            "-n",
            &ns,
            "-f",
            &sidecar,
        ],
    );
    let (_, merged) = api.call("GET", &path, None).await;
    let containers = &merged["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(containers[0]["image"], "nginx:1");
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(containers[1]["name"], "sidecar");
    let sidecar_fields = fields_of(&merged, "sidecar", "Apply");
    assert_eq!(
        sidecar_fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
            ["f:env"]["k:{\"name\":\"B\"}"],
        json!({".": {}, "f:name": {}, "f:value": {}}),
        "{merged}"
    );

    // kubectl stops applying both: its own annotation goes, the shared
    // label stays.
    kubectl_ok(d, &["apply", "--server-side", "-n", &ns, "-f", &three]);
    let (_, pruned) = api.call("GET", &path, None).await;
    assert!(
        pruned["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("note").is_none()),
        "{pruned}"
    );
    assert_eq!(pruned["metadata"]["labels"]["team"], "blue");
    assert_eq!(
        pruned["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // kubectl shows managed fields only when asked.
    let shown = kubectl_ok(
        d,
        &[
            "get",
            "deployment",
            &name,
            "-n",
            &ns,
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    assert!(shown.contains("\"managedFields\""));
    let hidden = kubectl_ok(d, &["get", "deployment", &name, "-n", &ns, "-o", "json"]);
    assert!(!hidden.contains("\"managedFields\""));

    // Client-side apply keeps working, and a server-side apply after it
    // takes the client-side manager's fields over (kubectl's upgrade).
    let cm = |v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": format!("{name}-cm")}, "data": {"k": v}})
    };
    let cm1 = write(d, "cm1.json", &cm("1"));
    kubectl_ok(d, &["apply", "-n", &ns, "-f", &cm1]);
    let cm_path = format!("/api/v1/namespaces/{ns}/configmaps/{name}-cm");
    let (_, csa) = api.call("GET", &cm_path, None).await;
    assert_eq!(
        managers(&csa),
        ["kubectl-client-side-apply/Update"],
        "{csa}"
    );
    let cm2 = write(d, "cm2.json", &cm("2"));
    kubectl_ok(d, &["apply", "--server-side", "-n", &ns, "-f", &cm2]);
    let (_, ssa) = api.call("GET", &cm_path, None).await;
    assert_eq!(ssa["data"]["k"], "2");
    assert!(
        managers(&ssa).contains(&"kubectl/Apply".to_string()),
        "{ssa}"
    );
    let cm3 = write(d, "cm3.json", &cm("3"));
    kubectl_ok(d, &["apply", "-n", &ns, "-f", &cm3]);
    let (_, back) = api.call("GET", &cm_path, None).await;
    assert_eq!(back["data"]["k"], "3");
}

/// A CRD whose `spec.items` is a list map keyed by `name` and whose
/// `spec.tags` is a set.
fn widgets_crd(group: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("ssawidgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ssawidgets", "singular": "ssawidget", "kind": "SsaWidget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {
                    "size": {"type": "integer"},
                    "items": {"type": "array", "x-kubernetes-list-type": "map",
                              "x-kubernetes-list-map-keys": ["name"],
                              "items": {"type": "object", "required": ["name"], "properties": {
                                  "name": {"type": "string"}, "v": {"type": "integer"}}}},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set",
                             "items": {"type": "string"}}}}}}}}],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_merge_by_their_list_types() {
    let api = start().await;
    let ns = namespace(&api, "ssa-custom").await;
    let group = "ssa.example.com";
    let (code, body) = api
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(widgets_crd(group)),
        )
        .await;
    assert!(code == 201 || code == 409, "{code} {body}");
    let name = format!("w-{}", run_id());
    let path = format!("/apis/{group}/v1/namespaces/{ns}/ssawidgets/{name}");
    let apply = |manager: &str, yaml: String| {
        let url = format!("{path}?fieldManager={manager}");
        let api = &api;
        async move { api.raw("PATCH", &url, Some(Bytes::from(yaml)), APPLY).await }
    };
    let head = format!("apiVersion: {group}/v1\nkind: SsaWidget\nmetadata:\n  name: {name}\n");
    // Served once the CRD is: the first apply creates (201).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = format!("{head}spec:\n  size: 1\n  items:\n  - name: x\n    v: 1\n  tags: [t1]\n");
    let (code, created) = loop {
        let got = apply("a", first.clone()).await;
        if got.0 != 404 || tokio::time::Instant::now() >= deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 201, "{created}");
    assert_eq!(managers(&created), ["a/Apply"]);

    let (code, second) = apply(
        "b",
        // Quoted: a bare `y` is YAML 1.1's `true`, as in Kubernetes' decoder.
        format!("{head}spec:\n  items:\n  - name: \"y\"\n    v: 2\n  tags: [t2]\n"),
    )
    .await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(
        second["spec"],
        json!({"size": 1, "items": [{"name": "x", "v": 1}, {"name": "y", "v": 2}], "tags": ["t1", "t2"]})
    );
    assert_eq!(
        fields_of(&second, "b", "Apply"),
        &json!({"f:spec": {"f:items": {"k:{\"name\":\"y\"}": {".": {}, "f:name": {}, "f:v": {}}},
                           "f:tags": {"v:\"t2\"": {}}}})
    );

    let (code, conflict) = apply("b", format!("{head}spec:\n  size: 2\n")).await;
    assert_eq!(code, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.size"
    );
    assert_eq!(
        conflict["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".spec.size"}])
    );

    // a stops applying x: x goes; y is b's and stays.
    let (code, third) = apply("a", format!("{head}spec:\n  size: 1\n  tags: [t1]\n")).await;
    assert_eq!(code, 200, "{third}");
    assert_eq!(third["spec"]["items"], json!([{"name": "y", "v": 2}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_applies_conflicts_and_forces() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};

    let api = start().await;
    let ns = namespace(&api, "ssa-kube-rs").await;
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{}", api.addr).parse().expect("url"),
    ))
    .expect("client");
    let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client, &ns);
    let name = format!("kube-rs-{}", run_id());
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": v}});
    let applied = cms
        .patch(
            &name,
            &PatchParams::apply("kube-rs"),
            &Patch::Apply(cm("1")),
        )
        .await
        .expect("apply");
    assert_eq!(applied.data.unwrap()["k"], "1");
    let entries = applied.metadata.managed_fields.expect("managed fields");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].manager.as_deref(), Some("kube-rs"));
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));
    assert_eq!(entries[0].fields_type.as_deref(), Some("FieldsV1"));

    match cms
        .patch(&name, &PatchParams::apply("other"), &Patch::Apply(cm("2")))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                e.message,
                "Apply failed with 1 conflict: conflict with \"kube-rs\": .data.k"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = cms
        .patch(
            &name,
            &PatchParams::apply("other").force(),
            &Patch::Apply(cm("2")),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.data.unwrap()["k"], "2");
    let owners: Vec<_> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(owners, ["other"]);
}

const PYTHON_APPLY: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(sys.argv[1])
ns = sys.argv[2]
v1 = client.CoreV1Api()
name = "py-applied"
try:
    v1.delete_namespaced_config_map(name, ns)
except ApiException:
    pass
def apply(manager, v, force=False):
    # The typed patch methods of this client pick their own Content-Type:
    # the apply goes through its ApiClient, which still (de)serialises.
    query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
    return v1.api_client.call_api(
        "/api/v1/namespaces/{namespace}/configmaps/{name}", "PATCH",
        {"namespace": ns, "name": name}, query,
        {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": v}},
        response_type="V1ConfigMap", auth_settings=["BearerToken"], _return_http_data_only=True)
cm = apply("python", "1")
print("applied", cm.data["a"], [(m.manager, m.operation) for m in cm.metadata.managed_fields])
try:
    apply("python-2", "2")
except ApiException as e:
    print("conflict", e.status, json.loads(e.body)["message"])
cm = apply("python-2", "2", force=True)
print("forced", cm.data["a"], [m.manager for m in cm.metadata.managed_fields])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_applies() {
    let api = start().await;
    let ns = namespace(&api, "ssa-python").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let out = python_client(PYTHON_APPLY, &dir.path().join("kubeconfig"), &ns).await;
    if let Some(lines) = out {
        assert_eq!(
            lines,
            [
                "applied 1 [('python', 'Apply')]",
                "conflict 409 Apply failed with 1 conflict: conflict with \"python\": .data.a",
                "forced 2 ['python-2']",
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_applies_and_update_managers() {
    let api = start().await;
    let ns = namespace(&api, "ssa-errors").await;
    let name = format!("cm-{}", run_id());
    let path = format!("/api/v1/namespaces/{ns}/configmaps/{name}");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}});
    let body = || Some(Bytes::from(cm.to_string()));

    let (code, status) = api.raw("PATCH", &path, body(), APPLY).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("{path}?fieldManager=t"),
            Some(Bytes::from_static(b"a: [")),
            APPLY,
        )
        .await;
    assert_eq!(code, 400, "{status}");
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}/configmaps/other?fieldManager=t"),
            body(),
            APPLY,
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        format!("the name of the object ({name}) does not match the name on the URL (other)")
    );

    // A dry run creates nothing; a real apply creates (201).
    let (code, dry) = api
        .raw(
            "PATCH",
            &format!("{path}?fieldManager=t&dryRun=All"),
            body(),
            APPLY,
        )
        .await;
    assert_eq!(code, 201, "{dry}");
    assert_eq!(api.call("GET", &path, None).await.0, 404);
    let (code, created) = api
        .raw("PATCH", &format!("{path}?fieldManager=t"), body(), APPLY)
        .await;
    assert_eq!(code, 201, "{created}");
    let (code, again) = api
        .raw("PATCH", &format!("{path}?fieldManager=t"), body(), APPLY)
        .await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // force belongs to apply only.
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("{path}?force=true"),
            Some(Bytes::from_static(b"{}")),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 422, "{status}");

    // Other writes record their manager: fieldManager, else the
    // User-Agent's program; a changed field moves to its writer, and a
    // manager left with no field is dropped (structured-merge-diff).
    let tool = format!("{path}?fieldManager=tool");
    let merge = "application/merge-patch+json";
    let data = |d: Value| Some(Bytes::from(json!({ "data": d }).to_string()));
    let (code, patched) = api
        .raw("PATCH", &tool, data(json!({"b": "3"})), merge)
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(managers(&patched), ["t/Apply", "tool/Update"]);
    assert_eq!(
        fields_of(&patched, "tool", "Update"),
        &json!({"f:data": {"f:b": {}}})
    );
    let (code, patched) = api
        .raw("PATCH", &tool, data(json!({"a": "2"})), merge)
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(managers(&patched), ["tool/Update"]);
    assert_eq!(
        fields_of(&patched, "tool", "Update"),
        &json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // Managed fields can be cleared by writing `[{}]`.
    let (code, cleared) = api
        .merge_patch(&path, json!({"metadata": {"managedFields": [{}]}}))
        .await;
    assert_eq!(code, 200, "{cleared}");
    assert!(
        cleared["metadata"].get("managedFields").is_none(),
        "{cleared}"
    );
}
