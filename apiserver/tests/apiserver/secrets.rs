//! Secrets and ServiceAccounts against an in-process apiserver on a real
//! cluster: Kubernetes' validation (422 with its messages), `stringData`
//! merged into `data` and never stored, `type` and `immutable`, Tables;
//! the ServiceAccount admission plugin; the Node authorizer letting a
//! kubelet read only the Secrets its pods refer to; the real kubectl
//! (`create secret generic|tls|docker-registry`, protobuf bodies; `get
//! secret -o yaml`) and the official Python client.

use crate::common;

use std::path::Path;

use crate::common::{
    endpoints, kubectl, kubectl_ok, namespace, plain_kubeconfig, python_client, Api, KUBECTL,
};
use ballast_apiserver::{AuthConfig, AuthorizationMode, Options};
use ballast_tests::ClusterKind;
use base64::Engine;
use serde_json::{json, Value};

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secrets(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets")
}

fn secret(name: &str, ty: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
           "type": ty, "data": data})
}

/// (field, message) of each cause of a 422 Status.
fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .unwrap_or_else(|| panic!("no causes: {status}"))
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Asserts a 422 Invalid Status with exactly these causes.
fn assert_invalid(got: (u16, Value), want: &[(&str, &str)]) {
    let (code, status) = got;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid", "{status}");
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(causes(&status), want, "{status}");
}

async fn remove(api: &Api, path: &str) {
    let (code, body) = api.call("DELETE", path, None).await;
    assert!(code == 200 || code == 404, "DELETE {path}: {code} {body}");
}

async fn ballast_api(options: Options) -> Api {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    common::start_on_with(eps, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_validated_merged_and_kept_immutable() {
    let api = ballast_api(Options::default()).await;
    let ns = namespace(&api, "secrets-validation").await;
    for name in ["s1", "tls", "frozen", "big", "bad"] {
        remove(&api, &format!("{}/{name}", secrets(&ns))).await;
    }

    // stringData wins over data, is stored base64 in data, and is gone.
    let mut s1 = secret("s1", "", json!({"a": b64(b"x"), "b": b64(b"old")}));
    s1["stringData"] = json!({"b": "new", "c": "ç"});
    let (code, made) = api.call("POST", &secrets(&ns), Some(s1)).await;
    assert_eq!(code, 201, "{made}");
    let (code, got) = api.call("GET", &format!("{}/s1", secrets(&ns)), None).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["type"], "Opaque");
    assert_eq!(
        got["data"],
        json!({"a": b64(b"x"), "b": b64(b"new"), "c": b64("ç".as_bytes())})
    );
    assert!(got.get("stringData").is_none(), "{got}");
    // stringData through a merge patch lands in data too.
    let (code, patched) = api
        .merge_patch(
            &format!("{}/s1", secrets(&ns)),
            json!({"stringData": {"a": "patched"}}),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["a"], b64(b"patched"));
    assert!(patched.get("stringData").is_none(), "{patched}");

    // Keys, types and sizes, with Kubernetes' messages.
    assert_invalid(
        api.call(
            "POST",
            &secrets(&ns),
            Some(secret("bad", "Opaque", json!({"a/b": "", "..": ""}))),
        )
        .await,
        &[
            ("data[..]", "Invalid value: \"..\": must not be '..'"),
            (
                "data[a/b]",
                "Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ),
        ],
    )
    ;
    assert_invalid(
        api.call(
            "POST",
            &secrets(&ns),
            Some(secret(
                "tls",
                "kubernetes.io/tls",
                json!({"tls.crt": b64(b"c")}),
            )),
        )
        .await,
        &[("data[tls.key]", "Required value")],
    );
    assert_invalid(
        api.call(
            "POST",
            &secrets(&ns),
            Some(secret(
                "bad",
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": b64(b"{")}),
            )),
        )
        .await,
        &[(
            "data[.dockerconfigjson]",
            "Invalid value: \"<secret contents redacted>\": unexpected end of JSON input",
        )],
    );
    assert_invalid(
        api.call(
            "POST",
            &secrets(&ns),
            Some(secret("bad", "kubernetes.io/basic-auth", json!({}))),
        )
        .await,
        &[
            ("data[username]", "Required value"),
            ("data[password]", "Required value"),
        ],
    );
    let half = b64(&vec![b'x'; (1 << 19) + 1]);
    assert_invalid(
        api.call(
            "POST",
            &secrets(&ns),
            Some(secret("big", "Opaque", json!({"a": half, "b": half}))),
        )
        .await,
        &[("data", "Too long: may not be more than 1048576 bytes")],
    );
    // Not base64: the decoder's 400, as kube-apiserver's.
    let (code, status) = api
        .call(
            "POST",
            &secrets(&ns),
            Some(secret("bad", "Opaque", json!({"a": "not base64!"}))),
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Secret in version \"v1\" cannot be handled as a Secret: "),
        "{status}"
    );
    // A secret value never shows in an error.
    assert!(!status.to_string().contains("not base64!"), "{status}");

    // type is immutable; an immutable Secret's data and flag are fixed.
    let (code, body) = api
        .merge_patch(
            &format!("{}/s1", secrets(&ns)),
            json!({"type": "kubernetes.io/basic-auth", "stringData": {"username": "u"}}),
        )
        .await;
    assert_invalid(
        (code, body),
        &[(
            "type",
            "Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
        )],
    );
    let mut frozen = secret("frozen", "Opaque", json!({"k": b64(b"v")}));
    frozen["immutable"] = json!(true);
    let (code, body) = api.call("POST", &secrets(&ns), Some(frozen)).await;
    assert_eq!(code, 201, "{body}");
    let frozen_path = format!("{}/frozen", secrets(&ns));
    assert_invalid(
        api.merge_patch(&frozen_path, json!({"data": {"k": b64(b"w")}}))
            .await,
        &[(
            "data",
            "Forbidden: field is immutable when `immutable` is set",
        )],
    );
    assert_invalid(
        api.merge_patch(&frozen_path, json!({"immutable": false}))
            .await,
        &[(
            "immutable",
            "Forbidden: field is immutable when `immutable` is set",
        )],
    );
    let (code, body) = api
        .merge_patch(&frozen_path, json!({"metadata": {"labels": {"a": "b"}}}))
        .await;
    assert_eq!(code, 200, "metadata still changes: {body}");

    // Tables: NAME TYPE DATA AGE.
    let (code, table) = api
        .get_accept(
            &secrets(&ns),
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .await;
    assert_eq!(code, 200, "{table}");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(columns, ["Name", "Type", "Data", "Age"]);
    let row = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["cells"][0] == "s1")
        .expect("s1 row");
    assert_eq!(row["cells"][1], "Opaque");
    assert_eq!(row["cells"][2], 3);

    // Discovery: secrets without a short name, serviceaccounts as sa.
    let (code, list) = api.call("GET", "/api/v1", None).await;
    assert_eq!(code, 200);
    let find = |name: &str| {
        list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in discovery: {list}"))
    };
    assert_eq!(find("secrets")["kind"], "Secret");
    assert!(find("secrets")["shortNames"]
        .as_array()
        .is_none_or(|s| s.is_empty()));
    assert_eq!(find("serviceaccounts")["shortNames"], json!(["sa"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_an_existing_service_account() {
    let api = ballast_api(Options {
        service_account_admission: true,
        ..Options::default()
    })
    .await;
    let ns = namespace(&api, "sa-admission").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let accounts = format!("/api/v1/namespaces/{ns}/serviceaccounts");
    for path in [
        format!("{pods}/p1"),
        format!("{pods}/p2"),
        format!("{accounts}/default"),
        format!("{accounts}/robot"),
    ] {
        remove(&api, &path).await;
    }
    // No `default` ServiceAccount (no controller manager here): refused
    // after kube's retries, with kube's message; generateName names it.
    let mut anonymous = common::pod("", json!({}), "");
    anonymous["metadata"] = json!({"generateName": "web-"});
    let (code, status) = api.call("POST", &pods, Some(anonymous)).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        format!("pods \"web-\" is forbidden: error looking up service account {ns}/default: serviceaccount \"default\" not found")
    );
    let robot = {
        let mut p = common::pod("p2", json!({}), "");
        p["spec"]["serviceAccountName"] = json!("robot");
        p
    };
    let (code, status) = api.call("POST", &pods, Some(robot.clone())).await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        format!("pods \"p2\" is forbidden: error looking up service account {ns}/robot: serviceaccount \"robot\" not found")
    );

    for name in ["default", "robot"] {
        let (code, body) = api
            .call("POST", &accounts, Some(json!({"metadata": {"name": name}})))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, made) = api
        .call("POST", &pods, Some(common::pod("p1", json!({}), "")))
        .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["spec"]["serviceAccountName"], "default");
    assert_eq!(made["spec"]["serviceAccount"], "default");
    let (code, made) = api.call("POST", &pods, Some(robot)).await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(made["spec"]["serviceAccountName"], "robot");
    // The Table of ServiceAccounts: NAME SECRETS AGE.
    let (code, table) = api
        .get_accept(&accounts, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    assert_eq!(code, 200, "{table}");
    assert_eq!(table["rows"].as_array().map(Vec::len), Some(2), "{table}");
    assert_eq!(table["columnDefinitions"][1]["name"], "Secrets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_read_only_the_secrets_their_pods_use() {
    let api = common::start_secure(AuthConfig {
        modes: vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
        ..AuthConfig::default()
    })
    .await;
    let ns = namespace(&api.plain, "secrets-node").await;
    let (node_1, node_2) = ("sec-node-1", "sec-node-2");
    for name in ["used", "volume", "unused"] {
        remove(&api.plain, &format!("{}/{name}", secrets(&ns))).await;
        let (code, body) = api
            .plain
            .call(
                "POST",
                &secrets(&ns),
                Some(secret(name, "Opaque", json!({"k": b64(b"v")}))),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    remove(&api.plain, &format!("{pods}/user")).await;
    let mut pod = common::pod("user", json!({}), node_1);
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "used", "key": "k"}}}]);
    pod["spec"]["volumes"] = json!([{"name": "v", "secret": {"secretName": "volume"}}]);
    let (code, body) = api.plain.call("POST", &pods, Some(pod)).await;
    assert_eq!(code, 201, "{body}");

    let kubelet_1 = api.cert_client(&format!("system:node:{node_1}"), &["system:nodes"]);
    let kubelet_2 = api.cert_client(&format!("system:node:{node_2}"), &["system:nodes"]);
    for name in ["used", "volume"] {
        let path = format!("{}/{name}", secrets(&ns));
        let (code, body) = kubelet_1.eventually("GET", &path, None, 200).await;
        assert_eq!(code, 200, "{name}: {body}");
        assert_eq!(body["data"]["k"], b64(b"v"));
    }
    let forbidden = |user: &str, name: &str| {
        format!("secrets \"{name}\" is forbidden: User \"system:node:{user}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\": no relationship found between node '{user}' and this object")
    };
    let (code, body) = kubelet_1
        .call("GET", &format!("{}/unused", secrets(&ns)), None)
        .await;
    assert_eq!(
        (code, body["message"].clone()),
        (403, json!(forbidden(node_1, "unused")))
    );
    let (code, body) = kubelet_2
        .call("GET", &format!("{}/used", secrets(&ns)), None)
        .await;
    assert_eq!(
        (code, body["message"].clone()),
        (403, json!(forbidden(node_2, "used")))
    );
    // Never a list or watch of Secrets.
    let (code, body) = kubelet_1.call("GET", &secrets(&ns), None).await;
    assert_eq!(code, 403, "{body}");
    // The pod gone, the edge is gone.
    let (code, body) = api
        .plain
        .call(
            "DELETE",
            &format!("{pods}/user"),
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = kubelet_1
        .eventually("GET", &format!("{}/used", secrets(&ns)), None, 403)
        .await;
    assert_eq!(code, 403, "{body}");
}

/// The official Python client: a Secret created with stringData and read
/// back, and a validation error.
const PYTHON_CLIENT: &str = r#"
import base64, json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
ns = sys.argv[2]
core = client.CoreV1Api()
made = core.create_namespaced_secret(ns, client.V1Secret(
    metadata=client.V1ObjectMeta(name="py-secret"), type="kubernetes.io/basic-auth",
    string_data={"username": "admin", "password": "s3cr3t"}))
print("created", made.type, sorted(made.data), made.string_data)
got = core.read_namespaced_secret("py-secret", ns)
print("read", base64.b64decode(got.data["password"]).decode())
names = [s.metadata.name for s in core.list_namespaced_secret(ns).items]
print("listed", "py-secret" in names)
try:
    core.create_namespaced_secret(ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name="py-tls"), type="kubernetes.io/tls",
        string_data={"tls.crt": "c"}))
    print("invalid-accepted")
except ApiException as e:
    status = json.loads(e.body)
    print("invalid", e.status, ",".join(c["field"] for c in status["details"]["causes"]))
core.delete_namespaced_secret("py-secret", ns)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_the_python_client_create_and_read_secrets() {
    let api = ballast_api(Options::default()).await;
    let ns = namespace(&api, "secrets-clients").await;
    for name in ["lit", "cert", "reg", "py-secret"] {
        remove(&api, &format!("{}/{name}", secrets(&ns))).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    // A self-signed pair for `create secret tls` (kubectl checks it).
    let pki = ballast_pki::Ca::new("secrets-test-ca").expect("ca");
    let issued = pki
        .issue(&ballast_pki::CertSpec::loopback_server("web", &[]))
        .expect("issue");
    std::fs::write(dir.path().join("tls.crt"), &issued.cert_pem).expect("crt");
    std::fs::write(dir.path().join("tls.key"), &issued.key_pem).expect("key");

    let path = dir.path().to_path_buf();
    let ns2 = ns.clone();
    tokio::task::spawn_blocking(move || {
        if !Path::new(KUBECTL).exists() {
            println!("SKIPPED the kubectl half: {KUBECTL} is not installed");
            return;
        }
        let d = path.as_path();
        // Typed creates send protobuf bodies.
        let (ok, _, stderr) = kubectl(
            d,
            &[
                "-v=8",
                "create",
                "secret",
                "generic",
                "lit",
                "-n",
                &ns2,
                "--from-literal=user=admin",
                "--from-literal=pass=s3cr3t",
            ],
        );
        assert!(ok, "{stderr}");
        assert!(
            stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
            "create secret sent no protobuf body"
        );
        let crt = d.join("tls.crt");
        let key = d.join("tls.key");
        kubectl_ok(
            d,
            &[
                "create",
                "secret",
                "tls",
                "cert",
                "-n",
                &ns2,
                &format!("--cert={}", crt.display()),
                &format!("--key={}", key.display()),
            ],
        );
        kubectl_ok(
            d,
            &[
                "create",
                "secret",
                "docker-registry",
                "reg",
                "-n",
                &ns2,
                "--docker-server=registry.example",
                "--docker-username=u",
                "--docker-password=p",
            ],
        );
        let yaml = kubectl_ok(d, &["get", "secret", "lit", "-n", &ns2, "-o", "yaml"]);
        assert!(
            yaml.contains(&format!("pass: {}", b64(b"s3cr3t"))),
            "{yaml}"
        );
        assert!(yaml.contains("type: Opaque"), "{yaml}");
        let table = kubectl_ok(d, &["get", "secrets", "-n", &ns2]);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["NAME", "TYPE", "DATA", "AGE"], "{table}");
        let row = |name: &str| {
            lines
                .iter()
                .find(|l| l[0] == name)
                .unwrap_or_else(|| panic!("{name} missing:\n{table}"))
                .clone()
        };
        assert_eq!(row("lit")[1..3], ["Opaque", "2"]);
        assert_eq!(row("cert")[1..3], ["kubernetes.io/tls", "2"]);
        assert_eq!(row("reg")[1..3], ["kubernetes.io/dockerconfigjson", "1"]);
        let (ok, _, stderr) = kubectl(
            d,
            &[
                "create",
                "secret",
                "generic",
                "bad",
                "-n",
                &ns2,
                "--from-literal=a/b=x",
            ],
        );
        // kubectl refuses the key itself, before any request.
        assert!(!ok, "{stderr}");
    })
    .await
    .expect("kubectl checks");

    let Some(lines) = python_client(PYTHON_CLIENT, &dir.path().join("kubeconfig"), &ns).await
    else {
        return;
    };
    assert_eq!(
        lines,
        [
            "created kubernetes.io/basic-auth ['password', 'username'] None",
            "read s3cr3t",
            "listed True",
            "invalid 422 data[tls.key]",
        ]
    );
}
