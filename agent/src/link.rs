//! The link to the master: one gRPC stream at a time, re-established with
//! backoff whenever it breaks (master restart, network). Each new stream
//! starts with the agent's Register, which lists what it runs, so the master
//! can rebuild its view.

use std::time::Duration;

use agora_rpc::agent_service_client::AgentServiceClient;
use agora_zk as zk;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{info, warn};

use crate::actor::Command;

/// Turns `--master` (`host:port`, `http://host:port`) into a URL.
pub fn master_url(master: &str) -> String {
    let m = master.trim().trim_end_matches('/');
    if m.starts_with("http://") || m.starts_with("https://") {
        m.to_string()
    } else {
        format!("http://{m}")
    }
}

/// Keeps a stream to the master open until `stop` is set. With a `zk://`
/// master, each connection goes to the leader ZooKeeper names at the time.
pub(crate) async fn run(
    master: String,
    credential: Option<agora_proto::auth::Credential>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    actor: mpsc::UnboundedSender<Command>,
    mut stop: watch::Receiver<bool>,
) {
    // `--credential`, presented on every session (Basic, as metadata).
    let authorization = credential
        .map(|c| c.basic_header())
        .and_then(|h| tonic::metadata::MetadataValue::try_from(h).ok());
    let mut leader = if zk::is_zk(&master) {
        match master.parse::<zk::ZkUrl>() {
            Ok(url) => Some(zk::detect(url)),
            Err(e) => {
                warn!(error = %e, "invalid --master");
                return;
            }
        }
    } else {
        None
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut established = false;
        let attempt = async {
            let tls_on = tls.is_some();
            let url = match leader.as_mut() {
                None => agora_rpc::tls::base_url(&master, tls_on),
                Some(rx) => match zk::current_leader(rx, Duration::from_secs(10)).await {
                    Some(l) => agora_rpc::tls::base_url(&l.address, tls_on),
                    None => return Err(format!("no leading master in {master}")),
                },
            };
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| format!("invalid --master {master}: {e}"))?;
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| format!("TLS to the master: {e}"))?;
            }
            let endpoint = endpoint
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20));
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot reach the master at {url}: {e}"))?;
            let mut client = AgentServiceClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            let (tx, rx) = mpsc::unbounded_channel();
            // The actor queues Register first on `tx`.
            actor
                .send(Command::MasterConnected { tx })
                .map_err(|_| "agent stopped".to_string())?;
            let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
            if let Some(a) = &authorization {
                request.metadata_mut().insert("authorization", a.clone());
            }
            let response = client
                .session(request)
                .await
                .map_err(|s| format!("the master refused the session: {}", s.message()))?;
            let mut inbound = response.into_inner();
            info!(master = %url, "connected to the master");
            established = true;
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if actor.send(Command::MasterMessage(Box::new(m))).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err("the master closed the connection".to_string()),
                    Err(s) => return Err(format!("the master connection failed: {s}")),
                }
            }
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        let _ = actor.send(Command::MasterDisconnected);
        if established {
            backoff = Duration::from_millis(100);
        }
        match result {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "master link down");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
