//! A one-member cluster driven through the generated etcd clients.

use crate::common;

use std::time::Duration;

use ballast_server::pb::etcdserverpb as pb;
use ballast_server::pb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    watch_client::WatchClient,
};
use ballast_server::{ServerConfig, StorageServer};
use tonic::transport::Channel;

async fn start() -> (StorageServer, Channel, tempfile::TempDir) {
    start_with(|_| {}).await
}

async fn start_with(
    tune: impl FnOnce(&mut ServerConfig),
) -> (StorageServer, Channel, tempfile::TempDir) {
    let (server, dir) = common::start_member(tune).await;
    let addr = server.client_addrs()[0];
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (server, channel, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_status_hash_watch_lease() {
    let (server, ch, _dir) = start().await;
    let mut kv = KvClient::new(ch.clone());
    let put = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Like etcd, a new store is at revision 1: the first write is 2.
    assert_eq!(put.header.unwrap().revision, 2);
    let got = kv
        .range(pb::RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs[0].value, b"v");

    let mut m = MaintenanceClient::new(ch.clone());
    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.leader, server.node().member_id());
    assert!(st.version.starts_with("3.5"));
    let h = m
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.hash_revision, 2);
    assert_eq!(
        h.compact_revision, -1,
        "never compacted, as etcd reports it"
    );

    let mut leases = LeaseClient::new(ch.clone());
    let g = leases
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(g.id > 0);
    let missing = leases
        .lease_revoke(pb::LeaseRevokeRequest { id: 12345 })
        .await
        .unwrap_err();
    assert_eq!(missing.message(), "etcdserver: requested lease not found");

    let mut w = WatchClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 2,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    let ev = stream.message().await.unwrap().unwrap();
    assert_eq!(ev.events[0].kv.as_ref().unwrap().mod_revision, 2);
    server.shutdown().await;
}

/// Past the backend quota the NOSPACE alarm is raised: writes that add
/// data are refused with etcd's error; reads and deletes still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_past_the_quota() {
    let (server, ch, _dir) = start_with(|c| c.quota_backend_bytes = 4 << 20).await;
    let mut kv = KvClient::new(ch.clone());
    let value = vec![b'x'; 256 * 1024];
    let mut refused = None;
    for i in 0..200 {
        let put = pb::PutRequest {
            key: format!("big/{i}").into_bytes(),
            value: value.clone(),
            ..Default::default()
        };
        if let Err(status) = kv.put(put).await {
            refused = Some(status);
            break;
        }
        // Give the leader's quota check (every 500 ms) a chance to run.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let status = refused.expect("writes past the quota were never refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );

    let mut m = MaintenanceClient::new(ch.clone());
    let alarms = m
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert_eq!(alarms.len(), 1);
    assert_eq!(alarms[0].alarm, pb::AlarmType::Nospace as i32);
    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(
        st.errors.iter().any(|e| e.contains("NOSPACE")),
        "{:?}",
        st.errors
    );

    // Reads and deletes are still served.
    let got = kv
        .range(pb::RangeRequest {
            key: b"big/0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs.len(), 1);
    let del = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.deleted > 0);
    server.shutdown().await;
}
