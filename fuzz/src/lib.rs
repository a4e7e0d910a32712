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
//! - `h2` — the etcd client port's HTTP/2 `:authority` rewriter against
//!   an HTTP/2 and HPACK oracle.
//! - `replication` — peer traffic into the raft gRPC transport (message batches,
//!   chunked snapshots) and WAL replay of arbitrary segment bytes.
//! - `kubelet` — the kubelet's HTTP API (`/containerLogs` paths and query
//!   parameters) through its router, against a reference log renderer.
//! - `limits` — the allocation counter the bounded runs use to fail an
//!   input that allocates too much.
//! - `mutate` — the seeded mutator of the bounded runs.
//! - `runner` — [`TARGETS`], corpus loading, the bounded run and its
//!   failure report (input hex and seed).

//!
//! The `storage` feature (on by default) adds the etcd, storage, h2 and
//! raft targets; without it only the apiserver and kubelet targets build
//! (no RocksDB), which keeps a `cargo fuzz` build of those small.

mod apiserver;
#[cfg(feature = "storage")]
mod etcd;
#[cfg(feature = "storage")]
mod h2;
mod kubelet;
pub mod limits;
pub mod mutate;
#[cfg(feature = "storage")]
mod replication;
mod runner;
#[cfg(feature = "storage")]
mod storage;

pub use apiserver::{k8s_protobuf, object_json, patch, selectors};
#[cfg(feature = "storage")]
pub use etcd::{etcd_raw, etcd_request, EtcdTarget};
#[cfg(feature = "storage")]
pub use h2::h2_authority;
pub use kubelet::kubelet_api;
#[cfg(feature = "storage")]
pub use replication::{grpc_body, raft_messages, raft_snapshot, send_body, wal_replay};
pub use runner::{
    check_one, corpus, corpus_dir, last_input_file, run_bounded, Failure, Stats, Target,
    INPUT_STACK, TARGETS,
};
#[cfg(feature = "storage")]
pub use storage::{key_index, seal, snapshot_restore, storage_codecs};
