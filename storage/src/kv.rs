//! Key-value records and events, and their on-disk encoding.

use crate::error::{Result, StorageError};

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Main revision of the put that created this generation of the key.
    pub create_revision: i64,
    /// Main revision of the last change.
    pub mod_revision: i64,
    /// Number of changes in this generation (1 after creation).
    pub version: i64,
    pub value: Vec<u8>,
    /// Attached lease, 0 for none.
    pub lease: i64,
}

/// What happened to a key at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as etcd's `mvccpb.Event`. For a delete, `kv` holds the key
/// and the deleting revision only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// Roughly the bytes this event takes in memory and on the wire: its
    /// keys and values plus a fixed allowance for the rest. What watch
    /// queues are bounded by.
    pub fn size(&self) -> usize {
        const FIXED: usize = 64;
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + FIXED;
        kv(&self.kv) + self.prev_kv.as_ref().map_or(0, kv)
    }
}

/// A record in the `kv` column family: a key version, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub kv: KeyValue,
    pub tombstone: bool,
}

const RECORD_FORMAT: u8 = 1;
/// Bytes of a record's head before its key: format, flag, four i64s, key length.
const HEAD_FIXED: usize = 2 + 32 + 4;

impl Record {
    /// Layout: format, tombstone flag, create, mod, version, lease (i64 BE),
    /// key length (u32 BE), key, value.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out` (a write batch, usually).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let kv = &self.kv;
        out.reserve(HEAD_FIXED + kv.key.len() + kv.value.len());
        out.push(RECORD_FORMAT);
        out.push(self.tombstone as u8);
        for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&(kv.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&kv.key);
        out.extend_from_slice(&kv.value);
    }

    /// Bytes of the encoding before the value: the head that the `head`
    /// column family keeps (see [`RecordHead`]).
    pub fn head_len(&self) -> usize {
        HEAD_FIXED + self.kv.key.len()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (head, value) = RecordHead::split(bytes)?;
        Ok(Record {
            tombstone: head.tombstone,
            kv: KeyValue {
                create_revision: head.create_revision,
                mod_revision: head.mod_revision,
                version: head.version,
                lease: head.lease,
                key: head.key.to_vec(),
                value: value.to_vec(),
            },
        })
    }
}

/// A record without its value, borrowed from the encoding: what start-up
/// rebuilds the key index and the lessor from. The `head` column family
/// stores exactly these bytes (a record encoding with an empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHead<'a> {
    pub key: &'a [u8],
    pub tombstone: bool,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl<'a> RecordHead<'a> {
    /// The head of an encoded record and its value bytes.
    pub fn split(bytes: &'a [u8]) -> Result<(Self, &'a [u8])> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("kv record: {what}"));
        if bytes.len() < HEAD_FIXED {
            return Err(corrupt("truncated"));
        }
        if bytes[0] != RECORD_FORMAT {
            return Err(corrupt("unknown format"));
        }
        let tombstone = match bytes[1] {
            0 => false,
            1 => true,
            _ => return Err(corrupt("bad tombstone flag")),
        };
        let n = |i: usize| i64::from_be_bytes(bytes[2 + 8 * i..10 + 8 * i].try_into().expect("8"));
        let key_len = u32::from_be_bytes(bytes[34..38].try_into().expect("4")) as usize;
        let rest = &bytes[HEAD_FIXED..];
        if rest.len() < key_len {
            return Err(corrupt("key past the end"));
        }
        let (key, value) = rest.split_at(key_len);
        let head = RecordHead {
            key,
            tombstone,
            create_revision: n(0),
            mod_revision: n(1),
            version: n(2),
            lease: n(3),
        };
        Ok((head, value))
    }

    /// The bytes of an encoded record that the `head` column family keeps:
    /// everything before the value.
    pub fn prefix(bytes: &'a [u8]) -> Result<&'a [u8]> {
        let value = Self::split(bytes)?.1.len();
        Ok(&bytes[..bytes.len() - value])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let rec = Record {
            tombstone: false,
            kv: KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 5,
                version: 3,
                value: b"bar\0baz".to_vec(),
                lease: 77,
            },
        };
        assert_eq!(Record::decode(&rec.encode()).unwrap(), rec);
        let tomb = Record {
            tombstone: true,
            kv: KeyValue {
                key: vec![],
                ..Default::default()
            },
        };
        assert_eq!(Record::decode(&tomb.encode()).unwrap(), tomb);
    }

    #[test]
    fn corrupt_records_are_errors() {
        let rec = Record {
            tombstone: false,
            kv: KeyValue {
                key: b"k".to_vec(),
                ..Default::default()
            },
        }
        .encode();
        for cut in 0..rec.len() - 1 {
            assert!(Record::decode(&rec[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = rec.clone();
        bad[0] = 9;
        assert!(Record::decode(&bad).is_err());
        let mut bad = rec;
        bad[1] = 2;
        assert!(Record::decode(&bad).is_err());
    }
}
