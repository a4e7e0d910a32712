//! The kubelet's `/portForward/{namespace}/{pod}`, as the apiserver's
//! `pods/portforward` reaches it (relaying the client's upgrade, as for
//! exec): connections to the pod's ports, which in the process runtime
//! are its IP in 127.0.0.0/8. A pod with a network namespace of its own
//! ([`crate::runtime::netns`]) is reached as kube's runtimes reach it: at
//! `localhost` inside that namespace (the pod's own loopback, so a port
//! bound only to the pod's `127.0.0.1` is reached), then, as the built-in
//! images bind the pod IP, at the pod IP.
//!
//! The WebSocket protocol (`portforward.k8s.io`, or `v4.channel.k8s.io`
//! as the official Python client offers, or none) forwards one
//! connection per port named in the query (`port=8080,9090`, repeatable):
//! every binary message is one channel byte and its data, and for the
//! i-th port channel `2i` carries the connection's bytes both ways and
//! `2i+1` the kubelet's errors. The kubelet's first message on each
//! channel is the port as two bytes, little-endian —
//!
//! ```text
//! kubelet → client   [0, 0x90, 0x1f]        data channel of port 8080
//! kubelet → client   [1, 0x90, 0x1f]        its error channel
//! client  → kubelet  [0, "GET / HTTP/1.1…"] to the pod
//! kubelet → client   [0, "HTTP/1.1 200…"]   from the pod
//! ```
//!
//! A port that cannot be reached gets kube's text on its error channel
//! (`error forwarding port 8080 to pod p, uid u: …`) and its pair ends;
//! the other ports go on. When the pod closes a connection its pair ends;
//! when every pair has ended the kubelet closes the WebSocket.
//!
//! kubectl speaks kube's port-forward streams over SPDY/3.1 ([`crate::spdy`]):
//! kubectl 1.31+ as a WebSocket with subprotocol
//! `SPDY/3.1+portforward.k8s.io` whose binary messages carry the SPDY
//! connection's bytes, falling back to (and older kubectl starting with)
//! a plain `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version:
//! portforward.k8s.io`. There the ports are in the streams: for each
//! local connection kubectl opens an error stream, then a data stream,
//! both with headers `streamType` (`error`|`data`), `port` and
//! `requestID`; the kubelet answers each with SYN_REPLY and, once a
//! request has both, connects to the pod. The data stream carries the
//! bytes (FIN half-closes); an error is written to the error stream; both
//! end with FIN when the pod closes the connection. Streams with bad
//! headers are refused (RST_STREAM) with kube's checks; one connection
//! may have [`MAX_PAIRS`] requests at once.
//!
//! Timeouts as kube's: a SPDY request whose data and error streams have
//! not both arrived within [`StreamingTimeouts::stream_creation`] (kube:
//! 30 s) gets `(request=<id>) timed out waiting for streams` on its error
//! stream and is dropped (kube's text names the connection too, as a Go
//! pointer); a connection that carries nothing either way for
//! [`StreamingTimeouts::idle`] (`--streaming-connection-idle-timeout`,
//! default 4 h) is closed: over SPDY every open stream is reset (CANCEL)
//! and a GOAWAY sent, as spdystream does, and a WebSocket is dropped.
//!
//! Buffers are bounded: a client message is at most [`MAX_MESSAGE`]
//! bytes, at most [`INBOX`] of them wait for a port's connection, and
//! the pod's bytes are read [`CHUNK`] at a time with at most [`OUTBOX`]
//! messages waiting for the socket.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::exec::percent_decode;
use crate::runtime::netns::PodNamespaces;
use crate::runtime::process;
use crate::server::LogIndex;
use crate::spdy;

/// The port-forward WebSocket protocol's name.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// The channel framing the official Python client offers.
pub const V4: &str = "v4.channel.k8s.io";
/// The plain upgrade kubectl falls back to.
pub const SPDY: &str = "SPDY/3.1";
/// kubectl 1.31+'s WebSocket subprotocol: a SPDY/3.1 connection tunnelled
/// in binary messages (KEP-4006).
pub const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The largest message a client may send.
pub const MAX_MESSAGE: usize = 1 << 20;
/// How much of the pod's answer is read (and sent) at a time.
pub const CHUNK: usize = 32 * 1024;
/// Messages waiting for the socket at most.
pub const OUTBOX: usize = 16;
/// Client messages waiting for one port's connection at most.
pub const INBOX: usize = 16;
/// Ports one WebSocket may forward: two channels each, numbered by a byte.
pub const MAX_PORTS: usize = 128;
/// How long connecting to the pod may take.
const DIAL: Duration = Duration::from_secs(10);
/// kube's stream-creation timeout for port-forward requests.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// kube's `--streaming-connection-idle-timeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);

/// The port-forward connections' timeouts (see the module's doc). The
/// server's router may carry them as an [`Extension`]; without one
/// kube's defaults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamingTimeouts {
    /// A connection idle this long is closed (zero: never).
    pub idle: Duration,
    /// How long a SPDY request's data and error streams may take to both
    /// arrive.
    pub stream_creation: Duration,
}

impl Default for StreamingTimeouts {
    fn default() -> StreamingTimeouts {
        StreamingTimeouts {
            idle: DEFAULT_IDLE_TIMEOUT,
            stream_creation: STREAM_CREATION_TIMEOUT,
        }
    }
}

/// When a connection last carried a frame or message, either way.
#[derive(Debug, Clone)]
struct Activity(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().expect("activity lock") = tokio::time::Instant::now();
    }

    /// Resolves once nothing was touched for `idle`; never for zero.
    async fn idle_for(&self, idle: Duration) {
        if idle.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = *self.0.lock().expect("activity lock");
            let Some(due) = last.checked_add(idle) else {
                return std::future::pending().await;
            };
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// What a connection is forwarded to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub ip: Ipv4Addr,
    pub pod: String,
    pub uid: String,
    /// The pod's own network namespace, if it has one.
    pub network: Option<PodNamespaces>,
}

impl Target {
    /// kube's text for a port that could not be forwarded.
    pub fn failure(&self, port: u16, cause: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {cause}",
            self.pod, self.uid
        )
    }

    /// Connects to the pod's `port`; the error is Go's text of why not.
    async fn dial(&self, port: u16) -> Result<TcpStream, String> {
        let Some(ns) = &self.network else {
            return dial_from_here(SocketAddr::from((self.ip, port))).await;
        };
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let first = match ns.connect(local, DIAL).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        if first.kind() == std::io::ErrorKind::ConnectionRefused {
            if let Ok(conn) = ns.connect(SocketAddr::from((self.ip, port)), DIAL).await {
                return Ok(conn);
            }
        }
        Err(format!(
            "failed to connect to localhost:{port} inside namespace of pod sandbox {}, IPv4: dial tcp4 {local}: connect: {}",
            ns.pid,
            go_error(&first)
        ))
    }
}

/// Connects to `addr` from the kubelet's own network namespace.
async fn dial_from_here(addr: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(DIAL, TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("dial tcp4 {addr}: connect: {}", go_error(&e))),
        Err(_) => Err(format!("dial tcp4 {addr}: i/o timeout")),
    }
}

/// Go's text of an I/O error (`connection refused`, without the errno).
fn go_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Reads the kubelet's `port` query values (each a comma-separated list)
/// as kube's kubelet does, with its messages.
pub fn parse_ports<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let mut any = false;
    for value in values {
        any = true;
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            let port = if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err("invalid syntax")
            } else {
                p.parse::<u16>().map_err(|_| "value out of range")
            };
            match port {
                Err(why) => {
                    return Err(format!(
                    "unable to parse {value:?} as a port: strconv.ParseUint: parsing {p:?}: {why}"
                ))
                }
                Ok(0) => return Err(format!("port {value:?} must be > 0")),
                Ok(port) => ports.push(port),
            }
        }
    }
    if !any {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

/// The pod `namespace/pod` of this node as a forwarding target.
fn target(index: &LogIndex, namespace: &str, pod: &str) -> Result<Target, (StatusCode, String)> {
    let Some((_, dir)) = index.get(namespace, pod) else {
        return Err((StatusCode::NOT_FOUND, "pod does not exist".into()));
    };
    let Some(dir) = dir else {
        return Err((
            StatusCode::BAD_REQUEST,
            "the simulated runtime runs no processes to forward to".into(),
        ));
    };
    let Some(ip) = process::sandbox_ip(&dir) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} has no sandbox yet"),
        ));
    };
    let uid = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Target {
        ip,
        pod: pod.to_string(),
        uid,
        network: process::sandbox_network(&dir),
    })
}

/// `GET`/`POST /portForward/{namespace}/{pod}`: a WebSocket upgrade
/// (the channel protocol, or kubectl's SPDY tunnel) or `Upgrade: SPDY/3.1`.
pub async fn port_forward(
    State(index): State<Arc<LogIndex>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    timeouts: Option<Extension<StreamingTimeouts>>,
    req: Request,
) -> Response {
    let timeouts = timeouts.map(|Extension(t)| t).unwrap_or_default();
    let target = match target(&index, &namespace, &pod) {
        Ok(t) => t,
        Err((code, message)) => return error(code, message),
    };
    let (mut parts, _body) = req.into_parts();
    let offered = |name: &str| -> Vec<String> {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let upgrade = offered("upgrade");
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let tunnel = offered("sec-websocket-protocol")
            .iter()
            .any(|p| p == SPDY_TUNNEL);
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(rejection) => return rejection.into_response(),
        };
        if tunnel {
            let ws = ws
                .protocols([SPDY_TUNNEL])
                .max_message_size(MAX_MESSAGE)
                .max_frame_size(MAX_MESSAGE)
                .write_buffer_size(0)
                .max_write_buffer_size(4 * CHUNK);
            return ws.on_upgrade(move |socket| tunnel_spdy(socket, target, timeouts));
        }
        return websocket(ws, target, query.unwrap_or_default(), timeouts);
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case(SPDY)) {
        let asked = offered("x-stream-protocol-version");
        if !asked.is_empty() && !asked.iter().any(|p| p == PORT_FORWARD) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports [{}], server supports [{PORT_FORWARD}]",
                    asked.join(" ")
                ),
            );
        }
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unable to upgrade: this connection cannot be taken over".into(),
            );
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve_spdy(TokioIo::new(upgraded), target, timeouts).await,
                Err(e) => tracing::debug!(error = %e, "a SPDY upgrade failed"),
            }
        });
        let mut answer = Response::new(axum::body::Body::empty());
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = answer.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static(SPDY));
        if !asked.is_empty() {
            h.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(PORT_FORWARD),
            );
        }
        return answer;
    }
    error(
        StatusCode::BAD_REQUEST,
        format!("unable to upgrade: missing upgrade headers in request: a WebSocket ({PORT_FORWARD}, {V4} or {SPDY_TUNNEL}) or {SPDY}"),
    )
}

/// The channel protocol over `ws`, for the ports of `query`.
fn websocket(
    ws: WebSocketUpgrade,
    target: Target,
    query: String,
    timeouts: StreamingTimeouts,
) -> Response {
    let values: Vec<String> = query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == "port").then(|| percent_decode(v))
        })
        .collect();
    let ports = match parse_ports(values.iter().map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if ports.len() > MAX_PORTS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_PORTS} ports may be forwarded over one WebSocket"),
        );
    }
    let ws = ws
        .protocols([PORT_FORWARD, V4])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * CHUNK);
    ws.on_upgrade(move |socket| run_websocket(socket, target, ports, timeouts.idle))
}

/// kubectl's tunnel: the SPDY connection's bytes in binary messages,
/// both ways, served as a plain SPDY connection would be.
async fn tunnel_spdy(socket: WebSocket, target: Target, timeouts: StreamingTimeouts) {
    let (ours, theirs) = tokio::io::duplex(2 * CHUNK);
    let session = tokio::spawn(serve_spdy(ours, target, timeouts));
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let up = async {
        while let Some(Ok(msg)) = stream.next().await {
            let bytes = match msg {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    session.abort();
}

/// A message for the client: `channel`, then `data`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    Message::Binary(Bytes::from(out))
}

async fn run_websocket(socket: WebSocket, target: Target, ports: Vec<u16>, idle: Duration) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let activity = Activity::new();
    let written = activity.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
            written.touch();
        }
        let _ = sink.close().await;
    });
    let mut inboxes: Vec<Option<mpsc::Sender<Bytes>>> = Vec::with_capacity(ports.len());
    let mut pairs = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        // At most MAX_PORTS: both channels fit in a byte.
        let (data, errors) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, errors] {
            if out_tx
                .send(frame(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(INBOX);
        inboxes.push(Some(in_tx));
        let out = out_tx.clone();
        let target = target.clone();
        pairs.spawn(async move {
            let wrap = move |b: &[u8]| frame(data, b);
            if let Err(cause) = forward(&target, port, in_rx, out.clone(), wrap).await {
                let text = target.failure(port, &cause);
                let _ = out.send(frame(errors, text.as_bytes())).await;
            }
        });
    }
    loop {
        tokio::select! {
            msg = stream.next() => {
                activity.touch();
                let data = match msg {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                let Some(&channel) = data.first() else { continue };
                // Odd channels are the kubelet's (errors).
                if channel % 2 == 1 {
                    continue;
                }
                let i = usize::from(channel / 2);
                if let Some(slot) = inboxes.get_mut(i) {
                    if let Some(tx) = slot {
                        if tx.send(data.slice(1..)).await.is_err() {
                            *slot = None;
                        }
                    }
                }
            }
            done = pairs.join_next() => {
                if done.is_none() {
                    // Every pair has ended: so does the session.
                    let close = Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }));
                    let _ = out_tx.send(close).await;
                    drop(out_tx);
                    let _ = writer.await;
                    return;
                }
            }
            () = activity.idle_for(idle) => break,
        }
    }
    // The client went away or the connection was idle too long: its
    // connections go too.
    pairs.abort_all();
    writer.abort();
}

/// Connects to the pod's `port` and copies both ways: the client's bytes
/// from `from_client` (its end half-closes the connection), the pod's as
/// `wrap`ped messages to `to_client`, until the pod closes its side.
/// `Err` is why the connection could not be made.
pub(crate) async fn forward<M, F>(
    target: &Target,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: mpsc::Sender<M>,
    wrap: F,
) -> Result<(), String>
where
    F: Fn(&[u8]) -> M,
{
    let conn = target.dial(port).await?;
    let (mut rd, mut wr) = conn.into_split();
    let upstream = async {
        while let Some(bytes) = from_client.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to_client.send(wrap(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(downstream);
    tokio::select! {
        () = &mut downstream => {}
        () = upstream => downstream.await,
    }
    Ok(())
}

/// What the session's writer sends the client.
#[derive(Debug)]
enum Out {
    Reply(u32),
    Reset(u32, u32),
    Data(u32, Bytes),
    Fin(u32),
    Ping(u32),
    /// The session ends: the client's bytes were not SPDY.
    GoAway(u32),
}

/// Writes `Out`s as frames until the queue closes or the client is gone,
/// touching `activity` with each.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    activity: Activity,
) {
    let mut frames = spdy::Writer::new();
    while let Some(out) = rx.recv().await {
        let bytes = match out {
            Out::Reply(id) => frames.syn_reply(id, 0, &[]),
            Out::Reset(id, status) => frames.rst_stream(id, status),
            Out::Data(id, data) => frames.data(id, 0, &data),
            Out::Fin(id) => frames.data(id, spdy::FLAG_FIN, &[]),
            Out::Ping(id) => frames.ping(id),
            Out::GoAway(status) => frames.go_away(0, status),
        };
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            return;
        }
        activity.touch();
    }
    let _ = w.shutdown().await;
}

/// Which of a connection's two streams a SYN_STREAM opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Error,
}

/// A stream's headers checked as kube's kubelet checks them: `port`
/// (1–65535) and `streamType` (`data` or `error`); the request ID, or
/// for clients that send none kube's stand-in from the stream ID.
fn check_stream(id: u32, headers: &spdy::Headers) -> Result<(Kind, u16, String), String> {
    let port_text = spdy::header(headers, "port").unwrap_or_default();
    if port_text.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let port = match parse_ports([port_text]) {
        Ok(ports) if ports.len() == 1 => ports[0],
        Ok(_) => {
            return Err(format!(
                "unable to parse {port_text:?} as a port: strconv.ParseUint: parsing {port_text:?}: invalid syntax"
            ))
        }
        Err(e) => return Err(e),
    };
    let kind = match spdy::header(headers, "streamtype").unwrap_or_default() {
        "" => return Err("\"streamType\" header is required".into()),
        "data" => Kind::Data,
        "error" => Kind::Error,
        other => return Err(format!("invalid stream type {other:?}")),
    };
    let request = match spdy::header(headers, "requestid") {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => match kind {
            Kind::Error => id.to_string(),
            Kind::Data => (i64::from(id) - 2).to_string(),
        },
    };
    Ok((kind, port, request))
}

/// One forwarded connection: its two streams as they arrive.
#[derive(Debug, Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    /// The client's bytes for the pod, once both streams are there.
    to_pod: Option<mpsc::Sender<Bytes>>,
    /// When the request is given up unless both streams have arrived.
    expires: Option<tokio::time::Instant>,
}

/// Pairs one connection may have waiting or running at once.
const MAX_PAIRS: usize = 1024;

/// Serves kube's port-forward streams over the SPDY/3.1 connection `io`
/// (see the module's doc).
pub(crate) async fn serve_spdy<S>(io: S, target: Target, timeouts: StreamingTimeouts)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(OUTBOX);
    let activity = Activity::new();
    let writer = tokio::spawn(write_frames(wr, out_rx, activity.clone()));
    // Frames are read in a task of their own, so the timeouts can wait
    // beside them without cutting a frame in two.
    let (frames_tx, mut frames) = mpsc::channel(1);
    let reading = tokio::spawn(async move {
        let mut reader = spdy::Reader::new(rd);
        loop {
            let read = reader.read().await;
            let last = !matches!(read, Ok(Some(_)));
            if frames_tx.send(read).await.is_err() || last {
                return;
            }
        }
    });
    // Stream ID → the request it belongs to and its kind.
    let mut streams: HashMap<u32, (String, Kind)> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    loop {
        // Forget the connections that are over.
        while let Some(done) = running.try_join_next() {
            if let Ok((request, data, error)) = done {
                pairs.remove(&request);
                streams.remove(&data);
                streams.remove(&error);
            }
        }
        let first_expiry = pairs.values().filter_map(|p| p.expires).min();
        let read = tokio::select! {
            read = frames.recv() => read,
            () = sleep_until(first_expiry) => {
                if !expire_pairs(&mut pairs, &mut streams, &out_tx).await {
                    break;
                }
                continue;
            }
            () = activity.idle_for(timeouts.idle) => {
                tracing::debug!(pod = %target.pod, "an idle port-forward connection closed");
                let mut open: Vec<u32> = streams.keys().copied().collect();
                open.sort_unstable();
                for id in open {
                    let _ = out_tx.send(Out::Reset(id, spdy::CANCEL)).await;
                }
                let _ = out_tx.send(Out::GoAway(GOAWAY_OK)).await;
                break;
            }
        };
        activity.touch();
        let frame = match read {
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) | None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, pod = %target.pod, "a port-forward connection");
                let _ = out_tx.send(Out::GoAway(spdy::PROTOCOL_ERROR)).await;
                break;
            }
        };
        let sent = match frame {
            spdy::Frame::SynStream { id, headers, .. } => {
                let checked = check_stream(id, &headers);
                let (kind, port, request) = match checked {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "a port-forward stream refused");
                        if out_tx
                            .send(Out::Reset(id, spdy::REFUSED_STREAM))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                };
                if !pairs.contains_key(&request) && pairs.len() >= MAX_PAIRS {
                    if out_tx
                        .send(Out::Reset(id, spdy::REFUSED_STREAM))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                if out_tx.send(Out::Reply(id)).await.is_err() {
                    break;
                }
                let pair = pairs.entry(request.clone()).or_insert_with(|| Pair {
                    expires: Some(tokio::time::Instant::now() + timeouts.stream_creation),
                    ..Pair::default()
                });
                let slot = match kind {
                    Kind::Data => &mut pair.data,
                    Kind::Error => &mut pair.error,
                };
                if slot.is_some() {
                    let which = if kind == Kind::Data { "data" } else { "error" };
                    let message = format!(
                        "error processing stream for request {request}: {which} stream already assigned"
                    );
                    if let Some(error) = pair.error {
                        let _ = out_tx.send(Out::Data(error, Bytes::from(message))).await;
                    }
                    let _ = out_tx.send(Out::Reset(id, spdy::CANCEL)).await;
                    continue;
                }
                *slot = Some(id);
                streams.insert(id, (request.clone(), kind));
                if let (Some(data), Some(error)) = (pair.data, pair.error) {
                    pair.expires = None;
                    let (in_tx, in_rx) = mpsc::channel::<Bytes>(INBOX);
                    pair.to_pod = Some(in_tx);
                    let out = out_tx.clone();
                    let target = target.clone();
                    running.spawn(async move {
                        let wrap = move |b: &[u8]| Out::Data(data, Bytes::copy_from_slice(b));
                        let result = forward(&target, port, in_rx, out.clone(), wrap).await;
                        if let Err(cause) = result {
                            let text = target.failure(port, &cause);
                            let _ = out.send(Out::Data(error, Bytes::from(text))).await;
                        }
                        let _ = out.send(Out::Fin(data)).await;
                        let _ = out.send(Out::Fin(error)).await;
                        (request, data, error)
                    });
                }
                true
            }
            spdy::Frame::Data { id, flags, data } => {
                if let Some((request, Kind::Data)) = streams.get(&id) {
                    if let Some(pair) = pairs.get_mut(request) {
                        if let Some(tx) = &pair.to_pod {
                            if !data.is_empty() && tx.send(data).await.is_err() {
                                pair.to_pod = None;
                            }
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            // The client sends no more: half-close.
                            pair.to_pod = None;
                        }
                    }
                }
                true
            }
            spdy::Frame::RstStream { id, .. } => {
                if let Some((request, _)) = streams.get(&id) {
                    if let Some(pair) = pairs.get_mut(request) {
                        pair.to_pod = None;
                    }
                }
                true
            }
            spdy::Frame::Ping(id) => out_tx.send(Out::Ping(id)).await.is_ok(),
            spdy::Frame::GoAway { .. } => break,
            spdy::Frame::SynReply { .. }
            | spdy::Frame::Headers { .. }
            | spdy::Frame::Settings
            | spdy::Frame::WindowUpdate { .. } => true,
        };
        if !sent {
            break;
        }
    }
    running.abort_all();
    reading.abort();
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// SPDY's GOAWAY status for a normal end.
const GOAWAY_OK: u32 = 0;

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Gives up the requests whose two streams did not both arrive in time,
/// as kube's kubelet: its error (on the error stream, which then ends)
/// and the request forgotten; a lone data stream is reset. False when the
/// client is gone.
async fn expire_pairs(
    pairs: &mut HashMap<String, Pair>,
    streams: &mut HashMap<u32, (String, Kind)>,
    out_tx: &mpsc::Sender<Out>,
) -> bool {
    let now = tokio::time::Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| p.expires.is_some_and(|at| at <= now))
        .map(|(request, _)| request.clone())
        .collect();
    for request in expired {
        let Some(pair) = pairs.remove(&request) else {
            continue;
        };
        tracing::debug!(%request, "a port-forward request timed out waiting for streams");
        let mut out = Vec::new();
        if let Some(error) = pair.error {
            let text = format!("(request={request}) timed out waiting for streams");
            out.push(Out::Data(error, Bytes::from(text)));
            out.push(Out::Fin(error));
            streams.remove(&error);
        }
        if let Some(data) = pair.data {
            out.push(Out::Reset(data, spdy::CANCEL));
            streams.remove(&data);
        }
        for o in out {
            if out_tx.send(o).await.is_err() {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_the_kubelet_reads_them() {
        assert_eq!(parse_ports(["8080"]), Ok(vec![8080]));
        assert_eq!(parse_ports(["80,443", "9090"]), Ok(vec![80, 443, 9090]));
        assert_eq!(
            parse_ports([]),
            Err("query parameter \"port\" is required".into())
        );
        assert_eq!(
            parse_ports([""]),
            Err("query parameter \"port\" cannot be empty".into())
        );
        assert_eq!(
            parse_ports(["80,x"]),
            Err("unable to parse \"80,x\" as a port: strconv.ParseUint: parsing \"x\": invalid syntax".into())
        );
        assert_eq!(
            parse_ports(["70000"]),
            Err("unable to parse \"70000\" as a port: strconv.ParseUint: parsing \"70000\": value out of range".into())
        );
        assert_eq!(parse_ports(["0"]), Err("port \"0\" must be > 0".into()));
        assert!(parse_ports(["-1"]).unwrap_err().contains("invalid syntax"));
    }

    #[tokio::test]
    async fn a_connection_is_copied_both_ways_and_a_refusal_is_reported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .await
                .unwrap();
        });
        let (in_tx, in_rx) = mpsc::channel(INBOX);
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let t = Target {
            ip: Ipv4Addr::LOCALHOST,
            pod: "p".into(),
            uid: "u".into(),
            network: None,
        };
        let pair = {
            let t = t.clone();
            tokio::spawn(
                async move { forward(&t, port, in_rx, out_tx, |b: &[u8]| b.to_vec()).await },
            )
        };
        in_tx.send(Bytes::from_static(b"hello")).await.unwrap();
        drop(in_tx);
        let mut answer = Vec::new();
        while let Some(part) = out_rx.recv().await {
            answer.extend(part);
        }
        assert_eq!(answer, b"echo:hello");
        assert_eq!(pair.await.unwrap(), Ok(()));
        server.await.unwrap();

        // Nothing listens there now.
        let (_in_tx, in_rx) = mpsc::channel(INBOX);
        let (out_tx, _out_rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let refused = forward(&t, port, in_rx, out_tx, |b: &[u8]| b.to_vec())
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            format!("dial tcp4 127.0.0.1:{port}: connect: connection refused")
        );
        assert_eq!(
            t.failure(80, "x"),
            "error forwarding port 80 to pod p, uid u: x"
        );
    }

    /// kubectl's side of a SPDY connection: a request to a port that
    /// refuses gets kube's text on its error stream and both its streams
    /// end, and the next request on the same connection is forwarded.
    #[tokio::test]
    async fn spdy_requests_are_forwarded_and_a_refusal_ends_only_its_own() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .await
                .unwrap();
        });
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let target = Target {
            ip: Ipv4Addr::LOCALHOST,
            pod: "p".into(),
            uid: "u".into(),
            network: None,
        };
        let session = tokio::spawn(serve_spdy(server, target, StreamingTimeouts::default()));
        let (rd, mut wr) = tokio::io::split(client);
        let mut w = spdy::Writer::new();
        let (closed_s, open_s) = (closed.to_string(), open.to_string());
        let mut bytes = Vec::new();
        for (error, data, port, request) in [(1, 3, &closed_s, "0"), (5, 7, &open_s, "1")] {
            for (id, kind) in [(error, "error"), (data, "data")] {
                let headers = [
                    ("streamType", kind),
                    ("port", port.as_str()),
                    ("requestID", request),
                ];
                bytes.extend(w.syn_stream(id, 0, &headers));
            }
            // kubectl never writes to an error stream.
            bytes.extend(w.data(error, spdy::FLAG_FIN, &[]));
        }
        bytes.extend(w.data(7, 0, b"hel"));
        bytes.extend(w.data(7, spdy::FLAG_FIN, b"lo"));
        // A stream without a port is refused.
        bytes.extend(w.syn_stream(9, 0, &[("streamType", "data")]));
        bytes.extend(w.ping(1));
        wr.write_all(&bytes).await.unwrap();

        let mut reader = spdy::Reader::new(rd);
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut fins = Vec::new();
        let (mut replies, mut refused, mut pinged) = (Vec::new(), Vec::new(), false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while fins.len() < 4 || !pinged || refused.is_empty() {
            let frame = tokio::time::timeout_at(deadline, reader.read())
                .await
                .expect("the session's frames in time")
                .unwrap()
                .expect("a frame");
            match frame {
                spdy::Frame::SynReply { id, .. } => replies.push(id),
                spdy::Frame::RstStream { id, .. } => refused.push(id),
                spdy::Frame::Ping(1) => pinged = true,
                spdy::Frame::Data { id, flags, data: d } => {
                    data.entry(id).or_default().extend_from_slice(&d);
                    if flags & spdy::FLAG_FIN != 0 {
                        fins.push(id);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        replies.sort_unstable();
        assert_eq!(replies, [1, 3, 5, 7]);
        assert_eq!(refused, [9]);
        fins.sort_unstable();
        assert_eq!(fins, [1, 3, 5, 7]);
        let error = String::from_utf8_lossy(&data[&1]).into_owned();
        assert_eq!(
            error,
            format!("error forwarding port {closed} to pod p, uid u: dial tcp4 127.0.0.1:{closed}: connect: connection refused")
        );
        assert_eq!(data.get(&3).map(Vec::len).unwrap_or(0), 0);
        assert_eq!(data[&7], b"echo:hello");
        assert_eq!(data.get(&5).map(Vec::len).unwrap_or(0), 0);
        drop((wr, reader));
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ends with its connection")
            .unwrap();
    }

    /// A target on 127.0.0.1 and a listener there that takes connections
    /// and holds them open.
    async fn holding_target() -> (Target, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let target = Target {
            ip: Ipv4Addr::LOCALHOST,
            pod: "p".into(),
            uid: "u".into(),
            network: None,
        };
        (target, port)
    }

    /// The SYN_STREAM of one of a request's streams.
    fn open(w: &mut spdy::Writer, id: u32, kind: &str, port: u16, request: &str) -> Vec<u8> {
        let port = port.to_string();
        w.syn_stream(
            id,
            0,
            &[
                ("streamType", kind),
                ("port", port.as_str()),
                ("requestID", request),
            ],
        )
    }

    /// The next frame, within 20 s.
    async fn next<R: AsyncRead + Unpin>(reader: &mut spdy::Reader<R>) -> Option<spdy::Frame> {
        tokio::time::timeout(Duration::from_secs(20), reader.read())
            .await
            .expect("a frame in time")
            .unwrap()
    }

    /// A request whose data stream never comes gets kube's text on its
    /// error stream once the stream-creation timeout passes; a complete
    /// request on the same connection is not touched.
    #[tokio::test]
    async fn a_request_missing_a_stream_times_out() {
        let (target, port) = holding_target().await;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let timeouts = StreamingTimeouts {
            idle: Duration::ZERO,
            stream_creation: Duration::from_millis(300),
        };
        let session = tokio::spawn(serve_spdy(server, target, timeouts));
        let (rd, mut wr) = tokio::io::split(client);
        let mut w = spdy::Writer::new();
        let mut bytes = open(&mut w, 1, "error", port, "lone");
        bytes.extend(open(&mut w, 3, "error", port, "whole"));
        bytes.extend(open(&mut w, 5, "data", port, "whole"));
        wr.write_all(&bytes).await.unwrap();
        let mut reader = spdy::Reader::new(rd);
        let mut replies = Vec::new();
        let (text, fin) = loop {
            match next(&mut reader).await.expect("a frame") {
                spdy::Frame::SynReply { id, .. } => replies.push(id),
                spdy::Frame::Data { id, flags, data } => {
                    assert_eq!(id, 1, "only the lone request's error stream");
                    break (data, flags & spdy::FLAG_FIN != 0);
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(replies, [1, 3, 5]);
        assert_eq!(
            text,
            "(request=lone) timed out waiting for streams".as_bytes()
        );
        let fin = fin
            || matches!(next(&mut reader).await, Some(spdy::Frame::Data { id: 1, flags, .. }) if flags & spdy::FLAG_FIN != 0);
        assert!(fin, "the error stream ends");
        // The complete request is still there: a ping is answered and no
        // frame for streams 3 or 5 came first.
        wr.write_all(&w.ping(7)).await.unwrap();
        match next(&mut reader).await {
            Some(spdy::Frame::Ping(7)) => {}
            other => panic!("{other:?}"),
        }
        drop((wr, reader));
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ends with its connection")
            .unwrap();
    }

    /// Frames either way keep a connection open past its idle timeout;
    /// once none pass for that long, its open streams are reset, a GOAWAY
    /// is sent and the connection closes.
    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (target, port) = holding_target().await;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let idle = Duration::from_secs(2);
        let timeouts = StreamingTimeouts {
            idle,
            stream_creation: STREAM_CREATION_TIMEOUT,
        };
        let session = tokio::spawn(serve_spdy(server, target, timeouts));
        let (rd, mut wr) = tokio::io::split(client);
        let mut w = spdy::Writer::new();
        let mut bytes = open(&mut w, 1, "error", port, "0");
        bytes.extend(open(&mut w, 3, "data", port, "0"));
        wr.write_all(&bytes).await.unwrap();
        let mut reader = spdy::Reader::new(rd);
        for id in [1, 3] {
            match next(&mut reader).await {
                Some(spdy::Frame::SynReply { id: got, .. }) => assert_eq!(got, id),
                other => panic!("{other:?}"),
            }
        }
        // Pings for twice the idle timeout keep it open.
        let busy_until = tokio::time::Instant::now() + 2 * idle;
        let mut ping = 1;
        while tokio::time::Instant::now() < busy_until {
            wr.write_all(&w.ping(ping)).await.unwrap();
            match next(&mut reader).await {
                Some(spdy::Frame::Ping(id)) => assert_eq!(id, ping),
                other => panic!("{other:?}"),
            }
            ping += 2;
            tokio::time::sleep(idle / 8).await;
        }
        // Then silence.
        let mut reset = Vec::new();
        loop {
            match next(&mut reader).await {
                Some(spdy::Frame::RstStream { id, status }) => {
                    assert_eq!(status, spdy::CANCEL);
                    reset.push(id);
                }
                Some(spdy::Frame::GoAway { status, .. }) => {
                    assert_eq!(status, GOAWAY_OK);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(reset, [1, 3]);
        assert!(next(&mut reader).await.is_none(), "the connection ends");
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ends")
            .unwrap();
    }

    #[test]
    fn stream_headers_are_checked_as_kube_checks_them() {
        let h = |pairs: &[(&str, &str)]| -> spdy::Headers {
            pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect()
        };
        assert_eq!(
            check_stream(
                1,
                &h(&[("streamType", "error"), ("port", "80"), ("requestID", "7")])
            ),
            Ok((Kind::Error, 80, "7".into()))
        );
        // Old clients send no request ID: kube pairs by stream ID.
        assert_eq!(
            check_stream(3, &h(&[("streamType", "data"), ("port", "80")])),
            Ok((Kind::Data, 80, "1".into()))
        );
        assert_eq!(
            check_stream(1, &h(&[("streamType", "data")])),
            Err("\"port\" header is required".into())
        );
        assert_eq!(
            check_stream(1, &h(&[("port", "80")])),
            Err("\"streamType\" header is required".into())
        );
        assert_eq!(
            check_stream(1, &h(&[("port", "80"), ("streamType", "x")])),
            Err("invalid stream type \"x\"".into())
        );
        assert!(check_stream(1, &h(&[("port", "0"), ("streamType", "data")])).is_err());
        assert!(check_stream(1, &h(&[("port", "80,81"), ("streamType", "data")])).is_err());
    }
}
