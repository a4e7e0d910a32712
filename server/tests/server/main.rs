//! server's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test server`; one module:
//! `-- auth_lease_keys::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod auth_lease_keys;
mod auth_snapshot;
mod common;
mod etcdctl_authority;
mod peer_port;
mod single_member;
