//! Just enough of Kubernetes' protobuf encoding to read the request bodies
//! typed clients send (kubectl's `create namespace`, `create configmap`,
//! `create role|clusterrole|rolebinding|clusterrolebinding` encode with
//! `application/vnd.kubernetes.protobuf`). Responses are
//! always JSON, which every client also accepts.
//!
//! The envelope: `k8s\0` + `runtime.Unknown { 1: TypeMeta { 1: apiVersion,
//! 2: kind }, 2: raw }`, where `raw` is the object's own message.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Decodes an enveloped Namespace, ConfigMap or RBAC object into its JSON
/// form.
pub fn decode(body: &[u8]) -> Result<Value> {
    let unsupported = |what: &str| Error::UnsupportedMediaType(format!("{MEDIA_TYPE} ({what})"));
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| Error::BadRequest("protobuf body without the k8s envelope".into()))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (field, v) in fields(inner)? {
        match (field, v) {
            (1, Wire::Bytes(tm)) => {
                for (f, v) in fields(tm)? {
                    match (f, v) {
                        (1, Wire::Bytes(s)) => api_version = utf8(s)?,
                        (2, Wire::Bytes(s)) => kind = utf8(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            for (f, v) in fields(raw)? {
                match (f, v) {
                    (1, Wire::Bytes(m)) => {
                        obj.insert("metadata".into(), object_meta(m)?);
                    }
                    (2, Wire::Bytes(spec)) => {
                        let mut finalizers = Vec::new();
                        for (f, v) in fields(spec)? {
                            if let (1, Wire::Bytes(s)) = (f, v) {
                                finalizers.push(json!(utf8(s)?));
                            }
                        }
                        obj.insert("spec".into(), json!({"finalizers": finalizers}));
                    }
                    _ => {}
                }
            }
        }
        ("v1", "ConfigMap") => {
            let mut data = Map::new();
            for (f, v) in fields(raw)? {
                match (f, v) {
                    (1, Wire::Bytes(m)) => {
                        obj.insert("metadata".into(), object_meta(m)?);
                    }
                    (2, Wire::Bytes(entry)) => {
                        let (k, v) = map_entry(entry)?;
                        data.insert(k, json!(v));
                    }
                    (4, Wire::Varint(b)) => {
                        obj.insert("immutable".into(), json!(b != 0));
                    }
                    (3, _) => return Err(unsupported("binaryData")),
                    _ => {}
                }
            }
            if !data.is_empty() {
                obj.insert("data".into(), Value::Object(data));
            }
        }
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => {
            let mut rules = Vec::new();
            for (f, v) in fields(raw)? {
                match (f, v) {
                    (1, Wire::Bytes(m)) => {
                        obj.insert("metadata".into(), object_meta(m)?);
                    }
                    (2, Wire::Bytes(rule)) => rules.push(policy_rule(rule)?),
                    (3, _) => return Err(unsupported("aggregationRule")),
                    _ => {}
                }
            }
            obj.insert("rules".into(), Value::Array(rules));
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => {
            let mut subjects = Vec::new();
            for (f, v) in fields(raw)? {
                match (f, v) {
                    (1, Wire::Bytes(m)) => {
                        obj.insert("metadata".into(), object_meta(m)?);
                    }
                    (2, Wire::Bytes(s)) => {
                        subjects.push(strings(s, &["kind", "apiGroup", "name", "namespace"])?)
                    }
                    (3, Wire::Bytes(r)) => {
                        obj.insert("roleRef".into(), strings(r, &["apiGroup", "kind", "name"])?);
                    }
                    _ => {}
                }
            }
            if !subjects.is_empty() {
                obj.insert("subjects".into(), Value::Array(subjects));
            }
        }
        _ => return Err(unsupported(&format!("{api_version} {kind}"))),
    }
    Ok(Value::Object(obj))
}

/// A message of string fields 1, 2, … named `names`; empty ones left out,
/// as JSON omits them.
fn strings(m: &[u8], names: &[&str]) -> Result<Value> {
    let mut out = Map::new();
    for (f, v) in fields(m)? {
        let name = usize::try_from(f)
            .ok()
            .and_then(|i| names.get(i.wrapping_sub(1)));
        if let (Some(name), Wire::Bytes(s)) = (name, v) {
            if !s.is_empty() {
                out.insert(name.to_string(), json!(utf8(s)?));
            }
        }
    }
    Ok(Value::Object(out))
}

/// An rbac/v1 PolicyRule: repeated strings 1 verbs, 2 apiGroups,
/// 3 resources, 4 resourceNames, 5 nonResourceURLs.
fn policy_rule(m: &[u8]) -> Result<Value> {
    const NAMES: [&str; 5] = [
        "verbs",
        "apiGroups",
        "resources",
        "resourceNames",
        "nonResourceURLs",
    ];
    let mut lists: [Vec<Value>; 5] = Default::default();
    for (f, v) in fields(m)? {
        if let (1..=5, Wire::Bytes(s)) = (f, v) {
            lists[(f - 1) as usize].push(json!(utf8(s)?));
        }
    }
    let mut out = Map::new();
    for (name, list) in NAMES.iter().zip(lists) {
        // `verbs` is required and always present; `apiGroups: [""]` (the
        // core group) arrives as one empty string and is kept.
        if !list.is_empty() || *name == "verbs" {
            out.insert(name.to_string(), Value::Array(list));
        }
    }
    Ok(Value::Object(out))
}

fn object_meta(m: &[u8]) -> Result<Value> {
    let mut meta = Map::new();
    let (mut labels, mut annotations, mut finalizers) = (Map::new(), Map::new(), Vec::new());
    for (f, v) in fields(m)? {
        match (f, v) {
            (1, Wire::Bytes(s)) if !s.is_empty() => {
                meta.insert("name".into(), json!(utf8(s)?));
            }
            (2, Wire::Bytes(s)) if !s.is_empty() => {
                meta.insert("generateName".into(), json!(utf8(s)?));
            }
            (3, Wire::Bytes(s)) if !s.is_empty() => {
                meta.insert("namespace".into(), json!(utf8(s)?));
            }
            (6, Wire::Bytes(s)) if !s.is_empty() => {
                meta.insert("resourceVersion".into(), json!(utf8(s)?));
            }
            (11, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                labels.insert(k, json!(v));
            }
            (12, Wire::Bytes(e)) => {
                let (k, v) = map_entry(e)?;
                annotations.insert(k, json!(v));
            }
            (14, Wire::Bytes(s)) => finalizers.push(json!(utf8(s)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

fn map_entry(e: &[u8]) -> Result<(String, String)> {
    let (mut k, mut v) = (String::new(), String::new());
    for (f, w) in fields(e)? {
        match (f, w) {
            (1, Wire::Bytes(s)) => k = utf8(s)?,
            (2, Wire::Bytes(s)) => v = utf8(s)?,
            _ => {}
        }
    }
    Ok((k, v))
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn bad() -> Error {
    Error::BadRequest("malformed protobuf body".into())
}

fn utf8(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad())
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(bad)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad())
}

/// The top-level fields of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(bad)?;
                let b = &buf[pos..end];
                pos = end;
                Wire::Bytes(b)
            }
            5 => {
                pos += 4;
                Wire::Fixed
            }
            _ => return Err(bad()),
        };
        if pos > buf.len() {
            return Err(bad());
        }
        out.push((tag >> 3, wire));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![((field << 3) | 2) as u8, b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn decodes_an_enveloped_namespace() {
        let type_meta = [ld(1, b"v1"), ld(2, b"Namespace")].concat();
        let label = [ld(1, b"team"), ld(2, b"a")].concat();
        let meta = [ld(1, b"demo"), ld(11, &label)].concat();
        let ns = [ld(1, &meta), ld(2, &ld(1, b"kubernetes"))].concat();
        let unknown = [ld(1, &type_meta), ld(2, &ns)].concat();
        let body = [b"k8s\0".to_vec(), unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["metadata"]["name"], "demo");
        assert_eq!(v["metadata"]["labels"]["team"], "a");
        assert_eq!(v["spec"]["finalizers"][0], "kubernetes");
        assert!(decode(b"k8s\0\x0a\xff").is_err());
        assert!(decode(b"{}").is_err());
    }

    #[test]
    fn decodes_rbac_roles_and_bindings() {
        let envelope = |kind: &[u8], raw: &[u8]| {
            let type_meta = [ld(1, b"rbac.authorization.k8s.io/v1"), ld(2, kind)].concat();
            [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, raw)].concat()
        };
        let rule = [ld(1, b"get"), ld(1, b"list"), ld(2, b""), ld(3, b"pods")].concat();
        let role = [ld(1, &ld(1, b"reader")), ld(2, &rule)].concat();
        let v = decode(&envelope(b"Role", &role)).unwrap();
        assert_eq!(v["metadata"]["name"], "reader");
        assert_eq!(
            v["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );

        let subject = [
            ld(1, b"User"),
            ld(2, b"rbac.authorization.k8s.io"),
            ld(3, b"alice"),
        ]
        .concat();
        let role_ref = [
            ld(1, b"rbac.authorization.k8s.io"),
            ld(2, b"Role"),
            ld(3, b"reader"),
        ]
        .concat();
        let binding = [
            ld(1, &ld(1, b"alice-reads")),
            ld(2, &subject),
            ld(3, &role_ref),
        ]
        .concat();
        let v = decode(&envelope(b"RoleBinding", &binding)).unwrap();
        assert_eq!(
            v["subjects"],
            json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}])
        );
        assert_eq!(v["roleRef"]["kind"], "Role");
        assert_eq!(v["roleRef"]["name"], "reader");

        // Aggregated ClusterRoles are not decoded: a clear 415, not a
        // silently dropped rule.
        let aggregated = [ld(1, &ld(1, b"agg")), ld(3, b"")].concat();
        assert!(matches!(
            decode(&envelope(b"ClusterRole", &aggregated)),
            Err(Error::UnsupportedMediaType(_))
        ));
    }
}
