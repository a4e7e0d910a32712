//! One sample of everything the soak records: storage (Maintenance.Status,
//! the compacted revision, key counts, alarms), each process's RSS, disk
//! use of the WAL, the RocksDB files and the logs, the apiserver's cached
//! objects and the nodes' readiness.
//!
//! The apiserver has no `/metrics`, so its watch cache's size is counted by
//! Lists served from the cache (`resourceVersion=0`, metadata only) of the
//! busy resources: pods, Events, Nodes, Leases, ReplicaSets, Deployments.
//! Storage holds the same objects; its `/registry/` key count is recorded
//! beside it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::kv_client::KvClient;
use ballast_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ballast_proto::etcdserverpb::{AlarmRequest, AlarmType, RangeRequest, StatusRequest};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use tonic::transport::Channel;

use super::churn::ChurnCounters;
use super::cluster::{node_readiness, Cluster};

/// What a column measures, for its unit and whether it must stay flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bytes of memory or disk; must stay flat.
    Bytes,
    /// A count of objects; must stay flat.
    Objects,
    /// Recorded for reading the run, not judged (revisions, rates, counts
    /// the workload sets).
    Info,
}

/// One recorded series.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

impl Column {
    fn new(name: impl Into<String>, kind: Kind) -> Column {
        Column {
            name: name.into(),
            kind,
        }
    }

    /// Whether the verdict requires this series to be flat.
    pub fn judged(&self) -> bool {
        self.kind != Kind::Info
    }
}

/// Index of the columns the verdict reads besides flatness.
pub const NOT_READY: &str = "nodes_not_ready";
pub const NOSPACE: &str = "nospace_alarms";

/// The columns of a cluster with these members, in CSV order.
pub fn columns(cluster: &Cluster) -> Vec<Column> {
    use Kind::*;
    let mut c = vec![
        Column::new("db_size_bytes", Bytes),
        Column::new("db_size_in_use_bytes", Bytes),
        Column::new("revision", Info),
        Column::new("compact_revision", Info),
        Column::new("storage_keys", Objects),
        Column::new("storage_events", Objects),
        Column::new("storage_pods", Info),
    ];
    for m in &cluster.members {
        c.push(Column::new(
            format!("rss_{}_bytes", m.name.replace('-', "_")),
            Bytes,
        ));
    }
    c.extend([
        Column::new("rss_apiserver_bytes", Bytes),
        Column::new("rss_controller_manager_bytes", Bytes),
        Column::new("rss_scheduler_bytes", Bytes),
        Column::new("rss_kubelet_bytes", Bytes),
        Column::new("wal_disk_bytes", Bytes),
        Column::new("snap_disk_bytes", Bytes),
        Column::new("kv_disk_bytes", Bytes),
        Column::new("component_log_disk_bytes", Bytes),
        Column::new("kubelet_disk_bytes", Bytes),
        Column::new("cache_objects", Objects),
        Column::new("cache_pods", Info),
        Column::new("cache_events", Objects),
        Column::new(NOT_READY, Info),
        Column::new(NOSPACE, Info),
        Column::new("pod_creates_per_s", Info),
        Column::new("pod_deletes_per_s", Info),
        Column::new("pod_watch_relists", Info),
        Column::new("churn_errors", Info),
        Column::new("sample_ms", Info),
    ]);
    c
}

/// Resident memory of `pid` in bytes (`VmRSS` of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Disk space used under `path` (allocated blocks, as `du`), walking at most
/// 32 levels and 1,000,000 entries; `None` when `path` does not exist.
pub fn disk_usage(path: &Path) -> Option<f64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mut total = meta.blocks() * 512;
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        if depth >= 32 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > 1_000_000 {
                return Some(total as f64);
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    Some(total as f64)
}

/// `[key, range_end)` covering every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

async fn count_keys(channel: &Channel, prefix: &str) -> Option<f64> {
    let response = KvClient::new(channel.clone())
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            count_only: true,
            serializable: true,
            ..RangeRequest::default()
        })
        .await
        .ok()?;
    Some(response.into_inner().count as f64)
}

/// Whether a Range at `revision` is refused because it was compacted;
/// `None` on any other failure.
async fn compacted_at(channel: &Channel, revision: i64) -> Option<bool> {
    let answer = KvClient::new(channel.clone())
        .range(RangeRequest {
            key: b"/registry/namespaces/default".to_vec(),
            revision,
            count_only: true,
            serializable: true,
            ..RangeRequest::default()
        })
        .await;
    match answer {
        Ok(_) => Some(false),
        Err(status) if status.message().contains("compacted") => Some(true),
        Err(_) => None,
    }
}

/// The storage's compacted revision: the oldest revision a Range may still
/// read (etcd's Status does not report it), found by bisection over
/// `1..=revision`; 0 when nothing was compacted.
async fn compact_revision(channel: &Channel, revision: i64) -> Option<f64> {
    if revision < 1 || !compacted_at(channel, 1).await? {
        return Some(0.0);
    }
    // Invariant: `lo` is compacted, `hi` is readable.
    let (mut lo, mut hi) = (1i64, revision);
    for _ in 0..64 {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if compacted_at(channel, mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // etcd still serves the compacted revision itself.
    Some(hi as f64)
}

/// Objects of kind `K` the apiserver lists from its cache (metadata only).
async fn cached<K>(client: &kube::Client) -> Option<f64>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let list = tokio::time::timeout(
        Duration::from_secs(60),
        api.list_metadata(&ListParams::default().match_any()),
    )
    .await
    .ok()?
    .ok()?;
    Some(list.items.len() as f64)
}

/// The counters of the churn at the previous sample.
#[derive(Debug, Clone, Copy)]
pub struct Previous {
    at: Instant,
    creates: u64,
    deletes: u64,
}

impl Previous {
    pub fn now(counters: &ChurnCounters) -> Previous {
        Previous {
            at: Instant::now(),
            creates: counters.creates.load(Ordering::Relaxed),
            deletes: counters.deletes.load(Ordering::Relaxed),
        }
    }
}

/// Takes one sample: values in [`columns`] order (`None` where a figure
/// could not be read).
pub async fn take(
    cluster: &Cluster,
    columns: &[Column],
    counters: &ChurnCounters,
    previous: &mut Previous,
) -> Vec<Option<f64>> {
    let started = Instant::now();
    let mut values: std::collections::HashMap<String, Option<f64>> =
        std::collections::HashMap::new();
    let mut put = |name: &str, v: Option<f64>| {
        values.insert(name.to_string(), v);
    };

    // Storage: the largest database of the members; the revision of the
    // first that answers.
    let mut db_size: Option<f64> = None;
    let mut in_use: Option<f64> = None;
    let mut revision: Option<i64> = None;
    let mut answering: Option<&Channel> = None;
    for channel in &cluster.storage {
        let mut client = MaintenanceClient::new(channel.clone());
        let call = client.status(StatusRequest {});
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(20), call).await {
            let s = s.into_inner();
            db_size = Some(db_size.unwrap_or(0.0).max(s.db_size as f64));
            in_use = Some(in_use.unwrap_or(0.0).max(s.db_size_in_use as f64));
            if revision.is_none() {
                revision = s.header.map(|h| h.revision);
                answering = Some(channel);
            }
        }
    }
    put("db_size_bytes", db_size);
    put("db_size_in_use_bytes", in_use);
    put("revision", revision.map(|r| r as f64));
    match (answering, revision) {
        (Some(channel), Some(rev)) => {
            put("compact_revision", compact_revision(channel, rev).await);
            put("storage_keys", count_keys(channel, "/registry/").await);
            put(
                "storage_events",
                count_keys(channel, "/registry/events/").await,
            );
            put("storage_pods", count_keys(channel, "/registry/pods/").await);
            let alarms = MaintenanceClient::new(channel.clone())
                .alarm(AlarmRequest::default())
                .await
                .ok()
                .map(|a| {
                    a.into_inner()
                        .alarms
                        .iter()
                        .filter(|m| m.alarm == AlarmType::Nospace as i32)
                        .count() as f64
                });
            put(NOSPACE, alarms);
        }
        _ => {
            for c in [
                "compact_revision",
                "storage_keys",
                "storage_events",
                "storage_pods",
                NOSPACE,
            ] {
                put(c, None);
            }
        }
    }

    for m in &cluster.members {
        put(
            &format!("rss_{}_bytes", m.name.replace('-', "_")),
            m.pid.and_then(rss_bytes),
        );
    }
    let pids = cluster.pids;
    put("rss_apiserver_bytes", pids.apiserver.and_then(rss_bytes));
    put(
        "rss_controller_manager_bytes",
        pids.controller_manager.and_then(rss_bytes),
    );
    put("rss_scheduler_bytes", pids.scheduler.and_then(rss_bytes));
    put("rss_kubelet_bytes", pids.kubelet.and_then(rss_bytes));

    let sum = |sub: &[&str]| -> Option<f64> {
        let mut total = None;
        for m in &cluster.members {
            let mut path = m.dir.join("member");
            for s in sub {
                path = path.join(s);
            }
            if let Some(v) = disk_usage(&path) {
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
        total
    };
    put("wal_disk_bytes", sum(&["raft", "wal"]));
    put("snap_disk_bytes", sum(&["raft", "snap"]));
    put("kv_disk_bytes", sum(&["kv"]));
    // No directory: nothing written there yet (the sim runtime writes no
    // container files), so nothing used.
    put(
        "component_log_disk_bytes",
        disk_usage(&cluster.data_dir.join("logs")).or(Some(0.0)),
    );
    put(
        "kubelet_disk_bytes",
        disk_usage(&cluster.data_dir.join("kubelet")).or(Some(0.0)),
    );

    let client = cluster.client();
    let pods = cached::<Pod>(&client).await;
    let events = cached::<Event>(&client).await;
    let others = [
        cached::<k8s_openapi::api::core::v1::Node>(&client).await,
        cached::<Lease>(&client).await,
        cached::<ReplicaSet>(&client).await,
        cached::<Deployment>(&client).await,
    ];
    let all = [pods, events]
        .into_iter()
        .chain(others)
        .try_fold(0.0, |acc, v| v.map(|v| acc + v));
    put("cache_objects", all);
    put("cache_pods", pods);
    put("cache_events", events);
    put(
        NOT_READY,
        node_readiness(&client)
            .await
            .ok()
            .map(|(ready, all)| all.max(cluster.nodes).saturating_sub(ready) as f64),
    );

    let now = Previous::now(counters);
    let secs = now.at.duration_since(previous.at).as_secs_f64().max(1e-3);
    put(
        "pod_creates_per_s",
        Some((now.creates - previous.creates) as f64 / secs),
    );
    put(
        "pod_deletes_per_s",
        Some((now.deletes - previous.deletes) as f64 / secs),
    );
    *previous = now;
    put(
        "pod_watch_relists",
        Some(counters.relists.load(Ordering::Relaxed) as f64),
    );
    put(
        "churn_errors",
        Some(counters.errors.load(Ordering::Relaxed) as f64),
    );
    put("sample_ms", Some(started.elapsed().as_millis() as f64));
    columns
        .iter()
        .map(|c| values.get(&c.name).copied().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tballast\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(123456.0 * 1024.0));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0.0);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn disk_usage_counts_files_below() {
        let dir = std::env::temp_dir().join(format!("ballast-soak-du-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let empty = disk_usage(&dir).unwrap();
        std::fs::write(dir.join("a/b/f"), vec![7u8; 64 * 1024]).unwrap();
        let full = disk_usage(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(full - empty >= 64.0 * 1024.0, "{empty} → {full}");
        assert_eq!(disk_usage(&dir), None);
    }
}
