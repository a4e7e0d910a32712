//! `ballast kubelet`: the node agent (process or simulated runtime), and
//! the hidden `ballast image <program>` behind the built-in images.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ballast_kubelet::{Kubelet, KubeletConfig, RuntimeKind};
use clap::{Args, ValueEnum};

use crate::kube_client::ClientArgs;

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeArg {
    /// Real processes from the built-in image catalogue.
    Process,
    /// Simulated containers (annotations `sim.ballast.dev/*`), for scale.
    Sim,
}

/// Runs one node agent (or, with `--runtime sim --nodes N`, N simulated nodes).
#[derive(Args)]
pub struct KubeletArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The Node's name (with --nodes N: the prefix of <name>-000 …).
    #[arg(long)]
    node_name: Option<String>,
    /// Container runtime.
    #[arg(long, value_enum, default_value = "process")]
    runtime: RuntimeArg,
    /// Where sandboxes, logs and container state live
    /// (default ./ballast-kubelet/<node>).
    #[arg(long)]
    root_dir: Option<PathBuf>,
    /// Port of the kubelet API (logs) on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// The node's pod CIDR inside 127.0.0.0/8; sim nodes take one /24 each
    /// (default: 127.1.0.0/16 for process, 127.64.0.0/10 for sim).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// How many simulated nodes this process hosts (sim runtime only).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The node's cpu capacity (default: this machine's cores).
    #[arg(long)]
    cpu: Option<String>,
    /// The node's memory capacity, a quantity such as 8Gi (default: this machine's).
    #[arg(long)]
    memory: Option<String>,
    /// The node's pod capacity.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// How often the node status is checked, in seconds.
    #[arg(long, default_value_t = 10.0)]
    node_status_update_frequency: f64,
    /// How often the node status is posted even when unchanged, in seconds.
    #[arg(long, default_value_t = 300.0)]
    node_status_report_frequency: f64,
    /// How often the node Lease is renewed, in seconds.
    #[arg(long, default_value_t = 10.0)]
    lease_renew_interval: f64,
    /// First restart/pull back-off delay in seconds (doubles up to --backoff-max).
    #[arg(long, default_value_t = 10.0)]
    backoff_base: f64,
    /// Longest restart/pull back-off in seconds.
    #[arg(long, default_value_t = 300.0)]
    backoff_max: f64,
    /// On exit, leave the containers running (a restarted kubelet adopts
    /// them). By default they are stopped, so nothing is left behind.
    #[arg(long)]
    keep_containers_on_exit: bool,
    /// Do not write Events.
    #[arg(long)]
    no_events: bool,
    /// The most a container's log file may grow to before it is rotated,
    /// a quantity such as 10Mi or 256Ki; negative: never rotate.
    #[arg(long, default_value = "10Mi", allow_hyphen_values = true)]
    container_log_max_size: String,
    /// The most log files kept per container, the live one included (> 1).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: i64,
    /// The uid containers without securityContext.runAsUser run as when
    /// the kubelet is root (process runtime).
    #[arg(long, default_value_t = 65534)]
    container_uid: u32,
    /// The gid containers without securityContext.runAsGroup run as when
    /// the kubelet is root (process runtime).
    #[arg(long, default_value_t = 65534)]
    container_gid: u32,
}

/// `--container-log-max-size` in bytes (`None`: negative, no rotation),
/// validated with the kubelet's messages.
fn log_max_size(v: &str) -> anyhow::Result<Option<u64>> {
    let bytes = ballast_controllers::scheduler::parse_units(v).map_err(|_| {
        anyhow::anyhow!(
            "invalid configuration: containerLogMaxSize (--container-log-max-size) {v} must be a valid resource.Quantity"
        )
    })?;
    Ok(u64::try_from(bytes).ok())
}

fn log_max_files(v: i64) -> anyhow::Result<usize> {
    usize::try_from(v).ok().filter(|n| *n > 1).ok_or_else(|| {
        anyhow::anyhow!(
            "invalid configuration: containerLogMaxFiles (--container-log-max-files) {v} must be greater than 1"
        )
    })
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{flag} {v}: not a duration in seconds"))
}

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    let client = args.client.client().await?;
    let node_name = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string()),
    };
    let exe = std::env::current_exe().context("locating the ballast executable")?;
    let mut config = KubeletConfig::new(&node_name, exe);
    config.runtime = match args.runtime {
        RuntimeArg::Process => RuntimeKind::Process,
        RuntimeArg::Sim => RuntimeKind::Sim,
    };
    if args.nodes > 1 && config.runtime != RuntimeKind::Sim {
        anyhow::bail!("--nodes needs --runtime sim");
    }
    config.nodes = args.nodes.max(1);
    if let Some(dir) = args.root_dir {
        config.root_dir = dir;
    }
    config.port = args.port;
    config.pod_cidr = args.pod_cidr.unwrap_or_else(|| match config.runtime {
        RuntimeKind::Process => "127.1.0.0/16".into(),
        RuntimeKind::Sim => "127.64.0.0/10".into(),
    });
    if let Some(cpu) = args.cpu {
        config.cpu = cpu;
    }
    if let Some(memory) = args.memory {
        config.memory = memory;
    }
    config.max_pods = args.max_pods;
    config.node_status_update_frequency = secs(
        "node-status-update-frequency",
        args.node_status_update_frequency,
    )?;
    config.node_status_report_frequency = secs(
        "node-status-report-frequency",
        args.node_status_report_frequency,
    )?;
    config.lease_renew_interval = secs("lease-renew-interval", args.lease_renew_interval)?;
    config.backoff_base = secs("backoff-base", args.backoff_base)?;
    config.backoff_max = secs("backoff-max", args.backoff_max)?;
    config.stop_containers_on_exit = !args.keep_containers_on_exit;
    config.record_events = !args.no_events;
    config.container_log_max_size = log_max_size(&args.container_log_max_size)?;
    config.container_log_max_files = log_max_files(args.container_log_max_files)?;
    config.container_user = ballast_kubelet::runtime::confine::RunAs {
        uid: args.container_uid,
        gid: args.container_gid,
    };
    let kubelet = Kubelet::start(client, config).await?;
    tracing::info!(
        nodes = kubelet.node_names().len(),
        port = kubelet.port(),
        "kubelet running"
    );
    crate::shutdown_signal().await;
    tracing::info!("kubelet stopping");
    kubelet.stop().await;
    Ok(())
}

/// `ballast image <name>`: the programs behind the process runtime's
/// built-in images (hidden; the kubelet runs them as containers).
#[derive(Args)]
pub struct ImageArgs {
    /// The image program to run (`httpd`, `shim`, `exec`).
    name: String,
    /// Its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn image(args: ImageArgs) -> anyhow::Result<()> {
    let code = ballast_kubelet::run_program(&args.name, &args.args).await?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotation_flags_parse_and_validate() {
        assert_eq!(log_max_size("10Mi").unwrap(), Some(10 << 20));
        assert_eq!(log_max_size("1Ki").unwrap(), Some(1024));
        assert_eq!(log_max_size("5000").unwrap(), Some(5000));
        assert_eq!(log_max_size("-1").unwrap(), None);
        let err = log_max_size("ten megs").unwrap_err().to_string();
        assert!(
            err.contains("--container-log-max-size") && err.contains("ten megs"),
            "{err}"
        );
        assert_eq!(log_max_files(5).unwrap(), 5);
        let err = log_max_files(1).unwrap_err().to_string();
        assert!(err.contains("must be greater than 1"), "{err}");
        assert!(log_max_files(-3).is_err());
    }
}
