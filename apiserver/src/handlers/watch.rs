//! Watch: a chunked stream of `{"type":…,"object":…}` lines from the cache.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::rest::ListQuery;
use super::AppState;
use crate::cache::{event_line, WatchFrom};
use crate::crd_schema::Schema;
use crate::error::{Error, Result};
use crate::resources::Resource;

/// A watch without `timeoutSeconds` ends after this long (clients re-watch).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) async fn watch(
    s: &AppState,
    r: &'static Resource,
    q: ListQuery,
    as_table: bool,
) -> Result<Response> {
    let cache = s.cache(r);
    let from = match q.resource_version {
        _ if q.send_initial_events => {
            cache
                .wait_fresh(q.resource_version.filter(|rv| *rv > 0))
                .await?;
            WatchFrom::Now
        }
        None => {
            cache.wait_fresh(None).await?;
            WatchFrom::Now
        }
        Some(0) => {
            cache.wait_fresh(Some(0)).await?;
            WatchFrom::Now
        }
        Some(rv) => {
            cache.wait_fresh(Some(rv)).await?;
            WatchFrom::Revision(rv)
        }
    };
    let end_marker = q.send_initial_events && q.bookmarks;
    let timeout = q
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    // A custom resource's schema defaults apply to what a watch sends as
    // to what a read returns (objects stored before a default existed).
    let defaults = r
        .is_custom()
        .then(|| s.served.snapshot().schema(r))
        .flatten()
        .filter(|schema| schema.has_defaults());
    let body = match cache.watch(from, q.filter, q.bookmarks, end_marker) {
        Ok(stream) => {
            let deadline = tokio::time::sleep(timeout);
            let table = as_table.then_some(r);
            if table.is_some() || defaults.is_some() {
                let lines = stream.take_until(deadline);
                Body::from_stream(lines.map(move |l| {
                    Ok::<Bytes, std::convert::Infallible>(rewrite_line(
                        l,
                        defaults.as_deref(),
                        table,
                    ))
                }))
            } else {
                // Everything queued for this watcher goes out in one write.
                let batches = stream.batched().take_until(deadline);
                Body::from_stream(batches.map(Ok::<Bytes, std::convert::Infallible>))
            }
        }
        // As kube-apiserver does: the watch opens, then says why it ends.
        Err(e @ Error::Expired(_)) => {
            Body::from(event_line("ERROR", e.status().to_string().as_bytes()))
        }
        Err(e) => return Err(e),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// One event line as this watcher wants it: the object with its schema's
/// defaults filled in (`defaults`), and as a one-row Table for
/// `kubectl get -w` (`table`). Done per watcher, so only those watchers
/// pay; the line is parsed and encoded once whatever is asked.
fn rewrite_line(line: Bytes, defaults: Option<&Schema>, table: Option<&'static Resource>) -> Bytes {
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&line) else {
        return line;
    };
    if !matches!(
        event["type"].as_str(),
        Some("ADDED" | "MODIFIED" | "DELETED")
    ) {
        return line;
    }
    let mut changed = defaults.is_some_and(|schema| schema.default(&mut event["object"]));
    if let Some(r) = table {
        let object = event["object"].take();
        let meta = serde_json::json!({"resourceVersion": object["metadata"]["resourceVersion"]});
        event["object"] = super::table::table(r, &[object], meta);
        changed = true;
    }
    if !changed {
        return line;
    }
    event_line(
        event["type"].as_str().unwrap_or_default(),
        event["object"].to_string().as_bytes(),
    )
}
