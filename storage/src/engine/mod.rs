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

use std::ops::Range;

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
    /// Revision → the head of that revision's `Kv` record (the record
    /// without its value), written in the same batch. Opening a store reads
    /// only these, so start-up does not read the values.
    Head,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Kv, Cf::Meta, Cf::Lease, Cf::Head];

    /// The column families a snapshot image carries, by their index: `Head`
    /// is derived from `Kv` and rebuilt where the image is installed.
    pub const IMAGED: [Cf; 3] = [Cf::Kv, Cf::Meta, Cf::Lease];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Kv => "kv",
            Cf::Meta => "meta",
            Cf::Lease => "lease",
            Cf::Head => "head",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Cf::Kv => 0,
            Cf::Meta => 1,
            Cf::Lease => 2,
            Cf::Head => 3,
        }
    }

    pub(crate) fn from_index(i: u8) -> Option<Cf> {
        Cf::ALL.get(i as usize).copied()
    }
}

/// One change inside a [`WriteBatch`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    Put(Cf, &'a [u8], &'a [u8]),
    Delete(Cf, &'a [u8]),
}

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;

/// Changes applied atomically by [`KvEngine::write`]. They are encoded back
/// to back in one buffer — `[op][cf][key len u32][key]` and, for a put,
/// `[value len u32][value]` (lengths little-endian) — so a batch of
/// thousands of changes costs a few allocations, not two per change.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    buf: Vec<u8>,
    len: usize,
}

impl WriteBatch {
    fn push_key(&mut self, op: u8, cf: Cf, key: &[u8]) {
        self.buf.push(op);
        self.buf.push(cf.index() as u8);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.len += 1;
    }

    pub fn put(&mut self, cf: Cf, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        self.put_with(cf, key.as_ref(), |buf| buf.extend_from_slice(value));
    }

    /// A put whose value `write` appends straight into the batch. Returns
    /// where the value sits, for [`Self::bytes`].
    pub fn put_with(
        &mut self,
        cf: Cf,
        key: &[u8],
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Range<usize> {
        self.push_key(OP_PUT, cf, key);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let value = len_at + 4..self.buf.len();
        let len = (value.len() as u32).to_le_bytes();
        self.buf[len_at..len_at + 4].copy_from_slice(&len);
        value
    }

    /// A put whose value is a copy of bytes already in the batch (`value`,
    /// as [`Self::put_with`] returned it, or part of it).
    pub fn put_within(&mut self, cf: Cf, key: &[u8], value: Range<usize>) {
        self.push_key(OP_PUT, cf, key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_within(value);
    }

    pub fn delete(&mut self, cf: Cf, key: impl AsRef<[u8]>) {
        self.push_key(OP_DELETE, cf, key.as_ref());
    }

    /// Bytes of the batch, such as a value [`Self::put_with`] placed.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The changes, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = BatchOp<'_>> + '_ {
        fn take<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
            let (len, tail) = rest.split_at(4);
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (data, tail) = tail.split_at(len);
            *rest = tail;
            data
        }
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            let (&[op, cf], tail) = rest.split_first_chunk::<2>()?;
            rest = tail;
            let cf = Cf::from_index(cf).expect("encoded by this batch");
            let key = take(&mut rest);
            Some(match op {
                OP_PUT => BatchOp::Put(cf, key, take(&mut rest)),
                _ => BatchOp::Delete(cf, key),
            })
        })
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
    /// Makes every write so far durable (fsync), so the raft log below the
    /// store's applied index may be discarded.
    fn sync(&self) -> Result<()>;
    /// A point-in-time view, unaffected by later writes.
    fn snapshot(&self) -> Box<dyn ReadView + '_>;
    /// Bytes the engine occupies (on disk for RocksDB).
    fn size_bytes(&self) -> u64;
    /// Reclaims space left by deletions (etcd's defragment).
    fn defragment(&self) -> Result<()>;
    /// Removes every key of every column family.
    fn clear(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let mut b = WriteBatch::default();
        assert!(b.is_empty());
        b.put(Cf::Kv, b"k1", b"v1");
        b.delete(Cf::Meta, b"gone");
        let at = b.put_with(Cf::Lease, b"", |buf| {
            buf.extend_from_slice(b"written in place")
        });
        b.put(Cf::Kv, vec![0u8; 300], []);
        b.put_within(Cf::Head, b"h", at.start..at.start + 7);
        assert_eq!(b.len(), 5);
        assert_eq!(b.bytes(at), b"written in place");
        let ops: Vec<BatchOp<'_>> = b.iter().collect();
        let long = [0u8; 300];
        assert_eq!(
            ops,
            vec![
                BatchOp::Put(Cf::Kv, b"k1", b"v1"),
                BatchOp::Delete(Cf::Meta, b"gone"),
                BatchOp::Put(Cf::Lease, b"", b"written in place"),
                BatchOp::Put(Cf::Kv, &long, b""),
                BatchOp::Put(Cf::Head, b"h", b"written"),
            ]
        );
    }
}
