//! The EndpointSlice controller: for each Service with a selector, the
//! discovery.k8s.io/v1 EndpointSlices listing the selected pods, as
//! kube-controller-manager's endpointslice controller keeps them.
//!
//! - Labelled `kubernetes.io/service-name: <svc>` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//!   (plus the Service's own labels, and `service.kubernetes.io/headless`
//!   for a headless one), owned by the Service (a controller
//!   ownerReference, so the garbage collector removes them with it).
//! - One endpoint per pod with an IP that is not Succeeded or Failed:
//!   `conditions.ready` (Ready and not terminating, or
//!   `publishNotReadyAddresses`), `serving` (Ready, terminating or not),
//!   `terminating` (being deleted); `nodeName`, `targetRef` to the pod,
//!   `hostname` when the pod's subdomain is the Service's name.
//! - Pods whose resolved ports (a named `targetPort` is looked up in each
//!   pod) are the same share slices; at most [`MAX_ENDPOINTS_PER_SLICE`]
//!   endpoints per slice, sorted by address, so a pod change rewrites
//!   one slice in the common case.
//! - Slices are written only when they differ; the ones no longer needed
//!   are deleted. Slices without the managed-by label (the user's, the
//!   apiserver's `kubernetes` slice) are never touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use crate::endpoints::{queue_service_changes, service_selector, target_port};
use crate::informer::{Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{deleting, is_not_found, pod_ready};
use crate::Error;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The EndpointSlice controller; see the module doc.
#[derive(Clone)]
pub struct EndpointSliceController {
    client: Client,
    services: Cache<Service>,
    pods: Cache<Pod>,
    slices: Cache<EndpointSlice>,
    queue: Queue<Key>,
}

fn managed_service(slice: &EndpointSlice) -> Option<&str> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    labels.get(SERVICE_NAME_LABEL).map(String::as_str)
}

impl EndpointSliceController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        services: &mut Informer<Service>,
        pods: &mut Informer<Pod>,
        slices: &mut Informer<EndpointSlice>,
    ) -> EndpointSliceController {
        let c = EndpointSliceController {
            client,
            services: services.cache(),
            pods: pods.cache(),
            slices: slices.cache(),
            queue: Queue::new(),
        };
        queue_service_changes(services, pods, &c.queue);
        let q = c.queue.clone();
        slices.on_change(move |old, new| {
            if let Some(s) = new.or(old) {
                if let Some(svc) = managed_service(s) {
                    q.add((s.namespace().unwrap_or_default(), svc.to_string()));
                }
            }
        });
        c
    }

    /// Processes queued Services with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.services.wait_ready().await;
        self.pods.wait_ready().await;
        self.slices.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.0);
        let mut existing: Vec<EndpointSlice> = self
            .slices
            .namespace_filter(&key.0, |s| managed_service(s) == Some(key.1.as_str()))
            .into_iter()
            .map(|s| (*s).clone())
            .collect();
        existing.sort_by_key(|s| s.name_any());
        let svc = self.services.get(&key.0, &key.1);
        let desired = match svc.as_deref() {
            Some(svc) if !deleting(svc) => match service_selector(svc) {
                Some(sel) => {
                    let pods = self
                        .pods
                        .namespace_filter(&key.0, |p| sel.matches(p.labels()));
                    slices_for(svc, pods.iter().map(|p| p.as_ref()))
                }
                None => Vec::new(),
            },
            // Gone (or going): so are its slices (the garbage collector
            // would remove them too, through the ownerReference).
            _ => Vec::new(),
        };
        let mut unused = existing;
        let mut requeue = None;
        for want in desired {
            // Reuse a slice with the same ports first, then any.
            let pos = unused
                .iter()
                .position(|s| s.ports == want.ports)
                .or(if unused.is_empty() { None } else { Some(0) });
            match pos.map(|i| unused.remove(i)) {
                Some(have) => {
                    if have.endpoints == want.endpoints
                        && have.ports == want.ports
                        && have.metadata.labels == want.metadata.labels
                        && have.metadata.owner_references == want.metadata.owner_references
                    {
                        continue;
                    }
                    let mut updated = have.clone();
                    updated.endpoints = want.endpoints;
                    updated.ports = want.ports;
                    updated.metadata.labels = want.metadata.labels;
                    updated.metadata.owner_references = want.metadata.owner_references;
                    let name = have.name_any();
                    match api.replace(&name, &PostParams::default(), &updated).await {
                        Ok(written) => self.slices.write_through(written),
                        Err(e) if is_not_found(&e) => {
                            requeue = Some(std::time::Duration::from_millis(200))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => match api.create(&PostParams::default(), &want).await {
                    Ok(written) => self.slices.write_through(written),
                    Err(e) => return Err(e.into()),
                },
            }
        }
        for gone in unused {
            match api.delete(&gone.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(requeue)
    }
}

type PortsKey = Vec<(String, i32, String, Option<String>)>;

/// The slices `svc` should have over the selected `pods` (names left to
/// the apiserver: `generateName: <svc>-`).
pub fn slices_for<'a>(svc: &Service, pods: impl Iterator<Item = &'a Pod>) -> Vec<EndpointSlice> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let svc_name = svc.name_any();
    let mut groups: BTreeMap<PortsKey, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let mut ports: PortsKey = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                target_port(p, pod).map(|n| {
                    (
                        p.name.clone().unwrap_or_default(),
                        n,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
            })
            .collect();
        if ports.is_empty() && spec.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        ports.sort();
        let terminating = deleting(pod);
        let serving = pod_ready(pod);
        let pod_spec = pod.spec.as_ref();
        let hostname = pod_spec
            .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
            .and_then(|s| s.hostname.clone());
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(publish_not_ready || serving),
                terminating: Some(terminating),
            }),
            hostname,
            node_name: pod_spec.and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        });
    }
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), svc_name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if spec.cluster_ip.as_deref() == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    } else {
        labels.remove("service.kubernetes.io/headless");
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc_name.clone(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let slice = |ports: &PortsKey, endpoints: Vec<Endpoint>| EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{svc_name}-")),
            namespace: svc.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol, app)| EndpointPort {
                    name: Some(name.clone()),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    app_protocol: app.clone(),
                })
                .collect(),
        ),
    };
    let mut out = Vec::new();
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE) {
            out.push(slice(&ports, chunk.to_vec()));
        }
    }
    if out.is_empty() {
        // A Service with no endpoints still has one (empty) slice of its
        // ports, as kube's controller keeps a placeholder.
        let mut empty = slice(&Vec::new(), Vec::new());
        empty.ports = None;
        out.push(empty);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(i: usize, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i}")),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(format!("127.1.{}.{}", i / 200, i % 200 + 1)),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::Int(8080)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn slices_hold_at_most_100_endpoints_with_conditions() {
        let mut pods: Vec<Pod> = (0..250).map(|i| pod(i, i % 2 == 0)).collect();
        pods[0].metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let slices = slices_for(&svc(), pods.iter());
        assert_eq!(
            slices.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let s = &slices[0];
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Service", Some(true))
        );
        let all: Vec<&Endpoint> = slices.iter().flat_map(|s| &s.endpoints).collect();
        let of = |name: &str| {
            all.iter()
                .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(name))
                .unwrap()
                .conditions
                .clone()
                .unwrap()
        };
        // p0: ready but terminating; p1: not ready; p2: ready.
        assert_eq!(
            (of("p0").ready, of("p0").serving, of("p0").terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(of("p1").ready, Some(false));
        assert_eq!(of("p2").ready, Some(true));
        assert!(all.iter().all(|e| e.node_name.as_deref() == Some("n1")));
        // No pods: one empty slice.
        let none = slices_for(&svc(), std::iter::empty());
        assert_eq!(none.len(), 1);
        assert!(none[0].endpoints.is_empty());
    }
}
