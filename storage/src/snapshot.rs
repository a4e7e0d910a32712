//! Point-in-time images of the whole store, for raft snapshots and backups.
//!
//! Format: the magic `BALLAST-SNAP\x01`, then records `[cf u8][key len u32]
//! [key][value len u32][value]` (lengths big-endian), then the end marker
//! `0xFF`, the record count (u64) and a CRC-32 of every byte before it. A
//! restore checks the whole image before it touches the store, so a
//! truncated or corrupt image changes nothing. Images are written, checked
//! and installed as streams: memory stays at one record, whatever the size.

use std::io::{Read, Write};

use crate::engine::{Cf, WriteBatch};
use crate::error::{Result, StorageError};
use crate::kv::RecordHead;
use crate::kv_store::{KvStore, META_APPLIED, META_HEADS};

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
    for cf in Cf::IMAGED {
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

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// An image's records, read one at a time and checked as they come: the
/// framing, each record (what the store could not load is refused), and at
/// the end the count and checksum. Memory stays at one record.
struct Records<R> {
    input: Hashing<R>,
    count: u64,
    done: bool,
}

type Record = (Cf, Vec<u8>, Vec<u8>);

impl<R: Read> Records<R> {
    fn new(input: R) -> Result<Self> {
        let mut r = Records {
            input: Hashing {
                inner: input,
                crc: crc32fast::Hasher::new(),
            },
            count: 0,
            done: false,
        };
        let mut magic = [0u8; MAGIC.len()];
        r.exact(&mut magic)
            .map_err(|_| corrupt("not a Ballast snapshot"))?;
        if magic != MAGIC {
            return Err(corrupt("not a Ballast snapshot"));
        }
        Ok(r)
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt("truncated"),
            _ => io_err(e),
        })
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// `len` bytes, allocated as they arrive (a corrupt length cannot
    /// allocate more than the input holds).
    fn bytes(&mut self, len: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut out)
            .map_err(io_err)?;
        if out.len() != len as usize {
            return Err(corrupt("truncated"));
        }
        Ok(out)
    }

    /// The next record; `None` after the last, once the image checked out.
    fn next(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.exact(&mut tag)?;
        if tag[0] == END {
            let mut count = [0u8; 8];
            self.exact(&mut count)?;
            let expected = self.input.crc.clone().finalize();
            let mut crc = [0u8; 4];
            self.input
                .inner
                .read_exact(&mut crc)
                .map_err(|_| corrupt("truncated"))?;
            if u32::from_be_bytes(crc) != expected {
                return Err(corrupt("checksum mismatch"));
            }
            let mut extra = [0u8; 1];
            if u64::from_be_bytes(count) != self.count
                || self.input.inner.read(&mut extra).map_err(io_err)? != 0
            {
                return Err(corrupt("record count mismatch"));
            }
            self.done = true;
            return Ok(None);
        }
        let cf = *Cf::IMAGED
            .get(tag[0] as usize)
            .ok_or_else(|| corrupt("unknown column family"))?;
        let klen = self.u32()?;
        let key = self.bytes(klen)?;
        let vlen = self.u32()?;
        let value = self.bytes(vlen)?;
        // Refuse now what the store could not load after the swap.
        crate::kv_store::check_record(cf, &key, &value)
            .map_err(|e| corrupt(&format!("unreadable record: {e}")))?;
        self.count += 1;
        Ok(Some((cf, key, value)))
    }
}

/// Reads and checks a whole image, record by record, without keeping it.
pub fn verify_image(input: impl Read) -> Result<()> {
    let mut records = Records::new(input)?;
    while records.next()?.is_some() {}
    Ok(())
}

/// Records per write while installing an image.
const INSTALL_BATCH_RECORDS: usize = 10_000;
/// Bytes per write while installing an image.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Replaces the store's whole state with an image (verified already, see
/// [`verify_image`]), durably, in bounded writes. The applied index is
/// written last: a crash part-way leaves a store that does not claim the
/// image's index (raft restores it again), never one that claims it without
/// all of its data.
pub(crate) fn install(store: &KvStore, input: impl Read) -> Result<()> {
    store.with_writer(|| {
        store.wait_compaction();
        let engine = store.engine();
        engine.clear()?;
        let mut records = Records::new(input)?;
        let mut applied = None;
        let mut batch = WriteBatch::default();
        let (mut n, mut bytes) = (0, 0);
        while let Some((cf, k, v)) = records.next()? {
            if cf == Cf::Meta && k.as_slice() == META_APPLIED {
                applied = Some(v);
                continue;
            }
            n += 1;
            bytes += k.len() + v.len();
            batch.put(cf, &k, &v);
            if cf == Cf::Kv {
                // Checked by `Records`: the head is a prefix of the record.
                batch.put(Cf::Head, &k, RecordHead::prefix(&v)?);
            }
            if n >= INSTALL_BATCH_RECORDS || bytes >= INSTALL_BATCH_BYTES {
                engine.write(std::mem::take(&mut batch))?;
                (n, bytes) = (0, 0);
            }
        }
        batch.put(Cf::Meta, META_HEADS, []);
        if let Some(v) = applied {
            batch.put(Cf::Meta, META_APPLIED, &v);
        }
        engine.write(batch)?;
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
        verify_image(image.as_slice()).unwrap();
        install(&target, image.as_slice()).unwrap();
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
        assert!(verify_image(&b""[..]).is_err());
        assert!(verify_image(&b"hello world, this is not a snapshot"[..]).is_err());
        let mut img = MAGIC.to_vec();
        img.push(END);
        img.extend_from_slice(&0u64.to_be_bytes());
        let crc = crc32fast::hash(&img);
        img.extend_from_slice(&crc.to_be_bytes());
        verify_image(img.as_slice()).unwrap();
        for cut in 0..img.len() {
            assert!(verify_image(&img[..cut]).is_err(), "cut {cut}");
        }
        let mut flipped = img.clone();
        flipped[MAGIC.len()] ^= 1;
        assert!(verify_image(flipped.as_slice()).is_err());
        let mut longer = img.clone();
        longer.push(0);
        assert!(verify_image(longer.as_slice()).is_err());
        // A record claiming 4 GiB of key in a tiny image: refused as
        // truncated, without allocating what it claims.
        let mut huge = MAGIC.to_vec();
        huge.push(Cf::ALL[0].index() as u8);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(b"abc");
        assert!(matches!(
            verify_image(huge.as_slice()),
            Err(StorageError::CorruptSnapshot(_))
        ));
    }
}
