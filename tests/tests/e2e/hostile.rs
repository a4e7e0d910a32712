//! Hostile Txns: a txn must not be able to take a member, or the whole
//! cluster, down. Read-only txns are served as linearizable reads (never
//! logged, so never replayed); every txn is bounded before it is served or
//! proposed (ops per level and in all, nesting depth, duplicate keys, size)
//! and at apply (the bytes its ranges return), with etcd's codes and
//! messages. The etcd answers are checked against real etcd too.
//!
//! Hostile pods: under `ballast up` (process runtime), a pod whose command
//! tries to read the control plane's secrets — the CA keys, the admin and
//! component kubeconfigs, the storage members' data — is denied by the
//! file system, and still runs to completion.

use std::time::Duration;

use ballast_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, request_op, response_op, Compare,
    DeleteRangeRequest, HashKvRequest, PutRequest, RangeRequest, RequestOp, StatusRequest,
    TxnRequest, TxnResponse,
};
use ballast_tests::up::Up;
use ballast_tests::{Cluster, ClusterKind};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

/// etcd's default `--max-request-bytes`.
const MAX_REQUEST_BYTES: usize = 1536 * 1024;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

async fn connect(cluster: &Cluster, member: usize) -> Channel {
    Channel::from_shared(cluster.member(member).client_url())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect")
}

async fn kv(cluster: &Cluster, member: usize) -> KvClient<Channel> {
    KvClient::new(connect(cluster, member).await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(usize::MAX)
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

fn put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn delete(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                ..Default::default()
            },
        )),
    }
}

fn nested(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(t)),
    }
}

fn then(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        success,
        ..Default::default()
    }
}

/// `prefix` + 1 in the last byte: the etcd range end of a prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// A chain of `depth` txns, each level's success a range over `prefix` and
/// the next level.
fn chain(depth: usize, prefix: &[u8]) -> TxnRequest {
    let mut t = then(vec![range(prefix, &prefix_end(prefix))]);
    for _ in 1..depth {
        t = then(vec![range(prefix, &prefix_end(prefix)), nested(t)]);
    }
    t
}

#[track_caller]
fn assert_status(got: Result<tonic::Response<TxnResponse>, tonic::Status>, code: Code, msg: &str) {
    match got {
        Err(e) => assert_eq!((e.code(), e.message()), (code, msg), "{e:?}"),
        Ok(r) => panic!(
            "expected {code:?} {msg:?}, got {:?}",
            r.into_inner().succeeded
        ),
    }
}

/// Bad txns that etcd refuses before serving them: the same codes and
/// messages from etcd and Ballast, and nothing stored.
async fn bad_txns_get_etcds_answers(cluster: &Cluster) {
    let mut kv = kv(cluster, 0).await;
    let p = b"hostile/bad/";
    let k = |s: &str| [&p[..], s.as_bytes()].concat();
    let invalid = |msg: &'static str| (Code::InvalidArgument, msg);
    let too_many = invalid("etcdserver: too many operations in txn request");
    let duplicate = invalid("etcdserver: duplicate key given in txn request");

    let cases: Vec<(&str, TxnRequest, (Code, &str))> = vec![
        (
            "129 puts (--max-txn-ops 128)",
            then((0..129).map(|i| put(&k(&format!("op{i}")), b"v")).collect()),
            too_many,
        ),
        (
            // 65 ops at the top leave 63 to a nested txn: 64 are too many.
            "a nested txn over what its parent left",
            then(
                (0..64)
                    .map(|_| range(&k("r"), b""))
                    .chain([nested(then((0..64).map(|_| range(&k("r"), b"")).collect()))])
                    .collect(),
            ),
            too_many,
        ),
        (
            "a key put twice",
            then(vec![put(&k("a"), b"1"), put(&k("a"), b"2")]),
            duplicate,
        ),
        (
            "a key put here and in a nested failure branch",
            then(vec![
                put(&k("a"), b"1"),
                nested(TxnRequest {
                    failure: vec![put(&k("a"), b"2")],
                    ..Default::default()
                }),
            ]),
            duplicate,
        ),
        (
            "a key put inside a range a nested txn deletes",
            then(vec![
                nested(then(vec![delete(&k("a"), &k("c"))])),
                put(&k("b"), b"1"),
            ]),
            duplicate,
        ),
        (
            "two nested txns putting the same key",
            then(vec![
                nested(then(vec![put(&k("a"), b"1")])),
                nested(then(vec![put(&k("a"), b"2")])),
            ]),
            duplicate,
        ),
        (
            "a 1.6 MiB write txn (--max-request-bytes 1.5 MiB)",
            then(vec![put(&k("big"), &vec![b'x'; 1600 * 1024])]),
            invalid("etcdserver: request is too large"),
        ),
        (
            "an op without a request",
            then(vec![RequestOp { request: None }]),
            invalid("etcdserver: key not found"),
        ),
    ];
    for (name, txn, (code, msg)) in cases {
        match kv.txn(txn).await {
            Err(e) => assert_eq!((e.code(), e.message()), (code, msg), "{name}: {e:?}"),
            Ok(_) => panic!("{name}: served, expected {code:?} {msg:?}"),
        }
    }
    let stored = kv
        .range(RangeRequest {
            key: p.to_vec(),
            range_end: prefix_end(p),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count")
        .into_inner();
    assert_eq!(stored.count, 0, "a refused txn stored something");

    // Both branches of one nested txn may put the same key: only one runs.
    let ok = then(vec![nested(TxnRequest {
        success: vec![put(&k("a"), b"1")],
        failure: vec![put(&k("a"), b"2")],
        ..Default::default()
    })]);
    kv.txn(ok).await.expect("exclusive branches");
}

#[test]
fn etcd_bad_txns_get_etcds_answers() {
    let cluster = Cluster::start(ClusterKind::Etcd);
    block_on(bad_txns_get_etcds_answers(&cluster));
}

/// A wide nested read-only txn of ranges over `prefix`, within etcd's
/// per-level budgets (64 txns of 32 txns of 24 ranges: 49 152 ranges),
/// and one more range at the top whose key pads it to just under
/// `max_bytes` encoded.
fn wide_read_only_txn(prefix: &[u8], max_bytes: usize) -> TxnRequest {
    let leaf = then(
        (0..24)
            .map(|_| range(prefix, &prefix_end(prefix)))
            .collect(),
    );
    let mid = then((0..32).map(|_| nested(leaf.clone())).collect());
    let mut top = then((0..64).map(|_| nested(mid.clone())).collect());
    let room = max_bytes.saturating_sub(top.encoded_len());
    let mut pad = room.saturating_sub(16);
    top.success.push(range(&vec![b'k'; pad], b""));
    while top.encoded_len() > max_bytes {
        pad -= 1;
        top.success[64] = range(&vec![b'k'; pad], b"");
    }
    top
}

async fn raft_index(cluster: &Cluster, member: usize) -> (u64, i64) {
    let s = MaintenanceClient::new(connect(cluster, member).await)
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    (s.raft_index, s.header.expect("header").revision)
}

async fn hash_kv(cluster: &Cluster, member: usize, revision: i64) -> u32 {
    MaintenanceClient::new(connect(cluster, member).await)
        .hash_kv(HashKvRequest { revision })
        .await
        .expect("hash_kv")
        .into_inner()
        .hash
}

/// The keys and values of the ranges in a (nested) txn response, in order.
fn range_values(r: &TxnResponse, out: &mut Vec<Vec<u8>>) {
    for op in &r.responses {
        match &op.response {
            Some(response_op::Response::ResponseRange(rr)) => {
                out.extend(rr.kvs.iter().map(|kv| kv.value.clone()))
            }
            Some(response_op::Response::ResponseTxn(t)) => range_values(t, out),
            other => panic!("unexpected response {other:?}"),
        }
    }
}

#[test]
fn ballast_survives_hostile_txns() {
    let mut cluster = Cluster::start(ClusterKind::Ballast);
    block_on(bad_txns_get_etcds_answers(&cluster));
    let p = b"hostile/";
    let big = b"hostile/big/";
    let w = b"hostile/w";

    let written_rev = block_on(async {
        let mut kv0 = kv(&cluster, 0).await;
        let mut kv2 = kv(&cluster, 2).await;
        kv0.put(PutRequest {
            key: b"hostile/a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put");

        // A read-only txn (nested included) is a read: linearizable (sees the
        // put just made through another member), at the current revision,
        // and never a log entry. Other entries (a member publishing itself)
        // may land meanwhile, so look for a quiet window; a txn that went
        // through the log would never leave the raft index alone.
        let ro = TxnRequest {
            compare: vec![Compare {
                key: b"hostile/a".to_vec(),
                target: ballast_proto::etcdserverpb::compare::CompareTarget::Value as i32,
                target_union: Some(ballast_proto::etcdserverpb::compare::TargetUnion::Value(
                    b"1".to_vec(),
                )),
                ..Default::default()
            }],
            success: vec![range(b"hostile/a", b""), nested(chain(3, b"hostile/a"))],
            failure: vec![],
        };
        // (Status reads what the member applied, so it may lag the put
        // until the first linearizable read has waited for it.)
        let mut quiet = false;
        for _ in 0..5 {
            let (before, _) = raft_index(&cluster, 2).await;
            let mut rev = None;
            for _ in 0..10 {
                let t = kv2
                    .txn(ro.clone())
                    .await
                    .expect("read-only txn")
                    .into_inner();
                assert!(t.succeeded);
                let seen = t.header.expect("header").revision;
                assert_eq!(*rev.get_or_insert(seen), seen, "reads at one revision");
                let mut values = Vec::new();
                range_values(&t, &mut values);
                assert_eq!(values, vec![b"1".to_vec(); 4]);
            }
            let (after, rev_after) = raft_index(&cluster, 2).await;
            assert_eq!(Some(rev_after), rev, "a read-only txn moved the revision");
            if after == before {
                quiet = true;
                break;
            }
        }
        assert!(quiet, "read-only txns advanced the raft index every time");

        // ~1.4 MiB of nested ranges: refused before it is served, by the
        // bound on all levels' ops together (etcd would run all 65 536).
        let wide = wide_read_only_txn(p, MAX_REQUEST_BYTES - 64 * 1024);
        assert!(wide.encoded_len() > 1400 * 1024, "{}", wide.encoded_len());
        assert_status(
            kv0.txn(wide.clone()).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        // The same with a put in it is refused before it is proposed.
        let mut wide_write = wide;
        wide_write.failure = vec![put(w, b"x")];
        assert_status(
            kv2.txn(wide_write).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        // Nested deeper than 32 levels (etcd's per-level budget allows 128).
        assert_status(
            kv0.txn(chain(33, p)).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        let deep = kv0
            .txn(chain(32, b"hostile/a"))
            .await
            .expect("32 levels")
            .into_inner();
        let mut values = Vec::new();
        range_values(&deep, &mut values);
        assert_eq!(values.len(), 32);
        // Over the request limit, read-only too.
        let fat = then(vec![range(&vec![b'r'; 1600 * 1024], b"")]);
        assert_status(
            kv2.txn(fat).await,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );

        // Range results are bounded (128 MiB): two 1 MiB values read 100
        // times would be 200 MiB on the serving member.
        for i in 0..2 {
            let key = [&big[..], format!("{i}").as_bytes()].concat();
            kv0.put(PutRequest {
                key,
                value: vec![b'v'; 1 << 20],
                ..Default::default()
            })
            .await
            .expect("put 1 MiB");
        }
        let reads: Vec<RequestOp> = (0..100).map(|_| range(big, &prefix_end(big))).collect();
        let too_much = "etcdserver: txn response is too large: range results over 134217728 bytes";
        assert_status(
            kv2.txn(then(reads.clone())).await,
            Code::ResourceExhausted,
            too_much,
        );
        // A write txn with the same reads goes through the log and fails at
        // apply, on every member, before it writes anything.
        let (_, rev_before) = raft_index(&cluster, 0).await;
        let mut write = reads;
        write.push(put(w, b"x"));
        assert_status(
            kv0.txn(then(write)).await,
            Code::ResourceExhausted,
            too_much,
        );
        let (_, rev_after) = raft_index(&cluster, 0).await;
        assert_eq!(rev_after, rev_before, "the failed txn wrote");
        rev_after
    });

    // Every member is up and serving: a write succeeds and each member
    // serves it; one member restarted replays its log (the failed txn
    // included) and agrees with the others.
    let ctl = cluster.etcdctl();
    ctl.run(&["put", "hostile/after", "ok"]).ok();
    for i in 0..3 {
        let got = cluster
            .etcdctl_at(i)
            .run(&["get", "hostile/after", "--print-value-only"]);
        assert_eq!(got.ok().stdout, "ok\n", "member {i}");
    }
    cluster.restart(1);
    let got = cluster
        .etcdctl_at(1)
        .run(&["get", "hostile/w", "--print-value-only"]);
    assert_eq!(
        got.ok().stdout,
        "",
        "the failed txn's put was applied on replay"
    );
    block_on(async {
        let at = written_rev + 1;
        let hashes = [
            hash_kv(&cluster, 0, at).await,
            hash_kv(&cluster, 1, at).await,
            hash_kv(&cluster, 2, at).await,
        ];
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "members disagree after replay: {hashes:?}"
        );
    });

    // A second client, etcdctl, agrees: its read-only txn is served.
    let out = cluster.etcdctl_at(1).run_with_stdin(
        &["txn"],
        "value(\"hostile/a\") = \"1\"\n\nget hostile/a\n\nget hostile/after\n\n",
    );
    assert_eq!(out.ok().stdout, "SUCCESS\n\nhostile/a\n1\n");
}

// ---------------------------------------------------------------------
// Hostile pods under `ballast up`.

/// Creates pod `name` running `script` with `sh -c`, waits until it
/// has finished (at most 90 s), and returns its phase, its container's
/// exit code and its log.
fn run_pod(up: &Up, name: &str, script: &str) -> (String, i64, String) {
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox",
                                 "command": ["sh", "-c", script]}]}
    });
    up.create(&manifest);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let pod = loop {
        let pod: serde_json::Value = up.json(&["get", "pod", name]);
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break pod;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod {name} did not finish within 90s: {}",
            pod["status"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let code = pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        .as_i64()
        .unwrap_or(-1);
    let phase = pod["status"]["phase"].as_str().unwrap().to_string();
    (phase, code, up.ok(&["logs", name]))
}

/// A shell script that tries to read each of `files` and list each of
/// `dirs`, printing `READ <path>` or `DENIED <path>: <error>` per path,
/// then its uid; it exits with the number of paths it could read.
fn snoop_script(files: &[std::path::PathBuf], dirs: &[std::path::PathBuf]) -> String {
    let quote = |p: &std::path::Path| format!("'{}'", p.display());
    let mut s = String::from("n=0\n");
    for f in files {
        s.push_str(&format!(
            "if e=$(cat {f} 2>&1 >/dev/null); then echo READ {f}; n=$((n+1)); else echo DENIED {f}: $e; fi\n",
            f = quote(f)
        ));
    }
    for d in dirs {
        s.push_str(&format!(
            "if e=$(ls {d} 2>&1 >/dev/null); then echo READ {d}; n=$((n+1)); else echo DENIED {d}: $e; fi\n",
            d = quote(d)
        ));
    }
    s.push_str("echo ran-as-uid=$(id -u)\nexit $n\n");
    s
}

/// Asserts the pod ran (as the unprivileged default user) and every path
/// it tried was denied by permissions.
fn assert_denied(what: &str, (phase, code, log): &(String, i64, String), paths: usize) {
    let denied: Vec<&str> = log.lines().filter(|l| l.starts_with("DENIED ")).collect();
    assert!(
        !log.lines().any(|l| l.starts_with("READ ")),
        "{what}: the pod read the control plane's files:\n{log}"
    );
    assert_eq!(denied.len(), paths, "{what}:\n{log}");
    assert!(
        denied.iter().all(|l| l.contains("Permission denied")),
        "{what}: not a permission error:\n{log}"
    );
    assert!(log.contains("ran-as-uid=65534"), "{what}:\n{log}");
    assert_eq!(
        (phase.as_str(), *code),
        ("Succeeded", 0),
        "{what}: the pod itself must run:\n{log}"
    );
}

/// The files under `dir` (recursively), at most `limit`.
fn files_under(dir: &std::path::Path, limit: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() && out.len() < limit {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn pods_cannot_read_the_control_planes_secrets() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        // A kubelet that is not root runs containers as its own user, the
        // owner of the data directory: this confinement needs root.
        eprintln!("skipped: the kubelet confines containers only when it runs as root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A world-traversable parent, so only ballast's own modes protect it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let up = Up::start(&data, &[]);

    // What `up` wrote, and its modes: the data directory, the PKI and the
    // kubeconfigs are root's alone.
    let secrets: Vec<std::path::PathBuf> = [
        "kubeconfig",
        "pki/ca.key",
        "pki/admin.key",
        "pki/etcd/ca.key",
        "pki/etcd/etcdctl.key",
        "pki/etcd/member-1.key",
        "kubeconfigs/kubelet-node-1.kubeconfig",
        "logs/apiserver.log",
    ]
    .iter()
    .map(|p| data.join(p))
    .collect();
    for f in &secrets {
        let m = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(m.mode() & 0o7777, 0o600, "{}", f.display());
        assert_eq!(m.uid(), 0, "{}", f.display());
    }
    let members: Vec<std::path::PathBuf> = ["member-1", "member-2", "member-3"]
        .iter()
        .map(|m| data.join(m))
        .collect();
    for d in [
        &data,
        &data.join("pki"),
        &data.join("pki/etcd"),
        &data.join("logs"),
    ]
    .into_iter()
    .chain(&members)
    {
        let m = std::fs::metadata(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert_eq!(m.mode() & 0o007, 0, "{} is open to others", d.display());
    }
    // Real files of a member's storage (its WAL, its database).
    let stored = files_under(&members[0], 3);
    assert!(
        !stored.is_empty(),
        "no files under {}",
        members[0].display()
    );
    let files: Vec<std::path::PathBuf> = secrets.iter().chain(&stored).cloned().collect();
    let dirs = [data.clone(), data.join("pki"), members[0].clone()];

    let got = run_pod(&up, "snoop", &snoop_script(&files, &dirs));
    assert_denied("data dir 0700", &got, files.len() + dirs.len());

    // Even were the data directory opened to others (an operator's chmod),
    // the keys, kubeconfigs and storage stay out of reach.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = run_pod(&up, "snoop-open", &snoop_script(&files, &dirs[1..]));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_denied("data dir opened", &got, files.len() + dirs.len() - 1);
}
