//! One scheduling decision: filter the nodes, score the feasible ones, pick
//! the best (ties broken at random so equal nodes share the load), or
//! explain, as kube-scheduler does, why no node fits.
//!
//! Filters, in kube-scheduler's plugin order: NodeUnschedulable,
//! TaintToleration (NoSchedule and NoExecute), NodeAffinity (nodeSelector and
//! required affinity), NodePorts, NodeResourcesFit (cpu, memory, pods).
//! Scores (0–100 each, weighted as kube-scheduler weights its defaults):
//! least allocated cpu+memory ×1, spreading pods of one owner ×2, fewest
//! untolerated PreferNoSchedule taints ×3.
//!
//! The hot path allocates nothing: node totals are kept current by the
//! cache, candidates go into a reused buffer, and reason strings are only
//! built when no node fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::node_info::{NodeInfo, NodeSpec, TAINT_UNSCHEDULABLE};
use super::pod_info::PodInfo;

/// Why one node was filtered out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason<'a> {
    Unschedulable,
    Taint(&'a Taint),
    Affinity,
    Ports,
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
}

impl Reason<'_> {
    /// kube-scheduler's wording.
    pub fn message(&self) -> String {
        match self {
            Reason::Unschedulable => "node(s) were unschedulable".to_string(),
            Reason::Taint(t) => format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ),
            Reason::Affinity => "node(s) didn't match Pod's node affinity/selector".to_string(),
            Reason::Ports => {
                "node(s) didn't have free ports for the requested pod ports".to_string()
            }
            Reason::InsufficientCpu => "Insufficient cpu".to_string(),
            Reason::InsufficientMemory => "Insufficient memory".to_string(),
            Reason::TooManyPods => "Too many pods".to_string(),
        }
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Runs the filters for `pod` on `node`. Returns whether it fits; on the
/// first failing filter, reports its reasons (all insufficient resources
/// for the fit filter) to `report` and stops.
pub fn filter<'a>(
    pod: &PodInfo,
    node: &'a NodeInfo,
    spec: &'a NodeSpec,
    mut report: impl FnMut(Reason<'a>),
) -> bool {
    if spec.unschedulable {
        let cordon = Taint {
            key: TAINT_UNSCHEDULABLE.to_string(),
            effect: "NoSchedule".to_string(),
            ..Taint::default()
        };
        // Only pods tolerating the cordon get past it; building the taint is
        // rare (cordoned nodes only).
        if !tolerated(&pod.tolerations, &cordon) {
            report(Reason::Unschedulable);
            return false;
        }
    }
    for taint in &spec.taints {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(&pod.tolerations, taint)
        {
            report(Reason::Taint(taint));
            return false;
        }
    }
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| spec.labels.get(k) == Some(v));
    let affinity_ok = selector_ok
        && pod
            .affinity
            .as_ref()
            .is_none_or(|a| a.matches(&node.name, &spec.labels));
    if !affinity_ok {
        report(Reason::Affinity);
        return false;
    }
    if pod
        .usage
        .host_ports
        .iter()
        .any(|p| node.host_ports.iter().any(|q| p.conflicts(q)))
    {
        report(Reason::Ports);
        return false;
    }
    let mut fits = true;
    if node.pods + 1 > spec.allocatable_pods {
        report(Reason::TooManyPods);
        fits = false;
    }
    let want = pod.usage.requests;
    if want.milli_cpu > 0
        && node.requested.milli_cpu.saturating_add(want.milli_cpu) > spec.allocatable.milli_cpu
    {
        report(Reason::InsufficientCpu);
        fits = false;
    }
    if want.memory > 0
        && node.requested.memory.saturating_add(want.memory) > spec.allocatable.memory
    {
        report(Reason::InsufficientMemory);
        fits = false;
    }
    fits
}

/// A feasible node with its raw scores.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    index: usize,
    least_allocated: i64,
    same_owner: u32,
    prefer_no_schedule: u32,
}

/// Reusable state of the decision path: the candidate buffer and the
/// tie-breaking random generator (xorshift64*).
#[derive(Debug)]
pub struct Decider {
    candidates: Vec<Candidate>,
    rng: u64,
}

/// Why no node fits: how many nodes failed for each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl Diagnosis {
    /// kube-scheduler's message, e.g. `0/3 nodes are available: 1 node(s)
    /// didn't match Pod's node affinity/selector, 2 Insufficient cpu.`
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".to_string();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        format!(
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )
    }
}

fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * 100 / capacity
}

impl Decider {
    /// A decider whose tie-breaking is seeded with `seed`.
    pub fn new(seed: u64) -> Decider {
        Decider {
            candidates: Vec::new(),
            rng: seed | 1,
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The index in `nodes` of the best node for `pod`, or why none fits.
    pub fn decide(&mut self, pod: &PodInfo, nodes: &[NodeInfo]) -> Result<usize, Diagnosis> {
        self.candidates.clear();
        let owner = pod.usage.owner.as_deref();
        let (mut max_owner, mut max_taints) = (0u32, 0u32);
        for (index, node) in nodes.iter().enumerate() {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            if !filter(pod, node, spec, |_| {}) {
                continue;
            }
            let cpu = least_allocated(
                node.non_zero_requested.milli_cpu + pod.usage.non_zero.milli_cpu,
                spec.allocatable.milli_cpu,
            );
            let mem = least_allocated(
                node.non_zero_requested
                    .memory
                    .saturating_add(pod.usage.non_zero.memory),
                spec.allocatable.memory,
            );
            let same_owner = node.owned_by(owner);
            let prefer_no_schedule = spec
                .taints
                .iter()
                .filter(|t| {
                    t.effect == "PreferNoSchedule"
                        && !pod.tolerations.iter().any(|tol| {
                            matches!(
                                tol.effect.as_deref(),
                                None | Some("") | Some("PreferNoSchedule")
                            ) && tolerates(tol, t)
                        })
                })
                .count() as u32;
            max_owner = max_owner.max(same_owner);
            max_taints = max_taints.max(prefer_no_schedule);
            self.candidates.push(Candidate {
                index,
                least_allocated: (cpu + mem) / 2,
                same_owner,
                prefer_no_schedule,
            });
        }
        if self.candidates.is_empty() {
            return Err(diagnose(pod, nodes));
        }
        let (mut best, mut best_score, mut ties) = (0usize, i64::MIN, 0u64);
        for i in 0..self.candidates.len() {
            let c = self.candidates[i];
            let spread = if max_owner == 0 {
                100
            } else {
                i64::from(max_owner - c.same_owner) * 100 / i64::from(max_owner)
            };
            let taints = if max_taints == 0 {
                100
            } else {
                i64::from(max_taints - c.prefer_no_schedule) * 100 / i64::from(max_taints)
            };
            let score = c.least_allocated + 2 * spread + 3 * taints;
            if score > best_score {
                (best, best_score, ties) = (c.index, score, 1);
            } else if score == best_score {
                // Reservoir sampling: each of the tied nodes wins with
                // probability 1/ties.
                ties += 1;
                if self.next_random().is_multiple_of(ties) {
                    best = c.index;
                }
            }
        }
        Ok(best)
    }
}

/// Runs every filter on every node to explain a failure.
pub fn diagnose(pod: &PodInfo, nodes: &[NodeInfo]) -> Diagnosis {
    let mut d = Diagnosis {
        nodes: 0,
        reasons: BTreeMap::new(),
    };
    for node in nodes {
        let Some(spec) = node.spec.as_ref() else {
            continue;
        };
        d.nodes += 1;
        filter(pod, node, spec, |r| {
            *d.reasons.entry(r.message()).or_insert(0) += 1;
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pod_info::{HostPort, Resources, Usage};
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> NodeInfo {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut v, &extra);
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(v).expect("node");
        NodeInfo::new(name, Some(NodeSpec::new(&n)))
    }

    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    fn pod(cpu: &str, mem: &str, extra: serde_json::Value) -> PodInfo {
        let mut v = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
        });
        merge(&mut v, &extra);
        PodInfo::new(&serde_json::from_value(v).expect("pod"))
    }

    fn usage(cpu: i64, owner: Option<&str>) -> Usage {
        Usage {
            requests: Resources {
                milli_cpu: cpu,
                memory: 0,
            },
            non_zero: Resources {
                milli_cpu: cpu,
                memory: 0,
            },
            host_ports: Vec::new(),
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn resources_fit_against_what_is_placed() {
        let mut nodes = vec![
            node("a", "1", "1Gi", json!({})),
            node("b", "2", "1Gi", json!({})),
        ];
        nodes[1].add(&usage(1500, None));
        let mut d = Decider::new(1);
        // 800m fits on a (1000 free) but not b (500 free).
        assert_eq!(d.decide(&pod("800m", "1Mi", json!({})), &nodes), Ok(0));
        let e = d
            .decide(&pod("1200m", "1Mi", json!({})), &nodes)
            .expect_err("no fit");
        assert_eq!(e.message(), "0/2 nodes are available: 2 Insufficient cpu.");
        let e = d
            .decide(&pod("1200m", "2Gi", json!({})), &nodes)
            .expect_err("no fit");
        assert_eq!(
            e.message(),
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
        );
        // Exactly full still fits.
        assert_eq!(d.decide(&pod("500m", "1Gi", json!({})), &nodes[1..]), Ok(0));
    }

    #[test]
    fn pod_count_is_a_resource() {
        let mut n = node(
            "a",
            "1",
            "1Gi",
            json!({"status": {"allocatable": {"pods": "1"}}}),
        );
        let mut d = Decider::new(1);
        let p = pod("0", "0", json!({}));
        assert_eq!(d.decide(&p, std::slice::from_ref(&n)), Ok(0));
        n.add(&usage(0, None));
        let e = d.decide(&p, std::slice::from_ref(&n)).expect_err("full");
        assert_eq!(e.message(), "0/1 nodes are available: 1 Too many pods.");
    }

    #[test]
    fn mixed_reasons_are_counted_and_sorted() {
        let nodes = vec![
            node(
                "a",
                "1",
                "1Gi",
                json!({"metadata": {"labels": {"disk": "hdd"}}}),
            ),
            node(
                "b",
                "100m",
                "1Gi",
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
            ),
            node(
                "c",
                "100m",
                "1Gi",
                json!({"metadata": {"labels": {"disk": "ssd"}}}),
            ),
        ];
        let p = pod(
            "500m",
            "1Mi",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        );
        let e = Decider::new(1).decide(&p, &nodes).expect_err("no fit");
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
        assert_eq!(
            Decider::new(1)
                .decide(&p, &[])
                .expect_err("no nodes")
                .message(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn node_selector_and_affinity() {
        let nodes = vec![
            node(
                "a",
                "1",
                "1Gi",
                json!({"metadata": {"labels": {"zone": "x"}}}),
            ),
            node(
                "b",
                "1",
                "1Gi",
                json!({"metadata": {"labels": {"zone": "y"}}}),
            ),
        ];
        let mut d = Decider::new(7);
        let sel = pod("0", "0", json!({"spec": {"nodeSelector": {"zone": "y"}}}));
        assert_eq!(d.decide(&sel, &nodes), Ok(1));
        let aff = pod(
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["y"]}]}
            ]}}}}}),
        );
        assert_eq!(d.decide(&aff, &nodes), Ok(0));
        let by_name = pod(
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
            ]}}}}}),
        );
        assert_eq!(d.decide(&by_name, &nodes), Ok(1));
        // Both the selector and the affinity must hold.
        let both = pod(
            "0",
            "0",
            json!({"spec": {"nodeSelector": {"zone": "y"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}
            ]}}}}}),
        );
        assert_eq!(
            d.decide(&both, &nodes).expect_err("none").message(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn taints_and_tolerations() {
        let taint = json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}});
        let nodes = vec![
            node("a", "1", "1Gi", taint.clone()),
            node(
                "b",
                "1",
                "1Gi",
                json!({"spec": {"taints": [{"key": "evict", "effect": "NoExecute"}]}}),
            ),
        ];
        let mut d = Decider::new(3);
        let plain = pod("0", "0", json!({}));
        assert_eq!(
            d.decide(&plain, &nodes).expect_err("tainted").message(),
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {evict: }."
        );
        let eq = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(d.decide(&eq, &nodes), Ok(0));
        let wrong_value = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "value": "cpu"}]}}),
        );
        assert!(d.decide(&wrong_value, &nodes).is_err());
        let exists = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [{"key": "evict", "operator": "Exists"}]}}),
        );
        assert_eq!(d.decide(&exists, &nodes), Ok(1));
        let wrong_effect = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "evict", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(d.decide(&wrong_effect, &nodes).is_err());
        let everything = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
        );
        assert!(d.decide(&everything, &nodes).is_ok());
    }

    #[test]
    fn prefer_no_schedule_only_scores() {
        let nodes = vec![
            node(
                "a",
                "1",
                "1Gi",
                json!({"spec": {"taints": [{"key": "meh", "effect": "PreferNoSchedule"}]}}),
            ),
            node("b", "1", "1Gi", json!({})),
        ];
        let mut d = Decider::new(5);
        for _ in 0..20 {
            assert_eq!(d.decide(&pod("0", "0", json!({})), &nodes), Ok(1));
        }
        // Still feasible when it is the only node.
        assert_eq!(d.decide(&pod("0", "0", json!({})), &nodes[..1]), Ok(0));
    }

    #[test]
    fn not_ready_and_cordoned_nodes_are_skipped() {
        let nodes = vec![
            node(
                "a",
                "1",
                "1Gi",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            node("b", "1", "1Gi", json!({"spec": {"unschedulable": true}})),
            node(
                "c",
                "1",
                "1Gi",
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            ),
        ];
        let mut d = Decider::new(9);
        assert_eq!(
            d.decide(&pod("0", "0", json!({})), &nodes).expect_err("none").message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, \
             1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable."
        );
        let tolerant = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(d.decide(&tolerant, &nodes), Ok(1));
    }

    #[test]
    fn host_ports_conflict() {
        let mut nodes = vec![
            node("a", "1", "1Gi", json!({})),
            node("b", "1", "1Gi", json!({})),
        ];
        let mut u = usage(0, None);
        u.host_ports.push(HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 8080,
        });
        nodes[0].add(&u);
        let p = pod(
            "0",
            "0",
            json!({"spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        let mut d = Decider::new(11);
        for _ in 0..10 {
            assert_eq!(d.decide(&p, &nodes), Ok(1));
        }
        nodes[1].add(&u);
        assert_eq!(
            d.decide(&p, &nodes).expect_err("ports").message(),
            "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
        );
    }

    #[test]
    fn spreads_one_owner_and_prefers_emptier_nodes() {
        let mut nodes: Vec<NodeInfo> = (0..4)
            .map(|i| node(&format!("n{i}"), "4", "8Gi", json!({})))
            .collect();
        let p = pod(
            "100m",
            "10Mi",
            json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true}]}}),
        );
        let mut d = Decider::new(42);
        for _ in 0..40 {
            let i = d.decide(&p, &nodes).expect("fits");
            nodes[i].add(&p.usage);
        }
        for n in &nodes {
            assert_eq!(n.owned_by(Some("rs1")), 10, "{}", n.name);
        }
        // Least allocated: a busy node loses to an idle one.
        let mut nodes = vec![
            node("busy", "4", "8Gi", json!({})),
            node("idle", "4", "8Gi", json!({})),
        ];
        nodes[0].add(&usage(3000, None));
        assert_eq!(d.decide(&pod("100m", "10Mi", json!({})), &nodes), Ok(1));
    }

    #[test]
    fn ties_are_broken_across_nodes() {
        let nodes: Vec<NodeInfo> = (0..5)
            .map(|i| node(&format!("n{i}"), "4", "8Gi", json!({})))
            .collect();
        let mut d = Decider::new(99);
        let mut seen = [0u32; 5];
        for _ in 0..500 {
            seen[d.decide(&pod("0", "0", json!({})), &nodes).expect("fits")] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
