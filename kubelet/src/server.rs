//! The kubelet's HTTP server on 127.0.0.1: `GET /healthz`, `GET /metrics`
//! (the process series and `kubelet_running_pods`; kube's authorization
//! maps it to `nodes/metrics`) and
//! `GET /containerLogs/{namespace}/{pod}/{container}` with kubelet's query
//! parameters (`previous`, `tailLines`, `limitBytes`, `follow`,
//! `timestamps`, `sinceSeconds`, `sinceTime`). The apiserver's `pods/{name}/log` proxies to it, so
//! `kubectl logs [--previous] [-f]` work. `/exec/…` and `/attach/…`
//! (`kubectl exec`, `attach`, `cp`): [`crate::exec`]; `/portForward/…`:
//! [`crate::portforward`].

use std::collections::HashMap;
use std::io::Seek;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ballast_metrics::prometheus_client::collector::Collector;
use ballast_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ballast_metrics::prometheus_client::metrics::gauge::ConstGauge;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

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

    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<PodLogs> {
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

/// `kubelet_running_pods`: the pods of the log index, read at each scrape.
#[derive(Debug)]
struct PodsCollector(Arc<LogIndex>);

impl Collector for PodsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let pods = self.0.pods.read().map(|p| p.len()).unwrap_or(0);
        let gauge = ConstGauge::new(pods as i64);
        gauge.encode(encoder.encode_descriptor(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            None,
            gauge.metric_type(),
        )?)
    }
}

/// The server's routes over `index`.
pub fn router(index: Arc<LogIndex>) -> Router {
    let mut registry = ballast_metrics::new_registry();
    registry.register_collector(Box::new(PodsCollector(index.clone())));
    let registry = Arc::new(registry);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move { ballast_metrics::response(&registry) }),
        )
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(crate::exec::exec).post(crate::exec::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(crate::exec::attach).post(crate::exec::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(crate::portforward::port_forward).post(crate::portforward::port_forward),
        )
        .with_state(index)
}

/// The router and its log index, reachable from outside the crate for
/// the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod fuzz_api {
    pub use super::{router, LogIndex};
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
    let file = match open_at(&path, opts.tail_lines).await {
        Ok(Some(file)) => file,
        Ok(None) => return (StatusCode::OK, "").into_response(),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {path:?}: {e}"),
            )
        }
    };
    // Everything is streamed in bounded chunks; with `follow` (of a running
    // instance) the stream goes on with new lines, across rotations, until
    // the instance exits.
    let state = LogStream {
        dir,
        container,
        live: path,
        file,
        buf: vec![0; logs::CHUNK],
        carry: Vec::new(),
        renderer: logs::Renderer::default(),
        timestamps: opts.timestamps,
        since: opts.since,
        remaining: opts.limit_bytes,
        follow: truthy(&q.follow) && !previous && !exited,
        rotated: false,
        finishing: false,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let chunk = s.next().await?;
        Some((chunk.map(Bytes::from), s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Opens the log at `path`, positioned where the last `tail` lines start
/// (at the start without `tail`); `None` when there is no file.
async fn open_at(path: &FsPath, tail: Option<usize>) -> std::io::Result<Option<tokio::fs::File>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(n) = tail {
            let end = file.metadata()?.len();
            let start = logs::tail_offset(&file, end, n)?;
            file.seek(std::io::SeekFrom::Start(start))?;
        }
        Ok(Some(tokio::fs::File::from_std(file)))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A container log being streamed: read [`logs::CHUNK`] bytes at a time,
/// rendered by whole stored lines.
struct LogStream {
    dir: PathBuf,
    container: String,
    /// The live log file's path.
    live: PathBuf,
    /// The file being read (the live one, or after a rotation a rotated one
    /// not yet read to its end), positioned after the bytes already read.
    file: tokio::fs::File,
    buf: Vec<u8>,
    /// Bytes read after the last complete stored line.
    carry: Vec<u8>,
    renderer: logs::Renderer,
    timestamps: bool,
    since: Option<Timestamp>,
    /// What `limitBytes` still allows.
    remaining: Option<usize>,
    follow: bool,
    /// Following: `file` was rotated away; read it to its end once more,
    /// then move to the next file.
    rotated: bool,
    /// Following: the instance exited; one last read, then the end.
    finishing: bool,
    done: bool,
}

impl LogStream {
    /// The next non-empty piece of output; `None` at the end.
    async fn next(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        loop {
            if self.done {
                return None;
            }
            let n = match self.file.read(&mut self.buf).await {
                Ok(n) => n,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if n > 0 {
                self.carry.extend_from_slice(&self.buf[..n]);
                let Some(end) = self.carry.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let out = self
                    .renderer
                    .push(&self.carry[..=end], self.timestamps, self.since);
                self.carry.drain(..=end);
                if let Some(out) = self.limit(out) {
                    return Some(Ok(out));
                }
                continue;
            }
            // End of the file, for now.
            if !self.follow || self.finishing {
                self.done = true;
                let rest = std::mem::take(&mut self.carry);
                let out = self.renderer.push(&rest, self.timestamps, self.since);
                return self.limit(out).map(Ok);
            }
            match self.wait().await {
                Ok(()) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Following, at the end of `file`: moves to the next file when it was
    /// rotated, notices the instance's exit, or waits for more output.
    async fn wait(&mut self) -> std::io::Result<()> {
        let ours = self.file.metadata().await?;
        if self.rotated {
            // Read to its end after the rotation was seen: nothing more
            // comes to this file. A stored line never spans two files.
            let next = logs::next_log(&self.live, &ours);
            match tokio::fs::File::open(&next).await {
                Ok(f) => {
                    self.file = f;
                    self.rotated = false;
                    self.carry.clear();
                    return Ok(());
                }
                // The writer renames before it opens the new live file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        } else {
            let live = tokio::fs::metadata(&self.live).await;
            if !live.is_ok_and(|m| logs::same_file(&m, &ours)) {
                self.rotated = true;
                return Ok(());
            }
            let current = process::log_file(&self.dir, &self.container, false);
            if current.is_none_or(|(p, exited)| p != self.live || exited) {
                self.finishing = true;
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }

    /// Cuts `out` to what `limitBytes` still allows (ending the stream when
    /// it is used up); `None` when there is nothing to send.
    fn limit(&mut self, mut out: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(left) = self.remaining.as_mut() {
            out.truncate(*left);
            *left -= out.len();
            if *left == 0 {
                self.done = true;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}
