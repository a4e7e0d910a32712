//! `ballast snapshot save|status|restore` as streams, on real files from real
//! members: a snapshot of a few megabytes (a hundred chunks) saved from a
//! live `ballast server` round-trips through `restore` (every key, value and
//! revision, the compaction, HashKV); a file `etcdctl snapshot save` wrote is
//! read the same; a damaged file (cut short, one byte flipped, one byte too
//! many) is refused by `status` and `restore` with a clear message, and
//! `restore` then leaves no data dir behind; a failed `save` leaves no file.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use ballast_tests::cluster::{workspace_bin, Cluster, ClusterKind};
use ballast_tests::etcdctl::Etcdctl;
use ballast_tests::process::{self, free_ports, poll, Io, Launch};

fn ballast(args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("ballast"))
        .args(args)
        .output()
        .expect("run ballast")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ballast snapshot status FILE`, parsed: (hash, revision, keys, compacted).
fn status(file: &Path) -> (String, i64, u64, String) {
    let out = ballast(&["snapshot", "status", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} line in {text}"))
            .trim()
            .to_string()
    };
    let size = std::fs::metadata(file).unwrap().len();
    assert_eq!(field("size"), format!("{size} bytes"), "{text}");
    (
        field("hash"),
        field("revision").parse().unwrap(),
        field("keys").parse().unwrap(),
        field("compacted"),
    )
}

/// A member started with `ballast server` on a restored data dir; killed
/// when dropped.
struct Restored {
    child: Child,
    ctl: Etcdctl,
}

impl Restored {
    fn start(data_dir: &Path) -> Restored {
        let ports = free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let log = data_dir.with_extension("log");
        let child = process::spawn(
            Launch::new(workspace_bin("ballast"))
                .arg("server")
                .args(["--name", "r1", "--data-dir", data_dir.to_str().unwrap()])
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("r1={peer}")])
                .io(Io::Log(log.clone())),
        )
        .expect("start the restored member");
        let ctl = Etcdctl::new([client]).with_timeout(Duration::from_secs(10));
        let up = poll(Duration::from_secs(45), Duration::from_millis(200), || {
            (ctl.run(&["endpoint", "health"]).code == 0).then_some(())
        });
        assert!(
            up.is_some(),
            "the restored member never became healthy: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Restored { child, ctl }
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        process::kill(&mut self.child);
    }
}

/// Every key under `rt/` with what restore must keep: value, create and
/// mod revision, version.
fn contents(ctl: &Etcdctl) -> (i64, Vec<serde_json::Value>) {
    let got = ctl
        .run(&["get", "rt/", "--prefix", "-w", "json"])
        .ok()
        .json();
    let revision = got["header"]["revision"].as_i64().unwrap();
    let kvs = got["kvs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| {
            serde_json::json!([
                kv["key"],
                kv["value"],
                kv["create_revision"],
                kv["mod_revision"],
                kv["version"]
            ])
        })
        .collect();
    (revision, kvs)
}

/// etcd's HashKV of the member behind `ctl` at its current revision:
/// (hash, compacted revision).
fn hash_kv(ctl: &Etcdctl) -> (u64, i64) {
    let got = ctl.run(&["endpoint", "hashkv", "-w", "json"]).ok().json();
    let h = &got[0]["HashKV"];
    (
        h["hash"].as_u64().unwrap_or(0),
        h["compact_revision"].as_i64().unwrap_or(0),
    )
}

/// Puts `n` keys `rt/<first..first+n>` of `size` bytes each, 64 per txn.
fn fill(ctl: &Etcdctl, first: usize, n: usize, size: usize) {
    let keys: Vec<usize> = (first..first + n).collect();
    for batch in keys.chunks(64) {
        let mut txn = String::from("\n");
        for i in batch {
            let value: String = (0..size)
                .map(|j| char::from(b'a' + ((i * 31 + j / 7) % 26) as u8))
                .collect();
            txn.push_str(&format!("put rt/{i:04} \"{value}\"\n"));
        }
        txn.push_str("\n\n");
        let out = ctl.run_with_stdin(&["txn"], txn);
        assert!(out.stdout.starts_with("SUCCESS"), "{out:#?}");
    }
}

#[test]
fn live_snapshot_round_trips_through_restore_and_etcdctl_files_are_read() {
    let cluster = Cluster::start_with_size(ClusterKind::Ballast, 1);
    let ctl = cluster.etcdctl();
    // About 3 MB (some eighty 32 KiB chunks after compaction), overwritten,
    // deleted, compacted.
    fill(&ctl, 0, 320, 10_000);
    fill(&ctl, 0, 40, 5_000);
    ctl.run(&["del", "rt/0100", "rt/0120"]).ok();
    ctl.run(&["put", "rt/last", "before compaction"]).ok();
    let (compact_at, _) = contents(&ctl);
    ctl.run(&["compaction", &compact_at.to_string()]).ok();
    ctl.run(&["put", "rt/last", "after compaction"]).ok();
    ctl.run(&["del", "rt/0300"]).ok();
    let (revision, kvs) = contents(&ctl);
    let (hash, compacted) = hash_kv(&ctl);
    assert_eq!(compacted, compact_at);
    assert_eq!(kvs.len(), 320 - 20 - 1 + 1);

    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("ballast.snap");
    let out = ballast(&[
        "snapshot",
        "save",
        saved.to_str().unwrap(),
        "--endpoint",
        &cluster.endpoints()[0],
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        format!("Snapshot saved at {}\n", saved.display())
    );
    assert!(std::fs::metadata(&saved).unwrap().len() > 2_500_000);
    let from_etcdctl = dir.path().join("etcdctl.db");
    cluster
        .etcdctl_at(0)
        .run(&["snapshot", "save", from_etcdctl.to_str().unwrap()])
        .ok();
    // Nothing but the two files (no .part, no scratch store).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ballast.snap", "etcdctl.db"]);

    // Status agrees with the live member: its HashKV, revision, compaction
    // and key count (keys deleted before the compaction are gone).
    let want = (
        format!("{hash:08x}"),
        revision,
        kvs.len() as u64 + 1,
        compact_at.to_string(),
    );
    assert_eq!(status(&saved), want);
    assert_eq!(status(&from_etcdctl), want);
    let mut names_after: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names_after.sort();
    assert_eq!(names_after, names, "status left something behind");

    // Restored and started as a new one-member cluster: the same keys,
    // values, revisions, compaction and HashKV; then it takes writes.
    let data_dir = dir.path().join("restored");
    let out = ballast(&[
        "snapshot",
        "restore",
        saved.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        format!(
            "restored revision {revision} ({} keys) into {}\n",
            kvs.len() + 1,
            data_dir.display()
        )
    );
    let restored = Restored::start(&data_dir);
    assert_eq!(contents(&restored.ctl), (revision, kvs.clone()));
    assert_eq!(hash_kv(&restored.ctl), (hash, compact_at));
    restored
        .ctl
        .run(&["get", "rt/0100", "--rev", &(compact_at - 1).to_string()])
        .fails_with(1, "required revision has been compacted");
    let put = restored
        .ctl
        .run(&["put", "rt/new", "v", "-w", "json"])
        .ok()
        .json();
    assert_eq!(put["header"]["revision"], revision + 1, "{put}");
    drop(restored);

    // etcdctl's file restores to the same state.
    let data_dir = dir.path().join("restored-etcdctl");
    let out = ballast(&[
        "snapshot",
        "restore",
        from_etcdctl.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let restored = Restored::start(&data_dir);
    assert_eq!(contents(&restored.ctl), (revision, kvs));
}

#[test]
fn damaged_snapshot_files_are_refused_by_status_and_restore() {
    let cluster = Cluster::start_with_size(ClusterKind::Ballast, 1);
    let ctl = cluster.etcdctl();
    fill(&ctl, 0, 64, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    let out = ballast(&[
        "snapshot",
        "save",
        file_s,
        "--endpoint",
        &cluster.endpoints()[0],
    ]);
    assert!(out.status.success(), "{out:?}");
    let good = std::fs::read(&file).unwrap();
    let len = good.len();
    assert_eq!(len % 512, 32, "whole pages and a SHA-256 trailer");

    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let mut longer = good.clone();
    longer.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a Ballast snapshot"),
        ("header only", good[..8].to_vec(), "truncated"),
        ("cut in the middle", good[..len / 2].to_vec(), "truncated"),
        ("last byte missing", good[..len - 1].to_vec(), "truncated"),
        (
            "a byte flipped in the image",
            flip(len / 2),
            "checksum mismatch",
        ),
        (
            "the last byte before the trailer flipped",
            flip(len - 33),
            "checksum mismatch",
        ),
        (
            "a byte flipped in the trailer",
            flip(len - 1),
            "checksum mismatch",
        ),
        ("a byte too many", longer, "where its header promises"),
    ];
    let data_dir = dir.path().join("restored");
    for (what, bytes, needle) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let out = ballast(&["snapshot", "status", file_s]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(stdout(&out).is_empty(), "{what}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(needle) && err.contains(file_s),
            "{what}: want {needle:?} and the file name, got {err}"
        );

        let out = ballast(&[
            "snapshot",
            "restore",
            file_s,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(stderr(&out).contains(needle), "{what}: {out:?}");
        assert!(!data_dir.exists(), "{what}: restore left {data_dir:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["backup.snap"], "{what}: something left behind");
    }

    // The undamaged file still reads and restores.
    std::fs::write(&file, &good).unwrap();
    assert_eq!(status(&file).2, 64);
    let out = ballast(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(data_dir.join("member").join("kv").is_dir());
}

#[test]
fn failed_save_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    // Nothing listens there.
    let port = free_ports(1)[0];
    let out = ballast(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--endpoint",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains(&format!("connecting to http://127.0.0.1:{port}")),
        "{out:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A directory that does not exist: refused before anything is written.
    let cluster = Cluster::start_with_size(ClusterKind::Ballast, 1);
    let missing = dir.path().join("no-such-dir").join("backup.snap");
    let out = ballast(&[
        "snapshot",
        "save",
        missing.to_str().unwrap(),
        "--endpoint",
        &cluster.endpoints()[0],
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("backup.snap.part"), "{out:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
