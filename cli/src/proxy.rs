//! `ballast proxy`: kube-proxy's job (see the ballast-proxy crate), with
//! kube-proxy's flags where they apply. The only mode is a userspace proxy;
//! `--proxy-mode iptables|ipvs|nftables` are refused with an error.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_proxy::{Config, NodePortAddresses, Proxy};
use clap::Args;

use crate::kube_client::ClientArgs;

/// The one `--proxy-mode` Ballast has.
const USERSPACE: &str = "userspace";

#[derive(Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// This node's name, instead of the machine's hostname: endpoints on
    /// it are local for `externalTrafficPolicy`/`internalTrafficPolicy: Local`.
    #[arg(long)]
    hostname_override: Option<String>,
    /// An address of the family to serve (cluster IPs and endpoints of
    /// the other family are skipped).
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Where `/healthz` and `/livez` are served (empty: nowhere).
    #[arg(long, default_value = ballast_proxy::DEFAULT_HEALTHZ_BIND_ADDRESS)]
    healthz_bind_address: String,
    /// Where `/metrics` is served (empty: nowhere).
    #[arg(long, default_value = ballast_proxy::DEFAULT_METRICS_BIND_ADDRESS)]
    metrics_bind_address: String,
    /// Where NodePorts listen: `primary` (the node's InternalIP
    /// addresses), or comma-separated addresses (a `/32` or `/128` CIDR is
    /// one address; `0.0.0.0/0` or `::/0` is every address).
    #[arg(long, default_value = "primary", value_delimiter = ',')]
    nodeport_addresses: Vec<String>,
    /// How Services are proxied; only `userspace` (connections forwarded by this process).
    #[arg(long, default_value = USERSPACE)]
    proxy_mode: String,
    /// How often everything is synced even when nothing changed.
    #[arg(long, default_value = "15m0s", value_parser = crate::duration::parse)]
    config_sync_period: Duration,
    /// Serve only the Services labelled
    /// `service.kubernetes.io/service-proxy-name=<this>`.
    #[arg(long)]
    service_proxy_name: Option<String>,
    /// A UDP flow idle this long ends.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    udp_timeout: Duration,
    /// Connections forwarded at once per Service address.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_frontend: u32,
}

/// A `host:port` flag value, or `None` when empty.
fn optional_addr(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("--{flag} {value:?}: not an IP:port"))
}

/// `--nodeport-addresses`: `primary`, addresses, or host and catch-all CIDRs.
fn nodeport_addresses(values: &[String]) -> anyhow::Result<NodePortAddresses> {
    if values.iter().all(|v| v.is_empty() || v == "primary") {
        return Ok(NodePortAddresses::Primary);
    }
    let mut addresses = Vec::new();
    for value in values.iter().filter(|v| !v.is_empty()) {
        let (ip, prefix) = match value.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (value.as_str(), None),
        };
        let ip: IpAddr = ip.parse().with_context(|| {
            format!("--nodeport-addresses {value:?}: not an IP address or CIDR")
        })?;
        let host_prefix = if ip.is_ipv4() { "32" } else { "128" };
        match prefix {
            None => addresses.push(ip),
            Some(p) if p == host_prefix => addresses.push(ip),
            Some("0") if ip.is_unspecified() => addresses.push(ip),
            Some(_) => bail!(
                "--nodeport-addresses {value:?}: only single addresses (/{host_prefix}) or {} are supported",
                if ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" }
            ),
        }
    }
    Ok(NodePortAddresses::Addresses(addresses))
}

/// This machine's hostname, lowercased (kube-proxy's default node name).
fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname; pass --hostname-override")?;
    Ok(name.trim().to_lowercase())
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if args.proxy_mode != USERSPACE {
        bail!(
            "--proxy-mode {:?}: not supported; ballast proxy forwards in userspace (--proxy-mode {USERSPACE})",
            args.proxy_mode
        );
    }
    let node_name = match args.hostname_override {
        Some(name) if !name.trim().is_empty() => name.trim().to_lowercase(),
        _ => hostname()?,
    };
    let config = Config {
        node_name,
        bind_address: args.bind_address,
        nodeport_addresses: nodeport_addresses(&args.nodeport_addresses)?,
        healthz_bind_address: optional_addr("healthz-bind-address", &args.healthz_bind_address)?,
        metrics_bind_address: optional_addr("metrics-bind-address", &args.metrics_bind_address)?,
        config_sync_period: args.config_sync_period,
        service_proxy_name: args.service_proxy_name,
        max_connections_per_frontend: args.max_connections_per_frontend as usize,
        udp_idle_timeout: args.udp_timeout,
        ..Config::default()
    };
    let client = args.client.client().await?;
    let proxy = Proxy::bind(client, config.clone()).await?;
    tracing::info!(
        node = %config.node_name,
        node_addresses = ?proxy.node_addresses(),
        healthz = ?proxy.healthz_addr(),
        metrics = ?proxy.metrics_addr(),
        "proxy starting"
    );
    proxy.run(crate::shutdown_signal()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeport_addresses_take_primary_hosts_and_catch_alls() {
        let parse =
            |v: &[&str]| nodeport_addresses(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&["primary"]).unwrap(), NodePortAddresses::Primary);
        assert_eq!(
            parse(&["127.0.0.1", "127.0.0.2/32", "0.0.0.0/0"]).unwrap(),
            NodePortAddresses::Addresses(vec![
                "127.0.0.1".parse().unwrap(),
                "127.0.0.2".parse().unwrap(),
                "0.0.0.0".parse().unwrap(),
            ])
        );
        let err = parse(&["127.0.0.0/8"]).unwrap_err().to_string();
        assert!(err.contains("only single addresses"), "{err}");
        assert!(parse(&["nope"]).is_err());
    }
}
