//! Label and field selectors, parsed from query strings and matched against
//! [`Object`]s.
//!
//! ```text
//! labelSelector=app=web,tier!=db,env in (prod,qa),!legacy,track
//! fieldSelector=metadata.namespace=default,spec.nodeName!=n1
//! ```

use crate::error::{Error, Result};
use crate::object::Object;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    /// Parses Kubernetes' label selector syntax.
    pub fn parse(s: &str) -> Result<LabelSelector> {
        let bad =
            |why: &str| Error::BadRequest(format!("unable to parse requirement: {why}: {s:?}"));
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            if let Some(key) = term.strip_prefix('!') {
                reqs.push((
                    valid_key(key.trim()).map_err(|w| bad(&w))?,
                    LabelOp::NotExists,
                ));
                continue;
            }
            let end = term
                .find(|c: char| c.is_whitespace() || c == '=' || c == '!')
                .unwrap_or(term.len());
            let key = valid_key(&term[..end]).map_err(|w| bad(&w))?;
            let rest = term[end..].trim_start();
            let op = if rest.is_empty() {
                LabelOp::Exists
            } else if let Some(v) = rest.strip_prefix("==") {
                LabelOp::Eq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix("!=") {
                LabelOp::NotEq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix('=') {
                LabelOp::Eq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix("notin") {
                LabelOp::NotIn(set_values(v).ok_or_else(|| bad("bad value set"))?)
            } else if let Some(v) = rest.strip_prefix("in") {
                LabelOp::In(set_values(v).ok_or_else(|| bad("bad value set"))?)
            } else {
                return Err(bad("unknown operator"));
            };
            reqs.push((key, op));
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                LabelOp::Eq(want) => v == Some(want),
                LabelOp::NotEq(want) => v != Some(want),
                LabelOp::In(set) => v.is_some_and(|v| set.contains(v)),
                LabelOp::NotIn(set) => !v.is_some_and(|v| set.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
            }
        })
    }
}

fn valid_key(k: &str) -> std::result::Result<String, String> {
    let ok = !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

/// `" (a, b)"` → `["a", "b"]`.
fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The fields a field selector may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
    NodeName,
    Phase,
    /// One of the kind's further fields ([`Object::fields`]).
    Other(&'static str),
}

/// A conjunction of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(Field, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector for the resource named `resource` (pods
    /// add `spec.nodeName` and `status.phase`, events their own fields).
    pub fn parse(s: &str, resource: &str) -> Result<FieldSelector> {
        let pod_fields = resource == "pods";
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(Error::BadRequest(format!(
                    "invalid field selector: {term:?}: no operator"
                )));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                "spec.nodeName" if pod_fields => Field::NodeName,
                "status.phase" if pod_fields => Field::Phase,
                other if resource == "events" => {
                    match crate::object::EVENT_FIELDS.iter().find(|f| **f == other) {
                        Some(f) => Field::Other(f),
                        None => {
                            return Err(Error::BadRequest(format!(
                                "field label not supported: {other}"
                            )))
                        }
                    }
                }
                other => {
                    return Err(Error::BadRequest(format!(
                        "field label not supported: {other}"
                    )))
                }
            };
            terms.push((field, eq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// The value this selector requires `field` to equal, if any (for indexes).
    pub fn required(&self, field: Field) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, eq, _)| *f == field && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, o: &Object) -> bool {
        let empty = String::new();
        self.terms.iter().all(|(f, eq, want)| {
            let have = match f {
                Field::Name => &o.name,
                Field::Namespace => &o.namespace,
                Field::NodeName => &o.node_name,
                Field::Phase => &o.phase,
                Field::Other(name) => o
                    .fields
                    .iter()
                    .find(|(f, _)| f == name)
                    .map(|(_, v)| v)
                    .unwrap_or(&empty),
            };
            (have == want) == *eq
        })
    }
}

/// What a list or watch selects: an optional namespace plus selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &Object) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == o.namespace)
            && self.labels.matches(&o.labels)
            && self.fields.matches(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_label_operator() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app=web") && m("app==web") && m("app = web"));
        assert!(!m("app=db") && m("app!=db") && !m("app!=web"));
        assert!(m("env in (prod, qa)") && !m("env in (qa)"));
        assert!(m("env notin (qa)") && !m("env notin (prod,qa)"));
        assert!(m("app") && !m("tier") && m("!tier") && !m("!app"));
        assert!(m("app=web,env in (prod),!tier,tier notin (x)"));
        assert!(m(""));
        assert!(LabelSelector::parse("app ~ web").is_err());
        assert!(LabelSelector::parse("env in prod").is_err());
    }

    #[test]
    fn field_selectors() {
        let o = Object {
            key: "/registry/pods/ns/a".into(),
            namespace: "ns".into(),
            name: "a".into(),
            labels: BTreeMap::new(),
            node_name: "n1".into(),
            phase: "Running".into(),
            fields: vec![],
            resource_version: 1,
            json: Default::default(),
        };
        let m = |s: &str| FieldSelector::parse(s, "pods").unwrap().matches(&o);
        assert!(m("metadata.name=a") && m("metadata.namespace==ns") && m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName!=n1") && m("status.phase=Running,metadata.name!=b"));
        assert!(FieldSelector::parse("spec.nodeName=n1", "configmaps").is_err());
        assert!(FieldSelector::parse("spec.foo=1", "pods").is_err());
        let ev = r#"{"kind":"Event","metadata":{"name":"e","namespace":"ns"},"involvedObject":{"kind":"Pod","name":"web"},"reason":"Started","type":"Normal","source":{"component":"kubelet"}}"#;
        let ev = Object::decode(b"/registry/events/ns/e", ev.as_bytes(), 3).unwrap();
        let m = |s: &str| FieldSelector::parse(s, "events").unwrap().matches(&ev);
        assert!(m(
            "involvedObject.kind=Pod,involvedObject.name=web,involvedObject.namespace="
        ));
        assert!(m("reason=Started,type=Normal,source=kubelet") && !m("type=Warning"));
        assert!(FieldSelector::parse("involvedObject.kind=Pod", "pods").is_err());
        let f = FieldSelector::parse("spec.nodeName=n1", "pods").unwrap();
        assert_eq!(f.required(Field::NodeName), Some("n1"));
    }
}
