//! Targets on the storage member's etcd v3 gRPC API: one in-process
//! single-member [`StorageServer`] (temp dir, 127.0.0.1, port 0), fed
//! requests through a real tonic client.
//!
//! - [`EtcdTarget::request`]: byte 0 picks the request message (Range, Put,
//!   DeleteRange, Txn, Compaction, the lease calls, Watch, LeaseKeepAlive,
//!   the maintenance calls); the rest is decoded as that message with prost
//!   and sent. The answer must be OK or a status other than Internal and
//!   Unknown (those mean "server bug"), streams must answer, and the member
//!   must stay healthy.
//! - [`EtcdTarget::raw`]: byte 0 picks a unary method; the rest is sent as
//!   the gRPC message body unparsed. A body that does not decode must get
//!   Internal, as grpc-go (and so etcd) answers unparsable requests; one
//!   that decodes is held to the rules above.
//!
//! Membership changes, leader moves and auth are left out: they are
//! legitimate ways to make a one-member cluster unavailable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ballast_proto::etcdserverpb as pb;
use ballast_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use ballast_server::{ServerConfig, StorageServer};
use bytes::{Buf, BufMut};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long any one call may take before the input counts as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running member and a client channel to it.
pub struct EtcdTarget {
    rt: tokio::runtime::Runtime,
    server: Option<StorageServer>,
    channel: Channel,
    inputs: AtomicU64,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTarget")
            .field("addr", &self.server.as_ref().map(|s| s.client_addrs()[0]))
            .finish()
    }
}

impl EtcdTarget {
    /// Starts a one-member cluster on 127.0.0.1 and waits (bounded) until
    /// it leads.
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let (server, channel) = rt.block_on(async {
            let peer = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a peer port");
                format!("http://{}", l.local_addr().expect("local addr"))
            };
            let mut config = ServerConfig::new("fuzz", dir.path());
            config.listen_client_urls = vec!["http://127.0.0.1:0".into()];
            config.advertise_client_urls = vec!["http://127.0.0.1:0".into()];
            config.listen_peer_urls = vec![peer.clone()];
            config.initial_advertise_peer_urls = vec![peer.clone()];
            config.initial_cluster = vec![("fuzz".into(), peer)];
            config.heartbeat_interval = Duration::from_millis(20);
            config.election_timeout = Duration::from_millis(200);
            let server = StorageServer::start(config)
                .await
                .expect("start the member");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !server.node().is_leader() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(server.node().is_leader(), "the only member never led");
            let channel = Channel::from_shared(format!("http://{}", server.client_addrs()[0]))
                .expect("url")
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect");
            (server, channel)
        });
        EtcdTarget {
            rt,
            server: Some(server),
            channel,
            inputs: AtomicU64::new(0),
            _dir: dir,
        }
    }

    /// A channel to the member (for tests that send their own requests).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Runs `f` on the member's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// One decoded request (see the module docs).
    pub fn request(&self, data: &[u8]) {
        let Some((&which, body)) = data.split_first() else {
            return;
        };
        let ch = self.channel.clone();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, send_decoded(ch, which, body)).await
        });
        match outcome {
            Err(_) => panic!("request kind {} hung for {CALL_TIMEOUT:?}", which % KINDS),
            Ok(None) => {}
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(status))) => check_status(&status),
        }
        self.after_input();
    }

    /// One raw message body (see the module docs).
    pub fn raw(&self, data: &[u8]) {
        let Some((&which, body)) = data.split_first() else {
            return;
        };
        let (path, decodes) = RAW_METHODS[which as usize % RAW_METHODS.len()];
        let ch = self.channel.clone();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(CALL_TIMEOUT, raw_unary(ch, path, body.to_vec())).await
        });
        let reply = outcome.unwrap_or_else(|_| panic!("{path} hung for {CALL_TIMEOUT:?}"));
        match (decodes(body), reply) {
            (true, Ok(_)) => {}
            (true, Err(status)) => check_status(&status),
            (false, Ok(_)) => panic!("{path} accepted a body that does not decode"),
            (false, Err(status)) => assert_eq!(
                status.code(),
                Code::Internal,
                "{path}: an unparsable body gets Internal, as from etcd: {status:?}"
            ),
        }
        self.after_input();
    }

    fn after_input(&self) {
        let n = self.inputs.fetch_add(1, Ordering::Relaxed);
        self.assert_healthy(n % 16 == 15);
    }

    /// The member answers Status as leader; with `write`, a put and a
    /// linearizable read of it also work (or are refused with a proper
    /// code, e.g. after a NOSPACE alarm).
    pub fn assert_healthy(&self, write: bool) {
        let ch = self.channel.clone();
        let health = async move {
            let st = MaintenanceClient::new(ch.clone())
                .status(pb::StatusRequest {})
                .await?
                .into_inner();
            if st.leader == 0 {
                return Err(Status::unavailable(format!("no leader: {st:?}")));
            }
            if write {
                let mut kv = KvClient::new(ch);
                let value = format!("{}", st.raft_index).into_bytes();
                kv.put(pb::PutRequest {
                    key: b"\xff__fuzz_health".to_vec(),
                    value: value.clone(),
                    ..Default::default()
                })
                .await?;
                let got = kv
                    .range(pb::RangeRequest {
                        key: b"\xff__fuzz_health".to_vec(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if got.kvs.first().map(|kv| &kv.value) != Some(&value) {
                    return Err(Status::data_loss(format!("read {got:?} after a put")));
                }
            }
            Ok(())
        };
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, health).await });
        match result {
            Err(_) => panic!("the member stopped answering (health check hung)"),
            Ok(Err(s)) => panic!("the member is unhealthy: {s:?}"),
            Ok(Ok(())) => {}
        }
    }
}

impl Drop for EtcdTarget {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(20), server.shutdown()).await;
            });
        }
    }
}

/// A status a bad request may get: anything but "the server broke".
#[track_caller]
fn check_status(status: &Status) {
    assert!(
        !matches!(status.code(), Code::Internal | Code::Unknown),
        "server error for a client's request: {status:?}"
    );
    assert!(
        !status.message().is_empty(),
        "an error without a message: {status:?}"
    );
}

static GLOBAL: OnceLock<EtcdTarget> = OnceLock::new();

/// [`EtcdTarget::request`] on a member started on first use (libFuzzer
/// runs one process per target, so the member lives as long as the run).
pub fn etcd_request(data: &[u8]) {
    GLOBAL.get_or_init(EtcdTarget::start).request(data)
}

/// [`EtcdTarget::raw`] on the process-wide member.
pub fn etcd_raw(data: &[u8]) {
    GLOBAL.get_or_init(EtcdTarget::start).raw(data)
}

/// Number of request kinds byte 0 picks from.
const KINDS: u8 = 18;

/// Decodes `body` as message kind `which` and sends it; `None` when the
/// body is not that message.
async fn send_decoded(ch: Channel, which: u8, body: &[u8]) -> Option<Result<(), Status>> {
    fn dec<T: Message + Default>(b: &[u8]) -> Option<T> {
        T::decode(b).ok()
    }
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut m = MaintenanceClient::new(ch.clone());
    fn done<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
        r.map(|_| ())
    }
    Some(match which % KINDS {
        0 => done(kv.range(dec::<pb::RangeRequest>(body)?).await),
        1 => done(kv.put(dec::<pb::PutRequest>(body)?).await),
        2 => done(kv.delete_range(dec::<pb::DeleteRangeRequest>(body)?).await),
        3 => done(kv.txn(dec::<pb::TxnRequest>(body)?).await),
        4 => done(kv.compact(dec::<pb::CompactionRequest>(body)?).await),
        5 => done(lease.lease_grant(dec::<pb::LeaseGrantRequest>(body)?).await),
        6 => done(
            lease
                .lease_revoke(dec::<pb::LeaseRevokeRequest>(body)?)
                .await,
        ),
        7 => done(
            lease
                .lease_time_to_live(dec::<pb::LeaseTimeToLiveRequest>(body)?)
                .await,
        ),
        8 => done(lease.lease_leases(pb::LeaseLeasesRequest {}).await),
        9 => keep_alive(&mut lease, dec::<pb::LeaseKeepAliveRequest>(body)?).await,
        10 => watch(ch, dec::<pb::WatchRequest>(body)?).await,
        11 => done(m.status(pb::StatusRequest {}).await),
        12 => done(m.hash_kv(dec::<pb::HashKvRequest>(body)?).await),
        13 => done(m.hash(pb::HashRequest {}).await),
        14 => alarm(&mut m, dec::<pb::AlarmRequest>(body)?).await,
        15 => done(
            ClusterClient::new(ch)
                .member_list(dec::<pb::MemberListRequest>(body)?)
                .await,
        ),
        16 => done(m.defragment(pb::DefragmentRequest {}).await),
        _ => snapshot(&mut m).await,
    })
}

/// One keep-alive: etcd answers every one (TTL 0 for an unknown lease).
async fn keep_alive(
    lease: &mut LeaseClient<Channel>,
    req: pb::LeaseKeepAliveRequest,
) -> Result<(), Status> {
    // The request stream stays open until the answer is in: a closed
    // request stream may end the call first.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req).await.expect("receiver alive");
    let mut stream = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let answer = stream.message().await?;
    drop(tx);
    match answer {
        Some(r) => {
            assert!(r.ttl >= 0, "a negative TTL: {r:?}");
            Ok(())
        }
        None => panic!("keep-alive stream closed without an answer"),
    }
}

/// One watch request on a new stream. A create is always answered (created,
/// or canceled with a reason); other requests may go unanswered.
async fn watch(ch: Channel, req: pb::WatchRequest) -> Result<(), Status> {
    let is_create = matches!(
        req.request_union,
        Some(pb::watch_request::RequestUnion::CreateRequest(_))
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(req).await.expect("receiver alive");
    let mut stream = WatchClient::new(ch)
        .watch(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let wait = if is_create {
        CALL_TIMEOUT / 2
    } else {
        Duration::from_millis(100)
    };
    match tokio::time::timeout(wait, stream.message()).await {
        Ok(Ok(Some(r))) => {
            if is_create {
                assert!(r.created || r.canceled, "first answer to a create: {r:?}");
                if r.canceled {
                    assert!(
                        !r.cancel_reason.is_empty() || r.compact_revision != 0,
                        "{r:?}"
                    );
                }
            }
        }
        Ok(Ok(None)) => assert!(!is_create, "watch stream closed without an answer"),
        Ok(Err(status)) => return Err(status),
        Err(_) => assert!(!is_create, "a watch create went unanswered"),
    }
    drop(tx);
    Ok(())
}

/// An alarm request; anything it raised is cleared again so later inputs
/// still see a writable member.
async fn alarm(m: &mut MaintenanceClient<Channel>, req: pb::AlarmRequest) -> Result<(), Status> {
    let result = m.alarm(req).await.map(|_| ());
    let get = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Get as i32,
        ..Default::default()
    };
    let active = m.alarm(get).await?.into_inner().alarms;
    for a in active {
        m.alarm(pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Deactivate as i32,
            member_id: a.member_id,
            alarm: a.alarm,
        })
        .await?;
    }
    result
}

/// A whole snapshot stream; the blob must check out as etcd clients check it.
async fn snapshot(m: &mut MaintenanceClient<Channel>) -> Result<(), Status> {
    let mut stream = m.snapshot(pb::SnapshotRequest {}).await?.into_inner();
    let mut blob = Vec::new();
    while let Some(chunk) = stream.message().await? {
        blob.extend_from_slice(&chunk.blob);
    }
    assert!(
        ballast_server::image_from_blob(&blob).is_some(),
        "a snapshot blob of {} bytes that does not verify",
        blob.len()
    );
    Ok(())
}

/// The unary methods the raw target calls, with "does this body decode".
type Decodes = fn(&[u8]) -> bool;
const RAW_METHODS: &[(&str, Decodes)] = &[
    ("/etcdserverpb.KV/Range", decodes::<pb::RangeRequest>),
    ("/etcdserverpb.KV/Put", decodes::<pb::PutRequest>),
    (
        "/etcdserverpb.KV/DeleteRange",
        decodes::<pb::DeleteRangeRequest>,
    ),
    ("/etcdserverpb.KV/Txn", decodes::<pb::TxnRequest>),
    ("/etcdserverpb.KV/Compact", decodes::<pb::CompactionRequest>),
    (
        "/etcdserverpb.Lease/LeaseGrant",
        decodes::<pb::LeaseGrantRequest>,
    ),
    (
        "/etcdserverpb.Lease/LeaseRevoke",
        decodes::<pb::LeaseRevokeRequest>,
    ),
    (
        "/etcdserverpb.Lease/LeaseTimeToLive",
        decodes::<pb::LeaseTimeToLiveRequest>,
    ),
    (
        "/etcdserverpb.Maintenance/Status",
        decodes::<pb::StatusRequest>,
    ),
    (
        "/etcdserverpb.Maintenance/HashKV",
        decodes::<pb::HashKvRequest>,
    ),
    (
        "/etcdserverpb.Cluster/MemberList",
        decodes::<pb::MemberListRequest>,
    ),
];

fn decodes<T: Message + Default>(b: &[u8]) -> bool {
    T::decode(b).is_ok()
}

/// Sends `body` as the message of `path`, unparsed.
pub(crate) async fn raw_unary(
    ch: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// A gRPC codec that passes message bytes through untouched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

#[derive(Debug)]
pub(crate) struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}
