//! Ballast's generated etcd v3 gRPC clients (`ballast_proto`) against a
//! real cluster: proves the `.proto` files match the wire (method paths,
//! field numbers, oneofs, enums) and records the gRPC status codes and
//! messages of etcd's errors. Same kind-per-module layout as the etcdctl
//! suite: add `wire_suite!(ballast, ClusterKind::Ballast);` for Ballast.

use std::time::Duration;

use ballast_proto::etcdserverpb::{
    alarm_request::AlarmAction, cluster_client::ClusterClient, compare, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, range_request, request_op,
    response_op, watch_client::WatchClient, watch_request, AlarmRequest, Compare,
    DeleteRangeRequest, HashKvRequest, LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader,
    StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use ballast_proto::mvccpb::event::EventType;
use ballast_tests::{Cluster, ClusterKind};
use tonic::transport::Channel;
use tonic::Code;

/// `kv_txn_watch` counts and watches everything under this prefix.
const PREFIX: &[u8] = b"grpc_wire/kv/";
const LEASED: &[u8] = b"grpc_wire/lease/k";

fn key(name: &str) -> Vec<u8> {
    [PREFIX, name.as_bytes()].concat()
}

/// `prefix` + 1 in the last byte: the etcd range end of a prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

#[track_caller]
fn check_header(h: Option<&ResponseHeader>) -> &ResponseHeader {
    let h = h.expect("response header");
    assert!(
        h.cluster_id != 0 && h.member_id != 0 && h.raft_term != 0,
        "{h:?}"
    );
    h
}

async fn connect(cluster: &Cluster) -> Channel {
    let url = cluster.member(0).client_url();
    Channel::from_shared(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

pub async fn kv_txn_watch(cluster: &Cluster) {
    let ch = connect(cluster).await;
    let mut kv = KvClient::new(ch.clone());

    let put = kv
        .put(PutRequest {
            key: key("a"),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    let first = check_header(put.header.as_ref()).revision;
    assert!(first > 0);
    assert!(put.prev_kv.is_none());

    let put2 = kv
        .put(PutRequest {
            key: key("a"),
            value: b"2".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("put prev_kv")
        .into_inner();
    let prev = put2.prev_kv.expect("prev_kv");
    assert_eq!(
        (prev.value.as_slice(), prev.version, prev.mod_revision),
        (&b"1"[..], 1, first)
    );

    // Create-if-absent (the apiserver's pattern): CREATE(b) == 0 → put.
    let create_b = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key("b"),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key("b"),
                value: b"x".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key("b"),
                ..Default::default()
            })),
        }],
    };
    let t = kv.txn(create_b.clone()).await.expect("txn").into_inner();
    assert!(t.succeeded);
    let b_rev = check_header(t.header.as_ref()).revision;
    assert!(matches!(
        t.responses[0].response,
        Some(response_op::Response::ResponsePut(_))
    ));
    let t = kv.txn(create_b).await.expect("txn again").into_inner();
    assert!(!t.succeeded);
    match &t.responses[0].response {
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(r.kvs[0].value, b"x");
            assert_eq!(r.kvs[0].create_revision, b_rev);
        }
        other => panic!("expected a range response, got {other:?}"),
    }

    // Sorted, limited prefix range.
    let r = kv
        .range(RangeRequest {
            key: PREFIX.to_vec(),
            range_end: prefix_end(PREFIX),
            limit: 1,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Key as i32,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!((r.count, r.more, r.kvs.len()), (2, true, 1));
    assert_eq!(r.kvs[0].key, key("b"));
    let r = kv
        .range(RangeRequest {
            key: PREFIX.to_vec(),
            range_end: prefix_end(PREFIX),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!((r.count, r.kvs.len()), (2, 0));

    let d = kv
        .delete_range(DeleteRangeRequest {
            key: key("b"),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(d.deleted, 1);
    assert_eq!(d.prev_kvs[0].value, b"x");

    // Errors: gRPC codes and messages as etcd sends them.
    let err = kv
        .range(RangeRequest {
            key: key("a"),
            revision: first + 1_000_000,
            ..Default::default()
        })
        .await
        .expect_err("future revision");
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let err = kv.put(PutRequest::default()).await.expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "etcdserver: key is not provided");

    // Watch from the first revision: a created response, then the history.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: PREFIX.to_vec(),
                range_end: prefix_end(PREFIX),
                start_revision: first,
                prev_kv: true,
                watch_id: 7,
                ..Default::default()
            },
        )),
    })
    .await
    .expect("send create");
    let mut stream = WatchClient::new(ch.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let mut created = false;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < 4 {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("watch events in time")
            .expect("watch stream")
            .expect("watch stream open");
        check_header(msg.header.as_ref());
        assert_eq!(msg.watch_id, 7);
        assert!(!msg.canceled, "{msg:?}");
        created |= msg.created;
        events.extend(msg.events);
    }
    assert!(created, "no created response");
    let summary: Vec<(i32, Vec<u8>, Option<Vec<u8>>)> = events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (
                e.r#type,
                kv.key.clone(),
                e.prev_kv.as_ref().map(|p| p.value.clone()),
            )
        })
        .collect();
    let (put, del) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(
        summary,
        vec![
            (put, key("a"), None),
            (put, key("a"), Some(b"1".to_vec())),
            (put, key("b"), None),
            (del, key("b"), Some(b"x".to_vec())),
        ]
    );
    drop(tx);
}

pub async fn lease_cluster_maintenance(cluster: &Cluster) {
    let ch = connect(cluster).await;
    let mut lease = LeaseClient::new(ch.clone());
    let g = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    check_header(g.header.as_ref());
    assert!(g.id != 0 && g.ttl == 60 && g.error.is_empty(), "{g:?}");
    KvClient::new(ch.clone())
        .put(PutRequest {
            key: LEASED.to_vec(),
            value: b"v".to_vec(),
            lease: g.id,
            ..Default::default()
        })
        .await
        .expect("put with lease");
    let t = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(
        (t.id, t.granted_ttl, t.keys.clone()),
        (g.id, 60, vec![LEASED.to_vec()])
    );
    assert!((55..=60).contains(&t.ttl), "{t:?}");
    let l = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert!(l.leases.iter().any(|s| s.id == g.id), "{l:?}");
    lease
        .lease_revoke(LeaseRevokeRequest { id: g.id })
        .await
        .expect("revoke");
    let err = lease
        .lease_revoke(LeaseRevokeRequest { id: g.id })
        .await
        .expect_err("revoke twice");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    let t = lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
        .await
        .expect("ttl of a revoked lease is not an error")
        .into_inner();
    assert_eq!((t.ttl, t.granted_ttl), (-1, 0));

    let members = ClusterClient::new(ch.clone())
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner();
    let mut names: Vec<&str> = members.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m0", "m1", "m2"]);
    let m0 = members.members.iter().find(|m| m.name == "m0").unwrap();
    assert_eq!(m0.peer_ur_ls, [cluster.member(0).peer_url()]);
    assert_eq!(m0.client_ur_ls, [cluster.member(0).client_url()]);

    let mut maint = MaintenanceClient::new(ch);
    let s = maint
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let h = check_header(s.header.as_ref());
    assert!(members.members.iter().any(|m| m.id == s.leader), "{s:?}");
    assert!(members.members.iter().any(|m| m.id == h.member_id), "{s:?}");
    assert!(s.version.starts_with("3."), "{s:?}");
    assert!(
        s.raft_index > 0 && s.raft_applied_index > 0 && s.db_size > 0,
        "{s:?}"
    );
    let a = maint
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            ..Default::default()
        })
        .await
        .expect("alarm")
        .into_inner();
    assert!(a.alarms.is_empty(), "{a:?}");
    let hk = maint
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("hashkv")
        .into_inner();
    check_header(hk.header.as_ref());
    assert!(hk.hash != 0, "{hk:?}");
}

/// Runs `case` on the kind's shared cluster.
fn run<F: std::future::Future<Output = ()>>(
    kind: ClusterKind,
    case: impl FnOnce(&'static Cluster) -> F,
) {
    block_on(case(Cluster::shared(kind)));
}

macro_rules! wire_suite {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn kv_txn_watch() {
                run($kind, super::kv_txn_watch);
            }

            #[test]
            fn lease_cluster_maintenance() {
                run($kind, super::lease_cluster_maintenance);
            }
        }
    };
}

wire_suite!(etcd, ClusterKind::Etcd);
wire_suite!(ballast, ClusterKind::Ballast);
