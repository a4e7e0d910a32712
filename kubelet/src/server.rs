//! The kubelet's HTTP server on 127.0.0.1: `GET /healthz` and
//! `GET /containerLogs/{namespace}/{pod}/{container}` with kubelet's query
//! parameters (`previous`, `tailLines`, `limitBytes`, `follow`,
//! `timestamps`). The apiserver's `pods/{name}/log` proxies to it, so
//! `kubectl logs [--previous] [-f]` work.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::logs::{self, LogOptions};
use crate::runtime::process;

/// Where each known pod keeps its logs: `(namespace, name)` → sandbox
/// directory (`None`: a sim pod, whose logs are empty).
#[derive(Debug, Default)]
pub struct LogIndex {
    pods: RwLock<HashMap<(String, String), PodLogs>>,
}

/// A pod's container names and sandbox directory.
type PodLogs = (Vec<String>, Option<PathBuf>);

impl LogIndex {
    /// Records a pod, its container names and its sandbox directory.
    pub fn insert(
        &self,
        namespace: &str,
        name: &str,
        containers: Vec<String>,
        dir: Option<PathBuf>,
    ) {
        self.pods
            .write()
            .expect("log index lock")
            .insert((namespace.to_string(), name.to_string()), (containers, dir));
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.pods
            .write()
            .expect("log index lock")
            .remove(&(namespace.to_string(), name.to_string()));
    }

    fn get(&self, namespace: &str, name: &str) -> Option<PodLogs> {
        self.pods
            .read()
            .expect("log index lock")
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    previous: Option<String>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    follow: Option<String>,
    timestamps: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

/// The server's routes over `index`.
pub fn router(index: Arc<LogIndex>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(index)
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

async fn container_logs(
    State(index): State<Arc<LogIndex>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some((containers, dir)) = index.get(&namespace, &pod) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} not found on this node"),
        );
    };
    if !containers.contains(&container) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod}"),
        );
    }
    let opts = LogOptions {
        tail_lines: q.tail_lines.and_then(|n| usize::try_from(n).ok()),
        limit_bytes: q
            .limit_bytes
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0),
        timestamps: truthy(&q.timestamps),
    };
    let Some(dir) = dir else {
        return (StatusCode::OK, "").into_response();
    };
    let previous = truthy(&q.previous);
    let Some((path, exited)) = process::log_file(&dir, &container, previous) else {
        return if previous {
            error(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            )
        } else {
            error(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                ),
            )
        };
    };
    let raw = tokio::fs::read(&path).await.unwrap_or_default();
    let first = logs::render(&raw, &opts);
    if !truthy(&q.follow) || previous || exited {
        return (StatusCode::OK, first).into_response();
    }
    // Follow: the rendered tail first, then new complete lines as they are
    // written, until this instance exits.
    let state = Follow {
        dir,
        container,
        path,
        offset: raw.len() as u64,
        first: Some(first),
        timestamps: opts.timestamps,
        finishing: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(chunk)), s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

struct Follow {
    dir: PathBuf,
    container: String,
    path: PathBuf,
    offset: u64,
    first: Option<Vec<u8>>,
    timestamps: bool,
    /// The instance exited: one last read, then the end.
    finishing: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(first) = self.first.take() {
            if !first.is_empty() {
                return Some(first);
            }
        }
        loop {
            let raw = tokio::fs::read(&self.path).await.ok()?;
            let start = (self.offset as usize).min(raw.len());
            let new = &raw[start..];
            if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                self.offset += end as u64 + 1;
                let opts = LogOptions {
                    timestamps: self.timestamps,
                    ..Default::default()
                };
                return Some(logs::render(&new[..=end], &opts));
            }
            let current = process::log_file(&self.dir, &self.container, false);
            let done = match current {
                Some((p, exited)) => p != self.path || exited,
                None => true,
            };
            if self.finishing {
                return None;
            }
            if done {
                self.finishing = true;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
