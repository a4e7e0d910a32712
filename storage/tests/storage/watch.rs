//! Watch semantics: live and replayed events, filters, prev_kv, progress,
//! compaction, cancel, and a stalled consumer among 10,000 watchers.

use std::time::{Duration, Instant};

use crate::common::{put_req, s, Harness, Kind};
use ballast_storage::*;

/// Waits (bounded) for the next response.
fn next(rx: &mut WatchReceiver) -> WatchResponse {
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
fn events(rx: &mut WatchReceiver, n: usize) -> Vec<(EventKind, String, String, i64)> {
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

fn assert_quiet(rx: &mut WatchReceiver) {
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
            (id, EventKind::Put, "foo".into(), 2),
            (pid, EventKind::Put, "p/a".into(), 4),
            (id, EventKind::Delete, "foo".into(), 5),
        ]
    );
    assert_quiet(&mut rx);
    // Cancel stops delivery.
    assert!(ws.cancel(id));
    assert!(!ws.cancel(id));
    h.put("foo", "again");
    assert_quiet(&mut rx);
}

/// A watch from revision 1 (etcd's origin: before the first write) gets
/// every write, on a new store and replayed on one with history; a new
/// store reports progress at revision 1.
fn watch_from_revision_one(kind: Kind) {
    let mut h = Harness::new(kind);
    let (ws, mut rx) = h.store.watch_stream(16);
    ws.request_progress();
    let r = next(&mut rx);
    assert_eq!(
        (r.watch_id, r.revision, r.events.len()),
        (ALL_WATCHERS, 1, 0)
    );
    ws.watch(watch("k", "", 1)).unwrap();
    h.put("k", "1");
    h.put("k", "2");
    let want = vec![
        (EventKind::Put, "k".to_string(), "1".to_string(), 2),
        (EventKind::Put, "k".to_string(), "2".to_string(), 3),
    ];
    assert_eq!(events(&mut rx, 2), want);
    let (ws2, mut rx2) = h.store.watch_stream(16);
    ws2.watch(watch("k", "", 1)).unwrap();
    assert_eq!(events(&mut rx2, 2), want);
    assert_quiet(&mut rx2);
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
    assert!(r.events.iter().all(|e| e.kv.mod_revision == 2));
    assert_eq!(r.revision, 2);
}

fn replay_from_the_past_then_live(kind: Kind) {
    let mut h = Harness::new(kind);
    for i in 1..=2500 {
        h.put(&format!("k{}", i % 7), &i.to_string()); // revs 2..=2501
    }
    let (ws, mut rx) = h.store.watch_stream(4);
    ws.watch(watch("k", "l", 11)).unwrap();
    // Writes keep coming while the watcher catches up from the engine.
    for i in 2501..=2600 {
        h.put(&format!("k{}", i % 7), &i.to_string());
    }
    let got = events(&mut rx, 2591);
    let revs: Vec<i64> = got.iter().map(|g| g.3).collect();
    assert_eq!(
        revs,
        (11..=2601).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );
    assert_quiet(&mut rx);
    h.put("k1", "live");
    assert_eq!(events(&mut rx, 1)[0].2, "live");
}

fn prev_kv_and_filters(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("k", "old"); // 2
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
            seen.push((r.watch_id, e.kind, e.prev_kv.as_ref().map(|p| s(&p.value))));
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
        ..watch("k", "", 3)
    })
    .unwrap();
    let r = next(&mut rx2);
    assert_eq!(s(&r.events[0].prev_kv.as_ref().unwrap().value), "old");
}

fn compacted_start_is_canceled(kind: Kind) {
    let mut h = Harness::new(kind);
    for i in 0..10 {
        h.put("k", &i.to_string()); // revs 2..=11
    }
    h.apply(WriteOp::Compact { revision: 9 }).result.unwrap();
    let (ws, mut rx) = h.store.watch_stream(16);
    ws.watch(watch("k", "", 4)).unwrap();
    let r = next(&mut rx);
    assert!(r.canceled);
    assert_eq!(r.compact_revision, 9);
    // From the compacted revision on is fine.
    ws.watch(watch("k", "", 9)).unwrap();
    let got = events(&mut rx, 3);
    assert_eq!(got[0].3, 9);
}

/// A delete at the compacted revision is still replayed to a watcher from
/// there, also after a restart (found by the model test; etcd #18089): the
/// compaction used to drop the tombstone along with its generation.
fn delete_at_the_compacted_revision_is_replayed(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("k", "1"); // 2
    h.delete("k", ""); // 3
    h.put("k", "2"); // 4
                     // One txn puts "t" and a later nested txn deletes it: both at 6.
    h.put("t", "0"); // 5
    h.apply(WriteOp::Txn(TxnRequest {
        success: vec![
            RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::Put(put_req("t", "1"))],
                ..Default::default()
            }),
            RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: "t".into(),
                    ..Default::default()
                })],
                ..Default::default()
            }),
        ],
        ..Default::default()
    })); // 6
    for at in [3, 6] {
        h.apply(WriteOp::Compact { revision: at }).result.unwrap();
        h.store.wait_compaction();
    }
    let replay = |h: &Harness, key: &str, from: i64, n: usize| {
        let (ws, mut rx) = h.store.watch_stream(16);
        ws.watch(watch(key, "", from)).unwrap();
        let got: Vec<_> = events(&mut rx, n)
            .into_iter()
            .map(|e| (e.0, e.2, e.3))
            .collect();
        assert_quiet(&mut rx);
        got
    };
    use EventKind::*;
    let t_events = vec![(Put, "1".to_string(), 6), (Delete, String::new(), 6)];
    assert_eq!(replay(&h, "t", 6, 2), t_events);
    let hash = h.store.hash_kv(0).unwrap();
    h.reopen();
    assert_eq!(h.store.hash_kv(0).unwrap(), hash);
    assert_eq!(replay(&h, "t", 6, 2), t_events);
    assert!(h.get("t").is_none());
    // Compacting past the revision forgets it.
    h.put("x", "1"); // 7
    h.apply(WriteOp::Compact { revision: 7 }).result.unwrap();
    h.store.wait_compaction();
    assert_eq!(h.store.key_count(), 2, "k and x only");
}

/// The same for a lone delete: after compacting exactly at it, the
/// tombstone is all that is left of the key, on disk and after a restart.
fn lone_tombstone_at_the_compacted_revision(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("k", "1"); // 2
    h.delete("k", ""); // 3
    h.put("k", "2"); // 4
    h.apply(WriteOp::Compact { revision: 3 }).result.unwrap();
    h.store.wait_compaction();
    let from_3 = |h: &Harness| {
        let (ws, mut rx) = h.store.watch_stream(16);
        ws.watch(watch("k", "", 3)).unwrap();
        events(&mut rx, 2)
            .into_iter()
            .map(|e| (e.0, e.3))
            .collect::<Vec<_>>()
    };
    let want = vec![(EventKind::Delete, 3), (EventKind::Put, 4)];
    assert_eq!(from_3(&h), want);
    h.reopen();
    assert_eq!(from_3(&h), want);
}

/// A watcher whose next revision is compacted away while its stream is
/// full gets its cancelation once the client reads again (found by the
/// model test: the cancelation was dropped and the stream went quiet).
fn cancelation_waits_for_a_full_stream(kind: Kind) {
    let mut h = Harness::new(kind);
    let (ws, mut rx) = h.store.watch_stream(1);
    ws.watch(watch("k", "", 0)).unwrap();
    for i in 1..=4 {
        h.put("k", &i.to_string()); // revs 2..=5
    }
    // Revision 2 fills the stream, 3 is parked, 4 and 5 are compacted
    // away before the watcher gets to them.
    h.apply(WriteOp::Compact { revision: 5 }).result.unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let revs: Vec<i64> = events(&mut rx, 2).iter().map(|e| e.3).collect();
    assert_eq!(revs, vec![2, 3]);
    let r = next(&mut rx);
    assert!(r.canceled, "{r:?}");
    assert_eq!(r.compact_revision, 5);
    assert_eq!(h.store.watcher_count(), 0);
}

/// Restoring a snapshot while watchers catch up from the engine (found by
/// the model test): none may skip events or be canceled; the catch-up used
/// to read the half-restored engine.
fn restore_while_catching_up(kind: Kind) {
    let mut h = Harness::new(kind);
    const REVS: i64 = 3000;
    for chunk in (1..=REVS).collect::<Vec<_>>().chunks(500) {
        let ops: Vec<WriteOp> = chunk
            .iter()
            .map(|i| WriteOp::Put(put_req(&format!("k{}", i % 7), &i.to_string())))
            .collect();
        h.apply_batch(&ops);
    }
    let mut image = Vec::new();
    snapshot::write_snapshot(&h.store, &mut image).unwrap();
    let (ws, mut rx) = h.store.watch_stream(1 << 20);
    const WATCHERS: usize = 8;
    // From the first write (revision 2; the store starts at 1).
    for _ in 0..WATCHERS {
        ws.watch(watch("k", "l", 2)).unwrap();
    }
    for _ in 0..5 {
        h.store.restore(&mut std::io::Cursor::new(&image)).unwrap();
    }
    let mut got: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < WATCHERS * REVS as usize {
        assert!(Instant::now() < deadline, "watchers did not catch up");
        match rx.try_recv() {
            Ok(r) => {
                assert!(!r.canceled, "canceled: {r:?}");
                let revs = got.entry(r.watch_id).or_default();
                revs.extend(r.events.iter().map(|e| e.kv.mod_revision));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    for revs in got.values() {
        assert_eq!(
            *revs,
            (2..=REVS + 1).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
    }
}

fn progress_and_ids(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "1");
    let (ws, mut rx) = h.store.watch_stream(16);
    assert_eq!(
        ws.watch(WatchRequest {
            watch_id: 7,
            ..watch("a", "", 0)
        })
        .unwrap(),
        7
    );
    assert_eq!(
        ws.watch(WatchRequest {
            watch_id: 7,
            ..watch("b", "", 0)
        }),
        Err(StorageError::WatchIdExists { id: 7 })
    );
    assert_eq!(ws.watch(watch("", "", 0)), Err(StorageError::EmptyKey));
    ws.request_progress();
    let r = next(&mut rx);
    assert_eq!(
        (r.watch_id, r.revision, r.events.len()),
        (ALL_WATCHERS, 2, 0)
    );
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
    assert_eq!(h.store.current_revision(), WRITES + 1);
    assert!(
        h.store.pending_watcher_count() >= 1,
        "the stalled watcher is parked"
    );
    // The stalled consumer wakes up and reads everything.
    let got = events(&mut stalled_rx, WRITES as usize);
    let revs: Vec<i64> = got.iter().map(|g| g.3).collect();
    assert_eq!(revs, (2..=WRITES + 1).collect::<Vec<_>>());
    assert_eq!(h.store.watcher_count(), 10_001);
    drop(busy);
    drop(stalled);
    assert_eq!(h.store.watcher_count(), 0);
}

fn watchers_survive_restore(kind: Kind) {
    let mut src = Harness::new(kind);
    for i in 0..5 {
        src.put("k", &i.to_string()); // revs 2..=6
    }
    let mut image = Vec::new();
    snapshot::write_snapshot(&src.store, &mut image).unwrap();
    let mut dst = Harness::new(kind);
    dst.put("k", "a"); // 2
    let (ws, mut rx) = dst.store.watch_stream(16);
    ws.watch(watch("k", "", 0)).unwrap();
    dst.store
        .restore(&mut std::io::Cursor::new(&image))
        .unwrap();
    // The watcher was at revision 3; the restored store's revisions 3..=6
    // are new history to it.
    let got = events(&mut rx, 4);
    assert_eq!(
        got.iter().map(|g| g.3).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    dst.next_index = 100;
    dst.put("k", "after");
    assert_eq!(events(&mut rx, 1)[0].2, "after");
}

/// A stream that stops reading holds at most [`STREAM_QUEUE_BYTES`] (plus
/// one response) however much is written; catch-up responses stay near
/// their byte bound; once read again, every event arrives once, in order.
fn stream_queue_is_bounded_in_bytes(kind: Kind) {
    let mut h = Harness::new(kind);
    const VALUE: usize = 256 << 10;
    const WRITES: i64 = 64; // 16 MiB in all, 4× the queue's bound
    let (live, mut live_rx) = h.store.watch_stream(1 << 20);
    live.watch(watch("big/", "big0", 0)).unwrap();
    let value = "v".repeat(VALUE);
    for i in 1..=WRITES {
        h.put(&format!("big/{}", i % 5), &value);
        let queued = live_rx.queued_bytes();
        assert!(
            queued <= STREAM_QUEUE_BYTES + VALUE + 1024,
            "{queued} bytes queued after {i} writes"
        );
    }
    assert!(
        h.store.pending_watcher_count() >= 1,
        "the watcher is parked"
    );
    // A watcher from the start is caught up in responses of about 1 MiB.
    let (past, mut past_rx) = h.store.watch_stream(1 << 20);
    past.watch(watch("big/", "big0", 1)).unwrap();
    for (rx, name) in [(&mut live_rx, "live"), (&mut past_rx, "catch-up")] {
        let mut revs = Vec::new();
        while revs.len() < WRITES as usize {
            let r = next(rx);
            assert!(!r.canceled, "{name}: canceled: {}", r.cancel_reason);
            let bytes: usize = r.events.iter().map(Event::size).sum();
            assert!(
                bytes <= (1 << 20) + VALUE + 1024,
                "{name}: a {bytes}-byte response"
            );
            revs.extend(r.events.iter().map(|e| e.kv.mod_revision));
        }
        assert_eq!(revs, (2..=WRITES + 1).collect::<Vec<_>>(), "{name}");
        assert_eq!(rx.queued_bytes(), 0, "{name}: everything received");
    }
}

both_engines!(
    live_events,
    watch_from_revision_one,
    one_revision_arrives_whole,
    replay_from_the_past_then_live,
    prev_kv_and_filters,
    compacted_start_is_canceled,
    delete_at_the_compacted_revision_is_replayed,
    lone_tombstone_at_the_compacted_revision,
    cancelation_waits_for_a_full_stream,
    restore_while_catching_up,
    progress_and_ids,
    stalled_watcher_among_many,
    stream_queue_is_bounded_in_bytes,
    watchers_survive_restore,
);
