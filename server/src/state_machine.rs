//! The replicated state machine: raft's committed entries applied to the
//! MVCC store, plus the little cluster state etcd keeps beside it (member
//! names and client URLs, alarms, and the auth state — users, roles, the
//! enabled flag — saved in `auth.pb` next to `cluster.pb`).
//!
//! The auth state is saved at checkpoints (`sync`), after the store, with
//! the raft index it is current through; so it is never ahead of the
//! store. It may be behind it after a crash (the store's writes survive a
//! killed process, the auth state of later entries does not), so the
//! applied index this machine reports is the lower of the two: the log is
//! replayed from there, the store skipping what it has, and no auth change
//! is lost. Every write is checked against the auth state again as it
//! applies (`auth::check_at_apply`), which is therefore that of the entry
//! before it on every member.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ballast_raft::{Committed, EntryKind, GrpcTransport, StateMachine};
use ballast_storage::{self as st, Applied, StorageError, WatchableStore, WriteOp, WriteResult};
use parking_lot::RwLock;
use prost::Message;

use crate::auth::{self, AuthFileError, AuthStore};
use crate::command::{Command, MemberAttributes, Op};
use crate::convert;
use crate::error::ServerError;
use crate::node::alarm_refusal;
use crate::pb::ballast::server::AuthState;
use crate::pb::etcdserverpb as pb;

/// Cluster state that is replicated but not key-value data.
#[derive(Debug, Default, Clone)]
pub struct ClusterInfo {
    /// Published attributes by member id.
    pub members: BTreeMap<u64, MemberAttributes>,
    /// Active alarms: (member id, alarm type).
    pub alarms: Vec<(u64, i32)>,
    /// Users, roles, the enabled flag and tokens (shared: the store locks
    /// itself, so readers clone the `Arc` and drop the cluster lock).
    pub auth: Arc<AuthStore>,
}

/// `cluster.pb`, and the head of a raft snapshot image. Images written
/// before auth existed have no `auth` and restore with auth empty; files
/// and images from before alarms were kept have none raised.
#[derive(Clone, PartialEq, Message)]
struct ClusterFile {
    #[prost(message, repeated, tag = "1")]
    members: Vec<MemberAttributes>,
    #[prost(message, optional, tag = "2")]
    auth: Option<AuthState>,
    /// The raised alarms: they outlive a restart, as etcd keeps them in
    /// its backend, until disarmed.
    #[prost(message, repeated, tag = "3")]
    alarms: Vec<pb::AlarmMember>,
}

impl ClusterInfo {
    fn alarm_members(&self) -> Vec<pb::AlarmMember> {
        self.alarms
            .iter()
            .map(|&(member_id, alarm)| pb::AlarmMember { member_id, alarm })
            .collect()
    }

    fn set_alarms(&mut self, alarms: Vec<pb::AlarmMember>) {
        self.alarms = alarms.into_iter().map(|a| (a.member_id, a.alarm)).collect();
    }
}

/// What applying one entry answers its proposer: the store's result, and
/// the verdict of what decides before the store — the auth store's (auth
/// commands, and permissions checked at apply) or a raised alarm's.
#[derive(Debug)]
pub struct Outcome {
    pub applied: Applied,
    pub verdict: Option<Result<(), ServerError>>,
}

/// Applies commands to the store; shared state is read by the services.
pub struct StoreMachine {
    store: Arc<WatchableStore>,
    /// Told about peer URLs that change (MemberUpdate).
    transport: GrpcTransport,
    cluster: Arc<RwLock<ClusterInfo>>,
    /// Where member attributes are kept across restarts.
    cluster_file: PathBuf,
    /// The same store as `cluster.auth`.
    auth: Arc<AuthStore>,
    /// Where the auth state is kept across restarts (`auth.pb`).
    auth_file: PathBuf,
    /// The auth state changed since it was last saved.
    auth_dirty: bool,
    /// The raft index the in-memory auth state is current through (the
    /// last entry applied, or at start the one saved).
    auth_through: u64,
    /// The index the saved auth state is current through.
    auth_saved_through: u64,
}

impl StoreMachine {
    /// Loads the member attributes and the auth state saved beside the
    /// store. An auth file that exists but cannot be read whole is an
    /// error: starting without it would serve with auth off. A member
    /// without one (new, or from before auth existed) writes one now, so
    /// that from here on it always has one.
    pub fn new(
        store: Arc<WatchableStore>,
        transport: GrpcTransport,
        cluster: Arc<RwLock<ClusterInfo>>,
        cluster_file: PathBuf,
    ) -> Result<Self, AuthFileError> {
        if let Ok(bytes) = std::fs::read(&cluster_file) {
            if let Ok(file) = ClusterFile::decode(bytes.as_slice()) {
                let mut c = cluster.write();
                for m in file.members {
                    c.members.insert(m.id, m);
                }
                c.set_alarms(file.alarms);
            }
        }
        let auth_file = cluster_file.with_file_name("auth.pb");
        let auth = cluster.read().auth.clone();
        let store_applied = store.applied_index();
        let (through, save_now) = match auth::load_file(&auth_file)? {
            Some(auth::Loaded { state, legacy }) => {
                // A legacy file was saved at every change: current through
                // the store.
                let through = if legacy {
                    store_applied
                } else {
                    state.applied_index
                };
                auth.replace(state);
                (through, legacy)
            }
            None => (store_applied, true),
        };
        let mut machine = StoreMachine {
            store,
            transport,
            cluster,
            cluster_file,
            auth,
            auth_file,
            auth_dirty: false,
            auth_through: through,
            auth_saved_through: through,
        };
        if save_now {
            machine
                .write_auth()
                .map_err(|source| AuthFileError::Unwritable {
                    path: machine.auth_file.display().to_string(),
                    source,
                })?;
        }
        Ok(machine)
    }

    /// Saves the auth state as current through `auth_through`.
    fn write_auth(&mut self) -> std::io::Result<()> {
        let mut state = self.auth.to_proto();
        state.applied_index = state.applied_index.max(self.auth_through);
        auth::save_file(&self.auth_file, &state)?;
        self.auth_dirty = false;
        self.auth_saved_through = self.auth_through;
        Ok(())
    }

    /// Writes the auth state to `auth.pb` (atomically, durably). On failure
    /// the state stays dirty: `sync` tries again and fails until it is
    /// saved, so the log it would be rebuilt from is kept.
    fn save_auth(&mut self) {
        match self.write_auth() {
            Ok(()) => {}
            Err(e) => {
                self.auth_dirty = true;
                tracing::error!(
                    "cannot save the auth state to {}: {e}",
                    self.auth_file.display()
                );
            }
        }
    }

    fn save_cluster(&self) {
        let file = {
            let c = self.cluster.read();
            ClusterFile {
                members: c.members.values().cloned().collect(),
                auth: None,
                alarms: c.alarm_members(),
            }
        };
        let tmp = self.cluster_file.with_extension("tmp");
        let written = std::fs::write(&tmp, file.encode_to_vec())
            .and_then(|_| std::fs::rename(&tmp, &self.cluster_file));
        if let Err(e) = written {
            tracing::error!("cannot save member attributes: {e}");
        }
    }

    /// Turns one entry's command into a storage write; cluster-state
    /// commands are applied here and become no-ops for the store, and so
    /// does a command its caller may no longer make (the refusal goes to
    /// `auth_result`).
    fn write_op(
        &mut self,
        index: u64,
        cmd: Command,
        fresh: bool,
        verdict: &mut Option<Result<(), ServerError>>,
    ) -> WriteOp {
        if let Some(op) = &cmd.op {
            if let Err(e) = auth::check_at_apply(&self.auth, &self.store, cmd.header.as_ref(), op) {
                *verdict = Some(Err(e.into()));
                return WriteOp::Noop;
            }
        }
        // A write an alarm refuses, whenever it was proposed: every member
        // refuses it at the same place in the log.
        if fresh {
            if let Some(refusal) = alarm_refusal(&self.cluster.read().alarms, &cmd) {
                *verdict = Some(Err(refusal));
                return WriteOp::Noop;
            }
        }
        match cmd.op {
            // Auth commands: applied once (the auth state records its own
            // index, as it is saved apart from the store).
            Some(
                ref op @ (Op::AuthEnable(_)
                | Op::AuthDisable(_)
                | Op::Authenticate(_)
                | Op::UserAdd(_)
                | Op::UserDelete(_)
                | Op::UserChangePassword(_)
                | Op::UserGrantRole(_)
                | Op::UserRevokeRole(_)
                | Op::RoleAdd(_)
                | Op::RoleDelete(_)
                | Op::RoleGrantPermission(_)
                | Op::RoleRevokePermission(_)),
            ) => {
                if index > self.auth.applied_index() {
                    *verdict = self
                        .auth
                        .apply(index, op, fresh)
                        .map(|r| r.map_err(ServerError::from));
                    if AuthStore::changes_state(op) {
                        self.auth_dirty = true;
                    }
                }
                WriteOp::Noop
            }
            None => WriteOp::Noop,
            Some(Op::Put(p)) => WriteOp::Put(convert::put_from_pb(&p)),
            Some(Op::DeleteRange(d)) => WriteOp::DeleteRange(convert::delete_from_pb(&d)),
            Some(Op::Txn(t)) => WriteOp::Txn(convert::txn_from_pb(&t)),
            Some(Op::Compaction(c)) => WriteOp::Compact {
                revision: c.revision,
            },
            Some(Op::LeaseGrant(g)) => WriteOp::LeaseGrant {
                id: g.id,
                ttl: g.ttl,
            },
            Some(Op::LeaseRevoke(r)) => WriteOp::LeaseRevoke { id: r.id },
            Some(Op::Publish(attrs)) => {
                if fresh {
                    if let Some(url) = attrs.peer_urls.first() {
                        self.transport.set_peer(attrs.id, url.clone());
                    }
                    self.cluster.write().members.insert(attrs.id, attrs);
                    self.save_cluster();
                }
                WriteOp::Noop
            }
            Some(Op::Alarm(a)) => {
                if fresh {
                    let changed = {
                        let mut c = self.cluster.write();
                        let entry = (a.member_id, a.alarm);
                        let before = c.alarms.len();
                        match pb::alarm_request::AlarmAction::try_from(a.action) {
                            Ok(pb::alarm_request::AlarmAction::Activate)
                                if !c.alarms.contains(&entry) =>
                            {
                                c.alarms.push(entry);
                            }
                            Ok(pb::alarm_request::AlarmAction::Deactivate) => {
                                c.alarms.retain(|x| *x != entry)
                            }
                            _ => {}
                        }
                        c.alarms.len() != before
                    };
                    if changed {
                        self.save_cluster();
                    }
                }
                WriteOp::Noop
            }
        }
    }
}

impl StateMachine for StoreMachine {
    type Output = Outcome;

    /// Applies the entries as one store write batch; an entry whose
    /// permission check reads the store (the keys on a lease) first has
    /// the entries before it written, so it sees them as every member does.
    fn apply(&mut self, entries: &[Committed]) -> Vec<Outcome> {
        let applied = self.store.applied_index();
        let max_txn_ops = self.store.config().max_txn_ops;
        let mut out = Vec::with_capacity(entries.len());
        let mut batch = Batch::default();
        for (i, e) in entries.iter().enumerate() {
            let mut verdict = None;
            let cmd = match e.kind {
                EntryKind::Normal => decode_command(e, max_txn_ops).map(Some),
                _ => Ok(None),
            };
            let op = match cmd {
                Ok(Some(cmd)) => {
                    if auth::reads_lease_keys(&self.auth, &cmd) {
                        batch.flush(&self.store, &entries[..i], &mut out);
                    }
                    self.write_op(e.index, cmd, e.index > applied, &mut verdict)
                }
                Ok(None) => WriteOp::Noop,
                Err(err) => {
                    batch.failed.push((i - out.len(), err));
                    WriteOp::Noop
                }
            };
            batch.ops.push(op);
            batch.verdicts.push(verdict);
        }
        batch.flush(&self.store, entries, &mut out);
        if let Some(last) = entries.last() {
            self.auth_through = self.auth_through.max(last.index);
        }
        out
    }

    /// The store's applied index, or the auth state's if lower (after a
    /// crash): the log is replayed from the lower one.
    fn applied_index(&self) -> u64 {
        self.store.applied_index().min(self.auth_through)
    }

    fn sync(&mut self) -> Result<(), ballast_raft::Error> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ballast_raft::Error::StateMachine(format!("syncing {what}: {e}"))
        };
        self.store.sync().map_err(|e| failed("the store", &e))?;
        // The auth state, saved (durably) after the store it goes with,
        // whenever it is current through more than the saved one (the log
        // below is discarded after this); the log is kept until it is.
        if self.auth_dirty || self.auth_saved_through < self.auth_through {
            self.save_auth();
            if self.auth_dirty {
                return Err(failed(
                    "the auth state",
                    &format!("cannot write {}", self.auth_file.display()),
                ));
            }
        }
        // Member attributes are a file of their own, replaced by rename:
        // sync it (if written yet), then its folder.
        for file in [&self.cluster_file] {
            match std::fs::File::open(file) {
                Ok(f) => f.sync_all().map_err(|e| failed("a state file", &e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed("a state file", &e)),
            }
        }
        if let Some(dir) = self.auth_file.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| failed("the member folder", &e))?;
        }
        Ok(())
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64, ballast_raft::Error> {
        let cluster = {
            let c = self.cluster.read();
            ClusterFile {
                members: c.members.values().cloned().collect(),
                auth: Some(self.auth.to_proto()),
                alarms: c.alarm_members(),
            }
        }
        .encode_to_vec();
        out.write_all(&(cluster.len() as u32).to_be_bytes())?;
        out.write_all(&cluster)?;
        let (_, index) = st::snapshot::write_snapshot(&self.store, out)
            .map_err(|e| ballast_raft::Error::StateMachine(e.to_string()))?;
        Ok(index)
    }

    fn restore(
        &mut self,
        index: u64,
        image: &ballast_raft::SnapshotImage,
    ) -> Result<(), ballast_raft::Error> {
        use std::io::Read;
        let bad = |m: &str| ballast_raft::Error::StateMachine(format!("snapshot: {m}"));
        // The image: [cluster file length u32 BE][cluster file][store image].
        let mut reader = image.reader()?;
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(|_| bad("truncated"))?;
        let len = u32::from_be_bytes(len);
        if u64::from(len) > image.len() - 4 {
            return Err(bad("truncated"));
        }
        let mut head = vec![0u8; len as usize];
        reader.read_exact(&mut head)?;
        let cluster = ClusterFile::decode(head.as_slice()).map_err(|e| bad(&e.to_string()))?;
        self.store
            .restore(&mut reader)
            .map_err(|e| ballast_raft::Error::StateMachine(e.to_string()))?;
        {
            let mut c = self.cluster.write();
            c.members = cluster.members.into_iter().map(|m| (m.id, m)).collect();
            c.set_alarms(cluster.alarms);
        }
        self.save_cluster();
        let mut auth = cluster.auth.unwrap_or_default();
        // The state is the one at the snapshot's index, whatever the image says.
        auth.applied_index = index;
        if auth.revision == 0 {
            auth.revision = 1;
        }
        self.auth.replace(auth);
        self.auth_through = index;
        self.save_auth();
        Ok(())
    }
}

/// Store writes gathered from consecutive entries, applied as one batch.
#[derive(Default)]
struct Batch {
    ops: Vec<WriteOp>,
    /// The verdict before the store per entry (see [`Outcome`]).
    verdicts: Vec<Option<Result<(), ServerError>>>,
    /// Entries that failed before reaching the store (position in `ops`).
    failed: Vec<(usize, StorageError)>,
}

impl Batch {
    /// Applies the gathered ops, the last `ops.len()` of `entries`, and
    /// appends their outcomes to `out`.
    fn flush(&mut self, store: &WatchableStore, entries: &[Committed], out: &mut Vec<Outcome>) {
        if self.ops.is_empty() {
            return;
        }
        let entries = &entries[entries.len() - self.ops.len()..];
        let batch: Vec<(u64, &WriteOp)> = entries.iter().map(|e| e.index).zip(&self.ops).collect();
        let mut applied = store.apply(&batch);
        for (i, err) in self.failed.drain(..) {
            applied[i].result = Err(err);
        }
        out.extend(
            applied
                .into_iter()
                .zip(self.verdicts.drain(..))
                .map(|(applied, verdict)| Outcome { applied, verdict }),
        );
        self.ops.clear();
    }
}

/// Decodes an entry's command. One too deeply nested to decode (a txn
/// past the protobuf recursion limit, proposed before such txns were
/// refused) fails as a txn with too many ops: deterministically, on every
/// member, and the member goes on applying.
fn decode_command(entry: &Committed, max_txn_ops: usize) -> Result<Command, StorageError> {
    Command::decode_bytes(entry.data.as_ref()).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            StorageError::TooManyOps { max: max_txn_ops }
        } else {
            StorageError::Corrupt(format!("raft entry {}: {e}", entry.index))
        }
    })
}

/// The store revision after an applied write, or its error.
pub fn applied_result(a: Applied) -> Result<(i64, WriteResult), StorageError> {
    a.result.map(|r| (a.revision, r))
}

impl Outcome {
    /// The store revision and result, or the refusal before the store.
    pub fn into_result(self) -> Result<(i64, WriteResult), ServerError> {
        if let Some(Err(e)) = self.verdict {
            return Err(e);
        }
        Ok(applied_result(self.applied)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AuthError;

    /// `cluster.pb` and snapshot heads written before auth existed still
    /// decode (with no auth state), and the auth state round-trips.
    #[test]
    fn cluster_file_with_and_without_auth() {
        #[derive(Clone, PartialEq, Message)]
        struct OldClusterFile {
            #[prost(message, repeated, tag = "1")]
            members: Vec<MemberAttributes>,
        }
        let member = MemberAttributes {
            id: 7,
            name: "m0".into(),
            ..Default::default()
        };
        let old = OldClusterFile {
            members: vec![member.clone()],
        }
        .encode_to_vec();
        let read = ClusterFile::decode(old.as_slice()).unwrap();
        assert_eq!(read.members, vec![member.clone()]);
        assert_eq!(read.auth, None);

        let auth = AuthState {
            enabled: true,
            revision: 9,
            applied_index: 42,
            ..Default::default()
        };
        let raised = pb::AlarmMember {
            member_id: 7,
            alarm: pb::AlarmType::Corrupt as i32,
        };
        let new = ClusterFile {
            members: vec![member],
            auth: Some(auth.clone()),
            alarms: vec![raised],
        };
        let back = ClusterFile::decode(new.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.auth, Some(auth));
        assert_eq!(back.alarms, [raised]);
        assert!(read.alarms.is_empty());
    }

    /// An entry holding a txn nested past the decoder's recursion limit
    /// fails as too many ops; garbage stays a corrupt entry.
    #[test]
    fn undecodable_entries_fail_without_panic() {
        let mut txn = pb::TxnRequest::default();
        for _ in 0..60 {
            txn = pb::TxnRequest {
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(txn)),
                }],
                ..Default::default()
            };
        }
        let entry = |data: Vec<u8>| Committed {
            index: 7,
            term: 1,
            kind: EntryKind::Normal,
            data: data.into(),
        };
        let deep = Command::from_op(Op::Txn(txn)).encode_to_vec();
        assert_eq!(
            decode_command(&entry(deep), 128),
            Err(StorageError::TooManyOps { max: 128 })
        );
        assert!(matches!(
            decode_command(&entry(vec![0xff, 0xff]), 128),
            Err(StorageError::Corrupt(_))
        ));
        let ok = Command::from_op(Op::Txn(pb::TxnRequest::default())).encode_to_vec();
        assert!(decode_command(&entry(ok), 128).is_ok());
    }

    /// A member's state machine over `engine` (an in-memory store, kept
    /// across "restarts"), its files in `dir`.
    fn machine(engine: &Arc<st::MemEngine>, dir: &std::path::Path) -> StoreMachine {
        let store = Arc::new(WatchableStore::new(
            st::KvStore::open(engine.clone(), st::StoreConfig::default()).unwrap(),
        ));
        let transport = GrpcTransport::new(1, Default::default()).unwrap();
        let cluster = Arc::new(RwLock::new(ClusterInfo::default()));
        StoreMachine::new(store, transport, cluster, dir.join("cluster.pb")).unwrap()
    }

    /// Entries one after another, from index `next`.
    struct Log {
        next: u64,
    }

    impl Log {
        /// Applies `op` as the next entry, proposed by `user` (checked at
        /// auth revision `rev`), or by the member itself (`None`).
        fn apply(&mut self, m: &mut StoreMachine, op: Op, by: Option<(&str, u64)>) -> Outcome {
            let mut cmd = Command::from_op(op);
            cmd.header = by.map(|(user, rev)| crate::pb::ballast::server::RequestHeader {
                username: user.into(),
                auth_revision: rev,
            });
            let e = Committed {
                index: self.next,
                term: 1,
                kind: EntryKind::Normal,
                data: cmd.encode_to_vec().into(),
            };
            self.next += 1;
            m.apply(&[e]).pop().unwrap()
        }
    }

    fn put(key: &str) -> Op {
        Op::Put(pb::PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    fn keys(m: &StoreMachine, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        *end.last_mut().unwrap() += 1;
        let r = m
            .store
            .range(&st::RangeRequest {
                key: prefix.into(),
                range_end: end,
                ..Default::default()
            })
            .unwrap();
        r.kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    fn auth_err(o: Outcome) -> Option<AuthError> {
        o.into_result().err().map(|e| match e {
            crate::error::ServerError::Auth(a) => a,
            other => panic!("not an auth error: {other:?}"),
        })
    }

    /// Root; role `rw` with readwrite on the `/a` prefix; alice holding it;
    /// auth on.
    fn set_up_auth(m: &mut StoreMachine, log: &mut Log) {
        use crate::pb::authpb::{permission::Type, Permission};
        let ops = [
            Op::UserAdd(pb::AuthUserAddRequest {
                name: "root".into(),
                hashed_password: "x".into(),
                ..Default::default()
            }),
            Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }),
            Op::RoleAdd(pb::AuthRoleAddRequest { name: "rw".into() }),
            Op::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                name: "rw".into(),
                perm: Some(Permission {
                    perm_type: Type::Readwrite as i32,
                    key: b"/a".to_vec(),
                    range_end: b"/b".to_vec(),
                }),
            }),
            Op::UserAdd(pb::AuthUserAddRequest {
                name: "alice".into(),
                hashed_password: "x".into(),
                ..Default::default()
            }),
            Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "alice".into(),
                role: "rw".into(),
            }),
            Op::AuthEnable(pb::AuthEnableRequest {}),
        ];
        for op in ops {
            assert!(auth_err(log.apply(m, op, None)).is_none());
        }
        assert!(m.auth.enabled());
    }

    fn revoke_a(m: &mut StoreMachine, log: &mut Log) {
        let revoke = Op::RoleRevokePermission(pb::AuthRoleRevokePermissionRequest {
            role: "rw".into(),
            key: b"/a".to_vec(),
            range_end: b"/b".to_vec(),
        });
        let rev = m.auth.revision();
        assert!(auth_err(log.apply(m, revoke, Some(("root", rev)))).is_none());
    }

    /// Writes checked before a revoke and applied after it are refused at
    /// apply, and change nothing: those checked at an older auth revision
    /// (in flight across the change: the proposer checks them again),
    /// those checked at the current one that are not permitted (a revoked
    /// key, a deleted user), and anonymous or non-root auth changes.
    #[tokio::test]
    async fn auth_rechecked_at_apply() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(st::MemEngine::new());
        let mut m = machine(&engine, dir.path());
        let mut log = Log { next: 1 };
        set_up_auth(&mut m, &mut log);
        let before = m.auth.revision();
        assert!(auth_err(log.apply(&mut m, put("/a/1"), Some(("alice", before)))).is_none());
        let revision = m.store.current_revision();

        revoke_a(&mut m, &mut log);
        let now = m.auth.revision();
        assert!(now > before);
        let txn = Op::Txn(pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: b"/a/txn".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        });
        let delete = Op::DeleteRange(pb::DeleteRangeRequest {
            key: b"/a/1".to_vec(),
            ..Default::default()
        });
        for op in [put("/a/2"), txn.clone(), delete.clone()] {
            assert_eq!(
                auth_err(log.apply(&mut m, op.clone(), Some(("alice", before)))),
                Some(AuthError::AuthOldRevision)
            );
            assert_eq!(
                auth_err(log.apply(&mut m, op, Some(("alice", now)))),
                Some(AuthError::PermissionDenied)
            );
        }
        // No user (proposed while auth was off), and a non-root auth change.
        assert_eq!(
            auth_err(log.apply(&mut m, put("/a/3"), Some(("", 0)))),
            Some(AuthError::UserEmpty)
        );
        let add = Op::RoleAdd(pb::AuthRoleAddRequest { name: "x".into() });
        assert_eq!(
            auth_err(log.apply(&mut m, add, Some(("alice", now)))),
            Some(AuthError::PermissionDenied)
        );
        assert_eq!(m.auth.revision(), now, "the role add was not applied");
        // Root writes anywhere; a deleted user nowhere.
        assert!(auth_err(log.apply(&mut m, put("/a/root"), Some(("root", now)))).is_none());
        let del = Op::UserDelete(pb::AuthUserDeleteRequest {
            name: "alice".into(),
        });
        assert!(auth_err(log.apply(&mut m, del, Some(("root", now)))).is_none());
        let now = m.auth.revision();
        assert_eq!(
            auth_err(log.apply(&mut m, put("/a/4"), Some(("alice", now)))),
            Some(AuthError::PermissionDenied)
        );
        // Entries a member proposes itself carry no caller: not checked.
        assert!(auth_err(log.apply(&mut m, put("/a/member"), None)).is_none());

        assert_eq!(keys(&m, "/a"), ["/a/1", "/a/member", "/a/root"]);
        assert_eq!(m.store.current_revision(), revision + 2);
        assert_eq!(m.applied_index(), log.next - 1);
    }

    /// The auth state is saved at checkpoints, the store's writes survive a
    /// killed process: after a restart the machine reports the lower index
    /// so the log replays the auth changes since the checkpoint (a revoke
    /// is not forgotten), and it saves the auth state at every checkpoint.
    #[tokio::test]
    async fn auth_changes_since_the_checkpoint_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(st::MemEngine::new());
        let mut m = machine(&engine, dir.path());
        assert!(
            dir.path().join("auth.pb").exists(),
            "written at first start"
        );
        let mut log = Log { next: 1 };
        set_up_auth(&mut m, &mut log);
        m.sync().unwrap();
        let checkpoint = log.next - 1;
        assert_eq!(m.applied_index(), checkpoint);

        // The revoke and a write after it, then the process dies.
        let revoke_at = log.next;
        revoke_a(&mut m, &mut log);
        let rev = m.auth.revision();
        assert!(auth_err(log.apply(&mut m, put("/z"), None)).is_none());
        let last = log.next - 1;
        assert_eq!(m.applied_index(), last);
        drop(m);

        let mut m = machine(&engine, dir.path());
        assert_eq!(m.store.applied_index(), last);
        assert_eq!(m.applied_index(), checkpoint, "replay from the checkpoint");
        assert!(m.auth.revision() < rev);
        // raft replays the entries after it: the store skips them, the
        // auth state takes the revoke again.
        log.next = revoke_at;
        revoke_a(&mut m, &mut log);
        assert!(auth_err(log.apply(&mut m, put("/z"), None)).is_none());
        assert_eq!(m.applied_index(), last);
        assert_eq!(m.auth.revision(), rev);
        assert_eq!(
            auth_err(log.apply(&mut m, put("/a/after"), Some(("alice", rev)))),
            Some(AuthError::PermissionDenied)
        );

        // A checkpoint with no auth change still saves how far it is current.
        assert!(auth_err(log.apply(&mut m, put("/z"), None)).is_none());
        m.sync().unwrap();
        let synced = log.next - 1;
        drop(m);
        let m = machine(&engine, dir.path());
        assert_eq!(m.applied_index(), synced);
        assert_eq!(m.auth.revision(), rev);
    }

    /// A raised alarm refuses at apply what etcd's alarm appliers refuse,
    /// including writes proposed before it was raised (the front door
    /// checks only what it has seen); it outlives a restart, in
    /// `cluster.pb`, until disarmed.
    #[tokio::test]
    async fn alarms_refuse_writes_at_apply_and_outlive_a_restart() {
        use pb::alarm_request::AlarmAction;
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(st::MemEngine::new());
        let mut m = machine(&engine, dir.path());
        let mut log = Log { next: 1 };
        let alarm = |action: AlarmAction, alarm: pb::AlarmType| {
            Op::Alarm(pb::AlarmRequest {
                action: action as i32,
                member_id: 1,
                alarm: alarm as i32,
            })
        };
        let grant = || Op::LeaseGrant(pb::LeaseGrantRequest { ttl: 60, id: 7 });
        let delete = |key: &str| {
            Op::DeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
        };
        let refusal = |o: Outcome| match o.into_result() {
            Ok(_) => None,
            Err(ServerError::NoSpace) => Some("nospace"),
            Err(ServerError::Corrupt) => Some("corrupt"),
            Err(other) => panic!("not an alarm's refusal: {other:?}"),
        };
        assert_eq!(refusal(log.apply(&mut m, put("/z/a"), None)), None);
        assert_eq!(refusal(log.apply(&mut m, put("/z/b"), None)), None);

        log.apply(
            &mut m,
            alarm(AlarmAction::Activate, pb::AlarmType::Nospace),
            None,
        );
        assert_eq!(
            refusal(log.apply(&mut m, put("/z/c"), None)),
            Some("nospace")
        );
        assert_eq!(refusal(log.apply(&mut m, grant(), None)), Some("nospace"));
        // Deleting frees space: it goes through.
        assert_eq!(refusal(log.apply(&mut m, delete("/z/a"), None)), None);
        assert_eq!(keys(&m, "/z/"), ["/z/b"]);

        log.apply(
            &mut m,
            alarm(AlarmAction::Activate, pb::AlarmType::Corrupt),
            None,
        );
        assert_eq!(
            refusal(log.apply(&mut m, delete("/z/b"), None)),
            Some("corrupt")
        );
        assert_eq!(keys(&m, "/z/"), ["/z/b"]);

        // Restarted over the same store and folder: both alarms still up.
        drop(m);
        let mut m = machine(&engine, dir.path());
        let mut raised = m.cluster.read().alarms.clone();
        raised.sort();
        assert_eq!(
            raised,
            [
                (1, pb::AlarmType::Nospace as i32),
                (1, pb::AlarmType::Corrupt as i32)
            ]
        );
        assert_eq!(
            refusal(log.apply(&mut m, put("/z/d"), None)),
            Some("corrupt")
        );

        // Disarmed, one after the other.
        log.apply(
            &mut m,
            alarm(AlarmAction::Deactivate, pb::AlarmType::Corrupt),
            None,
        );
        assert_eq!(
            refusal(log.apply(&mut m, put("/z/d"), None)),
            Some("nospace")
        );
        assert_eq!(refusal(log.apply(&mut m, delete("/z/b"), None)), None);
        log.apply(
            &mut m,
            alarm(AlarmAction::Deactivate, pb::AlarmType::Nospace),
            None,
        );
        assert_eq!(refusal(log.apply(&mut m, put("/z/d"), None)), None);
        assert_eq!(keys(&m, "/z/"), ["/z/d"]);
        drop(m);
        let m = machine(&engine, dir.path());
        assert!(m.cluster.read().alarms.is_empty());
    }

    /// A damaged `auth.pb` stops the machine from being built.
    #[tokio::test]
    async fn auth_file_damaged_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(st::MemEngine::new());
        drop(machine(&engine, dir.path()));
        let path = dir.path().join("auth.pb");
        for bad in [&b""[..], b"ballast auth", b"\xff\xff\xff"] {
            std::fs::write(&path, bad).unwrap();
            let store = Arc::new(WatchableStore::new(
                st::KvStore::open(engine.clone(), st::StoreConfig::default()).unwrap(),
            ));
            let transport = GrpcTransport::new(1, Default::default()).unwrap();
            let cluster = Arc::new(RwLock::new(ClusterInfo::default()));
            let err = StoreMachine::new(store, transport, cluster, dir.path().join("cluster.pb"))
                .err()
                .expect("refused");
            assert!(err.to_string().contains("auth.pb"), "{err}");
        }
    }
}
