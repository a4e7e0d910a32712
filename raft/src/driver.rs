//! The driver: the one task that owns the raft-rs `RawNode`.
//!
//! It runs on a thread of its own (a current-thread tokio runtime), because
//! each turn does blocking RocksDB writes and fsyncs. A turn:
//!
//! 1. waits for a tick, a peer message, a request, or an applier event, then
//!    takes everything else already queued (bounded by `max_batch`), so one
//!    turn's append and fsync carries every proposal that arrived meanwhile;
//! 2. steps them into raft (proposals as *one* `MsgPropose`), starts a
//!    ReadIndex round for the readers that queued;
//! 3. handles the `Ready` in raft-rs's documented order: send messages (a
//!    leader sends before its own fsync, Raft thesis §10.2.1), install a
//!    snapshot, persist entries + hard state in one write batch with one
//!    fsync, send the messages that had to wait for it, hand committed
//!    entries to the applier over a bounded channel, `advance`, the same for
//!    the light ready, `advance_apply`.
//!
//! A follower forwards proposals to the leader as raft `MsgPropose`
//! messages (they ride the peer stream with the rest of raft's traffic, as
//! in etcd), each entry's `context` naming this node, this run of it and a
//! sequence number;
//! when this node applies an entry carrying its own name, it answers the
//! proposer with its own state machine's output, which is the leader's.
//!
//! Membership changes are applied to raft here, as their entries are handed
//! to the applier (raft-rs requires it before the next conf change), and
//! persisted with an fsync; re-applying them on replay is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType, SnapshotStatus,
};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use crate::applier::{ApplierEvent, ApplyTask, Waiter};
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::membership::{Member, MemberChange, Members};
use crate::read_index::ReadQueue;
use crate::snapshot;
use crate::state_machine::{Committed, EntryKind, StateMachine};
use crate::status::{Metrics, Role, Status};
use crate::transport::{PeerEvent, Transport};

/// Where a proposal's answer goes.
pub(crate) type Reply<O> = oneshot::Sender<Result<O>>;

/// Requests from [`RaftNode`](crate::RaftNode) handles to the driver.
pub(crate) enum Control<O> {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<O>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64>>,
    },
    ConfChange {
        change: MemberChange,
        reply: oneshot::Sender<Result<()>>,
    },
    TransferLeader {
        to: u64,
    },
    Campaign,
    Shutdown,
}

/// State shared between the driver, the applier and the handles.
pub(crate) struct Shared {
    pub status: Arc<watch::Sender<Status>>,
    pub members: RwLock<Vec<Member>>,
    pub metrics: Arc<Metrics>,
}

pub(crate) struct Driver<S: StateMachine, T: Transport> {
    pub id: u64,
    pub cfg: NodeConfig,
    pub raw: RawNode<LogStore>,
    pub transport: T,
    pub control_rx: mpsc::Receiver<Control<S::Output>>,
    pub peer_rx: mpsc::Receiver<PeerEvent>,
    pub events_rx: mpsc::Receiver<ApplierEvent>,
    pub apply_tx: mpsc::Sender<ApplyTask<S::Output>>,
    pub shared: Arc<Shared>,
    /// Proposals appended to the log and waiting to be applied: index →
    /// (term they were appended in, waiter). An entry applied at that index
    /// with another term means the proposal lost its slot.
    pub pending: BTreeMap<u64, (u64, Waiter<S::Output>)>,
    /// Proposals this follower forwarded to the leader, by the sequence
    /// number in their entries' context.
    pub forwarded: HashMap<u64, Reply<S::Output>>,
    /// A random number naming this run of the node in forwarded entries, so
    /// entries a previous run forwarded (replayed after a restart) never
    /// match a new proposer.
    pub run_id: u64,
    /// The next forwarded proposal's sequence number.
    pub next_seq: u64,
    /// Proposals taken this turn, stepped into raft together.
    pub batch: Vec<(Vec<u8>, Reply<S::Output>)>,
    pub reads: ReadQueue,
    pub ticks: u64,
    /// Tick at which this node saw its own removal; it stops a little later
    /// so the commit reaches the others.
    pub removed_at: Option<u64>,
    /// Tick of the last on-demand snapshot request to the applier.
    pub snapshot_requested_at: Option<u64>,
    pub last_leader: u64,
}

impl<S: StateMachine, T: Transport> Driver<S, T> {
    pub async fn run(mut self) -> Result<()> {
        let members = self.raw.store().members().list();
        if members.is_empty() {
            // Joining: until the snapshot brings the configuration, the
            // configured peers tell the transport where everyone is.
            self.transport.update_members(&self.cfg.initial_peers);
        } else {
            self.transport.update_members(&members);
        }
        *self.shared.members.write() = members;
        self.publish_status();

        let mut ticker = tokio::time::interval(self.cfg.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            let mut stop = false;
            tokio::select! {
                _ = ticker.tick() => self.on_tick(),
                Some(ev) = self.peer_rx.recv() => self.on_peer(ev),
                c = self.control_rx.recv() => match c {
                    Some(c) => stop |= self.on_control(c),
                    None => stop = true,
                },
                Some(ev) = self.events_rx.recv() => {
                    if let Err(e) = self.on_applier(ev) {
                        break Err(e);
                    }
                }
            }
            for _ in 0..self.cfg.max_batch {
                match self.peer_rx.try_recv() {
                    Ok(ev) => self.on_peer(ev),
                    Err(_) => break,
                }
            }
            for _ in 0..self.cfg.max_batch {
                match self.control_rx.try_recv() {
                    Ok(c) => stop |= self.on_control(c),
                    Err(_) => break,
                }
            }
            self.flush_proposals();
            if let Some(ctx) = self.reads.next_round(self.ticks) {
                Metrics::add(&self.shared.metrics.read_index_rounds, 1);
                self.raw.read_index(ctx);
            }
            if let Err(e) = self.on_ready().await {
                break Err(e);
            }
            if self.raw.store().take_snapshot_wanted() {
                self.request_snapshot().await;
            }
            self.publish_status();
            let removal_done = self
                .removed_at
                .is_some_and(|t| self.ticks >= t + self.cfg.election_ticks as u64);
            if stop || removal_done {
                break Ok(());
            }
        };
        self.stop(result)
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader && self.removed_at.is_none()
    }

    fn leader_hint(&self) -> Option<u64> {
        match self.raw.raft.leader_id {
            0 => None,
            id if id == self.id && self.removed_at.is_some() => None,
            id => Some(id),
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.reads.on_tick(self.ticks);
        if self.ticks & 63 == 0 {
            // Forget proposers that gave up (timed out).
            self.pending.retain(|_, (_, w)| !w.is_closed());
            self.forwarded.retain(|_, reply| !reply.is_closed());
        }
    }

    fn on_peer(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Messages(msgs) => {
                Metrics::add(&self.shared.metrics.messages_received, msgs.len() as u64);
                self.shared.metrics.peer_round_trips.received(&msgs);
                for m in msgs {
                    if let Err(e) = self.raw.step(m) {
                        tracing::trace!(error = %e, "raft refused a message");
                    }
                }
            }
            PeerEvent::Unreachable(peer) => self.raw.report_unreachable(peer),
            PeerEvent::SnapshotStatus { peer, ok } => self.raw.report_snapshot(
                peer,
                if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                },
            ),
        }
    }

    /// Returns true when the node must stop.
    fn on_control(&mut self, c: Control<S::Output>) -> bool {
        match c {
            Control::Propose { data, reply } => self.batch.push((data, reply)),
            Control::ReadIndex { reply } => {
                if self.removed_at.is_some() {
                    let _ = reply.send(Err(Error::Removed));
                } else {
                    self.reads.push(reply);
                }
            }
            Control::ConfChange { change, reply } => self.propose_conf_change(change, reply),
            Control::TransferLeader { to } => self.raw.transfer_leader(to),
            Control::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::debug!(error = %e, "campaign refused");
                }
            }
            Control::Shutdown => return true,
        }
        false
    }

    /// Steps this turn's proposals into raft as one message: on the leader
    /// one append, one broadcast, one fsync for all of them; on a follower
    /// one `MsgPropose` to the leader.
    fn flush_proposals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let n = batch.len() as u64;
        let leading = self.is_leader();
        let forwarding = !leading
            && self.removed_at.is_none()
            && self.raw.raft.state == StateRole::Follower
            && self.raw.raft.leader_id != 0;
        if !leading && !forwarding {
            let leader = self.leader_hint();
            for (_, reply) in batch {
                let _ = reply.send(Err(Error::NotLeader { leader }));
            }
            return;
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.id;
        // Forwarded entries are numbered from `first_seq` in their context.
        let first_seq = self.next_seq;
        let seq = |i: usize| first_seq.wrapping_add(i as u64);
        let mut entries = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (i, (data, reply)) in batch.into_iter().enumerate() {
            let mut entry = Entry {
                data: data.into(),
                ..Default::default()
            };
            if forwarding {
                entry.context = forward_context(self.id, self.run_id, seq(i)).into();
            }
            entries.push(entry);
            replies.push(reply);
        }
        m.set_entries(entries.into());
        match self.raw.step(m) {
            Ok(()) if forwarding => {
                Metrics::add(&self.shared.metrics.proposals_forwarded, n);
                self.next_seq = seq(replies.len());
                self.forwarded
                    .extend(replies.into_iter().enumerate().map(|(i, r)| (seq(i), r)));
            }
            Ok(()) => {
                let last = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                let first = last + 1 - n;
                for (i, reply) in replies.into_iter().enumerate() {
                    self.pending
                        .insert(first + i as u64, (term, Waiter::Propose(reply)));
                }
            }
            Err(e) => {
                let err = Error::from(e);
                Metrics::add(&self.shared.metrics.proposals_failed, n);
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn propose_conf_change(&mut self, change: MemberChange, reply: oneshot::Sender<Result<()>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(Error::NotLeader {
                leader: self.leader_hint(),
            }));
            return;
        }
        if let Err(why) = change.validate(self.raw.store().members()) {
            let _ = reply.send(Err(Error::ConfChange(why)));
            return;
        }
        if self.raw.raft.pending_conf_index > self.raw.raft.raft_log.applied {
            let _ = reply.send(Err(Error::ConfChange(
                "another membership change is in progress".into(),
            )));
            return;
        }
        match self
            .raw
            .propose_conf_change(Vec::new(), change.to_conf_change())
        {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending
                    .insert(index, (term, Waiter::ConfChange(reply, Ok(()))));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn on_applier(&mut self, ev: ApplierEvent) -> Result<()> {
        match ev {
            ApplierEvent::SnapshotTaken(snap) => {
                self.snapshot_requested_at = None;
                let index = snap.get_metadata().index;
                match self
                    .raw
                    .mut_store()
                    .record_snapshot(snap, self.cfg.snapshot_catch_up_entries)
                {
                    Ok(true) => tracing::debug!(index, "snapshot recorded, log compacted"),
                    Ok(false) => tracing::debug!(index, "stale snapshot ignored"),
                    Err(e) => tracing::warn!(index, error = %e, "recording snapshot failed"),
                }
                Ok(())
            }
            ApplierEvent::Checkpoint { index, term } => {
                let catch_up = self.cfg.snapshot_catch_up_entries;
                match self
                    .raw
                    .mut_store()
                    .record_checkpoint(index, term, catch_up)
                {
                    Ok(()) => tracing::debug!(index, "checkpoint recorded, log compacted"),
                    Err(e) => tracing::warn!(index, error = %e, "recording checkpoint failed"),
                }
                Ok(())
            }
            ApplierEvent::Failed(e) => Err(e),
        }
    }

    /// A follower needs a snapshot and none is usable: ask the applier for
    /// one (at most once per few election timeouts).
    async fn request_snapshot(&mut self) {
        let every = 4 * self.cfg.election_ticks as u64;
        if self
            .snapshot_requested_at
            .is_some_and(|t| self.ticks < t + every)
        {
            return;
        }
        self.snapshot_requested_at = Some(self.ticks);
        // Never wait here: the applier may be busy; a full channel means
        // we ask again later.
        let _ = self.apply_tx.try_send(ApplyTask::Snapshot);
    }

    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        Metrics::add(&self.shared.metrics.messages_sent, msgs.len() as u64);
        self.shared.metrics.peer_round_trips.sent(&msgs);
        self.transport.send(msgs);
    }

    async fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();

        // 1. A leader sends before persisting (followers persist in parallel).
        self.send(rd.take_messages());

        // 2. A snapshot from the leader.
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(snap).await?;
        }

        // ReadIndex answers.
        for rs in rd.take_read_states() {
            self.reads.on_read_state(&rs.request_ctx, rs.index);
        }

        // 3. Entries and hard state: one write batch, one fsync.
        self.raw
            .mut_store()
            .persist(rd.entries(), rd.hs(), rd.must_sync())?;

        // 4. Messages that must follow the fsync (votes, follower acks).
        self.send(rd.take_persisted_messages());

        // 5. Committed entries to the applier.
        self.hand_off(rd.take_committed_entries()).await?;

        // 6. Advance, then the light ready.
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.hand_off(light.take_committed_entries()).await?;
        self.raw.advance_apply();
        Ok(())
    }

    async fn install_snapshot(&mut self, snap: raft::prelude::Snapshot) -> Result<()> {
        let meta = snap.get_metadata().clone();
        let envelope = snapshot::decode_envelope(&snap.data)?;
        let members = Members::from_proto(meta.get_conf_state().clone(), &envelope.members);
        self.raw
            .mut_store()
            .apply_snapshot(&snap, members.clone())?;
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installed snapshot from leader"
        );
        // Proposals at or below the snapshot may or may not be in it, and
        // this node will not see forwarded ones it holds applied.
        let covered: Vec<u64> = self.pending.range(..=meta.index).map(|(i, _)| *i).collect();
        for i in covered {
            if let Some((_, w)) = self.pending.remove(&i) {
                w.fail(Error::Timeout);
            }
        }
        for (_, reply) in self.forwarded.drain() {
            let _ = reply.send(Err(Error::Timeout));
        }
        self.members_changed(&members);
        self.apply_tx
            .send(ApplyTask::Restore {
                index: meta.index,
                term: meta.term,
                envelope: snap.data.clone(),
                members,
            })
            .await
            .map_err(|_| Error::Stopped)
    }

    fn members_changed(&mut self, members: &Members) {
        let list = members.list();
        self.transport.update_members(&list);
        *self.shared.members.write() = list;
        if !members.contains(self.id)
            && members.conf_state != Default::default()
            && self.removed_at.is_none()
        {
            tracing::info!(id = self.id, "this node was removed from the cluster");
            self.removed_at = Some(self.ticks);
        }
    }

    /// Applies membership changes to raft and passes committed entries, with
    /// their proposers, to the applier.
    async fn hand_off(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(last_index) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let mut committed = Vec::with_capacity(entries.len());
        let mut waiters = Vec::new();
        let mut members_after = Vec::new();
        for e in entries {
            let pos = committed.len();
            let kind = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => EntryKind::LeaderNoop,
                EntryType::EntryNormal => EntryKind::Normal,
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)?;
                    self.apply_conf_change(e.index, cc, pos, &mut members_after)?
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)?;
                    self.apply_conf_change_v2(e.index, cc, pos, &mut members_after)?
                }
            };
            if let Some((term, waiter)) = self.pending.remove(&e.index) {
                if term != e.term {
                    Metrics::add(&self.shared.metrics.proposals_failed, 1);
                    waiter.fail(Error::ProposalDropped);
                } else {
                    match (waiter, &kind) {
                        (Waiter::ConfChange(tx, _), EntryKind::ConfChange { rejected, .. }) => {
                            let result = if *rejected {
                                Err(Error::ConfChange("rejected by raft".into()))
                            } else {
                                Ok(())
                            };
                            waiters.push((pos, Waiter::ConfChange(tx, result)));
                        }
                        (Waiter::ConfChange(tx, _), _) => {
                            // raft-rs turns a conf change it refuses (another
                            // one pending) into an empty entry.
                            let _ = tx.send(Err(Error::ConfChange(
                                "refused: another membership change is in progress".into(),
                            )));
                        }
                        (w, _) => waiters.push((pos, w)),
                    }
                }
            } else if let Some(seq) = forwarded_seq(&e.context, self.id, self.run_id) {
                if let Some(reply) = self.forwarded.remove(&seq) {
                    waiters.push((pos, Waiter::Propose(reply)));
                }
            }
            committed.push(Committed {
                index: e.index,
                term: e.term,
                kind,
                data: e.data,
            });
        }
        // Defensive: nothing may wait below what is now committed.
        let stale: Vec<u64> = self.pending.range(..=last_index).map(|(i, _)| *i).collect();
        for i in stale {
            if let Some((_, w)) = self.pending.remove(&i) {
                w.fail(Error::ProposalDropped);
            }
        }
        self.apply_tx
            .send(ApplyTask::Entries {
                entries: committed,
                waiters,
                members: members_after,
            })
            .await
            .map_err(|_| Error::Stopped)
    }

    fn apply_conf_change(
        &mut self,
        index: u64,
        cc: ConfChange,
        pos: usize,
        members_after: &mut Vec<(usize, Members)>,
    ) -> Result<EntryKind> {
        let before = self.raw.store().members().clone();
        let change =
            MemberChange::from_single(cc.get_change_type(), cc.node_id, &cc.context, &before);
        let result = self.raw.apply_conf_change(&cc);
        self.finish_conf_change(index, change, before, result, pos, members_after)
    }

    fn apply_conf_change_v2(
        &mut self,
        index: u64,
        cc: ConfChangeV2,
        pos: usize,
        members_after: &mut Vec<(usize, Members)>,
    ) -> Result<EntryKind> {
        let before = self.raw.store().members().clone();
        // Ballast proposes single changes only; anything else is refused the
        // same way on every node.
        if cc.changes.len() != 1 {
            tracing::warn!(index, "refusing a multi-step membership change");
            return Ok(EntryKind::ConfChange {
                change: MemberChange::Remove { id: 0 },
                members: before.list(),
                rejected: true,
            });
        }
        let single = &cc.changes[0];
        let change = MemberChange::from_single(
            single.get_change_type(),
            single.node_id,
            &cc.context,
            &before,
        );
        let result = self.raw.apply_conf_change(&cc);
        self.finish_conf_change(index, change, before, result, pos, members_after)
    }

    fn finish_conf_change(
        &mut self,
        index: u64,
        change: MemberChange,
        before: Members,
        result: raft::Result<raft::prelude::ConfState>,
        pos: usize,
        members_after: &mut Vec<(usize, Members)>,
    ) -> Result<EntryKind> {
        match result {
            Ok(cs) => {
                let mut members = before;
                members.apply(&change, cs);
                self.raw.mut_store().set_members(members.clone(), index)?;
                tracing::info!(index, ?change, "membership changed");
                self.members_changed(&members);
                let list = members.list();
                members_after.push((pos, members));
                Ok(EntryKind::ConfChange {
                    change,
                    members: list,
                    rejected: false,
                })
            }
            Err(e) => {
                tracing::warn!(index, ?change, error = %e, "membership change rejected");
                Ok(EntryKind::ConfChange {
                    change,
                    members: before.list(),
                    rejected: true,
                })
            }
        }
    }

    fn publish_status(&mut self) {
        let pending = self.pending.len() as u64;
        (self.shared.metrics.proposals_pending)
            .store(pending, std::sync::atomic::Ordering::Relaxed);
        let r = &self.raw.raft;
        if r.leader_id != 0 && r.leader_id != self.last_leader {
            self.last_leader = r.leader_id;
            Metrics::add(&self.shared.metrics.leader_changes, 1);
        }
        let leader = self.leader_hint();
        let role = if self.removed_at.is_some() {
            Role::Removed
        } else {
            r.state.into()
        };
        let (term, commit) = (r.term, r.raft_log.committed);
        self.shared.status.send_if_modified(|s| {
            let changed =
                s.leader != leader || s.role != role || s.term != term || s.commit_index != commit;
            if changed {
                s.leader = leader;
                s.role = role;
                s.term = term;
                s.commit_index = commit;
            }
            changed
        });
    }

    fn stop(mut self, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            tracing::error!(id = self.id, error = %e, "raft node failed");
        }
        self.reads.fail_all(Error::Stopped);
        for (_, (_, w)) in std::mem::take(&mut self.pending) {
            w.fail(Error::Stopped);
        }
        for (_, reply) in std::mem::take(&mut self.batch) {
            let _ = reply.send(Err(Error::Stopped));
        }
        for (_, reply) in std::mem::take(&mut self.forwarded) {
            let _ = reply.send(Err(Error::Stopped));
        }
        let removed = self.removed_at.is_some();
        self.shared.status.send_modify(|s| {
            s.role = if removed {
                Role::Removed
            } else {
                Role::Stopped
            };
            s.leader = None;
        });
        result
    }
}

/// The context of an entry node `origin` forwarded in its run `run_id`:
/// both, then the proposal's sequence number, big-endian.
fn forward_context(origin: u64, run_id: u64, seq: u64) -> Vec<u8> {
    [origin, run_id, seq]
        .iter()
        .flat_map(|n| n.to_be_bytes())
        .collect()
}

/// The sequence number of an entry node `me` forwarded in its run `run_id`,
/// if this is one.
fn forwarded_seq(context: &[u8], me: u64, run_id: u64) -> Option<u64> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(
            context.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    if context.len() != 24 || word(0)? != me || word(1)? != run_id {
        return None;
    }
    word(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_context_names_its_origin() {
        let ctx = forward_context(7, 99, 42);
        assert_eq!(forwarded_seq(&ctx, 7, 99), Some(42));
        // Another node's, or this node's from an earlier run.
        assert_eq!(forwarded_seq(&ctx, 8, 99), None);
        assert_eq!(forwarded_seq(&ctx, 7, 98), None);
        assert_eq!(forwarded_seq(&[], 7, 99), None);
        assert_eq!(forwarded_seq(&ctx[..16], 7, 99), None);
    }
}
