//! [`AuthStore`]: the replicated auth state (users with bcrypt password
//! hashes, roles with key permissions, the enabled flag, the auth revision)
//! and the simple tokens handed out by `Authenticate`.
//!
//! Changes arrive only through raft (`apply`), in log order on every member,
//! with etcd's checks and errors (`server/auth/store.go`, as of 3.4). The
//! permission checks (`check_key`, `check_admin`) read the current state.
//!
//! Simple tokens follow etcd: `Authenticate` is replicated, so every member
//! learns the token; a token lives `TOKEN_TTL` after its last use, and dies
//! with its user's password change or deletion, or when auth is disabled.
//! Tokens are kept in memory only (a restarted member forgets them, and
//! clients authenticate again).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::perm::{covered, Interval};
use crate::command::Op;
use crate::error::AuthError;
use crate::pb::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use crate::pb::ballast::server::{AuthState, AuthenticateCommand};
use crate::pb::etcdserverpb as pb;

/// The user and role that bypass every key permission.
pub const ROOT: &str = "root";

/// How long a simple token lives after its last use (etcd's
/// `--auth-token-ttl` default).
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct State {
    enabled: bool,
    /// Bumped by every change of users or roles (and by AuthDisable).
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// The raft index this state reflects.
    applied_index: u64,
}

impl Default for State {
    fn default() -> Self {
        // etcd starts its auth revision at 1.
        State {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            applied_index: 0,
        }
    }
}

struct Token {
    user: String,
    expires: Instant,
}

/// The auth state of one member; shared by the apply loop and the services.
pub struct AuthStore {
    state: RwLock<State>,
    /// token → user. Only touched by Authenticate's apply and by lookups.
    tokens: Mutex<HashMap<String, Token>>,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            state: RwLock::new(State::default()),
            tokens: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for AuthStore {
    // Never prints password hashes or tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.read();
        f.debug_struct("AuthStore")
            .field("enabled", &s.enabled)
            .field("revision", &s.revision)
            .field("users", &s.users.len())
            .field("roles", &s.roles.len())
            .finish()
    }
}

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT)
}

fn no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

impl AuthStore {
    /// Whether authentication is enabled.
    pub fn enabled(&self) -> bool {
        self.state.read().enabled
    }

    /// The auth revision (etcd's `authRevision`).
    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// The raft index the state reflects; entries at or below it are replays.
    pub fn applied_index(&self) -> u64 {
        self.state.read().applied_index
    }

    /// The state as saved on disk and in snapshots.
    pub fn to_proto(&self) -> AuthState {
        let s = self.state.read();
        AuthState {
            enabled: s.enabled,
            revision: s.revision,
            users: s.users.values().cloned().collect(),
            roles: s.roles.values().cloned().collect(),
            applied_index: s.applied_index,
        }
    }

    /// Replaces the whole state (start-up, snapshot restore). Tokens survive
    /// only while auth stays enabled.
    pub fn replace(&self, p: AuthState) {
        let state = State {
            enabled: p.enabled,
            revision: p.revision.max(1),
            users: p
                .users
                .into_iter()
                .map(|u| (String::from_utf8_lossy(&u.name).into_owned(), u))
                .collect(),
            roles: p
                .roles
                .into_iter()
                .map(|r| (String::from_utf8_lossy(&r.name).into_owned(), r))
                .collect(),
            applied_index: p.applied_index,
        };
        let enabled = state.enabled;
        *self.state.write() = state;
        if !enabled {
            self.tokens.lock().clear();
        }
    }

    /// Applies one replicated command at `index`; `None` if it is not an
    /// auth command. `fresh` is false for replays after a restart (tokens
    /// are not handed out again then).
    pub fn apply(&self, index: u64, op: &Op, fresh: bool) -> Option<Result<(), AuthError>> {
        let mut s = self.state.write();
        let result = match op {
            Op::AuthEnable(_) => self.enable(&mut s),
            Op::AuthDisable(_) => {
                if s.enabled {
                    s.enabled = false;
                    s.revision += 1;
                    self.tokens.lock().clear();
                }
                Ok(())
            }
            Op::Authenticate(c) => self.authenticate(&s, c, fresh),
            Op::UserAdd(r) => user_add(&mut s, r),
            Op::UserDelete(r) => {
                let r = user_delete(&mut s, r);
                self.after_user_change(&r, op);
                r
            }
            Op::UserChangePassword(r) => {
                let r = change_password(&mut s, r);
                self.after_user_change(&r, op);
                r
            }
            Op::UserGrantRole(r) => grant_role(&mut s, r),
            Op::UserRevokeRole(r) => revoke_role(&mut s, r),
            Op::RoleAdd(r) => role_add(&mut s, r),
            Op::RoleDelete(r) => role_delete(&mut s, r),
            Op::RoleGrantPermission(r) => grant_permission(&mut s, r),
            Op::RoleRevokePermission(r) => revoke_permission(&mut s, r),
            _ => return None,
        };
        s.applied_index = s.applied_index.max(index);
        Some(result)
    }

    /// Whether applying `op` changes what is saved (everything but Authenticate).
    pub fn changes_state(op: &Op) -> bool {
        !matches!(op, Op::Authenticate(_))
    }

    fn after_user_change(&self, r: &Result<(), AuthError>, op: &Op) {
        let name = match op {
            Op::UserDelete(d) => &d.name,
            Op::UserChangePassword(c) => &c.name,
            _ => return,
        };
        if r.is_ok() {
            self.tokens.lock().retain(|_, t| t.user != *name);
        }
    }

    fn enable(&self, s: &mut State) -> Result<(), AuthError> {
        if s.enabled {
            return Ok(());
        }
        let root = s.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(AuthError::RootRoleNotExist);
        }
        s.enabled = true;
        self.tokens.lock().clear();
        Ok(())
    }

    fn authenticate(
        &self,
        s: &State,
        c: &AuthenticateCommand,
        fresh: bool,
    ) -> Result<(), AuthError> {
        if !s.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = s.users.get(&c.name).ok_or(AuthError::AuthFailed)?;
        if no_password(user) {
            return Err(AuthError::AuthFailed);
        }
        // The password was checked against an older state: check again.
        if c.auth_revision != s.revision {
            return Err(AuthError::AuthOldRevision);
        }
        if fresh {
            let now = Instant::now();
            let mut tokens = self.tokens.lock();
            tokens.retain(|_, t| t.expires > now);
            tokens.insert(
                c.token.clone(),
                Token {
                    user: c.name.clone(),
                    expires: now + TOKEN_TTL,
                },
            );
        }
        Ok(())
    }

    /// The user a token stands for; using a token extends its life.
    pub fn user_of_token(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut tokens = self.tokens.lock();
        match tokens.get_mut(token) {
            Some(t) if t.expires > now => {
                t.expires = now + TOKEN_TTL;
                Some(t.user.clone())
            }
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// The stored bcrypt hash of `name`'s password and the revision it was
    /// read at, for `Authenticate` (which checks it off the async threads).
    pub fn password_hash(&self, name: &str) -> Result<(String, u64), AuthError> {
        let s = self.state.read();
        if !s.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = s.users.get(name).ok_or(AuthError::AuthFailed)?;
        if no_password(user) {
            return Err(AuthError::NoPasswordUser);
        }
        let hash = String::from_utf8(user.password.clone()).map_err(|_| AuthError::AuthFailed)?;
        Ok((hash, s.revision))
    }

    /// etcd's `IsAdminPermitted`: with auth enabled, `user` must exist and
    /// have the root role.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        let s = self.state.read();
        if !s.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = s.users.get(name).ok_or(AuthError::UserNotFound)?;
        if has_root_role(u) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `isOpPermitted`: whether `user` may read (or write) `key`, or
    /// the range `[key, range_end)`.
    pub fn check_key(
        &self,
        user: Option<&str>,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> Result<(), AuthError> {
        let s = self.state.read();
        if !s.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = s.users.get(name).ok_or(AuthError::PermissionDenied)?;
        if has_root_role(u) {
            return Ok(());
        }
        let wanted = |t: i32| match PermType::try_from(t) {
            Ok(PermType::Readwrite) => true,
            Ok(PermType::Read) => !write,
            Ok(PermType::Write) => write,
            Err(_) => false,
        };
        let perms: Vec<Interval> = u
            .roles
            .iter()
            .filter_map(|r| s.roles.get(r))
            .flat_map(|r| r.key_permission.iter())
            .filter(|p| wanted(p.perm_type))
            .map(Interval::of_permission)
            .collect();
        if covered(&perms, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` has the root role (false when auth is disabled).
    pub fn is_admin(&self, user: Option<&str>) -> bool {
        let s = self.state.read();
        s.enabled && user.and_then(|n| s.users.get(n)).is_some_and(has_root_role)
    }

    /// Whether `user` was granted `role`.
    pub fn has_role(&self, user: Option<&str>, role: &str) -> bool {
        let s = self.state.read();
        user.and_then(|n| s.users.get(n))
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// A user's roles (sorted).
    pub fn user_get(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let s = self.state.read();
        s.users
            .get(name)
            .map(|u| u.roles.clone())
            .ok_or(AuthError::UserNotFound)
    }

    /// All user names, sorted.
    pub fn user_list(&self) -> Vec<String> {
        self.state.read().users.keys().cloned().collect()
    }

    /// A role's key permissions (sorted by key).
    pub fn role_get(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let s = self.state.read();
        s.roles
            .get(name)
            .map(|r| r.key_permission.clone())
            .ok_or(AuthError::RoleNotFound)
    }

    /// All role names, sorted.
    pub fn role_list(&self) -> Vec<String> {
        self.state.read().roles.keys().cloned().collect()
    }
}

fn user_add(s: &mut State, r: &pb::AuthUserAddRequest) -> Result<(), AuthError> {
    if r.name.is_empty() {
        return Err(AuthError::UserEmpty);
    }
    if s.users.contains_key(&r.name) {
        return Err(AuthError::UserAlreadyExist);
    }
    let options = r.options.unwrap_or(UserAddOptions { no_password: false });
    let password = if options.no_password {
        Vec::new()
    } else {
        // The proposer put the bcrypt hash here (see `internal.proto`).
        r.hashed_password.clone().into_bytes()
    };
    s.users.insert(
        r.name.clone(),
        User {
            name: r.name.clone().into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(options),
        },
    );
    s.revision += 1;
    Ok(())
}

fn user_delete(s: &mut State, r: &pb::AuthUserDeleteRequest) -> Result<(), AuthError> {
    if s.enabled && r.name == ROOT {
        return Err(AuthError::InvalidAuthMgmt);
    }
    s.users.remove(&r.name).ok_or(AuthError::UserNotFound)?;
    s.revision += 1;
    Ok(())
}

fn change_password(s: &mut State, r: &pb::AuthUserChangePasswordRequest) -> Result<(), AuthError> {
    let user = s.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
    user.password = if no_password(user) {
        Vec::new()
    } else {
        r.hashed_password.clone().into_bytes()
    };
    s.revision += 1;
    Ok(())
}

fn grant_role(s: &mut State, r: &pb::AuthUserGrantRoleRequest) -> Result<(), AuthError> {
    if !s.users.contains_key(&r.user) {
        return Err(AuthError::UserNotFound);
    }
    if r.role != ROOT && !s.roles.contains_key(&r.role) {
        return Err(AuthError::RoleNotFound);
    }
    let user = s.users.get_mut(&r.user).expect("checked above");
    match user.roles.binary_search(&r.role) {
        Ok(_) => return Ok(()),
        Err(at) => user.roles.insert(at, r.role.clone()),
    }
    s.revision += 1;
    Ok(())
}

fn revoke_role(s: &mut State, r: &pb::AuthUserRevokeRoleRequest) -> Result<(), AuthError> {
    if s.enabled && r.name == ROOT && r.role == ROOT {
        return Err(AuthError::InvalidAuthMgmt);
    }
    let user = s.users.get_mut(&r.name).ok_or(AuthError::UserNotFound)?;
    let before = user.roles.len();
    user.roles.retain(|x| *x != r.role);
    if user.roles.len() == before {
        return Err(AuthError::RoleNotGranted);
    }
    s.revision += 1;
    Ok(())
}

fn role_add(s: &mut State, r: &pb::AuthRoleAddRequest) -> Result<(), AuthError> {
    if r.name.is_empty() {
        return Err(AuthError::RoleEmpty);
    }
    if s.roles.contains_key(&r.name) {
        return Err(AuthError::RoleAlreadyExist);
    }
    s.roles.insert(
        r.name.clone(),
        Role {
            name: r.name.clone().into_bytes(),
            key_permission: Vec::new(),
        },
    );
    s.revision += 1;
    Ok(())
}

fn role_delete(s: &mut State, r: &pb::AuthRoleDeleteRequest) -> Result<(), AuthError> {
    if s.enabled && r.role == ROOT {
        return Err(AuthError::InvalidAuthMgmt);
    }
    s.roles.remove(&r.role).ok_or(AuthError::RoleNotFound)?;
    for u in s.users.values_mut() {
        u.roles.retain(|x| *x != r.role);
    }
    s.revision += 1;
    Ok(())
}

fn grant_permission(
    s: &mut State,
    r: &pb::AuthRoleGrantPermissionRequest,
) -> Result<(), AuthError> {
    let perm = r.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
    let role = s.roles.get_mut(&r.name).ok_or(AuthError::RoleNotFound)?;
    let perms = &mut role.key_permission;
    match perms
        .iter_mut()
        .find(|p| p.key == perm.key && p.range_end == perm.range_end)
    {
        Some(p) => p.perm_type = perm.perm_type,
        None => {
            let at = perms.partition_point(|p| p.key <= perm.key);
            perms.insert(at, perm.clone());
        }
    }
    s.revision += 1;
    Ok(())
}

fn revoke_permission(
    s: &mut State,
    r: &pb::AuthRoleRevokePermissionRequest,
) -> Result<(), AuthError> {
    let role = s.roles.get_mut(&r.role).ok_or(AuthError::RoleNotFound)?;
    let before = role.key_permission.len();
    role.key_permission
        .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
    if role.key_permission.len() == before {
        return Err(AuthError::PermissionNotGranted);
    }
    s.revision += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op_user(name: &str) -> Op {
        Op::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: "$2b$04$not-a-real-hash".into(),
            ..Default::default()
        })
    }

    fn grant(user: &str, role: &str) -> Op {
        Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let a = AuthStore::default();
        let enable = Op::AuthEnable(pb::AuthEnableRequest {});
        assert_eq!(
            a.apply(1, &enable, true),
            Some(Err(AuthError::RootUserNotExist))
        );
        assert_eq!(a.apply(2, &op_user(ROOT), true), Some(Ok(())));
        assert_eq!(
            a.apply(3, &enable, true),
            Some(Err(AuthError::RootRoleNotExist))
        );
        // The root role need not exist as a role to be granted.
        assert_eq!(a.apply(4, &grant(ROOT, ROOT), true), Some(Ok(())));
        assert_eq!(a.apply(5, &enable, true), Some(Ok(())));
        assert!(a.enabled());
        assert_eq!(a.applied_index(), 5);
        let del = Op::UserDelete(pb::AuthUserDeleteRequest { name: ROOT.into() });
        assert_eq!(
            a.apply(6, &del, true),
            Some(Err(AuthError::InvalidAuthMgmt))
        );
        assert_eq!(a.check_admin(None), Err(AuthError::UserEmpty));
        assert_eq!(a.check_admin(Some("nobody")), Err(AuthError::UserNotFound));
        assert_eq!(a.check_admin(Some(ROOT)), Ok(()));
        assert!(a.apply(7, &Op::Put(Default::default()), true).is_none());
    }

    #[test]
    fn key_permissions_and_tokens() {
        let a = AuthStore::default();
        for (i, op) in [
            op_user(ROOT),
            grant(ROOT, ROOT),
            op_user("alice"),
            Op::RoleAdd(pb::AuthRoleAddRequest { name: "ro".into() }),
            Op::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                name: "ro".into(),
                perm: Some(Permission {
                    perm_type: PermType::Read as i32,
                    key: b"/a".to_vec(),
                    range_end: b"/b".to_vec(),
                }),
            }),
            grant("alice", "ro"),
            Op::AuthEnable(pb::AuthEnableRequest {}),
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(a.apply(i as u64 + 1, op, true), Some(Ok(())), "{op:?}");
        }
        let alice = Some("alice");
        assert_eq!(a.check_key(alice, b"/a/x", b"", false), Ok(()));
        assert_eq!(
            a.check_key(alice, b"/a/x", b"", true),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_key(alice, b"/b", b"", false),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_key(None, b"/a", b"", false),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(a.check_key(Some(ROOT), b"\0", b"\0", true), Ok(()));

        let rev = a.revision();
        let auth = |token: &str, rev| {
            Op::Authenticate(AuthenticateCommand {
                name: "alice".into(),
                token: token.into(),
                auth_revision: rev,
            })
        };
        assert_eq!(
            a.apply(20, &auth("t1", rev - 1), true),
            Some(Err(AuthError::AuthOldRevision))
        );
        assert_eq!(a.apply(21, &auth("t1", rev), true), Some(Ok(())));
        assert_eq!(a.user_of_token("t1").as_deref(), Some("alice"));
        assert_eq!(a.user_of_token("t2"), None);
        let passwd = Op::UserChangePassword(pb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            hashed_password: "$2b$04$other".into(),
            ..Default::default()
        });
        assert_eq!(a.apply(22, &passwd, true), Some(Ok(())));
        assert_eq!(a.user_of_token("t1"), None, "a password change ends tokens");

        // Round trip through the saved form.
        let b = AuthStore::default();
        b.replace(a.to_proto());
        assert!(b.enabled());
        assert_eq!(b.check_key(alice, b"/a/x", b"", false), Ok(()));
        assert_eq!(b.user_list(), vec!["alice".to_string(), ROOT.to_string()]);
        assert_eq!(b.revision(), a.revision());
    }
}
