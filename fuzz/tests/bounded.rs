//! The bounded fuzz run on stable: every target replays its corpus, then
//! runs a fixed number of seeded mutations. A failure prints the input's
//! hex and the seed; `BALLAST_FUZZ_SEED` and `BALLAST_FUZZ_MUTATIONS`
//! change them (e.g. for a longer local run).

#[cfg(feature = "storage")]
use ballast_fuzz::EtcdTarget;
use ballast_fuzz::{run_bounded, Target, TARGETS};

fn seed() -> u64 {
    std::env::var("BALLAST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0BA1_1A57)
}

/// `default` mutations unless `BALLAST_FUZZ_MUTATIONS` says otherwise.
fn mutations(default: usize) -> usize {
    std::env::var("BALLAST_FUZZ_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

fn run(name: &str, default_mutations: usize) {
    let t = target(name);
    match run_bounded(
        t.name,
        &t.run,
        t.max_len,
        mutations(default_mutations),
        seed(),
    ) {
        Ok(stats) => assert!(stats.corpus > 0, "{name} has no corpus"),
        Err(failure) => panic!("{failure}"),
    }
}

#[cfg(feature = "storage")]
#[test]
fn storage_codecs() {
    run("storage_codecs", 20_000);
}

#[cfg(feature = "storage")]
#[test]
fn key_index() {
    run("key_index", 20_000);
}

#[cfg(feature = "storage")]
#[test]
fn snapshot_restore() {
    run("snapshot_restore", 3_000);
}

#[test]
fn object_json() {
    run("object_json", 10_000);
}

#[test]
fn patch() {
    run("patch", 10_000);
}

#[test]
fn selectors() {
    run("selectors", 20_000);
}

#[test]
fn k8s_protobuf() {
    run("k8s_protobuf", 20_000);
}

/// Both etcd targets against one member, which must stay healthy.
#[cfg(feature = "storage")]
#[test]
fn etcd_requests_and_raw_bodies() {
    let member = EtcdTarget::start();
    let n = mutations(3000);
    for (name, run) in [
        (
            "etcd_request",
            &(|d: &[u8]| member.request(d)) as &dyn Fn(&[u8]),
        ),
        ("etcd_raw", &(|d: &[u8]| member.raw(d)) as &dyn Fn(&[u8])),
    ] {
        let t = target(name);
        if let Err(failure) = run_bounded(name, run, t.max_len, n, seed()) {
            panic!("{failure}");
        }
    }
    member.assert_healthy(true);
}

/// Replays one input: `BALLAST_FUZZ_REPRO=<target>:<hex>` (as a failure
/// prints it). Does nothing without the variable.
#[test]
fn repro() {
    let Ok(spec) = std::env::var("BALLAST_FUZZ_REPRO") else {
        return;
    };
    let (name, hex) = spec.split_once(':').expect("<target>:<hex>");
    let input: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    (target(name).run)(&input);
}
