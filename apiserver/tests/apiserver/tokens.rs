//! Bound service account tokens against a real apiserver over TLS on a
//! real etcd, driven by the real `kubectl` and the official Python
//! client: `kubectl create token`, the token as a bearer credential
//! (`kubectl --token … auth whoami`), every way a token is refused (401),
//! tokens that die with their ServiceAccount or bound Pod, the 10-minute
//! minimum, the OIDC discovery documents and TokenReview.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{start_secure, SecureApi};
use ballast_apiserver::{AuthConfig, AuthorizationMode, ServiceAccountTokens, TokenSettings};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A fresh P-256 key as PKCS#8 DER.
fn p256_key() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap()
        .as_ref()
        .to_vec()
}

fn pem(der: &[u8]) -> String {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    )
}

/// Signs `claims` as an ES256 JWT with the PKCS#8 `key` (what a forger
/// holding some key, or the cluster's own key, would make).
fn sign(key: &[u8], claims: &Value) -> String {
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key, &rng).unwrap();
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = pair.sign(&rng, signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An apiserver with RBAC and service account tokens signed by a key
/// written to `dir`; the key's PKCS#8 DER.
async fn start(dir: &Path) -> (SecureApi, Vec<u8>) {
    let key = p256_key();
    let key_file = dir.join("sa.key");
    std::fs::write(&key_file, pem(&key)).unwrap();
    let tokens = ServiceAccountTokens::load(&TokenSettings {
        issuers: vec![ISSUER.into()],
        signing_key_file: Some(key_file),
        ..TokenSettings::default()
    })
    .expect("token settings");
    let api = start_secure(AuthConfig {
        modes: vec![AuthorizationMode::Rbac],
        service_accounts: Some(std::sync::Arc::new(tokens)),
        ..AuthConfig::default()
    })
    .await;
    (api, key)
}

/// A kubeconfig with the cluster's CA and no credentials of its own (the
/// test passes `--token`).
fn tokenless_kubeconfig(api: &SecureApi, dir: &Path) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: ballast\n    user: u\ncurrent-context: c\n",
        api.tls_addr,
        STANDARD.encode(api.pki.ca.cert_pem()),
    );
    let path = dir.join("tokenless.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// `kubectl --kubeconfig <kubeconfig> args…`: (success, stdout, stderr).
fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    println!("$ kubectl {}", args.join(" "));
    let home = kubeconfig.parent().unwrap();
    let out = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=20s")
        .args(args)
        .env("HOME", home)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(kubeconfig, args);
    assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
    out
}

/// `kubectl auth whoami -o json` with `token`.
fn whoami(kubeconfig: &Path, token: &str) -> Result<Value, String> {
    let (ok, out, err) = kubectl(
        kubeconfig,
        &["--token", token, "auth", "whoami", "-o", "json"],
    );
    if !ok {
        return Err(err);
    }
    Ok(serde_json::from_str(&out).expect("whoami JSON"))
}

/// Polls until `whoami` with `token` is refused as unauthorized (the
/// authenticator reads the watch caches, which follow deletes shortly).
fn eventually_unauthorized(kubeconfig: &Path, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match whoami(kubeconfig, token) {
            Err(e) if e.contains("Unauthorized") => return,
            other => assert!(
                Instant::now() < deadline,
                "the token still works: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_token_authenticates_as_the_service_account_until_it_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = start(dir.path()).await;
    let admin = api.kubeconfig("test-admin", &["system:masters"]);
    let tokenless = tokenless_kubeconfig(&api, dir.path());
    let ns = format!("tok-{}", std::process::id());
    let out = blocking({
        let (admin, tokenless, ns) = (admin.clone(), tokenless.clone(), ns.clone());
        move || {
            kubectl_ok(&admin, &["create", "namespace", &ns]);
            kubectl_ok(&admin, &["-n", &ns, "create", "serviceaccount", "default"]);
            let token = kubectl_ok(
                &admin,
                &["-n", &ns, "create", "token", "default", "--duration=1h"],
            );
            let token = token.trim().to_string();
            let claims = claims_of(&token);
            assert_eq!(claims["iss"], ISSUER);
            assert_eq!(claims["aud"], json!([ISSUER]));
            assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:default"));
            assert_eq!(
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
                3600
            );
            assert_eq!(claims["kubernetes.io"]["namespace"], ns.as_str());
            assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "default");

            let me = whoami(&tokenless, &token).expect("whoami with the token");
            let info = &me["status"]["userInfo"];
            assert_eq!(
                info["username"],
                format!("system:serviceaccount:{ns}:default")
            );
            assert_eq!(
                info["groups"],
                json!([
                    "system:serviceaccounts",
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated"
                ])
            );
            assert_eq!(
                info["uid"],
                claims["kubernetes.io"]["serviceaccount"]["uid"]
            );
            assert_eq!(
                info["extra"]["authentication.kubernetes.io/credential-id"],
                json!([format!("JTI={}", claims["jti"].as_str().unwrap())])
            );
            // RBAC applies to it: nothing grants it pods.
            let (ok, _, err) = kubectl(&tokenless, &["--token", &token, "-n", &ns, "get", "pods"]);
            assert!(!ok);
            assert!(
                err.contains(&format!(
                    "User \"system:serviceaccount:{ns}:default\" cannot list resource \"pods\""
                )),
                "{err}"
            );

            // Another audience: not for this API.
            let other = kubectl_ok(
                &admin,
                &["-n", &ns, "create", "token", "default", "--audience=x"],
            );
            let other = other.trim().to_string();
            assert_eq!(claims_of(&other)["aud"], json!(["x"]));
            let err = whoami(&tokenless, &other).unwrap_err();
            assert!(err.contains("Unauthorized"), "{err}");

            // Under ten minutes: kube's 422.
            let (ok, _, err) = kubectl(
                &admin,
                &["-n", &ns, "create", "token", "default", "--duration=5m"],
            );
            assert!(!ok);
            assert!(
                err.contains("may not specify a duration less than 10 minutes"),
                "{err}"
            );
            // A ServiceAccount that does not exist.
            let (ok, _, err) = kubectl(&admin, &["-n", &ns, "create", "token", "nobody"]);
            assert!(!ok);
            assert!(
                err.contains("serviceaccounts \"nobody\" not found"),
                "{err}"
            );

            // With the ServiceAccount gone the token is dead.
            kubectl_ok(&admin, &["-n", &ns, "delete", "serviceaccount", "default"]);
            eventually_unauthorized(&tokenless, &token);
            // A new one of the same name has another uid: still dead.
            kubectl_ok(&admin, &["-n", &ns, "create", "serviceaccount", "default"]);
            std::thread::sleep(Duration::from_millis(500));
            let err = whoami(&tokenless, &token).unwrap_err();
            assert!(err.contains("Unauthorized"), "{err}");
            other
        }
    })
    .await;

    // The raw answers: 422 with kube's message, 401 with kube's body.
    let admin_client = api.cert_client("test-admin", &["system:masters"]);
    let (code, body) = admin_client
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/default/token"),
            Some(
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 599}}),
            ),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    let (code, body) = api
        .token_client(&out)
        .call("GET", "/api/v1/pods", None)
        .await;
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["message"], "Unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_foreign_tokens_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let (api, key) = start(dir.path()).await;
    let admin = api.cert_client("test-admin", &["system:masters"]);
    let ns = format!("forged-{}", std::process::id());
    let (code, _) = admin
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": ns}})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, sa) = admin
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            Some(json!({"metadata": {"name": "robot"}})),
        )
        .await;
    assert_eq!(code, 201, "{sa}");
    let uid = sa["metadata"]["uid"].as_str().unwrap().to_string();
    let claims = |iss: &str, aud: &str, iat: i64, exp: i64| {
        json!({"iss": iss, "aud": [aud], "iat": iat, "nbf": iat, "exp": exp,
            "sub": format!("system:serviceaccount:{ns}:robot"),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "robot", "uid": uid}}})
    };
    let t = now();
    let me = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    // Made with the cluster's key, in time: accepted (the control case).
    let good = sign(&key, &claims(ISSUER, ISSUER, t, t + 600));
    // (once the ServiceAccounts cache has the new account)
    let (code, body) = api
        .token_client(&good)
        .eventually("POST", me, Some(review.clone()), 201)
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{ns}:robot")
    );
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let mut c = claims_of(&good);
        c["kubernetes.io"]["serviceaccount"]["name"] = json!("default");
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        parts.join(".")
    };
    let refused = [
        (
            "expired beyond the leeway",
            sign(&key, &claims(ISSUER, ISSUER, t - 1200, t - 61)),
        ),
        (
            "not yet valid",
            sign(&key, &claims(ISSUER, ISSUER, t + 600, t + 1200)),
        ),
        (
            "another audience",
            sign(&key, &claims(ISSUER, "https://elsewhere", t, t + 600)),
        ),
        (
            "another issuer",
            sign(&key, &claims("https://evil.example", ISSUER, t, t + 600)),
        ),
        (
            "another key",
            sign(&p256_key(), &claims(ISSUER, ISSUER, t, t + 600)),
        ),
        ("tampered claims", tampered),
        ("no JWT at all", "garbage".to_string()),
        ("three parts of junk", "a.b.c".to_string()),
    ];
    for (why, token) in &refused {
        let (code, body) = api
            .token_client(token)
            .call("POST", me, Some(review.clone()))
            .await;
        assert_eq!(code, 401, "{why}: {body}");
        assert_eq!(body["message"], "Unauthorized", "{why}");
    }
    // Expired, but within go-jose's minute of leeway: still accepted.
    let late = sign(&key, &claims(ISSUER, ISSUER, t - 1200, t - 30));
    let (code, _) = api
        .token_client(&late)
        .call("POST", me, Some(review.clone()))
        .await;
    assert_eq!(code, 201);

    // TokenReview says why.
    let token_review = |token: &str, audiences: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}})
    };
    let reviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let (code, body) = admin
        .call(
            "POST",
            reviews,
            Some(token_review(&refused[0].1, json!([]))),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"]["authenticated"], Value::Null);
    assert!(
        body["status"]["error"]
            .as_str()
            .unwrap()
            .contains("service account token has expired"),
        "{body}"
    );
    // The other audience is fine when the review asks for it.
    let (_, body) = admin
        .call(
            "POST",
            reviews,
            Some(token_review(&refused[2].1, json!(["https://elsewhere"]))),
        )
        .await;
    assert_eq!(body["status"]["authenticated"], true, "{body}");
    assert_eq!(body["status"]["audiences"], json!(["https://elsewhere"]));
    let (code, body) = admin
        .call("POST", reviews, Some(token_review("", json!([]))))
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "token is required for TokenReview in authentication"
    );
    // A token may not review tokens without system:auth-delegator.
    let (code, _) = api
        .token_client(&good)
        .call("POST", reviews, Some(token_review(&good, json!([]))))
        .await;
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_bound_token_dies_with_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = start(dir.path()).await;
    let admin = api.cert_client("test-admin", &["system:masters"]);
    let ns = format!("bound-{}", std::process::id());
    admin
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": ns}})),
        )
        .await;
    for sa in ["robot", "other"] {
        let (code, _) = admin
            .call(
                "POST",
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                Some(json!({"metadata": {"name": sa}})),
            )
            .await;
        assert_eq!(code, 201);
    }
    let (code, pod) = admin
        .call(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(json!({"metadata": {"name": "web"},
                "spec": {"serviceAccountName": "robot",
                    "containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await;
    assert_eq!(code, 201, "{pod}");
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let request = |sa: &str, kind: &str, name: &str, uid: &str| {
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 7200,
                "boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name, "uid": uid}}});
        (path, body)
    };
    // Binding is checked as kube checks it.
    let (path, body) = request("other", "Pod", "web", "");
    let (code, body) = admin.call("POST", &path, Some(body)).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["message"],
        "cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."
    );
    let (path, body) = request("robot", "Pod", "web", "not-the-uid");
    let (code, _) = admin.call("POST", &path, Some(body)).await;
    assert_eq!(code, 409);
    let (path, body) = request("robot", "ConfigMap", "web", "");
    let (code, body) = admin.call("POST", &path, Some(body)).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "cannot bind token to object of type /v1, Kind=ConfigMap"
    );
    let (path, body) = request("robot", "Pod", "absent", "");
    let (code, _) = admin.call("POST", &path, Some(body)).await;
    assert_eq!(code, 404);

    let (path, body) = request("robot", "Pod", "web", &pod_uid);
    let (code, answer) = admin.call("POST", &path, Some(body)).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["spec"]["expirationSeconds"], 7200);
    assert_eq!(answer["spec"]["audiences"], json!([ISSUER]));
    assert!(answer["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        claims_of(&token)["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": pod_uid})
    );
    let me = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let (code, body) = api
        .token_client(&token)
        .call("POST", me, Some(review.clone()))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    assert_eq!(
        body["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    // The OIDC documents, readable by service accounts.
    let (code, doc) = api
        .token_client(&token)
        .call("GET", "/.well-known/openid-configuration", None)
        .await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(
        doc["jwks_uri"],
        "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(doc["response_types_supported"], json!(["id_token"]));
    let (code, jwks) = api
        .token_client(&token)
        .call("GET", "/openid/v1/jwks", None)
        .await;
    assert_eq!(code, 200, "{jwks}");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], header["kid"]);
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    // Not for the anonymous.
    let (code, _) = api
        .anonymous_client()
        .call("GET", "/openid/v1/jwks", None)
        .await;
    assert_eq!(code, 403);

    // The pod goes, the token with it.
    let (code, _) = admin
        .call(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/pods/web?gracePeriodSeconds=0"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let client = api.token_client(&token);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, _) = client.call("POST", me, Some(review.clone())).await;
        if code == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the pod-bound token still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The official Python client's `AuthenticationV1Api.create_token_review`.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_reviews_a_token() {
    let Some(python) = ballast_tests::up::python() else {
        println!("skipped: no Python with the kubernetes client (scripts/setup.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = start(dir.path()).await;
    let admin = api.kubeconfig("test-admin", &["system:masters"]);
    let ns = format!("py-{}", std::process::id());
    let script = r#"
import json, sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
api = client.AuthenticationV1Api()
for token in (sys.argv[2], "garbage"):
    review = api.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
    print(json.dumps(api.api_client.sanitize_for_serialization(review.status)))
"#;
    let lines = blocking(move || {
        kubectl_ok(&admin, &["create", "namespace", &ns]);
        kubectl_ok(&admin, &["-n", &ns, "create", "serviceaccount", "builder"]);
        let token = kubectl_ok(&admin, &["-n", &ns, "create", "token", "builder"]);
        let out = Command::new(python)
            .arg("-c")
            .arg(script)
            .arg(&admin)
            .arg(token.trim())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        (ns, lines)
    })
    .await;
    let (ns, lines) = lines;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["authenticated"], true, "{}", lines[0]);
    assert_eq!(
        lines[0]["user"]["username"],
        format!("system:serviceaccount:{ns}:builder")
    );
    assert_eq!(lines[0]["audiences"], json!([ISSUER]));
    assert!(lines[1]["authenticated"].is_null(), "{}", lines[1]);
}
