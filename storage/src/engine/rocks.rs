//! The RocksDB engine: one database, one column family per [`Cf`].

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, FlushOptions,
    Options, ReadOptions, WriteOptions, DB,
};

use super::{BatchOp, Cf, KvEngine, ReadView, ScanFn, WriteBatch};
use crate::error::{Result, StorageError};

/// RocksDB with the `kv`, `meta`, `lease` and `head` column families. Writes skip
/// RocksDB's own WAL: the raft log already holds every one of them, and the
/// store replays it from the applied index it finds on open. Memtables of
/// all column families are flushed together (atomic flush), so what is on
/// disk after a crash is always a prefix of the writes, applied index
/// included; [`KvEngine::sync`] flushes them on a raft checkpoint. A clean
/// close flushes too.
pub struct RocksEngine {
    db: DB,
}

fn engine_err(e: rocksdb::Error) -> StorageError {
    StorageError::Engine(e.into_string())
}

impl RocksEngine {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let cache = Cache::new_lru_cache(64 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        cf_opts.set_write_buffer_size(64 << 20);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_atomic_flush(true);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine_err)?;
        Ok(RocksEngine { db })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("column families are created at open")
    }
}

fn scan_iter(
    mut it: DBRawIteratorWithThreadMode<'_, DB>,
    start: &[u8],
    f: &mut ScanFn<'_>,
) -> Result<()> {
    it.seek(start);
    while it.valid() {
        let (k, v) = (it.key().expect("valid"), it.value().expect("valid"));
        if !f(k, v) {
            return Ok(());
        }
        it.next();
    }
    it.status().map_err(engine_err)
}

fn bounded(end: Option<&[u8]>) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if let Some(end) = end {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    opts
}

impl ReadView for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(engine_err)
    }

    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()> {
        if matches!(end, Some(end) if end <= start) {
            return Ok(());
        }
        scan_iter(
            self.db.raw_iterator_cf_opt(self.cf(cf), bounded(end)),
            start,
            f,
        )
    }
}

struct RocksSnapshot<'a> {
    engine: &'a RocksEngine,
    snap: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

impl ReadView for RocksSnapshot<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(self.engine.cf(cf), key)
            .map_err(engine_err)
    }

    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()> {
        if matches!(end, Some(end) if end <= start) {
            return Ok(());
        }
        scan_iter(
            self.snap
                .raw_iterator_cf_opt(self.engine.cf(cf), bounded(end)),
            start,
            f,
        )
    }
}

impl KvEngine for RocksEngine {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        // Handles looked up once per batch: each lookup is a map search by name.
        let cfs = Cf::ALL.map(|cf| self.cf(cf));
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.iter() {
            match op {
                BatchOp::Put(cf, k, v) => wb.put_cf(cfs[cf.index()], k, v),
                BatchOp::Delete(cf, k) => wb.delete_cf(cfs[cf.index()], k),
            }
        }
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db.write_opt(wb, &opts).map_err(engine_err)
    }

    fn sync(&self) -> Result<()> {
        // No WAL: the memtables are the unsynced writes. Flushing them all at
        // once writes SST files durably (RocksDB fsyncs them and the manifest).
        let cfs = Cf::ALL.map(|cf| self.cf(cf));
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &opts).map_err(engine_err)
    }

    fn snapshot(&self) -> Box<dyn ReadView + '_> {
        Box::new(RocksSnapshot {
            engine: self,
            snap: self.db.snapshot(),
        })
    }

    fn size_bytes(&self) -> u64 {
        Cf::ALL
            .iter()
            .map(|cf| {
                let prop = |name: &str| {
                    self.db
                        .property_int_value_cf(self.cf(*cf), name)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                prop("rocksdb.total-sst-files-size") + prop("rocksdb.size-all-mem-tables")
            })
            .sum()
    }

    fn defragment(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db
                .compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        for cf in Cf::ALL {
            let mut keys = Vec::new();
            self.scan(cf, &[], None, &mut |k, _| {
                keys.push(k.to_vec());
                true
            })?;
            for chunk in keys.chunks(10_000) {
                let mut batch = WriteBatch::default();
                for k in chunk {
                    batch.delete(cf, k);
                }
                self.write(batch)?;
            }
        }
        Ok(())
    }
}
