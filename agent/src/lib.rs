//! The Agora agent.
//!
//! An agent offers its machine's resources to the master, runs the tasks the
//! master sends it, and reports their status until the framework has
//! acknowledged every update.
//!
//! ```text
//! master ──gRPC── link.rs ──Command──▶ actor.rs (driver) ──spawn──▶ executor process
//!                                         ▲  │    ⇅                     │
//!                                         │  │  agora-agent-core        │
//!   executor ──HTTP /api/v1/executor── http.rs ◀── events ──────────────┘
//! ```
//!
//! Each task without an executor runs under the command executor, `agora
//! executor` ([`command_executor`]), a separate process that speaks the v1
//! executor HTTP API back to the agent, exactly as a custom executor (pymesos)
//! does. Executors run in their own process groups in per-run sandboxes.

mod actor;
pub mod cgroups;
pub mod checkpoint;
pub mod cni;
pub mod command_executor;
pub mod detect;
pub mod docker;
pub mod fetch;
mod files;
pub mod health;
mod http;
mod link;
mod metrics;
pub mod overlay;
mod peer;
pub mod sandbox;
pub use agora_agent_core::updates;
mod ui;
pub mod users;
mod volumes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use agora_proto::resources::Resources;
use agora_proto::v1;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use actor::{Settings, recorded_id};
pub use http::{ROUTES, Route};
pub use link::master_url;

/// How to run an agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The master: `host:port` or `http://host:port`.
    pub master: String,
    /// Sandboxes and the agent's metadata.
    pub work_dir: PathBuf,
    /// AgentInfo.hostname (`agent-1`, a DNS name, …).
    pub hostname: String,
    /// The address executors and the master use to reach this agent; by
    /// default the listener's, or this host's first non-loopback IPv4 when
    /// listening on all interfaces.
    pub advertise_ip: Option<IpAddr>,
    /// `--resources`; names it does not set are detected.
    pub resources: Option<Resources>,
    /// `--attributes`.
    pub attributes: Vec<v1::Attribute>,
    /// The `agora` binary (its `executor` subcommand is the command executor).
    pub executor_path: PathBuf,
    /// How long an executor may take to subscribe.
    pub executor_registration_timeout: Duration,
    /// How long an executor has to exit after SHUTDOWN.
    pub executor_shutdown_grace_period: Duration,
    /// `--containerizers`: `docker` and/or `process`.
    pub containerizers: Vec<String>,
    /// `--docker-allow-privileged`: privileged containers and the Docker
    /// socket may be used by tasks.
    pub docker_allow_privileged: bool,
    /// How long executors of checkpointing frameworks wait for a restarted
    /// agent before they kill their tasks and exit.
    pub recovery_timeout: Duration,
    /// Limit process tasks with cgroups (`--isolation cgroups`, the default).
    pub cgroups: bool,
    /// Enforce `cpus` as a hard limit (CFS quota), not only a weight, for
    /// process and Docker tasks (Mesos' `--cgroups_enable_cfs`, off by default).
    pub cgroups_enable_cfs: bool,
    /// The key executors' tokens are signed with (`--jwt_secret_key`); when
    /// unset, one made at first start in `<work_dir>/meta/jwt_secret_key`.
    pub jwt_secret_key: Option<PathBuf>,
    /// Executor calls must carry their token (`--authenticate_http_executors`);
    /// without it a call with no token is taken from the executor's own
    /// process only.
    pub authenticate_http_executors: bool,
    /// Which of the agent's HTTP realms require credentials.
    pub http_auth: Arc<agora_rpc::auth::HttpAuth>,
    /// What the agent presents to the master (`--credential`).
    pub credential: Option<agora_proto::auth::Credential>,
    /// Its certificate (for `agent.<cluster>`), key and the cluster CA: TLS
    /// on its HTTP port (executors may still use plain text, which only the
    /// executor API takes), and mutual TLS to the master.
    pub tls: Option<Arc<agora_rpc::tls::Tls>>,
    /// The cluster name in certificate names (empty: `agora`).
    pub cluster: String,
    /// Run tasks as the users their frameworks name (Mesos' `--switch_user`;
    /// needs root, and is off with a warning without it).
    pub switch_user: bool,
    /// Mesos ACLs for the agent's endpoints (access_sandboxes).
    pub acls: agora_proto::acl::Acls,
    /// `--network-cni-plugins-dir`: where CNI plugins are (`:`-separated;
    /// Debian's and the CNI project's places when None).
    pub network_cni_plugins_dir: Option<String>,
    /// `--network-cni-config-dir`: CNI network configurations, by name.
    pub network_cni_config_dir: Option<PathBuf>,
}

impl AgentOptions {
    /// Options with Mesos' defaults for everything but the essentials.
    pub fn new(
        master: impl Into<String>,
        work_dir: impl Into<PathBuf>,
        executor_path: impl Into<PathBuf>,
    ) -> Self {
        AgentOptions {
            master: master.into(),
            work_dir: work_dir.into(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
            advertise_ip: None,
            resources: None,
            attributes: Vec::new(),
            executor_path: executor_path.into(),
            executor_registration_timeout: Duration::from_secs(60),
            executor_shutdown_grace_period: Duration::from_secs(5),
            containerizers: vec!["docker".into(), "process".into()],
            docker_allow_privileged: false,
            recovery_timeout: Duration::from_secs(15 * 60),
            cgroups: true,
            cgroups_enable_cfs: false,
            jwt_secret_key: None,
            authenticate_http_executors: false,
            http_auth: Arc::new(agora_rpc::auth::HttpAuth::open()),
            credential: None,
            tls: None,
            cluster: String::new(),
            switch_user: true,
            acls: agora_proto::acl::Acls::default(),
            network_cni_plugins_dir: None,
            network_cni_config_dir: None,
        }
    }
}

/// A running agent.
pub struct RunningAgent {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its settings.
    pub settings: Arc<Settings>,
    actor: mpsc::UnboundedSender<actor::Command>,
    stop_link: watch::Sender<bool>,
    stop_server: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningAgent {
    /// The id the master gave it (None until registered).
    pub async fn agent_id(&self) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.actor
            .send(actor::Command::Query(Box::new(move |a| {
                let _ = tx.send(a.core.id().map(str::to_string));
            })))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Waits until the agent has registered, up to `timeout`.
    pub async fn registered(&self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(id) = self.agent_id().await {
                return Some(id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Stops the agent: every executor is shut down (its tasks killed), then
    /// the link and the HTTP server close.
    pub async fn stop(self) {
        let id = self.agent_id().await;
        let docker = self.settings.core.docker();
        let (tx, rx) = oneshot::channel();
        let reply = self
            .actor
            .send(actor::Command::Shutdown { reply: tx })
            .is_ok();
        self.close(reply.then_some(rx)).await;
        // Containers whose executor was killed before it could remove them.
        if let (Some(id), true) = (id, docker)
            && let Ok(d) = docker::connect().await
            && let Ok(list) = docker::list_labelled(&d, &id).await
        {
            for c in list {
                if let Err(e) = docker::remove(&d, &c.id).await {
                    warn!(container = %c.id, error = %e, "cannot remove a container");
                }
            }
        }
    }

    /// Stops the agent the way Mesos' does on SIGTERM: executors of
    /// checkpointing frameworks keep running and are adopted by the next run
    /// of an agent with the same work dir; the others are killed.
    pub async fn detach(self) {
        let (tx, rx) = oneshot::channel();
        let reply = self
            .actor
            .send(actor::Command::Detach { reply: tx })
            .is_ok();
        self.close(reply.then_some(rx)).await;
    }

    async fn close(mut self, done: Option<oneshot::Receiver<()>>) {
        if let Some(rx) = done {
            let _ = rx.await;
        }
        let _ = self.stop_link.send(true);
        if let Some(s) = self.stop_server.take() {
            let _ = s.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The agent's own key for executor tokens: made at first start (32 random
/// bytes, hex, mode 0600) and kept, so adopted executors' tokens stay valid.
fn jwt_key(work_dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = work_dir.join("meta").join("jwt_secret_key");
    match std::fs::read(&path) {
        Ok(key) if !key.is_empty() => return Ok(key),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(key.as_bytes())?;
    Ok(key.into_bytes())
}

fn advertise_ip(listen: IpAddr, hostname: &str) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    (hostname, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback()))
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The agent's settings from its options: its address, resources, the
/// executor binary, what isolation and containerizers work here, keys.
async fn settings(options: &AgentOptions, addr: SocketAddr) -> std::io::Result<Settings> {
    std::fs::create_dir_all(&options.work_dir)?;
    let work_dir = options.work_dir.canonicalize()?;
    let ip = options
        .advertise_ip
        .unwrap_or_else(|| advertise_ip(addr.ip(), &options.hostname));
    let advertise = SocketAddr::new(ip, addr.port()).to_string();
    let detected = detect::resources(&work_dir, options.resources.as_ref());
    // With the reservations and volumes operations made of them.
    let resources = volumes::total(&detected, &volumes::load(&work_dir)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    // Executors start in their sandboxes: a relative path would not resolve.
    let executor_path = options.executor_path.canonicalize().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("executor path {}: {e}", options.executor_path.display()),
        )
    })?;
    let isolation = if options.cgroups {
        match cgroups::detect() {
            Ok(h) => {
                info!("process tasks get cpu and memory limits ({h})");
                Some(h.to_string())
            }
            Err(e) => {
                warn!(
                    "cgroups are not writable ({e}): process tasks run without cpu and memory limits"
                );
                None
            }
        }
    } else {
        None
    };
    // Docker is used when the engine answers; without it Docker tasks fail
    // with a message that says so.
    let mut containerizers = options.containerizers.clone();
    let mut docker_api_version = None;
    if containerizers.iter().any(|c| c == "docker") {
        match tokio::time::timeout(Duration::from_secs(5), docker::connect()).await {
            Ok(Ok(d)) => {
                let v = d.client_version();
                docker_api_version = Some(format!("{}.{}", v.major_version, v.minor_version));
            }
            Ok(Err(e)) => {
                warn!("{e}: the docker containerizer is disabled");
                containerizers.retain(|c| c != "docker");
            }
            Err(_) => {
                warn!(
                    "the Docker engine did not answer in 5 s: the docker containerizer is disabled"
                );
                containerizers.retain(|c| c != "docker");
            }
        }
    }
    let jwt_key = match &options.jwt_secret_key {
        Some(path) => std::fs::read(agora_rpc::auth::strip_file_scheme(path)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("--jwt-secret-key {}: {e}", path.display()),
            )
        })?,
        None => jwt_key(&work_dir)?,
    };
    let cluster = if options.cluster.is_empty() {
        agora_rpc::tls::DEFAULT_CLUSTER.to_string()
    } else {
        options.cluster.clone()
    };
    // Executors trust the cluster CA from a file in the work dir.
    let tls_ca = match &options.tls {
        Some(tls) => {
            let path = work_dir.join("meta").join("ca.pem");
            std::fs::create_dir_all(work_dir.join("meta"))?;
            std::fs::write(&path, tls.ca_pem())?;
            Some(path)
        }
        None => None,
    };
    let switch_user = options.switch_user && users::can_switch();
    if options.switch_user && !switch_user {
        warn!(
            "the agent is not root: tasks run as its own user, not as the users their frameworks name"
        );
    }
    Ok(Settings {
        cni: cni::Cni::configured(
            options.network_cni_plugins_dir.clone(),
            options.network_cni_config_dir.clone(),
            &work_dir,
        )?,
        acls: options.acls.clone(),
        authenticate_http_executors: options.authenticate_http_executors,
        core: agora_agent_core::Config {
            switch_user,
            cluster,
            tls_ca,
            jwt_key: agora_agent_core::JwtKey(jwt_key),
            work_dir: work_dir.clone(),
            hostname: options.hostname.clone(),
            advertise,
            resources,
            attributes: options.attributes.clone(),
            executor_path,
            executor_registration_timeout: options.executor_registration_timeout,
            executor_shutdown_grace_period: options.executor_shutdown_grace_period,
            containerizers,
            docker_allow_privileged: options.docker_allow_privileged,
            recovery_timeout: options.recovery_timeout,
            isolation,
            cgroups_enable_cfs: options.cgroups_enable_cfs,
            docker_api_version,
        },
    })
}

/// Starts an agent whose HTTP API listens on `listener`.
pub async fn start(options: AgentOptions, listener: TcpListener) -> std::io::Result<RunningAgent> {
    let addr = listener.local_addr()?;
    let settings = Arc::new(settings(&options, addr).await?);
    let work_dir = settings.core.work_dir.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let previous = recorded_id(&work_dir);
    let actor = actor::Actor::new(settings.clone(), tx.clone(), previous.clone());
    let actor_task = tokio::spawn(actor.run(rx));
    let http_metrics = agora_rpc::metrics::HttpMetrics::new("agent");
    let ctx = Arc::new(http::Context {
        auth: options.http_auth.clone(),
        actor: tx.clone(),
        settings: settings.clone(),
        generation: AtomicU64::new(1),
        started: std::time::Instant::now(),
        http_metrics: http_metrics.clone(),
    });
    let (stop_server, stop_rx) = oneshot::channel::<()>();
    let transport = match &options.tls {
        Some(tls) => agora_rpc::serve::Transport::tls(tls.clone(), true),
        None => agora_rpc::serve::Transport::plain(),
    }
    .with_metrics(http_metrics);
    let server = tokio::spawn(agora_rpc::http::serve_with(
        listener,
        transport,
        http::routes(ctx),
        async {
            let _ = stop_rx.await;
        },
    ));
    let (stop_link, link_rx) = watch::channel(false);
    let link_task = tokio::spawn(link::run(
        options.master.clone(),
        options.credential.clone(),
        options
            .tls
            .as_ref()
            .map(|t| t.tonic(&agora_rpc::tls::Role::Master.name(&settings.core.cluster))),
        tx.clone(),
        link_rx,
    ));
    info!(
        %addr,
        hostname = %settings.core.hostname,
        resources = %settings.core.resources,
        previous_id = previous.as_deref().unwrap_or("-"),
        "agent started"
    );
    Ok(RunningAgent {
        addr,
        settings,
        actor: tx,
        stop_link,
        stop_server: Some(stop_server),
        tasks: vec![server, link_task, actor_task],
    })
}
