//! The raft log store: entries, hard state, configuration and snapshot
//! metadata in a RocksDB of its own, implementing raft-rs's [`Storage`].
//!
//! Key layout (one column family):
//!
//! ```text
//! e<index: u64 BE>   eraftpb.Entry       the log, in index order
//! m/hard_state       eraftpb.HardState   term, vote, commit
//! m/conf_state       eraftpb.ConfState   configuration as of m/conf_index
//! m/conf_index       u64 BE
//! m/members          MemberSet           member contexts
//! m/truncated        u64 BE index, u64 BE term: the last compacted entry
//! m/snapshot         eraftpb.SnapshotMetadata of the latest snapshot file
//! ```
//!
//! Worked example: a node checkpoints at index 12,000 with
//! `snapshot_catch_up_entries` = 5,000: its state machine is synced to
//! 12,000, so it deletes entries 1..=7,000 and sets truncated = (7000, term).
//! `first_index()` is then 7,001. A follower needing entry 6,000 makes raft
//! ask for a snapshot; none is usable, so the applier takes one (say at
//! 12,500), writes `snap/…12500-….snap` and records its metadata here, and
//! the follower continues from entry 12,501.
//!
//! Only the driver writes (it owns the `RawNode` that owns this store). Each
//! ready batch — new entries and the hard state — is one RocksDB write batch
//! with one fsync.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::error::{Error, Result};
use crate::membership::{Member, Members};
use crate::proto;
use crate::snapshot;
use crate::status::Metrics;

const HARD_STATE: &[u8] = b"m/hard_state";
const CONF_STATE: &[u8] = b"m/conf_state";
const CONF_INDEX: &[u8] = b"m/conf_index";
const MEMBERS: &[u8] = b"m/members";
const TRUNCATED: &[u8] = b"m/truncated";
const SNAPSHOT: &[u8] = b"m/snapshot";

/// Most recent entries kept in memory: appends to followers and committed
/// entries are read from here instead of RocksDB.
const TAIL_CACHE: usize = 2048;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn decode_u64(raw: &[u8], what: &str) -> Result<u64> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{what}: bad length {}", raw.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) struct LogStore {
    db: DB,
    snap_dir: PathBuf,
    sync: bool,
    metrics: Arc<Metrics>,
    hard_state: HardState,
    members: Members,
    /// Index of the entry that produced `members` (0 = bootstrap).
    conf_index: u64,
    /// The last compacted entry: (index, term).
    truncated: (u64, u64),
    last_index: u64,
    /// The latest snapshot, data included (cheap to clone: `Bytes`).
    snapshot: Option<Snapshot>,
    /// Contiguous entries ending at `last_index`.
    tail: VecDeque<Entry>,
    /// Set when raft asked for a snapshot we could not give; the driver then
    /// asks the state machine for a fresh one.
    snapshot_wanted: AtomicBool,
}

impl LogStore {
    /// Opens (or creates) the store under `dir` (`dir/log` and `dir/snap`).
    pub fn open(dir: &Path, sync: bool, metrics: Arc<Metrics>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let snap_dir = dir.join("snap");
        std::fs::create_dir_all(&snap_dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(2);
        let db = DB::open(&opts, dir.join("log"))?;

        let hard_state = match db.get(HARD_STATE)? {
            Some(raw) => HardState::parse_from_bytes(&raw)?,
            None => HardState::default(),
        };
        let conf_state = match db.get(CONF_STATE)? {
            Some(raw) => ConfState::parse_from_bytes(&raw)?,
            None => ConfState::default(),
        };
        let conf_index = match db.get(CONF_INDEX)? {
            Some(raw) => decode_u64(&raw, "conf_index")?,
            None => 0,
        };
        let contexts = match db.get(MEMBERS)? {
            Some(raw) => proto::MemberSet::decode(&raw[..])?.members,
            None => Vec::new(),
        };
        let truncated = match db.get(TRUNCATED)? {
            Some(raw) if raw.len() == 16 => (
                decode_u64(&raw[..8], "truncated")?,
                decode_u64(&raw[8..], "truncated")?,
            ),
            Some(_) => return Err(Error::Corrupt("truncated state".into())),
            None => (0, 0),
        };
        let last_index = {
            let key = entry_key(u64::MAX);
            let mut it = db.iterator(IteratorMode::From(&key, Direction::Reverse));
            match it.next() {
                Some(item) => {
                    let (k, _) = item?;
                    if k.len() == 9 && k[0] == b'e' {
                        decode_u64(&k[1..], "entry key")?
                    } else {
                        truncated.0
                    }
                }
                None => truncated.0,
            }
        }
        .max(truncated.0);
        let snapshot = match db.get(SNAPSHOT)? {
            Some(raw) => {
                let meta = SnapshotMetadata::parse_from_bytes(&raw)?;
                let data = snapshot::read_file(&snap_dir, meta.index, meta.term)?;
                let mut s = Snapshot::default();
                s.set_metadata(meta);
                s.data = data;
                Some(s)
            }
            None => None,
        };
        snapshot::remove_others(
            &snap_dir,
            snapshot
                .as_ref()
                .map(|s| (s.get_metadata().index, s.get_metadata().term)),
        );
        let mut store = LogStore {
            db,
            snap_dir,
            sync,
            metrics,
            hard_state,
            members: Members::from_proto(conf_state, &contexts),
            conf_index,
            truncated,
            last_index,
            snapshot,
            tail: VecDeque::new(),
            snapshot_wanted: AtomicBool::new(false),
        };
        store.load_tail()?;
        Ok(store)
    }

    fn load_tail(&mut self) -> Result<()> {
        let low = (self.last_index.saturating_sub(TAIL_CACHE as u64) + 1).max(self.truncated.0 + 1);
        if low <= self.last_index {
            let entries = self.read_entries(low, self.last_index + 1, u64::MAX)?;
            self.tail = entries.into();
        }
        Ok(())
    }

    /// Whether this store holds a raft state (a node that ran before, or one
    /// that received a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.hard_state != HardState::default()
            || self.members.conf_state != ConfState::default()
            || self.last_index > 0
    }

    /// Makes a fresh store the first state of a new cluster: the
    /// configuration `peers`, as if an entry (1, 1) had set it, and nothing
    /// else. A node joining later gets it through a snapshot.
    pub fn bootstrap(&mut self, peers: &[Member]) -> Result<()> {
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        let members = Members::from_initial(peers);
        let mut batch = WriteBatch::default();
        batch.put(HARD_STATE, hs.write_to_bytes()?);
        self.put_members(&mut batch, &members, 1)?;
        batch.put(TRUNCATED, Self::encode_truncated(1, 1));
        self.write(batch, true)?;
        self.hard_state = hs;
        self.members = members;
        self.conf_index = 1;
        self.truncated = (1, 1);
        self.last_index = 1;
        Ok(())
    }

    fn encode_truncated(index: u64, term: u64) -> Vec<u8> {
        let mut v = index.to_be_bytes().to_vec();
        v.extend_from_slice(&term.to_be_bytes());
        v
    }

    fn put_members(&self, batch: &mut WriteBatch, members: &Members, index: u64) -> Result<()> {
        batch.put(CONF_STATE, members.conf_state.write_to_bytes()?);
        batch.put(
            MEMBERS,
            proto::MemberSet {
                members: members.to_proto(),
            }
            .encode_to_vec(),
        );
        batch.put(CONF_INDEX, index.to_be_bytes());
        Ok(())
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let sync = sync && self.sync;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        let start = Instant::now();
        self.db.write_opt(batch, &wo)?;
        if sync {
            self.metrics.observe_fsync(start.elapsed());
        }
        Ok(())
    }

    /// Persists one ready's new entries and hard state: one write batch, one
    /// fsync (when `sync`).
    pub fn persist(&mut self, entries: &[Entry], hs: Option<&HardState>, sync: bool) -> Result<()> {
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            if first.index <= self.truncated.0 {
                return Err(Error::Storage(format!(
                    "append at {} overwrites compacted log (truncated at {})",
                    first.index, self.truncated.0
                )));
            }
            if first.index > self.last_index + 1 {
                return Err(Error::Storage(format!(
                    "append at {} leaves a gap after {}",
                    first.index, self.last_index
                )));
            }
            for e in entries {
                batch.put(entry_key(e.index), e.write_to_bytes()?);
            }
            if last.index < self.last_index {
                // A new leader's entries replace a longer uncommitted suffix.
                batch.delete_range(entry_key(last.index + 1), entry_key(self.last_index + 1));
            }
        }
        if let Some(hs) = hs {
            batch.put(HARD_STATE, hs.write_to_bytes()?);
        }
        self.write(batch, sync)?;

        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            while self.tail.back().is_some_and(|e| e.index >= first.index) {
                self.tail.pop_back();
            }
            if self.tail.back().is_some_and(|e| e.index + 1 != first.index) {
                self.tail.clear();
            }
            self.tail.extend(entries.iter().cloned());
            while self.tail.len() > TAIL_CACHE {
                self.tail.pop_front();
            }
            self.last_index = last.index;
        }
        Ok(())
    }

    /// Records a newer commit index (no fsync: it can be recomputed).
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        if commit <= self.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        let mut batch = WriteBatch::default();
        batch.put(HARD_STATE, hs.write_to_bytes()?);
        self.write(batch, false)?;
        self.hard_state = hs;
        Ok(())
    }

    /// Records the configuration after the change at `index`, durably.
    pub fn set_members(&mut self, members: Members, index: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.put_members(&mut batch, &members, index)?;
        self.write(batch, true)?;
        self.members = members;
        self.conf_index = index;
        Ok(())
    }

    /// Installs a snapshot received from the leader: writes its file, drops
    /// the whole log, and moves the configuration to the snapshot's.
    pub fn apply_snapshot(&mut self, snap: &Snapshot, members: Members) -> Result<()> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        snapshot::write_file(&self.snap_dir, index, term, &snap.data)?;
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        let mut batch = WriteBatch::default();
        batch.delete_range(entry_key(0), entry_key(u64::MAX));
        batch.put(HARD_STATE, hs.write_to_bytes()?);
        self.put_members(&mut batch, &members, index)?;
        batch.put(TRUNCATED, Self::encode_truncated(index, term));
        batch.put(SNAPSHOT, meta.write_to_bytes()?);
        self.write(batch, true)?;
        self.hard_state = hs;
        self.members = members;
        self.conf_index = index;
        self.truncated = (index, term);
        self.last_index = index;
        self.tail.clear();
        self.snapshot = Some(snap.clone());
        snapshot::remove_others(&self.snap_dir, Some((index, term)));
        Ok(())
    }

    /// Records a snapshot the state machine took (its file is already
    /// written) and compacts the log below it, keeping `catch_up` entries.
    /// Returns false if the snapshot is not newer than the current one.
    pub fn record_snapshot(&mut self, snap: Snapshot, catch_up: u64) -> Result<bool> {
        let meta = snap.get_metadata().clone();
        let current = self.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if meta.index <= current || meta.index < self.truncated.0 || meta.index > self.last_index {
            if meta.index != current {
                snapshot::remove_others(
                    &self.snap_dir,
                    self.snapshot
                        .as_ref()
                        .map(|s| (s.get_metadata().index, s.get_metadata().term)),
                );
            }
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put(SNAPSHOT, meta.write_to_bytes()?);
        let compact_to = meta.index.saturating_sub(catch_up);
        let mut truncated = self.truncated;
        if compact_to > self.truncated.0 {
            let term = raft::Storage::term(self, compact_to)?;
            batch.delete_range(entry_key(0), entry_key(compact_to + 1));
            batch.put(TRUNCATED, Self::encode_truncated(compact_to, term));
            truncated = (compact_to, term);
        }
        self.write(batch, true)?;
        self.truncated = truncated;
        while self.tail.front().is_some_and(|e| e.index <= truncated.0) {
            self.tail.pop_front();
        }
        snapshot::remove_others(&self.snap_dir, Some((meta.index, meta.term)));
        self.snapshot = Some(snap);
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        Ok(true)
    }

    /// Compacts the log below a checkpoint at `index` (the state machine is
    /// durable up to it), keeping `catch_up` entries. A snapshot older than
    /// the new first entry can no longer bring a follower up to the log, so
    /// it is dropped.
    pub fn record_checkpoint(&mut self, index: u64, term: u64, catch_up: u64) -> Result<()> {
        if index > self.last_index || raft::Storage::term(self, index).ok() != Some(term) {
            return Err(Error::Storage(format!(
                "checkpoint at {index} (term {term}) is not in the log"
            )));
        }
        let compact_to = index.saturating_sub(catch_up);
        if compact_to <= self.truncated.0 {
            return Ok(());
        }
        let truncated = (compact_to, raft::Storage::term(self, compact_to)?);
        let stale = self
            .snapshot
            .as_ref()
            .map(|s| (s.get_metadata().index, s.get_metadata().term))
            .filter(|(index, _)| *index < compact_to);
        let mut batch = WriteBatch::default();
        batch.delete_range(entry_key(0), entry_key(compact_to + 1));
        batch.put(TRUNCATED, Self::encode_truncated(truncated.0, truncated.1));
        if stale.is_some() {
            batch.delete(SNAPSHOT);
        }
        self.write(batch, true)?;
        self.truncated = truncated;
        while self.tail.front().is_some_and(|e| e.index <= truncated.0) {
            self.tail.pop_front();
        }
        if let Some((index, term)) = stale {
            self.snapshot = None;
            // Only its own file: the applier may be writing a newer one.
            let file = self.snap_dir.join(snapshot::file_name(index, term));
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::warn!(file = %file.display(), error = %e, "removing a stale snapshot");
            }
        }
        Ok(())
    }

    /// Raises the persisted commit index to what the state machine already
    /// applied (its writes may have outlived the last hard state write).
    pub fn raise_commit(&mut self, applied: u64) -> Result<()> {
        if applied > self.last_index {
            return Err(Error::Corrupt(format!(
                "state machine applied index {applied} is beyond the raft log (last index {})",
                self.last_index
            )));
        }
        self.set_commit(applied)
    }

    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    pub fn latest_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    pub fn snap_dir(&self) -> &Path {
        &self.snap_dir
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated.0
    }

    fn read_entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut size = 0u64;
        let start = entry_key(low);
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if k.len() != 9 || k[0] != b'e' {
                break;
            }
            let index = decode_u64(&k[1..], "entry key")?;
            if index >= high {
                break;
            }
            let expected = low + out.len() as u64;
            if index != expected {
                return Err(Error::Corrupt(format!(
                    "raft log hole: expected entry {expected}, found {index}"
                )));
            }
            size += v.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            let mut e = Entry::default();
            e.merge_from_bytes(&v)?;
            out.push(e);
        }
        Ok(out)
    }

    fn tail_slice(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        let front = self.tail.front()?.index;
        if low < front {
            return None;
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for e in self
            .tail
            .range((low - front) as usize..(high - front) as usize)
        {
            size += protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

fn storage_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.members.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.tail_slice(low, high, max_size) {
            return Ok(entries);
        }
        self.read_entries(low, high, max_size).map_err(storage_err)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(front) = self.tail.front() {
            if idx >= front.index {
                return Ok(self.tail[(idx - front.index) as usize].term);
            }
        }
        match self.db.get(entry_key(idx)) {
            Ok(Some(raw)) => {
                let mut e = Entry::default();
                e.merge_from_bytes(&raw)?;
                Ok(e.term)
            }
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(storage_err(e.into())),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if let Some(s) = &self.snapshot {
            let meta = s.get_metadata();
            let cs = meta.get_conf_state();
            // The recipient must be in the snapshot's configuration, or raft
            // on its side refuses it (a member added after the snapshot).
            let has_recipient = cs.voters.contains(&to) || cs.learners.contains(&to);
            if meta.index >= request_index && meta.index >= self.truncated.0 && has_recipient {
                return Ok(s.clone());
            }
        }
        self.snapshot_wanted.store(true, Ordering::Relaxed);
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// A snapshot (for raft) of the state machine image at `index`/`term`.
pub(crate) fn make_snapshot(index: u64, term: u64, conf_state: ConfState, data: Bytes) -> Snapshot {
    let mut s = Snapshot::default();
    let meta = s.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    s.data = data;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::from(format!("e{index}")),
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> LogStore {
        LogStore::open(dir, false, Arc::new(Metrics::default())).unwrap()
    }

    #[test]
    fn append_overwrite_compact_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        assert!(!s.is_initialized());
        s.bootstrap(&[Member::voter(1, "a"), Member::voter(2, "b")])
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 2);
        assert_eq!(s.term(1).unwrap(), 1);
        let es: Vec<_> = (2..=10).map(|i| entry(i, 2)).collect();
        let mut hs = s.hard_state().clone();
        hs.term = 2;
        s.persist(&es, Some(&hs), true).unwrap();
        // A new leader replaces 8..=10 with 8..=9 of term 3.
        s.persist(&[entry(8, 3), entry(9, 3)], None, true).unwrap();
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.term(9).unwrap(), 3);
        assert_eq!(
            s.entries(2, 10, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            s.entries(2, 10, Some(1), GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1,
            "max_size still returns one entry"
        );
        // Snapshot at 8 keeping 2 entries: compacts to 6.
        let members = s.members().clone();
        let data = snapshot::encode_envelope(&members, b"img".to_vec());
        snapshot::write_file(s.snap_dir(), 8, 3, &data).unwrap();
        let snap = make_snapshot(8, 3, members.conf_state.clone(), data);
        assert!(s.record_snapshot(snap, 2).unwrap());
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.term(6).unwrap(), 2);
        assert!(matches!(
            s.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.snapshot(0, 1).unwrap().get_metadata().index, 8);
        assert!(s.snapshot(9, 1).is_err());
        assert!(s.take_snapshot_wanted());
        assert!(
            s.snapshot(0, 3).is_err(),
            "3 is not in the snapshot's config"
        );
        drop(s);

        let s = open(dir.path());
        assert!(s.is_initialized());
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(s.hard_state().term, 2);
        assert_eq!(s.members().list().len(), 2);
        let got = s
            .entries(7, 10, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![2, 3, 3]
        );
        assert_eq!(s.latest_snapshot().unwrap().get_metadata().index, 8);
        assert_eq!(&s.latest_snapshot().unwrap().data[..], &data_of(&s)[..]);
    }

    fn data_of(s: &LogStore) -> Bytes {
        s.latest_snapshot().unwrap().data.clone()
    }

    #[test]
    fn a_checkpoint_compacts_the_log_and_drops_an_older_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.bootstrap(&[Member::voter(1, "a")]).unwrap();
        let es: Vec<_> = (2..=30).map(|i| entry(i, 2)).collect();
        s.persist(&es, None, true).unwrap();
        let members = s.members().clone();
        let data = snapshot::encode_envelope(&members, b"img".to_vec());
        snapshot::write_file(s.snap_dir(), 10, 2, &data).unwrap();
        let snap = make_snapshot(10, 2, members.conf_state.clone(), data);
        assert!(s.record_snapshot(snap, 5).unwrap());
        assert_eq!(s.first_index().unwrap(), 6);

        // Not in the log: refused, nothing changes.
        assert!(s.record_checkpoint(31, 2, 5).is_err());
        assert!(s.record_checkpoint(20, 7, 5).is_err());
        assert_eq!(s.first_index().unwrap(), 6);

        // Below the snapshot's index (compacts to 9): the snapshot stays.
        s.record_checkpoint(14, 2, 5).unwrap();
        assert_eq!(s.first_index().unwrap(), 10);
        assert_eq!(s.latest_snapshot().unwrap().get_metadata().index, 10);
        // Past it (compacts to 20): the snapshot can no longer bring a
        // follower up to the log, so its metadata and file go.
        s.record_checkpoint(25, 2, 5).unwrap();
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.term(20).unwrap(), 2);
        assert!(matches!(
            s.entries(20, 22, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(s.latest_snapshot().is_none());
        assert!(!dir
            .path()
            .join("snap")
            .join(snapshot::file_name(10, 2))
            .exists());
        assert!(s.snapshot(0, 1).is_err());
        assert!(s.take_snapshot_wanted(), "a snapshot is asked for instead");
        // An older checkpoint changes nothing.
        s.record_checkpoint(22, 2, 5).unwrap();
        assert_eq!(s.first_index().unwrap(), 21);
        drop(s);

        let s = open(dir.path());
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.last_index().unwrap(), 30);
        assert!(s.latest_snapshot().is_none());
    }

    #[test]
    fn applying_a_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.persist(&[entry(1, 1), entry(2, 1)], None, true).unwrap();
        let members = Members::from_initial(&[Member::voter(1, "a")]);
        let data = snapshot::encode_envelope(&members, b"img".to_vec());
        let snap = make_snapshot(50, 4, members.conf_state.clone(), data);
        s.apply_snapshot(&snap, members).unwrap();
        assert_eq!(s.first_index().unwrap(), 51);
        assert_eq!(s.last_index().unwrap(), 50);
        assert_eq!(s.term(50).unwrap(), 4);
        assert_eq!(s.hard_state().commit, 50);
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.last_index().unwrap(), 50);
        assert_eq!(s.latest_snapshot().unwrap().get_metadata().term, 4);
    }
}
