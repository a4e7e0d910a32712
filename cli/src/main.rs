//! `ballast`: one binary for every part of Ballast. This crate only parses
//! command lines and wires the library crates together.
//!
//! # Layout
//! - `apiserver` — `ballast apiserver`: the Kubernetes API, with kube-apiserver's flags.
//! - `server` — `ballast server`: a storage member, with etcd's flags.
//! - `up` — `ballast up`: a whole cluster on this machine.
//! - `snapshot` — `ballast snapshot save|status|restore`: backups.
//! - `controller_manager`, `scheduler`, `kubelet` — the components, with
//!   kube's `--kubeconfig`/`--master` flags (`kube_client`).
//! - `proxy` — `ballast proxy`: kube-proxy's job, with kube-proxy's flags.
//! - `dns` — `ballast dns`: the cluster DNS, with CoreDNS users' flags.
//! - `bench` — `ballast bench …`: load generators.
//! - `duration` — Go's duration syntax, as kube's flags take it.
//! - `logging` — `--log-level`, `--log-format text|json`, `RUST_LOG`.
//! - `status_port` — the controller manager's and scheduler's `/metrics`
//!   and `/healthz` port (`--secure-port`, `--bind-address`).

mod apiserver;
mod bench;
mod controller_manager;
mod dns;
mod duration;
mod kube_client;
mod kubelet;
mod logging;
mod proxy;
mod scheduler;
mod server;
mod snapshot;
mod status_port;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the storage write path and the
/// watch fan-out allocate per request, and glibc's free lists were about a
/// fifth of a member's CPU (benches/RESULTS.md, write path profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ballast: an etcd replacement and a lean Kubernetes control plane.
#[derive(Parser)]
#[command(name = "ballast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one storage member (takes etcd's flags).
    Server(Box<server::ServerArgs>),
    /// Run the Kubernetes API server over etcd (takes kube-apiserver's flags).
    Apiserver(Box<apiserver::ApiserverArgs>),
    /// Run the controllers: deployment, replicaset, endpoints, node lifecycle, garbage collector.
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// Run the scheduler: binds pending pods to nodes.
    Scheduler(scheduler::SchedulerArgs),
    /// Run a node agent: registers a Node and runs the pods bound to it.
    Kubelet(Box<kubelet::KubeletArgs>),
    /// Forward Service addresses and NodePorts to ready endpoints (kube-proxy's job).
    Proxy(proxy::ProxyArgs),
    /// Answer cluster DNS: Services, endpoints and pods (CoreDNS's kubernetes plugin).
    Dns(dns::DnsArgs),
    /// The programs behind the process runtime's built-in images.
    #[command(hide = true)]
    Image(kubelet::ImageArgs),
    /// Start a whole cluster on this machine and keep it running until Ctrl-C.
    Up(up::UpArgs),
    /// Save and inspect backups.
    Snapshot(snapshot::SnapshotArgs),
    /// Load generators against etcd v3 endpoints: put, range, txn, watch.
    Bench(bench::BenchArgs),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    // `ballast server` takes etcd's flags as Go spells them too (`-name`).
    let cli = Cli::parse_from(server::go_style_args(std::env::args_os()));
    logging::init(&cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(*args).await,
            Command::Apiserver(args) => apiserver::run(*args).await,
            Command::ControllerManager(args) => controller_manager::run(args).await,
            Command::Scheduler(args) => scheduler::run(args).await,
            Command::Kubelet(args) => kubelet::run(*args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::Dns(args) => dns::run(args).await,
            Command::Image(args) => kubelet::image(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Snapshot(args) => snapshot::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
