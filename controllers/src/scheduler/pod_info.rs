//! What the scheduler needs to know about a pod, computed once when the pod
//! is seen: its resource requests as Kubernetes adds them up, its node
//! selector and node affinity (compiled), tolerations, host ports,
//! controlling owner, and what other pods' affinity terms and spread
//! constraints look at ([`PodMeta`]: namespace, labels, its own pod
//! (anti-)affinity).
//!
//! Requests follow `resourcehelper.PodRequests`: the sum of the app
//! containers, raised to the largest init container (restartable "sidecar"
//! init containers add to the sum and to every later init container), plus
//! `spec.overhead`. A container with a limit and no request requests its
//! limit, as the apiserver's defaulting would set it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PreferredSchedulingTerm, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::affinity::{Namespaces, PodAffinity};
use super::quantity::{parse_milli, parse_units, QuantityError};
use super::spread::SpreadConstraint;

/// cpu used for scoring when a container requests none (kube-scheduler's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory used for scoring when a container requests none (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// cpu (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    fn add(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
        }
    }

    fn max(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
        }
    }

    /// `self + o`, saturating.
    pub fn plus(self, o: Resources) -> Resources {
        self.add(o)
    }

    /// `self - o`, saturating.
    pub fn minus(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(o.milli_cpu),
            memory: self.memory.saturating_sub(o.memory),
        }
    }
}

/// One host port a pod asks for: `(hostIP, protocol, hostPort)`, with
/// `0.0.0.0` and `TCP` when unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these ports cannot share a node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// What a pod placed on a node takes from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// Requests as the fit filter counts them.
    pub requests: Resources,
    /// Requests with defaults for containers that request nothing, for
    /// scoring (kube-scheduler's "non-zero" requests).
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The uid of the controlling ownerReference, for spreading.
    pub owner: Option<String>,
    /// What other pods' affinity terms and spread constraints see.
    pub pod: Arc<PodMeta>,
}

/// A placed pod as other pods' affinity terms and topology spread
/// constraints see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: topology spread does not count it (kube #87621).
    pub terminating: bool,
    /// Its own pod affinity and anti-affinity, when it has any.
    pub affinity: Option<PodAffinity>,
}

/// A compiled node-selector requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn compile(r: &NodeSelectorRequirement) -> Option<Requirement> {
        let values = r.values.clone().unwrap_or_default();
        let one_int = || -> Option<i64> {
            match values.as_slice() {
                [v] => v.parse().ok(),
                _ => None,
            }
        };
        let op = match r.operator.as_str() {
            "In" if !values.is_empty() => Op::In(values),
            "NotIn" if !values.is_empty() => Op::NotIn(values),
            "Exists" if values.is_empty() => Op::Exists,
            "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
            "Gt" => Op::Gt(one_int()?),
            "Lt" => Op::Lt(one_int()?),
            _ => return None,
        };
        Some(Requirement {
            key: r.key.clone(),
            op,
        })
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::In(vs), Some(v)) => vs.iter().any(|x| x == v),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), Some(v)) => !vs.iter().any(|x| x == v),
            (Op::NotIn(_), None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// One nodeSelectorTerm: its matchExpressions and matchFields ANDed. A term
/// that is empty or holds an invalid requirement matches no node, as in
/// Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    labels: Vec<Requirement>,
    /// Requirements on `metadata.name`, the only field Kubernetes supports.
    names: Vec<Requirement>,
    valid: bool,
}

impl Term {
    fn compile(t: &NodeSelectorTerm) -> Term {
        let mut valid = true;
        let mut labels = Vec::new();
        for r in t.match_expressions.iter().flatten() {
            match Requirement::compile(r) {
                Some(r) => labels.push(r),
                None => valid = false,
            }
        }
        let mut names = Vec::new();
        for r in t.match_fields.iter().flatten() {
            match (r.key.as_str(), Requirement::compile(r)) {
                ("metadata.name", Some(r)) => names.push(r),
                _ => valid = false,
            }
        }
        if labels.is_empty() && names.is_empty() {
            valid = false;
        }
        Term {
            labels,
            names,
            valid,
        }
    }

    fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.valid
            && self
                .labels
                .iter()
                .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && self.names.iter().all(|r| r.matches(Some(node_name)))
    }
}

/// The required node affinity, compiled: its terms are ORed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredAffinity {
    terms: Vec<Term>,
}

impl RequiredAffinity {
    /// Compiles a pod's `requiredDuringSchedulingIgnoredDuringExecution`.
    pub fn compile(sel: &NodeSelector) -> RequiredAffinity {
        RequiredAffinity {
            terms: sel.node_selector_terms.iter().map(Term::compile).collect(),
        }
    }

    /// Whether a node with these labels and name satisfies some term.
    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }
}

/// The preferred node affinity, compiled: each matching term adds its
/// weight (kube-scheduler's NodeAffinity score). Terms with weight 0, and
/// empty or invalid terms, never count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreferredAffinity {
    terms: Vec<(i64, Term)>,
}

impl PreferredAffinity {
    /// Compiles `preferredDuringSchedulingIgnoredDuringExecution`.
    pub fn compile(terms: &[PreferredSchedulingTerm]) -> PreferredAffinity {
        PreferredAffinity {
            terms: terms
                .iter()
                .filter(|t| t.weight != 0)
                .map(|t| (i64::from(t.weight), Term::compile(&t.preference)))
                .filter(|(_, t)| t.valid)
                .collect(),
        }
    }

    /// Whether no term can ever count.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The sum of the weights of the terms the node matches.
    pub fn score(&self, node_name: &str, labels: &BTreeMap<String, String>) -> i64 {
        self.terms
            .iter()
            .filter(|(_, t)| t.matches(node_name, labels))
            .map(|(w, _)| w)
            .sum()
    }
}

/// A pending pod, as the scheduling cycle sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub usage: Usage,
    pub node_selector: Vec<(String, String)>,
    pub affinity: Option<RequiredAffinity>,
    pub preferred: PreferredAffinity,
    /// `topologySpreadConstraints`, both kinds (empty: the system defaults
    /// apply to pods with a controlling owner).
    pub spread: Vec<SpreadConstraint>,
    pub tolerations: Vec<Toleration>,
    /// `spec.priority`, higher first.
    pub priority: i32,
    /// Set when the pod cannot be scheduled whatever the nodes (a request
    /// that is not a quantity): the message for its condition.
    pub invalid: Option<String>,
}

impl PodInfo {
    /// Compiles `pod`.
    pub fn new(pod: &Pod) -> PodInfo {
        let (usage, invalid) = match usage(pod) {
            Ok(u) => (u, None),
            Err(e) => (Usage::default(), Some(e)),
        };
        let spec = pod.spec.as_ref();
        let (spread, spread_error) = SpreadConstraint::compile_all(pod);
        let invalid = invalid
            .or_else(|| usage.pod.affinity.as_ref().and_then(|a| a.invalid.clone()))
            .or(spread_error);
        let node_affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        PodInfo {
            uid: key(pod),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            usage,
            node_selector: spec
                .and_then(|s| s.node_selector.as_ref())
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            affinity: node_affinity
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(RequiredAffinity::compile),
            preferred: node_affinity
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_deref()
                })
                .map(PreferredAffinity::compile)
                .unwrap_or_default(),
            spread,
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            invalid,
        }
    }
}

impl PodInfo {
    /// Whether another pod being placed may ever let this pod fit: it has
    /// required pod affinity or a `DoNotSchedule` spread constraint.
    pub fn waits_on_pods(&self) -> bool {
        self.usage
            .pod
            .affinity
            .as_ref()
            .is_some_and(|a| !a.required.is_empty())
            || self.spread.iter().any(|c| c.hard)
    }

    /// Whether `other` being placed may let this pod fit: it matches one of
    /// the pod's required affinity terms or `DoNotSchedule` spread
    /// selectors.
    pub fn may_fit_with(&self, other: &PodMeta, namespaces: &Namespaces) -> bool {
        let affinity = self.usage.pod.affinity.as_ref().is_some_and(|a| {
            a.required.iter().any(|t| {
                t.matches(
                    &other.namespace,
                    &other.labels,
                    namespaces.get(&other.namespace),
                )
            })
        });
        affinity
            || self
                .spread
                .iter()
                .any(|c| c.hard && c.counts(&self.usage.pod.namespace, other))
    }
}

/// The cache key of a pod: its uid, or `namespace/name` when it has none.
pub fn key(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

fn quantity(
    map: Option<&BTreeMap<String, Quantity>>,
    name: &str,
    milli: bool,
) -> Result<Option<i64>, String> {
    let Some(q) = map.and_then(|m| m.get(name)) else {
        return Ok(None);
    };
    let parsed = if milli {
        parse_milli(&q.0)
    } else {
        parse_units(&q.0)
    };
    match parsed {
        Ok(v) if v < 0 => Err(format!(
            "invalid request {name}: {:?}: must be greater than or equal to 0",
            q.0
        )),
        Ok(v) => Ok(Some(v)),
        Err(QuantityError(_)) => Err(format!(
            "invalid request {name}: {}",
            QuantityError(q.0.clone())
        )),
    }
}

/// A container's requests: `(requests, non-zero requests)`.
fn container_requests(r: Option<&ResourceRequirements>) -> Result<(Resources, Resources), String> {
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    let get = |name: &str, milli: bool| -> Result<Option<i64>, String> {
        match quantity(requests, name, milli)? {
            Some(v) => Ok(Some(v)),
            None => quantity(limits, name, milli),
        }
    };
    let cpu = get("cpu", true)?;
    let memory = get("memory", false)?;
    Ok((
        Resources {
            milli_cpu: cpu.unwrap_or(0),
            memory: memory.unwrap_or(0),
        },
        Resources {
            milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU),
            memory: memory.unwrap_or(DEFAULT_MEMORY),
        },
    ))
}

/// Kubernetes' sum: apps (and sidecars), raised to the largest init container.
fn sum_with_init(
    init: &[Container],
    pick: impl Fn((Resources, Resources)) -> Resources,
    each: &[(Resources, Resources)],
    init_each: &[(Resources, Resources)],
) -> Resources {
    let mut reqs = each
        .iter()
        .fold(Resources::default(), |acc, r| acc.add(pick(*r)));
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for (c, r) in init.iter().zip(init_each) {
        let r = pick(*r);
        let effective = if c.restart_policy.as_deref() == Some("Always") {
            reqs = reqs.add(r);
            sidecars = sidecars.add(r);
            sidecars
        } else {
            r.add(sidecars)
        };
        init_max = init_max.max(effective);
    }
    reqs.max(init_max)
}

/// What other pods see of `pod`.
pub fn meta(pod: &Pod) -> PodMeta {
    PodMeta {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        affinity: PodAffinity::compile(pod),
    }
}

/// What `pod` takes from its node, or why its requests are invalid.
pub fn usage(pod: &Pod) -> Result<Usage, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Usage {
            pod: Arc::new(meta(pod)),
            ..Usage::default()
        });
    };
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let each = spec
        .containers
        .iter()
        .map(|c| container_requests(c.resources.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let init_each = init
        .iter()
        .map(|c| container_requests(c.resources.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut requests = sum_with_init(init, |r| r.0, &each, &init_each);
    let mut non_zero = sum_with_init(init, |r| r.1, &each, &init_each);
    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resources {
            milli_cpu: quantity(Some(overhead), "cpu", true)?.unwrap_or(0),
            memory: quantity(Some(overhead), "memory", false)?.unwrap_or(0),
        };
        requests = requests.add(o);
        non_zero = non_zero.add(o);
    }
    let mut host_ports = Vec::new();
    for c in spec.containers.iter().chain(init) {
        for p in c.ports.iter().flatten() {
            if let Some(port) = p.host_port.filter(|p| *p > 0) {
                host_ports.push(HostPort {
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".to_string()),
                    protocol: p
                        .protocol
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "TCP".to_string()),
                    port,
                });
            }
        }
    }
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    Ok(Usage {
        requests,
        non_zero,
        host_ports,
        owner,
        pod: Arc::new(meta(pod)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec}),
        )
        .expect("a pod")
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn app_containers_add_up() {
        let u = usage(&pod(
            json!({"containers": [c("a", "100m", "64Mi"), c("b", "1.5", "1Gi")]}),
        ))
        .expect("valid");
        assert_eq!(
            u.requests,
            Resources {
                milli_cpu: 1600,
                memory: (64 << 20) + (1 << 30)
            }
        );
        assert_eq!(u.non_zero, u.requests);
    }

    #[test]
    fn init_containers_count_as_their_maximum() {
        // max(sum of apps = 300m/200Mi, largest init = 500m/100Mi) per resource.
        let u = usage(&pod(json!({
            "initContainers": [c("i1", "500m", "50Mi"), c("i2", "100m", "100Mi")],
            "containers": [c("a", "100m", "100Mi"), c("b", "200m", "100Mi")]
        })))
        .expect("valid");
        assert_eq!(
            u.requests,
            Resources {
                milli_cpu: 500,
                memory: 200 << 20
            }
        );
    }

    #[test]
    fn sidecars_add_to_apps_and_later_inits() {
        let mut sidecar = c("s", "100m", "10Mi");
        sidecar["restartPolicy"] = json!("Always");
        let u = usage(&pod(json!({
            "initContainers": [sidecar, c("i", "1", "10Mi")],
            "containers": [c("a", "200m", "10Mi")]
        })))
        .expect("valid");
        // apps + sidecar = 300m; init i runs beside the sidecar: 1100m.
        assert_eq!(u.requests.milli_cpu, 1100);
        assert_eq!(u.requests.memory, 20 << 20);
    }

    #[test]
    fn overhead_limits_and_defaults() {
        let u = usage(&pod(json!({
            "containers": [
                {"name": "a", "image": "i", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
                {"name": "b", "image": "i"}
            ],
            "overhead": {"cpu": "250m", "memory": "120Mi"}
        })))
        .expect("valid");
        assert_eq!(
            u.requests,
            Resources {
                milli_cpu: 2250,
                memory: (1 << 30) + (120 << 20)
            }
        );
        // b requests nothing: scored as 100m / 200Mi.
        assert_eq!(
            u.non_zero,
            Resources {
                milli_cpu: 2350,
                memory: (1 << 30) + (120 << 20) + DEFAULT_MEMORY
            }
        );
    }

    #[test]
    fn invalid_requests_are_reported() {
        let info = PodInfo::new(&pod(json!({"containers": [c("a", "lots", "1Gi")]})));
        let msg = info.invalid.expect("invalid");
        assert!(
            msg.starts_with("invalid request cpu: quantities must match"),
            "{msg}"
        );
        let info = PodInfo::new(&pod(json!({"containers": [c("a", "-1", "1Gi")]})));
        assert_eq!(
            info.invalid.as_deref(),
            Some("invalid request cpu: \"-1\": must be greater than or equal to 0")
        );
    }

    #[test]
    fn host_ports_and_owner() {
        let p = pod(json!({"containers": [{"name": "a", "image": "i", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.2"},
            {"containerPort": 9000}
        ]}]}));
        let mut p = p;
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-uid", "controller": true
        }))
        .expect("owner")]);
        let u = usage(&p).expect("valid");
        assert_eq!(u.owner.as_deref(), Some("rs-uid"));
        assert_eq!(u.host_ports.len(), 2);
        let tcp = &u.host_ports[0];
        assert_eq!(
            (tcp.ip.as_str(), tcp.protocol.as_str(), tcp.port),
            ("0.0.0.0", "TCP", 8080)
        );
        let any = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 8080,
        };
        assert!(tcp.conflicts(&any));
        let udp = &u.host_ports[1];
        let other_ip = HostPort {
            ip: "127.0.0.3".into(),
            protocol: "UDP".into(),
            port: 53,
        };
        assert!(!udp.conflicts(&other_ip));
        let tcp53 = HostPort {
            ip: "127.0.0.2".into(),
            protocol: "TCP".into(),
            port: 53,
        };
        assert!(!udp.conflicts(&tcp53));
    }

    fn affinity(terms: serde_json::Value) -> RequiredAffinity {
        RequiredAffinity::compile(
            &serde_json::from_value(json!({"nodeSelectorTerms": terms})).expect("selector"),
        )
    }

    #[test]
    fn node_affinity_operators() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("gpus", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = |t: serde_json::Value| affinity(t).matches("n1", &labels);
        let expr = |key: &str, op: &str, values: &[&str]| json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
        assert!(m(expr("zone", "In", &["a", "b"])));
        assert!(!m(expr("zone", "In", &["b"])));
        assert!(!m(expr("zone", "NotIn", &["a"])));
        assert!(m(expr("rack", "NotIn", &["a"])));
        assert!(m(expr("zone", "Exists", &[])));
        assert!(!m(expr("zone", "DoesNotExist", &[])));
        assert!(m(expr("rack", "DoesNotExist", &[])));
        assert!(m(expr("gpus", "Gt", &["3"])));
        assert!(!m(expr("gpus", "Gt", &["4"])));
        assert!(m(expr("gpus", "Lt", &["5"])));
        assert!(
            !m(expr("zone", "Lt", &["5"])),
            "a non-integer label never matches"
        );
        assert!(
            !m(expr("gpus", "Gt", &["x"])),
            "an invalid requirement never matches"
        );
        assert!(!m(expr("zone", "Bogus", &["a"])));
        assert!(!m(json!([{}])), "an empty term matches nothing");
        assert!(!m(json!([])));
        // Terms are ORed, requirements in a term ANDed.
        assert!(m(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "gpus", "operator": "Exists"}]}
        ])));
        assert!(!m(json!([{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "gpus", "operator": "DoesNotExist"}]}])));
        // matchFields on metadata.name only.
        let field = |key: &str, op: &str, v: &str| json!([{"matchFields": [{"key": key, "operator": op, "values": [v]}]}]);
        assert!(m(field("metadata.name", "In", "n1")));
        assert!(!m(field("metadata.name", "In", "n2")));
        assert!(m(field("metadata.name", "NotIn", "n2")));
        assert!(!m(field("metadata.namespace", "In", "n1")));
    }
}
