//! storage's integration tests, one module per area, built as one test binary
//! (`cargo test --release --workspace --test storage`; one module:
//! `-- crash::`): each test binary links the whole dependency graph
//! and instantiates its generics again, so one binary per file cost CI
//! most of its build.

#[macro_use]
mod common;
mod crash;
mod model;
mod store;
mod watch;
