//! The subresources other than `status`:
//!
//! - `pods/binding` (POST a `v1 Binding`): sets `spec.nodeName` and the
//!   `PodScheduled=True` condition; 409 when the pod is already bound.
//! - `deployments/scale`, `replicasets/scale`, `statefulsets/scale`
//!   (listed here, for routing and discovery): served by `super::scale`,
//!   as the custom resources' are.
//! - `pods/log` (GET): a proxy to the kubelet of the pod's node,
//!   `GET {http|https}://{InternalIP}:{kubeletEndpoint.Port}/containerLogs/{ns}/{pod}/{container}`,
//!   streamed back as `text/plain`; HTTPS with the apiserver's kubelet
//!   client certificate when it has one (`crate::kubelet_client`).
//! - `pods/exec`, `pods/attach`, `pods/portforward`: relayed to the same
//!   kubelet (`super::exec`, `super::portforward`).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::meta::now_rfc3339;
use super::schema::{self, Source};
use super::{json_response, AppState};
use crate::error::{Cause, Error, Result};
use crate::registry::conflict;
use crate::resources::Resource;

/// (resource, subresource) pairs served besides `status`.
pub(crate) const SUBRESOURCES: &[(&str, &str)] = &[
    ("pods", "binding"),
    ("pods", "log"),
    ("pods", "exec"),
    ("pods", "attach"),
    ("pods", "eviction"),
    ("serviceaccounts", "token"),
    ("deployments", "scale"),
    ("replicasets", "scale"),
    ("statefulsets", "scale"),
];

/// Conflicting retries of an unpinned write before giving up.
const RETRIES: usize = 5;
/// How long a kubelet may take to answer (and its error body to arrive).
const KUBELET_CONNECT: Duration = Duration::from_secs(10);
/// The kubelet port when the node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;

pub(super) fn pods() -> &'static Resource {
    Resource::find("", "pods").expect("pods are served")
}

fn parse_object(body: &[u8], kind: &str) -> Result<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized or malformed: json parse error: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(Error::BadRequest(
            "the object provided is not a JSON object".into(),
        ));
    }
    match v["kind"].as_str() {
        None | Some("") => Ok(v),
        Some(k) if k == kind => Ok(v),
        Some(k) => Err(Error::BadRequest(format!(
            "the kind of the provided object ({k}) does not match {kind}"
        ))),
    }
}

/// POST `…/pods/{name}/binding`: 201 with a Success Status.
pub(crate) async fn bind(s: &AppState, ns: &str, name: &str, body: Bytes) -> Result<Response> {
    let r = pods();
    let binding = parse_object(&body, "Binding")?;
    let meta = &binding["metadata"];
    if meta["name"]
        .as_str()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return Err(Error::BadRequest(
            "name in URL does not match name in Binding object".into(),
        ));
    }
    let invalid = |field: &str, reason: &'static str, message: String| Error::Invalid {
        group: "",
        kind: "Binding",
        name: name.to_string(),
        causes: vec![Cause {
            field: field.into(),
            reason,
            message,
        }],
    };
    let target = &binding["target"];
    let kind = target["kind"].as_str().unwrap_or_default();
    if !kind.is_empty() && kind != "Node" {
        return Err(invalid(
            "target.kind",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{kind}\": supported values: \"Node\", \"<empty>\""),
        ));
    }
    let node = target["name"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(invalid(
            "target.name",
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    let want_uid = meta["uid"].as_str().filter(|u| !u.is_empty());
    let want_rv = meta["resourceVersion"].as_str().filter(|v| !v.is_empty());
    let refuse = |detail: String| Error::Conflict {
        group: "",
        resource: "pods/binding",
        name: name.to_string(),
        detail,
    };
    for _ in 0..RETRIES {
        let current = s.registry.get(r, Some(ns), name).await?;
        let mut pod = current.value()?;
        if let Some(uid) = want_uid {
            let have = pod["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != have {
                return Err(refuse(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                )));
            }
        }
        if want_rv.is_some_and(|rv| rv != current.resource_version.to_string()) {
            return Err(conflict(r, name));
        }
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(refuse(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        if let Some(bound) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(refuse(format!(
                "pod {name} is already assigned to node \"{bound}\""
            )));
        }
        pod["spec"]["nodeName"] = json!(node);
        if let Some(extra) = meta["annotations"].as_object() {
            let anns = &mut pod["metadata"]["annotations"];
            if !anns.is_object() {
                *anns = json!({});
            }
            for (k, v) in extra {
                anns[k] = v.clone();
            }
        }
        set_condition(
            &mut pod,
            json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                   "lastTransitionTime": now_rfc3339()}),
        );
        // The binding's annotations land in the pod: they must be strings.
        schema::check(r, &pod, Source::Body)?;
        match s
            .registry
            .update(r, Some(ns), name, pod, current.resource_version)
            .await
        {
            Ok(_) => {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "code": 201});
                return Ok(json_response(201, status.to_string().into()));
            }
            Err(Error::Conflict { .. }) if want_rv.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(r, name))
}

/// Replaces (or adds) the status condition of `cond`'s type.
fn set_condition(pod: &mut Value, cond: Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let list = &mut pod["status"]["conditions"];
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("made an array");
    match list.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(c) => *c = cond,
        None => list.push(cond),
    }
}

/// A `metav1.LabelSelector` as the selector string Kubernetes prints
/// (`app=web,tier in (a,b)`), requirements sorted by key.
pub(crate) fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let mut values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let text = match e["operator"].as_str().unwrap_or_default() {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            };
            reqs.push((key, text));
        }
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// The query parameters `pods/log` passes on to the kubelet.
const LOG_PARAMS: [&str; 7] = [
    "follow",
    "previous",
    "tailLines",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
    "timestamps",
];

/// Every container name of a pod spec (init and ephemeral included).
fn container_names(spec: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|l| spec[l].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

pub(super) fn encode_query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The kubelet API of node `node_name`: its `InternalIP` (else
/// `Hostname`) address and `kubeletEndpoint` port.
pub(super) async fn kubelet_address(s: &AppState, node_name: &str) -> Result<(String, u16)> {
    let nodes = Resource::find("", "nodes").expect("nodes are served");
    let node = s.registry.get(nodes, None, node_name).await?.value()?;
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address_of = |t: &str| {
        addresses
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
            .map(str::to_string)
    };
    let host = address_of("InternalIP")
        .or_else(|| address_of("Hostname"))
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "node {node_name} has no InternalIP or Hostname address"
            ))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

/// GET `…/pods/{name}/log`: the kubelet's `containerLogs` answer, streamed.
pub(crate) async fn log(
    s: &AppState,
    ns: &str,
    name: &str,
    query: &[(String, String)],
) -> Result<Response> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for k in ["tailLines", "limitBytes", "sinceSeconds"] {
        if let Some(v) = get(k).filter(|v| !v.is_empty()) {
            if v.parse::<i64>().is_err() {
                return Err(Error::BadRequest(format!("invalid {k}: {v:?}")));
            }
        }
    }
    let pod = s.registry.get(pods(), Some(ns), name).await?.value()?;
    let spec = &pod["spec"];
    let regular: Vec<String> = spec["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !container_names(spec).iter().any(|n| n == c) {
                return Err(Error::BadRequest(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if regular.len() == 1 => regular[0].clone(),
        None => {
            return Err(Error::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                regular.join(" ")
            )))
        }
    };
    let node_name = spec["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(Error::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (host, port) = kubelet_address(s, node_name).await?;
    let params: Vec<String> = LOG_PARAMS
        .iter()
        .filter_map(|k| get(k).map(|v| format!("{k}={}", encode_query_value(v))))
        .collect();
    let mut path = format!("/containerLogs/{ns}/{name}/{container}");
    if !params.is_empty() {
        path = format!("{path}?{}", params.join("&"));
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let unreachable =
        |e: String| Error::Internal(format!("unable to reach the kubelet at {authority}: {e}"));
    let stream = s.kubelet.connect(&host, port).await.map_err(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method("GET")
        .uri(&path)
        .header(header::HOST, &authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let resp = tokio::time::timeout(KUBELET_CONNECT, sender.send_request(req))
        .await
        .map_err(|_| unreachable("no answer in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let code = resp.status().as_u16();
    if !(200..300).contains(&code) {
        let body = tokio::time::timeout(KUBELET_CONNECT, resp.into_body().collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)])
            .trim()
            .to_string();
        return Err(Error::Proxied {
            code,
            message: if text.is_empty() {
                format!("the kubelet answered {code}")
            } else {
                text
            },
        });
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    *out.status_mut() = StatusCode::OK;
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_like_kubernetes() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                                 {"key": "d", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel), "a=1,b=2,c in (x,y),!d");
        assert_eq!(selector_string(&Value::Null), "");
    }

    #[test]
    fn conditions_are_replaced_by_type() {
        let mut pod =
            json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}});
        set_condition(&mut pod, json!({"type": "PodScheduled", "status": "True"}));
        set_condition(&mut pod, json!({"type": "Ready", "status": "False"}));
        assert_eq!(pod["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(pod["status"]["conditions"][0]["status"], "True");
    }
}
