//! `ballast snapshot save|status`: backups over the Maintenance API, in
//! Ballast's own format (the store image, length-prefixed, padded, with a
//! SHA-256 trailer — the same blob `etcdctl snapshot save` writes).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use ballast_proto::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};
use ballast_storage::{KvStore, MemEngine, StoreConfig, WatchableStore};
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
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.command {
        SnapshotCommand::Save { file, endpoint } => save(file, endpoint).await,
        SnapshotCommand::Status { file } => status(file),
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

fn status(file: PathBuf) -> anyhow::Result<()> {
    let blob = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let Some(image) = ballast_server::image_from_blob(&blob) else {
        bail!(
            "{} is not a Ballast snapshot, or it is corrupt (checksum mismatch)",
            file.display()
        );
    };
    let store = WatchableStore::new(KvStore::open(
        Arc::new(MemEngine::new()),
        StoreConfig::default(),
    )?);
    store.restore(&mut &image[..])?;
    let (hash, _, revision) = store.hash_kv(0)?;
    println!("hash      {hash:08x}");
    println!("revision  {revision}");
    println!("keys      {}", store.key_count());
    println!("compacted {}", store.compacted_revision());
    println!("size      {} bytes", blob.len());
    Ok(())
}
