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
