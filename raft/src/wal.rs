//! An append-only write-ahead log of checksummed records in segment files:
//! what the raft log store keeps on disk.
//!
//! ```text
//! wal/<seq: 16 hex digits>.wal       segments, oldest first
//! record = [len: u32 LE][crc32 of kind and payload: u32 LE][kind: u8][payload]
//!          (len = 1 + payload length)
//! ```
//!
//! Records are only ever appended; a batch of them is one `write` and, when
//! asked, one `fdatasync`. A segment is preallocated to [`SEGMENT_BYTES`]
//! when it is created (as etcd does): a write then never changes the file's
//! size, so its `fdatasync` has no inode update to make (65 µs instead of 98
//! for a small record on this project's ext4). The zeros after the last
//! record end it: no record has length 0. When a segment is full the owner
//! cuts a new one, beginning it with records that restate its whole state,
//! so a segment whose entries are all compacted away can be deleted. Segment
//! numbers run without a gap (the oldest are deleted first).
//!
//! # What reopening keeps
//!
//! Raft's safety rests on every entry and vote that was fsynced (and so
//! maybe acknowledged) still being there after a restart, so reopening drops
//! exactly one thing: a **torn final record**, the trace of a write a crash
//! interrupted. A record at offset `at` that does not read back is one when
//! all of these hold:
//!
//! - it is in the last segment;
//! - its length is possible (1 ..= [`MAX_RECORD_BYTES`]);
//! - it is incomplete: it runs past the end of the file, or a 512-byte
//!   sector of it (clipped to the record) is all zeros and its checksum
//!   fails. A crash loses whole sectors, which read back as the
//!   preallocated zeros; a whole record with a bad checksum is damage;
//! - nothing but zeros follows it;
//! - no whole record with a good checksum starts inside it (that would mean
//!   its length field is damaged and records written after it are there).
//!
//! Reopening trims the last segment before that record and appends to a new
//! one. Everything else is [`Error::Corrupt`] naming the segment file and
//! offset, and the log does not open: a bad record in an earlier segment, a
//! bad checksum with data after it, a length of 0 with data after it or
//! over the limit, a missing segment, and any record the owner's replay
//! refuses (unknown kind, undecodable payload, a gap in entry indexes).
//! Records are read with a bounded buffer: a segment is never read whole,
//! and a length field is checked against the limit and the file's size
//! before anything is allocated for it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A segment is cut once it holds this many bytes (etcd's size).
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

/// The largest record (kind and payload) the log writes, and so reads: a
/// length field over it is corruption.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

const HEADER: usize = 9;

/// `len` and `crc`: the part of a record before its kind.
const FRAME: usize = 8;

/// The read buffer of a replay.
const READ_BUF: usize = 64 << 10;

/// The unit a crash loses writes in.
const SECTOR: u64 = 512;

/// How many bytes the search for a whole record inside a bad one may hash
/// before it gives up (and the log is called corrupt).
const SEARCH_BUDGET: u64 = 1 << 30;

/// How far past the last non-zero byte a record found by that search may
/// end (its payload's own trailing zeros).
const SEARCH_SLACK: u64 = 4096;

/// Where a record is: its segment file and byte offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordPos<'a> {
    pub segment: &'a Path,
    pub offset: u64,
}

impl fmt::Display for RecordPos<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.segment.display(), self.offset)
    }
}

/// The open log: appends go to the newest segment.
pub(crate) struct Wal {
    dir: PathBuf,
    file: File,
    seq: u64,
    size: u64,
    /// Records encoded since the last write.
    buf: Vec<u8>,
    /// The highest entry index written to the open segment or any before it.
    high: u64,
    /// Older segments, oldest first: (seq, highest entry index in it or any
    /// before it).
    closed: VecDeque<(u64, u64)>,
    /// A write failed: the segment's end is unknown.
    failed: bool,
    /// The size at which [`Wal::is_full`] says to cut.
    segment_bytes: u64,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl Wal {
    /// Opens the log under `dir`, handing every record of every segment to
    /// `replay` in order, with where it is. `replay` returns the entry index
    /// a record wrote, if it wrote one; its [`Error::Corrupt`] gets the
    /// record's place prefixed. A torn final record is dropped; any other bad
    /// record is [`Error::Corrupt`] (see the module doc). Appends then go to
    /// a new, empty segment: the caller begins it with its state
    /// ([`Wal::push`], [`Wal::write`]).
    pub fn open(
        dir: &Path,
        mut replay: impl FnMut(RecordPos<'_>, u8, &[u8]) -> Result<Option<u64>>,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for item in fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".wal") {
                let seq = u64::from_str_radix(hex, 16).map_err(|_| {
                    Error::Corrupt(format!("{}: unexpected WAL file {name}", dir.display()))
                })?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(Error::Corrupt(format!(
                "{}: segment {} follows {}: the segments between are missing",
                dir.display(),
                segment_name(w[1]),
                segment_name(w[0])
            )));
        }
        let mut closed = VecDeque::new();
        let mut high = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let last = i + 1 == seqs.len();
            replay_segment(&path, last, &mut |pos, kind, payload| {
                if let Some(index) = replay(pos, kind, payload).map_err(|e| match e {
                    Error::Corrupt(m) => Error::Corrupt(format!("{pos}: {m}")),
                    other => other,
                })? {
                    high = high.max(index);
                }
                Ok(())
            })?;
            closed.push_back((seq, high));
        }
        let seq = seqs.last().map_or(1, |s| s + 1);
        let file = create_segment(dir, seq, SEGMENT_BYTES)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            file,
            seq,
            size: 0,
            buf: Vec::new(),
            high,
            closed,
            failed: false,
            segment_bytes: SEGMENT_BYTES,
        })
    }

    /// Adds a record of the owner's own state (far under
    /// [`MAX_RECORD_BYTES`]) to the next write.
    pub fn push(&mut self, kind: u8, payload: &[u8]) {
        self.push_with(kind, |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        })
        .expect("a state record under the WAL record limit");
    }

    /// Adds a record whose payload `encode` appends to the write buffer
    /// (no copy of its own); if `encode` fails or the record is over
    /// [`MAX_RECORD_BYTES`], nothing is added.
    pub fn push_with(
        &mut self,
        kind: u8,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        self.buf[start + 8] = kind;
        if let Err(e) = encode(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let body = &self.buf[start + FRAME..];
        if body.len() > MAX_RECORD_BYTES {
            let len = body.len();
            self.buf.truncate(start);
            return Err(Error::Storage(format!(
                "a raft WAL record of {len} bytes is over the limit of {MAX_RECORD_BYTES}"
            )));
        }
        let len = u32::try_from(body.len()).expect("under MAX_RECORD_BYTES");
        let crc = crc32fast::hash(body);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Adds a record that writes the log entry at `index`.
    pub fn push_entry(
        &mut self,
        kind: u8,
        index: u64,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.push_with(kind, encode)?;
        self.high = self.high.max(index);
        Ok(())
    }

    /// Drops the records pushed since the last write.
    pub fn discard_pushed(&mut self) {
        self.buf.clear();
    }

    /// Writes the pushed records in one `write`; `sync` adds an `fdatasync`.
    /// After a failed write the log refuses every later one: part of the
    /// batch may be on disk, and nothing may follow it.
    pub fn write(&mut self, sync: bool) -> Result<()> {
        if self.failed {
            return Err(Error::Storage("an earlier raft WAL write failed".into()));
        }
        let result = self.write_buffered(sync);
        self.buf.clear();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_buffered(&mut self, sync: bool) -> Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.size += self.buf.len() as u64;
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Whether the open segment is full (its preallocated size is written):
    /// the owner then calls [`Wal::cut`].
    pub fn is_full(&self) -> bool {
        self.size >= self.segment_bytes
    }

    /// Cuts segments at `bytes` instead (tests cut many small ones; 1 = a
    /// segment per change).
    #[cfg(test)]
    pub fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }

    /// Closes the open segment (trimmed to its records, synced) and opens a
    /// new one; the records pushed since the last write (the owner's whole
    /// state) begin it.
    pub fn cut(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Storage("an earlier raft WAL write failed".into()));
        }
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        let seq = self.seq + 1;
        let file = create_segment(&self.dir, seq, self.segment_bytes)?;
        self.closed.push_back((self.seq, self.high));
        self.file = file;
        self.seq = seq;
        self.size = 0;
        self.write(true)
    }

    /// Deletes the oldest segments whose entries are all at or below
    /// `index` (compacted away); their other records are restated in a
    /// newer segment's beginning.
    pub fn remove_through(&mut self, index: u64) -> Result<()> {
        let mut removed = false;
        while let Some(&(seq, high)) = self.closed.front() {
            if high > index {
                break;
            }
            fs::remove_file(self.dir.join(segment_name(seq)))?;
            self.closed.pop_front();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// How many segment files there are (the open one included).
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.closed.len() + 1
    }
}

/// Creates a segment file of `bytes` zeros durably (its name in the folder
/// too); writes start at its beginning.
fn create_segment(dir: &Path, seq: u64, bytes: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dir.join(segment_name(seq)))?;
    preallocate(&file, bytes)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Gives `file` `bytes` of allocated zeros, or where the filesystem cannot
/// allocate ahead, the same size as a sparse file.
fn preallocate(file: &File, bytes: u64) -> Result<()> {
    let len = i64::try_from(bytes).unwrap_or(i64::MAX);
    if nix::fcntl::posix_fallocate(file, 0, len).is_err() {
        file.set_len(bytes)?;
    }
    Ok(())
}

/// Why the records of a segment stop before its end.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Fewer than `FRAME` bytes are left.
    ShortFrame,
    /// A length field of 0.
    ZeroLength,
    /// A length field over [`MAX_RECORD_BYTES`].
    TooLong(u32),
    /// The record runs past the end of the file.
    PastEnd(u32),
    /// The record is in the file but its checksum fails.
    Checksum(u32),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::ShortFrame => write!(f, "a record header cut short by the end of the file"),
            Stop::ZeroLength => write!(f, "a record of length 0"),
            Stop::TooLong(len) => write!(
                f,
                "a record length of {len}, over the limit of {MAX_RECORD_BYTES}"
            ),
            Stop::PastEnd(len) => {
                write!(
                    f,
                    "a record of length {len} running past the end of the file"
                )
            }
            Stop::Checksum(len) => write!(f, "a record of length {len} with a bad checksum"),
        }
    }
}

/// What a segment's replay hands each record to.
type Replay<'a> = dyn FnMut(RecordPos<'_>, u8, &[u8]) -> Result<()> + 'a;

/// Reads `path`'s records in order (a buffer of [`READ_BUF`] and one record
/// at a time in memory), handing each to `replay`. Where they stop before the
/// end: in the `last` segment, zeros or a torn final record are trimmed
/// away; anything else is [`Error::Corrupt`].
fn replay_segment(path: &Path, last: bool, replay: &mut Replay<'_>) -> Result<()> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(READ_BUF, &file);
    let mut record = Vec::new();
    let mut at = 0u64;
    let stop = loop {
        let left = file_len - at;
        if left == 0 {
            return Ok(());
        }
        if left < FRAME as u64 {
            break Stop::ShortFrame;
        }
        let mut frame = [0u8; FRAME];
        reader.read_exact(&mut frame)?;
        let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
        if len == 0 {
            break Stop::ZeroLength;
        }
        if len as usize > MAX_RECORD_BYTES {
            break Stop::TooLong(len);
        }
        if u64::from(len) > left - FRAME as u64 {
            break Stop::PastEnd(len);
        }
        // Bounded by the limit and by what the file holds.
        let len_bytes = len as usize;
        if record.capacity() < len_bytes {
            record = buffer(len_bytes);
        } else {
            record.resize(len_bytes, 0);
        }
        reader.read_exact(&mut record)?;
        if crc32fast::hash(&record) != crc {
            break Stop::Checksum(len);
        }
        replay(
            RecordPos {
                segment: path,
                offset: at,
            },
            record[0],
            &record[1..],
        )?;
        at += FRAME as u64 + u64::from(len);
    };
    drop(record);
    let corrupt = |what: String| {
        Error::Corrupt(format!(
            "{}: {what}",
            RecordPos {
                segment: path,
                offset: at
            }
        ))
    };
    if !last {
        return Err(corrupt(format!(
            "{stop} in a closed segment (it must end with its last record)"
        )));
    }
    let search = |to: u64| {
        whole_record_within(&file, file_len, at, to).map_err(|e| match e {
            Error::Corrupt(m) => corrupt(m),
            other => other,
        })
    };
    let torn = match stop {
        Stop::ZeroLength | Stop::ShortFrame if zeros(&file, at, file_len)? => false,
        Stop::ZeroLength => return Err(corrupt(format!("{stop} with data after it"))),
        Stop::TooLong(_) => return Err(corrupt(stop.to_string())),
        Stop::ShortFrame => true,
        Stop::PastEnd(_) => {
            if let Some(inner) = search(file_len)? {
                return Err(corrupt(format!(
                    "{stop}, over a whole record at offset {inner}: its length is damaged"
                )));
            }
            true
        }
        Stop::Checksum(len) => {
            let end = at + FRAME as u64 + u64::from(len);
            if !zeros(&file, end, file_len)? {
                return Err(corrupt(format!("{stop} with data after it")));
            }
            if !has_zero_sector(&file, at, end)? {
                return Err(corrupt(format!(
                    "{stop}, whole (no sector of it is missing): damaged, not torn"
                )));
            }
            if let Some(inner) = search(end)? {
                return Err(corrupt(format!(
                    "{stop}, over a whole record at offset {inner}: its length is damaged"
                )));
            }
            true
        }
    };
    if torn {
        tracing::warn!(
            file = %path.display(),
            offset = at,
            record = %stop,
            "dropping a torn record at the end of the raft WAL (a write a crash interrupted)"
        );
    }
    drop(reader);
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(at)?;
    f.sync_all()?;
    Ok(())
}

/// A zeroed buffer of the replay (tests check how large they get).
fn buffer(len: usize) -> Vec<u8> {
    #[cfg(test)]
    tests::note_buffer(len);
    vec![0; len]
}

/// Reads `file` from `from` to `to` through a bounded buffer, `check`ing each
/// piece (and its offset) until it returns false.
fn scan(
    file: &File,
    from: u64,
    to: u64,
    mut check: impl FnMut(u64, &[u8]) -> bool,
) -> Result<bool> {
    let mut buf =
        buffer(READ_BUF.min(usize::try_from(to.saturating_sub(from)).unwrap_or(READ_BUF)));
    let mut at = from;
    while at < to {
        let n = buf
            .len()
            .min(usize::try_from(to - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut buf[..n], at)?;
        if !check(at, &buf[..n]) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether `file` holds only zeros from `from` to `to`.
fn zeros(file: &File, from: u64, to: u64) -> Result<bool> {
    scan(file, from, to, |_, piece| piece.iter().all(|&b| b == 0))
}

/// Whether one of the sectors `[from, to)` spans (each clipped to it) is all
/// zeros: a write a crash lost.
fn has_zero_sector(file: &File, from: u64, to: u64) -> Result<bool> {
    let mut sector_zero = true;
    let mut found = false;
    scan(file, from, to, |offset, piece| {
        for (pos, &b) in (offset..).zip(piece) {
            if pos != from && pos % SECTOR == 0 {
                if sector_zero {
                    found = true;
                    return false;
                }
                sector_zero = true;
            }
            sector_zero &= b == 0;
        }
        true
    })?;
    Ok(found || (from < to && sector_zero))
}

/// The offset of a whole record with a good checksum starting inside
/// `(from, to)`, if there is one. Records written after a record whose
/// length got damaged end before the last non-zero byte (or a little past
/// it), so only those are looked at; past [`SEARCH_BUDGET`] bytes hashed the
/// search gives up, as corruption.
fn whole_record_within(file: &File, file_len: u64, from: u64, to: u64) -> Result<Option<u64>> {
    let mut data_end = from;
    scan(file, from, to, |offset, piece| {
        if let Some(i) = piece.iter().rposition(|&b| b != 0) {
            data_end = offset + i as u64 + 1;
        }
        true
    })?;
    let limit = (data_end + SEARCH_SLACK).min(file_len);
    let to = to.min(data_end);
    let mut budget = SEARCH_BUDGET;
    let mut found = None;
    let mut failure = None;
    let mut frame = [0u8; FRAME];
    let mut p = from + 1;
    // A window of frames at a time; each candidate's body is read on its own.
    while p < to && p + FRAME as u64 <= file_len && found.is_none() && failure.is_none() {
        let window_end = (p + READ_BUF as u64).min(to);
        let mut window = buffer(usize::try_from(window_end - p).unwrap_or(0) + FRAME - 1);
        let readable = usize::try_from((file_len - p).min(window.len() as u64)).unwrap_or(0);
        window.truncate(readable);
        file.read_exact_at(&mut window, p)?;
        for i in 0..usize::try_from(window_end - p).unwrap_or(0) {
            let Some(bytes) = window.get(i..i + FRAME) else {
                break;
            };
            frame.copy_from_slice(bytes);
            let at = p + i as u64;
            let len = u64::from(u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")));
            let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
            if len == 0 || len > MAX_RECORD_BYTES as u64 || at + FRAME as u64 + len > limit {
                continue;
            }
            if len > budget {
                failure = Some(at);
                break;
            }
            budget -= len;
            let mut hasher = crc32fast::Hasher::new();
            scan(
                file,
                at + FRAME as u64,
                at + FRAME as u64 + len,
                |_, piece| {
                    hasher.update(piece);
                    true
                },
            )?;
            if hasher.finalize() == crc {
                found = Some(at);
                break;
            }
        }
        p = window_end;
    }
    if let Some(at) = failure {
        return Err(Error::Corrupt(format!(
            "a bad record: cannot tell a torn write from damage (gave up searching \
             for whole records inside it at offset {at})"
        )));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::unix::fs::FileExt as _;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    thread_local! {
        /// The largest replay buffer asked for on this thread.
        static LARGEST_BUFFER: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn note_buffer(len: usize) {
        LARGEST_BUFFER.with(|c| c.set(c.get().max(len)));
    }

    /// Runs `f`, returning the largest replay buffer it asked for.
    fn largest_buffer<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST_BUFFER.with(|c| c.set(0));
        let out = f();
        (out, LARGEST_BUFFER.with(Cell::get))
    }

    /// An encoder appending `payload`.
    fn bytes(payload: &[u8]) -> impl FnOnce(&mut Vec<u8>) -> Result<()> + '_ {
        move |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        }
    }

    type Seen = Vec<(u8, Vec<u8>)>;

    /// Opens the log, keeping every record; kind 1 is an entry whose index
    /// is its first byte.
    fn try_replay(dir: &Path) -> Result<(Wal, Seen)> {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, |_, kind, payload| {
            seen.push((kind, payload.to_vec()));
            Ok((kind == 1).then(|| u64::from(payload[0])))
        })?;
        Ok((wal, seen))
    }

    fn replay_all(dir: &Path) -> (Wal, Seen) {
        try_replay(dir).unwrap()
    }

    fn corrupt_message(dir: &Path) -> String {
        match try_replay(dir) {
            Err(Error::Corrupt(m)) => m,
            Err(e) => panic!("not Corrupt: {e}"),
            Ok((_, seen)) => panic!("opened, replaying {} records", seen.len()),
        }
    }

    /// The records of a segment file: (offset, length of kind and payload).
    fn frames(path: &Path) -> Vec<(u64, usize)> {
        let raw = fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at + FRAME <= raw.len() {
            let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            out.push((at as u64, len));
            at += FRAME + len;
        }
        out
    }

    fn write_at(path: &Path, offset: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    fn flip(path: &Path, offset: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], offset).unwrap();
    }

    /// The records [`write_log`] writes, in order: a state record, then
    /// entries 1..=6 (entry 6 is 2,000 bytes: it spans several sectors).
    fn expected_records() -> Seen {
        let mut out = vec![(2, b"hard state".to_vec())];
        for index in 1..=6u8 {
            let mut payload = vec![index; if index == 6 { 2000 } else { 40 }];
            payload[1] = 0xee;
            out.push((1, payload));
        }
        out
    }

    /// A log of [`expected_records`]; with `cut_after` an entry, the segment
    /// is cut after it (each segment beginning with the state record).
    /// Returns the segment files, oldest first.
    fn write_log(dir: &Path, cut_after: Option<u8>) -> Vec<PathBuf> {
        let (mut wal, _) = replay_all(dir);
        let first = wal.seq;
        let records = expected_records();
        wal.push(records[0].0, &records[0].1);
        wal.write(true).unwrap();
        for (_, payload) in &records[1..] {
            wal.push_entry(1, u64::from(payload[0]), bytes(payload))
                .unwrap();
            wal.write(true).unwrap();
            if Some(payload[0]) == cut_after {
                wal.push(records[0].0, &records[0].1);
                wal.cut().unwrap();
            }
        }
        let last = wal.seq;
        drop(wal);
        (first..=last)
            .map(|seq| dir.join(segment_name(seq)))
            .collect()
    }

    #[test]
    fn a_zero_tail_after_the_records_is_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), None);
        let path = &segments[0];
        let records_end: u64 = frames(path)
            .iter()
            .map(|(_, len)| (FRAME + len) as u64)
            .sum();
        assert_eq!(fs::metadata(path).unwrap().len(), SEGMENT_BYTES);
        let ((wal, seen), largest) = largest_buffer(|| replay_all(dir.path()));
        assert_eq!(seen, expected_records());
        assert_eq!(wal.high, 6);
        assert_eq!(wal.segments(), 2, "appends go to a new segment");
        assert_eq!(fs::metadata(path).unwrap().len(), records_end, "trimmed");
        // Issue 17: the 64 MiB preallocated segment is streamed.
        assert!(largest <= READ_BUF, "largest replay buffer {largest} bytes");
    }

    #[test]
    fn a_torn_final_record_is_dropped() {
        // The last record cut in half: by the end of the file, or by lost
        // sectors reading back as the preallocated zeros.
        for by_eof in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let segments = write_log(dir.path(), None);
            let path = &segments[0];
            let (at, len) = *frames(path).last().unwrap();
            assert_eq!(len, 2001);
            let half = at + (FRAME + len) as u64 / 2;
            if by_eof {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(half)
                    .unwrap();
            } else {
                write_at(path, half, &vec![0; (FRAME + len) / 2 + 1]);
            }
            let (wal, seen) = replay_all(dir.path());
            let mut expected = expected_records();
            expected.pop();
            assert_eq!(seen, expected, "by_eof {by_eof}");
            assert_eq!(wal.high, 5);
            assert_eq!(
                fs::metadata(path).unwrap().len(),
                at,
                "trimmed to the records"
            );
            drop(wal);
            // And the log keeps working: the next open sees the same.
            let (_, again) = replay_all(dir.path());
            assert_eq!(again, expected);
        }
    }

    #[test]
    fn a_bad_record_inside_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), None);
        let path = &segments[0];
        let (at, _) = frames(path)[3];
        flip(path, at + FRAME as u64 + 5);
        let m = corrupt_message(dir.path());
        assert!(
            m.contains(&segment_name(1)) && m.contains(&format!("at offset {at}")),
            "{m}"
        );
        assert!(m.contains("bad checksum with data after it"), "{m}");
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            SEGMENT_BYTES,
            "nothing is trimmed"
        );
    }

    #[test]
    fn a_whole_final_record_with_a_bad_checksum_is_corruption() {
        // Nothing follows it, but no part of it is missing: a crash did not
        // do that, and it may have been acknowledged.
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), None);
        let (at, len) = *frames(&segments[0]).last().unwrap();
        flip(&segments[0], at + (FRAME + len) as u64 - 1);
        let m = corrupt_message(dir.path());
        assert!(m.contains("damaged, not torn"), "{m}");
        assert!(m.contains(&format!("at offset {at}")), "{m}");
    }

    #[test]
    fn a_bad_record_in_an_earlier_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), Some(3));
        assert_eq!(segments.len(), 2);
        // The last record of the closed segment: even its very end.
        let (at, len) = *frames(&segments[0]).last().unwrap();
        flip(&segments[0], at + (FRAME + len) as u64 - 1);
        let m = corrupt_message(dir.path());
        assert!(m.contains(&segment_name(segments_seq(&segments[0]))), "{m}");
        assert!(m.contains(&format!("at offset {at}")), "{m}");
        assert!(m.contains("in a closed segment"), "{m}");
    }

    fn segments_seq(path: &Path) -> u64 {
        let name = path.file_name().unwrap().to_string_lossy();
        u64::from_str_radix(name.strip_suffix(".wal").unwrap(), 16).unwrap()
    }

    #[test]
    fn a_garbage_length_is_corruption_without_a_large_buffer() {
        for (garbage, want) in [
            // Over the limit.
            (u32::MAX, "over the limit"),
            // Under it, reaching over the records after it into the zeros.
            (1_000_000, "its length is damaged"),
            // Past the end of the 64 MiB file.
            (MAX_RECORD_BYTES as u32, "its length is damaged"),
            // Ending inside the records after it.
            (60, "with data after it"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let segments = write_log(dir.path(), None);
            let (at, _) = frames(&segments[0])[2];
            write_at(&segments[0], at, &garbage.to_le_bytes());
            let (m, largest) = largest_buffer(|| corrupt_message(dir.path()));
            assert!(m.contains(want), "length {garbage}: {m}");
            assert!(m.contains(&format!("at offset {at}")), "{m}");
            // A length the file could hold is read (to check it); no other.
            let in_file = garbage as usize <= MAX_RECORD_BYTES
                && at + FRAME as u64 + u64::from(garbage) <= SEGMENT_BYTES;
            let bound = if in_file {
                (garbage as usize).max(READ_BUF + FRAME)
            } else {
                READ_BUF + FRAME
            };
            assert!(largest <= bound, "length {garbage}: a buffer of {largest}");
        }
    }

    #[test]
    fn zero_length_with_data_after_it_and_missing_segments_are_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), None);
        let (at, _) = frames(&segments[0])[2];
        write_at(&segments[0], at, &[0; 4]);
        let m = corrupt_message(dir.path());
        assert!(m.contains("length 0 with data after it"), "{m}");

        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), Some(2));
        let (wal, _) = replay_all(dir.path());
        drop(wal);
        fs::remove_file(&segments[1]).unwrap();
        let m = corrupt_message(dir.path());
        assert!(m.contains("missing"), "{m}");
    }

    #[test]
    fn a_record_over_the_limit_is_refused_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path());
        let err = wal
            .push_entry(1, 1, |buf| {
                buf.resize(buf.len() + MAX_RECORD_BYTES, 7);
                Ok(())
            })
            .unwrap_err();
        assert!(
            matches!(err, Error::Storage(ref m) if m.contains("over the limit")),
            "{err}"
        );
        assert_eq!(wal.high, 0);
        wal.push(2, b"after");
        wal.write(true).unwrap();
        drop(wal);
        assert_eq!(replay_all(dir.path()).1, vec![(2, b"after".to_vec())]);
    }

    #[test]
    fn a_cut_segment_is_trimmed_to_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path());
        let first = wal.seq;
        wal.push_entry(1, 1, bytes(&[1])).unwrap();
        wal.write(true).unwrap();
        wal.push(2, b"header");
        wal.cut().unwrap();
        let len = |seq| {
            fs::metadata(dir.path().join(segment_name(seq)))
                .unwrap()
                .len()
        };
        assert_eq!(len(first), HEADER as u64 + 1);
        assert_eq!(
            len(wal.seq),
            SEGMENT_BYTES,
            "the new segment is preallocated"
        );
        drop(wal);
        let (_, seen) = replay_all(dir.path());
        assert_eq!(seen, vec![(1, vec![1]), (2, b"header".to_vec())]);
    }

    #[test]
    fn a_failed_encoder_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path());
        wal.push(2, b"before");
        let err = wal
            .push_entry(1, 9, |buf| {
                buf.extend_from_slice(b"half an entry");
                Err(Error::Storage("encoding failed".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Storage(_)), "{err}");
        assert_eq!(wal.high, 0, "no entry was added");
        wal.push(2, b"after");
        wal.write(true).unwrap();
        drop(wal);
        let (_, seen) = replay_all(dir.path());
        assert_eq!(seen, vec![(2, b"before".to_vec()), (2, b"after".to_vec())]);
    }

    #[test]
    fn a_replay_error_names_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let segments = write_log(dir.path(), None);
        let (at, _) = frames(&segments[0])[4];
        let err = Wal::open(dir.path(), |pos, kind, payload| {
            if kind == 1 && payload[0] == 4 {
                assert_eq!(pos.offset, at);
                return Err(Error::Corrupt("refused".into()));
            }
            Ok(None)
        })
        .err()
        .unwrap();
        let want = format!(
            "{}: refused",
            RecordPos {
                segment: &segments[0],
                offset: at
            }
        );
        assert_eq!(err, Error::Corrupt(want));
    }

    #[test]
    fn compacted_segments_are_removed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path());
        for index in 1..=3u8 {
            wal.push_entry(1, u64::from(index), bytes(&[index]))
                .unwrap();
            wal.write(true).unwrap();
            wal.push(2, b"header");
            wal.cut().unwrap();
        }
        assert_eq!(wal.segments(), 4);
        wal.remove_through(2).unwrap();
        assert_eq!(wal.segments(), 2);
        drop(wal);
        let (wal, seen) = replay_all(dir.path());
        let header = (2, b"header".to_vec());
        assert_eq!(seen, vec![header.clone(), (1, vec![3]), header]);
        assert_eq!(wal.segments(), 3);
    }

    /// `[len][crc][kind][payload]`, as [`Wal::push`] writes it.
    fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(payload);
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn open_raw(dir: &Path) -> (Result<Seen>, usize) {
        largest_buffer(|| {
            let mut seen = Vec::new();
            Wal::open(dir, |_, kind, payload| {
                seen.push((kind, payload.to_vec()));
                Ok(None)
            })
            .map(|_| seen)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Arbitrary bytes as segments: the log opens or is `Corrupt`, never
        /// panics, and no buffer outgrows the read buffer or the file.
        #[test]
        fn arbitrary_segments_open_or_are_corrupt(
            segments in vec(vec(any::<u8>(), 0..3000), 1..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for (i, raw) in segments.iter().enumerate() {
                fs::write(dir.path().join(segment_name(i as u64 + 1)), raw).unwrap();
            }
            let (result, largest) = open_raw(dir.path());
            prop_assert!(
                matches!(result, Ok(_) | Err(Error::Corrupt(_))),
                "{:?}", result.err()
            );
            let file_max = segments.iter().map(Vec::len).max().unwrap_or(0);
            prop_assert!(largest <= READ_BUF.max(file_max) + FRAME, "buffer {largest}");
        }

        /// A log of whole records, then damaged: bytes changed, the last
        /// segment cut short or its end zeroed from a sector on. It opens
        /// only with a prefix of its records (all those before a cut, when
        /// nothing else was done); damage in an earlier segment is always
        /// `Corrupt`.
        #[test]
        fn a_damaged_log_yields_a_prefix_or_corrupt(
            records in vec((1u8..8, vec(any::<u8>(), 0..1200)), 1..12),
            split in vec(any::<prop::sample::Index>(), 0..3),
            damage in vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
            cut in prop::option::of((any::<bool>(), any::<prop::sample::Index>())),
            zero_tail in 0usize..2048,
        ) {
            let mut bounds: Vec<usize> = split.iter().map(|i| i.index(records.len())).collect();
            bounds.sort_unstable();
            bounds.dedup();
            bounds.push(records.len());
            let mut files: Vec<Vec<u8>> = Vec::new();
            let mut start = 0;
            for end in bounds {
                files.push(records[start..end].iter().flat_map(|(k, p)| encode(*k, p)).collect());
                start = end;
            }
            let last = files.len() - 1;
            let record_bytes = files[last].len();
            files[last].resize(record_bytes + zero_tail, 0);
            let total: usize = files.iter().map(Vec::len).sum();
            let mut earlier_damaged = false;
            for (at, xor) in &damage {
                let mut at = at.index(total.max(1));
                for (i, f) in files.iter_mut().enumerate() {
                    if at < f.len() {
                        f[at] ^= xor;
                        earlier_damaged |= i < last;
                        break;
                    }
                    at -= f.len();
                }
            }
            let mut kept_by_cut = None;
            if let Some((by_eof, at)) = cut {
                let f = &mut files[last];
                let at = if by_eof { at.index(f.len() + 1) } else { at.index(f.len() / 512 + 1) * 512 };
                if at < f.len() {
                    if by_eof { f.truncate(at) } else { f[at..].fill(0) }
                }
                // The records wholly before the cut.
                let before_last: usize = files[..last].iter().map(|f| records_in(f)).sum();
                let mut n = before_last;
                let mut end = 0;
                for (k, p) in &records[before_last..] {
                    end += encode(*k, p).len();
                    if end > at { break; }
                    n += 1;
                }
                kept_by_cut = Some(n);
            }
            let dir = tempfile::tempdir().unwrap();
            for (i, raw) in files.iter().enumerate() {
                fs::write(dir.path().join(segment_name(i as u64 + 1)), raw).unwrap();
            }
            let (result, largest) = open_raw(dir.path());
            let file_max = files.iter().map(Vec::len).max().unwrap_or(0);
            prop_assert!(largest <= READ_BUF.max(file_max) + FRAME, "buffer {largest}");
            let expected: Seen = records.iter().map(|(k, p)| (*k, p.clone())).collect();
            match result {
                Ok(seen) => {
                    prop_assert!(!earlier_damaged, "damage in a closed segment was accepted");
                    prop_assert!(expected.starts_with(&seen), "not a prefix");
                    if damage.is_empty() {
                        prop_assert_eq!(seen.len(), kept_by_cut.unwrap_or(records.len()));
                    }
                }
                Err(Error::Corrupt(_)) => {
                    prop_assert!(!damage.is_empty(), "an undamaged log was refused");
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    /// How many whole records `raw` holds from its start.
    fn records_in(raw: &[u8]) -> usize {
        let mut n = 0;
        let mut at = 0;
        while at + FRAME <= raw.len() {
            let len = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 || at + FRAME + len > raw.len() {
                break;
            }
            n += 1;
            at += FRAME + len;
        }
        n
    }
}
