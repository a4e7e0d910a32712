//! Revisions: the logical clock of the store.
//!
//! Every write transaction gets one new `main` revision; each key it changes
//! gets the next `sub` revision inside it. A revision encodes to 16
//! big-endian bytes, so the order of encoded keys in RocksDB is revision order.

use crate::error::{Result, StorageError};

/// A point in the store's history: `(main, sub)`, ordered lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The transaction's revision: what clients see as `mod_revision`.
    pub main: i64,
    /// The change's position inside its transaction.
    pub sub: i64,
}

/// Length of an encoded revision.
pub const REVISION_LEN: usize = 16;

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian bytes: byte order equals revision order (revisions are never negative).
    pub fn encode(self) -> [u8; REVISION_LEN] {
        let mut out = [0u8; REVISION_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; REVISION_LEN] = bytes
            .try_into()
            .map_err(|_| StorageError::Corrupt(format!("revision of {} bytes", bytes.len())))?;
        let main = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let sub = i64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
        Ok(Revision { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(1, 255),
            Revision::new(1, 256),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 0),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode(), "{pair:?}");
        }
    }

    #[test]
    fn round_trip_and_bad_length() {
        let r = Revision::new(42, 7);
        assert_eq!(Revision::decode(&r.encode()).unwrap(), r);
        assert!(matches!(
            Revision::decode(&[1, 2, 3]),
            Err(StorageError::Corrupt(_))
        ));
    }
}
