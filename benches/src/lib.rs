//! # ballast-bench — load generators for etcd v3 endpoints
//!
//! The engine behind `ballast bench put|range|list|txn|watch`: it drives any
//! etcd v3 gRPC endpoints (a Ballast cluster or a real etcd) and reports
//! what it measured as one JSON object. `benches/compare-etcd` runs the
//! same matrix against both and writes the table in `benches/RESULTS.md`.
//!
//! Command-line parsing lives in the binary (`cli/src/bench.rs`); this crate
//! takes a [`Config`] and a [`Workload`] and returns a [`Report`].
//!
//! # Layout
//! - [`chart`] — `ballast bench chart`: SVG charts of the results the
//!   benchmarks write (compare-etcd, the soak, the size ladders, timelines).
//! - [`conn`] — endpoint parsing and the gRPC connections (`--conns`),
//!   shared round-robin by the clients.
//! - [`kv`] — the KV calls (put, range, the apiserver's transactions)
//!   over either client library: the lean one or the `etcd-client` crate.
//! - [`load`] — the closed-loop request driver for `put`, `range`, `list`
//!   and the transactions: `--clients` tasks, a shared pacer for `--rate`, the `--total` /
//!   `--duration` bounds, per-RPC timeouts, a progress line every second.
//! - [`watch`] — the watch workload: watchers on one prefix, a paced writer,
//!   exactly-once / in-order verification and delivery latency.
//! - [`fanout`] — `ballast bench watch-fanout`: the apiserver's watch cache
//!   fanning pod updates out to thousands of HTTP watchers.
//! - [`podflow`] — `ballast bench podflow`: one Deployment through the
//!   whole control plane (apiserver, controllers, scheduler, kubelets).
//! - [`report`] — latency histograms (HdrHistogram, microseconds) and the
//!   JSON result.
//! - [`soak`] — `ballast bench soak`: hours of churn on a whole cluster,
//!   recording what must stay flat (storage, memory, disk, cached objects).
//!
//! # Bounds
//! Every run is bounded: by `duration` (always set) and optionally by
//! `total`; every RPC by `timeout`; watch creation and the final drain by
//! their own deadlines. Nothing here retries forever.

pub mod chart;
pub mod conn;
pub mod fanout;
pub mod kv;
pub mod load;
pub mod podflow;
pub mod report;
pub mod soak;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};

pub use report::Report;

/// Options shared by every workload.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client endpoints, `host:port` or `http://host:port`.
    pub endpoints: Vec<String>,
    /// Concurrent requesters (for `watch`: concurrent writers).
    pub clients: usize,
    /// gRPC connections, shared round-robin by the clients; connection `i`
    /// goes to endpoint `i % endpoints.len()`.
    pub conns: usize,
    /// Bytes per key (the prefix plus a zero-padded key number).
    pub key_size: usize,
    /// Bytes per value.
    pub val_size: usize,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Keys in order (0, 1, 2, … wrapping at `key_space`) instead of uniform.
    pub sequential_keys: bool,
    /// Incompressible pseudo-random values, a different one per key, instead
    /// of one repeated `abc…z` value.
    pub random_values: bool,
    /// Total requests per second over all clients; 0 = unlimited.
    pub rate: u64,
    /// Stop after this many requests (and in any case at `duration`).
    pub total: Option<u64>,
    /// Stop issuing requests after this long.
    pub duration: Duration,
    /// Deadline of every single RPC.
    pub timeout: Duration,
    /// Every key this run touches starts with this.
    pub prefix: String,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// Write throughput and latency per second to this CSV file
    /// (`--timeline`; [`chart`] draws it).
    pub timeline: Option<PathBuf>,
    /// The client library the requests (for watch: the watchers) use.
    pub client: ClientLibrary,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 1,
            conns: 1,
            key_size: 32,
            val_size: 256,
            key_space: 10_000,
            sequential_keys: false,
            random_values: false,
            rate: 0,
            total: None,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            prefix: "bench/".into(),
            progress: true,
            timeline: None,
            client: ClientLibrary::Lean,
        }
    }
}

/// Read consistency of `range` (and of the read in `txn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: goes through the leader's ReadIndex.
    Linearizable,
    /// Serializable: answered from the member's local state.
    Serializable,
}

impl Consistency {
    pub fn serializable(self) -> bool {
        self == Consistency::Serializable
    }

    /// `l` or `s`, etcd's benchmark spelling.
    pub fn letter(self) -> &'static str {
        match self {
            Consistency::Linearizable => "l",
            Consistency::Serializable => "s",
        }
    }
}

/// Options of the watch workload.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Watchers, all on the same prefix.
    pub watchers: usize,
    /// gRPC watch streams the watchers are spread over (round-robin); the
    /// streams are spread over the connections the same way.
    pub streams: usize,
    /// Server processes whose RSS is summed before and after creating the
    /// watchers (local servers only); empty = memory not measured.
    pub server_pids: Vec<u32>,
    /// How long to wait for creating all watchers.
    pub create_timeout: Duration,
    /// After the writer stops, how long watchers may take to catch up.
    pub drain_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            watchers: 100,
            streams: 10,
            server_pids: Vec::new(),
            create_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// Which client library a run's requests (or watchers) go through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientLibrary {
    /// The load generator's own: a raw gRPC call decoding only what the
    /// run needs, so the client spends little of the machine's CPU.
    #[default]
    Lean,
    /// The `etcd-client` crate (tonic, full messages), as most Rust programs
    /// talk to etcd: one client per connection.
    EtcdClient,
}

impl ClientLibrary {
    /// `lean` or `etcd-client`, as `--client` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClientLibrary::Lean => "lean",
            ClientLibrary::EtcdClient => "etcd-client",
        }
    }
}

/// The Kubernetes apiserver's writes, each one transaction
/// ([`kv::Guard`]): a failed guard is a conflict, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeTxn {
    /// `If CreateRevision(key) == 0 Then Put Else Range`, on key number
    /// slot (mod --key-space): every key once while the space lasts.
    Create,
    /// `If ModRevision(key) == rev Then Put Else Range`, with the revision
    /// the client last saw of the key (as the apiserver's watch cache
    /// knows it); a conflict learns the current one.
    Update,
    /// `If ModRevision(key) == rev Then Delete Else Range`, each prefilled
    /// key once (the run ends when they are gone).
    Delete,
}

/// What to run.
#[derive(Debug, Clone)]
pub enum Workload {
    /// One Put per request.
    Put,
    /// One single-key Range per request over a prefilled key space.
    Range(Consistency),
    /// The Kubernetes apiserver's update: Range the key for its
    /// mod_revision, then `Txn(If ModRevision(key) == rev Then Put Else Range)`;
    /// one request = the pair. A failed compare is a conflict, not an error.
    Txn(Consistency),
    /// The apiserver's create, update or delete, one transaction each.
    Kube(KubeTxn),
    /// The apiserver's paged list: Range from a random key to the end of
    /// the prefilled prefix, at most `limit` keys.
    List {
        consistency: Consistency,
        limit: i64,
    },
    /// Watchers on one prefix while `clients` writers put at `rate`.
    Watch(WatchConfig),
}

impl Workload {
    /// Whether the run first puts every key of the key space.
    pub(crate) fn prefills(&self) -> bool {
        matches!(
            self,
            Workload::Range(_)
                | Workload::Txn(_)
                | Workload::List { .. }
                | Workload::Kube(KubeTxn::Update | KubeTxn::Delete)
        )
    }

    /// `put`, `range`, `txn`, `txn-create`, `txn-update`, `txn-delete`,
    /// `list` or `watch`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range(_) => "range",
            Workload::Txn(_) => "txn",
            Workload::Kube(KubeTxn::Create) => "txn-create",
            Workload::Kube(KubeTxn::Update) => "txn-update",
            Workload::Kube(KubeTxn::Delete) => "txn-delete",
            Workload::List { .. } => "list",
            Workload::Watch(_) => "watch",
        }
    }
}

/// Key numbers need this many decimal digits.
pub(crate) fn key_digits(key_space: u64) -> usize {
    key_space.saturating_sub(1).max(1).to_string().len()
}

/// Rejects option combinations that cannot run, with a message naming the flag.
pub fn validate(cfg: &Config, workload: &Workload) -> anyhow::Result<()> {
    ensure!(
        !cfg.endpoints.is_empty(),
        "--endpoints: at least one endpoint is needed"
    );
    for e in &cfg.endpoints {
        conn::endpoint_url(e)?;
    }
    ensure!(cfg.clients > 0, "--clients must be at least 1");
    ensure!(cfg.conns > 0, "--conns must be at least 1");
    ensure!(
        cfg.conns <= cfg.clients || matches!(workload, Workload::Watch(_)),
        "--conns ({}) must not exceed --clients ({}): a connection without a client carries nothing",
        cfg.conns,
        cfg.clients
    );
    ensure!(
        !cfg.duration.is_zero(),
        "--duration must be positive (every run is bounded in time)"
    );
    ensure!(!cfg.timeout.is_zero(), "--timeout must be positive");
    if cfg.total == Some(0) {
        bail!("--total must be at least 1");
    }
    ensure!(cfg.key_space > 0, "--key-space must be at least 1");
    ensure!(
        !cfg.prefix.is_empty(),
        "--prefix must not be empty (it keeps the benchmark's keys apart)"
    );
    match workload {
        Workload::Watch(w) => {
            ensure!(w.watchers > 0, "--watchers must be at least 1");
            ensure!(w.streams > 0, "--watch-streams must be at least 1");
            ensure!(
                w.streams <= w.watchers,
                "--watch-streams ({}) must not exceed --watchers ({})",
                w.streams,
                w.watchers
            );
            ensure!(
                cfg.rate > 0 || cfg.total.is_some(),
                "watch needs --rate (puts/s) or --total: the writer must be bounded \
                 so every event can be tracked"
            );
            ensure!(
                cfg.val_size >= watch::MIN_VAL_SIZE,
                "--val-size must be at least {} for watch (the value carries the send timestamp)",
                watch::MIN_VAL_SIZE
            );
            ensure!(
                watch::max_puts(cfg) <= 50_000_000,
                "watch would track {} puts; lower --rate, --duration or --total",
                watch::max_puts(cfg)
            );
        }
        _ => {
            let need = cfg.prefix.len() + key_digits(cfg.key_space);
            ensure!(
                cfg.key_size >= need,
                "--key-size {} is too small: prefix {:?} plus {} digits for --key-space {} need {need} bytes",
                cfg.key_size,
                cfg.prefix,
                key_digits(cfg.key_space),
                cfg.key_space
            );
        }
    }
    if let Workload::List { limit, .. } = workload {
        ensure!(*limit > 0, "--limit must be at least 1");
    }
    if workload.prefills() {
        ensure!(
            cfg.key_space <= 10_000_000,
            "--key-space {} is too large to prefill for {} (at most 10,000,000)",
            cfg.key_space,
            workload.name()
        );
    }
    Ok(())
}

/// Runs `workload` and returns what it measured.
pub async fn run(cfg: &Config, workload: &Workload) -> anyhow::Result<Report> {
    validate(cfg, workload)?;
    match workload {
        Workload::Watch(w) => watch::run(cfg, w).await,
        _ => load::run(cfg, workload).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_flag() {
        let cfg = Config::default();
        assert!(validate(&cfg, &Workload::Put).is_ok());
        let bad = Config {
            clients: 0,
            ..cfg.clone()
        };
        assert!(format!("{}", validate(&bad, &Workload::Put).unwrap_err()).contains("--clients"));
        let bad = Config {
            key_size: 5,
            ..cfg.clone()
        };
        assert!(format!("{}", validate(&bad, &Workload::Put).unwrap_err()).contains("--key-size"));
        let bad = Config {
            conns: 2,
            ..cfg.clone()
        };
        assert!(format!("{}", validate(&bad, &Workload::Put).unwrap_err()).contains("--conns"));
        let w = Workload::Watch(WatchConfig::default());
        assert!(format!("{}", validate(&cfg, &w).unwrap_err()).contains("--rate"));
        let ok = Config { rate: 100, ..cfg };
        assert!(validate(&ok, &w).is_ok());
    }

    #[test]
    fn digits() {
        assert_eq!(key_digits(1), 1);
        assert_eq!(key_digits(10), 1);
        assert_eq!(key_digits(11), 2);
        assert_eq!(key_digits(10_000), 4);
    }
}
