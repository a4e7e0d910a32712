//! # The chaos suite
//!
//! Three `ballast server` members run as separate processes on their own
//! test hosts (Linux network namespaces joined by veth links to a bridge,
//! addresses in 127.77.0.0/24), while clients on a fourth host write, read,
//! compare-and-set and watch, and a seeded nemesis injects faults:
//! partitions (isolation, one-way cuts, a cut link whose ends both still
//! reach the third member), SIGKILL + restart, SIGSTOP/SIGCONT,
//! latency and loss on peer links, hostile requests and bytes at one
//! member, half of them aimed at the leader. The
//! histories are then checked: per-key linearizability, watch streams in
//! order with no gaps and no duplicates across reconnects, every
//! acknowledged write in the log at its revision, one HashKV on every member.
//!
//! # Layout
//!
//! - [`checker`] — the linearizability checker (register + compare-and-set).
//! - [`net`] — the test hosts: namespaces, veth links, partition routes,
//!   cleanup (Drop, a reaper after exit, a sweep of stale ones).
//! - [`proxy`] — the userspace TCP proxy that stands in for `tc netem`.
//! - [`hostile`] — the hostile inputs of the `hostile` fault.
//! - [`members`] — the `ballast server` processes and their proxies.
//! - [`run`] — one run: clients, watchers, nemesis, convergence, checks,
//!   and the [`ChaosReport`].
//! - [`rng`] — the seeded generator every random choice comes from.

pub mod checker;
pub mod hostile;
pub mod members;
pub mod net;
pub mod proxy;
pub mod rng;
pub mod run;

pub use run::{run, ChaosConfig, ChaosReport, FaultKind};
