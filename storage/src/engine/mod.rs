//! The seam between the MVCC store and the bytes on disk.
//!
//! [`KvEngine`] is all the store asks of an ordered key-value engine: column
//! families, point reads, ordered scans, atomic write batches, and
//! point-in-time snapshots. [`RocksEngine`] is the real one; [`MemEngine`]
//! keeps everything in memory for fast tests and simulations. Both pass the
//! same correctness suite.

mod memory;
mod rocks;

pub use memory::MemEngine;
pub use rocks::RocksEngine;

use crate::error::Result;

/// The column families the store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Revision → key-value record.
    Kv,
    /// Applied index, current and compacted revisions: written in the same
    /// batch as the data they describe.
    Meta,
    /// Lease id → granted TTL.
    Lease,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Kv, Cf::Meta, Cf::Lease];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Kv => "kv",
            Cf::Meta => "meta",
            Cf::Lease => "lease",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Cf::Kv => 0,
            Cf::Meta => 1,
            Cf::Lease => 2,
        }
    }

    pub(crate) fn from_index(i: u8) -> Option<Cf> {
        Cf::ALL.get(i as usize).copied()
    }
}

/// One change inside a [`WriteBatch`].
#[derive(Debug, Clone)]
pub enum BatchOp {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
}

/// Changes applied atomically by [`KvEngine::write`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(cf, key.into(), value.into()));
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(cf, key.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Visits `(key, value)` pairs in key order; returning `false` stops the scan.
pub type ScanFn<'a> = dyn FnMut(&[u8], &[u8]) -> bool + 'a;

/// Reads that see one consistent state.
pub trait ReadView {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Scans `[start, end)` (to the last key when `end` is `None`) in key order.
    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()>;
}

/// An ordered, durable key-value engine with column families.
pub trait KvEngine: ReadView + Send + Sync {
    /// Applies every change of `batch` atomically. Not fsynced: the raft log
    /// is the durable record, and the store replays it from its applied index.
    fn write(&self, batch: WriteBatch) -> Result<()>;
    /// A point-in-time view, unaffected by later writes.
    fn snapshot(&self) -> Box<dyn ReadView + '_>;
    /// Bytes the engine occupies (on disk for RocksDB).
    fn size_bytes(&self) -> u64;
    /// Reclaims space left by deletions (etcd's defragment).
    fn defragment(&self) -> Result<()>;
    /// Removes every key of every column family.
    fn clear(&self) -> Result<()>;
}
