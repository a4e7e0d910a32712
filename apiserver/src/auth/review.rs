//! The review APIs: `authorization.k8s.io/v1` SelfSubjectAccessReview
//! ("may I?", `kubectl auth can-i`) and SubjectAccessReview ("may they?"),
//! and `authentication.k8s.io/v1` SelfSubjectReview ("who am I?",
//! `kubectl auth whoami`) and TokenReview ("whose token is this?", asked
//! by kubelets and other delegating servers). Nothing is stored: each answers the posted
//! object with its `status` filled in (201 Created, as kube-apiserver does).
//!
//! kubectl sends these as protobuf; the few fields they carry are read
//! here with a minimal wire-format reader (JSON bodies work too).

use serde_json::{json, Map, Value};

use super::request::Attributes;
use super::{Auth, Denied, User};
use crate::cache::WatchCache;
use crate::error::{Error, Result};

/// The protobuf media type.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub fn self_subject_access_review(
    auth: &Auth,
    caches: &[WatchCache],
    user: &User,
    content_type: &str,
    body: &[u8],
) -> Result<Value> {
    let obj = decode(content_type, body, Kind::SelfSubjectAccess)?;
    access_review(auth, caches, user.clone(), obj, "SelfSubjectAccessReview")
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: the user and
/// groups come from `spec`.
pub fn subject_access_review(
    auth: &Auth,
    caches: &[WatchCache],
    content_type: &str,
    body: &[u8],
) -> Result<Value> {
    let obj = decode(content_type, body, Kind::SubjectAccess)?;
    let spec = &obj["spec"];
    let user = User {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        uid: spec["uid"].as_str().unwrap_or_default().to_string(),
        groups: spec["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        extra: string_lists(&spec["extra"]),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(invalid(
            "SubjectAccessReview",
            "spec.user",
            "at least one of user or group must be specified",
        ));
    }
    access_review(auth, caches, user, obj, "SubjectAccessReview")
}

/// An `extra` map (`{key: [values]}`) from JSON; other shapes are empty.
fn string_lists(v: &Value) -> std::collections::BTreeMap<String, Vec<String>> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, vals)| {
            let vals = vals
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            (k.clone(), vals)
        })
        .collect()
}

/// `user` as an authentication.k8s.io/v1 `UserInfo`.
fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: whether
/// `spec.token` authenticates (for `spec.audiences`, the API audiences
/// when none), and as whom — what kube's bearer token authenticators
/// answer: the token file, then service account tokens. Client
/// certificates are no tokens: a review of one is unauthenticated.
pub fn token_review(
    auth: &Auth,
    caches: &[WatchCache],
    content_type: &str,
    body: &[u8],
) -> Result<Value> {
    let mut obj = decode(content_type, body, Kind::Token)?;
    let token = obj["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if token.is_empty() {
        return Err(Error::BadRequest(
            "token is required for TokenReview in authentication".into(),
        ));
    }
    let audiences: Vec<String> = obj["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let status = match auth.authenticate_token(&token, &audiences, caches) {
        Ok((user, auds)) => {
            let mut status = json!({"authenticated": true, "user": user_info(&user)});
            if !auds.is_empty() {
                status["audiences"] = json!(auds);
            }
            status
        }
        Err(why) if why.is_empty() => json!({"user": {}}),
        Err(why) => json!({"user": {}, "error": why}),
    };
    obj["apiVersion"] = json!("authentication.k8s.io/v1");
    obj["kind"] = json!("TokenReview");
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({"creationTimestamp": null});
    }
    obj["status"] = status;
    Ok(obj)
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`.
pub fn self_subject_review(user: &User) -> Value {
    let info = user_info(user);
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": info},
    })
}

fn invalid(kind: &'static str, field: &str, msg: &str) -> Error {
    Error::Invalid {
        group: "authorization.k8s.io",
        kind,
        name: String::new(),
        causes: vec![crate::error::Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: \"\": {msg}"),
        }],
    }
}

fn access_review(
    auth: &Auth,
    caches: &[WatchCache],
    user: User,
    mut obj: Value,
    kind: &'static str,
) -> Result<Value> {
    let spec = obj["spec"].clone();
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let ra = &spec["resourceAttributes"];
    let nra = &spec["nonResourceAttributes"];
    let attrs = match (ra.is_object(), nra.is_object()) {
        (true, false) => Attributes {
            user,
            verb: s(ra, "verb"),
            resource_request: true,
            path: String::new(),
            namespace: s(ra, "namespace"),
            api_group: s(ra, "group"),
            api_version: s(ra, "version"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            name: s(ra, "name"),
        },
        (false, true) => Attributes {
            user,
            verb: s(nra, "verb"),
            resource_request: false,
            path: s(nra, "path"),
            namespace: String::new(),
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        },
        (true, true) => {
            return Err(invalid(
                kind,
                "spec.nonResourceAttributes",
                "cannot be specified in combination with resourceAttributes",
            ))
        }
        (false, false) => {
            return Err(invalid(
                kind,
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    let status = match auth.authorize(&attrs, caches) {
        Ok(()) => json!({"allowed": true}),
        Err(Denied::Forbidden(reason)) if !reason.is_empty() => {
            json!({"allowed": false, "reason": reason})
        }
        Err(_) => json!({"allowed": false}),
    };
    obj["apiVersion"] = json!("authorization.k8s.io/v1");
    obj["kind"] = json!(kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({"creationTimestamp": null});
    }
    obj["status"] = status;
    Ok(obj)
}

/// Which review a protobuf body holds.
#[derive(Clone, Copy)]
enum Kind {
    SelfSubjectAccess,
    SubjectAccess,
    Token,
}

/// The body as JSON, from JSON or an enveloped protobuf message.
fn decode(content_type: &str, body: &[u8], kind: Kind) -> Result<Value> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media == PROTOBUF {
        return from_protobuf(body, kind);
    }
    if !(media.is_empty() || media == "application/json" || media.ends_with("+json")) {
        return Err(Error::UnsupportedMediaType(content_type.to_string()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not a valid JSON object: {e}")))?;
    if !v.is_object() {
        return Err(Error::BadRequest("the body must be a JSON object".into()));
    }
    Ok(v)
}

/// One protobuf field value.
enum Wire<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

/// The (field number, value) pairs of one message.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>> {
    let bad = || Error::BadRequest("malformed protobuf body".into());
    let mut out = Vec::new();
    while !b.is_empty() {
        let (tag, n) = varint(b).ok_or_else(bad)?;
        b = &b[n..];
        let wire = match tag & 7 {
            0 => {
                let (_, n) = varint(b).ok_or_else(bad)?;
                b = &b[n..];
                Wire::Varint
            }
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                if b.len() < n {
                    return Err(bad());
                }
                b = &b[n..];
                Wire::Fixed
            }
            2 => {
                let (len, n) = varint(b).ok_or_else(bad)?;
                b = &b[n..];
                let len = usize::try_from(len).map_err(|_| bad())?;
                if b.len() < len {
                    return Err(bad());
                }
                let (v, rest) = b.split_at(len);
                b = rest;
                Wire::Bytes(v)
            }
            _ => return Err(bad()),
        };
        out.push((tag >> 3, wire));
    }
    Ok(out)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn text(b: &[u8]) -> Result<Value> {
    std::str::from_utf8(b)
        .map(|s| json!(s))
        .map_err(|_| Error::BadRequest("protobuf string is not UTF-8".into()))
}

/// The string fields of a message, by number, as a JSON object.
fn strings(b: &[u8], names: &[(u64, &str)]) -> Result<Value> {
    let mut m = Map::new();
    for (f, v) in fields(b)? {
        if let (Some((_, name)), Wire::Bytes(s)) = (names.iter().find(|(n, _)| *n == f), v) {
            m.insert(name.to_string(), text(s)?);
        }
    }
    Ok(Value::Object(m))
}

fn from_protobuf(body: &[u8], kind: Kind) -> Result<Value> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| Error::BadRequest("protobuf body without the k8s envelope".into()))?;
    let mut raw: &[u8] = &[];
    for (f, v) in fields(inner)? {
        if let (2, Wire::Bytes(r)) = (f, v) {
            raw = r;
        }
    }
    let mut spec = Map::new();
    let mut groups = Vec::new();
    let mut audiences = Vec::new();
    for (f, v) in fields(raw)? {
        let (2, Wire::Bytes(spec_bytes)) = (f, v) else {
            continue;
        };
        for (f, v) in fields(spec_bytes)? {
            let Wire::Bytes(b) = v else { continue };
            match (f, kind) {
                (1, Kind::Token) => {
                    spec.insert("token".into(), text(b)?);
                }
                (2, Kind::Token) => audiences.push(text(b)?),
                (_, Kind::Token) => {}
                (1, _) => {
                    let ra = strings(
                        b,
                        &[
                            (1, "namespace"),
                            (2, "verb"),
                            (3, "group"),
                            (4, "version"),
                            (5, "resource"),
                            (6, "subresource"),
                            (7, "name"),
                        ],
                    )?;
                    spec.insert("resourceAttributes".into(), ra);
                }
                (2, _) => {
                    let nra = strings(b, &[(1, "path"), (2, "verb")])?;
                    spec.insert("nonResourceAttributes".into(), nra);
                }
                (3, Kind::SubjectAccess) => {
                    spec.insert("user".into(), text(b)?);
                }
                (4, Kind::SubjectAccess) => groups.push(text(b)?),
                (6, Kind::SubjectAccess) => {
                    spec.insert("uid".into(), text(b)?);
                }
                _ => {}
            }
        }
    }
    if !groups.is_empty() {
        spec.insert("groups".into(), Value::Array(groups));
    }
    if !audiences.is_empty() {
        spec.insert("audiences".into(), Value::Array(audiences));
    }
    Ok(json!({"metadata": {"creationTimestamp": null}, "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    #[test]
    fn protobuf_self_subject_access_review() {
        let ra = [field(1, b"ns"), field(2, b"create"), field(5, b"pods")].concat();
        let spec = field(1, &ra);
        let raw = [field(1, b""), field(2, &spec)].concat();
        let tm = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat();
        let v = decode(PROTOBUF, &body, Kind::SelfSubjectAccess).unwrap();
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "ns", "verb": "create", "resource": "pods"})
        );
        assert!(decode(PROTOBUF, b"k8s\0\x12\x7f", Kind::SelfSubjectAccess).is_err());
        assert!(decode("text/plain", b"{}", Kind::SelfSubjectAccess).is_err());
    }
}
