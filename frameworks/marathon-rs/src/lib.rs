//! marathon-rs: long-running apps behind a Marathon-compatible REST API.
//!
//! The decisions live in `agora-marathon-core`; this crate is the shell
//! around it: the REST v2 API and status page on warp ([`http`], [`ui`]),
//! server-sent events ([`events`]), the scheduler subscription and calls
//! through `agora-sdk` ([`scheduler`]), and the embedded store ([`store`]).
//! [`start`] runs it all on a listener.

pub mod auth;
pub mod driver;
pub mod events;
pub mod http;
pub mod scheduler;
pub mod store;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_marathon_core::marathon::{Config, Marathon};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

pub use store::{Store, StoreError};

/// How to run marathon-rs.
#[derive(Clone, Debug)]
pub struct MarathonOptions {
    /// Planning settings (framework name, master, port range…).
    pub config: Config,
    /// Where the state file lives.
    pub work_dir: PathBuf,
    /// The hostname advertised to the master (FrameworkInfo.hostname).
    pub hostname: String,
    /// FrameworkInfo.failover_timeout, seconds (Marathon: one week).
    pub failover_timeout: f64,
    /// The role to register with.
    pub role: String,
    /// Heartbeats on `/v2/events`.
    pub event_heartbeat: Duration,
    /// How long changes nobody waits for (status updates) may stay
    /// unwritten (timers fire at the state machine's own deadlines).
    pub tick: Duration,
    /// After an operator's TEARDOWN, register a new framework and relaunch
    /// the apps (without it, marathon-rs says so and waits).
    pub reregister_when_removed: bool,
    /// The principal (and secret) marathon-rs registers and authenticates
    /// with (`--mesos_authentication_principal`).
    pub credential: Option<agora_proto::auth::Credential>,
    /// Who may use the HTTP API (`--http_credentials`, tokens).
    pub http_auth: Arc<auth::HttpAuth>,
    /// How the API listener speaks (TLS with certificates).
    pub transport: agora_rpc::serve::Transport,
    /// TLS to the master (and to the leader, from a standby).
    pub client_tls: Option<agora_rpc::tls::ClientTls>,
    /// Run with --insecure (said on the status page).
    pub insecure: bool,
}

impl MarathonOptions {
    /// Defaults for a master at `master`, state in `work_dir`.
    pub fn new(master: &str, work_dir: PathBuf) -> Self {
        MarathonOptions {
            config: Config {
                master: master.to_string(),
                ..Config::default()
            },
            work_dir,
            hostname: "localhost".into(),
            failover_timeout: 7.0 * 24.0 * 3600.0,
            role: "*".into(),
            event_heartbeat: Duration::from_secs(10),
            tick: Duration::from_millis(500),
            reregister_when_removed: false,
            credential: None,
            http_auth: Arc::new(auth::HttpAuth::open()),
            transport: agora_rpc::serve::Transport::plain(),
            client_tls: None,
            insecure: false,
        }
    }
}

/// A running marathon-rs.
pub struct RunningMarathon {
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The state machine's driver (for embedding and tests).
    pub handle: driver::Handle,
    driver: JoinHandle<()>,
    slot: scheduler::Slot,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningMarathon {
    /// Stops serving and unsubscribes without tearing the framework down:
    /// its tasks keep running, and a marathon-rs started on the same work
    /// dir takes them over (as Marathon does on failover).
    pub async fn stop(mut self) {
        if let Some(s) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            s.stop();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        // What was decided is stored before the driver goes.
        if tokio::time::timeout(Duration::from_secs(10), self.handle.flush())
            .await
            .is_err()
        {
            tracing::warn!("stopping with marathon-rs state not stored");
        }
        self.driver.abort();
        let _ = self.driver.await;
    }
}

/// `host:port` this marathon-rs is reached at (`/v2/leader`, the latch).
fn advertised(options: &mut MarathonOptions, addr: SocketAddr) -> String {
    if options.config.leader.is_empty() || options.config.leader == Config::default().leader {
        options.config.leader = format!("{}:{}", options.hostname, addr.port());
    }
    options.config.leader.clone()
}

fn io_error(options: &MarathonOptions) -> impl Fn(std::io::Error) -> StoreError + '_ {
    |source| StoreError::Io {
        path: options.work_dir.clone(),
        source,
    }
}

/// Loads the state from the work dir and starts serving on `listener`,
/// subscribing to the master in the background (the API answers at once).
pub async fn start(
    options: MarathonOptions,
    listener: tokio::net::TcpListener,
) -> Result<RunningMarathon, StoreError> {
    let store = Store::open(&options.work_dir)?;
    let state = store.load()?;
    start_with(options, listener, store, state, None)
}

/// Why a marathon-rs contending in ZooKeeper stopped.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// ZooKeeper failed, the session holding leadership ended, or another
    /// leader wrote the state: the process should exit, as Marathon does.
    #[error(transparent)]
    Zk(#[from] agora_zk::ZkError),
    /// The state could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another leader wrote the state.
    #[error("another marathon-rs leader wrote the state")]
    Fenced,
}

/// Runs a marathon-rs that contends for leadership under `zk` (a Curator
/// leader latch at `<path>/leader-curator`, state at `<path>/state`): a
/// standby redirecting to the leader until elected, then the leader with
/// the state from ZooKeeper. Returns Ok when `stop` completes, an error
/// when leadership is lost.
pub async fn run_contending(
    mut options: MarathonOptions,
    listener: tokio::net::TcpListener,
    zk: agora_zk::ZkUrl,
    session_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), HaError> {
    use agora_zk::{Election, contend_in, detect_in};
    let mut stop = std::pin::pin!(stop);
    let addr = listener.local_addr().map_err(io_error(&options))?;
    let me = advertised(&mut options, addr);
    // The standby and the leader share one socket.
    let socket = listener.into_std().map_err(io_error(&options))?;
    let listen = |socket: &std::net::TcpListener| {
        socket
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(io_error(&options))
    };
    let abdicate = Arc::new(tokio::sync::Notify::new());
    loop {
        let mut candidacy = contend_in(
            Election::marathon(zk.clone()),
            me.as_bytes(),
            session_timeout,
        )
        .await?;
        let standby = http::standby(
            listen(&socket)?,
            me.clone(),
            detect_in(Election::marathon(zk.clone())),
            options.http_auth.clone(),
            options.transport.clone(),
            options.client_tls.clone(),
        );
        info!(%zk, node = candidacy.node(), "standing by");
        let elected = tokio::select! {
            e = candidacy.elected() => e,
            () = &mut stop => {
                standby.stop().await;
                candidacy.resign().await;
                return Ok(());
            }
        };
        standby.stop().await;
        elected?;
        let (store, state) = Store::zk(
            candidacy.client().clone(),
            &zk,
            format!("{}/state", zk.path),
        )
        .await?;
        let running = start_with(
            options.clone(),
            listen(&socket)?,
            store.clone(),
            state,
            Some(abdicate.clone()),
        )?;
        let outcome = tokio::select! {
            e = candidacy.lost() => Some(Err(HaError::Zk(e))),
            () = store.fenced() => Some(Err(HaError::Fenced)),
            () = &mut stop => Some(Ok(())),
            () = abdicate.notified() => {
                // Let the answer to DELETE /v2/leader leave first.
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
        };
        running.stop().await;
        match outcome {
            Some(Ok(())) => {
                // A clean stop hands over at once, not after the session expires.
                candidacy.resign().await;
                return Ok(());
            }
            Some(err) => return err,
            // DELETE /v2/leader: to the back of the line.
            None => candidacy.resign().await,
        }
    }
}

/// Serves `state` (kept in `store`) on `listener`, subscribing to the
/// master in the background (the API answers at once).
/// With `abdicate` (in a leader election), `DELETE /v2/leader` notifies it.
pub fn start_with(
    mut options: MarathonOptions,
    listener: tokio::net::TcpListener,
    store: Store,
    state: agora_marathon_core::marathon::State,
    abdicate: Option<Arc<tokio::sync::Notify>>,
) -> Result<RunningMarathon, StoreError> {
    let addr = listener.local_addr().map_err(io_error(&options))?;
    advertised(&mut options, addr);
    let apps = state.apps.len();
    let instances = state.instances.len();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut config = options.config.clone();
    config.role = options.role.clone();
    config.principal = options.credential.as_ref().map(|c| c.principal.clone());
    let marathon = Marathon::new(config, state, seed);
    let (calls_tx, calls_rx) = tokio::sync::mpsc::unbounded_channel();
    let (handle, driver) = driver::spawn(marathon, store, calls_tx, options.tick);
    let slot: scheduler::Slot = Arc::new(Mutex::new(None));
    let sub = scheduler::Subscription {
        master: options.config.master.clone(),
        name: options.config.framework_name.clone(),
        hostname: options.hostname.clone(),
        webui_url: format!("http://{}", options.config.leader),
        failover_timeout: options.failover_timeout,
        role: options.role.clone(),
        reregister_when_removed: options.reregister_when_removed,
        credential: options.credential.clone(),
        tls: options.client_tls.clone(),
    };
    let http_metrics = agora_rpc::metrics::HttpMetrics::new("marathon");
    let ctx = Arc::new(http::Context {
        insecure: options.insecure,
        auth: options.http_auth.clone(),
        marathon: handle.clone(),
        started: Instant::now(),
        http_metrics: http_metrics.clone(),
        event_heartbeat: options.event_heartbeat,
        abdicate,
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(agora_rpc::http::serve_with(
        listener,
        options.transport.clone().with_metrics(http_metrics),
        http::routes(ctx),
        async {
            let _ = stop_rx.await;
        },
    )));
    tasks.push(tokio::spawn(scheduler::caller(calls_rx, slot.clone())));
    tasks.push(tokio::spawn(scheduler::run(
        handle.clone(),
        sub,
        slot.clone(),
    )));
    info!(%addr, apps, instances, master = %options.config.master, "marathon-rs leading");
    Ok(RunningMarathon {
        addr,
        handle,
        driver,
        slot,
        stop: Some(stop_tx),
        tasks,
    })
}
