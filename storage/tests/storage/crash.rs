//! Crash test: a writer process (this test binary, run again) applies
//! batches of log entries to a RocksDB store, syncs it every few batches (a
//! raft checkpoint) and prints every applied index it synced; the test
//! SIGKILLs it at a random moment, reopens the store and checks that nothing
//! synced was lost and that the data agrees with the applied index exactly
//! (unsynced writes are lost as a whole prefix or not at all: raft replays
//! them) — then lets a new writer resume from there, a few times over.
//!
//! The log is a fixed function of the index (see [`entry`]): entry `i` puts
//! key `k{i % KEYS}`, except every `COMPACT_EVERY`th, which compacts. So the
//! state after any applied index is known without asking the writer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_storage::*;
use rand::Rng;

const WRITER_ENV: &str = "BALLAST_CRASH_WRITER_DIR";
/// The test as the harness names it in this binary (module path included).
const TEST_NAME: &str = "crash::killed_writer_loses_nothing_synced";
const KEYS: u64 = 97;
const COMPACT_EVERY: u64 = 1000;
const ROUNDS: usize = 4;

/// Puts applied by entries `1..=index`: the store's revision after `index`.
/// The store's revision after log entry `index`: a new store is at 1 (as
/// etcd), and every entry but a compaction is one more.
fn revision_at(index: u64) -> i64 {
    1 + (index - index / COMPACT_EVERY) as i64
}

fn value(index: u64) -> Vec<u8> {
    let mut v = format!("v{index}-").into_bytes();
    v.resize(100, b'x');
    v
}

/// Log entry `index` (from 1).
#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than our rust-version
fn entry(index: u64) -> WriteOp {
    if index % COMPACT_EVERY == 0 {
        WriteOp::Compact {
            revision: revision_at(index - 1) - 500,
        }
    } else {
        WriteOp::Put(PutRequest {
            key: format!("k{}", index % KEYS).into_bytes(),
            value: value(index),
            ..Default::default()
        })
    }
}

fn open(dir: &Path) -> KvStore {
    let engine = Arc::new(RocksEngine::open(dir).expect("open rocks"));
    KvStore::open(engine, StoreConfig::default()).expect("open store")
}

/// Batches applied between two syncs.
const SYNC_EVERY: u64 = 8;

/// The child: applies entries from the store's applied index on, in
/// batches of varying size, syncing every [`SYNC_EVERY`] batches and then
/// printing `ack <index> <revision>`.
fn writer(dir: &Path) {
    let store = WatchableStore::new(open(dir));
    let mut next = store.applied_index() + 1;
    let stdout = std::io::stdout();
    let deadline = Instant::now() + Duration::from_secs(60);
    for batch in 1.. {
        if Instant::now() > deadline {
            break;
        }
        let size = 1 + next % 50;
        let ops: Vec<WriteOp> = (next..next + size).map(entry).collect();
        let entries: Vec<(u64, &WriteOp)> = (next..).zip(&ops).collect();
        let applied = store.apply(&entries);
        for a in &applied {
            assert!(a.result.is_ok(), "entry failed: {a:?}");
        }
        next += size;
        if batch % SYNC_EVERY != 0 {
            continue;
        }
        store.sync().expect("sync");
        let mut out = stdout.lock();
        writeln!(
            out,
            "ack {} {}",
            store.applied_index(),
            store.current_revision()
        )
        .unwrap();
        out.flush().unwrap();
    }
}

/// What the store must hold after `applied`: each key's latest version,
/// the compacted revision, and every key at revision `at`.
struct Expected {
    latest: BTreeMap<Vec<u8>, KeyValue>,
    at: BTreeMap<Vec<u8>, KeyValue>,
    compacted: i64,
}

fn expected(applied: u64, at: i64) -> Expected {
    let mut latest: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut at_rev = BTreeMap::new();
    let mut compacted = NEVER_COMPACTED;
    let mut rev = 1;
    for index in 1..=applied {
        match entry(index) {
            WriteOp::Compact { revision } => compacted = revision,
            WriteOp::Put(p) => {
                rev += 1;
                let prev = latest.get(&p.key);
                let kv = KeyValue {
                    key: p.key.clone(),
                    create_revision: prev.map_or(rev, |kv| kv.create_revision),
                    mod_revision: rev,
                    version: prev.map_or(1, |kv| kv.version + 1),
                    value: p.value,
                    lease: 0,
                };
                latest.insert(p.key, kv);
            }
            other => unreachable!("{other:?}"),
        }
        if rev == at {
            at_rev = latest.clone();
        }
    }
    Expected {
        latest,
        at: at_rev,
        compacted,
    }
}

fn all_keys(revision: i64) -> RangeRequest {
    RangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        revision,
        ..Default::default()
    }
}

/// Reopens after a kill and checks the store against the log; returns its applied index.
fn check(dir: &Path, synced: u64) -> u64 {
    let store = open(dir);
    let applied = store.applied_index();
    assert!(
        applied >= synced,
        "synced index {synced} lost: store reopened at {applied}"
    );
    let current = store.current_revision();
    assert_eq!(
        current,
        revision_at(applied),
        "revision after index {applied}"
    );
    let at = rand::rng().random_range(store.compacted_revision().max(1)..=current);
    let want = expected(applied, at);
    assert_eq!(store.compacted_revision(), want.compacted);
    let kvs = |rev| -> BTreeMap<Vec<u8>, KeyValue> {
        let r = store.range(&all_keys(rev)).expect("range");
        r.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect()
    };
    assert!(kvs(0) == want.latest, "latest state after index {applied}");
    assert!(
        kvs(at) == want.at,
        "state at revision {at} after index {applied}"
    );
    if want.compacted > 1 {
        assert!(matches!(
            store.range(&all_keys(want.compacted - 1)),
            Err(StorageError::Compacted { .. })
        ));
    }
    // HashKV is the same after another restart, whatever physical
    // compaction had got to.
    let hash = store.hash_kv(0).expect("hash_kv");
    drop(store);
    let store = open(dir);
    assert_eq!(
        store.hash_kv(0).expect("hash_kv"),
        hash,
        "HashKV across a restart"
    );
    store.wait_compaction();
    assert_eq!(
        store.hash_kv(0).expect("hash_kv"),
        hash,
        "HashKV after compaction"
    );
    applied
}

#[test]
fn killed_writer_loses_nothing_synced() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        return writer(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut applied = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer");
        let last_ack = Arc::new(Mutex::new(None::<(u64, i64)>));
        let reader = {
            let last_ack = last_ack.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut parts = line
                        .strip_prefix("ack ")
                        .into_iter()
                        .flat_map(str::split_whitespace);
                    if let (Some(index), Some(rev)) = (parts.next(), parts.next()) {
                        *last_ack.lock().unwrap() =
                            Some((index.parse().unwrap(), rev.parse().unwrap()));
                    }
                }
            })
        };
        // Kill a random while after the writer's first acknowledgement.
        let started = Instant::now();
        while last_ack.lock().unwrap().is_none() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the writer exited early"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the writer never acknowledged"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(20..600)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer exited before the kill"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let (acked, acked_rev) = last_ack.lock().unwrap().expect("acknowledged");
        assert!(acked > applied, "round {round}: no progress");
        assert_eq!(acked_rev, revision_at(acked));
        applied = check(&dir, acked);
        eprintln!("round {round}: acknowledged {acked}, reopened at {applied}");
    }
}
