//! `ballast dns`: the cluster DNS (see the ballast-dns crate), with the
//! flags CoreDNS's kubernetes plugin and kube-dns users expect.

use std::net::SocketAddr;

use anyhow::Context;
use ballast_dns::{Config, Dns};
use clap::Args;

use crate::kube_client::ClientArgs;

/// Where `ballast dns` listens unless told: a loopback address of its
/// own, port 53, as a pod's resolver configuration needs.
pub const DEFAULT_LISTEN: &str = "127.0.0.10:53";

/// CoreDNS's metrics port, where `--status-address` serves unless told.
pub const STATUS_PORT: u16 = 9153;

#[derive(Args)]
pub struct DnsArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The cluster domain answered for (everything else is forwarded to
    /// the upstreams).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// An upstream server (`IP` or `IP:PORT`) for names outside the
    /// cluster; repeat for more, asked in order. Without one, the
    /// nameservers of --resolv-conf.
    #[arg(long = "upstream", value_name = "ADDR", value_parser = parse_upstream)]
    upstreams: Vec<SocketAddr>,
    /// The resolver configuration whose nameservers are the upstreams
    /// when no --upstream is given (CoreDNS's `forward . /etc/resolv.conf`);
    /// "" forwards nothing: names outside the cluster are REFUSED.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: String,
    /// The address served over UDP and TCP (port 0: a free one).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The TTL of answers, in seconds (CoreDNS's default).
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// Where CoreDNS's /metrics, /health and /ready are served in plain
    /// HTTP (port 0: a free one).
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], STATUS_PORT)))]
    status_address: SocketAddr,
}

/// An upstream's address: `IP:PORT`, or an `IP` on port 53.
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let client = args.client.client().await?;
    let upstreams = if !args.upstreams.is_empty() || args.resolv_conf.is_empty() {
        args.upstreams
    } else {
        let text = std::fs::read_to_string(&args.resolv_conf)
            .with_context(|| format!("reading --resolv-conf {}", args.resolv_conf))?;
        ballast_dns::forward::upstreams_of_resolv_conf(&text, args.listen)
    };
    if upstreams.is_empty() {
        tracing::warn!("no upstream DNS servers: names outside the cluster domain are REFUSED");
    }
    let config = Config {
        cluster_domain: args.cluster_domain,
        listen: args.listen,
        ttl: args.ttl,
        status: Some(args.status_address),
        upstreams,
    };
    let dns = Dns::start(client, config.clone())
        .await
        .with_context(|| format!("starting the cluster DNS on {}", config.listen))?;
    let status = dns.status_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr = %dns.addr(), domain = %config.cluster_domain, %status, "cluster DNS started");
    dns.run_until(crate::shutdown_signal()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: DnsArgs,
    }

    fn parse(flags: &[&str]) -> Result<DnsArgs, clap::Error> {
        use clap::Parser;
        Cmd::try_parse_from(std::iter::once("dns").chain(flags.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_default_as_coredns() {
        let d = parse(&[]).unwrap();
        assert_eq!(d.cluster_domain, "cluster.local");
        assert_eq!(d.listen.to_string(), "127.0.0.10:53");
        assert_eq!(d.ttl, 5);
        assert_eq!(d.status_address.to_string(), "127.0.0.1:9153");
        assert!(d.upstreams.is_empty());
        assert_eq!(d.resolv_conf, "/etc/resolv.conf");
        let u = parse(&["--upstream", "127.0.0.53", "--upstream=127.0.0.54:5353"]).unwrap();
        assert_eq!(
            u.upstreams,
            [
                "127.0.0.53:53".parse().unwrap(),
                "127.0.0.54:5353".parse().unwrap()
            ]
        );
        let err = parse(&["--upstream", "dns.example"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("\"dns.example\" is not an IP address or IP:PORT"),
            "{err}"
        );
        let a = parse(&["--listen", "127.0.0.53:1053", "--cluster-domain=k8s.test"]).unwrap();
        assert_eq!(
            (a.listen.port(), a.cluster_domain.as_str()),
            (1053, "k8s.test")
        );
        let err = parse(&["--listen", "127.0.0.53"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("invalid value '127.0.0.53' for '--listen"),
            "{err}"
        );
    }
}
