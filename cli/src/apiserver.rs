//! `ballast apiserver`: kube-apiserver's flags, same names, same meaning.
//! Plain HTTP on `--port` for now; `--secure-port` (TLS) comes later and is
//! refused rather than silently ignored.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_apiserver::{Apiserver, CacheConfig, Config};
use clap::Args;

#[derive(Args)]
pub struct ApiserverArgs {
    /// etcd servers to connect to (comma-separated `http://host:port`).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port for plain (insecure) HTTP; loopback addresses only.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// HTTPS port: not supported yet.
    #[arg(long)]
    secure_port: Option<u16>,
    /// TLS certificate: not supported yet.
    #[arg(long)]
    tls_cert_file: Option<String>,
    /// TLS private key: not supported yet.
    #[arg(long)]
    tls_private_key_file: Option<String>,
    /// Recent events each resource's watch cache keeps for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    watch_cache_window: usize,
}

pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    if args.secure_port.is_some_and(|p| p != 0)
        || args.tls_cert_file.is_some()
        || args.tls_private_key_file.is_some()
    {
        bail!("--secure-port / --tls-cert-file / --tls-private-key-file: HTTPS is not supported yet; serve plain HTTP on loopback with --bind-address 127.0.0.1 --port N");
    }
    if !args.bind_address.is_loopback() {
        bail!(
            "--bind-address {}: plain HTTP (--port) is served on loopback addresses only",
            args.bind_address
        );
    }
    let cache = CacheConfig {
        window: args.watch_cache_window,
        ..CacheConfig::default()
    };
    let apiserver = Apiserver::new(Config {
        etcd_servers: args.etcd_servers,
        cache,
    })?;
    let addr = SocketAddr::new(args.bind_address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(%addr, "apiserver serving plain HTTP");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apiserver.serve(listener, async move {
        let _ = stop_rx.await;
    }));
    crate::shutdown_signal().await;
    let _ = stop_tx.send(());
    // Open watches would hold a graceful shutdown for their whole timeout.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(joined) => joined.context("apiserver task")?.context("serve")?,
        Err(_) => tracing::info!("closing open watches"),
    }
    Ok(())
}
