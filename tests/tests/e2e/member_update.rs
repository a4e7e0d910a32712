//! `etcdctl member update`: a member's peer URLs change cluster-wide, and
//! bad requests get etcd's errors. Held to the same output on etcd and Ballast.

use ballast_tests::cluster::{Cluster, ClusterKind};
use ballast_tests::process::free_ports;

fn member_update(kind: ClusterKind) {
    let cluster = Cluster::start(kind);
    let ctl = cluster.etcdctl();
    let id = cluster.member_id_hex(2);
    let old = cluster.member(2).peer_url();
    let new = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    // A new cluster is at etcd's origin, revision 1, on every member.
    let revision = |member: usize| {
        let j = cluster
            .etcdctl_at(member)
            .run(&["get", "none", "-w", "json"])
            .ok()
            .json();
        j["header"]["revision"].as_i64()
    };
    for member in 0..3 {
        assert_eq!(revision(member), Some(1), "member {member}");
    }

    // The member whose URL changes leads, and the changes go through a
    // follower: it must reach the leader although the leader's published
    // URL no longer leads to it.
    ctl.run(&["move-leader", &id]).ok();
    assert_eq!(cluster.leader(), Some(2));
    let ctl = cluster.etcdctl_at(0);
    let out = ctl.run(&["member", "update", &id, &format!("--peer-urls={new}")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .starts_with(&format!("Member {id:>16} updated in cluster ")),
        "{out:#?}"
    );
    let list = ctl.run(&["member", "list"]).ok().stdout.clone();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("{id}, ")) && l.contains(&new)),
        "{list}"
    );
    assert!(!list.contains(&old), "{list}");

    // Back to the URL the member listens on: it serves writes again. The
    // leader is cut off until then (its followers answer it at the new
    // URL), so this waits for a new one: give it more than etcdctl's 5 s
    // on a busy machine.
    let back = format!("--peer-urls={old}");
    ctl.run(&["member", "update", &id, &back, "--command-timeout=15s"])
        .ok();
    ctl.run(&["put", "after-update", "v"]).ok();
    let got = cluster
        .etcdctl_at(2)
        .run(&["get", "after-update", "--print-value-only"]);
    assert_eq!(got.ok().stdout, "v\n");
    // Membership changes make no revision: the first put is revision 2.
    let got = cluster
        .etcdctl_at(2)
        .run(&["get", "after-update", "-w", "json"])
        .ok()
        .json();
    assert_eq!(got["kvs"][0]["mod_revision"], 2, "{got}");
    assert_eq!(got["header"]["revision"], 2, "{got}");

    // Errors.
    let out = ctl.run(&["member", "update", "abcdef", &format!("--peer-urls={new}")]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("etcdserver: member not found"),
        "{out:#?}"
    );
    let other = cluster.member(0).peer_url();
    let out = ctl.run(&["member", "update", &id, &format!("--peer-urls={other}")]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("etcdserver: Peer URLs already exists"),
        "{out:#?}"
    );
}

#[test]
fn etcd_member_update() {
    member_update(ClusterKind::Etcd);
}

#[test]
fn ballast_member_update() {
    member_update(ClusterKind::Ballast);
}
