//! The scheduler cache: every node, and every pod placed on one — bound
//! pods the watch reported, and pods *assumed* by the scheduler itself the
//! moment it decided, before the bind is even sent. The next decision sees
//! an assumed pod's requests at once; a failed bind forgets it; the watch
//! confirming the binding makes it an ordinary placed pod.
//!
//! Nodes live in a `Vec` (the decision loop walks it); pods referring to a
//! node the cache has not seen get a placeholder entry that is never a
//! candidate, so their requests are counted once the Node arrives.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;

use super::node_info::{NodeInfo, NodeSpec};
use super::pod_info::Usage;
use super::spread::LABEL_ZONE;

/// What [`Cache::place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The pod was not placed before.
    New,
    /// It moved, or its requests or labels changed (room may have been
    /// freed, affinity and spread counts changed).
    Replaced,
    /// The same placement (an assumption confirmed, or a repeat).
    Unchanged,
}

#[derive(Debug)]
struct Placed {
    node: String,
    usage: Usage,
    /// Placed by this scheduler, not yet confirmed by the watch.
    assumed: bool,
}

/// Nodes and placed pods.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    placed: HashMap<String, Placed>,
    /// Placed pods with pod (anti-)affinity: while there are none, pods
    /// without affinity of their own skip the affinity work entirely.
    with_affinity: usize,
    /// Nodes with a zone label: while there are none, the default zone
    /// spreading is skipped.
    zoned: usize,
}

impl Cache {
    /// All node entries (placeholders have `spec: None`).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The node entry `name`, if any.
    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo::new(name, None));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Adds or updates a node; returns whether anything a decision looks at
    /// changed (a reason to retry unschedulable pods).
    pub fn upsert_node(&mut self, node: &Node) -> bool {
        let Some(name) = node.metadata.name.as_deref() else {
            return false;
        };
        let spec = NodeSpec::new(node);
        let slot = self.slot(name);
        if slot.spec.as_ref() == Some(&spec) {
            return false;
        }
        let was_zoned = zoned(slot.spec.as_ref());
        let is_zoned = spec.labels.contains_key(LABEL_ZONE);
        slot.spec = Some(spec);
        self.zoned = self.zoned + usize::from(is_zoned) - usize::from(was_zoned);
        true
    }

    /// Whether any placed pod has pod (anti-)affinity.
    pub fn has_affinity_pods(&self) -> bool {
        self.with_affinity > 0
    }

    /// Whether any node has a zone label.
    pub fn zoned(&self) -> bool {
        self.zoned > 0
    }

    /// Removes a node; its entry stays as a placeholder while pods still
    /// name it.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if zoned(self.nodes[i].spec.as_ref()) {
            self.zoned -= 1;
        }
        if self.nodes[i].pods > 0 {
            self.nodes[i].spec = None;
            return;
        }
        self.drop_slot(i);
    }

    fn drop_slot(&mut self, i: usize) {
        let gone = self.nodes.swap_remove(i);
        self.index.remove(&gone.name);
        if i < self.nodes.len() {
            self.index.insert(self.nodes[i].name.clone(), i);
        }
    }

    /// Names of all nodes, placeholders excluded.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.spec.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Records that pod `key` is on `node` using `usage`, as the watch saw
    /// it (confirming an assumption) or as the scheduler decided
    /// (`assumed`). Replaces any earlier placement of the same pod.
    pub fn place(&mut self, key: &str, node: &str, usage: Usage, assumed: bool) -> Placement {
        let mut placement = Placement::New;
        if let Some(old) = self.placed.get(key) {
            if old.node == node && old.usage == usage {
                if let Some(p) = self.placed.get_mut(key) {
                    p.assumed = assumed;
                }
                return Placement::Unchanged;
            }
            placement = Placement::Replaced;
            self.unplace(key);
        }
        if usage.pod.affinity.is_some() {
            self.with_affinity += 1;
        }
        self.slot(node).add(&usage);
        self.placed.insert(
            key.to_string(),
            Placed {
                node: node.to_string(),
                usage,
                assumed,
            },
        );
        placement
    }

    /// Removes pod `key` wherever it is placed; returns whether it was.
    pub fn unplace(&mut self, key: &str) -> bool {
        let Some(p) = self.placed.remove(key) else {
            return false;
        };
        if p.usage.pod.affinity.is_some() {
            self.with_affinity -= 1;
        }
        if let Some(&i) = self.index.get(&p.node) {
            self.nodes[i].remove(&p.usage);
            if self.nodes[i].spec.is_none() && self.nodes[i].pods == 0 {
                self.drop_slot(i);
            }
        }
        true
    }

    /// Forgets an assumption after a failed bind; a placement the watch
    /// has confirmed in the meantime stays.
    pub fn forget(&mut self, key: &str) {
        if self.placed.get(key).is_some_and(|p| p.assumed) {
            self.unplace(key);
        }
    }

    /// Whether pod `key` is placed (assumed or confirmed).
    #[cfg(test)]
    pub fn is_placed(&self, key: &str) -> bool {
        self.placed.contains_key(key)
    }

    /// Whether pod `key` is assumed and not yet confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.placed.get(key).is_some_and(|p| p.assumed)
    }

    /// Keys of all placed pods.
    pub fn placed_keys(&self) -> Vec<String> {
        self.placed.keys().cloned().collect()
    }
}

fn zoned(spec: Option<&NodeSpec>) -> bool {
    spec.is_some_and(|s| s.labels.contains_key(LABEL_ZONE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pod_info::Resources;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node")
    }

    fn usage(cpu: i64) -> Usage {
        Usage {
            requests: Resources {
                milli_cpu: cpu,
                memory: 0,
            },
            ..Usage::default()
        }
    }

    #[test]
    fn assume_confirm_forget() {
        let mut c = Cache::default();
        assert!(c.upsert_node(&node("a", "1")));
        assert!(!c.upsert_node(&node("a", "1")), "no change");
        assert!(c.upsert_node(&node("a", "2")));
        c.place("p1", "a", usage(100), true);
        assert!(c.is_assumed("p1"));
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 100);
        // The watch confirms: same totals, no longer assumed.
        c.place("p1", "a", usage(100), false);
        assert!(!c.is_assumed("p1"));
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 100);
        c.forget("p1");
        assert!(c.is_placed("p1"), "a confirmed pod is not forgotten");
        c.place("p2", "a", usage(300), true);
        c.forget("p2");
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 100);
        assert!(c.unplace("p1"));
        assert!(!c.unplace("p1"));
        assert_eq!(c.node("a").expect("a").pods, 0);
    }

    #[test]
    fn pods_before_their_node_and_after_it() {
        let mut c = Cache::default();
        c.place("p1", "late", usage(500), false);
        assert!(c.node("late").expect("placeholder").spec.is_none());
        assert!(c.node_names().is_empty());
        c.upsert_node(&node("late", "1"));
        assert_eq!(c.node("late").expect("late").requested.milli_cpu, 500);
        assert_eq!(c.node_names(), vec!["late".to_string()]);
        c.upsert_node(&node("b", "1"));
        c.remove_node("late");
        assert!(c.node("late").is_some(), "kept while a pod names it");
        assert_eq!(c.node_names(), vec!["b".to_string()]);
        c.unplace("p1");
        assert!(c.node("late").is_none());
        assert_eq!(c.node("b").expect("b").name, "b");
        c.remove_node("b");
        assert!(c.nodes().is_empty());
        // Moving a pod between nodes moves its requests.
        c.upsert_node(&node("x", "1"));
        c.upsert_node(&node("y", "1"));
        c.place("p", "x", usage(200), false);
        assert_eq!(c.place("p", "x", usage(200), false), Placement::Unchanged);
        assert_eq!(
            c.place("p", "y", usage(200), false),
            Placement::Replaced,
            "moved"
        );
        assert_eq!(c.place("p", "y", usage(200), false), Placement::Unchanged);
        assert_eq!(
            c.place("p", "y", usage(100), false),
            Placement::Replaced,
            "requests shrunk"
        );
        assert_eq!(c.place("p", "y", usage(200), false), Placement::Replaced);
        assert_eq!(c.place("q", "y", usage(1), false), Placement::New);
        assert!(c.unplace("q"));
        assert_eq!(c.node("x").expect("x").requested.milli_cpu, 0);
        assert_eq!(c.node("y").expect("y").requested.milli_cpu, 200);
        assert_eq!(c.placed_keys(), vec!["p".to_string()]);
    }
}
