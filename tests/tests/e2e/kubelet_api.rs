//! The kubelet API under `ballast up`, end to end with the real `kubectl`
//! and `curl`: in secure mode the kubelet serves HTTPS with a certificate
//! from the cluster CA, refuses requests without a client certificate
//! (401), asks the apiserver about the others (SubjectAccessReview on
//! `nodes/proxy`, 403 with the kubelet's text when denied), and the
//! apiserver reaches it with its kubelet client certificate, so `kubectl
//! logs` works; `--insecure` keeps plain HTTP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ballast_tests::up::Up;
use serde_json::{json, Value};

/// Starts a pod on node-1 that prints `line` and stays up; waits until
/// its log has the line (through `kubectl logs`, so through the
/// apiserver's connection to the kubelet).
fn pod_logging(up: &Up, name: &str, line: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", format!("echo {line}; exec sleep 3600")]}]}});
    up.create(&pod);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = up.kubectl(&["logs", name]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl logs {name} never showed {line:?}; last: {} {}\npod: {}\nkubelet log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&up.kubectl(&["get", "pod", name, "-o", "json"]).stdout),
            up.log_tail("kubelet-node-1", 30),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The kubelet API's port of node-1, from its Node.
fn kubelet_port(up: &Up) -> u16 {
    let node: Value =
        serde_json::from_str(&up.ok(&["get", "node", "node-1", "-o", "json"])).expect("node JSON");
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("kubelet port in the Node");
    u16::try_from(port).unwrap()
}

/// `curl` of `url` with `args`: (HTTP status, body), or curl's failure.
fn curl(url: &str, args: &[&str]) -> Result<(u16, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    if !out.status.success() {
        return Err(format!(
            "curl exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    Ok((code.trim().parse().expect("status code"), body.to_string()))
}

/// Writes a certificate for `user` in `groups` from the cluster CA of
/// `data_dir` (what a user with a CA-signed certificate but no RBAC
/// rights holds); returns curl's `--cert`/`--key` arguments.
fn user_cert(data_dir: &Path, out: &Path, user: &str, groups: &[&str]) -> [String; 4] {
    let ca = ballast_pki::Ca::load_or_create(&data_dir.join("pki"), "ballast-ca").expect("CA");
    let issued = ca
        .issue(&ballast_pki::CertSpec::client(user, groups))
        .expect("issue");
    let name = user.replace(':', "-");
    let (cert, key) = issued.write(out, &name).expect("write");
    [
        "--cert".into(),
        cert.to_string_lossy().into_owned(),
        "--key".into(),
        key.to_string_lossy().into_owned(),
    ]
}

#[test]
fn secure_up_kubelet_api_needs_a_certificate_and_rbac_and_kubectl_logs_works() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    let scratch = tempfile::tempdir().unwrap();

    // kubectl logs: the apiserver → kubelet hop over TLS with its client
    // certificate.
    pod_logging(&up, "talker", "hello-from-talker");
    let port = kubelet_port(&up);
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let logs = url("/containerLogs/default/talker/main");
    let pki = dir.path().join("pki");
    let ca = pki.join("ca.crt");
    let ca = ca.to_str().unwrap();

    // The serving certificate is the cluster CA's, for 127.0.0.1 (curl
    // verifies it); no client certificate: 401.
    assert_eq!(
        curl(&logs, &["--cacert", ca]).unwrap(),
        (401, "Unauthorized".to_string())
    );
    assert_eq!(curl(&url("/healthz"), &["--cacert", ca]).unwrap().0, 401);
    // A bearer token is no credential here.
    assert_eq!(
        curl(
            &logs,
            &["--cacert", ca, "-H", "Authorization: Bearer anything"]
        )
        .unwrap()
        .0,
        401
    );

    // A certificate from the cluster CA for a user without RBAC rights on
    // nodes/proxy: 403, the kubelet's text.
    let nobody = user_cert(dir.path(), scratch.path(), "ballast-test-nobody", &[]);
    let mut args = vec!["--cacert", ca];
    args.extend(nobody.iter().map(String::as_str));
    assert_eq!(
        curl(&logs, &args).unwrap(),
        (
            403,
            "Forbidden (user=ballast-test-nobody, verb=get, resource=nodes, subresource(s)=[proxy])"
                .to_string()
        )
    );
    // Another node's kubelet may not read this node's logs either.
    let other = user_cert(
        dir.path(),
        scratch.path(),
        "system:node:node-2",
        &["system:nodes"],
    );
    let mut args = vec!["--cacert", ca];
    args.extend(other.iter().map(String::as_str));
    let (code, body) = curl(&logs, &args).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("user=system:node:node-2"), "{body}");

    // The apiserver's kubelet client certificate: the logs.
    let client_cert = pki.join("apiserver-kubelet-client.crt");
    let client_key = pki.join("apiserver-kubelet-client.key");
    let args = [
        "--cacert",
        ca,
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ];
    let (code, body) = curl(&logs, &args).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello-from-talker"), "{body}");
    assert_eq!(
        curl(&url("/healthz"), &args).unwrap(),
        (200, "ok".to_string())
    );

    // Plain HTTP to the kubelet port gets nothing.
    let plain = format!("http://127.0.0.1:{port}/containerLogs/default/talker/main");
    match curl(&plain, &[]) {
        Err(_) => {}
        Ok((code, body)) => {
            assert_ne!(code, 200, "plain HTTP served: {body}");
            assert!(!body.contains("hello-from-talker"), "{body}");
        }
    }

    // And through the apiserver again, after all that.
    let out = up.ok(&["logs", "talker"]);
    assert!(out.contains("hello-from-talker"), "{out}");
}

#[test]
fn insecure_up_keeps_the_kubelet_api_on_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1", "--insecure"]);
    pod_logging(&up, "plain", "hello-in-plain");
    let port = kubelet_port(&up);
    let (code, body) = curl(
        &format!("http://127.0.0.1:{port}/containerLogs/default/plain/main"),
        &[],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello-in-plain"), "{body}");
}

/// With `--authentication-token-webhook` (as `ballast up` runs kubelets),
/// a ServiceAccount token is a credential on the kubelet API: the kubelet
/// asks the apiserver (TokenReview) who it is, then whether it may
/// (SubjectAccessReview). Bound to `system:kubelet-api-admin` it reads
/// logs; another ServiceAccount gets the kubelet's 403; garbage is 401.
#[test]
fn secure_up_kubelet_api_takes_service_account_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    pod_logging(&up, "chatty", "hello-from-chatty");
    for sa in ["log-reader", "bystander"] {
        up.ok(&["create", "serviceaccount", sa]);
    }
    up.ok(&[
        "create",
        "clusterrolebinding",
        "log-reader-kubelet-api",
        "--clusterrole=system:kubelet-api-admin",
        "--serviceaccount=default:log-reader",
    ]);
    let reader = up.ok(&["create", "token", "log-reader"]).trim().to_string();
    let bystander = up.ok(&["create", "token", "bystander"]).trim().to_string();
    let port = kubelet_port(&up);
    let logs = format!("https://127.0.0.1:{port}/containerLogs/default/chatty/main");
    let ca = dir.path().join("pki").join("ca.crt");
    let ca = ca.to_str().unwrap();
    let bearer = |token: &str| {
        curl(
            &logs,
            &[
                "--cacert",
                ca,
                "-H",
                &format!("Authorization: Bearer {token}"),
            ],
        )
        .unwrap()
    };

    // RBAC follows the binding through the apiserver's caches.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = bearer(&reader);
        if code == 200 || Instant::now() >= deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello-from-chatty"), "{body}");

    assert_eq!(
        bearer(&bystander),
        (
            403,
            "Forbidden (user=system:serviceaccount:default:bystander, verb=get, resource=nodes, subresource(s)=[proxy])"
                .to_string()
        )
    );
    assert_eq!(bearer("not-a-token"), (401, "Unauthorized".to_string()));
}
