//! The chaos suite: three Ballast members on their own network namespaces
//! under partitions, crashes, pauses, latency and loss while clients write,
//! read, compare-and-set and watch; then linearizability, watch streams,
//! acknowledged writes and HashKV are checked (see `ballast_tests::chaos`).
//!
//! Needs root (it creates network namespaces) and the `ballast` binary
//! (`cargo build --release -p ballast --bin ballast`). The seed is printed;
//! replay a run with `BALLAST_SEED=<seed>`. The soak:
//! `BALLAST_CHAOS_SECS=600 cargo test --release --workspace --test e2e -- --ignored chaos::soak --nocapture`
//! (or `scripts/chaos-soak.sh`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ballast_tests::chaos::checker::{self, Call, Operation, Outcome};
use ballast_tests::chaos::net;
use ballast_tests::chaos::proxy::{LinkFault, Proxy};
use ballast_tests::chaos::{run, ChaosConfig};

/// A short seeded run: 35 s of faults, each kind about once.
#[test]
fn chaos_short() {
    let cfg = ChaosConfig::from_env(35);
    let report = run(&cfg);
    println!("{report}");
    assert!(
        report.anomalies.is_empty(),
        "chaos run found anomalies (replay with BALLAST_SEED={}):\n{report}",
        report.seed
    );
    assert!(
        report.faults.values().sum::<u32>() > 0,
        "no fault was injected:\n{report}"
    );
    assert!(report.ops_ok > 0 && report.acked_writes > 0, "{report}");
    assert!(report.watch_events_checked > 0, "{report}");
}

/// The long run, one command: `BALLAST_CHAOS_SECS=600 cargo test --release
/// --workspace --test e2e -- --ignored chaos::soak --nocapture`.
#[test]
#[ignore = "soak: minutes long; run explicitly"]
fn soak() {
    let cfg = ChaosConfig::from_env(600);
    let report = run(&cfg);
    println!("{report}");
    assert!(
        report.anomalies.is_empty(),
        "soak found anomalies (replay with BALLAST_SEED={}):\n{report}",
        report.seed
    );
}

fn op(client: usize, key: &str, call: Call, outcome: Outcome, t: (u64, u64)) -> Operation {
    Operation {
        client,
        key: key.into(),
        call,
        outcome,
        invoke: t.0,
        complete: t.1,
    }
}

/// The checker the suite relies on does fail: a lost acknowledged write
/// (a stale read after it), a split-brain double compare-and-set, and a
/// read of a value after it was overwritten are all reported.
#[test]
fn checker_catches_non_linearizable_histories() {
    let good = vec![
        op(0, "a", Call::Write(1), Outcome::Written, (0, 10)),
        op(1, "a", Call::Read, Outcome::Read(1), (5, 12)),
        op(
            2,
            "a",
            Call::Cas { expect: 1, new: 2 },
            Outcome::Cas(true),
            (13, 20),
        ),
        op(3, "a", Call::Write(3), Outcome::Unknown, (14, 0)),
        op(1, "a", Call::Read, Outcome::Read(2), (21, 22)),
        op(1, "a", Call::Read, Outcome::Read(3), (23, 24)),
    ];
    let r = checker::check(&good);
    assert!(r.violations().is_empty(), "{:?}", r.per_key);

    // Lost write: acknowledged write(2), then a read of the older value.
    let lost = vec![
        op(0, "a", Call::Write(1), Outcome::Written, (0, 1)),
        op(0, "a", Call::Write(2), Outcome::Written, (2, 3)),
        op(1, "a", Call::Read, Outcome::Read(1), (4, 5)),
    ];
    assert_eq!(checker::check(&lost).violations().len(), 1);

    // Split brain: two compare-and-sets on the same value both succeed.
    let split = vec![
        op(0, "b", Call::Write(1), Outcome::Written, (0, 1)),
        op(
            1,
            "b",
            Call::Cas { expect: 1, new: 2 },
            Outcome::Cas(true),
            (2, 9),
        ),
        op(
            2,
            "b",
            Call::Cas { expect: 1, new: 3 },
            Outcome::Cas(true),
            (3, 8),
        ),
    ];
    assert_eq!(checker::check(&split).violations().len(), 1);

    // Stale read from an old leader: 3 was read, then 2 again.
    let stale = vec![
        op(0, "c", Call::Write(2), Outcome::Written, (0, 1)),
        op(0, "c", Call::Write(3), Outcome::Written, (2, 3)),
        op(1, "c", Call::Read, Outcome::Read(3), (4, 5)),
        op(2, "c", Call::Read, Outcome::Read(2), (6, 7)),
    ];
    let r = checker::check(&stale);
    let v = r.violations();
    assert_eq!(v.len(), 1);
    assert!(v[0].contains("not linearizable"), "{v:?}");
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        net::enter(&ns).expect("enter namespace");
        f()
    })
    .join()
    .expect("namespace thread")
}

fn try_connect(ns: &str, to: SocketAddr) -> std::io::Result<()> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(500)).map(drop)
    })
}

/// The test hosts are real: 127.77.0.x routes between namespaces over the
/// veth links, a one-sided `prohibit` or `blackhole` route cuts a link (the
/// other members stay reachable), healing restores it, and dropping the net
/// deletes every namespace.
#[test]
fn test_hosts_route_loopback_addresses_and_partitions_cut() {
    if let Err(e) = net::preflight() {
        panic!("chaos suite cannot run: {e}");
    }
    let tn = net::TestNet::create(3).expect("create test hosts");
    let names: Vec<String> = tn
        .members
        .iter()
        .map(|h| h.ns.clone())
        .chain([tn.client.ns.clone()])
        .collect();
    assert!(names.iter().all(|n| net::exists(n)));
    // A listener on every member host, accepting in the background.
    let mut addrs = Vec::new();
    for h in &tn.members {
        let addr = SocketAddr::from((h.addr, 7000));
        let l = in_ns(&h.ns, move || TcpListener::bind(addr).expect("bind"));
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        addrs.push(addr);
    }
    try_connect(&tn.members[0].ns, addrs[1]).expect("m0 -> m1");
    try_connect(&tn.client.ns, addrs[2]).expect("client -> m2");

    tn.block(0, tn.members[1].addr, net::Block::Prohibit)
        .expect("block");
    tn.block(0, tn.members[2].addr, net::Block::Blackhole)
        .expect("block");
    assert!(
        try_connect(&tn.members[0].ns, addrs[1]).is_err(),
        "prohibit cuts m0 -> m1"
    );
    assert!(
        try_connect(&tn.members[0].ns, addrs[2]).is_err(),
        "blackhole cuts m0 -> m2"
    );
    try_connect(&tn.members[1].ns, addrs[2]).expect("m1 -> m2 unaffected");
    try_connect(&tn.client.ns, addrs[0]).expect("client -> m0 unaffected");

    tn.heal().expect("heal");
    try_connect(&tn.members[0].ns, addrs[1]).expect("healed m0 -> m1");
    try_connect(&tn.members[0].ns, addrs[2]).expect("healed m0 -> m2");
    drop(tn);
    assert!(
        names.iter().all(|n| !net::exists(n)),
        "namespaces left behind"
    );
}

/// The proxy forwards bytes, and its `Loss` fault with certainty resets
/// the connection instead of forwarding.
#[test]
fn proxy_forwards_and_injects_resets() {
    if let Err(e) = net::preflight() {
        panic!("chaos suite cannot run: {e}");
    }
    let tn = net::TestNet::create(1).expect("create test hosts");
    let h = tn.members[0].clone();
    let target = SocketAddr::from((h.addr, 7100));
    let listen = SocketAddr::from((h.addr, 7101));
    let l = in_ns(&h.ns, move || TcpListener::bind(target).expect("bind"));
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 5];
            if c.read_exact(&mut buf).is_ok() {
                let _ = c.write_all(&buf);
            }
        }
    });
    let proxy = Proxy::start(&h.ns, listen, target, 1).expect("proxy");
    let echo = |ns: &str| {
        in_ns(ns, move || -> std::io::Result<Vec<u8>> {
            let mut c = TcpStream::connect_timeout(&listen, Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"hello")?;
            let mut buf = Vec::new();
            c.read_to_end(&mut buf)?;
            Ok(buf)
        })
    };
    // The echo server closes after answering: the whole answer arrives.
    assert_eq!(echo(&tn.client.ns).expect("echo"), b"hello");
    proxy.set(
        LinkFault::Loss {
            stall: 0.0,
            reset: 1.0,
        },
        None,
    );
    let cut = echo(&tn.client.ns);
    assert!(
        cut.as_ref().map_or(true, |b| b.is_empty()),
        "a reset connection delivered {cut:?}"
    );
    proxy.set(LinkFault::None, None);
    assert_eq!(echo(&tn.client.ns).expect("echo after"), b"hello");
    let stats = proxy.stats();
    assert_eq!((stats.connections, stats.resets), (3, 1), "{stats:?}");
}
