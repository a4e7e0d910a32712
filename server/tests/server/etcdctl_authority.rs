//! Real etcd 3.4 `etcdctl` against a one-member cluster. Its `endpoint
//! status` / `endpoint hashkv` calls send `:authority: http://host:port`,
//! which h2 alone rejects (see `h2_authority`).

use crate::common;

use std::path::Path;
use std::time::Duration;

use ballast_server::StorageServer;

const ETCDCTL: &str = "/usr/bin/etcdctl";

async fn start() -> (StorageServer, tempfile::TempDir) {
    common::start_member(|_| {}).await
}

/// Runs etcdctl (v3 API) against `endpoint`; returns stdout, asserting success.
async fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("etcdctl timed out")
        .expect("etcdctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_34_endpoint_status_and_hashkv() {
    if !Path::new(ETCDCTL).exists() {
        println!("skipping: {ETCDCTL} is not installed (apt-get install etcd-client)");
        return;
    }
    let (server, _dir) = start().await;
    let endpoint = format!("http://{}", server.client_addrs()[0]);

    etcdctl(&endpoint, &["put", "k", "v"]).await;

    let status = etcdctl(&endpoint, &["endpoint", "status", "-w", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    let list = status.as_array().expect("a list of endpoints");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["Endpoint"], endpoint.as_str());
    let st = &list[0]["Status"];
    assert_eq!(st["leader"].as_u64(), Some(server.node().member_id()));
    // Like etcd, a new store is at revision 1: one put makes it 2.
    assert_eq!(st["header"]["revision"].as_i64(), Some(2));
    assert!(st["version"].as_str().is_some_and(|v| v.starts_with("3.")));

    let hash = etcdctl(&endpoint, &["endpoint", "hashkv", "-w", "json"]).await;
    let hash: serde_json::Value = serde_json::from_str(&hash).expect("hashkv is JSON");
    assert_eq!(hash[0]["Endpoint"], endpoint.as_str());
    assert!(hash[0]["HashKV"]["hash"].as_u64().is_some());
    assert_eq!(hash[0]["HashKV"]["compact_revision"].as_i64(), Some(-1));

    let get = etcdctl(&endpoint, &["get", "k", "--print-value-only"]).await;
    assert_eq!(get.trim(), "v");

    server.shutdown().await;
}
