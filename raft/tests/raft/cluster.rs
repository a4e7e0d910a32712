//! Cluster scenarios on the in-memory network: elections, failover,
//! partitions, restarts, snapshots, membership, leader transfer.
//!
//! Tests run one at a time (`SERIAL`): each starts several nodes with 50 ms
//! ticks, and on a loaded 2-core machine parallel clusters would starve each
//! other's timers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{acked_writer, nodes_of, shared_nodes, SERIAL};
use ballast_raft::testing::{encode_append, Cluster, ClusterConfig};
use ballast_raft::{Error, Role};

const LEADER_WAIT: Duration = Duration::from_secs(15);
const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, ClusterConfig::default())
        .await
        .unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();

    for v in 0..20 {
        assert_eq!(c.append(1, v).await.unwrap(), v + 1);
    }
    // Concurrent proposals are batched; each still gets its own answer.
    let node = c.node(leader).unwrap();
    let answers = futures::future::join_all((100..164).map(|v| {
        let node = node.clone();
        async move { node.propose(encode_append(2, v)).await }
    }))
    .await;
    let mut lens: Vec<u64> = answers.into_iter().map(|r| r.unwrap()).collect();
    lens.sort_unstable();
    assert_eq!(lens, (1..=64).collect::<Vec<_>>());

    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&1], (0..20).collect::<Vec<_>>());
    assert_eq!(state.data[&2].len(), 64);
    for id in 1..=3 {
        assert_eq!(c.read(id, 1).await.unwrap().len(), 20, "read on node {id}");
    }

    // A follower forwards proposals to the leader and answers with what its
    // own state machine applied; concurrent ones each get their own answer.
    let follower = c.node((1..=3).find(|&id| id != leader).unwrap()).unwrap();
    assert_eq!(follower.propose(encode_append(1, 999)).await.unwrap(), 21);
    let answers = futures::future::join_all((0..32).map(|v| {
        let follower = follower.clone();
        async move { follower.propose(encode_append(3, v)).await }
    }))
    .await;
    let mut lens: Vec<u64> = answers.into_iter().map(|r| r.unwrap()).collect();
    lens.sort_unstable();
    assert_eq!(lens, (1..=32).collect::<Vec<_>>());
    assert_eq!(follower.metrics().proposals_forwarded, 33);
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&1].len(), 21);
    assert_eq!(state.data[&3].len(), 32);

    let members = node.members();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].context, b"node1");
    let m = node.metrics();
    assert!(m.proposals_committed >= 84, "{m:?}");
    assert!(m.leader_changes >= 1);
    assert_eq!(node.status().role, Role::Leader);
    // The applier runs behind the driver; it catches up with every commit.
    let mut status = node.subscribe();
    tokio::time::timeout(
        CONVERGE,
        status.wait_for(|s| s.applied_index >= s.commit_index),
    )
    .await
    .expect("the leader applies everything it committed")
    .unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path(), 3, ClusterConfig::default())
        .await
        .unwrap();
    let old = c.wait_leader(LEADER_WAIT).await.unwrap();
    for v in 0..30 {
        c.append(1, v).await.unwrap();
    }
    c.kill(old).await.unwrap();
    let started = tokio::time::Instant::now();
    let new = c.wait_leader(LEADER_WAIT).await.unwrap();
    assert_ne!(new, old);
    // Election timeout is 10 ticks of 50 ms (randomized up to 2x).
    assert!(started.elapsed() < Duration::from_secs(10));
    for v in 30..60 {
        c.append(1, v).await.unwrap();
    }
    c.start_node(old).unwrap();
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&1], (0..60).collect::<Vec<_>>());
    assert_eq!(c.read(old, 1).await.unwrap().len(), 60);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_cannot_commit_and_everyone_converges_after_healing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, ClusterConfig::default())
        .await
        .unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    c.append(1, 1).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    c.net().isolate(leader, &others);

    // The isolated leader accepts the proposal but cannot commit it.
    let isolated = c.node(leader).unwrap();
    let stuck = tokio::spawn(async move { isolated.propose(encode_append(1, 666)).await });

    let new = c.wait_leader_among(&others, LEADER_WAIT).await.unwrap();
    assert_ne!(new, leader);
    for v in 2..12 {
        c.append(1, v).await.unwrap();
    }
    // A read on the minority side cannot complete either.
    let minority_read =
        tokio::time::timeout(Duration::from_secs(2), c.node(leader).unwrap().read_index()).await;
    assert!(!matches!(minority_read, Ok(Ok(_))), "{minority_read:?}");

    c.net().heal();
    let outcome = stuck.await.unwrap();
    assert!(
        matches!(outcome, Err(Error::ProposalDropped | Error::Timeout)),
        "{outcome:?}"
    );
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&1], (1..12).collect::<Vec<_>>());
    assert!(!state.data[&1].contains(&666));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_and_whole_cluster_restart_from_disk() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        flush_every: 7, // state machines come back behind and replay
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start(dir.path(), 3, cfg).await.unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    for v in 0..50 {
        c.append(1, v).await.unwrap();
    }
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.kill(follower).await.unwrap();
    for v in 50..70 {
        c.append(1, v).await.unwrap();
    }
    c.start_node(follower).unwrap();
    c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(c.read(follower, 1).await.unwrap().len(), 70);

    for id in 1..=3 {
        c.kill(id).await.unwrap();
    }
    for id in 1..=3 {
        c.start_node(id).unwrap();
    }
    c.wait_leader(LEADER_WAIT).await.unwrap();
    for v in 70..80 {
        c.append(1, v).await.unwrap();
    }
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&1], (0..80).collect::<Vec<_>>());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        snapshot_count: 50,
        snapshot_catch_up_entries: 10,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start(dir.path(), 3, cfg).await.unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&id| id != lagging).collect();
    c.net().isolate(lagging, &others);
    let node = c.node(leader).unwrap();
    for chunk in 0..10u64 {
        let batch = (0..30).map(|i| {
            let node = node.clone();
            async move { node.propose(encode_append(chunk, i)).await }
        });
        for r in futures::future::join_all(batch).await {
            r.unwrap();
        }
    }
    // The applier checkpoints right after answering the batch's proposers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.metrics().checkpoints == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Checkpoints build no image: the leader takes one only when the
    // lagging follower needs it.
    assert_eq!(node.metrics().snapshots_created, 0);
    // The applier counts the checkpoint before the driver compacts the log;
    // a few more committed rounds give the driver those turns, so the
    // lagging follower cannot be served from the log.
    for i in 0..5 {
        node.propose(encode_append(10, i)).await.unwrap();
    }
    c.net().heal();
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data.values().map(Vec::len).sum::<usize>(), 305);
    let lag = c.node(lagging).unwrap();
    assert!(node.metrics().snapshots_created >= 1);
    assert!(
        lag.metrics().snapshots_applied >= 1,
        "the follower should have caught up by snapshot: {:?}",
        lag.metrics()
    );
    // Restarting it recovers from its snapshot file and log.
    c.restart(lagging).await.unwrap();
    c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(c.read(lagging, 9).await.unwrap().len(), 30);
    // The other follower compacted its log at its own checkpoint and never
    // took a snapshot: it recovers from its synced state and the log.
    let other = (1..=3).find(|&id| id != leader && id != lagging).unwrap();
    let other_node = c.node(other).unwrap();
    assert!(other_node.metrics().checkpoints >= 1);
    assert_eq!(other_node.metrics().snapshots_created, 0);
    c.restart(other).await.unwrap();
    c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(c.read(other, 9).await.unwrap().len(), 30);
    // Its state machine's data lost: the log below the checkpoint is gone,
    // so the node refuses to start rather than skip those entries.
    c.kill(other).await.unwrap();
    std::fs::remove_dir_all(c.node_dir(other).join("kv")).unwrap();
    match c.start_node(other) {
        Err(Error::Corrupt(m)) => {
            assert!(m.contains("below the compacted log"), "{m}")
        }
        other => panic!("expected a corrupt-state error, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_three_to_five_to_three_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        snapshot_count: 100,
        snapshot_catch_up_entries: 20,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::start(dir.path(), 3, cfg).await.unwrap();
    c.wait_leader(LEADER_WAIT).await.unwrap();
    for v in 0..150 {
        c.append(9, v).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let nodes = shared_nodes(&c);
    let writer = acked_writer(nodes.clone(), 1, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3 -> 5: one learner promoted, one voter added directly.
    c.add_node(4, true).await.unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    c.node(leader).unwrap().promote_learner(4).await.unwrap();
    c.add_node(5, false).await.unwrap();
    *nodes.write() = nodes_of(&c);
    let voters: BTreeSet<u64> = c
        .node(leader)
        .unwrap()
        .members()
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters, (1..=5).collect());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 5 -> 3, moving leadership away from a node before removing it.
    for id in [1, 2] {
        let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
        if leader == id {
            c.node(leader).unwrap().transfer_leader(3).await.unwrap();
        }
        c.remove_node(id).await.unwrap();
        *nodes.write() = nodes_of(&c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 5, "the writer made progress: {}", acked.len());

    assert_eq!(c.live(), vec![3, 4, 5]);
    let state = c.wait_converged(CONVERGE).await.unwrap();
    assert_eq!(state.data[&9].len(), 150);
    let list = &state.data[&1];
    for v in &acked {
        assert!(list.contains(v), "acknowledged write {v} lost");
    }
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    let ids: Vec<u64> = c
        .node(leader)
        .unwrap()
        .members()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
    assert_eq!(c.node(4).unwrap().members()[1].context, b"node4");
    // The new members joined by snapshot.
    assert!(c.node(5).unwrap().metrics().snapshots_applied >= 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_under_load() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, ClusterConfig::default())
        .await
        .unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = acked_writer(shared_nodes(&c), 1, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = (1..=3).find(|&id| id != leader).unwrap();
    c.node(leader)
        .unwrap()
        .transfer_leader(target)
        .await
        .unwrap();
    assert_eq!(c.wait_leader(LEADER_WAIT).await.unwrap(), target);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty());
    let state = c.wait_converged(CONVERGE).await.unwrap();
    for v in &acked {
        assert!(state.data[&1].contains(v), "acknowledged write {v} lost");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_are_validated() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path(), 3, ClusterConfig::default())
        .await
        .unwrap();
    let leader = c.wait_leader(LEADER_WAIT).await.unwrap();
    let node = c.node(leader).unwrap();
    assert!(matches!(
        node.add_member(2, vec![]).await,
        Err(Error::ConfChange(_))
    ));
    assert!(matches!(
        node.promote_learner(3).await,
        Err(Error::ConfChange(_))
    ));
    assert!(matches!(
        node.remove_member(42).await,
        Err(Error::ConfChange(_))
    ));
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    assert!(matches!(
        c.node(follower).unwrap().add_member(4, vec![]).await,
        Err(Error::NotLeader { .. })
    ));
    c.shutdown().await;
}
