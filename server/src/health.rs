//! etcd's health endpoints, on the client URLs and `--listen-metrics-urls`,
//! with etcd 3.5's answers (`server/etcdserver/api/etcdhttp/health.go`):
//!
//! - `/health[?serializable=true][&exclude=NOSPACE]` — JSON
//!   `{"health":"true","reason":""}`: no active alarm (bar excluded ones),
//!   a leader (not asked with `serializable=true`), and a one-key Range
//!   (linearizable unless `serializable=true`, which answers from this
//!   member alone, without a leader round-trip). 503 with the reason
//!   (`ALARM NOSPACE`, `RAFT NO LEADER`, `RANGE ERROR:…`) otherwise.
//! - `/livez` (check `serializable_read`) and `/readyz` (`data_corruption`,
//!   `linearizable_read`, `non_learner`, `serializable_read`), each check
//!   also on its own path (`/readyz/linearizable_read`). `?exclude=name`
//!   skips a check (an unknown one is only logged), `?verbose` lists each
//!   check as `[+]name ok`; a failure is a 503 listing every check.
//! - `/version` — `{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}`.
//! - [`HealthService`] — `grpc.health.v1.Health` for the whole server
//!   (service name `""`): SERVING while the member runs, NOT_SERVING once it
//!   shuts down; `Watch` streams each change.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ballast_proto::grpc_health_v1::{
    health_check_response::ServingStatus, health_server::Health, HealthCheckRequest,
    HealthCheckResponse,
};
use futures::Stream;
use tokio::sync::watch;

use crate::convert;
use crate::error::ServerError;
use crate::node::{Node, ETCD_VERSION};
use crate::pb::etcdserverpb as pb;

/// The cluster version `/version` reports (etcd: the lowest member's, as
/// major.minor.0).
const CLUSTER_VERSION: &str = "3.5.0";

/// One of etcd's named checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    DataCorruption,
    LinearizableRead,
    NonLearner,
    SerializableRead,
}

/// `/livez`'s checks.
const LIVEZ: &[Check] = &[Check::SerializableRead];
/// `/readyz`'s checks, in the order they are run and listed.
const READYZ: &[Check] = &[
    Check::DataCorruption,
    Check::LinearizableRead,
    Check::NonLearner,
    Check::SerializableRead,
];

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
            Check::SerializableRead => "serializable_read",
        }
    }

    /// Runs the check; the error is the text etcd puts after `failed: `.
    async fn run(self, node: &Node) -> Result<(), String> {
        match self {
            Check::DataCorruption => match has_alarm(node, pb::AlarmType::Corrupt) {
                true => Err("alarm activated: CORRUPT".into()),
                false => Ok(()),
            },
            Check::LinearizableRead => read(node, false).await,
            Check::SerializableRead => read(node, true).await,
            Check::NonLearner => {
                let me = node.member_id();
                let learner = node
                    .raft
                    .members()
                    .iter()
                    .any(|m| m.id == me && m.is_learner);
                match learner {
                    true => Err("not supported for learner".into()),
                    false => Ok(()),
                }
            }
        }
    }
}

fn has_alarm(node: &Node, alarm: pb::AlarmType) -> bool {
    node.cluster
        .read()
        .alarms
        .iter()
        .any(|(_, a)| *a == alarm as i32)
}

/// etcd's request timeout: 5 s plus two election timeouts.
fn request_timeout(node: &Node) -> Duration {
    Duration::from_secs(5) + node.config.election_timeout * 2
}

/// A one-key, keys-only Range, as etcd's checks issue it: from the local
/// store when `serializable`, else after a linearizable read barrier.
async fn read(node: &Node, serializable: bool) -> Result<(), String> {
    if !serializable {
        match tokio::time::timeout(request_timeout(node), node.linearizable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(ServerError::Timeout.to_string()),
        }
    }
    let req = pb::RangeRequest {
        key: vec![0],
        keys_only: true,
        limit: 1,
        serializable,
        ..Default::default()
    };
    node.store
        .range(&convert::range_from_pb(&req))
        .map(|_| ())
        .map_err(|e| ServerError::from(e).to_string())
}

/// The values of a query parameter, percent-decoded, empty ones dropped
/// (Go's `r.URL.Query()[name]` as etcd's `getQuerySet` reads it).
fn query_values(uri: &Uri, name: &str) -> Vec<String> {
    query_pairs(uri)
        .filter(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v)
        .collect()
}

fn query_has(uri: &Uri, name: &str) -> bool {
    query_pairs(uri).any(|(k, _)| k == name)
}

fn query_pairs(uri: &Uri) -> impl Iterator<Item = (String, String)> + '_ {
    uri.query()
        .unwrap_or("")
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
}

/// `application/x-www-form-urlencoded` decoding; a bad escape stays as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `http.Error`: plain text, not sniffed, a newline after the body.
fn http_error(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

/// Runs `checks` (those of `/livez` or `/readyz`, or one of them) the way
/// etcd's `CheckRegistry` does.
async fn run_checks(node: &Node, path: &str, checks: &[Check], uri: &Uri) -> Response {
    let mut failed = false;
    let mut reason = String::new();
    for check in checks {
        match check.run(node).await {
            Ok(()) => {
                let _ = writeln!(reason, "[+]{} ok", check.name());
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(reason, "[-]{} failed: {e}", check.name());
            }
        }
    }
    if failed {
        tracing::error!(path, reason = %reason, "Health check error");
        return http_error(StatusCode::SERVICE_UNAVAILABLE, &reason);
    }
    let body = match query_has(uri, "verbose") {
        true => format!("{reason}ok\n"),
        false => "ok\n".to_string(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `/livez` or `/readyz`: every check but the excluded ones.
async fn registry_root(node: &Node, path: &str, checks: &[Check], uri: &Uri) -> Response {
    let mut excluded = query_values(uri, "exclude");
    let run: Vec<Check> = checks
        .iter()
        .copied()
        .filter(|c| {
            let skip = excluded.iter().any(|e| e == c.name());
            excluded.retain(|e| e != c.name());
            !skip
        })
        .collect();
    if !excluded.is_empty() {
        let missing: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        tracing::warn!(
            missing_health_checks = %missing.join(","),
            "some health checks cannot be excluded"
        );
    }
    run_checks(node, path, &run, uri).await
}

/// `{"health":…,"reason":…}` for `/health`.
fn health_json(healthy: bool, reason: &str) -> String {
    let mut escaped = String::new();
    for c in reason.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(escaped, "\\u{:04x}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    format!(r#"{{"health":"{healthy}","reason":"{escaped}"}}"#)
}

/// etcd's `/health` verdict: `Err(reason)` when unhealthy.
async fn health_verdict(node: &Node, uri: &Uri) -> Result<(), String> {
    let excluded = query_values(uri, "exclude");
    let serializable = query_pairs(uri)
        .find(|(k, _)| k == "serializable")
        .is_some_and(|(_, v)| v == "true");
    let alarms = node.cluster.read().alarms.clone();
    for (_, alarm) in alarms {
        let name = match pb::AlarmType::try_from(alarm) {
            Ok(pb::AlarmType::Nospace) => "NOSPACE",
            Ok(pb::AlarmType::Corrupt) => "CORRUPT",
            _ => "NONE",
        };
        if excluded.iter().any(|e| e == name) {
            continue;
        }
        return Err(match name {
            "NONE" => "ALARM UNKNOWN".into(),
            n => format!("ALARM {n}"),
        });
    }
    if !serializable && node.raft.status().leader.is_none() {
        return Err("RAFT NO LEADER".into());
    }
    read(node, serializable)
        .await
        .map_err(|e| format!("RANGE ERROR:{e}"))
}

async fn health(node: &Node, uri: &Uri) -> Response {
    match health_verdict(node, uri).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            health_json(true, ""),
        )
            .into_response(),
        Err(reason) => {
            tracing::warn!(reason = %reason, "/health error");
            http_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &health_json(false, &reason),
            )
        }
    }
}

/// Adds `/health`, `/livez`, `/readyz` (with each check's own path) and
/// `/version` to a router.
pub fn routes(mut router: Router, node: Arc<Node>) -> Router {
    let n = node.clone();
    router = router.route(
        "/health",
        get(move |uri: Uri| {
            let node = n.clone();
            async move { health(&node, &uri).await }
        }),
    );
    for (root, checks) in [("/livez", LIVEZ), ("/readyz", READYZ)] {
        let n = node.clone();
        router = router.route(
            root,
            get(move |uri: Uri| {
                let node = n.clone();
                async move { registry_root(&node, root, checks, &uri).await }
            }),
        );
        for check in checks {
            let path = format!("{root}/{}", check.name());
            let n = node.clone();
            let one = [*check];
            let p = path.clone();
            router = router.route(
                &path,
                get(move |uri: Uri| {
                    let node = n.clone();
                    let path = p.clone();
                    async move { run_checks(&node, &path, &one, &uri).await }
                }),
            );
        }
        // An unknown check is Go's 404, not left to the gRPC service.
        router = router.route(
            &format!("{root}/{{*unknown}}"),
            get(|| async { http_error(StatusCode::NOT_FOUND, "404 page not found") }),
        );
    }
    router.route(
        "/version",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#),
            )
        }),
    )
}

/// `grpc.health.v1.Health` for the whole server (service `""`), as grpc-go's
/// health server that etcd registers: SERVING until the member shuts down.
#[derive(Clone)]
pub struct HealthService {
    serving: watch::Receiver<bool>,
}

impl HealthService {
    /// Follows `serving` (true: SERVING).
    pub fn new(serving: watch::Receiver<bool>) -> Self {
        HealthService { serving }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

fn serving_status(serving: bool) -> ServingStatus {
    match serving {
        true => ServingStatus::Serving,
        false => ServingStatus::NotServing,
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        if !req.get_ref().service.is_empty() {
            return Err(tonic::Status::not_found("unknown service"));
        }
        let serving = *self.serving.borrow();
        Ok(tonic::Response::new(answer(serving_status(serving))))
    }

    type WatchStream = HealthStream;

    /// The current status at once, then each change, until the member
    /// stops; an unknown service is SERVICE_UNKNOWN (grpc-go keeps such a
    /// stream open too).
    async fn watch(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthStream>, tonic::Status> {
        let known = req.get_ref().service.is_empty();
        let rx = self.serving.clone();
        let stream = futures::stream::unfold((rx, true), move |(mut rx, first)| async move {
            if !first {
                // Ends when the member is gone (the sender dropped).
                rx.changed().await.ok()?;
            }
            let status = match known {
                true => serving_status(*rx.borrow_and_update()),
                false => ServingStatus::ServiceUnknown,
            };
            Some((Ok(answer(status)), (rx, false)))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms() {
        let uri: Uri = "/readyz?exclude=non_learner&exclude=&verbose&exclude=a%5Fb+c"
            .parse()
            .unwrap();
        assert_eq!(query_values(&uri, "exclude"), ["non_learner", "a_b c"]);
        assert!(query_has(&uri, "verbose"));
        assert!(!query_has(&uri, "serializable"));
        let bad: Uri = "/health?x=%zz%4".parse().unwrap();
        assert_eq!(query_values(&bad, "x"), ["%zz%4"]);
    }

    #[test]
    fn health_json_escapes_the_reason() {
        assert_eq!(health_json(true, ""), r#"{"health":"true","reason":""}"#);
        assert_eq!(
            health_json(false, "RANGE ERROR:\"x\"\n"),
            r#"{"health":"false","reason":"RANGE ERROR:\"x\"\u000a"}"#
        );
    }
}
