//! The crate's one error type.

/// Everything that can go wrong in replication.
///
/// Which errors are *definite* matters to callers that retry: after
/// [`Error::NotLeader`] and [`Error::ProposalDropped`] the proposal is known not
/// to have been applied (a retry cannot apply it twice); after
/// [`Error::Timeout`] and [`Error::Stopped`] the outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node is not the leader; `leader` is the one it knows of, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The proposal was not appended, or its log slot was taken by another
    /// leader's entry. It was not applied.
    #[error("proposal dropped; it was not applied")]
    ProposalDropped,
    /// The node has stopped (shut down, removed, or failed).
    #[error("raft node stopped")]
    Stopped,
    /// This node was removed from the cluster.
    #[error("this node was removed from the cluster")]
    Removed,
    /// No answer in time; the outcome is unknown.
    #[error("request timed out; the outcome is unknown")]
    Timeout,
    /// A membership change was refused (e.g. the member already exists, or
    /// another change is still pending).
    #[error("membership change rejected: {0}")]
    ConfChange(String),
    /// The raft log store failed (RocksDB, snapshot files).
    #[error("raft log storage: {0}")]
    Storage(String),
    /// Persisted data does not decode.
    #[error("corrupt raft data: {0}")]
    Corrupt(String),
    /// The peer transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The state machine failed to snapshot or restore.
    #[error("state machine: {0}")]
    StateMachine(String),
    /// The node configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(String),
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<protobuf::ProtobufError> for Error {
    fn from(e: protobuf::ProtobufError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Corrupt(e.to_string())
    }
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        match e {
            raft::Error::ProposalDropped => Error::ProposalDropped,
            other => Error::Raft(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
