//! Launching: a task or task group finds its executor (starting one when
//! none runs), and reaches it once it subscribes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::executor;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use tracing::{info, warn};

use crate::{
    Agent, Checkpoint, Executor, ExecutorKey, Kind, Launch, Output, Run, SandboxVolume, Spawn,
    TaskRecord, Time,
};

impl Agent {
    pub(crate) fn run_task(&mut self, now: Time, framework: String, task: v1::TaskInfo) {
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
                now,
                &framework,
                &task,
                TaskState::TaskDropped,
                reason,
                "Executor is terminating or the task id is in use",
            );
            return;
        }
        let joins = self.executors.contains_key(&key);
        if !joins
            && let Err(e) = self.launch_executor(
                now,
                &key,
                kind,
                info,
                self.volumes(&framework, std::slice::from_ref(&task)),
            )
        {
            self.agent_update(
                now,
                &framework,
                &task,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                &format!("Failed to launch the executor: {e}"),
            );
            return;
        }
        if joins {
            self.link_volumes(&key, &framework, std::slice::from_ref(&task));
        }
        self.add_tasks(&key, std::slice::from_ref(&task));
        self.deliver(&key, Launch::Task(Box::new(task)));
    }

    pub(crate) fn run_group(
        &mut self,
        now: Time,
        framework: String,
        mut executor_info: v1::ExecutorInfo,
        group: v1::TaskGroupInfo,
    ) {
        let key = (framework.clone(), executor_info.executor_id.value.clone());
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
        let volumes = self.volumes(&framework, &group.tasks);
        let joins = self.executors.contains_key(&key);
        if !joins && let Err(e) = self.launch_executor(now, &key, kind, executor_info, volumes) {
            for t in &group.tasks {
                self.agent_update(
                    now,
                    &framework,
                    t,
                    TaskState::TaskFailed,
                    Reason::ContainerLaunchFailed,
                    &format!("Failed to launch the executor: {e}"),
                );
            }
            return;
        }
        if joins {
            self.link_volumes(&key, &framework, &group.tasks);
        }
        self.add_tasks(&key, &group.tasks);
        self.deliver(&key, Launch::Group(group));
    }

    /// Gives tasks to their executor (checkpointed with it: now if it
    /// runs, else once it started).
    fn add_tasks(&mut self, key: &ExecutorKey, tasks: &[v1::TaskInfo]) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        let checkpoint = e.checkpoint && e.pid.is_some();
        for t in tasks {
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
        if checkpoint {
            for t in tasks {
                self.checkpoint(Checkpoint::Task {
                    key: key.clone(),
                    task: t.clone(),
                });
            }
        }
    }

    fn executor_command(&self) -> v1::CommandInfo {
        let path = self.config.executor_path.to_string_lossy().into_owned();
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
            executor_id: v1::ExecutorId {
                value: task.task_id.value.clone(),
            },
            framework_id: Some(v1::FrameworkId {
                value: framework.to_string(),
            }),
            command: Some(self.executor_command()),
            name: Some(format!(
                "Command Executor (Task: {}) (Command: sh -c '{short}{more}')",
                task.task_id.value
            )),
            source: Some(task.task_id.value.clone()),
            // As Mesos: the executor runs in the task's container (and so in
            // its networks).
            container: task.container.clone(),
            ..Default::default()
        }
    }

    /// The persistent volumes tasks use, to link into their sandbox (owned
    /// by the tasks' user when the agent switches users).
    fn volumes(&self, framework: &str, tasks: &[v1::TaskInfo]) -> Vec<SandboxVolume> {
        let mut out = Vec::new();
        for task in tasks {
            let owner = self
                .config
                .switch_user
                .then(|| {
                    task.command
                        .as_ref()
                        .and_then(|c| c.user.clone())
                        .or_else(|| self.frameworks.get(framework).map(|f| f.user.clone()))
                })
                .flatten()
                .filter(|u| !u.is_empty());
            for r in &task.resources {
                let Some(disk) = &r.disk else { continue };
                let (Some(p), Some(v)) = (&disk.persistence, &disk.volume) else {
                    continue;
                };
                let role = r
                    .reservations
                    .last()
                    .and_then(|x| x.role.clone())
                    .or_else(|| {
                        #[allow(deprecated)]
                        r.role.clone()
                    })
                    .unwrap_or_else(|| "*".into());
                out.push(SandboxVolume {
                    host: volume_path(&self.config.work_dir, &role, &p.id),
                    container_path: v.container_path.clone(),
                    read_only: v.mode == v1::volume::Mode::Ro as i32,
                    owner: owner.clone(),
                });
            }
        }
        out
    }

    /// Tasks joining an executor that already runs (a custom executor's, a
    /// later task group's): their volumes are linked into its sandbox
    /// (an executor's first tasks get theirs when it is spawned).
    fn link_volumes(&mut self, key: &ExecutorKey, framework: &str, tasks: &[v1::TaskInfo]) {
        let Some(dir) = self.executors.get(key).map(|e| e.dir.clone()) else {
            return;
        };
        let volumes = self.volumes(framework, tasks);
        if !volumes.is_empty() {
            self.out.push(Output::LinkVolumes { dir, volumes });
        }
    }

    /// Records a new executor and asks the shell to start it.
    fn launch_executor(
        &mut self,
        now: Time,
        key: &ExecutorKey,
        kind: Kind,
        info: v1::ExecutorInfo,
        volumes: Vec<SandboxVolume>,
    ) -> Result<(), &'static str> {
        let Some(agent) = self.id.clone() else {
            return Err("the agent is not registered yet");
        };
        let (framework, eid) = key;
        let container = self.uuid().to_string();
        let dir = sandbox_path(&self.config.work_dir, &agent, framework, eid, &container);
        let fw = self.frameworks.get(framework);
        let checkpoint = fw.and_then(|f| f.checkpoint).unwrap_or(false);
        // A custom executor runs as its user itself (the command executor
        // stays root and switches each task).
        let user = match kind {
            Kind::Custom if self.config.switch_user => info
                .command
                .as_ref()
                .and_then(|c| c.user.clone())
                .or_else(|| fw.map(|f| f.user.clone()))
                .filter(|u| !u.is_empty()),
            _ => None,
        };
        let command = match kind {
            Kind::Custom => info.command.clone().unwrap_or_default(),
            Kind::Command | Kind::Default => self.executor_command(),
        };
        let env = self.executor_env(key, kind, &info, &container, &dir, checkpoint);
        let networks = named_networks(info.container.as_ref());
        let docker_networks = match (kind, &self.overlay) {
            (Kind::Command, Some(o)) => {
                docker_cni_networks(info.container.as_ref(), &o.network.name)
            }
            _ => Vec::new(),
        };
        let joins_networks = !networks.is_empty() || !docker_networks.is_empty();
        self.out.push(Output::Spawn(Box::new(Spawn {
            key: key.clone(),
            container: container.clone(),
            dir: dir.clone(),
            command,
            env,
            user,
            networks,
            docker_networks,
            volumes,
        })));
        self.executors.insert(
            key.clone(),
            Executor {
                framework: framework.clone(),
                id: eid.clone(),
                info,
                kind,
                container,
                dir,
                pid: None,
                stream: None,
                queued: Vec::new(),
                tasks: BTreeMap::new(),
                started: now,
                subscribed_once: false,
                kill_at: None,
                destroy_reason: None,
                checkpoint,
                networks: Vec::new(),
                joins_networks,
            },
        );
        Ok(())
    }

    /// The environment of an executor, as Mesos sets it.
    fn executor_env(
        &self,
        (framework, eid): &ExecutorKey,
        kind: Kind,
        info: &v1::ExecutorInfo,
        container: &str,
        dir: &std::path::Path,
        checkpoint: bool,
    ) -> Vec<(String, String)> {
        let c = &self.config;
        let agent = self.id.clone().unwrap_or_default();
        let grace = info
            .shutdown_grace_period
            .as_ref()
            .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64))
            .unwrap_or(c.executor_shutdown_grace_period);
        let dir = dir.to_string_lossy().into_owned();
        let token = agora_proto::auth::executor_token(
            &c.jwt_key.0,
            &agora_proto::auth::ExecutorClaims {
                fid: framework.clone(),
                eid: eid.clone(),
                cid: container.to_string(),
            },
        );
        let mut env: Vec<(String, String)> = [
            ("MESOS_FRAMEWORK_ID", framework.clone()),
            ("MESOS_EXECUTOR_ID", eid.clone()),
            ("MESOS_DIRECTORY", dir.clone()),
            ("MESOS_SANDBOX", dir),
            ("MESOS_AGENT_ENDPOINT", c.advertise.clone()),
            ("MESOS_SLAVE_ID", agent),
            ("MESOS_SLAVE_PID", format!("slave(1)@{}", c.advertise)),
            (
                "MESOS_CHECKPOINT",
                if checkpoint { "1" } else { "0" }.into(),
            ),
            ("MESOS_HTTP_COMMAND_EXECUTOR", "1".into()),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                agora_proto::duration::format(grace),
            ),
            ("LIBPROCESS_PORT", "0".into()),
            (
                "MESOS_RECOVERY_TIMEOUT",
                agora_proto::duration::format(c.recovery_timeout),
            ),
            ("AGORA_CLUSTER", c.cluster.clone()),
            ("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", token),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        if let Some(ca) = &c.tls_ca {
            // Mesos' names: executors that speak TLS reach the agent with it.
            set("LIBPROCESS_SSL_ENABLED", "true".into());
            set("LIBPROCESS_SSL_CA_FILE", ca.display().to_string());
        }
        if kind != Kind::Custom {
            // Our executor's allocator: no transparent huge pages. Zeroing
            // them at start was most of the kernel time of a 1,000-task
            // deployment (BENCHMARKS.md).
            set("MIMALLOC_ALLOW_THP", "0".into());
            set("AGORA_CONTAINERIZERS", c.containerizers.join(","));
            if let Some(v) = &c.docker_api_version {
                set("AGORA_DOCKER_API_VERSION", v.clone());
            }
            let flags = [
                ("AGORA_CGROUPS_ENABLE_CFS", c.cgroups_enable_cfs),
                ("AGORA_ISOLATION", c.isolation.is_some()),
                ("AGORA_DOCKER_ALLOW_PRIVILEGED", c.docker_allow_privileged),
                ("AGORA_SWITCH_USER", c.switch_user),
            ];
            for (k, on) in flags {
                if on {
                    let v = if k == "AGORA_ISOLATION" {
                        "cgroups"
                    } else {
                        "1"
                    };
                    set(k, v.into());
                }
            }
        }
        env
    }

    /// The shell started an executor.
    pub(crate) fn spawned(
        &mut self,
        key: ExecutorKey,
        container: &str,
        pid: Option<u32>,
        start: Option<u64>,
        networks: Vec<v1::NetworkInfo>,
    ) {
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        if e.container != container {
            return;
        }
        e.pid = pid;
        e.networks = networks;
        info!(framework.id = %key.0, executor.id = %key.1, ?pid, sandbox = %e.dir.display(), "executor launched");
        let (Some(pid), true) = (pid, e.checkpoint) else {
            return;
        };
        let run = Run {
            container: container.to_string(),
            dir: e.dir.clone(),
            pid,
            start: start.unwrap_or(0),
            kind: e.kind.as_str().into(),
            networks: e.networks.clone(),
        };
        let info = e.info.clone();
        let tasks: Vec<v1::TaskInfo> = e.tasks.values().map(|t| t.info.clone()).collect();
        if let Some(fw) = self.frameworks.get(&key.0).cloned() {
            self.checkpoint(Checkpoint::Framework(fw));
        }
        self.checkpoint(Checkpoint::Executor {
            framework: key.0.clone(),
            info,
            run,
        });
        // Its tasks so far, after its own record.
        for task in tasks {
            self.checkpoint(Checkpoint::Task {
                key: key.clone(),
                task,
            });
        }
    }

    /// The shell could not start an executor: its tasks fail.
    pub(crate) fn spawn_failed(
        &mut self,
        now: Time,
        key: ExecutorKey,
        container: &str,
        error: &str,
    ) {
        let Some(e) = self.remove_run(&key, container) else {
            return;
        };
        warn!(framework.id = %key.0, executor.id = %key.1, error, "cannot launch an executor");
        if e.checkpoint {
            self.checkpoint(Checkpoint::RemoveExecutor(key.clone()));
        }
        for t in e.tasks.values() {
            self.agent_update(
                now,
                &key.0,
                &t.info,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                &format!("Failed to launch the executor: {error}"),
            );
        }
        for t in e.tasks.values() {
            self.ended.insert(
                (key.0.clone(), t.info.task_id.value.clone()),
                (e.id.clone(), e.kind, t.clone()),
            );
        }
    }

    /// Sends a launch to the executor if it is subscribed, else queues it.
    pub(crate) fn deliver(&mut self, key: &ExecutorKey, launch: Launch) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        match e.stream {
            Some(stream) => {
                self.out.push(Output::ToExecutor {
                    stream,
                    event: Box::new(launch_event(&launch)),
                });
                mark_delivered(e, &launch);
            }
            None => e.queued.push(launch),
        }
    }
}

/// Where a persistent volume's data lives (as Mesos:
/// `<work-dir>/volumes/roles/<role>/<persistence id>`).
pub fn volume_path(work_dir: &std::path::Path, role: &str, id: &str) -> PathBuf {
    work_dir.join("volumes").join("roles").join(role).join(id)
}

/// Where a run of an executor lives:
/// `<work-dir>/slaves/<agent>/frameworks/<fw>/executors/<ex>/runs/<container>`.
pub fn sandbox_path(
    work_dir: &std::path::Path,
    agent: &str,
    framework: &str,
    executor: &str,
    container: &str,
) -> PathBuf {
    work_dir
        .join("slaves")
        .join(agent)
        .join("frameworks")
        .join(framework)
        .join("executors")
        .join(executor)
        .join("runs")
        .join(container)
}

pub(crate) fn launch_event(launch: &Launch) -> executor::Event {
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

pub(crate) fn mark_delivered(e: &mut Executor, launch: &Launch) {
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

/// The named networks a MESOS container asks for (a Docker container's
/// networks are Docker's).
pub(crate) fn named_networks(container: Option<&v1::ContainerInfo>) -> Vec<v1::NetworkInfo> {
    match container {
        Some(c) if c.r#type() == v1::container_info::Type::Mesos => c
            .network_infos
            .iter()
            .filter(|n| n.name.as_deref().is_some_and(|n| !n.is_empty()))
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// The CNI networks a Docker container on a USER network joins: the
/// overlay (`overlay`) when it names it (other names are Docker's own
/// networks).
pub(crate) fn docker_cni_networks(
    container: Option<&v1::ContainerInfo>,
    overlay: &str,
) -> Vec<String> {
    use v1::container_info::docker_info::Network;
    let Some(c) = container.filter(|c| c.r#type() == v1::container_info::Type::Docker) else {
        return Vec::new();
    };
    if c.docker.as_ref().map(|d| d.network()) != Some(Network::User) {
        return Vec::new();
    }
    c.network_infos
        .iter()
        .filter_map(|n| n.name.clone())
        .filter(|n| n == overlay)
        .take(1)
        .collect()
}
