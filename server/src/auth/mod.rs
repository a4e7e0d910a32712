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
//! Checks run on the member that received the client's request (where its
//! token is valid); writes forwarded to the leader over the internal service
//! are not checked again.

mod perm;
mod service;
mod store;

pub use service::AuthService;
pub use store::AuthStore;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::error::AuthError;
use crate::node::Node;
use crate::pb::etcdserverpb as pb;

/// The metadata key etcd clients put their token under.
pub const TOKEN_METADATA: &str = "token";

/// Who sent a request: the user name, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: Option<String>,
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
    if !auth.enabled() {
        return Ok(Caller::default());
    }
    if let Some(token) = &creds.token {
        if let Some(user) = auth.user_of_token(token) {
            return Ok(Caller { user: Some(user) });
        }
        if node.linearizable().await.is_ok() {
            if let Some(user) = auth.user_of_token(token) {
                return Ok(Caller { user: Some(user) });
            }
        }
        return Err(AuthError::InvalidAuthToken);
    }
    Ok(Caller {
        user: creds.common_name.clone(),
    })
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

/// Write permission on `key` / `[key, range_end)`.
pub(crate) fn check_write(
    node: &Node,
    c: &Caller,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), AuthError> {
    node.auth().check_key(c.name(), key, range_end, true)
}

/// Root (etcd's `IsAdminPermitted`).
pub(crate) fn check_admin(node: &Node, c: &Caller) -> Result<(), AuthError> {
    node.auth().check_admin(c.name())
}

/// A Put: write on the key, read too when it asks for the previous value,
/// and write on every key already attached to its lease.
pub(crate) fn check_put(node: &Node, c: &Caller, r: &pb::PutRequest) -> Result<(), AuthError> {
    check_write(node, c, &r.key, &[])?;
    if r.lease != 0 {
        check_lease_keys(node, c, r.lease)?;
    }
    if r.prev_kv {
        check_read(node, c, &r.key, &[])?;
    }
    Ok(())
}

/// A DeleteRange: write on the range, read too with `prev_kv`.
pub(crate) fn check_delete(
    node: &Node,
    c: &Caller,
    r: &pb::DeleteRangeRequest,
) -> Result<(), AuthError> {
    check_write(node, c, &r.key, &r.range_end)?;
    if r.prev_kv {
        check_read(node, c, &r.key, &r.range_end)?;
    }
    Ok(())
}

/// A Txn: read on every compare, and every operation of both branches
/// (nested transactions included) as if sent alone.
pub(crate) fn check_txn(node: &Node, c: &Caller, t: &pb::TxnRequest) -> Result<(), AuthError> {
    use pb::request_op::Request as R;
    for cmp in &t.compare {
        check_read(node, c, &cmp.key, &cmp.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(R::RequestRange(r)) => check_read(node, c, &r.key, &r.range_end)?,
            // As a plain Put: write, plus read for prev_kv, plus the lease's keys.
            Some(R::RequestPut(p)) => check_put(node, c, p)?,
            Some(R::RequestDeleteRange(d)) => check_delete(node, c, d)?,
            Some(R::RequestTxn(n)) => check_txn(node, c, n)?,
            None => {}
        }
    }
    Ok(())
}

/// etcd's `checkLeasePuts`: unless root, the caller must be able to write
/// every key attached to the lease (so it may revoke it, or attach more).
/// The caller may write every key attached to `lease` (revoking it deletes
/// them; putting with it extends them).
pub(crate) fn check_lease_keys(node: &Node, c: &Caller, lease: i64) -> Result<(), AuthError> {
    check_lease_key_access(node, c, lease, true)
}

/// The caller may read every key attached to `lease`: `LeaseTimeToLive`
/// with `keys` names them (etcd's CVE-2023-32082).
pub(crate) fn check_lease_keys_readable(
    node: &Node,
    c: &Caller,
    lease: i64,
) -> Result<(), AuthError> {
    check_lease_key_access(node, c, lease, false)
}

fn check_lease_key_access(
    node: &Node,
    c: &Caller,
    lease: i64,
    write: bool,
) -> Result<(), AuthError> {
    let auth = node.auth();
    if !auth.enabled() || auth.is_admin(c.name()) {
        return Ok(());
    }
    let keys = match node
        .store
        .lease_status(lease, std::time::Instant::now(), true)
    {
        Ok(st) => st.keys,
        // An unknown lease fails later with etcd's own error.
        Err(_) => return Ok(()),
    };
    for key in keys {
        node.auth().check_key(c.name(), &key, &[], write)?;
    }
    Ok(())
}
