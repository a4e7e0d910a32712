//! What a node reports about itself: status and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A node's role in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Asking for pre-votes before a real election.
    PreCandidate,
    Candidate,
    Leader,
    /// Removed from the cluster; the node is stopping or has stopped.
    Removed,
    /// The node has stopped.
    Stopped,
}

impl From<raft::StateRole> for Role {
    fn from(r: raft::StateRole) -> Self {
        match r {
            raft::StateRole::Follower => Role::Follower,
            raft::StateRole::PreCandidate => Role::PreCandidate,
            raft::StateRole::Candidate => Role::Candidate,
            raft::StateRole::Leader => Role::Leader,
        }
    }
}

/// A node's view of the cluster, cheap to read
/// ([`RaftNode::status`](crate::RaftNode::status)) and to watch
/// ([`RaftNode::subscribe`](crate::RaftNode::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    pub term: u64,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The highest index the state machine has applied.
    pub applied_index: u64,
    pub role: Role,
}

/// Upper bounds (seconds) of the fsync duration histogram buckets, like
/// etcd's `disk_wal_fsync_duration_seconds`.
pub const FSYNC_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Counters a node keeps for the server to export. Updated with relaxed
/// atomics from the driver and applier threads.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub leader_changes: AtomicU64,
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub proposals_forwarded: AtomicU64,
    pub read_index_rounds: AtomicU64,
    pub checkpoints: AtomicU64,
    pub snapshots_created: AtomicU64,
    pub snapshots_applied: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_micros: AtomicU64,
    /// Count per bucket of [`FSYNC_BUCKETS`], plus one overflow bucket.
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
}

impl Metrics {
    pub fn observe_fsync(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = FSYNC_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let fsync_histogram = FSYNC_BUCKETS
            .iter()
            .zip(&self.fsync_buckets)
            .map(|(&le, c)| {
                cumulative += get(c);
                (le, cumulative)
            })
            .collect();
        MetricsSnapshot {
            leader_changes: get(&self.leader_changes),
            proposals_committed: get(&self.proposals_committed),
            proposals_failed: get(&self.proposals_failed),
            proposals_forwarded: get(&self.proposals_forwarded),
            read_index_rounds: get(&self.read_index_rounds),
            checkpoints: get(&self.checkpoints),
            snapshots_created: get(&self.snapshots_created),
            snapshots_applied: get(&self.snapshots_applied),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            fsyncs: get(&self.fsyncs),
            fsync_seconds_sum: get(&self.fsync_micros) as f64 / 1e6,
            fsync_histogram,
        }
    }
}

/// A copy of a node's counters ([`RaftNode::metrics`](crate::RaftNode::metrics)).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Times this node saw a new leader (etcd `server_leader_changes_seen_total`).
    pub leader_changes: u64,
    /// Proposals from this node applied (etcd `server_proposals_applied_total`
    /// counts all; this counts the ones answered to a local proposer).
    pub proposals_committed: u64,
    /// Proposals from this node that failed or were dropped.
    pub proposals_failed: u64,
    /// Proposals this follower forwarded to the leader.
    pub proposals_forwarded: u64,
    /// ReadIndex rounds started (each may serve many reads).
    pub read_index_rounds: u64,
    /// Times the state machine was synced and the log compacted below it.
    pub checkpoints: u64,
    /// State machine images taken for followers that needed one.
    pub snapshots_created: u64,
    /// Images received from the leader and restored.
    pub snapshots_applied: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Raft log fsyncs and their total duration.
    pub fsyncs: u64,
    pub fsync_seconds_sum: f64,
    /// Cumulative `(le, count)` buckets of fsync durations in seconds (the
    /// `+Inf` bucket is `fsyncs`).
    pub fsync_histogram: Vec<(f64, u64)>,
}
