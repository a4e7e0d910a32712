//! # ballast-controllers
//!
//! The controller manager's controllers and the scheduler: clients of the
//! apiserver built on kube-rs, each needing nothing but a `kube::Client`.
//!
//! # Layout
//!
//! - `informer` — shared list+watch caches with change handlers (one watch
//!   per resource for all controllers; see its module doc for why).
//! - `queue` — deduplicating work queues with per-key back-off.
//! - `replicaset`, `deployment`, `daemonset`, `statefulset`, `job`,
//!   `cronjob`, `endpoints`, `endpointslice`, `node_lifecycle`, `gc`,
//!   `podgc`, `serviceaccount`, `namespace`, `disruption`, `nodeipam` —
//!   the controllers, one module each.
//! - [`ControllerManager`] — runs the enabled controllers over shared
//!   informers until shut down.
//! - `events` — [`events::Recorder`]: core/v1 Events for `kubectl describe`,
//!   shared by every component (the kubelet uses it too).
//! - `scheduler` — binds pending pods to nodes.
//!
//! # Running the controllers
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), ballast_controllers::Error> {
//! use ballast_controllers::{Config, ControllerManager};
//! let config = Config::default(); // every controller, Kubernetes' timings
//! ControllerManager::run(client, config, std::future::pending()).await
//! # }
//! ```

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod node_lifecycle;
pub mod nodeipam;
pub mod podgc;
pub mod queue;
pub mod replicaset;
pub mod rootcacert;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;
pub mod util;

use std::collections::BTreeSet;
use std::future::Future;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

pub use job::JobConfig;
pub use node_lifecycle::NodeLifecycleConfig;
pub use nodeipam::NodeIpamConfig;
pub use podgc::PodGcConfig;

/// Errors of a controller's sync; the key is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// Anything else worth a retry.
    #[error("{0}")]
    Other(String),
}

/// The controllers the manager can run, by their Kubernetes names.
pub const CONTROLLERS: &[&str] = &[
    "deployment",
    "replicaset",
    "job",
    "cronjob",
    "daemonset",
    "statefulset",
    "endpoints",
    "endpointslice",
    "nodelifecycle",
    "garbagecollector",
    "podgc",
    "serviceaccount",
    "namespace",
    "disruption",
    "nodeipam",
    "root-ca-cert-publisher",
];

/// Namespaces emptied in parallel (kube's `--concurrent-namespace-syncs`).
const NAMESPACE_SYNCS: usize = 10;

/// Services whose EndpointSlices are synced in parallel (kube's
/// `--concurrent-service-endpoint-syncs`).
const ENDPOINTSLICE_SYNCS: usize = 5;

/// CronJobs synced in parallel (kube's `--concurrent-cron-job-syncs`).
const CRONJOB_SYNCS: usize = 5;

/// Budgets synced in parallel (kube's disruption controller runs one worker).
const DISRUPTION_SYNCS: usize = 1;

/// DaemonSets synced in parallel (kube's `--concurrent-daemonset-syncs`).
const DAEMONSET_SYNCS: usize = 2;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Enabled controllers (names from [`CONTROLLERS`]).
    pub controllers: BTreeSet<String>,
    /// Only objects of this namespace (nodes and node leases are always
    /// watched whole); `None`, as kube-controller-manager, for all.
    pub namespace: Option<String>,
    /// Node monitoring and eviction timings.
    pub node_lifecycle: NodeLifecycleConfig,
    /// The pod garbage collector's threshold and timings.
    pub podgc: PodGcConfig,
    /// The Job controller's back-off of failed pods.
    pub job: JobConfig,
    /// Workers per controller (`--concurrent-*-syncs`).
    pub concurrent_deployment_syncs: usize,
    pub concurrent_replicaset_syncs: usize,
    pub concurrent_job_syncs: usize,
    pub concurrent_statefulset_syncs: usize,
    pub concurrent_endpoint_syncs: usize,
    pub concurrent_gc_syncs: usize,
    /// Node pod CIDRs (`--allocate-node-cidrs`); `None`, kube's default,
    /// leaves `spec.podCIDR` to whoever registers the Node.
    pub node_ipam: Option<NodeIpamConfig>,
}

impl Default for Config {
    /// Every controller, Kubernetes' default timings and worker counts.
    fn default() -> Self {
        Config {
            controllers: CONTROLLERS.iter().map(|c| c.to_string()).collect(),
            namespace: None,
            node_lifecycle: NodeLifecycleConfig::default(),
            podgc: PodGcConfig::default(),
            job: JobConfig::default(),
            concurrent_deployment_syncs: 5,
            concurrent_replicaset_syncs: 5,
            concurrent_job_syncs: 5,
            concurrent_statefulset_syncs: 5,
            concurrent_endpoint_syncs: 5,
            concurrent_gc_syncs: 20,
            node_ipam: None,
        }
    }
}

impl Config {
    /// The set named by kube-controller-manager's `--controllers` syntax:
    /// `*` for all, `name` to add one, `-name` to remove one.
    pub fn parse_controllers(spec: &str) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                set.extend(CONTROLLERS.iter().map(|c| c.to_string()));
                continue;
            }
            let (remove, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item),
            };
            if !CONTROLLERS.contains(&name) {
                return Err(format!(
                    "unknown controller {name:?}; known: {}",
                    CONTROLLERS.join(", ")
                ));
            }
            if remove {
                set.remove(name);
            } else {
                set.insert(name.to_string());
            }
        }
        Ok(set)
    }

    fn on(&self, name: &str) -> bool {
        self.controllers.contains(name)
    }
}

/// Runs the controllers of a [`Config`] against one apiserver.
#[derive(Debug)]
pub struct ControllerManager;

fn informer<K>(client: &Client, namespace: Option<&str>) -> informer::Informer<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    informer::Informer::new(api, watcher::Config::default())
}

impl ControllerManager {
    /// Starts the enabled controllers and their shared informers, and runs
    /// them until `shutdown` completes.
    pub async fn run(
        client: Client,
        config: Config,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let ns = config.namespace.as_deref();
        let mut pods = informer::<Pod>(&client, ns);
        let mut replicasets = informer::<ReplicaSet>(&client, ns);
        let mut deployments = informer::<Deployment>(&client, ns);
        let mut jobs = informer::<Job>(&client, ns);
        let mut cron_jobs = informer::<k8s_openapi::api::batch::v1::CronJob>(&client, ns);
        let mut statefulsets = informer::<k8s_openapi::api::apps::v1::StatefulSet>(&client, ns);
        let mut daemonsets = informer::<k8s_openapi::api::apps::v1::DaemonSet>(&client, ns);
        let mut controller_revisions =
            informer::<k8s_openapi::api::apps::v1::ControllerRevision>(&client, ns);
        let (mut need_daemonsets, mut need_revisions) = (false, false);
        let mut services = informer::<Service>(&client, ns);
        let mut endpoints = informer::<Endpoints>(&client, ns);
        let mut endpoint_slices =
            informer::<k8s_openapi::api::discovery::v1::EndpointSlice>(&client, ns);
        let mut need_slices = false;
        let mut leases = informer::<Lease>(&client, Some(node_lifecycle::LEASE_NAMESPACE));
        let mut config_maps = informer::<k8s_openapi::api::core::v1::ConfigMap>(&client, ns);
        let mut nodes =
            informer::Informer::<Node>::new(Api::all(client.clone()), watcher::Config::default());
        let mut tasks = tokio::task::JoinSet::new();
        let (mut need_pods, mut need_rs, mut need_deploy) = (false, false, false);
        let mut need_jobs = false;
        let mut need_cron_jobs = false;
        let mut need_statefulsets = false;
        let (mut need_svc, mut need_ep, mut need_nodes, mut need_leases) =
            (false, false, false, false);
        if config.on("replicaset") {
            let c =
                replicaset::ReplicaSetController::new(client.clone(), &mut pods, &mut replicasets);
            tasks.spawn(c.run(config.concurrent_replicaset_syncs));
            (need_pods, need_rs) = (true, true);
        }
        if config.on("deployment") {
            let c = deployment::DeploymentController::new(
                client.clone(),
                &mut deployments,
                &mut replicasets,
                &mut pods,
            );
            tasks.spawn(c.run(config.concurrent_deployment_syncs));
            (need_pods, need_rs, need_deploy) = (true, true, true);
        }
        if config.on("job") {
            let c =
                job::JobController::new(client.clone(), &mut pods, &mut jobs, config.job.clone());
            tasks.spawn(c.run(config.concurrent_job_syncs));
            (need_pods, need_jobs) = (true, true);
        }
        if config.on("cronjob") {
            let c = cronjob::CronJobController::new(
                client.clone(),
                &mut cron_jobs,
                &mut jobs,
                std::sync::Arc::new(cronjob::SystemClock),
            );
            tasks.spawn(c.run(CRONJOB_SYNCS));
            (need_jobs, need_cron_jobs) = (true, true);
        }
        if config.on("statefulset") {
            let c = statefulset::StatefulSetController::new(
                client.clone(),
                &mut pods,
                &mut statefulsets,
                &controller_revisions,
            );
            tasks.spawn(c.run(config.concurrent_statefulset_syncs));
            (need_pods, need_statefulsets, need_revisions) = (true, true, true);
        }
        if config.on("daemonset") {
            let c = daemonset::DaemonSetController::new(
                client.clone(),
                &mut daemonsets,
                &mut pods,
                &mut nodes,
                &mut controller_revisions,
            );
            tasks.spawn(c.run(DAEMONSET_SYNCS));
            (need_pods, need_nodes) = (true, true);
            (need_daemonsets, need_revisions) = (true, true);
        }
        if config.on("endpoints") {
            let c = endpoints::EndpointsController::new(
                client.clone(),
                &mut services,
                &mut pods,
                &mut endpoints,
            );
            tasks.spawn(c.run(config.concurrent_endpoint_syncs));
            (need_pods, need_svc, need_ep) = (true, true, true);
        }
        if config.on("endpointslice") {
            let c = endpointslice::EndpointSliceController::new(
                client.clone(),
                &mut services,
                &mut pods,
                &mut endpoint_slices,
            );
            tasks.spawn(c.run(ENDPOINTSLICE_SYNCS));
            (need_pods, need_svc, need_slices) = (true, true, true);
        }
        if config.on("nodelifecycle") {
            let c = node_lifecycle::NodeLifecycleController::new(
                client.clone(),
                &mut nodes,
                &mut leases,
                &mut pods,
                config.node_lifecycle.clone(),
            );
            tasks.spawn(c.run());
            (need_pods, need_nodes, need_leases) = (true, true, true);
        }
        if let (true, Some(ipam)) = (config.on("nodeipam"), &config.node_ipam) {
            let c = nodeipam::NodeIpamController::new(client.clone(), &mut nodes, ipam)?;
            tasks.spawn(c.run());
            need_nodes = true;
        }
        if config.on("namespace") {
            let mut namespaces = informer::Informer::<Namespace>::new(
                Api::all(client.clone()),
                watcher::Config::default(),
            );
            let c = namespace::NamespaceController::new(client.clone(), &mut namespaces);
            tasks.spawn(c.run(NAMESPACE_SYNCS));
            tasks.spawn(namespaces.run());
        }
        if config.on("podgc") {
            let c =
                podgc::PodGcController::new(client.clone(), &pods, &nodes, config.podgc.clone());
            tasks.spawn(c.run());
            (need_pods, need_nodes) = (true, true);
        }
        if config.on("garbagecollector") {
            let gc = gc::GarbageCollector::new(client.clone());
            gc.watch(&mut pods);
            gc.watch(&mut replicasets);
            gc.watch(&mut deployments);
            gc.watch(&mut jobs);
            gc.watch(&mut cron_jobs);
            need_cron_jobs = true;
            gc.watch(&mut statefulsets);
            need_statefulsets = true;
            gc.watch(&mut daemonsets);
            gc.watch(&mut controller_revisions);
            (need_daemonsets, need_revisions) = (true, true);
            gc.watch(&mut services);
            gc.watch(&mut endpoints);
            gc.watch(&mut endpoint_slices);
            need_slices = true;
            gc.watch(&mut leases);
            gc.watch(&mut nodes);
            // Only the collector watches ConfigMaps (owned by custom
            // resources, for one).
            gc.watch(&mut config_maps);
            tasks.spawn(config_maps.run());
            tasks.spawn(gc.run(config.concurrent_gc_syncs));
            (need_pods, need_jobs) = (true, true);
            (
                need_rs,
                need_deploy,
                need_svc,
                need_ep,
                need_nodes,
                need_leases,
            ) = (true, true, true, true, true, true);
        }
        if config.on("disruption") {
            let mut budgets =
                informer::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&client, ns);
            let c = disruption::DisruptionController::new(
                client.clone(),
                &mut budgets,
                &mut pods,
                &replicasets,
                &deployments,
                &statefulsets,
            );
            tasks.spawn(c.run(DISRUPTION_SYNCS));
            tasks.spawn(budgets.run());
            (need_pods, need_rs, need_deploy, need_statefulsets) = (true, true, true, true);
        }
        if config.on("serviceaccount") {
            let c = serviceaccount::ServiceAccountController::new(client.clone(), ns);
            tasks.spawn(c.run(1));
        }
        if need_pods {
            tasks.spawn(pods.run());
        }
        if need_rs {
            tasks.spawn(replicasets.run());
        }
        if need_deploy {
            tasks.spawn(deployments.run());
        }
        if need_jobs {
            tasks.spawn(jobs.run());
        }
        if need_cron_jobs {
            tasks.spawn(cron_jobs.run());
        }
        if need_statefulsets {
            tasks.spawn(statefulsets.run());
        }
        if need_daemonsets {
            tasks.spawn(daemonsets.run());
        }
        if need_revisions {
            tasks.spawn(controller_revisions.run());
        }
        if need_svc {
            tasks.spawn(services.run());
        }
        if need_ep {
            tasks.spawn(endpoints.run());
        }
        if need_slices {
            tasks.spawn(endpoint_slices.run());
        }
        if need_nodes {
            tasks.spawn(nodes.run());
        }
        if need_leases {
            tasks.spawn(leases.run());
        }
        tracing::info!(controllers = ?config.controllers, "controller manager running");
        shutdown.await;
        tasks.shutdown().await;
        Ok(())
    }
}
