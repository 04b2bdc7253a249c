//! Compiles the Mesos v1 and Agora internal .proto files with protox (a pure
//! Rust protobuf compiler, so no `protoc` is needed) and generates the Rust
//! types with prost. The descriptor set is kept for the Mesos JSON mapping,
//! which walks messages by reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mesos/v1/mesos.proto",
        "proto/mesos/v1/scheduler.proto",
        "proto/mesos/v1/executor.proto",
        "proto/mesos/v1/master.proto",
        "proto/mesos/v1/agent.proto",
        "proto/mesos/v1/quota.proto",
        "proto/mesos/v1/maintenance.proto",
        "proto/mesos/v1/allocator.proto",
        "proto/agora/internal/v1/agent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let mut config = prost_build::Config::new();
    config.enable_type_names().btree_map(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
