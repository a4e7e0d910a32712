//! `ballast snapshot save|status|restore`: backups over the Maintenance API, in
//! Ballast's own format (the store image, length-prefixed, padded, with a
//! SHA-256 trailer — the same blob `etcdctl snapshot save` writes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use ballast_proto::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};
use ballast_storage::{KvStore, MemEngine, RocksEngine, StoreConfig, WatchableStore};
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
    let mut client = MaintenanceClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("connecting to {endpoint}"))?
        .max_decoding_message_size(usize::MAX);
    let mut stream = client.snapshot(SnapshotRequest {}).await?.into_inner();
    let mut blob = Vec::new();
    while let Some(part) = stream.message().await? {
        blob.extend_from_slice(&part.blob);
    }
    if ballast_server::image_from_blob(&blob).is_none() {
        bail!("the snapshot from {endpoint} failed its checksum");
    }
    let part = file.with_extension("part");
    std::fs::write(&part, &blob).with_context(|| format!("writing {}", part.display()))?;
    std::fs::rename(&part, &file)?;
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

/// The checked store image inside a snapshot file.
fn read_image(file: &Path) -> anyhow::Result<Vec<u8>> {
    let blob = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    match ballast_server::image_from_blob(&blob) {
        Some(image) => Ok(image.to_vec()),
        None => bail!(
            "{} is not a Ballast snapshot, or it is corrupt (checksum mismatch)",
            file.display()
        ),
    }
}

fn status(file: PathBuf) -> anyhow::Result<()> {
    let image = read_image(&file)?;
    let size = std::fs::metadata(&file)?.len();
    let store = WatchableStore::new(KvStore::open(
        Arc::new(MemEngine::new()),
        StoreConfig::default(),
    )?);
    store.restore(&mut std::io::Cursor::new(&image))?;
    let (hash, _, revision) = store.hash_kv(0)?;
    println!("hash      {hash:08x}");
    println!("revision  {revision}");
    println!("keys      {}", store.key_count());
    match store.compacted_revision() {
        rev if rev < 0 => println!("compacted none"),
        rev => println!("compacted {rev}"),
    }
    println!("size      {size} bytes");
    Ok(())
}

fn restore(file: PathBuf, data_dir: PathBuf) -> anyhow::Result<()> {
    let image = read_image(&file)?;
    if data_dir.exists() {
        bail!(
            "data-dir {} exists; restore creates a new one",
            data_dir.display()
        );
    }
    let kv_dir = data_dir.join("member").join("kv");
    std::fs::create_dir_all(&kv_dir)?;
    let engine = RocksEngine::open(&kv_dir)?;
    let store = WatchableStore::new(KvStore::open(Arc::new(engine), StoreConfig::default())?);
    store.restore(&mut std::io::Cursor::new(&image))?;
    // The new cluster's raft log starts from scratch.
    store.reset_applied_index(0)?;
    store.sync()?;
    println!(
        "restored revision {} ({} keys) into {}",
        store.current_revision(),
        store.key_count(),
        data_dir.display()
    );
    Ok(())
}
