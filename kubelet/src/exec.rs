//! The kubelet's streaming endpoints, `/exec/{namespace}/{pod}/{container}`
//! and `/attach/{namespace}/{pod}/{container}`, as the apiserver's
//! `pods/exec` and `pods/attach` reach them: the apiserver relays the
//! client's WebSocket upgrade unchanged, so the WebSocket ends here.
//!
//! The query is the kubelet's: `command` (repeated, exec only), and
//! `input`, `output`, `error`, `tty` as `1` (the apiserver translates
//! `stdin`/`stdout`/`stderr`). With `tty` there is no separate stderr, as
//! in Kubernetes.
//!
//! The protocols are Kubernetes' channel protocols, `v5.channel.k8s.io`
//! (kubectl 1.30+) and `v4.channel.k8s.io` (the official Python client):
//! every binary message is one channel byte and its data —
//!
//! | channel | direction | data |
//! |---|---|---|
//! | 0 | client → kubelet | standard input |
//! | 1, 2 | kubelet → client | standard output, standard error |
//! | 3 | kubelet → client | the end: a `metav1.Status`, `Success`, or `Failure` with reason `NonZeroExitCode` and cause `ExitCode` (kubectl exits with it) |
//! | 4 | client → kubelet | terminal size, `{"Width":…,"Height":…}` |
//! | 255 | client → kubelet | (v5) close signal: the next byte names the channel the client closed (0: end of standard input) |
//!
//! After the status the kubelet closes the WebSocket; when the client
//! closes it first, the command's process group is killed.
//!
//! An exec runs through `ballast image exec` in the container's context
//! ([`process::ExecContext`]: its user, env, sandbox and working
//! directory, cgroup), so it reaches no more than the container does; with
//! `tty` under a pseudo-terminal (the helper makes it its controlling
//! terminal), resized through `TIOCSWINSZ`. An attach streams what the
//! running container writes from now on (its log, split back into
//! stdout and stderr) until it exits; the process runtime gives containers
//! no standard input, so an attach's input is discarded.
//!
//! Buffers are bounded: a client message is at most [`MAX_MESSAGE`] bytes,
//! output is read [`CHUNK`] bytes at a time and at most [`OUTBOX`] messages
//! wait for the socket, so a slow client slows the command down.

use std::io::{Read, Seek};
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::logs;
use crate::runtime::process;
use crate::server::LogIndex;

/// kubectl 1.30+'s protocol (v4 and a close signal).
pub const V5: &str = "v5.channel.k8s.io";
/// The official Python client's protocol.
pub const V4: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The largest message a client may send.
pub const MAX_MESSAGE: usize = 1 << 20;
/// How much output is read (and sent) at a time.
pub const CHUNK: usize = 32 * 1024;
/// Output messages waiting for the socket at most.
pub const OUTBOX: usize = 16;
/// How long output still buffered in the pipes may take to arrive after
/// the command exited (a background process may hold them open).
const DRAIN: Duration = Duration::from_secs(2);
/// How often an attach looks for new log output.
const ATTACH_POLL: Duration = Duration::from_millis(100);

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    /// Reads the kubelet's query (`command`, and `input`, `output`,
    /// `error`, `tty` as `1`) as Kubernetes' kubelet reads it: `tty` drops
    /// `error`, and at least one stream must be asked for.
    pub fn parse(query: &str) -> Result<StreamOptions, String> {
        let mut o = StreamOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            match k.as_str() {
                "command" => o.command.push(v),
                "input" => o.stdin = v == "1",
                "output" => o.stdout = v == "1",
                "error" => o.stderr = v == "1",
                "tty" => o.tty = v == "1",
                _ => {}
            }
        }
        if o.tty {
            o.stderr = false;
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(o)
    }
}

/// Decodes `%XX` escapes and `+` (a query's space).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One binary message from the client, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    Resize {
        width: u16,
        height: u16,
    },
    /// (v5) the client will send no more standard input.
    CloseStdin,
    /// A channel this side does not read (or a close of another one).
    Ignored,
}

/// Decodes a client message of protocol v5 (`v5`) or v4.
pub fn decode(msg: &[u8], v5: bool) -> Result<Incoming<'_>, String> {
    let Some((&channel, data)) = msg.split_first() else {
        return Ok(Incoming::Ignored);
    };
    match channel {
        STDIN => Ok(Incoming::Stdin(data)),
        RESIZE => {
            let size: Value = serde_json::from_slice(data)
                .map_err(|e| format!("the terminal size is no JSON: {e}"))?;
            let dim = |k: &str| {
                size[k]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| format!("the terminal size has no {k} (0-65535)"))
            };
            Ok(Incoming::Resize {
                width: dim("Width")?,
                height: dim("Height")?,
            })
        }
        CLOSE if v5 => Ok(match data.first() {
            Some(&STDIN) => Incoming::CloseStdin,
            _ => Incoming::Ignored,
        }),
        _ => Ok(Incoming::Ignored),
    }
}

/// A message for the client: `channel`, then `data`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The status the error channel carries at the end of an exec that ran
/// `command` and exited with `code`, as the kubelet writes it.
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: command '{}' exited with {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure before the command ran (it could not be started).
fn internal_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "code": 500,
    })
}

fn error(code: StatusCode, message: String) -> Response {
    (code, message).into_response()
}

/// Whether this is an exec or an attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
}

/// `GET /exec/{namespace}/{pod}/{container}` (a WebSocket upgrade).
pub async fn exec(
    State(index): State<Arc<LogIndex>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(
        Kind::Exec,
        &index,
        &namespace,
        &pod,
        &container,
        query,
        &headers,
        ws,
    )
}

/// `GET /attach/{namespace}/{pod}/{container}` (a WebSocket upgrade).
pub async fn attach(
    State(index): State<Arc<LogIndex>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    serve(
        Kind::Attach,
        &index,
        &namespace,
        &pod,
        &container,
        query,
        &headers,
        ws,
    )
}

#[allow(clippy::too_many_arguments)]
fn serve(
    kind: Kind,
    index: &LogIndex,
    namespace: &str,
    pod: &str,
    container: &str,
    query: Option<String>,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = match StreamOptions::parse(query.as_deref().unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if kind == Kind::Exec && opts.command.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let Some((containers, dir)) = index.get(namespace, pod) else {
        return error(StatusCode::NOT_FOUND, "pod does not exist".into());
    };
    if !containers.iter().any(|c| c == container) {
        return error(
            StatusCode::NOT_FOUND,
            format!("container not found ({container:?})"),
        );
    }
    let Some(dir) = dir else {
        return error(
            StatusCode::BAD_REQUEST,
            "the simulated runtime runs no processes to stream from".into(),
        );
    };
    let Some(context) = process::exec_context(&dir, container) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("container not found ({container:?})"),
        );
    };
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "a WebSocket upgrade ({V5} or {V4}) is required: SPDY streams are not served"
                ),
            )
        }
    };
    if !offered.iter().any(|p| p == V5 || p == V4) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported streaming protocol(s) [{}]: this kubelet speaks {V5} and {V4}",
                offered.join(", ")
            ),
        );
    }
    // Each message is written at once (an interactive stream), with at
    // most four chunks waiting for a slow client.
    let ws = ws
        .protocols([V5, V4])
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * CHUNK);
    let pod_dir = dir.clone();
    let container = container.to_string();
    ws.on_upgrade(move |socket| async move {
        let v5 = socket.protocol().is_some_and(|p| p == V5);
        match kind {
            Kind::Exec => run_exec(socket, v5, opts, context).await,
            Kind::Attach => run_attach(socket, v5, pod_dir, container).await,
        }
    })
}

/// The socket's writing half, fed through a bounded queue.
struct Outbox {
    tx: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
}

impl Outbox {
    fn new(mut sink: futures::stream::SplitSink<WebSocket, Message>) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX);
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let last = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || last {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        Outbox { tx, writer }
    }

    /// Sends the final status, closes the socket and waits until the
    /// client has it all.
    async fn finish(self, status: Value) {
        let status = Bytes::from(frame(ERROR, status.to_string().as_bytes()));
        let _ = self.tx.send(Message::Binary(status)).await;
        let _ = self
            .tx
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
        drop(self.tx);
        let _ = self.writer.await;
    }
}

/// Copies `reader` to the client as `channel` until its end.
async fn pump(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    channel: u8,
    tx: mpsc::Sender<Message>,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let msg = Message::Binary(Bytes::from(frame(channel, &buf[..n])));
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The command's ends this side holds.
struct Ends {
    input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
    /// The terminal's master side, for resizes.
    terminal: Option<std::fs::File>,
}

/// Starts `cmd` with pipes, or a pseudo-terminal with `tty`.
fn spawn(
    mut cmd: tokio::process::Command,
    opts: &StreamOptions,
) -> std::io::Result<(tokio::process::Child, Ends)> {
    if opts.tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = std::fs::File::from(pty.slave);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // The command's copies of the terminal are its own now: the master
        // reads end-of-file (EIO) once every process using it is gone.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let reader = tokio::fs::File::from_std(master.try_clone()?);
        let writer = tokio::fs::File::from_std(master.try_clone()?);
        let outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = if opts.stdout {
            vec![(STDOUT, Box::new(reader))]
        } else {
            Vec::new()
        };
        return Ok((
            child,
            Ends {
                input: opts
                    .stdin
                    .then(|| Box::new(writer) as Box<dyn AsyncWrite + Send + Unpin>),
                outputs,
                terminal: Some(master),
            },
        ));
    }
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(piped(opts.stdin))
        .stdout(piped(opts.stdout))
        .stderr(piped(opts.stderr));
    let mut child = cmd.spawn()?;
    let mut outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
    if let Some(out) = child.stdout.take() {
        outputs.push((STDOUT, Box::new(out)));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((STDERR, Box::new(err)));
    }
    let input = child
        .stdin
        .take()
        .map(|i| Box::new(i) as Box<dyn AsyncWrite + Send + Unpin>);
    Ok((
        child,
        Ends {
            input,
            outputs,
            terminal: None,
        },
    ))
}

/// Reads the client's messages into the command until the client goes
/// away (returns then; never while the client is there).
async fn feed(
    mut stream: futures::stream::SplitStream<WebSocket>,
    v5: bool,
    mut input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    terminal: Option<std::fs::File>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            // Older clients (the Python client's v4) send stdin as text.
            Message::Text(text) => text.as_bytes().to_vec().into(),
            Message::Close(_) => return,
            _ => continue,
        };
        match decode(&data, v5) {
            Ok(Incoming::Stdin(bytes)) => {
                if let Some(w) = input.as_mut() {
                    if w.write_all(bytes).await.is_err() || w.flush().await.is_err() {
                        input = None;
                    }
                }
            }
            Ok(Incoming::Resize { width, height }) => {
                if let Some(t) = &terminal {
                    let size = rustix::termios::Winsize {
                        ws_row: height,
                        ws_col: width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    if let Err(e) = rustix::termios::tcsetwinsize(t, size) {
                        tracing::debug!(error = %e, "resizing an exec's terminal");
                    }
                }
            }
            Ok(Incoming::CloseStdin) => {
                if let Some(mut w) = input.take() {
                    let _ = w.shutdown().await;
                }
            }
            Ok(Incoming::Ignored) => {}
            Err(e) => tracing::debug!(error = %e, "an exec client's message"),
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128)
}

async fn run_exec(socket: WebSocket, v5: bool, opts: StreamOptions, context: process::ExecContext) {
    let (sink, stream) = socket.split();
    let outbox = Outbox::new(sink);
    let started = context
        .command(&opts.command, opts.tty)
        .and_then(|cmd| spawn(cmd, &opts).map_err(|e| e.to_string()));
    let (mut child, ends) = match started {
        Ok(started) => started,
        Err(e) => {
            let message = format!("error executing command in container: {e}");
            return outbox.finish(internal_status(&message)).await;
        }
    };
    let mut pumps: Vec<_> = ends
        .outputs
        .into_iter()
        .map(|(channel, reader)| tokio::spawn(pump(reader, channel, outbox.tx.clone())))
        .collect();
    let pgid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let feeding = feed(stream, v5, ends.input, ends.terminal);
    let code = tokio::select! {
        status = child.wait() => status.map(exit_code),
        () = feeding => {
            // The client is gone: so is the command.
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            for p in pumps {
                p.abort();
            }
            outbox.writer.abort();
            return;
        }
    };
    let drained = tokio::time::timeout(DRAIN, async {
        for p in pumps.iter_mut() {
            let _ = p.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("exec output still open after the command exited; cut");
    }
    let status = match code {
        Ok(code) => exit_status(&opts.command, code),
        Err(e) => internal_status(&format!("waiting for the command: {e}")),
    };
    outbox.finish(status).await;
}

/// Streams the running container's new output until it exits (or the
/// client goes away).
async fn run_attach(socket: WebSocket, v5: bool, pod_dir: PathBuf, container: String) {
    let (sink, stream) = socket.split();
    let outbox = Outbox::new(sink);
    let tx = outbox.tx.clone();
    let follow = async move {
        let result = follow_log(&pod_dir, &container, &tx).await;
        drop(tx);
        result
    };
    tokio::select! {
        result = follow => {
            let status = match result {
                Ok(()) => json!({"metadata": {}, "status": "Success"}),
                Err(e) => internal_status(&e),
            };
            outbox.finish(status).await;
        }
        () = feed(stream, v5, None, None) => outbox.writer.abort(),
    }
}

/// Sends what the container's current instance logs from now on, each
/// entry on its stream's channel, until the instance exits.
async fn follow_log(
    pod_dir: &FsPath,
    container: &str,
    tx: &mpsc::Sender<Message>,
) -> Result<(), String> {
    let Some((live, exited)) = process::log_file(pod_dir, container, false) else {
        return Err(format!("container not found ({container:?})"));
    };
    if exited {
        return Ok(());
    }
    let mut file = std::fs::File::open(&live).map_err(|e| e.to_string())?;
    file.seek(std::io::SeekFrom::End(0))
        .map_err(|e| e.to_string())?;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0; CHUNK];
    let mut finishing = false;
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n > 0 {
            carry.extend_from_slice(&buf[..n]);
            while let Some(end) = carry.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = carry.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                let entry = logs::parse(line);
                let mut text = entry.text.to_vec();
                if entry.complete {
                    text.push(b'\n');
                }
                let msg = Message::Binary(Bytes::from(frame(entry_channel(line), &text)));
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
            // A stored line is never longer than the shim's cap.
            if carry.len() > 4 * CHUNK {
                carry.clear();
            }
            continue;
        }
        if finishing {
            return Ok(());
        }
        let ours = file.metadata().map_err(|e| e.to_string())?;
        match std::fs::metadata(&live) {
            Ok(m) if logs::same_file(&m, &ours) => {}
            // Rotated: go on with the new live file.
            _ => {
                if let Ok(f) = std::fs::File::open(&live) {
                    file = f;
                    carry.clear();
                    continue;
                }
            }
        }
        let current = process::log_file(pod_dir, container, false);
        if current.is_none_or(|(p, exited)| p != live || exited) {
            finishing = true;
            continue;
        }
        tokio::time::sleep(ATTACH_POLL).await;
    }
}

/// The channel of a stored log line's stream (`<time> <stream> <P|F> <text>`).
fn entry_channel(line: &[u8]) -> u8 {
    match line.split(|b| *b == b' ').nth(1) {
        Some(b"stderr") => STDERR,
        _ => STDOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_as_the_kubelet_reads_them() {
        let o =
            StreamOptions::parse("command=sh&command=-c&command=echo+a%20b%3B&output=1&error=1")
                .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo a b;"]);
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        let t = StreamOptions::parse("command=sh&input=1&output=1&error=1&tty=1").unwrap();
        assert!(
            t.tty && t.stdin && t.stdout && !t.stderr,
            "tty drops stderr"
        );
        assert_eq!(
            StreamOptions::parse("command=ls&output=true").unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn channel_messages_decode_by_protocol() {
        assert_eq!(decode(b"\x00abc", true), Ok(Incoming::Stdin(b"abc")));
        assert_eq!(
            decode(br#"{"Width":120,"Height":40}"#.as_slice(), true),
            Ok(Incoming::Ignored),
            "a message is its channel byte first"
        );
        let mut resize = vec![RESIZE];
        resize.extend_from_slice(br#"{"Width":120,"Height":40}"#);
        assert_eq!(
            decode(&resize, false),
            Ok(Incoming::Resize {
                width: 120,
                height: 40
            })
        );
        assert!(decode(b"\x04{\"Width\":-1,\"Height\":2}", true).is_err());
        assert!(decode(b"\x04nope", true).is_err());
        assert_eq!(decode(b"\xff\x00", true), Ok(Incoming::CloseStdin));
        assert_eq!(decode(b"\xff\x00", false), Ok(Incoming::Ignored));
        assert_eq!(decode(b"\xff\x01", true), Ok(Incoming::Ignored));
        assert_eq!(decode(b"", true), Ok(Incoming::Ignored));
        assert_eq!(frame(STDERR, b"x"), b"\x02x");
        assert_eq!(entry_channel(b"2026-01-01T00:00:00Z stderr F oops"), STDERR);
        assert_eq!(entry_channel(b"2026-01-01T00:00:00Z stdout P a b"), STDOUT);
    }

    #[test]
    fn exit_codes_become_kubernetes_statuses() {
        assert_eq!(exit_status(&["true".into()], 0)["status"], "Success");
        let s = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(
            s["message"],
            "command terminated with non-zero exit code: command 'sh -c exit 3' exited with 3"
        );
    }
}
