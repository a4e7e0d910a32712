//! Pod topology spread, as kube-scheduler's PodTopologySpread plugin
//! defines it: `topologySpreadConstraints` compiled once per pod
//! ([`SpreadConstraint`]), the `DoNotSchedule` filter ([`SpreadFilter`],
//! PreFilter counts by domain, then `maxSkew` and `minDomains`), and the
//! `ScheduleAnyway` score ([`SpreadScores`]), which also carries the system
//! default constraints for pods that name none.
//!
//! A *domain* is one value of the constraint's topology key among the
//! nodes that count: nodes with every (hard) constraint's key, that match
//! the pod's node selector and required affinity (`nodeAffinityPolicy:
//! Honor`, the default) and, with `nodeTaintsPolicy: Honor`, whose
//! NoSchedule/NoExecute taints the pod tolerates. The pods counted are
//! the pod's namespace's, not terminating, matching the constraint's
//! selector (with `matchLabelKeys` merged in from the pod's own labels).
//! As kube's `LabelSelectorAsSelector`, an empty `labelSelector: {}`
//! matches every pod and a missing one matches none (then `matchLabelKeys`
//! are not merged either).
//!
//! Worked example: zones `a` (2 matching pods), `b` (1), `c` (0), `maxSkew:
//! 1`, the incoming pod matches its own selector. The global minimum is 0
//! (zone `c`); placing in `a` gives skew 2 + 1 − 0 = 3, in `b` skew 2,
//! both over 1: only nodes of `c` fit (skew 1). With `minDomains: 4` and
//! three zones, the minimum counts as 0 whatever the zones hold.
//!
//! System defaults (kube's `systemDefaultConstraints`): `ScheduleAnyway`
//! with maxSkew 3 over `kubernetes.io/hostname` and 5 over
//! `topology.kubernetes.io/zone`. kube selects the pods with the selectors
//! of the Services and controllers owning the pod; Ballast counts the pods
//! of the same controlling owner.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::algorithm::tolerated;
use super::node_info::{NodeInfo, NodeSpec};
use super::pod_info::{PodInfo, PodMeta};
use crate::util::Selector;

/// The node label naming the node itself.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The node label naming its zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// One compiled `TopologySpreadConstraint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// `whenUnsatisfiable: DoNotSchedule` (a filter), else a score.
    pub hard: bool,
    /// The compiled `labelSelector`: a missing one selects no pod, `{}`
    /// every pod.
    selector: Selector,
    pub min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

impl SpreadConstraint {
    /// Compiles `pod`'s constraints; the error says why one did not
    /// compile (the pod is not scheduled then).
    pub fn compile_all(pod: &Pod) -> (Vec<SpreadConstraint>, Option<String>) {
        let mut out = Vec::new();
        let mut error = None;
        let own = pod.metadata.labels.as_ref();
        let constraints = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        for c in constraints {
            let mut selector = c.label_selector.clone();
            let merged: Vec<LabelSelectorRequirement> = c
                .match_label_keys
                .iter()
                .flatten()
                .filter_map(|k| {
                    own.and_then(|l| l.get(k))
                        .map(|v| LabelSelectorRequirement {
                            key: k.clone(),
                            operator: "In".to_string(),
                            values: Some(vec![v.clone()]),
                        })
                })
                .collect();
            if let (Some(s), false) = (selector.as_mut(), merged.is_empty()) {
                s.match_expressions
                    .get_or_insert_with(Vec::new)
                    .extend(merged);
            }
            let compiled = Selector::from_label_selector(selector.as_ref());
            let hard = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => true,
                "ScheduleAnyway" => false,
                other => {
                    error = Some(format!(
                        "invalid topology spread constraint: whenUnsatisfiable {other:?}"
                    ));
                    continue;
                }
            };
            let selector = match compiled {
                Ok(s) => s,
                Err(e) => {
                    error = Some(format!("invalid topology spread constraint: {e}"));
                    continue;
                }
            };
            out.push(SpreadConstraint {
                max_skew: i64::from(c.max_skew),
                topology_key: c.topology_key.clone(),
                hard,
                selector,
                min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            });
        }
        (out, error)
    }

    /// Whether the constraint of a pod in `namespace` counts `pod`.
    pub fn counts(&self, namespace: &str, pod: &PodMeta) -> bool {
        !pod.terminating && pod.namespace == namespace && self.selector.matches(&pod.labels)
    }

    fn count(&self, namespace: &str, node: &NodeInfo) -> i64 {
        node.pod_metas
            .iter()
            .filter(|p| self.counts(namespace, p))
            .count() as i64
    }
}

/// Whether `node` counts for a constraint with these inclusion policies.
fn included(pod: &PodInfo, node: &NodeInfo, spec: &NodeSpec, affinity: bool, taints: bool) -> bool {
    if affinity
        && !(pod
            .node_selector
            .iter()
            .all(|(k, v)| spec.labels.get(k) == Some(v))
            && pod
                .affinity
                .as_ref()
                .is_none_or(|a| a.matches(&node.name, &spec.labels)))
    {
        return false;
    }
    !taints
        || spec.taints.iter().all(|t| {
            !(t.effect == "NoSchedule" || t.effect == "NoExecute") || tolerated(&pod.tolerations, t)
        })
}

/// Why the spread filter rejected a node (kube's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpreadReason {
    MissingLabel,
    Skew,
}

impl SpreadReason {
    /// kube-scheduler's message.
    pub fn message(self) -> &'static str {
        match self {
            SpreadReason::MissingLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
            }
            SpreadReason::Skew => "node(s) didn't match pod topology spread constraints",
        }
    }
}

/// One hard constraint's matching pods per domain.
#[derive(Debug)]
struct Domains<'a> {
    constraint: &'a SpreadConstraint,
    counts: HashMap<&'a str, i64>,
    /// The global minimum, 0 when there are fewer domains than minDomains.
    min: i64,
    self_match: i64,
}

/// The `DoNotSchedule` constraints' counts for one cycle (kube's
/// PreFilter state).
#[derive(Debug)]
pub struct SpreadFilter<'a> {
    domains: Vec<Domains<'a>>,
}

impl<'a> SpreadFilter<'a> {
    /// Counts over every node; `None` when the pod has no hard constraint.
    pub fn new(pod: &'a PodInfo, nodes: &'a [NodeInfo]) -> Option<SpreadFilter<'a>> {
        let mut domains: Vec<Domains<'a>> = pod
            .spread
            .iter()
            .filter(|c| c.hard)
            .map(|c| Domains {
                constraint: c,
                counts: HashMap::new(),
                min: 0,
                self_match: i64::from(c.selector.matches(&pod.usage.pod.labels)),
            })
            .collect();
        if domains.is_empty() {
            return None;
        }
        let namespace = pod.usage.pod.namespace.as_str();
        for node in nodes {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            if !domains
                .iter()
                .all(|d| spec.labels.contains_key(&d.constraint.topology_key))
            {
                continue;
            }
            for d in &mut domains {
                let c = d.constraint;
                if !included(pod, node, spec, c.honor_affinity, c.honor_taints) {
                    continue;
                }
                let value = spec.labels[&c.topology_key].as_str();
                *d.counts.entry(value).or_default() += c.count(namespace, node);
            }
        }
        for d in &mut domains {
            d.min = if d.counts.len() < d.constraint.min_domains {
                0
            } else {
                d.counts.values().copied().min().unwrap_or(0)
            };
        }
        Some(SpreadFilter { domains })
    }

    /// kube's PodTopologySpread Filter on a node labelled `labels`.
    pub fn filter(&self, labels: &BTreeMap<String, String>) -> Option<SpreadReason> {
        for d in &self.domains {
            let Some(value) = labels.get(&d.constraint.topology_key) else {
                return Some(SpreadReason::MissingLabel);
            };
            let count = d.counts.get(value.as_str()).copied().unwrap_or(0);
            if count + d.self_match - d.min > d.constraint.max_skew {
                return Some(SpreadReason::Skew);
            }
        }
        None
    }
}

/// What a soft constraint counts.
#[derive(Debug, Clone, Copy)]
enum Counted<'a> {
    Selector(&'a SpreadConstraint),
    /// The system defaults: pods of this controlling owner.
    Owner(&'a str),
}

#[derive(Debug)]
struct Soft<'a> {
    key: &'a str,
    max_skew: i64,
    counted: Counted<'a>,
    honor_affinity: bool,
    honor_taints: bool,
    /// `ln(domains + 2)` over the scored nodes.
    weight: f64,
    /// Matching pods per domain of a scored node (not for hostname: those
    /// are counted per node).
    by_value: HashMap<&'a str, i64>,
}

/// The `ScheduleAnyway` scores of one cycle (kube's PreScore state).
#[derive(Debug)]
pub struct SpreadScores<'a> {
    soft: Vec<Soft<'a>>,
    /// The pod's own constraints (not the defaults): scored nodes must have
    /// every key, others are ignored (score 0).
    require_all: bool,
    namespace: &'a str,
}

const DEFAULTS: [(&str, i64); 2] = [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)];

impl<'a> SpreadScores<'a> {
    /// Builds the scores for `pod` over the feasible `candidates` (indices
    /// into `nodes`); `None` when nothing is scored. `zoned`: whether any
    /// node has a zone label (the default zone constraint is skipped
    /// otherwise, as it would score nothing).
    pub fn new(
        pod: &'a PodInfo,
        nodes: &'a [NodeInfo],
        candidates: impl Iterator<Item = usize>,
        zoned: bool,
    ) -> Option<SpreadScores<'a>> {
        let mut soft: Vec<Soft<'a>> = Vec::new();
        let require_all = !pod.spread.is_empty();
        if require_all {
            for c in pod.spread.iter().filter(|c| !c.hard) {
                soft.push(Soft {
                    key: &c.topology_key,
                    max_skew: c.max_skew,
                    counted: Counted::Selector(c),
                    honor_affinity: c.honor_affinity,
                    honor_taints: c.honor_taints,
                    weight: 0.0,
                    by_value: HashMap::new(),
                });
            }
        } else if let Some(owner) = pod.usage.owner.as_deref() {
            for (key, max_skew) in DEFAULTS {
                if key == LABEL_ZONE && !zoned {
                    continue;
                }
                soft.push(Soft {
                    key,
                    max_skew,
                    counted: Counted::Owner(owner),
                    honor_affinity: true,
                    honor_taints: false,
                    weight: 0.0,
                    by_value: HashMap::new(),
                });
            }
        }
        if soft.is_empty() {
            return None;
        }
        let mut scores = SpreadScores {
            soft,
            require_all,
            namespace: &pod.usage.pod.namespace,
        };
        let mut scored = 0usize;
        for i in candidates {
            let Some(spec) = nodes[i].spec.as_ref() else {
                continue;
            };
            if !scores.has_all(spec) {
                continue;
            }
            scored += 1;
            for s in &mut scores.soft {
                if s.key != LABEL_HOSTNAME {
                    if let Some(v) = spec.labels.get(s.key) {
                        s.by_value.entry(v.as_str()).or_insert(0);
                    }
                }
            }
        }
        for s in &mut scores.soft {
            let size = if s.key == LABEL_HOSTNAME {
                scored
            } else {
                s.by_value.len()
            };
            s.weight = ((size + 2) as f64).ln();
        }
        if scores
            .soft
            .iter()
            .any(|s| s.key != LABEL_HOSTNAME && !s.by_value.is_empty())
        {
            for node in nodes {
                let Some(spec) = node.spec.as_ref() else {
                    continue;
                };
                if !scores.has_all(spec) {
                    continue;
                }
                let namespace = scores.namespace;
                for s in &mut scores.soft {
                    if s.key == LABEL_HOSTNAME
                        || !included(pod, node, spec, s.honor_affinity, s.honor_taints)
                    {
                        continue;
                    }
                    let Some(v) = spec.labels.get(s.key) else {
                        continue;
                    };
                    if let Some(n) = s.by_value.get_mut(v.as_str()) {
                        *n += count(s.counted, namespace, node);
                    }
                }
            }
        }
        Some(scores)
    }

    fn has_all(&self, spec: &NodeSpec) -> bool {
        !self.require_all || self.soft.iter().all(|s| spec.labels.contains_key(s.key))
    }

    /// The raw score of a feasible node (lower is better), or `None` if
    /// the node is ignored (it then scores 0 after normalisation).
    pub fn raw(&self, node: &NodeInfo, spec: &NodeSpec) -> Option<i64> {
        if !self.has_all(spec) {
            return None;
        }
        let mut score = 0.0;
        for s in &self.soft {
            let Some(v) = spec.labels.get(s.key) else {
                continue;
            };
            let n = if s.key == LABEL_HOSTNAME {
                count(s.counted, self.namespace, node)
            } else {
                s.by_value.get(v.as_str()).copied().unwrap_or(0)
            };
            score += n as f64 * s.weight + (s.max_skew - 1) as f64;
        }
        Some(score.round() as i64)
    }
}

fn count(counted: Counted<'_>, namespace: &str, node: &NodeInfo) -> i64 {
    match counted {
        Counted::Selector(c) => c.count(namespace, node),
        Counted::Owner(owner) => i64::from(node.owned_by(Some(owner))),
    }
}

/// kube's PodTopologySpread NormalizeScore: raw scores (lower is better)
/// to 0–100, ignored nodes 0.
pub fn normalize(raw: Option<i64>, min: i64, max: i64) -> i64 {
    match raw {
        None => 0,
        Some(_) if max == 0 => 100,
        Some(s) => 100 * (max + min - s) / max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn constraints(v: serde_json::Value) -> (Vec<SpreadConstraint>, Option<String>) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "rev": "2"}},
            "spec": {"containers": [], "topologySpreadConstraints": v}
        }))
        .expect("pod");
        SpreadConstraint::compile_all(&pod)
    }

    #[test]
    fn constraints_compile_with_kube_defaults() {
        let (c, err) = constraints(json!([
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev", "absent"]},
            {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway",
             "minDomains": 3, "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor"},
            {"maxSkew": 1, "topologyKey": "x", "whenUnsatisfiable": "Sometimes"}
        ]));
        assert_eq!(
            err.as_deref(),
            Some("invalid topology spread constraint: whenUnsatisfiable \"Sometimes\"")
        );
        assert_eq!(c.len(), 2);
        let labels = |v: serde_json::Value| -> BTreeMap<String, String> {
            serde_json::from_value(v).expect("labels")
        };
        assert!(c[0].hard && c[0].min_domains == 1);
        assert!(c[0].honor_affinity && !c[0].honor_taints);
        assert!(c[0]
            .selector
            .matches(&labels(json!({"app": "web", "rev": "2"}))));
        assert!(!c[0]
            .selector
            .matches(&labels(json!({"app": "web", "rev": "1"}))));
        assert!(!c[1].hard && c[1].min_domains == 3);
        assert!(!c[1].honor_affinity && c[1].honor_taints);
        let meta = |labels: serde_json::Value| PodMeta {
            namespace: "ns".to_string(),
            labels: serde_json::from_value(labels).expect("labels"),
            ..PodMeta::default()
        };
        assert!(
            !c[1].counts("ns", &meta(json!({"app": "web"}))),
            "no selector: no pod is counted"
        );
        assert_eq!(normalize(None, 1, 5), 0);
        assert_eq!(normalize(Some(0), 0, 0), 100);
        assert_eq!(normalize(Some(5), 1, 5), 20);
        assert_eq!(normalize(Some(1), 1, 5), 100);
    }

    #[test]
    fn an_empty_selector_counts_every_pod_and_a_missing_one_none() {
        let (c, err) = constraints(json!([
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {}},
            {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {}, "matchLabelKeys": ["rev"]},
            {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule",
             "matchLabelKeys": ["rev"]}
        ]));
        assert_eq!(err, None);
        let meta = |labels: serde_json::Value, namespace: &str, terminating: bool| PodMeta {
            namespace: namespace.to_string(),
            labels: serde_json::from_value(labels).expect("labels"),
            terminating,
            affinity: None,
        };
        assert!(c[0].counts("ns", &meta(json!({}), "ns", false)));
        assert!(c[0].counts("ns", &meta(json!({"app": "db"}), "ns", false)));
        assert!(!c[0].counts("ns", &meta(json!({}), "other", false)));
        assert!(!c[0].counts("ns", &meta(json!({}), "ns", true)));
        // `{}` with the pod's own `rev` merged in.
        assert!(c[1].counts("ns", &meta(json!({"rev": "2", "x": "y"}), "ns", false)));
        assert!(!c[1].counts("ns", &meta(json!({"rev": "1"}), "ns", false)));
        // No selector: nothing, matchLabelKeys or not.
        assert!(!c[2].counts("ns", &meta(json!({"rev": "2"}), "ns", false)));
    }
}
