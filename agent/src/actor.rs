//! The agent actor: the one task that owns the agent's state.
//!
//! It receives commands from the master link (tasks to run, kills,
//! acknowledgements), from the executor API (subscriptions, status
//! updates), from process waiters (executor exits) and from a timer, and
//! acts: starts executors in sandboxes, relays events to them, forwards their
//! status updates to the master through the status update manager.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::executor;
use agora_proto::internal::{
    AgentMessage, ExecutorExited, ExecutorToFramework, MasterMessage, Pong, Register,
    RunningExecutor, StatusUpdate, agent_message, master_message,
};
use agora_proto::resources::Resources;
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason, task_status::Source};
use agora_rpc::http::HttpError;
use http::StatusCode;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::checkpoint::{self, Checkpoints};
use crate::docker;
use crate::sandbox;
use crate::updates::{Acked, StatusUpdateManager};

/// The agent's settings, shared with its HTTP handlers.
#[derive(Debug, Clone)]
pub struct Settings {
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
    /// Executor calls must carry their token.
    pub authenticate_http_executors: bool,
    /// The cluster name in certificate names.
    pub cluster: String,
    /// With TLS: the cluster CA's file, which executors trust.
    pub tls_ca: Option<PathBuf>,
    /// Tasks run as their users (the agent is root and `--switch-user`).
    pub switch_user: bool,
    /// `--acls`: who may read which sandboxes (the default allows all).
    pub acls: agora_proto::acl::Acls,
}

/// The raw bytes executors' tokens are signed with (never printed).
#[derive(Clone)]
pub struct JwtKey(pub Vec<u8>);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(…)")
    }
}

/// What the actor is asked to do.
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
        framework: String,
        executor: String,
        generation: u64,
    },
    ExecutorExited {
        framework: String,
        executor: String,
        container: String,
        status: Option<i32>,
    },
    Tick,
    Query(Box<dyn FnOnce(&Actor) + Send>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Stop without stopping checkpointed executors (they wait for the next
    /// run of the agent); the others are killed.
    Detach {
        reply: oneshot::Sender<()>,
    },
    /// Containers labelled with this agent's id, listed at start.
    Containers(Vec<docker::Labelled>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `agora executor` running one command task.
    Command,
    /// `agora executor` running a task group (the default executor).
    Default,
    /// The framework's own executor.
    Custom,
}

impl Kind {
    fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub info: v1::TaskInfo,
    pub state: TaskState,
    pub delivered: bool,
    pub killing: bool,
}

#[derive(Debug)]
pub(crate) struct Executor {
    pub framework: String,
    pub id: String,
    pub info: v1::ExecutorInfo,
    kind: Kind,
    pub container: String,
    pub dir: PathBuf,
    pub pid: Option<u32>,
    stream: Option<(u64, mpsc::UnboundedSender<executor::Event>)>,
    queued: Vec<Launch>,
    pub tasks: BTreeMap<String, TaskRecord>,
    started: Instant,
    subscribed_once: bool,
    kill_at: Option<Instant>,
    /// Why the agent destroyed it, if it did.
    destroy_reason: Option<Reason>,
    /// Its framework checkpoints: it is written down and survives an agent
    /// restart.
    checkpoint: bool,
    /// The process's start time, when it was recovered from a checkpoint
    /// (no waiter: the agent polls `/proc` to learn that it exited).
    adopted: Option<u64>,
}

/// The actor's state. See the module documentation.
pub struct Actor {
    pub(crate) settings: Arc<Settings>,
    pub(crate) id: Option<String>,
    epoch: u64,
    master: Option<mpsc::UnboundedSender<AgentMessage>>,
    pub(crate) master_info: Option<v1::MasterInfo>,
    pub(crate) frameworks: BTreeMap<String, v1::FrameworkInfo>,
    pub(crate) executors: BTreeMap<(String, String), Executor>,
    pub(crate) completed_tasks: VecDeque<(String, v1::TaskInfo, TaskState)>,
    /// Tasks of executors that are gone whose terminal update is not yet
    /// acknowledged: still reported to the master, until acknowledged.
    /// (framework, task) → (executor id, kind, record).
    ended: BTreeMap<(String, String), (String, Kind, TaskRecord)>,
    updates: StatusUpdateManager,
    tx: mpsc::UnboundedSender<Command>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
    /// Set when the master told this agent to shut down for good.
    pub(crate) refused: Option<String>,
    /// Set by a detach: the actor stops after this command.
    detached: bool,
}

const MAX_COMPLETED: usize = 1000;

impl Actor {
    pub(crate) fn new(
        settings: Arc<Settings>,
        tx: mpsc::UnboundedSender<Command>,
        id: Option<String>,
    ) -> Self {
        Actor {
            settings,
            id,
            epoch: 0,
            master: None,
            master_info: None,
            frameworks: BTreeMap::new(),
            executors: BTreeMap::new(),
            completed_tasks: VecDeque::new(),
            ended: BTreeMap::new(),
            updates: StatusUpdateManager::default(),
            tx,
            shutdown: None,
            refused: None,
            detached: false,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        self.recover();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => self.apply(c),
                    None => break,
                },
                _ = tick.tick() => self.apply(Command::Tick),
            }
            if self.detached {
                break;
            }
            if let Some((_, deadline)) = &self.shutdown
                && (self.executors.is_empty() || Instant::now() >= *deadline)
            {
                for e in self.executors.values() {
                    sandbox::destroy(e.pid, &e.dir);
                }
                if let Some((reply, _)) = self.shutdown.take() {
                    let _ = reply.send(());
                }
                break;
            }
        }
        debug!("agent actor stopped");
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::MasterConnected { tx } => self.master_connected(tx),
            Command::MasterMessage(m) => self.master_message(*m),
            Command::MasterDisconnected => {
                self.master = None;
            }
            Command::ExecutorSubscribe {
                call,
                events,
                generation,
                reply,
            } => {
                let _ = reply.send(self.executor_subscribe(call, events, generation));
            }
            Command::ExecutorCall { call, reply } => {
                let _ = reply.send(self.executor_call(call));
            }
            Command::ExecutorStreamClosed {
                framework,
                executor,
                generation,
            } => {
                if let Some(e) = self.executors.get_mut(&(framework, executor))
                    && e.stream.as_ref().is_some_and(|(g, _)| *g == generation)
                {
                    e.stream = None;
                }
            }
            Command::ExecutorExited {
                framework,
                executor,
                container,
                status,
            } => {
                self.executor_exited(framework, executor, container, status);
            }
            Command::Tick => self.tick(),
            Command::Query(f) => f(self),
            Command::Shutdown { reply } => {
                info!("agent shutting down: stopping every executor");
                let keys: Vec<(String, String)> = self.executors.keys().cloned().collect();
                for key in keys {
                    self.shutdown_executor(&key);
                }
                let grace = self.settings.executor_shutdown_grace_period + Duration::from_secs(1);
                self.shutdown = Some((reply, Instant::now() + grace));
            }
            Command::Detach { reply } => {
                let mut kept = 0;
                for e in self.executors.values() {
                    if e.checkpoint {
                        kept += 1;
                    } else {
                        sandbox::destroy(e.pid, &e.dir);
                    }
                }
                info!(
                    kept,
                    killed = self.executors.len() - kept,
                    "agent stopping; executors of checkpointing frameworks keep running"
                );
                self.detached = true;
                let _ = reply.send(());
            }
            Command::Containers(list) => self.remove_orphans(list),
        }
    }

    // ----------------------------------------------------------- recovery

    fn checkpoints(&self) -> Option<Checkpoints> {
        self.id
            .as_ref()
            .map(|id| Checkpoints::new(&self.settings.work_dir, id))
    }

    /// Finds the executors a previous run of this agent left running (for
    /// checkpointing frameworks): live ones wait for their executor to
    /// subscribe again; dead ones end their tasks. Docker containers of
    /// executors that are gone are removed.
    fn recover(&mut self) {
        let Some(cp) = self.checkpoints() else { return };
        let mut adopted = 0;
        let mut gone = Vec::new();
        for f in cp.recover() {
            let fid = f.info.id.clone().map(|i| i.value).unwrap_or_default();
            self.frameworks.insert(fid.clone(), f.info.clone());
            for r in f.executors {
                let eid = r.info.executor_id.value.clone();
                let kind = Kind::parse(&r.run.kind).unwrap_or(Kind::Custom);
                let alive = checkpoint::alive(&r.run);
                let tasks = r
                    .tasks
                    .into_iter()
                    .map(|(info, state)| {
                        (
                            info.task_id.value.clone(),
                            TaskRecord {
                                info,
                                state,
                                delivered: true,
                                killing: false,
                            },
                        )
                    })
                    .collect();
                self.executors.insert(
                    (fid.clone(), eid.clone()),
                    Executor {
                        framework: fid.clone(),
                        id: eid.clone(),
                        info: r.info,
                        kind,
                        container: r.run.container.clone(),
                        dir: r.run.dir.clone(),
                        pid: Some(r.run.pid),
                        stream: None,
                        queued: Vec::new(),
                        tasks,
                        started: Instant::now(),
                        subscribed_once: false,
                        kill_at: None,
                        destroy_reason: None,
                        checkpoint: true,
                        adopted: Some(r.run.start),
                    },
                );
                if alive {
                    adopted += 1;
                    info!(framework.id = %fid, executor.id = %eid, pid = r.run.pid, "recovered a running executor; waiting for it to subscribe again");
                } else {
                    gone.push((fid.clone(), eid, r.run.container));
                }
            }
        }
        for (framework, executor, container) in gone {
            warn!(framework.id = %framework, executor.id = %executor, "an executor exited while the agent was down");
            self.executor_exited(framework, executor, container, None);
        }
        if adopted > 0 || !self.executors.is_empty() {
            info!(adopted, "agent recovery done");
        }
        if self.settings.containerizers.iter().any(|c| c == "docker") {
            let (tx, agent) = (self.tx.clone(), self.id.clone().unwrap_or_default());
            tokio::spawn(async move {
                let Ok(d) = docker::connect().await else {
                    return;
                };
                match docker::list_labelled(&d, &agent).await {
                    Ok(list) => {
                        let _ = tx.send(Command::Containers(list));
                    }
                    Err(e) => warn!(error = %e, "cannot list this agent's containers"),
                }
            });
        }
    }

    /// Containers whose executor this agent no longer runs are orphans:
    /// removed (stopped first).
    fn remove_orphans(&mut self, list: Vec<docker::Labelled>) {
        let orphans: Vec<docker::Labelled> = list
            .into_iter()
            .filter(|c| {
                !self
                    .executors
                    .contains_key(&(c.framework.clone(), c.executor.clone()))
            })
            .collect();
        if orphans.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let Ok(d) = docker::connect().await else {
                return;
            };
            for c in orphans {
                warn!(container = %c.id, framework.id = %c.framework, task.id = %c.task, "removing an orphaned container");
                if let Err(e) = docker::remove(&d, &c.id).await {
                    warn!(container = %c.id, error = %e, "cannot remove an orphaned container");
                }
            }
        });
    }

    /// Containers of an executor that ended without removing them.
    fn remove_containers_of(&self, framework: &str, executor: &str) {
        if !self.settings.containerizers.iter().any(|c| c == "docker") {
            return;
        }
        let (tx, agent) = (self.tx.clone(), self.id.clone().unwrap_or_default());
        let (framework, executor) = (framework.to_string(), executor.to_string());
        tokio::spawn(async move {
            let Ok(d) = docker::connect().await else {
                return;
            };
            if let Ok(list) = docker::list_labelled(&d, &agent).await {
                let mine: Vec<docker::Labelled> = list
                    .into_iter()
                    .filter(|c| c.framework == framework && c.executor == executor)
                    .collect();
                if !mine.is_empty() {
                    let _ = tx.send(Command::Containers(mine));
                }
            }
        });
    }

    // ------------------------------------------------------------- master

    fn send_master(&self, message: agent_message::Message) {
        if let Some(tx) = &self.master {
            let _ = tx.send(AgentMessage {
                message: Some(message),
            });
        }
    }

    fn master_connected(&mut self, tx: mpsc::UnboundedSender<AgentMessage>) {
        let mut info = v1::AgentInfo {
            hostname: self.settings.hostname.clone(),
            port: self
                .settings
                .advertise
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok()),
            resources: self.settings.resources.to_protos(),
            attributes: self.settings.attributes.clone(),
            id: self.id.as_ref().map(|id| v1::AgentId { value: id.clone() }),
            domain: None,
        };
        info.port = info.port.or(Some(5051));
        let mut tasks = Vec::new();
        let mut executors = Vec::new();
        for ((framework, _), (executor, kind, t)) in &self.ended {
            tasks.push(self.task_proto(framework, executor, *kind, t));
        }
        for e in self.executors.values() {
            for t in e.tasks.values() {
                tasks.push(self.task_proto(&e.framework, &e.id, e.kind, t));
            }
            if e.kind == Kind::Custom {
                executors.push(RunningExecutor {
                    framework_id: v1::FrameworkId {
                        value: e.framework.clone(),
                    },
                    executor_info: e.info.clone(),
                });
            }
        }
        let register = Register {
            agent_info: info,
            address: self.settings.advertise.clone(),
            version: Some(agora_proto::MESOS_VERSION.to_string()),
            tasks,
            executors,
            frameworks: self.frameworks.values().cloned().collect(),
            epoch: (self.epoch > 0).then_some(self.epoch),
        };
        let _ = tx.send(AgentMessage {
            message: Some(agent_message::Message::Register(register)),
        });
        self.master = Some(tx);
    }

    fn task_proto(&self, framework: &str, executor: &str, kind: Kind, t: &TaskRecord) -> v1::Task {
        let key = (framework.to_string(), t.info.task_id.value.clone());
        v1::Task {
            name: t.info.name.clone(),
            task_id: t.info.task_id.clone(),
            framework_id: v1::FrameworkId {
                value: framework.to_string(),
            },
            executor_id: (kind != Kind::Command).then(|| v1::ExecutorId {
                value: executor.to_string(),
            }),
            agent_id: v1::AgentId {
                value: self.id.clone().unwrap_or_default(),
            },
            state: self.updates.latest_state(&key).unwrap_or(t.state) as i32,
            resources: t.info.resources.clone(),
            labels: t.info.labels.clone(),
            discovery: t.info.discovery.clone(),
            container: t.info.container.clone(),
            health_check: t.info.health_check.clone(),
            kill_policy: t.info.kill_policy,
            ..Default::default()
        }
    }

    fn master_message(&mut self, m: MasterMessage) {
        if m.epoch < self.epoch {
            warn!(
                epoch = m.epoch,
                newest = self.epoch,
                "ignoring a message from a deposed master"
            );
            return;
        }
        self.epoch = m.epoch;
        let Some(message) = m.message else { return };
        use master_message::Message as M;
        match message {
            M::Registered(r) => {
                let first = self.id.is_none();
                self.id = Some(r.agent_id.value.clone());
                self.master_info = Some(r.master_info);
                if let Err(e) = persist_id(&self.settings.work_dir, &r.agent_id.value) {
                    warn!(error = %e, "cannot record the agent id in the work dir");
                }
                info!(agent.id = %r.agent_id.value, first, "registered with the master");
                self.updates.resend_all();
                self.flush_updates();
            }
            M::RunTask(run) => {
                debug!(task.id = %run.task.task_id.value, "run task");
                let fid = run
                    .framework_info
                    .id
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default();
                self.frameworks
                    .insert(fid.clone(), run.framework_info.clone());
                self.run_task(fid, run.task);
            }
            M::RunTaskGroup(run) => {
                let fid = run
                    .framework_info
                    .id
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default();
                self.frameworks
                    .insert(fid.clone(), run.framework_info.clone());
                self.run_group(fid, run.executor, run.task_group);
            }
            M::KillTask(k) => {
                self.kill_task(&k.framework_id.value, &k.task_id.value, k.kill_policy)
            }
            M::Acknowledge(a) => {
                let key = (a.framework_id.value.clone(), a.task_id.value.clone());
                if let Acked::Head {
                    terminal: true,
                    drained,
                } = self.updates.acknowledge(&key, &a.uuid)
                    && drained
                {
                    self.retire_task(&key.0, &key.1);
                }
                self.flush_updates();
            }
            M::ShutdownExecutor(s) => {
                let key = (s.framework_id.value.clone(), s.executor_id.value.clone());
                self.shutdown_executor(&key);
            }
            M::ShutdownFramework(s) => {
                let fid = s.framework_id.value.clone();
                info!(framework.id = %fid, "shutting down framework");
                let keys: Vec<(String, String)> = self
                    .executors
                    .keys()
                    .filter(|(f, _)| *f == fid)
                    .cloned()
                    .collect();
                for key in keys {
                    self.shutdown_executor(&key);
                }
                self.updates.remove_framework(&fid);
                self.ended.retain(|(f, _), _| *f != fid);
                self.frameworks.remove(&fid);
                if let Some(cp) = self.checkpoints() {
                    cp.remove_framework(&fid);
                }
            }
            M::FrameworkMessage(m) => {
                let key = (m.framework_id.value.clone(), m.executor_id.value.clone());
                self.to_executor(
                    &key,
                    executor::Event {
                        r#type: Some(executor::event::Type::Message as i32),
                        message: Some(executor::event::Message { data: m.data }),
                        ..Default::default()
                    },
                );
            }
            M::Ping(p) => self.send_master(agent_message::Message::Pong(Pong {
                sequence: p.sequence,
            })),
            M::ShutdownAgent(s) => {
                let why = s.message.unwrap_or_default();
                error!(reason = %why, "the master refused this agent");
                self.refused = Some(why);
                let keys: Vec<(String, String)> = self.executors.keys().cloned().collect();
                for key in keys {
                    self.shutdown_executor(&key);
                }
            }
        }
    }

    // ---------------------------------------------------------- launching

    fn run_task(&mut self, framework: String, task: v1::TaskInfo) {
        let task_id = task.task_id.value.clone();
        let (eid, kind, info) = match &task.executor {
            Some(e) => (e.executor_id.value.clone(), Kind::Custom, e.clone()),
            None => (
                task_id.clone(),
                Kind::Command,
                self.command_executor_info(&framework, &task),
            ),
        };
        let key = (framework.clone(), eid.clone());
        if let Some(e) = self.executors.get(&key)
            && (e.kill_at.is_some() || e.kind == Kind::Command)
        {
            let reason = if e.kind == Kind::Command {
                Reason::TaskInvalid
            } else {
                Reason::ExecutorTerminated
            };
            self.agent_update(
                &framework,
                &task,
                TaskState::TaskDropped,
                reason,
                "Executor is terminating or the task id is in use",
            );
            return;
        }
        if !self.executors.contains_key(&key)
            && let Err(e) = self.launch_executor(&framework, &eid, kind, info)
        {
            self.agent_update(
                &framework,
                &task,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                &format!("Failed to launch the executor: {e}"),
            );
            return;
        }
        let cp = self.checkpoints();
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        if e.checkpoint
            && let Some(cp) = cp
            && let Err(err) = cp.task(&framework, &eid, &task)
        {
            warn!(task.id = %task_id, error = %err, "cannot checkpoint the task");
        }
        e.tasks.insert(
            task_id,
            TaskRecord {
                info: task.clone(),
                state: TaskState::TaskStaging,
                delivered: false,
                killing: false,
            },
        );
        self.deliver(&key, Launch::Task(Box::new(task)));
    }

    fn run_group(
        &mut self,
        framework: String,
        mut executor_info: v1::ExecutorInfo,
        group: v1::TaskGroupInfo,
    ) {
        let eid = executor_info.executor_id.value.clone();
        let key = (framework.clone(), eid.clone());
        let kind = if executor_info.r#type() == v1::executor_info::Type::Custom
            && executor_info.command.is_some()
        {
            Kind::Custom
        } else {
            Kind::Default
        };
        if kind == Kind::Default {
            executor_info.command = Some(self.executor_command());
        }
        if !self.executors.contains_key(&key)
            && let Err(e) = self.launch_executor(&framework, &eid, kind, executor_info)
        {
            for t in &group.tasks {
                self.agent_update(
                    &framework,
                    t,
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    &format!("Failed to launch the executor: {e}"),
                );
            }
            return;
        }
        let cp = self.checkpoints();
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        for t in &group.tasks {
            if e.checkpoint
                && let Some(cp) = &cp
                && let Err(err) = cp.task(&framework, &eid, t)
            {
                warn!(task.id = %t.task_id.value, error = %err, "cannot checkpoint the task");
            }
            e.tasks.insert(
                t.task_id.value.clone(),
                TaskRecord {
                    info: t.clone(),
                    state: TaskState::TaskStaging,
                    delivered: false,
                    killing: false,
                },
            );
        }
        self.deliver(&key, Launch::Group(group));
    }

    fn executor_command(&self) -> v1::CommandInfo {
        let path = self.settings.executor_path.to_string_lossy().into_owned();
        v1::CommandInfo {
            shell: Some(false),
            value: Some(path.clone()),
            arguments: vec![path, "executor".into()],
            ..Default::default()
        }
    }

    fn command_executor_info(&self, framework: &str, task: &v1::TaskInfo) -> v1::ExecutorInfo {
        let cmd = task
            .command
            .as_ref()
            .and_then(|c| c.value.clone())
            .unwrap_or_default();
        let short: String = cmd.chars().take(12).collect();
        let more = if cmd.chars().count() > 12 { "..." } else { "" };
        #[allow(deprecated)]
        v1::ExecutorInfo {
            r#type: Some(v1::executor_info::Type::Default as i32),
            executor_id: task.task_id.value.as_str().into_executor_id(),
            framework_id: Some(v1::FrameworkId {
                value: framework.to_string(),
            }),
            command: Some(self.executor_command()),
            name: Some(format!(
                "Command Executor (Task: {}) (Command: sh -c '{short}{more}')",
                task.task_id.value
            )),
            source: Some(task.task_id.value.clone()),
            ..Default::default()
        }
    }

    fn launch_executor(
        &mut self,
        framework: &str,
        eid: &str,
        kind: Kind,
        info: v1::ExecutorInfo,
    ) -> std::io::Result<()> {
        let agent = self
            .id
            .clone()
            .ok_or_else(|| std::io::Error::other("the agent is not registered yet"))?;
        let container = uuid::Uuid::new_v4().to_string();
        let dir = sandbox::path(&self.settings.work_dir, &agent, framework, eid, &container);
        let (stdout, stderr) = sandbox::create(&dir)?;
        let fw = self.frameworks.get(framework);
        let checkpoint = fw.and_then(|f| f.checkpoint).unwrap_or(false);
        let grace = info
            .shutdown_grace_period
            .as_ref()
            .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64))
            .unwrap_or(self.settings.executor_shutdown_grace_period);
        let dir_s = dir.to_string_lossy().into_owned();
        let env: Vec<(String, String)> = vec![
            ("MESOS_FRAMEWORK_ID".into(), framework.to_string()),
            ("MESOS_EXECUTOR_ID".into(), eid.to_string()),
            ("MESOS_DIRECTORY".into(), dir_s.clone()),
            ("MESOS_SANDBOX".into(), dir_s),
            (
                "MESOS_AGENT_ENDPOINT".into(),
                self.settings.advertise.clone(),
            ),
            ("MESOS_SLAVE_ID".into(), agent.clone()),
            (
                "MESOS_SLAVE_PID".into(),
                format!("slave(1)@{}", self.settings.advertise),
            ),
            (
                "MESOS_CHECKPOINT".into(),
                if checkpoint { "1" } else { "0" }.into(),
            ),
            ("MESOS_HTTP_COMMAND_EXECUTOR".into(), "1".into()),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(),
                agora_proto::duration::format(grace),
            ),
            ("LIBPROCESS_PORT".into(), "0".into()),
            (
                "MESOS_RECOVERY_TIMEOUT".into(),
                agora_proto::duration::format(self.settings.recovery_timeout),
            ),
            ("AGORA_CLUSTER".into(), self.settings.cluster.clone()),
            (
                "MESOS_EXECUTOR_AUTHENTICATION_TOKEN".into(),
                agora_proto::auth::executor_token(
                    &self.settings.jwt_key.0,
                    &agora_proto::auth::ExecutorClaims {
                        fid: framework.to_string(),
                        eid: eid.to_string(),
                        cid: container.clone(),
                    },
                ),
            ),
        ];
        let mut env = env;
        if let Some(ca) = &self.settings.tls_ca {
            // Mesos' names: executors that speak TLS reach the agent with it.
            env.push(("LIBPROCESS_SSL_ENABLED".into(), "true".into()));
            env.push(("LIBPROCESS_SSL_CA_FILE".into(), ca.display().to_string()));
        }
        if !matches!(kind, Kind::Custom) {
            // Our executor's allocator: no transparent huge pages. Zeroing
            // them at start was most of the kernel time of a 1,000-task
            // deployment (BENCHMARKS.md).
            env.push(("MIMALLOC_ALLOW_THP".into(), "0".into()));
            env.push((
                "AGORA_CONTAINERIZERS".into(),
                self.settings.containerizers.join(","),
            ));
            if let Some(v) = &self.settings.docker_api_version {
                env.push(("AGORA_DOCKER_API_VERSION".into(), v.clone()));
            }
            if self.settings.cgroups_enable_cfs {
                env.push(("AGORA_CGROUPS_ENABLE_CFS".into(), "1".into()));
            }
            if self.settings.isolation.is_some() {
                env.push(("AGORA_ISOLATION".into(), "cgroups".into()));
            }
            if self.settings.docker_allow_privileged {
                env.push(("AGORA_DOCKER_ALLOW_PRIVILEGED".into(), "1".into()));
            }
            if self.settings.switch_user {
                env.push(("AGORA_SWITCH_USER".into(), "1".into()));
            }
        }
        // A custom executor runs as its user itself (the command executor
        // stays root and switches each task).
        let user = match kind {
            Kind::Custom if self.settings.switch_user => {
                let name = info
                    .command
                    .as_ref()
                    .and_then(|c| c.user.clone())
                    .or_else(|| fw.map(|f| f.user.clone()))
                    .filter(|u| !u.is_empty());
                match name {
                    Some(name) => {
                        let u = crate::users::lookup(&name).map_err(std::io::Error::other)?;
                        (u.uid != nix::unistd::Uid::effective()).then_some(u)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        if let Some(u) = &user {
            u.own(&dir)?;
        }
        let command = match kind {
            Kind::Custom => info.command.clone().unwrap_or_default(),
            Kind::Command | Kind::Default => self.executor_command(),
        };
        let mut process = sandbox::command(&sandbox::Spec {
            command: &command,
            env: &env,
            dir: &dir,
        })?;
        process.stdout(stdout).stderr(stderr);
        if let Some(u) = &user {
            u.switch_on_spawn(&mut process);
        }
        let mut child = process.spawn()?;
        let pid = child.id();
        info!(framework.id = %framework, executor.id = %eid, pid, sandbox = %dir.display(), "executor launched");
        let tx = self.tx.clone();
        let (f, e, c) = (framework.to_string(), eid.to_string(), container.clone());
        tokio::spawn(async move {
            let status = child.wait().await.ok().map(|s| {
                use std::os::unix::process::ExitStatusExt;
                s.into_raw()
            });
            let _ = tx.send(Command::ExecutorExited {
                framework: f,
                executor: e,
                container: c,
                status,
            });
        });
        if checkpoint && let (Some(cp), Some(fw), Some(pid)) = (self.checkpoints(), fw, pid) {
            let run = checkpoint::Run {
                container: container.clone(),
                dir: dir.clone(),
                pid,
                start: checkpoint::process_start(pid).unwrap_or(0),
                kind: kind.as_str().into(),
            };
            if let Err(e) = cp
                .framework(fw)
                .and_then(|()| cp.executor(framework, &info, &run))
            {
                warn!(framework.id = %framework, executor.id = %eid, error = %e, "cannot checkpoint the executor");
            }
        }
        self.executors.insert(
            (framework.to_string(), eid.to_string()),
            Executor {
                framework: framework.to_string(),
                id: eid.to_string(),
                info,
                kind,
                container,
                dir,
                pid,
                stream: None,
                queued: Vec::new(),
                tasks: BTreeMap::new(),
                started: Instant::now(),
                subscribed_once: false,
                kill_at: None,
                destroy_reason: None,
                checkpoint,
                adopted: None,
            },
        );
        Ok(())
    }

    /// Sends a launch to the executor if it is subscribed, else queues it.
    fn deliver(&mut self, key: &(String, String), launch: Launch) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        match &e.stream {
            Some((_, tx)) => {
                let _ = tx.send(launch_event(&launch));
                mark_delivered(e, &launch);
            }
            None => e.queued.push(launch),
        }
    }

    fn to_executor(&self, key: &(String, String), event: executor::Event) -> bool {
        match self.executors.get(key).and_then(|e| e.stream.as_ref()) {
            Some((_, tx)) => tx.send(event).is_ok(),
            None => false,
        }
    }

    // ------------------------------------------------------------ killing

    fn kill_task(&mut self, framework: &str, task: &str, policy: Option<v1::KillPolicy>) {
        let key = self
            .executors
            .iter()
            .find(|((f, _), e)| f == framework && e.tasks.contains_key(task))
            .map(|(k, _)| k.clone());
        let Some(key) = key else {
            let info = v1::TaskInfo {
                task_id: v1::TaskId { value: task.into() },
                ..Default::default()
            };
            self.agent_update(
                framework,
                &info,
                TaskState::TaskDropped,
                Reason::TaskUnknown,
                "Task is unknown to the agent",
            );
            return;
        };
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        let Some(record) = e.tasks.get_mut(task) else {
            return;
        };
        if is_terminal(record.state) {
            return;
        }
        if !record.delivered {
            // Not yet with its executor: the agent ends it itself.
            let info = record.info.clone();
            e.queued.retain(|l| match l {
                Launch::Task(t) => t.task_id.value != task,
                Launch::Group(g) => g.tasks.iter().all(|t| t.task_id.value != task),
            });
            record.state = TaskState::TaskKilled;
            let nothing_left = e
                .tasks
                .values()
                .all(|t| is_terminal(t.state) || !t.delivered)
                && e.queued.is_empty();
            self.agent_update(
                framework,
                &info,
                TaskState::TaskKilled,
                Reason::TaskKilledDuringLaunch,
                "Task killed before it was delivered to the executor",
            );
            if nothing_left {
                self.destroy_executor(&key, None);
            }
            return;
        }
        record.killing = true;
        let delivered = self.to_executor(
            &key,
            executor::Event {
                r#type: Some(executor::event::Type::Kill as i32),
                kill: Some(executor::event::Kill {
                    task_id: v1::TaskId { value: task.into() },
                    kill_policy: policy,
                }),
                ..Default::default()
            },
        );
        if !delivered {
            // The executor is not listening: destroy it; its tasks end as killed.
            self.destroy_executor(&key, None);
        }
    }

    fn shutdown_executor(&mut self, key: &(String, String)) {
        let sent = self.to_executor(
            key,
            executor::Event {
                r#type: Some(executor::event::Type::Shutdown as i32),
                ..Default::default()
            },
        );
        let grace = self.settings.executor_shutdown_grace_period;
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        for t in e.tasks.values_mut() {
            t.killing = true;
        }
        if sent {
            e.kill_at.get_or_insert(Instant::now() + grace);
        } else {
            self.destroy_executor(key, None);
        }
    }

    fn destroy_executor(&mut self, key: &(String, String), reason: Option<Reason>) {
        if let Some(e) = self.executors.get_mut(key) {
            if e.destroy_reason.is_none() {
                e.destroy_reason = reason;
            }
            e.kill_at = Some(Instant::now());
            sandbox::destroy(e.pid, &e.dir);
        }
    }

    fn executor_exited(
        &mut self,
        framework: String,
        executor: String,
        container: String,
        status: Option<i32>,
    ) {
        let key = (framework.clone(), executor.clone());
        if self
            .executors
            .get(&key)
            .is_none_or(|e| e.container != container)
        {
            return;
        }
        let Some(e) = self.executors.remove(&key) else {
            return;
        };
        // Anything it started is gone with it.
        for pgid in sandbox::recorded_groups(&e.dir) {
            sandbox::signal_group(pgid, Signal::SIGKILL);
        }
        if e.checkpoint
            && let Some(cp) = self.checkpoints()
        {
            cp.remove_executor(&framework, &executor);
        }
        if e.tasks.values().any(|t| {
            t.info
                .container
                .as_ref()
                .is_some_and(|c| c.r#type() == v1::container_info::Type::Docker)
        }) {
            self.remove_containers_of(&framework, &executor);
        }
        info!(framework.id = %framework, executor.id = %executor, ?status, "executor exited");
        for t in e.tasks.values() {
            if is_terminal(t.state) {
                continue;
            }
            let (state, reason, message) = if t.killing {
                (
                    TaskState::TaskKilled,
                    Reason::ExecutorTerminated,
                    "Task was killed".to_string(),
                )
            } else if let Some(r) = e.destroy_reason {
                (
                    TaskState::TaskFailed,
                    r,
                    "Executor did not register in time".to_string(),
                )
            } else {
                (
                    TaskState::TaskFailed,
                    Reason::ExecutorTerminated,
                    format!("Executor terminated ({})", describe_wait(status)),
                )
            };
            self.agent_update(&framework, &t.info, state, reason, &message);
        }
        for t in e.tasks.values() {
            let key = (framework.clone(), t.info.task_id.value.clone());
            if self.updates.has_pending(&key) {
                self.ended.insert(key, (e.id.clone(), e.kind, t.clone()));
            } else {
                self.push_completed(&framework, &t.info, t.state);
            }
        }
        self.send_master(agent_message::Message::ExecutorExited(ExecutorExited {
            framework_id: v1::FrameworkId { value: framework },
            executor_id: v1::ExecutorId { value: executor },
            status,
        }));
    }

    fn push_completed(&mut self, framework: &str, info: &v1::TaskInfo, state: TaskState) {
        self.completed_tasks
            .push_back((framework.to_string(), info.clone(), state));
        while self.completed_tasks.len() > MAX_COMPLETED {
            self.completed_tasks.pop_front();
        }
    }

    /// A task whose terminal update was acknowledged.
    fn retire_task(&mut self, framework: &str, task: &str) {
        if let Some((_, _, record)) = self
            .ended
            .remove(&(framework.to_string(), task.to_string()))
        {
            self.push_completed(framework, &record.info, record.state);
            return;
        }
        let key = self
            .executors
            .iter()
            .find(|((f, _), e)| f == framework && e.tasks.contains_key(task))
            .map(|(k, _)| k.clone());
        if let Some(key) = key
            && let Some(record) = self
                .executors
                .get_mut(&key)
                .and_then(|e| e.tasks.remove(task))
        {
            if let Some(cp) = self.checkpoints() {
                cp.remove_task(framework, &key.1, task);
            }
            self.push_completed(framework, &record.info, record.state);
        }
    }

    // ------------------------------------------------------- status updates

    /// An update the agent itself produces (source AGENT, with a uuid).
    fn agent_update(
        &mut self,
        framework: &str,
        task: &v1::TaskInfo,
        state: TaskState,
        reason: Reason,
        message: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: task.task_id.clone(),
            state: state as i32,
            message: Some(message.to_string()),
            source: Some(Source::Agent as i32),
            reason: Some(reason as i32),
            agent_id: self.id.as_ref().map(|id| v1::AgentId { value: id.clone() }),
            executor_id: task.executor.as_ref().map(|e| e.executor_id.clone()),
            timestamp: Some(unix_now()),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        };
        self.enqueue(framework, status);
    }

    fn enqueue(&mut self, framework: &str, status: v1::TaskStatus) {
        let key = (framework.to_string(), status.task_id.value.clone());
        let update = StatusUpdate {
            framework_id: v1::FrameworkId {
                value: framework.to_string(),
            },
            latest_state: Some(status.state),
            status,
        };
        self.updates.push(key, update);
        self.flush_updates();
    }

    fn flush_updates(&mut self) {
        if self.master.is_none() || self.id.is_none() {
            return;
        }
        for mut u in self.updates.due(Instant::now()) {
            debug!(task.id = %u.status.task_id.value, state = ?u.status.state(), "forwarding status update");
            let key = (u.framework_id.value.clone(), u.status.task_id.value.clone());
            u.latest_state = self
                .updates
                .latest_state(&key)
                .map(|s| s as i32)
                .or(u.latest_state);
            self.send_master(agent_message::Message::StatusUpdate(u));
        }
    }

    // --------------------------------------------------------- executor API

    fn executor_subscribe(
        &mut self,
        call: executor::Call,
        events: mpsc::UnboundedSender<executor::Event>,
        generation: u64,
    ) -> Result<(), HttpError> {
        let fid = call.framework_id.value.clone();
        let eid = call.executor_id.value.clone();
        let Some(framework) = self.frameworks.get(&fid).cloned() else {
            return Err(HttpError::bad_request("Framework cannot be found"));
        };
        let key = (fid.clone(), eid.clone());
        let agent_info = v1::AgentInfo {
            hostname: self.settings.hostname.clone(),
            port: self
                .settings
                .advertise
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok()),
            resources: self.settings.resources.to_protos(),
            attributes: self.settings.attributes.clone(),
            id: self.id.as_ref().map(|id| v1::AgentId { value: id.clone() }),
            domain: None,
        };
        let Some(e) = self.executors.get_mut(&key) else {
            return Err(HttpError::bad_request("Executor cannot be found"));
        };
        let mut executor_info = e.info.clone();
        executor_info.framework_id = Some(v1::FrameworkId { value: fid.clone() });
        let subscribed = executor::Event {
            r#type: Some(executor::event::Type::Subscribed as i32),
            subscribed: Some(executor::event::Subscribed {
                executor_info,
                framework_info: framework,
                agent_info,
                container_id: Some(v1::ContainerId {
                    value: e.container.clone(),
                    parent: None,
                }),
            }),
            ..Default::default()
        };
        if events.send(subscribed).is_err() {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "subscription stream closed",
            ));
        }
        e.stream = Some((generation, events.clone()));
        e.subscribed_once = true;
        for launch in std::mem::take(&mut e.queued) {
            let _ = events.send(launch_event(&launch));
            mark_delivered(e, &launch);
        }
        // On re-subscription the executor lists updates the agent has not
        // acknowledged; they are already queued here or were lost with an
        // agent restart, so nothing more is needed.
        debug!(framework.id = %fid, executor.id = %eid, "executor subscribed");
        Ok(())
    }

    fn executor_call(&mut self, call: executor::Call) -> Result<(), HttpError> {
        use executor::call::Type as T;
        let kind = call.r#type();
        if kind == T::Heartbeat {
            return Ok(());
        }
        let fid = call.framework_id.value.clone();
        let eid = call.executor_id.value.clone();
        if !self.frameworks.contains_key(&fid) {
            return Err(HttpError::bad_request("Framework cannot be found"));
        }
        let key = (fid.clone(), eid.clone());
        let Some(e) = self.executors.get(&key) else {
            return Err(HttpError::bad_request("Executor cannot be found"));
        };
        if e.stream.is_none() {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "Executor is not subscribed",
            ));
        }
        match kind {
            T::Update => {
                let update = call
                    .update
                    .ok_or_else(|| HttpError::bad_request("Expecting 'update' to be present"))?;
                let mut status = update.status;
                let uuid = status.uuid.clone().unwrap_or_default();
                if uuid.len() != 16 {
                    return Err(HttpError::bad_request("'status.uuid' must be 16 bytes"));
                }
                if status.state() == TaskState::TaskStaging {
                    return Err(HttpError::bad_request(
                        "'status.state' must not be TASK_STAGING",
                    ));
                }
                if status.executor_id.as_ref().is_some_and(|x| x.value != eid) {
                    return Err(HttpError::bad_request(
                        "'status.executor_id' does not match the call's executor_id",
                    ));
                }
                if status.source.is_some() && status.source() != Source::Executor {
                    return Err(HttpError::bad_request(
                        "'status.source' must be SOURCE_EXECUTOR",
                    ));
                }
                status.source = Some(Source::Executor as i32);
                status.agent_id = self.id.as_ref().map(|id| v1::AgentId { value: id.clone() });
                status.executor_id = Some(v1::ExecutorId { value: eid.clone() });
                if status.timestamp.is_none() {
                    status.timestamp = Some(unix_now());
                }
                let container = e.container.clone();
                let cs = status.container_status.get_or_insert_with(Default::default);
                if cs.container_id.is_none() {
                    cs.container_id = Some(v1::ContainerId {
                        value: container,
                        parent: None,
                    });
                }
                let task_id = status.task_id.clone();
                // An executor speaks only for its own tasks.
                let elsewhere = self.executors.iter().any(|((f, ex), other)| {
                    *f == fid && *ex != eid && other.tasks.contains_key(&task_id.value)
                });
                if elsewhere {
                    return Err(HttpError::new(
                        StatusCode::FORBIDDEN,
                        format!("Task '{}' is not a task of executor '{eid}'", task_id.value),
                    ));
                }
                let state = status.state();
                let cp = self.checkpoints();
                if let Some(e) = self.executors.get_mut(&key)
                    && let Some(record) = e.tasks.get_mut(&task_id.value)
                {
                    record.state = state;
                    record.delivered = true;
                    if e.checkpoint
                        && let Some(cp) = cp
                        && let Err(err) = cp.task_state(&fid, &eid, &task_id.value, state)
                    {
                        warn!(task.id = %task_id.value, error = %err, "cannot checkpoint the task state");
                    }
                }
                self.enqueue(&fid, status);
                self.to_executor(
                    &key,
                    executor::Event {
                        r#type: Some(executor::event::Type::Acknowledged as i32),
                        acknowledged: Some(executor::event::Acknowledged { task_id, uuid }),
                        ..Default::default()
                    },
                );
                Ok(())
            }
            T::Message => {
                let m = call
                    .message
                    .ok_or_else(|| HttpError::bad_request("Expecting 'message' to be present"))?;
                self.send_master(agent_message::Message::ExecutorMessage(
                    ExecutorToFramework {
                        framework_id: v1::FrameworkId { value: fid },
                        executor_id: v1::ExecutorId { value: eid },
                        data: m.data,
                    },
                ));
                Ok(())
            }
            T::Subscribe => Err(HttpError::bad_request("SUBSCRIBE must open its own stream")),
            T::Heartbeat => Ok(()),
            T::Unknown => Err(HttpError::new(
                StatusCode::NOT_IMPLEMENTED,
                "Received 'UNKNOWN' call",
            )),
        }
    }

    // --------------------------------------------------------------- timer

    fn tick(&mut self) {
        self.flush_updates();
        let now = Instant::now();
        let timeout = self.settings.executor_registration_timeout;
        let mut late = Vec::new();
        let mut overdue = Vec::new();
        let mut exited = Vec::new();
        for (key, e) in &self.executors {
            if let (Some(start), Some(pid)) = (e.adopted, e.pid)
                && checkpoint::process_start(pid) != Some(start)
            {
                exited.push((key.clone(), e.container.clone()));
                continue;
            }
            if !e.subscribed_once && e.kill_at.is_none() && now.duration_since(e.started) >= timeout
            {
                late.push(key.clone());
            }
            if e.kill_at.is_some_and(|k| now >= k) {
                overdue.push(key.clone());
            }
        }
        for ((framework, executor), container) in exited {
            self.executor_exited(framework, executor, container, None);
        }
        for key in late {
            warn!(framework.id = %key.0, executor.id = %key.1, "executor did not subscribe in time; destroying it");
            self.destroy_executor(&key, Some(Reason::ExecutorRegistrationTimeout));
        }
        for key in overdue {
            if let Some(e) = self.executors.get(&key) {
                sandbox::destroy(e.pid, &e.dir);
            }
        }
    }
}

trait IntoExecutorId {
    fn into_executor_id(self) -> v1::ExecutorId;
}

impl IntoExecutorId for &str {
    fn into_executor_id(self) -> v1::ExecutorId {
        v1::ExecutorId {
            value: self.to_string(),
        }
    }
}

fn launch_event(launch: &Launch) -> executor::Event {
    match launch {
        Launch::Task(task) => executor::Event {
            r#type: Some(executor::event::Type::Launch as i32),
            launch: Some(executor::event::Launch {
                task: (**task).clone(),
            }),
            ..Default::default()
        },
        Launch::Group(group) => executor::Event {
            r#type: Some(executor::event::Type::LaunchGroup as i32),
            launch_group: Some(executor::event::LaunchGroup {
                task_group: group.clone(),
            }),
            ..Default::default()
        },
    }
}

fn mark_delivered(e: &mut Executor, launch: &Launch) {
    let ids: Vec<String> = match launch {
        Launch::Task(t) => vec![t.task_id.value.clone()],
        Launch::Group(g) => g.tasks.iter().map(|t| t.task_id.value.clone()).collect(),
    };
    for id in ids {
        if let Some(r) = e.tasks.get_mut(&id) {
            r.delivered = true;
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A wait status as words.
fn describe_wait(status: Option<i32>) -> String {
    match status {
        None => "unknown status".into(),
        Some(s) if s & 0x7f == 0 => format!("exited with status {}", (s >> 8) & 0xff),
        Some(s) => format!("terminated by signal {}", s & 0x7f),
    }
}

/// Records the agent id so a restarted agent re-registers as itself.
fn persist_id(work_dir: &std::path::Path, id: &str) -> std::io::Result<()> {
    let meta = work_dir.join("meta");
    std::fs::create_dir_all(&meta)?;
    let tmp = meta.join("agent_id.tmp");
    std::fs::write(&tmp, id)?;
    std::fs::rename(tmp, meta.join("agent_id"))
}

/// The id a previous run of this agent registered with, if any.
pub fn recorded_id(work_dir: &std::path::Path) -> Option<String> {
    let id = std::fs::read_to_string(work_dir.join("meta").join("agent_id")).ok()?;
    let id = id.trim().to_string();
    (agora_proto::ids::validate(&id).is_ok()).then_some(id)
}

/// Allows `Resources` in settings to be printed.
pub(crate) fn describe(r: &Resources) -> String {
    r.to_string()
}
