//! The raft log store: entries, hard state, configuration and snapshot
//! metadata, kept in memory and made durable in an append-only WAL
//! ([`crate::wal`]), implementing raft-rs's [`Storage`].
//!
//! WAL records (kind, payload):
//!
//! ```text
//! ENTRY       eraftpb.Entry       appends it, replacing any entry at or after its index
//! HARD_STATE  eraftpb.HardState   term, vote, commit
//! MEMBERS     LogMembers          configuration, member contexts, index that set them
//! TRUNCATED   index, term (u64 LE) entries up to index are compacted away
//! RESET       index, term (u64 LE) the whole log is replaced by a snapshot at index
//! SNAPSHOT    eraftpb.SnapshotMetadata of the latest snapshot file (empty: none)
//! ```
//!
//! Every segment begins with HARD_STATE, MEMBERS, TRUNCATED and SNAPSHOT, so
//! replaying the segments left after old ones were deleted rebuilds the
//! whole state. The entries after the compacted index stay in memory (etcd
//! keeps them the same way): raft reads them without touching the disk.
//!
//! Worked example: a node checkpoints at index 12,000 with
//! `snapshot_catch_up_entries` = 5,000: its state machine is synced to
//! 12,000, so it drops entries 1..=7,000 and records TRUNCATED (7000, term);
//! segments holding only entries up to 7,000 are deleted. `first_index()` is
//! then 7,001. A follower needing entry 6,000 makes raft ask for a snapshot;
//! none is usable, so the applier takes one (say at 12,500), writes
//! `snap/…12500-….snap` and records its metadata here, and the follower
//! continues from entry 12,501.
//!
//! Only the driver writes (it owns the `RawNode` that owns this store). Each
//! ready batch — new entries and the hard state — is one write with one
//! `fdatasync`.
//!
//! A data folder from before the WAL holds the same state in a RocksDB
//! (`log/`); opening it converts it once ([`migrate_rocksdb_log`]).

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

use crate::error::{Error, Result};
use crate::membership::{Member, Members};
use crate::proto;
use crate::snapshot;
use crate::status::Metrics;
use crate::wal::{RecordPos, Wal};

const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const MEMBERS: u8 = 3;
const TRUNCATED: u8 = 4;
const RESET: u8 = 5;
const SNAPSHOT: u8 = 6;

fn encode_position(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_le_bytes());
    v[8..].copy_from_slice(&term.to_le_bytes());
    v
}

fn decode_position(raw: &[u8]) -> Result<(u64, u64)> {
    let raw: [u8; 16] = raw
        .try_into()
        .map_err(|_| Error::Corrupt(format!("log position: bad length {}", raw.len())))?;
    let (index, term) = raw.split_at(8);
    Ok((
        u64::from_le_bytes(index.try_into().expect("8 bytes")),
        u64::from_le_bytes(term.try_into().expect("8 bytes")),
    ))
}

/// The store's state as replayed from the WAL.
#[derive(Default)]
struct Replayed {
    hard_state: HardState,
    members: Members,
    conf_index: u64,
    truncated: (u64, u64),
    snapshot: Option<SnapshotMetadata>,
    entries: VecDeque<Entry>,
    /// Where the first of `entries` was read (for the error if it does not
    /// follow the compacted index).
    first_at: String,
}

impl Replayed {
    /// Applies one record; returns the index of the entry it wrote, if any.
    /// Refuses what the store never writes: a segment not beginning with its
    /// header, an entry at or below the compacted index, an entry leaving a
    /// gap after the one before it.
    fn apply(&mut self, pos: RecordPos<'_>, kind: u8, payload: &[u8]) -> Result<Option<u64>> {
        if pos.offset == 0 && kind != HARD_STATE {
            return Err(Error::Corrupt(format!(
                "the segment begins with a record of kind {kind}, not its header \
                 (a hard state record)"
            )));
        }
        match kind {
            ENTRY => {
                let e = Entry::parse_from_bytes(payload)?;
                let index = e.index;
                if index <= self.truncated.0 {
                    return Err(Error::Corrupt(format!(
                        "entry {index} is at or below the compacted index {}",
                        self.truncated.0
                    )));
                }
                if let Some(back) = self.entries.back().map(|b| b.index) {
                    if index > back + 1 {
                        return Err(Error::Corrupt(format!(
                            "entry {index} leaves a gap after entry {back}"
                        )));
                    }
                }
                if self.entries.front().is_none_or(|f| index <= f.index) {
                    self.first_at = pos.to_string();
                }
                push_entry(&mut self.entries, e);
                return Ok(Some(index));
            }
            HARD_STATE => self.hard_state = HardState::parse_from_bytes(payload)?,
            MEMBERS => {
                let m = proto::LogMembers::decode(payload)?;
                let conf_state = ConfState::parse_from_bytes(&m.conf_state)?;
                self.members = Members::from_proto(conf_state, &m.members);
                self.conf_index = m.conf_index;
            }
            TRUNCATED => {
                self.truncated = decode_position(payload)?;
                while self
                    .entries
                    .front()
                    .is_some_and(|e| e.index <= self.truncated.0)
                {
                    self.entries.pop_front();
                }
            }
            RESET => {
                self.truncated = decode_position(payload)?;
                self.entries.clear();
            }
            SNAPSHOT if payload.is_empty() => self.snapshot = None,
            SNAPSHOT => self.snapshot = Some(SnapshotMetadata::parse_from_bytes(payload)?),
            other => {
                return Err(Error::Corrupt(format!(
                    "unknown raft WAL record kind {other}"
                )))
            }
        }
        Ok(None)
    }

    /// The entries left once replay is done: exactly those after the
    /// compacted index, without a hole.
    fn finish(&mut self) -> Result<()> {
        while self
            .entries
            .front()
            .is_some_and(|e| e.index <= self.truncated.0)
        {
            self.entries.pop_front();
        }
        match self.entries.front() {
            Some(e) if e.index != self.truncated.0 + 1 => Err(Error::Corrupt(format!(
                "{}: raft log hole: entries resume at {} after the compacted index {}",
                self.first_at, e.index, self.truncated.0
            ))),
            _ => Ok(()),
        }
    }
}

/// Appends `e` to a contiguous run of entries (or one following it): an
/// entry at or before the run's end replaces that suffix (a new leader's log
/// wins); one before its start replaces it all (the entries before the
/// run were in a deleted segment).
fn push_entry(entries: &mut VecDeque<Entry>, e: Entry) {
    if let Some(front) = entries.front().map(|f| f.index) {
        if e.index < front {
            entries.clear();
        } else {
            entries.truncate((e.index - front) as usize);
        }
    }
    entries.push_back(e);
}

/// The state in memory runs ahead of the disk only in a store whose WAL
/// write failed, and such a WAL refuses every later write.
pub(crate) struct LogStore {
    wal: Wal,
    snap_dir: PathBuf,
    sync: bool,
    metrics: Arc<Metrics>,
    hard_state: HardState,
    members: Members,
    /// Index of the entry that produced `members` (0 = bootstrap).
    conf_index: u64,
    /// The last compacted entry: (index, term).
    truncated: (u64, u64),
    /// The latest snapshot; its data is the envelope (the image stays in
    /// its file).
    snapshot: Option<Snapshot>,
    /// Every entry after `truncated`, in order.
    entries: VecDeque<Entry>,
    /// Set when raft asked for a snapshot we could not give; the driver then
    /// asks the state machine for a fresh one.
    snapshot_wanted: AtomicBool,
}

impl LogStore {
    /// Opens (or creates) the store under `dir` (`dir/wal` and `dir/snap`).
    pub fn open(dir: &Path, sync: bool, metrics: Arc<Metrics>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let snap_dir = dir.join("snap");
        std::fs::create_dir_all(&snap_dir)?;
        migrate_rocksdb_log(dir)?;
        let mut state = Replayed::default();
        let wal = Wal::open(&dir.join("wal"), |pos, kind, payload| {
            state.apply(pos, kind, payload)
        })?;
        state.finish()?;
        let snapshot = match state.snapshot {
            Some(meta) => {
                let data = snapshot::read_envelope(&snap_dir, meta.index, meta.term)?;
                let mut s = Snapshot::default();
                s.set_metadata(meta);
                s.data = data;
                Some(s)
            }
            None => None,
        };
        snapshot::remove_older(
            &snap_dir,
            snapshot
                .as_ref()
                .map(|s| (s.get_metadata().index, s.get_metadata().term)),
            true,
        );
        let mut store = LogStore {
            wal,
            snap_dir,
            sync,
            metrics,
            hard_state: state.hard_state,
            members: state.members,
            conf_index: state.conf_index,
            truncated: state.truncated,
            snapshot,
            entries: state.entries,
            snapshot_wanted: AtomicBool::new(false),
        };
        store.push_header()?;
        store.wal.write(true)?;
        Ok(store)
    }

    /// Pushes the records that restate the whole state but the entries: the
    /// beginning of every segment.
    fn push_header(&mut self) -> Result<()> {
        self.wal
            .push(HARD_STATE, &self.hard_state.write_to_bytes()?);
        self.push_members()?;
        self.wal.push(
            TRUNCATED,
            &encode_position(self.truncated.0, self.truncated.1),
        );
        let meta = match &self.snapshot {
            Some(s) => s.get_metadata().write_to_bytes()?,
            None => Vec::new(),
        };
        self.wal.push(SNAPSHOT, &meta);
        Ok(())
    }

    fn push_members(&mut self) -> Result<()> {
        let record = proto::LogMembers {
            conf_index: self.conf_index,
            conf_state: self.members.conf_state.write_to_bytes()?.into(),
            members: self.members.to_proto(),
        };
        self.wal.push(MEMBERS, &record.encode_to_vec());
        Ok(())
    }

    /// Writes the pushed records (one `fdatasync` when `sync` and the store
    /// syncs at all).
    fn write(&mut self, sync: bool) -> Result<()> {
        let sync = sync && self.sync;
        let start = Instant::now();
        self.wal.write(sync)?;
        if sync {
            self.metrics.observe_fsync(start.elapsed());
        }
        Ok(())
    }

    /// Where every change begins, while the state in memory is exactly what
    /// is on disk: drops records an earlier change pushed but failed before
    /// writing, and if the segment is full starts a new one, beginning with
    /// the current state, and deletes the segments compacted away. (A header
    /// written after a change's records but from the state before it would
    /// undo the change on replay.)
    fn begin_change(&mut self) -> Result<()> {
        self.wal.discard_pushed();
        if self.wal.is_full() {
            self.push_header()?;
            self.wal.cut()?;
            self.wal.remove_through(self.truncated.0)?;
        }
        Ok(())
    }

    fn last_entry_index(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }

    /// Whether this store holds a raft state (a node that ran before, or one
    /// that received a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.hard_state != HardState::default()
            || self.members.conf_state != ConfState::default()
            || self.last_entry_index() > 0
    }

    /// Makes a fresh store the first state of a new cluster: the
    /// configuration `peers`, as if an entry (1, 1) had set it, and nothing
    /// else. A node joining later gets it through a snapshot.
    pub fn bootstrap(&mut self, peers: &[Member]) -> Result<()> {
        self.begin_change()?;
        self.hard_state = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        self.members = Members::from_initial(peers);
        self.conf_index = 1;
        self.truncated = (1, 1);
        self.entries.clear();
        self.push_header()?;
        self.write(true)
    }

    /// Persists one ready's new entries and hard state: one write, one
    /// fsync (when `sync`).
    pub fn persist(&mut self, entries: &[Entry], hs: Option<&HardState>, sync: bool) -> Result<()> {
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        self.begin_change()?;
        if let Some(first) = entries.first() {
            if first.index <= self.truncated.0 {
                return Err(Error::Storage(format!(
                    "append at {} overwrites compacted log (truncated at {})",
                    first.index, self.truncated.0
                )));
            }
            if first.index > self.last_entry_index() + 1 {
                return Err(Error::Storage(format!(
                    "append at {} leaves a gap after {}",
                    first.index,
                    self.last_entry_index()
                )));
            }
            for e in entries {
                self.wal.push_entry(ENTRY, e.index, |buf| {
                    e.write_to_vec(buf)?;
                    Ok(())
                })?;
            }
        }
        if let Some(hs) = hs {
            self.wal.push(HARD_STATE, &hs.write_to_bytes()?);
        }
        self.write(sync)?;
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        for e in entries {
            push_entry(&mut self.entries, e.clone());
        }
        Ok(())
    }

    /// Records a newer commit index, in memory only: the next hard state
    /// record or segment header carries it to disk. Losing it costs nothing:
    /// raft learns the commit index again, and on start the state machine's
    /// applied index raises it ([`LogStore::raise_commit`]).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Records the configuration after the change at `index`, durably.
    pub fn set_members(&mut self, members: Members, index: u64) -> Result<()> {
        self.begin_change()?;
        self.members = members;
        self.conf_index = index;
        self.push_members()?;
        self.write(true)
    }

    /// Installs a snapshot received from the leader (the transport wrote
    /// its file): drops the whole log, and moves the configuration to the
    /// snapshot's.
    pub fn apply_snapshot(&mut self, snap: &Snapshot, members: Members) -> Result<()> {
        self.begin_change()?;
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        if snapshot::read_envelope(&self.snap_dir, index, term)? != snap.data {
            return Err(Error::Corrupt(format!(
                "snapshot file {index}-{term} does not match the snapshot raft installs"
            )));
        }
        self.wal.push(RESET, &encode_position(index, term));
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.hard_state.term = self.hard_state.term.max(term);
        self.members = members;
        self.conf_index = index;
        self.truncated = (index, term);
        self.entries.clear();
        self.snapshot = Some(snap.clone());
        // The rest of the new state, restated as a segment begins.
        self.push_header()?;
        self.write(true)?;
        snapshot::remove_older(&self.snap_dir, Some((index, term)), false);
        Ok(())
    }

    /// Records a snapshot the state machine took (its file is already
    /// written) and compacts the log below it, keeping `catch_up` entries.
    /// Returns false if the snapshot is not newer than the current one.
    pub fn record_snapshot(&mut self, snap: Snapshot, catch_up: u64) -> Result<bool> {
        self.begin_change()?;
        let meta = snap.get_metadata().clone();
        let current = self.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if meta.index <= current
            || meta.index < self.truncated.0
            || meta.index > self.last_entry_index()
        {
            if meta.index != current {
                let file = self
                    .snap_dir
                    .join(snapshot::file_name(meta.index, meta.term));
                if let Err(e) = std::fs::remove_file(&file) {
                    tracing::warn!(file = %file.display(), error = %e, "removing an unused snapshot");
                }
            }
            return Ok(false);
        }
        self.wal.push(SNAPSHOT, &meta.write_to_bytes()?);
        let compact_to = meta.index.saturating_sub(catch_up);
        let truncated = if compact_to > self.truncated.0 {
            let position = (compact_to, raft::Storage::term(self, compact_to)?);
            self.wal
                .push(TRUNCATED, &encode_position(position.0, position.1));
            position
        } else {
            self.truncated
        };
        self.write(true)?;
        self.compact(truncated)?;
        snapshot::remove_older(&self.snap_dir, Some((meta.index, meta.term)), false);
        self.snapshot = Some(snap);
        self.snapshot_wanted.store(false, Ordering::Relaxed);
        Ok(true)
    }

    /// Drops the entries up to `truncated` (already recorded) from memory
    /// and the segments that held only them from disk.
    fn compact(&mut self, truncated: (u64, u64)) -> Result<()> {
        self.truncated = truncated;
        while self.entries.front().is_some_and(|e| e.index <= truncated.0) {
            self.entries.pop_front();
        }
        self.wal.remove_through(truncated.0)
    }

    /// Compacts the log below a checkpoint at `index` (the state machine is
    /// durable up to it), keeping `catch_up` entries. A snapshot older than
    /// the new first entry can no longer bring a follower up to the log, so
    /// it is dropped.
    pub fn record_checkpoint(&mut self, index: u64, term: u64, catch_up: u64) -> Result<()> {
        self.begin_change()?;
        if index > self.last_entry_index() || raft::Storage::term(self, index).ok() != Some(term) {
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
        self.wal
            .push(TRUNCATED, &encode_position(truncated.0, truncated.1));
        if stale.is_some() {
            self.wal.push(SNAPSHOT, &[]);
        }
        self.write(true)?;
        self.compact(truncated)?;
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

    /// Raises the commit index to what the state machine already applied
    /// (its writes may have outlived the last hard state record).
    pub fn raise_commit(&mut self, applied: u64) -> Result<()> {
        if applied > self.last_entry_index() {
            return Err(Error::Corrupt(format!(
                "state machine applied index {applied} is beyond the raft log (last index {})",
                self.last_entry_index()
            )));
        }
        self.set_commit(applied);
        Ok(())
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
        if high > self.last_entry_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.truncated.0 + 1;
        let mut out = Vec::with_capacity(high.saturating_sub(low) as usize);
        let mut size = 0u64;
        for e in self
            .entries
            .range((low - first) as usize..(high.max(low) - first) as usize)
        {
            size += protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.truncated.0 - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_entry_index())
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

/// Converts a raft log kept in a RocksDB (`dir/log`, from before the WAL):
/// its state and entries become the first WAL segment, written under
/// `wal.tmp` and renamed into place, then the RocksDB is deleted. A crash
/// at any point leaves either the old log or the complete WAL.
fn migrate_rocksdb_log(dir: &Path) -> Result<()> {
    let old = dir.join("log");
    if !old.exists() {
        return Ok(());
    }
    let wal_dir = dir.join("wal");
    if !wal_dir.exists() {
        let tmp = dir.join("wal.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), &old, false)?;
        let get = |key: &[u8]| -> Result<Vec<u8>> { Ok(db.get(key)?.unwrap_or_default()) };
        let be = |raw: &[u8]| -> Result<u64> {
            let raw: [u8; 8] = raw
                .try_into()
                .map_err(|_| Error::Corrupt("old raft log: bad integer".into()))?;
            Ok(u64::from_be_bytes(raw))
        };
        let conf_index = match get(b"m/conf_index")? {
            raw if raw.is_empty() => 0,
            raw => be(&raw)?,
        };
        let truncated = match get(b"m/truncated")? {
            raw if raw.is_empty() => (0, 0),
            raw if raw.len() == 16 => (be(&raw[..8])?, be(&raw[8..])?),
            _ => return Err(Error::Corrupt("old raft log: truncated state".into())),
        };
        let members = proto::LogMembers {
            conf_index,
            conf_state: get(b"m/conf_state")?.into(),
            members: proto::MemberSet::decode(&get(b"m/members")?[..])?.members,
        };
        let mut wal = Wal::open(&tmp, |_, _, _| Ok(None))?;
        wal.push(HARD_STATE, &get(b"m/hard_state")?);
        wal.push(MEMBERS, &members.encode_to_vec());
        wal.push(TRUNCATED, &encode_position(truncated.0, truncated.1));
        wal.push(SNAPSHOT, &get(b"m/snapshot")?);
        let mut entries = 0u64;
        for item in db.prefix_iterator(b"e") {
            let (key, value) = item?;
            if key.len() != 9 || key[0] != b'e' {
                break;
            }
            let index = be(&key[1..])?;
            if index <= truncated.0 {
                // Compacted (replay would refuse it).
                continue;
            }
            wal.push_entry(ENTRY, index, |buf| {
                buf.extend_from_slice(&value);
                Ok(())
            })?;
            entries += 1;
        }
        wal.write(true)?;
        drop(wal);
        std::fs::rename(&tmp, &wal_dir)?;
        std::fs::File::open(dir)?.sync_all()?;
        tracing::info!(dir = %dir.display(), entries, "converted the RocksDB raft log to a WAL");
    }
    std::fs::remove_dir_all(&old)?;
    Ok(())
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
        let data = snapshot::write_test_file(s.snap_dir(), 8, 3, &members, b"img");
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
        let data = snapshot::write_test_file(s.snap_dir(), 10, 2, &members, b"img");
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
        // The transport has received its file.
        let data = snapshot::write_test_file(s.snap_dir(), 50, 4, &members, b"img");
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

    #[test]
    fn small_segments_are_cut_and_deleted_once_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.wal.set_segment_bytes(1);
        s.bootstrap(&[Member::voter(1, "a")]).unwrap();
        for i in 2..=40 {
            // Each with a newer hard state: a segment's header must not
            // bring an older one back.
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: i - 1,
                ..Default::default()
            };
            s.persist(&[entry(i, 2)], Some(&hs), true).unwrap();
        }
        // A new leader replaces 31..=40 across a segment boundary.
        let es: Vec<_> = (31..=35).map(|i| entry(i, 3)).collect();
        s.persist(&es, None, true).unwrap();
        let before = s.wal.segments();
        assert!(before > 5, "{before} segments");
        s.record_checkpoint(30, 2, 5).unwrap();
        let after = s.wal.segments();
        assert!(after < before, "{before} -> {after} segments");
        drop(s);

        let s = open(dir.path());
        assert_eq!(s.first_index().unwrap(), 26);
        assert_eq!(s.last_index().unwrap(), 35);
        assert_eq!(s.term(25).unwrap(), 2);
        let got = s
            .entries(26, 36, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            (26..=35)
                .map(|i| (i, if i > 30 { 3 } else { 2 }))
                .collect::<Vec<_>>()
        );
        assert_eq!(&got[0].data[..], b"e26");
        assert_eq!(s.members().list().len(), 1);
        assert_eq!((s.hard_state().vote, s.hard_state().commit), (1, 39));
    }

    /// A store with entries 2..=5 after its bootstrap, then one more
    /// segment holding `records`; its open's `Corrupt` message.
    fn corrupt_after(records: &[(u8, Vec<u8>)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.bootstrap(&[Member::voter(1, "a")]).unwrap();
        let es: Vec<_> = (2..=5).map(|i| entry(i, 2)).collect();
        s.persist(&es, None, true).unwrap();
        drop(s);
        let mut wal = Wal::open(&dir.path().join("wal"), |_, _, _| Ok(None)).unwrap();
        for (kind, payload) in records {
            wal.push(*kind, payload);
        }
        wal.write(true).unwrap();
        drop(wal);
        match LogStore::open(dir.path(), false, Arc::new(Metrics::default())) {
            Err(Error::Corrupt(m)) => m,
            Err(e) => panic!("not Corrupt: {e}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[test]
    fn bad_records_are_corruption_with_their_place() {
        let header = (HARD_STATE, HardState::default().write_to_bytes().unwrap());
        let bytes = |e: Entry| e.write_to_bytes().unwrap();
        for (records, want) in [
            (
                vec![header.clone(), (9, vec![1])],
                "unknown raft WAL record kind 9",
            ),
            (vec![header.clone(), (ENTRY, vec![0xff, 0xff])], ""),
            (
                vec![(ENTRY, bytes(entry(6, 2)))],
                "begins with a record of kind 1, not its header",
            ),
            (
                vec![header.clone(), (ENTRY, bytes(entry(8, 2)))],
                "entry 8 leaves a gap after entry 5",
            ),
            (
                vec![header.clone(), (ENTRY, bytes(entry(1, 2)))],
                "entry 1 is at or below the compacted index 1",
            ),
        ] {
            let m = corrupt_after(&records);
            // The new segment is the second (the store's open made the first).
            let offset = if records[0].0 == HARD_STATE {
                9 + records[0].1.len()
            } else {
                0
            };
            let place = format!("0000000000000002.wal at offset {offset}: ");
            assert!(m.contains(&place), "{m}");
            assert!(m.contains(want), "{m}");
        }
    }

    #[test]
    fn a_rocksdb_log_from_before_the_wal_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            let db = rocksdb::DB::open(&opts, dir.path().join("log")).unwrap();
            let hs = HardState {
                term: 3,
                vote: 2,
                commit: 7,
                ..Default::default()
            };
            let members = Members::from_initial(&[Member::voter(1, "a"), Member::voter(2, "b")]);
            db.put(b"m/hard_state", hs.write_to_bytes().unwrap())
                .unwrap();
            db.put(
                b"m/conf_state",
                members.conf_state.write_to_bytes().unwrap(),
            )
            .unwrap();
            db.put(b"m/conf_index", 1u64.to_be_bytes()).unwrap();
            let set = proto::MemberSet {
                members: members.to_proto(),
            };
            db.put(b"m/members", set.encode_to_vec()).unwrap();
            let mut truncated = 4u64.to_be_bytes().to_vec();
            truncated.extend_from_slice(&2u64.to_be_bytes());
            db.put(b"m/truncated", truncated).unwrap();
            for i in 5..=9u64 {
                let mut key = vec![b'e'];
                key.extend_from_slice(&i.to_be_bytes());
                db.put(key, entry(i, 3).write_to_bytes().unwrap()).unwrap();
            }
        }
        let s = open(dir.path());
        assert!(!dir.path().join("log").exists());
        assert_eq!(s.hard_state().vote, 2);
        assert_eq!(s.hard_state().commit, 7);
        assert_eq!(s.members().list().len(), 2);
        assert_eq!(s.conf_index(), 1);
        assert_eq!(s.first_index().unwrap(), 5);
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.last_index().unwrap(), 9);
        assert_eq!(
            &s.entries(9, 10, None, GetEntriesContext::empty(false))
                .unwrap()[0]
                .data[..],
            b"e9"
        );
        assert!(s.latest_snapshot().is_none());
        drop(s);
        assert_eq!(
            open(dir.path()).last_index().unwrap(),
            9,
            "reopens from the WAL"
        );
    }
}
