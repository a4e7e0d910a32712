//! Writes the seed corpora under `fuzz/corpus/` from real messages, objects,
//! patches and selectors. Run by hand after a format changes:
//! `cargo test --release -p ballast-fuzz --test corpus_gen -- --ignored`.

use std::path::Path;

#[cfg(feature = "storage")]
use storage_seeds::*;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = ballast_fuzz::corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), bytes).unwrap();
}

/// The seeds that need the storage crates (the `storage` feature).
#[cfg(feature = "storage")]
mod storage_seeds {
    use std::sync::Arc;

    use ballast_proto::etcdserverpb as pb;
    use ballast_storage::fuzz_api::encode_record;
    use ballast_storage::snapshot::write_snapshot;
    use ballast_storage::{
        KeyValue, KvStore, MemEngine, PutRequest, Revision, StoreConfig, WatchableStore, WriteOp,
    };
    use prost::Message;

    pub fn op(r: pb::request_op::Request) -> pb::RequestOp {
        pb::RequestOp { request: Some(r) }
    }

    pub fn etcd_messages() -> Vec<(&'static str, u8, Vec<u8>)> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let create_if_absent = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: b"/registry/pods/default/p".to_vec(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![op(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"/registry/pods/default/p".to_vec(),
                value: br#"{"kind":"Pod"}"#.to_vec(),
                ..Default::default()
            }))],
            failure: vec![op(pb::request_op::Request::RequestRange(
                pb::RangeRequest {
                    key: b"/registry/pods/default/p".to_vec(),
                    ..Default::default()
                },
            ))],
        };
        let nested = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Mod as i32,
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                target_union: Some(TargetUnion::ModRevision(1)),
            }],
            success: vec![
                op(pb::request_op::Request::RequestTxn(
                    create_if_absent.clone(),
                )),
                op(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key: b"b".to_vec(),
                        range_end: b"c".to_vec(),
                        prev_kv: true,
                    },
                )),
            ],
            failure: vec![],
        };
        let watch_create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"a".to_vec(),
                    range_end: b"\0".to_vec(),
                    start_revision: 1,
                    progress_notify: true,
                    prev_kv: true,
                    watch_id: 3,
                    fragment: true,
                    filters: vec![1],
                },
            )),
        };
        let watch_cancel = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: 3 },
            )),
        };
        let watch_progress = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
        };
        vec![
            (
                "range",
                0,
                pb::RangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "range_prefix_sorted",
                0,
                pb::RangeRequest {
                    key: b"/registry/".to_vec(),
                    range_end: b"/registry0".to_vec(),
                    limit: 2,
                    sort_order: 2,
                    sort_target: 3,
                    keys_only: true,
                    min_mod_revision: 1,
                    max_create_revision: 100,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "range_all_at_rev",
                0,
                pb::RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: 2,
                    count_only: true,
                    serializable: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "put",
                1,
                pb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    prev_kv: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "put_ignore",
                1,
                pb::PutRequest {
                    key: b"k".to_vec(),
                    lease: 7,
                    ignore_value: true,
                    ignore_lease: true,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                "delete_prefix",
                2,
                pb::DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    prev_kv: true,
                }
                .encode_to_vec(),
            ),
            ("txn_create", 3, create_if_absent.encode_to_vec()),
            ("txn_nested", 3, nested.encode_to_vec()),
            (
                "compact",
                4,
                pb::CompactionRequest {
                    revision: 3,
                    physical: true,
                }
                .encode_to_vec(),
            ),
            (
                "lease_grant",
                5,
                pb::LeaseGrantRequest { ttl: 60, id: 7 }.encode_to_vec(),
            ),
            (
                "lease_revoke",
                6,
                pb::LeaseRevokeRequest { id: 7 }.encode_to_vec(),
            ),
            (
                "lease_ttl",
                7,
                pb::LeaseTimeToLiveRequest { id: 7, keys: true }.encode_to_vec(),
            ),
            ("lease_leases", 8, vec![]),
            (
                "keep_alive",
                9,
                pb::LeaseKeepAliveRequest { id: 7 }.encode_to_vec(),
            ),
            ("watch_create", 10, watch_create.encode_to_vec()),
            ("watch_cancel", 10, watch_cancel.encode_to_vec()),
            ("watch_progress", 10, watch_progress.encode_to_vec()),
            ("status", 11, vec![]),
            (
                "hash_kv",
                12,
                pb::HashKvRequest { revision: 2 }.encode_to_vec(),
            ),
            ("hash", 13, vec![]),
            ("alarm_get", 14, pb::AlarmRequest::default().encode_to_vec()),
            (
                "member_list",
                15,
                pb::MemberListRequest { linearizable: true }.encode_to_vec(),
            ),
            ("defragment", 16, vec![]),
            ("snapshot", 17, vec![]),
        ]
    }

    /// Index of each method in the raw target's table (etcd.rs `RAW_METHODS`).
    pub fn raw_index(kind: u8) -> Option<u8> {
        match kind {
            0..=7 => Some(kind),
            11 => Some(8),
            12 => Some(9),
            15 => Some(10),
            _ => None,
        }
    }

    pub fn storage_entries() -> Vec<(&'static str, Vec<u8>)> {
        let mut out = vec![
            (
                "revision",
                [&[0u8][..], &Revision::new(5, 1).encode()].concat(),
            ),
            (
                "revision_max",
                [&[0u8][..], &Revision::new(i64::MAX, 0).encode()].concat(),
            ),
        ];
        let kv = KeyValue {
            key: b"/registry/pods/default/p".to_vec(),
            value: br#"{"kind":"Pod"}"#.to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 7,
        };
        out.push(("record", [&[1u8][..], &encode_record(&kv, false)].concat()));
        out.push((
            "tombstone",
            [&[1u8][..], &encode_record(&KeyValue::default(), true)].concat(),
        ));
        out.push(("keyvalue", [&[2u8; 1][..], &[3u8; 40][..]].concat()));
        out.push(("snapshot", [&[3u8][..], &small_image()].concat()));
        out
    }

    pub fn small_image() -> Vec<u8> {
        let s = WatchableStore::new(
            KvStore::open(Arc::new(MemEngine::new()), StoreConfig::default()).unwrap(),
        );
        let put = |i: u64, k: &[u8], v: &[u8]| {
            let op = WriteOp::Put(PutRequest {
                key: k.to_vec(),
                value: v.to_vec(),
                ..Default::default()
            });
            s.apply(&[(i, &op)]);
        };
        put(1, b"a", b"1");
        put(2, b"a", b"2");
        s.apply(&[(3, &WriteOp::LeaseGrant { id: 9, ttl: 30 })]);
        let mut out = Vec::new();
        write_snapshot(&s, &mut out).unwrap();
        out
    }
}

fn k8s_protobuf(kind: &str, raw: &[u8]) -> Vec<u8> {
    fn field(n: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2];
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }
    let type_meta = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
    [&b"k8s\0"[..], &field(1, &type_meta), &field(2, raw)].concat()
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn regenerate_corpus() {
    #[cfg(feature = "storage")]
    storage_corpora();

    let names = ballast_apiserver::fuzz_api::resource_names();
    let idx = |n: &str| names.iter().position(|x| *x == n).unwrap() as u8;
    let objects: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "pod",
            "pods",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                     "env": [{"name": "A", "value": "1"}], "colour": "red"}]}}),
        ),
        (
            "deployment",
            "deployments",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        ),
        (
            "service",
            "services",
            serde_json::json!({"kind": "Service", "metadata": {"name": "svc"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "web"}}}),
        ),
        (
            "namespace",
            "namespaces",
            serde_json::json!({"metadata": {"name": "team-a", "labels": {"x": "y"}}}),
        ),
        (
            "configmap",
            "configmaps",
            serde_json::json!({"metadata": {"name": "cm"}, "data": {"k": "v"}}),
        ),
        (
            "node",
            "nodes",
            serde_json::json!({"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "4"}}}),
        ),
        (
            "bad_pod",
            "pods",
            serde_json::json!({"metadata": {"name": "Bad_Name", "labels": {"a": 1}}, "spec": {}}),
        ),
    ];
    for (name, resource, obj) in objects {
        let body = serde_json::to_vec(&obj).unwrap();
        write("object_json", name, &[&[idx(resource)][..], &body].concat());
    }
    write("object_json", "not_json", &[idx("pods"), b'{', b'"']);

    // Byte 0: patch type in the low two bits, original in the next.
    let patches: [(&str, u8, &str); 7] = [
        (
            "merge_labels",
            0,
            r#"{"metadata":{"labels":{"app":null,"tier":"fe"}}}"#,
        ),
        (
            "merge_replace",
            4,
            r#"{"spec":{"replicas":5,"template":null}}"#,
        ),
        (
            "json_ops",
            1,
            r#"[{"op":"add","path":"/metadata/labels/x","value":"y"},{"op":"test","path":"/kind","value":"Pod"},{"op":"remove","path":"/spec/containers/0/env"},{"op":"replace","path":"/spec/containers/0/image","value":"z"},{"op":"move","from":"/metadata/labels","path":"/metadata/annotations"},{"op":"copy","from":"/kind","path":"/metadata/labels/k"}]"#,
        ),
        (
            "json_escaped",
            9,
            r#"[{"op":"add","path":"/data/a~1b~0c","value":"1"}]"#,
        ),
        (
            "strategic_containers",
            2,
            r#"{"spec":{"containers":[{"name":"c","image":"new"},{"name":"side","image":"s"}]}}"#,
        ),
        (
            "strategic_delete",
            2,
            r#"{"spec":{"containers":[{"name":"c","$patch":"delete"}],"volumes":[{"$patch":"replace"}]}}"#,
        ),
        ("apply_yaml", 3, "apiVersion: v1\nkind: Pod\n"),
    ];
    for (name, which, body) in patches {
        write("patch", name, &[&[which][..], body.as_bytes()].concat());
    }

    let selectors: [(&str, u8, &str); 8] = [
        (
            "labels_all_ops",
            0,
            "app=web,tier!=db,env in (prod,qa),!legacy,track;x==y",
        ),
        ("labels_notin", 0, "env notin (a, b);k"),
        ("labels_bad", 0, "a b c;=x"),
        (
            "labels_prefixed",
            0,
            "example.com/app=web;kubernetes.io/metadata.name=default",
        ),
        (
            "fields_pod",
            1,
            "spec.nodeName=n1,status.phase!=Running;metadata.name==p",
        ),
        (
            "fields_events",
            3,
            "involvedObject.kind=Pod,reason=Started;type=Normal",
        ),
        ("fields_bad", 1, "spec.unknown=1;nooperator"),
        ("fields_nodes", 5, "metadata.name=n1;metadata.namespace="),
    ];
    for (name, which, s) in selectors {
        write("selectors", name, &[&[which][..], s.as_bytes()].concat());
    }

    let meta = |name: &[u8]| {
        let mut m = vec![0x0a, name.len() as u8];
        m.extend_from_slice(name);
        // labels: {a: b}
        m.extend_from_slice(&[0x5a, 6, 0x0a, 1, b'a', 0x12, 1, b'b']);
        m
    };
    let mut ns = vec![0x0a];
    let ns_meta = meta(b"team-a");
    ns.push(ns_meta.len() as u8);
    ns.extend(ns_meta);
    ns.extend_from_slice(&[0x12, 12, 0x0a, 10]);
    ns.extend_from_slice(b"kubernetes");
    write("k8s_protobuf", "namespace", &k8s_protobuf("Namespace", &ns));
    let mut cm = vec![0x0a];
    let cm_meta = meta(b"cm");
    cm.push(cm_meta.len() as u8);
    cm.extend(cm_meta);
    cm.extend_from_slice(&[0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v', 0x20, 1]);
    write("k8s_protobuf", "configmap", &k8s_protobuf("ConfigMap", &cm));
    write("k8s_protobuf", "unknown_kind", &k8s_protobuf("Secret", &[]));
}

#[cfg(feature = "storage")]
fn storage_corpora() {
    for (name, kind, body) in etcd_messages() {
        write("etcd_request", name, &[&[kind][..], &body].concat());
        if let Some(i) = raw_index(kind) {
            write("etcd_raw", name, &[&[i][..], &body].concat());
        }
    }
    write("etcd_raw", "truncated_put", &[1, 0x0a, 0x05, b'k']);
    write("etcd_raw", "bad_wire_type", &[0, 0x0f, 0x01]);

    for (name, bytes) in storage_entries() {
        write("storage_codecs", name, &bytes);
    }
    write("key_index", "worked_example", &[0, 0, 2, 0, 0, 3]);
    write("key_index", "churn", &[0, 2, 0, 2, 0, 1, 0x13, 2, 2, 0, 0]);
    write("key_index", "compact_tombstone", &[0, 1, 2, 0x03, 0]);

    let image = small_image();
    write(
        "snapshot_restore",
        "blob",
        &[&[0u8][..], b"image bytes"].concat(),
    );
    write("snapshot_restore", "image", &[&[1u8][..], &image].concat());
    write(
        "snapshot_restore",
        "records",
        &[
            2, 0, 16, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 1, 2,
        ],
    );
    write("snapshot_restore", "xor_real", &[3, 20, 0xff, 0x01]);
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand to regenerate the seeds"]
fn regenerate_hardening_corpora() {
    #[cfg(feature = "storage")]
    {
        h2_corpus();
        raft_corpora();
    }
    kubelet_corpus();
}

fn kubelet_corpus() {
    let seeds: &[(&str, &str)] = &[
        ("logs", "/containerLogs/default/web/app"),
        ("tail", "/containerLogs/default/web/app?tailLines=2"),
        (
            "limit_timestamps",
            "/containerLogs/default/web/app?limitBytes=40&timestamps=true",
        ),
        ("previous", "/containerLogs/default/web/app?previous=true"),
        ("no_previous", "/containerLogs/default/web/side?previous=1"),
        (
            "since_seconds",
            "/containerLogs/default/web/app?sinceSeconds=60",
        ),
        (
            "since_time",
            "/containerLogs/default/web/app?sinceTime=2026-01-01T00:00:05Z&timestamps=1",
        ),
        (
            "follow",
            "/containerLogs/default/web/app?follow=true&tailLines=1",
        ),
        (
            "negative",
            "/containerLogs/default/web/app?tailLines=-1&limitBytes=0",
        ),
        ("sim", "/containerLogs/default/sim/c"),
        ("unknown_pod", "/containerLogs/other/x/y"),
        (
            "traversal",
            "/containerLogs/default/web/..%2F..%2Fetc%2Fpasswd",
        ),
        ("healthz", "/healthz"),
        ("bad_int", "/containerLogs/default/web/app?tailLines=abc"),
        (
            "both_since",
            "/containerLogs/default/web/app?sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z",
        ),
        (
            "since_negative",
            "/containerLogs/default/web/app?sinceSeconds=-5",
        ),
        (
            "since_huge",
            "/containerLogs/default/web/app?sinceSeconds=9223372036854775807",
        ),
        (
            "duplicate",
            "/containerLogs/default/web/app?tailLines=1&tailLines=2",
        ),
    ];
    for (name, target) in seeds {
        write("kubelet_api", name, target.as_bytes());
    }
}

#[cfg(feature = "storage")]
fn h2_corpus() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut out = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
    fn request(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }
    fn encode(enc: &mut fluke_hpack::Encoder<'_>, h: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        enc.encode(h.iter().map(|(n, v)| (&n[..], &v[..])))
    }
    let settings = frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0, 0, 4, 0, 0, 0xff, 0xff]);
    let window = frame(0x8, 0, 0, &[0, 0x0f, 0, 1]);
    let data = frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]);
    let status = "/etcdserverpb.Maintenance/Status";
    let with = |step: u8, parts: &[&[u8]]| -> Vec<u8> {
        let mut v = vec![step];
        v.extend_from_slice(PREFACE);
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };

    let mut enc = fluke_hpack::Encoder::new();
    let b1 = encode(&mut enc, &request("http://127.0.0.1:2379", status));
    let b2 = encode(
        &mut enc,
        &request("http://127.0.0.1:2379", "/etcdserverpb.Maintenance/HashKV"),
    );
    let h1 = frame(0x1, 0x4, 1, &b1);
    let h2 = frame(0x1, 0x5, 3, &b2);
    write(
        "h2_authority",
        "etcd34_status",
        &with(0xff, &[&settings, &window, &h1, &data, &h2]),
    );
    write(
        "h2_authority",
        "etcd34_status_bytewise",
        &with(0, &[&settings, &h1, &data, &h2]),
    );
    let mut enc = fluke_hpack::Encoder::new();
    let plain = encode(&mut enc, &request("127.0.0.1:2379", status));
    write(
        "h2_authority",
        "plain_authority",
        &with(6, &[&settings, &frame(0x1, 0x4, 1, &plain), &data]),
    );
    // PADDED and PRIORITY HEADERS, then two CONTINUATIONs.
    let mut enc = fluke_hpack::Encoder::new();
    let block = encode(&mut enc, &request("https://h:2379/x/y", status));
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut first = vec![3u8, 0x80, 0, 0, 1, 16];
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]);
    write(
        "h2_authority",
        "continuations",
        &with(
            12,
            &[
                &settings,
                &frame(0x1, 0x8 | 0x20, 1, &first),
                &frame(0x9, 0, 1, b),
                &frame(0x9, 0x4, 1, c),
                &frame(0x6, 0, 0, &[1; 8]),
            ],
        ),
    );
    // A size update, then literals with and without indexing, then a block
    // referring to the dynamic table; RFC 7541 C.4 Huffman requests.
    let mut lit = vec![0x3f, 0xe1, 0x1f, 0x41];
    lit.push(14);
    lit.extend_from_slice(b"http://a:1/p/q");
    lit.extend_from_slice(&[0x00, 1, b'x', 1, b'y']);
    let c41 = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let c42 = [
        0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
    ];
    write(
        "h2_authority",
        "dynamic_table_huffman",
        &with(
            31,
            &[
                &frame(0x1, 0x4, 1, &lit),
                &frame(0x1, 0x4, 3, &[0x82, 0xbe]),
                &frame(0x1, 0x4, 5, &c41),
                &frame(0x1, 0x4, 7, &c42),
            ],
        ),
    );
    write(
        "h2_authority",
        "stray_frames",
        &with(
            2,
            &[
                &frame(0x9, 0x4, 1, b"abc"),
                &frame(0x5, 0, 1, b"push"),
                &frame(0x0, 0, 1, b"data"),
            ],
        ),
    );
    write(
        "h2_authority",
        "truncated_size_update",
        &with(0xff, &[&frame(0x1, 0x4, 1, &[0x3f])]),
    );
    write(
        "h2_authority",
        "http1",
        b"\x05GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    write("h2_authority", "half_preface", &[1, b'P', b'R', b'I', b' ']);
}

#[cfg(feature = "storage")]
fn raft_corpora() {
    use ballast_fuzz::{grpc_body, send_body};
    use ballast_raft::fuzz_api::{encode_snapshot_stream, open_log_store, write_sample_log};
    use raft::prelude::{Entry, Message, MessageType};

    let msg = |t: MessageType, from: u64, to: u64, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m
    };
    let mut append = msg(MessageType::MsgAppend, 1, 2, 3);
    append.index = 7;
    append.log_term = 3;
    append.commit = 7;
    for i in 8..10 {
        append.entries.push(Entry {
            index: i,
            term: 3,
            data: vec![i as u8; 12].into(),
            ..Default::default()
        });
    }
    let heartbeat = msg(MessageType::MsgHeartbeat, 1, 2, 3);
    let mut vote = msg(MessageType::MsgRequestVote, 3, 2, 4);
    vote.index = 9;
    vote.log_term = 3;
    let mut resp = msg(MessageType::MsgAppendResponse, 1, 2, 3);
    resp.reject = true;
    resp.reject_hint = 5;
    write(
        "raft_messages",
        "append_heartbeat",
        &send_body(&[append.clone(), heartbeat.clone()]),
    );
    write(
        "raft_messages",
        "two_batches",
        &[send_body(&[vote]), send_body(&[resp, heartbeat.clone()])].concat(),
    );
    write(
        "raft_messages",
        "other_node",
        &send_body(&[msg(MessageType::MsgHeartbeat, 1, 3, 3)]),
    );
    // One good message and one that does not decode.
    let mut batch = send_body(&[heartbeat])[5..].to_vec();
    batch.extend_from_slice(&[0x0a, 3, 0xff, 0xff, 0xff]);
    write("raft_messages", "undecodable", &grpc_body(&[batch]));
    write("raft_messages", "empty", &[]);

    let image: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let stream = |to: u64, image: &[u8], chunk: usize| {
        grpc_body(&encode_snapshot_stream(1, to, 10, 3, image, chunk))
    };
    write("raft_snapshot", "chunked", &stream(2, &image, 1000));
    write(
        "raft_snapshot",
        "one_chunk",
        &stream(2, &image[..100], 4096),
    );
    write("raft_snapshot", "empty_image", &stream(2, &[], 64));
    write("raft_snapshot", "other_node", &stream(3, &image[..50], 20));
    let mut bad_crc = encode_snapshot_stream(1, 2, 10, 3, &image[..300], 100);
    let last = bad_crc.last_mut().unwrap();
    let n = last.len();
    last[n - 1] ^= 0x55;
    write("raft_snapshot", "bad_crc", &grpc_body(&bad_crc));
    let mut short = encode_snapshot_stream(1, 2, 10, 3, &image[..300], 100);
    short.pop();
    write("raft_snapshot", "short", &grpc_body(&short));
    let not_snapshot = send_body(&[msg(MessageType::MsgHeartbeat, 1, 2, 3)]);
    write("raft_snapshot", "not_snapshot", &not_snapshot);

    // Real logs: the bytes of their segments, the preallocated zeros cut
    // to a few.
    let segments = |dir: &Path| -> Vec<Vec<u8>> {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("wal"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let mut raw = std::fs::read(p).unwrap();
                let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                raw.truncate((end + 24).min(raw.len()));
                raw
            })
            .collect()
    };
    let one = tempfile::tempdir().unwrap();
    write_sample_log(one.path(), 6, b"put k v").unwrap();
    let seg = segments(one.path()).remove(0);
    write("wal_replay", "log", &[&[0u8][..], &seg].concat());
    let end = seg.iter().rposition(|&b| b != 0).unwrap() + 1;
    write(
        "wal_replay",
        "torn_tail",
        &[&[0u8][..], &seg[..end - 5]].concat(),
    );
    let mut damaged = seg.clone();
    damaged[end / 2] ^= 0x10;
    write(
        "wal_replay",
        "damaged_middle",
        &[&[0u8][..], &damaged].concat(),
    );
    let two = tempfile::tempdir().unwrap();
    write_sample_log(two.path(), 3, b"x").unwrap();
    open_log_store(two.path()).unwrap();
    let segs = segments(two.path());
    assert_eq!(segs.len(), 2, "a reopened log has two segments");
    let split = (segs[0].len() as u16).to_le_bytes();
    write(
        "wal_replay",
        "two_segments",
        &[&[1u8][..], &split, &segs[0], &segs[1]].concat(),
    );
    write("wal_replay", "empty", &[0]);
}
