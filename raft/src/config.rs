//! Node configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::membership::Member;

/// Whether a node with an empty data dir starts a cluster or joins one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Bootstrap a new cluster whose members are `initial_peers`.
    #[default]
    New,
    /// Join a running cluster that has already added this node.
    Existing,
}

/// How one raft node runs. Build with [`NodeConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's raft id (non-zero, unique in the cluster, never reused).
    pub id: u64,
    /// Directory of the raft log store: a RocksDB of its own (`log/`) and
    /// snapshot files (`snap/`). Separate from the state machine's data.
    pub data_dir: PathBuf,
    /// The cluster's members, this node included (etcd's `--initial-cluster`).
    /// Used only when the data dir is empty: with [`ClusterState::New`] they
    /// become the first configuration; with [`ClusterState::Existing`] they
    /// only tell the transport where the peers are, and the node waits for
    /// the leader's snapshot (add it with
    /// [`RaftNode::add_member`](crate::RaftNode::add_member) first).
    pub initial_peers: Vec<Member>,
    /// Whether an empty node bootstraps a new cluster or joins an existing
    /// one (etcd's `--initial-cluster-state`). Default: `New`.
    pub initial_cluster_state: ClusterState,
    /// One raft tick. Election timeout = `election_ticks` ticks (randomized up
    /// to twice that), heartbeat = `heartbeat_ticks` ticks.
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns (default 10).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats (default 1).
    pub heartbeat_ticks: usize,
    /// Applied entries between checkpoints, where the state machine is
    /// synced and the log below it compacted (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept in the log below a snapshot so slightly slow followers
    /// catch up from the log rather than by snapshot (etcd keeps 5,000).
    pub snapshot_catch_up_entries: u64,
    /// Append messages in flight to one follower before the leader waits.
    pub max_inflight_msgs: usize,
    /// Maximum bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Pre-vote: a partitioned node rejoining does not disrupt the leader.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout
    /// steps down.
    pub check_quorum: bool,
    /// fsync the raft log on every ready batch that needs it. Turn off only in
    /// tests that do not simulate machine crashes.
    pub sync_log: bool,
    /// How long `propose`, `read_index` and membership changes wait before
    /// answering [`Error::Timeout`](crate::Error::Timeout).
    pub request_timeout: Duration,
    /// Most proposals (and other requests) taken into one driver turn, so one
    /// turn's append and fsync carries them all.
    pub max_batch: usize,
}

impl NodeConfig {
    /// A config with etcd-like defaults: 100 ms ticks, election after 10 ticks,
    /// heartbeat every tick, a snapshot every 10,000 entries, pre-vote and
    /// check-quorum on, fsync on.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            id,
            data_dir: data_dir.into(),
            initial_peers: Vec::new(),
            initial_cluster_state: ClusterState::New,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_count: 10_000,
            snapshot_catch_up_entries: 5_000,
            max_inflight_msgs: 256,
            max_size_per_msg: 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            sync_log: true,
            request_timeout: Duration::from_secs(10),
            max_batch: 4096,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::Config("id must be non-zero".into()));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(Error::Config(
                "election_ticks must be greater than heartbeat_ticks > 0".into(),
            ));
        }
        if self.tick_interval.is_zero() {
            return Err(Error::Config("tick_interval must be non-zero".into()));
        }
        if self.snapshot_count == 0 {
            return Err(Error::Config("snapshot_count must be non-zero".into()));
        }
        if self.max_batch == 0 || self.max_inflight_msgs == 0 {
            return Err(Error::Config(
                "max_batch and max_inflight_msgs must be non-zero".into(),
            ));
        }
        if !self.initial_peers.is_empty() {
            if !self.initial_peers.iter().any(|m| m.id == self.id) {
                return Err(Error::Config(format!(
                    "initial_peers does not include this node ({})",
                    self.id
                )));
            }
            if self.initial_peers.iter().any(|m| m.id == 0) {
                return Err(Error::Config("member id 0 is invalid".into()));
            }
            if self.initial_peers.iter().all(|m| m.is_learner) {
                return Err(Error::Config("initial_peers has no voter".into()));
            }
        }
        Ok(())
    }
}
