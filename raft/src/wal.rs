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
//! so a segment whose entries are all compacted away can be deleted. A crash
//! can leave the last segment with a torn record at its end: reopening
//! drops it (it was never acknowledged), trims the segment to its records
//! and starts a fresh one. A bad record anywhere else is corruption.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A segment is cut once it holds this many bytes (etcd's size).
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;

const HEADER: usize = 9;

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
    /// `replay` in order. `replay` returns the entry index a record wrote,
    /// if it wrote one. Appends then go to a new, empty segment: the caller
    /// begins it with its state ([`Wal::push`], [`Wal::write`]).
    pub fn open(
        dir: &Path,
        mut replay: impl FnMut(u8, &[u8]) -> Result<Option<u64>>,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let mut seqs = Vec::new();
        for item in fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_suffix(".wal") {
                let seq = u64::from_str_radix(hex, 16)
                    .map_err(|_| Error::Corrupt(format!("unexpected WAL file {name}")))?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut closed = VecDeque::new();
        let mut high = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let raw = fs::read(&path)?;
            let mut at = 0;
            while let Some((kind, payload, next)) = decode(&raw, at) {
                if let Some(index) = replay(kind, payload)? {
                    high = high.max(index);
                }
                at = next;
            }
            if at < raw.len() {
                if i + 1 < seqs.len() {
                    return Err(Error::Corrupt(format!(
                        "{}: bad record at offset {at} in a closed segment",
                        path.display()
                    )));
                }
                // The last segment: preallocated zeros after its records, or
                // a record a crash tore.
                if raw[at..].iter().any(|&b| b != 0) {
                    tracing::warn!(
                        file = %path.display(),
                        offset = at,
                        dropped = raw.len() - at,
                        "dropping a torn record at the end of the raft WAL"
                    );
                }
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(at as u64)?;
                f.sync_all()?;
            }
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

    /// Adds a record to the next write.
    pub fn push(&mut self, kind: u8, payload: &[u8]) {
        let _: Result<()> = self.push_with(kind, |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        });
    }

    /// Adds a record whose payload `encode` appends to the write buffer
    /// (no copy of its own); if `encode` fails, nothing is added.
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
        let body = &self.buf[start + 8..];
        let len = u32::try_from(body.len()).expect("a WAL record under 4 GiB");
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

/// The record at `at`: (kind, payload, offset of the next record), or None
/// if what is there is not a whole record with a good checksum.
fn decode(raw: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let header = raw.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let end = at.checked_add(8 + len)?;
    let body = raw.get(at + 8..end)?;
    (crc32fast::hash(body) == crc).then(|| (body[0], &body[1..], end))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    /// An encoder appending `payload`.
    fn bytes(payload: &[u8]) -> impl FnOnce(&mut Vec<u8>) -> Result<()> + '_ {
        move |buf| {
            buf.extend_from_slice(payload);
            Ok(())
        }
    }

    fn replay_all(dir: &Path) -> (Wal, Vec<(u8, Vec<u8>)>) {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, |kind, payload| {
            seen.push((kind, payload.to_vec()));
            Ok((kind == 1).then(|| u64::from(payload[0])))
        })
        .unwrap();
        (wal, seen)
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, seen) = replay_all(dir.path());
        assert!(seen.is_empty());
        wal.push(2, b"state");
        wal.push_entry(1, 7, bytes(&[7, 0xaa])).unwrap();
        wal.write(true).unwrap();
        wal.push_entry(1, 8, bytes(&[8])).unwrap();
        wal.write(false).unwrap();
        let seq = wal.seq;
        drop(wal);
        // A crash in the middle of the next record: half of it reached disk,
        // in the preallocated zeros after the records.
        let path = dir.path().join(segment_name(seq));
        let valid = 3 * HEADER as u64 + 5 + 2 + 1;
        assert_eq!(fs::metadata(&path).unwrap().len(), SEGMENT_BYTES);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[20, 0, 0, 0, 1, 2, 3], valid).unwrap();
        drop(f);

        let (wal, seen) = replay_all(dir.path());
        assert_eq!(
            seen,
            vec![(2, b"state".to_vec()), (1, vec![7, 0xaa]), (1, vec![8])]
        );
        assert_eq!(wal.high, 8);
        assert_eq!(wal.segments(), 2, "appends go to a new segment");
        assert_eq!(fs::metadata(&path).unwrap().len(), valid, "trimmed");
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
    fn a_bad_record_in_a_closed_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = replay_all(dir.path());
        wal.push_entry(1, 1, bytes(&[1, 2, 3])).unwrap();
        wal.write(true).unwrap();
        let seq = wal.seq;
        drop(wal);
        let (wal, _) = replay_all(dir.path());
        drop(wal);
        let path = dir.path().join(segment_name(seq));
        let mut raw = fs::read(&path).unwrap();
        raw[HEADER + 1] ^= 0xff;
        fs::write(&path, raw).unwrap();
        let err = Wal::open(dir.path(), |_, _| Ok(None)).err().unwrap();
        assert!(
            matches!(err, Error::Corrupt(ref m) if m.contains("closed segment")),
            "{err}"
        );
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
}
