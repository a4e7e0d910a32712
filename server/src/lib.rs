//! # ballast-server — the Ballast storage node
//!
//! Speaks the etcd v3 gRPC API on the wire, so real `etcdctl` and etcd client
//! libraries work unchanged. Writes go through raft (`ballast-raft`) into the
//! MVCC store (`ballast-storage`); any member serves any request, forwarding
//! writes to the leader.
//!
//! # Layout
//!
//! - `proto/etcd/…` — the etcd v3 API definitions (`mvccpb`, `authpb`,
//!   `etcdserverpb`); `proto/ballast/internal.proto` — the replicated
//!   command format and the members' internal service. Compiled by `build.rs`.
//! - [`pb`] — the generated messages, tonic servers and clients.
//! - `config` — [`ServerConfig`] (etcd's flags), member and cluster ids.
//! - `server` — [`StorageServer`]: start-up, listeners, graceful shutdown.
//! - `node` — [`Node`]: what the services share (headers, the write path
//!   and forwarding, linearizable reads, the leader's lease clock).
//! - `state_machine` — raft entries applied to the store.
//! - `command` — the raft entry payload.
//! - `kv`, `watch`, `lease`, `cluster`, `maintenance` — one file per etcd
//!   service; `internal` — the leader's side of forwarding.
//! - `auth` — the Auth API: users, roles, simple tokens (replicated through
//!   raft), permission checks on every service.
//! - `tls` — TLS on client and peer URLs (etcd's flags) and the verified
//!   client certificate's common name.
//! - `metrics` — etcd's Prometheus series (node, disk, mvcc, gRPC, process)
//!   and the gRPC counting service on the client URLs.
//! - `http` — `/metrics` on the client and metrics URLs; `health` — etcd's
//!   `/health`, `/livez`, `/readyz`, `/version` and `grpc.health.v1`.
//! - `h2_authority` — a connection adapter that lets h2 accept etcd 3.4
//!   clients' `:authority: http://host:port` by rewriting header blocks.
//! - `snapshot_file` — snapshot files (the blob Maintenance.Snapshot sends)
//!   written and read back as checked streams: [`SnapshotWriter`],
//!   [`SnapshotFile`].
//! - `convert` — wire messages ↔ storage types. `error` — [`ServerError`]
//!   and etcd's wire errors.

mod auth;
mod cluster;
mod command;
mod config;
mod convert;
mod error;
mod h2_authority;
mod health;
mod http;
mod internal;
mod kv;
mod lease;
mod maintenance;
mod metrics;
mod node;
pub mod pb;
mod server;
mod snapshot_file;
mod state_machine;
mod tls;
mod watch;

pub use config::{parse_initial_cluster, ClusterState, ServerConfig};
pub use error::{Result, ServerError};
pub use maintenance::{image_from_blob, snapshot_blob};
pub use node::{Node, ETCD_VERSION};
pub use server::StorageServer;
pub use snapshot_file::{
    blob_len, BlobCheck, ImageReader, SnapshotFile, SnapshotFileError, SnapshotWriter,
};
pub use tls::{client_common_name, TlsConnectInfo, TlsInfo};

/// The `:authority` rewriter's sans-IO core, for the fuzz targets.
#[doc(hidden)]
pub use h2_authority::fuzz_api as h2_authority_fuzz_api;
