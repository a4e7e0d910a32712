//! The Endpoints controller: for each Service with a selector, an
//! Endpoints object of the same name listing the selected pods' IPs —
//! ready pods in `addresses`, the others in `notReadyAddresses` — with the
//! Service's ports resolved against each pod (a named `targetPort` is
//! looked up among the pod's container ports). Services without a
//! selector are left alone: their Endpoints are the user's.
//!
//! What a Service selects, how its ports resolve on a pod, and which pod
//! changes concern which Services are shared with the EndpointSlice
//! controller ([`service_selector`], [`target_port`],
//! [`queue_service_changes`]), as kube's `pkg/controller/util/endpoint`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use crate::informer::{key_of, Cache, Informer, Key};
use crate::queue::{Queue, Requeue};
use crate::util::{deleting, is_not_found, pod_ready, Selector};
use crate::Error;

/// The Endpoints controller; see the module doc.
#[derive(Clone)]
pub struct EndpointsController {
    client: Client,
    services: Cache<Service>,
    pods: Cache<Pod>,
    endpoints: Cache<Endpoints>,
    queue: Queue<Key>,
}

/// The pods a Service selects; `None` for a Service without a selector
/// (its endpoints are the user's).
pub fn service_selector(svc: &Service) -> Option<Selector> {
    let sel = svc.spec.as_ref()?.selector.as_ref()?;
    (!sel.is_empty()).then(|| Selector::from_map(sel))
}

/// Queues a Service's key on every change of it, and on every change of a
/// pod it selects (before or after the change), on `queue`.
pub fn queue_service_changes(
    services: &mut Informer<Service>,
    pods: &mut Informer<Pod>,
    queue: &Queue<Key>,
) {
    let q = queue.clone();
    services.on_change(move |old, new| {
        if let Some(s) = new.or(old) {
            q.add(key_of(s));
        }
    });
    let (q, svcs) = (queue.clone(), services.cache());
    pods.on_change(move |old, new| {
        let Some(any) = new.or(old) else { return };
        let ns = any.namespace().unwrap_or_default();
        for svc in svcs.namespace(&ns) {
            let Some(sel) = service_selector(&svc) else {
                continue;
            };
            if old.is_some_and(|p| sel.matches(p.labels()))
                || new.is_some_and(|p| sel.matches(p.labels()))
            {
                q.add(key_of(svc.as_ref()));
            }
        }
    });
}

impl EndpointsController {
    /// Wires the controller to the shared informers.
    pub fn new(
        client: Client,
        services: &mut Informer<Service>,
        pods: &mut Informer<Pod>,
        endpoints: &mut Informer<Endpoints>,
    ) -> EndpointsController {
        let c = EndpointsController {
            client,
            services: services.cache(),
            pods: pods.cache(),
            endpoints: endpoints.cache(),
            queue: Queue::new(),
        };
        queue_service_changes(services, pods, &c.queue);
        let q = c.queue.clone();
        endpoints.on_change(move |old, new| {
            if let Some(e) = new.or(old) {
                q.add(key_of(e));
            }
        });
        c
    }

    /// Processes queued Services with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.services.wait_ready().await;
        self.pods.wait_ready().await;
        self.endpoints.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |key| {
                let c = c.clone();
                async move { c.sync(key).await }
            })
            .await
    }

    async fn sync(&self, key: Key) -> Result<Requeue, Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.0);
        let existing = self.endpoints.get(&key.0, &key.1);
        let Some(svc) = self.services.get(&key.0, &key.1) else {
            // The Service is gone: so are its Endpoints.
            if existing.is_some() {
                match api.delete(&key.1, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(None);
        };
        let Some(selector) = service_selector(&svc) else {
            return Ok(None);
        };
        let pods = self
            .pods
            .namespace_filter(&key.0, |p| selector.matches(p.labels()));
        let subsets = subsets_for(&svc, pods.iter().map(|p| p.as_ref()));
        let mut labels = svc.labels().clone();
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert("service.kubernetes.io/headless".into(), String::new());
        }
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match existing {
            Some(e) if e.subsets == subsets && e.labels() == &labels => Ok(None),
            Some(e) => {
                let mut updated = (*e).clone();
                updated.subsets = subsets;
                updated.metadata.labels = Some(labels);
                match api.replace(&key.1, &PostParams::default(), &updated).await {
                    Ok(written) => {
                        self.endpoints.write_through(written);
                        Ok(None)
                    }
                    Err(e) if is_not_found(&e) => Err(Error::Other("endpoints vanished".into())),
                    Err(e) => Err(e.into()),
                }
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(key.1.clone()),
                        namespace: Some(key.0.clone()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(written) => {
                        self.endpoints.write_through(written);
                        Ok(None)
                    }
                    // Created by an earlier sync that the watch has not
                    // delivered yet: look again once it has.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        Ok(Some(std::time::Duration::from_millis(200)))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// The port a Service port reaches on `pod`: a number, or a named
/// container port; `None` when the pod has no port of that name.
pub fn target_port(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

/// The Endpoints subsets for `svc` over the selected `pods`: one subset
/// per distinct resolved port list, addresses sorted by IP.
pub fn subsets_for<'a>(svc: &Service, pods: impl Iterator<Item = &'a Pod>) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    type PortsKey = Vec<(Option<String>, i32, Option<String>, Option<String>)>;
    let mut groups: BTreeMap<PortsKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in pods {
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || (deleting(pod) && !publish_not_ready) {
            continue;
        }
        // Ports a pod cannot serve (an unknown named port) are left out
        // for that pod; a pod that serves none of them is left out.
        let mut ports: PortsKey = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                target_port(p, pod).map(|n| {
                    (
                        p.name.clone(),
                        n,
                        p.protocol.clone(),
                        p.app_protocol.clone(),
                    )
                })
            })
            .collect();
        if ports.is_empty() && spec.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            continue;
        }
        ports.sort();
        let address = EndpointAddress {
            ip,
            hostname: None,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.uid(),
                ..ObjectReference::default()
            }),
        };
        let group = groups.entry(ports).or_default();
        if pod_ready(pod) || publish_not_ready {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
                a.ip.cmp(&b.ip).then_with(|| {
                    let n =
                        |x: &EndpointAddress| x.target_ref.as_ref().and_then(|t| t.name.clone());
                    n(a).cmp(&n(b))
                })
            };
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let ports: Vec<EndpointPort> = ports
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| EndpointPort {
                    name,
                    port,
                    protocol,
                    app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
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

    #[test]
    fn named_ports_resolve_per_pod_and_readiness_splits_addresses() {
        let svc = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::String("web".into())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let pods = [
            pod("a", "127.1.0.2", true, "web", 8080),
            pod("b", "127.1.0.1", false, "web", 8080),
            pod("c", "127.1.0.3", true, "web", 9090),
            pod("d", "127.1.0.4", true, "other", 9090),
        ];
        let subsets = subsets_for(&svc, pods.iter());
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(s8080.addresses.as_ref().unwrap()[0].ip, "127.1.0.2");
        assert_eq!(
            s8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "127.1.0.1"
        );
        assert_eq!(
            s8080.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("http")
        );
        let s9090 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 9090)
            .unwrap();
        assert_eq!(s9090.addresses.as_ref().unwrap().len(), 1);
    }
}
