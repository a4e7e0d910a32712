//! Snapshot files and the snapshot envelope.
//!
//! A raft snapshot's `data` is a small [`proto::SnapshotEnvelope`]: the
//! member contexts as of the snapshot index, and the size and CRC-32 of the
//! state machine's image. The image itself is never held in memory: the
//! state machine writes it into the snapshot file, the transport streams it
//! from there to a follower's snapshot folder in chunks, and the follower's
//! state machine restores from that file. The latest snapshot is kept as
//! `snap/<index>-<term>.snap`:
//!
//! ```text
//! [MAGIC][image][envelope][envelope len: u32 LE][crc32 of envelope: u32 LE]
//! ```
//!
//! Snapshots are taken when a follower needs one; the file is what lets a
//! node whose state machine lost unsynced writes recover after the log below
//! the snapshot was compacted away. A checkpoint (the state machine synced)
//! compacts the log too; a snapshot older than the log's new start is then
//! of no use and is removed.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use prost::Message as _;
use raft::prelude::Snapshot;

use crate::error::{Error, Result};
use crate::membership::Members;
use crate::proto;

const MAGIC: &[u8] = b"BALLAST-RAFTSNAP\x02";
/// The envelope's length and checksum, after it.
const TRAILER: u64 = 8;
/// Buffer size for reading and writing images.
const IO_BUFFER: usize = 256 << 10;

pub(crate) fn file_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:020}.snap")
}

fn path(dir: &Path, index: u64, term: u64) -> PathBuf {
    dir.join(file_name(index, term))
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("snapshot {}: {what}", path.display()))
}

fn io_error(path: &Path, e: io::Error) -> Error {
    Error::Storage(format!("snapshot {}: {e}", path.display()))
}

/// The state machine's image inside a snapshot file; each
/// [`reader`](SnapshotImage::reader) reads it from the start.
#[derive(Debug, Clone)]
pub struct SnapshotImage {
    path: PathBuf,
    len: u64,
    crc32: u32,
}

impl SnapshotImage {
    /// The image's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A buffered, seekable reader over the image alone (positions are
    /// relative to the image's first byte).
    pub fn reader(&self) -> io::Result<ImageReader> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
        Ok(ImageReader {
            inner: BufReader::with_capacity(IO_BUFFER, file),
            len: self.len,
            pos: 0,
        })
    }

    /// Reads the whole image once, checking its size and checksum.
    pub(crate) fn verify(&self) -> Result<()> {
        let mut r = self.reader().map_err(|e| io_error(&self.path, e))?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; IO_BUFFER];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).map_err(|e| io_error(&self.path, e))?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            total += n as u64;
        }
        if total != self.len {
            return Err(corrupt(&self.path, "image truncated"));
        }
        if crc.finalize() != self.crc32 {
            return Err(corrupt(&self.path, "image checksum mismatch"));
        }
        Ok(())
    }
}

/// Reads a [`SnapshotImage`]: the file's image bytes and nothing after them.
pub struct ImageReader {
    inner: BufReader<File>,
    len: u64,
    pos: u64,
}

impl Read for ImageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ImageReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .filter(|p| *p <= self.len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek outside the image"))?;
        self.inner
            .seek(SeekFrom::Start(MAGIC.len() as u64 + target))?;
        self.pos = target;
        Ok(target)
    }
}

/// Hashes and counts what passes through to the file.
struct Summing {
    file: BufWriter<File>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl Write for Summing {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.crc.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Closes a snapshot file: the envelope and its trailer, fsync, rename into
/// place, fsync the folder.
fn seal(mut file: BufWriter<File>, tmp: &Path, dest: &Path, envelope: &[u8]) -> io::Result<()> {
    file.write_all(envelope)?;
    file.write_all(&(envelope.len() as u32).to_le_bytes())?;
    file.write_all(&crc32fast::hash(envelope).to_le_bytes())?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, dest)?;
    File::open(dest.parent().unwrap_or(Path::new(".")))?.sync_all()
}

fn encode_envelope(members: &Members, image_size: u64, image_crc32: u32) -> Bytes {
    proto::SnapshotEnvelope {
        members: members.to_proto(),
        image: Bytes::new(),
        image_size,
        image_crc32,
    }
    .encode_to_vec()
    .into()
}

pub(crate) fn decode_envelope(data: &[u8]) -> Result<proto::SnapshotEnvelope> {
    Ok(proto::SnapshotEnvelope::decode(data)?)
}

/// Writes a snapshot file at `index`/`term` durably: `image` writes the state
/// machine's image and returns the index it reflects, which must be `index`.
/// Returns the envelope (the raft snapshot's data).
pub(crate) fn write_file(
    dir: &Path,
    index: u64,
    term: u64,
    members: &Members,
    image: impl FnOnce(&mut dyn Write) -> Result<u64>,
) -> Result<Bytes> {
    fs::create_dir_all(dir)?;
    let dest = path(dir, index, term);
    let tmp = dir.join(format!("{}.tmp", file_name(index, term)));
    let result = (|| {
        let mut file = BufWriter::with_capacity(IO_BUFFER, File::create(&tmp)?);
        file.write_all(MAGIC)?;
        let mut out = Summing {
            file,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        let at = image(&mut out)?;
        if at != index {
            return Err(Error::StateMachine(format!(
                "snapshot image is at index {at}, not the applied index {index}"
            )));
        }
        let envelope = encode_envelope(members, out.bytes, out.crc.finalize());
        seal(out.file, &tmp, &dest, &envelope).map_err(|e| io_error(&dest, e))?;
        Ok(envelope)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a snapshot file's envelope (the raft snapshot's data), checking
/// the file's framing; the image is not read. A file in the format from
/// before images streamed is converted first.
pub(crate) fn read_envelope(dir: &Path, index: u64, term: u64) -> Result<Bytes> {
    let path = path(dir, index, term);
    let mut file = File::open(&path).map_err(|e| io_error(&path, e))?;
    let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
    let mut magic = [0u8; MAGIC.len()];
    let has_magic = len >= MAGIC.len() as u64 + TRAILER
        && file.read_exact(&mut magic).is_ok()
        && magic == MAGIC;
    if !has_magic {
        drop(file);
        return convert_legacy(dir, index, term);
    }
    let read = |file: &mut File, at: u64, n: usize| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| io_error(&path, e))?;
        Ok(buf)
    };
    let trailer = read(&mut file, len - TRAILER, TRAILER as usize)?;
    let env_len = u64::from(u32::from_le_bytes(trailer[..4].try_into().expect("4")));
    let env_crc = u32::from_le_bytes(trailer[4..].try_into().expect("4"));
    if env_len > len - TRAILER - MAGIC.len() as u64 {
        return Err(corrupt(&path, "envelope length past the file"));
    }
    let envelope = read(&mut file, len - TRAILER - env_len, env_len as usize)?;
    if crc32fast::hash(&envelope) != env_crc {
        return Err(corrupt(&path, "envelope checksum mismatch"));
    }
    let decoded = decode_envelope(&envelope)?;
    if MAGIC.len() as u64 + decoded.image_size + env_len + TRAILER != len {
        return Err(corrupt(&path, "image size does not match the file"));
    }
    Ok(envelope.into())
}

/// The image of the snapshot file at `index`/`term`, whose envelope (the
/// raft snapshot's data) is `envelope`. Not verified: see
/// [`SnapshotImage::verify`].
pub(crate) fn image(dir: &Path, index: u64, term: u64, envelope: &[u8]) -> Result<SnapshotImage> {
    let env = decode_envelope(envelope)?;
    Ok(SnapshotImage {
        path: path(dir, index, term),
        len: env.image_size,
        crc32: env.image_crc32,
    })
}

/// Rewrites a snapshot file from before images streamed (`[crc32 LE]
/// [envelope with the image inside]`) in today's format; one last time, the
/// old file is read whole.
fn convert_legacy(dir: &Path, index: u64, term: u64) -> Result<Bytes> {
    let path = path(dir, index, term);
    let raw = fs::read(&path).map_err(|e| io_error(&path, e))?;
    if raw.len() < 4 {
        return Err(corrupt(&path, "truncated"));
    }
    let (crc, payload) = raw.split_at(4);
    if crc32fast::hash(payload).to_le_bytes() != crc {
        return Err(corrupt(&path, "checksum mismatch"));
    }
    let old = decode_envelope(payload)?;
    let envelope: Bytes = proto::SnapshotEnvelope {
        members: old.members,
        image: Bytes::new(),
        image_size: old.image.len() as u64,
        image_crc32: crc32fast::hash(&old.image),
    }
    .encode_to_vec()
    .into();
    let tmp = dir.join(format!("{}.tmp", file_name(index, term)));
    (|| {
        let mut file = BufWriter::new(File::create(&tmp)?);
        file.write_all(MAGIC)?;
        file.write_all(&old.image)?;
        seal(file, &tmp, &path, &envelope)
    })()
    .map_err(|e| io_error(&path, e))?;
    tracing::info!(file = %path.display(), "converted a snapshot file to the streamed format");
    Ok(envelope)
}

/// A snapshot file being received from the leader into this node's
/// snapshot folder. Feed it the image's bytes in order, then
/// [`finish`](Incoming::finish) it; dropped unfinished, it leaves only a
/// `.part` file (removed when the node next starts).
pub struct Incoming {
    part: PathBuf,
    dest: PathBuf,
    /// `None` once `finish` has taken it.
    file: Option<BufWriter<File>>,
    envelope: Bytes,
    expected: u64,
    expected_crc: u32,
    crc: crc32fast::Hasher,
    written: u64,
}

impl Incoming {
    /// Starts receiving the image of `snap` (a `MsgSnapshot`'s snapshot) into
    /// `dir`; refuses an image declared larger than `max_bytes`.
    pub(crate) fn start(dir: &Path, snap: &Snapshot, max_bytes: u64) -> Result<Incoming> {
        let env = decode_envelope(&snap.data)?;
        if env.image_size > max_bytes {
            return Err(Error::Transport(format!(
                "snapshot image of {} bytes is over the limit of {max_bytes}",
                env.image_size
            )));
        }
        let meta = snap.get_metadata();
        fs::create_dir_all(dir)?;
        let dest = path(dir, meta.index, meta.term);
        // Duplicated messages may bring the same snapshot twice at once.
        static RECEIVING: AtomicU64 = AtomicU64::new(0);
        let part = dir.join(format!(
            "{}.{}.part",
            file_name(meta.index, meta.term),
            RECEIVING.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = BufWriter::with_capacity(IO_BUFFER, File::create(&part)?);
        file.write_all(MAGIC)?;
        Ok(Incoming {
            part,
            dest,
            file: Some(file),
            envelope: snap.data.clone(),
            expected: env.image_size,
            expected_crc: env.image_crc32,
            crc: crc32fast::Hasher::new(),
            written: 0,
        })
    }

    /// Appends the next bytes of the image.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.written + data.len() as u64 > self.expected {
            return Err(Error::Transport(format!(
                "snapshot image longer than the {} bytes its envelope declares",
                self.expected
            )));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(Error::Transport("snapshot image already finished".into()));
        };
        file.write_all(data)?;
        self.crc.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks the image is whole and intact, then makes the file durable
    /// under its final name.
    pub(crate) fn finish(mut self) -> Result<()> {
        if self.written != self.expected {
            return Err(Error::Transport(format!(
                "snapshot image ended after {} of {} bytes",
                self.written, self.expected
            )));
        }
        if self.crc.clone().finalize() != self.expected_crc {
            return Err(Error::Transport("snapshot image checksum mismatch".into()));
        }
        let Some(file) = self.file.take() else {
            return Err(Error::Transport("snapshot image already finished".into()));
        };
        seal(file, &self.part, &self.dest, &self.envelope).map_err(|e| io_error(&self.dest, e))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // After `finish` the part file was renamed; this then fails quietly.
        let _ = fs::remove_file(&self.part);
    }
}

/// Removes snapshot files older than `keep` (all of them for `None`), and
/// when `at_start` also unfinished ones (`.tmp`, `.part`). Newer files are
/// kept: they may be snapshots received but not yet installed.
pub(crate) fn remove_older(dir: &Path, keep: Option<(u64, u64)>, at_start: bool) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let unfinished = name.ends_with(".tmp") || name.ends_with(".part");
        let older = name.ends_with(".snap")
            && match keep {
                None => true,
                Some((index, term)) => {
                    let at: Option<u64> = name.split('-').next().and_then(|i| i.parse().ok());
                    at < Some(index) || (at == Some(index) && name != file_name(index, term))
                }
            };
        if older || (at_start && unfinished) {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "removing old snapshot");
            }
        }
    }
}

/// Writes a snapshot file holding `image` (tests).
#[cfg(test)]
pub(crate) fn write_test_file(
    dir: &Path,
    index: u64,
    term: u64,
    members: &Members,
    image: &[u8],
) -> Bytes {
    write_file(dir, index, term, members, |out| {
        out.write_all(image)?;
        Ok(index)
    })
    .expect("write a snapshot file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Members {
        Members::default()
    }

    fn write(dir: &Path, index: u64, image: &[u8]) -> Bytes {
        write_test_file(dir, index, 2, &members(), image)
    }

    fn read_all(image: &SnapshotImage) -> Vec<u8> {
        let mut out = Vec::new();
        image.reader().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn file_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let envelope = write(dir.path(), 7, b"hello");
        assert_eq!(read_envelope(dir.path(), 7, 2).unwrap(), envelope);
        let image = image(dir.path(), 7, 2, &envelope).unwrap();
        image.verify().unwrap();
        assert_eq!(read_all(&image), b"hello");
        let mut r = image.reader().unwrap();
        r.seek(SeekFrom::Start(3)).unwrap();
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "lo");

        // A flipped image byte fails the image check, a flipped envelope
        // byte the envelope's.
        let path = dir.path().join(file_name(7, 2));
        let good = fs::read(&path).unwrap();
        let mut raw = good.clone();
        raw[MAGIC.len() + 1] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(image.verify(), Err(Error::Corrupt(_))));
        let mut raw = good.clone();
        let n = raw.len();
        raw[n - TRAILER as usize - 1] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(
            read_envelope(dir.path(), 7, 2),
            Err(Error::Corrupt(_))
        ));
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read_envelope(dir.path(), 7, 2).is_err());

        write(dir.path(), 9, b"x");
        write(dir.path(), 11, b"y");
        remove_older(dir.path(), Some((9, 2)), false);
        assert!(!path.exists());
        assert!(read_envelope(dir.path(), 9, 2).is_ok());
        assert!(read_envelope(dir.path(), 11, 2).is_ok(), "newer files stay");
    }

    #[test]
    fn a_received_image_must_match_its_envelope() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let envelope = write(src.path(), 5, &data);
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 5;
        snap.mut_metadata().term = 2;
        snap.data = envelope.clone();

        // Whole and intact, in chunks: the same file on the other side.
        let mut inc = Incoming::start(dst.path(), &snap, 1 << 20).unwrap();
        for chunk in data.chunks(4096) {
            inc.write(chunk).unwrap();
        }
        inc.finish().unwrap();
        assert_eq!(
            fs::read(dst.path().join(file_name(5, 2))).unwrap(),
            fs::read(src.path().join(file_name(5, 2))).unwrap()
        );

        // Short, long, altered or over the limit: refused, nothing left.
        let other = tempfile::tempdir().unwrap();
        let mut inc = Incoming::start(other.path(), &snap, 1 << 20).unwrap();
        inc.write(&data[..10]).unwrap();
        assert!(inc.finish().is_err());
        let mut inc = Incoming::start(other.path(), &snap, 1 << 20).unwrap();
        assert!(inc.write(&vec![7u8; 100_001]).is_err());
        drop(inc);
        let mut inc = Incoming::start(other.path(), &snap, 1 << 20).unwrap();
        let mut bad = data.clone();
        bad[500] = 8;
        inc.write(&bad).unwrap();
        assert!(inc.finish().is_err());
        assert!(Incoming::start(other.path(), &snap, 1000).is_err());
        assert_eq!(fs::read_dir(other.path()).unwrap().count(), 0);
    }

    #[test]
    fn legacy_files_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let payload = proto::SnapshotEnvelope {
            members: Vec::new(),
            image: Bytes::from_static(b"old image"),
            image_size: 0,
            image_crc32: 0,
        }
        .encode_to_vec();
        let mut raw = crc32fast::hash(&payload).to_le_bytes().to_vec();
        raw.extend_from_slice(&payload);
        fs::write(dir.path().join(file_name(3, 1)), raw).unwrap();
        let envelope = read_envelope(dir.path(), 3, 1).unwrap();
        let image = image(dir.path(), 3, 1, &envelope).unwrap();
        image.verify().unwrap();
        assert_eq!(read_all(&image), b"old image");
        assert_eq!(read_envelope(dir.path(), 3, 1).unwrap(), envelope);
    }
}
