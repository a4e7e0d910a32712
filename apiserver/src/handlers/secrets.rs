//! core/v1 Secrets: defaulting and validation as Kubernetes does them.
//!
//! - `stringData` is write-only: its entries are merged into `data`
//!   (base64, winning over `data`'s) before validation and never stored,
//!   as kube-apiserver's v1 → internal conversion does.
//! - `type` defaults to `Opaque` and never changes; each well-known type
//!   requires its keys (`tls.crt` and `tls.key`, `.dockerconfigjson` holding
//!   a JSON object, …).
//! - `data` keys are config keys; the decoded values add up to at most
//!   1 MiB; an `immutable: true` Secret's `data` (and `immutable`) are fixed.
//!
//! Secret values never appear in an error: kube writes `<secret contents
//! redacted>` where it would quote one, and so does this module.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::Cause;

/// The largest total of a Secret's decoded values (kube's `MaxSecretSize`).
pub(super) const MAX_SECRET_SIZE: usize = 1 << 20;

/// What kube writes in place of a secret value in an error.
const REDACTED: &str = "<secret contents redacted>";

const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Kubernetes' `IsConfigMapKey`: every message for `key` (none when valid).
pub(crate) fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let charset = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || !key.chars().all(charset) {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    match key {
        "." => errs.push("must not be '.'".into()),
        ".." => errs.push("must not be '..'".into()),
        k if k.starts_with("..") => errs.push("must not start with '..'".into()),
        _ => {}
    }
    errs
}

/// Merges `stringData` into `data` and drops it, and defaults `type` to
/// `Opaque`. A `stringData` that is not an object of strings is left for
/// the typed check to refuse (400, as kube's decoder).
pub(super) fn default(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let merge = match map.get("stringData") {
        Some(Value::Object(sd)) if sd.values().all(Value::is_string) => Some(sd.clone()),
        Some(Value::Null) => Some(Map::new()),
        _ => None,
    };
    if let Some(string_data) = merge {
        map.remove("stringData");
        if !string_data.is_empty() {
            let data = map
                .entry("data")
                .or_insert_with(|| Value::Object(Map::new()));
            if data.is_null() {
                *data = Value::Object(Map::new());
            }
            if let Some(data) = data.as_object_mut() {
                let b64 = base64::engine::general_purpose::STANDARD;
                for (k, v) in string_data {
                    let v = v.as_str().unwrap_or_default();
                    data.insert(k, json!(b64.encode(v.as_bytes())));
                }
            }
        }
    }
    match map.get("type") {
        None | Some(Value::Null) => {
            map.insert("type".into(), json!("Opaque"));
        }
        Some(Value::String(t)) if t.is_empty() => {
            map.insert("type".into(), json!("Opaque"));
        }
        _ => {}
    }
}

/// The decoded values of `data` (a value that is not valid base64 — the
/// typed check refused those already — counts as empty).
fn decoded(obj: &Value) -> Vec<(String, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    obj["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let bytes = v
                .as_str()
                .and_then(|s| b64.decode(s).ok())
                .unwrap_or_default();
            (k.clone(), bytes)
        })
        .collect()
}

fn required(field: String) -> Cause {
    Cause {
        field,
        reason: "FieldValueRequired",
        message: "Required value".into(),
    }
}

fn forbidden(field: &str, msg: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueForbidden",
        message: format!("Forbidden: {msg}"),
    }
}

/// Go's `json.Unmarshal` into `map[string]interface{}`, as an error text.
fn json_object_error(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => None,
        Ok(other) => {
            let ty = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => return None, // null unmarshals into a map
            };
            Some(format!(
                "json: cannot unmarshal {ty} into Go value of type map[string]interface {{}}"
            ))
        }
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Kubernetes' `ValidateSecret`, and `ValidateSecretUpdate` when `old` is
/// the stored Secret.
pub(super) fn validate(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let data = decoded(obj);
    let mut total = 0usize;
    for (key, value) in &data {
        for msg in config_key_errors(key) {
            causes.push(Cause {
                field: format!("data[{key}]"),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {msg}", Value::String(key.clone())),
            });
        }
        total += value.len();
    }
    if total > MAX_SECRET_SIZE {
        causes.push(Cause {
            field: "data".into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {MAX_SECRET_SIZE} bytes"),
        });
    }
    let get = |k: &str| data.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let ty = obj["type"].as_str().unwrap_or_default();
    match ty {
        "kubernetes.io/service-account-token" => {
            let name = &obj["metadata"]["annotations"]["kubernetes.io/service-account.name"];
            if name.as_str().is_none_or(str::is_empty) {
                causes.push(required(
                    "metadata.annotations[kubernetes.io/service-account.name]".into(),
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match get(key) {
                None => causes.push(required(format!("data[{key}]"))),
                Some(v) => {
                    if let Some(e) = json_object_error(v) {
                        causes.push(Cause {
                            field: format!("data[{key}]"),
                            reason: "FieldValueInvalid",
                            message: format!("Invalid value: \"{REDACTED}\": {e}"),
                        });
                    }
                }
            }
        }
        // One of the two, even empty.
        "kubernetes.io/basic-auth" if get("username").is_none() && get("password").is_none() => {
            causes.push(required("data[username]".into()));
            causes.push(required("data[password]".into()));
        }
        "kubernetes.io/ssh-auth" if get("ssh-privatekey").is_none_or(Vec::is_empty) => {
            causes.push(required("data[ssh-privatekey]".into()));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if get(key).is_none() {
                    causes.push(required(format!("data[{key}]")));
                }
            }
        }
        // Opaque, bootstrap.kubernetes.io/token and any other type: no
        // rules on the contents (kube checks bootstrap tokens where they
        // are used).
        _ => {}
    }
    let Some(old) = old else {
        return;
    };
    if obj["type"] != old["type"] {
        causes.push(Cause {
            field: "type".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: field is immutable", obj["type"]),
        });
    }
    if old["immutable"] == json!(true) {
        const MSG: &str = "field is immutable when `immutable` is set";
        if obj["immutable"] != json!(true) {
            causes.push(forbidden("immutable", MSG));
        }
        if decoded(old) != data {
            causes.push(forbidden("data", MSG));
        }
    }
}

/// The `DATA` column: how many keys `data` has.
pub(super) fn data_count(obj: &Value) -> usize {
    obj["data"].as_object().map_or(0, Map::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut c = Vec::new();
        validate(obj, old, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn string_data_is_merged_into_data_and_dropped() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "zz", "c": "é"}});
        default(&mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "eA==", "b": "eno=", "c": "w6k="}, "type": "Opaque"})
        );
        let mut bad = json!({"stringData": {"b": 1}, "type": "kubernetes.io/tls"});
        default(&mut bad);
        assert_eq!(bad["stringData"]["b"], 1, "left for the typed check");
    }

    #[test]
    fn keys_sizes_and_types_are_checked() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let big = b64.encode(vec![0u8; MAX_SECRET_SIZE / 2 + 1]);
        let s = json!({"type": "Opaque", "data": {"a/b": "", "..x": "", "x": big, "y": big}});
        let got = causes(&s, None);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            "data[..x]: Invalid value: \"..x\": must not start with '..'"
        );
        assert_eq!(
            got[1],
            format!("data[a/b]: Invalid value: \"a/b\": {CONFIG_KEY_MSG}")
        );
        assert_eq!(got[2], "data: Too long: may not be more than 1048576 bytes");
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
        assert_eq!(causes(&tls, None), ["data[tls.key]: Required value"]);
        let docker = json!({"type": "kubernetes.io/dockerconfigjson",
                            "data": {".dockerconfigjson": b64.encode("[1]")}});
        assert_eq!(
            causes(&docker, None),
            ["data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type map[string]interface {}"]
        );
        let sa = json!({"type": "kubernetes.io/service-account-token"});
        assert_eq!(
            causes(&sa, None),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        let basic = json!({"type": "kubernetes.io/basic-auth", "data": {"password": ""}});
        assert!(causes(&basic, None).is_empty());
        let ssh = json!({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}});
        assert_eq!(causes(&ssh, None), ["data[ssh-privatekey]: Required value"]);
    }

    #[test]
    fn type_and_immutable_data_are_fixed() {
        let old = json!({"type": "Opaque", "immutable": true, "data": {"a": "eA=="}});
        let new =
            json!({"type": "kubernetes.io/basic-auth", "data": {"a": "eQ==", "username": ""}});
        assert_eq!(
            causes(&new, Some(&old)),
            [
                "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let same = json!({"type": "Opaque", "immutable": true, "data": {"a": "eA=="},
                          "metadata": {"labels": {"x": "y"}}});
        assert!(causes(&same, Some(&old)).is_empty());
    }

    #[test]
    fn config_keys() {
        assert!(config_key_errors("a.B_c-1").is_empty());
        assert_eq!(config_key_errors("."), ["must not be '.'"]);
        assert_eq!(config_key_errors(".."), ["must not be '..'"]);
        assert_eq!(config_key_errors(""), [CONFIG_KEY_MSG]);
        assert_eq!(config_key_errors(&"a".repeat(254)).len(), 1);
    }
}
