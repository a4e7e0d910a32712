//! `ballast controller-manager`: kube-controller-manager's flags, wired to
//! `ballast_controllers::ControllerManager`.

use std::time::Duration;

use anyhow::Context;
use ballast_controllers::nodeipam::Ipv4Cidr;
use ballast_controllers::{
    Config, ControllerManager, NodeIpamConfig, NodeLifecycleConfig, PodGcConfig,
};
use clap::Args;

use crate::kube_client::ClientArgs;

/// Flags of `ballast controller-manager`.
#[derive(Args)]
pub struct ControllerManagerArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    status: crate::status_port::StatusPortArgs,
    /// Controllers to run: `*` for all, `name` to add, `-name` to remove
    /// (deployment, replicaset, daemonset, statefulset, job, cronjob,
    /// endpoints, endpointslice, nodelifecycle, garbagecollector, podgc,
    /// serviceaccount, namespace, disruption, nodeipam,
    /// root-ca-cert-publisher).
    #[arg(long, default_value = "*")]
    controllers: String,
    /// How often nodes are checked.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
    node_monitor_period: Duration,
    /// A node silent this long is marked Unknown and its pods NotReady.
    #[arg(long, default_value = "40s", value_parser = crate::duration::parse)]
    node_monitor_grace_period: Duration,
    /// A node not ready this long has its pods deleted.
    #[arg(long, default_value = "5m0s", value_parser = crate::duration::parse)]
    pod_eviction_timeout: Duration,
    /// Nodes per second whose pods may be evicted in a healthy zone.
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    node_eviction_rate: f64,
    /// Nodes per second evicted in an unhealthy zone larger than
    /// --large-cluster-size-threshold (smaller ones evict nothing).
    #[arg(long, default_value_t = 0.01, value_parser = non_negative)]
    secondary_node_eviction_rate: f64,
    /// Share of not-ready nodes (more than 2) that makes a zone unhealthy.
    #[arg(long, default_value_t = 0.55, value_parser = non_negative)]
    unhealthy_zone_threshold: f64,
    /// Unhealthy zones of at most this many nodes stop evicting.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Terminated pods kept before the pod garbage collector deletes the
    /// oldest; 0 keeps them all.
    #[arg(long, default_value_t = 12500, value_name = "N")]
    terminated_pod_gc_threshold: usize,
    /// Deployments synced in parallel.
    #[arg(long, default_value_t = 5)]
    concurrent_deployment_syncs: usize,
    /// ReplicaSets synced in parallel.
    #[arg(long, default_value_t = 5)]
    concurrent_replicaset_syncs: usize,
    /// Jobs synced in parallel.
    #[arg(long, default_value_t = 5)]
    concurrent_job_syncs: usize,
    /// StatefulSets synced in parallel.
    #[arg(long, default_value_t = 5)]
    concurrent_statefulset_syncs: usize,
    /// Services synced in parallel by the endpoints controller.
    #[arg(long, default_value_t = 5)]
    concurrent_endpoint_syncs: usize,
    /// Garbage collector workers.
    #[arg(long, default_value_t = 20)]
    concurrent_gc_syncs: usize,
    /// The CA bundle (PEM) the root-ca-cert-publisher puts in every
    /// namespace's `kube-root-ca.crt`; default: the kubeconfig's CA.
    #[arg(long)]
    root_ca_file: Option<std::path::PathBuf>,
    /// Give every Node a `spec.podCIDR` out of --cluster-cidr (the
    /// `nodeipam` controller); kubelets started without --pod-cidr wait for it.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The range Node pod CIDRs are cut from (inside 127.0.0.0/8, apart
    /// from the Service range and 127.0.0.1).
    #[arg(long, default_value = "127.128.0.0/9", value_parser = Ipv4Cidr::parse)]
    cluster_cidr: Ipv4Cidr,
    /// The prefix length of each Node's pod CIDR (a /24: 253 pod IPs).
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The Services' range, never handed to a Node where it overlaps
    /// --cluster-cidr.
    #[arg(long, default_value = "127.96.0.0/16", value_parser = Ipv4Cidr::parse)]
    service_cluster_ip_range: Ipv4Cidr,
}

/// A finite number ≥ 0 (eviction rates, the zone threshold).
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number >= 0")),
    }
}

/// Runs the controller manager until SIGINT or SIGTERM.
pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let controllers = Config::parse_controllers(&args.controllers)
        .map_err(anyhow::Error::msg)
        .context("--controllers")?;
    let node_ipam = args.allocate_node_cidrs.then_some(NodeIpamConfig {
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        service_cidr: Some(args.service_cluster_ip_range),
    });
    if let Some(ipam) = &node_ipam {
        ipam.cidr_set().map_err(anyhow::Error::msg)?;
    }
    let client = args.client.client().await?;
    let config = Config {
        controllers,
        namespace: None,
        node_lifecycle: NodeLifecycleConfig {
            monitor_period: args.node_monitor_period.max(Duration::from_millis(10)),
            grace_period: args.node_monitor_grace_period,
            eviction_timeout: args.pod_eviction_timeout,
            eviction_rate: args.node_eviction_rate,
            secondary_eviction_rate: args.secondary_node_eviction_rate,
            unhealthy_zone_threshold: args.unhealthy_zone_threshold,
            large_cluster_size_threshold: args.large_cluster_size_threshold,
        },
        podgc: PodGcConfig {
            terminated_pod_threshold: args.terminated_pod_gc_threshold,
            ..PodGcConfig::default()
        },
        concurrent_deployment_syncs: args.concurrent_deployment_syncs,
        concurrent_replicaset_syncs: args.concurrent_replicaset_syncs,
        concurrent_job_syncs: args.concurrent_job_syncs,
        concurrent_statefulset_syncs: args.concurrent_statefulset_syncs,
        job: ballast_controllers::JobConfig::default(),
        concurrent_endpoint_syncs: args.concurrent_endpoint_syncs,
        concurrent_gc_syncs: args.concurrent_gc_syncs,
        node_ipam,
    };
    let mut registry = ballast_metrics::new_registry();
    ballast_controllers::queue::register_metrics(&mut registry);
    let port = crate::status_port::CONTROLLER_MANAGER_PORT;
    args.status.serve(port, registry).await?;
    if config.controllers.contains("root-ca-cert-publisher") {
        match root_ca(&args).await? {
            Some(ca) => {
                let publisher = ballast_controllers::rootcacert::RootCaPublisher::new(
                    client.clone(),
                    &ca,
                    None,
                );
                tokio::spawn(publisher.run(1));
            }
            None => tracing::warn!(
                "root-ca-cert-publisher: no --root-ca-file and no CA in the kubeconfig: kube-root-ca.crt is not published"
            ),
        }
    }
    ControllerManager::run(client, config, crate::shutdown_signal()).await?;
    Ok(())
}

/// The CA bundle to publish: `--root-ca-file`, else the kubeconfig's CA
/// certificates as PEM.
async fn root_ca(args: &ControllerManagerArgs) -> anyhow::Result<Option<String>> {
    use base64::Engine as _;
    if let Some(file) = &args.root_ca_file {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("--root-ca-file {}", file.display()))?;
        return Ok(Some(pem));
    }
    let certs = args.client.config().await?.root_cert.unwrap_or_default();
    if certs.is_empty() {
        return Ok(None);
    }
    let mut pem = String::new();
    for der in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_go_durations() {
        for (flag, value, want) in [
            (
                "--node-monitor-grace-period",
                "40s",
                Some(Duration::from_secs(40)),
            ),
            (
                "--pod-eviction-timeout",
                "5m0s",
                Some(Duration::from_secs(300)),
            ),
            (
                "--node-monitor-period",
                "250ms",
                Some(Duration::from_millis(250)),
            ),
            // Was: plain seconds through f64, and 1e30 panicked.
            ("--pod-eviction-timeout", "1e30", None),
            ("--pod-eviction-timeout", "2", None),
            ("--pod-eviction-timeout", "5x", None),
        ] {
            let got = parse(&[flag, value]);
            match want {
                Some(d) => {
                    let a = got.unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
                    let v = match flag {
                        "--node-monitor-grace-period" => a.node_monitor_grace_period,
                        "--pod-eviction-timeout" => a.pod_eviction_timeout,
                        _ => a.node_monitor_period,
                    };
                    assert_eq!(v, d, "{flag} {value}");
                }
                None => {
                    let e = got.err().unwrap_or_else(|| panic!("{flag} {value} parsed"));
                    let e = e.to_string();
                    assert!(e.contains("invalid value") && e.contains(flag), "{e}");
                }
            }
        }
    }

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ControllerManagerArgs,
    }

    fn parse(flags: &[&str]) -> Result<ControllerManagerArgs, clap::Error> {
        use clap::Parser;
        let argv = std::iter::once("controller-manager").chain(flags.iter().copied());
        Cmd::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn eviction_rate_flags() {
        let d = parse(&[]).expect("defaults");
        assert_eq!(
            (
                d.node_eviction_rate,
                d.secondary_node_eviction_rate,
                d.unhealthy_zone_threshold,
                d.large_cluster_size_threshold
            ),
            (0.1, 0.01, 0.55, 50)
        );
        let a = parse(&[
            "--node-eviction-rate",
            "0.5",
            "--unhealthy-zone-threshold=0.7",
        ])
        .expect("flags");
        assert_eq!(
            (a.node_eviction_rate, a.unhealthy_zone_threshold),
            (0.5, 0.7)
        );
        for bad in ["-1", "NaN", "inf", "fast"] {
            let flag = format!("--node-eviction-rate={bad}");
            let err = parse(&[&flag]).err().expect("refused").to_string();
            assert!(
                err.contains("invalid value") && err.contains("--node-eviction-rate"),
                "{err}"
            );
        }
    }

    #[test]
    fn node_cidr_flags() {
        let d = parse(&[]).expect("defaults");
        assert!(!d.allocate_node_cidrs, "off by default, as kube");
        assert_eq!(d.cluster_cidr.to_string(), "127.128.0.0/9");
        assert_eq!(d.node_cidr_mask_size, 24);
        assert!(!d.cluster_cidr.overlaps(&d.service_cluster_ip_range));
        let a = parse(&["--allocate-node-cidrs", "--cluster-cidr=127.200.0.0/16"]).unwrap();
        assert!(a.allocate_node_cidrs);
        assert_eq!(a.cluster_cidr.to_string(), "127.200.0.0/16");
        let err = parse(&["--cluster-cidr", "127.1.0.0"])
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("invalid CIDR address: 127.1.0.0"),
            "{err}"
        );
    }

    #[test]
    fn terminated_pod_gc_threshold_and_podgc_in_controllers() {
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(defaults.terminated_pod_gc_threshold, 12500);
        let all = Config::parse_controllers(&defaults.controllers).unwrap();
        assert!(all.contains("podgc"), "`*` includes podgc");
        assert!(all.contains("job"), "`*` includes job");
        assert_eq!(defaults.concurrent_job_syncs, 5);
        let off = parse(&[
            "--terminated-pod-gc-threshold",
            "0",
            "--controllers",
            "*,-podgc",
        ])
        .expect("flags");
        assert_eq!(off.terminated_pod_gc_threshold, 0);
        assert!(!Config::parse_controllers(&off.controllers)
            .unwrap()
            .contains("podgc"));
        for bad in ["-1", "lots"] {
            let flag = format!("--terminated-pod-gc-threshold={bad}");
            let err = parse(&[&flag]).err().expect("refused");
            assert!(
                err.to_string().contains(&format!(
                    "invalid value '{bad}' for '--terminated-pod-gc-threshold"
                )),
                "{err}"
            );
        }
    }
}
