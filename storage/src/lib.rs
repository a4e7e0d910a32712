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
pub use watchable_store::{
    WatchReceiver, WatchRequest, WatchResponse, WatchStream, WatchableStore, ALL_WATCHERS,
    STREAM_QUEUE_BYTES,
};

/// Entry points for the fuzz targets (`fuzz/`): the crate-private codecs and
/// the key index, reachable without making them part of the API. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz_api {
    use crate::key_index::KeyIndex;
    use crate::kv::Record;
    use crate::{KeyValue, Result, Revision};

    /// Decodes a `kv` column-family value: the key-value and whether it is a
    /// tombstone.
    pub fn decode_record(bytes: &[u8]) -> Result<(KeyValue, bool)> {
        Record::decode(bytes).map(|r| (r.kv, r.tombstone))
    }

    /// Encodes a `kv` column-family value, as the store writes it.
    pub fn encode_record(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::new();
        Record {
            kv: kv.clone(),
            tombstone,
        }
        .encode_into(&mut out);
        out
    }

    /// Parses and verifies a snapshot image without installing it.
    pub fn parse_snapshot(bytes: &[u8]) -> Result<()> {
        crate::snapshot::verify_image(bytes)
    }

    /// One key's history ([`KeyIndex`]), driven from outside the crate.
    #[derive(Debug, Default)]
    pub struct FuzzKeyIndex(KeyIndex);

    impl FuzzKeyIndex {
        /// A put at `rev`: `(create_revision, version)` after it.
        pub fn put(&mut self, rev: Revision) -> (i64, i64) {
            let k = self.0.put(rev);
            (k.create_revision, k.version)
        }

        /// A delete at `rev`; false when the key was not live.
        pub fn tombstone(&mut self, rev: Revision) -> bool {
            self.0.tombstone(rev)
        }

        /// What a read at `at` sees: `(modified, create_revision, version)`.
        pub fn get(&self, at: i64) -> Option<(Revision, i64, i64)> {
            self.0
                .get(at)
                .map(|k| (k.modified, k.create_revision, k.version))
        }

        /// Revisions at or after `from`, tombstones included.
        pub fn revisions_since(&self, from: i64) -> Vec<Revision> {
            let mut out = Vec::new();
            self.0.revisions_since(from, &mut out);
            out
        }

        /// Compacts at `at`: `(key leaves the index, revisions kept below at)`.
        pub fn compact(&mut self, at: i64) -> (bool, Vec<Revision>) {
            let mut keep = Vec::new();
            let gone = self.0.compact(at, &mut keep);
            (gone, keep)
        }
    }
}
