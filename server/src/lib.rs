//! # ballast-server — the Ballast storage node
//!
//! Speaks the etcd v3 gRPC API on the wire, so real `etcdctl` and etcd client
//! libraries work unchanged.
//!
//! # Layout
//!
//! - `proto/etcd/…` — the etcd v3 API definitions (`mvccpb`, `authpb`,
//!   `etcdserverpb`), compiled by `build.rs`.
//! - [`pb`] — the generated messages, tonic servers and clients.

pub mod pb;
