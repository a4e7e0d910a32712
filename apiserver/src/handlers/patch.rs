//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! strategic merge patch — a merge patch whose lists of named things
//! (containers, env, volumes, ports, …) merge element by element on their
//! merge key, as kubectl's `apply`, `label` and `annotate` expect.
//! Server-side apply (`application/apply-patch+yaml`) is `apply`'s.

use serde_json::{Map, Value};

use super::schema::{depth, encoded_len, MAX_DEPTH};
use super::MAX_BODY;
use crate::error::{Error, Result};

/// The patch formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    /// From the request's Content-Type; 415 for anything else.
    pub fn from_media_type(media: &str) -> Result<PatchType> {
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(Error::UnsupportedMediaType(other.to_string())),
        }
    }
}

/// Applies `patch` to a copy of `original`.
pub fn apply(kind: PatchType, original: &Value, patch: &[u8]) -> Result<Value> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| Error::BadRequest(format!("the patch is not valid JSON: {e}")))?;
    let mut doc = original.clone();
    match kind {
        PatchType::Merge => merge(&mut doc, &patch),
        PatchType::Strategic => strategic(&mut doc, &patch),
        PatchType::Json => json_patch(&mut doc, &patch)?,
    }
    Ok(doc)
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The key a list field's elements merge on: the first of its list map
/// keys (server-side apply's table); other lists are replaced whole, as
/// in Kubernetes.
fn merge_key(field: &str, element: &Value) -> Option<&'static str> {
    crate::fieldmanager::list_map_keys(field, Some(element)).map(|keys| keys[0])
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let key = v
            .as_array()
            .and_then(|a| a.first())
            .and_then(|first| merge_key(k, first));
        match (
            key,
            v.as_array(),
            t.get_mut(k).and_then(Value::as_array_mut),
        ) {
            (Some(key), Some(items), Some(existing)) => merge_list(existing, items, key),
            _ => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                if v.is_object() {
                    strategic(slot, v);
                } else {
                    *slot = strip_directives(v);
                }
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut existing[i], item),
            (None, false) => existing.push(strip_directives(item)),
        }
    }
}

fn invalid_patch(msg: String) -> Error {
    Error::UnprocessablePatch(msg)
}

/// The parent container and last token of a JSON pointer.
fn pointer_parts(path: &str) -> Result<(String, String)> {
    if !path.starts_with('/') {
        return Err(invalid_patch(format!("invalid JSON pointer {path:?}")));
    }
    let i = path.rfind('/').expect("starts with a slash");
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..i].to_string(), last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = pointer_parts(path)?;
    let missing = || invalid_patch(format!("path {path:?} does not exist"));
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(missing)?
            };
            a.insert(i, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value> {
    let (parent, last) = pointer_parts(path)?;
    let missing = || invalid_patch(format!("path {path:?} does not exist"));
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// The most operations one JSON patch may hold (kube-apiserver's
/// `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;

/// How many times one JSON patch may have the whole document measured
/// (only a `move` to a deeper path than its source can need it).
const DEPTH_REMEASURES: usize = 8;

/// The number of reference tokens in a JSON pointer.
fn segments(path: &str) -> usize {
    path.bytes().filter(|b| *b == b'/').count()
}

/// Applies RFC 6902 operations with kube-apiserver's limits: at most
/// [`MAX_JSON_PATCH_OPS`] operations (413), copies adding at most
/// [`MAX_BODY`] bytes in all (422, as its json-patch library's
/// `AccumulatedCopySizeLimit`), and, beyond Kubernetes, never a document
/// nested deeper than [`MAX_DEPTH`] (422), checked after every operation
/// so no step builds what could not be stored or parsed again.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<()> {
    let ops = ops
        .as_array()
        .ok_or_else(|| Error::BadRequest("a JSON patch is a list of operations".into()))?;
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(Error::TooLargeRequest(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
            ops.len()
        )));
    }
    // An upper bound of the document's depth, exact at the start.
    let mut depth_bound = depth(doc);
    let mut remeasures = 0;
    let mut copied = 0usize;
    for op in ops {
        let path = op["path"].as_str().unwrap_or_default();
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| invalid_patch(format!("operation on {path:?} needs a value")))
        };
        // The depth the operation may reach; `None` when it cannot grow.
        let reach = match op["op"].as_str().unwrap_or_default() {
            "add" => {
                let v = value()?;
                let reach = segments(path) + depth(&v);
                add(doc, path, v)?;
                Some((reach, true))
            }
            "remove" => {
                remove(doc, path)?;
                None
            }
            "replace" => {
                let v = value()?;
                let reach = segments(path) + depth(&v);
                remove(doc, path)?;
                add(doc, path, v)?;
                Some((reach, true))
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(invalid_patch(format!("test failed at {path:?}")));
                }
                None
            }
            "move" => {
                let from = op["from"].as_str().unwrap_or_default();
                let v = remove(doc, from)?;
                add(doc, path, v)?;
                // The moved value was at least `segments(from)` deep.
                let reach = (segments(path) + depth_bound).saturating_sub(segments(from));
                Some((reach, false))
            }
            "copy" => {
                let from = op["from"].as_str().unwrap_or_default();
                let source = doc
                    .pointer(from)
                    .ok_or_else(|| invalid_patch(format!("path {from:?} does not exist")))?;
                copied = copied.saturating_add(encoded_len(source));
                if copied > MAX_BODY {
                    return Err(invalid_patch(format!(
                        "Unable to complete the copy, the accumulated size increase of copy is {copied}, exceeding the limit {MAX_BODY}"
                    )));
                }
                let reach = segments(path) + depth(source);
                let v = source.clone();
                add(doc, path, v)?;
                Some((reach, true))
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown JSON patch operation {other:?}"
                )))
            }
        };
        let Some((reach, exact)) = reach else {
            continue;
        };
        depth_bound = depth_bound.max(reach);
        if depth_bound > MAX_DEPTH && !exact && remeasures < DEPTH_REMEASURES {
            remeasures += 1;
            depth_bound = depth(doc);
        }
        if depth_bound > MAX_DEPTH {
            return Err(invalid_patch(format!(
                "the patched object would nest deeper than {MAX_DEPTH} levels"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: PatchType, doc: Value, patch: Value) -> Value {
        apply(kind, &doc, patch.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = run(
            PatchType::Merge,
            doc,
            json!({"a": {"b": null, "d": 3}, "l": [3]}),
        );
        assert_eq!(out, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_named_lists() {
        let doc = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "y:1"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x:2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "z"}]}});
        let out = run(PatchType::Strategic, doc, patch);
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x:2", "ports": [{"containerPort": 80}]},
                {"name": "c", "image": "z"}]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 3]});
        let ops = json!([
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
            {"op": "add", "path": "/l/1", "value": 2},
            {"op": "remove", "path": "/l/2"},
            {"op": "copy", "from": "/l", "path": "/m"},
        ]);
        let out = run(PatchType::Json, doc.clone(), ops);
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "9", "b/c": "2"}}, "l": [1, 2], "m": [1, 2]})
        );
        let failing = json!([{"op": "test", "path": "/l/0", "value": 5}]);
        assert!(matches!(
            apply(PatchType::Json, &doc, failing.to_string().as_bytes()),
            Err(Error::UnprocessablePatch(_))
        ));
    }

    #[test]
    fn json_patch_limits() {
        let doc = json!({"a": "x".repeat(1 << 20)});
        let too_many = Value::Array(vec![
            json!({"op": "test", "path": "/a", "value": 1});
            10_001
        ]);
        let e = apply(PatchType::Json, &doc, too_many.to_string().as_bytes()).unwrap_err();
        assert_eq!((e.code(), e.reason()), (413, "RequestEntityTooLarge"));
        assert_eq!(
            e.to_string(),
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        // Copies of the whole document: 1, 2, then 4 MiB copied in all.
        let doubling: Vec<Value> = (0..3)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/c{i}")}))
            .collect();
        let e = apply(
            PatchType::Json,
            &doc,
            json!(doubling).to_string().as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(
            e.to_string().ends_with("exceeding the limit 3145728"),
            "{e}"
        );
        // Nesting: a move into a deeper place is measured, not refused.
        let nested = (0..60).fold(json!([]), |v, _| json!([v]));
        let deep = |n: usize| format!("/x{}", "/0".repeat(n));
        let ops = json!([{"op": "add", "path": "/x", "value": nested},
                         {"op": "add", "path": "/y", "value": []},
                         {"op": "move", "from": "/y", "path": deep(61)}]);
        let out = apply(PatchType::Json, &json!({}), ops.to_string().as_bytes()).unwrap();
        assert_eq!(depth(&out), 63);
        // Past 127 levels: by a copy (measured exactly) or by a move (bound,
        // then measured), refused after the operation that got there.
        for last in [
            json!({"op": "copy", "from": "/x", "path": deep(122)}),
            json!({"op": "move", "from": "/x", "path": "/z/0/0/0/0/0"}),
        ] {
            let ops = json!([{"op": "add", "path": "/x", "value": nested},
                             {"op": "copy", "from": "/x", "path": deep(61)},
                             last]);
            let doc = json!({"z": [[[[[]]]]]});
            let e = apply(PatchType::Json, &doc, ops.to_string().as_bytes()).unwrap_err();
            assert_eq!(
                e.to_string(),
                "the server rejected our request due to an error in our request: the patched object would nest deeper than 127 levels",
                "{last}"
            );
        }
        // The same move one level shallower is served.
        let ops = json!([{"op": "add", "path": "/x", "value": nested},
                         {"op": "copy", "from": "/x", "path": deep(61)},
                         {"op": "move", "from": "/x", "path": "/z/0/0/0/0"}]);
        let out = apply(
            PatchType::Json,
            &json!({"z": [[[[[]]]]]}),
            ops.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(depth(&out), MAX_DEPTH);
    }
}
