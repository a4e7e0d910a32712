//! `pods/exec` and `pods/attach` (GET and POST): kube-apiserver's
//! connect handlers, relaying the client's upgrade to the kubelet of the
//! pod's node, `/exec/{ns}/{pod}/{container}` or `/attach/…`.
//!
//! The apiserver does not end the WebSocket: as kube's
//! `UpgradeAwareHandler` does, it checks the request, sends it on to the
//! kubelet with the upgrade headers (`Connection`, `Upgrade`,
//! `Sec-WebSocket-Key`, `-Version`, `-Protocol`) and the kubelet's query
//! (`command`, `input`/`output`/`error`/`tty` as `1`), and when the
//! kubelet answers `101 Switching Protocols` it answers the client the
//! same and copies bytes both ways (bounded buffers of [`RELAY_BUFFER`])
//! until either side closes. The kubelet speaks the channel protocols
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`; see the kubelet's `exec`
//! module). Any other kubelet answer — an SPDY request (a POST, which
//! kubectl falls back to when a WebSocket upgrade is refused), a
//! container that is not running — is passed on as a `Status` with the
//! kubelet's code and text.
//!
//! Authorization: the filter authorizes the request's own verb (`get` for
//! the WebSocket GET, `create` for the POST); a GET must also be allowed
//! to `create` the subresource. This is Kubernetes 1.35's compound check
//! (`AuthorizePodWebsocketUpgradeCreatePermission`); 1.33 authorized the
//! GET as `get` alone, which let read-only roles run commands. The
//! default `admin` and `edit` roles grant both verbs.
//!
//! Errors are kube's: `container x is not valid for pod p`, `a container
//! name must be specified for pod p, choose one of: [a b]`, `pod p does
//! not have a host assigned` (400), the pod's 404.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use super::subresources::{encode_query_value, kubelet_address, pods};
use super::{parse_query, AppState};
use crate::auth::{self, Attributes, Denied, User};
use crate::error::{Error, Result};

/// Bytes buffered each way while relaying a stream.
pub(crate) const RELAY_BUFFER: usize = 32 * 1024;
/// How long the kubelet may take to answer the upgrade.
const KUBELET_ANSWER: Duration = Duration::from_secs(30);
/// The request headers of an upgrade passed on to the kubelet.
const UPGRADE_HEADERS: [&str; 6] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// The kubelet's `101` headers passed back to the client.
const ANSWER_HEADERS: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `…/pods/{name}/exec`.
pub(crate) async fn exec(
    State(s): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    connect(&s, &user, "exec", &ns, &name, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `…/pods/{name}/attach`.
pub(crate) async fn attach(
    State(s): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    connect(&s, &user, "attach", &ns, &name, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Go's `strconv.ParseBool`, as kube decodes the options' booleans.
fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(Error::BadRequest(format!(
            "{name}: invalid value {v:?}: not a boolean"
        ))),
    }
}

/// The kubelet's query for the client's `PodExecOptions` /
/// `PodAttachOptions` (`command` only for exec).
pub(crate) fn kubelet_query(query: &[(String, String)], sub: &str) -> Result<String> {
    let mut out: Vec<String> = Vec::new();
    if sub == "exec" {
        for (_, c) in query.iter().filter(|(k, _)| k == "command") {
            out.push(format!("command={}", encode_query_value(c)));
        }
    }
    for (theirs, ours) in [
        ("stdin", "input"),
        ("stdout", "output"),
        ("stderr", "error"),
        ("tty", "tty"),
    ] {
        let mut on = false;
        for (_, v) in query.iter().filter(|(k, _)| k == theirs) {
            on = parse_bool(theirs, v)?;
        }
        if on {
            out.push(format!("{ours}=1"));
        }
    }
    Ok(out.join("&"))
}

/// The container a request names, or the pod's only one, as kube's
/// `streamLocation` picks it.
pub(crate) fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String> {
    let names = |list: &str| -> Vec<String> {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let regular = names("containers");
    let init = names("initContainers");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) => {
            let known = regular
                .iter()
                .chain(&init)
                .chain(&names("ephemeralContainers"))
                .any(|n| n == c);
            if known {
                Ok(c.to_string())
            } else {
                Err(Error::BadRequest(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if regular.len() == 1 => Ok(regular[0].clone()),
        None if regular.is_empty() => Err(Error::BadRequest(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                regular.join(" ")
            );
            if !init.is_empty() {
                message += &format!(" or one of the init containers: [{}]", init.join(" "));
            }
            Err(Error::BadRequest(message))
        }
    }
}

/// A GET upgrade must also be allowed to `create` the subresource
/// (Kubernetes 1.35's compound check); any other method but POST is 405.
/// `Some` is the answer that refuses the request.
pub(crate) fn authorize_upgrade(
    s: &AppState,
    user: &User,
    req: &Request,
) -> Result<Option<Response>> {
    if req.method() == Method::GET {
        let query_text = req.uri().query().unwrap_or_default();
        let create = Attributes::from_request(user.clone(), "POST", req.uri().path(), query_text);
        if let Err(denied) = s.auth.authorize(&create, &s.caches) {
            let reason = match denied {
                Denied::Forbidden(reason) => reason,
                Denied::Unauthorized => String::new(),
            };
            return Ok(Some(super::json_response(
                403,
                auth::forbidden_status(&create, &reason).to_string().into(),
            )));
        }
    } else if req.method() != Method::POST {
        return Err(Error::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {}",
            req.method()
        )));
    }
    Ok(None)
}

async fn connect(
    s: &AppState,
    user: &User,
    sub: &str,
    ns: &str,
    name: &str,
    req: Request,
) -> Result<Response> {
    if let Some(refused) = authorize_upgrade(s, user, &req)? {
        return Ok(refused);
    }
    let query = parse_query(req.uri().query().unwrap_or_default());
    let kubelet_query = kubelet_query(&query, sub)?;
    let pod = s.registry.get(pods(), Some(ns), name).await?.value()?;
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = pick_container(&pod, name, asked)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(Error::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let path = format!("/{sub}/{ns}/{name}/{container}?{kubelet_query}");
    relay(s, node_name, &path, req).await
}

/// Sends the upgrade `req` on to the kubelet of `node_name` as
/// `path_and_query`; on its `101` answers the client the same and copies
/// bytes both ways until either side closes, else passes the kubelet's
/// refusal on.
pub(crate) async fn relay(
    s: &AppState,
    node_name: &str,
    path_and_query: &str,
    mut req: Request,
) -> Result<Response> {
    let (host, port) = kubelet_address(s, node_name).await?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let unreachable = |e: String| {
        Error::Internal(format!(
            "error dialing backend: unable to reach the kubelet at {authority}: {e}"
        ))
    };
    let stream = s.kubelet.connect(&host, port).await.map_err(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut forward = hyper::Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .header(header::HOST, &authority);
    for h in UPGRADE_HEADERS {
        for v in req.headers().get_all(h) {
            forward = forward.header(h, v);
        }
    }
    let forward = forward
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let client_side = hyper::upgrade::on(&mut req);
    let mut answer = tokio::time::timeout(KUBELET_ANSWER, sender.send_request(forward))
        .await
        .map_err(|_| unreachable("no answer in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let code = answer.status().as_u16();
    if code != 101 {
        let body = tokio::time::timeout(KUBELET_ANSWER, answer.into_body().collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)])
            .trim()
            .to_string();
        return Err(Error::Proxied {
            code: if code < 400 { 500 } else { code },
            message: if text.is_empty() {
                format!("the kubelet answered {code}")
            } else {
                text
            },
        });
    }
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for h in ANSWER_HEADERS {
        for v in answer.headers().get_all(h) {
            out.headers_mut()
                .append(HeaderName::from_static(h), v.clone());
        }
    }
    let kubelet_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, kubelet) = match (client_side.await, kubelet_side.await) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "a stream upgrade failed");
                return;
            }
        };
        let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
        let _ = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut kubelet,
            RELAY_BUFFER,
            RELAY_BUFFER,
        )
        .await;
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_become_the_kubelets_query() {
        let query = q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a&b"),
            ("stdin", "true"),
            ("stdout", "1"),
            ("stderr", "false"),
            ("container", "c"),
        ]);
        assert_eq!(
            kubelet_query(&query, "exec").unwrap(),
            "command=sh&command=-c&command=echo%20a%26b&input=1&output=1"
        );
        assert_eq!(kubelet_query(&query, "attach").unwrap(), "input=1&output=1");
        assert!(matches!(
            kubelet_query(&q(&[("tty", "yes")]), "exec"),
            Err(Error::BadRequest(m)) if m.contains("tty")
        ));
    }

    #[test]
    fn containers_are_picked_as_kube_picks_them() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
        assert_eq!(pick_container(&one, "p", Some("")).unwrap(), "a");
        let err = |r: Result<String>| match r {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(pick_container(&one, "p", Some("nope"))),
            "container nope is not valid for pod p"
        );
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        assert_eq!(
            err(pick_container(&two, "p", None)),
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&two, "p", Some("i")).unwrap(), "i");
    }
}
