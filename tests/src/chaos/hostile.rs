//! The nemesis's hostile inputs ([`FaultKind::Hostile`](super::FaultKind)):
//! while the fault holds, one member gets requests and bytes an attacker
//! would send — a txn nested past any budget, a wide read-only txn of
//! ranges just under the request limit, a put over it, garbage on the
//! client and peer ports, and a watcher that never reads its stream —
//! alongside the clients' normal load. The run then checks what it always
//! checks (linearizability, acknowledged writes, every watcher at the final
//! revision) and that no member exited without the nemesis killing it.
//!
//! Every answer is recorded by its gRPC code; only an `Internal`,
//! `Unknown` or `DataLoss` answer is an anomaly here (a timeout is not: a
//! member may be electing), but for a message the gRPC codec could not
//! decode (nested past protobuf's recursion limit): that is `Internal` in
//! every gRPC server, etcd's included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ballast_proto::etcdserverpb::{
    kv_client::KvClient, request_op, watch_client::WatchClient, watch_request, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;

use super::rng::Rng;
use super::run::PREFIX;

/// etcd's default `--max-request-bytes`.
const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// How long one hostile request may take before it counts as a timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What one barrage sent and got back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Answers by kind of input and gRPC code (`ok`, `timeout`, …).
    pub answers: BTreeMap<String, u32>,
    pub anomalies: Vec<String>,
}

impl Outcome {
    fn record(&mut self, what: &str, answer: Result<(), tonic::Status>) {
        let code = match answer {
            Ok(()) => "ok".to_string(),
            Err(s) => {
                let undecodable = s.code() == Code::Internal
                    && s.message().starts_with("failed to decode Protobuf message");
                if undecodable {
                    *self
                        .answers
                        .entry(format!("{what}:undecodable"))
                        .or_default() += 1;
                    return;
                }
                if matches!(s.code(), Code::Internal | Code::Unknown | Code::DataLoss) {
                    self.anomalies.push(format!(
                        "hostile {what} answered {:?}: {}",
                        s.code(),
                        s.message()
                    ));
                }
                format!("{:?}", s.code())
            }
        };
        *self.answers.entry(format!("{what}:{code}")).or_default() += 1;
    }

    fn timed_out(&mut self, what: &str) {
        *self.answers.entry(format!("{what}:timeout")).or_default() += 1;
    }

    /// One line for the run's log.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .answers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(" ")
    }
}

fn range(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })),
    }
}

fn nested(success: Vec<RequestOp>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(TxnRequest {
            success,
            ..Default::default()
        })),
    }
}

fn prefix_range() -> RequestOp {
    let mut end = PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    range(PREFIX.as_bytes(), &end)
}

/// A chain of `depth` read-only txns, each a range over the run's keys and
/// the next level.
fn deep_txn(depth: usize) -> TxnRequest {
    let mut t = vec![prefix_range()];
    for _ in 1..depth {
        t = vec![prefix_range(), nested(t)];
    }
    TxnRequest {
        success: t,
        ..Default::default()
    }
}

/// 64 txns of 32 txns of 24 ranges over the run's keys (within etcd's
/// per-level budgets), padded with one more range to just under the
/// request limit: the txn that once exhausted every member's memory.
fn wide_txn() -> TxnRequest {
    let leaf: Vec<RequestOp> = (0..24).map(|_| prefix_range()).collect();
    let mid: Vec<RequestOp> = (0..32).map(|_| nested(leaf.clone())).collect();
    let mut top = TxnRequest {
        success: (0..64).map(|_| nested(mid.clone())).collect(),
        ..Default::default()
    };
    let mut pad = MAX_REQUEST_BYTES.saturating_sub(top.encoded_len() + 16);
    top.success.push(range(&vec![b'h'; pad], b""));
    while top.encoded_len() > MAX_REQUEST_BYTES - 1024 && pad > 0 {
        pad = pad.saturating_sub(256);
        top.success[64] = range(&vec![b'h'; pad], b"");
    }
    top
}

/// Sends `bytes` on a fresh TCP connection to `to` and reads whatever comes
/// back until the peer closes or a second passes.
async fn garbage(to: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    // The peer may close mid-write: that is an answer too.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 16 << 10];
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// Sends hostile inputs to one member (`channel` to its client port;
/// `client` and `peer` its client and peer addresses) until `until`.
pub async fn barrage(
    channel: Channel,
    client: SocketAddr,
    peer: SocketAddr,
    rng: &mut Rng,
    until: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    // A watcher that never reads: the member must bound what it queues
    // for it, and the run's own watchers must not stall behind it.
    let stalled = {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: PREFIX.as_bytes().to_vec(),
                    range_end: {
                        let mut e = PREFIX.as_bytes().to_vec();
                        if let Some(l) = e.last_mut() {
                            *l += 1;
                        }
                        e
                    },
                    start_revision: 1,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let requests =
            tokio_stream::StreamExt::chain(tokio_stream::iter([req]), tokio_stream::pending());
        let mut wc = WatchClient::new(channel.clone());
        match tokio::time::timeout(CALL_TIMEOUT, wc.watch(requests)).await {
            Ok(Ok(resp)) => {
                out.record("stalled-watch", Ok(()));
                Some(resp.into_inner())
            }
            Ok(Err(s)) => {
                out.record("stalled-watch", Err(s));
                None
            }
            Err(_) => {
                out.timed_out("stalled-watch");
                None
            }
        }
    };
    let mut kv = KvClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(4 << 20);
    let mut round = 0u64;
    while Instant::now() < until {
        let pick = (round + rng.below(6)) % 6;
        round += 1;
        match pick {
            0 => {
                // Past the server's depth budget (32), and past what the
                // codec decodes (about 50 levels).
                let t = deep_txn(rng.range(20, 200) as usize);
                match tokio::time::timeout(CALL_TIMEOUT, kv.txn(t)).await {
                    Ok(r) => out.record("deep-txn", r.map(drop)),
                    Err(_) => out.timed_out("deep-txn"),
                }
            }
            1 => match tokio::time::timeout(CALL_TIMEOUT, kv.txn(wide_txn())).await {
                Ok(r) => out.record("wide-txn", r.map(drop)),
                Err(_) => out.timed_out("wide-txn"),
            },
            2 => {
                // Outside the run's prefix: the checks read only its keys.
                let put = PutRequest {
                    key: b"hostile/too-large".to_vec(),
                    value: vec![b'x'; MAX_REQUEST_BYTES + 1024],
                    ..Default::default()
                };
                match tokio::time::timeout(CALL_TIMEOUT, kv.put(put)).await {
                    Ok(r) => out.record("oversized-put", r.map(drop)),
                    Err(_) => out.timed_out("oversized-put"),
                }
            }
            3 | 4 => {
                // Raw bytes, or an HTTP/2 preface followed by junk frames.
                let to = if pick == 3 { client } else { peer };
                let mut bytes = Vec::new();
                if rng.chance(0.5) {
                    bytes.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
                }
                let n = rng.range(1, 64 << 10) as usize;
                bytes.extend(random_bytes(rng, n));
                let what = if pick == 3 {
                    "client-garbage"
                } else {
                    "peer-garbage"
                };
                if garbage(to, &bytes).await.is_ok() {
                    out.record(what, Ok(()));
                } else {
                    out.timed_out(what);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    drop(stalled);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inputs_have_the_shapes_they_claim() {
        let wide = wide_txn();
        let len = wide.encoded_len();
        assert!(
            len <= MAX_REQUEST_BYTES - 1024 && len > MAX_REQUEST_BYTES - 4096,
            "{len}"
        );
        assert_eq!(wide.success.len(), 65);
        let mut depth = 0;
        let mut level = &deep_txn(300).success;
        while let Some(RequestOp {
            request: Some(request_op::Request::RequestTxn(t)),
        }) = level.get(1)
        {
            depth += 1;
            level = &t.success;
        }
        assert_eq!(depth, 299);
    }
}
