//! SPDY/3.1 framing, as kubectl's port-forward speaks it (moby's
//! spdystream, on a plain `Upgrade: SPDY/3.1` connection or tunnelled in
//! WebSocket binary messages): enough of a server to accept streams,
//! reply to them, carry their data both ways and close them.
//!
//! Every frame starts with eight bytes. A control frame —
//!
//! ```text
//! 1 | version (15) = 3 | type (16)  |  flags (8) | length (24) | payload
//! ```
//!
//! — is SYN_STREAM (1), SYN_REPLY (2), RST_STREAM (3), SETTINGS (4),
//! PING (6), GOAWAY (7), HEADERS (8) or WINDOW_UPDATE (9); a data frame is
//! `0 | stream id (31) | flags (8) | length (24) | data`, flag FIN (1)
//! closing the sender's half of the stream. SYN_STREAM, SYN_REPLY and
//! HEADERS carry a header block (`count`, then `len name len value`, all
//! lengths 32-bit big-endian, values joined by NUL), compressed with zlib
//! preset with [`dictionary::DICTIONARY`]; each direction of a connection
//! is **one** zlib stream, every block ending on a sync flush, so the
//! [`Reader`] and the [`Writer`] each keep theirs for the connection's
//! life.
//!
//! There is no flow control to keep: spdystream sends no WINDOW_UPDATE
//! and ignores the ones it gets; this side ignores them too.
//!
//! # Layout
//! - `dictionary` — the SPDY/3 header dictionary (protocol data).
//! - this file — [`Frame`], the [`Reader`] (frames from a byte stream,
//!   header blocks inflated) and the [`Writer`] (frames to bytes, header
//!   blocks deflated).

mod dictionary;

use axum::body::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use dictionary::DICTIONARY;

pub const VERSION: u16 = 3;
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;
/// The sender closes its half of the stream.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM and GOAWAY status: the peer broke the protocol.
pub const PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream is refused.
pub const REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is no longer needed.
pub const CANCEL: u32 = 5;
/// The largest header block accepted, inflated.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// A header block: lowercase names, each with its values.
pub type Headers = Vec<(String, String)>;

/// A frame, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        flags: u8,
        data: Bytes,
    },
}

/// What ends a connection: its bytes are not SPDY/3.1.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

fn protocol<T>(message: impl Into<String>) -> Result<T, SpdyError> {
    Err(SpdyError::Protocol(message.into()))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads frames from the client's bytes, inflating header blocks with
/// the connection's one zlib stream.
pub struct Reader<R> {
    r: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader {
            r,
            inflate: Decompress::new(true),
        }
    }

    /// The next frame; `None` when the connection ends between frames.
    pub async fn read(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; length];
        self.r.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: be32(&head) & 0x7fff_ffff,
                flags,
                data: Bytes::from(payload),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return protocol(format!("SPDY version {version}, not {VERSION}"));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if length < n {
                protocol(format!("control frame {kind} of {length} bytes"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    id: be32(&payload) & 0x7fff_ffff,
                    flags,
                    headers: self.header_block(&payload[10..])?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let id = be32(&payload) & 0x7fff_ffff;
                let headers = self.header_block(&payload[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, flags, headers }
                } else {
                    Frame::Headers { id, flags, headers }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: be32(&payload) & 0x7fff_ffff,
                    status: be32(&payload[4..]),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(4)?;
                Frame::Ping(be32(&payload))
            }
            GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last: be32(&payload) & 0x7fff_ffff,
                    status: be32(&payload[4..]),
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    id: be32(&payload) & 0x7fff_ffff,
                    delta: be32(&payload[4..]) & 0x7fff_ffff,
                }
            }
            other => return protocol(format!("unknown control frame type {other}")),
        };
        Ok(Some(frame))
    }

    /// Inflates one header block (the stream goes on across blocks) and
    /// parses it.
    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out: Vec<u8> = Vec::with_capacity(4 * compressed.len() + 256);
        let mut used = 0usize;
        // Each round consumes input or fills the output; the output is
        // bounded, so the rounds are too.
        for _ in 0..(MAX_HEADER_BLOCK / 256 + 64) {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return protocol("a header block larger than 64 KiB");
                }
                out.reserve(out.len().max(256));
            }
            let before = self.inflate.total_in();
            let (len_before, input) = (out.len(), &compressed[used..]);
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            used += (self.inflate.total_in() - before) as usize;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let stuck = out.len() == len_before && self.inflate.total_in() == before;
                    if used == compressed.len() && (out.len() < out.capacity() || stuck) {
                        return parse_header_block(&out);
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Protocol(format!("the header dictionary: {e}")))?;
                }
                Err(e) => return protocol(format!("a header block: {e}")),
            }
        }
        parse_header_block(&out)
    }
}

/// Parses an inflated header block.
pub fn parse_header_block(b: &[u8]) -> Result<Headers, SpdyError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if b.len() - at < n {
            return protocol("a header block ends early");
        }
        at += n;
        Ok(&b[at - n..at])
    };
    let count = be32(take(4)?) as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

/// Encodes a header block, uncompressed.
pub fn encode_header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The first value of header `name`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// Encodes frames for the client, deflating header blocks with the
/// connection's one zlib stream.
pub struct Writer {
    deflate: Compress,
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

impl Writer {
    pub fn new() -> Writer {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        Writer { deflate }
    }

    /// Deflates a header block, ending on a sync flush.
    fn deflate(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut used = 0usize;
        // Deflate output is at most a little larger than its input: a few
        // rounds of growth suffice; the bound keeps a bug from spinning.
        for _ in 0..64 {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let before = self.deflate.total_in();
            let result = self
                .deflate
                .compress_vec(&block[used..], &mut out, FlushCompress::Sync);
            used += (self.deflate.total_in() - before) as usize;
            if result.is_err() {
                break;
            }
            // A sync flush is complete once it left room in the output.
            if used == block.len() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }

    /// SYN_REPLY for stream `id`, with `headers`.
    pub fn syn_reply(&mut self, id: u32, flags: u8, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.deflate(&encode_header_block(headers));
        let mut payload = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        control(SYN_REPLY, flags, &payload)
    }

    /// SYN_STREAM (a client's; for tests).
    #[cfg(test)]
    pub fn syn_stream(&mut self, id: u32, flags: u8, headers: &[(&str, &str)]) -> Vec<u8> {
        let block = self.deflate(&encode_header_block(headers));
        let mut payload = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&block);
        control(SYN_STREAM, flags, &payload)
    }

    /// A data frame; `data` is at most 16 MiB − 1 (the length's 24 bits).
    pub fn data(&self, id: u32, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + data.len());
        out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(data);
        out
    }

    pub fn rst_stream(&self, id: u32, status: u32) -> Vec<u8> {
        let mut payload = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&status.to_be_bytes());
        control(RST_STREAM, 0, &payload)
    }

    pub fn ping(&self, id: u32) -> Vec<u8> {
        control(PING, 0, &id.to_be_bytes())
    }

    pub fn go_away(&self, last: u32, status: u32) -> Vec<u8> {
        let mut payload = (last & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&status.to_be_bytes());
        control(GOAWAY, 0, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        // Adler-32, as zlib names a preset dictionary.
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in DICTIONARY {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(b << 16 | a, 0xe3c6_a7c2);
    }

    /// A client's frames, deflated with a stream of its own, as
    /// spdystream writes them: a SYN_STREAM, another (the zlib stream
    /// goes on), data with FIN, a ping; the reader gets them back.
    #[tokio::test]
    async fn frames_written_are_read_back() {
        let mut client = Writer::new();
        let headers = [
            ("streamType", "error"),
            ("port", "8080"),
            ("requestID", "0"),
        ];
        let syn = |w: &mut Writer, id: u32, h: &[(&str, &str)]| {
            let block = w.deflate(&encode_header_block(h));
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            payload.extend_from_slice(&block);
            control(SYN_STREAM, 0, &payload)
        };
        let mut bytes = syn(&mut client, 1, &headers);
        bytes.extend(syn(
            &mut client,
            3,
            &[("streamtype", "data"), ("port", "8080")],
        ));
        bytes.extend(client.data(3, FLAG_FIN, b"GET /"));
        bytes.extend(client.ping(1));
        bytes.extend(client.syn_reply(5, 0, &[]));
        bytes.extend(client.go_away(5, 0));
        let mut reader = Reader::new(bytes.as_slice());
        let first = reader.read().await.unwrap().unwrap();
        let Frame::SynStream {
            id: 1, headers: h, ..
        } = first
        else {
            panic!("{first:?}")
        };
        assert_eq!(header(&h, "streamtype"), Some("error"));
        assert_eq!(header(&h, "port"), Some("8080"));
        assert_eq!(header(&h, "requestid"), Some("0"));
        let second = reader.read().await.unwrap().unwrap();
        let Frame::SynStream {
            id: 3, headers: h, ..
        } = second
        else {
            panic!("{second:?}")
        };
        assert_eq!(header(&h, "streamtype"), Some("data"));
        assert_eq!(
            reader.read().await.unwrap(),
            Some(Frame::Data {
                id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"GET /")
            })
        );
        assert_eq!(reader.read().await.unwrap(), Some(Frame::Ping(1)));
        assert!(matches!(
            reader.read().await.unwrap(),
            Some(Frame::SynReply { id: 5, .. })
        ));
        assert_eq!(
            reader.read().await.unwrap(),
            Some(Frame::GoAway { last: 5, status: 0 })
        );
        assert_eq!(reader.read().await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        // Version 2.
        let mut two = control(PING, 0, &1u32.to_be_bytes());
        two[1] = 2;
        assert!(Reader::new(two.as_slice()).read().await.is_err());
        // A SYN_STREAM too short for its fields; a header block that is
        // not zlib; a frame cut short.
        let short = control(SYN_STREAM, 0, &[0, 0, 0, 1]);
        assert!(Reader::new(short.as_slice()).read().await.is_err());
        let junk = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9, 9, 9]);
        assert!(Reader::new(junk.as_slice()).read().await.is_err());
        let cut = &control(PING, 0, &1u32.to_be_bytes())[..10];
        assert!(Reader::new(cut).read().await.is_err());
        assert!(parse_header_block(&[0, 0, 0, 2, 0, 0, 0, 9]).is_err());
        assert!(parse_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
