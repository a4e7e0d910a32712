//! The bounded run on stable: replay every corpus entry of a target, then
//! mutate them (seeded) for a fixed number of inputs. A panic anywhere in
//! the process while an input runs — the target's own thread or a server
//! task it reached — fails the run with the input's hex and the seed; so
//! does an input that raises the peak of live heap bytes more than
//! [`MAX_INPUT_ALLOC`](crate::limits::MAX_INPUT_ALLOC) (when the test
//! binary counts with [`CountingAlloc`](crate::limits::CountingAlloc)).
//! Inputs run on a thread with an [`INPUT_STACK`] stack: recursion deeper
//! than that overflows it, which stops the process; the input is then in
//! the file [`last_input_file`] names.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use crate::limits;
use crate::mutate::{mutate, Rng};

/// A fuzz target: its name (the corpus directory and the cargo-fuzz
/// target) and the function that checks one input.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Mutated inputs are cut to this length.
    pub max_len: usize,
}

/// Every target, by name. The etcd ones start a process-wide member on
/// first use (see `EtcdTarget`).
pub const TARGETS: &[Target] = &[
    #[cfg(feature = "storage")]
    Target {
        name: "etcd_request",
        run: crate::etcd_request,
        max_len: 2048,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "etcd_raw",
        run: crate::etcd_raw,
        max_len: 2048,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "storage_codecs",
        run: crate::storage_codecs,
        max_len: 512,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "key_index",
        run: crate::key_index,
        max_len: 256,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "snapshot_restore",
        run: crate::snapshot_restore,
        max_len: 4096,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "h2_authority",
        run: crate::h2_authority,
        max_len: 2048,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "raft_messages",
        run: crate::raft_messages,
        max_len: 2048,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "raft_snapshot",
        run: crate::raft_snapshot,
        max_len: 2048,
    },
    #[cfg(feature = "storage")]
    Target {
        name: "wal_replay",
        run: crate::wal_replay,
        max_len: 4096,
    },
    Target {
        name: "kubelet_api",
        run: crate::kubelet_api,
        max_len: 256,
    },
    Target {
        name: "object_json",
        run: crate::object_json,
        max_len: 4096,
    },
    Target {
        name: "patch",
        run: crate::patch,
        max_len: 2048,
    },
    Target {
        name: "selectors",
        run: crate::selectors,
        max_len: 512,
    },
    Target {
        name: "k8s_protobuf",
        run: crate::k8s_protobuf,
        max_len: 1024,
    },
];

/// `fuzz/corpus/<target>`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The corpus entries of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    let bytes = std::fs::read(e.path()).ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), bytes))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// What a bounded run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub corpus: usize,
    pub mutated: usize,
}

/// An input that broke an invariant: enough to reproduce it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: String,
    /// The corpus file, or `mutation #n of seed s`.
    pub origin: String,
    pub seed: u64,
    pub input: Vec<u8>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.input.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "{} failed on {} (seed {}): {}\ninput ({} bytes) hex: {hex}\ninput (lossy): {:?}",
            self.target,
            self.origin,
            self.seed,
            self.message,
            self.input.len(),
            String::from_utf8_lossy(&self.input)
        )
    }
}

/// Panics seen by the hook, in any thread, and the last one's text.
static PANICS: AtomicUsize = AtomicUsize::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("panic in thread {thread}: {info}");
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// Runs one input; `Err` with the panic's text if anything panicked, or
/// with the amount when it allocated over the limit.
pub fn check_one(run: &dyn Fn(&[u8]), input: &[u8]) -> Result<(), String> {
    install_hook();
    let before = PANICS.load(Ordering::SeqCst);
    let base = limits::start();
    let result = catch_unwind(AssertUnwindSafe(|| run(input)));
    let grown = limits::peak_above(base);
    let after = PANICS.load(Ordering::SeqCst);
    if result.is_err() || after != before {
        return Err(LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone());
    }
    if limits::counting() && grown > limits::MAX_INPUT_ALLOC {
        return Err(format!(
            "the input raised live heap bytes by {} MiB, over the limit of {} MiB",
            grown >> 20,
            limits::MAX_INPUT_ALLOC >> 20
        ));
    }
    Ok(())
}

/// The stack of the thread a bounded run's inputs run on: what a tokio
/// worker thread has, so an input that recurses past it would overflow a
/// server's worker too.
pub const INPUT_STACK: usize = 2 << 20;

/// Where a bounded run of `target` keeps the input it is running, as
/// `BALLAST_FUZZ_REPRO` takes it (`<target>:<hex>`): what to replay after
/// an input stopped the process (a stack overflow, an allocation refused).
pub fn last_input_file(target: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ballast-fuzz-{target}.last"))
}

/// Keeps the running input in [`last_input_file`] (best effort).
struct LastInput(Option<std::fs::File>, String);

impl LastInput {
    fn new(target: &str) -> Self {
        LastInput(
            std::fs::File::create(last_input_file(target)).ok(),
            target.to_string(),
        )
    }

    fn set(&mut self, input: &[u8]) {
        use std::io::{Seek, Write};
        let Some(f) = self.0.as_mut() else { return };
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        let _ = f
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(format!("{}:{hex}\n", self.1).as_bytes()));
    }
}

/// One bounded run at a time per process: the panic hook sees every
/// thread, so a panic is only attributable while a single run is going.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// Replays `target`'s corpus through `run`, then `mutations` mutated inputs
/// from `seed`. Stops at the first failure. Runs in one process take turns.
pub fn run_bounded(
    target: &str,
    run: &(dyn Fn(&[u8]) + Sync),
    max_len: usize,
    mutations: usize,
    seed: u64,
) -> Result<Stats, Failure> {
    let _turn = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("fuzz-{target}"))
            .stack_size(INPUT_STACK)
            .spawn_scoped(scope, || run_inputs(target, run, max_len, mutations, seed))
            .expect("spawning the input thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run_inputs(
    target: &str,
    run: &dyn Fn(&[u8]),
    max_len: usize,
    mutations: usize,
    seed: u64,
) -> Result<Stats, Failure> {
    let mut last = LastInput::new(target);
    let entries = corpus(target);
    let fail = |origin: String, input: &[u8], message: String| Failure {
        target: target.to_string(),
        origin,
        seed,
        input: input.to_vec(),
        message,
    };
    for (name, input) in &entries {
        last.set(input);
        check_one(run, input).map_err(|m| fail(format!("corpus file {name}"), input, m))?;
    }
    let pool: Vec<Vec<u8>> = entries.into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng::new(seed);
    for i in 0..mutations {
        let mut input = if pool.is_empty() {
            Vec::new()
        } else {
            pool[rng.below(pool.len())].clone()
        };
        mutate(&mut rng, &mut input, &pool, max_len);
        last.set(&input);
        check_one(run, &input).map_err(|m| fail(format!("mutation #{i}"), &input, m))?;
    }
    Ok(Stats {
        corpus: pool.len(),
        mutated: mutations,
    })
}
