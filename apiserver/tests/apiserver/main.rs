//! apiserver's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test apiserver`; one module:
//! `-- api::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod api;
mod apply;
mod auth;
mod auth_etcd_tls;
mod common;
mod compaction;
mod crd_cel;
mod crd_schema;
mod crds;
mod discovery;
mod events;
mod events_v1;
mod hostile;
mod kubectl;
mod lifecycle;
mod limits;
mod metrics;
mod node_restriction;
mod scale;
mod secrets;
mod services;
mod tokens;
mod watch_cache_consistency;
