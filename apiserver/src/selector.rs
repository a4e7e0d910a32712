//! Label and field selectors, parsed from query strings and matched against
//! [`Object`]s.
//!
//! ```text
//! labelSelector=app=web,tier!=db,env in (prod,qa),!legacy,track,replicas>2
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
    /// The label's value, read as an integer, is greater than this.
    Gt(i64),
    /// The label's value, read as an integer, is less than this.
    Lt(i64),
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
        // An invalid key or value, worded as kube-apiserver words it.
        let invalid =
            |why: String| Error::BadRequest(format!("unable to parse requirement: {why}"));
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            if let Some(key) = term.strip_prefix('!') {
                reqs.push((valid_key(key.trim()).map_err(invalid)?, LabelOp::NotExists));
                continue;
            }
            let end = term
                .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '>' | '<'))
                .unwrap_or(term.len());
            let key = valid_key(&term[..end]).map_err(invalid)?;
            let rest = term[end..].trim_start();
            let op = if rest.is_empty() {
                LabelOp::Exists
            } else if let Some(v) = rest.strip_prefix("==") {
                LabelOp::Eq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix("!=") {
                LabelOp::NotEq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix('=') {
                LabelOp::Eq(v.trim().to_string())
            } else if let Some(v) = rest.strip_prefix('>') {
                LabelOp::Gt(integer_value(&key, v.trim()).map_err(invalid)?)
            } else if let Some(v) = rest.strip_prefix('<') {
                LabelOp::Lt(integer_value(&key, v.trim()).map_err(invalid)?)
            } else if let Some(v) = rest.strip_prefix("notin") {
                LabelOp::NotIn(set_values(v).ok_or_else(|| bad("bad value set"))?)
            } else if let Some(v) = rest.strip_prefix("in") {
                LabelOp::In(set_values(v).ok_or_else(|| bad("bad value set"))?)
            } else {
                return Err(bad("unknown operator"));
            };
            let values = match &op {
                LabelOp::Eq(v) | LabelOp::NotEq(v) => std::slice::from_ref(v),
                LabelOp::In(set) | LabelOp::NotIn(set) => set.as_slice(),
                // `>` and `<` values were checked with their integer.
                LabelOp::Exists | LabelOp::NotExists | LabelOp::Gt(_) | LabelOp::Lt(_) => &[],
            };
            check_values(&key, values).map_err(invalid)?;
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
                LabelOp::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A label key as Kubernetes' label selector parser checks it
/// (`validation.IsQualifiedName`): an optional DNS-1123 subdomain prefix of
/// at most 253 characters and `/`, then a name of at most 63 characters of
/// `[A-Za-z0-9-_.]` that starts and ends alphanumeric. The error is the
/// `field.Invalid` text kube-apiserver answers (its parser has no field
/// path, hence `<nil>`).
fn valid_key(k: &str) -> std::result::Result<String, String> {
    let errs = qualified_name_errors(k);
    if errs.is_empty() {
        Ok(k.to_string())
    } else {
        Err(format!(
            "<nil>: Invalid value: {}: {}",
            go_quote(k),
            errs.join("; ")
        ))
    }
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// apimachinery's `RegexError`: the message, examples, and the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out += " or ";
        }
        out += &format!("'{e}', ");
    }
    out + &format!("regex used for validation is '{fmt}')")
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, whole string.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                    ok(f) && ok(l) && b.iter().all(|c| ok(c) || *c == b'-')
                }
                _ => false,
            }
        })
}

/// apimachinery's `IsQualifiedName`: what is wrong with `value` as a label
/// key (empty when nothing is).
pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push(format!("prefix part {}", max_len_error(253)));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// apimachinery's `IsValidLabelValue`: what is wrong with `value` as a
/// label value (empty when nothing is).
pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// The values of one requirement checked as Kubernetes' `NewRequirement`
/// checks them: one `values[i][key]: Invalid value: …` per bad value, in
/// the order of the sorted value set, aggregated as apimachinery's
/// `utilerrors.Aggregate` prints (bracketed when more than one).
/// The value of a `>` or `<` requirement: an integer that is also a valid
/// label value, with Kubernetes' errors for either failure.
fn integer_value(key: &str, v: &str) -> std::result::Result<i64, String> {
    let label = check_values(key, &[v.to_string()]);
    let not_integer = || {
        format!(
            "values[0]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
            go_quote(v)
        )
    };
    match (v.parse::<i64>(), label) {
        (Ok(n), Ok(())) => Ok(n),
        (Ok(_), Err(e)) => Err(e),
        (Err(_), Ok(())) => Err(not_integer()),
        (Err(_), Err(e)) => Err(format!("[{}, {e}]", not_integer())),
    }
}

fn check_values(key: &str, values: &[String]) -> std::result::Result<(), String> {
    let mut msgs: Vec<String> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let errs = label_value_errors(v);
        if !errs.is_empty() {
            let msg = format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(v),
                errs.join("; ")
            );
            if !msgs.contains(&msg) {
                msgs.push(msg);
            }
        }
    }
    match msgs.len() {
        0 => Ok(()),
        1 => Err(msgs.remove(0)),
        _ => Err(format!("[{}]", msgs.join(", "))),
    }
}

/// A string quoted as Go's `%q` quotes it (how Kubernetes prints bad values).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `" (a, b)"` → the sorted set `["a", "b"]`; as in Kubernetes an empty
/// member (`()`, `(a,)`) is the empty value.
fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    let set: std::collections::BTreeSet<String> =
        inner.split(',').map(|v| v.trim().to_string()).collect();
    Some(set.into_iter().collect())
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
    /// add `spec.nodeName` and `status.phase`, events their own fields,
    /// `events.events.k8s.io` the events.k8s.io/v1 labels of them).
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
                other if resource == crate::conversion::EVENTS_V1_FIELD_SET => {
                    match crate::conversion::EVENTS_V1_FIELD_LABELS
                        .iter()
                        .find(|(label, _)| *label == other)
                    {
                        Some((_, f)) => Field::Other(f),
                        None => {
                            return Err(Error::BadRequest(format!(
                                "field label not supported: {other}"
                            )))
                        }
                    }
                }
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
        let l = labels(&[("replicas", "3"), ("app", "web")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("replicas>2") && m("replicas > 2") && !m("replicas>3"));
        assert!(m("replicas<4") && !m("replicas<3") && m("replicas>0"));
        // A missing label or one that is not an integer never matches.
        assert!(!m("missing>1") && !m("missing<1") && !m("app>1") && !m("app<1"));
        assert!(LabelSelector::parse("env in prod").is_err());
    }

    #[test]
    fn bad_values_and_keys_are_worded_as_kubernetes_words_them() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        let e = err("app=bad value!");
        assert_eq!(e.code(), 400);
        assert_eq!(
            e.to_string(),
            "unable to parse requirement: values[0][app]: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        // The index is into the sorted value set; every bad value is named.
        let e = err("env in (z-, ok, -a)").to_string();
        assert!(
            e.starts_with("unable to parse requirement: [values[0][env]: Invalid value: \"-a\": "),
            "{e}"
        );
        assert!(
            e.contains(", values[2][env]: Invalid value: \"z-\": "),
            "{e}"
        );
        let long = "v".repeat(64);
        assert_eq!(
            err(&format!("a!={long}")).to_string(),
            format!("unable to parse requirement: values[0][a]: Invalid value: \"{long}\": must be no more than 63 characters")
        );
        assert_eq!(
            err("-app=x").to_string(),
            "unable to parse requirement: <nil>: Invalid value: \"-app\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert!(err("!Example.com/a")
            .to_string()
            .contains("Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of"));
        assert!(err("/a")
            .to_string()
            .ends_with(": prefix part must be non-empty"));
        assert!(err("a/b/c")
            .to_string()
            .contains(": a qualified name must consist of"));
        assert!(err(&format!("{}=x", "k".repeat(64)))
            .to_string()
            .ends_with(": name part must be no more than 63 characters"));
        let prefix = format!("{}.io", "p".repeat(251));
        assert!(err(&format!("{prefix}/a"))
            .to_string()
            .contains("prefix part must be no more than 253 characters"));
        assert_eq!(
            err("x>abc").to_string(),
            "unable to parse requirement: values[0]: Invalid value: \"abc\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert!(err("x<")
            .to_string()
            .ends_with("the value must be an integer"));
        assert!(err("x>-5")
            .to_string()
            .starts_with("unable to parse requirement: values[0][x]: Invalid value: \"-5\": a valid label must be"));
        // Control characters print as Go prints them.
        assert!(err("a=x\u{1}y").to_string().contains("\"x\\x01y\""));
        // Valid: qualified keys, empty values (also inside sets), 63 characters.
        let l = labels(&[("example.com/app", "web"), ("e", "")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("example.com/app=web") && m("e=") && m("e in ()") && m("e in (a,)"));
        assert!(m(&format!("x notin ({})", "v".repeat(63))));
        assert!(!m("e in (a)"));
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
        // events.k8s.io/v1 names the same fields its own way, and only so.
        let v1 = |s: &str| FieldSelector::parse(s, "events.events.k8s.io");
        assert!(
            v1("regarding.kind=Pod,regarding.name=web,reason=Started,source=kubelet")
                .unwrap()
                .matches(&ev)
        );
        assert!(!v1("regarding.name=db").unwrap().matches(&ev));
        assert_eq!(
            v1("involvedObject.name=web").unwrap_err().to_string(),
            "field label not supported: involvedObject.name"
        );
        let f = FieldSelector::parse("spec.nodeName=n1", "pods").unwrap();
        assert_eq!(f.required(Field::NodeName), Some("n1"));
    }
}
