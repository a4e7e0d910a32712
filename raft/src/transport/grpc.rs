//! The gRPC transport (tonic).
//!
//! Sending: one bounded queue and one task per peer. The task keeps a
//! client stream (`Raft.Send`) open whose body takes batches of whatever is
//! queued;
//! a `MsgSnapshot` goes through its own `Raft.Snapshot` call, its image
//! streamed from the snapshot file to the peer's in chunks. When a
//! peer cannot be reached the task drops its queue, reports the peer
//! unreachable and reconnects with exponential back-off. When the queue is
//! full (peer slow or down) new messages are dropped: raft resends.
//!
//! Receiving: [`grpc_service`] is a tonic service the storage node mounts on
//! its peer listener; it decodes batches into the node's [`Inbox`].

use std::collections::HashMap;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::{Inbox, Transport};
use crate::error::Error;
use crate::membership::Member;
use crate::proto::{self, raft_client::RaftClient, raft_server::RaftServer};
use crate::snapshot::Incoming;

/// Snapshot chunks read ahead of the network (the sender's memory bound).
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// Tuning of the gRPC transport.
#[derive(Debug, Clone)]
pub struct GrpcTransportConfig {
    /// Messages queued per peer before new ones are dropped.
    pub queue_len: usize,
    /// Most messages in one batch.
    pub max_batch_messages: usize,
    /// A batch stops growing past this many bytes.
    pub max_batch_bytes: usize,
    /// Size of one snapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest gRPC message accepted or sent (a batch or a chunk).
    pub max_message_bytes: usize,
    /// Largest snapshot accepted.
    pub max_snapshot_bytes: usize,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TLS for `https://` peer addresses: the trusted CA(s) and this node's
    /// client certificate. An `https://` peer without it cannot be reached.
    pub tls: Option<ClientTlsConfig>,
}

impl Default for GrpcTransportConfig {
    fn default() -> Self {
        GrpcTransportConfig {
            queue_len: 4096,
            max_batch_messages: 512,
            max_batch_bytes: 4 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_message_bytes: 64 << 20,
            max_snapshot_bytes: 16 << 30,
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// Maps a member to the URL of its peer listener (e.g. `http://10.0.0.1:2380`).
pub type AddressResolver = Arc<dyn Fn(&Member) -> Option<String> + Send + Sync>;

/// The default [`AddressResolver`]: the context is UTF-8 text holding one or
/// more comma-separated URLs; the first is used (`http://` is added when no
/// scheme is given).
pub fn default_address(member: &Member) -> Option<String> {
    let text = std::str::from_utf8(&member.context).ok()?;
    let first = text.split(',').next()?.trim();
    if first.is_empty() {
        None
    } else if first.contains("://") {
        Some(first.to_string())
    } else {
        Some(format!("http://{first}"))
    }
}

struct Peer {
    addr: String,
    queue: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    id: u64,
    config: GrpcTransportConfig,
    resolver: AddressResolver,
    inbox: Arc<OnceLock<Inbox>>,
    peers: Mutex<HashMap<u64, Peer>>,
    runtime: tokio::runtime::Handle,
}

/// The production [`Transport`]: raft messages over tonic streams. Cheap to
/// clone; clones share the peer connections.
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<(u64, String)> = self
            .inner
            .peers
            .lock()
            .iter()
            .map(|(id, p)| (*id, p.addr.clone()))
            .collect();
        f.debug_struct("GrpcTransport")
            .field("id", &self.inner.id)
            .field("peers", &peers)
            .finish()
    }
}

impl GrpcTransport {
    /// A transport for node `id`, learning peer addresses from member contexts
    /// with [`default_address`]. Its tasks run on the current tokio runtime.
    pub fn new(id: u64, config: GrpcTransportConfig) -> Result<Self, Error> {
        Self::with_resolver(id, config, Arc::new(default_address))
    }

    /// Like [`new`](GrpcTransport::new) with a custom way to find a member's
    /// address in its context.
    pub fn with_resolver(
        id: u64,
        config: GrpcTransportConfig,
        resolver: AddressResolver,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Transport("GrpcTransport needs a tokio runtime".into()))?;
        Ok(GrpcTransport {
            inner: Arc::new(Inner {
                id,
                config,
                resolver,
                inbox: Arc::new(OnceLock::new()),
                peers: Mutex::new(HashMap::new()),
                runtime,
            }),
        })
    }

    /// Sets (or changes) the address of peer `id`. Usually learned from
    /// member contexts; call directly to override.
    pub fn set_peer(&self, id: u64, addr: impl Into<String>) {
        if id == self.inner.id {
            return;
        }
        let addr = addr.into();
        let mut peers = self.inner.peers.lock();
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (queue, rx) = mpsc::channel(self.inner.config.queue_len.max(1));
        let task = self.inner.runtime.spawn(run_peer(
            id,
            addr.clone(),
            rx,
            self.inner.inbox.clone(),
            self.inner.config.clone(),
        ));
        peers.insert(id, Peer { addr, queue, task });
    }

    /// Stops sending to peer `id`.
    pub fn remove_peer(&self, id: u64) {
        self.inner.peers.lock().remove(&id);
    }
}

impl Transport for GrpcTransport {
    fn bind(&self, inbox: Inbox) {
        let _ = self.inner.inbox.set(inbox);
    }

    fn send(&self, msgs: Vec<Message>) {
        let inbox = self.inner.inbox.get();
        let peers = self.inner.peers.lock();
        // Report each unreachable peer once per call, not once per message.
        let mut reported: Vec<u64> = Vec::new();
        for m in msgs {
            let to = m.to;
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let sent = match peers.get(&to) {
                Some(p) => p.queue.try_send(m).is_ok(),
                None => false,
            };
            if !sent {
                if let Some(inbox) = inbox {
                    if is_snapshot {
                        inbox.report_snapshot(to, false);
                    }
                    if !reported.contains(&to) {
                        reported.push(to);
                        inbox.report_unreachable(to);
                    }
                }
            }
        }
    }

    fn update_members(&self, members: &[Member]) {
        for m in members {
            if m.id == self.inner.id {
                continue;
            }
            match (self.inner.resolver)(m) {
                Some(addr) => self.set_peer(m.id, addr),
                None => tracing::warn!(peer = m.id, "no peer address in member context"),
            }
        }
        self.inner
            .peers
            .lock()
            .retain(|id, _| members.iter().any(|m| m.id == *id));
    }
}

/// Drops everything queued (raft resends). Returns false once the queue is
/// closed (the peer was removed).
fn drain(rx: &mut mpsc::Receiver<Message>, inbox: &OnceLock<Inbox>, peer: u64) -> bool {
    loop {
        match rx.try_recv() {
            Ok(m) => {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    if let Some(inbox) = inbox.get() {
                        inbox.report_snapshot(peer, false);
                    }
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

async fn run_peer(
    peer: u64,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    inbox: Arc<OnceLock<Inbox>>,
    cfg: GrpcTransportConfig,
) {
    let endpoint = match peer_endpoint(&addr, &cfg) {
        Ok(e) => e
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_while_idle(true),
        Err(e) => {
            tracing::error!(peer, %addr, error = %e, "invalid peer address");
            // Keep consuming so senders never see a full queue of junk.
            while let Some(m) = rx.recv().await {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    if let Some(inbox) = inbox.get() {
                        inbox.report_snapshot(peer, false);
                    }
                }
            }
            return;
        }
    };
    let unreachable = || {
        if let Some(inbox) = inbox.get() {
            inbox.report_unreachable(peer);
        }
    };
    // Shared with the stream body that takes messages from it (see
    // `PeerBatches`); locked only for a poll or a drain.
    let rx = Arc::new(Mutex::new(rx));
    let mut backoff = cfg.backoff_min;
    // Failures are logged as warnings at most every WARN_EVERY per peer
    // (a down peer is normal for a while; a TLS mismatch must be visible).
    let mut last_warn: Option<std::time::Instant> = None;
    let mut warn_now = move || {
        let now = std::time::Instant::now();
        let due = last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            last_warn = Some(now);
        }
        due
    };
    loop {
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                let error = error_chain(&e);
                if warn_now() {
                    tracing::warn!(peer, %addr, %error, "cannot connect to peer");
                } else {
                    tracing::debug!(peer, %addr, %error, "peer connect failed");
                }
                if !drain(&mut rx.lock(), &inbox, peer) {
                    return;
                }
                unreachable();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        let started = std::time::Instant::now();
        match stream_to(peer, channel, &rx, &inbox, &cfg).await {
            StreamEnd::QueueClosed => return,
            StreamEnd::Broken(why) => {
                // A stream that breaks at once (e.g. the peer refuses our
                // TLS client certificate after the handshake) backs off
                // like a failed connect; one that worked a while retries soon.
                if started.elapsed() >= STREAM_HEALTHY_AFTER {
                    backoff = cfg.backoff_min;
                }
                if warn_now() {
                    tracing::warn!(peer, %addr, %why, "lost the stream to peer");
                } else {
                    tracing::debug!(peer, %addr, %why, "peer stream ended");
                }
                if !drain(&mut rx.lock(), &inbox, peer) {
                    return;
                }
                unreachable();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
    }
}

/// A peer stream that lasted this long worked: reconnect without back-off.
const STREAM_HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// How often a failing peer connection is logged as a warning.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// An error and its sources, `a: b: c` (tonic's own message is only
/// "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The endpoint for a peer address, with TLS for `https://`.
fn peer_endpoint(addr: &str, cfg: &GrpcTransportConfig) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(addr.to_string()).map_err(|e| e.to_string())?;
    if !addr.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = cfg.tls.clone().ok_or(
        "https peer address but no peer TLS configured (--peer-cert-file, --peer-key-file)",
    )?;
    endpoint.tls_config(tls).map_err(|e| e.to_string())
}

enum StreamEnd {
    QueueClosed,
    Broken(String),
}

/// Streams queued messages over one connection until it breaks.
async fn stream_to(
    peer: u64,
    channel: Channel,
    rx: &Arc<Mutex<mpsc::Receiver<Message>>>,
    inbox: &Arc<OnceLock<Inbox>>,
    cfg: &GrpcTransportConfig,
) -> StreamEnd {
    let mut client = RaftClient::new(channel)
        .max_decoding_message_size(cfg.max_message_bytes)
        .max_encoding_message_size(cfg.max_message_bytes);
    let closed = Arc::new(AtomicBool::new(false));
    let batches = PeerBatches {
        peer,
        rx: rx.clone(),
        closed: closed.clone(),
        client: client.clone(),
        inbox: inbox.clone(),
        max_messages: cfg.max_batch_messages.max(1),
        max_bytes: cfg.max_batch_bytes,
        snapshot_chunk_bytes: cfg.snapshot_chunk_bytes,
    };
    match client.send(batches).await {
        Ok(_) if closed.load(Ordering::Relaxed) => StreamEnd::QueueClosed,
        Ok(_) => StreamEnd::Broken("receiver ended the stream".into()),
        Err(status) => StreamEnd::Broken(error_chain(&status)),
    }
}

/// The body of a `Raft.Send` stream: batches of whatever is queued for the
/// peer, taken from the queue as the connection polls for more (no task in
/// between: a message goes from the driver's queue to the HTTP/2 stream in
/// one hop). A `MsgSnapshot` is sent by a `Raft.Snapshot` call of its own.
struct PeerBatches {
    peer: u64,
    rx: Arc<Mutex<mpsc::Receiver<Message>>>,
    /// Set when the queue is closed (the peer was removed).
    closed: Arc<AtomicBool>,
    client: RaftClient<Channel>,
    inbox: Arc<OnceLock<Inbox>>,
    max_messages: usize,
    max_bytes: usize,
    snapshot_chunk_bytes: usize,
}

impl Stream for PeerBatches {
    type Item = proto::MessageBatch;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut rx = this.rx.lock();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        loop {
            let m = if batch.is_empty() {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => m,
                    Poll::Ready(None) => {
                        this.closed.store(true, Ordering::Relaxed);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else if batch.len() < this.max_messages && bytes < this.max_bytes {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                break;
            };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                tokio::spawn(send_snapshot(
                    this.client.clone(),
                    m,
                    this.inbox.clone(),
                    this.snapshot_chunk_bytes,
                ));
                continue;
            }
            match m.write_to_bytes() {
                Ok(raw) => {
                    bytes += raw.len();
                    batch.push(Bytes::from(raw));
                }
                Err(e) => tracing::warn!(peer = this.peer, error = %e, "encoding raft message"),
            }
        }
        Poll::Ready(Some(proto::MessageBatch { messages: batch }))
    }
}

async fn send_snapshot(
    mut client: RaftClient<Channel>,
    m: Message,
    inbox: Arc<OnceLock<Inbox>>,
    chunk_bytes: usize,
) {
    let peer = m.to;
    let ok = match inbox.get() {
        Some(own) => match stream_snapshot(&mut client, own, &m, chunk_bytes).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(peer, error = %e, "sending snapshot failed");
                false
            }
        },
        None => false,
    };
    if let Some(inbox) = inbox.get() {
        inbox.report_snapshot(peer, ok);
    }
}

/// Streams `m` and then its image, read from the snapshot file in chunks
/// by a blocking task a few chunks ahead of the network.
async fn stream_snapshot(
    client: &mut RaftClient<Channel>,
    own: &Inbox,
    m: &Message,
    chunk_bytes: usize,
) -> Result<(), Error> {
    let image = own.outgoing_image(m)?;
    let header = Bytes::from(m.write_to_bytes()?);
    let chunk_bytes = chunk_bytes.max(1);
    let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
    let reader = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let mut r = image.reader()?;
        let mut message = header;
        loop {
            let mut buf = BytesMut::zeroed(chunk_bytes);
            let mut n = 0;
            while n < chunk_bytes {
                match r.read(&mut buf[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            buf.truncate(n);
            let chunk = proto::SnapshotChunk {
                message: std::mem::take(&mut message),
                data: buf.freeze(),
            };
            // The receiver is gone: the call's status says why.
            if tx.blocking_send(chunk).is_err() || n < chunk_bytes {
                return Ok(());
            }
        }
    });
    let sent = client
        .snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader
        .await
        .map_err(|e| Error::Transport(format!("snapshot reader: {e}")))??;
    sent.map_err(|status| Error::Transport(status.to_string()))?;
    Ok(())
}

/// The receiving side of the gRPC transport for one node. Mount it with
/// [`grpc_service`].
#[derive(Debug, Clone)]
pub struct RaftService {
    inbox: Inbox,
    max_snapshot_bytes: usize,
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<proto::MessageBatch>>,
    ) -> Result<Response<proto::Done>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            let mut msgs = Vec::with_capacity(batch.messages.len());
            for raw in &batch.messages {
                match Message::parse_from_bytes(raw) {
                    Ok(m) => msgs.push(m),
                    Err(e) => tracing::warn!(error = %e, "dropping undecodable raft message"),
                }
            }
            if let Err(Error::Stopped) = self.inbox.deliver(msgs) {
                return Err(Status::unavailable("raft node stopped"));
            }
        }
        Ok(Response::new(proto::Done {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<proto::SnapshotChunk>>,
    ) -> Result<Response<proto::Done>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let m = Message::parse_from_bytes(&first.message)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot header: {e}")))?;
        if m.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument("not a snapshot message"));
        }
        let refused = |e: Error| Status::invalid_argument(format!("snapshot refused: {e}"));
        // File writes run off the async workers that carry raft traffic.
        let write = |mut incoming: Incoming, data: Bytes| {
            tokio::task::spawn_blocking(move || incoming.write(&data).map(|()| incoming))
        };
        let incoming = self
            .inbox
            .incoming_image(&m, self.max_snapshot_bytes as u64)
            .map_err(refused)?;
        let mut incoming = write(incoming, first.data)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refused)?;
        while let Some(chunk) = stream.message().await? {
            incoming = write(incoming, chunk.data)
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(refused)?;
        }
        tokio::task::spawn_blocking(move || incoming.finish())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refused)?;
        self.inbox
            .deliver_wait(vec![m])
            .await
            .map_err(|_| Status::unavailable("raft node stopped"))?;
        Ok(Response::new(proto::Done {}))
    }
}

/// The tonic service receiving raft traffic for the node behind `inbox`
/// (from [`RaftNode::inbox`](crate::RaftNode::inbox)); add it to the peer
/// listener's `tonic::transport::Server`.
pub fn grpc_service(inbox: Inbox) -> RaftServer<RaftService> {
    let cfg = GrpcTransportConfig::default();
    RaftServer::new(RaftService {
        inbox,
        max_snapshot_bytes: cfg.max_snapshot_bytes,
    })
    .max_decoding_message_size(cfg.max_message_bytes)
    .max_encoding_message_size(cfg.max_message_bytes)
}
