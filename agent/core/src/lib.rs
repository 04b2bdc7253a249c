//! The Agora agent as a deterministic state machine: what an agent decides,
//! with no I/O.
//!
//! [`Agent::handle`] takes one [`Input`] at a time — a message from the
//! master, an executor's call or stream, a process that started or exited,
//! what the checkpoints held at start, a tick — and returns the [`Output`]s
//! the shell must carry out, in order: spawn an executor, write a
//! checkpoint, send to the master, send on an executor's stream, destroy a
//! container. The shell (`agora-agent`) owns the sockets, files and
//! processes; it feeds back what came of them (a spawn's pid, an exit) as
//! inputs. [`Agent::next_deadline`] says when to tick. Time comes from the
//! shell ([`Time`]), so tests run the agent on a virtual clock.
//!
//! The agent's tasks live with their executors: an executor is spawned for
//! a task (the command executor), a task group (the default executor) or a
//! framework's own executor, gets its launches once it subscribes, and
//! reports status updates that the status update manager forwards to the
//! master one at a time per task until acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::executor;
use agora_proto::internal::{AgentMessage, MasterMessage, agent_message};
use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use serde::{Deserialize, Serialize};
use tracing::info;

pub use agora_proto::time::Time;

mod executors;
mod launch;
mod lifecycle;
mod master;
pub mod updates;

pub use launch::{sandbox_path, volume_path};

use updates::StatusUpdateManager;

/// The agent's settings that shape its decisions.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where sandboxes and the agent's own metadata live.
    pub work_dir: PathBuf,
    /// The hostname in AgentInfo.
    pub hostname: String,
    /// `ip:port` executors and the master use to reach this agent.
    pub advertise: String,
    /// What the agent offers.
    pub resources: Resources,
    /// Its attributes.
    pub attributes: Vec<v1::Attribute>,
    /// The `agora` binary, whose `executor` subcommand is the command executor.
    pub executor_path: PathBuf,
    /// How long an executor may take to subscribe.
    pub executor_registration_timeout: Duration,
    /// How long an executor has to exit after SHUTDOWN.
    pub executor_shutdown_grace_period: Duration,
    /// Enabled containerizers (`docker`, `process`).
    pub containerizers: Vec<String>,
    /// Docker tasks may be privileged and mount the Docker socket.
    pub docker_allow_privileged: bool,
    /// How long executors of checkpointing frameworks wait for a restarted
    /// agent (`MESOS_RECOVERY_TIMEOUT`).
    pub recovery_timeout: Duration,
    /// How process tasks are limited (`cgroups v1 …`), `None` when they are not.
    pub isolation: Option<String>,
    /// Hard cpu limits (CFS quota) for process and Docker tasks.
    pub cgroups_enable_cfs: bool,
    /// The Docker API version negotiated at start (executors use it as is).
    pub docker_api_version: Option<String>,
    /// The key executors' tokens are signed with.
    pub jwt_key: JwtKey,
    /// The cluster name in certificate names.
    pub cluster: String,
    /// With TLS: the cluster CA's file, which executors trust.
    pub tls_ca: Option<PathBuf>,
    /// Tasks run as their users (the agent is root and `--switch-user`).
    pub switch_user: bool,
}

impl Default for Config {
    /// Mesos' defaults, on `127.0.0.1:5051`, process tasks only.
    fn default() -> Self {
        Config {
            work_dir: PathBuf::from("/var/lib/agora"),
            hostname: "127.0.0.1".into(),
            advertise: "127.0.0.1:5051".into(),
            resources: Resources::default(),
            attributes: Vec::new(),
            executor_path: PathBuf::from("agora"),
            executor_registration_timeout: Duration::from_secs(60),
            executor_shutdown_grace_period: Duration::from_secs(5),
            containerizers: vec!["process".into()],
            docker_allow_privileged: false,
            recovery_timeout: Duration::from_secs(15 * 60),
            isolation: None,
            cgroups_enable_cfs: false,
            docker_api_version: None,
            jwt_key: JwtKey(Vec::new()),
            cluster: "agora".into(),
            tls_ca: None,
            switch_user: false,
        }
    }
}

impl Config {
    /// Whether Docker tasks can run here.
    pub fn docker(&self) -> bool {
        self.containerizers.iter().any(|c| c == "docker")
    }
}

/// The raw bytes executors' tokens are signed with (never printed).
#[derive(Clone)]
pub struct JwtKey(pub Vec<u8>);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(…)")
    }
}

/// An executor subscription stream, named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// (framework id, executor id).
pub type ExecutorKey = (String, String);

/// Something that happened, for the agent to act on.
#[derive(Debug)]
pub enum Input {
    /// At start: what the checkpoints of a previous run hold, each executor
    /// with whether its process still runs.
    Recovered(Vec<RecoveredFramework>),
    /// A connection to the leading master is open: register on it.
    MasterConnected,
    /// A message from the master.
    Master(Box<MasterMessage>),
    /// The master connection ended.
    MasterDisconnected,
    /// An executor's SUBSCRIBE; the shell opened `stream` for its events.
    /// Answered by an [`Output::Reply`].
    ExecutorSubscribe {
        /// The stream the shell opened.
        stream: StreamId,
        /// The call.
        call: executor::Call,
    },
    /// Any other executor call. Answered by an [`Output::Reply`].
    ExecutorCall(executor::Call),
    /// An executor's stream was closed (by the executor or the network).
    StreamClosed(StreamId),
    /// An [`Output::Spawn`] started its process.
    Spawned {
        /// The executor.
        key: ExecutorKey,
        /// Its container id.
        container: String,
        /// Its process.
        pid: Option<u32>,
        /// The process's start time (`/proc/<pid>/stat`), for checkpoints.
        start: Option<u64>,
        /// The networks it joined, with the addresses they gave it.
        networks: Vec<v1::NetworkInfo>,
    },
    /// An [`Output::Spawn`] failed.
    SpawnFailed {
        /// The executor.
        key: ExecutorKey,
        /// Its container id.
        container: String,
        /// Why.
        error: String,
    },
    /// An executor's process exited (its wait status, when known).
    Exited {
        /// The executor.
        key: ExecutorKey,
        /// Its container id.
        container: String,
        /// The wait status.
        status: Option<i32>,
    },
    /// Docker containers labelled with this agent's id (after recovery, or
    /// those of one executor that ended).
    Containers(Vec<Container>),
    /// Stop every executor, then stop ([`Output::Stopped`]).
    Shutdown,
    /// Stop without stopping checkpointed executors (they wait for the next
    /// run of the agent); the others are killed.
    Detach,
    /// Time passed: retry status updates, enforce timeouts.
    Tick,
}

/// Why an executor call was refused; the shell turns it into an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 501.
    #[error("{0}")]
    NotImplemented(String),
}

impl CallError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            CallError::BadRequest(_) => 400,
            CallError::Forbidden(_) => 403,
            CallError::NotImplemented(_) => 501,
        }
    }
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Answer the executor call being handled.
    Reply(Result<(), CallError>),
    /// Send a message to the master (dropped by the shell when it has no
    /// connection; the agent re-sends what matters on registration).
    ToMaster(Box<AgentMessage>),
    /// Send an event on an executor's stream.
    ToExecutor {
        /// Which stream.
        stream: StreamId,
        /// The event.
        event: Box<executor::Event>,
    },
    /// End an executor's stream (it subscribed again, or it is gone).
    CloseStream(StreamId),
    /// Create the sandbox and start an executor in it; answer with
    /// [`Input::Spawned`] or [`Input::SpawnFailed`].
    Spawn(Box<Spawn>),
    /// Write (or remove) a checkpoint of this agent.
    Checkpoint(Box<Checkpoint>),
    /// Record the agent's id in its work dir.
    PersistId(String),
    /// Kill an executor's process group and everything its sandbox recorded.
    Destroy {
        /// The executor's process, if it started.
        pid: Option<u32>,
        /// Its sandbox.
        dir: PathBuf,
    },
    /// Kill what an executor that exited left running (its recorded
    /// process groups).
    KillLeftovers {
        /// Its sandbox.
        dir: PathBuf,
    },
    /// Watch an adopted executor (no waiter: a previous run started it) and
    /// answer with [`Input::Exited`] when its process is gone.
    Watch {
        /// The executor.
        key: ExecutorKey,
        /// Its container id.
        container: String,
        /// Its process.
        pid: u32,
        /// The process's start time, so a recycled pid is not it.
        start: u64,
    },
    /// List Docker containers labelled with this agent (those of `of`
    /// only, when given) and answer with [`Input::Containers`].
    ListContainers {
        /// One executor's, or all.
        of: Option<ExecutorKey>,
    },
    /// Stop and remove these containers.
    RemoveContainers(Vec<Container>),
    /// Make the host's overlay devices, routes and entries what this says
    /// (the whole picture each time; the shell applies the difference).
    Overlay(Box<Overlay>),
    /// Remove the overlay devices this agent made (it was removed).
    RemoveOverlay,
    /// Take a container that ended out of its networks (CNI DEL) and
    /// remove its network namespace.
    LeaveNetworks {
        /// The container.
        container: String,
    },
    /// Link persistent volumes into a running executor's sandbox (tasks
    /// that joined it).
    LinkVolumes {
        /// The sandbox.
        dir: PathBuf,
        /// The volumes.
        volumes: Vec<SandboxVolume>,
    },
    /// Checkpoint the agent's total resources after an operation (their
    /// dynamic reservations and persistent volumes), create the directories
    /// of new volumes and delete those of destroyed ones.
    CheckpointResources(Resources),
    /// The agent stopped (after [`Input::Shutdown`] or [`Input::Detach`]).
    Stopped,
}

/// The overlay network as the master described it to this agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    /// The network, this agent's subnet and underlay address.
    pub network: agora_proto::internal::OverlayNetwork,
    /// The other agents' underlay addresses and subnets, by agent id.
    pub peers: BTreeMap<String, agora_proto::internal::OverlayPeer>,
    /// On an encrypted overlay: the keys (id, AES-128 key and salt) packets
    /// from peers may come under, and the one to send with.
    pub keys: Vec<(u32, Vec<u8>)>,
    /// The key to send with.
    pub primary_key: Option<u32>,
}

/// An executor to start.
#[derive(Clone, Debug, PartialEq)]
pub struct Spawn {
    /// The executor.
    pub key: ExecutorKey,
    /// Its container id.
    pub container: String,
    /// Its sandbox (to create, with `stdout` and `stderr`).
    pub dir: PathBuf,
    /// What to run.
    pub command: v1::CommandInfo,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Run it as this user (and give them the sandbox), when the agent
    /// switches users and it is not the agent's own.
    pub user: Option<String>,
    /// The named networks its container joins (CNI, `eth0`, `eth1`… in
    /// this order) before it starts; none: the host's network.
    pub networks: Vec<v1::NetworkInfo>,
    /// CNI networks the Docker containers it starts join (the executor
    /// joins them, with the configurations the shell hands it).
    pub docker_networks: Vec<String>,
    /// Persistent volumes its tasks use, linked into the sandbox.
    pub volumes: Vec<SandboxVolume>,
}

/// A persistent volume in a sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxVolume {
    /// The volume's directory on the agent ([`volume_path`]).
    pub host: PathBuf,
    /// Where it appears, relative to the sandbox.
    pub container_path: String,
    /// Mounted read-only (Docker tasks).
    pub read_only: bool,
    /// The user to give it to (tasks run as their users).
    pub owner: Option<String>,
}

/// A checkpoint write, under `<work-dir>/meta/slaves/<agent>/`. (Boxed
/// whole in [`Output::Checkpoint`], so its variants' sizes do not matter.)
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Checkpoint {
    /// Record a framework.
    Framework(v1::FrameworkInfo),
    /// Record an executor run.
    Executor {
        /// Its framework.
        framework: String,
        /// Its ExecutorInfo.
        info: v1::ExecutorInfo,
        /// How to find its process.
        run: Run,
    },
    /// Record a task given to an executor.
    Task {
        /// The executor.
        key: ExecutorKey,
        /// The task.
        task: v1::TaskInfo,
    },
    /// Record a task's latest state.
    TaskState {
        /// The executor.
        key: ExecutorKey,
        /// The task id.
        task: String,
        /// Its state.
        state: TaskState,
    },
    /// Forget a task.
    RemoveTask {
        /// The executor.
        key: ExecutorKey,
        /// The task id.
        task: String,
    },
    /// Forget an executor and its tasks.
    RemoveExecutor(ExecutorKey),
    /// Forget a framework and everything under it.
    RemoveFramework(String),
}

/// How an executor run is found again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// The ContainerID of the run.
    pub container: String,
    /// Its sandbox.
    pub dir: PathBuf,
    /// The executor's pid.
    pub pid: u32,
    /// The process's start time (`/proc/<pid>/stat`, clock ticks since boot),
    /// so a recycled pid is not mistaken for the executor.
    pub start: u64,
    /// `command`, `default` or `custom`.
    pub kind: String,
    /// The networks its container joined, with their addresses (not in the
    /// checkpoint: read back from the network state at recovery).
    #[serde(skip)]
    pub networks: Vec<v1::NetworkInfo>,
}

/// A checkpointed executor as found at start.
#[derive(Debug, Clone)]
pub struct RecoveredExecutor {
    /// Its ExecutorInfo.
    pub info: v1::ExecutorInfo,
    /// How to find its process.
    pub run: Run,
    /// Its tasks with their latest states.
    pub tasks: Vec<(v1::TaskInfo, TaskState)>,
    /// Its process still runs (same pid, same start time).
    pub alive: bool,
}

/// A checkpointed framework and its executors.
#[derive(Debug, Clone)]
pub struct RecoveredFramework {
    /// Its FrameworkInfo.
    pub info: v1::FrameworkInfo,
    /// Its executors.
    pub executors: Vec<RecoveredExecutor>,
}

/// A Docker container labelled with this agent's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The engine's id.
    pub id: String,
    /// Its framework.
    pub framework: String,
    /// Its executor.
    pub executor: String,
    /// Its task.
    pub task: String,
}

/// What runs an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `agora executor` running one command task.
    Command,
    /// `agora executor` running a task group (the default executor).
    Default,
    /// The framework's own executor.
    Custom,
}

impl Kind {
    /// As checkpointed.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Default => "default",
            Kind::Custom => "custom",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "command" => Some(Kind::Command),
            "default" => Some(Kind::Default),
            "custom" => Some(Kind::Custom),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Launch {
    Task(Box<v1::TaskInfo>),
    Group(v1::TaskGroupInfo),
}

/// A task the agent holds.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// What the framework launched.
    pub info: v1::TaskInfo,
    /// Its latest state from its executor (or the agent).
    pub state: TaskState,
    /// Its executor has it.
    pub delivered: bool,
    /// A kill was asked for.
    pub killing: bool,
}

/// An executor the agent runs.
#[derive(Debug)]
pub struct Executor {
    /// Its framework.
    pub framework: String,
    /// Its id.
    pub id: String,
    /// Its ExecutorInfo.
    pub info: v1::ExecutorInfo,
    /// What runs it.
    pub kind: Kind,
    /// Its container id.
    pub container: String,
    /// Its sandbox.
    pub dir: PathBuf,
    /// Its process, once started.
    pub pid: Option<u32>,
    /// Its subscription stream.
    pub stream: Option<StreamId>,
    pub(crate) queued: Vec<Launch>,
    /// Its tasks by id.
    pub tasks: BTreeMap<String, TaskRecord>,
    pub(crate) started: Time,
    pub(crate) subscribed_once: bool,
    pub(crate) kill_at: Option<Time>,
    /// Why the agent destroyed it, if it did.
    pub(crate) destroy_reason: Option<Reason>,
    /// Its framework checkpoints: it is written down and survives an agent
    /// restart.
    pub checkpoint: bool,
    /// The networks its container joined, with their addresses: reported in
    /// every status update of its tasks.
    pub networks: Vec<v1::NetworkInfo>,
    /// It (or its Docker containers) joined networks: they are left when it
    /// ends.
    pub(crate) joins_networks: bool,
}

/// Tasks kept after they ended, for `/state`.
const MAX_COMPLETED: usize = 1000;

/// The agent. See the module documentation.
#[derive(Debug)]
pub struct Agent {
    pub(crate) config: Config,
    pub(crate) id: Option<String>,
    pub(crate) epoch: u64,
    pub(crate) connected: bool,
    pub(crate) master_info: Option<v1::MasterInfo>,
    pub(crate) frameworks: BTreeMap<String, v1::FrameworkInfo>,
    pub(crate) executors: BTreeMap<ExecutorKey, Executor>,
    pub(crate) completed_tasks: VecDeque<(String, v1::TaskInfo, TaskState)>,
    /// Tasks that ended since this agent started, by their last state (for
    /// metrics: counts, unlike `completed_tasks`, never drop).
    pub(crate) terminated: BTreeMap<TaskState, u64>,
    /// Tasks of executors that are gone whose terminal update is not yet
    /// acknowledged: still reported to the master, until acknowledged.
    /// (framework, task) → (executor id, kind, record).
    pub(crate) ended: BTreeMap<(String, String), (String, Kind, TaskRecord)>,
    pub(crate) updates: StatusUpdateManager,
    /// Stopping: every executor was told to shut down; stop when none is
    /// left or at this time.
    pub(crate) stopping: Option<Time>,
    pub(crate) stopped: bool,
    /// Set when the master told this agent to shut down for good.
    pub(crate) refused: Option<String>,
    /// The overlay, once the master described it.
    pub(crate) overlay: Option<Overlay>,
    pub(crate) rng: fastrand::Rng,
    pub(crate) out: Vec<Output>,
}

impl Agent {
    /// An agent with nothing running. `id` is the id a previous run
    /// registered with (from its work dir); `seed` drives its container ids
    /// and status update uuids.
    pub fn new(config: Config, id: Option<String>, seed: u64) -> Self {
        Agent {
            config,
            id,
            epoch: 0,
            connected: false,
            master_info: None,
            frameworks: BTreeMap::new(),
            executors: BTreeMap::new(),
            completed_tasks: VecDeque::new(),
            terminated: BTreeMap::new(),
            ended: BTreeMap::new(),
            updates: StatusUpdateManager::default(),
            stopping: None,
            stopped: false,
            refused: None,
            overlay: None,
            rng: fastrand::Rng::with_seed(seed),
            out: Vec::new(),
        }
    }

    /// Applies one input at time `now`; returns what the shell must do, in order.
    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Output> {
        if self.stopped {
            return Vec::new();
        }
        match input {
            Input::Recovered(frameworks) => self.recover(now, frameworks),
            Input::MasterConnected => self.master_connected(),
            Input::Master(m) => self.master_message(now, *m),
            Input::MasterDisconnected => self.connected = false,
            Input::ExecutorSubscribe { stream, call } => {
                let result = self.executor_subscribe(stream, call);
                self.out.push(Output::Reply(result));
            }
            Input::ExecutorCall(call) => {
                let result = self.executor_call(now, call);
                self.out.push(Output::Reply(result));
            }
            Input::StreamClosed(stream) => {
                if let Some(e) = self
                    .executors
                    .values_mut()
                    .find(|e| e.stream == Some(stream))
                {
                    e.stream = None;
                }
            }
            Input::Spawned {
                key,
                container,
                pid,
                start,
                networks,
            } => self.spawned(key, &container, pid, start, networks),
            Input::SpawnFailed {
                key,
                container,
                error,
            } => self.spawn_failed(now, key, &container, &error),
            Input::Exited {
                key,
                container,
                status,
            } => self.executor_exited(now, key, &container, status),
            Input::Containers(list) => self.remove_orphans(list),
            Input::Shutdown => self.shutdown(now),
            Input::Detach => self.detach(),
            Input::Tick => self.tick(now),
        }
        self.maybe_stop(now);
        std::mem::take(&mut self.out)
    }

    /// When the shell must next call `handle(now, Input::Tick)`.
    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = self.stopping;
        let mut earliest = |t: Time| next = Some(next.map_or(t, |n| n.min(t)));
        if self.connected
            && self.id.is_some()
            && let Some(t) = self.updates.next_due()
        {
            earliest(t);
        }
        let timeout = self.config.executor_registration_timeout;
        for e in self.executors.values() {
            if let Some(k) = e.kill_at {
                earliest(k);
            } else if !e.subscribed_once {
                earliest(e.started + timeout);
            }
        }
        next
    }

    // ---------------------------------------------------------- reading

    /// The overlay network, once the master described it.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// The id the master gave this agent.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The agent's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The master it registered with last.
    pub fn master_info(&self) -> Option<&v1::MasterInfo> {
        self.master_info.as_ref()
    }

    /// Frameworks with executors here (or checkpointed).
    pub fn frameworks(&self) -> &BTreeMap<String, v1::FrameworkInfo> {
        &self.frameworks
    }

    /// Running executors.
    pub fn executors(&self) -> impl Iterator<Item = &Executor> {
        self.executors.values()
    }

    /// One executor.
    pub fn executor(&self, key: &ExecutorKey) -> Option<&Executor> {
        self.executors.get(key)
    }

    /// How many tasks ended in each state since this agent started.
    pub fn terminated(&self) -> &BTreeMap<TaskState, u64> {
        &self.terminated
    }

    /// Whether the agent is registered with a master now.
    pub fn registered(&self) -> bool {
        self.connected && self.id.is_some()
    }

    /// Tasks that ended (framework, task, state), oldest first.
    pub fn completed_tasks(&self) -> impl Iterator<Item = &(String, v1::TaskInfo, TaskState)> {
        self.completed_tasks.iter()
    }

    /// Why the master refused this agent, if it did.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Status updates not yet acknowledged.
    pub fn pending_updates(&self) -> usize {
        self.updates.len()
    }

    // ---------------------------------------------------------- helpers

    pub(crate) fn send_master(&mut self, message: agent_message::Message) {
        if self.connected {
            self.out.push(Output::ToMaster(Box::new(AgentMessage {
                message: Some(message),
            })));
        }
    }

    pub(crate) fn checkpoint(&mut self, c: Checkpoint) {
        if self.id.is_some() {
            self.out.push(Output::Checkpoint(Box::new(c)));
        }
    }

    pub(crate) fn uuid(&mut self) -> uuid::Uuid {
        uuid::Builder::from_random_bytes(self.rng.u128(..).to_le_bytes()).into_uuid()
    }

    /// Sends an event on an executor's stream; false when it has none.
    pub(crate) fn send_executor(&mut self, key: &ExecutorKey, event: executor::Event) -> bool {
        match self.executors.get(key).and_then(|e| e.stream) {
            Some(stream) => {
                self.out.push(Output::ToExecutor {
                    stream,
                    event: Box::new(event),
                });
                true
            }
            None => false,
        }
    }

    /// Removes the executor `key` if `container` is its current run (an
    /// older run's news is not about it).
    pub(crate) fn remove_run(&mut self, key: &ExecutorKey, container: &str) -> Option<Executor> {
        if self
            .executors
            .get(key)
            .is_none_or(|e| e.container != container)
        {
            return None;
        }
        self.executors.remove(key)
    }

    /// Ends a stop once nothing is left to wait for.
    fn maybe_stop(&mut self, now: Time) {
        let Some(deadline) = self.stopping else {
            return;
        };
        if self.executors.is_empty() || now >= deadline {
            let destroy: Vec<Output> = self
                .executors
                .values()
                .map(|e| Output::Destroy {
                    pid: e.pid,
                    dir: e.dir.clone(),
                })
                .collect();
            self.out.extend(destroy);
            self.stopping = None;
            self.stopped = true;
            info!("agent stopped");
            self.out.push(Output::Stopped);
        }
    }

    fn shutdown(&mut self, now: Time) {
        info!("agent shutting down: stopping every executor");
        let keys: Vec<ExecutorKey> = self.executors.keys().cloned().collect();
        for key in keys {
            self.shutdown_executor(now, &key);
        }
        let grace = self.config.executor_shutdown_grace_period + Duration::from_secs(1);
        self.stopping = Some(now + grace);
    }

    fn detach(&mut self) {
        let mut kept = 0;
        let mut destroy = Vec::new();
        for e in self.executors.values() {
            if e.checkpoint {
                kept += 1;
            } else {
                destroy.push(Output::Destroy {
                    pid: e.pid,
                    dir: e.dir.clone(),
                });
            }
        }
        info!(
            kept,
            killed = self.executors.len() - kept,
            "agent stopping; executors of checkpointing frameworks keep running"
        );
        self.out.extend(destroy);
        self.stopped = true;
        self.out.push(Output::Stopped);
    }
}
