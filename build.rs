//! Compiles proto/worker.proto with the protoc shipped by `protoc-bin-vendored`, so a fresh
//! machine needs no protobuf install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // KV chunks as `Bytes`: the server slices one buffer per rank without copying.
        .bytes(".tandem.worker.v1.KvChunk.data")
        .compile_with_config(config, &["proto/worker.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/worker.proto");
    Ok(())
}
