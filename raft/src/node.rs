//! [`RaftNode`]: the handle the rest of the system uses, and the start-up
//! that recovers a node from disk.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::RwLock;
use raft::{RawNode, ReadOnlyOption, Storage as _};
use tokio::sync::{mpsc, oneshot, watch};

use crate::applier::Applier;
use crate::config::{ClusterState, NodeConfig};
use crate::driver::{Control, Driver, Shared};
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::logger::raft_logger;
use crate::membership::{Member, MemberChange};
use crate::read_index::ReadQueue;
use crate::snapshot;
use crate::state_machine::StateMachine;
use crate::status::{Metrics, MetricsSnapshot, Role, Status};
use crate::transport::{Inbox, Transport, INBOX_CAPACITY};

/// Committed batches queued for the applier before the driver waits.
const APPLY_QUEUE: usize = 64;

/// A handle to a running raft node. Cheap to clone; every method can be
/// called from any task.
///
/// Proposals work on every member: a follower forwards them to the leader
/// through raft and answers once it has applied them itself. Membership
/// changes must go to the leader (a follower answers [`Error::NotLeader`]
/// with the leader's id when known). Reads ([`read_index`](Self::read_index))
/// work on every member.
///
/// The node runs until [`shutdown`](Self::shutdown), its removal from the
/// cluster, a fatal error — or until every handle is dropped.
pub struct RaftNode<S: StateMachine> {
    id: u64,
    control: mpsc::Sender<Control<S::Output>>,
    inbox: Inbox,
    status_rx: watch::Receiver<Status>,
    applied_rx: watch::Receiver<u64>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl<S: StateMachine> Clone for RaftNode<S> {
    fn clone(&self) -> Self {
        RaftNode {
            id: self.id,
            control: self.control.clone(),
            inbox: self.inbox.clone(),
            status_rx: self.status_rx.clone(),
            applied_rx: self.applied_rx.clone(),
            shared: self.shared.clone(),
            request_timeout: self.request_timeout,
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for RaftNode<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("status", &*self.status_rx.borrow())
            .finish()
    }
}

/// Completes when a node's threads have exited (after
/// [`RaftNode::shutdown`], removal, or a fatal error) and its data
/// directories are closed. Resolves to the reason it stopped.
#[derive(Debug)]
pub struct NodeJoinHandle {
    rx: oneshot::Receiver<Result<()>>,
}

impl Future for NodeJoinHandle {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::Raft("raft driver thread panicked".into()))))
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Opens the raft log in `config.data_dir` and starts the node.
    ///
    /// - Empty data dir, [`ClusterState::New`]: bootstraps a new cluster of
    ///   `initial_peers`.
    /// - Empty data dir, [`ClusterState::Existing`]: joins a running cluster
    ///   (the leader must have added this id; it sends a snapshot).
    /// - Otherwise: restarts from disk. If the state machine is behind the
    ///   latest snapshot it is restored from it first; then the log is
    ///   replayed from its `applied_index()`.
    ///
    /// Starts two threads (the driver, which owns the raft node, and the
    /// applier, which owns `state_machine`). Must be called inside a tokio
    /// runtime only if the transport needs one.
    pub fn start<T: Transport>(
        config: NodeConfig,
        mut state_machine: S,
        transport: T,
    ) -> Result<(RaftNode<S>, NodeJoinHandle)> {
        config.validate()?;
        let id = config.id;
        let metrics = Arc::new(Metrics::default());
        let mut store = LogStore::open(&config.data_dir, config.sync_log, metrics.clone())?;
        if !store.is_initialized() && config.initial_cluster_state == ClusterState::New {
            if config.initial_peers.is_empty() {
                return Err(Error::Config(
                    "a node starting a new cluster needs initial_peers".into(),
                ));
            }
            store.bootstrap(&config.initial_peers)?;
        }
        let cs = &store.members().conf_state;
        let configured = !(cs.voters.is_empty() && cs.learners.is_empty());
        if configured && !store.members().contains(id) {
            return Err(Error::Removed);
        }

        // Bring the state machine up to the snapshot if it lost writes.
        if let Some(snap) = store.latest_snapshot() {
            let meta = snap.get_metadata();
            if state_machine.applied_index() < meta.index {
                tracing::info!(
                    id,
                    index = meta.index,
                    "restoring state machine from snapshot"
                );
                let image = snapshot::image(store.snap_dir(), meta.index, meta.term, &snap.data)?;
                image.verify()?;
                state_machine.restore(meta.index, &image)?;
            }
        }
        let sm_applied = state_machine.applied_index();
        // The log is compacted only below what the state machine synced (a
        // checkpoint) or what the latest snapshot holds; entry 1 of a new
        // cluster is the bootstrap configuration, which no state machine sees.
        let truncated = store.truncated_index();
        if sm_applied < truncated && truncated > 1 {
            return Err(Error::Corrupt(format!(
                "state machine applied index {sm_applied} is below the compacted log \
                 (entries up to {truncated} are gone): its data was lost"
            )));
        }
        store.raise_commit(sm_applied)?;
        let commit = store.hard_state().commit;
        let raft_applied = sm_applied.max(store.truncated_index()).min(commit);
        let applied_term = store.term(sm_applied).unwrap_or(0);
        let members = store.members().clone();
        let conf_index = store.conf_index();
        let last_snapshot = store
            .latest_snapshot()
            .map_or(store.truncated_index(), |s| s.get_metadata().index);
        let snap_dir = store.snap_dir().to_path_buf();
        let term = store.hard_state().term;

        let raft_config = raft::Config {
            id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: raft_applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            read_only_option: ReadOnlyOption::Safe,
            // Must stay off: raft-rs 0.7's `try_batching` merges new entries
            // into a pending *empty* MsgAppend whose `index` does not precede
            // them (found by tests/faults.rs: "prev 965, entries 964..=965",
            // acked as 967 by a follower that had 965). The driver already
            // steps each turn's proposals as one message.
            batch_append: false,
            ..Default::default()
        };
        raft_config.validate()?;
        let raw = RawNode::new(&raft_config, store, &raft_logger(id))?;

        let (control_tx, control_rx) = mpsc::channel(config.max_batch.max(1024));
        let (peer_tx, peer_rx) = mpsc::channel(INBOX_CAPACITY);
        let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(Status {
            id,
            leader: None,
            term,
            commit_index: commit,
            applied_index: sm_applied,
            role: Role::Follower,
        });
        let status_tx = Arc::new(status_tx);
        let (applied_tx, applied_rx) = watch::channel(sm_applied);
        let shared = Arc::new(Shared {
            status: status_tx.clone(),
            members: RwLock::new(members.list()),
            metrics: metrics.clone(),
        });
        let inbox = Inbox::new(id, peer_tx, snap_dir.clone());
        transport.bind(inbox.clone());

        let applier = Applier {
            sm: state_machine,
            rx: apply_rx,
            events: events_tx,
            status: status_tx,
            applied_tx,
            metrics,
            snap_dir,
            snapshot_count: config.snapshot_count,
            applied_term,
            members,
            members_from: conf_index,
            last_snapshot,
        };
        let applier_thread = std::thread::Builder::new()
            .name(format!("raft-apply-{id}"))
            .spawn(move || applier.run())?;

        let request_timeout = config.request_timeout;
        let retry_ticks = (config.election_ticks / 2).max(3) as u64;
        let driver = Driver::<S, T> {
            id,
            raw,
            transport,
            control_rx,
            peer_rx,
            events_rx,
            apply_tx,
            shared: shared.clone(),
            pending: BTreeMap::new(),
            forwarded: HashMap::new(),
            run_id: rand::random(),
            next_seq: 0,
            batch: Vec::new(),
            reads: ReadQueue::new(id, retry_ticks),
            ticks: 0,
            removed_at: None,
            snapshot_requested_at: None,
            last_leader: 0,
            cfg: config,
        };
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("raft-driver-{id}"))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(driver.run()),
                    Err(e) => Err(Error::Raft(format!("driver runtime: {e}"))),
                };
                // The driver dropped its end of the apply queue; the applier
                // finishes what is queued and exits.
                if applier_thread.join().is_err() {
                    tracing::error!(id, "state machine thread panicked");
                }
                let _ = done_tx.send(result);
            })?;

        Ok((
            RaftNode {
                id,
                control: control_tx,
                inbox,
                status_rx,
                applied_rx,
                shared,
                request_timeout,
            },
            NodeJoinHandle { rx: done_rx },
        ))
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn request<R>(
        &self,
        control: Control<S::Output>,
        rx: oneshot::Receiver<Result<R>>,
    ) -> Result<R> {
        let fut = async {
            self.control
                .send(control)
                .await
                .map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        tokio::time::timeout(self.request_timeout, fut)
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Replicates `data` and answers the state machine's output once this
    /// node has applied it. Concurrent proposals are batched into one append.
    ///
    /// On a follower the proposal is forwarded to the leader.
    ///
    /// Errors: [`Error::NotLeader`] when no leader is known,
    /// [`Error::ProposalDropped`] when leadership changed before it committed
    /// (both definite: not applied); [`Error::Timeout`] or
    /// [`Error::Stopped`] when the outcome is unknown (a forwarded proposal
    /// the leader dropped ends in [`Error::Timeout`]).
    pub async fn propose(&self, data: Vec<u8>) -> Result<S::Output> {
        let (reply, rx) = oneshot::channel();
        self.request(Control::Propose { data, reply }, rx).await
    }

    /// A linearizable read barrier: returns the leader-confirmed commit index
    /// once this node has applied at least that far, so a read of the local
    /// state machine afterwards sees every write acknowledged before the call.
    /// Concurrent calls share one ReadIndex round. Works on followers.
    pub async fn read_index(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        let started = tokio::time::Instant::now();
        let index = self.request(Control::ReadIndex { reply }, rx).await?;
        let left = self.request_timeout.saturating_sub(started.elapsed());
        self.wait_applied(index, left).await?;
        Ok(index)
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.applied_rx.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn change(&self, change: MemberChange) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.request(Control::ConfChange { change, reply }, rx)
            .await
    }

    /// Adds a voting member; `context` is kept with it (see [`members`](Self::members)).
    /// Answers once the change is applied here. Start the new node with no
    /// `initial_peers` afterwards; it catches up by snapshot.
    pub async fn add_member(&self, id: u64, context: Vec<u8>) -> Result<()> {
        self.change(MemberChange::AddMember { id, context }).await
    }

    /// Adds a learner (receives the log, does not vote).
    pub async fn add_learner(&self, id: u64, context: Vec<u8>) -> Result<()> {
        self.change(MemberChange::AddLearner { id, context }).await
    }

    /// Makes a learner a voter.
    pub async fn promote_learner(&self, id: u64) -> Result<()> {
        self.change(MemberChange::PromoteLearner { id }).await
    }

    /// Removes a member. The removed node stops by itself once it applies
    /// the change. Removing the leader works (it steps aside after the
    /// commit), but transferring leadership first avoids an election pause.
    pub async fn remove_member(&self, id: u64) -> Result<()> {
        self.change(MemberChange::Remove { id }).await
    }

    /// The members as of this node's latest applied configuration.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members.read().clone()
    }

    /// Asks the leader to hand leadership to `to` and waits until this node
    /// sees `to` lead (or [`Error::Timeout`]).
    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        self.control
            .send(Control::TransferLeader { to })
            .await
            .map_err(|_| Error::Stopped)?;
        let mut rx = self.status_rx.clone();
        let waited =
            tokio::time::timeout(self.request_timeout, rx.wait_for(|s| s.leader == Some(to)))
                .await
                .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Starts an election now (tests and operator tooling).
    pub async fn campaign(&self) -> Result<()> {
        self.control
            .send(Control::Campaign)
            .await
            .map_err(|_| Error::Stopped)
    }

    /// The node's current status (a copy; no locking of the raft node).
    pub fn status(&self) -> Status {
        self.status_rx.borrow().clone()
    }

    /// A watch of the status: changes on every leader, role, term, commit or
    /// applied change. Use `wait_for` to wait for a leader.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status_rx.clone()
    }

    /// The highest index the state machine has applied.
    pub fn applied_index(&self) -> u64 {
        *self.applied_rx.borrow()
    }

    /// Counters for metrics export.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Where transports deliver messages for this node (see
    /// [`grpc_service`](crate::grpc_service)).
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Asks the node to stop; await its [`NodeJoinHandle`] to know it has.
    /// Pending requests answer [`Error::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown).await;
    }
}
