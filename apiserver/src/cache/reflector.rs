//! The reflector: list, then one etcd watch from the list's revision; on
//! any watch failure (compaction, cancel, a lost connection) list again.
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
use crate::error::{Error, Result};
use crate::registry::prefix_end;
use crate::selector::Filter;

/// Pauses between failed list-and-watch attempts grow up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Stop {
    /// The cache is gone: end the task.
    Dropped,
    /// The watch failed: list again.
    Relist(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Relist(e)
    }
}

impl From<tonic::Status> for Stop {
    fn from(e: tonic::Status) -> Stop {
        Stop::Relist(e.into())
    }
}

pub(super) async fn run(cache: Weak<Inner>, mut alive: mpsc::Receiver<()>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match list_and_watch(&cache, &mut alive).await {
            Stop::Dropped => return,
            Stop::Relist(e) => {
                let name = cache.upgrade().map(|c| c.resource.name).unwrap_or_default();
                tracing::warn!(resource = name, error = %e, "watch cache re-lists");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if cache.strong_count() == 0 {
            return;
        }
    }
}

async fn list_and_watch(cache: &Weak<Inner>, alive: &mut mpsc::Receiver<()>) -> Stop {
    match try_list_and_watch(cache, alive).await {
        Ok(()) => Stop::Dropped,
        Err(stop) => stop,
    }
}

async fn try_list_and_watch(
    cache: &Weak<Inner>,
    alive: &mut mpsc::Receiver<()>,
) -> Result<(), Stop> {
    let (registry, resource, interval) = {
        let c = cache.upgrade().ok_or(Stop::Dropped)?;
        (c.registry.clone(), c.resource, c.config.bookmark_interval)
    };
    let page = registry
        .list(resource, &Filter::default(), 0, None, 0)
        .await?;
    let revision = page.revision;
    cache
        .upgrade()
        .ok_or(Stop::Dropped)?
        .replace(page.items, revision);

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
                    return Err(Error::Expired(format!("etcd compacted to {}", resp.compact_revision)).into());
                }
                if resp.canceled {
                    return Err(Error::Internal(format!("etcd canceled the watch: {}", resp.cancel_reason)).into());
                }
                if resp.created {
                    continue;
                }
                let c = cache.upgrade().ok_or(Stop::Dropped)?;
                for ev in &resp.events {
                    let Some(kv) = ev.kv.as_ref() else { continue };
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    let put = (ev.r#type == EtcdEvent::Put as i32).then_some((kv.value.as_slice(), kv.mod_revision));
                    if let Err(e) = c.apply(kv.mod_revision, key, put) {
                        tracing::error!(error = %e, "skipping an undecodable object");
                    }
                }
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
