//! The MVCC key-value store: reads at any revision, replicated writes.
//!
//! One writer (the raft apply loop) calls [`KvStore::apply`] with batches of
//! log entries; any number of readers call [`KvStore::range`] at the same
//! time. A batch becomes one engine write holding the data and the meta
//! record (applied index, current revision) together, so after a crash the
//! store and its applied index always agree.
//!
//! Readers never see a half-applied batch: the in-memory index may already
//! hold the batch's revisions, but reads are served at the *published*
//! current revision, which moves only after the engine write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{Bound, Range, RangeBounds};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::compact::Compactor;
use crate::engine::{Cf, KvEngine, ReadView, WriteBatch};
use crate::error::{Result, StorageError};
use crate::key_index::{KeyIndex, KeyRev};
use crate::kv::{Event, EventKind, KeyValue, Record, RecordHead};
use crate::lease::{LeaseStatus, Lessor, MAX_LEASE_TTL};
use crate::request::*;
use crate::revision::Revision;

/// Limits and tuning of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest value a put may carry (etcd's request limit is 1.5 MiB).
    pub max_value_size: usize,
    /// Most compares, or ops in one branch, of one txn (etcd: 128). A
    /// nested txn gets what its parent level left (etcd's rule), and all
    /// levels together at most [`TXN_TOTAL_OPS_FACTOR`] times this.
    pub max_txn_ops: usize,
    /// Most bytes the range results of one txn may take (keys, values and
    /// per-key overhead, counted as read). Past it the txn fails with
    /// [`StorageError::TxnResultTooLarge`]: a read-only txn when it gets
    /// there, a replicated one before it writes anything (from an upper
    /// bound), identically on every member.
    pub max_txn_result_bytes: usize,
    /// Records removed per engine write during physical compaction.
    pub compaction_batch: usize,
    /// Pause between two compaction writes, so writers are never stalled long.
    pub compaction_pause: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_value_size: 1536 * 1024,
            max_txn_ops: 128,
            max_txn_result_bytes: 128 << 20,
            compaction_batch: 1000,
            compaction_pause: Duration::from_millis(1),
        }
    }
}

/// Deepest nesting of txns accepted (the top level is depth 1). etcd has no
/// such limit (its per-level budget allows 128); this keeps every accepted
/// txn, its raft entry and its response within protobuf decoders'
/// recursion limits (prost: 100 messages deep).
pub const MAX_TXN_DEPTH: usize = 32;

/// The ops of all levels of one txn together (compares and requests,
/// nested txns included) are at most this many times `max_txn_ops`.
pub const TXN_TOTAL_OPS_FACTOR: usize = 8;

pub(crate) type Index = BTreeMap<Vec<u8>, KeyIndex>;

pub(crate) const META_APPLIED: &[u8] = b"applied_index";
pub(crate) const META_CURRENT: &[u8] = b"current_revision";
pub(crate) const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
pub(crate) const META_COMPACT_FINISHED: &[u8] = b"compact_finished";
/// Present once the `head` column family holds the head of every `kv`
/// record: stores written before it existed get their heads at first open.
pub(crate) const META_HEADS: &[u8] = b"heads";
/// Heads written per batch when a store gets its heads.
const HEADS_BATCH: usize = 10_000;

/// The compacted revision of a store never compacted (etcd's initial
/// `compactMainRev`): even `Compact(0)` is still ahead of it.
pub const NEVER_COMPACTED: i64 = -1;

/// The changes one committed revision made, for watchers.
#[derive(Debug, Clone)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// What [`KvStore::apply`] did: one outcome per entry, and the events of
/// every revision the batch created, in order.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    pub applied: Vec<Applied>,
    pub revisions: Vec<RevisionEvents>,
}

/// The MVCC store. Cheap to share behind an `Arc`.
pub struct KvStore {
    engine: Arc<dyn KvEngine>,
    config: StoreConfig,
    /// Key → history. Read-locked by readers only while they pick revisions;
    /// values are fetched after the lock is released.
    index: RwLock<Index>,
    /// The newest revision readers may see; moves after the engine write.
    current_rev: AtomicI64,
    /// Published before the index is compacted, so a reader that raced a
    /// compaction notices it when it re-checks after its lookup.
    compacted_rev: AtomicI64,
    applied_index: AtomicU64,
    /// Held through a whole batch: there is one writer at a time.
    writer: Mutex<()>,
    lessor: Mutex<Lessor>,
    compactor: Compactor,
}

/// A meta record, `missing` if it was never written.
/// Checks that one stored record is something [`KvStore`]'s load can read:
/// a snapshot is verified record by record before anything is replaced.
pub(crate) fn check_record(cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
    match cf {
        Cf::Kv => {
            Revision::decode(key)?;
            Record::decode(value)?;
        }
        Cf::Lease if key.len() != 8 || value.len() != 8 => {
            return Err(StorageError::Corrupt("lease record".into()));
        }
        Cf::Meta
            if [
                META_APPLIED,
                META_CURRENT,
                META_COMPACT_SCHEDULED,
                META_COMPACT_FINISHED,
            ]
            .contains(&key)
                && value.len() != 8 =>
        {
            return Err(StorageError::Corrupt(format!(
                "meta {}",
                String::from_utf8_lossy(key)
            )));
        }
        _ => {}
    }
    Ok(())
}

/// Writes the head of every `kv` record, in bounded batches, then marks the
/// store as having them. For a store written before the `head` column
/// family existed, or one whose image was installed without heads.
fn write_heads(engine: &dyn KvEngine) -> Result<()> {
    let mut start = Vec::new();
    loop {
        let mut batch = WriteBatch::default();
        let (mut next, mut failure) = (None, None);
        engine.scan(Cf::Kv, &start, None, &mut |k, v| {
            if batch.len() == HEADS_BATCH {
                next = Some(k.to_vec());
                return false;
            }
            match RecordHead::prefix(v) {
                Ok(head) => batch.put(Cf::Head, k, head),
                Err(e) => failure = Some(e),
            }
            failure.is_none()
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if next.is_none() {
            batch.put(Cf::Meta, META_HEADS, []);
        }
        engine.write(batch)?;
        match next {
            Some(k) => start = k,
            None => return Ok(()),
        }
    }
}

fn meta_i64(view: &dyn ReadView, key: &[u8], missing: i64) -> Result<i64> {
    match view.get(Cf::Meta, key)? {
        None => Ok(missing),
        Some(v) => Ok(i64::from_be_bytes(v.as_slice().try_into().map_err(
            |_| StorageError::Corrupt(format!("meta {}", String::from_utf8_lossy(key))),
        )?)),
    }
}

/// Map bounds of a key range.
type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The range `[key, range_end)` as map bounds, or `None` for an empty range.
fn bounds(key: &[u8], range_end: &[u8]) -> Option<KeyBounds> {
    if range_end.is_empty() {
        Some((Bound::Included(key.to_vec()), Bound::Included(key.to_vec())))
    } else if range_end == [0] {
        Some((Bound::Included(key.to_vec()), Bound::Unbounded))
    } else if range_end <= key {
        None
    } else {
        Some((
            Bound::Included(key.to_vec()),
            Bound::Excluded(range_end.to_vec()),
        ))
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

/// Keys of `index` in `[key, range_end)` that exist at revision `at`.
fn live_keys<'a>(
    index: &'a Index,
    key: &[u8],
    range_end: &[u8],
    at: i64,
) -> impl Iterator<Item = (&'a Vec<u8>, KeyRev)> + 'a {
    let range = bounds(key, range_end).map(|b| index.range(b));
    range
        .into_iter()
        .flatten()
        .filter_map(move |(k, ki)| ki.get(at).map(|kr| (k, kr)))
}

/// Records the current batch wrote that are not in the engine yet: where
/// each one's encoding sits in the batch. Revisions only grow within a
/// batch, so this is sorted and a binary search finds them.
type Pending = Vec<(Revision, Range<usize>)>;

/// The batch being applied and its [`Pending`] records, if any.
type Unwritten<'a> = Option<(&'a WriteBatch, &'a Pending)>;

fn record_at(
    engine: &dyn KvEngine,
    unwritten: Unwritten<'_>,
    rev: Revision,
) -> Result<Option<KeyValue>> {
    if let Some((batch, pending)) = unwritten {
        if let Ok(i) = pending.binary_search_by_key(&rev, |(r, _)| *r) {
            return Ok(Some(Record::decode(batch.bytes(pending[i].1.clone()))?.kv));
        }
    }
    match engine.get(Cf::Kv, &rev.encode())? {
        None => Ok(None),
        Some(bytes) => Ok(Some(Record::decode(&bytes)?.kv)),
    }
}

fn compare_holds(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering::*;
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Equal,
        CompareResult::Greater => ord == Greater,
        CompareResult::Less => ord == Less,
        CompareResult::NotEqual => ord != Equal,
    }
}

/// Whether every key a compare found (`found`: its keys at the revision
/// read) passes it, etcd's way: a compare over no key passes only if the
/// zero key-value does, and never for a value compare. Version, create and
/// mod revision come from the index; only value and lease read the record.
/// `Ok(None)` when a record has vanished (compacted under a reader).
fn compare_passes(
    engine: &dyn KvEngine,
    unwritten: Unwritten<'_>,
    c: &Compare,
    found: &[KeyRev],
) -> Result<Option<bool>> {
    if found.is_empty() {
        let holds =
            !matches!(c.target, CompareTarget::Value(_)) && compare_holds(c, &KeyValue::default());
        return Ok(Some(holds));
    }
    for kr in found {
        let from_index = match c.target {
            CompareTarget::Version(_) | CompareTarget::Create(_) | CompareTarget::Mod(_) => {
                Some(KeyValue {
                    create_revision: kr.create_revision,
                    mod_revision: kr.modified.main,
                    version: kr.version,
                    ..Default::default()
                })
            }
            CompareTarget::Value(_) | CompareTarget::Lease(_) => None,
        };
        let kv = match from_index {
            Some(kv) => kv,
            None => match record_at(engine, unwritten, kr.modified)? {
                Some(kv) => kv,
                None => return Ok(None),
            },
        };
        if !compare_holds(c, &kv) {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

/// What a key-value costs a txn's result budget beyond its key and value.
const KV_OVERHEAD: usize = std::mem::size_of::<KeyValue>();

/// Bytes the range results of one txn may still take.
struct ResultBudget {
    left: usize,
    max: usize,
}

impl ResultBudget {
    fn new(max: usize) -> Self {
        ResultBudget { left: max, max }
    }

    fn unlimited() -> Self {
        ResultBudget::new(usize::MAX)
    }

    /// Takes one key-value of `bytes` (key and value) from the budget.
    fn take(&mut self, bytes: usize) -> Result<()> {
        let cost = bytes.saturating_add(KV_OVERHEAD);
        match self.left.checked_sub(cost) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(StorageError::TxnResultTooLarge { max: self.max }),
        }
    }

    /// Takes the keys a range picked (held until its values are read).
    fn take_picked(&mut self, picked: &[(Vec<u8>, KeyRev)]) -> Result<()> {
        picked.iter().try_for_each(|(k, _)| self.take(k.len()))
    }
}

/// Checks what is wrong with a put whatever the state (etcd's `checkPutRequest`).
fn check_put_request(config: &StoreConfig, p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(StorageError::EmptyKey);
    }
    if p.value.len() > config.max_value_size {
        return Err(StorageError::ValueTooLarge {
            size: p.value.len(),
            max: config.max_value_size,
        });
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StorageError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StorageError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and then `checkIntervals` on both branches:
/// what is wrong with a txn whatever the state. Every request of both
/// branches, at every depth, is checked before any compare is evaluated.
/// Bounds, all answered [`StorageError::TooManyOps`]: a level's compares,
/// or ops of one branch, at most its budget (`max_txn_ops` at the top, for
/// a nested txn what its parent left: etcd's rule); at most
/// [`MAX_TXN_DEPTH`] levels; all levels together at most
/// [`TXN_TOTAL_OPS_FACTOR`] × `max_txn_ops` compares and requests. The
/// work done is bounded by those limits, whatever the request's size.
fn check_txn_request(config: &StoreConfig, t: &TxnRequest) -> Result<()> {
    let mut total = 0;
    check_txn_level(config, t, config.max_txn_ops, 1, &mut total)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

fn check_txn_level(
    config: &StoreConfig,
    t: &TxnRequest,
    budget: usize,
    depth: usize,
    total: &mut usize,
) -> Result<()> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    *total += t.compare.len() + t.success.len() + t.failure.len();
    let max_total = config.max_txn_ops.saturating_mul(TXN_TOTAL_OPS_FACTOR);
    if opc > budget || depth > MAX_TXN_DEPTH || *total > max_total {
        return Err(StorageError::TooManyOps {
            max: config.max_txn_ops,
        });
    }
    for c in &t.compare {
        check_range_args(&c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range_args(&r.key, &r.range_end)?,
            RequestOp::Put(p) => check_put_request(config, p)?,
            RequestOp::DeleteRange(d) => check_range_args(&d.key, &d.range_end)?,
            RequestOp::Txn(nested) => {
                check_txn_level(config, nested, budget - opc, depth + 1, total)?
            }
        }
    }
    Ok(())
}

/// Which branch each txn on the chosen path takes, decided before any of
/// the txn's writes (as etcd does): `nested` follows the nested txns of
/// the chosen branch in order.
struct TxnPlan {
    succeeded: bool,
    nested: Vec<TxnPlan>,
}

/// The requests other than txns on the path `plan` chose, in order.
fn path_ops<'t>(t: &'t TxnRequest, plan: &TxnPlan, out: &mut Vec<&'t RequestOp>) {
    let branch = if plan.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = plan.nested.iter();
    for op in branch {
        match op {
            RequestOp::Txn(n) => path_ops(n, nested.next().expect("planned"), out),
            other => out.push(other),
        }
    }
}

/// Deleted key ranges as disjoint, merged half-open intervals `[start,
/// end)` (`None`: to the end of the keyspace), keyed by start: adding a
/// range and asking whether a key is in one are both a map search
/// (amortised), so checking `n` ops is O(n log n).
#[derive(Debug, Default)]
struct DeletedRanges(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl DeletedRanges {
    /// Adds a DeleteRange's `[key, range_end)` (see [`bounds`]: empty
    /// `range_end` is the key alone, `"\0"` to the end, and an end at or
    /// before the key nothing).
    fn insert(&mut self, key: &[u8], range_end: &[u8]) {
        let end = if range_end.is_empty() {
            Some([key, &[0u8][..]].concat()) // the key's successor: just the key
        } else if range_end == [0] {
            None
        } else if range_end <= key {
            return;
        } else {
            Some(range_end.to_vec())
        };
        self.insert_interval(key.to_vec(), end);
    }

    fn insert_interval(&mut self, mut start: Vec<u8>, mut end: Option<Vec<u8>>) {
        fn later(a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Option<Vec<u8>> {
            Some(a?.max(b?))
        }
        let reaches = |end: &Option<Vec<u8>>, key: &[u8]| end.as_deref().is_none_or(|e| key <= e);
        // One starting at or before `start` that reaches it absorbs it...
        if let Some((s, e)) = self
            .0
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start.as_slice())))
            .next_back()
        {
            if reaches(e, &start) {
                start = s.clone();
            }
        }
        // ...and so does everything starting inside the merged interval.
        while let Some((s, _)) = self
            .0
            .range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded))
            .next()
        {
            if !reaches(&end, s) {
                break;
            }
            let s = s.clone();
            let e = self.0.remove(&s).expect("just found");
            end = later(end, e);
        }
        self.0.insert(start, end);
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.0
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, end)| end.as_deref().is_none_or(|e| key < e))
    }

    fn extend(&mut self, other: DeletedRanges) {
        for (start, end) in other.0 {
            self.insert_interval(start, end);
        }
    }
}

/// etcd's duplicate-key rule (`checkIntervals`) over one branch, nested
/// txns included. A key may not be put twice, nor put inside a range that
/// this level or an earlier nested txn deletes. The two branches of one
/// nested txn may put the same key (only one of them runs), and a nested
/// txn may delete what an earlier one put: the delete simply comes later.
/// `range_end` `"\0"` counts as "to the end" (etcd's interval check lets
/// such a delete overlap any put). Returns the keys put and ranges deleted.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, DeletedRanges)> {
    let mut dels = DeletedRanges::default();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            dels.insert(&d.key, &d.range_end);
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (then_puts, then_dels) = check_intervals(&t.success)?;
        let (else_puts, else_dels) = check_intervals(&t.failure)?;
        if then_puts
            .iter()
            .any(|k| puts.contains(k) || dels.contains(k))
        {
            return Err(StorageError::DuplicateKey);
        }
        let clash = |k: &Vec<u8>| (puts.contains(k) && !then_puts.contains(k)) || dels.contains(k);
        if else_puts.iter().any(clash) {
            return Err(StorageError::DuplicateKey);
        }
        puts.extend(then_puts);
        puts.extend(else_puts);
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        if let RequestOp::Put(p) = op {
            if dels.contains(&p.key) || !puts.insert(p.key.clone()) {
                return Err(StorageError::DuplicateKey);
            }
        }
    }
    Ok((puts, dels))
}

impl KvStore {
    /// Opens the store over `engine`, rebuilding the in-memory index and
    /// leases from it and resuming an unfinished compaction.
    pub fn open(engine: Arc<dyn KvEngine>, config: StoreConfig) -> Result<Self> {
        let compactor = Compactor::start(engine.clone(), &config);
        let store = KvStore {
            engine,
            config,
            index: RwLock::new(Index::new()),
            current_rev: AtomicI64::new(1),
            compacted_rev: AtomicI64::new(NEVER_COMPACTED),
            applied_index: AtomicU64::new(0),
            writer: Mutex::new(()),
            lessor: Mutex::new(Lessor::default()),
            compactor,
        };
        store.load()?;
        Ok(store)
    }

    /// (Re)builds every in-memory structure from the engine.
    fn load(&self) -> Result<()> {
        let engine = &*self.engine;
        let applied = meta_i64(engine, META_APPLIED, 0)? as u64;
        // Like etcd, a new store is at revision 1 (the first write is 2) and
        // has compacted nothing, not even revision 0: its compacted revision
        // is -1, so that `Compact(0)` succeeds once, as etcd's does.
        let current = meta_i64(engine, META_CURRENT, 1)?.max(1);
        let scheduled = meta_i64(engine, META_COMPACT_SCHEDULED, NEVER_COMPACTED)?;
        let finished = meta_i64(engine, META_COMPACT_FINISHED, NEVER_COMPACTED)?;

        if engine.get(Cf::Meta, META_HEADS)?.is_none() {
            write_heads(engine)?;
        }

        // Only heads are read: values stay on disk.
        let mut index = Index::new();
        let mut leased: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut failure = None;
        engine.scan(Cf::Head, &[], None, &mut |k, v| {
            let parsed = Revision::decode(k).and_then(|rev| Ok((rev, RecordHead::split(v)?.0)));
            let (rev, head) = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            // One search per record: most keys have one revision, so the
            // key is copied for the entry whether or not it is new.
            let ki = index.entry(head.key.to_vec()).or_default();
            if head.tombstone {
                ki.restore_tombstone(rev);
            } else {
                ki.restore_put(rev, head.create_revision, head.version);
            }
            if head.tombstone || head.lease == 0 {
                leased.remove(head.key);
            } else if let Some(lease) = leased.get_mut(head.key) {
                *lease = head.lease;
            } else {
                leased.insert(head.key.to_vec(), head.lease);
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let mut keep = Vec::new();
        if scheduled > 0 {
            index.retain(|_, ki| !ki.compact(scheduled, &mut keep));
        }
        index.retain(|_, ki| !ki.is_empty());

        let mut lessor = Lessor::default();
        let mut bad = None;
        engine.scan(Cf::Lease, &[], None, &mut |k, v| {
            match (<[u8; 8]>::try_from(k), <[u8; 8]>::try_from(v)) {
                (Ok(id), Ok(ttl)) => lessor.grant(
                    i64::from_be_bytes(id),
                    i64::from_be_bytes(ttl),
                    Instant::now(),
                ),
                _ => bad = Some(StorageError::Corrupt("lease record".into())),
            }
            bad.is_none()
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
        for (key, lease) in leased {
            lessor.attach(&key, lease);
        }

        *self.index.write() = index;
        *self.lessor.lock() = lessor;
        self.current_rev.store(current, Ordering::SeqCst);
        self.compacted_rev.store(scheduled, Ordering::SeqCst);
        self.applied_index.store(applied, Ordering::SeqCst);
        if finished < scheduled {
            self.compactor.schedule(scheduled, keep);
        }
        Ok(())
    }

    pub fn engine(&self) -> &Arc<dyn KvEngine> {
        &self.engine
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The newest revision. As in etcd, a new store is at revision 1 and
    /// its first write creates revision 2.
    pub fn current_revision(&self) -> i64 {
        self.current_rev.load(Ordering::Acquire)
    }

    /// Reads below this revision fail with [`StorageError::Compacted`]; -1
    /// ([`NEVER_COMPACTED`]) until the first compaction, as etcd reports it.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted_rev.load(Ordering::Acquire)
    }

    /// The highest log index whose effects are in the engine.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Sets the applied index, for a store restored from a backup that will
    /// follow a new raft log (whose indexes start again from the bottom).
    /// Data and revisions are unchanged.
    pub fn reset_applied_index(&self, index: u64) -> Result<()> {
        let _writer = self.writer.lock();
        let mut batch = WriteBatch::default();
        batch.put(Cf::Meta, META_APPLIED, (index as i64).to_be_bytes());
        self.engine.write(batch)?;
        self.applied_index.store(index, Ordering::Release);
        Ok(())
    }

    /// Makes every applied write durable (see [`KvEngine::sync`]).
    pub fn sync(&self) -> Result<()> {
        self.engine.sync()
    }

    /// Bytes the engine occupies.
    pub fn size_bytes(&self) -> u64 {
        self.engine.size_bytes()
    }

    /// Reclaims space (etcd's defragment).
    pub fn defragment(&self) -> Result<()> {
        self.engine.defragment()
    }

    /// Number of keys with any history in the index.
    pub fn key_count(&self) -> usize {
        self.index.read().len()
    }

    /// Blocks until background compaction has caught up (tests, restore).
    pub fn wait_compaction(&self) {
        self.compactor.wait_idle();
    }

    fn resolve_revision(&self, requested: i64) -> Result<i64> {
        let current = self.current_revision();
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(StorageError::FutureRevision { current });
        }
        let compacted = self.compacted_revision();
        if requested < compacted {
            return Err(StorageError::Compacted { compacted });
        }
        Ok(requested)
    }

    /// Reads a range (see [`RangeRequest`]) at a committed revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range_args(&req.key, &req.range_end)?;
        let at = self.resolve_revision(req.revision)?;
        self.range_at(req, at, &mut ResultBudget::unlimited())
    }

    /// Checks a txn before it is proposed: what [`KvStore::apply`] would
    /// refuse whatever the state (shape, bounds, duplicate keys; see
    /// `check_txn_request`), in time bounded by the limits.
    pub fn check_txn(&self, t: &TxnRequest) -> Result<()> {
        check_txn_request(&self.config, t)
    }

    /// Serves a read-only txn ([`TxnRequest::is_read_only`]) from this
    /// store, without the log: every compare and range reads one revision,
    /// the current one, which is returned with the response. Checks it as
    /// [`KvStore::check_txn`] does. Results past `max_txn_result_bytes`
    /// fail it with [`StorageError::TxnResultTooLarge`] as soon as they
    /// get there.
    pub fn read_txn(&self, t: &TxnRequest) -> Result<(i64, TxnResponse)> {
        self.check_txn(t)?;
        let at = self.current_revision();
        let mut budget = ResultBudget::new(self.config.max_txn_result_bytes);
        let resp = self.read_txn_at(t, at, &mut budget)?;
        Ok((at, resp))
    }

    fn read_txn_at(
        &self,
        t: &TxnRequest,
        at: i64,
        budget: &mut ResultBudget,
    ) -> Result<TxnResponse> {
        let mut succeeded = true;
        for c in &t.compare {
            let found: Vec<KeyRev> = {
                let index = self.index.read();
                live_keys(&index, &c.key, &c.range_end, at)
                    .map(|(_, kr)| kr)
                    .collect()
            };
            let passes = compare_passes(&*self.engine, None, c, &found)?;
            let compacted = self.compacted_revision();
            if at < compacted || passes.is_none() {
                return Err(StorageError::Compacted { compacted });
            }
            if passes == Some(false) {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let rev = match r.revision {
                        rev if rev <= 0 => at,
                        rev if rev > at => {
                            return Err(StorageError::FutureRevision { current: at })
                        }
                        rev => rev,
                    };
                    ResponseOp::Range(self.range_at(r, rev, budget)?)
                }
                RequestOp::Txn(n) => ResponseOp::Txn(self.read_txn_at(n, at, budget)?),
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    return Err(StorageError::Engine(
                        "read_txn given a txn that writes".into(),
                    ))
                }
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    /// A range at revision `at` (resolved by the caller), its results
    /// taken from `budget`.
    fn range_at(
        &self,
        req: &RangeRequest,
        at: i64,
        budget: &mut ResultBudget,
    ) -> Result<RangeResponse> {
        let compacted = self.compacted_revision();
        if at < compacted {
            return Err(StorageError::Compacted { compacted });
        }
        let (count, picked) = {
            let index = self.index.read();
            pick(&index, req, at)
        };
        budget.take_picked(&picked)?;
        let compacted = self.compacted_revision();
        if at < compacted {
            return Err(StorageError::Compacted { compacted });
        }
        let resp = materialize(&*self.engine, None, req, count, picked, budget);
        match resp {
            // A value missing at a revision the index handed out was removed
            // by a compaction that raced this read.
            Ok(None) => Err(StorageError::Compacted {
                compacted: self.compacted_revision(),
            }),
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        }
    }

    /// Applies replicated writes in log order as one engine write. Entries at
    /// or below the applied index are skipped. Panics only if the engine
    /// fails mid-batch, where going on would corrupt the state.
    pub(crate) fn apply(&self, entries: &[(u64, &WriteOp)]) -> BatchOutcome {
        let _writer = self.writer.lock();
        let mut index = self.index.write();
        let mut lessor = self.lessor.lock();
        let mut ctx = WriteCtx {
            engine: &*self.engine,
            config: &self.config,
            index: &mut index,
            lessor: &mut lessor,
            batch: WriteBatch::default(),
            pending: Pending::new(),
            rev: self.current_revision(),
            compacted: self.compacted_revision(),
            compacted_rev: &self.compacted_rev,
            main: 0,
            sub: 0,
            events: Vec::new(),
            revisions: Vec::new(),
            compactions: Vec::new(),
        };
        let mut applied = self.applied_index();
        let mut outcome = BatchOutcome::default();
        for (log_index, op) in entries {
            if *log_index <= applied {
                outcome.applied.push(Applied {
                    revision: ctx.rev,
                    result: Ok(WriteResult::Skipped),
                });
                continue;
            }
            applied = *log_index;
            let result = ctx.apply_op(*log_index, op);
            outcome.applied.push(Applied {
                revision: ctx.rev,
                result,
            });
        }
        let mut batch = std::mem::take(&mut ctx.batch);
        batch.put(Cf::Meta, META_APPLIED, (applied as i64).to_be_bytes());
        batch.put(Cf::Meta, META_CURRENT, ctx.rev.to_be_bytes());
        let (rev, compactions) = (ctx.rev, std::mem::take(&mut ctx.compactions));
        outcome.revisions = std::mem::take(&mut ctx.revisions);
        drop(ctx);
        drop(lessor);
        drop(index);
        if let Err(e) = self.engine.write(batch) {
            panic!("storage engine failed to write an applied batch, cannot go on: {e}");
        }
        self.current_rev.store(rev, Ordering::Release);
        self.applied_index.store(applied, Ordering::Release);
        for (at, keep) in compactions {
            self.compactor.schedule(at, keep);
        }
        outcome
    }

    /// Hash of every record and lease, for comparing members' raw state.
    pub fn hash(&self) -> Result<(u32, i64)> {
        let _writer = self.writer.lock();
        let rev = self.current_revision();
        let snap = self.engine.snapshot();
        let mut h = crc32fast::Hasher::new();
        for cf in [Cf::Kv, Cf::Lease] {
            snap.scan(cf, &[], None, &mut |k, v| {
                h.update(k);
                h.update(v);
                true
            })?;
        }
        Ok((h.finalize(), rev))
    }

    /// etcd's HashKV: a hash of the history a read at or below `revision`
    /// can see (0 = current), independent of how far physical compaction
    /// has got. Returns (hash, compacted revision, hashed revision).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64)> {
        let at = self.resolve_revision(revision)?;
        let (mut revs, compacted) = {
            let index = self.index.read();
            let mut revs = Vec::new();
            for ki in index.values() {
                ki.revisions_since(0, &mut revs);
            }
            (revs, self.compacted_revision())
        };
        revs.retain(|r| r.main <= at);
        revs.sort_unstable();
        let mut h = crc32fast::Hasher::new();
        for rev in revs {
            let key = rev.encode();
            let Some(bytes) = self.engine.get(Cf::Kv, &key)? else {
                return Err(StorageError::Compacted {
                    compacted: self.compacted_revision(),
                });
            };
            h.update(&key);
            h.update(&bytes);
        }
        Ok((h.finalize(), compacted, at))
    }

    // ---- Leases: local, non-replicated views and clocks. ----

    /// Makes this member the one that tracks lease deadlines; every lease
    /// gets its full TTL from `now`.
    pub fn lease_promote(&self, now: Instant) {
        self.lessor.lock().promote(now);
    }

    /// Stops tracking lease deadlines (this member lost leadership).
    pub fn lease_demote(&self) {
        self.lessor.lock().demote();
    }

    /// Leases past their deadline at `now`: the primary proposes their revocation.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        self.lessor.lock().expired(now)
    }

    /// A keep-alive: restarts the lease's clock and returns its TTL.
    pub fn lease_renew(&self, id: i64, now: Instant) -> Result<i64> {
        self.lessor
            .lock()
            .renew(id, now)
            .ok_or(StorageError::LeaseNotFound { id })
    }

    pub fn lease_status(&self, id: i64, now: Instant, with_keys: bool) -> Result<LeaseStatus> {
        self.lessor
            .lock()
            .status(id, now, with_keys)
            .ok_or(StorageError::LeaseNotFound { id })
    }

    /// Every lease id, sorted.
    pub fn leases(&self) -> Vec<i64> {
        self.lessor.lock().ids()
    }

    /// Runs `f` with the writer lock held and nothing else going on: for
    /// snapshot restore, which swaps the whole state.
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _writer = self.writer.lock();
        f()
    }

    /// Reloads everything from the engine (after restore). Caller holds the writer.
    pub(crate) fn reload(&self) -> Result<()> {
        let primary = self.lessor.lock().is_primary();
        self.load()?;
        if primary {
            self.lessor.lock().promote(Instant::now());
        }
        Ok(())
    }

    /// Events with revision in `[from, to]` for keys in `[key, range_end)`,
    /// grouped by revision (watch catch-up). Revisions are whole; no new one
    /// is started once `max_revisions` were read or the events read reach
    /// `max_bytes` (by [`Event::size`]). Fails with Compacted below the
    /// compacted revision.
    pub fn events_between(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
        max_revisions: usize,
        max_bytes: usize,
    ) -> Result<Vec<RevisionEvents>> {
        let mut revs: Vec<(Revision, Vec<u8>)> = Vec::new();
        {
            let index = self.index.read();
            // Checked under the lock: a compaction publishes its revision
            // before it compacts the index, so either this sees it or the
            // index still holds every revision from `from` on.
            let compacted = self.compacted_revision();
            if from < compacted {
                return Err(StorageError::Compacted { compacted });
            }
            let mut buf = Vec::new();
            for (k, ki) in bounds(key, range_end)
                .map(|b| index.range(b))
                .into_iter()
                .flatten()
            {
                buf.clear();
                ki.revisions_since(from, &mut buf);
                revs.extend(buf.iter().filter(|r| r.main <= to).map(|r| (*r, k.clone())));
            }
        }
        revs.sort_unstable_by_key(|(r, _)| *r);
        let mut out: Vec<RevisionEvents> = Vec::new();
        let mut read = 0;
        for (rev, _) in revs {
            if out.last().map(|g| g.revision) != Some(rev.main) {
                if out.len() == max_revisions || read >= max_bytes {
                    break;
                }
                out.push(RevisionEvents {
                    revision: rev.main,
                    events: Vec::new(),
                });
            }
            let Some(bytes) = self.engine.get(Cf::Kv, &rev.encode())? else {
                return Err(StorageError::Compacted {
                    compacted: self.compacted_revision(),
                });
            };
            let rec = Record::decode(&bytes)?;
            let event = if rec.tombstone {
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: rec.kv.key,
                        mod_revision: rev.main,
                        ..Default::default()
                    },
                    prev_kv: None,
                }
            } else {
                Event {
                    kind: EventKind::Put,
                    kv: rec.kv,
                    prev_kv: None,
                }
            };
            read += event.size();
            out.last_mut().expect("pushed above").events.push(event);
        }
        Ok(out)
    }

    /// The version of `key` just before `revision` (for a watcher's prev_kv).
    pub fn prev_kv(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        let kr = self.index.read().get(key)?.get(revision - 1)?;
        let bytes = self.engine.get(Cf::Kv, &kr.modified.encode()).ok()??;
        Record::decode(&bytes).ok().map(|r| r.kv)
    }
}

/// Picks the keys a range returns, without touching values where it can:
/// count, revision filters, sorts on index fields and the limit all work
/// on the index. Returns the full count and the picked (key, revision) pairs.
fn pick(index: &Index, req: &RangeRequest, at: i64) -> (i64, Vec<(Vec<u8>, KeyRev)>) {
    let filtered = req.min_mod_revision > 0
        || req.max_mod_revision > 0
        || req.min_create_revision > 0
        || req.max_create_revision > 0;
    let sort = sort_plan(req);
    if req.count_only {
        return (
            live_keys(index, &req.key, &req.range_end, at).count() as i64,
            vec![],
        );
    }
    // Fast path: key order, no filters: stop materialising at the limit.
    if sort.is_none() && !filtered {
        let mut count = 0i64;
        let mut picked = Vec::new();
        for (k, kr) in live_keys(index, &req.key, &req.range_end, at) {
            if req.limit <= 0 || (picked.len() as i64) <= req.limit {
                picked.push((k.clone(), kr));
            }
            count += 1;
        }
        return (count, picked);
    }
    let mut count = 0i64;
    let mut picked = Vec::new();
    for (k, kr) in live_keys(index, &req.key, &req.range_end, at) {
        count += 1;
        let keep = (req.min_mod_revision <= 0 || kr.modified.main >= req.min_mod_revision)
            && (req.max_mod_revision <= 0 || kr.modified.main <= req.max_mod_revision)
            && (req.min_create_revision <= 0 || kr.create_revision >= req.min_create_revision)
            && (req.max_create_revision <= 0 || kr.create_revision <= req.max_create_revision);
        if keep {
            picked.push((k.clone(), kr));
        }
    }
    if let Some((order, target)) = sort {
        if target != SortTarget::Value {
            picked.sort_by(|(ka, a), (kb, b)| {
                let o = match target {
                    SortTarget::Key => ka.cmp(kb),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.modified.cmp(&b.modified),
                    SortTarget::Value => unreachable!("sorted after values are read"),
                };
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
    }
    (count, picked)
}

/// `None` when keys come out in ascending key order as they are; else the
/// order and target to sort by (etcd: a target without an order ascends).
fn sort_plan(req: &RangeRequest) -> Option<(SortOrder, SortTarget)> {
    match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => None,
        (SortOrder::None, t) => Some((SortOrder::Ascend, t)),
        (o, t) => Some((o, t)),
    }
}

/// Reads the values of the picked keys and applies what needs them (value
/// sort, limit, keys_only). `Ok(None)` when a record has vanished.
fn materialize(
    engine: &dyn KvEngine,
    unwritten: Unwritten<'_>,
    req: &RangeRequest,
    count: i64,
    picked: Vec<(Vec<u8>, KeyRev)>,
    budget: &mut ResultBudget,
) -> Result<Option<RangeResponse>> {
    let value_sort = matches!(sort_plan(req), Some((_, SortTarget::Value)));
    let limit = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    let more = picked.len() > limit;
    let to_read = if value_sort {
        picked.len()
    } else {
        picked.len().min(limit)
    };
    let mut kvs = Vec::with_capacity(to_read);
    for (_, kr) in picked.into_iter().take(to_read) {
        match record_at(engine, unwritten, kr.modified)? {
            Some(kv) => {
                budget.take(kv.key.len() + kv.value.len())?;
                kvs.push(kv);
            }
            None => return Ok(None),
        }
    }
    if value_sort {
        let descend = matches!(sort_plan(req), Some((SortOrder::Descend, _)));
        kvs.sort_by(|a, b| {
            let o = a.value.cmp(&b.value);
            if descend {
                o.reverse()
            } else {
                o
            }
        });
        kvs.truncate(limit);
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(Some(RangeResponse { kvs, more, count }))
}

/// State of one batch being applied.
struct WriteCtx<'a> {
    engine: &'a dyn KvEngine,
    config: &'a StoreConfig,
    index: &'a mut Index,
    lessor: &'a mut Lessor,
    batch: WriteBatch,
    pending: Pending,
    /// The newest revision, including this batch's finished writes.
    rev: i64,
    compacted: i64,
    /// The store's published compacted revision, moved before the index is
    /// compacted (see `KvStore::compacted_rev`).
    compacted_rev: &'a AtomicI64,
    /// The write txn in progress: its main revision and next sub revision.
    main: i64,
    sub: i64,
    events: Vec<Event>,
    revisions: Vec<RevisionEvents>,
    compactions: Vec<(i64, Vec<Revision>)>,
}

impl WriteCtx<'_> {
    fn apply_op(&mut self, log_index: u64, op: &WriteOp) -> Result<WriteResult> {
        match op {
            WriteOp::Noop => Ok(WriteResult::Noop),
            WriteOp::Put(p) => {
                check_put_request(self.config, p)?;
                self.check_put_state(p)?;
                self.begin();
                let r = self.put(p);
                self.end();
                Ok(WriteResult::Put(r?))
            }
            WriteOp::DeleteRange(d) => {
                check_range_args(&d.key, &d.range_end)?;
                self.begin();
                let r = self.delete_range(d);
                self.end();
                Ok(WriteResult::DeleteRange(r?))
            }
            WriteOp::Txn(t) => {
                check_txn_request(self.config, t)?;
                let plan = self.plan(t)?;
                self.check_path(t, &plan)?;
                self.begin();
                let r = self.txn(t, &plan);
                self.end();
                Ok(WriteResult::Txn(r?))
            }
            WriteOp::Compact { revision } => self.compact(*revision).map(|_| WriteResult::Compact),
            WriteOp::LeaseGrant { id, ttl } => self.lease_grant(log_index, *id, *ttl),
            WriteOp::LeaseRevoke { id } => {
                if !self.lessor.contains(*id) {
                    return Err(StorageError::LeaseNotFound { id: *id });
                }
                let keys = self.lessor.revoke(*id);
                self.batch.delete(Cf::Lease, id.to_be_bytes());
                self.begin();
                let mut r = Ok(());
                for key in keys {
                    r = r.and(self.delete_one(&key, false).map(|_| ()));
                }
                self.end();
                r.map(|_| WriteResult::LeaseRevoke)
            }
        }
    }

    fn begin(&mut self) {
        self.main = self.rev + 1;
        self.sub = 0;
        self.events.clear();
    }

    /// Closes the write txn: a new revision only if it changed something.
    fn end(&mut self) {
        if self.sub > 0 {
            self.rev = self.main;
            self.revisions.push(RevisionEvents {
                revision: self.main,
                events: std::mem::take(&mut self.events),
            });
        }
    }

    /// The revision reads inside the current txn see: its own writes included.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.rev
        }
    }

    fn next_rev(&mut self) -> Revision {
        let r = Revision::new(self.main, self.sub);
        self.sub += 1;
        r
    }

    /// Adds `record` at `rev` to the batch, with its head; returns where
    /// the record's encoding sits in the batch.
    fn put_record(&mut self, rev: Revision, record: &Record) -> Range<usize> {
        let rev = rev.encode();
        let at = self
            .batch
            .put_with(Cf::Kv, &rev, |buf| record.encode_into(buf));
        let head = at.start..at.start + record.head_len();
        self.batch.put_within(Cf::Head, &rev, head);
        at
    }

    fn latest(&self, key: &[u8]) -> Option<KeyRev> {
        self.index.get(key).and_then(|ki| ki.get(self.read_rev()))
    }

    /// What the state before the write forbids (etcd's `checkRequestPut`).
    fn check_put_state(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && self.latest(&p.key).is_none() {
            return Err(StorageError::KeyNotFound);
        }
        if p.lease != 0 && !self.lessor.contains(p.lease) {
            return Err(StorageError::LeaseNotFound { id: p.lease });
        }
        Ok(())
    }

    fn compares_hold(&self, compares: &[Compare]) -> Result<bool> {
        let at = self.read_rev();
        for c in compares {
            let found: Vec<KeyRev> = live_keys(self.index, &c.key, &c.range_end, at)
                .map(|(_, kr)| kr)
                .collect();
            match compare_passes(self.engine, self.unwritten(), c, &found)? {
                Some(true) => {}
                Some(false) => return Ok(false),
                None => return Err(StorageError::Corrupt("indexed record missing".into())),
            }
        }
        Ok(true)
    }

    fn plan(&self, t: &TxnRequest) -> Result<TxnPlan> {
        let succeeded = self.compares_hold(&t.compare)?;
        let branch = if succeeded { &t.success } else { &t.failure };
        let mut nested = Vec::new();
        for op in branch {
            if let RequestOp::Txn(n) = op {
                nested.push(self.plan(n)?);
            }
        }
        Ok(TxnPlan { succeeded, nested })
    }

    /// Checks the requests on the chosen path against the state before the
    /// txn: every put first, then every range (etcd's `checkRequests`
    /// passes); then that the ranges' results fit `max_txn_result_bytes`.
    fn check_path(&self, t: &TxnRequest, plan: &TxnPlan) -> Result<()> {
        let mut ops = Vec::new();
        path_ops(t, plan, &mut ops);
        for op in &ops {
            if let RequestOp::Put(p) = op {
                self.check_put_state(p)?;
            }
        }
        for op in &ops {
            if let RequestOp::Range(r) = op {
                if r.revision > self.rev {
                    return Err(StorageError::FutureRevision { current: self.rev });
                }
                if r.revision > 0 && r.revision < self.compacted {
                    return Err(StorageError::Compacted {
                        compacted: self.compacted,
                    });
                }
            }
        }
        self.check_result_size(&ops)
    }

    /// Bounds, before the txn writes anything, what its ranges will
    /// return: each range's keys and values at the state before the txn,
    /// plus every put of the txn inside it (a range sees the txn's earlier
    /// writes). With a delete on the path a limit is not trusted (deleted
    /// keys make room for later ones), so the whole range counts.
    fn check_result_size(&self, ops: &[&RequestOp]) -> Result<()> {
        let mut budget = ResultBudget::new(self.config.max_txn_result_bytes);
        let deletes = ops.iter().any(|op| matches!(op, RequestOp::DeleteRange(_)));
        let puts: Vec<&PutRequest> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Put(p) => Some(p),
                _ => None,
            })
            .collect();
        for op in ops {
            let RequestOp::Range(r) = op else { continue };
            if r.count_only {
                continue;
            }
            let whole;
            let req = if deletes && r.limit > 0 {
                whole = RangeRequest {
                    limit: 0,
                    ..r.clone()
                };
                &whole
            } else {
                r
            };
            let at = if r.revision > 0 { r.revision } else { self.rev };
            let (_, picked) = pick(self.index, req, at);
            budget.take_picked(&picked)?;
            let value_sort = matches!(sort_plan(req), Some((_, SortTarget::Value)));
            let to_read = match req.limit {
                limit if limit > 0 && !value_sort => picked.len().min(limit as usize),
                _ => picked.len(),
            };
            for (_, kr) in picked.iter().take(to_read) {
                let kv = record_at(self.engine, self.unwritten(), kr.modified)?
                    .ok_or_else(|| StorageError::Corrupt("indexed record missing".into()))?;
                budget.take(kv.key.len() + kv.value.len())?;
            }
            if r.revision <= 0 {
                for p in &puts {
                    if bounds(&r.key, &r.range_end).is_some_and(|b| b.contains(&p.key)) {
                        budget.take(p.key.len() + p.value.len())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest, plan: &TxnPlan) -> Result<TxnResponse> {
        let branch = if plan.succeeded {
            &t.success
        } else {
            &t.failure
        };
        let mut nested = plan.nested.iter();
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let at = if r.revision > 0 {
                        r.revision
                    } else {
                        self.read_rev()
                    };
                    let (count, picked) = pick(self.index, r, at);
                    let unlimited = &mut ResultBudget::unlimited(); // bounded by check_path
                    let resp =
                        materialize(self.engine, self.unwritten(), r, count, picked, unlimited)?
                            .ok_or_else(|| {
                                StorageError::Corrupt("indexed record missing".into())
                            })?;
                    ResponseOp::Range(resp)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(n) => ResponseOp::Txn(self.txn(n, nested.next().expect("planned"))?),
            });
        }
        Ok(TxnResponse {
            succeeded: plan.succeeded,
            responses,
        })
    }

    fn unwritten(&self) -> Unwritten<'_> {
        Some((&self.batch, &self.pending))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let read_rev = self.read_rev();
        let wants_prev = p.prev_kv || p.ignore_value || p.ignore_lease;
        let unwritten = Some((&self.batch, &self.pending));
        // One walk down the index: the version read, then the new one.
        let (prev_kv, kr, rev) = match self.index.get_mut(p.key.as_slice()) {
            Some(ki) => {
                // Read only when needed: on a large index, the lookup is a cache miss.
                let prev_kv = match wants_prev.then(|| ki.get(read_rev)).flatten() {
                    Some(prev) => record_at(self.engine, unwritten, prev.modified)?,
                    None => None,
                };
                let rev = Revision::new(self.main, self.sub);
                (prev_kv, ki.put(rev), rev)
            }
            None => {
                let rev = Revision::new(self.main, self.sub);
                let mut ki = KeyIndex::default();
                let kr = ki.put(rev);
                self.index.insert(p.key.clone(), ki);
                (None, kr, rev)
            }
        };
        self.sub += 1;
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: kr.create_revision,
            mod_revision: rev.main,
            version: kr.version,
            value: match (&prev_kv, p.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => p.value.clone(),
            },
            lease: match (&prev_kv, p.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => p.lease,
            },
        };
        self.lessor.attach(&p.key, kv.lease);
        let record = Record {
            kv,
            tombstone: false,
        };
        let at = self.put_record(rev, &record);
        self.pending.push((rev, at));
        self.events.push(Event {
            kind: EventKind::Put,
            kv: record.kv,
            prev_kv: None,
        });
        Ok(PutResponse {
            prev_kv: prev_kv.filter(|_| p.prev_kv),
        })
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let at = self.read_rev();
        let keys: Vec<Vec<u8>> = live_keys(self.index, &d.key, &d.range_end, at)
            .map(|(k, _)| k.clone())
            .collect();
        let mut resp = DeleteRangeResponse::default();
        for key in keys {
            if let Some(prev) = self.delete_one(&key, d.prev_kv)? {
                resp.prev_kvs.push(prev);
            }
            resp.deleted += 1;
        }
        Ok(resp)
    }

    /// Tombstones a live key; returns its last version when asked.
    fn delete_one(&mut self, key: &[u8], want_prev: bool) -> Result<Option<KeyValue>> {
        let prev = match self.latest(key) {
            Some(kr) if want_prev => record_at(self.engine, self.unwritten(), kr.modified)?,
            _ => None,
        };
        let rev = self.next_rev();
        let ki = self.index.get_mut(key);
        if !ki.is_some_and(|ki| ki.tombstone(rev)) {
            panic!("delete of a key that is not live: the index is inconsistent");
        }
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..Default::default()
        };
        self.lessor.detach(key);
        let record = Record {
            kv,
            tombstone: true,
        };
        self.put_record(rev, &record);
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: record.kv,
            prev_kv: None,
        });
        Ok(prev)
    }

    fn compact(&mut self, at: i64) -> Result<()> {
        if at > self.rev {
            return Err(StorageError::FutureRevision { current: self.rev });
        }
        if at <= self.compacted {
            return Err(StorageError::AlreadyCompacted {
                compacted: self.compacted,
            });
        }
        self.compacted = at;
        self.compacted_rev.store(at, Ordering::SeqCst);
        let mut keep = Vec::new();
        self.index.retain(|_, ki| !ki.compact(at, &mut keep));
        self.batch
            .put(Cf::Meta, META_COMPACT_SCHEDULED, at.to_be_bytes());
        self.compactions.push((at, keep));
        Ok(())
    }

    fn lease_grant(&mut self, log_index: u64, id: i64, ttl: i64) -> Result<WriteResult> {
        if ttl > MAX_LEASE_TTL {
            return Err(StorageError::LeaseTtlTooLarge { ttl });
        }
        let id = match id {
            0 => {
                // Chosen from the log index, so every member picks the same.
                let mut candidate = splitmix64(log_index) as i64 & i64::MAX;
                while candidate == 0 || self.lessor.contains(candidate) {
                    candidate = splitmix64(candidate as u64) as i64 & i64::MAX;
                }
                candidate
            }
            id if id < 0 => return Err(StorageError::InvalidLeaseId { id }),
            id if self.lessor.contains(id) => return Err(StorageError::LeaseExists { id }),
            id => id,
        };
        self.lessor.grant(id, ttl, Instant::now());
        self.batch
            .put(Cf::Lease, id.to_be_bytes(), ttl.to_be_bytes());
        Ok(WriteResult::LeaseGrant { id, ttl })
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemEngine;

    fn store(config: StoreConfig) -> KvStore {
        KvStore::open(Arc::new(MemEngine::new()), config).expect("open")
    }

    fn apply(s: &KvStore, index: u64, op: WriteOp) -> Result<WriteResult> {
        s.apply(&[(index, &op)]).applied.remove(0).result
    }

    fn put(key: &str, value: &[u8]) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: key.into(),
            value: value.to_vec(),
            ..Default::default()
        })
    }

    fn range(key: &str, range_end: &str) -> RequestOp {
        RequestOp::Range(RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        })
    }

    fn then(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            success,
            ..Default::default()
        }
    }

    /// A chain of `depth` txns, each holding a range and the next one.
    fn chain(depth: usize) -> TxnRequest {
        let mut t = then(vec![range("a", "")]);
        for _ in 1..depth {
            t = then(vec![range("a", ""), RequestOp::Txn(t)]);
        }
        t
    }

    #[test]
    fn deleted_ranges_merge_and_answer_points() {
        let mut d = DeletedRanges::default();
        d.insert(b"m", b""); // the key alone
        d.insert(b"c", b"f");
        d.insert(b"e", b"h"); // overlaps [c, f)
        d.insert(b"z", b"a"); // ends before it starts: nothing
        d.insert(b"x", &[0]); // to the end
        for k in [&b"c"[..], b"d", b"g", b"m", b"x", b"xyz", b"\xff"] {
            assert!(d.contains(k), "{k:?}");
        }
        for k in [&b"a"[..], b"b", b"h", b"l", b"m\0", b"w"] {
            assert!(!d.contains(k), "{k:?}");
        }
        assert_eq!(d.0.len(), 3, "{:?}", d.0);
        let mut e = DeletedRanges::default();
        e.insert(b"a", b"d");
        e.extend(d);
        assert!(e.contains(b"a") && e.contains(b"g") && !e.contains(b"h"));
    }

    #[test]
    fn txn_bounds_per_level_in_all_and_in_depth() {
        let s = store(StoreConfig::default());
        let too_many = Err(StorageError::TooManyOps { max: 128 });
        // etcd's rule: a nested txn has what its parent level left.
        let mut parent: Vec<RequestOp> = (0..64).map(|_| range("a", "")).collect();
        parent.push(RequestOp::Txn(then(
            (0..64).map(|_| range("a", "")).collect(),
        )));
        assert_eq!(s.check_txn(&then(parent.clone())), too_many);
        parent.pop();
        parent.push(RequestOp::Txn(then(
            (0..63).map(|_| range("a", "")).collect(),
        )));
        assert_eq!(s.check_txn(&then(parent)), Ok(()));
        // All levels together: 16 nested txns of 100 ranges each.
        let wide = then(
            (0..16)
                .map(|_| RequestOp::Txn(then((0..100).map(|_| range("a", "")).collect())))
                .collect(),
        );
        assert_eq!(s.check_txn(&wide), too_many);
        // Depth.
        assert_eq!(s.check_txn(&chain(MAX_TXN_DEPTH)), Ok(()));
        assert_eq!(s.check_txn(&chain(MAX_TXN_DEPTH + 1)), too_many);
        // The same bounds hold at apply (an entry proposed without them).
        assert_eq!(apply(&s, 1, WriteOp::Txn(wide)).map(|_| ()), too_many);
        let deep = WriteOp::Txn(chain(MAX_TXN_DEPTH + 1));
        assert_eq!(apply(&s, 2, deep).map(|_| ()), too_many);
        assert_eq!(s.applied_index(), 2);
    }

    #[test]
    fn read_txn_reads_one_revision_without_the_log() {
        let s = store(StoreConfig::default());
        apply(
            &s,
            1,
            WriteOp::Txn(then(vec![put("a", b"1"), put("b", b"2")])),
        )
        .unwrap();
        let rev = s.current_revision();
        let t = TxnRequest {
            compare: vec![Compare {
                key: b"a".to_vec(),
                range_end: vec![],
                result: CompareResult::Equal,
                target: CompareTarget::Value(b"1".to_vec()),
            }],
            success: vec![range("a", "c"), RequestOp::Txn(chain(3))],
            failure: vec![range("b", "")],
        };
        assert!(t.is_read_only());
        let (at, resp) = s.read_txn(&t).unwrap();
        assert_eq!(at, rev);
        assert!(resp.succeeded);
        let ResponseOp::Range(r) = &resp.responses[0] else {
            panic!("{resp:?}")
        };
        assert_eq!(r.kvs.len(), 2);
        assert_eq!((s.current_revision(), s.applied_index()), (rev, 1));
        // A range at a future revision inside it.
        let future = then(vec![RequestOp::Range(RangeRequest {
            key: b"a".to_vec(),
            revision: rev + 1,
            ..Default::default()
        })]);
        assert_eq!(
            s.read_txn(&future),
            Err(StorageError::FutureRevision { current: rev })
        );
        assert!(!then(vec![RequestOp::Txn(then(vec![put("x", b"")]))]).is_read_only());
    }

    #[test]
    fn txn_results_are_bounded_before_anything_is_written() {
        let s = store(StoreConfig {
            max_txn_result_bytes: 64 * 1024,
            ..Default::default()
        });
        let value = vec![b'v'; 10 * 1024];
        apply(
            &s,
            1,
            WriteOp::Put(PutRequest {
                key: b"big".to_vec(),
                value: value.clone(),
                ..Default::default()
            }),
        )
        .unwrap();
        let rev = s.current_revision();
        let too_large = Err(StorageError::TxnResultTooLarge { max: 64 * 1024 });
        // Five reads fit, ten do not: as a read and at apply.
        let reads = |n| (0..n).map(|_| range("big", "")).collect::<Vec<_>>();
        s.read_txn(&then(reads(5))).unwrap();
        assert_eq!(s.read_txn(&then(reads(10))).map(|_| ()), too_large);
        let mut write = reads(10);
        write.push(put("w", b"x"));
        assert_eq!(
            apply(&s, 2, WriteOp::Txn(then(write))).map(|_| ()),
            too_large
        );
        // The txn's own puts count: four reads of a range it adds 10 KiB
        // to (without it they would fit).
        let mut own = vec![put("big2", &value)];
        own.extend((0..4).map(|_| range("big", "big3")));
        assert_eq!(apply(&s, 3, WriteOp::Txn(then(own))).map(|_| ()), too_large);
        assert_eq!(s.current_revision(), rev, "a refused txn wrote");
        let mut ok = reads(5);
        ok.push(put("w", b"x"));
        apply(&s, 4, WriteOp::Txn(then(ok))).unwrap();
        assert_eq!(s.current_revision(), rev + 1);
    }
}
