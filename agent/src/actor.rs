//! The agent's driver: the one task that owns the agent core
//! ([`agora_agent_core::Agent`]) and carries out what it decides.
//!
//! It turns what happens — master messages from the link, executor calls
//! from the HTTP API, process exits, the core's deadline — into the core's
//! inputs, and the core's outputs into I/O: spawning executors in their
//! sandboxes, checkpoint files, messages on the master connection and on
//! executors' streams, killing process groups, Docker containers.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agora_agent_core::{
    Agent, CallError, Checkpoint, Config, Container, ExecutorKey, Input, Output, Spawn, StreamId,
};
use agora_proto::executor;
use agora_proto::internal::{AgentMessage, MasterMessage};
use agora_proto::time::Clock;
use agora_rpc::http::HttpError;
use http::StatusCode;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::checkpoint::{self, Checkpoints};
use crate::docker;
use crate::sandbox;

/// The agent's settings, shared with its HTTP handlers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What shapes the agent core's decisions.
    pub core: Config,
    /// Executor calls must carry their token.
    pub authenticate_http_executors: bool,
    /// `--acls`: who may read which sandboxes (the default allows all).
    pub acls: agora_proto::acl::Acls,
    /// Containers' networks (CNI).
    pub cni: crate::cni::Cni,
}

/// What the driver is asked to do.
pub(crate) enum Command {
    MasterConnected {
        tx: mpsc::UnboundedSender<AgentMessage>,
    },
    MasterMessage(Box<MasterMessage>),
    MasterDisconnected,
    ExecutorSubscribe {
        call: executor::Call,
        events: mpsc::UnboundedSender<executor::Event>,
        generation: u64,
        reply: oneshot::Sender<Result<(), HttpError>>,
    },
    ExecutorCall {
        call: executor::Call,
        reply: oneshot::Sender<Result<(), HttpError>>,
    },
    ExecutorStreamClosed {
        generation: u64,
    },
    ExecutorExited {
        key: ExecutorKey,
        container: String,
        status: Option<i32>,
    },
    Query(Box<dyn FnOnce(&Actor) + Send>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Stop without stopping checkpointed executors (they wait for the next
    /// run of the agent); the others are killed.
    Detach {
        reply: oneshot::Sender<()>,
    },
    /// Containers labelled with this agent's id.
    Containers(Vec<Container>),
    /// What an output carried out in the background reports (a spawn into
    /// networks).
    Report(Box<Input>),
}

/// An executor a previous run started: no waiter, so its process is polled.
struct Watched {
    key: ExecutorKey,
    container: String,
    pid: u32,
    start: u64,
}

/// How often adopted executors' processes are looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The driver's state. See the module documentation.
pub struct Actor {
    pub(crate) settings: Arc<Settings>,
    /// The agent's decisions and state.
    pub(crate) core: Agent,
    clock: Clock,
    master: Option<mpsc::UnboundedSender<AgentMessage>>,
    streams: HashMap<StreamId, mpsc::UnboundedSender<executor::Event>>,
    watched: Vec<Watched>,
    /// The host's overlay, kept as the core says by a task of its own.
    overlay: tokio::sync::watch::Sender<crate::overlay::Want>,
    tx: mpsc::UnboundedSender<Command>,
    stop_reply: Option<oneshot::Sender<()>>,
    stopped: bool,
}

impl Actor {
    pub(crate) fn new(
        settings: Arc<Settings>,
        tx: mpsc::UnboundedSender<Command>,
        id: Option<String>,
    ) -> Self {
        let core = Agent::new(settings.core.clone(), id, fastrand::u64(..));
        Actor {
            settings,
            core,
            clock: Clock::new(),
            master: None,
            streams: HashMap::new(),
            watched: Vec::new(),
            overlay: crate::overlay::start(),
            tx,
            stop_reply: None,
            stopped: false,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let recovered = self.read_checkpoints();
        self.feed(Input::Recovered(recovered));
        // Networks of containers no recovered executor owns go before any
        // new container is made.
        let keep: std::collections::BTreeSet<String> =
            self.core.executors().map(|e| e.container.clone()).collect();
        self.settings.cni.remove_orphans(&keep).await;
        let mut watch = tokio::time::interval(WATCH_INTERVAL);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopped {
            let deadline = self
                .core
                .next_deadline()
                .map(|t| tokio::time::Instant::from_std(self.clock.instant(t)));
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => self.apply(c),
                    None => break,
                },
                () = sleep_until(deadline) => {
                    self.feed(Input::Tick);
                }
                _ = watch.tick(), if !self.watched.is_empty() => self.poll_watched(),
            }
        }
        debug!("agent driver stopped");
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::MasterConnected { tx } => {
                self.master = Some(tx);
                self.feed(Input::MasterConnected);
            }
            Command::MasterMessage(m) => {
                self.feed(Input::Master(m));
            }
            Command::MasterDisconnected => {
                self.master = None;
                self.feed(Input::MasterDisconnected);
            }
            Command::ExecutorSubscribe {
                call,
                events,
                generation,
                reply,
            } => {
                let stream = StreamId(generation);
                self.streams.insert(stream, events);
                let result = self.feed(Input::ExecutorSubscribe { stream, call });
                if result.as_ref().is_some_and(Result::is_err) {
                    self.streams.remove(&stream);
                }
                let _ = reply.send(http_result(result));
            }
            Command::ExecutorCall { call, reply } => {
                let result = self.feed(Input::ExecutorCall(call));
                let _ = reply.send(http_result(result));
            }
            Command::ExecutorStreamClosed { generation } => {
                let stream = StreamId(generation);
                if self.streams.remove(&stream).is_some() {
                    self.feed(Input::StreamClosed(stream));
                }
            }
            Command::ExecutorExited {
                key,
                container,
                status,
            } => {
                self.feed(Input::Exited {
                    key,
                    container,
                    status,
                });
            }
            Command::Query(f) => f(self),
            Command::Shutdown { reply } => {
                self.stop_reply = Some(reply);
                self.feed(Input::Shutdown);
            }
            Command::Detach { reply } => {
                self.stop_reply = Some(reply);
                self.feed(Input::Detach);
            }
            Command::Containers(list) => {
                self.feed(Input::Containers(list));
            }
            Command::Report(input) => {
                self.feed(*input);
            }
        }
    }

    /// Hands `input` to the core and carries out its outputs, and those of
    /// what they report back (a spawn's pid, a closed stream), in order.
    /// Returns the reply to an executor call, if `input` was one.
    fn feed(&mut self, input: Input) -> Option<Result<(), CallError>> {
        let mut reply = None;
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let now = self.clock.now();
            for output in self.core.handle(now, input) {
                if let Output::Reply(r) = output {
                    reply.get_or_insert(r);
                } else if let Some(next) = self.execute(output) {
                    inputs.push_back(next);
                }
            }
        }
        reply
    }

    /// Carries out one output; returns what the core must learn of it.
    fn execute(&mut self, output: Output) -> Option<Input> {
        match output {
            Output::Reply(_) => None,
            Output::ToMaster(m) => {
                if let Some(tx) = &self.master {
                    let _ = tx.send(*m);
                }
                None
            }
            Output::ToExecutor { stream, event } => {
                let sent = self
                    .streams
                    .get(&stream)
                    .is_some_and(|tx| tx.send(*event).is_ok());
                (!sent && self.streams.remove(&stream).is_some())
                    .then_some(Input::StreamClosed(stream))
            }
            Output::CloseStream(stream) => {
                self.streams.remove(&stream);
                None
            }
            Output::Spawn(spawn) if spawn.networks.is_empty() => Some(self.spawn(*spawn)),
            Output::Spawn(spawn) => {
                self.spawn_in_networks(*spawn);
                None
            }
            Output::LeaveNetworks { container } => {
                let cni = self.settings.cni.clone();
                tokio::spawn(async move {
                    // A plugin may fail for a moment (a lock another holds):
                    // tried again, up to a minute; what is left is retried
                    // at the agent's next start.
                    let mut wait = Duration::from_millis(500);
                    for attempt in 1..=7 {
                        match cni.detach(&container).await {
                            Ok(()) => return,
                            Err(e) => {
                                warn!(container, attempt, error = %e, "cannot take a container out of its networks")
                            }
                        }
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                });
                None
            }
            Output::Checkpoint(c) => {
                self.write_checkpoint(*c);
                None
            }
            Output::LinkVolumes { dir, volumes } => {
                if let Err(e) = crate::volumes::link(&dir, &volumes) {
                    warn!(error = %e, dir = %dir.display(), "cannot link persistent volumes into a sandbox");
                }
                None
            }
            Output::CheckpointResources(total) => {
                let work_dir = &self.settings.core.work_dir;
                let saved = crate::volumes::load(work_dir)
                    .and_then(|previous| crate::volumes::save(work_dir, &total, &previous));
                if let Err(e) = saved {
                    warn!(error = %e, "cannot checkpoint the agent's resources");
                }
                None
            }
            Output::PersistId(id) => {
                if let Err(e) = persist_id(&self.settings.core.work_dir, &id) {
                    warn!(error = %e, "cannot record the agent id in the work dir");
                }
                None
            }
            Output::Destroy { pid, dir } => {
                sandbox::destroy(pid, &dir);
                None
            }
            Output::KillLeftovers { dir } => {
                for pgid in sandbox::recorded_groups(&dir) {
                    sandbox::signal_group(pgid, Signal::SIGKILL);
                }
                None
            }
            Output::Watch {
                key,
                container,
                pid,
                start,
            } => {
                self.watched.push(Watched {
                    key,
                    container,
                    pid,
                    start,
                });
                None
            }
            Output::ListContainers { of } => {
                self.list_containers(of);
                None
            }
            Output::RemoveContainers(list) => {
                remove_containers(list);
                None
            }
            Output::Overlay(o) => {
                self.overlay.send_replace(crate::overlay::Want::Overlay(o));
                None
            }
            Output::RemoveOverlay => {
                self.overlay.send_replace(crate::overlay::Want::Removed);
                None
            }
            Output::Stopped => {
                self.stopped = true;
                self.streams.clear();
                if let Some(reply) = self.stop_reply.take() {
                    let _ = reply.send(());
                }
                None
            }
        }
    }

    /// Creates the sandbox and starts the executor, with a waiter that
    /// reports its exit.
    fn spawn(&self, mut s: Spawn) -> Input {
        if let Err(e) = self.hand_cni_configs(&mut s) {
            return Input::SpawnFailed {
                key: s.key,
                container: s.container,
                error: e.to_string(),
            };
        }
        spawned(start_process(&self.tx, &s, None), s, Vec::new())
    }

    /// Gives an executor whose Docker containers join CNI networks what it
    /// needs to join them: the networks' configurations, the plugins, and
    /// where to record what it did (for the agent to undo).
    fn hand_cni_configs(&self, s: &mut Spawn) -> Result<(), crate::cni::CniError> {
        if s.docker_networks.is_empty() {
            return Ok(());
        }
        let cni = &self.settings.cni;
        let mut configs = serde_json::Map::new();
        for name in &s.docker_networks {
            configs.insert(name.clone(), cni.config(name, self.core.overlay())?);
        }
        s.env.extend([
            (
                "AGORA_CNI_NETWORKS".to_string(),
                serde_json::Value::Object(configs).to_string(),
            ),
            ("AGORA_CNI_PATH".to_string(), cni.plugins().to_string()),
            (
                "AGORA_CNI_ROOT".to_string(),
                cni.root().display().to_string(),
            ),
        ]);
        Ok(())
    }

    /// Puts the executor's container in its networks, then starts it inside
    /// them; reports back when done.
    fn spawn_in_networks(&self, s: Spawn) {
        let (tx, cni) = (self.tx.clone(), self.settings.cni.clone());
        let overlay = self.core.overlay().cloned();
        tokio::spawn(async move {
            let input = match cni
                .attach(&s.container, &s.networks, overlay.as_ref())
                .await
            {
                Ok((netns, networks)) => {
                    let started = start_process(&tx, &s, Some(netns));
                    if started.is_err()
                        && let Err(e) = cni.detach(&s.container).await
                    {
                        warn!(container = %s.container, error = %e, "cannot undo a network attachment");
                    }
                    spawned(started, s, networks)
                }
                Err(e) => Input::SpawnFailed {
                    key: s.key,
                    container: s.container,
                    error: e.to_string(),
                },
            };
            let _ = tx.send(Command::Report(Box::new(input)));
        });
    }
}

/// What a spawn reports: started (with its networks) or failed.
fn spawned(
    started: std::io::Result<Option<u32>>,
    s: Spawn,
    networks: Vec<agora_proto::v1::NetworkInfo>,
) -> Input {
    match started {
        Ok(pid) => Input::Spawned {
            key: s.key,
            container: s.container,
            pid,
            start: pid.and_then(checkpoint::process_start),
            networks,
        },
        Err(e) => Input::SpawnFailed {
            key: s.key,
            container: s.container,
            error: e.to_string(),
        },
    }
}

/// Creates the sandbox and starts the executor (in network namespace
/// `netns`, when given), with a waiter that reports its exit.
fn start_process(
    tx: &mpsc::UnboundedSender<Command>,
    s: &Spawn,
    netns: Option<std::fs::File>,
) -> std::io::Result<Option<u32>> {
    {
        let (stdout, stderr) = sandbox::create(&s.dir)?;
        crate::volumes::link(&s.dir, &s.volumes)?;
        let user = match &s.user {
            Some(name) => {
                let u = crate::users::lookup(name).map_err(std::io::Error::other)?;
                (u.uid != nix::unistd::Uid::effective()).then_some(u)
            }
            None => None,
        };
        if let Some(u) = &user {
            u.own(&s.dir)?;
        }
        let mut process = sandbox::command(&sandbox::Spec {
            command: &s.command,
            env: &s.env,
            dir: &s.dir,
        })?;
        process.stdout(stdout).stderr(stderr);
        if let Some(netns) = netns {
            crate::users::enter_netns_on_spawn(&mut process, netns);
        }
        if let Some(u) = &user {
            u.switch_on_spawn(&mut process);
        }
        let mut child = process.spawn()?;
        let pid = child.id();
        let tx = tx.clone();
        let (key, container) = (s.key.clone(), s.container.clone());
        tokio::spawn(async move {
            let status = child.wait().await.ok().map(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.into_raw()
            });
            let _ = tx.send(Command::ExecutorExited {
                key,
                container,
                status,
            });
        });
        Ok(pid)
    }
}

impl Actor {
    /// Adopted executors whose process is gone have exited.
    fn poll_watched(&mut self) {
        let (gone, kept) = std::mem::take(&mut self.watched)
            .into_iter()
            .partition::<Vec<_>, _>(|w| checkpoint::process_start(w.pid) != Some(w.start));
        self.watched = kept;
        for w in gone {
            self.feed(Input::Exited {
                key: w.key,
                container: w.container,
                status: None,
            });
        }
    }

    fn checkpoints(&self) -> Option<Checkpoints> {
        self.core
            .id()
            .map(|id| Checkpoints::new(&self.settings.core.work_dir, id))
    }

    /// What a previous run checkpointed, with the networks its containers
    /// joined.
    fn read_checkpoints(&self) -> Vec<agora_agent_core::RecoveredFramework> {
        let mut recovered = self
            .checkpoints()
            .map(|cp| cp.recover())
            .unwrap_or_default();
        for e in recovered.iter_mut().flat_map(|f| f.executors.iter_mut()) {
            e.run.networks = self.settings.cni.networks(&e.run.container);
        }
        recovered
    }

    fn write_checkpoint(&self, c: Checkpoint) {
        let Some(cp) = self.checkpoints() else { return };
        let result = match &c {
            Checkpoint::Framework(info) => cp.framework(info),
            Checkpoint::Executor {
                framework,
                info,
                run,
            } => cp.executor(framework, info, run),
            Checkpoint::Task { key, task } => cp.task(&key.0, &key.1, task),
            Checkpoint::TaskState { key, task, state } => {
                cp.task_state(&key.0, &key.1, task, *state)
            }
            Checkpoint::RemoveTask { key, task } => {
                cp.remove_task(&key.0, &key.1, task);
                Ok(())
            }
            Checkpoint::RemoveExecutor(key) => {
                cp.remove_executor(&key.0, &key.1);
                Ok(())
            }
            Checkpoint::RemoveFramework(framework) => {
                cp.remove_framework(framework);
                Ok(())
            }
        };
        if let Err(e) = result {
            warn!(error = %e, checkpoint = ?c, "cannot write a checkpoint");
        }
    }

    /// Lists this agent's containers (one executor's, when `of` says) and
    /// hands them to the core.
    fn list_containers(&self, of: Option<ExecutorKey>) {
        let (tx, agent) = (
            self.tx.clone(),
            self.core.id().unwrap_or_default().to_string(),
        );
        tokio::spawn(async move {
            let Ok(d) = docker::connect().await else {
                return;
            };
            match docker::list_labelled(&d, &agent).await {
                Ok(list) => {
                    let list: Vec<Container> = list
                        .into_iter()
                        .filter(|c| {
                            of.as_ref()
                                .is_none_or(|(f, e)| c.framework == *f && c.executor == *e)
                        })
                        .collect();
                    if !list.is_empty() {
                        let _ = tx.send(Command::Containers(list));
                    }
                }
                Err(e) => warn!(error = %e, "cannot list this agent's containers"),
            }
        });
    }
}

/// Stops and removes containers, in the background.
fn remove_containers(list: Vec<Container>) {
    tokio::spawn(async move {
        let Ok(d) = docker::connect().await else {
            return;
        };
        for c in list {
            warn!(container = %c.id, framework.id = %c.framework, task.id = %c.task, "removing an orphaned container");
            if let Err(e) = docker::remove(&d, &c.id).await {
                warn!(container = %c.id, error = %e, "cannot remove an orphaned container");
            }
        }
    });
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The core's answer as the HTTP API's.
fn http_result(result: Option<Result<(), CallError>>) -> Result<(), HttpError> {
    match result {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(HttpError::new(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        )),
        None => Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Agent is shutting down",
        )),
    }
}

/// Records the agent id so a restarted agent re-registers as itself.
fn persist_id(work_dir: &Path, id: &str) -> std::io::Result<()> {
    let meta = work_dir.join("meta");
    std::fs::create_dir_all(&meta)?;
    let tmp = meta.join("agent_id.tmp");
    std::fs::write(&tmp, id)?;
    std::fs::rename(tmp, meta.join("agent_id"))
}

/// The id a previous run of this agent registered with, if any.
pub fn recorded_id(work_dir: &Path) -> Option<String> {
    let id = std::fs::read_to_string(work_dir.join("meta").join("agent_id")).ok()?;
    let id = id.trim().to_string();
    (agora_proto::ids::validate(&id).is_ok()).then_some(id)
}
