//! An in-process cluster of [`KvStateMachine`] nodes on a [`MemNetwork`],
//! with nodes that can be killed, restarted from disk, added and removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::kv::{encode_append, KvReader, KvState, KvStateMachine};
use crate::config::{ClusterState, NodeConfig};
use crate::error::{Error, Result};
use crate::membership::Member;
use crate::node::{NodeJoinHandle, RaftNode};
use crate::status::Role;
use crate::transport::memory::MemNetwork;

/// How the harness configures its nodes.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Seed of the network's random faults.
    pub seed: u64,
    pub tick_interval: Duration,
    pub election_ticks: usize,
    pub snapshot_count: u64,
    pub snapshot_catch_up_entries: u64,
    /// The KV state machine writes its file every this many entries.
    pub flush_every: u64,
    pub sync_log: bool,
    pub request_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seed: 0,
            tick_interval: Duration::from_millis(50),
            election_ticks: 10,
            snapshot_count: 10_000,
            snapshot_catch_up_entries: 5_000,
            flush_every: 16,
            sync_log: false,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A node of the cluster.
pub type KvNode = RaftNode<KvStateMachine>;

struct Running {
    node: KvNode,
    join: NodeJoinHandle,
    reader: KvReader,
}

struct Slot {
    initial_peers: Vec<Member>,
    cluster_state: ClusterState,
    running: Option<Running>,
}

/// The harness. Node directories live under the base directory given to
/// [`Cluster::start`] (`node<id>/raft`, `node<id>/kv`).
pub struct Cluster {
    base: PathBuf,
    cfg: ClusterConfig,
    net: MemNetwork,
    slots: BTreeMap<u64, Slot>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("live", &self.live())
            .field("seed", &self.cfg.seed)
            .finish()
    }
}

impl Cluster {
    /// Starts a new cluster of nodes `1..=n`. Must run inside a tokio runtime.
    pub async fn start(base: &Path, n: u64, cfg: ClusterConfig) -> Result<Self> {
        let net = MemNetwork::new(cfg.seed);
        let peers: Vec<Member> = (1..=n)
            .map(|id| Member::voter(id, format!("node{id}")))
            .collect();
        let mut cluster = Cluster {
            base: base.to_path_buf(),
            cfg,
            net,
            slots: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.slots.insert(
                id,
                Slot {
                    initial_peers: peers.clone(),
                    cluster_state: ClusterState::New,
                    running: None,
                },
            );
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// The network, for injecting faults.
    pub fn net(&self) -> &MemNetwork {
        &self.net
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// A node's directory.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.base.join(format!("node{id}"))
    }

    /// Starts (or restarts from disk) node `id`.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let dir = self.node_dir(id);
        let slot = self
            .slots
            .get(&id)
            .ok_or_else(|| Error::Config(format!("unknown node {id}")))?;
        if slot.running.is_some() {
            return Ok(());
        }
        let mut cfg = NodeConfig::new(id, dir.join("raft"));
        cfg.initial_peers = slot.initial_peers.clone();
        cfg.initial_cluster_state = slot.cluster_state;
        cfg.tick_interval = self.cfg.tick_interval;
        cfg.election_ticks = self.cfg.election_ticks;
        cfg.snapshot_count = self.cfg.snapshot_count;
        cfg.snapshot_catch_up_entries = self.cfg.snapshot_catch_up_entries;
        cfg.sync_log = self.cfg.sync_log;
        cfg.request_timeout = self.cfg.request_timeout;
        let (sm, reader) = KvStateMachine::open(&dir.join("kv"), self.cfg.flush_every)?;
        let (node, join) = RaftNode::start(cfg, sm, self.net.endpoint(id))?;
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.running = Some(Running { node, join, reader });
        }
        Ok(())
    }

    /// Stops node `id` and waits until its threads are gone (its data stays).
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let Some(running) = self.slots.get_mut(&id).and_then(|s| s.running.take()) else {
            return Ok(());
        };
        running.node.shutdown().await;
        match tokio::time::timeout(Duration::from_secs(20), running.join).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Kills and starts node `id` again from its data.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        self.kill(id).await?;
        self.start_node(id)
    }

    /// Adds node `id` through the leader (as a learner if `learner`), then
    /// starts it empty; it catches up by snapshot.
    pub async fn add_node(&mut self, id: u64, learner: bool) -> Result<()> {
        let context = format!("node{id}").into_bytes();
        let deadline = Instant::now() + self.cfg.request_timeout * 3;
        let mut peers;
        loop {
            let leader = self.wait_leader(Duration::from_secs(10)).await?;
            let node = self.node(leader).ok_or(Error::Stopped)?;
            peers = node.members();
            let result = if learner {
                node.add_learner(id, context.clone()).await
            } else {
                node.add_member(id, context.clone()).await
            };
            match result {
                Ok(()) => break,
                Err(Error::NotLeader { .. } | Error::ProposalDropped)
                    if Instant::now() < deadline =>
                {
                    sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
        peers.push(Member {
            id,
            is_learner: learner,
            context,
        });
        self.slots.insert(
            id,
            Slot {
                initial_peers: peers,
                cluster_state: ClusterState::Existing,
                running: None,
            },
        );
        self.start_node(id)
    }

    /// Removes node `id` through the leader and waits for the node to stop by
    /// itself ([`Error::Timeout`] if it does not within 20 s).
    pub async fn remove_node(&mut self, id: u64) -> Result<()> {
        let deadline = Instant::now() + self.cfg.request_timeout * 3;
        loop {
            let leader = self.wait_leader(Duration::from_secs(10)).await?;
            let node = self.node(leader).ok_or(Error::Stopped)?;
            match node.remove_member(id).await {
                Ok(()) => break,
                Err(Error::NotLeader { .. } | Error::ProposalDropped)
                    if Instant::now() < deadline =>
                {
                    sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
        let stopped = match self.slots.get_mut(&id).and_then(|s| s.running.take()) {
            Some(running) => tokio::time::timeout(Duration::from_secs(20), running.join)
                .await
                .is_ok(),
            None => true,
        };
        self.slots.remove(&id);
        if stopped {
            Ok(())
        } else {
            // It never learned of its removal (its handle is dropped now,
            // which stops it).
            Err(Error::Timeout)
        }
    }

    /// A handle to node `id` if it is running.
    pub fn node(&self, id: u64) -> Option<KvNode> {
        self.slots
            .get(&id)?
            .running
            .as_ref()
            .map(|r| r.node.clone())
    }

    /// Node `id`'s state machine reader if it is running.
    pub fn reader(&self, id: u64) -> Option<KvReader> {
        self.slots
            .get(&id)?
            .running
            .as_ref()
            .map(|r| r.reader.clone())
    }

    /// Ids of the running nodes.
    pub fn live(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| s.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Ids of all nodes, running or not.
    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    /// The leader among the running nodes: a node that says it leads, with
    /// the highest term any of them reports. Waits up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        self.wait_leader_among(&self.live(), timeout).await
    }

    /// Like [`wait_leader`](Cluster::wait_leader), considering only `among`.
    pub async fn wait_leader_among(&self, among: &[u64], timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<_> = among
                .iter()
                .filter_map(|&id| self.node(id))
                .map(|n| n.status())
                .collect();
            let max_term = statuses.iter().map(|s| s.term).max().unwrap_or(0);
            if let Some(s) = statuses
                .iter()
                .find(|s| s.role == Role::Leader && s.term == max_term)
            {
                return Ok(s.id);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Appends `value` to `key` through the leader, following NotLeader
    /// hints and retrying definite failures. Returns the list's new length.
    /// `Err(Timeout | Stopped)` means the outcome is unknown.
    pub async fn append(&self, key: u64, value: u64) -> Result<u64> {
        let deadline = Instant::now() + self.cfg.request_timeout * 2;
        let mut target = self.wait_leader(Duration::from_secs(10)).await.ok();
        loop {
            let node = match target.and_then(|id| self.node(id)) {
                Some(n) => n,
                None => {
                    sleep(Duration::from_millis(50)).await;
                    target = self.wait_leader(Duration::from_secs(10)).await.ok();
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout);
                    }
                    continue;
                }
            };
            match node.propose(encode_append(key, value)).await {
                Ok(len) => return Ok(len),
                Err(Error::NotLeader { leader }) if Instant::now() < deadline => {
                    target = leader;
                    if leader.is_none() {
                        sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(Error::ProposalDropped) if Instant::now() < deadline => {
                    sleep(Duration::from_millis(50)).await;
                    target = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A linearizable read of `key` on node `id`.
    pub async fn read(&self, id: u64, key: u64) -> Result<Vec<u64>> {
        let node = self.node(id).ok_or(Error::Stopped)?;
        let reader = self.reader(id).ok_or(Error::Stopped)?;
        node.read_index().await?;
        Ok(reader.get(key))
    }

    /// Waits until every running node has applied the same state, at least
    /// up to the highest commit index any of them knows.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<KvState> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let commit = live
                .iter()
                .filter_map(|&id| self.node(id))
                .map(|n| n.status().commit_index)
                .max()
                .unwrap_or(0);
            let states: Vec<KvState> = live
                .iter()
                .filter_map(|&id| self.reader(id))
                .map(|r| r.state())
                .collect();
            if let Some(first) = states.first() {
                if first.applied >= commit && states.iter().all(|s| s == first) {
                    return Ok(first.clone());
                }
            }
            if Instant::now() >= deadline {
                let applied: Vec<(u64, u64)> = live
                    .iter()
                    .filter_map(|&id| self.reader(id).map(|r| (id, r.applied())))
                    .collect();
                return Err(Error::Raft(format!(
                    "cluster did not converge: commit {commit}, applied {applied:?}"
                )));
            }
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            let _ = self.kill(id).await;
        }
    }
}
