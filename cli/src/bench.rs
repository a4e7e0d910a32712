//! `ballast bench put|range|list|txn|watch`: load generators against any etcd v3
//! endpoints (Ballast or etcd); `ballast bench podflow` against an
//! apiserver; `ballast bench soak`, a long churn on a whole cluster;
//! `ballast bench chart`, SVG charts of their results. Parses the command
//! line and hands a config to the `ballast-bench` crate; the result is one
//! JSON line on stdout, progress goes to stderr once a second.

use std::time::Duration;

use anyhow::Context;
use ballast_bench::{ClientLibrary, Config, Consistency, KubeTxn, WatchConfig, Workload};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Put keys (uniform or sequential over --key-space).
    Put(Common),
    /// Get single keys of a prefilled key space.
    Range(ReadArgs),
    /// The apiserver's paged list: from a random key of a prefilled key
    /// space to the end of --prefix, at most --limit keys.
    List(ListArgs),
    /// A transaction as the Kubernetes apiserver writes (--shape).
    Txn(TxnArgs),
    /// Watchers on one prefix while a writer puts at --rate: checks every
    /// event arrives exactly once, in order, and how fast.
    Watch(WatchArgs),
    /// One Deployment through the whole control plane: time until every pod
    /// is Running and Ready, pod startup latency, scheduling rate.
    Podflow(PodflowArgs),
    /// The apiserver's watch cache: thousands of pod watchers (by namespace
    /// and by node) while a writer updates pods at --rate.
    WatchFanout(FanoutArgs),
    /// A long run of churn on `ballast up --runtime sim` (started here, or
    /// --attach), recording storage size, revisions, RSS, disk use and
    /// cached objects every --sample-interval; writes CSV and SVG and judges
    /// whether everything stayed flat.
    Soak(SoakArgs),
    /// Draw an SVG chart of results the benchmarks wrote: `compare`
    /// (compare-etcd's JSON lines), `soak` (soak.csv), `ladder` (the size
    /// ladders' JSON lines) or `timeline` (--timeline CSVs).
    Chart(ChartArgs),
}

#[derive(Args)]
struct ChartArgs {
    /// What the inputs are: compare, soak, ladder or timeline.
    #[arg(value_parser = ["compare", "soak", "ladder", "timeline"])]
    kind: String,
    /// The result files (timeline: files in one directory share a row).
    #[arg(required = true)]
    inputs: Vec<std::path::PathBuf>,
    /// The SVG file to write.
    #[arg(long, short)]
    out: std::path::PathBuf,
    /// The chart's title.
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args)]
struct SoakArgs {
    /// How long the churn runs (30m, 2h, 90s).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    duration: Duration,
    /// Time between samples.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    sample_interval: Duration,
    /// Measure the running `ballast up` with this --data-dir instead of
    /// starting a cluster.
    #[arg(long, conflicts_with_all = ["data_dir", "nodes", "event_ttl", "etcd_compaction_interval", "keep"])]
    attach: Option<std::path::PathBuf>,
    /// Where the soak's own cluster keeps its data (new or empty; default:
    /// a new directory under the system's temporary directory).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Simulated nodes of the soak's own cluster.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// The apiserver's --event-ttl (default: a sixth of --duration, within
    /// 30s..1h, so Events reach their steady count in the first third).
    #[arg(long, value_parser = parse_duration)]
    event_ttl: Option<Duration>,
    /// The apiserver's --etcd-compaction-interval (default: a sixth of
    /// --duration, within 30s..5m; 0 = off).
    #[arg(long, value_parser = parse_duration)]
    etcd_compaction_interval: Option<Duration>,
    /// Keep the soak's cluster data directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Pod creations plus deletions per second to hold.
    #[arg(long, default_value_t = 60)]
    pod_churn: u32,
    /// Deployments scaled and recreated by the churn.
    #[arg(long, default_value_t = 10)]
    churn_deployments: usize,
    /// The most replicas a churned Deployment is scaled to.
    #[arg(long, default_value_t = 30)]
    max_replicas: i32,
    /// Pods in each of the two probe-failing Deployments (readiness,
    /// liveness).
    #[arg(long, default_value_t = 5)]
    probe_replicas: i32,
    /// How often one churned Deployment is deleted and created again.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    recreate_every: Duration,
    /// Where soak.csv, soak.svg and summary.md are written.
    #[arg(long, default_value = "soak-results")]
    out: std::path::PathBuf,
    /// No progress line per sample.
    #[arg(long)]
    quiet: bool,
}

/// A sixth of `duration`, within `lo..=hi`, in whole seconds.
fn sixth(duration: Duration, lo: u64, hi: u64) -> Duration {
    Duration::from_secs((duration.as_secs() / 6).clamp(lo, hi))
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    client: crate::kube_client::ClientArgs,
    /// Watch streams: half on a namespace, half on spec.nodeName.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Pods created (and then updated round-robin).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Namespaces the pods are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Node names the pods are bound to (no kubelet needed).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pod updates per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of updates.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds watchers may take to catch up afterwards.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Full Lists of every pod timed at the end.
    #[arg(long, default_value_t = 20)]
    list_samples: usize,
    /// The apiserver's pid, to report its memory.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// Multiplex the watches over this many HTTP/2 (h2c) connections, as
    /// client-go does (the apiserver allows 200 streams per connection);
    /// 0 = one HTTP/1.0 connection per watch.
    #[arg(long, default_value_t = 0)]
    h2_conns: usize,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct PodflowArgs {
    #[command(flatten)]
    client: crate::kube_client::ClientArgs,
    /// Pods in the Deployment.
    #[arg(long, default_value_t = 3_000)]
    replicas: i32,
    /// Seconds to wait for every pod to be Ready.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The pods' image.
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Keep the namespace and its pods afterwards.
    #[arg(long)]
    keep: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct Common {
    /// Client endpoints, comma-separated (host:port or http://host:port).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Concurrent requesters (for watch: concurrent writers).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// gRPC connections, shared round-robin by the clients.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Bytes per key: --prefix, then the zero-padded key number.
    #[arg(long, default_value_t = 32)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    key_space: u64,
    /// Choose keys in order (0, 1, 2, …) instead of uniformly at random.
    #[arg(long)]
    sequential_keys: bool,
    /// Write incompressible pseudo-random values (a different one per key)
    /// instead of one repeated `abc…z` value, which compresses ~20×.
    #[arg(long)]
    random_values: bool,
    /// Total requests per second over all clients; 0 = unlimited
    /// (default: 0; for watch: 100 puts/s).
    #[arg(long)]
    rate: Option<u64>,
    /// Stop after this many requests.
    #[arg(long)]
    total: Option<u64>,
    /// Stop after this long (10s, 500ms, 2m; default 10s, or at most 10m
    /// when --total is given).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Deadline of every RPC.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Every key written or read starts with this.
    #[arg(long, default_value = "bench/")]
    prefix: String,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Write throughput, latency percentiles and errors per second to this
    /// CSV file (`ballast bench chart timeline` draws it).
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
    /// The client library: `lean` (the load generator's own gRPC calls,
    /// decoding only what it needs) or `etcd-client` (the etcd-client
    /// crate, one client per connection). For watch: the watchers'; the
    /// writers stay lean.
    #[arg(long, default_value = "lean", value_parser = ["lean", "etcd-client"])]
    client: String,
}

#[derive(Args)]
struct ReadArgs {
    #[command(flatten)]
    common: Common,
    /// Read consistency: l = linearizable, s = serializable.
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    consistency: String,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Keys per page (kube's `limit`, 500 for kubectl and informers).
    #[arg(long, default_value_t = 500)]
    limit: i64,
}

#[derive(Args)]
struct TxnArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// read-update: read a key's mod_revision, then Txn(If ModRevision ==
    /// rev Then Put Else Get), one request the pair; create: Txn(If
    /// CreateRevision == 0 Then Put Else Get) on each key once; update:
    /// the same guarded by the revision last seen (as the apiserver's watch
    /// cache knows it), no read; delete: Txn(If ModRevision == rev Then
    /// Delete Else Get) on each prefilled key once.
    #[arg(long, default_value = "read-update", value_parser = ["read-update", "create", "update", "delete"])]
    shape: String,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    common: Common,
    /// Watchers, all on one prefix.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    watch_streams: usize,
    /// Server process ids (comma-separated) whose RSS is read before and
    /// after creating the watchers, for bytes_per_watcher.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// How long creating every watcher may take.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    create_timeout: Duration,
    /// After the writer stops, how long watchers may take to catch up.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    drain_timeout: Duration,
}

/// `10s`, `500ms`, `2m`, `1.5s`, or plain seconds (`10`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn config(c: Common, default_rate: u64) -> Config {
    let duration = c.duration.unwrap_or(if c.total.is_some() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(10)
    });
    Config {
        endpoints: c.endpoints,
        clients: c.clients,
        conns: c.conns,
        key_size: c.key_size,
        val_size: c.val_size,
        key_space: c.key_space,
        sequential_keys: c.sequential_keys,
        random_values: c.random_values,
        rate: c.rate.unwrap_or(default_rate),
        total: c.total,
        duration,
        timeout: c.timeout,
        prefix: c.prefix,
        progress: !c.quiet,
        timeline: c.timeline,
        client: if c.client == "etcd-client" {
            ClientLibrary::EtcdClient
        } else {
            ClientLibrary::Lean
        },
    }
}

fn consistency(s: &str) -> Consistency {
    if s == "s" {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (cfg, workload) = match args.workload {
        BenchCommand::Chart(c) => {
            ballast_bench::chart::write(c.kind.parse()?, &c.inputs, &c.out, c.title.as_deref())
                .context("bench chart")?;
            println!(
                "{}",
                serde_json::json!({"kind": "chart", "chart": c.kind, "out": c.out})
            );
            return Ok(());
        }
        BenchCommand::WatchFanout(f) => {
            let kube_config = f.client.config().await?;
            let url = &kube_config.cluster_url;
            let address = format!(
                "{}:{}",
                url.host().context("--master has no host")?,
                url.port_u16().unwrap_or(80)
            );
            let config = ballast_bench::fanout::FanoutConfig {
                address,
                watchers: f.watchers,
                pods: f.pods,
                namespaces: f.namespaces,
                nodes: f.nodes,
                rate: f.rate,
                duration: Duration::from_secs(f.duration),
                drain: Duration::from_secs(f.drain),
                list_samples: f.list_samples,
                apiserver_pid: f.apiserver_pid,
                h2_conns: f.h2_conns,
                progress: !f.quiet,
            };
            let client = kube::Client::try_from(kube_config)?;
            let result = ballast_bench::fanout::run(client, config)
                .await
                .context("bench watch-fanout")?;
            println!("{result}");
            return Ok(());
        }
        BenchCommand::Soak(s) => {
            use ballast_bench::soak::{ClusterSource, SoakConfig, SpawnConfig};
            let cluster = match s.attach {
                Some(data_dir) => ClusterSource::Attach { data_dir },
                None => ClusterSource::Spawn(SpawnConfig {
                    exe: std::env::current_exe().context("finding the ballast binary")?,
                    data_dir: s.data_dir,
                    nodes: s.nodes,
                    event_ttl: s.event_ttl.unwrap_or(sixth(s.duration, 30, 3600)),
                    compaction_interval: s
                        .etcd_compaction_interval
                        .unwrap_or(sixth(s.duration, 30, 300)),
                    keep: s.keep,
                }),
            };
            let config = SoakConfig {
                duration: s.duration,
                sample_interval: s.sample_interval,
                cluster,
                pod_churn: s.pod_churn,
                churn_deployments: s.churn_deployments,
                max_replicas: s.max_replicas,
                probe_replicas: s.probe_replicas,
                recreate_every: s.recreate_every,
                out_dir: s.out,
                progress: !s.quiet,
            };
            let result = ballast_bench::soak::run(config)
                .await
                .context("bench soak")?;
            println!("{result}");
            return Ok(());
        }
        BenchCommand::Podflow(p) => {
            let config = ballast_bench::podflow::PodflowConfig {
                replicas: p.replicas,
                timeout: Duration::from_secs(p.timeout),
                image: p.image,
                keep: p.keep,
                progress: !p.quiet,
            };
            let result = ballast_bench::podflow::run(p.client.client().await?, config)
                .await
                .context("bench podflow")?;
            println!("{result}");
            return Ok(());
        }
        BenchCommand::Put(c) => (config(c, 0), Workload::Put),
        BenchCommand::Range(r) => (
            config(r.common, 0),
            Workload::Range(consistency(&r.consistency)),
        ),
        BenchCommand::List(l) => (
            config(l.read.common, 0),
            Workload::List {
                consistency: consistency(&l.read.consistency),
                limit: l.limit,
            },
        ),
        BenchCommand::Txn(t) => {
            let c = consistency(&t.read.consistency);
            let workload = match t.shape.as_str() {
                "create" => Workload::Kube(KubeTxn::Create),
                "update" => Workload::Kube(KubeTxn::Update),
                "delete" => Workload::Kube(KubeTxn::Delete),
                _ => Workload::Txn(c),
            };
            (config(t.read.common, 0), workload)
        }
        BenchCommand::Watch(w) => (
            config(w.common, 100),
            Workload::Watch(WatchConfig {
                watchers: w.watchers,
                streams: w.watch_streams,
                server_pids: w.server_pids,
                create_timeout: w.create_timeout,
                drain_timeout: w.drain_timeout,
            }),
        ),
    };
    let report = ballast_bench::run(&cfg, &workload)
        .await
        .with_context(|| format!("bench {}", workload.name()))?;
    println!("{}", report.to_line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn soak_defaults_scale_with_the_duration() {
        use super::sixth;
        assert_eq!(
            sixth(Duration::from_secs(1800), 30, 300),
            Duration::from_secs(300)
        );
        assert_eq!(
            sixth(Duration::from_secs(180), 30, 300),
            Duration::from_secs(30)
        );
        assert_eq!(
            sixth(Duration::from_secs(7200), 30, 300),
            Duration::from_secs(300)
        );
        assert_eq!(
            sixth(Duration::from_secs(7200), 30, 3600),
            Duration::from_secs(1200)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10x").is_err());
    }
}
