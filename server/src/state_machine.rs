//! The replicated state machine: raft's committed entries applied to the
//! MVCC store, plus the little cluster state etcd keeps beside it (member
//! names and client URLs, alarms, and the auth state — users, roles, the
//! enabled flag — saved in `auth.pb` next to `cluster.pb`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ballast_raft::{Committed, EntryKind, GrpcTransport, StateMachine};
use ballast_storage::{self as st, Applied, StorageError, WatchableStore, WriteOp, WriteResult};
use parking_lot::RwLock;
use prost::Message;

use crate::auth::AuthStore;
use crate::command::{Command, MemberAttributes, Op};
use crate::convert;
use crate::error::AuthError;
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
/// before auth existed have no `auth` and restore with auth empty.
#[derive(Clone, PartialEq, Message)]
struct ClusterFile {
    #[prost(message, repeated, tag = "1")]
    members: Vec<MemberAttributes>,
    #[prost(message, optional, tag = "2")]
    auth: Option<AuthState>,
}

/// What applying one entry answers its proposer: the store's result, and
/// for auth commands the auth store's verdict.
#[derive(Debug)]
pub struct Outcome {
    pub applied: Applied,
    pub auth: Option<Result<(), AuthError>>,
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
}

impl StoreMachine {
    pub fn new(
        store: Arc<WatchableStore>,
        transport: GrpcTransport,
        cluster: Arc<RwLock<ClusterInfo>>,
        cluster_file: PathBuf,
    ) -> Self {
        if let Ok(bytes) = std::fs::read(&cluster_file) {
            if let Ok(file) = ClusterFile::decode(bytes.as_slice()) {
                let mut c = cluster.write();
                for m in file.members {
                    c.members.insert(m.id, m);
                }
            }
        }
        let auth_file = cluster_file.with_file_name("auth.pb");
        let auth = cluster.read().auth.clone();
        if let Ok(bytes) = std::fs::read(&auth_file) {
            match AuthState::decode(bytes.as_slice()) {
                Ok(state) => auth.replace(state),
                Err(e) => tracing::error!("cannot read {}: {e}", auth_file.display()),
            }
        }
        StoreMachine {
            store,
            transport,
            cluster,
            cluster_file,
            auth,
            auth_file,
        }
    }

    fn save_auth(&self) {
        let tmp = self.auth_file.with_extension("tmp");
        let written = std::fs::write(&tmp, self.auth.to_proto().encode_to_vec())
            .and_then(|_| std::fs::rename(&tmp, &self.auth_file));
        if let Err(e) = written {
            tracing::error!("cannot save the auth state: {e}");
        }
    }

    fn save_cluster(&self) {
        let file = ClusterFile {
            members: self.cluster.read().members.values().cloned().collect(),
            auth: None,
        };
        let tmp = self.cluster_file.with_extension("tmp");
        let written = std::fs::write(&tmp, file.encode_to_vec())
            .and_then(|_| std::fs::rename(&tmp, &self.cluster_file));
        if let Err(e) = written {
            tracing::error!("cannot save member attributes: {e}");
        }
    }

    /// Turns one entry into a storage write; cluster-state commands are
    /// applied here and become no-ops for the store.
    fn write_op(
        &mut self,
        entry: &Committed,
        fresh: bool,
        auth_result: &mut Option<Result<(), AuthError>>,
    ) -> Result<WriteOp, StorageError> {
        if !matches!(entry.kind, EntryKind::Normal) {
            return Ok(WriteOp::Noop);
        }
        let cmd = decode_command(entry, self.store.config().max_txn_ops)?;
        Ok(match cmd.op {
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
                if entry.index > self.auth.applied_index() {
                    *auth_result = self.auth.apply(entry.index, op, fresh);
                    if AuthStore::changes_state(op) {
                        self.save_auth();
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
                    let mut c = self.cluster.write();
                    let entry = (a.member_id, a.alarm);
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
                }
                WriteOp::Noop
            }
        })
    }
}

impl StateMachine for StoreMachine {
    type Output = Outcome;

    fn apply(&mut self, entries: &[Committed]) -> Vec<Outcome> {
        let applied = self.store.applied_index();
        let mut ops = Vec::with_capacity(entries.len());
        let mut auth = Vec::with_capacity(entries.len());
        let mut failed = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let mut auth_result = None;
            match self.write_op(e, e.index > applied, &mut auth_result) {
                Ok(op) => ops.push(op),
                Err(err) => {
                    failed.push((i, err));
                    ops.push(WriteOp::Noop);
                }
            }
            auth.push(auth_result);
        }
        let batch: Vec<(u64, &WriteOp)> = entries.iter().map(|e| e.index).zip(ops.iter()).collect();
        let mut out = self.store.apply(&batch);
        for (i, err) in failed {
            out[i].result = Err(err);
        }
        out.into_iter()
            .zip(auth)
            .map(|(applied, auth)| Outcome { applied, auth })
            .collect()
    }

    fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }

    fn sync(&mut self) -> Result<(), ballast_raft::Error> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ballast_raft::Error::StateMachine(format!("syncing {what}: {e}"))
        };
        self.store.sync().map_err(|e| failed("the store", &e))?;
        // The auth state and member attributes are files of their own,
        // replaced by rename: sync each (if written yet), then their folder.
        for file in [&self.auth_file, &self.cluster_file] {
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

    fn snapshot(&self) -> Result<(u64, Vec<u8>), ballast_raft::Error> {
        let cluster = ClusterFile {
            members: self.cluster.read().members.values().cloned().collect(),
            auth: Some(self.auth.to_proto()),
        }
        .encode_to_vec();
        let mut image = Vec::with_capacity(4 + cluster.len());
        image.extend_from_slice(&(cluster.len() as u32).to_be_bytes());
        image.extend_from_slice(&cluster);
        let (_, index) = st::snapshot::write_snapshot(&self.store, &mut image)
            .map_err(|e| ballast_raft::Error::StateMachine(e.to_string()))?;
        Ok((index, image))
    }

    fn restore(&mut self, index: u64, image: &[u8]) -> Result<(), ballast_raft::Error> {
        let bad = |m: &str| ballast_raft::Error::StateMachine(format!("snapshot: {m}"));
        if image.len() < 4 {
            return Err(bad("truncated"));
        }
        let len = u32::from_be_bytes(image[..4].try_into().expect("4 bytes")) as usize;
        let rest = &image[4..];
        if rest.len() < len {
            return Err(bad("truncated"));
        }
        let cluster = ClusterFile::decode(&rest[..len]).map_err(|e| bad(&e.to_string()))?;
        self.store
            .restore(&mut &rest[len..])
            .map_err(|e| ballast_raft::Error::StateMachine(e.to_string()))?;
        {
            let mut c = self.cluster.write();
            c.members = cluster.members.into_iter().map(|m| (m.id, m)).collect();
        }
        self.save_cluster();
        let mut auth = cluster.auth.unwrap_or_default();
        // The state is the one at the snapshot's index, whatever the image says.
        auth.applied_index = index;
        if auth.revision == 0 {
            auth.revision = 1;
        }
        self.auth.replace(auth);
        self.save_auth();
        Ok(())
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
    /// The store revision and result, or the auth store's refusal.
    pub fn into_result(self) -> Result<(i64, WriteResult), crate::error::ServerError> {
        if let Some(Err(e)) = self.auth {
            return Err(e.into());
        }
        Ok(applied_result(self.applied)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let new = ClusterFile {
            members: vec![member],
            auth: Some(auth.clone()),
        };
        let back = ClusterFile::decode(new.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.auth, Some(auth));
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
}
