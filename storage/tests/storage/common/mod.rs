//! Shared helpers for the storage tests: a store over either engine, and
//! shorthands that apply writes as a raft log would (one index each).
#![allow(dead_code)]

use std::sync::Arc;

use ballast_storage::*;

/// Which engine a test runs on; every correctness test runs on both.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Mem,
    Rocks,
}

pub struct Harness {
    pub store: WatchableStore,
    pub engine: Arc<dyn KvEngine>,
    pub next_index: u64,
    pub config: StoreConfig,
    kind: Kind,
    dir: Option<tempfile::TempDir>,
}

impl Harness {
    pub fn new(kind: Kind) -> Self {
        Self::with_config(kind, StoreConfig::default())
    }

    pub fn with_config(kind: Kind, config: StoreConfig) -> Self {
        let (engine, dir): (Arc<dyn KvEngine>, _) = match kind {
            Kind::Mem => (Arc::new(MemEngine::new()), None),
            Kind::Rocks => {
                let dir = tempfile::tempdir().expect("tempdir");
                (
                    Arc::new(RocksEngine::open(dir.path().join("db")).expect("open rocks")),
                    Some(dir),
                )
            }
        };
        let store = WatchableStore::new(KvStore::open(engine.clone(), config.clone()).unwrap());
        Harness {
            store,
            engine,
            next_index: 1,
            config,
            kind,
            dir,
        }
    }

    /// Closes and reopens the store on the same data, as a restart would.
    pub fn reopen(&mut self) {
        // Drop the old store (and, for RocksDB, every handle on the
        // database) before opening again.
        let throwaway: Arc<dyn KvEngine> = Arc::new(MemEngine::new());
        self.store =
            WatchableStore::new(KvStore::open(throwaway.clone(), StoreConfig::default()).unwrap());
        if let Kind::Rocks = self.kind {
            self.engine = throwaway;
            let path = self.dir.as_ref().unwrap().path().join("db");
            self.engine = Arc::new(RocksEngine::open(path).expect("reopen rocks"));
        }
        self.store =
            WatchableStore::new(KvStore::open(self.engine.clone(), self.config.clone()).unwrap());
    }

    pub fn apply(&mut self, op: WriteOp) -> Applied {
        let index = self.next_index;
        self.next_index += 1;
        self.store.apply(&[(index, &op)]).pop().unwrap()
    }

    pub fn apply_batch(&mut self, ops: &[WriteOp]) -> Vec<Applied> {
        let entries: Vec<(u64, &WriteOp)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| (self.next_index + i as u64, op))
            .collect();
        self.next_index += ops.len() as u64;
        self.store.apply(&entries)
    }

    pub fn put(&mut self, key: &str, value: &str) -> i64 {
        let a = self.apply(WriteOp::Put(put_req(key, value)));
        a.result.expect("put");
        a.revision
    }

    pub fn put_lease(&mut self, key: &str, value: &str, lease: i64) -> Result<WriteResult> {
        let mut p = put_req(key, value);
        p.lease = lease;
        self.apply(WriteOp::Put(p)).result
    }

    pub fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        match self
            .apply(WriteOp::DeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv: true,
            }))
            .result
            .expect("delete")
        {
            WriteResult::DeleteRange(d) => d,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.store
            .range(&RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .unwrap()
            .kvs
            .pop()
    }

    pub fn get_at(&self, key: &str, rev: i64) -> Result<Option<KeyValue>> {
        self.store
            .range(&RangeRequest {
                key: key.into(),
                revision: rev,
                ..Default::default()
            })
            .map(|mut r| r.kvs.pop())
    }

    pub fn keys(&self, key: &str, range_end: &str) -> Vec<String> {
        self.store
            .range(&RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            })
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    }

    pub fn grant(&mut self, id: i64, ttl: i64) -> i64 {
        match self
            .apply(WriteOp::LeaseGrant { id, ttl })
            .result
            .expect("grant")
        {
            WriteResult::LeaseGrant { id, .. } => id,
            other => panic!("unexpected {other:?}"),
        }
    }
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Expands each listed test function into one test per engine.
#[macro_export]
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $name() { super::$name($crate::common::Kind::Mem) } )*
        }
        mod rocks {
            $( #[test] fn $name() { super::$name($crate::common::Kind::Rocks) } )*
        }
    };
}
