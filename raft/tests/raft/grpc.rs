//! Three nodes over the real gRPC transport on 127.0.0.1, plus a fourth
//! that joins through a chunked snapshot.

use std::time::Duration;

use ballast_raft::testing::{encode_append, KvReader, KvStateMachine};
use ballast_raft::{
    grpc_service, ClusterState, GrpcTransport, GrpcTransportConfig, Member, NodeConfig,
    NodeJoinHandle, RaftNode, Role,
};
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};
use tokio_stream::wrappers::TcpListenerStream;

struct Node {
    node: RaftNode<KvStateMachine>,
    join: NodeJoinHandle,
    reader: KvReader,
    server: tokio::task::JoinHandle<()>,
    stop_server: tokio::sync::oneshot::Sender<()>,
}

impl Node {
    /// Stops the raft node and its peer listener.
    async fn stop(self) {
        self.node.shutdown().await;
        tokio::time::timeout(Duration::from_secs(20), self.join)
            .await
            .expect("node stops")
            .expect("node stopped cleanly");
        // Graceful shutdown waits for the peers' long-lived streams; give it
        // a moment, then drop the listener regardless.
        let _ = self.stop_server.send(());
        let server = self.server;
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

async fn start(
    id: u64,
    dir: &std::path::Path,
    listener: TcpListener,
    peers: Vec<Member>,
    state: ClusterState,
) -> Node {
    let transport = GrpcTransport::new(
        id,
        GrpcTransportConfig {
            snapshot_chunk_bytes: 1024, // force several chunks
            ..GrpcTransportConfig::default()
        },
    )
    .unwrap();
    let mut cfg = NodeConfig::new(id, dir.join(format!("n{id}/raft")));
    cfg.initial_peers = peers;
    cfg.initial_cluster_state = state;
    cfg.tick_interval = Duration::from_millis(50);
    cfg.snapshot_count = 100;
    cfg.snapshot_catch_up_entries = 10;
    let (sm, reader) = KvStateMachine::open(&dir.join(format!("n{id}/kv")), 16).unwrap();
    let (node, join) = RaftNode::start(cfg, sm, transport).unwrap();
    let svc = grpc_service(node.inbox());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    Node {
        node,
        join,
        reader,
        server,
        stop_server,
    }
}

async fn leader_of(nodes: &[&Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = nodes.iter().find(|n| n.node.status().role == Role::Leader) {
            return n.node.id();
        }
        assert!(Instant::now() < deadline, "no leader elected over gRPC");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_commit_and_a_fourth_joins_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    for id in 1..=4u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        peers.push(Member::voter(id, format!("http://{addr}")));
        listeners.push(l);
    }
    let fourth = peers.pop().unwrap();
    let l4 = listeners.pop().unwrap();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(
            start(
                i as u64 + 1,
                dir.path(),
                l,
                peers.clone(),
                ClusterState::New,
            )
            .await,
        );
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let leader = leader_of(&refs).await;
    let leader_node = nodes[leader as usize - 1].node.clone();

    let writes = (0..300u64).map(|v| {
        let n = leader_node.clone();
        async move { n.propose(encode_append(v % 3, v)).await }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    // The applier checkpoints right after answering the batch's proposers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_node.metrics().checkpoints == 0 {
        assert!(Instant::now() < deadline, "the leader never checkpointed");
        sleep(Duration::from_millis(20)).await;
    }

    // A fourth node joins; the log was compacted, so it needs a snapshot.
    leader_node
        .add_member(fourth.id, fourth.context.clone())
        .await
        .unwrap();
    let mut all = peers.clone();
    all.push(fourth.clone());
    nodes.push(start(4, dir.path(), l4, all, ClusterState::Existing).await);
    for v in 300..320u64 {
        leader_node.propose(encode_append(0, v)).await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<_> = nodes.iter().map(|n| n.reader.state()).collect();
        let total: usize = states[0].data.values().map(Vec::len).sum();
        if total == 320 && states.iter().all(|s| s == &states[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {:?}",
            states.iter().map(|s| s.applied).collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(nodes[3].node.metrics().snapshots_applied >= 1);
    // Linearizable reads through a follower.
    let follower = nodes.iter().find(|n| n.node.id() != leader).unwrap();
    follower.node.read_index().await.unwrap();
    assert_eq!(follower.reader.get(1).len(), 100);

    for n in nodes {
        n.stop().await;
    }
}

async fn wait_all_have(nodes: &[&Node], total: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<_> = nodes.iter().map(|n| n.reader.state()).collect();
        let have: Vec<usize> = states
            .iter()
            .map(|s| s.data.values().map(Vec::len).sum())
            .collect();
        if have.iter().all(|&h| h == total) && states.iter().all(|s| s == &states[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "no convergence: {have:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_peers_reconnect_to_a_restarted_follower() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        peers.push(Member::voter(id, format!("http://{addr}")));
        addrs.push(addr);
        listeners.push(l);
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(Some(
            start(
                i as u64 + 1,
                dir.path(),
                l,
                peers.clone(),
                ClusterState::New,
            )
            .await,
        ));
    }
    let refs: Vec<&Node> = nodes.iter().flatten().collect();
    let leader = leader_of(&refs).await;
    let leader_node = refs[leader as usize - 1].node.clone();
    for v in 0..50u64 {
        leader_node.propose(encode_append(1, v)).await.unwrap();
    }

    // Stop a follower (node and listener); the other two keep committing.
    let f = (1..=3u64).find(|&id| id != leader).unwrap();
    nodes[f as usize - 1].take().unwrap().stop().await;
    for v in 50..100u64 {
        leader_node.propose(encode_append(1, v)).await.unwrap();
    }

    // It comes back on the same address; the leader's sender reconnects.
    let l = TcpListener::bind(addrs[f as usize - 1]).await.unwrap();
    nodes[f as usize - 1] = Some(start(f, dir.path(), l, peers.clone(), ClusterState::New).await);
    let refs: Vec<&Node> = nodes.iter().flatten().collect();
    wait_all_have(&refs, 100).await;
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}
