//! An in-memory engine: `BTreeMap`s behind a lock. For tests and simulations.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use super::{BatchOp, Cf, KvEngine, ReadView, ScanFn, WriteBatch};
use crate::error::Result;

type Tables = [BTreeMap<Vec<u8>, Vec<u8>>; Cf::ALL.len()];

/// Engine state lives only as long as this value (and its clones of the `Arc`
/// that wraps it): "reopening" a store over the same `MemEngine` exercises
/// everything a restart does except the disk.
#[derive(Default)]
pub struct MemEngine {
    tables: RwLock<Tables>,
}

impl MemEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

fn scan_tables(
    tables: &Tables,
    cf: Cf,
    start: &[u8],
    end: Option<&[u8]>,
    f: &mut ScanFn<'_>,
) -> Result<()> {
    let upper = match end {
        Some(end) if end <= start => return Ok(()),
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    for (k, v) in tables[cf.index()].range::<[u8], _>((Bound::Included(start), upper)) {
        if !f(k, v) {
            break;
        }
    }
    Ok(())
}

impl ReadView for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables.read()[cf.index()].get(key).cloned())
    }

    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()> {
        scan_tables(&self.tables.read(), cf, start, end, f)
    }
}

struct MemSnapshot(Tables);

impl ReadView for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0[cf.index()].get(key).cloned())
    }

    fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()> {
        scan_tables(&self.0, cf, start, end, f)
    }
}

impl KvEngine for MemEngine {
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut tables = self.tables.write();
        for op in batch.iter() {
            match op {
                BatchOp::Put(cf, k, v) => {
                    tables[cf.index()].insert(k.to_vec(), v.to_vec());
                }
                BatchOp::Delete(cf, k) => {
                    tables[cf.index()].remove(k);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn ReadView + '_> {
        Box::new(MemSnapshot(self.tables.read().clone()))
    }

    fn size_bytes(&self) -> u64 {
        let tables = self.tables.read();
        tables
            .iter()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn sync(&self) -> Result<()> {
        // Memory is all this engine has: nothing outlives the process.
        Ok(())
    }

    fn defragment(&self) -> Result<()> {
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        let mut tables = self.tables.write();
        for t in tables.iter_mut() {
            t.clear();
        }
        Ok(())
    }
}
