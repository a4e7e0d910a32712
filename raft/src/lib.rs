//! # ballast-raft
//!
//! Replication for Ballast on [raft-rs](https://docs.rs/raft): a node that
//! owns a raft log in RocksDB, drives a `RawNode`, applies committed entries to
//! a [`StateMachine`] it knows only through that trait, and talks to its peers
//! through a [`Transport`]. It knows nothing about etcd.
//!
//! ```text
//! RaftNode handles ──requests──▶ driver thread (owns RawNode + LogStore)
//!   ▲   propose/read_index/…        │ one Ready per turn: send, persist (1 fsync),
//!   │                               │ send persisted, hand off committed
//!   │ answers                       ▼
//!   └──────────── applier thread (owns the StateMachine; snapshots)
//! Transport ──peer messages──▶ Inbox ──▶ driver
//! ```
//!
//! # Layout
//!
//! - `node`: [`RaftNode`], the cloneable handle (propose, read_index,
//!   membership, status), and start-up/recovery from disk.
//! - `driver`: the one task that owns the raft node and runs the ready loop.
//! - `applier`: the thread that owns the state machine, answers proposers,
//!   takes snapshots.
//! - `state_machine`: the [`StateMachine`] contract and [`Committed`] entries.
//! - `log_store`: raft-rs `Storage` on RocksDB (entries, hard state,
//!   configuration, snapshot metadata; group commit; compaction).
//! - `snapshot`: snapshot files and the snapshot envelope format.
//! - `read_index`: batching of linearizable reads.
//! - `membership`: [`Member`], [`MemberChange`], and member contexts.
//! - `transport`: the [`Transport`] trait and [`Inbox`]; `grpc` (tonic,
//!   [`GrpcTransport`], [`grpc_service`]) and `memory` ([`MemNetwork`], the
//!   fault-injecting test network).
//! - `status`: [`Status`], [`Role`], [`MetricsSnapshot`].
//! - `config`: [`NodeConfig`]. `error`: [`Error`]. `logger`: raft-rs's slog
//!   to `tracing`.
//! - [`testing`]: an in-process cluster harness, a test key-value state
//!   machine and a linearizability checker (used by this crate's tests and
//!   available to others).

mod applier;
mod config;
mod driver;
mod error;
mod log_store;
mod logger;
mod membership;
mod node;
mod read_index;
mod snapshot;
mod state_machine;
mod status;
mod transport;
mod wal;

pub mod testing;

/// Entry points for the fuzz targets (`fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzz_api;

/// Code generated from `proto/raft_transport.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
mod proto {
    tonic::include_proto!("ballast.raft");
}

pub use config::{ClusterState, NodeConfig};
pub use error::{Error, Result};
pub use membership::{Member, MemberChange};
pub use node::{NodeJoinHandle, RaftNode};
pub use snapshot::{ImageReader, SnapshotImage};
pub use state_machine::{Committed, EntryKind, StateMachine};
pub use status::{MetricsSnapshot, PeerRoundTrip, Role, Status, FSYNC_BUCKETS, RTT_BUCKETS};
pub use transport::grpc::{
    default_address, grpc_service, AddressResolver, GrpcTransport, GrpcTransportConfig, RaftService,
};
pub use transport::memory::{MemNetwork, MemTransport};
pub use transport::{Inbox, Transport};

/// raft-rs's message type, as carried by a [`Transport`].
pub use raft::prelude::Message as RaftMessage;
