//! `agora executor`: the command executor (and default executor for task
//! groups).
//!
//! The agent starts it in the task's sandbox with the Mesos executor
//! environment. It subscribes to the agent's v1 executor API, runs each task
//! it is given as a process in its own process group, reports
//! TASK_STARTING, TASK_RUNNING and the terminal state (FINISHED, FAILED with
//! the exit status, KILLED), and kills with SIGTERM, then SIGKILL after the
//! grace period. Before a command starts its `uris` are fetched into the
//! sandbox ([`crate::fetch`]); while it runs, its health check
//! ([`crate::health`]) is run and reported as TASK_RUNNING updates with
//! `healthy`, killing it after too many failures. It exits once every
//! terminal update has been acknowledged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agora_proto::executor;
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason, task_status::Source};
use agora_rpc::client::ApiClient;
use agora_rpc::http::Encoding;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{cgroups, docker, fetch, health, sandbox, users};

mod docker_tasks;
mod process_tasks;

/// Why the executor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A required environment variable is missing.
    #[error(
        "environment variable {0} is not set (agora executor is started by the agent, not by hand)"
    )]
    Env(&'static str),
    /// An environment variable is unusable.
    #[error("{0}")]
    BadEnv(String),
    /// The agent could not be reached for too long.
    #[error("lost the agent: {0}")]
    AgentLost(String),
}

/// The default kill grace period (Mesos: 3 s).
const DEFAULT_GRACE: Duration = Duration::from_secs(3);
/// How long the executor of a framework that does not checkpoint keeps
/// trying to reach a restarted agent.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

struct Task {
    info: v1::TaskInfo,
    pgid: Option<i32>,
    state: TaskState,
    kill_deadline: Option<Instant>,
    /// When a draining kill sends SIGTERM (or stops the container), and the
    /// grace period after it.
    term_at: Option<(Instant, Duration)>,
    killed: bool,
    deadline_reason: Option<Reason>,
    completion_deadline: Option<Instant>,
    /// The task's health check, once it runs.
    checker: Option<health::Checker>,
    /// The environment health check commands get.
    check_env: Vec<(String, String)>,
    /// Why health checks killed it.
    health_kill: Option<String>,
    /// Its Docker container, for a Docker task.
    container: Option<String>,
    /// The container's own IP (bridge and user networks).
    ip: Option<String>,
    /// The CNI network its container joined (the overlay), with its address.
    network: Option<v1::NetworkInfo>,
    /// The cgroup limiting a process task.
    cgroup: Option<cgroups::Cgroup>,
    /// The memory it was given, in bytes.
    memory: u64,
    /// The user it runs as (when it is not the executor's own).
    user: Option<users::TaskUser>,
}

struct Executor {
    client: ApiClient,
    /// The agent's address (from `MESOS_AGENT_ENDPOINT`): a process task's.
    agent_ip: Option<String>,
    framework_id: String,
    executor_id: String,
    directory: PathBuf,
    framework_info: Option<v1::FrameworkInfo>,
    agent_info: Option<v1::AgentInfo>,
    container_id: Option<v1::ContainerId>,
    tasks: BTreeMap<String, Task>,
    /// Updates sent but not yet acknowledged by the agent: uuid → update.
    unacked: BTreeMap<Vec<u8>, v1::TaskStatus>,
    group: bool,
    shutting_down: Option<Instant>,
    exits: mpsc::UnboundedSender<(String, std::process::ExitStatus)>,
    checks: mpsc::UnboundedSender<(String, Result<(), String>)>,
    /// The Docker engine, once a Docker task needed it.
    docker: Option<bollard::Docker>,
    docker_exits: mpsc::UnboundedSender<(String, docker::Exit)>,
    /// Where process tasks get their cgroups: detected at the first one when
    /// the agent enabled isolation (`AGORA_ISOLATION=cgroups`).
    cgroups: Option<Option<cgroups::Hierarchy>>,
}

fn env(name: &'static str) -> Result<String, ExecutorError> {
    std::env::var(name).map_err(|_| ExecutorError::Env(name))
}

/// The client of the agent's executor API: plain HTTP, or with
/// `LIBPROCESS_SSL_ENABLED` TLS trusting `LIBPROCESS_SSL_CA_FILE`, the agent
/// verified by its cluster-scoped name (`agent.<AGORA_CLUSTER>`) at its
/// endpoint's address.
fn agent_client(endpoint: &str) -> Result<ApiClient, ExecutorError> {
    let tls = std::env::var("LIBPROCESS_SSL_ENABLED").is_ok_and(|v| v == "true" || v == "1");
    if !tls {
        return Ok(ApiClient::new(
            format!("http://{endpoint}/api/v1/executor"),
            Encoding::Protobuf,
        ));
    }
    let ca = PathBuf::from(env("LIBPROCESS_SSL_CA_FILE")?);
    let cluster = std::env::var("AGORA_CLUSTER")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| agora_rpc::tls::DEFAULT_CLUSTER.into());
    let name = agora_rpc::tls::Role::Agent.name(&cluster);
    let addr: std::net::SocketAddr = endpoint.parse().map_err(|_| {
        ExecutorError::BadEnv(format!("MESOS_AGENT_ENDPOINT '{endpoint}' is not ip:port"))
    })?;
    let builder = agora_rpc::tls::ClientTls::load(&ca, None)
        .and_then(|t| t.reqwest())
        .map_err(|e| ExecutorError::BadEnv(format!("LIBPROCESS_SSL_CA_FILE: {e}")))?
        .resolve(&name, addr);
    Ok(ApiClient::with_builder(
        format!("https://{name}:{}/api/v1/executor", addr.port()),
        Encoding::Protobuf,
        builder,
    ))
}

/// Runs the executor until its tasks are done.
pub async fn run() -> Result<(), ExecutorError> {
    let endpoint = env("MESOS_AGENT_ENDPOINT")?;
    let framework_id = env("MESOS_FRAMEWORK_ID")?;
    let executor_id = env("MESOS_EXECUTOR_ID")?;
    let directory = PathBuf::from(env("MESOS_DIRECTORY")?);
    // The agent's token for this executor, sent with every call.
    let token = std::env::var("MESOS_EXECUTOR_AUTHENTICATION_TOKEN").ok();
    let client = agent_client(&endpoint)?.with_authorization(token.map(|t| format!("Bearer {t}")));
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let (checks_tx, mut checks) = mpsc::unbounded_channel();
    let (docker_exits_tx, mut docker_exits) = mpsc::unbounded_channel();
    let mut ex = Executor {
        client,
        agent_ip: endpoint
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_start_matches('[').trim_end_matches(']').to_string()),
        framework_id,
        executor_id,
        directory,
        framework_info: None,
        agent_info: None,
        container_id: None,
        tasks: BTreeMap::new(),
        unacked: BTreeMap::new(),
        group: false,
        shutting_down: None,
        exits: exits_tx,
        checks: checks_tx,
        docker: None,
        docker_exits: docker_exits_tx,
        cgroups: None,
    };
    // A checkpointing framework's executor waits for a restarted agent as
    // long as the agent said (MESOS_RECOVERY_TIMEOUT); others give up sooner.
    let window = if std::env::var("MESOS_CHECKPOINT").is_ok_and(|v| v == "1") {
        std::env::var("MESOS_RECOVERY_TIMEOUT")
            .ok()
            .and_then(|s| agora_proto::duration::parse(&s).ok())
            .unwrap_or(Duration::from_secs(15 * 60))
    } else {
        RECONNECT_WINDOW
    };
    let mut lost_since: Option<Instant> = None;
    loop {
        let mut stream = match ex.subscribe().await {
            Ok(s) => {
                lost_since = None;
                s
            }
            Err(e) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > window {
                    ex.kill_all(Duration::ZERO);
                    return Err(ExecutorError::AgentLost(e));
                }
                warn!(error = %e, "cannot subscribe to the agent; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Re-send what the agent never acknowledged (it may have restarted).
        for status in ex.unacked.values().cloned().collect::<Vec<_>>() {
            ex.send_update(status).await;
        }
        loop {
            // Asleep until something happens or a timer of a task is due:
            // an idle executor costs nothing (a thousand of them on a host
            // used to wake ten thousand times a second).
            let next = ex.next_deadline();
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => ex.event(event).await,
                    Some(Err(e)) => { warn!(error = %e, "executor stream failed"); break; }
                    None => { warn!("the agent closed the executor stream"); break; }
                },
                Some((task, status)) = exits.recv() => ex.exited(&task, status).await,
                Some((task, result)) = checks.recv() => ex.health(&task, result).await,
                Some((task, exit)) = docker_exits.recv() => ex.container_exited(&task, exit).await,
                () = timer => ex.timers().await,
            }
            if ex.done() {
                ex.remove_containers().await;
                info!("all tasks are done and acknowledged; exiting");
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Executor {
    async fn subscribe(&self) -> Result<agora_rpc::client::EventStream<executor::Event>, String> {
        let call = executor::Call {
            executor_id: v1::ExecutorId {
                value: self.executor_id.clone(),
            },
            framework_id: v1::FrameworkId {
                value: self.framework_id.clone(),
            },
            r#type: Some(executor::call::Type::Subscribe as i32),
            subscribe: Some(executor::call::Subscribe {
                unacknowledged_tasks: self
                    .tasks
                    .values()
                    .filter(|t| t.state == TaskState::TaskStaging)
                    .map(|t| t.info.clone())
                    .collect(),
                unacknowledged_updates: self
                    .unacked
                    .values()
                    .map(|s| executor::call::Update { status: s.clone() })
                    .collect(),
            }),
            ..Default::default()
        };
        self.client
            .subscribe(&call)
            .await
            .map(|(_, s)| s)
            .map_err(|e| e.to_string())
    }

    fn done(&self) -> bool {
        let all_terminal = self.tasks.values().all(|t| is_terminal(t.state));
        (!self.tasks.is_empty() || self.shutting_down.is_some())
            && all_terminal
            && self.unacked.is_empty()
    }

    fn killing_state(&self) -> bool {
        self.framework_info.as_ref().is_some_and(|f| {
            f.capabilities
                .iter()
                .any(|c| c.r#type() == v1::framework_info::capability::Type::TaskKillingState)
        })
    }

    async fn event(&mut self, event: executor::Event) {
        use executor::event::Type as E;
        match event.r#type() {
            E::Subscribed => {
                if let Some(s) = event.subscribed {
                    info!(container = ?s.container_id.as_ref().map(|c| c.value.clone()), "subscribed to the agent");
                    self.framework_info = Some(s.framework_info);
                    self.agent_info = Some(s.agent_info);
                    self.container_id = s.container_id;
                }
            }
            E::Launch => {
                if let Some(l) = event.launch {
                    self.launch(l.task).await;
                }
            }
            E::LaunchGroup => {
                if let Some(g) = event.launch_group {
                    self.group = true;
                    for t in g.task_group.tasks {
                        self.launch(t).await;
                    }
                }
            }
            E::Kill => {
                if let Some(k) = event.kill {
                    let grace = k
                        .kill_policy
                        .as_ref()
                        .and_then(|p| p.grace_period.as_ref())
                        .map(nanos);
                    if self.group {
                        // Killing one task of a group kills the whole group.
                        let ids: Vec<String> = self.tasks.keys().cloned().collect();
                        for id in ids {
                            self.kill(&id, grace, true).await;
                        }
                    } else {
                        self.kill(&k.task_id.value, grace, true).await;
                    }
                }
            }
            E::Acknowledged => {
                if let Some(a) = event.acknowledged {
                    self.unacked.remove(&a.uuid);
                }
            }
            E::Shutdown => {
                info!("shutdown requested");
                let grace = std::env::var("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD")
                    .ok()
                    .and_then(|s| agora_proto::duration::parse(&s).ok())
                    .unwrap_or(Duration::from_secs(5));
                self.shutting_down = Some(Instant::now() + grace);
                let ids: Vec<String> = self.tasks.keys().cloned().collect();
                for id in ids {
                    let grace = grace.saturating_sub(Duration::from_millis(500));
                    self.kill(&id, Some(grace), false).await;
                }
            }
            E::Message | E::Heartbeat | E::Unknown => {}
            E::Error => warn!(message = ?event.error.map(|e| e.message), "error from the agent"),
        }
    }

    async fn launch(&mut self, task: v1::TaskInfo) {
        let id = task.task_id.value.clone();
        if self.tasks.contains_key(&id) {
            warn!(task = %id, "ignoring a second LAUNCH of the same task");
            return;
        }
        if self.shutting_down.is_some() {
            return;
        }
        self.tasks.insert(
            id.clone(),
            Task {
                info: task.clone(),
                pgid: None,
                state: TaskState::TaskStaging,
                kill_deadline: None,
                term_at: None,
                killed: false,
                deadline_reason: None,
                completion_deadline: task
                    .max_completion_time
                    .as_ref()
                    .map(|d| Instant::now() + nanos(d)),
                checker: None,
                check_env: Vec::new(),
                health_kill: None,
                container: None,
                ip: None,
                network: None,
                cgroup: None,
                memory: 0,
                user: None,
            },
        );
        if is_docker(&task) {
            self.launch_docker(task).await;
            return;
        }
        self.launch_process(task).await;
    }

    /// A task that could not start: STARTING, then FAILED with the cause.
    async fn fail_to_start(&mut self, id: &str, message: String, reason: Reason) {
        self.update(id, TaskState::TaskStarting, None, None).await;
        self.update(id, TaskState::TaskFailed, Some(message), Some(reason))
            .await;
    }

    /// Kills a task: TASK_KILLING (to frameworks that understand it), then
    /// SIGTERM to its process group (or `docker stop`), SIGKILL after the
    /// grace period. With `drain`, a task labelled `AGORA_SHUTDOWN_DELAY`
    /// keeps running that long after TASK_KILLING, so load balancers and
    /// DNS stop sending it work before it is asked to stop.
    async fn kill(&mut self, id: &str, grace: Option<Duration>, drain: bool) {
        let killing_state = self.killing_state();
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if is_terminal(t.state) || t.killed {
            return;
        }
        let grace = grace
            .or_else(|| {
                t.info
                    .kill_policy
                    .as_ref()
                    .and_then(|p| p.grace_period.as_ref())
                    .map(nanos)
            })
            .unwrap_or(DEFAULT_GRACE);
        t.killed = true;
        if t.pgid.is_none() && t.container.is_none() {
            // Never started.
            self.update(
                id,
                TaskState::TaskKilled,
                Some("Task killed before it started".into()),
                None,
            )
            .await;
            return;
        }
        let delay = if drain { shutdown_delay(&t.info) } else { None };
        match delay {
            Some(delay) => {
                info!(task = %id, ?delay, "draining before SIGTERM");
                t.term_at = Some((Instant::now() + delay, grace));
            }
            None => self.terminate(id, grace),
        }
        if killing_state {
            self.update(id, TaskState::TaskKilling, None, None).await;
        }
    }

    /// SIGTERM to a task's process group (SIGKILL when `grace` is over), or
    /// `docker stop` with that grace.
    fn terminate(&mut self, id: &str, grace: Duration) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.term_at = None;
        if let Some(container) = t.container.clone() {
            info!(task = %id, %container, ?grace, "stopping the container");
            if let Some(d) = self.docker.clone() {
                tokio::spawn(async move {
                    if let Err(e) = docker::stop(&d, &container, grace).await {
                        warn!(%container, error = %e, "cannot stop the container");
                    }
                });
            }
        } else if let Some(pgid) = t.pgid {
            info!(task = %id, pgid, ?grace, "sending SIGTERM");
            sandbox::signal_group(pgid, Signal::SIGTERM);
            t.kill_deadline = Some(Instant::now() + grace);
        }
    }

    /// The earliest moment [`Executor::timers`] has something to do: a
    /// drain ending, a grace period over, a completion deadline, a health
    /// check due, the end of a shutdown.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for t in self.tasks.values() {
            if is_terminal(t.state) {
                continue;
            }
            if let Some((term, _)) = t.term_at {
                at(term);
            }
            if let Some(d) = t.kill_deadline {
                at(d);
            }
            if let Some(d) = t.completion_deadline.filter(|_| !t.killed) {
                at(d);
            }
            if t.state == TaskState::TaskRunning
                && !t.killed
                && let Some(d) = t.checker.as_ref().and_then(|c| c.next_due())
            {
                at(d);
            }
        }
        if let Some(d) = self.shutting_down {
            at(d + Duration::from_secs(2));
        }
        next
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        let mut overdue = Vec::new();
        let mut expired = Vec::new();
        let mut drained = Vec::new();
        for (id, t) in &self.tasks {
            if let Some((at, grace)) = t.term_at
                && now >= at
                && !is_terminal(t.state)
            {
                drained.push((id.clone(), grace));
            }
            if t.kill_deadline.is_some_and(|d| now >= d) && !is_terminal(t.state) {
                overdue.push(id.clone());
            }
            if t.completion_deadline.is_some_and(|d| now >= d) && !t.killed && !is_terminal(t.state)
            {
                expired.push(id.clone());
            }
        }
        for (id, grace) in drained {
            self.terminate(&id, grace);
        }
        for id in overdue {
            if let Some(t) = self.tasks.get_mut(&id) {
                if let Some(pgid) = t.pgid {
                    warn!(task = %id, pgid, "grace period over; sending SIGKILL");
                    sandbox::signal_group(pgid, Signal::SIGKILL);
                }
                t.kill_deadline = None;
            }
        }
        for id in expired {
            if let Some(t) = self.tasks.get_mut(&id) {
                t.deadline_reason = Some(Reason::MaxCompletionTimeReached);
            }
            self.kill(&id, Some(Duration::ZERO), false).await;
        }
        for (id, t) in &mut self.tasks {
            let Some(checker) = t.checker.as_mut() else {
                continue;
            };
            if t.killed || t.state != TaskState::TaskRunning || !checker.due(now) {
                continue;
            }
            let (spec, env, dir, timeout, user) = (
                checker.spec.clone(),
                t.check_env.clone(),
                self.directory.clone(),
                checker.timeout(),
                t.user.clone(),
            );
            let (id, results) = (id.clone(), self.checks.clone());
            // COMMAND checks of a Docker task run inside its container.
            let inside = match (&t.container, &self.docker) {
                (Some(c), Some(d)) if spec.r#type() == v1::health_check::Type::Command => {
                    Some((d.clone(), c.clone()))
                }
                _ => None,
            };
            tokio::spawn(async move {
                let r = match inside {
                    Some((d, c)) => {
                        let cmd = spec
                            .command
                            .as_ref()
                            .and_then(|c| c.value.clone())
                            .unwrap_or_default();
                        match tokio::time::timeout(timeout, docker::exec(&d, &c, &cmd)).await {
                            Ok(r) => r.map_err(|e| e.to_string()),
                            Err(_) => Err(format!("health check timed out after {timeout:?}")),
                        }
                    }
                    None => health::probe(&spec, &env, &dir, timeout, user.as_ref()).await,
                };
                let _ = results.send((id, r));
            });
        }
        if self
            .shutting_down
            .is_some_and(|d| now >= d + Duration::from_secs(2))
        {
            // The agent will destroy us anyway; make sure nothing is left.
            self.kill_all(Duration::ZERO);
        }
        // Re-send updates the agent has not acknowledged for a while.
    }

    /// A health check result: report it, and kill after too many failures.
    async fn health(&mut self, id: &str, result: Result<(), String>) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if t.killed || t.state != TaskState::TaskRunning {
            return;
        }
        let Some(checker) = t.checker.as_mut() else {
            return;
        };
        match checker.result(Instant::now(), result) {
            health::Verdict::Quiet => {}
            health::Verdict::Report { healthy, cause } => {
                self.update_health(id, healthy, cause).await;
            }
            health::Verdict::Kill { cause } => {
                warn!(task = %id, %cause, "killing the task: it failed its health checks");
                t.health_kill = Some(cause.clone());
                self.update_health(id, false, Some(cause)).await;
                self.kill(id, None, false).await;
            }
        }
    }

    async fn update_health(&mut self, id: &str, healthy: bool, cause: Option<String>) {
        self.send_status(
            id,
            TaskState::TaskRunning,
            cause,
            Some(Reason::TaskHealthCheckStatusUpdated),
            Some(healthy),
        )
        .await;
    }

    fn kill_all(&mut self, _grace: Duration) {
        for t in self.tasks.values() {
            if let Some(pgid) = t.pgid {
                sandbox::signal_group(pgid, Signal::SIGKILL);
            }
            if let (Some(c), Some(d)) = (t.container.clone(), self.docker.clone()) {
                tokio::spawn(async move { docker::remove(&d, &c).await });
            }
        }
    }

    async fn exited(&mut self, id: &str, status: std::process::ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        sandbox::forget_group(&self.directory, id);
        let Some(t) = self.tasks.get(id) else { return };
        let description = match (status.code(), status.signal()) {
            (Some(code), _) => format!("Command exited with status {code}"),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig)
                    .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                    .unwrap_or(sig.to_string());
                format!("Command terminated with signal {name}")
            }
            _ => "Command exited".to_string(),
        };
        info!(task = %id, %description);
        let description = match &t.health_kill {
            Some(cause) => format!("Task killed after failing its health checks: {cause}"),
            None => description,
        };
        let oom = t.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        let description = if oom {
            let used = t.cgroup.as_ref().and_then(|c| c.max_usage()).unwrap_or(0);
            format!(
                "Memory limit exceeded: Requested: {}MB Maximum Used: {}MB ({description})",
                t.memory >> 20,
                used >> 20
            )
        } else {
            description
        };
        if let Some(cg) = self.tasks.get_mut(id).and_then(|t| t.cgroup.take()) {
            cg.destroy();
        }
        let Some(t) = self.tasks.get(id) else { return };
        let (state, reason) = if let Some(r) = t.deadline_reason {
            (TaskState::TaskFailed, Some(r))
        } else if oom && !t.killed {
            (
                TaskState::TaskFailed,
                Some(Reason::ContainerLimitationMemory),
            )
        } else if t.killed {
            (TaskState::TaskKilled, None)
        } else if status.success() {
            (TaskState::TaskFinished, None)
        } else {
            (TaskState::TaskFailed, None)
        };
        self.update(id, state, Some(description), reason).await;
        if self.group && state != TaskState::TaskFinished {
            // A failed task takes its group down with it.
            let ids: Vec<String> = self.tasks.keys().cloned().collect();
            for other in ids {
                self.kill(&other, None, false).await;
            }
        }
    }

    async fn update(
        &mut self,
        id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<Reason>,
    ) {
        self.send_status(id, state, message, reason, None).await;
    }

    async fn send_status(
        &mut self,
        id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<Reason>,
        healthy: Option<bool>,
    ) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        if is_terminal(t.state) {
            return;
        }
        t.state = state;
        let container_ip = t.ip.clone();
        // A process task shares the agent's address.
        let ip = container_ip.or_else(|| self.agent_ip.clone());
        let network = t.network.clone();
        let container_status = (state == TaskState::TaskRunning).then(|| v1::ContainerStatus {
            container_id: self.container_id.clone(),
            network_infos: match (network, ip) {
                (Some(n), _) => vec![n],
                (None, Some(ip)) => vec![v1::NetworkInfo {
                    ip_addresses: vec![v1::network_info::IpAddress {
                        protocol: None,
                        ip_address: Some(ip),
                    }],
                    ..Default::default()
                }],
                (None, None) => Vec::new(),
            },
            executor_pid: Some(std::process::id()),
        });
        let status = v1::TaskStatus {
            task_id: v1::TaskId {
                value: id.to_string(),
            },
            state: state as i32,
            message,
            source: Some(Source::Executor as i32),
            reason: reason.map(|r| r as i32),
            executor_id: Some(v1::ExecutorId {
                value: self.executor_id.clone(),
            }),
            timestamp: Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            ),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            container_status,
            healthy,
            ..Default::default()
        };
        self.unacked
            .insert(status.uuid.clone().unwrap_or_default(), status.clone());
        self.send_update(status).await;
    }

    async fn send_update(&self, status: v1::TaskStatus) {
        let call = executor::Call {
            executor_id: v1::ExecutorId {
                value: self.executor_id.clone(),
            },
            framework_id: v1::FrameworkId {
                value: self.framework_id.clone(),
            },
            r#type: Some(executor::call::Type::Update as i32),
            update: Some(executor::call::Update { status }),
            ..Default::default()
        };
        if let Err(e) = self.client.call(&call, None).await {
            warn!(error = %e, "status update not delivered; it will be re-sent");
        }
    }
}

/// The environment a task gets from its executor: MESOS_TASK_ID,
/// MESOS_SANDBOX, and PORT0…/PORT/PORTS from its port resources unless the
/// framework set them.
fn task_env(task: &v1::TaskInfo, sandbox: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("MESOS_TASK_ID".into(), task.task_id.value.clone()),
        ("MESOS_SANDBOX".into(), sandbox.to_string()),
    ];
    let ports: Vec<u64> = agora_proto::resources::Resources::from_protos(&task.resources)
        .map(|r| r.ranges("ports").values().take(64).collect())
        .unwrap_or_default();
    let set = task
        .command
        .as_ref()
        .and_then(|c| c.environment.as_ref())
        .is_some_and(|e| e.variables.iter().any(|v| v.name == "PORT0"));
    if !ports.is_empty() && !set {
        for (i, p) in ports.iter().enumerate() {
            env.push((format!("PORT{i}"), p.to_string()));
        }
        env.push(("PORT".into(), ports[0].to_string()));
        let all: Vec<String> = ports.iter().map(u64::to_string).collect();
        env.push(("PORTS".into(), all.join(",")));
    }
    env
}

/// Whether the agent asked for hard cpu limits (`--cgroups-enable-cfs`).
fn cfs_enabled() -> bool {
    std::env::var("AGORA_CGROUPS_ENABLE_CFS").is_ok_and(|v| v == "1")
}

fn is_docker(task: &v1::TaskInfo) -> bool {
    task.container
        .as_ref()
        .is_some_and(|c| c.r#type == v1::container_info::Type::Docker as i32)
}

pub use agora_proto::labels::SHUTDOWN_DELAY as SHUTDOWN_DELAY_LABEL;

/// A task's shutdown delay: its `AGORA_SHUTDOWN_DELAY` label in seconds
/// (at most 5 minutes); none when absent, zero or not a number.
fn shutdown_delay(task: &v1::TaskInfo) -> Option<Duration> {
    let value = task
        .labels
        .as_ref()?
        .labels
        .iter()
        .find(|l| l.key == SHUTDOWN_DELAY_LABEL)?
        .value
        .as_deref()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

fn nanos(d: &v1::DurationInfo) -> Duration {
    Duration::from_nanos(d.nanoseconds.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_delay_comes_from_a_label_in_seconds() {
        let with = |value: Option<&str>| v1::TaskInfo {
            labels: value.map(|v| v1::Labels {
                labels: vec![v1::Label {
                    key: SHUTDOWN_DELAY_LABEL.into(),
                    value: Some(v.into()),
                }],
            }),
            ..Default::default()
        };
        assert_eq!(shutdown_delay(&with(None)), None);
        assert_eq!(
            shutdown_delay(&with(Some("2"))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            shutdown_delay(&with(Some(" 0.5 "))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            shutdown_delay(&with(Some("1e9"))),
            Some(Duration::from_secs(300))
        );
        for bad in ["0", "-1", "soon", "NaN", "inf", ""] {
            assert_eq!(shutdown_delay(&with(Some(bad))), None, "{bad}");
        }
    }
}
