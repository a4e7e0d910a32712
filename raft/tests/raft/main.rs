//! raft's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test raft`; one module:
//! `-- cluster::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod cluster;
mod common;
mod faults;
mod grpc;
mod wal;
