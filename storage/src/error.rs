//! The storage crate's one error type.

/// Everything the store can refuse or fail at. Variants describe the cause;
/// `server/` maps them to etcd's exact wire errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The requested revision was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted { compacted: i64 },
    /// The requested revision is newer than the store's current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision { current: i64 },
    /// A request named no key.
    #[error("key is not provided")]
    EmptyKey,
    /// `range_end` sorts before `key` (and is not "\0").
    #[error("range end is before the start key")]
    InvalidRange,
    /// A value bigger than the configured maximum.
    #[error("request is too large")]
    ValueTooLarge { size: usize, max: usize },
    /// A transaction with more operations than allowed in one of its parts
    /// or in all its levels together, or nested too deep.
    #[error("too many operations in txn request")]
    TooManyOps { max: usize },
    /// The range results of one transaction would take more than `max`
    /// bytes (checked before the txn writes anything).
    #[error("txn response is too large")]
    TxnResultTooLarge { max: usize },
    /// One transaction writes the same key twice (or puts and deletes it).
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A put names a lease, or a lease call an id, that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound { id: i64 },
    /// A grant names an id already in use.
    #[error("lease already exists")]
    LeaseExists { id: i64 },
    /// A grant asks for a TTL beyond the maximum.
    #[error("too large lease TTL")]
    LeaseTtlTooLarge { ttl: i64 },
    /// A lease id must be positive (0 asks the store to choose one).
    #[error("invalid lease id")]
    InvalidLeaseId { id: i64 },
    /// Compaction at or below the already compacted revision.
    #[error("mvcc: required revision has been compacted")]
    AlreadyCompacted { compacted: i64 },
    /// A snapshot image that is truncated, corrupt or of another format.
    #[error("snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
    /// Stored bytes that fail to decode: a broken disk or a bug.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The engine (RocksDB) failed.
    #[error("engine: {0}")]
    Engine(String),
    /// A watch id already used on this stream.
    #[error("watch id already exists")]
    WatchIdExists { id: i64 },
}

/// Result alias used throughout the crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
