//! etcd's v3 authentication and authorization.
//!
//! - `store` — [`AuthStore`]: users, roles, the enabled flag and simple
//!   tokens; changed only by replicated commands.
//! - `perm` — key permissions as intervals and etcd's coverage rule.
//! - `service` — the Auth gRPC service.
//! - here — who sent a request ([`Caller`]: from the `token` metadata, or
//!   the verified client certificate's common name as etcd does with
//!   `--client-cert-auth`) and the permission checks the other services
//!   make before they serve or propose a request.
//!
//! - `file` — `auth.pb` on disk: checksummed, replaced atomically, and
//!   refused at start when damaged (auth fails closed).
//!
//! Checks run first on the member that received the client's request
//! (where its token is valid). Writes are checked again when their entry
//! applies, on every member alike (etcd's `authApplierV3`): each proposal
//! carries its caller and the auth revision it was checked at, so a
//! permission revoked, or a user deleted or changed, while a write is in
//! flight takes effect for that write ([`check_at_apply`]).

mod file;
mod perm;
mod service;
mod store;

pub use file::AuthFileError;
pub(crate) use file::{load as load_file, save as save_file, Loaded};
pub use service::AuthService;
pub use store::AuthStore;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use ballast_storage::WatchableStore;

use crate::command::{Command, Op, ReplyKind};
use crate::error::AuthError;
use crate::node::Node;
use crate::pb::ballast::server::RequestHeader;
use crate::pb::etcdserverpb as pb;

/// The metadata key etcd clients put their token under.
pub const TOKEN_METADATA: &str = "token";

/// Who sent a request: the user name, if any, and the auth revision its
/// permissions are checked at (0 with auth disabled, as etcd's empty
/// `AuthInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: Option<String>,
    pub revision: u64,
}

impl Caller {
    fn name(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// What identifies a client before its token is checked: the token sent
/// in metadata, and the verified certificate's common name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    token: Option<String>,
    common_name: Option<String>,
}

impl Credentials {
    /// The credentials a request carries.
    pub fn of<T>(req: &Request<T>) -> Credentials {
        Credentials {
            token: token_of(req.metadata()),
            common_name: crate::tls::client_common_name(req),
        }
    }

    /// Metadata to forward to another member (the token only).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

fn token_of(md: &MetadataMap) -> Option<String> {
    md.get(TOKEN_METADATA)
        .or_else(|| md.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The caller behind `creds` (etcd's `AuthInfoFromCtx`, then
/// `AuthInfoFromTLS`). With auth disabled every caller is anonymous and
/// nothing is checked. A token this member does not know yet may come from
/// an Authenticate that has not been applied here: wait for this member to
/// catch up with the leader once before refusing it.
pub(crate) async fn caller(node: &Node, creds: &Credentials) -> Result<Caller, AuthError> {
    let auth = node.auth();
    // Read before any check is made: a change after this point makes the
    // write's apply refuse it (the revision is then old).
    let revision = auth.revision();
    if !auth.enabled() {
        return Ok(Caller::default());
    }
    if let Some(token) = &creds.token {
        if let Some(user) = auth.user_of_token(token) {
            return Ok(Caller {
                user: Some(user),
                revision,
            });
        }
        if node.linearizable().await.is_ok() {
            let revision = auth.revision();
            if let Some(user) = auth.user_of_token(token) {
                return Ok(Caller {
                    user: Some(user),
                    revision,
                });
            }
        }
        return Err(AuthError::InvalidAuthToken);
    }
    Ok(Caller {
        user: creds.common_name.clone(),
        revision,
    })
}

/// How many times a write refused at apply for an old auth revision is
/// checked and proposed again (etcd's `raftRequest` loops without bound).
const OLD_REVISION_RETRIES: usize = 5;

/// Replicates `op` on behalf of `c`: the entry carries the caller, and its
/// permissions are checked again when it applies ([`check_at_apply`]).
///
/// As etcd's `raftRequest`: an entry refused at apply because users or
/// roles changed since it was checked (`revision of auth store is old`) is
/// checked again against the auth state now and, if still permitted,
/// proposed again at the new revision. So a permission revoked, or the user
/// deleted, while the write was in flight answers `permission denied`.
pub(crate) async fn write(node: &Node, c: &Caller, op: Op) -> Result<ReplyKind, Status> {
    let username = c.user.clone().unwrap_or_default();
    let mut cmd = Command::from_op(op);
    cmd.header = Some(RequestHeader {
        username: username.clone(),
        auth_revision: c.revision,
    });
    let old_revision = Status::from(AuthError::AuthOldRevision);
    for attempt in 0..=OLD_REVISION_RETRIES {
        if attempt > 0 {
            let auth = node.auth();
            let header = RequestHeader {
                username: username.clone(),
                auth_revision: auth.revision(),
            };
            if let Some(op) = &cmd.op {
                check_at_apply(&auth, &node.store, Some(&header), op)?;
            }
            cmd.header = Some(header);
        }
        match node.write_command(&cmd).await {
            Err(s) if s.code() == old_revision.code() && s.message() == old_revision.message() => {
                tracing::debug!(user = %username, attempt, "auth revision changed in flight: checking again");
            }
            other => return other,
        }
    }
    Err(old_revision)
}

/// The caller of a request, errors as etcd's wire statuses.
pub(crate) async fn caller_of<T>(node: &Node, req: &Request<T>) -> Result<Caller, Status> {
    Ok(caller(node, &Credentials::of(req)).await?)
}

/// Read permission on `key` / `[key, range_end)`.
pub(crate) fn check_read(
    node: &Node,
    c: &Caller,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), AuthError> {
    node.auth().check_key(c.name(), key, range_end, false)
}

/// Root (etcd's `IsAdminPermitted`).
pub(crate) fn check_admin(node: &Node, c: &Caller) -> Result<(), AuthError> {
    node.auth().check_admin(c.name())
}

/// A Put: write on the key, read too when it asks for the previous value,
/// and write on every key already attached to its lease.
pub(crate) fn check_put(node: &Node, c: &Caller, r: &pb::PutRequest) -> Result<(), AuthError> {
    Checker::new(&node.auth(), &node.store, c.name()).put(r)
}

/// A DeleteRange: write on the range, read too with `prev_kv`.
pub(crate) fn check_delete(
    node: &Node,
    c: &Caller,
    r: &pb::DeleteRangeRequest,
) -> Result<(), AuthError> {
    Checker::new(&node.auth(), &node.store, c.name()).delete(r)
}

/// A Txn: read on every compare, and every operation of both branches
/// (nested transactions included) as if sent alone.
pub(crate) fn check_txn(node: &Node, c: &Caller, t: &pb::TxnRequest) -> Result<(), AuthError> {
    Checker::new(&node.auth(), &node.store, c.name()).txn(t)
}

/// etcd's `checkLeasePuts`: unless root, the caller must be able to write
/// every key attached to `lease` (revoking it deletes them; putting with
/// it extends them).
pub(crate) fn check_lease_keys(node: &Node, c: &Caller, lease: i64) -> Result<(), AuthError> {
    Checker::new(&node.auth(), &node.store, c.name()).lease_keys(lease, true)
}

/// The caller may read every key attached to `lease`: `LeaseTimeToLive`
/// with `keys` names them (etcd's CVE-2023-32082).
pub(crate) fn check_lease_keys_readable(
    node: &Node,
    c: &Caller,
    lease: i64,
) -> Result<(), AuthError> {
    Checker::new(&node.auth(), &node.store, c.name()).lease_keys(lease, false)
}

/// etcd's `authApplierV3`, run as an entry applies (every member decides
/// the same, from the auth state of the log so far). With auth disabled,
/// or for an entry a member proposed itself (no header), nothing is
/// checked. Auth management needs root, as at the front. A write (Put,
/// DeleteRange, Txn, LeaseRevoke) needs a user (`user name is empty`), an
/// auth revision not older than the store's (`revision of auth store is
/// old`: users or roles changed since it was checked; clients
/// authenticate again and retry), and then its permissions, checked again
/// (`permission denied`). A refused entry is not applied.
///
/// The keys attached to a lease are read from `store`, which must reflect
/// every entry before this one (see [`reads_lease_keys`]).
pub(crate) fn check_at_apply(
    auth: &AuthStore,
    store: &WatchableStore,
    header: Option<&RequestHeader>,
    op: &Op,
) -> Result<(), AuthError> {
    let Some(h) = header else {
        return Ok(());
    };
    if !auth.enabled() {
        return Ok(());
    }
    let user = Some(h.username.as_str()).filter(|u| !u.is_empty());
    let checker = Checker::new(auth, store, user);
    let key_op = |check: &dyn Fn() -> Result<(), AuthError>| {
        if h.auth_revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if h.auth_revision < auth.revision() {
            return Err(AuthError::AuthOldRevision);
        }
        check()
    };
    match op {
        Op::Put(r) => key_op(&|| checker.put(r)),
        Op::DeleteRange(r) => key_op(&|| checker.delete(r)),
        Op::Txn(t) => key_op(&|| checker.txn(t)),
        Op::LeaseRevoke(r) => key_op(&|| checker.lease_keys(r.id, true)),
        Op::AuthEnable(_)
        | Op::AuthDisable(_)
        | Op::UserAdd(_)
        | Op::UserDelete(_)
        | Op::UserChangePassword(_)
        | Op::UserGrantRole(_)
        | Op::UserRevokeRole(_)
        | Op::RoleAdd(_)
        | Op::RoleDelete(_)
        | Op::RoleGrantPermission(_)
        | Op::RoleRevokePermission(_) => auth.check_admin(user),
        Op::Authenticate(_)
        | Op::Compaction(_)
        | Op::LeaseGrant(_)
        | Op::Publish(_)
        | Op::Alarm(_) => Ok(()),
    }
}

/// Whether [`check_at_apply`] of `cmd` reads the keys attached to a lease
/// (so every earlier entry must be in the store first).
pub(crate) fn reads_lease_keys(auth: &AuthStore, cmd: &Command) -> bool {
    fn txn_has_lease(t: &pb::TxnRequest) -> bool {
        use pb::request_op::Request as R;
        t.success
            .iter()
            .chain(&t.failure)
            .any(|op| match &op.request {
                Some(R::RequestPut(p)) => p.lease != 0,
                Some(R::RequestTxn(n)) => txn_has_lease(n),
                _ => false,
            })
    }
    cmd.header.is_some()
        && auth.enabled()
        && match &cmd.op {
            Some(Op::Put(p)) => p.lease != 0,
            Some(Op::Txn(t)) => txn_has_lease(t),
            Some(Op::LeaseRevoke(_)) => true,
            _ => false,
        }
}

/// The key permission checks of one user against one auth state.
struct Checker<'a> {
    auth: &'a AuthStore,
    /// For the keys attached to a lease.
    store: &'a WatchableStore,
    user: Option<&'a str>,
}

impl<'a> Checker<'a> {
    fn new(auth: &'a AuthStore, store: &'a WatchableStore, user: Option<&'a str>) -> Self {
        Checker { auth, store, user }
    }

    fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.auth.check_key(self.user, key, range_end, false)
    }

    fn write(&self, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.auth.check_key(self.user, key, range_end, true)
    }

    fn put(&self, r: &pb::PutRequest) -> Result<(), AuthError> {
        self.write(&r.key, &[])?;
        if r.lease != 0 {
            self.lease_keys(r.lease, true)?;
        }
        if r.prev_kv {
            self.read(&r.key, &[])?;
        }
        Ok(())
    }

    fn delete(&self, r: &pb::DeleteRangeRequest) -> Result<(), AuthError> {
        self.write(&r.key, &r.range_end)?;
        if r.prev_kv {
            self.read(&r.key, &r.range_end)?;
        }
        Ok(())
    }

    fn txn(&self, t: &pb::TxnRequest) -> Result<(), AuthError> {
        use pb::request_op::Request as R;
        for cmp in &t.compare {
            self.read(&cmp.key, &cmp.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(R::RequestRange(r)) => self.read(&r.key, &r.range_end)?,
                // As a plain Put: write, plus read for prev_kv, plus the lease's keys.
                Some(R::RequestPut(p)) => self.put(p)?,
                Some(R::RequestDeleteRange(d)) => self.delete(d)?,
                Some(R::RequestTxn(n)) => self.txn(n)?,
                None => {}
            }
        }
        Ok(())
    }

    fn lease_keys(&self, lease: i64, write: bool) -> Result<(), AuthError> {
        if !self.auth.enabled() || self.auth.is_admin(self.user) {
            return Ok(());
        }
        // The keys do not depend on the clock: only the remaining TTL does.
        let keys = match self
            .store
            .lease_status(lease, std::time::Instant::now(), true)
        {
            Ok(st) => st.keys,
            // An unknown lease fails later with etcd's own error.
            Err(_) => return Ok(()),
        };
        for key in keys {
            self.auth.check_key(self.user, &key, &[], write)?;
        }
        Ok(())
    }
}
