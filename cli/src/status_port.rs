//! `--secure-port`/`--bind-address` of the controller manager and the
//! scheduler: their `/metrics` and `/healthz`, on a port of their own as
//! kube's components serve them.
//!
//! kube serves these over HTTPS with delegated authentication; here they
//! are plain HTTP, bound to loopback unless `--bind-address` says
//! otherwise.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use ballast_metrics::prometheus_client::registry::Registry;
use clap::Args;

/// kube-controller-manager's port.
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
/// kube-scheduler's port.
pub const SCHEDULER_PORT: u16 = 10259;

/// Where `/metrics` and `/healthz` listen.
#[derive(Args, Debug)]
pub struct StatusPortArgs {
    /// Port of /metrics and /healthz (plain HTTP); 0 serves neither
    /// [default: 10257 for the controller manager, 10259 for the scheduler].
    #[arg(long, value_name = "PORT")]
    secure_port: Option<u16>,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind_address: IpAddr,
}

impl StatusPortArgs {
    /// Binds the port (`default_port` unless `--secure-port` was given) and
    /// serves `registry` and `/healthz` there until SIGINT or SIGTERM.
    /// A port taken by another process is an error, as in kube.
    pub async fn serve(&self, default_port: u16, registry: Registry) -> anyhow::Result<()> {
        let port = self.secure_port.unwrap_or(default_port);
        if port == 0 {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind((self.bind_address, port))
            .await
            .with_context(|| format!("--secure-port {port} on {}", self.bind_address))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving /metrics and /healthz");
        tokio::spawn(async move {
            let served =
                ballast_metrics::serve(listener, Arc::new(registry), crate::shutdown_signal());
            if let Err(e) = served.await {
                tracing::error!(%addr, error = %e, "/metrics server failed");
            }
        });
        Ok(())
    }
}
