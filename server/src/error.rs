//! The server's errors, and their etcd wire form: the gRPC codes and exact
//! `etcdserver: …` messages etcd clients match on.

use ballast_storage::StorageError;
use tonic::{Code, Status};

/// The Auth API's errors; `Display` is etcd's `auth: …` text (what etcd
/// 3.4's Maintenance service sends as-is, code Unknown).
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("auth: root user does not exist")]
    RootUserNotExist,
    #[error("auth: root user does not have root role")]
    RootRoleNotExist,
    #[error("auth: user already exists")]
    UserAlreadyExist,
    #[error("auth: user name is empty")]
    UserEmpty,
    #[error("auth: user not found")]
    UserNotFound,
    #[error("auth: role already exists")]
    RoleAlreadyExist,
    #[error("auth: role not found")]
    RoleNotFound,
    #[error("auth: role name is empty")]
    RoleEmpty,
    #[error("auth: permission not given")]
    PermissionNotGiven,
    #[error("auth: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("auth: permission denied")]
    PermissionDenied,
    #[error("auth: role is not granted to the user")]
    RoleNotGranted,
    #[error("auth: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("auth: authentication is not enabled")]
    AuthNotEnabled,
    #[error("auth: revision in header is old")]
    AuthOldRevision,
    #[error("auth: invalid auth token")]
    InvalidAuthToken,
    #[error("auth: invalid auth management")]
    InvalidAuthMgmt,
}

impl AuthError {
    /// The status etcd 3.4's Maintenance service answers: the raw error,
    /// code Unknown (`rpc error: code = Unknown desc = auth: permission denied`).
    pub fn raw_status(self) -> Status {
        Status::unknown(self.to_string())
    }

    /// The gRPC code and message etcd clients see (`rpctypes`).
    fn wire(self) -> (Code, &'static str) {
        use AuthError as A;
        match self {
            A::RootUserNotExist => (Code::FailedPrecondition, "root user does not exist"),
            A::RootRoleNotExist => (
                Code::FailedPrecondition,
                "root user does not have root role",
            ),
            A::UserAlreadyExist => (Code::FailedPrecondition, "user name already exists"),
            A::UserEmpty => (Code::InvalidArgument, "user name is empty"),
            A::UserNotFound => (Code::FailedPrecondition, "user name not found"),
            A::RoleAlreadyExist => (Code::FailedPrecondition, "role name already exists"),
            A::RoleNotFound => (Code::FailedPrecondition, "role name not found"),
            A::RoleEmpty => (Code::InvalidArgument, "role name is empty"),
            A::PermissionNotGiven => (Code::InvalidArgument, "permission not given"),
            A::AuthFailed => (
                Code::InvalidArgument,
                "authentication failed, invalid user ID or password",
            ),
            A::NoPasswordUser => (
                Code::InvalidArgument,
                "authentication failed, password was given for no password user",
            ),
            A::PermissionDenied => (Code::PermissionDenied, "permission denied"),
            A::RoleNotGranted => (Code::FailedPrecondition, "role is not granted to the user"),
            A::PermissionNotGranted => (
                Code::FailedPrecondition,
                "permission is not granted to the role",
            ),
            A::AuthNotEnabled => (Code::FailedPrecondition, "authentication is not enabled"),
            A::AuthOldRevision => (Code::InvalidArgument, "revision of auth store is old"),
            A::InvalidAuthToken => (Code::Unauthenticated, "invalid auth token"),
            A::InvalidAuthMgmt => (Code::InvalidArgument, "invalid auth management"),
        }
    }

    /// Go's `status.Error` text, which etcd 3.4 puts in a refused watch's
    /// `cancel_reason`: `rpc error: code = PermissionDenied desc = etcdserver: permission denied`.
    pub fn go_status_text(self) -> String {
        let (code, msg) = self.wire();
        let name = match code {
            Code::FailedPrecondition => "FailedPrecondition",
            Code::InvalidArgument => "InvalidArgument",
            Code::PermissionDenied => "PermissionDenied",
            Code::Unauthenticated => "Unauthenticated",
            _ => "Unknown",
        };
        format!("rpc error: code = {name} desc = etcdserver: {msg}")
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        let (code, msg) = e.wire();
        status(code, msg)
    }
}

/// Everything a request can fail with at the server.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("request is too large")]
    RequestTooLarge,
    #[error("no leader")]
    NoLeader,
    #[error("not leader")]
    NotLeader,
    #[error("leader changed")]
    LeaderChanged,
    #[error("request timed out")]
    Timeout,
    #[error("server stopped")]
    Stopped,
    #[error("database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is active: writes are refused, as etcd refuses them.
    #[error("corrupt cluster")]
    Corrupt,
    #[error("member not found")]
    MemberNotFound,
    #[error("unhealthy cluster")]
    Unhealthy,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    #[error("member ID already exist")]
    MemberExists,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("re-configuration failed: {0}")]
    ConfChange(String),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ballast_raft::Error> for ServerError {
    fn from(e: ballast_raft::Error) -> Self {
        use ballast_raft::Error as E;
        match e {
            E::NotLeader { leader: None } => ServerError::NoLeader,
            E::NotLeader { .. } | E::ProposalDropped => ServerError::LeaderChanged,
            E::Timeout => ServerError::Timeout,
            E::Stopped | E::Removed => ServerError::Stopped,
            E::ConfChange(m) => ServerError::ConfChange(m),
            other => ServerError::Internal(other.to_string()),
        }
    }
}

fn status(code: Code, msg: &str) -> Status {
    Status::new(code, format!("etcdserver: {msg}"))
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        use ServerError as S;
        use StorageError as E;
        match e {
            S::Storage(e) => match e {
                E::Compacted { .. } | E::AlreadyCompacted { .. } => status(
                    Code::OutOfRange,
                    "mvcc: required revision has been compacted",
                ),
                E::FutureRevision { .. } => status(
                    Code::OutOfRange,
                    "mvcc: required revision is a future revision",
                ),
                E::EmptyKey => status(Code::InvalidArgument, "key is not provided"),
                E::InvalidRange => status(Code::InvalidArgument, "range end is before the key"),
                E::ValueTooLarge { .. } => status(Code::InvalidArgument, "request is too large"),
                E::TooManyOps { .. } => {
                    status(Code::InvalidArgument, "too many operations in txn request")
                }
                // etcd has no such bound; its nearest answer, grpc-go's to a
                // response over the send limit, is ResourceExhausted too.
                E::TxnResultTooLarge { max } => status(
                    Code::ResourceExhausted,
                    &format!("txn response is too large: range results over {max} bytes"),
                ),
                E::DuplicateKey => {
                    status(Code::InvalidArgument, "duplicate key given in txn request")
                }
                E::KeyNotFound => status(Code::InvalidArgument, "key not found"),
                E::ValueProvided => status(Code::InvalidArgument, "value is provided"),
                E::LeaseProvided => status(Code::InvalidArgument, "lease is provided"),
                E::LeaseNotFound { .. } => status(Code::NotFound, "requested lease not found"),
                E::LeaseExists { .. } => status(Code::FailedPrecondition, "lease already exists"),
                E::LeaseTtlTooLarge { .. } => status(Code::OutOfRange, "too large lease TTL"),
                E::InvalidLeaseId { .. } => status(Code::InvalidArgument, "invalid lease id"),
                E::WatchIdExists { .. } => status(Code::InvalidArgument, "watch id already exists"),
                E::CorruptSnapshot(m) | E::Corrupt(m) => status(Code::DataLoss, &m),
                E::Engine(m) => status(Code::Internal, &m),
            },
            S::Auth(a) => a.into(),
            S::RequestTooLarge => status(Code::InvalidArgument, "request is too large"),
            S::NoLeader => status(Code::Unavailable, "no leader"),
            S::NotLeader => status(Code::FailedPrecondition, "not leader"),
            S::LeaderChanged => status(Code::Unavailable, "leader changed"),
            S::Timeout => status(Code::Unavailable, "request timed out"),
            S::Stopped => status(Code::Unavailable, "server stopped"),
            S::NoSpace => status(Code::ResourceExhausted, "mvcc: database space exceeded"),
            S::Corrupt => status(Code::DataLoss, "etcdserver: corrupt cluster"),
            S::MemberNotFound => status(Code::NotFound, "member not found"),
            S::Unhealthy => status(Code::Unavailable, "unhealthy cluster"),
            S::LearnerNotReady => status(
                Code::FailedPrecondition,
                "can only promote a learner member which is in sync with leader",
            ),
            S::NotEnoughStarted => status(
                Code::FailedPrecondition,
                "re-configuration failed due to not enough started members",
            ),
            S::MemberExists => status(Code::FailedPrecondition, "member ID already exist"),
            S::PeerUrlExists => status(Code::FailedPrecondition, "Peer URLs already exists"),
            S::MemberBadUrls => status(Code::InvalidArgument, "given member URLs are invalid"),
            S::MemberNotLearner => status(
                Code::FailedPrecondition,
                "can only promote a learner member",
            ),
            S::BadLeaderTransferee => status(Code::FailedPrecondition, "bad leader transferee"),
            S::ConfChange(m) => status(Code::FailedPrecondition, &m),
            S::Unsupported(what) => Status::unimplemented(format!("etcdserver: {what}")),
            S::InvalidArgument(m) => status(Code::InvalidArgument, &m),
            S::Internal(m) => status(Code::Internal, &m),
        }
    }
}

/// Result alias for the server.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
