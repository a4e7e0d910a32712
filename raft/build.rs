fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/raft_transport.proto"], &["proto"])?;
    Ok(())
}
