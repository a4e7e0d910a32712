//! What a node reports about itself: status and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType};

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

/// Upper bounds (seconds) of the peer round-trip histogram buckets, like
/// etcd's `network_peer_round_trip_time_seconds` (0.1 ms doubling 14 times).
pub const RTT_BUCKETS: [f64; 14] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192,
];

/// Durations counted into fixed buckets with relaxed atomics.
#[derive(Debug)]
pub(crate) struct DurationHistogram {
    bounds: &'static [f64],
    /// Count per bucket of `bounds`, plus one overflow bucket.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    micros: AtomicU64,
}

impl DurationHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        DurationHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = self.bounds.partition_point(|&le| le < secs);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// `(cumulative (le, count) buckets, count, sum in seconds)`.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(&le, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// Heartbeat round trips to each peer: a heartbeat's send time until the
/// peer's response (the leader's view; etcd probes every peer instead).
#[derive(Debug, Default)]
pub(crate) struct PeerRoundTrips {
    /// Per peer: the unanswered heartbeat's send time, and the histogram.
    peers: Mutex<HashMap<u64, (Option<Instant>, DurationHistogram)>>,
}

impl PeerRoundTrips {
    /// Notes the heartbeats among `msgs` (the first unanswered one per peer).
    pub fn sent(&self, msgs: &[Message]) {
        let mut heartbeats = msgs
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgHeartbeat)
            .peekable();
        if heartbeats.peek().is_none() {
            return;
        }
        let now = Instant::now();
        let mut peers = self.peers.lock();
        for m in heartbeats {
            let (sent, _) = peers
                .entry(m.to)
                .or_insert_with(|| (None, DurationHistogram::new(&RTT_BUCKETS)));
            sent.get_or_insert(now);
        }
    }

    /// Observes the round trips the heartbeat responses among `msgs` end.
    pub fn received(&self, msgs: &[Message]) {
        let mut responses = msgs
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgHeartbeatResponse)
            .peekable();
        if responses.peek().is_none() {
            return;
        }
        let mut peers = self.peers.lock();
        for m in responses {
            if let Some((sent, histogram)) = peers.get_mut(&m.from) {
                if let Some(at) = sent.take() {
                    histogram.observe(at.elapsed());
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<PeerRoundTrip> {
        let mut out: Vec<PeerRoundTrip> = self
            .peers
            .lock()
            .iter()
            .map(|(&to, (_, h))| {
                let (histogram, count, seconds_sum) = h.snapshot();
                PeerRoundTrip {
                    to,
                    histogram,
                    count,
                    seconds_sum,
                }
            })
            .collect();
        out.sort_by_key(|p| p.to);
        out
    }
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram::new(&FSYNC_BUCKETS)
    }
}

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
    /// Proposals appended and not yet applied or failed (set each turn).
    pub proposals_pending: AtomicU64,
    /// State machine syncs at checkpoints (over [`FSYNC_BUCKETS`]).
    pub backend_commits: DurationHistogram,
    pub peer_round_trips: PeerRoundTrips,
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
        let (backend_commit_histogram, _, backend_commit_seconds_sum) =
            self.backend_commits.snapshot();
        MetricsSnapshot {
            proposals_pending: get(&self.proposals_pending),
            backend_commit_histogram,
            backend_commit_seconds_sum,
            peer_round_trip: self.peer_round_trips.snapshot(),
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
    /// Proposals appended and waiting to be applied.
    pub proposals_pending: u64,
    /// Cumulative `(le, count)` buckets of the state machine's syncs at
    /// checkpoints (the `+Inf` bucket is `checkpoints`), and their sum.
    pub backend_commit_histogram: Vec<(f64, u64)>,
    pub backend_commit_seconds_sum: f64,
    /// Heartbeat round trips per peer this node sent heartbeats to.
    pub peer_round_trip: Vec<PeerRoundTrip>,
}

/// Heartbeat round trips to one peer ([`RTT_BUCKETS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRoundTrip {
    pub to: u64,
    /// Cumulative `(le, count)` buckets (the `+Inf` bucket is `count`).
    pub histogram: Vec<(f64, u64)>,
    pub count: u64,
    pub seconds_sum: f64,
}
