//! `LeaseTimeToLive` with `keys` names the keys attached to a lease, so it
//! needs read permission on them when auth is on (etcd's CVE-2023-32082,
//! fixed in etcd 3.4.26; the etcd 3.4 in the comparison suite predates it,
//! so this is checked on Ballast alone).

use crate::common;

use crate::common::{channel, login, with_token};

use ballast_server::pb::authpb::{permission::Type, Permission};
use ballast_server::pb::etcdserverpb as pb;
use ballast_server::pb::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, lease_client::LeaseClient,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keys_need_read_permission() {
    let (server, _dir) = common::start_member(|_| {}).await;
    let ch = channel(&server).await;
    let mut auth = AuthClient::new(ch.clone());
    for (name, password) in [("root", "rootpw"), ("alice", "apw")] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // alice may read /public only.
    auth.role_add(pb::AuthRoleAddRequest { name: "pub".into() })
        .await
        .unwrap();
    auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
        name: "pub".into(),
        perm: Some(Permission {
            perm_type: Type::Read as i32,
            key: b"/public".to_vec(),
            range_end: Vec::new(),
        }),
    })
    .await
    .unwrap();
    for (user, role) in [("root", "root"), ("alice", "pub")] {
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .unwrap();
    }
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    let root = login(&ch, "root", "rootpw").await.unwrap();
    let alice = login(&ch, "alice", "apw").await.unwrap();

    let mut leases = LeaseClient::new(ch.clone());
    let lease = |id| pb::LeaseTimeToLiveRequest { id, keys: true };
    let granted = leases
        .lease_grant(with_token(pb::LeaseGrantRequest { ttl: 60, id: 0 }, &root))
        .await
        .unwrap()
        .into_inner();
    let mut kv = KvClient::new(ch.clone());
    for key in ["/public", "/secret"] {
        let put = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        };
        kv.put(with_token(put, &root)).await.unwrap();
    }

    // root sees both keys; alice may not learn /secret's name.
    let ttl = leases
        .lease_time_to_live(with_token(lease(granted.id), &root))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.keys.len(), 2);
    let refused = leases
        .lease_time_to_live(with_token(lease(granted.id), &alice))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Without `keys` the TTL itself is open to everyone, as in etcd.
    let ttl = leases
        .lease_time_to_live(with_token(
            pb::LeaseTimeToLiveRequest {
                id: granted.id,
                keys: false,
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ttl.ttl > 0 && ttl.keys.is_empty(), "{ttl:?}");
    // Stopped before the process exits: RocksDB aborts the process
    // ("pthread lock: Invalid argument") when it exits with a DB still open
    // in the raft threads.
    server.shutdown().await;
}
