//! Field sets: the fields one manager owns, as paths of elements in
//! `FieldsV1`'s encoded form, and their `FieldsV1` JSON.
//!
//! Worked example: a Deployment applied with one container `nginx` owns
//!
//! ```text
//! [f:spec, f:replicas]
//! [f:spec, f:template, f:spec, f:containers, k:{"name":"nginx"}]
//! [f:spec, f:template, f:spec, f:containers, k:{"name":"nginx"}, f:image]
//! [f:spec, f:template, f:spec, f:containers, k:{"name":"nginx"}, f:name]
//! ```
//!
//! which `FieldsV1` writes as a tree whose leaves are `{}` and whose inner
//! nodes that are members themselves carry `".": {}`:
//!
//! ```text
//! {"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":
//!   {"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{}}}}}}}
//! ```
//!
//! and conflicts print as `.spec.template.spec.containers[name="nginx"].image`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One step of a path: `f:<field>`, `k:<JSON object of key fields>` (an
/// element of a list keyed by fields), `v:<JSON value>` (an element of a
/// set) or `i:<index>`.
pub type Element = String;

/// A field's place in an object.
pub type Path = Vec<Element>;

/// A set of paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn insert(&mut self, path: Path) {
        self.0.insert(path);
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Reads a `fieldsV1` tree; `Err` names what is malformed.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::default();
        let mut path = Vec::new();
        read_node(v, &mut path, &mut set)?;
        Ok(set)
    }

    /// The `fieldsV1` tree of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for e in path {
                node = node
                    .entry(e.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("nodes are objects");
            }
            // A member: its `{}` stays empty unless children come, then ".".
            node.insert(".".into(), Value::Object(Map::new()));
        }
        tidy(&mut root);
        Value::Object(root)
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

/// Leaves are `{}`: a member with no children drops its "." marker.
fn tidy(node: &mut Map<String, Value>) {
    if node.len() == 1 && node.contains_key(".") {
        node.clear();
        return;
    }
    for (k, child) in node.iter_mut() {
        if k != "." {
            tidy(child.as_object_mut().expect("nodes are objects"));
        }
    }
}

fn read_node(v: &Value, path: &mut Path, set: &mut FieldSet) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(format!("expected an object at {}", display(path)));
    };
    if m.is_empty() && !path.is_empty() {
        set.insert(path.clone());
    }
    for (k, child) in m {
        if k == "." {
            if !path.is_empty() {
                set.insert(path.clone());
            }
            continue;
        }
        if !["f:", "k:", "v:", "i:"].iter().any(|p| k.starts_with(p)) {
            return Err(format!("unknown path element {k:?}"));
        }
        path.push(k.clone());
        read_node(child, path, set)?;
        path.pop();
    }
    Ok(())
}

/// A path as Kubernetes prints it in conflicts: `.spec.containers[name="a"].image`.
pub fn display(path: &[Element]) -> String {
    let mut out = String::new();
    for e in path {
        let (kind, rest) = (
            e.get(..2).unwrap_or_default(),
            e.get(2..).unwrap_or_default(),
        );
        match kind {
            "f:" => {
                out.push('.');
                out.push_str(rest);
            }
            "k:" => {
                let fields = match serde_json::from_str::<Value>(rest) {
                    Ok(Value::Object(m)) => m
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => rest.to_string(),
                };
                out.push_str(&format!("[{fields}]"));
            }
            "v:" => out.push_str(&format!("[={rest}]")),
            "i:" => out.push_str(&format!("[{rest}]")),
            _ => out.push_str(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(elements: &[&str]) -> Path {
        elements.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trip() {
        let tree = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:containers": {
                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:finalizers": {"v:\"a\"": {}},
        });
        let set = FieldSet::from_fields_v1(&tree).unwrap();
        assert!(set.contains(&p(&["f:spec", "f:replicas"])));
        assert!(set.contains(&p(&["f:spec", "f:containers", "k:{\"name\":\"nginx\"}"])));
        assert!(!set.contains(&p(&["f:spec"])));
        assert_eq!(set.len(), 6);
        assert_eq!(set.to_fields_v1(), tree);
        assert!(FieldSet::from_fields_v1(&json!({"x": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn paths_print_as_kubernetes_does() {
        let path = p(&[
            "f:spec",
            "f:ports",
            "k:{\"port\":80,\"protocol\":\"TCP\"}",
            "f:targetPort",
        ]);
        assert_eq!(
            display(&path),
            ".spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
        assert_eq!(
            display(&p(&["f:metadata", "f:finalizers", "v:\"x\""])),
            ".metadata.finalizers[=\"x\"]"
        );
        assert_eq!(display(&p(&["f:args", "i:0"])), ".args[0]");
    }
}
