//! etcd's corruption checks: a member whose stored history differs from
//! its peers' is refused at start (`--experimental-initial-corrupt-check`),
//! and while it runs the leader's periodic check
//! (`--experimental-corrupt-check-time`) raises the CORRUPT alarm for it,
//! after which the cluster refuses writes ("etcdserver: corrupt cluster")
//! and still serves reads.

use std::path::Path;
use std::time::{Duration, Instant};

use ballast_storage::engine::{Cf, ReadView, WriteBatch};
use ballast_storage::{KvEngine, RocksEngine};
use ballast_tests::cluster::{Cluster, ClusterKind};

const CHECKS: [&str; 2] = [
    "--experimental-initial-corrupt-check",
    "--experimental-corrupt-check-time=300ms",
];

/// Flips the last byte (a value byte) of the newest record of a stopped
/// member's store.
fn corrupt_newest_value(db: &Path) {
    let engine = RocksEngine::open(db).expect("open the stopped member's store");
    let mut newest = None;
    engine
        .scan(Cf::Kv, &[], None, &mut |k, v| {
            newest = Some((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    let (key, mut record) = newest.expect("a record");
    *record.last_mut().unwrap() ^= 0x20;
    let mut batch = WriteBatch::default();
    batch.put(Cf::Kv, &key, &record);
    engine.write(batch).unwrap();
    engine.sync().unwrap();
}

#[test]
fn a_member_whose_history_differs_is_refused_at_start_then_alarmed() {
    let mut cluster = Cluster::start(ClusterKind::Ballast);
    let ctl = cluster.etcdctl();
    for i in 0..20 {
        ctl.run(&["put", &format!("k{i:02}"), &format!("value-{i}")])
            .ok();
    }
    // Every member runs both checks from its next start; the intact
    // cluster passes them and raises no alarm.
    for i in 0..3 {
        cluster.member_mut(i).extra_flags = CHECKS.map(String::from).to_vec();
        cluster.terminate(i);
        cluster.restart(i);
    }
    std::thread::sleep(Duration::from_secs(2));
    let alarms = ctl.run(&["alarm", "list"]).ok().stdout.clone();
    assert_eq!(alarms.trim(), "", "an intact cluster raised {alarms}");

    // A follower's copy of one value changes on disk while it is stopped.
    let leader = cluster.leader().expect("a leader");
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let victim_id = u64::from_str_radix(&cluster.member_id_hex(victim), 16).unwrap();
    cluster.terminate(victim);
    corrupt_newest_value(&cluster.member(victim).data_dir.join("member/kv"));

    // The initial check refuses to start it.
    cluster.spawn_member(victim);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.member_mut(victim).is_running() {
        assert!(Instant::now() < deadline, "the corrupt member kept running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.member(victim).log_tail(20);
    assert!(
        log.contains(&format!(
            "{victim_id:x} found data inconsistency with peers"
        )),
        "{log}"
    );

    // Started without it, the member runs until the leader's check finds it.
    cluster.member_mut(victim).extra_flags = vec![CHECKS[1].to_string()];
    cluster.spawn_member(victim);
    let alarm = format!("memberID:{victim_id} alarm:CORRUPT");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ctl.run(&["alarm", "list"]);
        if out.code == 0 && out.stdout.contains(&alarm) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CORRUPT alarm for {victim_id:x}: {out:#?}\n{}",
            cluster.log_tails(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ctl.run(&["put", "after", "corruption"])
        .fails_with(1, "etcdserver: corrupt cluster");
    let read = ctl.run(&["get", "k00", "--print-value-only"]);
    assert_eq!(read.ok().stdout.trim(), "value-0");
}
