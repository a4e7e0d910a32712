//! The etcd client port's HTTP/2 `:authority` rewriter, fed a client's
//! bytes (connection preface and frames) and checked against an oracle
//! written here: an HTTP/2 frame reader and an HPACK decoder following the
//! client's dynamic table.

use ballast_server::h2_authority_fuzz_api::{
    rewrite, MAX_DECODED_HEADERS, MAX_DYNAMIC_TABLE, MAX_HEADER_BLOCK, MAX_OUT_FRAME,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// What the server reads, one piece at a time.
#[derive(Debug, PartialEq)]
enum Item {
    /// A frame that is not part of a header block, byte for byte (cut
    /// short where the client's bytes end).
    Raw(Vec<u8>),
    /// A header block, decoded.
    Block {
        stream: u32,
        end_stream: bool,
        priority: Option<[u8; 5]>,
        headers: Headers,
    },
}

/// The oracle's verdict on a client's bytes.
#[derive(Debug)]
enum Expect {
    /// Not HTTP/2, or HTTP/2 whose first header block needs no fix: the
    /// server reads exactly what the client sent.
    Same,
    /// Rewritten: the server reads these.
    Items(Vec<Item>),
    /// Breaks HTTP/2, HPACK or a documented limit: the connection fails.
    Refuse(String),
}

/// Byte 0 is the size of the pieces the client's bytes arrive in (1..=64,
/// or all at once); the rest is what the client sends. Invariants:
/// - never panics; the same answer however the bytes are cut;
/// - a connection that is not HTTP/2, or whose first `:authority` has no
///   scheme, reaches the server byte for byte;
/// - otherwise every frame outside header blocks reaches the server
///   unchanged and in order, and every header block decodes to the same
///   list (stream, END_STREAM, priority, fields in order) with only
///   `:authority` values losing their `scheme://` (and path), in frames of
///   at most 16 KiB;
/// - malformed input (bad framing, bad HPACK, over the limits) fails the
///   connection, and well-formed input never does.
pub fn h2_authority(data: &[u8]) {
    let Some((&b, input)) = data.split_first() else {
        return;
    };
    let (whole, whole_err) = rewrite([input]);
    let step = if b >= 0xc0 {
        input.len().max(1)
    } else {
        1 + usize::from(b % 64)
    };
    let (out, err) = rewrite(input.chunks(step));
    assert_eq!(
        err.is_some(),
        whole_err.is_some(),
        "pieces of {step} bytes: {err:?}, all at once: {whole_err:?}"
    );
    assert!(
        out == whole,
        "pieces of {step} bytes are rewritten differently"
    );
    match (expect(input), err) {
        (Expect::Same, None) => assert!(out == input, "changed a connection it must pass"),
        (Expect::Items(items), None) => {
            assert!(out.starts_with(PREFACE), "preface lost");
            let got = read_output(&out[PREFACE.len()..]);
            assert_eq!(got.len(), items.len(), "frame count: {got:?} vs {items:?}");
            for (i, (g, want)) in got.iter().zip(&items).enumerate() {
                assert_eq!(g, want, "item {i}");
            }
        }
        (Expect::Refuse(_), Some(_)) => {}
        (Expect::Refuse(why), None) => panic!("accepted malformed input: {why}"),
        (_, Some(e)) => panic!("refused well-formed input: {e}"),
    }
}

/// A pending header block: stream, END_STREAM, priority, fragment.
type Pending = (u32, bool, Option<[u8; 5]>, Vec<u8>);

/// The oracle: what the server must read for `input`.
fn expect(input: &[u8]) -> Expect {
    if !input.starts_with(PREFACE) {
        return Expect::Same;
    }
    let mut decoder = fluke_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(MAX_DYNAMIC_TABLE);
    let mut rest = &input[PREFACE.len()..];
    let mut items = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut first = true;
    while rest.len() >= HEAD {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let end = (HEAD + len).min(rest.len());
        let frame = &rest[..end];
        let payload = &frame[HEAD..];
        let complete = payload.len() == len;
        rest = &rest[end..];
        let in_block = match (&pending, kind) {
            (None, HEADERS) => true,
            (None, _) => false,
            (Some(p), CONTINUATION) if p.0 == stream => true,
            (Some(_), CONTINUATION) => {
                return Expect::Refuse("CONTINUATION of another stream".into())
            }
            (Some(_), _) => return Expect::Refuse("a frame inside a header block".into()),
        };
        if !in_block {
            items.push(Item::Raw(frame.to_vec()));
            continue;
        }
        let buffered = pending.as_ref().map_or(0, |p| p.3.len());
        if buffered + len > MAX_HEADER_BLOCK {
            return Expect::Refuse("header block over the limit".into());
        }
        if !complete {
            // A header frame cut by EOF never reaches the server.
            break;
        }
        if kind == HEADERS {
            let mut body = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some((&p, tail)) = body.split_first() else {
                    return Expect::Refuse("PADDED without a pad length".into());
                };
                pad = usize::from(p);
                body = tail;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                if body.len() < 5 {
                    return Expect::Refuse("PRIORITY without room".into());
                }
                priority = Some([body[0], body[1], body[2], body[3], body[4]]);
                body = &body[5..];
            }
            if pad > body.len() {
                return Expect::Refuse("padding past the frame".into());
            }
            let fragment = body[..body.len() - pad].to_vec();
            pending = Some((stream, flags & END_STREAM != 0, priority, fragment));
        } else if let Some(p) = pending.as_mut() {
            p.3.extend_from_slice(payload);
        }
        if flags & END_HEADERS == 0 {
            continue;
        }
        let Some((stream, end_stream, priority, fragment)) = pending.take() else {
            continue;
        };
        let headers = match decode(&mut decoder, &fragment) {
            Ok(h) => h,
            Err(why) => return Expect::Refuse(why),
        };
        let fixed: Headers = headers
            .iter()
            .map(|(n, v)| match (n.as_slice(), without_scheme(v)) {
                (b":authority", Some(host)) => (n.clone(), host.to_vec()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        if first {
            first = false;
            if fixed == headers {
                // The rest passes through unread.
                return Expect::Same;
            }
        }
        items.push(Item::Block {
            stream,
            end_stream,
            priority,
            headers: fixed,
        });
    }
    Expect::Items(items)
}

/// `scheme://host[/path]` → `host`; `None` without `://`.
fn without_scheme(v: &[u8]) -> Option<&[u8]> {
    let at = (0..v.len().saturating_sub(2)).find(|&i| &v[i..i + 3] == b"://")?;
    let host = &v[at + 3..];
    Some(host.split(|&c| c == b'/').next().unwrap_or(host))
}

/// An HPACK integer with an `n`-bit prefix: (value, bytes). At most four
/// continuation bytes (28 bits), the rewriter's documented limit.
fn int(buf: &[u8], n: u8) -> Result<(usize, usize), String> {
    let max = (1usize << n) - 1;
    let first = usize::from(*buf.first().ok_or("truncated integer")?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut v = max;
    for i in 1..=4 {
        let b = *buf.get(i).ok_or("truncated integer")?;
        v += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err("integer over 28 bits".into())
}

fn string_len(buf: &[u8]) -> Result<usize, String> {
    let (len, used) = int(buf, 7)?;
    if buf.len() - used < len {
        return Err("string past the block".into());
    }
    Ok(used + len)
}

/// Decodes one header block, following the dynamic table; its structure is
/// checked first (the HPACK crate panics on some truncated integers).
fn decode(decoder: &mut fluke_hpack::Decoder<'static>, block: &[u8]) -> Result<Headers, String> {
    let mut at = 0;
    while at < block.len() {
        let rest = &block[at..];
        let b = rest[0];
        at += if b & 0x80 != 0 {
            int(rest, 7)?.1
        } else if b & 0xe0 == 0x20 {
            int(rest, 5)?.1
        } else {
            let (index, mut used) = int(rest, if b & 0x40 != 0 { 6 } else { 4 })?;
            if index == 0 {
                used += string_len(&rest[used..])?;
            }
            used + string_len(&rest[used..])?
        };
    }
    let mut headers = Vec::new();
    let mut size = 0usize;
    decoder
        .decode_with_cb(block, |n, v| {
            size = size.saturating_add(n.len() + v.len() + 32);
            if size <= MAX_DECODED_HEADERS {
                headers.push((n.into_owned(), v.into_owned()));
            }
        })
        .map_err(|e| format!("HPACK: {e:?}"))?;
    if size > MAX_DECODED_HEADERS {
        return Err("decoded header list over the limit".into());
    }
    Ok(headers)
}

/// Reads the server's side after the preface: header blocks must be
/// literal fields only (decodable with no shared table), in frames of at
/// most [`MAX_OUT_FRAME`], never padded.
fn read_output(mut rest: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut block: Option<Pending> = None;
    while !rest.is_empty() {
        if rest.len() < HEAD {
            items.push(Item::Raw(rest.to_vec()));
            break;
        }
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let end = (HEAD + len).min(rest.len());
        let frame = &rest[..end];
        rest = &rest[end..];
        let payload = &frame[HEAD..];
        let ours = match (&block, kind) {
            (None, HEADERS) => true,
            (Some(b), CONTINUATION) => {
                assert_eq!(b.0, stream, "CONTINUATION on another stream");
                true
            }
            (Some(_), _) => panic!("a frame of type {kind} inside a rewritten header block"),
            (None, _) => false,
        };
        if !ours {
            items.push(Item::Raw(frame.to_vec()));
            continue;
        }
        assert!(len <= MAX_OUT_FRAME, "rewritten frame of {len} bytes");
        assert_eq!(payload.len(), len, "a rewritten header frame cut short");
        if kind == HEADERS {
            assert_eq!(flags & PADDED, 0, "rewritten frames are not padded");
            let (priority, body) = if flags & PRIORITY != 0 {
                let p = &payload[..5];
                (Some([p[0], p[1], p[2], p[3], p[4]]), &payload[5..])
            } else {
                (None, payload)
            };
            block = Some((stream, flags & END_STREAM != 0, priority, body.to_vec()));
        } else if let Some(b) = block.as_mut() {
            b.3.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            let (stream, end_stream, priority, fragment) = block.take().expect("a block");
            let mut fresh = fluke_hpack::Decoder::new();
            let headers = fresh
                .decode(&fragment)
                .unwrap_or_else(|e| panic!("rewritten block does not decode: {e:?}"));
            items.push(Item::Block {
                stream,
                end_stream,
                priority,
                headers,
            });
        }
    }
    assert!(block.is_none(), "a rewritten header block without its end");
    items
}
