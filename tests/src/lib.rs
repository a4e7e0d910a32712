//! # ballast-tests — cross-crate tests against real processes
//!
//! A harness that starts real clusters as child processes on 127.0.0.1 and
//! drives them with the real `etcdctl`, so the very same test runs against
//! real etcd and against Ballast.
//!
//! # Layout
//!
//! - [`cluster`] — [`Cluster`] and [`ClusterKind`]: start a cluster of N
//!   members (free ports, a temporary directory), wait until healthy, kill /
//!   terminate / restart single members, add members, kill everything on drop.
//! - [`etcdctl`] — [`Etcdctl`]: run `etcdctl` (v3 API) with a deadline, feed
//!   stdin, or stream a long-running command such as `watch` line by line.
//! - [`process`] — the plumbing: every child is spawned by one long-lived
//!   thread under `setpriv --pdeathsig KILL`, so nothing outlives the test
//!   process, even a shared cluster that is never dropped; free ports; stale
//!   temporary directories of dead test processes are swept.
//! - [`chaos`] — the chaos suite: members on network namespaces of their
//!   own under seeded faults (partitions, kills, pauses, delay and loss
//!   through a proxy), with linearizability and watch checks
//!   (`tests/chaos.rs`, `scripts/chaos-soak.sh`).
//! - [`up`] — [`up::Up`]: `ballast up` (the whole control plane) as a test
//!   fixture driven with the real `kubectl`, one at a time per machine.
//! - `tests/etcdctl_compat.rs` — the etcdctl compatibility suite.
//! - `tests/tls.rs`, `tests/auth.rs` — TLS and the Auth API, each case
//!   against etcd and Ballast.
//! - `tests/grpc_wire.rs` — `ballast_proto`'s generated clients against
//!   a cluster: the protos match the wire, and etcd's gRPC error codes.
//!
//! Binaries: `$ETCD_BIN` (default `/usr/bin/etcd`) and `$ETCDCTL_BIN`
//! (default `/usr/bin/etcdctl`).

pub mod chaos;
pub mod cluster;
pub mod etcdctl;
pub mod http;
pub mod process;
pub mod up;

pub use cluster::{
    workspace_bin, Cluster, ClusterKind, ClusterOptions, ClusterTls, Member, MemberTls,
};
pub use etcdctl::{ClientTls, Etcdctl, Output, Stream};
