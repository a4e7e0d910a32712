//! Aggregated discovery against the real apiserver over a real cluster:
//! `GET /api` and `/apis` with the `apidiscovery.k8s.io` Accept kubectl
//! sends answer `APIGroupDiscoveryList`s (v2 and v2beta1) with the
//! Content-Type naming them and `Vary: Accept`, every resource with its
//! scope, kind, short names and subresources; a CRD's resource is there
//! once established and gone once the CRD is deleted; a plain Accept
//! still gets `APIVersions` / `APIGroupList`; an Accept naming only
//! protobuf is 406. The real kubectl (1.33, and 1.28, which asks for
//! v2beta1) lists `api-resources` from the two aggregated documents
//! alone, with no per-group request.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{endpoints, kubectl, plain_kubeconfig, Api, KUBECTL};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

async fn start() -> Api {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    common::start_on(eps, CacheConfig::default()).await
}

/// A GET with `accept` (and `If-None-Match`, if given): its status, the
/// headers asked for, and the JSON body (`Null` if none).
async fn get(
    api: &Api,
    path: &str,
    accept: &str,
    if_none_match: Option<&str>,
) -> (u16, Vec<String>, Value) {
    let stream = tokio::net::TcpStream::connect(api.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", api.addr.to_string())
        .header("accept", accept);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(common::DEADLINE, sender.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let headers = vec![header("content-type"), header("vary"), header("etag")];
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        code,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn group<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|g| g["metadata"]["name"].as_str().unwrap_or_default() == name)
}

fn resource<'a>(group: &'a Value, version: &str, name: &str) -> Option<&'a Value> {
    group["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)?["resources"]
        .as_array()?
        .iter()
        .find(|r| r["resource"] == name)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// A namespaced CRD `widgets.<group>` with `status` and `scale`.
fn widget_crd(group: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["all"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                           "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas"}}}],
        },
    })
}

/// Polls aggregated `/apis` until `group` is listed (or not); the last
/// document.
async fn until_listed(api: &Api, group_name: &str, listed: bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _, list) = get(api, "/apis", V2, None).await;
        assert_eq!(code, 200, "{list}");
        if group(&list, group_name).is_some() == listed || tokio::time::Instant::now() >= deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_discovery_lists_every_resource_and_follows_crds() {
    let api = start().await;

    // /apis, v2: the Content-Type names it, and the answer varies by Accept.
    let (code, headers, apis) = get(&api, "/apis", V2, None).await;
    assert_eq!(code, 200, "{apis}");
    assert_eq!(headers[0], V2);
    assert_eq!(headers[1], "Accept");
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2");
    assert!(group(&apis, "").is_none(), "the core group is /api's");
    let apps = group(&apis, "apps").expect("apps");
    assert_eq!(apps["versions"][0]["freshness"], "Current");
    let deployments = resource(apps, "v1", "deployments").expect("deployments");
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["singularResource"], "deployment");
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    assert_eq!(deployments["categories"], json!(["all"]));
    assert_eq!(deployments["responseKind"], gvk("apps", "v1", "Deployment"));
    let scale = deployments["subresources"]
        .as_array()
        .expect("subresources")
        .iter()
        .find(|s| s["subresource"] == "scale")
        .expect("deployments/scale");
    assert_eq!(scale["responseKind"], gvk("autoscaling", "v1", "Scale"));
    assert_eq!(scale["verbs"], json!(["get", "patch", "update"]));
    let reviews = group(&apis, "authorization.k8s.io").expect("authorization");
    let sar = resource(reviews, "v1", "subjectaccessreviews").expect("SARs");
    assert_eq!(sar["verbs"], json!(["create"]));
    assert_eq!(sar["scope"], "Cluster");

    // /api: the core group alone.
    let (code, headers, core) = get(&api, "/api", V2, None).await;
    assert_eq!(code, 200, "{core}");
    assert_eq!(headers[0], V2);
    let items = core["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{core}");
    let pods = resource(&items[0], "v1", "pods").expect("pods");
    assert_eq!(pods["scope"], "Namespaced");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["responseKind"], gvk("", "v1", "Pod"));
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .expect("pod subresources")
        .iter()
        .filter_map(|s| s["subresource"].as_str())
        .collect();
    for sub in ["binding", "eviction", "exec", "log", "status"] {
        assert!(subs.contains(&sub), "{sub}: {subs:?}");
    }
    let nodes = resource(&items[0], "v1", "nodes").expect("nodes");
    assert_eq!(nodes["scope"], "Cluster");

    // v2beta1 (kubectl 1.26–1.29), preferred by quality.
    let accept = format!("{V2};q=0.5,{V2BETA1},application/json;q=0.1");
    let (code, headers, beta) = get(&api, "/apis", &accept, None).await;
    assert_eq!(code, 200, "{beta}");
    assert_eq!(headers[0], V2BETA1);
    assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    assert_eq!(group(&beta, "apps"), group(&apis, "apps"));

    // Unchanged since: 304 for the ETag it was sent with (tried again
    // if another test's CRD changed the document in between).
    let mut revalidated = None;
    for _ in 0..5 {
        let (code, again, _) = get(&api, "/apis", V2, Some(&etag(&api).await)).await;
        if code == 304 {
            revalidated = Some(again);
            break;
        }
    }
    let again = revalidated.expect("a 304 for an unchanged document");
    assert_eq!(again[1], "Accept");

    // A plain Accept: today's documents, trailing slash or not.
    for path in ["/apis", "/apis/"] {
        let (code, headers, legacy) = get(&api, path, "application/json", None).await;
        assert_eq!(code, 200, "{path}: {legacy}");
        assert_eq!(headers[0], "application/json");
        assert_eq!(legacy["kind"], "APIGroupList", "{path}");
    }
    for path in ["/api", "/api/"] {
        let (code, _, legacy) = get(&api, path, "application/json, */*", None).await;
        assert_eq!(code, 200, "{path}: {legacy}");
        assert_eq!(legacy["kind"], "APIVersions", "{path}");
    }
    let (code, _, version) = get(&api, "/version/", "application/json", None).await;
    assert_eq!(code, 200);
    assert_eq!(version["gitVersion"], ballast_apiserver::KUBE_VERSION);

    // Only protobuf: 406, as Kubernetes names it.
    let proto =
        "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let (code, _, status) = get(&api, "/apis", proto, None).await;
    assert_eq!(code, 406, "{status}");
    assert_eq!(status["reason"], "NotAcceptable");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("only the following media types are accepted: "),
        "{status}"
    );
    // With JSON accepted too, JSON.
    let (code, headers, _) = get(&api, "/apis", &format!("{proto},{V2}"), None).await;
    assert_eq!((code, headers[0].as_str()), (200, V2));

    // A CRD: listed once established, with its names and subresources.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let crd_group = format!("d{:x}.example.com", nanos % 0xffff_ffff);
    let (code, body) = api.call("POST", CRDS, Some(widget_crd(&crd_group))).await;
    assert_eq!(code, 201, "{body}");
    let apis = until_listed(&api, &crd_group, true).await;
    let g = group(&apis, &crd_group).expect("the CRD's group");
    let widgets = resource(g, "v1", "widgets").expect("widgets");
    assert_eq!(widgets["scope"], "Namespaced");
    assert_eq!(widgets["singularResource"], "widget");
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    assert_eq!(widgets["categories"], json!(["all"]));
    assert_eq!(widgets["responseKind"], gvk(&crd_group, "v1", "Widget"));
    let subs: Vec<(&str, &Value)> = widgets["subresources"]
        .as_array()
        .expect("widget subresources")
        .iter()
        .map(|s| {
            (
                s["subresource"].as_str().unwrap_or_default(),
                &s["responseKind"],
            )
        })
        .collect();
    assert_eq!(
        subs,
        [
            ("scale", &gvk("autoscaling", "v1", "Scale")),
            ("status", &gvk(&crd_group, "v1", "Widget")),
        ]
    );
    // The same table as the per-group document.
    let (_, list) = api
        .call("GET", &format!("/apis/{crd_group}/v1"), None)
        .await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["widgets", "widgets/scale", "widgets/status"]);

    // …and gone once the CRD is deleted.
    let (code, body) = api
        .call("DELETE", &format!("{CRDS}/widgets.{crd_group}"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let apis = until_listed(&api, &crd_group, false).await;
    assert!(group(&apis, &crd_group).is_none(), "still listed: {apis}");
}

/// The ETag of aggregated `/apis` now.
async fn etag(api: &Api) -> String {
    let (_, headers, _) = get(api, "/apis", V2, None).await;
    assert!(headers[2].starts_with('"'), "{headers:?}");
    headers[2].clone()
}

/// The URLs kubectl logged at `-v=6`, from `url="…"` (1.30+) or
/// `GET http://…` (older).
fn requested(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let start = l.find("url=\"").map(|i| i + 5).or_else(|| {
                l.find("GET http")
                    .map(|i| i + 4)
                    .filter(|_| l.contains("OK in") || l.contains("Not"))
            })?;
            let rest = &l[start..];
            let end = rest.find(['"', ' ']).unwrap_or(rest.len());
            Some(rest[..end].to_string())
        })
        .collect()
}

/// `kubectl api-resources` from a fresh cache, by `binary`: the
/// resources it printed and the paths it requested.
fn api_resources(dir: &Path, binary: &str) -> (String, Vec<String>) {
    println!("$ {binary} api-resources -v=6");
    let out = std::process::Command::new(binary)
        .args(["--request-timeout", "30s", "api-resources", "-v=6"])
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    print!("{stdout}");
    assert!(out.status.success(), "{binary} api-resources: {stderr}");
    let paths = requested(&stderr)
        .into_iter()
        .map(|url| {
            let path = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let path = &path[path.find('/').unwrap_or(path.len())..];
            path.split('?').next().unwrap_or_default().to_string()
        })
        .collect();
    (stdout, paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_only_the_aggregated_documents() {
    if !Path::new(KUBECTL).exists() {
        println!("SKIPPED: {KUBECTL} is not installed");
        return;
    }
    let api = start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        // The kubectl matching the server (1.33), and 1.28 (v2beta1).
        let older = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28";
        for binary in [KUBECTL, older] {
            if !Path::new(binary).exists() {
                println!("SKIPPED {binary}: not installed");
                continue;
            }
            let home = tempfile::tempdir_in(&d).expect("a fresh cache");
            std::fs::copy(d.join("kubeconfig"), home.path().join("kubeconfig")).expect("copy");
            let (listed, paths) = api_resources(home.path(), binary);
            println!("requested: {paths:?}");
            assert!(paths.iter().any(|p| p == "/api"), "{paths:?}");
            assert!(paths.iter().any(|p| p == "/apis"), "{paths:?}");
            let per_group: Vec<&String> = paths
                .iter()
                .filter(|p| p.starts_with("/api/") || p.starts_with("/apis/"))
                .collect();
            assert!(
                per_group.is_empty(),
                "{binary} fell back to per-group discovery: {per_group:?}"
            );
            let row = |name: &str| -> Vec<String> {
                listed
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(name))
                    .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"))
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(row("pods"), ["pods", "po", "v1", "true", "Pod"]);
            assert_eq!(
                row("deployments"),
                ["deployments", "deploy", "apps/v1", "true", "Deployment"]
            );
            assert_eq!(row("nodes"), ["nodes", "no", "v1", "false", "Node"]);
        }
        // Sanity: the same kubectl does ask per group when the server
        // answers only the legacy form (checked by asking for it).
        let (ok, _, stderr) = kubectl(&d, &["get", "--raw", "/apis/apps/v1", "-v=6"]);
        assert!(ok, "{stderr}");
        assert!(
            requested(&stderr)
                .iter()
                .any(|u| u.contains("/apis/apps/v1")),
            "the log parser sees per-group requests: {stderr}"
        );
    })
    .await
    .expect("kubectl");
}
