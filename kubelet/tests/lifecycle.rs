//! The pod lifecycle on the process runtime, with pods as the Kubernetes
//! docs describe them: init containers, hooks, probes, restart policies,
//! back-off, deletion, image errors, logs, and a kubelet restart.

mod common;

use std::time::Duration;

use common::*;
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
    let pids = processes_with(&format!("sleep {marker}"));
    assert_eq!(pids.len(), 2, "one sleep per pod: {pids:?}");
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
