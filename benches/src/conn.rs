//! Endpoints and gRPC connections.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{bail, Context};
use ballast_net::BatchedWrites;
use bytes::Bytes;
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

/// Connects to `url` (a URL from [`endpoint_url`]) and runs `handshake` on
/// the batched TCP stream, within `timeout` (at most 5 s); errors read
/// `connecting to <url>: …`.
async fn dial<T, F>(
    url: &str,
    timeout: Duration,
    handshake: impl FnOnce(BatchedWrites<TcpStream>) -> F,
) -> anyhow::Result<(T, Authority)>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let uri: http::Uri = url.parse().with_context(|| format!("endpoint {url}"))?;
    let authority = uri.authority().cloned().context("endpoint without host")?;
    let connect = async {
        let tcp = TcpStream::connect(authority.as_str()).await?;
        tcp.set_nodelay(true)?;
        handshake(BatchedWrites::http2_client(tcp)).await
    };
    let connected = tokio::time::timeout(timeout.min(Duration::from_secs(5)), connect)
        .await
        .with_context(|| format!("connecting to {url}: timed out"))?
        .with_context(|| format!("connecting to {url}"))?;
    Ok((connected, authority))
}

/// Runs a connection's IO task until the connection closes.
fn spawn_connection<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// One connection to `endpoint` (a URL from [`endpoint_url`]).
pub async fn connect_one(url: &str, timeout: Duration) -> anyhow::Result<Conn> {
    let (send, authority) = dial(url, timeout, |io| async {
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            // Static windows as large as a busy watch stream needs. (Not
            // the adaptive window: its BDP pings count as ping abuse to
            // grpc-go's keepalive enforcement, and etcd answers with GOAWAY
            // ENHANCE_YOUR_CALM.)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(TokioIo::new(io))
            .await?;
        spawn_connection(conn);
        anyhow::Ok(send)
    })
    .await?;
    Ok(Conn {
        send,
        scheme: Scheme::HTTP,
        authority,
    })
}

/// `cfg.conns` connections; connection `i` goes to endpoint `i % n`.
pub async fn connect_all(cfg: &Config) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(cfg.conns);
    for url in urls(cfg)?.iter().cycle().take(cfg.conns) {
        conns.push(connect_one(url, cfg.timeout).await?);
    }
    Ok(conns)
}

pub(crate) fn urls(cfg: &Config) -> anyhow::Result<Vec<String>> {
    cfg.endpoints.iter().map(|e| endpoint_url(e)).collect()
}

/// One HTTP/2 connection for unary gRPC calls, on `h2` itself: the calling
/// task sends the request and reads the answer (hyper's client spawns a
/// task per request to await each response), so the load generator spends
/// less of the machine's CPU than the servers it measures.
#[derive(Clone)]
pub struct UnaryConn {
    send: h2::client::SendRequest<Bytes>,
    authority: Authority,
}

/// gRPC's 5-byte message prefix: not compressed, then the length.
fn grpc_frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut buf).expect("a Vec grows");
    buf.into()
}

fn h2_status(e: h2::Error) -> tonic::Status {
    tonic::Status::unavailable(format!("HTTP/2: {e}"))
}

impl UnaryConn {
    /// Calls the unary method at `path` (`/package.Service/Method`).
    pub async fn call<Resp: prost::Message + Default>(
        &self,
        path: &'static str,
        req: &impl prost::Message,
    ) -> Result<Resp, tonic::Status> {
        let head = http::Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut send = self.send.clone().ready().await.map_err(h2_status)?;
        let (response, mut body_tx) = send.send_request(head, false).map_err(h2_status)?;
        body_tx
            .send_data(grpc_frame(req), true)
            .map_err(h2_status)?;
        let response = response.await.map_err(h2_status)?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(tonic::Status::unknown(format!(
                "HTTP status {}",
                parts.status
            )));
        }
        // A "trailers-only" answer carries the status in the headers.
        if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
            if status.code() != tonic::Code::Ok {
                return Err(status);
            }
        }
        let mut message = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2_status)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        if let Some(trailers) = body.trailers().await.map_err(h2_status)? {
            if let Some(status) = tonic::Status::from_header_map(&trailers) {
                if status.code() != tonic::Code::Ok {
                    return Err(status);
                }
            }
        }
        let declared = message
            .get(1..5)
            .map(|len| u32::from_be_bytes(len.try_into().expect("four bytes")) as usize);
        if message.first() != Some(&0) || declared != Some(message.len() - 5) {
            return Err(tonic::Status::internal(
                "malformed or compressed gRPC answer",
            ));
        }
        Resp::decode(&message[5..]).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// One unary connection to `url` (a URL from [`endpoint_url`]).
pub async fn connect_unary(url: &str, timeout: Duration) -> anyhow::Result<UnaryConn> {
    let (send, authority) = dial(url, timeout, |io| async {
        // The same static windows as [`connect_one`].
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(io)
            .await?;
        spawn_connection(conn);
        anyhow::Ok(send)
    })
    .await?;
    Ok(UnaryConn { send, authority })
}

/// `cfg.conns` clients of the `etcd-client` crate, one connection each;
/// client `i` goes to endpoint `i % n`.
pub async fn connect_all_etcd_client(cfg: &Config) -> anyhow::Result<Vec<etcd_client::Client>> {
    let mut clients = Vec::with_capacity(cfg.conns);
    for url in urls(cfg)?.iter().cycle().take(cfg.conns) {
        let opts = etcd_client::ConnectOptions::new().with_connect_timeout(cfg.timeout);
        let client = etcd_client::Client::connect([url], Some(opts))
            .await
            .with_context(|| format!("etcd-client: connecting to {url}"))?;
        clients.push(client);
    }
    Ok(clients)
}

/// `cfg.conns` unary connections; connection `i` goes to endpoint `i % n`.
pub async fn connect_all_unary(cfg: &Config) -> anyhow::Result<Vec<UnaryConn>> {
    let mut conns = Vec::with_capacity(cfg.conns);
    for url in urls(cfg)?.iter().cycle().take(cfg.conns) {
        conns.push(connect_unary(url, cfg.timeout).await?);
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
