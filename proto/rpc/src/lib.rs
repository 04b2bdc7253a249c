//! The agent ↔ master gRPC service (tonic). The master serves
//! [`agent_service_server::AgentService`]; agents connect with
//! [`agent_service_client::AgentServiceClient`] and keep one bidirectional
//! stream open. Message types are in `agora_proto::internal`.

#![allow(missing_docs, clippy::unwrap_used)]

include!(concat!(env!("OUT_DIR"), "/agora.rpc.v1.rs"));
