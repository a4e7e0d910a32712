//! Connection limits as kube-apiserver has them: `--max-requests-inflight`
//! and `--max-mutating-requests-inflight` (429 TooManyRequests with
//! `Retry-After`, watches and logs not counted, `system:masters` served
//! past the limit), and the request header read timeout (a client that
//! sends half a request head is disconnected).
//!
//! A request is held in flight deterministically over HTTP/2 with a stream
//! window of 0: the server answers its head, but cannot send its body, and
//! the slot is held until the body is done.

use std::time::Duration;

use crate::common::{endpoints, DEADLINE};
use ballast_apiserver::{
    Apiserver, AuthConfig, AuthorizationMode, CacheConfig, Config, Options, TokenFile,
};
use ballast_tests::ClusterKind;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// `alice` is an ordinary user; `root` is in `system:masters`.
const TOKENS: &str = "tok-alice,alice,uid-1,dev\ntok-root,root,uid-2,system:masters\n";

struct Server {
    addr: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// An apiserver on the shared etcd with `options` plus the token file
/// (bearer tokens required on the plain port), ready.
async fn start(mut options: Options) -> Server {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Etcd))
        .await
        .expect("cluster");
    options.auth = AuthConfig {
        tokens: Some(TokenFile::parse(TOKENS).expect("tokens")),
        anonymous: false,
        modes: vec![AuthorizationMode::AlwaysAllow],
        service_accounts: None,
    };
    let apiserver = Apiserver::with_options(
        Config {
            etcd_servers: eps,
            cache: CacheConfig::default(),
        },
        options,
    )
    .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.serve(listener, async move {
        let _ = stopped.await;
    }));
    let server = Server { addr, _stop: stop };
    for _ in 0..500 {
        if server.call("tok-root", "GET", "/readyz", None).await.0 == 200 {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("apiserver not ready after 10 s");
}

impl Server {
    /// One HTTP/1.1 request as the user of `token`: the response head and
    /// its body read in full.
    async fn send(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (hyper::http::response::Parts, Bytes) {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .expect("request");
        let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(DEADLINE, body.collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        (parts, bytes)
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (parts, bytes) = self.send(token, method, path, body).await;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status.as_u16(), v)
    }

    /// A request whose answer cannot be sent past its head: an HTTP/2
    /// stream whose window is 0. Dropping it resets the stream.
    async fn hold(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Held {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake(TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .expect("request");
        let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .expect("response head in time")
            .expect("response");
        Held {
            code: resp.status().as_u16(),
            _body: resp.into_body(),
            _sender: sender,
        }
    }
}

/// A response whose body is not read.
struct Held {
    code: u16,
    _body: Incoming,
    _sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

/// Asserts kube-apiserver's answer past the limit.
fn too_many(parts: &hyper::http::response::Parts, body: &Bytes) {
    let status: Value = serde_json::from_slice(body).expect("a Status body");
    assert_eq!(parts.status.as_u16(), 429, "{status}");
    assert_eq!(parts.headers["retry-after"], "1");
    assert_eq!(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Too many requests, please try again later.",
               "reason": "TooManyRequests", "details": {"retryAfterSeconds": 1}, "code": 429})
    );
}

/// Polls (bounded) until `token`'s `method path` is served again.
async fn until_served(server: &Server, token: &str, method: &str, path: &str, body: Value) {
    for _ in 0..500 {
        let (code, v) = server.call(token, method, path, Some(body.clone())).await;
        if code != 429 {
            assert!(code < 300, "{code} {v}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{method} {path} still refused 10 s after the held request ended");
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "b"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_counts_reads_and_writes_apart() {
    let server = start(Options {
        max_requests_inflight: 1,
        max_mutating_requests_inflight: 1,
        ..Options::default()
    })
    .await;
    let ns = "limits-inflight";
    let (code, v) = server
        .call(
            "tok-root",
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": ns}})),
        )
        .await;
    assert!(code == 201 || code == 409, "{code} {v}");
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");

    // One list in flight fills the read-only pool.
    let held = server
        .hold("tok-alice", "GET", "/api/v1/namespaces", None)
        .await;
    assert_eq!(held.code, 200);
    let (parts, body) = server
        .send(
            "tok-alice",
            "GET",
            &format!("/api/v1/namespaces/{ns}"),
            None,
        )
        .await;
    too_many(&parts, &body);
    let (parts, body) = server.send("tok-alice", "GET", &cms, None).await;
    too_many(&parts, &body);
    // Watches and logs are long-running: not counted.
    let watch = server
        .hold("tok-alice", "GET", &format!("{cms}?watch=true"), None)
        .await;
    assert_eq!(watch.code, 200);
    let (code, v) = server
        .call(
            "tok-alice",
            "GET",
            &format!("/api/v1/namespaces/{ns}/pods/nope/log"),
            None,
        )
        .await;
    assert_eq!(code, 404, "{v}");
    // Writes have their own pool.
    let (code, v) = server
        .call(
            "tok-alice",
            "POST",
            &cms,
            Some(configmap("while-reads-full")),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    // system:masters is always answered.
    let (code, v) = server
        .call("tok-root", "GET", &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    assert_eq!(code, 200, "{v}");
    // The slot comes back when the held answer ends (its stream reset).
    drop(held);
    until_served(&server, "tok-alice", "GET", &cms, Value::Null).await;

    // One write in flight fills the mutating pool; reads go on.
    let held = server
        .hold("tok-alice", "POST", &cms, Some(configmap("held-write")))
        .await;
    assert_eq!(held.code, 201);
    let (parts, body) = server
        .send("tok-alice", "POST", &cms, Some(configmap("refused")))
        .await;
    too_many(&parts, &body);
    let (parts, body) = server
        .send(
            "tok-alice",
            "DELETE",
            &format!("{cms}/while-reads-full"),
            None,
        )
        .await;
    too_many(&parts, &body);
    let (code, v) = server.call("tok-alice", "GET", &cms, None).await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = server
        .call("tok-root", "GET", &format!("{cms}/refused"), None)
        .await;
    assert_eq!(code, 404, "a refused write stored nothing: {v}");
    let (code, v) = server
        .call("tok-root", "POST", &cms, Some(configmap("by-root")))
        .await;
    assert_eq!(code, 201, "{v}");
    drop(held);
    until_served(&server, "tok-alice", "POST", &cms, configmap("after")).await;
    drop(watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_limits_off() {
    let server = start(Options {
        max_requests_inflight: 0,
        max_mutating_requests_inflight: 0,
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let h = server
            .hold("tok-alice", "GET", "/api/v1/namespaces", None)
            .await;
        assert_eq!(h.code, 200);
        held.push(h);
    }
    let (code, v) = server
        .call("tok-alice", "GET", "/api/v1/namespaces/default", None)
        .await;
    assert_eq!(code, 200, "{v}");
}

/// Reads until the server closes the connection (EOF or reset), bounded.
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await
        .expect("the server did not close a connection that sent half a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_disconnected() {
    let server = start(Options {
        request_header_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    // Half an HTTP/1.1 head.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    closed_by_server(&mut tcp).await;
    // Nothing at all.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    closed_by_server(&mut tcp).await;
    // Half the HTTP/2 preface.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    closed_by_server(&mut tcp).await;
    // A whole request on a fresh connection is served as ever, and an
    // HTTP/2 connection keeps serving past the bound once it has asked.
    let (code, _) = server
        .call("tok-alice", "GET", "/api/v1/namespaces/default", None)
        .await;
    assert_eq!(code, 200);
    let watch = server
        .hold("tok-alice", "GET", "/api/v1/namespaces?watch=true", None)
        .await;
    assert_eq!(watch.code, 200);
}

/// The default is generous: a request that takes a while to arrive in two
/// parts is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_head_in_pieces_is_served() {
    let server = start(Options::default()).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /api/v1/namespaces/default HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    tcp.write_all(b"Authorization: Bearer tok-alice\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
