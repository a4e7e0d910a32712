//! CustomResourceDefinitions end to end against the real apiserver over a
//! real cluster: the real `kubectl` applies a CRD and works on its custom
//! resources (Tables with the CRD's printer columns, `-o wide`, the short
//! name, `get all` through the category, patch, label and field
//! selectors, delete), a watch sees them, the `status` subresource splits
//! status from the rest, a second version reads the same objects, bad
//! CRDs are refused with Kubernetes' messages, deleting a CRD deletes its
//! objects and stops serving them (404), and every apiserver over the
//! storage — one started later included — serves a CRD created through
//! another. The official Python client's `CustomObjectsApi`, a client
//! nobody on the team wrote, drives a custom resource too.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{
    endpoints, kubectl, kubectl_ok, namespace, plain_kubeconfig, python_client, Api,
};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// A CRD of CronTabs in `group` (namespaced or not), with a `status`
/// subresource and printer columns on `v1` (the storage version) and a
/// second served version `v1beta1`.
fn crontab_crd(group: &str, scope: &str) -> Value {
    let columns = json!([
        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Image", "type": "string", "priority": 1, "jsonPath": ".spec.image"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]);
    let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("crontabs.{group}")},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab",
                      "shortNames": ["ct"], "categories": ["all"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema,
                 "subresources": {"status": {}}, "additionalPrinterColumns": columns},
                {"name": "v1beta1", "served": true, "storage": false, "schema": schema},
            ],
        },
    })
}

fn crontab(group: &str, name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": format!("{group}/v1"),
        "kind": "CronTab",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"cronSpec": "* * * * */5", "image": "my-cron-image", "replicas": replicas},
    })
}

/// Polls a GET until it answers `want`; the last answer.
async fn eventually(api: &Api, path: &str, want: u16) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = api.call("GET", path, None).await;
        if got.0 == want || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(eps: &[String]) -> Api {
    common::start_on(eps.to_vec(), CacheConfig::default()).await
}

async fn ballast_endpoints() -> Vec<String> {
    tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster")
}

fn write(dir: &Path, file: &str, v: &Value) -> String {
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).expect("write manifest");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_on_custom_resources() {
    let group = "stable.example.com";
    let eps = ballast_endpoints().await;
    let api = start(&eps).await;
    let ns = namespace(&api, "crd-kubectl").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let d = dir.path().to_path_buf();

    let crd_file = write(&d, "crd.json", &crontab_crd(group, "Namespaced"));
    let ct_file = write(&d, "ct.json", &crontab(group, "my-cron", 3));
    let (d2, ns2) = (d.clone(), ns.clone());
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&d2, &["apply", "-f", &crd_file]);
        kubectl_ok(&d2, &["apply", "-n", &ns2, "-f", &ct_file]);
    })
    .await
    .expect("kubectl");

    // The CRD is accepted and established, with kube's defaults.
    let crd_path =
        format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs.{group}");
    let (code, crd) = api.call("GET", &crd_path, None).await;
    assert_eq!(code, 200, "{crd}");
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList");
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None");
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    for t in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True"),
            "{t}: {crd}"
        );
    }
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "CronTab");

    // Discovery lists the group, both versions, v1 preferred.
    let (_, g) = api.call("GET", &format!("/apis/{group}"), None).await;
    assert_eq!(g["preferredVersion"]["version"], "v1", "{g}");
    assert_eq!(g["versions"].as_array().map(Vec::len), Some(2), "{g}");
    let (_, list) = api.call("GET", &format!("/apis/{group}/v1"), None).await;
    let resources = list["resources"].as_array().expect("resources");
    assert!(
        resources.iter().any(|r| r["name"] == "crontabs/status"),
        "{list}"
    );
    let crontabs = resources
        .iter()
        .find(|r| r["name"] == "crontabs")
        .expect("crontabs");
    assert_eq!(crontabs["shortNames"], json!(["ct"]));
    assert_eq!(crontabs["categories"], json!(["all"]));
    assert_eq!(crontabs["namespaced"], true);

    // Stored under the group, read through either version.
    let path = format!("/apis/{group}/v1/namespaces/{ns}/crontabs");
    let (code, ct) = api.call("GET", &format!("{path}/my-cron"), None).await;
    assert_eq!(code, 200, "{ct}");
    assert_eq!(ct["metadata"]["generation"], 1);
    let beta = format!("/apis/{group}/v1beta1/namespaces/{ns}/crontabs/my-cron");
    let (code, b) = api.call("GET", &beta, None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["apiVersion"], format!("{group}/v1beta1"));
    assert_eq!(b["spec"], ct["spec"]);

    // A watch sees a second one created through v1beta1 in v1's form.
    let mut watch = api
        .watch(&format!(
            "{path}?watch=true&resourceVersion={}",
            common::rv(&ct)
        ))
        .await;
    let mut other = crontab(group, "other", 1);
    other["apiVersion"] = json!(format!("{group}/v1beta1"));
    let beta_list = format!("/apis/{group}/v1beta1/namespaces/{ns}/crontabs");
    let (code, body) = api.call("POST", &beta_list, Some(other)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["apiVersion"], format!("{group}/v1beta1"));
    let e = watch.next_event(WAIT).await.expect("watch event");
    assert_eq!(e["type"], "ADDED", "{e}");
    assert_eq!(e["object"]["metadata"]["name"], "other");
    assert_eq!(e["object"]["apiVersion"], format!("{group}/v1"));

    // The status subresource: the main resource ignores status, /status
    // ignores everything else.
    let (code, body) = api
        .merge_patch(
            &format!("{path}/my-cron"),
            json!({"status": {"phase": "Ignored"}, "spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["status"].is_null(), "{body}");
    assert_eq!(body["metadata"]["generation"], 2);
    let (code, body) = api
        .merge_patch(
            &format!("{path}/my-cron/status"),
            json!({"status": {"phase": "Running"}, "spec": {"replicas": 9}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Running");
    assert_eq!(body["spec"]["replicas"], 4);
    assert_eq!(body["metadata"]["generation"], 2);

    let (d2, ns2) = (d.clone(), ns.clone());
    tokio::task::spawn_blocking(move || kubectl_checks(&d2, &ns2))
        .await
        .expect("kubectl checks");

    // A wrong CRD is refused with Kubernetes' messages.
    let mut bad = crontab_crd(group, "Global");
    bad["metadata"]["name"] = json!(format!("tabs.{group}"));
    let bad_file = write(&d, "bad.json", &bad);
    let d2 = d.clone();
    let (ok, _, stderr) =
        tokio::task::spawn_blocking(move || kubectl(&d2, &["apply", "-f", &bad_file]))
            .await
            .expect("kubectl");
    assert!(!ok);
    assert!(
        stderr.contains(r#"metadata.name: Invalid value: "tabs.stable.example.com": must be spec.names.plural+"."+spec.group"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#
        ),
        "{stderr}"
    );

    // Deleting the CRD deletes its objects, then the CRD; the resource
    // is no longer served.
    let d2 = d.clone();
    let name = format!("crontabs.{group}");
    tokio::task::spawn_blocking(move || {
        kubectl_ok(&d2, &["delete", "crd", &name, "--timeout=60s"]);
    })
    .await
    .expect("kubectl");
    let (code, body) = api.call("GET", &crd_path, None).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = eventually(&api, &path, 404).await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = api.call("GET", &format!("/apis/{group}"), None).await;
    assert_eq!(code, 404);
    // Created again, the CRD starts with no objects: they were deleted.
    let (code, body) = api
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(crontab_crd(group, "Namespaced")),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, list) = api.call("GET", &path, None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"], json!([]), "{list}");
    assert_eq!(list["kind"], "CronTabList");
    let (code, _) = api.call("DELETE", &crd_path, None).await;
    assert_eq!(code, 200);
    let (code, _) = eventually(&api, &crd_path, 404).await;
    assert_eq!(code, 404);
}

fn kubectl_checks(d: &Path, ns: &str) {
    let get = kubectl_ok(d, &["get", "crontabs", "-n", ns]);
    let header = get.lines().next().unwrap_or_default();
    for column in ["NAME", "SPEC", "REPLICAS", "AGE"] {
        assert!(header.contains(column), "{get}");
    }
    assert!(!header.contains("IMAGE"), "{get}");
    let row = get
        .lines()
        .find(|l| l.starts_with("my-cron"))
        .expect("my-cron row");
    assert!(row.contains("* * * * */5") && row.contains(" 4 "), "{get}");
    let wide = kubectl_ok(d, &["get", "crontabs", "-n", ns, "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or_default().contains("IMAGE"),
        "{wide}"
    );
    assert!(wide.contains("my-cron-image"), "{wide}");
    let short = kubectl_ok(d, &["get", "ct", "-n", ns, "-o", "name"]);
    assert!(
        short.contains("crontab.stable.example.com/my-cron"),
        "{short}"
    );
    assert!(
        short.contains("crontab.stable.example.com/other"),
        "{short}"
    );
    let all = kubectl_ok(d, &["get", "all", "-n", ns]);
    assert!(all.contains("crontab.stable.example.com/my-cron"), "{all}");
    let labelled = kubectl_ok(d, &["get", "ct", "-n", ns, "-l", "app=other", "-o", "name"]);
    assert_eq!(labelled.trim(), "crontab.stable.example.com/other");
    let by_name = kubectl_ok(
        d,
        &[
            "get",
            "ct",
            "-n",
            ns,
            "--field-selector",
            "metadata.name=my-cron",
            "-o",
            "name",
        ],
    );
    assert_eq!(by_name.trim(), "crontab.stable.example.com/my-cron");
    kubectl_ok(
        d,
        &[
            "patch",
            "ct",
            "other",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":7}}"#,
        ],
    );
    let replicas = kubectl_ok(
        d,
        &[
            "get",
            "ct",
            "other",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas.trim(), "7");
    kubectl_ok(d, &["delete", "ct", "other", "-n", ns]);
    let (ok, _, stderr) = kubectl(d, &["get", "ct", "other", "-n", ns]);
    assert!(!ok);
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
}

/// A cluster-scoped CRD with names of its own (kubectl in the other test
/// resolves `crontabs` and `ct` through discovery: one resource only).
fn clustertabs_crd(group: &str) -> Value {
    let mut crd = crontab_crd(group, "Cluster");
    crd["metadata"]["name"] = json!(format!("clustertabs.{group}"));
    crd["spec"]["names"] =
        json!({"plural": "clustertabs", "singular": "clustertab", "kind": "ClusterTab"});
    crd
}

fn clustertab(name: &str) -> Value {
    let mut o = crontab("cluster.example.com", name, 1);
    o["kind"] = json!("ClusterTab");
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_apiserver_serves_a_crd_and_a_restarted_one_too() {
    let group = "cluster.example.com";
    let eps = ballast_endpoints().await;
    let a = start(&eps).await;
    let b = start(&eps).await;
    let path = format!("/apis/{group}/v1/clustertabs");
    let (code, _) = b.call("GET", &path, None).await;
    assert_eq!(code, 404);

    let (code, body) = a
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(clustertabs_crd(group)),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // Served at once by the apiserver that created it, cluster-scoped.
    let (code, body) = a.call("POST", &path, Some(clustertab("c1"))).await;
    assert_eq!(code, 201, "{body}");
    assert!(body["metadata"]["namespace"].is_null(), "{body}");
    // The other one follows its CRD cache.
    let (code, body) = eventually(&b, &format!("{path}/c1"), 200).await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = b
        .call(
            "GET",
            &format!("/apis/{group}/v1/namespaces/default/clustertabs"),
            None,
        )
        .await;
    assert_eq!(
        code, 404,
        "a cluster-scoped resource has no namespaced path"
    );

    // An apiserver started now serves it as soon as it is ready.
    drop(a);
    let c = start(&eps).await;
    let (code, list) = c.call("GET", &path, None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(common::names(&list), ["c1"]);

    let crd_path =
        format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clustertabs.{group}");
    let (code, body) = c.call("DELETE", &crd_path, None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["metadata"]["finalizers"].as_array().is_some_and(|f| f
            .iter()
            .any(|f| f == "customresourcecleanup.apiextensions.k8s.io")),
        "{body}"
    );
    let (code, _) = eventually(&b, &crd_path, 404).await;
    assert_eq!(code, 404);
    let (code, _) = eventually(&b, &path, 404).await;
    assert_eq!(code, 404);
    let (code, _) = eventually(&c, &path, 404).await;
    assert_eq!(code, 404);
}

const PYTHON_CUSTOM_OBJECTS: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(sys.argv[1])
ns = sys.argv[2]
api = client.CustomObjectsApi()
g, v, p = "py.example.com", "v1", "pytabs"
body = {"apiVersion": "py.example.com/v1", "kind": "PyTab",
        "metadata": {"name": "from-python", "labels": {"by": "python"}},
        "spec": {"cronSpec": "*/1 * * * *", "replicas": 1}}
made = api.create_namespaced_custom_object(g, v, ns, p, body)
print("created", made["metadata"]["name"], made["metadata"]["generation"])
got = api.get_namespaced_custom_object(g, v, ns, p, "from-python")
print("got", got["spec"]["cronSpec"])
listed = api.list_namespaced_custom_object(g, v, ns, p, label_selector="by=python")
print("listed", [i["metadata"]["name"] for i in listed["items"]])
patched = api.patch_namespaced_custom_object(g, v, ns, p, "from-python", {"spec": {"replicas": 2}})
print("patched", patched["spec"]["replicas"])
st = api.patch_namespaced_custom_object_status(g, v, ns, p, "from-python", {"status": {"phase": "Ok"}})
print("status", st["status"]["phase"])
api.delete_namespaced_custom_object(g, v, ns, p, "from-python")
try:
    api.get_namespaced_custom_object(g, v, ns, p, "from-python")
except ApiException as e:
    print("gone", e.status)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_drives_custom_objects() {
    let group = "py.example.com";
    // Names of its own: kubectl in the other tests resolves `crontabs`
    // and `ct` through discovery, which must find one resource only.
    let mut pytabs = crontab_crd(group, "Namespaced");
    pytabs["metadata"]["name"] = json!(format!("pytabs.{group}"));
    pytabs["spec"]["names"] = json!({"plural": "pytabs", "singular": "pytab", "kind": "PyTab"});
    let eps = ballast_endpoints().await;
    let api = start(&eps).await;
    let ns = namespace(&api, "crd-python").await;
    let (code, body) = api
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(pytabs),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let out = python_client(PYTHON_CUSTOM_OBJECTS, &dir.path().join("kubeconfig"), &ns).await;
    if let Some(lines) = out {
        assert_eq!(
            lines,
            [
                "created from-python 1",
                "got */1 * * * *",
                "listed ['from-python']",
                "patched 2",
                "status Ok",
                "gone 404",
            ]
        );
    }
    // deletecollection of CRDs goes through the same cleanup.
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let selected = format!("{crds}?fieldSelector=metadata.name%3Dpytabs.{group}");
    let (code, list) = api.call("DELETE", &selected, None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "CustomResourceDefinitionList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert!(!list["items"][0]["metadata"]["deletionTimestamp"].is_null());
    let (code, _) = eventually(&api, &format!("{crds}/pytabs.{group}"), 404).await;
    assert_eq!(code, 404);
}
