//! [`Node`]: one storage member — the MVCC store, its raft node, and what
//! the gRPC services share: response headers, the write path (proposed
//! through raft, which forwards a follower's proposals to the leader),
//! linearizable reads (read-only txns among them), and the leader's lease
//! clock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_raft::{Member, RaftNode, Role};
use ballast_storage::{self as st, StorageError, WatchableStore, WriteResult};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use tonic::transport::Channel;
use tonic::Status;

use crate::auth::AuthStore;
use crate::command::{Command, MemberAttributes, Op, ReplyKind};
use crate::config::ServerConfig;
use crate::convert;
use crate::error::ServerError;
use crate::pb::ballast::server::internal_client::InternalClient;
use crate::pb::etcdserverpb as pb;
use crate::state_machine::{ClusterInfo, StoreMachine};

/// The version Ballast reports as etcd's (the Kubernetes apiserver enables
/// watch progress requests from 3.5.13 on).
pub const ETCD_VERSION: &str = "3.5.17";

/// Who leads, from this member's point of view.
enum Leader {
    Me,
    Other(u64),
}

/// One storage member. Shared by every service behind an `Arc`.
pub struct Node {
    pub(crate) config: ServerConfig,
    pub(crate) store: Arc<WatchableStore>,
    pub(crate) raft: RaftNode<StoreMachine>,
    pub(crate) cluster: Arc<RwLock<ClusterInfo>>,
    pub(crate) member_id: u64,
    pub(crate) cluster_id: u64,
    /// Lazily connected channels to other members' peer URLs (by id, with
    /// the URL they were made for).
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    /// The smallest TTL a lease gets (etcd: 1.5 election timeouts, rounded up).
    pub(crate) min_lease_ttl: i64,
}

/// Decodes the attributes a raft member context carries.
pub fn member_attributes(m: &Member) -> Option<MemberAttributes> {
    MemberAttributes::decode(m.context.as_slice()).ok()
}

/// A member's peer URLs: as last published (MemberUpdate changes them),
/// else as given when it was added.
pub fn peer_urls(cluster: &ClusterInfo, m: &Member) -> Vec<String> {
    match cluster.members.get(&m.id) {
        Some(a) if !a.peer_urls.is_empty() => a.peer_urls.clone(),
        _ => member_attributes(m)
            .map(|a| a.peer_urls)
            .unwrap_or_default(),
    }
}

impl Node {
    pub(crate) fn new(
        config: ServerConfig,
        store: Arc<WatchableStore>,
        raft: RaftNode<StoreMachine>,
        cluster: Arc<RwLock<ClusterInfo>>,
        member_id: u64,
        cluster_id: u64,
    ) -> Self {
        let min_lease_ttl =
            (config.election_timeout.as_millis() as u64 * 3 / 2).div_ceil(1000) as i64;
        Node {
            config,
            store,
            raft,
            cluster,
            member_id,
            cluster_id,
            channels: Mutex::new(HashMap::new()),
            min_lease_ttl: min_lease_ttl.max(1),
        }
    }

    /// The header etcd puts on every response.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.status().term,
        }
    }

    /// A header at the store's current revision.
    pub fn current_header(&self) -> pb::ResponseHeader {
        self.header(self.store.current_revision())
    }

    /// The auth state (users, roles, tokens).
    pub fn auth(&self) -> Arc<AuthStore> {
        self.cluster.read().auth.clone()
    }

    pub fn store(&self) -> &Arc<WatchableStore> {
        &self.store
    }

    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn is_leader(&self) -> bool {
        self.raft.status().role == Role::Leader
    }

    /// Waits (bounded) until some member leads.
    async fn leader(&self) -> Result<Leader, ServerError> {
        let mut rx = self.raft.subscribe();
        let wait = self.config.election_timeout * 3;
        let status = tokio::time::timeout(wait, rx.wait_for(|s| s.leader.is_some()))
            .await
            .map_err(|_| ServerError::NoLeader)?
            .map_err(|_| ServerError::Stopped)?
            .clone();
        match status.leader {
            Some(id) if id == self.member_id => Ok(Leader::Me),
            Some(id) => Ok(Leader::Other(id)),
            None => Err(ServerError::NoLeader),
        }
    }

    /// A channel to a member's peer URL (where the internal service runs).
    pub(crate) fn channel(&self, id: u64) -> Result<Channel, ServerError> {
        let url = self
            .raft
            .members()
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| peer_urls(&self.cluster.read(), m).into_iter().next())
            .ok_or(ServerError::MemberNotFound)?;
        if let Some((cached, ch)) = self.channels.lock().get(&id) {
            if *cached == url {
                return Ok(ch.clone());
            }
        }
        let ch = crate::tls::peer_endpoint(&url, &self.config.peer_tls)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        self.channels.lock().insert(id, (url, ch.clone()));
        Ok(ch)
    }

    /// Runs `call` on a channel to the leader's peer URL, or returns `None`
    /// when this member leads. A leader that refuses the connection (it has
    /// just stopped, or its published peer URL no longer reaches it, as after
    /// `member update`) is looked up again until the election settles,
    /// bounded by five election timeouts: a refused connection sent nothing,
    /// so trying again is safe.
    pub(crate) async fn on_leader<T, F: Future<Output = Result<T, Status>>>(
        &self,
        call: impl Fn(Channel) -> F,
    ) -> Result<Option<T>, Status> {
        let deadline = Instant::now() + self.config.election_timeout * 5;
        loop {
            let Leader::Other(id) = self.leader().await? else {
                return Ok(None);
            };
            match call(self.channel(id)?).await {
                Err(e) if connection_refused(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(self.config.heartbeat_interval).await;
                }
                other => return other.map(Some),
            }
        }
    }

    /// Replicates a write and answers what it did, wherever the leader is.
    pub async fn write(&self, op: Op) -> Result<ReplyKind, Status> {
        self.write_command(&Command::from_op(op)).await
    }

    /// [`write`](Self::write) of a whole command (one carrying its caller,
    /// see `auth::write`).
    pub async fn write_command(&self, cmd: &Command) -> Result<ReplyKind, Status> {
        if cmd.encoded_len() > self.config.max_request_bytes {
            return Err(ServerError::RequestTooLarge.into());
        }
        // Refused at once when an alarm is already raised here; an entry
        // proposed before this member saw the alarm is refused when it
        // applies, on every member alike (see `alarm_refusal`).
        if let Some(refusal) = alarm_refusal(&self.cluster.read().alarms, cmd) {
            return Err(refusal.into());
        }
        for _ in 0..3 {
            match self.propose(cmd).await {
                Err(ServerError::LeaderChanged) => continue,
                // An election is under way: wait (bounded) for its leader.
                Err(ServerError::NoLeader) => {
                    self.leader().await?;
                }
                other => return other.map_err(Status::from),
            }
        }
        Err(ServerError::LeaderChanged.into())
    }

    /// Proposes through this member's raft node (a follower forwards to the
    /// leader through raft) and answers from this member's own apply.
    pub(crate) async fn propose(&self, cmd: &Command) -> Result<ReplyKind, ServerError> {
        let outcome = self.raft.propose(cmd.encode_to_vec()).await?;
        let (revision, result) = outcome.into_result()?;
        let header = self.header(revision);
        Ok(match result {
            WriteResult::Put(p) => ReplyKind::Put(convert::put_to_pb(p, header)),
            WriteResult::DeleteRange(d) => ReplyKind::DeleteRange(convert::delete_to_pb(d, header)),
            WriteResult::Txn(t) => ReplyKind::Txn(convert::txn_to_pb(t, &header)),
            WriteResult::Compact => ReplyKind::Compaction(pb::CompactionResponse {
                header: Some(header),
            }),
            WriteResult::LeaseGrant { id, ttl } => ReplyKind::LeaseGrant(pb::LeaseGrantResponse {
                header: Some(header),
                id,
                ttl,
                error: String::new(),
            }),
            WriteResult::LeaseRevoke => ReplyKind::LeaseRevoke(pb::LeaseRevokeResponse {
                header: Some(header),
            }),
            WriteResult::Noop | WriteResult::Skipped => ReplyKind::Done(header),
        })
    }

    /// A linearizable read barrier: afterwards the local store reflects every
    /// write acknowledged before the call.
    pub async fn linearizable(&self) -> Result<(), ServerError> {
        self.raft
            .read_index()
            .await
            .map(|_| ())
            .map_err(ServerError::from)
    }

    /// etcd's checks of a txn before it is served or proposed, in its
    /// order: the request size (`--max-request-bytes`), an op with no
    /// request (`key not found`), then the store's `check_txn` (ops per
    /// level and in all, nesting depth, each request's arguments, duplicate
    /// keys), all in time linear in the request. Returns the store's form.
    pub fn check_txn(&self, req: &pb::TxnRequest) -> Result<st::TxnRequest, ServerError> {
        if req.encoded_len() > self.config.max_request_bytes {
            return Err(ServerError::RequestTooLarge);
        }
        if has_empty_op(req) {
            return Err(StorageError::KeyNotFound.into());
        }
        let txn = convert::txn_from_pb(req);
        self.store.check_txn(&txn)?;
        Ok(txn)
    }

    /// Serves a read-only txn as etcd does, without the log: after a
    /// linearizable read barrier (skipped, as etcd's `IsTxnSerializable`,
    /// when every op of both branches is a serializable range), from this
    /// member's store at its current revision.
    pub async fn read_txn(
        &self,
        req: &pb::TxnRequest,
        txn: &st::TxnRequest,
    ) -> Result<pb::TxnResponse, Status> {
        if !is_txn_serializable(req) {
            self.linearizable().await?;
        }
        let (revision, resp) = self.store.read_txn(txn).map_err(ServerError::from)?;
        Ok(convert::txn_to_pb(resp, &self.header(revision)))
    }

    pub fn has_nospace_alarm(&self) -> bool {
        self.has_alarm(pb::AlarmType::Nospace)
    }

    fn has_alarm(&self, alarm: pb::AlarmType) -> bool {
        self.cluster
            .read()
            .alarms
            .iter()
            .any(|(_, a)| *a == alarm as i32)
    }

    /// Peers whose HashKV at this member's current revision differs from
    /// this member's, where both have compacted to the same revision (etcd
    /// compares nothing else). A peer that cannot answer — down, behind,
    /// compacted further — is skipped with a log line, as etcd does.
    pub(crate) async fn peers_with_other_hashes(&self) -> Result<Vec<u64>, Status> {
        let own = crate::maintenance::hash_kv(self, 0).await?;
        let mut differ = Vec::new();
        for m in self.raft.members() {
            if m.id == self.member_id || m.is_learner {
                continue;
            }
            let req = pb::HashKvRequest {
                revision: own.hash_revision,
            };
            let answer = match self.channel(m.id) {
                Ok(ch) => internal_client(ch)
                    .hash_kv(req)
                    .await
                    .map(|r| r.into_inner()),
                Err(e) => Err(e.into()),
            };
            match answer {
                Ok(peer) if peer.compact_revision != own.compact_revision => tracing::warn!(
                    peer = format!("{:x}", m.id),
                    local = own.compact_revision,
                    remote = peer.compact_revision,
                    "cannot check the hash: the compact revisions differ"
                ),
                Ok(peer) if peer.hash != own.hash => {
                    tracing::error!(
                        peer = format!("{:x}", m.id),
                        revision = own.hash_revision,
                        local = own.hash,
                        remote = peer.hash,
                        "found data inconsistency with a peer"
                    );
                    differ.push(m.id);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    peer = format!("{:x}", m.id),
                    revision = own.hash_revision,
                    "cannot fetch the peer's hash: {}",
                    e.message()
                ),
            }
        }
        Ok(differ)
    }

    /// etcd's initial corruption check: refuses to start when a peer's
    /// history differs from this member's.
    pub(crate) async fn check_initial_hash(&self) -> Result<(), ServerError> {
        let differ = self
            .peers_with_other_hashes()
            .await
            .map_err(|e| ServerError::Internal(e.message().to_string()))?;
        if differ.is_empty() {
            tracing::info!("initial corruption check passed");
            Ok(())
        } else {
            Err(ServerError::InvalidArgument(format!(
                "{:x} found data inconsistency with peers",
                self.member_id
            )))
        }
    }

    /// etcd's periodic corruption check, on the leader: a member whose
    /// history differs gets the CORRUPT alarm, and writes stop.
    async fn check_corruption(self: Arc<Self>) {
        let every = self.config.corrupt_check_time;
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if !self.is_leader() {
                continue;
            }
            let differ = match self.peers_with_other_hashes().await {
                Ok(differ) => differ,
                Err(e) => {
                    tracing::warn!("corruption check: {}", e.message());
                    continue;
                }
            };
            let raised = self.cluster.read().alarms.clone();
            let corrupt = pb::AlarmType::Corrupt as i32;
            for member_id in differ
                .into_iter()
                .filter(|id| !raised.contains(&(*id, corrupt)))
            {
                let alarm = pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Activate as i32,
                    member_id,
                    alarm: corrupt,
                };
                if let Err(e) = self.propose(&Command::from_op(Op::Alarm(alarm))).await {
                    tracing::warn!("raising the CORRUPT alarm: {e}");
                }
            }
        }
    }

    /// Renews a lease on the leader (forwarding if needed); returns its TTL.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Status> {
        let renewed = self
            .on_leader(|ch| async move {
                let req = pb::LeaseKeepAliveRequest { id };
                Ok(internal_client(ch).lease_renew(req).await?.into_inner().ttl)
            })
            .await?;
        match renewed {
            Some(ttl) => Ok(ttl),
            None => Ok(self
                .store
                .lease_renew(id, Instant::now())
                .map_err(ServerError::from)?),
        }
    }

    /// The members as etcd lists them.
    pub fn members_pb(&self) -> Vec<pb::Member> {
        let cluster = self.cluster.read();
        self.raft
            .members()
            .into_iter()
            .map(|m| {
                let attrs = member_attributes(&m).unwrap_or_default();
                let public = cluster.members.get(&m.id).filter(|p| !p.name.is_empty());
                pb::Member {
                    id: m.id,
                    name: public.map(|p| p.name.clone()).unwrap_or(attrs.name),
                    peer_ur_ls: peer_urls(&cluster, &m),
                    client_ur_ls: public.map(|p| p.client_urls.clone()).unwrap_or_default(),
                    is_learner: m.is_learner,
                }
            })
            .collect()
    }

    /// Background duties: the lease clock follows leadership; the leader
    /// revokes expired leases, watches the backend quota and (with
    /// `--experimental-corrupt-check-time`) compares members' hashes; this
    /// member publishes its name and client URLs once.
    pub(crate) fn spawn_background(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move { node.follow_leadership().await });
        let node = self.clone();
        tokio::spawn(async move { node.expire_leases().await });
        let node = self.clone();
        tokio::spawn(async move { node.publish().await });
        let node = self.clone();
        tokio::spawn(async move { node.check_corruption().await });
    }

    async fn follow_leadership(self: Arc<Self>) {
        let mut rx = self.raft.subscribe();
        let mut leading = false;
        loop {
            let now_leading = rx.borrow_and_update().role == Role::Leader;
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    self.store.lease_promote(Instant::now());
                } else {
                    self.store.lease_demote();
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn expire_leases(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if !self.is_leader() {
                continue;
            }
            for id in self.store.expired_leases(Instant::now()) {
                let cmd = Command::from_op(Op::LeaseRevoke(pb::LeaseRevokeRequest { id }));
                if let Err(e) = self.propose(&cmd).await {
                    tracing::debug!(id, "revoking an expired lease failed: {e}");
                }
            }
            let over = self.store.size_bytes() > self.config.quota_backend_bytes;
            if over && !self.has_nospace_alarm() {
                let alarm = pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Activate as i32,
                    member_id: self.member_id,
                    alarm: pb::AlarmType::Nospace as i32,
                };
                let _ = self.propose(&Command::from_op(Op::Alarm(alarm))).await;
            }
        }
    }

    async fn publish(self: Arc<Self>) {
        let attrs = MemberAttributes {
            id: self.member_id,
            name: self.config.name.clone(),
            peer_urls: self.config.initial_advertise_peer_urls.clone(),
            client_urls: self.config.advertise_client_urls.clone(),
        };
        for _ in 0..600 {
            if self.cluster.read().members.get(&self.member_id) == Some(&attrs) {
                return;
            }
            match self.write(Op::Publish(attrs.clone())).await {
                Ok(_) => return,
                Err(e) => tracing::debug!("publishing member attributes: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What the raised `alarms` refuse `cmd` with, as etcd's alarm appliers
/// refuse it: under CORRUPT every write of keys, leases or compaction
/// (`etcdserver: corrupt cluster`); under NOSPACE what can grow the
/// backend (`mvcc: database space exceeded`). Alarms, members and auth
/// still go through, so an alarm can be disarmed.
pub(crate) fn alarm_refusal(alarms: &[(u64, i32)], cmd: &Command) -> Option<ServerError> {
    let raised = |alarm: pb::AlarmType| alarms.iter().any(|(_, a)| *a == alarm as i32);
    if raised(pb::AlarmType::Corrupt) && changes_data(cmd) {
        Some(ServerError::Corrupt)
    } else if raised(pb::AlarmType::Nospace) && takes_space(cmd) {
        Some(ServerError::NoSpace)
    } else {
        None
    }
}

/// Whether a command changes keys or leases: etcd refuses these under the
/// CORRUPT alarm.
fn changes_data(cmd: &Command) -> bool {
    matches!(
        cmd.op,
        Some(
            Op::Put(_)
                | Op::DeleteRange(_)
                | Op::Txn(_)
                | Op::Compaction(_)
                | Op::LeaseGrant(_)
                | Op::LeaseRevoke(_)
        )
    )
}

/// Whether a command can grow the backend (refused under the NOSPACE alarm).
fn takes_space(cmd: &Command) -> bool {
    use pb::request_op::Request as R;
    fn txn_puts(t: &pb::TxnRequest) -> bool {
        t.success
            .iter()
            .chain(&t.failure)
            .any(|op| match &op.request {
                Some(R::RequestPut(_)) => true,
                Some(R::RequestTxn(n)) => txn_puts(n),
                _ => false,
            })
    }
    match &cmd.op {
        Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) => true,
        Some(Op::Txn(t)) => txn_puts(t),
        _ => false,
    }
}

/// Whether some op of the txn, at any depth, carries no request (etcd
/// answers `key not found`; the store form would drop it).
fn has_empty_op(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as R;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            None => true,
            Some(R::RequestTxn(n)) => has_empty_op(n),
            Some(_) => false,
        })
}

/// etcd's `IsTxnSerializable`: every op of both branches (none nested) is
/// a range that asks to be serializable.
fn is_txn_serializable(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as R;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(&op.request, Some(R::RequestRange(r)) if r.serializable))
}

/// Converts a typed reply into the response a service expects.
pub(crate) fn expect_reply<T>(
    reply: ReplyKind,
    pick: impl FnOnce(ReplyKind) -> Option<T>,
) -> Result<T, Status> {
    pick(reply).ok_or_else(|| Status::internal("etcdserver: unexpected reply kind"))
}

/// A client of a member's internal service (messages of any size: a
/// forwarded request was already checked against the limits here).
pub(crate) fn internal_client(channel: Channel) -> InternalClient<Channel> {
    InternalClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

/// Whether a call failed because the peer refused the connection, so
/// nothing was sent.
fn connection_refused(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_told_apart() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let err = internal_client(channel)
            .lease_renew(pb::LeaseKeepAliveRequest { id: 1 })
            .await
            .unwrap_err();
        assert!(connection_refused(&err), "{err:?}");
        assert!(!connection_refused(&Status::unavailable("leader changed")));
    }
}
