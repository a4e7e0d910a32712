//! The store's correctness suite: etcd's KV semantics, rule by rule, on
//! both engines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{put_req, s, Harness, Kind};
use ballast_storage::engine::Cf;
use ballast_storage::*;

fn revisions_and_versions(kind: Kind) {
    let mut h = Harness::new(kind);
    // Like etcd, a new store is at revision 1: the first write is 2.
    assert_eq!(h.store.current_revision(), 1);
    assert_eq!(h.put("foo", "a"), 2);
    assert_eq!(h.put("foo", "b"), 3);
    assert_eq!(h.put("bar", "x"), 4);
    let kv = h.get("foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(s(&kv.value), "b");
    // A delete ends the generation; the next put starts a new one.
    let d = h.delete("foo", "");
    assert_eq!(d.deleted, 1);
    assert_eq!(s(&d.prev_kvs[0].value), "b");
    assert_eq!(h.store.current_revision(), 5);
    assert!(h.get("foo").is_none());
    assert_eq!(h.put("foo", "c"), 6);
    let kv = h.get("foo").unwrap();
    assert_eq!((kv.create_revision, kv.version), (6, 1));
    // Reads at past revisions see the past.
    assert_eq!(s(&h.get_at("foo", 2).unwrap().unwrap().value), "a");
    assert!(h.get_at("foo", 5).unwrap().is_none());
    assert_eq!(h.get_at("foo", 3).unwrap().unwrap().version, 2);
    assert_eq!(
        h.get_at("foo", 99),
        Err(StorageError::FutureRevision { current: 6 })
    );
}

/// etcd's origin: a new store is at revision 1 with nothing compacted
/// (-1), before and after a restart or a restore of an empty image; reads
/// at 1 answer empty, `Compact(0)` and then `Compact(1)` succeed.
fn new_store_is_at_revision_one(kind: Kind) {
    let mut h = Harness::new(kind);
    assert_eq!(
        (h.store.current_revision(), h.store.compacted_revision()),
        (1, NEVER_COMPACTED)
    );
    assert_eq!(h.get_at("k", 1), Ok(None));
    assert_eq!(
        h.get_at("k", 2),
        Err(StorageError::FutureRevision { current: 1 })
    );
    let (hash, compacted, rev) = h.store.hash_kv(0).unwrap();
    assert_eq!((compacted, rev), (NEVER_COMPACTED, 1));
    assert_eq!(h.store.hash_kv(1), Ok((hash, NEVER_COMPACTED, 1)));
    assert_eq!(
        h.store.hash_kv(2),
        Err(StorageError::FutureRevision { current: 1 })
    );
    h.reopen();
    assert_eq!(
        (h.store.current_revision(), h.store.compacted_revision()),
        (1, NEVER_COMPACTED)
    );
    // An empty image restores to the same origin.
    let mut empty = Vec::new();
    snapshot::write_snapshot(&h.store, &mut empty).unwrap();
    let mut other = Harness::new(kind);
    other.put("x", "1");
    other
        .apply(WriteOp::Compact { revision: 2 })
        .result
        .unwrap();
    other
        .store
        .restore(&mut std::io::Cursor::new(&empty))
        .unwrap();
    assert_eq!(
        (
            other.store.current_revision(),
            other.store.compacted_revision()
        ),
        (1, NEVER_COMPACTED)
    );
    assert!(other.get("x").is_none());
    // Compactions on the new store, as etcd answers them.
    assert_eq!(
        h.apply(WriteOp::Compact { revision: -1 }).result,
        Err(StorageError::AlreadyCompacted {
            compacted: NEVER_COMPACTED
        })
    );
    h.apply(WriteOp::Compact { revision: 0 }).result.unwrap();
    assert_eq!(h.store.compacted_revision(), 0);
    assert_eq!(
        h.apply(WriteOp::Compact { revision: 0 }).result,
        Err(StorageError::AlreadyCompacted { compacted: 0 })
    );
    assert_eq!(
        h.apply(WriteOp::Compact { revision: 2 }).result,
        Err(StorageError::FutureRevision { current: 1 })
    );
    h.apply(WriteOp::Compact { revision: 1 }).result.unwrap();
    assert_eq!(h.store.current_revision(), 1, "compaction is no revision");
    assert_eq!(h.get_at("k", 1), Ok(None));
    h.reopen();
    assert_eq!(h.store.compacted_revision(), 1);
    assert_eq!(h.store.hash_kv(0), Ok((hash, 1, 1)));
    // The first write is revision 2.
    assert_eq!(h.put("k", "v"), 2);
    assert_eq!(h.get_at("k", 1), Ok(None));
}

fn no_revision_for_noops(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "1");
    // Deleting nothing, a read-only txn, a lease grant: no new revision.
    assert_eq!(h.delete("zzz", "").deleted, 0);
    let a = h.apply(WriteOp::Txn(TxnRequest {
        success: vec![RequestOp::Range(RangeRequest {
            key: "a".into(),
            ..Default::default()
        })],
        ..Default::default()
    }));
    assert_eq!(a.revision, 2);
    h.grant(5, 60);
    h.apply(WriteOp::Noop);
    assert_eq!(h.store.current_revision(), 2);
    assert_eq!(h.store.applied_index(), 5);
}

fn ranges(kind: Kind) {
    let mut h = Harness::new(kind);
    for k in ["a", "b", "b1", "b2", "c", "d"] {
        h.put(k, &format!("v-{k}"));
    }
    assert_eq!(h.keys("b", "c"), ["b", "b1", "b2"]);
    assert_eq!(h.keys("b", "\0"), ["b", "b1", "b2", "c", "d"]);
    assert_eq!(h.keys("\0", "\0").len(), 6);
    assert_eq!(h.keys("b", ""), ["b"]);
    assert!(h.keys("zz", "").is_empty());
    // Limit: `more` and the full count; the count needs no values.
    let r = h
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
    assert_eq!(r.count, 6);
    let r = h
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            limit: 6,
            ..Default::default()
        })
        .unwrap();
    assert!(!r.more);
    let r = h
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "z".into(),
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.count, r.kvs.len()), (6, 0));
    let r = h
        .store
        .range(&RangeRequest {
            key: "a".into(),
            range_end: "c".into(),
            keys_only: true,
            ..Default::default()
        })
        .unwrap();
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.mod_revision > 0));
    // Bad input.
    let err = |key: &str, end: &str| {
        h.store
            .range(&RangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })
            .unwrap_err()
    };
    assert_eq!(err("", ""), StorageError::EmptyKey);
    assert_eq!(err("b", "a"), StorageError::InvalidRange);
}

fn sorting_and_filters(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "3"); // rev 2
    h.put("b", "1"); // rev 3
    h.put("c", "2"); // rev 4
    h.put("a", "4"); // rev 5: a has version 2
    let sorted = |order, target, limit| {
        h.store
            .range(&RangeRequest {
                key: "a".into(),
                range_end: "z".into(),
                sort_order: order,
                sort_target: target,
                limit,
                ..Default::default()
            })
            .unwrap()
            .kvs
            .iter()
            .map(|kv| s(&kv.key))
            .collect::<Vec<_>>()
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(Descend, Key, 0), ["c", "b", "a"]);
    assert_eq!(sorted(Descend, Key, 2), ["c", "b"]);
    assert_eq!(sorted(Ascend, Value, 0), ["b", "c", "a"]);
    assert_eq!(sorted(Descend, Value, 1), ["a"]);
    assert_eq!(sorted(Descend, Mod, 0), ["a", "c", "b"]);
    assert_eq!(sorted(Ascend, Create, 0), ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Version, 1), ["a"]);
    // A target without an order ascends (etcd).
    assert_eq!(sorted(None, Mod, 0), ["b", "c", "a"]);
    let filtered = |min_mod, max_mod, min_create, max_create| {
        let r = h
            .store
            .range(&RangeRequest {
                key: "a".into(),
                range_end: "z".into(),
                min_mod_revision: min_mod,
                max_mod_revision: max_mod,
                min_create_revision: min_create,
                max_create_revision: max_create,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.count, 3, "count is taken before filters");
        r.kvs.iter().map(|kv| s(&kv.key)).collect::<Vec<_>>()
    };
    assert_eq!(filtered(4, 0, 0, 0), ["a", "c"]);
    assert_eq!(filtered(0, 4, 0, 0), ["b", "c"]);
    assert_eq!(filtered(0, 0, 3, 0), ["b", "c"]);
    assert_eq!(filtered(0, 0, 0, 2), ["a"]);
}

fn put_options(kind: Kind) {
    let mut h = Harness::new(kind);
    let lease = h.grant(0, 100);
    assert!(lease > 0);
    h.put_lease("k", "v1", lease).unwrap();
    // prev_kv
    let r = h.apply(WriteOp::Put(PutRequest {
        prev_kv: true,
        ..put_req("k", "v2")
    }));
    match r.result.unwrap() {
        WriteResult::Put(p) => assert_eq!(s(&p.prev_kv.unwrap().value), "v1"),
        other => panic!("{other:?}"),
    }
    // The plain put above detached the lease (lease 0, no ignore_lease).
    assert_eq!(h.get("k").unwrap().lease, 0);
    h.put_lease("k", "v3", lease).unwrap();
    // ignore_value keeps the value, ignore_lease keeps the lease.
    h.apply(WriteOp::Put(PutRequest {
        key: "k".into(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    }))
    .result
    .unwrap();
    let kv = h.get("k").unwrap();
    assert_eq!(
        (s(&kv.value).as_str(), kv.lease, kv.version),
        ("v3", lease, 4)
    );
    // Errors.
    let err = |h: &mut Harness, p: PutRequest| h.apply(WriteOp::Put(p)).result.unwrap_err();
    assert_eq!(
        err(
            &mut h,
            PutRequest {
                key: "nope".into(),
                ignore_value: true,
                ..Default::default()
            }
        ),
        StorageError::KeyNotFound
    );
    assert_eq!(
        err(
            &mut h,
            PutRequest {
                ignore_value: true,
                ..put_req("k", "x")
            }
        ),
        StorageError::ValueProvided
    );
    assert_eq!(
        err(
            &mut h,
            PutRequest {
                lease: 424242,
                ..put_req("k", "x")
            }
        ),
        StorageError::LeaseNotFound { id: 424242 }
    );
    assert_eq!(err(&mut h, put_req("", "x")), StorageError::EmptyKey);
    let rev = h.store.current_revision();
    let big = "x".repeat(h.config.max_value_size + 1);
    assert!(matches!(
        err(&mut h, put_req("big", &big)),
        StorageError::ValueTooLarge { .. }
    ));
    assert_eq!(h.store.current_revision(), rev, "errors change nothing");
    assert!(h.get("big").is_none());
}

fn txn_compares(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "1"); // 2
    h.put("b", "2"); // 3
    h.put("a", "3"); // 4
    let cmp = |key: &str, result, target| Compare {
        key: key.into(),
        range_end: vec![],
        result,
        target,
    };
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (cmp("a", Equal, Version(2)), true),
        (cmp("a", Greater, Version(1)), true),
        (cmp("a", Less, Version(2)), false),
        (cmp("a", NotEqual, Create(2)), false),
        (cmp("a", Equal, Mod(4)), true),
        (cmp("a", Equal, Value(b"3".to_vec())), true),
        (cmp("a", Greater, Value(b"2".to_vec())), true),
        (cmp("a", Equal, Lease(0)), true),
        // A missing key compares as a zero key-value, except on value.
        (cmp("missing", Equal, Version(0)), true),
        (cmp("missing", Equal, Create(0)), true),
        (cmp("missing", Equal, Value(vec![])), false),
        // Over a range, every key must pass.
        (
            Compare {
                key: "a".into(),
                range_end: "c".into(),
                result: Greater,
                target: Mod(0),
            },
            true,
        ),
        (
            Compare {
                key: "a".into(),
                range_end: "c".into(),
                result: Equal,
                target: Version(1),
            },
            false,
        ),
    ];
    for (c, expect) in cases {
        let a = h.apply(WriteOp::Txn(TxnRequest {
            compare: vec![c.clone()],
            success: vec![],
            failure: vec![],
        }));
        match a.result.unwrap() {
            WriteResult::Txn(t) => assert_eq!(t.succeeded, expect, "{c:?}"),
            other => panic!("{other:?}"),
        }
    }
}

fn txn_branches_and_nesting(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("x", "0"); // rev 2
    let txn = TxnRequest {
        compare: vec![Compare {
            key: "x".into(),
            range_end: vec![],
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"0".to_vec()),
        }],
        success: vec![
            RequestOp::Put(put_req("x", "1")),
            RequestOp::Put(put_req("y", "1")),
            // Reads inside a txn see its own writes.
            RequestOp::Range(RangeRequest {
                key: "y".into(),
                ..Default::default()
            }),
            RequestOp::Txn(TxnRequest {
                // Nested compares see the state before the outer txn.
                compare: vec![Compare {
                    key: "x".into(),
                    range_end: vec![],
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(b"0".to_vec()),
                }],
                success: vec![RequestOp::Put(put_req("z", "nested"))],
                failure: vec![],
            }),
        ],
        failure: vec![RequestOp::Put(put_req("failed", "1"))],
    };
    let a = h.apply(WriteOp::Txn(txn.clone()));
    assert_eq!(a.revision, 3, "one revision for the whole txn");
    let WriteResult::Txn(t) = a.result.unwrap() else {
        panic!()
    };
    assert!(t.succeeded);
    match &t.responses[2] {
        ResponseOp::Range(r) => assert_eq!(s(&r.kvs[0].value), "1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s(&h.get("z").unwrap().value), "nested");
    for k in ["x", "y", "z"] {
        assert_eq!(h.get(k).unwrap().mod_revision, 3);
    }
    // Now x = 1: the failure branch runs.
    let a = h.apply(WriteOp::Txn(txn));
    let WriteResult::Txn(t) = a.result.unwrap() else {
        panic!()
    };
    assert!(!t.succeeded);
    assert!(h.get("failed").is_some());
}

fn txn_rejects_bad_shapes(kind: Kind) {
    let mut h = Harness::new(kind);
    let rev0 = h.put("k", "v");
    let bad = |h: &mut Harness, txn: TxnRequest| h.apply(WriteOp::Txn(txn)).result.unwrap_err();
    // A key written twice.
    let dup = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("a", "2")),
        ],
        ..Default::default()
    };
    assert_eq!(bad(&mut h, dup), StorageError::DuplicateKey);
    // A put inside a deleted range.
    let overlap = TxnRequest {
        failure: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "c".into(),
                prev_kv: false,
            }),
            RequestOp::Put(put_req("b", "2")),
        ],
        ..Default::default()
    };
    assert_eq!(bad(&mut h, overlap), StorageError::DuplicateKey);
    // A nested txn putting the outer branch's key.
    let nested = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Txn(TxnRequest {
                failure: vec![RequestOp::Put(put_req("a", "2"))],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(bad(&mut h, nested), StorageError::DuplicateKey);
    // Too many ops.
    let many = TxnRequest {
        success: (0..h.config.max_txn_ops + 1)
            .map(|i| RequestOp::Put(put_req(&format!("k{i}"), "v")))
            .collect(),
        ..Default::default()
    };
    assert!(matches!(bad(&mut h, many), StorageError::TooManyOps { .. }));
    // A put with an unknown lease on the chosen path: nothing applied.
    let partial = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("p1", "1")),
            RequestOp::Put(PutRequest {
                lease: 77,
                ..put_req("p2", "2")
            }),
        ],
        ..Default::default()
    };
    assert_eq!(bad(&mut h, partial), StorageError::LeaseNotFound { id: 77 });
    assert!(h.get("p1").is_none());
    assert_eq!(h.store.current_revision(), rev0);
    // The same key in success and failure is fine: only one runs.
    let ok = TxnRequest {
        success: vec![RequestOp::Put(put_req("a", "1"))],
        failure: vec![RequestOp::Put(put_req("a", "2"))],
        ..Default::default()
    };
    h.apply(WriteOp::Txn(ok)).result.unwrap();
}

/// etcd's duplicate-key rule (found by the model test: the store was
/// stricter). The two branches of a nested txn are exclusive, and a later
/// nested txn may delete what an earlier one put, in the same revision.
fn txn_duplicate_key_rule_is_etcds(kind: Kind) {
    let mut h = Harness::new(kind);
    let txn = |success| {
        WriteOp::Txn(TxnRequest {
            success,
            ..Default::default()
        })
    };
    let nested = |success, failure| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    };
    let del = |key: &str, end: &str| {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
        })
    };
    let put = |k: &str, v: &str| RequestOp::Put(put_req(k, v));
    h.put("e", "0"); // 2
                     // Then deletes [e, g); else (not run) puts e through one more level.
    let a = h.apply(txn(vec![nested(
        vec![del("e", "g")],
        vec![nested(vec![put("e", "x")], vec![])],
    )]));
    a.result.unwrap();
    assert_eq!(a.revision, 3);
    assert!(h.get("e").is_none());
    // A put, then a later nested txn deleting the key: one revision.
    h.put("k", "old"); // 4
    let a = h.apply(txn(vec![
        nested(vec![put("k", "new")], vec![]),
        nested(vec![del("k", "")], vec![]),
    ]));
    assert_eq!(a.revision, 5);
    let WriteResult::Txn(t) = a.result.unwrap() else {
        panic!()
    };
    let ResponseOp::Txn(second) = &t.responses[1] else {
        panic!()
    };
    let ResponseOp::DeleteRange(d) = &second.responses[0] else {
        panic!()
    };
    assert_eq!((d.deleted, s(&d.prev_kvs[0].value).as_str()), (1, "new"));
    assert!(h.get("k").is_none());
    assert_eq!(s(&h.get_at("k", 4).unwrap().unwrap().value), "old");
    // The other way round is refused: a delete, then a later nested put.
    let dup = |h: &mut Harness, ops| h.apply(txn(ops)).result;
    assert_eq!(
        dup(
            &mut h,
            vec![
                nested(vec![del("a", "z")], vec![]),
                nested(vec![put("b", "1")], vec![])
            ]
        ),
        Err(StorageError::DuplicateKey)
    );
    // So is a put of this level inside a range a nested txn deletes.
    assert_eq!(
        dup(
            &mut h,
            vec![put("b", "1"), nested(vec![del("a", "c")], vec![])]
        ),
        Err(StorageError::DuplicateKey)
    );
    // And the same key put by both branches of two nested txns.
    assert_eq!(
        dup(
            &mut h,
            vec![
                nested(vec![put("b", "1")], vec![]),
                nested(vec![], vec![put("b", "2")])
            ]
        ),
        Err(StorageError::DuplicateKey)
    );
    assert_eq!(h.store.current_revision(), 5);
    h.reopen();
    assert!(h.get("k").is_none());
    assert_eq!(h.get_at("k", 4).unwrap().unwrap().version, 1);
}

/// etcd's order of txn checks (found by the model test): every request of
/// both branches, at any depth, is checked first (even one that never
/// runs), then the duplicate-key rule; then, on the chosen path, every put
/// before every range.
fn txn_checks_in_etcds_order(kind: Kind) {
    let mut h = Harness::new(kind);
    h.put("a", "1"); // 2
    let empty_delete = RequestOp::DeleteRange(DeleteRangeRequest::default());
    let never = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            failure: vec![empty_delete],
            ..Default::default()
        })],
        ..Default::default()
    };
    assert_eq!(
        h.apply(WriteOp::Txn(never)).result,
        Err(StorageError::EmptyKey)
    );
    let dup_then_empty = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("a", "2")),
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare {
                    key: vec![],
                    range_end: vec![],
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(0),
                }],
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert_eq!(
        h.apply(WriteOp::Txn(dup_then_empty)).result,
        Err(StorageError::EmptyKey)
    );
    let future_read_then_bad_lease = TxnRequest {
        success: vec![
            RequestOp::Range(RangeRequest {
                key: "a".into(),
                revision: 99,
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                lease: 77,
                ..put_req("b", "1")
            }),
        ],
        ..Default::default()
    };
    assert_eq!(
        h.apply(WriteOp::Txn(future_read_then_bad_lease)).result,
        Err(StorageError::LeaseNotFound { id: 77 })
    );
    assert_eq!(h.store.current_revision(), 2);
}

fn compaction(kind: Kind) {
    let mut h = Harness::with_config(
        kind,
        StoreConfig {
            compaction_batch: 3,
            ..Default::default()
        },
    );
    for i in 1..=10 {
        h.put("k", &format!("v{i}")); // revs 2..=11
    }
    h.put("gone", "x"); // 12
    h.delete("gone", ""); // 13
    h.put("k2", "y"); // 14
    h.apply(WriteOp::Compact { revision: 13 }).result.unwrap();
    h.store.wait_compaction();
    assert_eq!(h.store.compacted_revision(), 13);
    assert_eq!(
        h.get_at("k", 6),
        Err(StorageError::Compacted { compacted: 13 })
    );
    // At the compacted revision itself reads still work.
    assert_eq!(s(&h.get_at("k", 13).unwrap().unwrap().value), "v10");
    assert!(h.get_at("gone", 13).unwrap().is_none());
    assert_eq!(h.get("k").unwrap().version, 10);
    // Compacting again at or below is an error; in the future too.
    assert_eq!(
        h.apply(WriteOp::Compact { revision: 13 }).result,
        Err(StorageError::AlreadyCompacted { compacted: 13 })
    );
    assert!(matches!(
        h.apply(WriteOp::Compact { revision: 99 }).result,
        Err(StorageError::FutureRevision { .. })
    ));
    // The compacted revision and the data survive a restart.
    let hash = h.store.hash_kv(0).unwrap();
    h.reopen();
    assert_eq!(h.store.compacted_revision(), 13);
    assert_eq!(h.get("k").unwrap().version, 10);
    assert_eq!(h.get("k").unwrap().create_revision, 2);
    assert_eq!(s(&h.get("k2").unwrap().value), "y");
    assert!(h.get("gone").is_none());
    assert_eq!(h.store.hash_kv(0).unwrap(), hash);
    assert_eq!(h.store.current_revision(), 14);
}

fn hash_kv_ignores_physical_compaction(kind: Kind) {
    let mut a = Harness::new(kind);
    let mut b = Harness::with_config(
        kind,
        StoreConfig {
            compaction_batch: 1,
            compaction_pause: Duration::from_millis(50),
            ..Default::default()
        },
    );
    for h in [&mut a, &mut b] {
        for i in 0..20 {
            h.put(&format!("k{}", i % 4), &format!("{i}"));
        }
        h.apply(WriteOp::Compact { revision: 16 }).result.unwrap();
    }
    a.store.wait_compaction();
    // b is still deleting, slowly; HashKV must already agree.
    assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    assert_eq!(a.store.hash_kv(18).unwrap(), b.store.hash_kv(18).unwrap());
    assert_ne!(
        a.store.hash_kv(18).unwrap().0,
        a.store.hash_kv(19).unwrap().0
    );
    assert!(matches!(
        a.store.hash_kv(4),
        Err(StorageError::Compacted { .. })
    ));
    b.store.wait_compaction();
    assert_eq!(a.store.hash().unwrap(), b.store.hash().unwrap());
}

fn leases(kind: Kind) {
    let mut h = Harness::new(kind);
    let id = h.grant(0, 30);
    assert_eq!(
        h.apply(WriteOp::LeaseGrant { id, ttl: 30 }).result,
        Err(StorageError::LeaseExists { id })
    );
    assert_eq!(
        h.apply(WriteOp::LeaseGrant {
            id: 9,
            ttl: MAX_LEASE_TTL + 1
        })
        .result,
        Err(StorageError::LeaseTtlTooLarge {
            ttl: MAX_LEASE_TTL + 1
        })
    );
    let mine = h.grant(1234, 5);
    assert_eq!(mine, 1234);
    h.put_lease("a", "1", id).unwrap();
    h.put_lease("b", "2", id).unwrap();
    h.put_lease("c", "3", mine).unwrap();
    h.put("d", "4");
    // A key put again without the lease, or deleted, leaves it.
    h.put_lease("e", "5", id).unwrap();
    h.put("e", "6");
    h.put_lease("f", "7", id).unwrap();
    h.delete("f", "");
    let now = Instant::now();
    let st = h.store.lease_status(id, now, true).unwrap();
    assert_eq!(st.keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(h.store.leases(), {
        let mut v = vec![id, 1234];
        v.sort();
        v
    });
    // Only the primary tracks deadlines.
    assert!(h
        .store
        .expired_leases(now + Duration::from_secs(3600))
        .is_empty());
    h.store.lease_promote(now);
    assert_eq!(
        h.store.expired_leases(now + Duration::from_secs(6)),
        vec![1234]
    );
    assert_eq!(
        h.store.lease_renew(1234, now + Duration::from_secs(4)),
        Ok(5)
    );
    assert!(h
        .store
        .expired_leases(now + Duration::from_secs(6))
        .is_empty());
    assert_eq!(
        h.store.lease_renew(999, now),
        Err(StorageError::LeaseNotFound { id: 999 })
    );
    // Leases and attachments survive a restart.
    h.reopen();
    assert_eq!(h.store.lease_status(id, now, true).unwrap().keys.len(), 2);
    // Revoke deletes every attached key in one revision.
    let before = h.store.current_revision();
    let a = h.apply(WriteOp::LeaseRevoke { id });
    a.result.unwrap();
    assert_eq!(a.revision, before + 1);
    assert!(h.get("a").is_none() && h.get("b").is_none());
    assert!(h.get("c").is_some() && h.get("d").is_some());
    assert_eq!(h.get_at("a", before).unwrap().unwrap().lease, id);
    assert_eq!(
        h.apply(WriteOp::LeaseRevoke { id }).result,
        Err(StorageError::LeaseNotFound { id })
    );
    // A deleted key leaves its lease.
    h.delete("c", "");
    assert!(h
        .store
        .lease_status(mine, now, true)
        .unwrap()
        .keys
        .is_empty());
}

fn applied_index_is_idempotent(kind: Kind) {
    let mut h = Harness::new(kind);
    let op = WriteOp::Put(put_req("k", "v"));
    let first = h.store.apply(&[(5, &op)]);
    assert_eq!(first[0].revision, 2);
    assert_eq!(h.store.applied_index(), 5);
    // Replaying indexes at or below the applied one changes nothing.
    let again = h.store.apply(&[(3, &op), (5, &op)]);
    assert!(again.iter().all(|a| a.result == Ok(WriteResult::Skipped)));
    assert_eq!(h.store.current_revision(), 2);
    h.next_index = 6;
    h.reopen();
    assert_eq!(h.store.applied_index(), 5);
    assert_eq!(
        h.store.apply(&[(5, &op)])[0].result,
        Ok(WriteResult::Skipped)
    );
    assert_eq!(h.get("k").unwrap().version, 1);

    // A restored backup follows a new log: its applied index starts over,
    // its data and revisions stay, and it survives a restart.
    h.store.reset_applied_index(0).unwrap();
    h.reopen();
    assert_eq!(h.store.applied_index(), 0);
    let after = h.store.apply(&[(2, &op)]);
    assert_eq!(after[0].revision, 3);
    assert_eq!(h.get("k").unwrap().version, 2);
}

fn batches_are_one_write(kind: Kind) {
    let mut h = Harness::new(kind);
    let ops: Vec<WriteOp> = (0..100)
        .map(|i| WriteOp::Put(put_req(&format!("k{:03}", i % 10), &format!("{i}"))))
        .collect();
    let applied = h.apply_batch(&ops);
    assert_eq!(applied.len(), 100);
    for (i, a) in applied.iter().enumerate() {
        assert_eq!(a.revision, i as i64 + 2);
    }
    assert_eq!(h.get("k003").unwrap().version, 10);
    assert_eq!(s(&h.get("k003").unwrap().value), "93");
    h.reopen();
    assert_eq!(h.store.current_revision(), 101);
    assert_eq!(h.store.applied_index(), 100);
}

fn snapshot_round_trip(kind: Kind) {
    let mut src = Harness::new(kind);
    let lease = src.grant(0, 60);
    for i in 0..50 {
        src.put(&format!("key{i}"), &format!("value{i}"));
    }
    src.put_lease("leased", "x", lease).unwrap();
    src.delete("key1", "");
    src.apply(WriteOp::Compact { revision: 21 }).result.unwrap();
    let mut image = Vec::new();
    let (_, applied) = snapshot::write_snapshot(&src.store, &mut image).unwrap();
    assert_eq!(applied, src.store.applied_index());

    let mut dst = Harness::new(kind);
    dst.put("stale", "data");
    // A corrupt image is refused and changes nothing.
    let mut bad = image.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    assert!(matches!(
        dst.store.restore(&mut std::io::Cursor::new(&bad)),
        Err(StorageError::CorruptSnapshot(_))
    ));
    assert!(dst.get("stale").is_some());
    dst.store
        .restore(&mut std::io::Cursor::new(&image))
        .unwrap();
    assert!(dst.get("stale").is_none());
    assert_eq!(dst.store.current_revision(), src.store.current_revision());
    assert_eq!(dst.store.applied_index(), src.store.applied_index());
    assert_eq!(dst.store.compacted_revision(), 21);
    assert_eq!(dst.store.hash_kv(0).unwrap(), src.store.hash_kv(0).unwrap());
    assert_eq!(
        dst.store
            .lease_status(lease, Instant::now(), true)
            .unwrap()
            .keys,
        vec![b"leased".to_vec()]
    );
}

fn engine_size_and_defragment(kind: Kind) {
    let mut h = Harness::new(kind);
    for i in 0..200 {
        h.put(&format!("k{i}"), &"v".repeat(100));
    }
    h.store.defragment().unwrap();
    assert!(h.store.size_bytes() > 0);
}

/// Every `kv` record has its head in `head` (the record up to its value),
/// and nothing else is there.
fn assert_heads_mirror_records(engine: &dyn KvEngine) {
    let mut records = Vec::new();
    engine
        .scan(Cf::Kv, &[], None, &mut |k, v| {
            records.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    let mut heads = Vec::new();
    engine
        .scan(Cf::Head, &[], None, &mut |k, v| {
            heads.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    assert!(!records.is_empty());
    assert_eq!(heads.len(), records.len());
    for ((hk, head), (rk, record)) in heads.iter().zip(&records) {
        assert_eq!(hk, rk);
        assert_eq!(&record[..head.len()], head.as_slice());
    }
}

/// A store opened over `engine` must not read a single value: only heads.
struct NoValueScans(Arc<dyn KvEngine>);

impl engine::ReadView for NoValueScans {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(cf, key)
    }
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut engine::ScanFn<'_>,
    ) -> Result<()> {
        assert_ne!(cf, Cf::Kv, "opening the store scanned the values");
        self.0.scan(cf, start, end, f)
    }
}

impl KvEngine for NoValueScans {
    fn write(&self, batch: engine::WriteBatch) -> Result<()> {
        self.0.write(batch)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
    fn snapshot(&self) -> Box<dyn engine::ReadView + '_> {
        self.0.snapshot()
    }
    fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }
    fn defragment(&self) -> Result<()> {
        self.0.defragment()
    }
    fn clear(&self) -> Result<()> {
        self.0.clear()
    }
}

fn start_up_reads_heads_not_values(kind: Kind) {
    let mut h = Harness::with_config(
        kind,
        StoreConfig {
            compaction_batch: 7,
            ..Default::default()
        },
    );
    let lease = h.grant(0, 60);
    for i in 0..40 {
        h.put(&format!("k{i:02}"), &"v".repeat(i * 10));
    }
    for i in 0..10 {
        h.put_lease(&format!("k{i:02}"), "leased", lease).unwrap();
    }
    h.delete("k30", "k35");
    h.put("k31", "again");
    let at = h.store.current_revision();
    h.put("k00", "after the compaction point");
    h.apply(WriteOp::Compact { revision: at }).result.unwrap();
    h.store.wait_compaction();
    // Physical compaction removed records and their heads together.
    assert_heads_mirror_records(&*h.engine);

    let expect = |h: &Harness| {
        (
            h.store.hash_kv(0).unwrap(),
            h.keys("k", "l"),
            h.get("k31").unwrap(),
            h.store
                .lease_status(lease, Instant::now(), true)
                .unwrap()
                .keys,
        )
    };
    let before = expect(&h);
    assert_eq!(before.3.len(), 9, "k00 was put again without the lease");

    // Opening reads heads only, and rebuilds the same index and leases.
    let opened = KvStore::open(Arc::new(NoValueScans(h.engine.clone())), h.config.clone());
    assert_eq!(
        opened.unwrap().current_revision(),
        h.store.current_revision()
    );
    h.reopen();
    assert_eq!(expect(&h), before);

    // A store written before heads existed gets them at its first open.
    let mut strip = engine::WriteBatch::default();
    h.engine
        .scan(Cf::Head, &[], None, &mut |k, _| {
            strip.delete(Cf::Head, k);
            true
        })
        .unwrap();
    strip.delete(Cf::Meta, b"heads");
    h.engine.write(strip).unwrap();
    h.reopen();
    assert_heads_mirror_records(&*h.engine);
    assert_eq!(expect(&h), before);
    h.put("k99", "new");
    assert_heads_mirror_records(&*h.engine);

    // An installed image (which carries no heads) gets them too.
    let mut image = Vec::new();
    snapshot::write_snapshot(&h.store, &mut image).unwrap();
    let dst = Harness::new(kind);
    dst.store
        .restore(&mut std::io::Cursor::new(&image))
        .unwrap();
    assert_heads_mirror_records(&*dst.engine);
    assert_eq!(dst.store.hash_kv(0).unwrap(), h.store.hash_kv(0).unwrap());
    let reopened = KvStore::open(Arc::new(NoValueScans(dst.engine.clone())), h.config.clone());
    assert_eq!(
        reopened.unwrap().current_revision(),
        h.store.current_revision()
    );
}

both_engines!(
    new_store_is_at_revision_one,
    revisions_and_versions,
    no_revision_for_noops,
    ranges,
    sorting_and_filters,
    put_options,
    txn_compares,
    txn_branches_and_nesting,
    txn_rejects_bad_shapes,
    txn_duplicate_key_rule_is_etcds,
    txn_checks_in_etcds_order,
    compaction,
    hash_kv_ignores_physical_compaction,
    leases,
    applied_index_is_idempotent,
    batches_are_one_write,
    snapshot_round_trip,
    engine_size_and_defragment,
    start_up_reads_heads_not_values,
);
