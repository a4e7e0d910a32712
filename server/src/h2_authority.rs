//! Accepting `:authority` values that carry a URL scheme.
//!
//! etcd 3.4's `etcdctl` dials some endpoints (`endpoint status`, `endpoint
//! hashkv`, `defrag`) with the gRPC target `passthrough:///http://host:port`,
//! so grpc-go sends the pseudo-header `:authority: http://host:port`. etcd
//! accepts that; h2 rejects it as a malformed authority and resets the
//! stream with `PROTOCOL_ERROR`.
//!
//! [`AuthorityFix`] wraps an accepted connection (a [`TcpStream`], or the
//! TLS stream on top of one, so it sees decrypted bytes) and repairs the
//! client→server byte stream before h2 sees it:
//!
//! - A connection that does not open with the HTTP/2 client preface (plain
//!   HTTP/1.1, e.g. `/health`) passes through untouched.
//! - On an HTTP/2 connection every frame passes through unchanged, except
//!   header blocks (a HEADERS frame and its CONTINUATION frames). Each block
//!   is decoded with an HPACK decoder that follows the client's dynamic
//!   table, an `:authority` containing `://` loses its scheme (and any path),
//!   and the block is re-encoded with literal-without-indexing
//!   representations only. The server's HPACK decoder therefore never gets
//!   a dynamic-table entry or a size update from us, and its state stays
//!   trivially consistent. Padding is dropped, PRIORITY data kept, and a
//!   block longer than the smallest legal frame size (16 KiB) is split into
//!   HEADERS + CONTINUATION frames.
//! - Server→client bytes are not touched.
//!
//! Memory stays bounded: non-header frames are streamed through without
//! being buffered, a header block is capped at [`MAX_HEADER_BLOCK`] bytes
//! and its decoded form at [`MAX_DECODED_HEADERS`]. Malformed input never
//! panics; it fails the read with an [`io::Error`], which closes the
//! connection.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The frame size every HTTP/2 peer must accept (the initial
/// SETTINGS_MAX_FRAME_SIZE); rewritten header blocks are cut to fit it.
const MAX_OUT_FRAME: usize = 16_384;

/// The header list size the server behind us (hyper, through tonic)
/// advertises in SETTINGS_MAX_HEADER_LIST_SIZE and enforces: a request
/// whose decoded headers are larger is refused there anyway.
const SERVER_MAX_HEADER_LIST: usize = 16 << 10;

/// Largest decoded header list (RFC 7541 §4.1 sizes: name + value + 32 per
/// field), which bounds what a block of indexed references can expand to:
/// four times what the server accepts, so a list it would refuse with a
/// status still reaches it, and no more.
pub(crate) const MAX_DECODED_HEADERS: usize = 4 * SERVER_MAX_HEADER_LIST;

/// Largest header block (all its frames' fragments) buffered for decoding,
/// per connection. HPACK's Huffman code can spend up to 30 bits on a byte,
/// so a block may be ~4× its decoded size; twice that again is headroom.
pub(crate) const MAX_HEADER_BLOCK: usize = 2 * MAX_DECODED_HEADERS;

/// Largest dynamic table a client may ask our decoder for. h2 advertises
/// the default 4096; anything within this bound is harmless to follow.
const MAX_DYNAMIC_TABLE: usize = 64 << 10;

/// Bytes read from the socket at a time while rewriting.
const READ_CHUNK: usize = 16 << 10;

/// A connection (TCP, or TLS after the handshake) whose client→server
/// HTTP/2 header blocks are rewritten so that h2 accepts an `:authority`
/// with a scheme. See the module docs.
pub struct AuthorityFix<S = TcpStream> {
    inner: S,
    rewriter: Rewriter,
    /// Rewritten bytes not yet handed to the reader: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    scratch: Vec<u8>,
    eof: bool,
    failed: Option<String>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            scratch: Vec::new(),
            eof: false,
            failed: None,
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for AuthorityFix<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("inner", &self.inner)
            .field("mode", &self.rewriter.mode)
            .finish_non_exhaustive()
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                    // Don't keep a huge header block's buffer for the
                    // connection's lifetime.
                    if this.out.capacity() > 4 * READ_CHUNK {
                        this.out.shrink_to(READ_CHUNK);
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(msg) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone())));
            }
            if this.rewriter.mode == Mode::Passthrough {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.scratch.is_empty() {
                this.scratch = vec![0; READ_CHUNK];
            }
            let mut chunk = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            let n = chunk.filled().len();
            if n == 0 {
                this.eof = true;
                this.rewriter.finish(&mut this.out);
                continue;
            }
            if let Err(e) = this.rewriter.feed(&this.scratch[..n], &mut this.out) {
                tracing::debug!("closing client connection: {e}");
                // Whatever was rewritten before the bad frame still goes out.
                this.failed = Some(e.to_string());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What the connection has turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Still matching the first bytes against the preface.
    Detect,
    /// Not HTTP/2: bytes pass through.
    Passthrough,
    /// HTTP/2 with prior knowledge: header blocks are rewritten.
    Http2,
}

/// Where the frame parser is inside the current frame.
enum FrameState {
    /// Reading the 9-byte frame header into `Rewriter::head`.
    Head,
    /// Copying this many payload bytes through unchanged.
    Copy(usize),
    /// Buffering the payload of a HEADERS or CONTINUATION frame.
    Collect(FrameHead, Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

fn write_frame_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A header block whose HEADERS frame lacked END_HEADERS, waiting for its
/// CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The sans-IO core: consumes client bytes, produces what the server sees.
struct Rewriter {
    mode: Mode,
    /// In `Detect`: how many preface bytes have matched (and are held back).
    matched: usize,
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    state: FrameState,
    pending: Option<PendingBlock>,
    decoder: fluke_hpack::Decoder<'static>,
    /// The raw frames of the connection's first header block, kept until
    /// it is decoded: a client whose first `:authority` needs no fix (every
    /// client but etcd 3.4's) gets that block and everything after it
    /// passed through untouched, so rewriting costs nothing on the hot path.
    first_block: Option<Vec<u8>>,
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 header rewrite: {}", msg.into()),
    )
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_DYNAMIC_TABLE);
        Self {
            mode: Mode::Detect,
            matched: 0,
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            state: FrameState::Head,
            pending: None,
            decoder,
            first_block: Some(Vec::new()),
        }
    }

    /// The client closed its side: release anything held back.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.mode == Mode::Detect {
            out.extend_from_slice(&PREFACE[..self.matched]);
            self.matched = 0;
            self.mode = Mode::Passthrough;
        }
        // A truncated HTTP/2 frame is dropped; the server sees the EOF.
    }

    /// Consumes `input`, appending the bytes to forward to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.mode == Mode::Detect {
            let want = &PREFACE[self.matched..];
            let n = want.len().min(input.len());
            if input[..n] == want[..n] {
                self.matched += n;
                input = &input[n..];
                if self.matched < PREFACE.len() {
                    return Ok(());
                }
                out.extend_from_slice(PREFACE);
                self.mode = Mode::Http2;
            } else {
                out.extend_from_slice(&PREFACE[..self.matched]);
                self.mode = Mode::Passthrough;
            }
        }
        if self.mode == Mode::Passthrough {
            out.extend_from_slice(input);
            return Ok(());
        }
        while !input.is_empty() {
            if self.mode == Mode::Passthrough {
                out.extend_from_slice(input);
                break;
            }
            match &mut self.state {
                FrameState::Head => {
                    let n = (FRAME_HEADER_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEADER_LEN {
                        self.head_len = 0;
                        self.start_frame(FrameHead::parse(&self.head), out)?;
                    }
                }
                FrameState::Copy(remaining) => {
                    let n = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = FrameState::Head;
                    }
                }
                FrameState::Collect(head, payload) => {
                    let n = (head.len - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if payload.len() == head.len {
                        let FrameState::Collect(head, payload) =
                            std::mem::replace(&mut self.state, FrameState::Head)
                        else {
                            unreachable!("matched Collect above")
                        };
                        self.end_frame(head, payload, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header has been read: decide how to treat its payload.
    fn start_frame(&mut self, head: FrameHead, out: &mut Vec<u8>) -> io::Result<()> {
        let header_frame = match (head.kind, &self.pending) {
            (TYPE_HEADERS, None) => true,
            (TYPE_CONTINUATION, Some(p)) => {
                if p.stream != head.stream {
                    return Err(protocol_error("CONTINUATION for another stream"));
                }
                true
            }
            (_, Some(_)) => {
                return Err(protocol_error("header block interrupted by another frame"));
            }
            // Anything else, including a stray CONTINUATION, is the server's
            // business: it passes through and h2 judges it.
            (_, None) => false,
        };
        if !header_frame {
            out.extend_from_slice(&self.head);
            self.state = if head.len == 0 {
                FrameState::Head
            } else {
                FrameState::Copy(head.len)
            };
            return Ok(());
        }
        if let Some(raw) = self.first_block.as_mut() {
            raw.extend_from_slice(&self.head);
        }
        let buffered = self.pending.as_ref().map_or(0, |p| p.fragment.len());
        if buffered + head.len > MAX_HEADER_BLOCK {
            return Err(protocol_error(format!(
                "header block larger than {MAX_HEADER_BLOCK} bytes"
            )));
        }
        if head.len == 0 {
            return self.end_frame(head, Vec::new(), out);
        }
        // Grow as bytes arrive rather than trusting the declared length.
        let payload = Vec::with_capacity(head.len.min(MAX_OUT_FRAME));
        self.state = FrameState::Collect(head, payload);
        Ok(())
    }

    /// A HEADERS or CONTINUATION frame is complete.
    fn end_frame(
        &mut self,
        head: FrameHead,
        payload: Vec<u8>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if let Some(raw) = self.first_block.as_mut() {
            raw.extend_from_slice(&payload);
        }
        if head.kind == TYPE_CONTINUATION {
            let Some(pending) = self.pending.as_mut() else {
                return Err(protocol_error("CONTINUATION without HEADERS"));
            };
            pending.fragment.extend_from_slice(&payload);
        } else {
            let mut body: &[u8] = &payload;
            let mut pad = 0;
            if head.flags & FLAG_PADDED != 0 {
                let Some((&p, rest)) = body.split_first() else {
                    return Err(protocol_error("PADDED HEADERS frame without pad length"));
                };
                pad = usize::from(p);
                body = rest;
            }
            let mut priority = None;
            if head.flags & FLAG_PRIORITY != 0 {
                if body.len() < 5 {
                    return Err(protocol_error("HEADERS frame too short for PRIORITY"));
                }
                let mut p = [0; 5];
                p.copy_from_slice(&body[..5]);
                priority = Some(p);
                body = &body[5..];
            }
            if pad > body.len() {
                return Err(protocol_error("HEADERS padding longer than the frame"));
            }
            let fragment = if head.flags & (FLAG_PADDED | FLAG_PRIORITY) == 0 {
                payload
            } else {
                body[..body.len() - pad].to_vec()
            };
            self.pending = Some(PendingBlock {
                stream: head.stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                priority,
                fragment,
            });
        }
        if head.flags & FLAG_END_HEADERS != 0 {
            if let Some(block) = self.pending.take() {
                match self.first_block.take() {
                    None => {
                        self.rewrite_block(block, out)?;
                    }
                    Some(raw) => {
                        let mut rewritten = Vec::new();
                        if self.rewrite_block(block, &mut rewritten)? {
                            out.extend_from_slice(&rewritten);
                        } else {
                            out.extend_from_slice(&raw);
                            self.mode = Mode::Passthrough;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes `:authority`, and writes the
    /// re-encoded block as HEADERS (+ CONTINUATION) frames. Returns whether
    /// `:authority` needed the fix.
    fn rewrite_block(&mut self, block: PendingBlock, out: &mut Vec<u8>) -> io::Result<bool> {
        // The decoder panics on a truncated size-update integer; check the
        // block's structure first so malformed input is an error instead.
        check_structure(&block.fragment)?;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        let mut decoded_size = 0usize;
        let mut too_big = false;
        let mut fixed_authority = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                decoded_size = decoded_size.saturating_add(name.len() + value.len() + 32);
                if decoded_size > MAX_DECODED_HEADERS {
                    too_big = true;
                }
                if too_big {
                    return;
                }
                if &name[..] == b":authority" {
                    if let Some(fixed) = fix_authority(&value) {
                        tracing::trace!(
                            from = %String::from_utf8_lossy(&value),
                            to = %String::from_utf8_lossy(fixed),
                            "rewrote :authority"
                        );
                        encode_literal(&mut encoded, &name, fixed);
                        fixed_authority = true;
                        return;
                    }
                }
                encode_literal(&mut encoded, &name, &value);
            })
            .map_err(|e| protocol_error(format!("bad HPACK block: {e:?}")))?;
        if too_big {
            return Err(protocol_error(format!(
                "decoded header list larger than {MAX_DECODED_HEADERS} bytes"
            )));
        }
        write_header_frames(
            out,
            block.stream,
            block.end_stream,
            block.priority,
            &encoded,
        );
        Ok(fixed_authority)
    }
}

/// `http://host:port[/path]` → `host:port`; `None` when there is no scheme.
fn fix_authority(value: &[u8]) -> Option<&[u8]> {
    let start = value.windows(3).position(|w| w == b"://")? + 3;
    let rest = &value[start..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Emits one header block as a HEADERS frame followed by as many
/// CONTINUATION frames as needed to keep every frame within 16 KiB.
fn write_header_frames(
    out: &mut Vec<u8>,
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: &[u8],
) {
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let first = block.len().min(MAX_OUT_FRAME - prio_len);
    let (head, mut rest) = block.split_at(first);
    let mut flags = 0;
    if end_stream {
        flags |= FLAG_END_STREAM;
    }
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    write_frame_head(out, prio_len + head.len(), TYPE_HEADERS, flags, stream);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_OUT_FRAME);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        write_frame_head(out, n, TYPE_CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// HPACK integer (RFC 7541 §5.1): `value` in an N-bit prefix whose
/// byte's high bits are `pattern`.
fn encode_int(out: &mut Vec<u8>, prefix_bits: u8, pattern: u8, value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A raw (non-Huffman) string literal (RFC 7541 §5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 7, 0x00, s.len());
    out.extend_from_slice(s);
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_string(out, name);
    encode_string(out, value);
}

/// Decodes an HPACK integer at the start of `buf`: `(value, bytes used)`.
fn decode_int(buf: &[u8], prefix_bits: u8) -> io::Result<(usize, usize)> {
    let truncated = || protocol_error("truncated HPACK integer");
    let max = (1usize << prefix_bits) - 1;
    let first = usize::from(*buf.first().ok_or_else(truncated)?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    // Four continuation bytes carry 28 bits, plenty for any length here.
    for i in 1..=4 {
        let b = *buf.get(i).ok_or_else(truncated)?;
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(protocol_error("HPACK integer too long"))
}

/// Skips a string literal, returning its encoded length.
fn skip_string(buf: &[u8]) -> io::Result<usize> {
    let (len, used) = decode_int(buf, 7)?;
    if buf.len() - used < len {
        return Err(protocol_error("truncated HPACK string"));
    }
    Ok(used + len)
}

/// Walks a header block's representations (without decoding strings) and
/// checks every integer and string length stays inside the block.
fn check_structure(block: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < block.len() {
        let rest = &block[at..];
        let b = rest[0];
        at += if b & 0x80 != 0 {
            decode_int(rest, 7)?.1
        } else if b & 0xe0 == 0x20 {
            decode_int(rest, 5)?.1
        } else {
            // Literal with incremental indexing (6-bit index) or without /
            // never indexed (4-bit index); index 0 means a literal name.
            let prefix = if b & 0x40 != 0 { 6 } else { 4 };
            let (index, mut used) = decode_int(rest, prefix)?;
            if index == 0 {
                used += skip_string(&rest[used..])?;
            }
            used + skip_string(&rest[used..])?
        };
    }
    Ok(())
}

/// The rewriter without a socket, for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod fuzz_api {
    use std::io;

    /// Largest header block buffered for decoding.
    pub const MAX_HEADER_BLOCK: usize = super::MAX_HEADER_BLOCK;
    /// Largest decoded header list of one block.
    pub const MAX_DECODED_HEADERS: usize = super::MAX_DECODED_HEADERS;
    /// Largest dynamic table a client may ask the rewriter's decoder for.
    pub const MAX_DYNAMIC_TABLE: usize = super::MAX_DYNAMIC_TABLE;
    /// Largest frame payload of a rewritten header block.
    pub const MAX_OUT_FRAME: usize = super::MAX_OUT_FRAME;

    /// Feeds a client's bytes, in `chunks` as they arrive, through a fresh
    /// rewriter, then the client's EOF, as [`super::AuthorityFix`] does:
    /// what the server reads, and the error that closed the connection
    /// (after the bytes rewritten before it), if any.
    pub fn rewrite<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, Option<io::Error>) {
        let mut r = super::Rewriter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            if let Err(e) = r.feed(chunk, &mut out) {
                return (out, Some(e));
            }
        }
        r.finish(&mut out);
        (out, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn hdrs(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    fn settings() -> Vec<u8> {
        // SETTINGS with ENABLE_PUSH = 0.
        frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0])
    }

    /// Runs `input` through a fresh rewriter in chunks of `step` bytes.
    fn rewrite(input: &[u8], step: usize) -> io::Result<Vec<u8>> {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            r.feed(chunk, &mut out)?;
        }
        r.finish(&mut out);
        Ok(out)
    }

    /// Splits rewritten output into frames (after the preface).
    fn frames(out: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut v = Vec::new();
        while !rest.is_empty() {
            let mut h = [0; 9];
            h.copy_from_slice(&rest[..9]);
            let head = FrameHead::parse(&h);
            v.push((head, rest[9..9 + head.len].to_vec()));
            rest = &rest[9 + head.len..];
        }
        v
    }

    /// Decodes every header block in rewritten output with one fresh decoder
    /// (as the server would), checking the block uses literal
    /// representations only.
    fn blocks(out: &[u8]) -> Vec<(u32, u8, Headers)> {
        let mut dec = fluke_hpack::Decoder::new();
        let mut result = Vec::new();
        let mut current: Option<(u32, u8, Vec<u8>)> = None;
        for (head, payload) in frames(out) {
            match head.kind {
                TYPE_HEADERS => {
                    assert!(current.is_none());
                    assert_eq!(head.flags & FLAG_PADDED, 0);
                    assert!(head.len <= MAX_OUT_FRAME);
                    let skip = if head.flags & FLAG_PRIORITY != 0 {
                        5
                    } else {
                        0
                    };
                    current = Some((head.stream, head.flags, payload[skip..].to_vec()));
                }
                TYPE_CONTINUATION => {
                    assert!(head.len <= MAX_OUT_FRAME);
                    current.as_mut().unwrap().2.extend_from_slice(&payload);
                }
                _ => continue,
            }
            if head.flags & FLAG_END_HEADERS != 0 {
                let (stream, flags, block) = current.take().unwrap();
                assert_only_literals(&block);
                result.push((stream, flags, dec.decode(&block).unwrap()));
            }
        }
        assert!(current.is_none());
        result
    }

    /// Decodes every header block, whatever representations it uses.
    fn blocks_any(out: &[u8]) -> Vec<(u32, u8, Headers)> {
        let mut dec = fluke_hpack::Decoder::new();
        frames(out)
            .into_iter()
            .filter(|(h, _)| h.kind == TYPE_HEADERS)
            .map(|(h, p)| (h.stream, h.flags, dec.decode(&p).unwrap()))
            .collect()
    }

    fn assert_only_literals(block: &[u8]) {
        let mut at = 0;
        while at < block.len() {
            assert_eq!(block[at], 0x00, "not a literal without indexing");
            at += 1;
            for _ in 0..2 {
                assert_eq!(block[at] & 0x80, 0, "Huffman string");
                at += skip_string(&block[at..]).unwrap();
            }
        }
    }

    fn request(authority: &str) -> Headers {
        hdrs(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.26.0"),
            ("te", "trailers"),
        ])
    }

    fn encode(enc: &mut fluke_hpack::Encoder<'_>, h: &Headers) -> Vec<u8> {
        enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    #[test]
    fn integer_encoding_matches_rfc_examples() {
        // RFC 7541 C.1.1–C.1.3.
        let mut out = Vec::new();
        encode_int(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_int(&mut out, 8, 0, 42);
        assert_eq!(out, [0x2a]);
        for prefix in [4, 5, 6, 7, 8] {
            for v in [
                0,
                1,
                14,
                15,
                16,
                126,
                127,
                128,
                255,
                256,
                16_383,
                16_384,
                1 << 20,
            ] {
                out.clear();
                encode_int(&mut out, prefix, 0, v);
                assert_eq!(decode_int(&out, prefix).unwrap(), (v, out.len()));
            }
        }
    }

    #[test]
    fn literal_encoder_round_trips_through_hpack_decoder() {
        let long = "x".repeat(5000);
        let h = hdrs(&[
            (":method", "GET"),
            ("", ""),
            ("a-fifteen-bytes", "value-with-127-".repeat(9).as_str()),
            ("big", &long),
            ("binary-bin", "\u{7f}\u{1}"),
        ]);
        let mut block = Vec::new();
        for (n, v) in &h {
            encode_literal(&mut block, n, v);
        }
        check_structure(&block).unwrap();
        let mut dec = fluke_hpack::Decoder::new();
        assert_eq!(dec.decode(&block).unwrap(), h);
        // Nothing was indexed: the same block decodes the same again.
        assert_eq!(dec.decode(&block).unwrap(), h);
    }

    #[test]
    fn fix_authority_strips_scheme_and_path() {
        assert_eq!(
            fix_authority(b"http://127.0.0.1:2379"),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(
            fix_authority(b"https://example.com:1/a/b"),
            Some(&b"example.com:1"[..])
        );
        assert_eq!(fix_authority(b"127.0.0.1:2379"), None);
        assert_eq!(fix_authority(b"localhost"), None);
    }

    #[test]
    fn authority_with_scheme_is_fixed() {
        let mut enc = fluke_hpack::Encoder::new();
        let block = encode(&mut enc, &request("http://127.0.0.1:2379"));
        let data = frame(0x0, 0x1, 1, b"\0\0\0\0\x02hi");
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        input.extend(&data);
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE

        for step in [1, 7, 100, input.len()] {
            let out = rewrite(&input, step).unwrap();
            let fr = frames(&out);
            assert_eq!(fr.len(), 4);
            // Other frames are untouched, in order.
            assert_eq!(frame(fr[0].0.kind, fr[0].0.flags, 0, &fr[0].1), settings());
            assert_eq!(frame(0x0, fr[2].0.flags, fr[2].0.stream, &fr[2].1), data);
            assert_eq!(fr[3].0.kind, 0x8);
            let b = blocks(&out);
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].0, 1);
            assert_eq!(b[0].1, FLAG_END_HEADERS);
            assert_eq!(b[0].2, request("127.0.0.1:2379"));
        }
    }

    #[test]
    fn authority_without_scheme_is_kept() {
        let mut enc = fluke_hpack::Encoder::new();
        let block = encode(&mut enc, &request("127.0.0.1:2379"));
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &block,
        ));
        // A clean first block: the whole connection passes through untouched.
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &block));
        let out = rewrite(&input, 5).unwrap();
        assert_eq!(out, input);
        let b = blocks_any(&out);
        assert_eq!(b[0].1, FLAG_END_HEADERS | FLAG_END_STREAM);
        assert_eq!(b[0].2, request("127.0.0.1:2379"));
    }

    #[test]
    fn block_split_across_headers_and_continuation() {
        let mut enc = fluke_hpack::Encoder::new();
        let block = encode(&mut enc, &request("http://10.0.0.1:2379"));
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(20);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_STREAM, 5, a));
        input.extend(frame(TYPE_CONTINUATION, 0, 5, b));
        input.extend(frame(TYPE_CONTINUATION, 0, 5, &[]));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 5, c));
        input.extend(frame(0x6, 0, 0, &[1; 8])); // PING
        for step in [1, 3, input.len()] {
            let out = rewrite(&input, step).unwrap();
            let fr = frames(&out);
            assert_eq!(fr.len(), 2, "one HEADERS frame, then the PING");
            assert_eq!(fr[1].0.kind, 0x6);
            let b = blocks(&out);
            assert_eq!(b[0].0, 5);
            assert_eq!(b[0].1, FLAG_END_HEADERS | FLAG_END_STREAM);
            assert_eq!(b[0].2, request("10.0.0.1:2379"));
        }
    }

    #[test]
    fn padded_and_priority_flags() {
        let mut enc = fluke_hpack::Encoder::new();
        let block = encode(&mut enc, &request("http://h:1"));
        let prio = [0x80, 0, 0, 3, 42];
        let mut payload = vec![4u8]; // pad length
        payload.extend(prio);
        payload.extend(&block);
        payload.extend([0; 4]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM,
            7,
            &payload,
        ));
        // Padding only.
        let mut payload = vec![2u8];
        payload.extend(encode(&mut enc, &request("http://h:1")));
        payload.extend([0; 2]);
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_END_HEADERS,
            9,
            &payload,
        ));

        let out = rewrite(&input, 2).unwrap();
        let fr = frames(&out);
        assert_eq!(
            fr[0].0.flags,
            FLAG_PRIORITY | FLAG_END_HEADERS | FLAG_END_STREAM
        );
        assert_eq!(fr[0].1[..5], prio);
        assert_eq!(fr[1].0.flags, FLAG_END_HEADERS);
        let b = blocks(&out);
        assert_eq!(b[0].2, request("h:1"));
        assert_eq!(b[1].2, request("h:1"));
    }

    #[test]
    fn dynamic_table_state_carries_across_blocks() {
        let mut enc = fluke_hpack::Encoder::new();
        let first = request("http://127.0.0.1:2379");
        let mut second = request("http://127.0.0.1:2379");
        second[2].1 = b"/etcdserverpb.Maintenance/HashKV".to_vec();
        second.push((b"x-custom".to_vec(), b"1".to_vec()));
        let b1 = encode(&mut enc, &first);
        let b2 = encode(&mut enc, &second);
        let b3 = encode(&mut enc, &second);
        // Header names outside the static table went into the dynamic
        // table, and the third block refers to them (indices >= 62).
        assert!(b3.iter().any(|&b| b >= 0x80 | 62), "{b3:x?}");
        // A hand-made pair where :authority itself is indexed: literal with
        // incremental indexing (static name 1), then a dynamic reference.
        let mut b4 = vec![0x41];
        encode_string(&mut b4, b"http://127.0.0.1:2379");
        b4.push(0x82); // :method GET
        let b5 = [0x82, 0x80 | 62];
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &b3));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 7, &b4));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 9, &b5));
        let out = rewrite(&input, 11).unwrap();
        let b = blocks(&out);
        let mut fixed = second.clone();
        fixed[3].1 = b"127.0.0.1:2379".to_vec();
        assert_eq!(b[0].2, request("127.0.0.1:2379"));
        assert_eq!(b[1].2, fixed);
        assert_eq!(b[2].2, fixed);
        let get = [(":authority", "127.0.0.1:2379"), (":method", "GET")];
        assert_eq!(b[3].2, hdrs(&get));
        assert_eq!(b[4].2, hdrs(&[get[1], get[0]]));
    }

    #[test]
    fn huffman_and_dynamic_table_rfc_examples() {
        // RFC 7541 C.4.1 and C.4.2: Huffman-coded requests, the second
        // referring to the first's dynamic-table entry for :authority.
        let c41 = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let c42 = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        // A first block that needs the fix puts the connection in rewrite
        // mode; it adds nothing to the dynamic table.
        let mut first = Vec::new();
        for (n, v) in request("http://127.0.0.1:2379") {
            encode_literal(&mut first, &n, &v);
        }
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &first));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &c41));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &c42));
        let out = rewrite(&input, 4).unwrap();
        let mut b = blocks(&out);
        assert_eq!(b.remove(0).2, request("127.0.0.1:2379"));
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(b[0].2, hdrs(&base));
        let mut with_cc = base.to_vec();
        with_cc.push(("cache-control", "no-cache"));
        assert_eq!(b[1].2, hdrs(&with_cc));
    }

    #[test]
    fn size_updates_are_followed_not_forwarded() {
        // Table size update to 0 (evicting everything), then a literal.
        let mut block = vec![0x20];
        block
            .extend(fluke_hpack::Encoder::new().encode([(&b":authority"[..], &b"http://a:1"[..])]));
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
        let out = rewrite(&input, 64).unwrap();
        assert_eq!(blocks(&out)[0].2, hdrs(&[(":authority", "a:1")]));
    }

    #[test]
    fn large_block_is_split_into_continuations() {
        let big = "v".repeat(40_000);
        let h = hdrs(&[(":authority", "http://h:1"), ("big", &big)]);
        let block = fluke_hpack::Encoder::new().encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        // The client sends it in frames of its own choosing (as if the
        // server had allowed bigger frames).
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_PRIORITY, 1, &{
            let mut p = vec![0, 0, 0, 0, 15];
            p.extend(&block[..30_000]);
            p
        }));
        input.extend(frame(
            TYPE_CONTINUATION,
            FLAG_END_HEADERS,
            1,
            &block[30_000..],
        ));
        let out = rewrite(&input, 4096).unwrap();
        let fr = frames(&out);
        assert_eq!(fr.len(), 3);
        assert_eq!(fr[0].0.kind, TYPE_HEADERS);
        assert_eq!(fr[0].0.flags, FLAG_PRIORITY);
        assert_eq!(fr[0].0.len, MAX_OUT_FRAME);
        assert_eq!(fr[1].0.kind, TYPE_CONTINUATION);
        assert_eq!(fr[1].0.flags, 0);
        assert_eq!(fr[2].0.kind, TYPE_CONTINUATION);
        assert_eq!(fr[2].0.flags, FLAG_END_HEADERS);
        assert!(fr.iter().all(|(h, _)| h.stream == 1));
        let b = blocks(&out);
        assert_eq!(b[0].2, hdrs(&[(":authority", "h:1"), ("big", &big)]));
    }

    #[test]
    fn http1_and_non_preface_pass_through() {
        for input in [
            &b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\n",
            b"PRI",
            b"",
        ] {
            for step in [1, 2, 1000] {
                assert_eq!(rewrite(input, step).unwrap(), input);
            }
        }
    }

    #[test]
    fn stray_frames_pass_through_for_the_server_to_judge() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b"abc"));
        input.extend(frame(0x5, 0, 1, b"push")); // PUSH_PROMISE from a client
        assert_eq!(rewrite(&input, 3).unwrap(), input);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let ok = fluke_hpack::Encoder::new().encode([(&b":path"[..], &b"/"[..])]);
        let bad: Vec<Vec<u8>> = vec![
            // Index out of range.
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0x7f]),
            // Truncated size update (fluke-hpack alone would panic here).
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x3f]),
            // Size update at the end of the block.
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x82, 0x20]),
            // Size update above the allowed table size.
            frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &[0x3f, 0xe1, 0xff, 0x7f, 0x82],
            ),
            // Integer with too many continuation bytes.
            frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            // String longer than the block.
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x00, 0x05, b'a']),
            // Invalid Huffman (EOS inside the string).
            frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS,
                1,
                &[0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00],
            ),
            // Pad length beyond the frame.
            frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 0x82]),
            frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[]),
            // PRIORITY flag without room for it.
            frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PRIORITY, 1, &[0, 0]),
            // CONTINUATION for another stream.
            [
                frame(TYPE_HEADERS, 0, 1, &ok),
                frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[]),
            ]
            .concat(),
            // Another frame in the middle of a header block.
            [frame(TYPE_HEADERS, 0, 1, &ok), frame(0x0, 0, 1, b"x")].concat(),
        ];
        for (i, frames) in bad.iter().enumerate() {
            let mut input = PREFACE.to_vec();
            input.extend(frames);
            for step in [1, input.len()] {
                assert!(rewrite(&input, step).is_err(), "case {i} step {step}");
            }
        }
    }

    #[test]
    fn oversized_header_block_is_refused() {
        let mut r = Rewriter::new();
        let mut out = Vec::new();
        r.feed(PREFACE, &mut out).unwrap();
        let chunk = frame(TYPE_HEADERS, 0, 1, &vec![0x82; MAX_HEADER_BLOCK - 1]);
        r.feed(&chunk, &mut out).unwrap();
        let err = r
            .feed(&frame(TYPE_CONTINUATION, 0, 1, &[0x82; 2]), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn expansion_of_indexed_references_is_bounded() {
        // One 4000-byte entry, then many references to it.
        let mut block = vec![0x40];
        encode_string(&mut block, b"n");
        encode_string(&mut block, &[b'v'; 4000]);
        block.extend(std::iter::repeat_n(0x80 | 62, 5000));
        let mut input = PREFACE.to_vec();
        for chunk in block.chunks(MAX_OUT_FRAME).enumerate() {
            let (i, c) = chunk;
            let last = (i + 1) * MAX_OUT_FRAME >= block.len();
            let kind = if i == 0 {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            input.extend(frame(kind, if last { FLAG_END_HEADERS } else { 0 }, 1, c));
        }
        // 5000 × ~4 KiB is ~20 MiB decoded: over the limit.
        assert!(rewrite(&input, input.len()).is_err());
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let block: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let flags = next() as u8;
            let kind = if next() % 4 == 0 {
                TYPE_CONTINUATION
            } else {
                TYPE_HEADERS
            };
            let mut input = PREFACE.to_vec();
            input.extend(frame(kind, flags, 1, &block));
            input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block));
            let _ = rewrite(&input, 1 + (next() % 16) as usize);
        }
    }

    #[tokio::test]
    async fn adapter_rewrites_a_socket_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut enc = fluke_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &encode(&mut enc, &request("http://127.0.0.1:2379")),
        ));
        let to_send = input.clone();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for chunk in to_send.chunks(13) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).await.unwrap();
            reply
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut fixed = AuthorityFix::new(sock);
        assert_eq!(fixed.connect_info().local_addr, Some(addr));
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        fixed.write_all(b"server bytes").await.unwrap();
        fixed.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), b"server bytes");
        assert_eq!(blocks(&out)[0].2, request("127.0.0.1:2379"));
    }

    #[tokio::test]
    async fn adapter_reports_malformed_input() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut input = PREFACE.to_vec();
            input.extend(settings());
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x3f]));
            s.write_all(&input).await.unwrap();
            s
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut fixed = AuthorityFix::new(sock);
        let mut out = Vec::new();
        let err = fixed.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // The preface and SETTINGS before the bad frame were delivered.
        assert_eq!(out, [&PREFACE[..], &settings()].concat());
        drop(client.await.unwrap());
    }
}
