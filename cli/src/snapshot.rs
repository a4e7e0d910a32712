//! `ballast snapshot save|status|restore`: backups over the Maintenance API, in
//! Ballast's own format (the store image, length-prefixed, padded, with a
//! SHA-256 trailer — the same blob `etcdctl snapshot save` writes). Files
//! are written and read as checked streams (`ballast_server::SnapshotFile`,
//! `SnapshotWriter`): memory stays at a chunk, whatever the store's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use ballast_proto::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};
use ballast_server::{SnapshotFile, SnapshotFileError, SnapshotWriter};
use ballast_storage::{KvStore, RocksEngine, StoreConfig, WatchableStore};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stream a snapshot from one member into FILE.
    Save {
        file: PathBuf,
        /// The member to read from (a URL, or host:port).
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
    },
    /// Check a snapshot file and print what it holds.
    Status { file: PathBuf },
    /// Create a member's data directory from a snapshot, for a new cluster:
    /// start every member of that cluster from its own restored directory
    /// with `ballast server` and the same --initial-cluster.
    Restore {
        file: PathBuf,
        /// The new member's data directory (must not exist yet).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.command {
        SnapshotCommand::Save { file, endpoint } => save(file, endpoint).await,
        SnapshotCommand::Status { file } => status(file),
        SnapshotCommand::Restore { file, data_dir } => restore(file, data_dir),
    }
}

async fn save(file: PathBuf, endpoint: String) -> anyhow::Result<()> {
    // Like etcdctl, accept `host:port` as well as a URL.
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };
    // tonic's default 4 MiB message limit stays: members send 32 KiB chunks.
    let mut client = MaintenanceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .with_context(|| format!("requesting a snapshot from {endpoint}"))?
        .into_inner();
    // Each chunk is checked and written as it arrives; a failure drops the
    // writer, which removes the .part file.
    let mut out = SnapshotWriter::create(&file)
        .with_context(|| format!("creating {}.part", file.display()))?;
    let damaged = |e: SnapshotFileError| {
        anyhow!("the snapshot from {endpoint} is refused ({e}); nothing was saved")
    };
    loop {
        let part = stream.message().await.with_context(|| {
            format!(
                "the snapshot stream from {endpoint} broke after {} bytes; nothing was saved",
                out.received()
            )
        })?;
        let Some(part) = part else { break };
        out.write(&part.blob).map_err(|e| match e {
            SnapshotFileError::Io(e) => {
                anyhow!("writing {}: {e}", out.part_path().display())
            }
            e => damaged(e),
        })?;
    }
    out.commit().map_err(|e| match e {
        SnapshotFileError::Io(e) => anyhow!("saving {}: {e}", file.display()),
        e => damaged(e),
    })?;
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

/// Opens a snapshot file, checked whole in one streaming pass.
fn open_checked(file: &Path) -> anyhow::Result<SnapshotFile> {
    SnapshotFile::open(file).map_err(|e| match e {
        SnapshotFileError::Io(e) => anyhow!("reading {}: {e}", file.display()),
        e => anyhow!("{} is refused: {e}", file.display()),
    })
}

/// A directory removed (with what it holds) when this is dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new directory beside `file` (on the backup's disk, which has room
    /// for a store of its size), or in the system's temporary directory if
    /// that one is read-only.
    fn beside(file: &Path) -> anyhow::Result<ScratchDir> {
        let name = format!(".ballast-snapshot-status-{}", std::process::id());
        let beside = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join(&name),
            _ => PathBuf::from(&name),
        };
        for dir in [beside, std::env::temp_dir().join(&name)] {
            if std::fs::create_dir(&dir).is_ok() {
                return Ok(ScratchDir(dir));
            }
        }
        bail!(
            "no room for a scratch directory beside {} or in the temporary directory",
            file.display()
        )
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Restores the image of a checked snapshot into `store`.
fn restore_into(store: &WatchableStore, file: &Path, snap: SnapshotFile) -> anyhow::Result<()> {
    let mut image = snap
        .image()
        .with_context(|| format!("reading {}", file.display()))?;
    store
        .restore(&mut image)
        .with_context(|| format!("{} is refused: its store image", file.display()))
}

/// Prints what a snapshot holds. The image is installed into a scratch
/// RocksDB store (deleted afterwards), so memory stays bounded by the
/// store's key index, not by the data.
fn status(file: PathBuf) -> anyhow::Result<()> {
    let snap = open_checked(&file)?;
    let size = snap.file_len();
    let scratch = ScratchDir::beside(&file)?;
    let (hash, revision, keys, compacted) = {
        let engine = RocksEngine::open(&scratch.0)
            .with_context(|| format!("opening a scratch store in {}", scratch.0.display()))?;
        let store = WatchableStore::new(KvStore::open(Arc::new(engine), StoreConfig::default())?);
        restore_into(&store, &file, snap)?;
        let (hash, _, revision) = store.hash_kv(0)?;
        (
            hash,
            revision,
            store.key_count(),
            store.compacted_revision(),
        )
    };
    drop(scratch);
    println!("hash      {hash:08x}");
    println!("revision  {revision}");
    println!("keys      {keys}");
    match compacted {
        rev if rev < 0 => println!("compacted none"),
        rev => println!("compacted {rev}"),
    }
    println!("size      {size} bytes");
    Ok(())
}

fn restore(file: PathBuf, data_dir: PathBuf) -> anyhow::Result<()> {
    if data_dir.exists() {
        bail!(
            "data-dir {} exists; restore creates a new one",
            data_dir.display()
        );
    }
    // Checked whole before anything is created.
    let snap = open_checked(&file)?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Claimed atomically: a directory made meanwhile is not ours to fill.
    std::fs::create_dir(&data_dir)
        .with_context(|| format!("data-dir {}: restore creates a new one", data_dir.display()))?;
    let restored = install(&file, snap, &data_dir);
    let (revision, keys) = match restored {
        Ok(r) => r,
        Err(e) => {
            // The store is closed; a half-restored member must not be started.
            let _ = std::fs::remove_dir_all(&data_dir);
            return Err(e);
        }
    };
    println!(
        "restored revision {revision} ({keys} keys) into {}",
        data_dir.display()
    );
    Ok(())
}

/// Installs a checked snapshot into a new member's data dir (which exists,
/// empty). Returns the revision and the key count.
fn install(file: &Path, snap: SnapshotFile, data_dir: &Path) -> anyhow::Result<(i64, usize)> {
    let kv_dir = data_dir.join("member").join("kv");
    std::fs::create_dir_all(&kv_dir)?;
    let engine = RocksEngine::open(&kv_dir)?;
    let store = WatchableStore::new(KvStore::open(Arc::new(engine), StoreConfig::default())?);
    restore_into(&store, file, snap)?;
    // The new cluster's raft log starts from scratch.
    store.reset_applied_index(0)?;
    store.sync()?;
    Ok((store.current_revision(), store.key_count()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_storage::{MemEngine, PutRequest, WriteOp};

    /// The image of a store holding `n` keys.
    fn image(n: usize) -> Vec<u8> {
        let store = WatchableStore::new(
            KvStore::open(Arc::new(MemEngine::new()), StoreConfig::default()).unwrap(),
        );
        let ops: Vec<WriteOp> = (0..n)
            .map(|i| {
                WriteOp::Put(PutRequest {
                    key: format!("k{i:04}").into_bytes(),
                    value: vec![b'v'; 100],
                    ..Default::default()
                })
            })
            .collect();
        let entries: Vec<(u64, &WriteOp)> = (1..).zip(&ops).collect();
        store.apply(&entries);
        let mut image = Vec::new();
        ballast_storage::snapshot::write_snapshot(&store, &mut image).unwrap();
        image
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A file whose SHA-256 is right around a damaged store image: the
    /// store's own check refuses it after the data dir was made, and the
    /// dir is removed again; status leaves no scratch store behind.
    #[test]
    fn a_damaged_image_in_a_well_formed_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.snap");
        let data_dir = dir.path().join("restored");
        let mut img = image(500);
        std::fs::write(&file, ballast_server::snapshot_blob(&img)).unwrap();
        restore(file.clone(), data_dir.clone()).unwrap();
        status(file.clone()).unwrap();
        assert_eq!(entries(dir.path()), ["backup.snap", "restored"]);
        std::fs::remove_dir_all(&data_dir).unwrap();

        let mid = img.len() / 2;
        img[mid] ^= 0x40;
        std::fs::write(&file, ballast_server::snapshot_blob(&img)).unwrap();
        let err = format!("{:#}", restore(file.clone(), data_dir.clone()).unwrap_err());
        assert!(err.contains("its store image"), "{err}");
        assert!(err.contains("snapshot is corrupt"), "{err}");
        assert!(!data_dir.exists());
        let err = format!("{:#}", status(file.clone()).unwrap_err());
        assert!(err.contains("snapshot is corrupt"), "{err}");
        assert_eq!(entries(dir.path()), ["backup.snap"]);
    }

    #[test]
    fn restore_refuses_an_existing_data_dir_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.snap");
        std::fs::write(&file, ballast_server::snapshot_blob(&image(3))).unwrap();
        let data_dir = dir.path().join("taken");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::write(data_dir.join("mine"), b"x").unwrap();
        let err = restore(file, data_dir.clone()).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        assert!(data_dir.join("mine").exists());
    }
}
