//! The etcd Auth service. Changes go through raft as commands (passwords
//! hashed here first, with bcrypt on the blocking pool, and never logged);
//! reads are answered from this member's state after a linearizable
//! barrier. Who may do what follows etcd 3.4: everything needs root except
//! Authenticate and AuthStatus, a user may read itself, and a role may be
//! read by its holders.

use std::sync::Arc;

use base64::Engine as _;
use rand::Rng as _;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::{caller_of, check_admin, AuthStore, Caller};
use crate::command::{Op, ReplyKind};
use crate::error::{AuthError, ServerError};
use crate::node::Node;
use crate::pb::ballast::server::AuthenticateCommand;
use crate::pb::etcdserverpb::{self as pb, auth_server::Auth};

/// bcrypt's cost for stored passwords (etcd's `--bcrypt-cost` default).
pub const BCRYPT_COST: u32 = 10;
/// Letters of a simple token's random part (etcd: 16).
const TOKEN_LETTERS: usize = 16;

pub struct AuthService {
    node: Arc<Node>,
    /// Bounds the password checks of `Authenticate` (shared by every
    /// listener of the member: build one service and clone it).
    bcrypt: Arc<BcryptGate>,
}

impl Clone for AuthService {
    fn clone(&self) -> Self {
        AuthService {
            node: self.node.clone(),
            bcrypt: self.bcrypt.clone(),
        }
    }
}

/// Password checks are bcrypt, about 50 ms of one CPU each at cost 10: a
/// flood of `Authenticate` calls would take every blocking thread and CPU
/// of the member (raft's included). At most `running` checks run at once
/// (one per CPU, at least 2), at most `admitted` wait or run, and a call
/// past that is refused at once with etcd's `ResourceExhausted` "too many
/// requests" — never queued without bound.
pub(crate) struct BcryptGate {
    admitted: Arc<Semaphore>,
    running: Semaphore,
}

/// How many password checks may wait per one running.
const BCRYPT_QUEUE_PER_RUNNING: usize = 4;

impl BcryptGate {
    /// `running` checks at once (at least 1).
    pub(crate) fn new(running: usize) -> Self {
        let running = running.max(1);
        BcryptGate {
            admitted: Arc::new(Semaphore::new(running * BCRYPT_QUEUE_PER_RUNNING)),
            running: Semaphore::new(running),
        }
    }

    /// One per CPU, at least 2.
    fn for_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        BcryptGate::new(cpus.max(2))
    }

    /// Whether `password` matches `hash`; `ResourceExhausted` when too many
    /// checks are already admitted.
    async fn verify(&self, password: String, hash: String) -> Result<bool, Status> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            tracing::warn!(
                "Authenticate refused (ResourceExhausted): too many password checks in progress"
            );
            return Err(Status::resource_exhausted(TOO_MANY_AUTHENTICATIONS));
        };
        let _running = self
            .running
            .acquire()
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        // A malformed stored hash is a failed check, as etcd's.
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// What `Authenticate` answers past the cap: etcd's `ErrGRPCTooManyRequests`
/// exactly (clients map the text to `rpctypes.ErrTooManyRequests`); the
/// reason goes to the member's log.
pub(crate) const TOO_MANY_AUTHENTICATIONS: &str = "etcdserver: too many requests";

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        AuthService {
            node,
            bcrypt: Arc::new(BcryptGate::for_this_machine()),
        }
    }

    fn auth(&self) -> Arc<AuthStore> {
        self.node.auth()
    }

    /// Refuses callers without the root role (when auth is enabled).
    async fn require_admin<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let c = caller_of(&self.node, req).await?;
        check_admin(&self.node, &c)?;
        Ok(c)
    }

    /// Replicates an auth command made by `c` (checked again at apply);
    /// answers the header of its apply.
    async fn propose(&self, c: &Caller, op: Op) -> Result<pb::ResponseHeader, Status> {
        done(super::write(&self.node, c, op).await?)
    }

    /// Waits until this member's auth state includes every change
    /// acknowledged so far (etcd serves these reads through raft).
    async fn fresh(&self) -> Result<pb::ResponseHeader, Status> {
        self.node.linearizable().await?;
        Ok(self.node.current_header())
    }
}

fn done(reply: ReplyKind) -> Result<pb::ResponseHeader, Status> {
    match reply {
        ReplyKind::Done(h) => Ok(h),
        _ => Err(Status::internal("etcdserver: unexpected reply kind")),
    }
}

/// The bcrypt hash of a password, computed off the async threads.
async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("etcdserver: hashing a password: {e}")))
}

/// The hash a command carries: from a plain password, or etcd's
/// base64-encoded `hashedPassword` sent by the client.
async fn command_hash(password: String, hashed: &str) -> Result<String, Status> {
    if hashed.is_empty() {
        return hash_password(password).await;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(hashed)
        .map_err(|_| AuthError::NoPasswordUser)?;
    String::from_utf8(raw).map_err(|_| AuthError::NoPasswordUser.into())
}

fn simple_token() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let prefix: String = (0..TOKEN_LETTERS)
        .map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char)
        .collect();
    format!("{prefix}.{}", rng.random::<u32>())
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self.propose(&c, Op::AuthEnable(req.into_inner())).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self.propose(&c, Op::AuthDisable(req.into_inner())).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        _req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let header = self.fresh().await?;
        let auth = self.auth();
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(header),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let pb::AuthenticateRequest { name, password } = req.into_inner();
        // A change of users or roles between the check and the apply makes
        // the apply refuse (old revision): check again, like etcd.
        for _ in 0..5 {
            let (hash, revision) = self.auth().password_hash(&name)?;
            if !self.bcrypt.verify(password.clone(), hash).await? {
                tracing::info!(user = %name, "invalid password");
                return Err(AuthError::AuthFailed.into());
            }
            let token = simple_token();
            let cmd = AuthenticateCommand {
                name: name.clone(),
                token: token.clone(),
                auth_revision: revision,
            };
            match self.node.write(Op::Authenticate(cmd)).await.and_then(done) {
                Ok(header) => {
                    return Ok(Response::new(pb::AuthenticateResponse {
                        header: Some(header),
                        token,
                    }))
                }
                Err(s) if s.message() == Status::from(AuthError::AuthOldRevision).message() => {
                    continue
                }
                Err(s) => return Err(s),
            }
        }
        Err(ServerError::Timeout.into())
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let mut r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty.into());
        }
        let password = std::mem::take(&mut r.password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            command_hash(password, &r.hashed_password).await?
        };
        let header = self.propose(&c, Op::UserAdd(r)).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let c = caller_of(&self.node, &req).await?;
        let name = req.into_inner().name;
        if let Err(e) = check_admin(&self.node, &c) {
            if c.user.as_deref() != Some(name.as_str()) {
                return Err(e.into());
            }
        }
        let header = self.fresh().await?;
        let roles = self.auth().user_get(&name)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.require_admin(&req).await?;
        let header = self.fresh().await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(header),
            users: self.auth().user_list(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self.propose(&c, Op::UserDelete(req.into_inner())).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let mut r = req.into_inner();
        // Fail fast (and skip the hashing) for an unknown user.
        self.auth().user_get(&r.name)?;
        let password = std::mem::take(&mut r.password);
        r.hashed_password = command_hash(password, &r.hashed_password).await?;
        let header = self.propose(&c, Op::UserChangePassword(r)).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self
            .propose(&c, Op::UserGrantRole(req.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self
            .propose(&c, Op::UserRevokeRole(req.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self.propose(&c, Op::RoleAdd(req.into_inner())).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let c = caller_of(&self.node, &req).await?;
        let role = req.into_inner().role;
        if let Err(e) = check_admin(&self.node, &c) {
            if !self.auth().has_role(c.user.as_deref(), &role) {
                return Err(e.into());
            }
        }
        let header = self.fresh().await?;
        let perm = self.auth().role_get(&role)?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(header),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.require_admin(&req).await?;
        let header = self.fresh().await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(header),
            roles: self.auth().role_list(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self.propose(&c, Op::RoleDelete(req.into_inner())).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self
            .propose(&c, Op::RoleGrantPermission(req.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let c = self.require_admin(&req).await?;
        let header = self
            .propose(&c, Op::RoleRevokePermission(req.into_inner()))
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_shaped_like_etcds() {
        let a = simple_token();
        let b = simple_token();
        assert_ne!(a, b);
        let (prefix, n) = a.split_once('.').expect("prefix.number");
        assert_eq!(prefix.len(), TOKEN_LETTERS);
        assert!(prefix.bytes().all(|c| c.is_ascii_alphabetic()));
        assert!(n.parse::<u32>().is_ok());
    }

    /// Past `running` checks running and the queue behind them full, a
    /// check is refused at once with `ResourceExhausted`; slots come back.
    #[tokio::test]
    async fn auth_bcrypt_checks_are_capped() {
        let gate = Arc::new(BcryptGate::new(1));
        let hash = bcrypt::hash("pw", 4).unwrap();
        // Hold the one running slot: admitted checks wait behind it.
        let running = gate.running.try_acquire().unwrap();
        let queued: Vec<_> = (0..BCRYPT_QUEUE_PER_RUNNING)
            .map(|_| {
                let (gate, hash) = (gate.clone(), hash.clone());
                tokio::spawn(async move { gate.verify("pw".into(), hash).await })
            })
            .collect();
        for _ in 0..1000 {
            if gate.admitted.available_permits() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.admitted.available_permits(), 0);
        let refused = gate.verify("pw".into(), hash.clone()).await.unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (
                tonic::Code::ResourceExhausted,
                "etcdserver: too many requests"
            )
        );
        drop(running);
        for q in queued {
            assert!(q.await.unwrap().unwrap());
        }
        assert!(gate.verify("pw".into(), hash.clone()).await.unwrap());
        assert!(!gate.verify("other".into(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn client_hashes_are_base64_bcrypt() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let sent = base64::engine::general_purpose::STANDARD.encode(&hash);
        assert_eq!(command_hash(String::new(), &sent).await.unwrap(), hash);
        assert!(command_hash(String::new(), "!!").await.is_err());
        let made = command_hash("pw".into(), "").await.unwrap();
        assert!(bcrypt::verify("pw", &made).unwrap());
    }
}
