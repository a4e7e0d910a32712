//! One scheduling decision: filter the nodes, score the feasible ones, pick
//! the best (ties broken at random so equal nodes share the load), or
//! explain, as kube-scheduler does, why no node fits.
//!
//! Filters, in kube-scheduler's plugin order: NodeUnschedulable,
//! TaintToleration (NoSchedule and NoExecute), NodeAffinity (nodeSelector and
//! required affinity), NodePorts, NodeResourcesFit (cpu, memory, pods),
//! PodTopologySpread (`DoNotSchedule`), InterPodAffinity (required terms,
//! and existing pods' required anti-affinity against the incoming pod).
//! Scores (0–100 each, normalised and weighted as kube-scheduler's default
//! profile): least allocated cpu+memory ×1, PodTopologySpread
//! (`ScheduleAnyway`, or the system defaults) ×2, preferred NodeAffinity
//! ×2, preferred InterPodAffinity ×2, fewest untolerated PreferNoSchedule
//! taints ×3.
//!
//! The per-cycle state (kube's PreFilter and PreScore) is only built for
//! pods that need it: a pod without pod affinity or spread constraints,
//! while no placed pod has pod affinity, takes the fast path — node totals
//! kept current by the cache, candidates in a reused buffer, the default
//! spreading read from per-owner counts, reason strings only built when no
//! node fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::affinity::{AffinityReason, AffinityScores, AffinityState, Namespaces};
use super::node_info::{NodeInfo, NodeSpec, TAINT_UNSCHEDULABLE};
use super::pod_info::PodInfo;
use super::spread::{self, SpreadFilter, SpreadReason, SpreadScores};

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
    Spread(SpreadReason),
    PodAffinity(AffinityReason),
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
            Reason::Spread(r) => r.message().to_string(),
            Reason::PodAffinity(r) => r.message().to_string(),
        }
    }
}

/// What a decision looks at besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    pub nodes: &'a [NodeInfo],
    /// Namespace labels, for affinity terms' namespaceSelector.
    pub namespaces: &'a Namespaces,
    /// Whether any placed pod has pod (anti-)affinity.
    pub affinity_pods: bool,
    /// Whether any node has a zone label.
    pub zoned: bool,
}

/// The per-cycle filter state (kube's PreFilter): only what the pod needs.
#[derive(Debug)]
pub struct Cycle<'a> {
    spread: Option<SpreadFilter<'a>>,
    affinity: Option<AffinityState<'a>>,
    namespaces: &'a Namespaces,
}

impl<'a> Cycle<'a> {
    /// Counts what `pod`'s filters need over the cluster.
    pub fn new(pod: &'a PodInfo, cluster: &Cluster<'a>) -> Cycle<'a> {
        let meta = &*pod.usage.pod;
        let own_terms = meta
            .affinity
            .as_ref()
            .is_some_and(|a| !a.required.is_empty() || !a.required_anti.is_empty());
        Cycle {
            spread: SpreadFilter::new(pod, cluster.nodes),
            affinity: (own_terms || cluster.affinity_pods).then(|| {
                AffinityState::new(
                    meta,
                    cluster.nodes,
                    cluster.namespaces,
                    cluster.affinity_pods,
                )
            }),
            namespaces: cluster.namespaces,
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

/// Whether some toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Runs the filters for `pod` on `node`. Returns whether it fits; on the
/// first failing filter, reports its reasons (all insufficient resources
/// for the fit filter) to `report` and stops.
pub fn filter<'a>(
    pod: &PodInfo,
    node: &'a NodeInfo,
    spec: &'a NodeSpec,
    cycle: &Cycle<'_>,
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
    if !fits {
        return false;
    }
    if let Some(why) = cycle.spread.as_ref().and_then(|s| s.filter(&spec.labels)) {
        report(Reason::Spread(why));
        return false;
    }
    if let Some(why) = cycle
        .affinity
        .as_ref()
        .and_then(|a| a.filter(&pod.usage.pod, cycle.namespaces, &spec.labels))
    {
        report(Reason::PodAffinity(why));
        return false;
    }
    true
}

/// A feasible node with its raw scores.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    index: usize,
    least_allocated: i64,
    prefer_no_schedule: u32,
    node_affinity: i64,
    /// Topology spread (lower is better); `None`: an ignored node.
    spread: Option<i64>,
    pod_affinity: i64,
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

/// `score` of `max` as 0–100 (kube's `DefaultNormalizeScore`).
fn of_max(score: i64, max: i64) -> i64 {
    if max <= 0 {
        0
    } else {
        score * 100 / max
    }
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

    /// The index in `cluster.nodes` of the best node for `pod`, or why
    /// none fits.
    pub fn decide(&mut self, pod: &PodInfo, cluster: &Cluster<'_>) -> Result<usize, Diagnosis> {
        let nodes = cluster.nodes;
        let cycle = Cycle::new(pod, cluster);
        self.candidates.clear();
        let (mut max_taints, mut max_node_affinity) = (0u32, 0i64);
        for (index, node) in nodes.iter().enumerate() {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            if !filter(pod, node, spec, &cycle, |_| {}) {
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
            let node_affinity = if pod.preferred.is_empty() {
                0
            } else {
                pod.preferred.score(&node.name, &spec.labels)
            };
            max_taints = max_taints.max(prefer_no_schedule);
            max_node_affinity = max_node_affinity.max(node_affinity);
            self.candidates.push(Candidate {
                index,
                least_allocated: (cpu + mem) / 2,
                prefer_no_schedule,
                node_affinity,
                spread: None,
                pod_affinity: 0,
            });
        }
        if self.candidates.is_empty() {
            return Err(diagnose(pod, cluster, &cycle));
        }
        let spread_scores = SpreadScores::new(
            pod,
            nodes,
            self.candidates.iter().map(|c| c.index),
            cluster.zoned,
        );
        let affinity_scores = AffinityScores::new(
            &pod.usage.pod,
            nodes,
            cluster.namespaces,
            cluster.affinity_pods,
        );
        let (mut spread_min, mut spread_max) = (i64::MAX, 0i64);
        let (mut affinity_min, mut affinity_max) = (i64::MAX, i64::MIN);
        for c in &mut self.candidates {
            let node = &nodes[c.index];
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            if let Some(s) = spread_scores.as_ref() {
                c.spread = s.raw(node, spec);
                if let Some(raw) = c.spread {
                    spread_min = spread_min.min(raw);
                    spread_max = spread_max.max(raw);
                }
            }
            if !affinity_scores.is_empty() {
                c.pod_affinity = affinity_scores.score(&spec.labels);
                affinity_min = affinity_min.min(c.pod_affinity);
                affinity_max = affinity_max.max(c.pod_affinity);
            }
        }
        let (mut best, mut best_score, mut ties) = (0usize, i64::MIN, 0u64);
        for i in 0..self.candidates.len() {
            let c = self.candidates[i];
            let spread = if spread_scores.is_some() {
                spread::normalize(c.spread, spread_min, spread_max)
            } else {
                0
            };
            let taints = if max_taints == 0 {
                100
            } else {
                i64::from(max_taints - c.prefer_no_schedule) * 100 / i64::from(max_taints)
            };
            let pod_affinity = if affinity_max > affinity_min {
                (c.pod_affinity - affinity_min) * 100 / (affinity_max - affinity_min)
            } else {
                0
            };
            let score = c.least_allocated
                + 2 * spread
                + 2 * of_max(c.node_affinity, max_node_affinity)
                + 2 * pod_affinity
                + 3 * taints;
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
pub fn diagnose(pod: &PodInfo, cluster: &Cluster<'_>, cycle: &Cycle<'_>) -> Diagnosis {
    let mut d = Diagnosis {
        nodes: 0,
        reasons: BTreeMap::new(),
    };
    for node in cluster.nodes {
        let Some(spec) = node.spec.as_ref() else {
            continue;
        };
        d.nodes += 1;
        filter(pod, node, spec, cycle, |r| {
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

    /// A cluster of `nodes`, no namespace labels.
    fn on(nodes: &[NodeInfo]) -> Cluster<'_> {
        Cluster {
            nodes,
            namespaces: Box::leak(Box::default()),
            affinity_pods: nodes.iter().any(|n| !n.affinity_pods.is_empty()),
            zoned: nodes.iter().any(|n| {
                n.spec
                    .as_ref()
                    .is_some_and(|s| s.labels.contains_key(spread::LABEL_ZONE))
            }),
        }
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
            pod: Default::default(),
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
        assert_eq!(d.decide(&pod("800m", "1Mi", json!({})), &on(&nodes)), Ok(0));
        let e = d
            .decide(&pod("1200m", "1Mi", json!({})), &on(&nodes))
            .expect_err("no fit");
        assert_eq!(e.message(), "0/2 nodes are available: 2 Insufficient cpu.");
        let e = d
            .decide(&pod("1200m", "2Gi", json!({})), &on(&nodes))
            .expect_err("no fit");
        assert_eq!(
            e.message(),
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
        );
        // Exactly full still fits.
        assert_eq!(
            d.decide(&pod("500m", "1Gi", json!({})), &on(&nodes[1..])),
            Ok(0)
        );
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
        assert_eq!(d.decide(&p, &on(std::slice::from_ref(&n))), Ok(0));
        n.add(&usage(0, None));
        let e = d
            .decide(&p, &on(std::slice::from_ref(&n)))
            .expect_err("full");
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
        let e = Decider::new(1).decide(&p, &on(&nodes)).expect_err("no fit");
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
        assert_eq!(
            Decider::new(1)
                .decide(&p, &on(&[]))
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
        assert_eq!(d.decide(&sel, &on(&nodes)), Ok(1));
        let aff = pod(
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["y"]}]}
            ]}}}}}),
        );
        assert_eq!(d.decide(&aff, &on(&nodes)), Ok(0));
        let by_name = pod(
            "0",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
            ]}}}}}),
        );
        assert_eq!(d.decide(&by_name, &on(&nodes)), Ok(1));
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
            d.decide(&both, &on(&nodes)).expect_err("none").message(),
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
            d.decide(&plain, &on(&nodes)).expect_err("tainted").message(),
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {evict: }."
        );
        let eq = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(d.decide(&eq, &on(&nodes)), Ok(0));
        let wrong_value = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "value": "cpu"}]}}),
        );
        assert!(d.decide(&wrong_value, &on(&nodes)).is_err());
        let exists = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [{"key": "evict", "operator": "Exists"}]}}),
        );
        assert_eq!(d.decide(&exists, &on(&nodes)), Ok(1));
        let wrong_effect = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "evict", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(d.decide(&wrong_effect, &on(&nodes)).is_err());
        let everything = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
        );
        assert!(d.decide(&everything, &on(&nodes)).is_ok());
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
            assert_eq!(d.decide(&pod("0", "0", json!({})), &on(&nodes)), Ok(1));
        }
        // Still feasible when it is the only node.
        assert_eq!(d.decide(&pod("0", "0", json!({})), &on(&nodes[..1])), Ok(0));
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
            d.decide(&pod("0", "0", json!({})), &on(&nodes)).expect_err("none").message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, \
             1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable."
        );
        let tolerant = pod(
            "0",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(d.decide(&tolerant, &on(&nodes)), Ok(1));
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
            assert_eq!(d.decide(&p, &on(&nodes)), Ok(1));
        }
        nodes[1].add(&u);
        assert_eq!(
            d.decide(&p, &on(&nodes)).expect_err("ports").message(),
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
            let i = d.decide(&p, &on(&nodes)).expect("fits");
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
        assert_eq!(
            d.decide(&pod("100m", "10Mi", json!({})), &on(&nodes)),
            Ok(1)
        );
    }

    #[test]
    fn ties_are_broken_across_nodes() {
        let nodes: Vec<NodeInfo> = (0..5)
            .map(|i| node(&format!("n{i}"), "4", "8Gi", json!({})))
            .collect();
        let mut d = Decider::new(99);
        let mut seen = [0u32; 5];
        for _ in 0..500 {
            seen[d
                .decide(&pod("0", "0", json!({})), &on(&nodes))
                .expect("fits")] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
