//! What confines a process-runtime container: the user it runs as
//! (`--container-uid/--container-gid`, `runAsUser`/`runAsGroup`,
//! `runAsNonRoot`), and what it cannot reach (the kubelet's files, other
//! pods' logs), and container paths that would escape its sandbox.

use crate::common;

use crate::common::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn own_ids() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// The message of container `name`'s `CreateContainerConfigError`: as
/// kubelet reports it, the container is waiting with that reason (nothing
/// was created, so it never shows as terminated).
fn config_error(pod: &Pod, name: &str) -> Option<String> {
    let cs = cstatus(pod, name)?;
    let w = cs.state.as_ref()?.waiting.as_ref()?;
    (w.reason.as_deref() == Some("CreateContainerConfigError"))
        .then(|| w.message.clone().unwrap_or_default())
}

/// Waits for container `c` of pod `name` to wait in
/// `CreateContainerConfigError` and returns its message, after checking
/// the rest of what kubelet shows: the pod Pending, no restart counted,
/// never a terminated state, and a `Failed` event `Error: <message>`.
async fn wait_config_error(env: &Env, name: &str) -> String {
    let pod = env
        .wait_pod(name, "CreateContainerConfigError", |p| {
            config_error(p, "c").is_some()
        })
        .await;
    let msg = config_error(&pod, "c").unwrap();
    assert_config_error_status(&pod);
    env.wait_event(name, "Failed", &format!("Error: {msg}"))
        .await;
    // Tried again (kubelet's pod worker back-off), still the same answer.
    poll("a retried CreateContainerConfigError", || async {
        env.event_count(name, "Failed").await >= 2
    })
    .await;
    let pod = env.pods().get(name).await.unwrap();
    assert_eq!(config_error(&pod, "c").as_deref(), Some(msg.as_str()));
    assert_config_error_status(&pod);
    msg
}

fn assert_config_error_status(pod: &Pod) {
    let cs = cstatus(pod, "c").unwrap();
    assert_eq!(phase(pod), "Pending", "{:?}", pod.status);
    assert_eq!(cs.restart_count, 0, "{cs:?}");
    assert!(cs.container_id.is_none(), "{cs:?}");
    assert!(!cs.ready, "{cs:?}");
    let last = cs.last_state.clone().unwrap_or_default();
    assert!(last.terminated.is_none(), "{cs:?}");
}

/// Waits for a `restartPolicy: Never` pod to succeed and returns its log.
async fn output_of(env: &Env, name: &str) -> String {
    env.wait_pod(name, "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let ns = env.ns.clone();
    let (code, body) = env
        .kubelet_get(&format!("/containerLogs/{ns}/{name}/c"))
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_as_the_configured_and_requested_users() {
    let mut env = env("runas").await;
    env.start_default().await;
    let id = json!(["sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)"]);
    env.create_pod(json!({
        "metadata": {"name": "default"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": id}]}
    }))
    .await;
    let out = output_of(&env, "default").await;
    if is_root() {
        assert!(out.contains("uid=65534 gid=65534 groups=65534"), "{out}");
    } else {
        let (u, g) = own_ids();
        assert!(out.contains(&format!("uid={u} gid={g}")), "{out}");
    }
    if !is_root() {
        // A kubelet that is not root cannot switch: a clear config error.
        env.create_pod(json!({
            "metadata": {"name": "other"},
            "spec": {"securityContext": {"runAsUser": own_ids().0 + 1},
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"]}]}
        }))
        .await;
        let msg = wait_config_error(&env, "other").await;
        assert!(msg.contains("cannot run a container as runAsUser"), "{msg}");
        return;
    }
    // Pod level, with the container's own runAsUser winning.
    env.create_pod(json!({
        "metadata": {"name": "chosen"},
        "spec": {"restartPolicy": "Never",
                 "securityContext": {"runAsUser": 1111, "runAsGroup": 2222},
                 "containers": [{"name": "c", "image": "busybox", "command": id,
                                 "securityContext": {"runAsUser": 3333}}]}
    }))
    .await;
    let out = output_of(&env, "chosen").await;
    assert!(out.contains("uid=3333 gid=2222 groups=2222"), "{out}");
    // The kubelet's flags choose the default user.
    let mut env2 = common::env("runas-flag").await;
    let mut config = env2.config();
    config.container_user = ballast_kubelet::runtime::confine::RunAs {
        uid: 4444,
        gid: 5555,
    };
    env2.start(config).await;
    env2.create_pod(json!({
        "metadata": {"name": "flagged"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": id}]}
    }))
    .await;
    let out = output_of(&env2, "flagged").await;
    assert!(out.contains("uid=4444 gid=5555"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_non_root_is_create_container_config_error() {
    let mut env = env("nonroot").await;
    let mut config = env.config();
    // An "image" whose user is root: the default user is uid 0.
    config.container_user = ballast_kubelet::runtime::confine::RunAs { uid: 0, gid: 0 };
    env.start(config).await;
    env.create_pod(json!({
        "metadata": {"name": "explicit"},
        "spec": {"securityContext": {"runAsNonRoot": true},
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"],
                                 "securityContext": {"runAsUser": 0}}]}
    }))
    .await;
    let msg = wait_config_error(&env, "explicit").await;
    assert!(
        msg.starts_with("container's runAsUser breaks non-root policy (pod: \"explicit_"),
        "{msg}"
    );
    if is_root() {
        env.create_pod(json!({
            "metadata": {"name": "image-root"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"],
                                     "securityContext": {"runAsNonRoot": true}}]}
        }))
        .await;
        let msg = wait_config_error(&env, "image-root").await;
        assert!(
            msg.starts_with("container has runAsNonRoot and image will run as root"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_cannot_read_the_kubelets_files_or_other_pods_logs() {
    let mut env = env("private").await;
    env.start_default().await;
    let secret = env.create_pod(json!({
        "metadata": {"name": "secret"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo s3cr3t-marker"]}]}
    }))
    .await;
    output_of(&env, "secret").await;
    let root = root_path(&env);
    let uid = secret.metadata.uid.clone().unwrap();
    let log = root.join(format!("pods/{uid}/containers/c/0.log"));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("s3cr3t-marker"));
    let script = format!(
        "cat {log} || echo log-denied; cat {pj} || echo podjson-denied; ls {root} || echo root-denied; \
         touch $HOME/x 2>/dev/null && echo home-by-path; touch ./mine && echo sandbox-writable; \
         touch ../shared && echo pod-dir-writable",
        log = log.display(),
        pj = root.join(format!("pods/{uid}/pod.json")).display(),
        root = root.display(),
    );
    env.create_pod(json!({
        "metadata": {"name": "snoop"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}]}
    }))
    .await;
    let out = output_of(&env, "snoop").await;
    assert!(out.contains("sandbox-writable"), "{out}");
    assert!(out.contains("pod-dir-writable"), "{out}");
    if is_root() {
        assert!(!out.contains("s3cr3t-marker"), "{out}");
        assert!(out.contains("log-denied"), "{out}");
        assert!(out.contains("podjson-denied"), "{out}");
        assert!(out.contains("root-denied"), "{out}");
        assert!(out.contains("Permission denied"), "{out}");
    }
    use std::os::unix::fs::PermissionsExt;
    for dir in [
        root.clone(),
        root.join("pods"),
        root.join(format!("pods/{uid}")),
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_paths_cannot_escape_the_sandbox() {
    let mut env = env("escape").await;
    env.start_default().await;
    let outside = env.shared.path().join("escaped");
    env.create_pod(json!({
        "metadata": {"name": "wd"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"],
                                 "workingDir": format!("/../../../../..{}", outside.display())}]}
    }))
    .await;
    let msg = wait_config_error(&env, "wd").await;
    assert!(
        msg.contains("workingDir") && msg.contains("must not contain '..'"),
        "{msg}"
    );
    assert!(!outside.exists());
    env.create_pod(json!({
        "metadata": {"name": "tm"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"],
                                 "terminationMessagePath": "/dev/../../../etc/shadow"}]}
    }))
    .await;
    let msg = wait_config_error(&env, "tm").await;
    assert!(msg.contains("terminationMessagePath"), "{msg}");
    // An absolute workingDir is beneath the sandbox: created there, owned
    // by the container's user.
    env.create_pod(json!({
        "metadata": {"name": "inside"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "workingDir": "/work/dir",
                                 "command": ["sh", "-c", "pwd; touch f && echo wrote"]}]}
    }))
    .await;
    let out = output_of(&env, "inside").await;
    assert!(out.contains("/sandbox/c/work/dir"), "{out}");
    assert!(out.contains("wrote"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_map_key_waits_until_it_exists() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let mut env = env("cmref").await;
    env.start_default().await;
    let ns = env.ns.clone();
    env.create_pod(json!({
        "metadata": {"name": "cm"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox",
                                 "command": ["sh", "-c", "echo greeting=$GREETING opt=${OPT-unset}"],
                                 "env": [
                                     {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                                     {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": true}}}
                                 ]}]}
    }))
    .await;
    // No ConfigMap: kubelet's ConfigMap manager's NotFound.
    let msg = wait_config_error(&env, "cm").await;
    assert_eq!(msg, "configmap \"settings\" not found");
    // The ConfigMap without the key.
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"}, "data": {"other": "x"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let want = format!("couldn't find key greeting in ConfigMap {ns}/settings");
    let pod = env
        .wait_pod("cm", "the missing key", |p| {
            config_error(p, "c").as_deref() == Some(want.as_str())
        })
        .await;
    assert_config_error_status(&pod);
    // Fixing the cause lets the container start, as its first instance.
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"greeting": "hello"}})),
    )
    .await
    .unwrap();
    let out = output_of(&env, "cm").await;
    assert!(out.contains("greeting=hello opt=unset"), "{out}");
    let pod = env.pods().get("cm").await.unwrap();
    let cs = cstatus(&pod, "c").unwrap();
    assert_eq!(cs.restart_count, 0, "{cs:?}");
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_name_that_is_not_a_name_is_never_requested() {
    let mut env = env("cmname").await;
    env.start_default().await;
    env.create_pod(json!({
        "metadata": {"name": "dots"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "100"],
                                 "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "../../pods/x", "key": "k"}}}]}]}
    }))
    .await;
    let msg = wait_config_error(&env, "dots").await;
    assert_eq!(
        msg,
        "configMap name \"../../pods/x\" is not a DNS-1123 subdomain"
    );
}
