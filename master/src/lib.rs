//! The Agora master shell.
//!
//! Wraps the deterministic core (`agora-master-core`) with I/O: one listener
//! serving the Mesos v1 scheduler and operator HTTP APIs and the legacy
//! endpoints (warp), and the agent gRPC service (tonic) on the same port.
//! A single driver task owns the core; handlers talk to it over a channel.
//!
//! ```text
//! framework ──HTTP──▶ http.rs ──Command──▶ driver.rs ──Input──▶ Master (core)
//! agent ─────gRPC──▶ grpc.rs ──Command──▶     │      ◀─Output──
//!                                             └─▶ event streams, agent streams, replies
//! ```

mod clock;
mod driver;
mod grpc;
mod histograms;
mod http;
mod legacy;
mod registry;
mod server;
mod standby;
mod ui;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agora_master_core::{Config, Master};
use agora_proto::v1;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use clock::Clock;
pub use driver::{MasterHandle, Stopped};
pub use http::{ROUTES, Route};
pub use registry::{RegistryError, RegistryStore};

/// How to run a master.
#[derive(Clone, Debug, Default)]
pub struct MasterOptions {
    /// The core's settings.
    pub config: Config,
    /// The name agents and frameworks are told (`MasterInfo.hostname`).
    pub hostname: Option<String>,
    /// The flags shown by `/flags` and GET_FLAGS.
    pub flags: Vec<(String, String)>,
    /// Seed of the allocator's agent order.
    pub seed: u64,
    /// The IP agents and frameworks are told to reach, when the listener's
    /// is not reachable (e.g. it listens on 0.0.0.0).
    pub advertise_ip: Option<IpAddr>,
    /// Where the registry is kept without ZooKeeper (none: in memory).
    pub work_dir: Option<std::path::PathBuf>,
    /// Which HTTP realms require credentials, and the credentials.
    pub auth: Arc<agora_rpc::auth::HttpAuth>,
    /// Agents must present credentials from `auth` (`--authenticate-agents`).
    pub authenticate_agents: bool,
    /// TLS (certificates) and whether plain HTTP is served too; with TLS,
    /// agents' gRPC sessions need a certificate for `agent.<cluster>`.
    pub transport: agora_rpc::serve::Transport,
    /// The cluster name in certificate names (`agent.<cluster>`; empty:
    /// `agora`).
    pub cluster: String,
}

/// A running master.
pub struct RunningMaster {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A way to query the core.
    pub handle: MasterHandle,
    /// This master's MasterInfo.
    pub info: v1::MasterInfo,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    driver: JoinHandle<()>,
    /// Stores the registry; told when another master wrote it.
    writer: Option<(JoinHandle<()>, Arc<tokio::sync::Notify>)>,
}

impl RunningMaster {
    /// `host:port` for clients.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving and drops every connection.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
        self.driver.abort();
        let _ = (&mut self.driver).await;
        if let Some((writer, _)) = self.writer.take() {
            // Its channel closed with the driver: the last registry is being
            // written.
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
    }

    /// Resolves when another master has written the registry (this one no
    /// longer leads); never without ZooKeeper.
    pub async fn fenced(&self) {
        match &self.writer {
            Some((_, fenced)) => fenced.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Waits until the server ends (it ends only when stopped).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// `MasterInfo.ip`: the IPv4 address in network byte order read as a
/// little-endian uint32 (10.0.0.1 → 16777226).
pub fn master_ip(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        IpAddr::V6(_) => 0,
    }
}

/// This master's MasterInfo, for a listener at `addr`.
pub fn master_info(options: &MasterOptions, addr: SocketAddr) -> v1::MasterInfo {
    let ip_addr = options
        .advertise_ip
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(addr.ip());
    let hostname = options
        .hostname
        .clone()
        .unwrap_or_else(|| ip_addr.to_string());
    let ip = ip_addr.to_string();
    v1::MasterInfo {
        id: uuid::Uuid::new_v4().to_string(),
        ip: master_ip(ip_addr),
        port: u32::from(addr.port()),
        pid: Some(format!("master@{ip}:{}", addr.port())),
        hostname: Some(hostname.clone()),
        version: Some(agora_proto::MESOS_VERSION.to_string()),
        address: Some(v1::Address {
            hostname: Some(hostname),
            ip: Some(ip),
            port: i32::from(addr.port()),
        }),
        domain: None,
        capabilities: vec![v1::master_info::Capability {
            r#type: Some(v1::master_info::capability::Type::AgentUpdate as i32),
        }],
    }
}

/// Starts a master on `listener`, leading by itself (no ZooKeeper).
pub async fn start(
    options: MasterOptions,
    listener: TcpListener,
) -> std::io::Result<RunningMaster> {
    let info = master_info(&options, listener.local_addr()?);
    let registry = match &options.work_dir {
        Some(dir) => Some(RegistryStore::file(dir.clone()).map_err(std::io::Error::other)?),
        None => None,
    };
    start_leading(options, listener, info, 1, registry)
        .await
        .map_err(std::io::Error::other)
}

/// Starts leading on `listener` as `info`, in leadership `epoch`, from the
/// registry in `registry` (and keeping it there).
async fn start_leading(
    options: MasterOptions,
    listener: TcpListener,
    info: v1::MasterInfo,
    epoch: u64,
    registry: Option<RegistryStore>,
) -> Result<RunningMaster, RegistryError> {
    let addr = listener
        .local_addr()
        .map_err(|e| RegistryError::Io("listener".into(), e))?;
    let clock = Clock::new();
    let now = clock.now();
    let heartbeat = options.config.heartbeat_interval;
    let seed = if options.seed == 0 {
        now.as_nanos()
    } else {
        options.seed
    };
    let mut master = Master::new(options.config.clone(), info.clone(), epoch, seed, now);
    let mut writer = None;
    let mut registry_tx = None;
    if let Some(store) = registry {
        let stored = store.read().await?;
        info!(
            admitted = stored.admitted.len(),
            unreachable = stored.unreachable.len(),
            gone = stored.gone.len(),
            "recovered the registry"
        );
        master.recover(now, stored);
        let fenced = Arc::new(tokio::sync::Notify::new());
        let (tx, task) = registry::spawn_writer(store, fenced.clone());
        // What was recovered is stored again under this leadership (and
        // this writer learns the document's version).
        tx.send_replace(Some(master.registry()));
        registry_tx = Some(tx);
        writer = Some((task, fenced));
    }
    let histograms = histograms::Histograms::new();
    let http_metrics = agora_rpc::metrics::HttpMetrics::new("master");
    let (handle, driver) = driver::spawn(master, clock, registry_tx, histograms.clone());
    let ctx = Arc::new(http::Context {
        auth: options.auth.clone(),
        handle: handle.clone(),
        info: info.clone(),
        flags: options.flags.clone(),
        heartbeat: if heartbeat.is_zero() {
            Duration::from_secs(15)
        } else {
            heartbeat
        },
        start_time: now.as_secs_f64(),
        histograms,
        http_metrics: http_metrics.clone(),
    });
    let http_service = warp::service(http::routes(ctx));
    let grpc_service = tonic::service::Routes::new(grpc::Service::server(
        handle.clone(),
        options.auth.clone(),
        options.authenticate_agents,
        options.transport.tls.is_some().then(|| {
            if options.cluster.is_empty() {
                agora_rpc::tls::DEFAULT_CLUSTER.to_string()
            } else {
                options.cluster.clone()
            }
        }),
    ))
    .prepare();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        options.transport.clone().with_metrics(http_metrics),
        http_service,
        grpc_service,
        async {
            let _ = stop_rx.await;
        },
    ));
    info!(%addr, master.id = %info.id, epoch, "master started");
    Ok(RunningMaster {
        addr,
        handle,
        info,
        stop: Some(stop_tx),
        server,
        driver,
        writer,
    })
}

/// Why a master contending in ZooKeeper stopped.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// ZooKeeper failed, or the session holding leadership ended (the
    /// process should exit, as a Mesos master aborts).
    #[error(transparent)]
    Zk(#[from] agora_zk::ZkError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Another master wrote the registry: this one no longer leads.
    #[error("another master wrote the registry")]
    Fenced,
}

/// Runs a master that contends for leadership under `zk`: a standby that
/// redirects to the leader until it is elected, then the leader, in the
/// epoch its election gives. Returns Ok when `stop` completes, and an
/// error when leadership is lost.
pub async fn run_contending(
    options: MasterOptions,
    listener: TcpListener,
    zk: agora_zk::ZkUrl,
    session_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), HaError> {
    let mut stop = std::pin::pin!(stop);
    let info = master_info(&options, listener.local_addr()?);
    let record = agora_proto::json::to_value(&info).to_string();
    let mut candidacy = agora_zk::contend(&zk, record.as_bytes(), session_timeout).await?;
    // The standby and the leader share one socket, so no connection is
    // refused in between.
    let socket = listener.into_std()?;
    let standby = standby::serve(
        TcpListener::from_std(socket.try_clone()?)?,
        agora_zk::detect(zk.clone()),
        options.auth.clone(),
        options.transport.clone(),
    );
    info!(%zk, node = candidacy.node(), "standing by");
    let epoch = tokio::select! {
        epoch = candidacy.elected() => epoch,
        () = &mut stop => {
            standby.stop().await;
            candidacy.resign().await;
            return Ok(());
        }
    };
    standby.stop().await;
    let epoch = match epoch {
        Ok(e) => e,
        Err(e) => return Err(e.into()),
    };
    let registry = RegistryStore::Zk(Arc::new(agora_zk::Document::new(
        candidacy.client().clone(),
        &zk,
        format!("{}-registry", zk.path),
    )));
    let master = start_leading(
        options,
        TcpListener::from_std(socket)?,
        info,
        epoch,
        Some(registry),
    )
    .await?;
    let lost = tokio::select! {
        e = candidacy.lost() => Some(HaError::Zk(e)),
        () = master.fenced() => Some(HaError::Fenced),
        () = &mut stop => None,
    };
    master.stop().await;
    match lost {
        Some(e) => Err(e),
        None => {
            // A clean stop hands over at once, not after the session expires.
            candidacy.resign().await;
            Ok(())
        }
    }
}

/// The default flags listing for `/flags`, from the core's config.
pub fn flags_of(config: &Config, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let d = agora_proto::duration::format;
    let mut flags = vec![
        (
            "allocation_interval".to_string(),
            d(config.allocation_interval),
        ),
        (
            "agent_ping_timeout".to_string(),
            d(config.agent_ping_timeout),
        ),
        (
            "max_agent_ping_timeouts".to_string(),
            config.max_agent_ping_timeouts.to_string(),
        ),
        (
            "agent_reregister_timeout".to_string(),
            d(config.agent_reregister_timeout),
        ),
        ("drain_notice".to_string(), d(config.drain_notice)),
        (
            "max_completed_frameworks".to_string(),
            config.max_completed_frameworks.to_string(),
        ),
        (
            "max_completed_tasks_per_framework".to_string(),
            config.max_completed_tasks_per_framework.to_string(),
        ),
        (
            "min_allocatable_resources".to_string(),
            "cpus:0.01|mem:32".to_string(),
        ),
        (
            "filter_gpu_resources".to_string(),
            config.allocator.filter_gpu_resources.to_string(),
        ),
        ("role_sorter".to_string(), "drf".to_string()),
        ("framework_sorter".to_string(), "drf".to_string()),
    ];
    if let Some(o) = &config.overlay {
        flags.push(("overlay_cidr".to_string(), o.cidr.to_string()));
        flags.push(("overlay_name".to_string(), o.name.clone()));
        flags.push((
            "overlay_subnet_prefix".to_string(),
            o.subnet_prefix.to_string(),
        ));
        flags.push(("overlay_encrypt".to_string(), o.encrypt.to_string()));
    }
    for (k, v) in extra {
        flags.push((k.to_string(), v.clone()));
    }
    flags.sort();
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_ip_is_little_endian() {
        assert_eq!(master_ip("10.0.0.1".parse().unwrap()), 16777226);
        assert_eq!(master_ip("127.0.1.1".parse().unwrap()), 16842879);
    }
}
