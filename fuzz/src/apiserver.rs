//! Targets on the apiserver's parsers: request objects (JSON decode,
//! defaulting, validation, unknown fields), PATCH bodies, label and field
//! selectors, and Kubernetes protobuf bodies.

use std::collections::BTreeMap;

use ballast_apiserver::fuzz_api::{
    apply_patch, create_object, decode_protobuf, resource_names, unknown_fields,
};
use ballast_apiserver::{Error, FieldSelector, LabelSelector};
use serde_json::{json, Value};

/// A client error (4xx) with a Kubernetes reason: what bad input must get.
#[track_caller]
fn client_error(e: &Error, allowed: &[u16]) {
    assert!(
        allowed.contains(&e.code()),
        "bad input answered {} {}: {e}",
        e.code(),
        e.reason()
    );
    assert!(!e.to_string().is_empty());
    let status = e.status();
    assert_eq!(status["code"], e.code());
    assert_eq!(status["reason"], e.reason());
}

/// Byte 0 picks the resource; the rest is a create's body. The answer is
/// 400 (not an object of the kind) or 422 (invalid), or an object that is
/// a fixed point: creating what was stored again stores the same thing
/// (defaulting never overwrites and validation accepts its own output).
pub fn object_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let names = resource_names();
    let resource = names[which as usize % names.len()];
    match create_object(resource, body) {
        Err(e) => client_error(&e, &[400, 422]),
        Ok((obj, warnings)) => {
            assert!(obj["metadata"].is_object(), "{obj}");
            assert!(obj["kind"].is_string(), "{obj}");
            let again = serde_json::to_vec(&obj).expect("a Value encodes");
            let (twice, _) = create_object(resource, &again)
                .unwrap_or_else(|e| panic!("re-creating the stored {resource} failed: {e}"));
            assert_eq!(twice, obj, "defaulting is idempotent for {resource}");
            // Unknown fields are warnings, never a reason to refuse.
            let _ = warnings;
        }
    }
}

/// The objects patches apply to.
fn originals() -> [Value; 3] {
    [
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "1"}],
                                     "ports": [{"containerPort": 80}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "annotations": {"a": "b"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"},
            "data": {"k": "v", "list": "[1,2]"}}),
    ]
}

const PATCH_TYPES: [&str; 4] = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Byte 0 picks the patch type (low bits) and the original (high bits);
/// the rest is the PATCH body. Errors are 400, 415 or 422; a merge patch
/// that applies is idempotent (RFC 7386), and a strategic merge patch
/// applied twice gives what it gave once.
pub fn patch(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let originals = originals();
    let original = &originals[(which >> 2) as usize % originals.len()];
    let kind = PATCH_TYPES[which as usize % PATCH_TYPES.len()];
    match apply_patch(kind, original, body) {
        Err(e) => client_error(&e, &[400, 415, 422]),
        Ok(patched) => {
            if kind.starts_with("application/merge") {
                let twice = apply_patch(kind, &patched, body).expect("applied once");
                assert_eq!(twice, patched, "merge patch is idempotent");
            }
            // Encoding never fails. (Not checked: that it reads back equal —
            // serde_json without `float_roundtrip` may change a float's last
            // digit, e.g. 3.3333333333333336e41; found by libFuzzer.)
            serde_json::to_vec(&patched).expect("a Value encodes");
        }
    }
}

/// Label maps to match selectors against: empty, and one built from the
/// words of the selector (so `a=b` meets `{a: b}`).
fn label_sets(s: &str) -> Vec<BTreeMap<String, String>> {
    let words: Vec<&str> = s
        .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        .filter(|w| !w.is_empty())
        .collect();
    let mut pairs = BTreeMap::new();
    for w in words.chunks(2) {
        pairs.insert(
            w[0].to_string(),
            w.get(1).copied().unwrap_or_default().to_string(),
        );
    }
    let first_only: BTreeMap<String, String> = pairs
        .iter()
        .take(1)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vec![BTreeMap::new(), pairs, first_only]
}

/// Byte 0 picks label (even) or field (odd) selectors and, for fields, the
/// resource; the rest (lossy UTF-8, split at the first `;`) is two
/// selectors. Parsing never panics and bad syntax is 400. When both parse
/// and neither has parentheses, their comma-joined conjunction parses too
/// and matches exactly what both match.
pub fn selectors(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (a, b) = text.split_once(';').unwrap_or((&text, ""));
    let plain = !text.contains(['(', ')']);
    if which % 2 == 0 {
        let (pa, pb) = (LabelSelector::parse(a), LabelSelector::parse(b));
        for r in [&pa, &pb] {
            if let Err(e) = r {
                client_error(e, &[400]);
            }
        }
        if let (Ok(pa), Ok(pb)) = (&pa, &pb) {
            assert_eq!(
                LabelSelector::parse(a).ok().as_ref(),
                Some(pa),
                "deterministic"
            );
            if plain {
                let joined = LabelSelector::parse(&format!("{a},{b}"))
                    .unwrap_or_else(|e| panic!("{a:?} and {b:?} parse but not joined: {e}"));
                for labels in label_sets(&text) {
                    assert_eq!(
                        joined.matches(&labels),
                        pa.matches(&labels) && pb.matches(&labels),
                        "{a:?},{b:?} on {labels:?}"
                    );
                }
                assert_eq!(joined.is_empty(), pa.is_empty() && pb.is_empty());
            }
        }
    } else {
        let resources = ["pods", "events", "nodes", "services"];
        let resource = resources[(which >> 1) as usize % resources.len()];
        let (pa, pb) = (
            FieldSelector::parse(a, resource),
            FieldSelector::parse(b, resource),
        );
        for r in [&pa, &pb] {
            if let Err(e) = r {
                client_error(e, &[400]);
            }
        }
        if let (Ok(pa), Ok(pb)) = (&pa, &pb) {
            assert_eq!(FieldSelector::parse(a, resource).ok().as_ref(), Some(pa));
            let joined = FieldSelector::parse(&format!("{a},{b}"), resource)
                .unwrap_or_else(|e| panic!("{a:?} and {b:?} parse but not joined: {e}"));
            if pb == &FieldSelector::default() {
                assert_eq!(&joined, pa, "{b:?} selects everything");
            }
        }
    }
}

/// A Kubernetes protobuf request body: decoded into a JSON object, or a
/// 400/415 error.
pub fn k8s_protobuf(data: &[u8]) {
    match decode_protobuf(data) {
        Err(e) => client_error(&e, &[400, 415]),
        Ok(obj) => {
            assert!(obj.is_object(), "{obj}");
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let _ = unknown_fields(&kind, &obj);
        }
    }
}
