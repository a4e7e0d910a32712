//! Container logs on the process runtime: rotation by the shim
//! (`--container-log-max-size`, `--container-log-max-files`), and
//! `/containerLogs` streaming whole files, tails and follows across
//! rotations.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs a streamed response; once its raw bytes hold `seen`, runs `then`,
/// and reads on to the end: `(status, body)`.
async fn follow_after(port: u16, path: &str, seen: &str, then: impl FnOnce()) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut raw = Vec::new();
    let mut then = Some(then);
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if then.is_some() && String::from_utf8_lossy(&raw).contains(seen) {
            (then.take().unwrap())();
        }
    }
    assert!(then.is_none(), "never saw {seen:?}");
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (_, mut rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked transfer encoding.
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        body.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    (code, body)
}

/// The container's directory in the pod's sandbox.
fn container_dir(env: &Env, uid: &str, container: &str) -> PathBuf {
    env.root
        .path()
        .join("pods")
        .join(uid)
        .join("containers")
        .join(container)
}

/// `(live log, rotated logs oldest first)` of a container's only attempt.
fn log_files(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let mut live = Vec::new();
    let mut rotated = Vec::new();
    for e in std::fs::read_dir(dir).expect("container dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") {
            live.push(e.path());
        } else if name.contains(".log.") {
            rotated.push(e.path());
        }
    }
    assert_eq!(live.len(), 1, "one live log: {live:?}");
    rotated.sort();
    (live.remove(0), rotated)
}

/// The text lines of a stored CRI log file.
fn text_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("log file")
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_max_files_and_the_newest_lines_live() {
    let mut env = env("logrot").await;
    let mut config = env.config();
    config.container_log_max_size = Some(1024);
    config.container_log_max_files = 3;
    env.start(config).await;
    let pod = env
        .create_pod(json!({
            "metadata": {"name": "chatty"},
            "spec": {"containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo \"line $i of the rotation test\"; i=$((i+1)); done; echo done; sleep 1000"]
            }]}
        }))
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/chatty/c");
    poll("the last line", || async {
        env.kubelet_get(&path).await.1.ends_with("done\n")
    })
    .await;
    let dir = container_dir(&env, &uid, "c");
    let (live, rotated) = log_files(&dir);
    // ~27 KB written: the limit of 3 files, the live one included, is reached.
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    let longest = std::fs::read_to_string(&live)
        .unwrap()
        .lines()
        .map(|l| l.len() as u64 + 1)
        .max()
        .unwrap();
    for p in rotated.iter().chain([&live]) {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(
            len <= 1024,
            "{p:?} is {len} bytes (longest entry {longest})"
        );
    }
    // The newest lines are in the live file, continuing the newest rotated one.
    let live_lines = text_lines(&live);
    assert_eq!(live_lines.last().map(String::as_str), Some("done"));
    let newest = text_lines(&rotated[1]);
    let number = |l: &str| -> u32 { l.split(' ').nth(1).unwrap().parse().unwrap() };
    let last_rotated = number(newest.last().unwrap());
    assert_eq!(number(&live_lines[0]), last_rotated + 1);
    assert_eq!(
        number(&text_lines(&rotated[0]).last().cloned().unwrap()) + 1,
        number(&newest[0])
    );
    // `kubectl logs` shows the live file, as the kubelet does.
    let (code, body) = env.kubelet_get(&path).await;
    assert_eq!(code, 200);
    let want: String = live_lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(body, want);
    assert!(!body.contains("line 0 "));
    let (_, tail) = env.kubelet_get(&format!("{path}?tailLines=2")).await;
    assert_eq!(tail, "line 399 of the rotation test\ndone\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_logs_stream_whole_and_tail_reads_the_end() {
    let mut env = env("loglarge").await;
    env.start_default().await;
    env.create_pod(json!({
        "metadata": {"name": "counter"},
        "spec": {"containers": [{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c", "seq 1 30000; sleep 1000"]
        }]}
    }))
    .await;
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/counter/c");
    poll("the last number", || async {
        env.kubelet_get(&format!("{path}?tailLines=1")).await.1 == "30000\n"
    })
    .await;
    let want: String = (1..=30000).map(|i| format!("{i}\n")).collect();
    // Stored with CRI prefixes the log is ~1.3 MB: many reader chunks.
    let (code, body) = env.kubelet_get(&path).await;
    assert_eq!(code, 200);
    assert!(body == want, "{} bytes, want {}", body.len(), want.len());
    let (_, tail) = env.kubelet_get(&format!("{path}?tailLines=5")).await;
    assert_eq!(tail, "29996\n29997\n29998\n29999\n30000\n");
    let (_, none) = env.kubelet_get(&format!("{path}?tailLines=0")).await;
    assert_eq!(none, "");
    let (_, big_tail) = env.kubelet_get(&format!("{path}?tailLines=20000")).await;
    assert!(big_tail == want[want.len() - big_tail.len()..] && big_tail.starts_with("10001\n"));
    let (_, limited) = env.kubelet_get(&format!("{path}?limitBytes=100001")).await;
    assert_eq!(limited, want[..100001]);
    let (_, stamped) = env
        .kubelet_get(&format!("{path}?tailLines=2&timestamps=true"))
        .await;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    assert!(lines[0].starts_with("20") && lines[0].ends_with(" 29999"));
    let (_, future) = env
        .kubelet_get(&format!("{path}?sinceTime=2999-01-01T00:00:00Z"))
        .await;
    assert_eq!(future, "");
    let (code, _) = env
        .kubelet_get(&format!("/containerLogs/{ns}/nope/c"))
        .await;
    assert_eq!(code, 404);
    let (code, _) = env
        .kubelet_get(&format!("/containerLogs/{ns}/counter/nope"))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_continues_across_rotations() {
    let mut env = env("logfollow").await;
    let mut config = env.config();
    config.container_log_max_size = Some(1024);
    // Room for all of the ~3 KB written: nothing is pruned, so the follower
    // must show every line however far behind it is.
    config.container_log_max_files = 6;
    env.start(config).await;
    let flag = env.shared.path().join("go");
    let pod = env
        .create_pod(json!({
            "metadata": {"name": "talker"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", format!("echo start; until test -f {}; do sleep 0.1; done; i=0; while [ $i -lt 60 ]; do echo \"follow $i\"; i=$((i+1)); done; sleep 0.3; echo end", flag.display())]
            }]}
        }))
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let ns = env.ns.clone();
    let path = format!("/containerLogs/{ns}/talker/c");
    poll("the first line", || async {
        env.kubelet_get(&path).await.1 == "start\n"
    })
    .await;
    // Follow from before the first rotation: the output starts only once
    // the follower has shown the first line.
    let port = env.kubelet.as_ref().unwrap().port();
    let (code, body) = follow_after(port, &format!("{path}?follow=true"), "start\n", || {
        std::fs::write(&flag, "").unwrap()
    })
    .await;
    let mut want = String::from("start\n");
    for i in 0..60 {
        want.push_str(&format!("follow {i}\n"));
    }
    want.push_str("end\n");
    assert_eq!((code, body.as_str()), (200, want.as_str()));
    let (_, rotated) = log_files(&container_dir(&env, &uid, "c"));
    assert!(
        rotated.len() >= 2,
        "the follow crossed rotations: {rotated:?}"
    );
    // Once exited, a follow reads the live file and ends.
    env.wait_pod("talker", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let (_, live) = env.kubelet_get(&format!("{path}?follow=true")).await;
    assert!(
        want.ends_with(&live) && live.ends_with("end\n") && !live.starts_with("start"),
        "{live}"
    );
    let (_, limited) = env
        .kubelet_get(&format!("{path}?follow=true&limitBytes=4"))
        .await;
    assert_eq!(limited, live[..4]);
}
