//! The raft crate's untrusted input: what a peer sends to the gRPC
//! transport's `Raft.Send` (batches of raft messages) and `Raft.Snapshot`
//! (a `MsgSnapshot` and its image in chunks, CRC-checked against the
//! envelope), called in process as tonic serves them; and the WAL a node
//! replays at start, given arbitrary bytes as its segments.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ballast_raft::fuzz_api::{
    encode_batch, inbox, is_corrupt, open_log_store, read_snapshot_image, replay_wal, segment_name,
    Delivered, LogState, MAX_RECORD_BYTES,
};
use ballast_raft::{grpc_service, Error, Inbox, RaftMessage};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use protobuf::Message as _;
use raft::prelude::MessageType;
use tonic::codegen::http;
use tower::ServiceExt as _;

/// The node the peer traffic is addressed to.
const NODE: u64 = 2;

struct Peer {
    runtime: tokio::runtime::Runtime,
    inbox: Inbox,
    delivered: Mutex<Delivered>,
    snap_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn peer() -> &'static Peer {
    static P: OnceLock<Peer> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let snap_dir = dir.path().join("snap");
        std::fs::create_dir_all(&snap_dir).expect("snap dir");
        let (inbox, delivered) = inbox(NODE, &snap_dir);
        Peer {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            inbox,
            delivered: Mutex::new(delivered),
            snap_dir,
            _dir: dir,
        }
    })
}

/// Calls `method` of the node's raft service with `body` as the request's
/// gRPC body: the call's gRPC status code.
fn call(p: &Peer, method: &str, body: &[u8]) -> i32 {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1/ballast.raft.Raft/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a request");
    p.runtime.block_on(async {
        let resp = grpc_service(p.inbox.clone())
            .oneshot(req)
            .await
            .expect("the service answers");
        assert_eq!(resp.status(), http::StatusCode::OK, "gRPC answers 200");
        let head = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await.expect("the body");
        let status = head
            .or_else(|| {
                collected
                    .trailers()
                    .and_then(|t| t.get("grpc-status").cloned())
            })
            .expect("a grpc-status");
        status
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a numeric grpc-status")
    })
}

/// The whole input is the body of a `Raft.Send` call (gRPC frames of
/// `MessageBatch`es). Never panics; the node is handed only messages
/// addressed to it; and for a body of well-framed batches, an OK and
/// exactly the messages of the batches that raft-rs decodes and that are
/// addressed to the node, in order (undecodable ones are dropped).
pub fn raft_messages(data: &[u8]) {
    let p = peer();
    let code = call(p, "Send", data);
    let got = p.delivered.lock().unwrap_or_else(|e| e.into_inner()).take();
    assert!(
        got.iter().all(|m| m.to == NODE),
        "a message for another node"
    );
    let Some(frames) = grpc_frames(data) else {
        return;
    };
    let mut want = Vec::new();
    let mut strict = true;
    for frame in frames {
        let Some(fields) = fields(frame) else {
            strict = false;
            break;
        };
        for (field, value) in fields {
            match (field, value) {
                (1, Value::Bytes(raw)) => {
                    // Undecodable ones are dropped (and logged).
                    if let Ok(m) = RaftMessage::parse_from_bytes(raw) {
                        if m.to == NODE {
                            want.push(m);
                        }
                    }
                }
                _ => strict = false,
            }
        }
    }
    // Otherwise a field this reader does not follow (prost may skip it).
    if strict {
        assert_eq!(code, 0, "well-framed batches refused");
        assert_eq!(got, want, "delivered messages");
    }
}

/// The whole input is the body of a `Raft.Snapshot` call (gRPC frames of
/// `SnapshotChunk`s). Never panics and never leaves a `.part` file; it
/// succeeds exactly when the first chunk's message is a `MsgSnapshot` whose
/// envelope declares the size and CRC-32 of the chunks' data (then the
/// snapshot file holds that image and verifies, and the message reaches the
/// node) and is addressed to this node; anything else is refused, leaving
/// no file and handing the node nothing.
pub fn raft_snapshot(data: &[u8]) {
    let p = peer();
    let code = call(p, "Snapshot", data);
    let got = p.delivered.lock().unwrap_or_else(|e| e.into_inner()).take();
    let files: Vec<String> = std::fs::read_dir(&p.snap_dir)
        .expect("snap dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_snapshot(p, data, code, &got, &files)
    }));
    for f in &files {
        let _ = std::fs::remove_file(p.snap_dir.join(f));
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn check_snapshot(p: &Peer, data: &[u8], code: i32, got: &[RaftMessage], files: &[String]) {
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".part") || f.ends_with(".tmp")),
        "unfinished files left behind: {files:?}"
    );
    let expected = expect_snapshot(data);
    if code != 0 {
        assert!(got.is_empty(), "a refused snapshot was delivered");
        assert!(files.is_empty(), "a refused snapshot left {files:?}");
        if let Some(Ok((_, image))) = &expected {
            panic!(
                "a well-formed snapshot of {} bytes was refused (code {code})",
                image.len()
            );
        }
        return;
    }
    assert!(got.len() <= 1, "one snapshot, {} messages", got.len());
    if let Some(m) = got.first() {
        assert_eq!(m.get_msg_type(), MessageType::MsgSnapshot);
        assert_eq!(m.to, NODE);
    }
    let (m, image) = match expected {
        Some(Ok((m, image))) => (m, Some(image)),
        Some(Err(why)) => panic!("accepted a bad snapshot: {why}"),
        None => match got.first() {
            Some(m) => (m.clone(), None),
            None => panic!("a snapshot was accepted but not delivered"),
        },
    };
    assert_eq!(got, std::slice::from_ref(&m), "the delivered message");
    let meta = m.get_snapshot().get_metadata();
    let name = snapshot_file_name(meta.index, meta.term);
    assert_eq!(files, [name], "the snapshot file");
    let stored = read_snapshot_image(&p.snap_dir, meta.index, meta.term)
        .unwrap_or_else(|e| panic!("the received snapshot file does not verify: {e}"));
    if let Some(image) = image {
        assert!(stored == image, "the stored image differs from the chunks");
    }
}

fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:020}.snap")
}

/// For a snapshot stream this module can judge: `Ok((message, image))`
/// when it must be accepted, `Err(why)` when it must be refused; `None`
/// when the framing or a message uses something this reader does not
/// follow (compression, unknown or repeated fields, groups).
fn expect_snapshot(data: &[u8]) -> Option<Result<(RaftMessage, Vec<u8>), String>> {
    let frames = grpc_frames(data)?;
    let mut header: Option<&[u8]> = None;
    let mut image = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let mut message = None;
        for (field, value) in fields(frame)? {
            match (field, value) {
                (1, Value::Bytes(b)) if message.is_none() => message = Some(b),
                (2, Value::Bytes(b)) => image.extend_from_slice(b),
                _ => return None,
            }
        }
        if i == 0 {
            header = Some(message.unwrap_or_default());
        }
    }
    let Some(header) = header else {
        return Some(Err("empty snapshot stream".into()));
    };
    let Ok(m) = RaftMessage::parse_from_bytes(header) else {
        return Some(Err("bad snapshot header".into()));
    };
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Some(Err("not a snapshot message".into()));
    }
    if m.to != NODE {
        return Some(Err(format!("a snapshot for node {}", m.to)));
    }
    let (mut size, mut crc) = (0u64, 0u64);
    for (field, value) in fields(&m.get_snapshot().data)? {
        match (field, value) {
            (1, Value::Bytes(member)) => {
                for (f, v) in fields(member)? {
                    if !matches!((f, v), (1, Value::Varint(_)) | (2, Value::Bytes(_))) {
                        return None;
                    }
                }
            }
            (2, Value::Bytes(_)) => {}
            (3, Value::Varint(v)) => size = v,
            (4, Value::Varint(v)) if v <= u64::from(u32::MAX) => crc = v,
            _ => return None,
        }
    }
    if size != image.len() as u64 {
        return Some(Err(format!(
            "image of {} bytes, {size} declared",
            image.len()
        )));
    }
    if u64::from(crc32fast::hash(&image)) != crc {
        return Some(Err("image checksum mismatch".into()));
    }
    Some(Ok((m, image)))
}

/// A gRPC body's uncompressed messages, when it is exactly a sequence of
/// them.
fn grpc_frames(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 5 || data[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let rest = &data[5..];
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    Some(out)
}

/// A protobuf field's value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A protobuf message's fields in order, when they are all varints or
/// length-delimited (anything else: `None`).
fn fields(mut data: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = varint(&mut data)?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return None;
        }
        match key & 7 {
            0 => out.push((field, Value::Varint(varint(&mut data)?))),
            2 => {
                let len = usize::try_from(varint(&mut data)?).ok()?;
                if data.len() < len {
                    return None;
                }
                out.push((field, Value::Bytes(&data[..len])));
                data = &data[len..];
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Byte 0's low bit: two segments (the first closed) cut where bytes 1-2
/// say, or one; the rest is the segments' bytes. The WAL opens or is
/// `Corrupt` (never panics, never another error), and an independent
/// reading of the records decides which:
/// - it opens with exactly the records before the first bad one (nothing
///   after a bad record is ever replayed, nothing before it dropped);
/// - a closed segment must end with its last record, and in the last one
///   a record of length 0 or over the limit, or a whole record with a bad
///   checksum, followed by any non-zero byte is `Corrupt`;
/// - records followed only by zeros (or nothing) open, all of them;
/// - reopening gives the same records again (the cut is durable).
///
/// The same segments under the log store (which refuses records it never
/// writes) open only if the WAL does, and are `Corrupt` when it is; an
/// opened store reads back every entry from its first to its last index,
/// and reopens to the same state.
pub fn wal_replay(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let segments: Vec<&[u8]> = if flags & 1 == 1 && rest.len() >= 2 {
        let at = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let at = at % (body.len() + 1);
        vec![&body[..at], &body[at..]]
    } else {
        vec![rest]
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = dir.path().join("raw");
    let store = dir.path().join("store");
    write_segments(&wal, &segments);
    write_segments(&store.join("wal"), &segments);

    let (want, verdict) = read_records(&segments);
    let raw = replay_wal(&wal);
    match (&raw, verdict) {
        (Ok(got), v) => {
            assert!(
                v != Verdict::Corrupt,
                "opened a corrupt log: {:?}",
                got.len()
            );
            assert!(
                got == &want,
                "replayed {} records, {} before the first bad one",
                got.len(),
                want.len()
            );
            let again = replay_wal(&wal).expect("reopening an opened log");
            assert!(again == want, "reopened to other records");
        }
        (Err(e), Verdict::Clean) => panic!("a log of whole records refused: {e}"),
        (Err(e), _) => assert!(is_corrupt(e), "not Corrupt: {e}"),
    }

    let opened = open_log_store(&store);
    match &opened {
        Ok(state) => {
            assert!(raw.is_ok(), "the store opened a log the WAL refuses");
            check_log_state(state);
            let again = open_log_store(&store).expect("reopening an opened store");
            assert_eq!(&again, state, "reopened to another state");
        }
        // A hard state, entries and a snapshot record naming a file that
        // is not there: the node refuses to start, naming the file.
        Err(Error::Storage(m)) if m.contains("snapshot") && m.contains(".snap") => {}
        Err(e) => assert!(is_corrupt(e), "not Corrupt: {e}"),
    }
}

fn write_segments(dir: &Path, segments: &[&[u8]]) {
    std::fs::create_dir_all(dir).expect("wal dir");
    for (i, s) in segments.iter().enumerate() {
        std::fs::write(dir.join(segment_name(i as u64 + 1)), s).expect("segment");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Whole records, then zeros or nothing: must open with all of them.
    Clean,
    /// Must be `Corrupt`.
    Corrupt,
    /// A bad record at the end that may be a torn write: either.
    Either,
}

/// The records of `segments` up to the first bad one, and the verdict.
fn read_records(segments: &[&[u8]]) -> (Vec<(u8, Vec<u8>)>, Verdict) {
    let mut records = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let mut at = 0usize;
        let stop = loop {
            if at == seg.len() {
                break None;
            }
            if seg.len() - at < 8 {
                break Some("short");
            }
            let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(seg[at + 4..at + 8].try_into().expect("4"));
            if len == 0 {
                break Some("zero");
            }
            if len > MAX_RECORD_BYTES {
                break Some("long");
            }
            if seg.len() - at - 8 < len {
                break Some("past end");
            }
            let body = &seg[at + 8..at + 8 + len];
            if crc32fast::hash(body) != crc {
                break Some("checksum");
            }
            records.push((body[0], body[1..].to_vec()));
            at += 8 + len;
        };
        let Some(stop) = stop else { continue };
        if !last {
            return (records, Verdict::Corrupt);
        }
        let zeros_from = |from: usize| seg[from.min(seg.len())..].iter().all(|&b| b == 0);
        let verdict = match stop {
            "short" | "zero" if zeros_from(at) => Verdict::Clean,
            "zero" | "long" => Verdict::Corrupt,
            "checksum" => {
                let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4")) as usize;
                if zeros_from(at + 8 + len) {
                    Verdict::Either
                } else {
                    Verdict::Corrupt
                }
            }
            _ => Verdict::Either,
        };
        return (records, verdict);
    }
    (records, Verdict::Clean)
}

/// An opened store's log has no hole: every index from the first to the
/// last, in order.
fn check_log_state(s: &LogState) {
    assert!(
        s.first_index >= 1 && s.first_index <= s.last_index + 1,
        "{s:?}"
    );
    assert_eq!(
        s.entries.len() as u64,
        s.last_index + 1 - s.first_index,
        "entries read back"
    );
    for (i, e) in s.entries.iter().enumerate() {
        assert_eq!(e.index, s.first_index + i as u64, "entry order");
    }
}

/// A `Raft.Send` body of one gRPC message holding `messages` (seeds).
pub fn send_body(messages: &[RaftMessage]) -> Vec<u8> {
    grpc_body(&[encode_batch(messages).expect("messages encode")])
}

/// A gRPC body of uncompressed `messages` (seeds).
pub fn grpc_body(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}
