//! The kubelet's `/portForward/{namespace}/{pod}`, as the apiserver's
//! `pods/portforward` reaches it (relaying the client's upgrade, as for
//! exec): connections to the pod's ports, which in the process runtime
//! are its IP in 127.0.0.0/8.
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
//! Buffers are bounded: a client message is at most [`MAX_MESSAGE`]
//! bytes, at most [`INBOX`] of them wait for a port's connection, and
//! the pod's bytes are read [`CHUNK`] at a time with at most [`OUTBOX`]
//! messages waiting for the socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::exec::percent_decode;
use crate::runtime::process;
use crate::server::LogIndex;

/// The port-forward WebSocket protocol's name.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// The channel framing the official Python client offers.
pub const V4: &str = "v4.channel.k8s.io";

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

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// What a connection is forwarded to.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub ip: Ipv4Addr,
    pub pod: String,
    pub uid: String,
}

impl Target {
    /// kube's text for a port that could not be forwarded.
    pub fn failure(&self, port: u16, cause: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid {}: {cause}",
            self.pod, self.uid
        )
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
    })
}

/// `GET /portForward/{namespace}/{pod}` (a WebSocket upgrade).
pub async fn port_forward(
    State(index): State<Arc<LogIndex>>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let target = match target(&index, &namespace, &pod) {
        Ok(t) => t,
        Err((code, message)) => return error(code, message),
    };
    let Ok(ws) = ws else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a WebSocket upgrade ({PORT_FORWARD} or {V4}) is required"),
        );
    };
    let query = query.unwrap_or_default();
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
    ws.on_upgrade(move |socket| run_websocket(socket, target, ports))
}

/// A message for the client: `channel`, then `data`.
fn frame(channel: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    Message::Binary(Bytes::from(out))
}

async fn run_websocket(socket: WebSocket, target: Target, ports: Vec<u16>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
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
            if let Err(cause) = forward(target.ip, port, in_rx, out.clone(), wrap).await {
                let text = target.failure(port, &cause);
                let _ = out.send(frame(errors, text.as_bytes())).await;
            }
        });
    }
    loop {
        tokio::select! {
            msg = stream.next() => {
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
        }
    }
    // The client went away: its connections go too.
    pairs.abort_all();
    writer.abort();
}

/// Connects to the pod's `port` and copies both ways: the client's bytes
/// from `from_client` (its end half-closes the connection), the pod's as
/// `wrap`ped messages to `to_client`, until the pod closes its side.
/// `Err` is why the connection could not be made.
pub(crate) async fn forward<M, F>(
    ip: Ipv4Addr,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: mpsc::Sender<M>,
    wrap: F,
) -> Result<(), String>
where
    F: Fn(&[u8]) -> M,
{
    let addr = SocketAddr::from((ip, port));
    let conn = match tokio::time::timeout(DIAL, TcpStream::connect(addr)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("dial tcp4 {addr}: connect: {}", go_error(&e))),
        Err(_) => return Err(format!("dial tcp4 {addr}: i/o timeout")),
    };
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
        let pair = tokio::spawn(forward(
            Ipv4Addr::LOCALHOST,
            port,
            in_rx,
            out_tx,
            |b: &[u8]| b.to_vec(),
        ));
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
        let refused = forward(Ipv4Addr::LOCALHOST, port, in_rx, out_tx, |b: &[u8]| {
            b.to_vec()
        })
        .await
        .unwrap_err();
        assert_eq!(
            refused,
            format!("dial tcp4 127.0.0.1:{port}: connect: connection refused")
        );
        let t = Target {
            ip: Ipv4Addr::LOCALHOST,
            pod: "p".into(),
            uid: "u".into(),
        };
        assert_eq!(
            t.failure(80, "x"),
            "error forwarding port 80 to pod p, uid u: x"
        );
    }
}
