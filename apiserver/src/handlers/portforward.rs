//! `pods/portforward` (GET and POST): kube-apiserver's `PortForwardREST`,
//! relaying the client's upgrade to the kubelet of the pod's node,
//! `/portForward/{ns}/{pod}?port=8080%2C9090` (kube's kubelet path; the
//! client's `ports` become the kubelet's one `port` list), through the
//! same relay as exec ([`super::exec::relay`]). The kubelet speaks the
//! protocols (see its `portforward` module): the WebSocket channel
//! protocol, whose ports are the query's, and kubectl's SPDY/3.1 (plain,
//! or tunnelled in a WebSocket), whose ports come in its streams.
//!
//! Authorization is exec's: `create` on `pods/portforward`, which a GET
//! upgrade needs as well as `get`. Errors are kube's: the pod's 404,
//! `pod p does not have a host assigned` (400), the kubelet's messages
//! for `ports` (`query parameter "port" is required` for a WebSocket,
//! `unable to parse "x" as a port: …`, `port "0" must be > 0`), and, as
//! kubectl says it, 400 `unable to forward port because pod is not
//! running. Current status=Pending` for a pod that is not running.

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::sync::Arc;

use super::exec::{authorize_upgrade, relay};
use super::subresources::pods;
use super::{parse_query, AppState};
use crate::auth::User;
use crate::error::{Error, Result};

/// The WebSocket subprotocol of kubectl's SPDY-over-WebSocket tunnel,
/// whose ports come in its streams' headers rather than the query.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// `…/pods/{name}/portforward`.
pub(crate) async fn port_forward(
    State(s): State<Arc<AppState>>,
    Extension(user): Extension<User>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    connect(&s, &user, &ns, &name, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Reads the `ports` values (each a comma-separated list) as kube's
/// kubelet reads its `port` values; `required` for a plain WebSocket,
/// which names its ports nowhere else.
pub(crate) fn parse_ports(values: &[&str], required: bool) -> Result<Vec<u16>> {
    let bad = Error::BadRequest;
    if values.is_empty() && required {
        return Err(bad("query parameter \"port\" is required".into()));
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err(bad("query parameter \"port\" cannot be empty".into()));
        }
        for p in value.split(',') {
            let port = if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err("invalid syntax")
            } else {
                p.parse::<u16>().map_err(|_| "value out of range")
            };
            match port {
                Err(why) => {
                    return Err(bad(format!(
                    "unable to parse {value:?} as a port: strconv.ParseUint: parsing {p:?}: {why}"
                )))
                }
                Ok(0) => return Err(bad(format!("port {value:?} must be > 0"))),
                Ok(port) => ports.push(port),
            }
        }
    }
    Ok(ports)
}

/// Whether `req` is a WebSocket upgrade naming its ports only in the
/// query (not kubectl's SPDY tunnel).
fn plain_websocket(req: &Request) -> bool {
    let has = |name: header::HeaderName, what: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(what))
        })
    };
    has(header::UPGRADE, "websocket") && !has(header::SEC_WEBSOCKET_PROTOCOL, SPDY_TUNNEL)
}

async fn connect(
    s: &AppState,
    user: &User,
    ns: &str,
    name: &str,
    req: Request,
) -> Result<Response> {
    if let Some(refused) = authorize_upgrade(s, user, &req)? {
        return Ok(refused);
    }
    let query = parse_query(req.uri().query().unwrap_or_default());
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "ports")
        .map(|(_, v)| v.as_str())
        .collect();
    let ports = parse_ports(&values, plain_websocket(&req))?;
    let pod = s.registry.get(pods(), Some(ns), name).await?.value()?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(Error::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(Error::BadRequest(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    let mut path = format!("/portForward/{ns}/{name}");
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        path += &format!("?port={}", list.join("%2C"));
    }
    relay(s, node_name, &path, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<Vec<u16>>) -> String {
        match r {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ports_are_checked_as_the_kubelet_checks_them() {
        assert_eq!(parse_ports(&["8080"], true).unwrap(), [8080]);
        assert_eq!(parse_ports(&["80,443", "9"], true).unwrap(), [80, 443, 9]);
        assert!(parse_ports(&[], false).unwrap().is_empty());
        assert_eq!(
            message(parse_ports(&[], true)),
            "query parameter \"port\" is required"
        );
        assert_eq!(
            message(parse_ports(&[""], true)),
            "query parameter \"port\" cannot be empty"
        );
        assert_eq!(
            message(parse_ports(&["80,abc"], true)),
            "unable to parse \"80,abc\" as a port: strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            message(parse_ports(&["65536"], true)),
            "unable to parse \"65536\" as a port: strconv.ParseUint: parsing \"65536\": value out of range"
        );
        assert_eq!(
            message(parse_ports(&["0"], false)),
            "port \"0\" must be > 0"
        );
    }

    #[test]
    fn only_a_plain_websocket_must_name_its_ports() {
        let req = |protocol: &str| {
            Request::builder()
                .header("upgrade", "websocket")
                .header("sec-websocket-protocol", protocol)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert!(plain_websocket(&req("v4.channel.k8s.io")));
        assert!(!plain_websocket(&req("SPDY/3.1+portforward.k8s.io")));
        let spdy = Request::builder()
            .header("upgrade", "SPDY/3.1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(!plain_websocket(&spdy));
    }
}
