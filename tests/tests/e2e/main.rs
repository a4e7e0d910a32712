//! tests's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test e2e`; one module:
//! `-- auth::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod auth;
mod ballast_cli;
mod chaos;
mod corruption;
mod daemonsets;
mod dns;
mod drain;
mod etcd_dropin;
mod etcdctl_compat;
mod exec;
mod faults;
mod grpc_wire;
mod hostile;
mod jobs;
mod kubelet_api;
mod leases;
mod limits;
mod member_update;
mod metrics;
mod namespaces;
mod pod_namespaces;
mod podflow;
mod portforward;
mod services;
mod snapshot_cli;
mod statefulsets;
mod tls;
