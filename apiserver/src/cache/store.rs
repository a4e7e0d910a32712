//! The cache's current objects, ordered by key, with secondary indexes on
//! namespace and `spec.nodeName` so a kubelet's "my pods" list or a
//! namespace's list touches only its own objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::object::Object;
use crate::selector::{Field, Filter};

#[derive(Default)]
pub struct Store {
    objects: BTreeMap<String, Arc<Object>>,
    by_namespace: HashMap<String, BTreeSet<String>>,
    by_node: HashMap<String, BTreeSet<String>>,
}

impl Store {
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Object>> {
        self.objects.get(key)
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Object>)> {
        self.objects.iter()
    }

    /// Inserts or replaces; returns the previous version.
    pub fn insert(&mut self, o: Arc<Object>) -> Option<Arc<Object>> {
        let prev = self.remove(&o.key);
        index_add(&mut self.by_namespace, &o.namespace, &o.key);
        index_add(&mut self.by_node, &o.node_name, &o.key);
        self.objects.insert(o.key.clone(), o);
        prev
    }

    pub fn remove(&mut self, key: &str) -> Option<Arc<Object>> {
        let prev = self.objects.remove(key)?;
        index_remove(&mut self.by_namespace, &prev.namespace, key);
        index_remove(&mut self.by_node, &prev.node_name, key);
        Some(prev)
    }

    /// Objects matching `filter` with keys after `after`, in key order, at
    /// most `limit` (0 = all); and whether more matching ones remain.
    pub fn select(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Object>>, bool) {
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Unbounded,
        };
        let range = (lower, Bound::Unbounded);
        let indexed = if let Some(node) = filter.fields.required(Field::NodeName) {
            Some(self.by_node.get(node))
        } else {
            filter
                .namespace
                .as_ref()
                .map(|ns| self.by_namespace.get(ns))
        };
        let keys: Box<dyn Iterator<Item = &String>> = match indexed {
            Some(Some(set)) => Box::new(set.range::<String, _>(range)),
            Some(None) => Box::new(std::iter::empty()),
            None => Box::new(self.objects.range::<String, _>(range).map(|(k, _)| k)),
        };
        let mut out = Vec::new();
        for key in keys {
            let o = &self.objects[key];
            if !filter.matches(o) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                return (out, true);
            }
            out.push(o.clone());
        }
        (out, false)
    }
}

fn index_add(index: &mut HashMap<String, BTreeSet<String>>, value: &str, key: &str) {
    if !value.is_empty() {
        index
            .entry(value.to_string())
            .or_default()
            .insert(key.to_string());
    }
}

fn index_remove(index: &mut HashMap<String, BTreeSet<String>>, value: &str, key: &str) {
    if let Some(set) = index.get_mut(value) {
        set.remove(key);
        if set.is_empty() {
            index.remove(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::FieldSelector;

    fn pod(ns: &str, name: &str, node: &str) -> Arc<Object> {
        let raw = format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"{ns}"}},"spec":{{"nodeName":"{node}"}}}}"#
        );
        let key = format!("/registry/pods/{ns}/{name}");
        Arc::new(Object::decode(key.as_bytes(), raw.as_bytes(), 1).unwrap())
    }

    #[test]
    fn indexes_follow_updates_and_pages_continue() {
        let mut s = Store::default();
        for i in 0..5 {
            s.insert(pod("a", &format!("p{i}"), "n1"));
        }
        s.insert(pod("b", "q", "n2"));
        // Moving p0 to n2 updates the node index.
        s.insert(pod("a", "p0", "n2"));
        let by_node = Filter {
            fields: FieldSelector::parse("spec.nodeName=n2", "pods").unwrap(),
            ..Default::default()
        };
        let names: Vec<_> = s
            .select(&by_node, None, 0)
            .0
            .iter()
            .map(|o| o.name.clone())
            .collect();
        assert_eq!(names, ["p0", "q"]);
        let in_a = Filter {
            namespace: Some("a".into()),
            ..Default::default()
        };
        let (page, more) = s.select(&in_a, None, 2);
        assert!(more);
        let (rest, more) = s.select(&in_a, Some(&page[1].key), 0);
        assert!(!more);
        assert_eq!(page.len() + rest.len(), 5);
        s.remove("/registry/pods/b/q");
        assert_eq!(s.select(&by_node, None, 0).0.len(), 1);
        assert_eq!(s.len(), 5);
    }
}
