//! controllers's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test controllers`; one module:
//! `-- controllers::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

mod common;
mod controllers;
mod cronjobs;
mod daemonsets;
mod disruption;
mod endpointslices;
mod events;
mod gc_custom;
mod jobs;
mod namespaces;
mod node_lifecycle;
mod nodeipam;
mod podgc;
mod scheduler;
mod serviceaccounts;
mod statefulsets;
