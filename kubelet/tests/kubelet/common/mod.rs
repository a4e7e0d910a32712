//! Shared by the kubelet's integration tests: an in-process apiserver over
//! the shared real etcd, a namespace per test, a kubelet per test on its
//! own node name, root directory and pod CIDR, and polling helpers.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ballast_apiserver::{Apiserver, CacheConfig, Config};
use ballast_kubelet::{Kubelet, KubeletConfig, KubeletHandle, RuntimeKind};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// How long any wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(40);

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Pod CIDRs handed to test kubelets, each once per process: the Nodes of
/// finished tests stay in the shared etcd, and a kubelet refuses a range
/// that overlaps another Node's. Process kubelets get /24s from
/// 127.100.0.0 up (127.100–127.127), sim kubelets /14s from 127.128.0.0
/// up (127.128–127.247); 127.248 and above are left to single tests.
static ENV_CIDRS: AtomicU32 = AtomicU32::new(0);
static SIM_CIDRS: AtomicU32 = AtomicU32::new(0);

/// One test's world: apiserver, client, namespace, kubelet, root dir.
pub struct Env {
    pub client: Client,
    /// The apiserver's URL (plain HTTP on loopback), for `ballast` commands.
    pub api: String,
    pub ns: String,
    pub node: String,
    pub root: tempfile::TempDir,
    /// A directory every container's user may use (mode 1777): the
    /// kubelet's root is private, so tests share files with containers here.
    pub shared: tempfile::TempDir,
    pub cidr: String,
    pub kubelet: Option<KubeletHandle>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever the test did, leave no process behind: stop the kubelet
        // (dropping its handle signals shutdown, so nothing is restarted),
        // then kill what is recorded under its root, a few times over.
        self.kubelet.take();
        for _ in 0..5 {
            ballast_kubelet::runtime::process::kill_all(self.root.path());
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn etcd_endpoints() -> Vec<String> {
    ballast_tests::Cluster::shared(ballast_tests::ClusterKind::Etcd)
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

/// A unique suffix for names shared across tests and runs.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{n}-{:x}",
        std::process::id() % 100000,
        nanos % 0xffff
    )
}

/// Starts the apiserver and creates the test's namespace (no kubelet yet).
pub async fn env(name: &str) -> Env {
    let eps = tokio::task::spawn_blocking(etcd_endpoints)
        .await
        .expect("etcd");
    let apiserver = Apiserver::new(Config {
        etcd_servers: eps,
        cache: CacheConfig::default(),
    })
    .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
        .expect("client");
    let ns = unique(name);
    let nsapi: Api<Namespace> = Api::all(client.clone());
    let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match nsapi.create(&PostParams::default(), &nsobj).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("creating namespace: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let k = ENV_CIDRS.fetch_add(1, Ordering::SeqCst) % (28 * 256);
    Env {
        client,
        api: format!("http://{addr}"),
        node: unique("node"),
        cidr: format!("127.{}.{}.0/24", 100 + k / 256, k % 256),
        ns,
        root: tempfile::tempdir().expect("tempdir"),
        shared: shared_dir(),
        kubelet: None,
        stop: Some(stop),
    }
}

impl Env {
    /// A process-runtime config for this test: fast back-off and heartbeats.
    pub fn config(&self) -> KubeletConfig {
        // `BALLAST_TEST_EXE` overrides the binary that runs `ballast image …`.
        let exe = std::env::var_os("BALLAST_TEST_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| ballast_tests::workspace_bin("ballast"));
        let mut c = KubeletConfig::new(&self.node, exe);
        c.root_dir = self.root.path().to_path_buf();
        c.pod_cidr = self.cidr.clone();
        c.backoff_base = Duration::from_millis(500);
        c.backoff_max = Duration::from_secs(4);
        c.node_status_update_frequency = Duration::from_secs(1);
        c.lease_renew_interval = Duration::from_secs(1);
        c.shutdown_grace = Duration::from_millis(500);
        c
    }

    /// Starts a kubelet with `config`.
    pub async fn start(&mut self, config: KubeletConfig) {
        let k = Kubelet::start(self.client.clone(), config)
            .await
            .expect("kubelet start");
        self.kubelet = Some(k);
    }

    /// Starts a process-runtime kubelet with the test defaults.
    pub async fn start_default(&mut self) {
        let c = self.config();
        self.start(c).await;
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a pod bound to this test's node from a JSON manifest.
    pub async fn create_pod(&self, mut manifest: Value) -> Pod {
        manifest["spec"]["nodeName"] = json!(self.node);
        let pod: Pod = serde_json::from_value(manifest).expect("pod manifest");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Polls the pod until `pred` holds; panics with the last state at the deadline.
    pub async fn wait_pod(&self, name: &str, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            if let Ok(p) = self.pods().get(name).await {
                if pred(&p) {
                    return p;
                }
                last = Some(p);
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "pod {name}: waited {DEADLINE:?} for {what}; last status: {}",
                    serde_json::to_string_pretty(&last.and_then(|p| p.status)).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the pod is gone.
    pub async fn wait_gone(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.pods().get_opt(name).await.expect("get").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} still exists"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `(reason, message)` of the pod's events.
    pub async fn events(&self, pod: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = api.list(&ListParams::default()).await.expect("events");
        let mut items: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .collect();
        items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    /// How many times the pod's events with `reason` happened (repeats are
    /// counted on one Event, as client-go's correlator does).
    pub async fn event_count(&self, pod: &str, reason: &str) -> i32 {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = api.list(&ListParams::default()).await.expect("events");
        list.items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.count.unwrap_or(1).max(1))
            .sum()
    }

    /// Polls until an event with `reason` whose message contains `needle` exists.
    pub async fn wait_event(&self, pod: &str, reason: &str, needle: &str) {
        poll(&format!("event {reason} {needle:?} on {pod}"), || async {
            self.events(pod)
                .await
                .iter()
                .any(|(r, m)| r == reason && m.contains(needle))
        })
        .await;
    }

    /// GETs a path from the kubelet's HTTP server: (status, body).
    pub async fn kubelet_get(&self, path: &str) -> (u16, String) {
        let port = self.kubelet.as_ref().expect("kubelet").port();
        http_get(&format!("127.0.0.1:{port}"), path).await
    }

    pub fn sim_config(&self, nodes: usize) -> KubeletConfig {
        let mut c = self.config();
        c.runtime = RuntimeKind::Sim;
        c.nodes = nodes;
        // A /14: room for 1,024 nodes' /24s.
        let k = SIM_CIDRS.fetch_add(1, Ordering::SeqCst) % 30;
        c.pod_cidr = format!("127.{}.0.0/14", 128 + 4 * k);
        c
    }
}

/// Polls `check` every 100 ms until true; panics after [`DEADLINE`].
pub async fn poll<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The named container's status.
pub fn cstatus<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let s = pod.status.as_ref()?;
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

pub fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

pub fn condition(pod: &Pod, ty: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.clone())
}

pub fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    cstatus(pod, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// The processes whose command line contains `needle` (for leak checks).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !zombie && cmd.contains(needle) && !cmd.contains("image shim") {
            pids.push(pid);
        }
    }
    pids
}

pub fn root_path(env: &Env) -> PathBuf {
    env.root.path().to_path_buf()
}

/// A fresh directory with mode 1777 (as `/tmp`).
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod shared dir");
    dir
}
