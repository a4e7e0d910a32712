//! kubelet's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test kubelet`; one module:
//! `-- api_auth::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod api_auth;
mod common;
mod confine;
mod dns;
mod lifecycle;
mod logs;
mod pod_namespaces;
mod sim;
mod volumes;
