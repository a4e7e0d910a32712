//! # ballast-controllers
//!
//! The controller manager's controllers and the scheduler: clients of the
//! apiserver built on kube-rs, each needing nothing but a `kube::Client`.
//!
//! - `events` — [`events::Recorder`]: core/v1 Events for `kubectl describe`,
//!   shared by every component (the kubelet uses it too).
//! - `scheduler` — binds pending pods to nodes.

pub mod events;
pub mod scheduler;
