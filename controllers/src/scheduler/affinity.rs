//! Inter-pod affinity and anti-affinity, as kube-scheduler's
//! InterPodAffinity plugin defines them: a pod's terms compiled once
//! ([`PodAffinity`]), the per-cycle counts by topology pair
//! ([`AffinityState`], kube's PreFilter), the filter, and the score of
//! preferred terms (the incoming pod's and, symmetrically, the existing
//! pods').
//!
//! A term matches a pod when the pod's namespace is one of the term's
//! namespaces (the term owner's own namespace when the term names none and
//! has no namespaceSelector) or its namespace's labels match the
//! namespaceSelector, and the pod's labels match the labelSelector (with
//! `matchLabelKeys` / `mismatchLabelKeys` merged in from the owner's own
//! labels, as the apiserver merges them). A term's *topology pair* on a
//! node is `(topologyKey, node's value of that label)`.
//!
//! Worked example: pods `web-0` and `web-1` (`app=web`) run on nodes of
//! zones `a` and `b`; the incoming pod has required anti-affinity
//! `app=web` on `topology.kubernetes.io/zone`. PreFilter counts
//! `{(zone, a): 1, (zone, b): 1}`; every node of zone `a` or `b` is
//! filtered with "node(s) didn't match pod anti-affinity rules", a node
//! of zone `c` fits, and so does a node without a zone label (it has no
//! pair for the term).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::node_info::NodeInfo;
use super::pod_info::PodMeta;
use crate::util::Selector;

/// kube-scheduler's `hardPodAffinityWeight` default: the score an existing
/// pod's *required* affinity term gives to an incoming pod it matches.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Labels of no namespace (one the scheduler has not seen).
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// One compiled `PodAffinityTerm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    selector: Selector,
    namespaces: Vec<String>,
    /// `None`: no namespace matches by labels.
    namespace_selector: Option<Selector>,
    pub topology_key: String,
    /// 1 for required terms; the term's weight for preferred ones.
    pub weight: i64,
}

impl AffinityTerm {
    fn compile(owner: &Pod, term: &PodAffinityTerm, weight: i64) -> Result<AffinityTerm, String> {
        let own_labels = owner.metadata.labels.as_ref();
        let mut selector = term.label_selector.clone();
        let mut merged = Vec::new();
        for (keys, operator) in [
            (&term.match_label_keys, "In"),
            (&term.mismatch_label_keys, "NotIn"),
        ] {
            for key in keys.iter().flatten() {
                if let Some(value) = own_labels.and_then(|l| l.get(key)) {
                    merged.push(LabelSelectorRequirement {
                        key: key.clone(),
                        operator: operator.to_string(),
                        values: Some(vec![value.clone()]),
                    });
                }
            }
        }
        if !merged.is_empty() {
            selector
                .get_or_insert_with(LabelSelector::default)
                .match_expressions
                .get_or_insert_with(Vec::new)
                .extend(merged);
        }
        let selector = Selector::from_label_selector(selector.as_ref())?;
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)))
            .transpose()?;
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(owner.metadata.namespace.clone().unwrap_or_default());
        }
        Ok(AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
            weight,
        })
    }

    /// Whether the term selects a pod of namespace `ns` (whose labels are
    /// `ns_labels`) labelled `labels`.
    pub fn matches(
        &self,
        ns: &str,
        labels: &BTreeMap<String, String>,
        ns_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let in_namespace = self.namespaces.iter().any(|n| n == ns)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(ns_labels.unwrap_or(&NO_LABELS)));
        in_namespace && self.selector.matches(labels)
    }

    fn matches_pod(&self, pod: &PodMeta, namespaces: &Namespaces) -> bool {
        self.matches(&pod.namespace, &pod.labels, namespaces.get(&pod.namespace))
    }
}

/// Namespace labels by name (for namespaceSelector).
pub type Namespaces = HashMap<String, BTreeMap<String, String>>;

/// A pod's compiled `podAffinity` and `podAntiAffinity`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred: Vec<AffinityTerm>,
    pub preferred_anti: Vec<AffinityTerm>,
    /// Why a term did not compile (an invalid selector): the pod is not
    /// scheduled, and its terms that did not compile are left out.
    pub invalid: Option<String>,
}

impl PodAffinity {
    /// Compiles `pod`'s pod (anti-)affinity; `None` when it has no term.
    pub fn compile(pod: &Pod) -> Option<PodAffinity> {
        let affinity = pod.spec.as_ref()?.affinity.as_ref()?;
        let mut out = PodAffinity::default();
        let required = |terms: Option<&Vec<PodAffinityTerm>>, into: &mut Vec<AffinityTerm>| {
            let mut error = None;
            for t in terms.into_iter().flatten() {
                match AffinityTerm::compile(pod, t, 1) {
                    Ok(t) => into.push(t),
                    Err(e) => error = Some(e),
                }
            }
            error
        };
        let mut errors = Vec::new();
        let weighted = |terms: Option<&Vec<WeightedPodAffinityTerm>>,
                        into: &mut Vec<AffinityTerm>,
                        errors: &mut Vec<String>| {
            for t in terms.into_iter().flatten() {
                match AffinityTerm::compile(pod, &t.pod_affinity_term, i64::from(t.weight)) {
                    Ok(term) => into.push(term),
                    Err(e) => errors.push(e),
                }
            }
        };
        if let Some(a) = &affinity.pod_affinity {
            errors.extend(required(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut out.required,
            ));
            weighted(
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut out.preferred,
                &mut errors,
            );
        }
        if let Some(a) = &affinity.pod_anti_affinity {
            errors.extend(required(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut out.required_anti,
            ));
            weighted(
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
                &mut out.preferred_anti,
                &mut errors,
            );
        }
        out.invalid = errors
            .into_iter()
            .next()
            .map(|e| format!("invalid pod affinity term: {e}"));
        let empty = out.required.is_empty()
            && out.required_anti.is_empty()
            && out.preferred.is_empty()
            && out.preferred_anti.is_empty();
        (!empty || out.invalid.is_some()).then_some(out)
    }

    /// Whether `pod` matches every required affinity term (kube's
    /// `podMatchesAllAffinityTerms`; false when there are none).
    fn all_required_match(&self, pod: &PodMeta, namespaces: &Namespaces) -> bool {
        !self.required.is_empty() && self.required.iter().all(|t| t.matches_pod(pod, namespaces))
    }
}

type Pair<'a> = (&'a str, &'a str);

/// Why the inter-pod affinity filter rejected a node (kube's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityReason {
    Affinity,
    AntiAffinity,
    ExistingAntiAffinity,
}

impl AffinityReason {
    /// kube-scheduler's message.
    pub fn message(self) -> &'static str {
        match self {
            AffinityReason::Affinity => "node(s) didn't match pod affinity rules",
            AffinityReason::AntiAffinity => "node(s) didn't match pod anti-affinity rules",
            AffinityReason::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
        }
    }
}

/// The inter-pod affinity counts of one scheduling cycle (kube's
/// PreFilter state): topology pairs holding pods that match the incoming
/// pod's terms, and pairs whose existing pods' anti-affinity the incoming
/// pod matches.
#[derive(Debug, Default)]
pub struct AffinityState<'a> {
    affinity: HashMap<Pair<'a>, i64>,
    anti: HashMap<Pair<'a>, i64>,
    existing_anti: HashMap<Pair<'a>, i64>,
}

impl<'a> AffinityState<'a> {
    /// Counts over every placed pod. `pod` is the incoming pod;
    /// `with_affinity` says whether any placed pod has pod (anti-)affinity.
    pub fn new(
        pod: &'a PodMeta,
        nodes: &'a [NodeInfo],
        namespaces: &'a Namespaces,
        with_affinity: bool,
    ) -> AffinityState<'a> {
        let mut s = AffinityState::default();
        let own = pod.affinity.as_ref();
        let own_terms = own.is_some_and(|a| !a.required.is_empty() || !a.required_anti.is_empty());
        let ns_labels = namespaces.get(&pod.namespace);
        for node in nodes {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            let pair = |key: &'a str| spec.labels.get(key).map(|v| (key, v.as_str()));
            if with_affinity {
                for existing in &node.affinity_pods {
                    let Some(a) = existing.affinity.as_ref() else {
                        continue;
                    };
                    for t in &a.required_anti {
                        if let Some(p) = pair(&t.topology_key) {
                            if t.matches(&pod.namespace, &pod.labels, ns_labels) {
                                *s.existing_anti.entry(p).or_default() += 1;
                            }
                        }
                    }
                }
            }
            let Some(a) = own.filter(|_| own_terms) else {
                continue;
            };
            for existing in &node.pod_metas {
                if a.all_required_match(existing, namespaces) {
                    for t in &a.required {
                        if let Some(p) = pair(&t.topology_key) {
                            *s.affinity.entry(p).or_default() += 1;
                        }
                    }
                }
                for t in &a.required_anti {
                    if let Some(p) = pair(&t.topology_key) {
                        if t.matches_pod(existing, namespaces) {
                            *s.anti.entry(p).or_default() += 1;
                        }
                    }
                }
            }
        }
        s
    }

    /// kube's InterPodAffinity Filter for `pod` on a node labelled `labels`.
    pub fn filter(
        &self,
        pod: &PodMeta,
        namespaces: &Namespaces,
        labels: &BTreeMap<String, String>,
    ) -> Option<AffinityReason> {
        if let Some(a) = pod.affinity.as_ref() {
            if !a.required.is_empty() {
                let mut exist = true;
                for t in &a.required {
                    let Some(v) = labels.get(&t.topology_key) else {
                        return Some(AffinityReason::Affinity);
                    };
                    if self
                        .affinity
                        .get(&(t.topology_key.as_str(), v.as_str()))
                        .is_none_or(|n| *n <= 0)
                    {
                        exist = false;
                    }
                }
                // The first pod of a group with affinity to itself: no pod
                // anywhere matches, but it matches its own terms.
                let first_of_group =
                    self.affinity.is_empty() && a.all_required_match(pod, namespaces);
                if !(exist || first_of_group) {
                    return Some(AffinityReason::Affinity);
                }
            }
            if !self.anti.is_empty() {
                for t in &a.required_anti {
                    if let Some(v) = labels.get(&t.topology_key) {
                        if self
                            .anti
                            .get(&(t.topology_key.as_str(), v.as_str()))
                            .is_some_and(|n| *n > 0)
                        {
                            return Some(AffinityReason::AntiAffinity);
                        }
                    }
                }
            }
        }
        if !self.existing_anti.is_empty()
            && labels.iter().any(|(k, v)| {
                self.existing_anti
                    .get(&(k.as_str(), v.as_str()))
                    .is_some_and(|n| *n > 0)
            })
        {
            return Some(AffinityReason::ExistingAntiAffinity);
        }
        None
    }
}

/// Preferred inter-pod affinity scores by topology pair (kube's PreScore):
/// the incoming pod's preferred terms over every placed pod, and every
/// placed pod's terms with affinity over the incoming pod.
#[derive(Debug, Default)]
pub struct AffinityScores<'a> {
    by_pair: HashMap<Pair<'a>, i64>,
}

impl<'a> AffinityScores<'a> {
    /// Builds the scores; empty when nothing can score.
    pub fn new(
        pod: &'a PodMeta,
        nodes: &'a [NodeInfo],
        namespaces: &'a Namespaces,
        with_affinity: bool,
    ) -> AffinityScores<'a> {
        let mut s = AffinityScores::default();
        let own = pod
            .affinity
            .as_ref()
            .filter(|a| !a.preferred.is_empty() || !a.preferred_anti.is_empty());
        if own.is_none() && !with_affinity {
            return s;
        }
        let ns_labels = namespaces.get(&pod.namespace);
        for node in nodes {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            if spec.labels.is_empty() {
                continue;
            }
            let mut add = |t: &'a AffinityTerm, weight: i64| {
                if let Some(v) = spec.labels.get(&t.topology_key) {
                    *s.by_pair
                        .entry((t.topology_key.as_str(), v.as_str()))
                        .or_default() += weight;
                }
            };
            if let Some(a) = own {
                for existing in &node.pod_metas {
                    for t in &a.preferred {
                        if t.matches_pod(existing, namespaces) {
                            add(t, t.weight);
                        }
                    }
                    for t in &a.preferred_anti {
                        if t.matches_pod(existing, namespaces) {
                            add(t, -t.weight);
                        }
                    }
                }
            }
            for existing in &node.affinity_pods {
                let Some(a) = existing.affinity.as_ref() else {
                    continue;
                };
                let matches = |t: &AffinityTerm| t.matches(&pod.namespace, &pod.labels, ns_labels);
                for t in &a.required {
                    if matches(t) {
                        add(t, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for t in &a.preferred {
                    if matches(t) {
                        add(t, t.weight);
                    }
                }
                for t in &a.preferred_anti {
                    if matches(t) {
                        add(t, -t.weight);
                    }
                }
            }
        }
        s.by_pair.retain(|_, v| *v != 0);
        s
    }

    /// Whether every node scores 0.
    pub fn is_empty(&self) -> bool {
        self.by_pair.is_empty()
    }

    /// The raw score of a node labelled `labels`.
    pub fn score(&self, labels: &BTreeMap<String, String>) -> i64 {
        if self.by_pair.len() < labels.len() {
            self.by_pair
                .iter()
                .filter(|((k, v), _)| labels.get(*k).is_some_and(|x| x == v))
                .map(|(_, s)| s)
                .sum()
        } else {
            labels
                .iter()
                .filter_map(|(k, v)| self.by_pair.get(&(k.as_str(), v.as_str())))
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, labels: serde_json::Value, affinity: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns, "labels": labels},
            "spec": {"containers": [], "affinity": affinity}
        }))
        .expect("pod")
    }

    fn labels(v: serde_json::Value) -> BTreeMap<String, String> {
        serde_json::from_value(v).expect("labels")
    }

    #[test]
    fn terms_match_namespace_and_labels() {
        let p = pod(
            "ns1",
            json!({"app": "web", "tier": "front"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"},
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone",
                 "namespaces": ["other"]},
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone",
                 "namespaceSelector": {"matchLabels": {"team": "a"}}},
                {"labelSelector": {}, "topologyKey": "zone", "namespaceSelector": {},
                 "matchLabelKeys": ["tier"], "mismatchLabelKeys": ["app"]}
            ]}}),
        );
        let a = PodAffinity::compile(&p).expect("terms");
        assert_eq!(a.invalid, None);
        let db = labels(json!({"app": "db"}));
        let team_a = labels(json!({"team": "a"}));
        let t = &a.required;
        // Default: the owner's own namespace.
        assert!(t[0].matches("ns1", &db, None));
        assert!(!t[0].matches("ns2", &db, None));
        assert!(!t[0].matches("ns1", &labels(json!({"app": "web"})), None));
        // Listed namespaces replace the default.
        assert!(t[1].matches("other", &db, None));
        assert!(!t[1].matches("ns1", &db, None));
        // A namespaceSelector matches namespaces by their labels only.
        assert!(t[2].matches("x", &db, Some(&team_a)));
        assert!(!t[2].matches("ns1", &db, None));
        // `{}` selects every namespace; the label keys are merged in.
        assert!(t[3].matches("any", &labels(json!({"tier": "front", "app": "db"})), None));
        assert!(!t[3].matches("any", &labels(json!({"tier": "back", "app": "db"})), None));
        assert!(!t[3].matches("any", &labels(json!({"tier": "front", "app": "web"})), None));
        // No term, no affinity; a bad operator is reported.
        assert_eq!(PodAffinity::compile(&pod("ns", json!({}), json!({}))), None);
        let bad = pod(
            "ns",
            json!({}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
                 "topologyKey": "zone"}]}}),
        );
        let a = PodAffinity::compile(&bad).expect("invalid");
        assert_eq!(
            a.invalid.as_deref(),
            Some("invalid pod affinity term: \"Gt\" is not a valid label selector operator")
        );
    }
}
