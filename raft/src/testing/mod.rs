//! Test support, public so other crates' tests can use it too.
//!
//! - `kv`: [`KvStateMachine`], an append-only list per key whose reads show
//!   the order writes took effect; it flushes lazily so restarts replay.
//! - `cluster`: [`Cluster`], in-process nodes on a fault-injecting
//!   [`MemNetwork`](crate::MemNetwork); kill, restart, add, remove.
//! - `linearizability`: [`check`], a Wing–Gong/Porcupine-style checker of
//!   recorded [`History`]s against the kv model.

mod cluster;
mod kv;
mod linearizability;

pub use cluster::{Cluster, ClusterConfig, KvNode};
pub use kv::{encode_append, KvReader, KvState, KvStateMachine};
pub use linearizability::{check, History, OpKind, OpResult, Operation, Violation};
