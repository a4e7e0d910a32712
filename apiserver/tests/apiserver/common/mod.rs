//! Shared by the integration tests: an in-process apiserver on a free
//! loopback port, over a real cluster, a small HTTP/1.1 client, and the
//! real clients (`kubectl`, the official Python `kubernetes` client) run
//! against it.

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
    urls(Cluster::shared(kind))
}

/// A cluster's client endpoints as URLs (`http://` where none is given).
pub fn urls(cluster: &Cluster) -> Vec<String> {
    cluster
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
    serve_plain(apiserver).await
}

/// Starts an apiserver with `options` (plain port only).
pub async fn start_on_with(etcd_servers: Vec<String>, options: ballast_apiserver::Options) -> Api {
    let apiserver = Apiserver::with_options(
        Config {
            etcd_servers,
            cache: CacheConfig::default(),
        },
        options,
    )
    .expect("apiserver");
    serve_plain(apiserver).await
}

async fn serve_plain(apiserver: Apiserver) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
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

    /// A merge-patch PATCH.
    pub async fn merge_patch(&self, path: &str, body: Value) -> (u16, Value) {
        let body = Bytes::from(body.to_string());
        self.raw("PATCH", path, Some(body), "application/merge-patch+json")
            .await
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
        ballast_tests::http::post_unread(self.addr, path, body).await
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

/// Certificates for a TLS test: a CA, the apiserver's serving certificate,
/// all in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: ballast_pki::Ca,
    pub server: ballast_pki::Issued,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = ballast_pki::Ca::new("ballast-test-ca").expect("ca");
        let server = ca
            .issue(&ballast_pki::CertSpec::loopback_server(
                "kube-apiserver",
                &[],
            ))
            .expect("server cert");
        Pki {
            dir: tempfile::tempdir().expect("tempdir"),
            ca,
            server,
        }
    }

    /// A client certificate for `user` in `groups`.
    pub fn client(&self, user: &str, groups: &[&str]) -> ballast_pki::Issued {
        self.ca
            .issue(&ballast_pki::CertSpec::client(user, groups))
            .expect("client cert")
    }
}

/// An apiserver serving HTTPS (client CA = the test CA) and, on another
/// port, plain HTTP; stops when dropped.
pub struct SecureApi {
    /// The plain (insecure) port.
    pub plain: Api,
    pub tls_addr: std::net::SocketAddr,
    pub pki: Pki,
    _stop_tls: oneshot::Sender<()>,
}

/// Starts an apiserver with `auth` on the shared etcd.
pub async fn start_secure(auth: ballast_apiserver::AuthConfig) -> SecureApi {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Etcd))
        .await
        .expect("cluster start");
    start_secure_on(eps, auth, None).await
}

pub async fn start_secure_on(
    etcd_servers: Vec<String>,
    auth: ballast_apiserver::AuthConfig,
    etcd_tls: Option<ballast_apiserver::EtcdTls>,
) -> SecureApi {
    let pki = Pki::new();
    let apiserver = Apiserver::with_options(
        Config {
            etcd_servers,
            cache: CacheConfig::default(),
        },
        ballast_apiserver::Options {
            auth,
            etcd_tls,
            ..Default::default()
        },
    )
    .expect("apiserver");
    let tls = ballast_apiserver::server_config(
        pki.server.cert_pem.as_bytes(),
        pki.server.key_pem.as_bytes(),
        Some(pki.ca.cert_pem().as_bytes()),
    )
    .expect("tls config");
    let plain_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = plain_listener.local_addr().expect("addr");
    let tls_addr = tls_listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_tls, stopped_tls) = oneshot::channel::<()>();
    tokio::spawn(apiserver.clone().serve(plain_listener, async move {
        let _ = stopped.await;
    }));
    tokio::spawn(apiserver.clone().serve_tls(tls_listener, tls, async move {
        let _ = stopped_tls.await;
    }));
    let api = SecureApi {
        plain: Api {
            addr,
            server: Some(apiserver),
            stop: Some(stop),
        },
        tls_addr,
        pki,
        _stop_tls: stop_tls,
    };
    // Ready once every cache has listed and the bootstrap policy exists.
    let admin = api.cert_client("test-admin", &["system:masters"]);
    for _ in 0..500 {
        if admin.call("GET", "/readyz", None).await.0 == 200 {
            return api;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("apiserver not ready after 10 s");
}

impl SecureApi {
    /// A client authenticating with a certificate for `user` in `groups`.
    pub fn cert_client(&self, user: &str, groups: &[&str]) -> TlsClient {
        let issued = self.pki.client(user, groups);
        TlsClient::new(self.tls_addr, self.pki.ca.cert_pem(), Some(&issued), None)
    }

    /// A client sending `Authorization: Bearer <token>`.
    pub fn token_client(&self, token: &str) -> TlsClient {
        TlsClient::new(self.tls_addr, self.pki.ca.cert_pem(), None, Some(token))
    }

    /// A client without credentials.
    pub fn anonymous_client(&self) -> TlsClient {
        TlsClient::new(self.tls_addr, self.pki.ca.cert_pem(), None, None)
    }

    /// A kubeconfig for `user` in `groups` (client-certificate-data), written
    /// into the test's directory; returns its path.
    pub fn kubeconfig(&self, user: &str, groups: &[&str]) -> std::path::PathBuf {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let issued = self.pki.client(user, groups);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: https://{}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: ballast\n    user: u\ncurrent-context: c\n",
            self.tls_addr,
            b64(self.pki.ca.cert_pem()),
            b64(&issued.cert_pem),
            b64(&issued.key_pem),
        );
        let path = self
            .pki
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// A small HTTPS/1.1 client: one connection per request.
pub struct TlsClient {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    token: Option<String>,
    headers: Vec<(String, String)>,
}

impl TlsClient {
    pub fn new(
        addr: std::net::SocketAddr,
        ca_pem: &str,
        cert: Option<&ballast_pki::Issued>,
        token: Option<&str>,
    ) -> TlsClient {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match cert {
            Some(c) => {
                let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert pem");
                let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key pem");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        TlsClient {
            addr,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            token: token.map(str::to_string),
            headers: Vec::new(),
        }
    }

    /// Sends `name: value` with every request (e.g. `Impersonate-User`).
    pub fn with_header(mut self, name: &str, value: &str) -> TlsClient {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// One request with a JSON body; the status code and JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, "application/json").await
    }

    /// A merge-patch PATCH.
    pub async fn merge_patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call_as("PATCH", path, Some(body), "application/merge-patch+json")
            .await
    }

    /// One request with a body of `content_type`.
    pub async fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> (u16, Value) {
        let tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = tokio::time::timeout(DEADLINE, self.connector.connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("TLS handshake");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", content_type)
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).expect("request");
        let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
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

    /// Polls `method path` until it answers `want` (authorization caches
    /// follow writes asynchronously); the last answer.
    pub async fn eventually(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.call(method, path, body.clone()).await;
            if got.0 == want || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the real kubectl is installed.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Writes `dir/kubeconfig` for an anonymous user of the plain-HTTP
/// apiserver at `addr`.
pub fn plain_kubeconfig(dir: &std::path::Path, addr: std::net::SocketAddr) {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ballast\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: ballast\n  context:\n    cluster: ballast\n    user: nobody\n\
         current-context: ballast\nusers:\n- name: nobody\n  user: {{}}\n"
    );
    std::fs::write(dir.join("kubeconfig"), kubeconfig).expect("kubeconfig");
}

/// Runs kubectl with `dir/kubeconfig` (and `dir` as its home): whether it
/// succeeded, its stdout and its stderr.
pub fn kubectl(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    println!("$ kubectl {}", args.join(" "));
    let out = std::process::Command::new(KUBECTL)
        .args(["--request-timeout", "30s"])
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stdout, stderr)
}

/// [`kubectl`] that must succeed; its stdout.
pub fn kubectl_ok(dir: &std::path::Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(dir, args);
    print!("{stdout}");
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

/// Runs `script` with the official Python `kubernetes` client as
/// `python -c script <kubeconfig> <ns>` and returns its stdout lines; the
/// test fails if the script does. `None` (said as SKIPPED) when the venv
/// scripts/setup.sh makes at `$HOME/.cache/ballast/pyenv` is missing.
pub async fn python_client(
    script: &'static str,
    kubeconfig: &std::path::Path,
    ns: &str,
) -> Option<Vec<String>> {
    let home = std::env::var_os("HOME")?;
    let py = std::path::Path::new(&home).join(".cache/ballast/pyenv/bin/python");
    if !py.exists() {
        println!(
            "SKIPPED the Python client half: no venv at $HOME/.cache/ballast/pyenv \
             (scripts/setup.sh installs it)"
        );
        return None;
    }
    let (config, ns) = (kubeconfig.to_path_buf(), ns.to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py)
            .args(["-c", script])
            .arg(&config)
            .arg(&ns)
            .output()
            .expect("run python")
    })
    .await
    .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout.lines().map(str::to_string).collect())
}
