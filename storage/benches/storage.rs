//! Storage benchmarks on RocksDB: batched puts, ranges, txns, watch
//! fan-out, memory per idle watcher, and opening a filled store.
//!
//! `cargo bench -p ballast-storage --bench storage` (add a filter such as
//! `put/` to run one group). Figures go to benches/RESULTS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_storage::*;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

struct Bench {
    store: WatchableStore,
    index: u64,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
        let kv = KvStore::open(engine, StoreConfig::default()).unwrap();
        Bench {
            store: WatchableStore::new(kv),
            index: 0,
            _dir: dir,
        }
    }

    fn apply(&mut self, ops: &[WriteOp]) {
        let entries: Vec<(u64, &WriteOp)> = ops
            .iter()
            .map(|op| {
                self.index += 1;
                (self.index, op)
            })
            .collect();
        self.store.apply(&entries);
    }
}

fn put(key: String, value: &[u8]) -> WriteOp {
    WriteOp::Put(PutRequest {
        key: key.into_bytes(),
        value: value.to_vec(),
        ..Default::default()
    })
}

fn bench_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("put");
    let value = vec![b'v'; 256];
    for batch in [1usize, 16, 256] {
        let mut b = Bench::new();
        let mut n = 0u64;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("batch", batch), |bench| {
            bench.iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            n += 1;
                            put(format!("key/{:08}", n % 100_000), &value)
                        })
                        .collect::<Vec<_>>()
                },
                |ops| b.apply(&ops),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_range(c: &mut Criterion) {
    let mut g = c.benchmark_group("range");
    let mut b = Bench::new();
    let value = vec![b'v'; 256];
    let ops: Vec<WriteOp> = (0..20_000)
        .map(|i| put(format!("key/{i:08}"), &value))
        .collect();
    for chunk in ops.chunks(1000) {
        b.apply(chunk);
    }
    for keys in [1usize, 100, 10_000] {
        let req = RangeRequest {
            key: b"key/00005000".to_vec(),
            range_end: if keys == 1 {
                vec![]
            } else {
                format!("key/{:08}", 5000 + keys).into_bytes()
            },
            ..Default::default()
        };
        assert_eq!(b.store.range(&req).unwrap().kvs.len(), keys);
        g.throughput(Throughput::Elements(keys as u64));
        g.bench_function(BenchmarkId::new("keys", keys), |bench| {
            bench.iter(|| b.store.range(&req).unwrap())
        });
    }
    g.finish();
}

fn bench_txn(c: &mut Criterion) {
    let mut g = c.benchmark_group("txn");
    let mut b = Bench::new();
    b.apply(&[put("obj".into(), b"v0")]);
    g.bench_function("compare_mod_then_put", |bench| {
        bench.iter(|| {
            let rev = b.store.current_revision();
            let op = WriteOp::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"obj".to_vec(),
                    range_end: vec![],
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(rev),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: b"obj".to_vec(),
                    value: vec![b'x'; 256],
                    ..Default::default()
                })],
                failure: vec![],
            });
            b.apply(&[op]);
        })
    });
    g.finish();
}

/// One put delivered to N synced watchers on its prefix: the time of the
/// apply, which includes handing the event to every watcher.
fn bench_watch_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_fanout");
    g.sample_size(20);
    for watchers in [1_000usize, 10_000] {
        let mut b = Bench::new();
        let (ws, mut rx) = b.store.watch_stream(watchers * 2);
        for _ in 0..watchers {
            ws.watch(WatchRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        g.bench_function(BenchmarkId::new("watchers", watchers), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let op = put(format!("w/{i}"), b"event");
                    let t = Instant::now();
                    b.apply(std::slice::from_ref(&op));
                    total += t.elapsed();
                    let mut got = 0;
                    while rx.try_recv().is_ok() {
                        got += 1;
                    }
                    assert_eq!(got, watchers, "every watcher got the event");
                }
                total
            })
        });
        drop(ws);
    }
    g.finish();
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resident memory per idle watcher (one stream, 200,000 watchers on
/// distinct keys), printed rather than timed.
fn watcher_memory(_: &mut Criterion) {
    const N: usize = 200_000;
    let b = Bench::new();
    let (ws, _rx) = b.store.watch_stream(1024);
    let before = rss_bytes();
    for i in 0..N {
        ws.watch(WatchRequest {
            key: format!("/registry/pods/ns{}/pod-{i}", i % 100).into_bytes(),
            ..Default::default()
        })
        .unwrap();
    }
    let after = rss_bytes();
    println!(
        "watcher_memory: {} bytes per idle watcher ({N} watchers, RSS {} -> {} MiB)",
        (after.saturating_sub(before)) / N as u64,
        before >> 20,
        after >> 20
    );
}

/// Opening a store of 100,000 keys with 1 KiB values, two versions each:
/// the key index and the lessor are rebuilt at every open. Values of one
/// repeated byte (which RocksDB compresses to almost nothing) and of
/// pseudo-random bytes (which it cannot compress).
fn bench_open(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    for random in [false, true] {
        let mut b = Bench::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut value = || -> Vec<u8> {
            if !random {
                return vec![b'v'; 1024];
            }
            (0..1024)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect()
        };
        for _ in 0..2 {
            for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
                let ops: Vec<WriteOp> = chunk
                    .iter()
                    .map(|i| put(format!("/registry/pods/ns{}/pod-{i}", i % 100), &value()))
                    .collect();
                b.apply(&ops);
            }
        }
        let Bench {
            store, _dir: dir, ..
        } = b;
        drop(store);
        let name = if random { "random-keys" } else { "keys" };
        g.bench_function(BenchmarkId::new(name, KEYS), |bench| {
            bench.iter(|| {
                let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
                let kv = KvStore::open(engine, StoreConfig::default()).unwrap();
                assert_eq!(kv.current_revision(), 2 * KEYS as i64 + 1);
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_put,
    bench_range,
    bench_txn,
    bench_watch_fanout,
    watcher_memory,
    bench_open
);
criterion_main!(benches);
