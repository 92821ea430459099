//! Compiles `proto/lse.proto` with protox (a pure-Rust protobuf compiler),
//! so building needs no system `protoc`, and keeps the descriptor set for
//! gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/lse.proto");
    let descriptors = protox::compile(["lse.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("lse_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // Maps come back in key order, so responses are deterministic.
        .btree_map(".")
        // Prost's codec, but bytes that do not decode are INVALID_ARGUMENT.
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
