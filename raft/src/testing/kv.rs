//! A small state machine for tests: a map from `u64` keys to append-only
//! lists of `u64` values. Appends are the writes; reading a key's whole list
//! lets a checker see the exact order writes took effect.
//!
//! It flushes its state (with the applied index, in one file write) only
//! every `flush_every` entries and never fsyncs, so a killed node really
//! comes back with an older applied index and must replay or restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::Error;
use crate::snapshot::SnapshotImage;
use crate::state_machine::{Committed, EntryKind, StateMachine};

/// The state: applied index and key → appended values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvState {
    pub applied: u64,
    pub data: BTreeMap<u64, Vec<u64>>,
}

impl KvState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (k, vs) in &self.data {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&(vs.len() as u64).to_le_bytes());
            for v in vs {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    fn decode(raw: &[u8]) -> Result<Self, Error> {
        let mut words = raw.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        });
        let bad = || Error::StateMachine("kv image truncated".into());
        if raw.len() & 7 != 0 {
            return Err(bad());
        }
        let applied = words.next().ok_or_else(bad)?;
        let n = words.next().ok_or_else(bad)?;
        let mut data = BTreeMap::new();
        for _ in 0..n {
            let k = words.next().ok_or_else(bad)?;
            let len = words.next().ok_or_else(bad)?;
            let mut vs = Vec::new();
            for _ in 0..len {
                vs.push(words.next().ok_or_else(bad)?);
            }
            data.insert(k, vs);
        }
        Ok(KvState { applied, data })
    }
}

/// The command a proposal carries: append `value` to `key`.
pub fn encode_append(key: u64, value: u64) -> Vec<u8> {
    let mut out = vec![b'A'];
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out
}

fn decode_append(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() != 17 || data[0] != b'A' {
        return None;
    }
    let k = u64::from_le_bytes(data[1..9].try_into().ok()?);
    let v = u64::from_le_bytes(data[9..17].try_into().ok()?);
    Some((k, v))
}

/// The test state machine. Applying an append answers the list's new length.
pub struct KvStateMachine {
    path: PathBuf,
    state: Arc<RwLock<KvState>>,
    flush_every: u64,
    unflushed: u64,
}

impl std::fmt::Debug for KvStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStateMachine")
            .field("path", &self.path)
            .finish()
    }
}

/// Reads a [`KvStateMachine`]'s state from outside its thread (for reads
/// after [`RaftNode::read_index`](crate::RaftNode::read_index)).
#[derive(Debug, Clone)]
pub struct KvReader {
    state: Arc<RwLock<KvState>>,
}

impl KvReader {
    /// The values appended to `key`, in order.
    pub fn get(&self, key: u64) -> Vec<u64> {
        self.state
            .read()
            .data
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn applied(&self) -> u64 {
        self.state.read().applied
    }

    /// A copy of the whole state.
    pub fn state(&self) -> KvState {
        self.state.read().clone()
    }
}

impl KvStateMachine {
    /// Opens the state machine persisted in `dir` (empty if none).
    pub fn open(dir: &Path, flush_every: u64) -> Result<(Self, KvReader), Error> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("kv.bin");
        let state = match std::fs::read(&path) {
            Ok(raw) => KvState::decode(&raw)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KvState::default(),
            Err(e) => return Err(e.into()),
        };
        let state = Arc::new(RwLock::new(state));
        Ok((
            KvStateMachine {
                path,
                state: state.clone(),
                flush_every: flush_every.max(1),
                unflushed: 0,
            },
            KvReader { state },
        ))
    }

    fn flush(&mut self) {
        if let Err(e) = self.write_file(false) {
            tracing::warn!(error = %e, "kv flush failed");
        }
    }

    /// Writes the state to its file (replaced atomically), with fsync when
    /// `durable`.
    fn write_file(&mut self, durable: bool) -> std::io::Result<()> {
        let raw = self.state.read().encode();
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &raw)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if durable {
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        self.unflushed = 0;
        Ok(())
    }
}

impl StateMachine for KvStateMachine {
    type Output = u64;

    fn apply(&mut self, entries: &[Committed]) -> Vec<u64> {
        let mut out = Vec::with_capacity(entries.len());
        {
            let mut st = self.state.write();
            for e in entries {
                if e.index <= st.applied {
                    out.push(0);
                    continue;
                }
                let o = match (&e.kind, decode_append(&e.data)) {
                    (EntryKind::Normal, Some((k, v))) => {
                        let list = st.data.entry(k).or_default();
                        list.push(v);
                        list.len() as u64
                    }
                    _ => 0,
                };
                st.applied = e.index;
                out.push(o);
            }
        }
        self.unflushed += entries.len() as u64;
        if self.unflushed >= self.flush_every {
            self.flush();
        }
        out
    }

    fn applied_index(&self) -> u64 {
        self.state.read().applied
    }

    fn sync(&mut self) -> Result<(), Error> {
        Ok(self.write_file(true)?)
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<u64, Error> {
        let st = self.state.read();
        out.write_all(&st.encode())?;
        Ok(st.applied)
    }

    fn restore(&mut self, index: u64, image: &SnapshotImage) -> Result<(), Error> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut image.reader()?, &mut bytes)?;
        let mut s = KvState::decode(&bytes)?;
        s.applied = index;
        *self.state.write() = s;
        self.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: u64, key: u64, value: u64) -> Committed {
        Committed {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Bytes::from(encode_append(key, value)),
        }
    }

    #[test]
    fn replays_are_no_ops_and_flushes_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, reader) = KvStateMachine::open(dir.path(), 2).unwrap();
        assert_eq!(sm.apply(&[entry(1, 7, 10), entry(2, 7, 11)]), vec![1, 2]);
        assert_eq!(sm.apply(&[entry(2, 7, 11), entry(3, 8, 1)]), vec![0, 1]);
        assert_eq!(reader.get(7), vec![10, 11]);
        drop(sm);
        // Flushed after the first batch (2 entries) and the second (2 more).
        let (sm, reader) = KvStateMachine::open(dir.path(), 2).unwrap();
        assert_eq!(sm.applied_index(), 3);
        assert_eq!(reader.get(8), vec![1]);
        let snaps = tempfile::tempdir().unwrap();
        let members = crate::membership::Members::default();
        let envelope =
            crate::snapshot::write_file(snaps.path(), 3, 1, &members, |out| sm.snapshot(out))
                .unwrap();
        let image = crate::snapshot::image(snaps.path(), 3, 1, &envelope).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let (mut other, r2) = KvStateMachine::open(dir2.path(), 100).unwrap();
        other.restore(3, &image).unwrap();
        assert_eq!(r2.state(), reader.state());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut image.reader().unwrap(), &mut bytes).unwrap();
        assert!(KvState::decode(&bytes[..bytes.len() - 8]).is_err());
    }
}
