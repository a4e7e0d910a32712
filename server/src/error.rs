//! The server's errors, and their etcd wire form: the gRPC codes and exact
//! `etcdserver: …` messages etcd clients match on.

use ballast_storage::StorageError;
use tonic::{Code, Status};

/// Everything a request can fail with at the server.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
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
            S::RequestTooLarge => status(Code::InvalidArgument, "request is too large"),
            S::NoLeader => status(Code::Unavailable, "no leader"),
            S::NotLeader => status(Code::FailedPrecondition, "not leader"),
            S::LeaderChanged => status(Code::Unavailable, "leader changed"),
            S::Timeout => status(Code::Unavailable, "request timed out"),
            S::Stopped => status(Code::Unavailable, "server stopped"),
            S::NoSpace => status(Code::ResourceExhausted, "mvcc: database space exceeded"),
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
