//! Process-level faults: the leader of a three-member cluster is killed
//! with SIGKILL under write load and restarted. Every acknowledged write
//! must read back from every member, and every member's HashKV must agree.
//! Runs against Ballast and, as the reference, real etcd.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::{kv_client::KvClient, maintenance_client::MaintenanceClient};
use ballast_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};
use ballast_tests::cluster::{Cluster, ClusterKind};
use tonic::transport::Channel;

const WRITERS: usize = 8;
const PREFIX: &str = "fault/";

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{}", endpoint.trim_start_matches("http://")))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// Writes unique keys until `stop`, rotating endpoints on errors; returns
/// the acknowledged (key, value) pairs.
async fn writer(
    id: usize,
    endpoints: Vec<String>,
    stop: Instant,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) {
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(KvClient::new(channel(e).await));
    }
    let mut target = id % clients.len();
    let mut n = 0u64;
    while Instant::now() < stop {
        let key = format!("{PREFIX}{id}/{n:06}");
        let value = format!("v{n}");
        let put = PutRequest {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
            ..Default::default()
        };
        match clients[target].put(put).await {
            Ok(_) => {
                acked.lock().unwrap().push((key, value));
                n += 1;
            }
            // Outcome unknown or refused: try the next member with a new
            // key (an unacknowledged write may or may not exist).
            Err(_) => {
                target = (target + 1) % clients.len();
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn kill_leader_under_load(kind: ClusterKind) {
    let mut cluster = Cluster::start(kind);
    let endpoints = cluster.endpoints();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(8);
    let handles: Vec<_> = (0..WRITERS)
        .map(|i| rt.spawn(writer(i, endpoints.clone(), stop, acked.clone())))
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    let leader = cluster.leader().expect("a leader before the fault");
    let before = acked.lock().unwrap().len();
    cluster.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(leader);
    for h in handles {
        rt.block_on(h).unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(before > 0, "no write went through before the fault");
    assert!(
        acked.len() > before,
        "no write went through after the fault"
    );
    cluster.wait_healthy(Duration::from_secs(30));

    rt.block_on(async {
        // The revision every member must reach, read through a quorum.
        let mut kv = KvClient::new(channel(&endpoints[0]).await);
        let rev = kv
            .range(RangeRequest {
                key: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        let mut hashes = Vec::new();
        for e in &endpoints {
            let mut m = MaintenanceClient::new(channel(e).await);
            let deadline = Instant::now() + Duration::from_secs(20);
            let hash = loop {
                match m.hash_kv(HashKvRequest { revision: rev }).await {
                    Ok(r) => break r.into_inner().hash,
                    // A member still catching up answers "future revision".
                    Err(s) if Instant::now() < deadline => {
                        let _ = s;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(s) => panic!("{e}: HashKV at {rev}: {s}"),
                }
            };
            hashes.push(hash);

            // Every acknowledged write is on this member (a local read).
            let got = KvClient::new(channel(e).await)
                .range(RangeRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: b"fault0".to_vec(),
                    serializable: true,
                    revision: rev,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let stored: std::collections::HashMap<Vec<u8>, Vec<u8>> =
                got.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            for (k, v) in &acked {
                assert_eq!(
                    stored
                        .get(k.as_bytes())
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                    Some(v.clone()),
                    "{e} lost acknowledged write {k}"
                );
            }
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "members disagree at revision {rev}: {hashes:?}"
        );
    });
    eprintln!(
        "{kind:?}: {} acknowledged writes, {before} before the leader was killed",
        acked.len()
    );
}

#[test]
fn ballast_kill_leader_under_load() {
    kill_leader_under_load(ClusterKind::Ballast);
}

#[test]
fn etcd_kill_leader_under_load() {
    kill_leader_under_load(ClusterKind::Etcd);
}
