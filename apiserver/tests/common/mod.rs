//! Shared by the integration tests: an in-process apiserver on a free
//! loopback port, over a real cluster, and a small HTTP/1.1 client.

#![allow(dead_code)]

use std::time::Duration;

use ballast_apiserver::{Apiserver, CacheConfig, Config};
use ballast_tests::{Cluster, ClusterKind};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long any single HTTP exchange in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// An apiserver serving on 127.0.0.1; stops when dropped.
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub server: Option<Apiserver>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The endpoints of the shared cluster of `kind`.
pub fn endpoints(kind: ClusterKind) -> Vec<String> {
    let kind_cluster = Cluster::shared(kind);
    kind_cluster
        .endpoints()
        .into_iter()
        .map(|e| {
            if e.contains("://") {
                e
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

/// Starts an apiserver on the shared cluster of `kind`.
pub async fn start(kind: ClusterKind, cache: CacheConfig) -> Api {
    let eps = tokio::task::spawn_blocking(move || endpoints(kind))
        .await
        .expect("cluster start");
    start_on(eps, cache).await
}

pub async fn start_on(etcd_servers: Vec<String>, cache: CacheConfig) -> Api {
    let apiserver = Apiserver::new(Config {
        etcd_servers,
        cache,
    })
    .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = apiserver.router();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let api = Api {
        addr,
        server: Some(apiserver),
        stop: Some(stop),
    };
    // Ready once every cache has listed.
    for _ in 0..500 {
        if api.call("GET", "/readyz", None).await.0 == 200 {
            return api;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("apiserver not ready after 10 s");
}

impl Api {
    /// A GET with an Accept header.
    pub async fn get_accept(&self, path: &str, accept: &str) -> (u16, Value) {
        let resp = self
            .send_with("GET", path, None, "application/json", accept)
            .await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        content_type: &str,
    ) -> hyper::Response<Incoming> {
        self.send_with(method, path, body, content_type, "application/json")
            .await
    }

    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        content_type: &str,
        accept: &str,
    ) -> hyper::Response<Incoming> {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", content_type)
            .header("accept", accept)
            .body(Full::new(body.unwrap_or_default()))
            .expect("request");
        tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .expect("response in time")
            .expect("response")
    }

    /// One request with a JSON body; returns the status code and JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.raw(method, path, body, "application/json").await
    }

    /// One request with raw bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        content_type: &str,
    ) -> (u16, Value) {
        let resp = self.send(method, path, body, content_type).await;
        let code = resp.status().as_u16();
        let bytes = tokio::time::timeout(DEADLINE, resp.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (code, v)
    }

    /// POSTs a body the server refuses before reading it all: written on
    /// a raw socket, ignoring the write error once the server has answered.
    pub async fn oversized(&self, path: &str, body: String) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut rd, mut wr) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(head.as_bytes()).await;
            let _ = wr.write_all(body.as_bytes()).await;
        });
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut resp)).await;
        writer.abort();
        let text = String::from_utf8_lossy(&resp).into_owned();
        let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let json = text
            .find("\r\n\r\n")
            .and_then(|i| serde_json::from_str(&text[i + 4..]).ok())
            .unwrap_or(Value::Null);
        (code, json)
    }

    /// Opens a watch; read it with [`Watch::next`].
    pub async fn watch(&self, path: &str) -> Watch {
        let resp = self.send("GET", path, None, "application/json").await;
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

/// A watch stream, read line by line.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, `None` when the stream ends or nothing arrives in `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next non-bookmark event.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Value> {
        for _ in 0..1000 {
            let e = self.next(wait).await?;
            if e["type"] != "BOOKMARK" {
                return Some(e);
            }
        }
        None
    }
}

/// A pod manifest.
pub fn pod(name: &str, labels: Value, node: &str) -> Value {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox:1.36"}]});
    if !node.is_empty() {
        spec["nodeName"] = Value::String(node.into());
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

/// Creates a namespace (201) and returns its name.
pub async fn namespace(api: &Api, name: &str) -> String {
    let (code, body) = api
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(serde_json::json!({"metadata": {"name": name}})),
        )
        .await;
    assert!(
        code == 201 || code == 409,
        "create namespace {name}: {code} {body}"
    );
    name.to_string()
}

/// `metadata.resourceVersion` as a number.
pub fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric rv")
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}
