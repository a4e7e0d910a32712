//! # ballast-apiserver
//!
//! The Kubernetes-style REST API with an in-memory watch cache, stored
//! through the etcd v3 API. Not built yet: see issue 5. This crate exports
//! nothing until it works.
