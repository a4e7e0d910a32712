//! Endpoints and gRPC connections.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_net::BatchedWrites;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::http::{self, uri::Authority, uri::Scheme};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::Service;

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

/// One HTTP/2 connection used as a gRPC service. A request goes straight to
/// hyper's connection task (tonic's `Channel` puts a buffer task in front of
/// it: one more hand-off per call), and the connection's writes leave in
/// one system call per pass of that task instead of one per request body.
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Body>,
    scheme: Scheme,
    authority: Authority,
}

impl Service<http::Request<Body>> for Conn {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (mut head, body) = req.into_parts();
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        match http::Uri::from_parts(uri) {
            Ok(u) => head.uri = u,
            Err(e) => tracing::warn!("bad request URI: {e}"),
        }
        Box::pin(
            self.send
                .send_request(http::Request::from_parts(head, body)),
        )
    }
}

/// One connection to `endpoint` (a URL from [`endpoint_url`]).
pub async fn connect_one(url: &str, timeout: Duration) -> anyhow::Result<Conn> {
    let uri: http::Uri = url.parse().with_context(|| format!("endpoint {url}"))?;
    let authority = uri.authority().cloned().context("endpoint without host")?;
    let connect = async {
        let tcp = TcpStream::connect(authority.as_str()).await?;
        tcp.set_nodelay(true)?;
        let io = TokioIo::new(BatchedWrites::http2_client(tcp));
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            // Static windows as large as a busy watch stream needs. (Not
            // the adaptive window: its BDP pings count as ping abuse to
            // grpc-go's keepalive enforcement, and etcd answers with GOAWAY
            // ENHANCE_YOUR_CALM.)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        anyhow::Ok(send)
    };
    let send = tokio::time::timeout(timeout.min(Duration::from_secs(5)), connect)
        .await
        .with_context(|| format!("connecting to {url}: timed out"))?
        .with_context(|| format!("connecting to {url}"))?;
    Ok(Conn {
        send,
        scheme: Scheme::HTTP,
        authority,
    })
}

/// `cfg.conns` connections; connection `i` goes to endpoint `i % n`.
pub async fn connect_all(cfg: &Config) -> anyhow::Result<Vec<Conn>> {
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
