//! The reflector: list, then one etcd watch from the list's revision. A
//! failed watch (a lost connection, a restarted member) is re-created from
//! the cache's revision without a re-list; only a compaction past that
//! revision (or a failed list) makes it list again.
//!
//! It holds only a `Weak` reference to its cache between steps, so it ends
//! when the cache is dropped (its `_alive` channel closes).

use std::sync::Weak;
use std::time::Duration;

use ballast_proto::etcdserverpb::{watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
use ballast_proto::mvccpb::event::EventType as EtcdEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Inner;
use crate::error::Error;
use crate::registry::prefix_end;
use crate::selector::Filter;

/// Pauses between failed attempts grow up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The first pause after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

enum Stop {
    /// The cache is gone: end the task.
    Dropped,
    /// The etcd watch failed (a lost connection, a restarted member):
    /// watch again from the cache's revision.
    Rewatch(Error),
    /// etcd cannot resume from the cache's revision (compacted), or the
    /// list itself failed: list again.
    Relist(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Rewatch(e)
    }
}

impl From<tonic::Status> for Stop {
    fn from(e: tonic::Status) -> Stop {
        Stop::Rewatch(e.into())
    }
}

pub(super) async fn run(cache: Weak<Inner>, mut alive: mpsc::Receiver<()>) {
    let mut backoff = MIN_BACKOFF;
    let mut must_list = true;
    loop {
        // Whether the etcd watch was established (then the next failure
        // starts over with a short pause).
        let mut watching = false;
        let stop = match list_and_watch(&cache, &mut alive, &mut must_list, &mut watching).await {
            Ok(()) => Stop::Dropped,
            Err(stop) => stop,
        };
        let name = cache.upgrade().map(|c| c.resource.name).unwrap_or_default();
        match stop {
            Stop::Dropped => return,
            Stop::Rewatch(e) => {
                tracing::warn!(resource = name, error = %e, "watch cache re-watches");
            }
            Stop::Relist(e) => {
                tracing::warn!(resource = name, error = %e, "watch cache re-lists");
                must_list = true;
            }
        }
        if watching {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = alive.recv() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if cache.strong_count() == 0 {
            return;
        }
    }
}

async fn list_and_watch(
    cache: &Weak<Inner>,
    alive: &mut mpsc::Receiver<()>,
    must_list: &mut bool,
    watching: &mut bool,
) -> Result<(), Stop> {
    let (registry, resource, interval) = {
        let c = cache.upgrade().ok_or(Stop::Dropped)?;
        (c.registry.clone(), c.resource, c.config.bookmark_interval)
    };
    if *must_list {
        let page = registry
            .list(resource, &Filter::default(), 0, None, 0)
            .await
            .map_err(Stop::Relist)?;
        cache
            .upgrade()
            .ok_or(Stop::Dropped)?
            .relist(page.items, page.revision);
        *must_list = false;
    }
    let revision = cache.upgrade().ok_or(Stop::Dropped)?.cache_revision();

    let prefix = resource.prefix();
    let (requests, rx) = mpsc::channel(16);
    let create = RequestUnion::CreateRequest(WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(&prefix),
        start_revision: revision + 1,
        ..Default::default()
    });
    requests
        .send(WatchRequest {
            request_union: Some(create),
        })
        .await
        .map_err(|_| Error::Internal("watch request channel closed".into()))?;
    let mut stream = registry
        .etcd()
        .watch_client()
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg? else {
                    return Err(Error::Internal("etcd closed the watch".into()).into());
                };
                if resp.compact_revision != 0 {
                    return Err(Stop::Relist(Error::Expired(format!(
                        "etcd compacted to {} (the cache is at {revision})",
                        resp.compact_revision
                    ))));
                }
                if resp.canceled {
                    return Err(Error::Internal(format!("etcd canceled the watch: {}", resp.cancel_reason)).into());
                }
                if resp.created {
                    *watching = true;
                    continue;
                }
                let c = cache.upgrade().ok_or(Stop::Dropped)?;
                c.apply(resp.events.into_iter().filter_map(|ev| {
                    let kv = ev.kv?;
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    let put = (ev.r#type == EtcdEvent::Put as i32).then_some((kv.value, kv.mod_revision));
                    Some((kv.mod_revision, key, put))
                }));
                c.publish();
            }
            _ = alive.recv() => return Err(Stop::Dropped),
            _ = ticker.tick() => {
                // Bookmarks move on for quiet resources too.
                let c = cache.upgrade().ok_or(Stop::Dropped)?;
                if let Ok(now) = registry.etcd().current_revision().await {
                    c.try_advance(now).await;
                }
                c.bookmark();
            }
        }
    }
}
