//! The kubelet itself: starts the HTTP server (HTTPS and the API's
//! authentication and authorization, see `auth`), registers the node(s),
//! keeps their heartbeats, watches their pods and runs one worker per pod.
//!
//! Pods reach the workers through one kube-runtime watcher. A process
//! kubelet (one node) watches `spec.nodeName=<node>`. A sim kubelet
//! hosting N nodes opens a single watch of all bound pods
//! (`spec.nodeName!=`) and dispatches by node name: one list and one
//! stream for the whole process instead of N, and the apiserver encodes
//! each event once for it, where N per-node watches would cost N lists at
//! start and N streams' bookkeeping.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ballast_controllers::events::Recorder;
use ballast_controllers::informer::Informer;
use ballast_controllers::nodeipam::Ipv4Cidr;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::auth::ApiAuth;
use crate::config::{KubeletConfig, RuntimeKind};
use crate::ipam::{Allocator, Cidr};
use crate::node::{self, NodeAgent};
use crate::runtime::process::ProcessRuntime;
use crate::runtime::sim::SimRuntime;
use crate::runtime::Runtime;
use crate::server::{self, LogIndex};
use crate::tls::{Peer, TlsListener};
use crate::worker::{NodeCtx, PodWorker};

/// Entry points; see [`Kubelet::start`] and [`Kubelet::run`].
#[derive(Debug)]
pub struct Kubelet;

/// A running kubelet: its port and node names; [`KubeletHandle::stop`]
/// shuts it down.
#[derive(Debug)]
pub struct KubeletHandle {
    port: u16,
    nodes: Vec<String>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    /// Starts a kubelet: HTTP server, node registration, heartbeats and the
    /// pod watch. Returns once every node is registered.
    pub async fn start(client: Client, config: KubeletConfig) -> anyhow::Result<KubeletHandle> {
        let config = Arc::new(config);
        let names = config.node_names();
        let mut cidrs = given_cidrs(&config, &names)?;
        if cidrs.iter().any(Option::is_some) {
            refuse_overlaps(&client, &names, &cidrs).await?;
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let index = Arc::new(LogIndex::default());
        let port = serve_api(
            &config,
            &names,
            client.clone(),
            index.clone(),
            &mut tasks,
            shutdown_rx.clone(),
        )
        .await?;

        node::ensure_lease_namespace(&client)
            .await
            .context("creating the kube-node-lease namespace")?;
        let mut agents: Vec<NodeAgent> = names
            .iter()
            .zip(&cidrs)
            .map(|(name, cidr)| NodeAgent {
                client: client.clone(),
                name: name.clone(),
                config: config.clone(),
                port,
                cidr: *cidr,
            })
            .collect();
        // Register in parallel, a few at a time.
        let registered: Vec<Result<(), kube::Error>> = futures::stream::iter(agents.clone())
            .map(|a| async move { a.register().await })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in registered {
            r.context("registering the node")?;
        }
        if cidrs.iter().any(Option::is_none) {
            let assigned = wait_for_pod_cidrs(&client, &names, config.pod_cidr_wait).await?;
            for ((name, cidr), agent) in names.iter().zip(cidrs.iter_mut()).zip(agents.iter_mut()) {
                *cidr = assigned.get(name).copied();
                agent.cidr = *cidr;
            }
        }
        if !config.cluster_dns.is_empty() {
            tracing::info!(cluster_dns = ?config.cluster_dns, cluster_domain = %config.cluster_domain, "pods resolve through the cluster DNS");
        }
        let mut ctxs: HashMap<String, Arc<NodeCtx>> = HashMap::new();
        // One Service informer for every node: the Service variables.
        let informer = Informer::<Service>::new(Api::all(client.clone()), Default::default());
        let services = informer.cache();
        tasks.spawn(informer.run());
        // One event correlator for every node this process runs.
        let mut shared_recorder: Option<Recorder> = None;
        for (name, node_cidr) in names.iter().zip(&cidrs) {
            let node_cidr =
                node_cidr.ok_or_else(|| anyhow::anyhow!("node {name} has no pod CIDR"))?;
            let runtime = match config.runtime {
                RuntimeKind::Process => Runtime::Process(
                    ProcessRuntime::new(
                        &config.root_dir,
                        &config.ballast_exe,
                        Allocator::new(node_cidr),
                    )
                    .with_context(|| format!("creating {}", config.root_dir.display()))?
                    .with_container_user(config.container_user)
                    .with_mount_namespaces(config.mount_namespaces)
                    .with_pod_namespaces(config.pod_namespaces)
                    .with_cgroups(crate::cgroups::Cgroups::detect(
                        config.cgroups,
                        name,
                        &config.root_dir,
                    ))
                    .with_log_rotation(config.container_log_max_size.map(|max_size| {
                        crate::logs::Rotation {
                            max_size,
                            max_files: config.container_log_max_files.max(2),
                        }
                    })),
                ),
                RuntimeKind::Sim => Runtime::Sim(SimRuntime::new(Allocator::new(node_cidr))),
            };
            let recorder = config.record_events.then(|| {
                shared_recorder
                    .get_or_insert_with(|| Recorder::new(client.clone(), "kubelet", None))
                    .for_host(name)
            });
            ctxs.insert(
                name.clone(),
                Arc::new(NodeCtx {
                    name: name.clone(),
                    client: client.clone(),
                    config: config.clone(),
                    runtime,
                    recorder,
                    host_ip: "127.0.0.1".into(),
                    services: services.clone(),
                }),
            );
        }
        if config.runtime == RuntimeKind::Process {
            let nodes = ctxs
                .values()
                .filter_map(|c| Some((c.recorder.clone()?, c.name.clone())))
                .collect();
            tasks.spawn(check_resolv_conf(config.dns(), nodes));
        }
        let n = agents.len() as u32;
        for (i, agent) in agents.into_iter().enumerate() {
            let offset = config
                .lease_renew_interval
                .min(config.node_status_update_frequency)
                * i as u32
                / n.max(1);
            tasks.spawn(agent.run(offset, shutdown_rx.clone()));
        }

        let selector = if names.len() == 1 {
            format!("spec.nodeName={}", names[0])
        } else {
            "spec.nodeName!=".to_string()
        };
        let dispatcher = tokio::spawn(dispatch(client, config, ctxs, index, selector, shutdown_rx));
        Ok(KubeletHandle {
            port,
            nodes: names,
            shutdown: shutdown_tx,
            tasks,
            dispatcher,
        })
    }

    /// Runs a kubelet until `shutdown` resolves, then stops it.
    pub async fn run(
        client: Client,
        config: KubeletConfig,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let handle = Kubelet::start(client, config).await?;
        shutdown.await;
        handle.stop().await;
        Ok(())
    }
}

/// Warns every 30 s, as kubelet does, when the node's resolv.conf has more
/// search domains than pods can be given (a `CheckLimitsForResolvConf`
/// event on each node).
async fn check_resolv_conf(dns: crate::dns::Configurer, nodes: Vec<(Recorder, String)>) {
    loop {
        if let Some(warning) = dns.check_resolv_conf() {
            tracing::warn!("{warning}");
            for (recorder, name) in &nodes {
                let node = k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(name.clone()),
                    uid: Some(name.clone()),
                    ..Default::default()
                };
                recorder
                    .publish_about(
                        node,
                        ballast_controllers::events::EventType::Warning,
                        "CheckLimitsForResolvConf",
                        &warning,
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// The pod CIDR of each node from `--pod-cidr` (sim nodes: one /24 each),
/// or all `None` when it is empty and the Nodes' `spec.podCIDR` is awaited.
fn given_cidrs(config: &KubeletConfig, names: &[String]) -> anyhow::Result<Vec<Option<Cidr>>> {
    if config.pod_cidr.is_empty() {
        return Ok(vec![None; names.len()]);
    }
    let cidr = Cidr::parse(&config.pod_cidr).map_err(anyhow::Error::msg)?;
    if names.len() == 1 {
        return Ok(vec![Some(cidr)]);
    }
    (0..names.len())
        .map(|i| cidr.subnet24(i).map(Some).map_err(anyhow::Error::msg))
        .collect()
}

fn as_ipv4(cidr: &Cidr) -> Ipv4Cidr {
    Ipv4Cidr {
        base: cidr.base,
        prefix: cidr.prefix,
    }
}

/// Refuses pod CIDRs that overlap another Node's: two nodes sharing a
/// range would hand out the same pod IPs.
async fn refuse_overlaps(
    client: &Client,
    names: &[String],
    cidrs: &[Option<Cidr>],
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .context("listing Nodes to check --pod-cidr")?;
    let ours: HashSet<&str> = names.iter().map(String::as_str).collect();
    for other in &list.items {
        let other_name = other.metadata.name.as_deref().unwrap_or_default();
        if ours.contains(other_name) {
            continue;
        }
        for theirs in other_pod_cidrs(other) {
            for (name, mine) in names.iter().zip(cidrs) {
                let Some(mine) = mine else { continue };
                if as_ipv4(mine).overlaps(&theirs) {
                    anyhow::bail!(
                        "pod CIDR {mine} of node {name} (--pod-cidr) overlaps node {other_name:?}'s \
                         pod CIDR {theirs}: every node needs a range of its own; pick another \
                         --pod-cidr, or leave it out to take one from the controller manager \
                         (--allocate-node-cidrs)"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A Node's `spec.podCIDRs` (or `podCIDR`), the unparseable skipped.
fn other_pod_cidrs(node: &Node) -> Vec<Ipv4Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut all = spec.pod_cidrs.clone().unwrap_or_default();
    all.extend(spec.pod_cidr.clone());
    all.iter().filter_map(|c| Ipv4Cidr::parse(c).ok()).collect()
}

/// Waits, at most `wait`, until each of `names` has a `spec.podCIDR` (set
/// by the controller manager's node IPAM), and returns them.
async fn wait_for_pod_cidrs(
    client: &Client,
    names: &[String],
    wait: Duration,
) -> anyhow::Result<HashMap<String, Cidr>> {
    tracing::info!(
        nodes = names.len(),
        "no --pod-cidr: waiting for the controller manager to set spec.podCIDR \
         (kube-controller-manager --allocate-node-cidrs)"
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + wait;
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let mut assigned: HashMap<String, Cidr> = HashMap::new();
    loop {
        let listed = if names.len() == 1 {
            nodes
                .get_opt(&names[0])
                .await
                .map(|n| n.into_iter().collect())
        } else {
            nodes.list(&ListParams::default()).await.map(|l| l.items)
        };
        match listed {
            Ok(listed) => {
                for node in listed {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    if !wanted.contains(name.as_str()) || assigned.contains_key(&name) {
                        continue;
                    }
                    let Some(given) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
                        continue;
                    };
                    let cidr = Cidr::parse(given).map_err(|e| {
                        anyhow::anyhow!("node {name}: spec.podCIDR {given:?} is unusable here: {e}")
                    })?;
                    tracing::info!(node = %name, pod_cidr = %cidr, "took the node's pod CIDR");
                    assigned.insert(name, cidr);
                }
                if assigned.len() == names.len() {
                    return Ok(assigned);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the Node's spec.podCIDR failed; retrying")
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !assigned.contains_key(*n))
                .take(5)
                .collect();
            anyhow::bail!(
                "node(s) {} got no spec.podCIDR within {wait:?}: run the controller manager \
                 with --allocate-node-cidrs, or give the kubelet --pod-cidr",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl KubeletHandle {
    /// The HTTP server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The nodes this kubelet hosts.
    pub fn node_names(&self) -> &[String] {
        &self.nodes
    }

    /// Stops the watch, the heartbeats and the server; stops the containers
    /// when `stop_containers_on_exit` is set (else leaves them running for
    /// the next kubelet to adopt).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.dispatcher).await;
        self.tasks.shutdown().await;
    }
}

impl Drop for KubeletHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds the kubelet API on 127.0.0.1 and serves it (HTTPS when the
/// config has a certificate) behind the authentication and authorization
/// filter; returns the bound port.
async fn serve_api(
    config: &KubeletConfig,
    names: &[String],
    client: Client,
    index: Arc<LogIndex>,
    tasks: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u16> {
    let security = &config.api;
    let tls = match &security.tls {
        Some((cert, key)) => Some(
            crate::tls::server_config(cert, key, security.client_ca.as_deref())
                .context("the kubelet API's TLS")?,
        ),
        None if security.client_ca.is_some() => {
            anyhow::bail!("--client-ca-file needs --tls-cert-file and --tls-private-key-file")
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .with_context(|| format!("binding the kubelet port 127.0.0.1:{}", config.port))?;
    let port = listener.local_addr()?.port();
    // A simulated kubelet hosting many nodes is authorized as its prefix.
    let node = match names {
        [one] => one.as_str(),
        _ => config.node_name.as_str(),
    };
    let auth = Arc::new(ApiAuth::new(security, node, client));
    let timeouts = crate::portforward::StreamingTimeouts {
        idle: config.streaming_connection_idle_timeout,
        ..Default::default()
    };
    let app = server::router(index)
        .layer(axum::Extension(timeouts))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::filter,
        ));
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match tls {
        Some(tls) => {
            let listener = TlsListener::new(
                listener,
                tls,
                crate::tls::MAX_HANDSHAKES,
                crate::tls::HANDSHAKE_TIMEOUT,
            )?;
            let app = app.into_make_service_with_connect_info::<Peer>();
            tasks.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            });
        }
        None => {
            let app = app.into_make_service_with_connect_info::<Peer>();
            tasks.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            });
        }
    }
    Ok(port)
}

struct WorkerEntry {
    tx: watch::Sender<Option<Arc<Pod>>>,
}

/// Watches the pods of this kubelet's nodes and feeds the workers.
async fn dispatch(
    client: Client,
    config: Arc<KubeletConfig>,
    ctxs: HashMap<String, Arc<NodeCtx>>,
    index: Arc<LogIndex>,
    selector: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let stream =
        watcher::watcher(api, watcher::Config::default().fields(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut workers: HashMap<String, WorkerEntry> = HashMap::new();
    let mut running: JoinSet<()> = JoinSet::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut seen: HashSet<String> = HashSet::new();
    let mut first_list = true;
    let worker_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error");
                        continue;
                    }
                };
                match ev {
                    Event::Init => seen.clear(),
                    Event::InitApply(pod) | Event::Apply(pod) => {
                        let pod = Arc::new(pod);
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        seen.insert(uid.clone());
                        if let Some(w) = workers.get(&uid) {
                            let _ = w.tx.send(Some(pod));
                            continue;
                        }
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        let Some(ctx) = ctxs.get(&node) else { continue };
                        let (tx, rx) = watch::channel(Some(pod.clone()));
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let spec = pod.spec.clone().unwrap_or_default();
                        let containers = spec.init_containers.iter().flatten().chain(spec.containers.iter()).map(|c| c.name.clone()).collect();
                        let dir = match &ctx.runtime {
                            Runtime::Process(p) => Some(p.pod_dir(&uid)),
                            Runtime::Sim(_) => None,
                        };
                        index.insert(&ns, &name, containers, dir);
                        let worker = PodWorker::new(ctx.clone(), pod, rx, worker_shutdown.clone());
                        let done = done_tx.clone();
                        let index = index.clone();
                        let worker_uid = uid.clone();
                        running.spawn(async move {
                            worker.run().await;
                            index.remove(&ns, &name);
                            let _ = done.send(worker_uid);
                        });
                        workers.insert(uid, WorkerEntry { tx });
                    }
                    Event::Delete(pod) => {
                        if let Some(uid) = pod.metadata.uid.as_ref() {
                            // Else the set grows by every pod ever seen.
                            seen.remove(uid);
                            if let Some(w) = workers.get(uid) {
                                let _ = w.tx.send(None);
                            }
                        }
                    }
                    Event::InitDone => {
                        for (uid, w) in &workers {
                            if !seen.contains(uid) {
                                let _ = w.tx.send(None);
                            }
                        }
                        if first_list {
                            first_list = false;
                            cleanup_orphans(&ctxs, &seen);
                        }
                    }
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
            r = shutdown.wait_for(|s| *s) => {
                let _ = r;
                break;
            }
        }
    }
    // The workers see the same shutdown signal; give them time to stop
    // their containers.
    let budget = config.shutdown_grace + Duration::from_secs(5);
    let _ = tokio::time::timeout(budget, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.shutdown().await;
    for ctx in ctxs.values() {
        if let Runtime::Process(p) = &ctx.runtime {
            if config.stop_containers_on_exit {
                p.stop_sandboxes();
            }
            p.release_cgroups();
        }
    }
}

/// Kills and removes sandboxes of pods that no longer exist (deleted while
/// the kubelet was down).
fn cleanup_orphans(ctxs: &HashMap<String, Arc<NodeCtx>>, seen: &HashSet<String>) {
    for ctx in ctxs.values() {
        if let Runtime::Process(p) = &ctx.runtime {
            for (uid, dir) in p.sandboxes() {
                if !seen.contains(&uid) {
                    tracing::info!(node = %ctx.name, %uid, "removing the sandbox of a deleted pod");
                    p.destroy_orphan(&dir);
                }
            }
        }
    }
}
