//! The pod lifecycle on the process runtime, with pods as the Kubernetes
//! docs describe them: init containers, hooks, probes, restart policies,
//! back-off, deletion, image errors, logs, and a kubelet restart.

use std::time::Duration;

use crate::common::*;
use kube::api::DeleteParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_waits_then_poststart_env_and_logs() {
    let mut env = env("init").await;
    env.start_default().await;
    let flag = env.shared.path().join("go");
    let hook_file = env.shared.path().join("hook-ran");
    env.create_pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "initContainers": [{
                "name": "wait-for-flag", "image": "busybox:1.36",
                "command": ["sh", "-c", format!("until test -f {}; do sleep 0.1; done; echo init done", flag.display())]
            }],
            "containers": [{
                "name": "app", "image": "busybox",
                "command": ["sh", "-c"],
                "args": ["echo name=$(MY_NAME) ns=$MY_NS ip=$POD_IP node=$MY_NODE greeting=\"$GREETING\" early=\"$EARLY\"; sleep 1000"],
                "env": [
                    {"name": "EARLY", "value": "$(MY_NS)"},
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "GREETING", "value": "hello-$(MY_NS)-$$(MY_NS)"},
                    {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", format!("echo $POD_IP > {}", hook_file.display())]}}}
            }]
        }
    }))
    .await;
    // The init container holds the pod in Pending, Initialized=False.
    let pod = env
        .wait_pod("web", "init container running", |p| {
            cstatus(p, "wait-for-flag")
                .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await;
    assert_eq!(phase(&pod), "Pending");
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("False"));
    assert_eq!(
        waiting_reason(&pod, "app").as_deref(),
        Some("PodInitializing")
    );
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().expect("pod IP");
    assert!(ip.starts_with("127."), "{ip}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env
        .pods()
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .container_statuses
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .running
        .is_none());
    std::fs::write(&flag, "").unwrap();
    let pod = env
        .wait_pod("web", "Running and Ready", |p| {
            phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    let init = cstatus(&pod, "wait-for-flag").unwrap();
    let t = init
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .expect("init terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    let app = cstatus(&pod, "app").unwrap();
    assert!(app.ready && app.started == Some(true) && app.restart_count == 0);
    assert!(app
        .container_id
        .as_deref()
        .unwrap()
        .starts_with("ballast://"));
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    // The postStart hook ran in the container's environment.
    poll("postStart file", || async {
        std::fs::read_to_string(&hook_file).is_ok_and(|s| s.trim() == ip)
    })
    .await;
    // Logs through the kubelet's HTTP server; env and downward API expanded.
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/web/app");
    // Only variables defined earlier expand; `$$` escapes.
    let want = format!(
        "name=web ns={ns} ip={ip} node={} greeting=hello-{ns}-$(MY_NS) early=$(MY_NS)",
        env.node
    );
    poll("app log", || async {
        env.kubelet_get(&path).await.1.contains(&want)
    })
    .await;
    let (code, body) = env
        .kubelet_get(&format!("/containerLogs/{ns}/web/wait-for-flag"))
        .await;
    assert_eq!((code, body.as_str()), (200, "init done\n"));
    let (code, body) = env.kubelet_get(&format!("{path}?timestamps=true")).await;
    assert_eq!(code, 200);
    assert!(
        body.starts_with("20") && body.contains(" name=web"),
        "{body}"
    );
    let (code, _) = env.kubelet_get(&format!("{path}?previous=true")).await;
    assert_eq!(code, 400, "no previous instance yet");
    let (code, _) = env
        .kubelet_get(&format!("/containerLogs/{ns}/nope/app"))
        .await;
    assert_eq!(code, 404);
    let (code, _) = env
        .kubelet_get(&format!("/containerLogs/{ns}/web/nope"))
        .await;
    assert_eq!(code, 400);
    assert_eq!(env.kubelet_get("/healthz").await, (200, "ok".to_string()));
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        env.wait_event("web", reason, "").await;
    }
    env.wait_event("web", "Started", "Started container app")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_with_backoff_and_previous_logs() {
    let mut env = env("liveness").await;
    env.start_default().await;
    env.create_pod(json!({
        "metadata": {"name": "live"},
        "spec": {"containers": [{
            "name": "app", "image": "busybox",
            "command": ["sh", "-c", "echo instance $(date +%s%N); sleep 1000"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "/nonexistent/healthy"]},
                              "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1}
        }]}
    }))
    .await;
    let pod = env
        .wait_pod("live", "restartCount >= 2 in CrashLoopBackOff", |p| {
            cstatus(p, "app").is_some_and(|c| c.restart_count >= 2)
                && waiting_reason(p, "app").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let c = cstatus(&pod, "app").unwrap();
    let msg = c
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        msg.contains("back-off") && msg.contains("restarting failed container=app"),
        "{msg}"
    );
    let last = c
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .expect("lastState terminated");
    assert_eq!(last.exit_code, 143, "SIGTERM from the liveness kill");
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert!(last.started_at.is_some() && last.finished_at.is_some());
    assert_eq!(phase(&pod), "Running");
    env.wait_event("live", "Unhealthy", "Liveness probe failed")
        .await;
    env.wait_event(
        "live",
        "Killing",
        "Container app failed liveness probe, will be restarted",
    )
    .await;
    env.wait_event(
        "live",
        "BackOff",
        "Back-off restarting failed container app",
    )
    .await;
    // The back-off grows: 0.5 s, 1 s, 2 s …
    poll("two BackOff events (counted)", || async {
        env.event_count("live", "BackOff").await >= 2
    })
    .await;
    // Logs of the previous instance differ from the current one.
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/live/app");
    poll("current log", || async {
        env.kubelet_get(&path).await.1.starts_with("instance ")
    })
    .await;
    let (code, previous) = env.kubelet_get(&format!("{path}?previous=true")).await;
    assert_eq!(code, 200);
    assert!(previous.starts_with("instance "), "{previous}");
    let (_, current) = env.kubelet_get(&path).await;
    assert_ne!(previous, current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_ready_and_http_probes() {
    let mut env = env("ready").await;
    env.start_default().await;
    let flag = env.shared.path().join("ready");
    env.create_pod(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [
            {"name": "gate", "image": "busybox", "command": ["sleep", "1000"],
             "readinessProbe": {"exec": {"command": ["test", "-f", flag.display().to_string()]}, "periodSeconds": 1, "failureThreshold": 1}},
            {"name": "httpd", "image": "ballast/httpd:1.0",
             "ports": [{"name": "http", "containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
             "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
             "startupProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1, "failureThreshold": 10}}
        ]}
    }))
    .await;
    let pod = env
        .wait_pod("web", "httpd ready", |p| {
            cstatus(p, "httpd").is_some_and(|c| c.ready)
        })
        .await;
    assert_eq!(phase(&pod), "Running");
    assert_eq!(
        condition(&pod, "Ready").as_deref(),
        Some("False"),
        "gate is not ready"
    );
    assert!(!cstatus(&pod, "gate").unwrap().ready);
    assert_eq!(cstatus(&pod, "httpd").unwrap().started, Some(true));
    let ip = pod.status.unwrap().pod_ip.unwrap();
    assert_eq!(http_get(&format!("{ip}:8080"), "/healthz").await.0, 200);
    std::fs::write(&flag, "").unwrap();
    env.wait_pod("web", "Ready", |p| {
        condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    std::fs::remove_file(&flag).unwrap();
    let pod = env
        .wait_pod("web", "not Ready", |p| {
            condition(p, "Ready").as_deref() == Some("False")
        })
        .await;
    assert_eq!(condition(&pod, "ContainersReady").as_deref(), Some("False"));
    assert_eq!(
        cstatus(&pod, "httpd").unwrap().restart_count,
        0,
        "liveness held"
    );
    env.wait_event("web", "Unhealthy", "Readiness probe failed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_never_and_on_failure() {
    let mut env = env("policy").await;
    env.start_default().await;
    let marker = env.shared.path().join("failed-once");
    env.create_pod(json!({
        "metadata": {"name": "ok"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo fine"]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "bad"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox", "command": ["sh", "-c", "echo something broke; exit 3"],
            "terminationMessagePolicy": "FallbackToLogsOnError"
        }]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "retry"},
        "spec": {"restartPolicy": "OnFailure", "containers": [{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", format!("if test -f {m}; then exit 0; else touch {m}; exit 1; fi", m = marker.display())]
        }]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "noexec"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["no-such-binary-xyz"]}]}
    }))
    .await;
    let ok = env
        .wait_pod("ok", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let t = cstatus(&ok, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(condition(&ok, "Ready").as_deref(), Some("False"));
    let bad = env
        .wait_pod("bad", "Failed", |p| phase(p) == "Failed")
        .await;
    let t = cstatus(&bad, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        t.message.as_deref(),
        Some("something broke\n"),
        "FallbackToLogsOnError"
    );
    let retry = env
        .wait_pod("retry", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let c = cstatus(&retry, "c").unwrap();
    assert_eq!(c.restart_count, 1);
    assert_eq!(
        c.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    let noexec = env
        .wait_pod("noexec", "Failed", |p| phase(p) == "Failed")
        .await;
    let t = cstatus(&noexec, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(t.message.unwrap().contains("executable file not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_backs_off() {
    let mut env = env("image").await;
    env.start_default().await;
    env.create_pod(json!({
        "metadata": {"name": "img"},
        "spec": {"containers": [{"name": "c", "image": "example.com/no-such-image:v1"}]}
    }))
    .await;
    let pod = env
        .wait_pod("img", "ImagePullBackOff", |p| {
            waiting_reason(p, "c").as_deref() == Some("ImagePullBackOff")
        })
        .await;
    assert_eq!(phase(&pod), "Pending");
    env.wait_event("img", "Failed", "Error: ErrImagePull").await;
    env.wait_event(
        "img",
        "Failed",
        "Failed to pull image \"example.com/no-such-image:v1\"",
    )
    .await;
    env.wait_event("img", "BackOff", "Back-off pulling image")
        .await;
    env.wait_event("img", "Failed", "Error: ImagePullBackOff")
        .await;
    // Deleting it works although nothing ever ran.
    env.pods()
        .delete("img", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("img").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_runs_prestop_then_kills_at_grace_period() {
    let mut env = env("delete").await;
    env.start_default().await;
    let prestop = env.shared.path().join("prestop-ran");
    env.create_pod(json!({
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{
                "name": "app", "image": "busybox",
                "command": ["sh", "-c", "trap 'echo ignoring TERM' TERM; echo stubborn-marker; while true; do sleep 0.2; done"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", format!("touch {}", prestop.display())]}}}
            }]
        }
    }))
    .await;
    let pod = env
        .wait_pod("stubborn", "Running", |p| phase(p) == "Running")
        .await;
    let ns = env.ns.clone();
    poll("output", || async {
        env.kubelet_get(&format!("/containerLogs/{ns}/stubborn/app"))
            .await
            .1
            .contains("stubborn-marker")
    })
    .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let sandbox = env.root.path().join("pods").join(&uid);
    assert!(sandbox.exists());
    let t0 = std::time::Instant::now();
    env.pods()
        .delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("stubborn").await;
    let took = t0.elapsed();
    assert!(prestop.exists(), "preStop hook ran");
    // SIGTERM was ignored, so only SIGKILL at the grace period ended it.
    assert!(
        took >= Duration::from_millis(2500),
        "killed too early: {took:?}"
    );
    env.wait_event("stubborn", "Killing", "Stopping container app")
        .await;
    poll("sandbox removed", || async { !sandbox.exists() }).await;

    // Deleted outright (grace period 0): the kubelet kills it at once.
    let marker = format!("{}.25", 2000 + std::process::id() % 1000);
    env.create_pod(json!({
        "metadata": {"name": "forced"},
        "spec": {"terminationGracePeriodSeconds": 30,
                 "containers": [{"name": "app", "image": "busybox", "command": ["sleep", marker]}]}
    }))
    .await;
    env.wait_pod("forced", "Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(processes_with(&format!("sleep {marker}")).len(), 1);
    let t0 = std::time::Instant::now();
    env.pods()
        .delete(
            "forced",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    poll("forced pod's process killed", || async {
        processes_with(&format!("sleep {marker}")).is_empty()
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "not the 30 s grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_kubelet_adopts_running_containers() {
    let mut env = env("adopt").await;
    let mut config = env.config();
    config.stop_containers_on_exit = false;
    env.start(config.clone()).await;
    let marker = format!("{}.5", 1000 + std::process::id() % 1000);
    env.create_pod(json!({
        "metadata": {"name": "keep"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", marker]}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "doomed"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", format!("{marker}1")]}]}
    }))
    .await;
    let before = env
        .wait_pod("keep", "Running", |p| phase(p) == "Running")
        .await;
    env.wait_pod("doomed", "Running", |p| phase(p) == "Running")
        .await;
    // Running means the shim was spawned; it execs the command a moment
    // later (long on a loaded machine).
    poll("one sleep per pod", || async {
        processes_with(&format!("sleep {marker}")).len() == 2
    })
    .await;
    let keep_pid = processes_with(&format!("sleep {marker} "));
    // Stop the kubelet, leaving the containers running.
    env.kubelet.take().unwrap().stop().await;
    assert_eq!(processes_with(&format!("sleep {marker}")).len(), 2);
    // While it is down, one pod is deleted outright.
    env.pods()
        .delete(
            "doomed",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    env.wait_gone("doomed").await;
    env.start(config).await;
    // The orphan is killed, the other container is adopted, not restarted.
    poll("orphan killed", || async {
        processes_with(&format!("sleep {marker}1")).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        processes_with(&format!("sleep {marker} ")),
        keep_pid,
        "same process, no duplicate"
    );
    let after = env
        .wait_pod("keep", "Running", |p| phase(p) == "Running")
        .await;
    let (b, a) = (
        cstatus(&before, "app").unwrap(),
        cstatus(&after, "app").unwrap(),
    );
    assert_eq!(a.restart_count, 0);
    assert_eq!(a.container_id, b.container_id);
    assert_eq!(
        after.status.as_ref().unwrap().pod_ip,
        before.status.as_ref().unwrap().pod_ip
    );
    // And it is still managed: deleting the pod stops it.
    env.pods()
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("keep").await;
    poll("adopted container stopped", || async {
        processes_with(&format!("sleep {marker}")).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_until_the_container_exits() {
    let mut env = env("follow").await;
    env.start_default().await;
    let flag = env.shared.path().join("finish");
    env.create_pod(json!({
        "metadata": {"name": "talker"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", format!("echo first; until test -f {}; do sleep 0.1; done; echo second; sleep 0.3; echo oops >&2", flag.display())]
        }]}
    }))
    .await;
    env.wait_pod("talker", "Running", |p| phase(p) == "Running")
        .await;
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/talker/c");
    poll("first line", || async {
        env.kubelet_get(&path).await.1 == "first\n"
    })
    .await;
    let port = env.kubelet.as_ref().unwrap().port();
    let follow = tokio::spawn(async move {
        http_get(&format!("127.0.0.1:{port}"), &format!("{path}?follow=true")).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !follow.is_finished(),
        "follow ends only when the container does"
    );
    std::fs::write(&flag, "").unwrap();
    let (code, body) = follow.await.unwrap();
    assert_eq!((code, body.as_str()), (200, "first\nsecond\noops\n"));
    env.wait_pod("talker", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let (_, tail) = env
        .kubelet_get(&format!("/containerLogs/{ns}/talker/c?tailLines=1"))
        .await;
    assert_eq!(tail, "oops\n");
    let (_, limited) = env
        .kubelet_get(&format!("/containerLogs/{ns}/talker/c?limitBytes=3"))
        .await;
    assert_eq!(limited, "fir");
    let (_, recent) = env
        .kubelet_get(&format!("/containerLogs/{ns}/talker/c?sinceSeconds=3600"))
        .await;
    assert_eq!(recent, "first\nsecond\noops\n");
    let (_, future) = env
        .kubelet_get(&format!(
            "/containerLogs/{ns}/talker/c?sinceTime=2999-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(future, "");
    let (code, both) = env
        .kubelet_get(&format!(
            "/containerLogs/{ns}/talker/c?sinceSeconds=1&sinceTime=2999-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(code, 400, "{both}");
    let (code, bad) = env
        .kubelet_get(&format!("/containerLogs/{ns}/talker/c?sinceTime=yesterday"))
        .await;
    assert_eq!(code, 400, "{bad}");
}

/// The value of `name` in an `env` dump (one `NAME=value` per line).
fn env_var(dump: &str, name: &str) -> Option<String> {
    dump.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_sidecar_serves_the_app_and_is_stopped_last() {
    let mut env = env("sidecar").await;
    env.start_default().await;
    let dir = env.shared.path().display().to_string();
    env.create_pod(json!({
        "metadata": {"name": "job"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                // Started is not ready to serve: its startupProbe holds the
                // next init container until the data is there.
                {"name": "helper", "image": "busybox", "restartPolicy": "Always",
                 "command": ["sh", "-c", format!("echo served-by-sidecar > {dir}/data; trap 'echo sidecar >> {dir}/order; exit 0' TERM; while true; do sleep 0.1; done")],
                 "startupProbe": {"exec": {"command": ["test", "-f", format!("{dir}/data")]},
                                  "periodSeconds": 1, "failureThreshold": 30}},
                {"name": "check", "image": "busybox",
                 "command": ["sh", "-c", format!("test -f {dir}/data && echo yes > {dir}/check")]}
            ],
            "containers": [{"name": "app", "image": "busybox",
                "command": ["sh", "-c", format!("cat {dir}/data > {dir}/app; sleep 1; echo app >> {dir}/order")]}]
        }
    }))
    .await;
    // While the app runs the sidecar runs too, started, and counts as running.
    let pod = env
        .wait_pod("job", "app running", |p| {
            cstatus(p, "app").is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await;
    let helper = cstatus(&pod, "helper").unwrap();
    assert!(
        helper.state.as_ref().unwrap().running.is_some(),
        "{helper:?}"
    );
    assert_eq!(helper.started, Some(true));
    assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
    // The Never pod completes when its app container does; the sidecar is
    // stopped after it.
    let pod = env
        .wait_pod("job", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let helper = cstatus(&pod, "helper").unwrap();
    let t = helper
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .expect("sidecar stopped");
    assert_eq!(t.exit_code, 0);
    let read = |f: &str| std::fs::read_to_string(env.shared.path().join(f)).unwrap_or_default();
    assert_eq!(
        read("check"),
        "yes\n",
        "the next init container ran after the sidecar started"
    );
    assert_eq!(read("app"), "served-by-sidecar\n");
    assert_eq!(read("order"), "app\nsidecar\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_probes_gate_init_and_readiness_and_deletion_stops_it_after_the_app() {
    let mut env = env("sidecar-ready").await;
    env.start_default().await;
    let dir = env.shared.path().display().to_string();
    let forever = |who: &str| {
        format!("trap 'echo {who} >> {dir}/order; exit 0' TERM; while true; do sleep 0.1; done")
    };
    env.create_pod(json!({
        "metadata": {"name": "web"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "initContainers": [
                {"name": "proxy", "image": "busybox", "restartPolicy": "Always",
                 "command": ["sh", "-c", format!("sleep 1; touch {dir}/up; {}", forever("proxy"))],
                 "startupProbe": {"exec": {"command": ["test", "-f", format!("{dir}/up")]}, "periodSeconds": 1, "failureThreshold": 30},
                 "readinessProbe": {"exec": {"command": ["test", "-f", format!("{dir}/ready")]}, "periodSeconds": 1}},
                {"name": "after", "image": "busybox",
                 "command": ["sh", "-c", format!("if test -f {dir}/up; then echo yes; else echo no; fi > {dir}/after")]}
            ],
            "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c", forever("app")]}]
        }
    }))
    .await;
    let pod = env
        .wait_pod("web", "app running", |p| phase(p) == "Running")
        .await;
    assert_eq!(
        std::fs::read_to_string(env.shared.path().join("after")).unwrap(),
        "yes\n"
    );
    // The sidecar's readiness holds the pod unready.
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    assert!(!cstatus(&pod, "proxy").unwrap().ready);
    std::fs::write(env.shared.path().join("ready"), "").unwrap();
    let pod = env
        .wait_pod("web", "Ready", |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    assert!(cstatus(&pod, "proxy").unwrap().ready);
    env.pods()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone("web").await;
    assert_eq!(
        std::fs::read_to_string(env.shared.path().join("order")).unwrap(),
        "app\nproxy\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_policies_on_a_fresh_kubelet() {
    let mut env = env("pull").await;
    env.start_default().await;
    let sleep = json!(["sleep", "1000"]);
    for (name, image, policy) in [
        ("never", "busybox", Some("Never")),
        ("absent", "example.com/no-such-image:v1", Some("Never")),
        ("ifnotpresent", "busybox:1.36", Some("IfNotPresent")),
        ("latest", "busybox:latest", None),
    ] {
        env.create_pod(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": image, "imagePullPolicy": policy, "command": sleep}]}
        }))
        .await;
    }
    for name in ["never", "ifnotpresent"] {
        env.wait_pod(name, "Running", |p| phase(p) == "Running")
            .await;
        env.wait_event(name, "Pulled", "already present on machine")
            .await;
    }
    let latest = env
        .wait_pod("latest", "Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(
        latest.spec.unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("Always")
    );
    env.wait_event("latest", "Pulling", "Pulling image \"busybox:latest\"")
        .await;
    env.wait_event("latest", "Pulled", "Successfully pulled image")
        .await;
    let absent = env
        .wait_pod("absent", "ErrImageNeverPull", |p| {
            waiting_reason(p, "c").as_deref() == Some("ErrImageNeverPull")
        })
        .await;
    let message =
        "Container image \"example.com/no-such-image:v1\" is not present with pull policy of Never";
    let waiting = cstatus(&absent, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.message.as_deref(), Some(message));
    assert_eq!(phase(&absent), "Pending");
    env.wait_event("absent", "ErrImageNeverPull", message).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_the_pod() {
    let mut env = env("deadline").await;
    env.start_default().await;
    let marker = format!("{}.25", 1000 + std::process::id() % 1000);
    env.create_pod(json!({
        "metadata": {"name": "slow"},
        "spec": {"activeDeadlineSeconds": 4, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", marker]}]}
    }))
    .await;
    // The container runs (or, on a loaded machine, the deadline came
    // first: the pod is Failed already).
    env.wait_pod("slow", "Running or Failed", |p| {
        matches!(phase(p).as_str(), "Running" | "Failed")
    })
    .await;
    let pod = env
        .wait_pod("slow", "Failed", |p| phase(p) == "Failed")
        .await;
    // Failed is reported only once the container is stopped.
    assert_eq!(
        processes_with(&format!("sleep {marker}")),
        Vec::<u32>::new()
    );
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    let c = cstatus(&pod, "c").unwrap();
    assert!(c.state.as_ref().unwrap().terminated.is_some(), "{c:?}");
    env.wait_event(
        "slow",
        "DeadlineExceeded",
        "longer than the specified deadline",
    )
    .await;
    // Nothing restarts it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pod = env.pods().get("slow").await.unwrap();
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(cstatus(&pod, "c").unwrap().restart_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_gates_running_and_its_failure_restarts_the_container() {
    let mut env = env("poststart").await;
    env.start_default().await;
    let done = env.shared.path().join("hook-done");
    env.create_pod(json!({
        "metadata": {"name": "slow-hook"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", format!("sleep 2; touch {}", done.display())]}}}}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "bad-hook"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}}}]}
    }))
    .await;
    // Until the hook is done the container is not reported Running.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut saw_creating = false;
    while !done.exists() {
        assert!(tokio::time::Instant::now() < deadline, "hook never ran");
        let pod = env.pods().get("slow-hook").await.unwrap();
        if let Some(c) = cstatus(&pod, "c") {
            let state = c.state.clone().unwrap_or_default();
            assert!(
                state.running.is_none() || done.exists(),
                "Running before postStart: {c:?}"
            );
            saw_creating |= state.waiting.is_some() && c.container_id.is_some();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_creating, "the created container waited for its hook");
    env.wait_pod("slow-hook", "Running", |p| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    env.wait_event("bad-hook", "FailedPostStartHook", "PostStartHook failed")
        .await;
    let pod = env
        .wait_pod("bad-hook", "restarted", |p| {
            cstatus(p, "c").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_ne!(condition(&pod, "Ready").as_deref(), Some("True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_change_restarts_the_container_with_the_new_image() {
    let mut env = env("reimage").await;
    env.start_default().await;
    env.create_pod(json!({
        "metadata": {"name": "p"},
        "spec": {"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "1000"]}]}
    }))
    .await;
    let before = env
        .wait_pod("p", "Running", |p| phase(p) == "Running")
        .await;
    // A read-modify-write of the image, retried on a conflict with the
    // kubelet's status writes.
    let mut replaced = false;
    for _ in 0..20 {
        let mut pod = env.pods().get("p").await.unwrap();
        pod.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.37".into());
        match env.pods().replace("p", &Default::default(), &pod).await {
            Ok(_) => {
                replaced = true;
                break;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("updating the image: {e}"),
        }
    }
    assert!(replaced, "the image update kept conflicting");
    let after = env
        .wait_pod("p", "restarted with the new image", |p| {
            cstatus(p, "c").is_some_and(|c| {
                c.image == "busybox:1.37" && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        })
        .await;
    let (b, a) = (
        cstatus(&before, "c").unwrap(),
        cstatus(&after, "c").unwrap(),
    );
    assert_eq!(
        a.restart_count, 1,
        "restarted although restartPolicy is Never"
    );
    assert_ne!(a.container_id, b.container_id);
    assert_eq!(phase(&after), "Running");
    env.wait_event(
        "p",
        "Killing",
        "Container c definition changed, will be restarted",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_variables_and_env_from() {
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use kube::api::{Api, PostParams};
    let mut env = env("svcenv").await;
    env.start_default().await;
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web-svc"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "dns", "port": 53, "protocol": "UDP"}
        ]}
    }))
    .unwrap();
    let svc = services.create(&PostParams::default(), &svc).await.unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap_or_default();
    assert!(!ip.is_empty(), "the apiserver allocates a cluster IP");
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg"}, "data": {"GOOD": "g", "1bad": "x", "WEB_SVC_SERVICE_PORT": "from-cm"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let dir = env.shared.path().display().to_string();
    // Runs pod `name` (writing its environment to the shared directory) to
    // completion; its environment.
    let run = |name: String, links: bool| {
        let env = &env;
        let dir = &dir;
        async move {
            env.create_pod(json!({
                "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "enableServiceLinks": links, "containers": [{
                    "name": "c", "image": "busybox", "command": ["sh", "-c", format!("env > {dir}/{name}")],
                    "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}, {"configMapRef": {"name": "cfg"}}],
                    "env": [{"name": "URL", "value": "http://$(WEB_SVC_SERVICE_HOST):$(WEB_SVC_SERVICE_PORT_HTTP)/"}]
                }]}
            }))
            .await;
            env.wait_pod(&name, "Succeeded", |p| phase(p) == "Succeeded")
                .await;
            std::fs::read_to_string(env.shared.path().join(&name)).unwrap()
        }
    };
    // The kubelet takes Service variables from its informer's view of
    // Services, which follows the apiserver within moments: a pod set up at
    // once may come before the Service is seen, so the linked pod is run
    // again (at most five times) until it has been.
    let mut linked = String::new();
    let mut linked_name = String::new();
    for attempt in 0..5 {
        linked_name = format!("linked-{attempt}");
        linked = run(linked_name.clone(), true).await;
        if env_var(&linked, "WEB_SVC_SERVICE_HOST").is_some() {
            break;
        }
    }
    let unlinked = run("unlinked".to_string(), false).await;
    let get = |k: &str| env_var(&linked, k);
    assert_eq!(get("WEB_SVC_SERVICE_HOST"), Some(ip.clone()));
    assert_eq!(get("WEB_SVC_SERVICE_PORT_HTTP").as_deref(), Some("80"));
    assert_eq!(get("WEB_SVC_SERVICE_PORT_DNS").as_deref(), Some("53"));
    assert_eq!(get("WEB_SVC_PORT"), Some(format!("tcp://{ip}:80")));
    assert_eq!(get("WEB_SVC_PORT_53_UDP"), Some(format!("udp://{ip}:53")));
    assert_eq!(get("WEB_SVC_PORT_80_TCP_ADDR"), Some(ip.clone()));
    assert_eq!(get("URL"), Some(format!("http://{ip}:80/")));
    // envFrom wins over the Service variables; invalid keys are skipped.
    assert_eq!(get("WEB_SVC_SERVICE_PORT").as_deref(), Some("from-cm"));
    assert_eq!(get("CM_GOOD").as_deref(), Some("g"));
    assert_eq!(
        get("CM_1bad").as_deref(),
        Some("x"),
        "valid with its prefix"
    );
    assert!(!linked.lines().any(|l| l.starts_with("1bad=")), "{linked}");
    env.wait_event(
        &linked_name,
        "InvalidEnvironmentVariableNames",
        &format!("Keys [1bad] from the EnvFrom configMap {}/cfg were skipped since they are considered invalid environment variable names.", env.ns),
    )
    .await;
    assert_eq!(env_var(&unlinked, "WEB_SVC_SERVICE_HOST"), None);
    assert_eq!(env_var(&unlinked, "WEB_SVC_PORT"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failures_and_probe_thresholds() {
    let mut env = env("initfail").await;
    env.start_default().await;
    let fail_init = |name: &str, policy: &str| {
        json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": policy,
                "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 2"]}],
                "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "1000"]}]}
        })
    };
    env.create_pod(fail_init("init-never", "Never")).await;
    env.create_pod(fail_init("init-always", "Always")).await;
    env.create_pod(json!({
        "metadata": {"name": "startup"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"],
            "startupProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "timeout"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"],
            "readinessProbe": {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 1, "periodSeconds": 1, "failureThreshold": 1}}]}
    }))
    .await;
    env.create_pod(json!({
        "metadata": {"name": "threshold"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"],
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1, "successThreshold": 3}}]}
    }))
    .await;
    let never = env
        .wait_pod("init-never", "Failed", |p| phase(p) == "Failed")
        .await;
    let init = cstatus(&never, "init").unwrap();
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        2
    );
    assert_eq!(init.restart_count, 0);
    assert_eq!(
        waiting_reason(&never, "app").as_deref(),
        Some("PodInitializing")
    );
    let always = env
        .wait_pod("init-always", "init restarted", |p| {
            cstatus(p, "init").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_eq!(phase(&always), "Pending");
    assert_eq!(condition(&always, "Initialized").as_deref(), Some("False"));
    env.wait_pod("startup", "restarted by its startup probe", |p| {
        cstatus(p, "c").is_some_and(|c| c.restart_count >= 1 && c.started != Some(true))
    })
    .await;
    env.wait_event(
        "startup",
        "Killing",
        "Container c failed startup probe, will be restarted",
    )
    .await;
    // A probe slower than timeoutSeconds fails.
    env.wait_event("timeout", "Unhealthy", "Readiness probe failed")
        .await;
    let pod = env.pods().get("timeout").await.unwrap();
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    // successThreshold 3 at 1 s periods: not ready before the third success.
    let running = env
        .wait_pod("threshold", "Running", |p| phase(p) == "Running")
        .await;
    let started = cstatus(&running, "c")
        .unwrap()
        .state
        .clone()
        .unwrap()
        .running
        .unwrap()
        .started_at
        .unwrap()
        .0;
    let ready = env
        .wait_pod("threshold", "Ready", |p| {
            condition(p, "Ready").as_deref() == Some("True")
        })
        .await;
    let became = ready
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .last_transition_time
        .unwrap()
        .0;
    let after_ms = became.duration_since(started).as_millis();
    assert!(
        after_ms >= 1500,
        "ready {after_ms} ms after start: before the third success"
    );
}
