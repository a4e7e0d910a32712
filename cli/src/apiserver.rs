//! `ballast apiserver`: kube-apiserver's flags, same names, same meaning.
//!
//! - `--secure-port` with `--tls-cert-file`/`--tls-private-key-file`: HTTPS
//!   on `--bind-address` (any address), authenticated by `--client-ca-file`
//!   certificates, `--token-auth-file` bearer tokens and (unless
//!   `--anonymous-auth=false`) as anonymous.
//! - `--port`: plain HTTP, loopback only (`--insecure-bind-address`, else
//!   `--bind-address` when it is loopback, else 127.0.0.1). Trusted as
//!   `system:masters` unless `--token-auth-file` is set, then bearer tokens
//!   are required there too. Off unless asked for (`--port` defaults to 0,
//!   as modern kube-apiserver).
//! - `--max-requests-inflight` (400) and `--max-mutating-requests-inflight`
//!   (200): read-only and mutating requests served at once; more are
//!   answered 429 with `Retry-After: 1`; watches and logs are not counted,
//!   `system:masters` is never refused; 0 turns a limit off.
//! - `--authorization-mode`: comma list of AlwaysAllow, AlwaysDeny, Node, RBAC.
//! - `--etcd-cafile`/`--etcd-certfile`/`--etcd-keyfile` for `https://` etcd.
//! - `--etcd-compaction-interval` (Go duration, `5m0s`): how often etcd's
//!   history is compacted, in turns with the other apiservers; `0` turns it
//!   off.
//! - `--event-ttl` (Go duration, `1h0m0s`): how long Events live after
//!   their last write; etcd deletes them through shared leases.
//! - `--kubelet-client-certificate`/`--kubelet-client-key`/
//!   `--kubelet-certificate-authority`: HTTPS to kubelets (`pods/log`)
//!   with that client certificate, verifying their serving certificates
//!   against that CA; plain HTTP without them.
//! - `--service-account-issuer` (repeatable; the first signs),
//!   `--service-account-signing-key-file`, `--service-account-key-file`
//!   (repeatable), `--service-account-max-token-expiration`,
//!   `--api-audiences`, `--service-account-lookup`,
//!   `--service-account-jwks-uri`: bound service account tokens
//!   (TokenRequest, JWT bearer tokens, TokenReview, OIDC discovery).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ballast_apiserver::{
    load_server_config, Apiserver, AuthConfig, AuthorizationMode, CacheConfig, Config, EtcdTls,
    KubeletClient, Options, ServiceAccountTokens, TokenFile, TokenSettings,
};
use clap::{ArgAction, Args};

#[derive(Args)]
pub struct ApiserverArgs {
    /// etcd servers to connect to (comma-separated `http://host:port` or `https://host:port`).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long)]
    etcd_certfile: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long)]
    etcd_keyfile: Option<PathBuf>,
    /// The address of the secure port (and of the plain port when loopback).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The address of the plain port; loopback only.
    #[arg(long)]
    insecure_bind_address: Option<IpAddr>,
    /// Port for plain (insecure) HTTP on loopback; 0 (the default) turns it off.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HTTPS port (needs --tls-cert-file and --tls-private-key-file); 0 or unset: off.
    #[arg(long)]
    secure_port: Option<u16>,
    /// Serving certificate (PEM, chain allowed).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long)]
    tls_private_key_file: Option<PathBuf>,
    /// CA (PEM) for client certificates: CN is the user, O entries the groups.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Static bearer tokens, CSV: token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Allow anonymous requests on the secure port (system:anonymous).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    anonymous_auth: bool,
    /// Authorizers in order: AlwaysAllow, AlwaysDeny, Node, RBAC.
    #[arg(long, value_delimiter = ',', default_value = "AlwaysAllow")]
    authorization_mode: Vec<AuthorizationMode>,
    /// Recent events each resource's watch cache keeps for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    watch_cache_window: usize,
    /// Ballast's own: wake a watcher with new events at most once per this
    /// many milliseconds, so a busy watcher's events go out in one write
    /// (0: at once).
    #[arg(long, default_value_t = 0)]
    watch_flush_interval_ms: u64,
    /// Concurrent HTTP/2 streams a client may open on one connection (as
    /// kube-apiserver; 0: the HTTP library's default, 200).
    #[arg(long, default_value_t = 1000)]
    http2_max_streams_per_connection: u32,
    /// Read-only requests (get, list; not watches) served at once; more are
    /// answered 429 TooManyRequests. 0: no limit.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) served at once;
    /// more are answered 429 TooManyRequests. 0: no limit.
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// How often etcd's history is compacted to the revision seen one
    /// interval earlier, in turns with the other apiservers on the same
    /// etcd (a Go duration: 5m0s, 30s); 0 turns compaction off.
    #[arg(long, default_value = "5m0s", value_parser = crate::duration::parse)]
    etcd_compaction_interval: Duration,
    /// How long Events are kept after their last write (a Go duration:
    /// 1h0m0s, 30m); must be positive.
    #[arg(long, default_value = "1h0m0s", value_parser = parse_ttl)]
    event_ttl: Duration,
    /// Client certificate (PEM) towards kubelets; with any --kubelet-*
    /// TLS flag the kubelet API is spoken to over HTTPS.
    #[arg(long)]
    kubelet_client_certificate: Option<PathBuf>,
    /// Key (PEM) of --kubelet-client-certificate.
    #[arg(long)]
    kubelet_client_key: Option<PathBuf>,
    /// CA (PEM) that signed the kubelets' serving certificates; without
    /// it they are not verified.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Admission plugins to run besides the default ones (known:
    /// ServiceAccount, on by default).
    #[arg(long, value_delimiter = ',')]
    enable_admission_plugins: Vec<String>,
    /// Default admission plugins to turn off (ServiceAccount: pods keep an
    /// empty serviceAccountName and need no ServiceAccount).
    #[arg(long, value_delimiter = ',')]
    disable_admission_plugins: Vec<String>,
    /// The range Services' ClusterIPs come from (IPv4 CIDR, /12 to /30);
    /// the first address is the `kubernetes` Service's. The default lies in
    /// loopback, away from the nodes' pod CIDRs.
    #[arg(long, default_value = "127.96.0.0/16")]
    service_cluster_ip_range: ballast_apiserver::Ipv4Cidr,
    /// The range NodePorts come from (`first-last`).
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: ballast_apiserver::PortRange,
    /// The address the `kubernetes` Service's endpoints point at for this
    /// apiserver (with the secure port, else the plain one); default:
    /// --bind-address, or 127.0.0.1 when that is unspecified.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Identifier of the service account token issuer (an https URL, or a
    /// name without ':'); repeatable: the first one signs new tokens, all
    /// are accepted.
    #[arg(long)]
    service_account_issuer: Vec<String>,
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1; ECDSA P-256 or RSA) that
    /// signs service account tokens.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// Public (or private) keys (PEM) that verify service account tokens;
    /// repeatable. Default: the signing key's.
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// The longest validity a TokenRequest is granted (a Go duration, at
    /// least 1h); 0: as asked.
    #[arg(long, default_value = "0", value_parser = crate::duration::parse)]
    service_account_max_token_expiration: Duration,
    /// Audiences of the API: a token must name one of them. Default: the
    /// issuers.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// Whether a service account token is valid only while its
    /// ServiceAccount (and bound Pod or Secret) exists.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    service_account_lookup: bool,
    /// The `jwks_uri` of the OIDC discovery document; default: the
    /// issuer's host + /openid/v1/jwks.
    #[arg(long)]
    service_account_jwks_uri: Option<String>,
}

/// The service account token settings, loaded; `None` when no flag asks
/// for them.
fn service_account_tokens(
    args: &ApiserverArgs,
) -> anyhow::Result<Option<std::sync::Arc<ServiceAccountTokens>>> {
    if args.service_account_issuer.is_empty()
        && args.service_account_signing_key_file.is_none()
        && args.service_account_key_file.is_empty()
    {
        return Ok(None);
    }
    let settings = TokenSettings {
        issuers: args.service_account_issuer.clone(),
        signing_key_file: args.service_account_signing_key_file.clone(),
        key_files: args.service_account_key_file.clone(),
        max_expiration: args.service_account_max_token_expiration,
        api_audiences: args.api_audiences.clone(),
        lookup: args.service_account_lookup,
        jwks_uri: args.service_account_jwks_uri.clone(),
    };
    let tokens = ServiceAccountTokens::load(&settings).map_err(anyhow::Error::msg)?;
    Ok(Some(std::sync::Arc::new(tokens)))
}

/// Whether the ServiceAccount admission plugin runs, from
/// --enable-admission-plugins and --disable-admission-plugins.
fn service_account_admission(args: &ApiserverArgs) -> anyhow::Result<bool> {
    const KNOWN: &[&str] = &["ServiceAccount"];
    for (flag, names) in [
        ("enable-admission-plugins", &args.enable_admission_plugins),
        ("disable-admission-plugins", &args.disable_admission_plugins),
    ] {
        if let Some(bad) = names.iter().find(|n| !KNOWN.contains(&n.as_str())) {
            bail!("{flag} plugin {bad:?} is unknown");
        }
    }
    let disabled = args
        .disable_admission_plugins
        .iter()
        .any(|n| n == "ServiceAccount");
    if disabled
        && args
            .enable_admission_plugins
            .iter()
            .any(|n| n == "ServiceAccount")
    {
        bail!("ServiceAccount is both enabled and disabled");
    }
    Ok(!disabled)
}

/// A positive Go duration.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match crate::duration::parse(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be a positive duration")),
        d => Ok(d),
    }
}

/// How long to wait at start for etcd to answer before giving up.
const STORAGE_WAIT: Duration = Duration::from_secs(30);

pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    let secure_port = args.secure_port.filter(|p| *p != 0);
    let tls = match (secure_port, &args.tls_cert_file, &args.tls_private_key_file) {
        (Some(_), Some(cert), Some(key)) => Some(
            load_server_config(cert, key, args.client_ca_file.as_deref())
                .context("--tls-cert-file / --tls-private-key-file / --client-ca-file")?,
        ),
        (Some(_), _, _) => bail!("--secure-port needs --tls-cert-file and --tls-private-key-file"),
        (None, _, _) => None,
    };
    if tls.is_none() && args.client_ca_file.is_some() {
        bail!("--client-ca-file needs --secure-port");
    }
    let plain_ip = match args.insecure_bind_address {
        Some(ip) if !ip.is_loopback() => {
            bail!("--insecure-bind-address {ip}: plain HTTP (--port) is served on loopback addresses only")
        }
        Some(ip) => ip,
        None if args.bind_address.is_loopback() => args.bind_address,
        None if tls.is_none() => bail!(
            "--bind-address {}: plain HTTP (--port) is served on loopback addresses only; \
             use --secure-port for other addresses",
            args.bind_address
        ),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    if args.port == 0 && tls.is_none() {
        bail!(
            "nothing to serve: give --secure-port (with --tls-cert-file and \
             --tls-private-key-file), or --port for plain HTTP on loopback"
        );
    }
    let tokens = args
        .token_auth_file
        .as_deref()
        .map(TokenFile::load)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--token-auth-file")?;
    let etcd_tls = if args.etcd_cafile.is_some() || args.etcd_certfile.is_some() {
        Some(
            EtcdTls::load(
                args.etcd_cafile.as_deref(),
                args.etcd_certfile.as_deref(),
                args.etcd_keyfile.as_deref(),
            )
            .context("etcd TLS")?,
        )
    } else {
        None
    };
    let kubelet_client = KubeletClient::load(
        args.kubelet_client_certificate.as_deref(),
        args.kubelet_client_key.as_deref(),
        args.kubelet_certificate_authority.as_deref(),
    )?;
    let cache = CacheConfig {
        window: args.watch_cache_window,
        flush_interval: Duration::from_millis(args.watch_flush_interval_ms),
        ..CacheConfig::default()
    };
    let service_account_admission = service_account_admission(&args)?;
    let service_accounts = service_account_tokens(&args)?;
    let options = Options {
        auth: AuthConfig {
            tokens,
            anonymous: args.anonymous_auth,
            modes: args.authorization_mode,
            service_accounts,
        },
        etcd_tls,
        http2_max_streams_per_connection: args.http2_max_streams_per_connection,
        max_requests_inflight: args.max_requests_inflight,
        max_mutating_requests_inflight: args.max_mutating_requests_inflight,
        etcd_compaction_interval: args.etcd_compaction_interval,
        event_ttl: args.event_ttl,
        kubelet_client,
        service_account_admission,
        service_ranges: ballast_apiserver::ServiceRanges {
            cluster_ip: args.service_cluster_ip_range,
            node_ports: args.service_node_port_range,
        },
        advertise_address: {
            let ip = args.advertise_address.unwrap_or(match args.bind_address {
                ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                ip => ip,
            });
            secure_port
                .or((args.port != 0).then_some(args.port))
                .map(|port| SocketAddr::new(ip, port))
        },
        // kube-apiserver's 32 s request header timeout has no flag.
        ..Options::default()
    };
    let apiserver = Apiserver::with_options(
        Config {
            etcd_servers: args.etcd_servers,
            cache,
        },
        options,
    )?;
    wait_for_storage(&apiserver).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = Vec::new();
    if args.port != 0 {
        let addr = SocketAddr::new(plain_ip, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tracing::info!(%addr, "apiserver serving plain HTTP");
        servers.push(tokio::spawn(
            apiserver.clone().serve(listener, stopped(stop_rx.clone())),
        ));
    }
    if let (Some(port), Some(tls)) = (secure_port, tls) {
        let addr = SocketAddr::new(args.bind_address, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        tracing::info!(%addr, "apiserver serving HTTPS");
        servers.push(tokio::spawn(apiserver.clone().serve_tls(
            listener,
            tls,
            stopped(stop_rx.clone()),
        )));
    }
    drop(apiserver);
    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    // Open watches would hold a graceful shutdown for their whole timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for server in servers {
        match tokio::time::timeout_at(deadline, server).await {
            Ok(joined) => joined.context("apiserver task")?.context("serve")?,
            Err(_) => {
                tracing::info!("closing open watches");
                break;
            }
        }
    }
    Ok(())
}

/// Waits (bounded) until etcd answers one read; a TLS or certificate
/// problem, or an etcd that never answers, ends the start with the cause.
async fn wait_for_storage(apiserver: &Apiserver) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match apiserver.check_storage().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let text = e.to_string();
                let tls_problem = ["certificate", "tls", "handshake", "UnknownIssuer"]
                    .iter()
                    .any(|w| text.to_lowercase().contains(&w.to_lowercase()));
                if tls_problem || start.elapsed() > STORAGE_WAIT {
                    bail!("cannot reach storage (--etcd-servers): {text}");
                }
                tracing::warn!(error = %text, "waiting for etcd");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ApiserverArgs,
    }

    fn parse(flags: &[&str]) -> Result<ApiserverArgs, clap::Error> {
        use clap::Parser;
        let argv = ["apiserver", "--etcd-servers", "http://127.0.0.1:2379"]
            .into_iter()
            .chain(flags.iter().copied());
        Cmd::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn limits_default_as_kube_apiserver() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.port, 0, "the insecure port is off unless asked for");
        assert_eq!(a.max_requests_inflight, 400);
        assert_eq!(a.max_mutating_requests_inflight, 200);
        let a = parse(&[
            "--port=8080",
            "--max-requests-inflight=0",
            "--max-mutating-requests-inflight",
            "7",
        ])
        .unwrap();
        assert_eq!(a.port, 8080);
        assert_eq!(a.max_requests_inflight, 0);
        assert_eq!(a.max_mutating_requests_inflight, 7);
        let err = parse(&["--max-requests-inflight=-1"])
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("--max-requests-inflight"), "{err}");
    }

    /// Without `--port` or `--secure-port` nothing listens: the start fails
    /// at once, before reaching for etcd.
    #[tokio::test]
    async fn no_port_by_default() {
        let err = run(parse(&[]).unwrap()).await.unwrap_err().to_string();
        assert!(err.starts_with("nothing to serve"), "{err}");
    }

    /// A bad --kubelet-* TLS file stops the start with the flag's name,
    /// before reaching for etcd.
    #[tokio::test]
    async fn kubelet_client_flags_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let junk = junk.to_str().unwrap();
        let start = |flags: &[&str]| {
            let mut all = vec!["--port".to_string(), "18080".to_string()];
            all.extend(flags.iter().map(|f| f.to_string()));
            async move {
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                format!("{:#}", run(parse(&all).unwrap()).await.unwrap_err())
            }
        };
        let err = start(&["--kubelet-client-certificate", junk]).await;
        assert!(err.contains("must be given together"), "{err}");
        let err = start(&["--kubelet-certificate-authority", junk]).await;
        assert!(
            err.starts_with("--kubelet-certificate-authority: no certificate"),
            "{err}"
        );
        let err = start(&["--kubelet-certificate-authority", "/nonexistent/ca.crt"]).await;
        assert!(
            err.starts_with("--kubelet-certificate-authority /nonexistent/ca.crt"),
            "{err}"
        );
    }

    #[test]
    fn etcd_compaction_interval_takes_go_durations() {
        let interval = |flags: &[&str]| parse(flags).map(|a| a.etcd_compaction_interval);
        assert_eq!(interval(&[]).unwrap(), Duration::from_secs(300));
        assert_eq!(
            interval(&["--etcd-compaction-interval", "30s"]).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            interval(&["--etcd-compaction-interval=1h0m0s"]).unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            interval(&["--etcd-compaction-interval", "0"]).unwrap(),
            Duration::ZERO
        );
        let err = interval(&["--etcd-compaction-interval", "5"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--etcd-compaction-interval") && text.contains("missing unit"),
            "{text}"
        );
    }

    #[test]
    fn event_ttl_takes_positive_go_durations() {
        let ttl = |flags: &[&str]| parse(flags).map(|a| a.event_ttl);
        assert_eq!(ttl(&[]).unwrap(), Duration::from_secs(3600));
        assert_eq!(ttl(&["--event-ttl", "2s"]).unwrap(), Duration::from_secs(2));
        assert_eq!(
            ttl(&["--event-ttl=1h30m"]).unwrap(),
            Duration::from_secs(5400)
        );
        for zero in ["0", "0s", "-0"] {
            let text = ttl(&[&format!("--event-ttl={zero}")])
                .unwrap_err()
                .to_string();
            assert!(
                text.contains("--event-ttl") && text.contains("must be a positive duration"),
                "{zero}: {text}"
            );
        }
        let text = ttl(&["--event-ttl=-1m"]).unwrap_err().to_string();
        assert!(text.contains("negative duration"), "{text}");
        let text = ttl(&["--event-ttl", "60"]).unwrap_err().to_string();
        assert!(text.contains("missing unit"), "{text}");
    }
}
