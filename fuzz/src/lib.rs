//! # ballast-fuzz
//!
//! Fuzz targets for every parser of untrusted input in Ballast, written
//! once and run two ways: by real libFuzzer under `cargo +nightly fuzz`
//! (`fuzz/cargo-fuzz/`, `scripts/fuzz.sh`), and by a bounded, seeded
//! replay-and-mutate run on stable in this crate's tests. Each target takes
//! `&[u8]` and panics when an invariant breaks; the inputs that must keep
//! passing live in `fuzz/corpus/<target>/`.
//!
//! # Layout
//! - `etcd` — [`EtcdTarget`]: one in-process storage member, fed etcd v3
//!   requests through a real tonic client (decoded messages and raw bodies).
//! - `storage` — the storage engine's codecs, the key index against a
//!   model, and snapshot restore.
//! - `apiserver` — object decoding, defaulting and validation, the PATCH
//!   formats, label and field selectors, Kubernetes protobuf bodies.
//! - `mutate` — the seeded mutator of the bounded runs.
//! - `runner` — [`TARGETS`], corpus loading, the bounded run and its
//!   failure report (input hex and seed).

//!
//! The `storage` feature (on by default) adds the etcd and storage targets;
//! without it only the apiserver targets build (no RocksDB), which keeps a
//! `cargo fuzz` build of those small.

mod apiserver;
#[cfg(feature = "storage")]
mod etcd;
pub mod mutate;
mod runner;
#[cfg(feature = "storage")]
mod storage;

pub use apiserver::{k8s_protobuf, object_json, patch, selectors};
#[cfg(feature = "storage")]
pub use etcd::{etcd_raw, etcd_request, EtcdTarget};
pub use runner::{check_one, corpus, corpus_dir, run_bounded, Failure, Stats, Target, TARGETS};
#[cfg(feature = "storage")]
pub use storage::{key_index, seal, snapshot_restore, storage_codecs};
