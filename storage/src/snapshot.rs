//! Point-in-time images of the whole store, for raft snapshots and backups.
//!
//! Format: the magic `BALLAST-SNAP\x01`, then records `[cf u8][key len u32]
//! [key][value len u32][value]` (lengths big-endian), then the end marker
//! `0xFF`, the record count (u64) and a CRC-32 of every byte before it. A
//! restore checks the whole image before it touches the store, so a
//! truncated or corrupt image changes nothing.

use std::io::{Read, Write};

use crate::engine::{Cf, WriteBatch};
use crate::error::{Result, StorageError};
use crate::kv_store::{KvStore, META_APPLIED};

const MAGIC: &[u8] = b"BALLAST-SNAP\x01";
const END: u8 = 0xFF;

/// Hashes and counts what passes through to the inner writer.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Summing<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data)
    }
}

fn io_err(e: std::io::Error) -> StorageError {
    StorageError::Engine(format!("snapshot i/o: {e}"))
}

/// Writes a consistent image of `store` (every column family, read from one
/// engine snapshot) to `out`. Returns the bytes written and the applied
/// index the image reflects.
pub fn write_snapshot(store: &KvStore, out: &mut dyn Write) -> Result<(u64, u64)> {
    // The writer lock pins the applied index to the engine snapshot taken here.
    let (snap_applied, snap) =
        store.with_writer(|| Ok((store.applied_index(), store.engine().snapshot())))?;
    let mut w = Summing {
        inner: out,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    w.put(MAGIC).map_err(io_err)?;
    let mut count: u64 = 0;
    for cf in Cf::ALL {
        let mut failure = None;
        snap.scan(cf, &[], None, &mut |k, v| {
            let res = (|| {
                w.put(&[cf.index() as u8])?;
                w.put(&(k.len() as u32).to_be_bytes())?;
                w.put(k)?;
                w.put(&(v.len() as u32).to_be_bytes())?;
                w.put(v)
            })();
            count += 1;
            match res {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(io_err(e));
        }
    }
    w.put(&[END]).map_err(io_err)?;
    w.put(&count.to_be_bytes()).map_err(io_err)?;
    let crc = w.crc.clone().finalize();
    w.inner.write_all(&crc.to_be_bytes()).map_err(io_err)?;
    Ok((w.bytes + 4, snap_applied))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::CorruptSnapshot(what.into())
}

type Records = Vec<(Cf, Vec<u8>, Vec<u8>)>;

/// Parses and verifies a whole image.
fn parse(bytes: &[u8]) -> Result<Records> {
    if bytes.len() < MAGIC.len() + 1 + 8 + 4 || !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a Ballast snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut pos = MAGIC.len();
    let mut records = Vec::new();
    let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let s = &body[*pos..end];
        *pos = end;
        Ok(s)
    };
    loop {
        let tag = take(&mut pos, 1)?[0];
        if tag == END {
            let count = u64::from_be_bytes(take(&mut pos, 8)?.try_into().expect("8"));
            if count != records.len() as u64 || pos != body.len() {
                return Err(corrupt("record count mismatch"));
            }
            return Ok(records);
        }
        let cf = Cf::from_index(tag).ok_or_else(|| corrupt("unknown column family"))?;
        let klen = u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4")) as usize;
        let key = take(&mut pos, klen)?.to_vec();
        let vlen = u32::from_be_bytes(take(&mut pos, 4)?.try_into().expect("4")) as usize;
        let value = take(&mut pos, vlen)?.to_vec();
        // Refuse now what the store could not load after the swap.
        crate::kv_store::check_record(cf, &key, &value)
            .map_err(|e| corrupt(&format!("unreadable record: {e}")))?;
        records.push((cf, key, value));
    }
}

/// A verified snapshot image, ready to install.
pub(crate) struct Image(Records);

/// Reads and verifies a whole image; nothing is touched yet.
pub(crate) fn read_image(input: &mut dyn Read) -> Result<Image> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(io_err)?;
    parse(&bytes).map(Image)
}

/// Replaces the store's whole state with a verified image, durably. The
/// applied index is written last: a crash part-way leaves a store that does
/// not claim the image's index (raft restores it again), never one that
/// claims it without all of its data.
pub(crate) fn install(store: &KvStore, image: Image) -> Result<()> {
    store.with_writer(|| {
        store.wait_compaction();
        let engine = store.engine();
        engine.clear()?;
        let (applied, rest): (Records, Records) = image
            .0
            .into_iter()
            .partition(|(cf, k, _)| *cf == Cf::Meta && k.as_slice() == META_APPLIED);
        for chunk in rest.chunks(10_000).chain([applied.as_slice()]) {
            let mut batch = WriteBatch::default();
            for (cf, k, v) in chunk {
                batch.put(*cf, k, v);
            }
            engine.write(batch)?;
        }
        engine.sync()?;
        store.reload()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::{KvEngine, MemEngine, ReadView, ScanFn};
    use crate::{PutRequest, StoreConfig, WriteOp};

    /// A [`MemEngine`] that records its writes (whether each set the
    /// applied index) and syncs, in order.
    #[derive(Default)]
    struct Recording {
        inner: MemEngine,
        events: Mutex<Vec<&'static str>>,
    }

    impl ReadView for Recording {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(cf, key)
        }
        fn scan(&self, cf: Cf, start: &[u8], end: Option<&[u8]>, f: &mut ScanFn<'_>) -> Result<()> {
            self.inner.scan(cf, start, end, f)
        }
    }

    impl KvEngine for Recording {
        fn write(&self, batch: WriteBatch) -> Result<()> {
            let applied = batch.iter().any(
                |op| matches!(op, crate::engine::BatchOp::Put(Cf::Meta, k, _) if k == META_APPLIED),
            );
            let event = if applied { "write applied" } else { "write" };
            self.events.lock().unwrap().push(event);
            self.inner.write(batch)
        }
        fn sync(&self) -> Result<()> {
            self.events.lock().unwrap().push("sync");
            self.inner.sync()
        }
        fn snapshot(&self) -> Box<dyn ReadView + '_> {
            self.inner.snapshot()
        }
        fn size_bytes(&self) -> u64 {
            self.inner.size_bytes()
        }
        fn defragment(&self) -> Result<()> {
            self.inner.defragment()
        }
        fn clear(&self) -> Result<()> {
            self.inner.clear()
        }
    }

    #[test]
    fn install_writes_the_applied_index_last_then_syncs() {
        let source = KvStore::open(Arc::new(MemEngine::new()), StoreConfig::default()).unwrap();
        let ops: Vec<WriteOp> = (0..25_000)
            .map(|i| {
                WriteOp::Put(PutRequest {
                    key: format!("k{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
            })
            .collect();
        let entries: Vec<(u64, &WriteOp)> = (1..).zip(&ops).collect();
        source.apply(&entries);
        let mut image = Vec::new();
        write_snapshot(&source, &mut image).unwrap();

        let engine = Arc::new(Recording::default());
        let target = KvStore::open(engine.clone(), StoreConfig::default()).unwrap();
        engine.events.lock().unwrap().clear();
        install(&target, read_image(&mut image.as_slice()).unwrap()).unwrap();
        let events = engine.events.lock().unwrap().clone();
        assert!(
            events.len() > 3,
            "the image spans several writes: {events:?}"
        );
        let n = events.len();
        assert_eq!(events[n - 2..], ["write applied", "sync"]);
        assert!(events[..n - 2].iter().all(|e| *e == "write"), "{events:?}");
        assert_eq!(target.applied_index(), 25_000);
        assert_eq!(target.current_revision(), source.current_revision());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(parse(b"").is_err());
        assert!(parse(b"hello world, this is not a snapshot").is_err());
        let mut img = MAGIC.to_vec();
        img.push(END);
        img.extend_from_slice(&0u64.to_be_bytes());
        let crc = crc32fast::hash(&img);
        img.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(parse(&img).unwrap().len(), 0);
        for cut in 0..img.len() {
            assert!(parse(&img[..cut]).is_err(), "cut {cut}");
        }
        let mut flipped = img.clone();
        flipped[MAGIC.len()] ^= 1;
        assert!(parse(&flipped).is_err());
    }
}
