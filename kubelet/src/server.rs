//! The kubelet's HTTP server on 127.0.0.1: `GET /healthz` and
//! `GET /containerLogs/{namespace}/{pod}/{container}` with kubelet's query
//! parameters (`previous`, `tailLines`, `limitBytes`, `follow`,
//! `timestamps`, `sinceSeconds`, `sinceTime`). The apiserver's `pods/{name}/log` proxies to it, so
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
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

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
    since_seconds: Option<i64>,
    since_time: Option<String>,
}

impl LogQuery {
    /// The earliest entry time asked for, validated as the apiserver does.
    fn since(&self) -> Result<Option<Timestamp>, String> {
        match (self.since_seconds, self.since_time.as_deref()) {
            (Some(_), Some(_)) => {
                Err("at most one of sinceTime or sinceSeconds may be specified".into())
            }
            (Some(s), None) if s < 1 => Err(format!(
                "sinceSeconds: Invalid value: {s}: must be greater than 0"
            )),
            (Some(s), None) => Ok(Timestamp::now()
                .checked_sub(SignedDuration::from_secs(s))
                .ok()
                .or(Some(Timestamp::MIN))),
            (None, Some(t)) => t
                .parse::<Timestamp>()
                .map(Some)
                .map_err(|e| format!("sinceTime: Invalid value: {t:?}: {e}")),
            (None, None) => Ok(None),
        }
    }
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
    let since = match q.since() {
        Ok(since) => since,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let opts = LogOptions {
        since,
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
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return (StatusCode::OK, "").into_response();
    };
    let (raw, offset) = match read_for(&mut file, opts.tail_lines).await {
        Ok(read) => read,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {path:?}: {e}"),
            )
        }
    };
    let first = logs::render(&raw, &opts);
    if !truthy(&q.follow) || previous || exited {
        return (StatusCode::OK, first).into_response();
    }
    // Follow: the rendered tail first, then new complete lines as they are
    // written, until this instance exits.
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return (StatusCode::OK, first).into_response();
    }
    let state = Follow {
        dir,
        container,
        path,
        file,
        carry: Vec::new(),
        renderer: logs::Renderer::resume(&raw, opts.since),
        first: Some(first),
        timestamps: opts.timestamps,
        since: opts.since,
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

/// Reads what the first response needs: the whole file, or with `tail`
/// only enough of its end to hold that many lines. Returns the bytes and the
/// file offset they end at.
async fn read_for(
    file: &mut tokio::fs::File,
    tail: Option<usize>,
) -> std::io::Result<(Vec<u8>, u64)> {
    let Some(n) = tail else {
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).await?;
        let end = raw.len() as u64;
        return Ok((raw, end));
    };
    let len = file.metadata().await?.len();
    let mut chunk: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let mut raw = Vec::new();
        (&mut *file).take(len - start).read_to_end(&mut raw).await?;
        let end = start + raw.len() as u64;
        if let Some(i) = logs::tail_start(&raw, start == 0, n) {
            raw.drain(..i);
            return Ok((raw, end));
        }
        chunk = chunk.saturating_mul(4);
    }
}

struct Follow {
    dir: PathBuf,
    container: String,
    path: PathBuf,
    /// The log file, positioned after the bytes already read.
    file: tokio::fs::File,
    /// Bytes read after the last complete stored line.
    carry: Vec<u8>,
    renderer: logs::Renderer,
    first: Option<Vec<u8>>,
    timestamps: bool,
    since: Option<Timestamp>,
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
            self.file.read_to_end(&mut self.carry).await.ok()?;
            if let Some(end) = self.carry.iter().rposition(|b| *b == b'\n') {
                let out = self
                    .renderer
                    .push(&self.carry[..=end], self.timestamps, self.since);
                self.carry.drain(..=end);
                if !out.is_empty() {
                    return Some(out);
                }
                continue;
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
