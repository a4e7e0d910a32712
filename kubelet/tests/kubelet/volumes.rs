//! Pod volumes on the process runtime with per-container mount namespaces
//! (`mount_namespaces = true`, a root kubelet): an emptyDir shared by an
//! init container and the app, ConfigMap (items, modes), Secret and
//! downward API volumes, a ConfigMap update and a label or annotation
//! patch reaching the mounted files,
//! `readOnly`, `subPath`, programs and exec probes inside a volume, and a
//! container that swaps its subPath for a link to `/` never getting the
//! host's root mounted.
//!
//! Each container reports what it sees on its log, read back through the
//! kubelet's `containerLogs`. Without root these tests say why and pass.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Whether the tests can run (mount namespaces need root); says why not.
fn can_mount(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("{test}: skipped: mount namespaces need root");
    }
    root
}

/// Starts a kubelet whose containers get mount namespaces.
async fn start_mounting(env: &mut Env) {
    let mut config = env.config();
    config.mount_namespaces = true;
    env.start(config).await;
}

/// The log of container `c` of pod `pod` (empty when there is none yet).
async fn log_of(env: &Env, pod: &str, c: &str) -> String {
    let ns = env.ns.clone();
    let (code, body) = env
        .kubelet_get(&format!("/containerLogs/{ns}/{pod}/{c}"))
        .await;
    if code == 200 {
        body
    } else {
        String::new()
    }
}

/// Polls until the log of `c` in `pod` holds every line of `want`; the log.
async fn wait_log_lines(env: &Env, pod: &str, c: &str, want: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let log = log_of(env, pod, c).await;
        if want.iter().all(|w| log.lines().any(|l| l == *w)) {
            return log;
        }
        if tokio::time::Instant::now() > deadline {
            let pod = env.pods().get(pod).await.ok().and_then(|p| p.status);
            panic!(
                "the log of {c} never had all of {want:?}; it is:\n{log}\npod status: {}",
                serde_json::to_string_pretty(&pod).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host directory of volume `volume` of the pod.
fn volume_on_host(env: &Env, pod: &Pod, volume: &str) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().expect("uid");
    env.root
        .path()
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(volume)
}

const SCRIPT: &str = r#"#!/bin/sh
echo script-ran
echo "init=$(cat /work/from-init)"
echo "item=$(cat /cfg/dir/a.txt) mode=$(stat -L -c %a /cfg/dir/a.txt)"
test -e /cfg/b && echo "unlisted-key-present" || echo "unlisted-key-absent"
echo "script-mode=$(stat -L -c %a /scripts/run.sh)"
echo "secret=$(cat /secret/token) mode=$(stat -L -c %a /secret/token)"
echo "labels=$(tr '\n' ' ' < /podinfo/labels)"
echo "sub=$(cat /sub/hello)"
refused() { (echo x > "$1") 2>&1 | grep -q 'Read-only file system' && echo "$1 read-only"; }
refused /cfg/new; refused /ro/x; refused /etc/ballast-test; refused /secret/token
echo app > /work/from-app && echo work-writable
test -e /ro/from-app && echo ro-sees-app-file
test -e /etc/passwd && echo host-etc-visible
while true; do echo "b=$(cat /all/b)"; sleep 0.5; done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_shared_projected_read_only_and_updated() {
    if !can_mount("volumes_are_shared_projected_read_only_and_updated") {
        return;
    }
    let mut env = env("vols").await;
    start_mounting(&mut env).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg"},
        "data": {"a": "alpha", "b": "beta", "run.sh": SCRIPT,
                 "ready.sh": "#!/bin/sh\ntest -f /work/from-app\n"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.expect("cm");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sec"},
        "stringData": {"token": "s3cret"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    env.create_pod(json!({
        "metadata": {"name": "vol", "labels": {"app": "vol", "tier": "test"}},
        "spec": {
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0o440,
                    "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o604}]}},
                {"name": "scripts", "configMap": {"name": "cfg", "defaultMode": 0o755}},
                {"name": "all", "configMap": {"name": "cfg"}},
                {"name": "secret", "secret": {"secretName": "sec"}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ],
            "initContainers": [{
                "name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo from-init > /work/from-init && mkdir -p /work/nested/dir && echo hello-sub > /work/nested/dir/hello"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            }],
            "containers": [{
                "name": "app", "image": "busybox",
                "command": ["/scripts/run.sh"],
                // As root, so only read-only mounts stop its writes.
                "securityContext": {"runAsUser": 0},
                "volumeMounts": [
                    {"name": "work", "mountPath": "/work"},
                    {"name": "work", "mountPath": "/ro", "readOnly": true},
                    {"name": "work", "mountPath": "/sub", "subPath": "nested/dir"},
                    {"name": "cfg", "mountPath": "/cfg"},
                    {"name": "scripts", "mountPath": "/scripts"},
                    {"name": "all", "mountPath": "/all"},
                    {"name": "secret", "mountPath": "/secret"},
                    {"name": "podinfo", "mountPath": "/podinfo"}
                ],
                // An exec probe whose program is in a volume.
                "readinessProbe": {"exec": {"command": ["/scripts/ready.sh"]},
                    "periodSeconds": 1}
            }]
        }
    }))
    .await;
    let log = wait_log_lines(
        &env,
        "vol",
        "app",
        &[
            "script-ran",
            "init=from-init",
            "item=alpha mode=604",
            "unlisted-key-absent",
            "script-mode=755",
            "secret=s3cret mode=644",
            "sub=hello-sub",
            "/cfg/new read-only",
            "/ro/x read-only",
            "/etc/ballast-test read-only",
            "/secret/token read-only",
            "work-writable",
            "ro-sees-app-file",
            "host-etc-visible",
            "b=beta",
        ],
    )
    .await;
    let labels = log
        .lines()
        .find_map(|l| l.strip_prefix("labels="))
        .expect("labels line");
    assert!(
        labels.contains("app=\"vol\"") && labels.contains("tier=\"test\""),
        "{labels}"
    );
    // The readiness probe's program is in a volume, and it passes.
    let pod = env
        .wait_pod("vol", "Ready", |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    // What the app wrote is in the emptyDir on the host; nothing reached
    // the host's /etc.
    let work = volume_on_host(&env, &pod, "work");
    assert_eq!(
        std::fs::read_to_string(work.join("from-app")).unwrap(),
        "app\n"
    );
    assert!(!std::path::Path::new("/etc/ballast-test").exists());

    // An updated ConfigMap reaches the mounted file (atomically swapped).
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "beta-2"}})),
    )
    .await
    .expect("patch cm");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let log = log_of(&env, "vol", "app").await;
        if log.lines().any(|l| l == "b=beta-2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ConfigMap update never reached /all/b; log tail:\n{}",
            log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pod = env.pods().get("vol").await.unwrap();
    assert_eq!(cstatus(&pod, "app").unwrap().restart_count, 0);
}

/// A label or annotation patched through the API reaches the downward API
/// files that show them, in a downwardAPI volume and a projected one,
/// swapped whole (`..data`), while the container runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downward_api_files_follow_label_and_annotation_changes() {
    if !can_mount("downward_api_files_follow_label_and_annotation_changes") {
        return;
    }
    let mut env = env("downward").await;
    start_mounting(&mut env).await;
    env.create_pod(json!({
        "metadata": {"name": "dw", "labels": {"app": "dw", "tier": "a"},
            "annotations": {"note": "first"}},
        "spec": {
            "volumes": [
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "proj", "projected": {"sources": [{"downwardAPI": {"items": [
                    {"path": "note", "fieldRef": {"fieldPath": "metadata.annotations['note']"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]}}
            ],
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "while true; do echo \"labels=$(tr '\\n' ' ' < /podinfo/labels)\"; echo \"note=$(cat /proj/note)\"; sleep 0.3; done"],
                "volumeMounts": [
                    {"name": "podinfo", "mountPath": "/podinfo"},
                    {"name": "proj", "mountPath": "/proj"}
                ]
            }]
        }
    }))
    .await;
    wait_log_lines(
        &env,
        "dw",
        "c",
        &["labels=app=\"dw\" tier=\"a\"", "note=first"],
    )
    .await;
    let pod = env.pods().get("dw").await.unwrap();
    let before = std::fs::read_link(volume_on_host(&env, &pod, "podinfo").join("..data")).unwrap();
    env.pods()
        .patch(
            "dw",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "labels": {"tier": "b"}, "annotations": {"note": "second"}}})),
        )
        .await
        .expect("patch labels");
    wait_log_lines(
        &env,
        "dw",
        "c",
        &["labels=app=\"dw\" tier=\"b\"", "note=second"],
    )
    .await;
    let after = std::fs::read_link(volume_on_host(&env, &pod, "podinfo").join("..data")).unwrap();
    assert_ne!(before, after, "the payload was swapped, not edited");
    let annotations =
        std::fs::read_to_string(volume_on_host(&env, &pod, "proj").join("annotations")).unwrap();
    assert!(annotations.contains("note=\"second\""), "{annotations}");
    let pod = env.pods().get("dw").await.unwrap();
    assert_eq!(cstatus(&pod, "c").unwrap().restart_count, 0);
}

/// The container swaps its subPath directory for a link to `/` (through
/// the whole volume, which it may write). Its next exec probe and its
/// restart must not get the host's root: the helper re-opens the subPath
/// beneath the volume without following links at every start, and the
/// kubelet refuses to start the container (CreateContainerConfigError).
/// Had either followed the link, `/sub/usr/bin` would exist and the
/// probe or the next instance would leave `escaped-*` in the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_swapped_for_a_link_to_root_is_never_mounted() {
    if !can_mount("a_sub_path_swapped_for_a_link_to_root_is_never_mounted") {
        return;
    }
    let mut env = env("subpath").await;
    start_mounting(&mut env).await;
    let check = "if [ -d /sub/usr/bin ]; then echo escaped > /data/escaped-$1; echo ESCAPED; fi";
    env.create_pod(json!({
        "metadata": {"name": "attack"},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", format!(
                    "check() {{ {check}; }}; check start; \
                     if [ ! -L /data/sub ]; then mv /data/sub /data/was-sub && ln -s / /data/sub && echo planted; fi; \
                     exec sleep 3600")],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/sub", "subPath": "sub"}
                ],
                "livenessProbe": {"exec": {"command": ["sh", "-c", format!("set -- probe; {check}")]},
                    "periodSeconds": 1, "failureThreshold": 1, "initialDelaySeconds": 1}
            }]
        }
    }))
    .await;
    wait_log_lines(&env, "attack", "c", &["planted"]).await;
    // The probe fails (its view cannot be made), the container is killed,
    // and its restart is refused with kube's reason.
    let pod = env
        .wait_pod(
            "attack",
            "the restart refused: CreateContainerConfigError",
            |p| waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError"),
        )
        .await;
    let cs = cstatus(&pod, "c").unwrap();
    let message = cs
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert_eq!(
        message, "unable to provision SubPath `sub`: a symbolic link",
        "{cs:?}"
    );
    env.wait_event("attack", "Failed", "unable to provision SubPath `sub`")
        .await;
    let data = volume_on_host(&env, &pod, "data");
    assert!(
        std::fs::symlink_metadata(data.join("sub"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the attack was planted"
    );
    // Give the back-off a few more tries and probes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leaked: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("escaped-"))
        .collect();
    assert!(leaked.is_empty(), "the host's / was mounted: {leaked:?}");
    let ns = env.ns.clone();
    for previous in ["", "?previous=true"] {
        let (_, body) = env
            .kubelet_get(&format!("/containerLogs/{ns}/attack/c{previous}"))
            .await;
        assert!(!body.contains("ESCAPED"), "{body}");
    }
}

/// The helper re-opens a subPath at every start: the exec helper alone
/// (an exec probe) refuses a subPath that became a link since the
/// container started, with an error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_into_a_container_whose_sub_path_became_a_link_is_refused() {
    if !can_mount("an_exec_into_a_container_whose_sub_path_became_a_link_is_refused") {
        return;
    }
    let mut env = env("subexec").await;
    start_mounting(&mut env).await;
    env.create_pod(json!({
        "metadata": {"name": "swap"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "mv /data/sub /data/was && ln -s / /data/sub && echo planted && exec sleep 3600"],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/sub", "subPath": "sub"}
                ],
                // The probe's output is the event's message.
                "readinessProbe": {"exec": {"command": ["ls", "/sub/usr"]},
                    "periodSeconds": 1}
            }]
        }
    }))
    .await;
    wait_log_lines(&env, "swap", "c", &["planted"]).await;
    env.wait_event("swap", "Unhealthy", "a symbolic link, not mounted")
        .await;
    let pod = env.pods().get("swap").await.unwrap();
    assert_ne!(condition(&pod, "Ready").as_deref(), Some("True"));
    let (_, events): (Vec<_>, Vec<_>) = env.events("swap").await.into_iter().unzip();
    assert!(
        !events
            .iter()
            .any(|m| m.contains("sbin") || m.contains("share")),
        "the probe listed the host's /usr: {events:?}"
    );
}
