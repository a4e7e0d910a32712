//! The etcd Watch service: one bidirectional stream carries many watchers.
//! With auth enabled, each create needs read permission on its key or range
//! (the stream's token is checked at every create); a refused create is
//! answered created-and-canceled with etcd 3.4's reason text.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ballast_storage::{WatchRequest as StoreWatch, WatchResponse as StoreResponse};
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, Credentials};
use crate::convert;
use crate::error::ServerError;
use crate::node::Node;
use crate::pb::etcdserverpb::{self as pb, watch_server::Watch};

/// Responses a stream's queue in the store may hold (it is bounded in bytes
/// too: `ballast_storage::STREAM_QUEUE_BYTES`).
const STREAM_BUFFER: usize = 1024;
/// Converted responses waiting for the gRPC encoder. Few: each is a copy of
/// its events, and the store's queue (bounded in bytes) is the buffer.
const OUTBOUND_BUFFER: usize = 4;

pub struct WatchService {
    node: Arc<Node>,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        // How often watchers that asked for progress_notify get one
        // (`--experimental-watch-progress-notify-interval`, etcd: 10 min).
        let progress_interval = node.config.progress_notify_interval();
        WatchService {
            node,
            progress_interval,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// The per-stream state: which watchers want fragments or progress reports.
struct Session {
    node: Arc<Node>,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    fragment: HashSet<i64>,
    progress: HashSet<i64>,
    /// Who opened the stream (the token is resolved at each create).
    creds: Credentials,
}

impl Session {
    async fn send(&self, resp: pb::WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    fn response(&self, watch_id: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.node.current_header()),
            watch_id,
            ..Default::default()
        }
    }

    async fn create(
        &mut self,
        ws: &ballast_storage::WatchStream,
        c: pb::WatchCreateRequest,
    ) -> bool {
        use pb::watch_create_request::FilterType;
        let denied = match auth::caller(&self.node, &self.creds).await {
            Ok(caller) => auth::check_read(&self.node, &caller, &c.key, &c.range_end).err(),
            Err(e) => Some(e),
        };
        if let Some(e) = denied {
            let mut r = self.response(if c.watch_id != 0 { c.watch_id } else { -1 });
            r.created = true;
            r.canceled = true;
            r.cancel_reason = e.go_status_text();
            return self.send(r).await;
        }
        let req = StoreWatch {
            watch_id: c.watch_id,
            key: c.key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        match ws.watch(req) {
            Ok(id) => {
                if c.fragment {
                    self.fragment.insert(id);
                }
                if c.progress_notify {
                    self.progress.insert(id);
                }
                let mut r = self.response(id);
                r.created = true;
                self.send(r).await
            }
            Err(e) => {
                let mut r = self.response(if c.watch_id != 0 { c.watch_id } else { -1 });
                r.created = true;
                r.canceled = true;
                r.cancel_reason = tonic::Status::from(ServerError::from(e))
                    .message()
                    .to_string();
                self.send(r).await
            }
        }
    }

    /// Forwards one store response, split into fragments when the watcher
    /// asked for them and it is larger than a request may be.
    async fn deliver(&mut self, r: StoreResponse) -> bool {
        if r.canceled {
            self.fragment.remove(&r.watch_id);
            self.progress.remove(&r.watch_id);
        }
        let header = self.node.header(r.revision);
        let events: Vec<_> = r.events.iter().map(convert::event_to_pb).collect();
        let base = pb::WatchResponse {
            header: Some(header),
            watch_id: r.watch_id,
            canceled: r.canceled,
            compact_revision: r.compact_revision,
            cancel_reason: r.cancel_reason,
            ..Default::default()
        };
        let limit = self.node.config.max_request_bytes;
        if !self.fragment.contains(&r.watch_id)
            || events.iter().map(|e| e.encoded_len()).sum::<usize>() <= limit
        {
            return self.send(pb::WatchResponse { events, ..base }).await;
        }
        let mut chunk = Vec::new();
        let mut size = 0;
        let mut chunks = Vec::new();
        for ev in events {
            let len = ev.encoded_len();
            if !chunk.is_empty() && size + len > limit {
                chunks.push(std::mem::take(&mut chunk));
                size = 0;
            }
            size += len;
            chunk.push(ev);
        }
        chunks.push(chunk);
        let last = chunks.len() - 1;
        for (i, events) in chunks.into_iter().enumerate() {
            let part = pb::WatchResponse {
                events,
                fragment: i != last,
                ..base.clone()
            };
            if !self.send(part).await {
                return false;
            }
        }
        true
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        use pb::watch_request::RequestUnion as U;
        let creds = Credentials::of(&req);
        let mut inbound = req.into_inner();
        let (out, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
        let node = self.node.clone();
        let progress_interval = self.progress_interval;
        tokio::spawn(async move {
            let (ws, mut events) = node.store.watch_stream(STREAM_BUFFER);
            let mut session = Session {
                node,
                out,
                fragment: HashSet::new(),
                progress: HashSet::new(),
                creds,
            };
            let mut tick = tokio::time::interval(progress_interval);
            tick.tick().await;
            loop {
                let alive = tokio::select! {
                    msg = inbound.next() => match msg {
                        Some(Ok(pb::WatchRequest { request_union: Some(u) })) => match u {
                            U::CreateRequest(c) => session.create(&ws, c).await,
                            U::CancelRequest(c) => {
                                if ws.cancel(c.watch_id) {
                                    session.fragment.remove(&c.watch_id);
                                    session.progress.remove(&c.watch_id);
                                    let mut r = session.response(c.watch_id);
                                    r.canceled = true;
                                    session.send(r).await
                                } else {
                                    true
                                }
                            }
                            U::ProgressRequest(_) => {
                                ws.request_progress();
                                true
                            }
                        },
                        Some(Ok(_)) => true,
                        Some(Err(_)) | None => false,
                    },
                    resp = events.recv() => match resp {
                        Some(r) => session.deliver(r).await,
                        None => false,
                    },
                    _ = tick.tick() => {
                        for id in &session.progress {
                            ws.notify_progress(*id);
                        }
                        true
                    }
                };
                if !alive {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
