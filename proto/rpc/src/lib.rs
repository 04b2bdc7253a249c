//! Transport pieces shared by the Agora shells (never by the cores):
//!
//! - [`agent_service_server`] / [`agent_service_client`]: the agent ↔ master
//!   gRPC service (tonic). The master serves it; agents keep one
//!   bidirectional stream open. Messages are in `agora_proto::internal`.
//! - [`client`]: the client side of the v1 APIs (calls and RecordIO
//!   subscription streams), used by the SDK and the command executor;
//! - [`http`]: what every Mesos v1 HTTP endpoint needs: content-type and
//!   Accept negotiation, JSON or protobuf bodies, RecordIO framed streams,
//!   request size limits and plain-text errors.

pub mod auth;
pub mod client;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod tls;

#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/agora.rpc.v1.rs"));
}

pub use generated::*;
