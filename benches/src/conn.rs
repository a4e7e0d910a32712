//! Endpoints and gRPC connections.

use std::time::Duration;

use anyhow::{bail, Context};
use tonic::transport::{Channel, Endpoint};

use crate::Config;

/// `host:port` or `http://host:port` → `http://host:port`. `https` is
/// refused (the benchmarks speak plain gRPC).
pub fn endpoint_url(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim();
    let rest = if let Some(r) = e.strip_prefix("http://") {
        r
    } else if e.starts_with("https://") {
        bail!("endpoint {e:?}: TLS is not supported by the benchmark client");
    } else if e.contains("://") {
        bail!("endpoint {e:?}: only http:// endpoints are supported");
    } else {
        e
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("endpoint {e:?}: expected host:port"))?;
    if host.is_empty() {
        bail!("endpoint {e:?}: empty host");
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("endpoint {e:?}: bad port {port:?}"))?;
    Ok(format!("http://{host}:{port}"))
}

/// One connection to `endpoint` (a URL from [`endpoint_url`]).
pub async fn connect_one(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let ep = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("endpoint {url}"))?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true)
        // Static windows as large as a busy watch stream needs. (Not the
        // adaptive window: its BDP pings count as ping abuse to grpc-go's
        // keepalive enforcement, and etcd answers with GOAWAY
        // ENHANCE_YOUR_CALM.)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        // Many clients share one connection: let their requests queue
        // in front of it rather than fail.
        .buffer_size(64 * 1024);
    tokio::time::timeout(timeout, ep.connect())
        .await
        .with_context(|| format!("connecting to {url}: timed out"))?
        .with_context(|| format!("connecting to {url}"))
}

/// `cfg.conns` connections; connection `i` goes to endpoint `i % n`.
pub async fn connect_all(cfg: &Config) -> anyhow::Result<Vec<Channel>> {
    let urls = cfg
        .endpoints
        .iter()
        .map(|e| endpoint_url(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        conns.push(connect_one(&urls[i % urls.len()], cfg.timeout).await?);
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::endpoint_url;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(
            endpoint_url("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert!(endpoint_url("127.0.0.1").is_err());
        assert!(endpoint_url("127.0.0.1:0").is_err());
        assert!(endpoint_url("127.0.0.1:x").is_err());
        assert!(endpoint_url("https://127.0.0.1:2379").is_err());
        assert!(endpoint_url(":2379").is_err());
    }
}
