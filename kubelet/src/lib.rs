//! # ballast-kubelet
//!
//! The node agent: pod workers and the process and simulated runtimes. Not
//! built yet: see issue 6. This crate exports nothing until it works.
