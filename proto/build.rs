//! Generates the etcd v3 API (messages, tonic servers and clients) from the
//! `.proto` files under `etcd/`, and the gRPC health service
//! (`grpc/health/v1`). Needs `protoc` on `PATH` (or `$PROTOC`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = [
        root.join("etcd/mvccpb/kv.proto"),
        root.join("etcd/authpb/auth.proto"),
        root.join("etcd/etcdserverpb/rpc.proto"),
        root.join("grpc/health/v1/health.proto"),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &[root])?;
    Ok(())
}
