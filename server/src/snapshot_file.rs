//! Snapshot files as streams. The blob `etcdctl snapshot save` writes from a
//! Ballast member (see [`crate::snapshot_blob`]) is checked a piece at a time
//! as it arrives ([`BlobCheck`], [`SnapshotWriter`]) and when it is read back
//! ([`SnapshotFile`]), so memory stays at one chunk whatever the store's size.
//!
//! ```text
//! [image length: u64 BE][image ...][zeros to a multiple of 512][SHA-256 of all before]
//! ```
//!
//! Stricter than [`crate::image_from_blob`] in one way: the padding must be
//! the least that makes whole pages (as every Ballast member writes it), so
//! the header alone says how long the file must be and a short file is
//! reported as truncated before it is read.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bytes of the image length in front of the image.
const HEADER: u64 = 8;
/// The header, image and padding fill whole pages of this size.
const PAGE: u64 = 512;
/// Bytes of the SHA-256 trailer.
const TRAILER: u64 = 32;
/// Bytes read or buffered at a time.
const BUF: usize = 64 * 1024;

/// Why a snapshot blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("not a Ballast snapshot: only {0} bytes")]
    TooShort(u64),
    #[error("not a Ballast snapshot: its header claims an image of {0} bytes")]
    BadLength(u64),
    #[error("truncated or damaged: {got} of the {expected} bytes its header promises")]
    Truncated { got: u64, expected: u64 },
    #[error(
        "damaged, or not a Ballast snapshot: {got} bytes where its header promises {expected}"
    )]
    TooLong { got: u64, expected: u64 },
    #[error("checksum mismatch: its SHA-256 trailer does not match its content")]
    ChecksumMismatch,
    #[error(transparent)]
    Io(#[from] io::Error),
}

type Result<T> = std::result::Result<T, SnapshotFileError>;

/// The size of the blob that holds an image of `image_len` bytes; `None`
/// past `u64`.
pub fn blob_len(image_len: u64) -> Option<u64> {
    HEADER
        .checked_add(image_len)?
        .checked_next_multiple_of(PAGE)?
        .checked_add(TRAILER)
}

/// Checks a blob fed to it in pieces of any size: the length header, the
/// size it promises (a blob longer than that is refused as soon as it is),
/// and at the end the SHA-256 trailer. Holds no more than the trailer.
#[derive(Default)]
pub struct BlobCheck {
    sha: Sha256,
    header: [u8; HEADER as usize],
    trailer: [u8; TRAILER as usize],
    /// Bytes fed so far.
    seen: u64,
    /// The image length and the blob length, once the header is in.
    lens: Option<(u64, u64)>,
}

impl BlobCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole blob's length, once the header has been fed.
    pub fn expected_len(&self) -> Option<u64> {
        self.lens.map(|(_, blob)| blob)
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Feeds the next piece of the blob.
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        if self.lens.is_none() {
            let at = self.seen as usize;
            let n = (HEADER as usize - at).min(data.len());
            self.header[at..at + n].copy_from_slice(&data[..n]);
            self.sha.update(&data[..n]);
            self.seen += n as u64;
            data = &data[n..];
            if self.seen < HEADER {
                return Ok(());
            }
            let image = u64::from_be_bytes(self.header);
            let blob = blob_len(image).ok_or(SnapshotFileError::BadLength(image))?;
            self.lens = Some((image, blob));
        }
        let Some((_, expected)) = self.lens else {
            unreachable!("the header is complete here");
        };
        let got = self.seen + data.len() as u64;
        if got > expected {
            return Err(SnapshotFileError::TooLong { got, expected });
        }
        let body_end = expected - TRAILER;
        if self.seen < body_end {
            let n = ((body_end - self.seen) as usize).min(data.len());
            self.sha.update(&data[..n]);
            self.seen += n as u64;
            data = &data[n..];
        }
        if data.is_empty() {
            return Ok(());
        }
        let at = (self.seen - body_end) as usize;
        self.trailer[at..at + data.len()].copy_from_slice(data);
        self.seen += data.len() as u64;
        Ok(())
    }

    /// Ends the blob: checks that all of it came and that its SHA-256
    /// matches. Returns the image's length.
    pub fn finish(self) -> Result<u64> {
        let Some((image, expected)) = self.lens else {
            return Err(SnapshotFileError::TooShort(self.seen));
        };
        if self.seen < expected {
            return Err(SnapshotFileError::Truncated {
                got: self.seen,
                expected,
            });
        }
        if self.sha.finalize().as_slice() != self.trailer {
            return Err(SnapshotFileError::ChecksumMismatch);
        }
        Ok(image)
    }
}

/// A snapshot file, checked whole (size and SHA-256, in one streaming pass)
/// when it is opened; [`SnapshotFile::image`] then reads the store image in it.
pub struct SnapshotFile {
    file: File,
    image_len: u64,
    file_len: u64,
}

impl SnapshotFile {
    /// Opens and checks the snapshot at `path`; memory stays at one buffer.
    pub fn open(path: &Path) -> Result<SnapshotFile> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut input = BufReader::with_capacity(BUF, file);
        let mut check = BlobCheck::new();
        // The header first: a file of the wrong size is refused unread.
        let mut header = [0u8; HEADER as usize];
        if file_len < HEADER {
            return Err(SnapshotFileError::TooShort(file_len));
        }
        input.read_exact(&mut header)?;
        check.update(&header)?;
        match check.expected_len() {
            Some(expected) if file_len < expected => {
                return Err(SnapshotFileError::Truncated {
                    got: file_len,
                    expected,
                })
            }
            Some(expected) if file_len > expected => {
                return Err(SnapshotFileError::TooLong {
                    got: file_len,
                    expected,
                })
            }
            _ => {}
        }
        loop {
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            check.update(buf)?;
            let n = buf.len();
            input.consume(n);
        }
        let image_len = check.finish()?;
        Ok(SnapshotFile {
            file: input.into_inner(),
            image_len,
            file_len,
        })
    }

    /// The store image's length.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The store image, read from the file as it is needed (it can be
    /// sought, so a restore can check it before it installs it).
    pub fn image(self) -> io::Result<ImageReader> {
        let mut inner = BufReader::with_capacity(BUF, self.file);
        inner.seek(SeekFrom::Start(HEADER))?;
        Ok(ImageReader {
            inner,
            len: self.image_len,
            pos: 0,
        })
    }
}

/// The store image inside a [`SnapshotFile`]: a window on the file.
pub struct ImageReader {
    inner: BufReader<File>,
    len: u64,
    /// Position within the image (may be past its end after a seek).
    pos: u64,
}

impl Read for ImageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ImageReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            ));
        };
        if target != self.pos {
            let file_pos = HEADER
                .checked_add(target)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek past u64"))?;
            self.inner.seek(SeekFrom::Start(file_pos))?;
            self.pos = target;
        }
        Ok(target)
    }
}

/// Writes a blob arriving in pieces to `<path>.part`, checking it as it
/// comes ([`BlobCheck`]); [`SnapshotWriter::commit`] checks the end, syncs
/// and renames it to `path`. Dropped before that (an error, a damaged
/// blob), it removes the `.part` file: `path` only ever holds a whole,
/// checked snapshot.
pub struct SnapshotWriter {
    path: PathBuf,
    part: PathBuf,
    out: Option<io::BufWriter<File>>,
    check: BlobCheck,
}

impl SnapshotWriter {
    /// Creates (or truncates) `<path>.part`.
    pub fn create(path: &Path) -> io::Result<SnapshotWriter> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = File::create(&part)?;
        Ok(SnapshotWriter {
            path: path.to_owned(),
            part,
            out: Some(io::BufWriter::with_capacity(BUF, file)),
            check: BlobCheck::new(),
        })
    }

    /// The `.part` file written to.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.check.seen()
    }

    /// Checks and writes the next piece.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check.update(data)?;
        match self.out.as_mut() {
            Some(out) => out.write_all(data)?,
            None => unreachable!("the writer is open until commit"),
        }
        Ok(())
    }

    /// Checks that the whole blob came and its SHA-256 matches, makes it
    /// durable and moves it to its path. Returns the file's length.
    pub fn commit(mut self) -> Result<u64> {
        let check = std::mem::take(&mut self.check);
        let len = check.seen();
        check.finish()?;
        let Some(out) = self.out.take() else {
            unreachable!("the writer is open until commit");
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.part, &self.path)?;
        self.part = PathBuf::new();
        // The rename itself made durable (the new name in its directory).
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
        Ok(len)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.part.as_os_str().is_empty() {
            drop(self.out.take());
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::{image_from_blob, snapshot_blob};

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Feeds `blob` to a check in pieces of `piece` bytes.
    fn check_in_pieces(blob: &[u8], piece: usize) -> Result<u64> {
        let mut check = BlobCheck::new();
        for part in blob.chunks(piece.max(1)) {
            check.update(part)?;
        }
        check.finish()
    }

    #[test]
    fn blob_len_is_what_snapshot_blob_writes() {
        for len in [0usize, 1, 503, 504, 505, 5000] {
            assert_eq!(
                blob_len(len as u64),
                Some(snapshot_blob(&image(len)).len() as u64)
            );
        }
        assert_eq!(blob_len(u64::MAX - 10), None);
    }

    /// The streaming check says what `image_from_blob` says, for every way
    /// of cutting the blob into pieces, and after any cut or flipped byte.
    #[test]
    fn streaming_check_agrees_with_image_from_blob() {
        for len in [0usize, 1, 503, 504, 505, 3000] {
            let blob = snapshot_blob(&image(len));
            for piece in [1, 7, 8, 9, 31, 32, 33, 512, 4096, blob.len()] {
                assert_eq!(check_in_pieces(&blob, piece).unwrap(), len as u64);
            }
            for cut in 0..blob.len() {
                let got = check_in_pieces(&blob[..cut], 100);
                assert!(
                    matches!(
                        got,
                        Err(SnapshotFileError::TooShort(_) | SnapshotFileError::Truncated { .. })
                    ),
                    "cut {cut}: {got:?}"
                );
            }
            for at in (0..blob.len()).step_by(37).chain([blob.len() - 1]) {
                let mut bad = blob.clone();
                bad[at] ^= 0x10;
                assert_eq!(image_from_blob(&bad), None);
                assert!(check_in_pieces(&bad, 64).is_err(), "flipped byte {at}");
            }
            let mut longer = blob.clone();
            longer.push(0);
            assert!(matches!(
                check_in_pieces(&longer, 1),
                Err(SnapshotFileError::TooLong { .. })
            ));
        }
        // A header claiming nearly 2^64 bytes is refused at once.
        let mut huge = u64::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 100]);
        assert!(matches!(
            check_in_pieces(&huge, 3),
            Err(SnapshotFileError::BadLength(u64::MAX))
        ));
    }

    #[test]
    fn snapshot_file_reads_the_image_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let img = image(70_000);
        std::fs::write(&path, snapshot_blob(&img)).unwrap();
        let snap = SnapshotFile::open(&path).unwrap();
        assert_eq!(snap.image_len(), img.len() as u64);
        assert_eq!(snap.file_len(), std::fs::metadata(&path).unwrap().len());
        let mut r = snap.image().unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, img);
        // Read twice from a saved position, as a restore does.
        assert_eq!(r.seek(SeekFrom::Start(1000)).unwrap(), 1000);
        assert_eq!(r.stream_position().unwrap(), 1000);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, img[1000..]);
        assert_eq!(r.seek(SeekFrom::End(-5)).unwrap(), img.len() as u64 - 5);
        let mut last = Vec::new();
        r.read_to_end(&mut last).unwrap();
        assert_eq!(last, img[img.len() - 5..]);
        assert!(r.seek(SeekFrom::Current(-(img.len() as i64) - 1)).is_err());
    }

    #[test]
    fn snapshot_file_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let blob = snapshot_blob(&image(2000));
        let open = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            SnapshotFile::open(&path).err()
        };
        assert!(matches!(
            open(&blob[..5]),
            Some(SnapshotFileError::TooShort(5))
        ));
        assert!(matches!(
            open(&blob[..blob.len() - 1]),
            Some(SnapshotFileError::Truncated { .. })
        ));
        let mut bad = blob.clone();
        bad[1500] ^= 1;
        assert!(matches!(
            open(&bad),
            Some(SnapshotFileError::ChecksumMismatch)
        ));
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open(&bad),
            Some(SnapshotFileError::ChecksumMismatch)
        ));
        assert!(SnapshotFile::open(&dir.path().join("missing")).is_err());
        assert!(open(&blob).is_none());
    }

    #[test]
    fn writer_renames_only_a_whole_checked_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.db");
        let part = dir.path().join("backup.db.part");
        let blob = snapshot_blob(&image(100_000));

        let mut w = SnapshotWriter::create(&path).unwrap();
        assert_eq!(w.part_path(), part);
        for piece in blob.chunks(32 * 1024) {
            w.write(piece).unwrap();
        }
        assert_eq!(w.received(), blob.len() as u64);
        assert_eq!(w.commit().unwrap(), blob.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), blob);
        assert!(!part.exists());
        std::fs::remove_file(&path).unwrap();

        // Cut short, a flipped byte, more than promised: no file, no .part.
        let mut flipped = blob.clone();
        flipped[50_000] ^= 4;
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0; 600]);
        for (bytes, what) in [
            (&blob[..blob.len() - 100], "truncated"),
            (&flipped[..], "checksum mismatch"),
            (&longer[..], "where its header promises"),
        ] {
            let mut w = SnapshotWriter::create(&path).unwrap();
            let mut failed = None;
            for piece in bytes.chunks(32 * 1024) {
                if let Err(e) = w.write(piece) {
                    failed = Some(e);
                    break;
                }
            }
            let err = match failed {
                Some(e) => {
                    drop(w);
                    e
                }
                None => w.commit().unwrap_err(),
            };
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(!part.exists(), "{what}: .part left behind");
            assert!(!path.exists(), "{what}: file written");
        }

        // Dropped mid-way (the stream broke): the .part is removed.
        let mut w = SnapshotWriter::create(&path).unwrap();
        w.write(&blob[..1000]).unwrap();
        assert!(part.exists());
        drop(w);
        assert!(!part.exists());
    }
}
