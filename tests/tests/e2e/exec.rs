//! `kubectl exec`, `attach` and `cp` against `ballast up`, end to end with
//! the real `kubectl` (WebSocket `v5.channel.k8s.io` through the apiserver
//! to the kubelet) and the official Python client (`v4.channel.k8s.io`):
//! output and exit codes, standard input, kube's errors, RBAC on
//! `pods/exec`, and — with per-container mount namespaces, as root — a
//! terminal, the ServiceAccount token volume and a program in a volume.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ballast_tests::process::output_within;
use ballast_tests::up::{python, Up};
use serde_json::{json, Value};

/// Creates `pod` and waits until it is Running.
fn run_pod(up: &Up, pod: &Value) {
    up.create(pod);
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    up.eventually(
        &format!("pod {name} Running"),
        Duration::from_secs(60),
        || {
            let p = up.json(&["get", "pod", &name]);
            (p["status"]["phase"] == "Running").then_some(())
        },
    );
}

/// A busybox pod named `name` that sleeps, with `extra` merged into its
/// container.
fn sleeper(name: &str, extra: Value) -> Value {
    let mut c = json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [c], "terminationGracePeriodSeconds": 1}})
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kubectl exec` of `pod` running `script` with the official Python
/// client's `stream` (protocol v4); `tty` as asked. Its output, or `None`
/// without the client's venv.
fn python_exec(up: &Up, pod: &str, script: &str, tty: bool) -> Option<String> {
    const PROGRAM: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
tty = sys.argv[4] == "tty"
out = stream(api.connect_get_namespaced_pod_exec, sys.argv[2], "default",
             command=["sh", "-c", sys.argv[3]], stdin=False, stdout=True,
             stderr=not tty, tty=tty, _request_timeout=30)
sys.stdout.write(out)
"#;
    let Some(py) = python() else {
        eprintln!(
            "skipping the Python client part: no venv at $HOME/.cache/ballast/pyenv \
             (run scripts/setup.sh; CI does)"
        );
        return None;
    };
    let mut cmd = Command::new(py);
    cmd.args(["-c", PROGRAM]).arg(&up.kubeconfig).args([
        pod,
        script,
        if tty { "tty" } else { "pipes" },
    ]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Some(text(&out.stdout))
}

#[test]
fn kubectl_exec_cp_attach_and_who_may_exec() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1"]);
    run_pod(&up, &sleeper("box", json!({})));

    // Output and the exit code: kubectl exits with the command's code.
    let out = up.kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
    let out = up.ok(&["exec", "box", "--", "echo", "plain"]);
    assert_eq!(out, "plain\n");

    // Standard input, piped, to its end.
    let out = up.kubectl_stdin(
        &["exec", "-i", "box", "--", "sh", "-c", "cat; echo end"],
        "line one\nline two\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line one\nline two\nend\n");

    // kube's errors: a container the pod does not have; a program that is
    // not there.
    let out = up.kubectl(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container nope is not valid for pod box"),
        "{}",
        text(&out.stderr)
    );
    let out = up.kubectl(&["exec", "box", "--", "no-such-program"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("executable file not found in $PATH"),
        "{}",
        text(&out.stderr)
    );
    let out = up.kubectl(&["exec", "no-such-pod", "--", "true"]);
    assert!(
        text(&out.stderr).contains("pods \"no-such-pod\" not found"),
        "{}",
        text(&out.stderr)
    );

    // kubectl cp is exec + tar: a file in, and back out.
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("in.txt");
    std::fs::write(&local, "copied through tar\n").unwrap();
    up.ok(&["cp", local.to_str().unwrap(), "box:in.txt"]);
    assert_eq!(
        up.ok(&["exec", "box", "--", "cat", "in.txt"]),
        "copied through tar\n"
    );
    up.ok(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo made in the pod > out.txt",
    ]);
    let back = scratch.path().join("out.txt");
    up.ok(&["cp", "box:out.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "made in the pod\n");

    // RBAC: reading pods is not running commands in them. A GET upgrade
    // must also be allowed to create pods/exec (Kubernetes 1.35's check).
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    up.ok(&[
        "create",
        "role",
        "exec-getter",
        "--verb=get",
        "--resource=pods,pods/exec",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        "--user=reader",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "getter",
        "--role=exec-getter",
        "--user=getter",
    ]);
    for user in ["reader", "getter"] {
        let args = ["--as", user, "exec", "box", "--", "echo", "should-not-run"];
        let out = up_eventually_denied(&up, &args);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "pods \"box\" is forbidden: User \"{user}\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
            )),
            "{stderr}"
        );
        assert!(!text(&out.stdout).contains("should-not-run"));
    }
    // Granted create, the same user may.
    up.ok(&[
        "create",
        "role",
        "exec-creator",
        "--verb=get,create",
        "--resource=pods/exec",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "creator",
        "--role=exec-creator",
        "--user=getter",
    ]);
    up.eventually("getter may exec", Duration::from_secs(20), || {
        let out = up.kubectl(&["--as", "getter", "exec", "box", "--", "echo", "granted"]);
        (out.status.success() && text(&out.stdout) == "granted\n").then_some(())
    });

    // kubectl attach: what the running container writes from now on,
    // until it exits (then kubectl does too).
    let talker = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox",
            "command": ["sh", "-c", "sleep 3; i=0; while [ $i -lt 16 ]; do echo tick-$i; i=$((i+1)); sleep 0.25; done"]}]}});
    run_pod(&up, &talker);
    let mut attach = Command::new("kubectl");
    attach
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args(["attach", "talker"]);
    let out = output_within(attach, Duration::from_secs(60));
    assert!(
        text(&out.stdout).contains("tick-15\n"),
        "attach: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The official Python client (v4): output and stderr.
    if let Some(out) = python_exec(&up, "box", "echo py-$((6*7)); echo err-side >&2", false) {
        assert!(out.contains("py-42"), "{out}");
    }
}

/// kubectl as a user the cluster refuses, retried while RBAC settles on
/// an answer (it must never succeed).
fn up_eventually_denied(up: &Up, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = up.kubectl(args);
        assert!(!out.status.success(), "{args:?} ran: {}", text(&out.stdout));
        if text(&out.stderr).contains("forbidden") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// With per-container mount namespaces (`ballast up --mount-namespaces`,
/// root only): an exec sees the container's own view — its volumes, the
/// ServiceAccount token, its `/tmp` — can run a program kept in a volume,
/// `kubectl cp` reaches a volume, and `-t` gets a terminal it can name.
#[test]
fn kubectl_exec_sees_the_containers_mount_namespace() {
    if !is_root() {
        eprintln!(
            "kubectl_exec_sees_the_containers_mount_namespace: skipped: mount namespaces need root"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "1", "--mount-namespaces"]);
    up.ok(&[
        "create",
        "configmap",
        "tools",
        "--from-literal=hello.sh=#!/bin/sh\necho hello from a volume, $1",
    ]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vbox"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "emptyDir": {}},
                {"name": "tools", "configMap": {"name": "tools", "defaultMode": 0o755}}],
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo mine > /tmp/own && exec sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"},
                    {"name": "tools", "mountPath": "/tools"}]}]}});
    run_pod(&up, &pod);

    // A program in a volume, run by path.
    let out = up.ok(&["exec", "vbox", "--", "/tools/hello.sh", "kubectl"]);
    assert_eq!(out, "hello from a volume, kubectl\n");
    // The container's /tmp, not the host's; the token volume the
    // ServiceAccount admission added.
    assert_eq!(up.ok(&["exec", "vbox", "--", "cat", "/tmp/own"]), "mine\n");
    assert!(!Path::new("/tmp/own").exists());
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        up.ok(&["exec", "vbox", "--", "cat", &format!("{sa}/namespace")]),
        "default"
    );
    let token = up.ok(&["exec", "vbox", "--", "cat", &format!("{sa}/token")]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let ca = up.ok(&["exec", "vbox", "--", "cat", &format!("{sa}/ca.crt")]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    // The token is read-only, as kube mounts it.
    let out = up.kubectl(&[
        "exec",
        "vbox",
        "--",
        "sh",
        "-c",
        &format!("echo x > {sa}/token"),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );

    // kubectl cp into the emptyDir and out again.
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("blob.txt");
    std::fs::write(&local, "into the volume\n").unwrap();
    up.ok(&["cp", local.to_str().unwrap(), "vbox:/data/blob.txt"]);
    assert_eq!(
        up.ok(&["exec", "vbox", "--", "cat", "/data/blob.txt"]),
        "into the volume\n"
    );
    let back = scratch.path().join("back.txt");
    up.ok(&["cp", "vbox:/data/blob.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "into the volume\n");

    // A terminal: kubectl under a pseudo-terminal of its own (`script`),
    // `-it`; the container names its terminal in its own /dev/pts.
    let mut tty = Command::new("script");
    tty.args(["-qec"])
        .arg(format!(
            "kubectl --kubeconfig {} exec -it vbox -- sh -c 'tty; test -t 0 && echo is-a-tty'",
            up.kubeconfig.display()
        ))
        .arg("/dev/null");
    let out = output_within(tty, Duration::from_secs(60));
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
    assert!(shown.contains("/dev/pts/"), "{shown}");
    assert!(shown.contains("is-a-tty"), "{shown}");
    if let Some(out) = python_exec(&up, "vbox", "tty", true) {
        assert!(out.starts_with("/dev/pts/"), "{out:?}");
    }
}
