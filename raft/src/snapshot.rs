//! Snapshot files and the snapshot envelope.
//!
//! A raft snapshot's `data` is a [`proto::SnapshotEnvelope`]: the member
//! contexts as of the snapshot index plus the state machine's image. The
//! latest snapshot is kept on disk as `snap/<index>-<term>.snap`:
//!
//! ```text
//! [crc32 of payload: u32 LE][payload = envelope bytes]
//! ```
//!
//! Snapshots are taken when a follower needs one; the file is what lets a
//! node whose state machine lost unsynced writes recover after the log below
//! the snapshot was compacted away. A checkpoint (the state machine synced)
//! compacts the log too; a snapshot older than the log's new start is then
//! of no use and is removed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message as _;

use crate::error::{Error, Result};
use crate::membership::Members;
use crate::proto;

pub(crate) fn file_name(index: u64, term: u64) -> String {
    format!("{index:020}-{term:020}.snap")
}

/// Writes a snapshot file durably (temp file, fsync, rename, fsync dir).
pub(crate) fn write_file(dir: &Path, index: u64, term: u64, payload: &[u8]) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(file_name(index, term));
    let tmp = dir.join(format!("{}.tmp", file_name(index, term)));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&crc32fast::hash(payload).to_le_bytes())?;
        f.write_all(payload)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Reads a snapshot file's payload, checking its checksum.
pub(crate) fn read_file(dir: &Path, index: u64, term: u64) -> Result<Bytes> {
    let path = dir.join(file_name(index, term));
    let raw = fs::read(&path).map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    if raw.len() < 4 {
        return Err(Error::Corrupt(format!("{}: truncated", path.display())));
    }
    let (crc, payload) = raw.split_at(4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(payload) != crc {
        return Err(Error::Corrupt(format!(
            "{}: checksum mismatch",
            path.display()
        )));
    }
    Ok(Bytes::copy_from_slice(payload))
}

/// Removes every snapshot file (and leftover temp file) except `keep`.
pub(crate) fn remove_others(dir: &Path, keep: Option<(u64, u64)>) {
    let keep = keep.map(|(i, t)| file_name(i, t));
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".snap") || name.ends_with(".tmp") {
            if keep.as_deref() == Some(&*name) {
                continue;
            }
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), error = %e, "removing old snapshot");
            }
        }
    }
}

pub(crate) fn encode_envelope(members: &Members, image: Vec<u8>) -> Bytes {
    proto::SnapshotEnvelope {
        members: members.to_proto(),
        image: image.into(),
    }
    .encode_to_vec()
    .into()
}

pub(crate) fn decode_envelope(data: &[u8]) -> Result<proto::SnapshotEnvelope> {
    Ok(proto::SnapshotEnvelope::decode(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), 7, 2, b"hello").unwrap();
        assert_eq!(&read_file(dir.path(), 7, 2).unwrap()[..], b"hello");
        let path = dir.path().join(file_name(7, 2));
        let mut raw = fs::read(&path).unwrap();
        raw[5] ^= 1;
        fs::write(&path, raw).unwrap();
        assert!(matches!(
            read_file(dir.path(), 7, 2),
            Err(Error::Corrupt(_))
        ));
        write_file(dir.path(), 9, 2, b"x").unwrap();
        remove_others(dir.path(), Some((9, 2)));
        assert!(!path.exists());
        assert!(read_file(dir.path(), 9, 2).is_ok());
    }
}
