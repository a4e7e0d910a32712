//! Entry points for the fuzz targets (`fuzz/`), not a stable API: a node's
//! receiving end of the gRPC transport without a running node, the WAL's
//! and the log store's replay of whatever a data folder holds, and real
//! encodings of peer traffic and logs to seed them with.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{Entry, HardState, Message, MessageType, Snapshot};
use raft::Storage as _;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::membership::{Member, Members};
use crate::status::Metrics;
use crate::transport::{Inbox, PeerEvent, INBOX_CAPACITY};
use crate::{proto, snapshot, wal};

/// The largest WAL record (kind and payload).
pub const MAX_RECORD_BYTES: usize = wal::MAX_RECORD_BYTES;

/// The name of WAL segment `seq` (`wal/<name>`).
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// An [`Inbox`] for node `id` receiving snapshots into `snap_dir`, and
/// what it was handed: mount `crate::grpc_service(inbox)` and call it.
pub fn inbox(id: u64, snap_dir: &Path) -> (Inbox, Delivered) {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    (Inbox::new(id, tx, snap_dir.to_path_buf()), Delivered(rx))
}

/// What a fuzzed [`Inbox`] delivered to its (absent) node.
#[derive(Debug)]
pub struct Delivered(mpsc::Receiver<PeerEvent>);

impl Delivered {
    /// The messages delivered since the last call.
    pub fn take(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(ev) = self.0.try_recv() {
            if let PeerEvent::Messages(m) = ev {
                out.extend(m);
            }
        }
        out
    }
}

/// A `Raft.Send` message: one batch of encoded raft messages.
pub fn encode_batch(messages: &[Message]) -> Result<Vec<u8>> {
    let messages = messages
        .iter()
        .map(|m| m.write_to_bytes().map(Bytes::from))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(proto::MessageBatch { messages }.encode_to_vec())
}

/// The `Raft.Snapshot` messages a leader sends for a snapshot at
/// `index`/`term` whose image is `image`, cut in chunks of `chunk` bytes:
/// the first carries the `MsgSnapshot` (`from` → `to`).
pub fn encode_snapshot_stream(
    from: u64,
    to: u64,
    index: u64,
    term: u64,
    image: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let envelope = proto::SnapshotEnvelope {
        members: Members::from_initial(&[Member::voter(from, "http://127.0.0.1:1")]).to_proto(),
        image: Bytes::new(),
        image_size: image.len() as u64,
        image_crc32: crc32fast::hash(image),
    }
    .encode_to_vec();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = term;
    snap.mut_metadata().mut_conf_state().voters = vec![from, to];
    snap.data = envelope.into();
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = to;
    m.term = term;
    m.set_snapshot(snap);
    let mut header = Bytes::from(m.write_to_bytes().expect("a message encodes"));
    let mut pieces: Vec<&[u8]> = image.chunks(chunk.max(1)).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    pieces
        .into_iter()
        .map(|piece| {
            proto::SnapshotChunk {
                message: std::mem::take(&mut header),
                data: Bytes::copy_from_slice(piece),
            }
            .encode_to_vec()
        })
        .collect()
}

/// The image of the snapshot file for `index`/`term` in `snap_dir`, after
/// checking its framing, envelope, image size and checksum.
pub fn read_snapshot_image(snap_dir: &Path, index: u64, term: u64) -> Result<Vec<u8>> {
    let envelope = snapshot::read_envelope(snap_dir, index, term)?;
    let image = snapshot::image(snap_dir, index, term, &envelope)?;
    image.verify()?;
    let mut out = Vec::new();
    image.reader()?.read_to_end(&mut out)?;
    Ok(out)
}

/// Opens the WAL under `dir` with a replay that keeps every record:
/// `(kind, payload)` in order.
pub fn replay_wal(dir: &Path) -> Result<Vec<(u8, Vec<u8>)>> {
    let mut records = Vec::new();
    wal::Wal::open(dir, |_, kind, payload| {
        records.push((kind, payload.to_vec()));
        Ok(None)
    })?;
    Ok(records)
}

/// What an opened log store holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LogState {
    pub hard_state: HardState,
    pub first_index: u64,
    pub last_index: u64,
    /// Every entry from `first_index` to `last_index`.
    pub entries: Vec<Entry>,
    /// The term of `first_index - 1` (the compacted entry).
    pub compacted_term: u64,
}

/// Opens the raft log store under `dir` (`dir/wal`, `dir/snap`) as a node
/// does at start, and reads back all it holds through raft-rs's `Storage`.
pub fn open_log_store(dir: &Path) -> Result<LogState> {
    let store = LogStore::open(dir, false, Arc::new(Metrics::default()))?;
    let state = store.initial_state()?;
    let first_index = store.first_index()?;
    let last_index = store.last_index()?;
    let entries = store.entries(
        first_index,
        last_index + 1,
        u64::MAX,
        raft::GetEntriesContext::empty(false),
    )?;
    let compacted_term = store.term(first_index - 1)?;
    Ok(LogState {
        hard_state: state.hard_state,
        first_index,
        last_index,
        entries,
        compacted_term,
    })
}

/// Writes a real log under `dir`: a bootstrapped single-node store, then
/// `entries` normal entries (payload `data` each) with hard states, as a
/// node persists them.
pub fn write_sample_log(dir: &Path, entries: u64, data: &[u8]) -> Result<()> {
    let mut store = LogStore::open(dir, false, Arc::new(Metrics::default()))?;
    store.bootstrap(&[Member::voter(1, "http://127.0.0.1:1")])?;
    for i in 0..entries {
        let e = Entry {
            index: 2 + i,
            term: 1 + i / 3,
            data: Bytes::copy_from_slice(data),
            ..Default::default()
        };
        let hs = HardState {
            term: e.term,
            vote: 1,
            commit: e.index,
            ..Default::default()
        };
        store.persist(&[e], Some(&hs), false)?;
    }
    Ok(())
}

/// Whether `e` is the corruption error a damaged log must give.
pub fn is_corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt(_))
}
