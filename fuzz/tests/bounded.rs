//! The bounded fuzz run on stable: every target replays its corpus, then
//! runs a fixed number of seeded mutations. A failure prints the input's
//! hex and the seed; `BALLAST_FUZZ_SEED` and `BALLAST_FUZZ_MUTATIONS`
//! change them (e.g. for a longer local run). Allocation is counted: an
//! input raising the live heap more than `limits::MAX_INPUT_ALLOC` fails,
//! and inputs run on a thread with a worker's stack (`INPUT_STACK`).

use ballast_fuzz::limits::{CountingAlloc, MAX_INPUT_ALLOC};
#[cfg(feature = "storage")]
use ballast_fuzz::EtcdTarget;
use ballast_fuzz::{last_input_file, run_bounded, Target, TARGETS};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

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

#[cfg(feature = "storage")]
#[test]
fn h2_authority() {
    run("h2_authority", 20_000);
}

#[cfg(feature = "storage")]
#[test]
fn raft_messages() {
    run("raft_messages", 3_000);
}

#[cfg(feature = "storage")]
#[test]
fn raft_snapshot() {
    run("raft_snapshot", 1_500);
}

/// Each input opens a WAL and a log store twice (each open fsyncs a new
/// preallocated segment), hence fewer mutations.
#[cfg(feature = "storage")]
#[test]
fn wal_replay() {
    run("wal_replay", 200);
}

#[test]
fn kubelet_api() {
    run("kubelet_api", 3_000);
}

/// An input that allocates past the limit fails the run, with its size.
#[test]
fn excessive_allocation_fails_the_run() {
    let hog = |_: &[u8]| {
        drop(std::hint::black_box(vec![
            0u8;
            MAX_INPUT_ALLOC + (16 << 20)
        ]))
    };
    let err = run_bounded("alloc_probe", &hog, 16, 1, 1).expect_err("over the limit");
    assert!(err.message.contains("over the limit"), "{err}");
    let small = |d: &[u8]| drop(std::hint::black_box(d.to_vec()));
    run_bounded("alloc_probe", &small, 16, 100, 1).expect("small inputs pass");
}

/// Recursion past the input thread's stack stops the run (in a child
/// process: an overflow aborts), and the input is left for a repro.
#[test]
fn deep_recursion_stops_the_run_and_leaves_the_input() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "overflow_child", "--ignored", "--nocapture"])
        .env("BALLAST_FUZZ_OVERFLOW_CHILD", "1")
        .output()
        .expect("running the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {stderr}");
    assert!(
        stderr.contains("fuzz-overflow_probe") && stderr.contains("overflowed its stack"),
        "{stderr}"
    );
    let last = std::fs::read_to_string(last_input_file("overflow_probe")).expect("last input");
    assert!(last.starts_with("overflow_probe:"), "{last}");
}

/// The child of the test above: recurses until the stack overflows.
#[test]
#[ignore = "run by deep_recursion_stops_the_run_and_leaves_the_input"]
fn overflow_child() {
    if std::env::var_os("BALLAST_FUZZ_OVERFLOW_CHILD").is_none() {
        return;
    }
    fn deep(n: u64) -> u64 {
        let pad = std::hint::black_box([n; 64]);
        if n == 0 {
            return pad[0];
        }
        std::hint::black_box(deep(n - 1)).wrapping_add(pad[1])
    }
    let recurse = |_: &[u8]| {
        std::hint::black_box(deep(std::hint::black_box(1 << 20)));
    };
    let _ = run_bounded("overflow_probe", &recurse, 16, 1, 1);
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
            &(|d: &[u8]| member.request(d)) as &(dyn Fn(&[u8]) + Sync),
        ),
        (
            "etcd_raw",
            &(|d: &[u8]| member.raw(d)) as &(dyn Fn(&[u8]) + Sync),
        ),
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
