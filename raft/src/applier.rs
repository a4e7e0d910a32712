//! The applier: a dedicated thread that owns the state machine.
//!
//! The driver hands it committed entries (with the proposers waiting on them)
//! and received snapshots over a bounded channel, in log order. It applies,
//! answers proposers, publishes the applied index, and every
//! `snapshot_count` entries syncs the state machine and tells the driver,
//! which compacts the log below it (a checkpoint). When the driver asks (a
//! follower needs entries the log no longer has), it takes a snapshot: an
//! image of the state machine, written to a file and sent on by raft.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use raft::prelude::ConfState;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::log_store::make_snapshot;
use crate::membership::Members;
use crate::snapshot;
use crate::state_machine::{Committed, StateMachine};
use crate::status::{Metrics, Status};

/// Someone waiting for an entry to be applied.
pub(crate) enum Waiter<O> {
    Propose(oneshot::Sender<Result<O>>),
    /// The driver already knows whether raft accepted the change.
    ConfChange(oneshot::Sender<Result<()>>, Result<()>),
}

impl<O> Waiter<O> {
    pub fn fail(self, err: Error) {
        match self {
            Waiter::Propose(tx) => {
                let _ = tx.send(Err(err));
            }
            Waiter::ConfChange(tx, _) => {
                let _ = tx.send(Err(err));
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Waiter::Propose(tx) => tx.is_closed(),
            Waiter::ConfChange(tx, _) => tx.is_closed(),
        }
    }
}

pub(crate) enum ApplyTask<O> {
    /// Committed entries in order; `waiters` pairs positions in `entries`
    /// with the proposers to answer. `members` is the configuration after
    /// each membership change, by position.
    Entries {
        entries: Vec<Committed>,
        waiters: Vec<(usize, Waiter<O>)>,
        members: Vec<(usize, Members)>,
    },
    /// A snapshot from the leader (already persisted by the driver); its
    /// image is in the snapshot file, `envelope` is the raft snapshot's data.
    Restore {
        index: u64,
        term: u64,
        envelope: Bytes,
        members: Members,
    },
    /// Take a snapshot now (a follower needs one and there is none usable).
    Snapshot,
}

/// What the applier tells the driver.
pub(crate) enum ApplierEvent {
    /// A snapshot was taken and its file written.
    SnapshotTaken(raft::prelude::Snapshot),
    /// The state machine is durable up to `index` (of `term`).
    Checkpoint { index: u64, term: u64 },
    /// The state machine failed; the node must stop.
    Failed(Error),
}

pub(crate) struct Applier<S: StateMachine> {
    pub sm: S,
    pub rx: mpsc::Receiver<ApplyTask<S::Output>>,
    pub events: mpsc::Sender<ApplierEvent>,
    pub status: Arc<watch::Sender<Status>>,
    pub applied_tx: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    pub snap_dir: PathBuf,
    pub snapshot_count: u64,
    /// Index and term of the last entry applied (term 0 = unknown).
    pub applied_term: u64,
    /// Configuration as of the applied index; valid once the applied index
    /// reaches `members_from` (before that the driver's persisted
    /// configuration is ahead of the state machine being replayed).
    pub members: Members,
    pub members_from: u64,
    /// Applied index of the last checkpoint or snapshot.
    pub last_snapshot: u64,
}

impl<S: StateMachine> Applier<S> {
    pub fn run(mut self) {
        while let Some(task) = self.rx.blocking_recv() {
            let result = match task {
                ApplyTask::Entries {
                    entries,
                    waiters,
                    members,
                } => {
                    self.apply(entries, waiters, members);
                    Ok(())
                }
                ApplyTask::Restore {
                    index,
                    term,
                    envelope,
                    members,
                } => self.restore(index, term, &envelope, members),
                ApplyTask::Snapshot => {
                    self.take_snapshot();
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "state machine failed; stopping the node");
                // Never block on the driver (it may be blocked on us); if the
                // event is lost, the driver still stops when this thread's
                // queue closes.
                let _ = self.events.try_send(ApplierEvent::Failed(e));
                return;
            }
        }
    }

    fn apply(
        &mut self,
        entries: Vec<Committed>,
        waiters: Vec<(usize, Waiter<S::Output>)>,
        members: Vec<(usize, Members)>,
    ) {
        let Some(last) = entries.last() else { return };
        let (last_index, last_term) = (last.index, last.term);
        let outputs = self.sm.apply(&entries);
        if outputs.len() != entries.len() {
            tracing::error!(
                entries = entries.len(),
                outputs = outputs.len(),
                "state machine returned the wrong number of outputs"
            );
        }
        let mut outputs: Vec<Option<S::Output>> = outputs.into_iter().map(Some).collect();
        for (pos, waiter) in waiters {
            match waiter {
                Waiter::Propose(tx) => match outputs.get_mut(pos).and_then(Option::take) {
                    Some(out) => {
                        Metrics::add(&self.metrics.proposals_committed, 1);
                        let _ = tx.send(Ok(out));
                    }
                    None => {
                        Metrics::add(&self.metrics.proposals_failed, 1);
                        let _ = tx.send(Err(Error::StateMachine("no output for entry".into())));
                    }
                },
                Waiter::ConfChange(tx, result) => {
                    let _ = tx.send(result);
                }
            }
        }
        if let Some((_, m)) = members.into_iter().last() {
            self.members = m;
        }
        let applied = self.sm.applied_index();
        if applied == last_index {
            self.applied_term = last_term;
        } else if applied < last_index {
            // The state machine did not apply everything: the term of its
            // applied index is unknown, so no snapshot until it catches up.
            tracing::error!(applied, last_index, "state machine did not apply a batch");
            self.applied_term = 0;
        }
        // (applied > last_index: a replay of entries it already had; the
        // term of its applied index is still the one known at start.)
        self.publish_applied(last_index);
        if applied.saturating_sub(self.last_snapshot) >= self.snapshot_count {
            self.checkpoint();
        }
    }

    fn publish_applied(&self, index: u64) {
        self.applied_tx.send_if_modified(|a| {
            if index > *a {
                *a = index;
                true
            } else {
                false
            }
        });
        self.status.send_if_modified(|s| {
            if index > s.applied_index {
                s.applied_index = index;
                true
            } else {
                false
            }
        });
    }

    fn restore(&mut self, index: u64, term: u64, envelope: &[u8], members: Members) -> Result<()> {
        if index <= self.sm.applied_index() {
            tracing::info!(
                index,
                "state machine already past the snapshot; skipping restore"
            );
            return Ok(());
        }
        let image = snapshot::image(&self.snap_dir, index, term, envelope)?;
        image.verify()?;
        self.sm.restore(index, &image)?;
        Metrics::add(&self.metrics.snapshots_applied, 1);
        self.members = members;
        self.members_from = index;
        self.applied_term = term;
        self.last_snapshot = index;
        self.publish_applied(index);
        Ok(())
    }

    /// Whether the applied index can be a snapshot's or checkpoint's: not
    /// while replaying up to the persisted configuration, nor while the term
    /// of the applied entry is unknown (then try again after more entries).
    fn at_known_entry(&self) -> bool {
        self.sm.applied_index() >= self.members_from && self.applied_term != 0
    }

    fn checkpoint(&mut self) {
        if !self.at_known_entry() {
            return;
        }
        let index = self.sm.applied_index();
        let started = std::time::Instant::now();
        if let Err(e) = self.sm.sync() {
            tracing::warn!(error = %e, "state machine sync failed; log not compacted");
            return;
        }
        self.metrics.backend_commits.observe(started.elapsed());
        self.last_snapshot = index;
        Metrics::add(&self.metrics.checkpoints, 1);
        // Never block on the driver: a lost event only means the log is
        // compacted at the next checkpoint instead.
        let term = self.applied_term;
        let _ = self
            .events
            .try_send(ApplierEvent::Checkpoint { index, term });
    }

    fn take_snapshot(&mut self) {
        if !self.at_known_entry() {
            return;
        }
        let index = self.sm.applied_index();
        let term = self.applied_term;
        let sm = &self.sm;
        let data = match snapshot::write_file(&self.snap_dir, index, term, &self.members, |out| {
            sm.snapshot(out)
        }) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "taking a snapshot failed");
                return;
            }
        };
        let conf_state: ConfState = self.members.conf_state.clone();
        self.last_snapshot = index;
        Metrics::add(&self.metrics.snapshots_created, 1);
        tracing::debug!(index, term, "snapshot taken");
        // Never block on the driver: a lost event only means this snapshot
        // is not used (its file is cleaned up with the next one).
        let _ = self
            .events
            .try_send(ApplierEvent::SnapshotTaken(make_snapshot(
                index, term, conf_state, data,
            )));
    }
}
