//! The peer port serves members, not clients: raft traffic, the internal
//! service and forwarded membership changes, but no Maintenance (snapshot,
//! defragment, alarms) that would bypass the client port's TLS and auth.
//! And MoveLeader, like etcd's, is for root only once auth is on; the
//! member's directory is its owner's alone.

use crate::common;

use crate::common::{channel, login, with_token};

use ballast_server::pb::etcdserverpb as pb;
use ballast_server::pb::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, maintenance_client::MaintenanceClient,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_port_serves_no_maintenance_and_move_leader_needs_root() {
    let (server, dir) = common::start_member(|_| {}).await;
    {
        use std::os::unix::fs::PermissionsExt;
        let member = std::fs::metadata(dir.path().join("member")).unwrap();
        assert_eq!(member.permissions().mode() & 0o777, 0o700);
    }
    let peer = tonic::transport::Channel::from_shared(format!("http://{}", server.peer_addrs()[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut maint = MaintenanceClient::new(peer.clone());
    let snapshot = maint.snapshot(pb::SnapshotRequest {}).await;
    assert_eq!(snapshot.err().map(|e| e.code()), Some(Code::Unimplemented));
    let alarm = maint
        .alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: server.node().member_id(),
            alarm: pb::AlarmType::Nospace as i32,
        })
        .await;
    assert_eq!(alarm.err().map(|e| e.code()), Some(Code::Unimplemented));
    let defrag = maint.defragment(pb::DefragmentRequest {}).await;
    assert_eq!(defrag.err().map(|e| e.code()), Some(Code::Unimplemented));
    // What members do use there still answers.
    let members = ClusterClient::new(peer)
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 1);

    // Auth on: MoveLeader is root's (etcd's authMaintenanceServer).
    let ch = channel(&server).await;
    let mut auth = AuthClient::new(ch.clone());
    for name in ["root", "alice"] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: "pw".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .unwrap();
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    let me = server.node().member_id();
    let mut maint = MaintenanceClient::new(ch.clone());
    let alice = login(&ch, "alice", "pw").await.unwrap();
    let denied = maint
        .move_leader(with_token(pb::MoveLeaderRequest { target_id: me }, &alice))
        .await
        .unwrap_err();
    // etcd 3.4 answers its maintenance auth errors raw (code Unknown).
    assert_eq!(denied.message(), "auth: permission denied", "{denied:?}");
    let anonymous = maint
        .move_leader(pb::MoveLeaderRequest { target_id: me })
        .await
        .unwrap_err();
    assert_ne!(anonymous.code(), Code::Ok);
    let root = login(&ch, "root", "pw").await.unwrap();
    maint
        .move_leader(with_token(pb::MoveLeaderRequest { target_id: me }, &root))
        .await
        .unwrap();
}
