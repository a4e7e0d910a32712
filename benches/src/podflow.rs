//! `ballast bench podflow`: the whole control plane under one Deployment.
//!
//! Creates a namespace, watches its pods, creates one Deployment of
//! `replicas` pods, and waits until every pod is Running and Ready (or the
//! deadline passes). Every time is taken from this process's watch — when
//! it first sees a pod, sees it bound to a node, and sees it Ready — so the
//! figures are what a client of the apiserver observes:
//! - `all_ready_s`: Deployment created → the last pod Ready;
//! - `startup_*_ms`: per pod, first seen → seen Running and Ready
//!   (Kubernetes' pod startup latency SLO, measured the same way);
//! - `scheduling_*_ms`: per pod, first seen → seen bound to a node;
//! - `scheduled_per_s`: pods bound per second, from the first pod seen to
//!   the last pod seen bound (bounded by how fast the ReplicaSet creates
//!   them; the scheduler's own rate is measured by
//!   `controllers/tests/controllers/scheduler.rs::throughput_3000_pods_over_100_nodes`).
//!
//! The namespace is deleted at the end unless `keep` is set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

use crate::report::Latencies;

/// What `ballast bench podflow` runs.
#[derive(Debug, Clone)]
pub struct PodflowConfig {
    /// Pods in the Deployment.
    pub replicas: i32,
    /// Give up waiting for Ready pods after this long.
    pub timeout: Duration,
    /// The image of the pods' one container.
    pub image: String,
    /// Leave the namespace (and its pods) in place at the end.
    pub keep: bool,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}

impl Default for PodflowConfig {
    fn default() -> Self {
        PodflowConfig {
            replicas: 3_000,
            timeout: Duration::from_secs(300),
            image: "busybox".into(),
            keep: false,
            progress: true,
        }
    }
}

/// When this process's watch saw one pod reach each step.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    bound: Option<Instant>,
    ready: Option<Instant>,
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn deployment(name: &str, config: &PodflowConfig) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), name.to_string())].into();
    let requests = [
        ("cpu".to_string(), Quantity("10m".into())),
        ("memory".to_string(), Quantity("16Mi".into())),
    ];
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(config.replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some(config.image.clone()),
                        command: Some(vec!["sleep".into(), "3600".into()]),
                        resources: Some(ResourceRequirements {
                            requests: Some(requests.into()),
                            ..ResourceRequirements::default()
                        }),
                        ..Container::default()
                    }],
                    termination_grace_period_seconds: Some(0),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Runs the pod flow once against the apiserver `client` reaches; the
/// result is one JSON object.
pub async fn run(client: kube::Client, config: PodflowConfig) -> anyhow::Result<Value> {
    if config.replicas < 1 {
        bail!("--replicas must be at least 1");
    }
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .len();
    if nodes == 0 {
        bail!("the cluster has no nodes: start kubelets first (e.g. `ballast up --runtime sim --nodes 100`)");
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let namespace = format!("podflow-{stamp}");
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {namespace}"))?;
    let result = measure(&client, &namespace, nodes, &config).await;
    if !config.keep {
        let _ = namespaces
            .delete(&namespace, &DeleteParams::background())
            .await;
    }
    result
}

async fn measure(
    client: &kube::Client,
    namespace: &str,
    nodes: usize,
    config: &PodflowConfig,
) -> anyhow::Result<Value> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    // The namespace is new, so the initial list is empty: wait for it to
    // finish before the clock starts.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Ok(watcher::Event::InitDone))) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("watching pods: {e}"),
            Ok(None) | Err(_) => bail!("the pod watch did not start within 30s"),
        }
    }

    let started = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment("podflow", config))
        .await
        .context("creating the Deployment")?;

    let want = config.replicas as usize;
    let deadline = started + config.timeout;
    let mut seen: HashMap<String, Seen> = HashMap::with_capacity(want);
    let mut ready = 0usize;
    let mut bound = 0usize;
    let mut last_progress = Instant::now();
    while ready < want {
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {:?}: {} pods seen, {bound} bound, {ready} ready of {want}",
                config.timeout,
                seen.len()
            );
        }
        let step = deadline
            .saturating_duration_since(now)
            .min(Duration::from_secs(1));
        let event = match tokio::time::timeout(step, events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "pod watch error; the watcher retries");
                None
            }
            Ok(None) => bail!("the pod watch ended"),
            Err(_) => None,
        };
        if let Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event {
            let now = Instant::now();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let entry = seen.entry(name).or_insert(Seen {
                first: now,
                bound: None,
                ready: None,
            });
            let has_node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if has_node && entry.bound.is_none() {
                entry.bound = Some(now);
                bound += 1;
            }
            if is_ready(&pod) && entry.ready.is_none() {
                entry.ready = Some(now);
                ready += 1;
            }
        }
        if config.progress && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "podflow {:>5.1}s: {} pods, {bound} bound, {ready} ready of {want}",
                started.elapsed().as_secs_f64(),
                seen.len()
            );
        }
    }
    let all_ready = started.elapsed();

    let mut startup = Latencies::new();
    let mut scheduling = Latencies::new();
    for s in seen.values() {
        if let Some(r) = s.ready {
            startup.record(r - s.first);
        }
        if let Some(b) = s.bound {
            scheduling.record(b - s.first);
        }
    }
    let first_seen = seen.values().map(|s| s.first).min().unwrap_or(started);
    let last_bound = seen
        .values()
        .filter_map(|s| s.bound)
        .max()
        .unwrap_or(started);
    let bind_window = (last_bound - first_seen).as_secs_f64().max(1e-3);
    let mut out = serde_json::Map::new();
    out.insert("workload".into(), json!("podflow"));
    out.insert("replicas".into(), json!(want));
    out.insert("nodes".into(), json!(nodes));
    out.insert(
        "all_ready_s".into(),
        json!((all_ready.as_secs_f64() * 1000.0).round() / 1000.0),
    );
    startup.write_percentiles("startup_", &mut out);
    scheduling.write_percentiles("scheduling_", &mut out);
    out.insert(
        "scheduled_per_s".into(),
        json!((bound as f64 / bind_window).round()),
    );
    Ok(Value::Object(out))
}
