//! Bad input sent to real servers, with the exact answer each must get
//! (docs/bad-input.md lists them). The etcd v3 cases run against real etcd
//! (the shared cluster) and against an in-process Ballast member with the
//! same expectations — etcd's codes and messages — and check that nothing
//! was stored. The apiserver cases run against an in-process apiserver on
//! the shared etcd.

use std::time::Duration;

use ballast_fuzz::EtcdTarget;
use ballast_proto::etcdserverpb as pb;
use ballast_proto::etcdserverpb::{kv_client::KvClient, lease_client::LeaseClient};
use ballast_tests::{Cluster, ClusterKind};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

const MIB: usize = 1024 * 1024;

fn put(key: &[u8], value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value,
        ..Default::default()
    }
}

fn put_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(key, b"v".to_vec()))),
    }
}

#[track_caller]
fn expect_err<T: std::fmt::Debug>(
    case: &str,
    got: Result<T, tonic::Status>,
    code: Code,
    message: &str,
) {
    match got {
        Ok(v) => panic!("{case}: expected {code:?} {message:?}, got OK {v:?}"),
        Err(s) => assert_eq!((s.code(), s.message()), (code, message), "{case}: {s:?}"),
    }
}

/// Nothing under `prefix` exists.
async fn nothing_stored(kv: &mut KvClient<Channel>, prefix: &[u8]) {
    let mut end = prefix.to_vec();
    *end.last_mut().unwrap() += 1;
    let r = kv
        .range(pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: end,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(
        r.count, 0,
        "a rejected request stored something under {prefix:?}"
    );
}

/// Every etcd-side case on one server; `p` is a key prefix unique to the run.
async fn etcd_cases(ch: Channel, p: &str) {
    let mut kv = KvClient::new(ch.clone())
        .max_decoding_message_size(64 * MIB)
        .max_encoding_message_size(64 * MIB);
    let mut lease = LeaseClient::new(ch.clone());
    let k = |s: &str| format!("{p}{s}").into_bytes();
    let prefix = p.as_bytes().to_vec();

    expect_err(
        "put without a key",
        kv.put(put(b"", b"v".to_vec())).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    expect_err(
        "delete without a key",
        kv.delete_range(pb::DeleteRangeRequest::default()).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    expect_err(
        "range without a key",
        kv.range(pb::RangeRequest::default()).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    // Over --max-request-bytes (1.5 MiB) but under the gRPC limit (+512 KiB).
    expect_err(
        "a 1.7 MiB put",
        kv.put(put(&k("big"), vec![b'x'; 1700 * 1024])).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    expect_err(
        "a txn putting one key twice",
        kv.txn(pb::TxnRequest {
            success: vec![put_op(&k("dup")), put_op(&k("dup"))],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    expect_err(
        "a txn of 129 operations",
        kv.txn(pb::TxnRequest {
            success: (0..129).map(|i| put_op(&k(&format!("many{i}")))).collect(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    expect_err(
        "put ignore_value on a missing key",
        kv.put(pb::PutRequest {
            key: k("missing"),
            ignore_value: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    expect_err(
        "put with a lease that was never granted",
        kv.put(pb::PutRequest {
            key: k("unleased"),
            value: b"v".to_vec(),
            lease: 0x7fff_0000_0000_0001,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    expect_err(
        "revoke of an unknown lease",
        lease
            .lease_revoke(pb::LeaseRevokeRequest {
                id: 0x7fff_0000_0000_0001,
            })
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    expect_err(
        "grant with a TTL over the maximum",
        lease
            .lease_grant(pb::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })
            .await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    nothing_stored(&mut kv, &prefix).await;

    // Revisions: the future, and below the compacted revision.
    let rev = kv
        .put(put(&k("rev"), b"1".to_vec()))
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision;
    expect_err(
        "range at a future revision",
        kv.range(pb::RangeRequest {
            key: k("rev"),
            revision: rev + 1_000_000,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    expect_err(
        "compact at a future revision",
        kv.compact(pb::CompactionRequest {
            revision: rev + 1_000_000,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    kv.compact(pb::CompactionRequest {
        revision: rev,
        physical: true,
    })
    .await
    .expect("compact at the current revision");
    expect_err(
        "range below the compacted revision",
        kv.range(pb::RangeRequest {
            key: k("rev"),
            revision: rev - 1,
            ..Default::default()
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    expect_err(
        "compact at an already compacted revision",
        kv.compact(pb::CompactionRequest {
            revision: rev - 1,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );

    // An expired lease: writes with it are refused like an unknown one.
    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: granted.id,
                keys: false,
            })
            .await
            .expect("time to live")
            .into_inner();
        if ttl.ttl == -1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease {} never expired: {ttl:?}",
            granted.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_err(
        "put with an expired lease",
        kv.put(pb::PutRequest {
            key: k("expired"),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let r = kv
        .range(pb::RangeRequest {
            key: k("expired"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 0, "the refused put stored its key");
}

/// A message over the gRPC receive limit (2 MiB) is refused before it is
/// decoded: grpc-go (etcd) answers ResourceExhausted.
async fn oversized_message(ch: Channel, p: &str) {
    let mut kv = KvClient::new(ch).max_encoding_message_size(64 * MIB);
    let key = format!("{p}huge").into_bytes();
    let status = kv
        .put(put(&key, vec![b'x'; 3 * MIB]))
        .await
        .expect_err("a 3 MiB put");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "3 MiB put: {status:?}"
    );
    assert!(
        status
            .message()
            .starts_with("grpc: received message larger than max ("),
        "3 MiB put: {status:?}"
    );
    nothing_stored(&mut kv, p.as_bytes()).await;
}

/// Sends `body` unparsed as the message of `path`.
async fn raw(ch: Channel, path: &'static str, body: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(Bytes::copy_from_slice(body)),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner().to_vec())
}

/// Malformed protobuf and unknown methods: etcd (grpc-go) answers Internal
/// for a body it cannot parse and Unimplemented for an unknown method.
async fn malformed_cases(ch: Channel) {
    for (case, body) in [
        ("a length past the end", &[0x0a, 0x05, b'k'][..]),
        ("wire type 7", &[0x0f, 0x01][..]),
        ("a truncated varint", &[0x20, 0xff][..]),
        (
            "a 11-byte varint",
            &[
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ),
        ("field number 0", &[0x02, 0x00][..]),
    ] {
        let got = raw(ch.clone(), "/etcdserverpb.KV/Put", body).await;
        let status = got.expect_err(case);
        assert_eq!(status.code(), Code::Internal, "{case}: {status:?}");
        assert!(!status.message().is_empty(), "{case}");
    }
    let status = raw(ch.clone(), "/etcdserverpb.KV/NoSuchMethod", &[])
        .await
        .expect_err("an unknown method");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // Unknown fields are skipped, as protobuf requires: a Range with field
    // 99 set reads the key as usual.
    let mut body = pb::RangeRequest {
        key: b"bad_input/none".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    body.extend_from_slice(&[0x98, 0x06, 0x01]);
    let reply = raw(ch, "/etcdserverpb.KV/Range", &body)
        .await
        .expect("unknown fields are ignored");
    let reply = pb::RangeResponse::decode(reply.as_slice()).expect("a RangeResponse");
    assert_eq!(reply.count, 0);
}

use prost::Message;

#[derive(Debug, Clone, Copy)]
struct RawCodec;
struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

async fn connect(url: String) -> Channel {
    Channel::from_shared(url)
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect")
}

fn etcd_url() -> String {
    let e = Cluster::shared(ClusterKind::Etcd).endpoints()[0].clone();
    if e.contains("://") {
        e
    } else {
        format!("http://{e}")
    }
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bad_input/{tag}/{nanos}/")
}

#[test]
fn etcd_v3_bad_requests_on_real_etcd() {
    let url = etcd_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = connect(url).await;
        etcd_cases(ch.clone(), &unique("etcd")).await;
        oversized_message(ch.clone(), &unique("etcd-huge")).await;
        malformed_cases(ch).await;
    });
}

#[test]
fn etcd_v3_oversized_message_on_ballast() {
    let member = EtcdTarget::start();
    let ch = member.channel();
    member.block_on(oversized_message(ch, &unique("ballast-huge")));
}

#[test]
fn etcd_v3_bad_requests_on_ballast() {
    let member = EtcdTarget::start();
    let ch = member.channel();
    member.block_on(async {
        etcd_cases(ch.clone(), &unique("ballast")).await;
        malformed_cases(ch).await;
    });
    member.assert_healthy(true);
}

// ---------------------------------------------------------------- apiserver

struct Api {
    addr: std::net::SocketAddr,
}

impl Api {
    async fn start() -> Api {
        let eps = tokio::task::spawn_blocking(etcd_url).await.unwrap();
        let apiserver = ballast_apiserver::Apiserver::new(ballast_apiserver::Config {
            etcd_servers: vec![eps],
            cache: ballast_apiserver::CacheConfig::default(),
        })
        .expect("apiserver");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(apiserver.serve(listener, std::future::pending()));
        let api = Api { addr };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while api.send("GET", "/readyz", "", Bytes::new()).await.0 != 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "apiserver not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> (u16, Value) {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            sender.send_request(req.body(Full::new(body)).unwrap()),
        )
        .await
        .expect("answer in time")
        .expect("response");
        let code = resp.status().as_u16();
        let bytes = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
            .await
            .expect("the whole body in time")
            .expect("body")
            .to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// POSTs `body` read or not (see `ballast_tests::http::post_unread`).
    async fn oversized(&self, path: &str, body: String) -> (u16, Value) {
        ballast_tests::http::post_unread(self.addr, path, body).await
    }

    async fn json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.send(
            method,
            path,
            "application/json",
            Bytes::from(body.to_string()),
        )
        .await
    }
}

/// `(code, reason, message)` of a Status, checking it is one.
fn status(case: &str, got: &(u16, Value)) -> (u16, String, String) {
    let (code, body) = got;
    assert_eq!(body["kind"], "Status", "{case}: {body}");
    assert_eq!(body["code"], *code, "{case}: {body}");
    (
        *code,
        body["reason"].as_str().unwrap_or_default().to_string(),
        body["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[track_caller]
fn expect_status(case: &str, got: (u16, Value), code: u16, reason: &str, message_has: &str) {
    let (c, r, m) = status(case, &got);
    assert_eq!((c, r.as_str()), (code, reason), "{case}: {}", got.1);
    assert!(
        m.contains(message_has),
        "{case}: {m:?} lacks {message_has:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_bad_requests() {
    let api = Api::start().await;
    let ns = format!("bad-input-{}", std::process::id());
    let (code, body) = api
        .json(
            "POST",
            "/api/v1/namespaces",
            &json!({"metadata": {"name": ns}}).to_string(),
        )
        .await;
    assert!(code == 201 || code == 409, "{code} {body}");
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    };

    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            "{\"kind\":".into(),
            400,
            "BadRequest",
            "the object provided is unrecognized or malformed",
        ),
        (
            "a JSON array",
            "application/json",
            "[1,2]".into(),
            400,
            "BadRequest",
            "not a JSON object",
        ),
        (
            "another kind",
            "application/json",
            json!({"kind": "Service", "metadata": {"name": "bad-kind"}}).to_string(),
            400,
            "BadRequest",
            "does not match",
        ),
        (
            "another apiVersion",
            "application/json",
            json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "bad-version"}})
                .to_string(),
            400,
            "BadRequest",
            "does not match",
        ),
        (
            "metadata not an object",
            "application/json",
            json!({"metadata": "x", "spec": {}}).to_string(),
            400,
            "BadRequest",
            "metadata",
        ),
        (
            "an upper-case name",
            "application/json",
            pod("Bad_Name").to_string(),
            422,
            "Invalid",
            "metadata.name: Invalid value: \"Bad_Name\"",
        ),
        (
            "a 254-character name",
            "application/json",
            pod(&"a".repeat(254)).to_string(),
            422,
            "Invalid",
            "metadata.name",
        ),
        (
            "no name",
            "application/json",
            json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
                .to_string(),
            422,
            "Invalid",
            "name or generateName is required",
        ),
        (
            "a non-string label",
            "application/json",
            json!({"metadata": {"name": "bad-label", "labels": {"a": 1}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}})
            .to_string(),
            400,
            "BadRequest",
            "Pod in version \"v1\" cannot be handled as a Pod: metadata.labels.a: invalid type",
        ),
        (
            "no containers",
            "application/json",
            json!({"metadata": {"name": "no-containers"}, "spec": {}}).to_string(),
            422,
            "Invalid",
            "spec.containers: Required value",
        ),
        (
            "a container without an image",
            "application/json",
            json!({"metadata": {"name": "no-image"}, "spec": {"containers": [{"name": "c"}]}})
                .to_string(),
            422,
            "Invalid",
            "spec.containers[0].image: Required value",
        ),
        (
            "a YAML body",
            "application/yaml",
            "kind: Pod".into(),
            415,
            "UnsupportedMediaType",
            "application/yaml",
        ),
        (
            "a protobuf body without the envelope",
            "application/vnd.kubernetes.protobuf",
            "\u{0a}\u{02}hi".into(),
            400,
            "BadRequest",
            "k8s envelope",
        ),
    ];
    for (case, ct, body, code, reason, msg) in cases {
        eprintln!("case: {case}");
        let got = api.send("POST", &pods, ct, Bytes::from(body)).await;
        expect_status(case, got, code, reason, msg);
    }
    // Over the 3 MiB body limit.
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(3 * MIB + 1)}});
    let got = api
        .oversized(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            big.to_string(),
        )
        .await;
    expect_status("a 3 MiB body", got, 413, "RequestEntityTooLarge", "limit");

    // Unknown fields: Strict refuses (400), the default warns and stores.
    let strict = json!({"metadata": {"name": "strict"}, "spec": {"containers": [{"name": "c", "image": "x"}], "bogus": 1}});
    let got = api
        .json(
            "POST",
            &format!("{pods}?fieldValidation=Strict"),
            &strict.to_string(),
        )
        .await;
    expect_status(
        "an unknown field, Strict",
        got,
        400,
        "BadRequest",
        "strict decoding error: unknown field \"spec.bogus\"",
    );
    let got = api
        .json(
            "POST",
            &format!("{pods}?fieldValidation=Sometimes"),
            &pod("fv").to_string(),
        )
        .await;
    expect_status(
        "an unknown fieldValidation",
        got,
        400,
        "BadRequest",
        "fieldValidation",
    );
    let got = api
        .json(
            "POST",
            &format!("{pods}?dryRun=Some"),
            &pod("dry").to_string(),
        )
        .await;
    expect_status("an unknown dryRun", got, 400, "BadRequest", "dry run");

    // Selectors, list options and resource versions.
    for (case, query, code, reason, msg) in [
        (
            "a label selector with ~",
            "labelSelector=app+~+web",
            400,
            "BadRequest",
            "unable to parse requirement",
        ),
        (
            "a label key with a space",
            "labelSelector=a%20b%3Dc",
            400,
            "BadRequest",
            "unable to parse requirement",
        ),
        (
            "an unclosed set",
            "labelSelector=env+in+(a",
            400,
            "BadRequest",
            "unable to parse requirement",
        ),
        (
            "an unsupported field",
            "fieldSelector=spec.foo%3D1",
            400,
            "BadRequest",
            "field label not supported",
        ),
        (
            "a field term without an operator",
            "fieldSelector=metadata.name",
            400,
            "BadRequest",
            "no operator",
        ),
        ("a non-numeric limit", "limit=x", 400, "BadRequest", ""),
        (
            "a garbage continue token",
            "continue=garbage",
            400,
            "BadRequest",
            "",
        ),
    ] {
        eprintln!("case: {case}");
        let got = api.json("GET", &format!("{pods}?{query}"), "").await;
        expect_status(case, got, code, reason, msg);
    }

    // PATCH bodies on a pod that exists.
    let (code, body) = api.json("POST", &pods, &pod("target").to_string()).await;
    assert_eq!(code, 201, "{body}");
    let target = format!("{pods}/target");
    for (case, ct, body, code, reason, msg) in [
        (
            "a patch that is not JSON",
            "application/merge-patch+json",
            "{",
            400,
            "BadRequest",
            "not valid JSON",
        ),
        (
            "a JSON patch that is not a list",
            "application/json-patch+json",
            "{}",
            400,
            "BadRequest",
            "",
        ),
        (
            "a JSON patch op on a missing path",
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/metadata/nope"}]"#,
            422,
            "Invalid",
            "",
        ),
        (
            "a failed JSON patch test",
            "application/json-patch+json",
            r#"[{"op":"test","path":"/kind","value":"Service"}]"#,
            422,
            "Invalid",
            "",
        ),
        (
            "an unknown patch op",
            "application/json-patch+json",
            r#"[{"op":"frobnicate","path":"/kind"}]"#,
            400,
            "BadRequest",
            "",
        ),
        (
            "an unsupported patch type",
            "application/xml",
            "<x/>",
            415,
            "UnsupportedMediaType",
            "",
        ),
        (
            "a patch making the pod invalid",
            "application/merge-patch+json",
            r#"{"spec":{"containers":null}}"#,
            422,
            "Invalid",
            "",
        ),
    ] {
        eprintln!("case: {case}");
        let got = api.send("PATCH", &target, ct, Bytes::from(body)).await;
        expect_status(case, got, code, reason, msg);
    }

    // Nothing the refused requests named was stored; the target is unchanged.
    let (code, list) = api.json("GET", &pods, "").await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["target"], "only the valid pod was stored");
    let (code, got) = api.json("GET", &target, "").await;
    assert_eq!(code, 200);
    assert_eq!(got["spec"]["containers"][0]["image"], "nginx");
    assert_eq!(
        got["metadata"]["resourceVersion"],
        body["metadata"]["resourceVersion"]
    );
    let (code, _) = api
        .json(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/big"),
            "",
        )
        .await;
    assert_eq!(code, 404, "the oversized configmap was not stored");

    let got = api
        .json("GET", &format!("{pods}?resourceVersion=abc"), "")
        .await;
    let (c, _, _) = status("a non-numeric resourceVersion", &got);
    assert_eq!(c, 400, "{}", got.1);
}

// ------------------------------------------------ crashes found by fuzzing

/// Found by `object_json`: a pod whose `spec` is not an object (likewise a
/// deployment's `spec.template.spec`, a service's `spec` or one of its
/// `spec.ports`) panics in defaulting (validation.rs indexes into it), so
/// the apiserver drops the connection. Kubernetes answers 400 BadRequest
/// ("cannot unmarshal string into Go struct field Pod.spec").
#[test]
fn apiserver_non_object_specs() {
    use ballast_apiserver::fuzz_api::create_object;
    for (resource, body) in [
        ("pods", r#"{"metadata":{"name":"p"},"spec":"x"}"#),
        (
            "deployments",
            r#"{"metadata":{"name":"d"},"spec":{"template":{"spec":"x"}}}"#,
        ),
        (
            "replicasets",
            r#"{"metadata":{"name":"r"},"spec":{"template":{"spec":7}}}"#,
        ),
        ("services", r#"{"metadata":{"name":"s"},"spec":"x"}"#),
        (
            "services",
            r#"{"metadata":{"name":"s"},"spec":{"ports":["x"]}}"#,
        ),
    ] {
        let got = std::panic::catch_unwind(|| create_object(resource, body.as_bytes()));
        let err = got
            .unwrap_or_else(|_| panic!("{resource} {body}: panicked"))
            .expect_err(body);
        assert_eq!(err.code(), 400, "{resource} {body}: {err}");
    }
}

/// Found by `snapshot_restore`: an image whose checksum is right but which
/// holds a record the store cannot load (here a truncated kv record) is
/// installed anyway; the reload fails after the engine was cleared, and the
/// store is left unreadable. A failed restore must change nothing.
#[test]
fn failed_restore_keeps_the_store() {
    use std::sync::Arc;

    use ballast_storage::{KvStore, MemEngine, RangeRequest, StoreConfig, WatchableStore, WriteOp};
    let store = WatchableStore::new(
        KvStore::open(Arc::new(MemEngine::new()), StoreConfig::default()).unwrap(),
    );
    let op = WriteOp::Put(ballast_storage::PutRequest {
        key: b"x".to_vec(),
        value: b"before".to_vec(),
        ..Default::default()
    });
    store.apply(&[(1, &op)]);
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let before = store.range(&all).unwrap();
    // One kv record: a valid revision key, a 4-byte (truncated) value.
    let image = ballast_fuzz::seal(&[(0, vec![0; 16], vec![1, 0, 0, 0])]);
    let err = store
        .restore(&mut std::io::Cursor::new(&image))
        .expect_err("a corrupt record");
    assert_eq!(
        store.range(&all).map_err(|e| e.to_string()),
        Ok(before),
        "after {err}"
    );
}
