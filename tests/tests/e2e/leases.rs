//! Leases across a leader change: the new leader gives every lease its full
//! TTL again, so no lease expires early because of an election; and leases
//! still expire, on the new leader, when nobody keeps them alive.

use std::time::{Duration, Instant};

use ballast_tests::cluster::{Cluster, ClusterKind};

fn leases_survive_a_leader_change(kind: ClusterKind) {
    let cluster = Cluster::start(kind);
    let ctl = cluster.etcdctl();
    let out = ctl.run(&["lease", "grant", "6"]);
    let id = out
        .ok()
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let granted = Instant::now();
    ctl.run(&["put", "--lease", &id, "leased", "v"]).ok();

    std::thread::sleep(Duration::from_secs(3));
    let leader = cluster.leader().expect("a leader");
    let target = (leader + 1) % 3;
    let target_id = cluster.member_id_hex(target);
    cluster
        .etcdctl_at(leader)
        .run(&["move-leader", &target_id])
        .ok();
    assert_eq!(cluster.leader(), Some(target));

    // Past the original 6 s, the key is still there: the new leader
    // restarted the lease's clock.
    let wait = Duration::from_secs(7).saturating_sub(granted.elapsed());
    std::thread::sleep(wait);
    let got = ctl.run(&["get", "leased", "--print-value-only"]);
    assert_eq!(
        got.ok().stdout,
        "v\n",
        "lease expired early across the election"
    );

    // Without keep-alives it does expire, on the new leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ctl.run(&["get", "leased", "--print-value-only"]);
        if got.ok().stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ttl = ctl.run(&["lease", "timetolive", &id]);
    assert_eq!(
        ttl.ok().stdout.trim(),
        format!("lease {id} already expired")
    );
}

#[test]
fn etcd_leases_survive_a_leader_change() {
    leases_survive_a_leader_change(ClusterKind::Etcd);
}

#[test]
fn ballast_leases_survive_a_leader_change() {
    leases_survive_a_leader_change(ClusterKind::Ballast);
}
