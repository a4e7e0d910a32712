//! [`NodeInfo`]: one node as the scheduler sees it — what the Node object
//! says (allocatable, labels, taints, schedulability, readiness) and what
//! the pods already placed there take, kept as running totals so a
//! scheduling decision reads free resources without adding anything up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use super::pod_info::{HostPort, PodMeta, Resources, Usage};
use super::quantity::{parse_milli, parse_units};

/// The taint the node lifecycle controller puts on a node whose Ready
/// condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint for a node whose Ready condition is Unknown (or missing).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint a cordoned (`spec.unschedulable`) node is treated as having.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The scheduling-relevant parts of a Node object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSpec {
    pub labels: BTreeMap<String, String>,
    /// `spec.taints`, plus the not-ready/unreachable NoSchedule taint the
    /// node's Ready condition implies (Kubernetes' TaintNodesByCondition),
    /// so pods that tolerate it may still land there.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allocatable_pods: i64,
}

impl NodeSpec {
    /// Reads a Node. Allocatable falls back to capacity; a quantity that
    /// does not parse counts as zero (nothing fits there).
    pub fn new(node: &Node) -> NodeSpec {
        let status = node.status.as_ref();
        let resources = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned()
            .unwrap_or_default();
        let get = |name: &str, milli: bool| {
            resources
                .get(name)
                .map(|q| {
                    if milli {
                        parse_milli(&q.0)
                    } else {
                        parse_units(&q.0)
                    }
                })
                .and_then(Result::ok)
                .unwrap_or(0)
                .max(0)
        };
        let spec = node.spec.as_ref();
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let implied = match ready {
            Some("True") => None,
            Some("False") => Some(TAINT_NOT_READY),
            _ => Some(TAINT_UNREACHABLE),
        };
        if let Some(key) = implied {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                taints.push(Taint {
                    key: key.to_string(),
                    effect: "NoSchedule".to_string(),
                    ..Taint::default()
                });
            }
        }
        NodeSpec {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources {
                milli_cpu: get("cpu", true),
                memory: get("memory", false),
            },
            allocatable_pods: get("pods", false),
        }
    }
}

/// A node and the pods placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods name a node the scheduler has not seen (or that
    /// was deleted before its pods): never a candidate.
    pub spec: Option<NodeSpec>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: i64,
    pub host_ports: Vec<HostPort>,
    /// Placed pods per controlling owner uid, for spreading.
    pub owners: HashMap<String, u32>,
    /// Every placed pod, for affinity terms and spread selectors.
    pub pod_metas: Vec<Arc<PodMeta>>,
    /// The placed pods with pod (anti-)affinity of their own, checked
    /// against every incoming pod (kube's `PodsWithAffinity`).
    pub affinity_pods: Vec<Arc<PodMeta>>,
}

impl NodeInfo {
    /// An empty node named `name`.
    pub fn new(name: &str, spec: Option<NodeSpec>) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            spec,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: 0,
            host_ports: Vec::new(),
            owners: HashMap::new(),
            pod_metas: Vec::new(),
            affinity_pods: Vec::new(),
        }
    }

    /// Accounts a pod placed here.
    pub fn add(&mut self, u: &Usage) {
        self.requested = self.requested.plus(u.requests);
        self.non_zero_requested = self.non_zero_requested.plus(u.non_zero);
        self.pods += 1;
        self.host_ports.extend(u.host_ports.iter().cloned());
        if let Some(owner) = &u.owner {
            *self.owners.entry(owner.clone()).or_insert(0) += 1;
        }
        self.pod_metas.push(u.pod.clone());
        if u.pod.affinity.is_some() {
            self.affinity_pods.push(u.pod.clone());
        }
    }

    /// Removes a pod accounted by [`NodeInfo::add`].
    pub fn remove(&mut self, u: &Usage) {
        self.requested = self.requested.minus(u.requests);
        self.non_zero_requested = self.non_zero_requested.minus(u.non_zero);
        self.pods -= 1;
        for p in &u.host_ports {
            if let Some(i) = self.host_ports.iter().position(|x| x == p) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(owner) = &u.owner {
            if let Some(n) = self.owners.get_mut(owner) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(owner);
                }
            }
        }
        let same = |p: &Arc<PodMeta>| Arc::ptr_eq(p, &u.pod);
        if let Some(i) = self.pod_metas.iter().position(same) {
            self.pod_metas.swap_remove(i);
        }
        if u.pod.affinity.is_some() {
            if let Some(i) = self.affinity_pods.iter().position(same) {
                self.affinity_pods.swap_remove(i);
            }
        }
    }

    /// Pods of `owner` placed here.
    pub fn owned_by(&self, owner: Option<&str>) -> u32 {
        owner.and_then(|o| self.owners.get(o)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("a node")
    }

    #[test]
    fn reads_allocatable_and_readiness() {
        let n = node(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "7500m", "memory": "30Gi", "pods": "100"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }));
        let s = NodeSpec::new(&n);
        assert_eq!(s.allocatable.milli_cpu, 7500);
        assert_eq!(s.allocatable.memory, 30 << 30);
        assert_eq!(s.allocatable_pods, 100);
        assert_eq!(s.taints.len(), 1);
        assert_eq!(s.labels["zone"], "a");
        assert!(!s.unschedulable);
    }

    #[test]
    fn not_ready_nodes_get_the_condition_taint() {
        let mk = |status: Option<&str>| {
            let conditions = match status {
                Some(s) => json!([{"type": "Ready", "status": s}]),
                None => json!([]),
            };
            NodeSpec::new(&node(json!({
                "metadata": {"name": "n"},
                "status": {"capacity": {"cpu": "1"}, "conditions": conditions}
            })))
        };
        assert!(mk(Some("True")).taints.is_empty());
        assert_eq!(mk(Some("False")).taints[0].key, TAINT_NOT_READY);
        assert_eq!(mk(Some("Unknown")).taints[0].key, TAINT_UNREACHABLE);
        assert_eq!(mk(None).taints[0].key, TAINT_UNREACHABLE);
        // Capacity stands in for a missing allocatable.
        assert_eq!(mk(Some("True")).allocatable.milli_cpu, 1000);
    }

    #[test]
    fn add_and_remove_keep_totals() {
        let mut n = NodeInfo::new("n", None);
        let u = Usage {
            requests: Resources {
                milli_cpu: 100,
                memory: 10,
            },
            non_zero: Resources {
                milli_cpu: 100,
                memory: 20,
            },
            host_ports: vec![HostPort {
                ip: "0.0.0.0".into(),
                protocol: "TCP".into(),
                port: 80,
            }],
            owner: Some("rs".into()),
            pod: Arc::default(),
        };
        n.add(&u);
        n.add(&u);
        assert_eq!(n.requested.milli_cpu, 200);
        assert_eq!(n.pods, 2);
        assert_eq!(n.owned_by(Some("rs")), 2);
        assert_eq!(n.host_ports.len(), 2);
        n.remove(&u);
        assert_eq!(n.owned_by(Some("rs")), 1);
        n.remove(&u);
        assert_eq!(n.requested, Resources::default());
        assert_eq!(n.pods, 0);
        assert!(n.owners.is_empty() && n.host_ports.is_empty());
        assert!(n.pod_metas.is_empty());
    }
}
