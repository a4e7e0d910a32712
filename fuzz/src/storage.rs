//! Targets on the storage engine: its on-disk codecs, the key index
//! against a model of a key's history, and snapshot restore.

use std::sync::{Arc, OnceLock};

use ballast_storage::fuzz_api::{decode_record, encode_record, parse_snapshot, FuzzKeyIndex};
use ballast_storage::snapshot::write_snapshot;
use ballast_storage::{
    KeyValue, KvStore, MemEngine, PutRequest, RangeRequest, Revision, StoreConfig, WatchableStore,
    WriteOp,
};

/// Byte 0 picks the codec; the rest is decoded. A value that decodes must
/// encode back to exactly the bytes it came from (so nothing on disk is
/// read two ways), and every `KeyValue` must survive encode → decode.
pub fn storage_codecs(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(rev) = Revision::decode(rest) {
                assert_eq!(rev.encode().as_slice(), rest, "revision re-encodes");
                // Byte order is revision order for the revisions the store
                // writes (never negative).
                let next = Revision::new(rev.main, rev.sub.saturating_add(1));
                if rev.main >= 0 && rev.sub >= 0 && next != rev {
                    assert!(
                        rev.encode() < next.encode(),
                        "{rev:?} sorts before {next:?}"
                    );
                }
            }
        }
        1 => {
            if let Ok((kv, tombstone)) = decode_record(rest) {
                assert_eq!(encode_record(&kv, tombstone), rest, "record re-encodes");
            }
        }
        2 => {
            // Any KeyValue (fields taken from the input) round-trips.
            let n = |i: usize| {
                let mut b = [0u8; 8];
                for (j, x) in b.iter_mut().enumerate() {
                    *x = rest.get(i * 8 + j).copied().unwrap_or(0);
                }
                i64::from_le_bytes(b)
            };
            let tail = rest.get(32..).unwrap_or_default();
            let split = tail.first().map_or(0, |b| *b as usize).min(tail.len());
            let kv = KeyValue {
                key: tail[..split].to_vec(),
                value: tail[split..].to_vec(),
                create_revision: n(0),
                mod_revision: n(1),
                version: n(2),
                lease: n(3),
            };
            let tombstone = which & 0x80 != 0;
            let bytes = encode_record(&kv, tombstone);
            assert_eq!(decode_record(&bytes).ok(), Some((kv, tombstone)));
            for cut in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                if cut < 38 {
                    assert!(decode_record(&bytes[..cut]).is_err(), "truncated at {cut}");
                }
            }
        }
        _ => {
            // Arbitrary bytes as a snapshot image: an error, never a panic.
            let _ = parse_snapshot(rest);
        }
    }
}

/// The model of one key: its changes in order, `(main revision, is_put)`.
fn model_get(history: &[(i64, bool)], at: i64) -> Option<(i64, i64, i64)> {
    let visible = history.iter().rposition(|(rev, _)| *rev <= at)?;
    if !history[visible].1 {
        return None;
    }
    // The generation: back to the change after the previous delete.
    let start = history[..visible]
        .iter()
        .rposition(|(_, put)| !put)
        .map_or(0, |i| i + 1);
    let version = (visible - start + 1) as i64;
    Some((history[visible].0, history[start].0, version))
}

/// Drives one key's index with puts and deletes at increasing revisions
/// (two bits of each byte pick the op, the rest the revision step), then
/// checks every read against the model, before and after a compaction at
/// a revision the input picks: reads at or after the compaction point
/// must not change, and every revision from there on stays.
pub fn key_index(data: &[u8]) {
    let mut ki = FuzzKeyIndex::default();
    let mut history: Vec<(i64, bool)> = Vec::new();
    let mut rev = 1i64;
    let mut compact_at = None;
    let mut live = false;
    for (i, &b) in data.iter().enumerate() {
        rev += 1 + (b >> 2) as i64 % 3;
        match b & 3 {
            0 | 1 => {
                let (create, version) = ki.put(Revision::new(rev, 0));
                history.push((rev, true));
                let want = model_get(&history, rev).expect("just put");
                assert_eq!((create, version), (want.1, want.2), "put @{rev} (byte {i})");
                live = true;
            }
            2 => {
                let deleted = ki.tombstone(Revision::new(rev, 0));
                assert_eq!(deleted, live, "delete @{rev} of a key live={live}");
                if deleted {
                    history.push((rev, false));
                }
                live = false;
            }
            _ => {
                if compact_at.is_none() {
                    compact_at = Some(rev - (b >> 4) as i64);
                }
            }
        }
    }
    for at in 0..=rev + 1 {
        assert_eq!(
            ki.get(at).map(|(m, c, v)| (m.main, c, v)),
            model_get(&history, at),
            "read at {at} of {history:?}"
        );
    }
    let Some(at) = compact_at else { return };
    let (gone, keep) = ki.compact(at);
    assert!(keep.len() <= 1, "keeps at most one revision below {at}");
    assert!(keep.iter().all(|r| r.main < at));
    for read in at..=rev + 1 {
        assert_eq!(
            ki.get(read).map(|(m, c, v)| (m.main, c, v)),
            model_get(&history, read),
            "read at {read} after compact({at}) of {history:?}"
        );
    }
    let since: Vec<i64> = ki.revisions_since(at).iter().map(|r| r.main).collect();
    let want: Vec<i64> = history
        .iter()
        .filter(|(r, _)| *r >= at)
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(
        since, want,
        "revisions from {at} after compact({at}) of {history:?}"
    );
    if gone {
        assert!(
            model_get(&history, rev + 1).is_none() && want.is_empty(),
            "a key with history at or after {at} left the index: {history:?}"
        );
    }
}

fn store() -> WatchableStore {
    let kv = KvStore::open(Arc::new(MemEngine::new()), StoreConfig::default())
        .expect("open a memory store");
    WatchableStore::new(kv)
}

fn put(store: &WatchableStore, index: u64, key: &[u8], value: &[u8]) -> i64 {
    let op = WriteOp::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    });
    let out = store.apply(&[(index, &op)]);
    out[0].result.as_ref().expect("put applies");
    out[0].revision
}

fn everything(store: &KvStore) -> Vec<KeyValue> {
    store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .expect("range over every key")
        .kvs
}

/// A real image: three keys, one overwritten, one deleted, one lease.
fn sample_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let s = store();
        put(&s, 1, b"a", b"1");
        put(&s, 2, b"b", b"2");
        put(&s, 3, b"a", b"3");
        let del = WriteOp::DeleteRange(ballast_storage::DeleteRangeRequest {
            key: b"b".to_vec(),
            ..Default::default()
        });
        s.apply(&[(4, &del)]);
        s.apply(&[(5, &WriteOp::LeaseGrant { id: 7, ttl: 60 })]);
        put(&s, 6, b"c", b"4");
        let mut out = Vec::new();
        write_snapshot(&s, &mut out).expect("write a snapshot");
        out
    })
}

const MAGIC: &[u8] = b"BALLAST-SNAP\x01";

/// Seals `records` (`(column family index, key, value)`) into a snapshot
/// image with a correct record count and checksum.
pub fn seal(records: &[(u8, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut img = MAGIC.to_vec();
    for (cf, k, v) in records {
        img.push(*cf);
        img.extend_from_slice(&(k.len() as u32).to_be_bytes());
        img.extend_from_slice(k);
        img.extend_from_slice(&(v.len() as u32).to_be_bytes());
        img.extend_from_slice(v);
    }
    img.push(0xFF);
    img.extend_from_slice(&(records.len() as u64).to_be_bytes());
    let crc = crc32(&img);
    img.extend_from_slice(&crc.to_be_bytes());
    img
}

/// CRC-32 (IEEE), as the snapshot trailer uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Records read from fuzz bytes: `[cf][klen u8][key][vlen u8][value]`…
fn records_from(data: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&cf, r)) = rest.split_first() {
        let take = |r: &[u8]| -> (Vec<u8>, usize) {
            let n = r.first().map_or(0, |b| *b as usize);
            let body = r.get(1..).unwrap_or_default();
            let n = n.min(body.len());
            (body[..n].to_vec(), (1 + n).min(r.len()))
        };
        let (key, used) = take(r);
        let r = &r[used..];
        let (value, used) = take(r);
        rest = &r[used..];
        out.push((cf % 4, key, value));
    }
    out
}

/// Byte 0 picks how the rest becomes a snapshot: a wire blob (the
/// Maintenance.Snapshot form), a raw image, records sealed into an image
/// with a valid checksum, or a real image with the rest XORed over it and
/// resealed. Restoring it into a store holding data must either succeed
/// (and leave a store that reads and writes) or fail and leave the store
/// exactly as it was.
pub fn snapshot_restore(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let image = match mode % 4 {
        0 => {
            let _ = ballast_server::image_from_blob(rest);
            let blob = ballast_server::snapshot_blob(rest);
            assert_eq!(ballast_server::image_from_blob(&blob), Some(rest));
            return;
        }
        1 => rest.to_vec(),
        2 => seal(&records_from(rest)),
        _ => {
            let real = sample_image();
            let body = &real[MAGIC.len()..real.len() - 4];
            let mut body = body.to_vec();
            let offset = rest.first().map_or(0, |b| *b as usize);
            for (i, b) in rest.iter().skip(1).enumerate() {
                let at = (offset + i) % body.len().max(1);
                if let Some(x) = body.get_mut(at) {
                    *x ^= b;
                }
            }
            let mut img = MAGIC.to_vec();
            img.extend_from_slice(&body);
            let crc = crc32(&img);
            img.extend_from_slice(&crc.to_be_bytes());
            img
        }
    };
    let s = store();
    put(&s, 1, b"x", b"before");
    put(&s, 2, b"y", b"before");
    let before = everything(&s);
    let (rev, applied) = (s.current_revision(), s.applied_index());
    match s.restore(&mut std::io::Cursor::new(image)) {
        Err(e) => {
            let after = s.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            });
            assert_eq!(
                after.map(|r| r.kvs),
                Ok(before),
                "a failed restore ({e}) changed the store"
            );
            assert_eq!((s.current_revision(), s.applied_index()), (rev, applied));
            let r = put(&s, applied + 1, b"z", b"after");
            assert_eq!(r, rev + 1, "a write after a failed restore");
        }
        Ok(()) => {
            // Whatever the image held, the store reads and writes.
            let _ = s.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: 0,
                ..Default::default()
            });
            let index = s.applied_index().saturating_add(1);
            let op = WriteOp::Put(PutRequest {
                key: b"after".to_vec(),
                value: b"restore".to_vec(),
                ..Default::default()
            });
            let _ = s.apply(&[(index, &op)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_stores() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert!(parse_snapshot(sample_image()).is_ok());
        let resealed = {
            let real = sample_image();
            let mut img = real[..real.len() - 4].to_vec();
            let crc = crc32(&img);
            img.extend_from_slice(&crc.to_be_bytes());
            img
        };
        assert_eq!(resealed, sample_image());
        assert!(parse_snapshot(&seal(&[])).is_ok());
    }

    #[test]
    fn model_matches_the_worked_example() {
        // put@1 put@2 del@3 put@4 put@5 (key_index.rs module docs).
        let h = [(1, true), (2, true), (3, false), (4, true), (5, true)];
        assert_eq!(model_get(&h, 2), Some((2, 1, 2)));
        assert_eq!(model_get(&h, 3), None);
        assert_eq!(model_get(&h, 4), Some((4, 4, 1)));
        assert_eq!(model_get(&h, 0), None);
    }
}
