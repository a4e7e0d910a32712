//! `ballast kubelet`: the node agent (process or simulated runtime), and
//! the hidden `ballast image <program>` behind the built-in images.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_kubelet::{ApiSecurity, AuthorizationMode, Kubelet, KubeletConfig, RuntimeKind};
use clap::{ArgAction, Args, ValueEnum};

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
    /// The node's pod CIDR inside 127.0.0.0/8; sim nodes take one /24 each.
    /// Without it each node waits for the `spec.podCIDR` the controller
    /// manager gives its Node (`--allocate-node-cidrs`). A range that
    /// overlaps another Node's is refused.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// How long a node without --pod-cidr waits for its Node's spec.podCIDR
    /// (a Go duration).
    #[arg(long, default_value = "2m0s", value_parser = crate::duration::parse)]
    pod_cidr_wait: Duration,
    /// The cluster DNS servers' addresses (comma-separated) ClusterFirst
    /// pods resolve with; without them such pods fall back to Default (a
    /// MissingClusterDNS warning).
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster's DNS domain; ClusterFirst pods search
    /// `<ns>.svc.<domain>`, `svc.<domain>` and `<domain>` (empty: none).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolver configuration: Default pods' resolv.conf, and
    /// the search domains ClusterFirst pods add to the cluster's. Empty:
    /// a resolver on this machine (nameserver 127.0.0.1). Containers see
    /// their pod's resolv.conf and /etc/hosts with --mount-namespaces.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: String,
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
    /// Which cgroups enforce containers' resource limits (process runtime,
    /// as root): auto (v2 where its memory and cpu controllers are
    /// available, else v1), v1, v2, or none. Without root or writable
    /// cgroups, limits are not enforced (logged).
    #[arg(long, default_value = "auto")]
    cgroups: ballast_kubelet::cgroups::CgroupMode,
    /// Give each container a mount namespace of its own (process runtime,
    /// as root): the pod's volumes at their mountPaths, the sandbox as `/`,
    /// a private `/tmp`. Off: volumes are not mounted (containers share the
    /// host's view), as before.
    #[arg(long)]
    mount_namespaces: bool,
    /// Give each pod network, UTS and IPC namespaces of its own, shared by
    /// its containers (process runtime; needs root): its own IP on a veth
    /// to this host, its own localhost and hostname. Off: containers share
    /// the host's.
    #[arg(long)]
    pod_namespaces: bool,
    /// The kubelet API's serving certificate (PEM, chain allowed): HTTPS
    /// when given, with --tls-private-key-file.
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// CA (PEM) for client certificates on the kubelet API: CN is the
    /// user, O entries the groups (needs --tls-cert-file).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Serve kubelet API requests without credentials as system:anonymous;
    /// false answers them 401 Unauthorized.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    anonymous_auth: bool,
    /// How kubelet API requests are authorized: AlwaysAllow, or Webhook (a
    /// SubjectAccessReview to the apiserver, on nodes/proxy, nodes/log, …).
    #[arg(long, default_value = "AlwaysAllow")]
    authorization_mode: AuthorizationMode,
    /// How long an allowed Webhook decision is reused (a Go duration).
    #[arg(long, default_value = "5m0s", value_parser = crate::duration::parse)]
    authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denied Webhook decision is reused (a Go duration).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Check bearer tokens on the kubelet API with a TokenReview to the
    /// apiserver.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    authentication_token_webhook: bool,
    /// How long a TokenReview's answer is reused (a Go duration).
    #[arg(long, default_value = "2m0s", value_parser = crate::duration::parse)]
    authentication_token_webhook_cache_ttl: Duration,
    /// How long a port-forward connection may carry nothing before it is
    /// closed (a Go duration; 0: never).
    #[arg(long, default_value = "4h0m0s", value_parser = crate::duration::parse)]
    streaming_connection_idle_timeout: Duration,
}

/// The kubelet API's TLS, authentication and authorization from the
/// flags, the files read.
fn api_security(args: &KubeletArgs) -> anyhow::Result<ApiSecurity> {
    let read = |flag: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("--{flag} {}", path.display()))
    };
    let tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => Some((
            read("tls-cert-file", cert)?,
            read("tls-private-key-file", key)?,
        )),
        (None, None) => None,
        _ => bail!("--tls-cert-file and --tls-private-key-file must be given together"),
    };
    let client_ca = match &args.client_ca_file {
        Some(_) if tls.is_none() => {
            bail!("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
        }
        Some(ca) => Some(read("client-ca-file", ca)?),
        None => None,
    };
    Ok(ApiSecurity {
        tls,
        client_ca,
        anonymous: args.anonymous_auth,
        authorization: args.authorization_mode,
        authorized_ttl: args.authorization_webhook_cache_authorized_ttl,
        unauthorized_ttl: args.authorization_webhook_cache_unauthorized_ttl,
        token_webhook: args.authentication_token_webhook,
        token_cache_ttl: args.authentication_token_webhook_cache_ttl,
    })
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
    let api = api_security(&args)?;
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
        bail!("--nodes needs --runtime sim");
    }
    config.nodes = args.nodes.max(1);
    if let Some(dir) = args.root_dir {
        config.root_dir = dir;
    }
    config.port = args.port;
    config.pod_cidr = args.pod_cidr.unwrap_or_default();
    config.pod_cidr_wait = args.pod_cidr_wait;
    config.cluster_dns = args.cluster_dns;
    config.cluster_domain = args.cluster_domain.trim_end_matches('.').to_string();
    config.resolv_conf = Some(args.resolv_conf)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
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
    config.cgroups = args.cgroups;
    config.mount_namespaces = args.mount_namespaces;
    config.pod_namespaces = pod_namespaces(
        args.pod_namespaces,
        ballast_kubelet::runtime::netns::effective_uid(),
    )?;
    config.api = api;
    config.streaming_connection_idle_timeout = args.streaming_connection_idle_timeout;
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

/// `--pod-namespaces`, refused unless the kubelet runs as root (it makes
/// namespaces and network links).
fn pod_namespaces(on: bool, euid: u32) -> anyhow::Result<bool> {
    if on && euid != 0 {
        bail!(
            "--pod-namespaces needs root: the kubelet makes each pod's network, UTS and IPC namespaces and links them to this host (effective uid {euid})"
        );
    }
    Ok(on)
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

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: KubeletArgs,
    }

    fn parse(flags: &[&str]) -> Result<KubeletArgs, clap::Error> {
        use clap::Parser;
        Cmd::try_parse_from(std::iter::once("kubelet").chain(flags.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn api_flags_default_as_the_kubelets_and_are_checked() {
        let api = api_security(&parse(&[]).unwrap()).unwrap();
        assert!(api.tls.is_none() && api.client_ca.is_none());
        assert!(api.anonymous);
        assert_eq!(api.authorization, AuthorizationMode::AlwaysAllow);
        assert_eq!(api.authorized_ttl, Duration::from_secs(300));
        assert_eq!(api.unauthorized_ttl, Duration::from_secs(30));

        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            p.to_string_lossy().into_owned()
        };
        let (cert, key, ca) = (file("c.crt"), file("c.key"), file("ca.crt"));
        let args = parse(&[
            "--tls-cert-file",
            &cert,
            "--tls-private-key-file",
            &key,
            "--client-ca-file",
            &ca,
            "--anonymous-auth=false",
            "--authorization-mode",
            "Webhook",
            "--authorization-webhook-cache-authorized-ttl",
            "1m",
            "--authorization-webhook-cache-unauthorized-ttl",
            "0",
        ])
        .unwrap();
        let api = api_security(&args).unwrap();
        assert_eq!(api.tls, Some((b"c.crt".to_vec(), b"c.key".to_vec())));
        assert_eq!(api.client_ca.as_deref(), Some(&b"ca.crt"[..]));
        assert!(!api.anonymous);
        assert_eq!(api.authorization, AuthorizationMode::Webhook);
        assert_eq!(api.authorized_ttl, Duration::from_secs(60));
        assert_eq!(api.unauthorized_ttl, Duration::ZERO);

        let err =
            |flags: &[&str]| format!("{:#}", api_security(&parse(flags).unwrap()).unwrap_err());
        assert!(err(&["--tls-cert-file", &cert]).contains("must be given together"));
        assert!(
            err(&["--client-ca-file", &ca]).starts_with("--client-ca-file needs --tls-cert-file")
        );
        let missing = err(&[
            "--tls-cert-file",
            "/nonexistent/c",
            "--tls-private-key-file",
            &key,
        ]);
        assert!(
            missing.starts_with("--tls-cert-file /nonexistent/c"),
            "{missing}"
        );
        let bad = parse(&["--authorization-mode", "RBAC"])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not supported"), "{bad}");
        assert!(parse(&["--authorization-webhook-cache-authorized-ttl", "5"]).is_err());
    }

    #[test]
    fn pod_cidr_and_cluster_dns_flags() {
        let d = parse(&[]).unwrap();
        assert!(d.pod_cidr.is_none(), "no --pod-cidr: wait for the Node's");
        assert_eq!(d.pod_cidr_wait, Duration::from_secs(120));
        assert_eq!(
            d.streaming_connection_idle_timeout,
            Duration::from_secs(4 * 3600)
        );
        assert!(d.cluster_dns.is_empty());
        assert_eq!(d.cluster_domain, "cluster.local");
        assert_eq!(d.resolv_conf, "/etc/resolv.conf");
        let a = parse(&["--resolv-conf", "", "--cluster-domain", ""]).unwrap();
        assert!(a.resolv_conf.is_empty() && a.cluster_domain.is_empty());
        let a = parse(&[
            "--cluster-dns",
            "127.0.0.53,127.0.0.54",
            "--cluster-domain",
            "cluster.local",
            "--pod-cidr-wait=5s",
            "--streaming-connection-idle-timeout=30m",
        ])
        .unwrap();
        assert_eq!(
            a.streaming_connection_idle_timeout,
            Duration::from_secs(1800)
        );
        assert_eq!(
            a.cluster_dns,
            [
                "127.0.0.53".parse::<std::net::IpAddr>().unwrap(),
                "127.0.0.54".parse().unwrap()
            ]
        );
        assert_eq!(a.cluster_domain, "cluster.local");
        assert_eq!(a.pod_cidr_wait, Duration::from_secs(5));
        assert!(parse(&["--cluster-dns", "dns.local"]).is_err());
    }

    #[test]
    fn pod_namespaces_need_root() {
        assert!(!parse(&[]).unwrap().pod_namespaces);
        assert!(parse(&["--pod-namespaces"]).unwrap().pod_namespaces);
        assert!(pod_namespaces(true, 0).unwrap());
        assert!(!pod_namespaces(false, 1000).unwrap());
        let err = pod_namespaces(true, 1000).unwrap_err().to_string();
        assert!(
            err.starts_with("--pod-namespaces needs root:")
                && err.ends_with("(effective uid 1000)"),
            "{err}"
        );
    }

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
