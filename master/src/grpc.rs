//! The agent gRPC service: each `Session` stream is one agent connection,
//! relayed to and from the driver.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agora_master_core::ids::ConnId;
use agora_proto::internal::{AgentMessage, MasterMessage};
use agora_rpc::agent_service_server::{AgentService, AgentServiceServer};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::driver::{Command, MasterHandle};
use agora_proto::acl::Action;

/// Largest agent message accepted (a re-registration lists every task).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub(crate) struct Service {
    handle: MasterHandle,
    next_conn: Arc<AtomicU64>,
    /// The credentials agents present (`authorization` metadata, Basic).
    auth: Arc<agora_rpc::auth::HttpAuth>,
    /// Agents must present credentials (`--authenticate-agents`).
    authenticate_agents: bool,
    /// With TLS: the cluster whose `agent.<cluster>` certificate a session
    /// must come with.
    agent_certificates: Option<String>,
}

impl Service {
    pub(crate) fn server(
        handle: MasterHandle,
        auth: Arc<agora_rpc::auth::HttpAuth>,
        authenticate_agents: bool,
        agent_certificates: Option<String>,
    ) -> AgentServiceServer<Service> {
        AgentServiceServer::new(Service {
            handle,
            next_conn: Arc::new(AtomicU64::new(1)),
            auth,
            authenticate_agents,
            agent_certificates,
        })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Service {
    type SessionStream = Outbound;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        // With TLS, only agents with an agent certificate from the cluster
        // CA (verified in the handshake) open sessions.
        if let Some(cluster) = &self.agent_certificates {
            let conn = request.extensions().get::<agora_rpc::serve::Conn>();
            let certified = conn
                .and_then(|c| c.client_cert.as_ref())
                .is_some_and(|c| agora_rpc::tls::has_role(c, agora_rpc::tls::Role::Agent, cluster));
            if !certified {
                return Err(Status::unauthenticated(format!(
                    "agents need a certificate for {} from the cluster CA",
                    agora_rpc::tls::Role::Agent.name(cluster)
                )));
            }
        }
        // Who the agent is (its `--credential`), then whether it may
        // register (register_agents, decided by the core's ACLs).
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let principal = self.auth.principal_of(presented);
        if self.authenticate_agents && principal.is_none() {
            return Err(Status::unauthenticated(
                "the master requires agent credentials (agent --credential)",
            ));
        }
        let who = principal.clone();
        let allowed = self
            .handle
            .query(move |m| m.allows(Action::RegisterAgents, who.as_deref(), None))
            .await
            .map_err(|_| Status::unavailable("the master is stopping"))?;
        if !allowed {
            return Err(Status::permission_denied(format!(
                "{} is not authorized to register_agents",
                principal.map_or_else(
                    || "an unauthenticated agent".into(),
                    |p| format!("principal '{p}'")
                )
            )));
        }
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::unbounded_channel();
        self.handle.send(Command::AgentOpened { conn, sender: tx });
        let mut inbound = request.into_inner();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            debug!(conn = conn.0, ?peer, "agent connection opened");
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => handle.send(Command::AgentMessage { conn, message }),
                    Ok(None) => break,
                    Err(status) => {
                        debug!(conn = conn.0, %status, "agent connection failed");
                        break;
                    }
                }
            }
            handle.send(Command::AgentClosed(conn));
            debug!(conn = conn.0, "agent connection closed");
        });
        let outbound = UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(outbound)))
    }
}
