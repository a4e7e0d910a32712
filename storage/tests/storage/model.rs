//! Property test: random histories of writes (puts, deletes, nested txns,
//! compactions, leases), reads, watchers and restarts, run against the store
//! and against a plain model of etcd's semantics that keeps every revision's
//! full state in a `Vec`. Everything observable is compared: each response
//! and error, the header revision of each write, the current and compacted
//! revisions, the applied index, leases and their keys, every revision's
//! state, HashKV stability, and each watcher's stream of events (order, no
//! gaps, no duplicates, prev_kv).
//!
//! Six keys, four values and three lease ids keep operations colliding.
//! The model follows etcd (v3.5/3.6 `apply.go`, `v3rpc/key.go`, `mvcc`),
//! from etcd's origin: a new store is at revision 1 (the first write is
//! revision 2) and its compacted revision is -1 (so `Compact(0)` succeeds
//! once). Where etcd has no rule or a quirk, the store's documented choices:
//! - `range_end` `"\0"` is "to the end" in the duplicate-key rule too
//!   (etcd's interval check treats it as an empty interval);
//! - a put's stateful checks report a missing key before a missing lease;
//! - limits apply after sorting, whatever the sort order.
//!
//! Bugs this found are kept as plain tests in `store.rs` and `watch.rs`.
//! `BALLAST_MODEL_CASES=n` runs n cases per engine instead of the default.

use crate::common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{Harness, Kind};
use ballast_storage::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type Key = Vec<u8>;
/// `(key, range_end)`.
type Span = (Key, Key);
type Outcome<T = ()> = std::result::Result<T, TestCaseError>;

// ---------------------------------------------------------------------------
// The model.

/// One version of a key, with its sub revision (the tie-break of a sort by
/// mod revision between keys written by one txn).
#[derive(Debug, Clone)]
struct Version {
    kv: KeyValue,
    sub: i64,
}

type State = BTreeMap<Key, Version>;

fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

fn check_range_args(key: &[u8], range_end: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if !range_end.is_empty() && range_end != [0] && range_end < key {
        return Err(StorageError::InvalidRange);
    }
    Ok(())
}

/// etcd's `checkPutRequest`: what is wrong with a put whatever the state.
fn check_put_static(p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StorageError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StorageError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: every op of both branches, recursively.
fn check_txn_static(t: &TxnRequest) -> Result<()> {
    for c in &t.compare {
        check_range_args(&c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range_args(&r.key, &r.range_end)?,
            RequestOp::Put(p) => check_put_static(p)?,
            RequestOp::DeleteRange(d) => check_range_args(&d.key, &d.range_end)?,
            RequestOp::Txn(n) => check_txn_static(n)?,
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`: the keys a list of ops puts and the ranges it
/// deletes, or `DuplicateKey`. Deletes of this level and of earlier nested
/// txns forbid later puts; the two branches of one nested txn may put the
/// same key (only one runs).
fn intervals(ops: &[RequestOp]) -> Result<(Vec<Key>, Vec<Span>)> {
    let mut dels: Vec<Span> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some((d.key.clone(), d.range_end.clone())),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Span], k: &[u8]| dels.iter().any(|(s, e)| in_range(k, s, e));
    let mut puts: Vec<Key> = Vec::new();
    for op in ops {
        let RequestOp::Txn(n) = op else { continue };
        let (then_puts, then_dels) = intervals(&n.success)?;
        let (else_puts, else_dels) = intervals(&n.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StorageError::DuplicateKey);
            }
            puts.push(k.clone());
        }
        for k in &else_puts {
            if (puts.contains(k) && !then_puts.contains(k)) || deleted(&dels, k) {
                return Err(StorageError::DuplicateKey);
            }
            if !puts.contains(k) {
                puts.push(k.clone());
            }
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(StorageError::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

fn compare_holds(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// etcd's range over one state: count before filters, filters, sort (a
/// target without an order ascends), limit with `more`, keys_only.
fn range_in(state: &State, r: &RangeRequest) -> RangeResponse {
    let mut found: Vec<&Version> = state
        .iter()
        .filter(|(k, _)| in_range(k, &r.key, &r.range_end))
        .map(|(_, v)| v)
        .collect();
    let count = found.len() as i64;
    if r.count_only {
        return RangeResponse {
            kvs: vec![],
            more: false,
            count,
        };
    }
    found.retain(|v| {
        let kv = &v.kv;
        (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
    });
    let sort = match (r.sort_order, r.sort_target) {
        (SortOrder::None | SortOrder::Ascend, SortTarget::Key) => None,
        (order, target) => Some((order == SortOrder::Descend, target)),
    };
    if let Some((descend, target)) = sort {
        found.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.kv.key.cmp(&b.kv.key),
                SortTarget::Version => a.kv.version.cmp(&b.kv.version),
                SortTarget::Create => a.kv.create_revision.cmp(&b.kv.create_revision),
                SortTarget::Mod => (a.kv.mod_revision, a.sub).cmp(&(b.kv.mod_revision, b.sub)),
                SortTarget::Value => a.kv.value.cmp(&b.kv.value),
            };
            if descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    let more = r.limit > 0 && found.len() > r.limit as usize;
    if r.limit > 0 {
        found.truncate(r.limit as usize);
    }
    let kvs = found
        .into_iter()
        .map(|v| KeyValue {
            value: if r.keys_only {
                vec![]
            } else {
                v.kv.value.clone()
            },
            ..v.kv.clone()
        })
        .collect();
    RangeResponse { kvs, more, count }
}

/// A write transaction in progress on the model.
struct Tx {
    state: State,
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl Tx {
    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let prev = self.state.get(&p.key).map(|v| v.kv.clone());
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.main, |kv| kv.create_revision),
            mod_revision: self.main,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value: match &prev {
                Some(prev) if p.ignore_value => prev.value.clone(),
                _ => p.value.clone(),
            },
            lease: match &prev {
                Some(prev) if p.ignore_lease => prev.lease,
                _ => p.lease,
            },
        };
        self.state.insert(
            p.key.clone(),
            Version {
                kv: kv.clone(),
                sub: self.sub,
            },
        );
        self.sub += 1;
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: None,
        });
        PutResponse {
            prev_kv: prev.filter(|_| p.prev_kv),
        }
    }

    fn delete_key(&mut self, key: &[u8]) -> KeyValue {
        let prev = self.state.remove(key).expect("deleting a live key");
        self.sub += 1;
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                mod_revision: self.main,
                ..Default::default()
            },
            prev_kv: None,
        });
        prev.kv
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys: Vec<Key> = self
            .state
            .keys()
            .filter(|k| in_range(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        let mut resp = DeleteRangeResponse {
            deleted: keys.len() as i64,
            prev_kvs: vec![],
        };
        for k in keys {
            let prev = self.delete_key(&k);
            if d.prev_kv {
                resp.prev_kvs.push(prev);
            }
        }
        resp
    }
}

#[derive(Default)]
struct Model {
    /// `states[r]`: every live key after revision `r`. Like etcd, a new
    /// store is at revision 1 (`states[0]` and `states[1]` are empty), so
    /// the first write is revision 2.
    states: Vec<State>,
    /// `events[r]`: the changes revision `r` made, in sub-revision order.
    events: Vec<Vec<Event>>,
    /// -1 until the first compaction (etcd's `compactMainRev`), so that
    /// `Compact(0)` succeeds once.
    compacted: i64,
    /// Every revision ever compacted to.
    compactions: Vec<i64>,
    /// Lease id → granted TTL.
    leases: BTreeMap<i64, i64>,
    applied: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![State::new(), State::new()],
            events: vec![vec![], vec![]],
            compacted: NEVER_COMPACTED,
            ..Default::default()
        }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn state(&self) -> &State {
        self.states.last().expect("revision 1 exists")
    }

    fn begin(&self) -> Tx {
        Tx {
            state: self.state().clone(),
            main: self.current() + 1,
            sub: 0,
            events: vec![],
        }
    }

    fn commit(&mut self, tx: Tx) {
        if tx.sub > 0 {
            self.states.push(tx.state);
            self.events.push(tx.events);
        }
    }

    fn lease_keys(&self, id: i64) -> Vec<Key> {
        self.state()
            .iter()
            .filter(|(_, v)| v.kv.lease == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        check_range_args(&r.key, &r.range_end)?;
        let current = self.current();
        let at = match r.revision {
            rev if rev <= 0 => current,
            rev if rev > current => return Err(StorageError::FutureRevision { current }),
            rev if rev < self.compacted => {
                return Err(StorageError::Compacted {
                    compacted: self.compacted,
                })
            }
            rev => rev,
        };
        Ok(range_in(&self.states[at as usize], r))
    }

    /// Applies one log entry. `store` is the store's outcome, consulted only
    /// for the lease id a grant of id 0 lets the store choose.
    fn apply(&mut self, index: u64, op: &WriteOp, store: &Applied) -> Applied {
        self.applied = index;
        let result = match op {
            WriteOp::Noop => Ok(WriteResult::Noop),
            WriteOp::Put(p) => self.put(p),
            WriteOp::DeleteRange(d) => self.delete_range(d),
            WriteOp::Txn(t) => self.txn(t).map(WriteResult::Txn),
            WriteOp::Compact { revision } => self.compact(*revision),
            WriteOp::LeaseGrant { id, ttl } => self.grant(*id, *ttl, store),
            WriteOp::LeaseRevoke { id } => self.revoke(*id),
        };
        Applied {
            revision: self.current(),
            result,
        }
    }

    /// etcd's `checkRequestPut`, against the state before the write.
    fn check_put_state(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && !self.state().contains_key(&p.key) {
            return Err(StorageError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(StorageError::LeaseNotFound { id: p.lease });
        }
        Ok(())
    }

    fn put(&mut self, p: &PutRequest) -> Result<WriteResult> {
        check_put_static(p)?;
        self.check_put_state(p)?;
        let mut tx = self.begin();
        let resp = tx.put(p);
        self.commit(tx);
        Ok(WriteResult::Put(resp))
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<WriteResult> {
        check_range_args(&d.key, &d.range_end)?;
        let mut tx = self.begin();
        let resp = tx.delete_range(d);
        self.commit(tx);
        Ok(WriteResult::DeleteRange(resp))
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .state()
            .iter()
            .filter(|(k, _)| in_range(k, &c.key, &c.range_end))
            .map(|(_, v)| &v.kv)
            .collect();
        if kvs.is_empty() {
            // A missing key compares as a zero key-value, except on value.
            return !matches!(c.target, CompareTarget::Value(_))
                && compare_holds(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_holds(c, kv))
    }

    /// etcd's `txnPath`: each txn's outcome on the chosen path, in preorder,
    /// all decided on the state before the txn.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c));
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(n) = op {
                self.txn_path(n, path);
            }
        }
    }

    /// The non-txn ops on the chosen path, in order.
    fn path_ops<'t>(
        t: &'t TxnRequest,
        path: &[bool],
        pos: &mut usize,
        out: &mut Vec<&'t RequestOp>,
    ) {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Txn(n) => Self::path_ops(n, path, pos, out),
                other => out.push(other),
            }
        }
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse> {
        check_txn_static(t)?;
        intervals(&t.success)?;
        intervals(&t.failure)?;
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        let mut ops = Vec::new();
        Self::path_ops(t, &path, &mut 0, &mut ops);
        // etcd checks every put on the path, then every range.
        for op in &ops {
            if let RequestOp::Put(p) = op {
                self.check_put_state(p)?;
            }
        }
        let current = self.current();
        for op in &ops {
            if let RequestOp::Range(r) = op {
                if r.revision > current {
                    return Err(StorageError::FutureRevision { current });
                }
                if r.revision > 0 && r.revision < self.compacted {
                    return Err(StorageError::Compacted {
                        compacted: self.compacted,
                    });
                }
            }
        }
        let mut tx = self.begin();
        let resp = self.run_txn(&mut tx, t, &path, &mut 0);
        self.commit(tx);
        Ok(resp)
    }

    fn run_txn(&self, tx: &mut Tx, t: &TxnRequest, path: &[bool], pos: &mut usize) -> TxnResponse {
        let ok = path[*pos];
        *pos += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(if r.revision > 0 {
                    range_in(&self.states[r.revision as usize], r)
                } else {
                    // Reads inside a txn see its own writes.
                    range_in(&tx.state, r)
                }),
                RequestOp::Put(p) => ResponseOp::Put(tx.put(p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(tx.delete_range(d)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.run_txn(tx, n, path, pos)),
            });
        }
        TxnResponse {
            succeeded: ok,
            responses,
        }
    }

    fn compact(&mut self, at: i64) -> Result<WriteResult> {
        let current = self.current();
        if at > current {
            return Err(StorageError::FutureRevision { current });
        }
        if at <= self.compacted {
            return Err(StorageError::AlreadyCompacted {
                compacted: self.compacted,
            });
        }
        self.compacted = at;
        self.compactions.push(at);
        Ok(WriteResult::Compact)
    }

    fn grant(&mut self, id: i64, ttl: i64, store: &Applied) -> Result<WriteResult> {
        if ttl > MAX_LEASE_TTL {
            return Err(StorageError::LeaseTtlTooLarge { ttl });
        }
        let id = match id {
            0 => match store.result {
                Ok(WriteResult::LeaseGrant { id, .. })
                    if id > 0 && !self.leases.contains_key(&id) =>
                {
                    id
                }
                _ => {
                    return Err(StorageError::Corrupt(
                        "model: no fresh lease id chosen".into(),
                    ))
                }
            },
            id if id < 0 => return Err(StorageError::InvalidLeaseId { id }),
            id if self.leases.contains_key(&id) => return Err(StorageError::LeaseExists { id }),
            id => id,
        };
        self.leases.insert(id, ttl);
        Ok(WriteResult::LeaseGrant { id, ttl })
    }

    fn revoke(&mut self, id: i64) -> Result<WriteResult> {
        if self.leases.remove(&id).is_none() {
            return Err(StorageError::LeaseNotFound { id });
        }
        let mut tx = self.begin();
        for key in self.lease_keys(id) {
            tx.delete_key(&key);
        }
        self.commit(tx);
        Ok(WriteResult::LeaseRevoke)
    }

    /// What a watcher of `req` sees from revision `from` to now.
    fn watch_events(&self, req: &WatchRequest, from: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for rev in from.max(1)..=self.current() {
            for ev in &self.events[rev as usize] {
                if !in_range(&ev.kv.key, &req.key, &req.range_end)
                    || (req.no_put && ev.kind == EventKind::Put)
                    || (req.no_delete && ev.kind == EventKind::Delete)
                {
                    continue;
                }
                let mut ev = ev.clone();
                if req.prev_kv {
                    ev.prev_kv = self.states[rev as usize - 1]
                        .get(&ev.kv.key)
                        .map(|v| v.kv.clone());
                }
                out.push(ev);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Generated histories. Revision-like numbers are drawn raw and mapped onto
// the store's history when the step runs (see `at`), so they hit the live
// window, the compacted past and the future alike.

#[derive(Debug, Clone)]
enum Start {
    /// From the next write.
    Next,
    /// Exactly the compacted revision.
    Compacted,
    /// Between the compacted revision and two past the current one.
    Around(i64),
    /// Below the compacted revision: canceled.
    Below(i64),
}

#[derive(Debug, Clone)]
struct WatchSpec {
    key: Key,
    range_end: Key,
    start: Start,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Responses the stream buffers; small ones park the watcher as a victim.
    capacity: usize,
    /// Wait until every watcher is caught up before going on.
    settle: bool,
}

#[derive(Debug, Clone)]
enum Step {
    /// One batch of log entries, applied as one engine write.
    Write(Vec<WriteOp>),
    Read(RangeRequest),
    Watch(WatchSpec),
    /// Re-delivers an already applied index: it must be skipped.
    Replay(u64),
    /// Records HashKV now; it must not change while the compaction doesn't.
    Hash,
    Reopen,
    /// Restores the store from its own snapshot: nothing may change, and
    /// every watcher catches up again without gaps or duplicates.
    Restore,
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![60 => (0..6u8).prop_map(|i| vec![b'a' + i]), 1 => Just(vec![])]
}

/// A key, a range to a later letter, or everything from the key on.
fn span() -> impl Strategy<Value = Span> {
    (key(), 0..8u8).prop_map(|(key, e)| {
        let end = match (e, key.first()) {
            (0..=2, _) => vec![],
            (3, _) => vec![0],
            (n, Some(&k)) => vec![k + n - 3],
            (_, None) => b"c".to_vec(),
        };
        (key, end)
    })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec!["", "x", "y", "z"]).prop_map(|v| v.as_bytes().to_vec())
}

/// A lease to attach: none mostly; 1..=3 are granted by id, sometimes.
fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![5 => Just(0i64), 2 => 1..4i64]
}

/// A raw revision: 0 ("current") or a number mapped by `at`.
fn raw_rev() -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0i64), 1 => 1..1000i64]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        lease(),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease, misuse)| PutRequest {
                key,
                value: if ignore_value && !misuse {
                    vec![]
                } else {
                    value
                },
                lease: if ignore_lease && !misuse { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (span(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn filter() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0i64), 1 => 1..1000i64]
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    let sort = (
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]),
        prop::sample::select(vec![
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ]),
    );
    (
        span(),
        raw_rev(),
        prop_oneof![3 => Just(0i64), 2 => 1..4i64],
        sort,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        (filter(), filter(), filter(), filter()),
    )
        .prop_map(
            |(
                (key, range_end),
                revision,
                limit,
                (sort_order, sort_target),
                keys_only,
                count_only,
                f,
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    min_mod_revision: f.0,
                    max_mod_revision: f.1,
                    min_create_revision: f.2,
                    max_create_revision: f.3,
                }
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0..4i64).prop_map(CompareTarget::Version),
        raw_rev().prop_map(CompareTarget::Create),
        raw_rev().prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
        (0..4i64).prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ]);
    (span(), result, target).prop_map(|((key, range_end), result, target)| Compare {
        key,
        range_end,
        result,
        target,
    })
}

fn request_op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        3 => range_req().prop_map(RequestOp::Range),
        4 => put_req().prop_map(RequestOp::Put),
        2 => delete_req().prop_map(RequestOp::DeleteRange),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![9 => leaf, 2 => txn(depth - 1).prop_map(RequestOp::Txn)].boxed()
    }
}

fn txn(depth: u32) -> BoxedStrategy<TxnRequest> {
    let op = request_op(depth);
    (vec(compare(), 0..3), vec(op.clone(), 0..4), vec(op, 0..3))
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    let grant = (
        prop_oneof![2 => Just(0i64), 6 => 1..4i64, 1 => Just(-1i64)],
        prop_oneof![9 => Just(30i64), 1 => Just(MAX_LEASE_TTL + 1)],
    )
        .prop_map(|(id, ttl)| WriteOp::LeaseGrant { id, ttl });
    prop_oneof![
        8 => put_req().prop_map(WriteOp::Put),
        3 => delete_req().prop_map(WriteOp::DeleteRange),
        6 => txn(2).prop_map(WriteOp::Txn),
        1 => (1..1000i64).prop_map(|revision| WriteOp::Compact { revision }),
        2 => grant,
        1 => (1..5i64).prop_map(|id| WriteOp::LeaseRevoke { id }),
        1 => Just(WriteOp::Noop),
    ]
}

fn watch_spec() -> impl Strategy<Value = WatchSpec> {
    let start = prop_oneof![
        2 => Just(Start::Next),
        2 => Just(Start::Compacted),
        4 => (0..1000i64).prop_map(Start::Around),
        1 => (0..1000i64).prop_map(Start::Below),
    ];
    (
        span(),
        start,
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::sample::select(vec![1usize, 2, 1000]),
        any::<bool>(),
    )
        .prop_map(
            |((key, range_end), start, prev_kv, no_put, no_delete, capacity, settle)| WatchSpec {
                key,
                range_end,
                start,
                prev_kv,
                no_put,
                no_delete,
                capacity,
                settle,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => vec(write_op(), 1..4).prop_map(Step::Write),
        8 => range_req().prop_map(Step::Read),
        2 => watch_spec().prop_map(Step::Watch),
        1 => any::<u64>().prop_map(Step::Replay),
        1 => Just(Step::Hash),
        1 => Just(Step::Reopen),
        1 => Just(Step::Restore),
    ]
}

/// Maps a raw revision onto `1..=current + 1` (0 stays 0).
fn at(raw: i64, current: i64) -> i64 {
    if raw <= 0 {
        0
    } else {
        1 + (raw - 1) % (current + 1)
    }
}

fn fix_range(r: &mut RangeRequest, current: i64) {
    for rev in [
        &mut r.revision,
        &mut r.min_mod_revision,
        &mut r.max_mod_revision,
        &mut r.min_create_revision,
        &mut r.max_create_revision,
    ] {
        *rev = at(*rev, current);
    }
}

fn fix_txn(t: &mut TxnRequest, current: i64) {
    for c in &mut t.compare {
        if let CompareTarget::Create(v) | CompareTarget::Mod(v) = &mut c.target {
            *v = at(*v, current);
        }
    }
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match op {
            RequestOp::Range(r) => fix_range(r, current),
            RequestOp::Txn(n) => fix_txn(n, current),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
        }
    }
}

fn fix_op(op: &mut WriteOp, m: &Model) {
    let current = m.current();
    match op {
        WriteOp::Txn(t) => fix_txn(t, current),
        // From the compacted revision (refused) to one past the current (refused).
        WriteOp::Compact { revision } => {
            *revision = m.compacted + *revision % (current - m.compacted + 2);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Running a history.

thread_local! {
    /// Outcomes by kind, to see what the generator covers.
    static STATS: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn count(what: String) {
    STATS.with(|s| *s.borrow_mut().entry(what).or_default() += 1);
}

fn outcome_name(a: &Applied) -> String {
    let name = |d: String| {
        d.split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    match &a.result {
        Ok(WriteResult::Txn(t)) => format!("txn {}", if t.succeeded { "then" } else { "else" }),
        Ok(r) => name(format!("{r:?}")),
        Err(e) => format!("error {}", name(format!("{e:?}"))),
    }
}

struct Watch {
    _stream: WatchStream,
    rx: WatchReceiver,
    id: i64,
    req: WatchRequest,
    /// The first revision it must deliver.
    from: i64,
    /// It started below the compacted revision.
    expect_cancel: bool,
    got: Vec<Event>,
    /// The compacted revision it was canceled with.
    canceled: Option<i64>,
    /// Something arrived after the cancelation.
    after_cancel: bool,
    bad_header: Option<String>,
}

impl Watch {
    fn drain(&mut self) {
        while let Ok(resp) = self.rx.try_recv() {
            if self.canceled.is_some() {
                self.after_cancel = true;
            }
            if resp.watch_id != self.id || (!resp.canceled && resp.events.is_empty()) {
                self.bad_header = Some(format!("unexpected response {resp:?}"));
            }
            if resp
                .events
                .iter()
                .any(|e| e.kv.mod_revision > resp.revision)
            {
                self.bad_header = Some(format!("header revision behind its events: {resp:?}"));
            }
            if resp.canceled {
                self.canceled = Some(resp.compact_revision);
            }
            self.got.extend(resp.events.iter().cloned());
        }
    }
}

/// Events equal, prev_kv aside; prev_kv equal where its revision is not
/// compacted, and either right or absent where it is (etcd reads prev_kv at
/// the event's revision - 1, which a compaction may have taken away).
fn same_event(got: &Event, want: &Event, compacted: i64) -> bool {
    let strip = |e: &Event| Event {
        prev_kv: None,
        ..e.clone()
    };
    if strip(got) != strip(want) {
        return false;
    }
    if want.kv.mod_revision > compacted {
        got.prev_kv == want.prev_kv
    } else {
        got.prev_kv.is_none() || got.prev_kv == want.prev_kv
    }
}

struct Case {
    h: Harness,
    m: Model,
    watchers: Vec<Watch>,
    /// (revision, compacted revision, HashKV) seen earlier.
    hashes: Vec<(i64, i64, u32)>,
}

impl Case {
    fn new(kind: Kind) -> Self {
        Case {
            h: Harness::new(kind),
            m: Model::new(),
            watchers: vec![],
            hashes: vec![],
        }
    }

    fn run(mut self, steps: &[Step]) -> Outcome {
        for (n, step) in steps.iter().enumerate() {
            self.step(step)
                .map_err(|e| TestCaseError::fail(format!("step {n} ({step:?}): {e}")))?;
            self.check_counters()
                .map_err(|e| TestCaseError::fail(format!("after step {n} ({step:?}): {e}")))?;
        }
        self.finish_watchers()?;
        self.check_history()?;
        self.check_hashes()
    }

    fn step(&mut self, step: &Step) -> Outcome {
        match step {
            Step::Write(ops) => self.write(ops),
            Step::Read(r) => {
                let mut r = r.clone();
                fix_range(&mut r, self.m.current());
                prop_assert_eq!(self.h.store.range(&r), self.m.range(&r), "range {:?}", r);
                Ok(())
            }
            Step::Watch(spec) => self.watch(spec),
            Step::Replay(raw) => {
                if self.m.applied == 0 {
                    return Ok(());
                }
                let index = 1 + raw % self.m.applied;
                let op = WriteOp::Put(common::put_req("a", "replayed"));
                let got = self.h.store.apply(&[(index, &op)]);
                let want = Applied {
                    revision: self.m.current(),
                    result: Ok(WriteResult::Skipped),
                };
                prop_assert_eq!(got, vec![want]);
                Ok(())
            }
            Step::Hash => {
                let (hash, compacted, rev) = self.h.store.hash_kv(0).map_err(fail)?;
                prop_assert_eq!((compacted, rev), (self.m.compacted, self.m.current()));
                self.hashes.push((rev, compacted, hash));
                self.check_hashes()
            }
            Step::Restore => {
                let mut image = Vec::new();
                let (_, applied) =
                    snapshot::write_snapshot(&self.h.store, &mut image).map_err(fail)?;
                prop_assert_eq!(applied, self.m.applied);
                self.h
                    .store
                    .restore(&mut std::io::Cursor::new(&image))
                    .map_err(fail)?;
                self.check_counters()?;
                self.check_history()?;
                self.check_hashes()
            }
            Step::Reopen => {
                self.finish_watchers()?;
                self.check_history()?;
                self.h.reopen();
                self.check_counters()?;
                self.check_history()?;
                self.check_hashes()
            }
        }
    }

    fn write(&mut self, ops: &[WriteOp]) -> Outcome {
        let ops: Vec<WriteOp> = ops
            .iter()
            .map(|op| {
                let mut op = op.clone();
                fix_op(&mut op, &self.m);
                op
            })
            .collect();
        let first = self.h.next_index;
        let got = self.h.apply_batch(&ops);
        prop_assert_eq!(got.len(), ops.len());
        for (i, (op, got)) in ops.iter().zip(&got).enumerate() {
            let want = self.m.apply(first + i as u64, op, got);
            count(outcome_name(&want));
            prop_assert_eq!(got, &want, "entry {} of the batch: {:?}", i, op);
        }
        Ok(())
    }

    fn watch(&mut self, spec: &WatchSpec) -> Outcome {
        // A start of 0 (or below) means "from the next write".
        let (current, compacted) = (self.m.current(), self.m.compacted.max(0));
        let around = |raw: i64| compacted + raw % (current - compacted + 3);
        let start = match spec.start {
            Start::Next => 0,
            Start::Compacted => compacted,
            Start::Around(raw) => around(raw),
            Start::Below(raw) if compacted > 1 => 1 + raw % (compacted - 1),
            Start::Below(raw) => around(raw),
        };
        let req = WatchRequest {
            watch_id: 0,
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: start,
            prev_kv: spec.prev_kv,
            no_put: spec.no_put,
            no_delete: spec.no_delete,
        };
        let (stream, rx) = self.h.store.watch_stream(spec.capacity);
        let id = match stream.watch(req.clone()) {
            Err(e) => {
                prop_assert_eq!(Err(e), check_range_args(&spec.key, &spec.range_end));
                return Ok(());
            }
            Ok(id) => id,
        };
        count(format!(
            "watch from {}",
            if start <= 0 {
                "next"
            } else if start < compacted {
                "compacted past"
            } else {
                "revision"
            }
        ));
        self.watchers.push(Watch {
            _stream: stream,
            rx,
            id,
            req,
            from: if start <= 0 { current + 1 } else { start },
            expect_cancel: start > 0 && start < compacted,
            got: vec![],
            canceled: None,
            after_cancel: false,
            bad_header: None,
        });
        if spec.settle {
            self.settle()?;
        }
        Ok(())
    }

    /// Reads every watcher's stream until none is behind or parked.
    fn settle(&mut self) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for w in &mut self.watchers {
                w.drain();
            }
            if self.h.store.pending_watcher_count() == 0 {
                for w in &mut self.watchers {
                    w.drain();
                }
                return Ok(());
            }
            prop_assert!(
                Instant::now() < deadline,
                "watchers not caught up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Checks every watcher's stream against the model's history, then closes them.
    fn finish_watchers(&mut self) -> Outcome {
        // One more watcher over everything from the compacted revision on.
        let start = self.m.compacted.max(1);
        let (stream, rx) = self.h.store.watch_stream(4);
        let req = WatchRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: start,
            prev_kv: true,
            ..Default::default()
        };
        let id = stream.watch(req.clone()).map_err(fail)?;
        self.watchers.push(Watch {
            _stream: stream,
            rx,
            id,
            req,
            from: start,
            expect_cancel: false,
            got: vec![],
            canceled: None,
            after_cancel: false,
            bad_header: None,
        });
        self.settle()?;
        for w in std::mem::take(&mut self.watchers) {
            let want = self.m.watch_events(&w.req, w.from);
            let what = format!("watcher {:?} from {}", w.req, w.from);
            prop_assert!(w.bad_header.is_none(), "{}: {:?}", what, w.bad_header);
            prop_assert!(
                !w.after_cancel,
                "{}: a response after the cancelation",
                what
            );
            match w.canceled {
                None => prop_assert!(!w.expect_cancel, "{}: not canceled", what),
                Some(c) => {
                    count(format!(
                        "watch canceled{}",
                        if w.expect_cancel { "" } else { " late" }
                    ));
                    prop_assert!(
                        c > w.from && self.m.compactions.contains(&c),
                        "{}: canceled at compacted revision {}",
                        what,
                        c
                    );
                    prop_assert!(
                        !w.expect_cancel || w.got.is_empty(),
                        "{}: events before the cancelation",
                        what
                    );
                }
            }
            let complete = w.canceled.is_none();
            let ok = if complete {
                w.got.len() == want.len()
            } else {
                w.got.len() <= want.len()
            } && w
                .got
                .iter()
                .zip(&want)
                .all(|(g, e)| same_event(g, e, self.m.compacted));
            prop_assert!(
                ok,
                "{}: events differ\n got: {:#?}\nwant: {:#?}",
                what,
                w.got,
                want
            );
        }
        Ok(())
    }

    fn check_counters(&self) -> Outcome {
        let s = &self.h.store;
        prop_assert_eq!(s.current_revision(), self.m.current(), "current revision");
        prop_assert_eq!(
            s.compacted_revision(),
            self.m.compacted,
            "compacted revision"
        );
        prop_assert_eq!(s.applied_index(), self.m.applied, "applied index");
        let ids: Vec<i64> = self.m.leases.keys().copied().collect();
        prop_assert_eq!(s.leases(), ids.clone(), "leases");
        for id in ids {
            let st = s.lease_status(id, Instant::now(), true).map_err(fail)?;
            prop_assert_eq!(st.granted_ttl, self.m.leases[&id]);
            prop_assert_eq!(st.keys, self.m.lease_keys(id), "keys of lease {}", id);
        }
        Ok(())
    }

    /// Every revision still readable, read whole; the one below is refused.
    fn check_history(&self) -> Outcome {
        let all = |revision| RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        for rev in self.m.compacted.max(1)..=self.m.current() {
            prop_assert_eq!(
                self.h.store.range(&all(rev)),
                self.m.range(&all(rev)),
                "state at {}",
                rev
            );
        }
        if self.m.compacted > 1 {
            let below = all(self.m.compacted - 1);
            prop_assert_eq!(self.h.store.range(&below), self.m.range(&below));
        }
        Ok(())
    }

    /// HashKV at a revision is fixed while the compacted revision is.
    fn check_hashes(&mut self) -> Outcome {
        let compacted = self.m.compacted;
        self.hashes.retain(|(_, c, _)| *c == compacted);
        for &(rev, c, hash) in &self.hashes {
            prop_assert_eq!(
                self.h.store.hash_kv(rev),
                Ok((hash, c, rev)),
                "HashKV at {}",
                rev
            );
        }
        Ok(())
    }
}

fn fail(e: StorageError) -> TestCaseError {
    TestCaseError::fail(format!("unexpected error: {e:?}"))
}

fn run(kind: Kind, default_cases: u32) {
    let cases = std::env::var("BALLAST_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&vec(step(), 1..60), |steps| Case::new(kind).run(&steps));
    STATS.with(|s| {
        let stats: Vec<String> = s
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        eprintln!(
            "{kind:?}: {cases} cases in {:?}; {}",
            started.elapsed(),
            stats.join(", ")
        );
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn model_mem() {
    run(Kind::Mem, 1500);
}

#[test]
fn model_rocks() {
    run(Kind::Rocks, 250);
}
