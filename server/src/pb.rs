//! The wire types of the storage member: etcd's v3 API (from
//! `ballast-proto`) and Ballast's internal messages
//! (`proto/ballast/internal.proto`).

pub use ballast_proto::{authpb, etcdserverpb, mvccpb};

/// `ballast.server`: the replicated command format and the members'
/// internal service.
#[allow(clippy::all)] // generated code
pub mod ballast {
    pub mod server {
        include!(concat!(env!("OUT_DIR"), "/ballast.server.rs"));
    }
}
