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
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
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
        let cidr = Cidr::parse(&config.pod_cidr).map_err(anyhow::Error::msg)?;
        let names = config.node_names();
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
        let mut ctxs: HashMap<String, Arc<NodeCtx>> = HashMap::new();
        // One event correlator for every node this process runs.
        let mut shared_recorder: Option<Recorder> = None;
        let mut agents = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let node_cidr = if names.len() > 1 {
                cidr.subnet24(i).map_err(anyhow::Error::msg)?
            } else {
                cidr
            };
            let runtime = match config.runtime {
                RuntimeKind::Process => Runtime::Process(
                    ProcessRuntime::new(
                        &config.root_dir,
                        &config.ballast_exe,
                        Allocator::new(node_cidr),
                    )
                    .with_context(|| format!("creating {}", config.root_dir.display()))?
                    .with_container_user(config.container_user)
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
                }),
            );
            agents.push(NodeAgent {
                client: client.clone(),
                name: name.clone(),
                config: config.clone(),
                port,
                cidr: node_cidr,
            });
        }
        // Register in parallel, a few at a time.
        let registered: Vec<Result<(), kube::Error>> = futures::stream::iter(agents.clone())
            .map(|a| async move { a.register().await })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in registered {
            r.context("registering the node")?;
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
    let app = server::router(index).layer(axum::middleware::from_fn_with_state(
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
