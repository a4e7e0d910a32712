//! `ballast server`: etcd's flags, same names, same meaning, same
//! `ETCD_*` environment variables (`etcd_flags` lists them all and parses
//! values as Go does).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ballast_server::TlsInfo;
use ballast_server::{parse_initial_cluster, ClusterState, ServerConfig, StorageServer};
use clap::{ArgAction, Args, ValueEnum};
pub(crate) use etcd_flags::go_style_args;
use etcd_flags::{go_bool, go_int, go_uint, Accepted};

mod etcd_flags;

#[derive(Clone, Copy, ValueEnum)]
enum InitialState {
    New,
    Existing,
}

/// The most `--max-request-bytes` may be.
const MAX_REQUEST_BYTES: u64 = 32 << 20;

/// `--max-request-bytes`: a Go uint, at most 32 MiB: a request becomes one
/// raft WAL record, and a record is at most 64 MiB.
fn request_bytes(s: &str) -> Result<u64, String> {
    match go_uint(s)? {
        0 => Err("must be at least 1".into()),
        n if n > MAX_REQUEST_BYTES => Err(format!("must be at most {MAX_REQUEST_BYTES}")),
        n => Ok(n),
    }
}

/// `ballast server`'s command line: etcd's flags, same names, same values
/// (Go's syntax for numbers, booleans and durations), each also read from
/// its `ETCD_*` environment variable. Those Ballast has no use for are in
/// [`Accepted`] (see `etcd_flags`).
#[derive(Args)]
pub struct ServerArgs {
    /// First: it reads every flag's source before the fields below take
    /// their values out of the matches.
    #[command(flatten)]
    accepted: Accepted,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default", env = "ETCD_NAME")]
    name: String,
    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        default_value = "http://localhost:2379",
        value_delimiter = ',',
        env = "ETCD_LISTEN_CLIENT_URLS"
    )]
    listen_client_urls: Vec<String>,
    /// This member's client URLs to advertise to the cluster.
    #[arg(
        long,
        default_value = "http://localhost:2379",
        value_delimiter = ',',
        env = "ETCD_ADVERTISE_CLIENT_URLS"
    )]
    advertise_client_urls: Vec<String>,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        default_value = "http://localhost:2380",
        value_delimiter = ',',
        env = "ETCD_LISTEN_PEER_URLS"
    )]
    listen_peer_urls: Vec<String>,
    /// This member's peer URLs to advertise to the cluster.
    #[arg(
        long,
        default_value = "http://localhost:2380",
        value_delimiter = ',',
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS"
    )]
    initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping: name=url,…
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(
        long,
        value_enum,
        default_value = "new",
        env = "ETCD_INITIAL_CLUSTER_STATE"
    )]
    initial_cluster_state: InitialState,
    /// Initial cluster token, distinguishing clusters on one network.
    #[arg(
        long,
        default_value = "etcd-cluster",
        env = "ETCD_INITIAL_CLUSTER_TOKEN"
    )]
    initial_cluster_token: String,
    /// Applied entries between checkpoints: the store is synced and the
    /// raft log below it compacted (etcd's snapshot count).
    #[arg(long, default_value = "100000", value_parser = go_uint, env = "ETCD_SNAPSHOT_COUNT")]
    snapshot_count: u64,
    /// Entries kept below a checkpoint for a slow follower to catch up
    /// from (default: half the snapshot count).
    #[arg(long, value_parser = go_uint, env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES")]
    experimental_snapshot_catchup_entries: Option<u64>,
    /// Time (ms) of a heartbeat interval.
    #[arg(long, default_value = "100", value_parser = go_uint, env = "ETCD_HEARTBEAT_INTERVAL")]
    heartbeat_interval: u64,
    /// Time (ms) for an election to time out.
    #[arg(long, default_value = "1000", value_parser = go_uint, env = "ETCD_ELECTION_TIMEOUT")]
    election_timeout: u64,
    /// Backend size (bytes) at which the NOSPACE alarm is raised (0: 2 GiB).
    #[arg(long, default_value = "0", value_parser = go_int, env = "ETCD_QUOTA_BACKEND_BYTES")]
    quota_backend_bytes: i64,
    /// Largest request accepted (bytes). At most 32 MiB: a request becomes
    /// one raft WAL record, and a record is at most 64 MiB.
    #[arg(long, default_value = "1572864", value_parser = request_bytes,
          env = "ETCD_MAX_REQUEST_BYTES")]
    max_request_bytes: u64,
    /// Most operations in one txn.
    #[arg(long, default_value = "128", value_parser = go_uint, env = "ETCD_MAX_TXN_OPS")]
    max_txn_ops: u64,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          env = "ETCD_CLIENT_CERT_AUTH")]
    client_cert_auth: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    peer_client_cert_auth: bool,
    /// URLs to serve `/metrics` and the health endpoints on
    /// (`https://` ones with the client TLS files).
    #[arg(long, value_delimiter = ',', env = "ETCD_LISTEN_METRICS_URLS")]
    listen_metrics_urls: Vec<String>,
    /// How often watchers that asked for progress notifications get one.
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse,
          env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL")]
    experimental_watch_progress_notify_interval: Duration,
    /// Before serving clients, compare this member's HashKV with its
    /// peers' and refuse to start when they differ.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool,
          env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK")]
    experimental_initial_corrupt_check: bool,
    /// How often the leader compares every member's HashKV with its own and
    /// raises the CORRUPT alarm for one that differs (0s: never).
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse,
          env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    experimental_corrupt_check_time: Duration,
    /// etcd's YAML configuration file: not supported (give flags or
    /// `ETCD_*` variables).
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = go_bool)]
    version: bool,
}

/// An empty path flag (`--cert-file=`) means unset, as in etcd.
fn path_flag(p: Option<PathBuf>) -> Option<PathBuf> {
    p.filter(|p| !p.as_os_str().is_empty())
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        self.accepted.report()?;
        if let Some(file) = self.config_file.filter(|f| !f.as_os_str().is_empty()) {
            anyhow::bail!(
                "--config-file {}: etcd's configuration file is not supported by \
                 ballast server; give the same settings as flags or ETCD_* environment variables",
                file.display()
            );
        }
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
        config.snapshot_catch_up_entries = self.experimental_snapshot_catchup_entries;
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_interval);
        config.election_timeout = Duration::from_millis(self.election_timeout);
        // etcd: 0 is the default 2 GiB; a negative quota is refused at start.
        config.quota_backend_bytes = match self.quota_backend_bytes {
            0 => 2 << 30,
            q if q < 0 => anyhow::bail!("--quota-backend-bytes {q} must not be negative"),
            q => q as u64,
        };
        config.max_request_bytes = self.max_request_bytes as usize;
        config.max_txn_ops = usize::try_from(self.max_txn_ops)?;
        config.listen_metrics_urls = self.listen_metrics_urls;
        config.watch_progress_notify_interval = self.experimental_watch_progress_notify_interval;
        config.initial_corrupt_check = self.experimental_initial_corrupt_check;
        config.corrupt_check_time = self.experimental_corrupt_check_time;
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
    if args.version {
        println!("etcd Version: {}", ballast_server::ETCD_VERSION);
        println!("Ballast Version: {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
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

    #[test]
    fn every_etcd_flag_is_an_argument() {
        use clap::CommandFactory;
        let cmd = Cmd::command();
        for flag in etcd_flags::ETCD_FLAGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.name))
                .unwrap_or_else(|| panic!("--{} is not accepted", flag.name));
            assert_eq!(arg.get_id().as_str(), etcd_flags::arg_id(flag.name));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            match flag.name {
                "version" => assert_eq!(env, None),
                name => assert_eq!(env, Some(etcd_flags::env_name(name)), "{name}"),
            }
        }
    }

    #[test]
    fn kubeadm_command_line_parses() {
        let args = parse(&[
            "--advertise-client-urls=https://127.0.0.1:2379",
            "--cert-file=/pki/server.crt",
            "--client-cert-auth=true",
            "--data-dir=/var/lib/etcd",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--initial-cluster=node=https://127.0.0.1:2380",
            "--key-file=/pki/server.key",
            "--listen-client-urls=https://127.0.0.1:2379",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--listen-peer-urls=https://127.0.0.1:2380",
            "--name=node",
            "--peer-cert-file=/pki/peer.crt",
            "--peer-client-cert-auth=true",
            "--peer-key-file=/pki/peer.key",
            "--peer-trusted-ca-file=/pki/ca.crt",
            "--snapshot-count=10000",
            "--trusted-ca-file=/pki/ca.crt",
        ])
        .expect("kubeadm's flags parse");
        assert!(args.client_cert_auth && args.peer_client_cert_auth);
        assert_eq!(args.snapshot_count, 10_000);
        assert_eq!(
            args.experimental_watch_progress_notify_interval,
            Duration::from_secs(5)
        );
        assert_eq!(args.listen_metrics_urls, ["http://127.0.0.1:2381"]);
        assert!(args.experimental_initial_corrupt_check);
    }

    #[test]
    fn go_style_values() {
        let a = parse(&[
            "--client-cert-auth",
            "--peer-client-cert-auth=F",
            "--snapshot-count=0x10",
        ])
        .unwrap();
        assert!(a.client_cert_auth);
        assert!(!a.peer_client_cert_auth);
        assert_eq!(a.snapshot_count, 16);
        // Go's flag package: the last of a repeated flag wins.
        let a = parse(&["--name=a", "--name=b", "--pre-vote=false", "--pre-vote"]).unwrap();
        assert_eq!(a.name, "b");
        for (bad, msg) in [
            ("--snapshot-count=ten", "parse error"),
            ("--client-cert-auth=yes", "parse error"),
            (
                "--heartbeat-interval=18446744073709551616",
                "value out of range",
            ),
            (
                "--experimental-watch-progress-notify-interval=5",
                "time: missing unit in duration",
            ),
            ("--proxy=sometimes", "invalid value \"sometimes\""),
            ("--backend-batch-limit=x", "parse error"),
        ] {
            let e = parse(&[bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"))
                .to_string();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }
}
