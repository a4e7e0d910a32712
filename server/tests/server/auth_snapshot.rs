//! The auth state travels in raft snapshots: a member that joins after the
//! log was compacted catches up from a snapshot and then knows the users,
//! the roles and that auth is on.

use crate::common;

use crate::common::{channel, login, with_token};

use std::time::Duration;

use ballast_server::pb::authpb::{permission::Type, Permission};
use ballast_server::pb::etcdserverpb as pb;
use ballast_server::pb::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
};
use ballast_server::{ClusterState, ServerConfig, StorageServer};
use tonic::Code;

fn free_peer_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_member_learns_auth_from_a_snapshot() {
    let (first, _dir0) = common::start_member(|c| c.snapshot_count = 4).await;
    let ch = channel(&first).await;
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
    auth.role_add(pb::AuthRoleAddRequest { name: "ro".into() })
        .await
        .unwrap();
    auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
        name: "ro".into(),
        perm: Some(Permission {
            perm_type: Type::Read as i32,
            key: b"/a".to_vec(),
            range_end: b"/b".to_vec(),
        }),
    })
    .await
    .unwrap();
    for (user, role) in [("root", "root"), ("alice", "ro")] {
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .unwrap();
    }
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    let root = login(&ch, "root", "rootpw").await.unwrap();

    // Enough writes that the log before them is compacted away.
    let mut kv = KvClient::new(ch.clone());
    for i in 0..20 {
        let put = pb::PutRequest {
            key: format!("/a/{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        kv.put(with_token(put, &root)).await.unwrap();
    }

    // A learner joins and can only catch up from a snapshot.
    let dir1 = tempfile::tempdir().unwrap();
    let peer1 = free_peer_url();
    let add = pb::MemberAddRequest {
        peer_ur_ls: vec![peer1.clone()],
        // A learner: a voter would leave a two-voter cluster without quorum.
        is_learner: true,
    };
    let added = ClusterClient::new(ch.clone())
        .member_add(with_token(add, &root))
        .await
        .unwrap()
        .into_inner();
    let mut config = ServerConfig::new("m1", dir1.path());
    config.listen_client_urls = vec!["http://127.0.0.1:0".into()];
    config.advertise_client_urls = vec!["http://127.0.0.1:0".into()];
    config.listen_peer_urls = vec![peer1.clone()];
    config.initial_advertise_peer_urls = vec![peer1.clone()];
    config.initial_cluster = added
        .members
        .iter()
        .map(|m| {
            let name = if m.name.is_empty() { "m1" } else { &m.name };
            (name.to_string(), m.peer_ur_ls[0].clone())
        })
        .collect();
    config.initial_cluster_state = ClusterState::Existing;
    let second = StorageServer::start(config).await.unwrap();
    let ch1 = channel(&second).await;
    let mut kv1 = KvClient::new(ch1.clone());

    // Wait (bounded) until the new member holds the data.
    let read = |key: &str| pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable: true,
        ..Default::default()
    };
    // Tokens live in memory, not in snapshots: log in through the new
    // member (the Authenticate entry reaches it through the log).
    let mut last = None;
    for _ in 0..200 {
        let got = match login(&ch1, "root", "rootpw").await {
            Ok(token) => kv1.range(with_token(read("/a/19"), &token)).await,
            Err(e) => Err(e),
        };
        match got {
            Ok(r) if r.get_ref().count == 1 => {
                last = None;
                break;
            }
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = last.is_none();
    assert!(caught_up, "the new member never caught up: {last:?}");
    assert!(
        dir1.path().join("member/auth.pb").exists(),
        "the restored auth state is saved"
    );

    // It enforces what it learned.
    let anonymous = kv1.range(read("/a/1")).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::InvalidArgument);
    assert_eq!(anonymous.message(), "etcdserver: user name is empty");
    let alice = login(&ch1, "alice", "apw").await.unwrap();
    let got = kv1
        .range(with_token(read("/a/1"), &alice))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.count, 1);
    let put = pb::PutRequest {
        key: b"/a/1".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    };
    let denied = kv1.put(with_token(put, &alice)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "etcdserver: permission denied");
    let bad = login(&ch1, "alice", "wrong").await.unwrap_err();
    assert_eq!(
        bad.message(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
    let forged = kv1
        .range(with_token(read("/a/1"), "forged.1"))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    assert_eq!(forged.message(), "etcdserver: invalid auth token");

    second.shutdown().await;
    first.shutdown().await;
}
