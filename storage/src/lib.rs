//! # ballast-storage
//!
//! The MVCC key-value engine under every Ballast storage member: etcd's data
//! model and semantics, on RocksDB. No network, no raft: the replicated log
//! drives it through [`WatchableStore::apply`] with each entry's index.
//!
//! # Layout
//! - `revision` — `(main, sub)` revisions and their order-preserving encoding.
//! - `kv` — key-value records and events; the record codec.
//! - `key_index` — one key's history as generations of revisions.
//! - `kv_store` — [`KvStore`]: ranges at any revision, replicated writes,
//!   txns, compaction, hashes, the applied index.
//! - `lease` — leases and which member tracks their deadlines.
//! - `compact` — physical removal of compacted records in the background.
//! - `watchable_store` / `watcher_group` — [`WatchableStore`]: watchers fed
//!   by every committed revision, caught up from disk when behind.
//! - `snapshot` — point-in-time images for raft snapshots and backups.
//! - `engine` — [`KvEngine`], with [`RocksEngine`] and [`MemEngine`].
//! - `request` — the request and response types (etcd's KV API shape).
//! - `error` — [`StorageError`].

mod compact;
pub mod engine;
mod error;
mod key_index;
mod kv;
mod kv_store;
mod lease;
mod request;
mod revision;
pub mod snapshot;
mod watchable_store;
mod watcher_group;

pub use engine::{KvEngine, MemEngine, RocksEngine};
pub use error::{Result, StorageError};
pub use kv::{Event, EventKind, KeyValue};
pub use kv_store::{KvStore, RevisionEvents, StoreConfig, NEVER_COMPACTED};
pub use lease::{LeaseStatus, MAX_LEASE_TTL};
pub use request::*;
pub use revision::Revision;
pub use watchable_store::{WatchRequest, WatchResponse, WatchStream, WatchableStore, ALL_WATCHERS};
