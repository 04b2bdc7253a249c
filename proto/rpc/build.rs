//! Generates the tonic client and server for `AgentService`. The messages
//! themselves live in agora-proto (extern paths), so the master core can use
//! them without depending on tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "../proto/agora/internal/v1/agent_service.proto";
    println!("cargo:rerun-if-changed={file}");
    println!("cargo:rerun-if-changed=../proto/agora/internal/v1/agent.proto");
    let fds = protox::compile([file], ["../proto"])?;
    tonic_prost_build::configure()
        .extern_path(".mesos", "::agora_proto::mesos")
        .extern_path(".agora.internal.v1", "::agora_proto::internal")
        .compile_fds(fds)?;
    Ok(())
}
