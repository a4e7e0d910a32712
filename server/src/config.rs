//! A storage member's configuration, in etcd's terms.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, ServerError};
use crate::tls::TlsInfo;

pub use ballast_raft::ClusterState;

/// Everything `ballast server` is told (etcd's flags, same meaning).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url` pairs (a name may appear more than once).
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// Applied entries between checkpoints (store synced, raft log compacted).
    pub snapshot_count: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    /// Backend size at which the NOSPACE alarm is raised.
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// TLS for `https://` client URLs: `--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`.
    pub client_tls: TlsInfo,
    /// TLS for `https://` peer URLs, both serving and dialing other members:
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`.
    pub peer_tls: TlsInfo,
    /// `--listen-metrics-urls`: extra listeners serving only `/metrics` and
    /// the health endpoints (`https://` ones with the client TLS files).
    pub listen_metrics_urls: Vec<String>,
    /// `--experimental-watch-progress-notify-interval`: how often watchers
    /// that asked for progress notifications get one (zero: etcd's 10 min).
    pub watch_progress_notify_interval: Duration,
    /// `--experimental-snapshot-catchup-entries`: entries kept below a
    /// checkpoint for slow followers (default: half the snapshot count).
    pub snapshot_catch_up_entries: Option<u64>,
    /// `--experimental-initial-corrupt-check`: before serving clients,
    /// compare this member's HashKV with its peers' and refuse to start on
    /// a mismatch.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares
    /// its HashKV with every member's and raises the CORRUPT alarm for a
    /// member that differs (zero: never).
    pub corrupt_check_time: Duration,
}

impl ServerConfig {
    /// etcd's defaults for a member named `name` keeping data in `data_dir`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let name = name.into();
        let peer = "http://localhost:2380".to_string();
        ServerConfig {
            initial_cluster: vec![(name.clone(), peer.clone())],
            name,
            data_dir: data_dir.into(),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec![peer.clone()],
            initial_advertise_peer_urls: vec![peer],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            snapshot_count: 100_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            quota_backend_bytes: 2 << 30,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            client_tls: TlsInfo::default(),
            peer_tls: TlsInfo::default(),
            listen_metrics_urls: Vec::new(),
            watch_progress_notify_interval: Duration::from_secs(600),
            snapshot_catch_up_entries: None,
            initial_corrupt_check: false,
            corrupt_check_time: Duration::ZERO,
        }
    }

    /// The watch progress interval in force: etcd's 10 minutes for zero,
    /// and at most a year (a longer one would overflow the timer).
    pub fn progress_notify_interval(&self) -> Duration {
        const DEFAULT: Duration = Duration::from_secs(600);
        const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
        match self.watch_progress_notify_interval {
            d if d.is_zero() => DEFAULT,
            d => d.min(MAX),
        }
    }

    /// The member ids of the initial cluster, by name, with their peer URLs.
    pub fn initial_members(&self) -> Vec<(u64, String, Vec<String>)> {
        let mut names: Vec<&String> = Vec::new();
        for (n, _) in &self.initial_cluster {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
            .into_iter()
            .map(|n| {
                let urls: Vec<String> = self
                    .initial_cluster
                    .iter()
                    .filter(|(m, _)| m == n)
                    .map(|(_, u)| u.clone())
                    .collect();
                (
                    member_id(&urls, &self.initial_cluster_token),
                    n.clone(),
                    urls,
                )
            })
            .collect()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ServerError::InvalidArgument(m));
        if self.name.is_empty() {
            return bad("--name must not be empty".into());
        }
        for url in self
            .listen_client_urls
            .iter()
            .chain(&self.listen_peer_urls)
            .chain(&self.advertise_client_urls)
            .chain(&self.initial_advertise_peer_urls)
            .chain(&self.listen_metrics_urls)
        {
            parse_url(url)?;
        }
        if self.listen_client_urls.is_empty() || self.listen_peer_urls.is_empty() {
            return bad("--listen-client-urls and --listen-peer-urls are required".into());
        }
        self.validate_tls()?;
        if self.initial_cluster_state == ClusterState::New {
            let mine: Vec<&String> = self
                .initial_cluster
                .iter()
                .filter(|(n, _)| *n == self.name)
                .map(|(_, u)| u)
                .collect();
            if mine.is_empty() {
                return bad(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                ));
            }
            let mut a: Vec<&String> = mine;
            let mut b: Vec<&String> = self.initial_advertise_peer_urls.iter().collect();
            a.sort();
            b.sort();
            if a != b {
                return bad(format!(
                    "--initial-cluster has {a:?} for {:?} but --initial-advertise-peer-urls has {b:?}",
                    self.name
                ));
            }
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return bad(
                "--election-timeout should be at least 5 times --heartbeat-interval".into(),
            );
        }
        Ok(())
    }
}

impl ServerConfig {
    /// etcd's checks of https URLs against the TLS flags (files are read
    /// when the member starts).
    fn validate_tls(&self) -> Result<()> {
        self.client_tls.validate("")?;
        self.peer_tls.validate("peer-")?;
        for url in &self.listen_client_urls {
            if parse_url(url)?.0 == "https" && self.client_tls.is_empty() {
                return Err(ServerError::InvalidArgument(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                )));
            }
        }
        for url in &self.listen_metrics_urls {
            if parse_url(url)?.0 == "https" && self.client_tls.is_empty() {
                return Err(ServerError::InvalidArgument(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for metrics url {url} with HTTPS scheme"
                )));
            }
        }
        for url in &self.listen_peer_urls {
            let (scheme, hostport) = parse_url(url)?;
            if scheme == "https" && self.peer_tls.is_empty() {
                return Err(ServerError::InvalidArgument(format!(
                    "cannot listen on TLS for {hostport}: KeyFile and CertFile are not presented \
                     (--peer-cert-file, --peer-key-file)"
                )));
            }
        }
        Ok(())
    }
}

/// Parses `name=url,name=url` (etcd's --initial-cluster).
pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((n, u)) if !n.is_empty() && !u.is_empty() => {
                parse_url(u)?;
                Ok((n.trim().to_string(), u.trim().to_string()))
            }
            _ => Err(ServerError::InvalidArgument(format!(
                "--initial-cluster entry {pair:?} is not name=url"
            ))),
        })
        .collect()
}

/// Splits a URL like `http://127.0.0.1:2379` into (scheme, host:port).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let bad = || ServerError::InvalidArgument(format!("invalid URL {url:?}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(ServerError::InvalidArgument(format!(
            "URL scheme must be http or https: {url:?}"
        )));
    }
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok((scheme.to_string(), hostport.to_string()))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A member's id: a hash of its sorted peer URLs and the cluster token,
/// so every member (and a joining one) computes the same id.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let joined: String = urls.iter().map(|s| s.as_str()).collect();
    fnv1a(&[joined.as_bytes(), token.as_bytes()]).max(1)
}

/// The cluster id: a hash of the initial members' ids.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    fnv1a(&[&bytes]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parsing() {
        let c = parse_initial_cluster("a=http://127.0.0.1:2380,b=http://127.0.0.1:22380").unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=ftp://x:1").is_err());
        assert!(parse_initial_cluster("a=http://host").is_err());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = member_id(&["http://127.0.0.1:2380".into()], "t");
        let b = member_id(&["http://127.0.0.1:22380".into()], "t");
        assert_ne!(a, b);
        assert_eq!(a, member_id(&["http://127.0.0.1:2380".into()], "t"));
        assert_ne!(a, member_id(&["http://127.0.0.1:2380".into()], "u"));
        assert_eq!(cluster_id(&[a, b]), cluster_id(&[b, a]));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = ServerConfig::new("n1", "/tmp/x");
        c.validate().unwrap();
        c.initial_cluster = vec![("other".into(), "http://localhost:2380".into())];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("couldn't find local name"), "{err}");
    }

    #[test]
    fn https_urls_need_certificates() {
        let mut c = ServerConfig::new("n1", "/tmp/x");
        c.listen_client_urls = vec!["https://127.0.0.1:2379".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379"),
            "{err}"
        );
        c.client_tls.cert_file = Some("/x.crt".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("KeyFile and CertFile must both be present"),
            "{err}"
        );
        c.client_tls.key_file = Some("/x.key".into());
        c.validate().unwrap();

        let peer = "https://127.0.0.1:2380".to_string();
        c.listen_peer_urls = vec![peer.clone()];
        c.initial_advertise_peer_urls = vec![peer.clone()];
        c.initial_cluster = vec![("n1".into(), peer)];
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains(
                "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
            ),
            "{err}"
        );
        c.peer_tls.cert_file = Some("/p.crt".into());
        c.peer_tls.key_file = Some("/p.key".into());
        c.peer_tls.client_cert_auth = true;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--peer-client-cert-auth needs --peer-trusted-ca-file"),
            "{err}"
        );
        c.peer_tls.trusted_ca_file = Some("/ca.crt".into());
        c.validate().unwrap();
    }
}
