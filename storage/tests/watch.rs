//! Watch semantics: live and replayed events, filters, prev_kv, progress,
//! compaction, cancel, and a stalled consumer among 10,000 watchers.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use ballast_storage::*;
use common::{put_req, s, Harness, Kind};
use tokio::sync::mpsc::Receiver;

/// Waits (bounded) for the next response.
fn next(rx: &mut Receiver<WatchResponse>) -> WatchResponse {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = rx.try_recv() {
            return r;
        }
        assert!(Instant::now() < deadline, "no watch response within 10s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Collects events until `n` have arrived (bounded), as (kind, key, value, rev).
fn events(rx: &mut Receiver<WatchResponse>, n: usize) -> Vec<(EventKind, String, String, i64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(rx);
        assert!(!r.canceled, "canceled: {}", r.cancel_reason);
        for e in r.events.iter() {
            out.push((e.kind, s(&e.kv.key), s(&e.kv.value), e.kv.mod_revision));
        }
    }
    assert_eq!(out.len(), n, "more events than expected");
    out
}

fn assert_quiet(rx: &mut Receiver<WatchResponse>) {
    std::thread::sleep(Duration::from_millis(150));
    assert!(rx.try_recv().is_err(), "unexpected response");
}

fn watch(key: &str, range_end: &str, start: i64) -> WatchRequest {
    WatchRequest {
        key: key.into(),
        range_end: range_end.into(),
        start_revision: start,
        ..Default::default()
    }
}

fn live_events(kind: Kind) {
    let mut h = Harness::new(kind);
    let (ws, mut rx) = h.store.watch_stream(16);
    let id = ws.watch(watch("foo", "", 0)).unwrap();
    let pid = ws.watch(watch("p/", "p0", 0)).unwrap();
    assert_ne!(id, pid);
    h.put("foo", "1");
    h.put("other", "x");
    h.put("p/a", "2");
    h.delete("foo", "");
    let mut got = vec![];
    while got.len() < 3 {
        let r = next(&mut rx);
        for e in r.events.iter() {
            got.push((r.watch_id, e.kind, s(&e.kv.key), e.kv.mod_revision));
        }
    }
    got.sort_by_key(|g| g.3);
    assert_eq!(
        got,
        vec![
            (id, EventKind::Put, "foo".into(), 1),
            (pid, EventKind::Put, "p/a".into(), 3),
            (id, EventKind::Delete, "foo".into(), 4),
        ]
    );
    assert_quiet(&mut rx);
    // Cancel stops delivery.
    assert!(ws.cancel(id));
    assert!(!ws.cancel(id));
    h.put("foo", "again");
    assert_quiet(&mut rx);
}

fn one_revision_arrives_whole(kind: Kind) {
    let mut h = Harness::new(kind);
    let (ws, mut rx) = h.store.watch_stream(16);
    ws.watch(watch("a", "z", 0)).unwrap();
    h.apply(WriteOp::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a1", "1")),
            RequestOp::Put(put_req("a2", "2")),
            RequestOp::Put(put_req("a3", "3")),
        ],
        ..Default::default()
    }));
    let r = next(&mut rx);
    assert_eq!(r.events.len(), 3);
    assert!(r.events.iter().all(|e| e.kv.mod_revision == 1));
    assert_eq!(r.revision, 1);
}

fn replay_from_the_past_then_live(kind: Kind) {
    let mut h = Harness::new(kind);
    for i in 1..=2500 {
        h.put(&format!("k{}", i % 7), &i.to_string());
    }
    let (ws, mut rx) = h.store.watch_stream(4);
    ws.watch(watch("k", "l", 10)).unwrap();
    // Writes keep coming while the watcher catches up from the engine.
    for i in 2501..=2600 {
        h.put(&format!("k{}", i % 7), &i.to_string());
    }
    let got = events(&mut rx, 2591);
    let revs: Vec<i64> = got.iter().map(|g| g.3).collect();
    assert_eq!(revs, (10..=2600).collect::<Vec<_>>(), "no gaps, no duplicates");
    assert_quiet(&mut rx);
    h.put("k1", "live");
    assert_eq!(events(&mut rx, 1)[0].2, "live");
}

fn prev_kv_and_filters(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("k", "old");
    let (ws, mut rx) = h.store.watch_stream(16);
    ws.watch(WatchRequest {
        prev_kv: true,
        ..watch("k", "", 0)
    })
    .unwrap();
    ws.watch(WatchRequest {
        no_put: true,
        ..watch("k", "", 0)
    })
    .unwrap();
    h.put("k", "new");
    h.delete("k", "");
    let mut seen = vec![];
    while seen.len() < 3 {
        let r = next(&mut rx);
        for e in r.events.iter() {
            seen.push((
                r.watch_id,
                e.kind,
                e.prev_kv.as_ref().map(|p| s(&p.value)),
            ));
        }
    }
    seen.sort_by_key(|x| (x.0, x.1 == EventKind::Delete));
    assert_eq!(
        seen,
        vec![
            (0, EventKind::Put, Some("old".into())),
            (0, EventKind::Delete, Some("new".into())),
            (1, EventKind::Delete, None),
        ]
    );
    // prev_kv also on replayed events.
    let (ws2, mut rx2) = h.store.watch_stream(16);
    ws2.watch(WatchRequest {
        prev_kv: true,
        ..watch("k", "", 2)
    })
    .unwrap();
    let r = next(&mut rx2);
    assert_eq!(s(&r.events[0].prev_kv.as_ref().unwrap().value), "old");
}

fn compacted_start_is_canceled(kind: Kind) {
    let mut h = Harness::new(kind);
    for i in 0..10 {
        h.put("k", &i.to_string());
    }
    h.apply(WriteOp::Compact { revision: 8 }).result.unwrap();
    let (ws, mut rx) = h.store.watch_stream(16);
    ws.watch(watch("k", "", 3)).unwrap();
    let r = next(&mut rx);
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 8);
    // From the compacted revision on is fine.
    ws.watch(watch("k", "", 8)).unwrap();
    let got = events(&mut rx, 3);
    assert_eq!(got[0].3, 8);
}

fn progress_and_ids(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "1");
    let (ws, mut rx) = h.store.watch_stream(16);
    assert_eq!(ws.watch(WatchRequest { watch_id: 7, ..watch("a", "", 0) }).unwrap(), 7);
    assert_eq!(
        ws.watch(WatchRequest { watch_id: 7, ..watch("b", "", 0) }),
        Err(StorageError::WatchIdExists { id: 7 })
    );
    assert_eq!(ws.watch(watch("", "", 0)), Err(StorageError::EmptyKey));
    ws.request_progress();
    let r = next(&mut rx);
    assert_eq!((r.watch_id, r.revision, r.events.len()), (ALL_WATCHERS, 1, 0));
    assert!(ws.notify_progress(7));
    assert_eq!(next(&mut rx).watch_id, 7);
    assert!(!ws.notify_progress(99));
    // Dropping the stream removes its watchers.
    drop(ws);
    assert_eq!(h.store.watcher_count(), 0);
}

/// 10,000 watchers on one prefix and one more whose consumer stops
/// reading: writes and the other watchers go on; the stalled one gets
/// every event, in order, once it reads again.
fn stalled_watcher_among_many(kind: Kind) {
    let mut h = Harness::new(kind);
    let (busy, mut busy_rx) = h.store.watch_stream(100_000);
    for _ in 0..10_000 {
        busy.watch(watch("w/", "w0", 0)).unwrap();
    }
    let (stalled, mut stalled_rx) = h.store.watch_stream(2);
    stalled.watch(watch("w/", "w0", 0)).unwrap();
    const WRITES: i64 = 200;
    let started = Instant::now();
    for i in 1..=WRITES {
        h.put(&format!("w/{}", i % 13), &i.to_string());
        // Drain the busy stream as we go, like a live client.
        while busy_rx.try_recv().is_ok() {}
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(h.store.current_revision(), WRITES);
    assert!(h.store.pending_watcher_count() >= 1, "the stalled watcher is parked");
    // The stalled consumer wakes up and reads everything.
    let got = events(&mut stalled_rx, WRITES as usize);
    let revs: Vec<i64> = got.iter().map(|g| g.3).collect();
    assert_eq!(revs, (1..=WRITES).collect::<Vec<_>>());
    assert_eq!(h.store.watcher_count(), 10_001);
    drop(busy);
    drop(stalled);
    assert_eq!(h.store.watcher_count(), 0);
}

fn watchers_survive_restore(kind: Kind) {
    let mut src = Harness::new(kind);
    for i in 0..5 {
        src.put("k", &i.to_string());
    }
    let mut image = Vec::new();
    snapshot::write_snapshot(&src.store, &mut image).unwrap();
    let mut dst = Harness::new(kind);
    dst.put("k", "a");
    let (ws, mut rx) = dst.store.watch_stream(16);
    ws.watch(watch("k", "", 0)).unwrap();
    dst.store.restore(&mut image.as_slice()).unwrap();
    // The watcher was at revision 2; the restored store's revisions 2..=5
    // are new history to it.
    let got = events(&mut rx, 4);
    assert_eq!(got.iter().map(|g| g.3).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    dst.next_index = 100;
    dst.put("k", "after");
    assert_eq!(events(&mut rx, 1)[0].2, "after");
}

both_engines!(
    live_events,
    one_revision_arrives_whole,
    replay_from_the_past_then_live,
    prev_kv_and_filters,
    compacted_start_is_canceled,
    progress_and_ids,
    stalled_watcher_among_many,
    watchers_survive_restore,
);
