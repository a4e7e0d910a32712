//! The Node object and the node Lease: registration, the periodic status
//! (Ready with heartbeats, no memory/disk/PID pressure) and Lease renewal in
//! `kube-node-lease`, as kubelet keeps them.
//!
//! Status is computed every `node_status_update_frequency` and posted when
//! the apiserver's copy is not Ready=True (e.g. after the node lifecycle
//! controller marked it Unknown) or when `node_status_report_frequency`
//! passed since the last post. The Lease is renewed every
//! `lease_renew_interval`. With many (sim) nodes, each node's loops start
//! at its own offset inside the interval, so writes are spread evenly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, GetParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{KubeletConfig, RuntimeKind};
use crate::ipam::Cidr;

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// One node's registration and heartbeats.
#[derive(Clone)]
pub struct NodeAgent {
    pub client: Client,
    pub name: String,
    pub config: Arc<KubeletConfig>,
    pub port: u16,
    /// The node's pod CIDR; `None` until the controller manager set it
    /// (the Node is then registered without one).
    pub cidr: Option<Cidr>,
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates the `kube-node-lease` namespace if it is missing.
pub async fn ensure_lease_namespace(client: &Client) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 409) => Ok(()),
        // A kubelet may not create namespaces under Node,RBAC authorization;
        // the apiserver creates `kube-node-lease` itself, and a Lease write
        // into a missing namespace fails with a clear error anyway.
        Err(e) if is_code(&e, 403) => Ok(()),
        Err(e) => Err(e),
    }
}

impl NodeAgent {
    fn labels(&self) -> BTreeMap<String, String> {
        let runtime = match self.config.runtime {
            RuntimeKind::Process => "process",
            RuntimeKind::Sim => "sim",
        };
        [
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", std::env::consts::ARCH),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", std::env::consts::ARCH),
            ("ballast.dev/runtime", runtime),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The node's status; `since` is when Ready last changed.
    pub fn status(&self, since: Timestamp) -> NodeStatus {
        let now = Time(Timestamp::now());
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", self.config.cpu.clone()),
            ("memory", self.config.memory.clone()),
            ("pods", self.config.max_pods.to_string()),
            ("ephemeral-storage", "100Gi".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        let cond = |ty: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: ty.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(Time(since)),
        };
        NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "127.0.0.1".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: self.name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.port),
                }),
            }),
            conditions: Some(vec![
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
            ]),
            node_info: Some(NodeSystemInfo {
                machine_id: self.name.clone(),
                system_uuid: self.name.clone(),
                boot_id: self.name.clone(),
                kernel_version: kernel_version(),
                os_image: "Ballast".into(),
                container_runtime_version: match self.config.runtime {
                    RuntimeKind::Process => "ballast-process://0.1.0".into(),
                    RuntimeKind::Sim => "ballast-sim://0.1.0".into(),
                },
                kubelet_version: "v1.33.0-ballast".into(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                architecture: match std::env::consts::ARCH {
                    "x86_64" => "amd64".into(),
                    "aarch64" => "arm64".into(),
                    other => other.into(),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the Node (or updates the one left by a previous run).
    pub async fn register(&self) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: self.cidr.map(|c| c.to_string()),
                pod_cidrs: self.cidr.map(|c| vec![c.to_string()]),
                ..Default::default()
            }),
            status: Some(self.status(Timestamp::now())),
        };
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(e) if is_code(&e, 409) => {
                let existing = api.get(&self.name).await?;
                let mut patch = json!({ "metadata": { "labels": self.labels() } });
                let unset = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_ref())
                    .is_none();
                if let (true, Some(cidr)) = (unset, self.cidr) {
                    patch["spec"] =
                        json!({ "podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()] });
                }
                api.patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        self.post_status(Timestamp::now()).await
    }

    async fn post_status(&self, since: Timestamp) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let status = self.status(since);
        api.patch_status(
            &self.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map(|_| ())
    }

    /// Keeps the status and the Lease current until `shutdown`; starts
    /// after `offset` (spreading many nodes over the interval).
    pub async fn run(self, offset: Duration, mut shutdown: watch::Receiver<bool>) {
        let stop = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = stop => {}
            () = async { tokio::join!(self.status_loop(offset), self.lease_loop(offset)); } => {}
        }
    }

    async fn status_loop(&self, offset: Duration) {
        tokio::time::sleep(offset).await;
        let api: Api<Node> = Api::all(self.client.clone());
        let every = self.config.node_status_update_frequency;
        let mut last_post = Instant::now();
        let mut since = Timestamp::now();
        loop {
            tokio::time::sleep(every).await;
            let current = api.get_with(&self.name, &GetParams::any()).await;
            let ready = match &current {
                Ok(node) => node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True"),
                Err(e) if is_code(e, 404) => {
                    // Someone deleted our Node: register again.
                    if let Err(e) = self.register().await {
                        tracing::warn!(node = %self.name, error = %e, "re-registering the node failed");
                    }
                    last_post = Instant::now();
                    continue;
                }
                Err(_) => true,
            };
            if !ready {
                since = Timestamp::now();
            }
            if !ready || last_post.elapsed() >= self.config.node_status_report_frequency {
                match self.post_status(since).await {
                    Ok(()) => last_post = Instant::now(),
                    Err(e) => {
                        tracing::warn!(node = %self.name, error = %e, "posting node status failed")
                    }
                }
            }
        }
    }

    async fn lease_loop(&self, offset: Duration) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let mut lease: Option<Lease> = None;
        // Each node starts at its own offset, so many nodes do not renew
        // (or create) their Leases all at once.
        tokio::time::sleep(offset).await;
        loop {
            if let Err(e) = self.renew(&api, &mut lease).await {
                tracing::warn!(node = %self.name, error = %e, "renewing the node lease failed");
                lease = None;
            }
            tokio::time::sleep(self.config.lease_renew_interval).await;
        }
    }

    async fn renew(&self, api: &Api<Lease>, lease: &mut Option<Lease>) -> Result<(), kube::Error> {
        let now = MicroTime(Timestamp::now());
        if let Some(l) = lease.as_mut() {
            if let Some(spec) = l.spec.as_mut() {
                spec.renew_time = Some(now.clone());
            }
            match api.replace(&self.name, &PostParams::default(), l).await {
                Ok(updated) => {
                    *lease = Some(updated);
                    return Ok(());
                }
                Err(e) if is_code(&e, 409) || is_code(&e, 404) => *lease = None,
                Err(e) => return Err(e),
            }
        }
        match api.get_opt(&self.name).await? {
            Some(mut existing) => {
                let spec = existing.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.name.clone());
                spec.lease_duration_seconds = Some(self.config.lease_duration_seconds);
                spec.renew_time = Some(now);
                *lease = Some(
                    api.replace(&self.name, &PostParams::default(), &existing)
                        .await?,
                );
            }
            None => {
                let nodes: Api<Node> = Api::all(self.client.clone());
                let uid = nodes
                    .get_opt(&self.name)
                    .await?
                    .and_then(|n| n.metadata.uid);
                let new = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(LEASE_NAMESPACE.into()),
                        owner_references: uid.map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".into(),
                                kind: "Node".into(),
                                name: self.name.clone(),
                                uid,
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.name.clone()),
                        lease_duration_seconds: Some(self.config.lease_duration_seconds),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                *lease = Some(api.create(&PostParams::default(), &new).await?);
            }
        }
        Ok(())
    }
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
