//! `ballast server`: etcd's flags, same names, same meaning.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ballast_server::TlsInfo;
use ballast_server::{parse_initial_cluster, ClusterState, ServerConfig, StorageServer};
use clap::{ArgAction, Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum InitialState {
    New,
    Existing,
}

/// The most `--max-request-bytes` may be.
const MAX_REQUEST_BYTES: u64 = 32 << 20;

#[derive(Args)]
pub struct ServerArgs {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// This member's client URLs to advertise to the cluster.
    #[arg(long, default_value = "http://localhost:2379", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,…
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: InitialState,
    /// Initial cluster token, distinguishing clusters on one network.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// Applied entries between checkpoints: the store is synced and the
    /// raft log below it compacted (etcd's snapshot count).
    #[arg(long, default_value_t = 100_000)]
    snapshot_count: u64,
    /// Time (ms) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (ms) for an election to time out.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Backend size (bytes) at which the NOSPACE alarm is raised.
    #[arg(long, default_value_t = 2 << 30)]
    quota_backend_bytes: u64,
    /// Largest request accepted (bytes). At most 32 MiB: a request becomes
    /// one raft WAL record, and a record is at most 64 MiB.
    #[arg(long, default_value_t = 1536 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_REQUEST_BYTES))]
    max_request_bytes: u64,
    /// Most operations in one txn.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Path to the client server TLS cert file.
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    client_cert_auth: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long)]
    peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long)]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true")]
    peer_client_cert_auth: bool,
}

/// An empty path flag (`--cert-file=`) means unset, as in etcd.
fn path_flag(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let mut config = ServerConfig::new(&self.name, data_dir);
        config.initial_cluster = match &self.initial_cluster {
            Some(s) => parse_initial_cluster(s)?,
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|u| (self.name.clone(), u.clone()))
                .collect(),
        };
        config.listen_client_urls = self.listen_client_urls;
        config.advertise_client_urls = self.advertise_client_urls;
        config.listen_peer_urls = self.listen_peer_urls;
        config.initial_advertise_peer_urls = self.initial_advertise_peer_urls;
        config.initial_cluster_state = match self.initial_cluster_state {
            InitialState::New => ClusterState::New,
            InitialState::Existing => ClusterState::Existing,
        };
        config.initial_cluster_token = self.initial_cluster_token;
        config.snapshot_count = self.snapshot_count;
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        config.election_timeout = Duration::from_millis(self.election_timeout);
        config.quota_backend_bytes = self.quota_backend_bytes;
        config.max_request_bytes = self.max_request_bytes as usize;
        config.max_txn_ops = self.max_txn_ops;
        config.client_tls = TlsInfo {
            cert_file: path_flag(self.cert_file),
            key_file: path_flag(self.key_file),
            trusted_ca_file: path_flag(self.trusted_ca_file),
            client_cert_auth: self.client_cert_auth,
        };
        config.peer_tls = TlsInfo {
            cert_file: path_flag(self.peer_cert_file),
            key_file: path_flag(self.peer_key_file),
            trusted_ca_file: path_flag(self.peer_trusted_ca_file),
            client_cert_auth: self.peer_client_cert_auth,
        };
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let mut server = StorageServer::start(config)
        .await
        .context("starting the storage member")?;
    let removed = tokio::select! {
        _ = crate::shutdown_signal() => false,
        r = server.stopped() => {
            r.context("the raft node stopped")?;
            true
        }
    };
    if removed {
        tracing::info!("this member was removed from the cluster; exiting");
    } else {
        tracing::info!("shutting down");
        server.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn parse(flags: &[&str]) -> Result<ServerArgs, clap::Error> {
        use clap::Parser;
        let argv = std::iter::once("server").chain(flags.iter().copied());
        Cmd::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn max_request_bytes_fits_a_wal_record() {
        let default = parse(&[]).expect("defaults parse");
        assert_eq!(default.max_request_bytes, 1536 * 1024);
        let ok = parse(&["--max-request-bytes", "33554432"]).expect("32 MiB");
        assert_eq!(ok.max_request_bytes, 32 << 20);
        for bad in ["33554433", "0", "-1"] {
            let e = parse(&[&format!("--max-request-bytes={bad}")])
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"))
                .to_string();
            assert!(e.contains("--max-request-bytes"), "{e}");
        }
    }
}
