//! `auth.pb`: the auth state on disk, beside `cluster.pb`.
//!
//! The file fails closed. It is written whole and atomically (a temporary
//! file in the same folder, fsynced, renamed over the old one, then the
//! folder fsynced), and carries a magic and a SHA-256 of its contents, so a
//! torn, truncated, emptied or unreadable file is told apart from a member
//! that never had one. Only an absent file means "no auth state yet"; any
//! other failure stops the member at start ([`load`] errs), because serving
//! with an unknown auth state would serve with auth off.
//!
//! Layout: `MAGIC`, then the SHA-256 of the payload (32 bytes), then the
//! payload (an encoded `AuthState`, whose `applied_index` is the raft index
//! the state is current through). Files written before the checksum (a bare
//! `AuthState`, saved at every auth change, so current through the store's
//! applied index) are still read, and must at least decode and carry an
//! auth revision (every saved state has one, at least 1).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::pb::ballast::server::AuthState;

/// The first bytes of a checksummed auth file.
const MAGIC: &[u8] = b"ballast auth state v2\n";
const DIGEST_LEN: usize = 32;

/// Why an auth file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read the auth state file {path}: {source}")]
    Unreadable { path: String, source: io::Error },
    #[error("the auth state file {path} is corrupt ({why})")]
    Corrupt { path: String, why: String },
    #[error("cannot write the auth state file {path}: {source}")]
    Unwritable { path: String, source: io::Error },
}

/// A saved auth state as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub state: AuthState,
    /// Written before the checksum: its `applied_index` is only that of the
    /// last auth command, not the index the state is current through.
    pub legacy: bool,
}

/// Reads the saved auth state: `None` when there is no file (a member
/// that never saved one), an error when there is one that cannot be read
/// or is not whole.
pub fn load(path: &Path) -> Result<Option<Loaded>, AuthFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthFileError::Unreadable {
                path: path.display().to_string(),
                source,
            })
        }
    };
    decode(&bytes)
        .map(Some)
        .map_err(|why| AuthFileError::Corrupt {
            path: path.display().to_string(),
            why,
        })
}

fn decode(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if let Some(rest) = bytes.strip_prefix(MAGIC) {
        if rest.len() < DIGEST_LEN {
            return Err("truncated: no checksum".into());
        }
        let (digest, payload) = rest.split_at(DIGEST_LEN);
        if Sha256::digest(payload).as_slice() != digest {
            return Err("checksum mismatch: truncated or overwritten".into());
        }
        let state = AuthState::decode(payload).map_err(|e| e.to_string())?;
        return Ok(Loaded {
            state,
            legacy: false,
        });
    }
    if MAGIC.starts_with(bytes) {
        return Err("truncated inside its header".into());
    }
    // A file from before the checksum: a bare AuthState.
    let state = AuthState::decode(bytes).map_err(|e| e.to_string())?;
    if state.revision == 0 {
        return Err("no auth revision: not a saved auth state".into());
    }
    Ok(Loaded {
        state,
        legacy: true,
    })
}

fn encode(state: &AuthState) -> Vec<u8> {
    let payload = state.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + DIGEST_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// Replaces the file with `state`, durably: after `Ok` a crash leaves
/// either the old file or the new one, never a mix.
pub fn save(path: &Path, state: &AuthState) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(&encode(state))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::authpb::User;

    fn state() -> AuthState {
        AuthState {
            enabled: true,
            revision: 7,
            users: vec![User {
                name: b"root".to_vec(),
                roles: vec!["root".into()],
                ..Default::default()
            }],
            roles: vec![],
            applied_index: 42,
        }
    }

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.pb");
        assert!(load(&path).unwrap().is_none(), "absent: a fresh member");
        save(&path, &state()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().state, state());
        assert!(!load(&path).unwrap().unwrap().legacy);
        assert!(!dir.path().join("auth.pb.tmp").exists());
        // Saving again replaces the file whole.
        let mut next = state();
        next.revision = 8;
        save(&path, &next).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().state, next);
    }

    #[test]
    fn every_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.pb");
        save(&path, &state()).unwrap();
        let good = std::fs::read(&path).unwrap();
        // Every truncation, the empty file included, and a flipped byte.
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            let err = load(&path).expect_err("a truncated file").to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("checksum"));
        // An unreadable one (a folder in its place).
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(load(&path), Err(AuthFileError::Unreadable { .. })));
    }

    #[test]
    fn files_from_before_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.pb");
        std::fs::write(&path, state().encode_to_vec()).unwrap();
        let old = load(&path).unwrap().unwrap();
        assert_eq!((old.state, old.legacy), (state(), true));
        // Decodes, but is no saved state (a saved one has a revision).
        let no_revision = AuthState {
            enabled: true,
            ..Default::default()
        };
        std::fs::write(&path, no_revision.encode_to_vec()).unwrap();
        assert!(load(&path).is_err());
        std::fs::write(&path, [0xff, 0xff, 0xff]).unwrap();
        assert!(load(&path).is_err());
    }
}
