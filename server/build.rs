//! Generates Ballast's internal member messages and service from
//! `proto/ballast/internal.proto`; the etcd types it uses come from
//! `ballast-proto`. Needs `protoc` on `PATH` (or `$PROTOC`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let internal = dir.join("proto/ballast/internal.proto");
    let etcd = dir.join("../proto");
    println!("cargo:rerun-if-changed={}", internal.display());
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".etcdserverpb", "::ballast_proto::etcdserverpb")
        .extern_path(".mvccpb", "::ballast_proto::mvccpb")
        .extern_path(".authpb", "::ballast_proto::authpb")
        .compile_protos(&[internal], &[dir.join("proto"), etcd])?;
    Ok(())
}
