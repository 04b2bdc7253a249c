//! The executor's process tasks: a command in the sandbox, as its user,
//! in its cgroup when isolation is on, its exit watched.

use super::*;

impl Executor {
    /// Runs a process task: its URIs fetched, the sandbox given to its
    /// user, then the command forked. Failures end the task with the cause.
    pub(super) async fn launch_process(&mut self, task: v1::TaskInfo) {
        let id = task.task_id.value.clone();
        let Some(command) = task.command.clone() else {
            self.fail_to_start(&id, "Task has no command".into(), Reason::TaskInvalid)
                .await;
            return;
        };
        let env = task_env(&task, &self.directory.to_string_lossy());
        let user = match self.task_user(&task) {
            Ok(u) => u,
            Err(message) => {
                warn!(task = %id, %message, "cannot run the task as its user");
                self.fail_to_start(&id, message, Reason::ContainerLaunchFailed)
                    .await;
                return;
            }
        };
        if !command.uris.is_empty()
            && let Err(message) = fetch::fetch_all(&command.uris, &self.directory).await
        {
            warn!(task = %id, %message, "fetching failed");
            self.fail_to_start(&id, message, Reason::ContainerLaunchFailed)
                .await;
            return;
        }
        if let Some(u) = &user
            && let Err(e) = u.own(&self.directory)
        {
            let message = format!("cannot give the sandbox to user '{}': {e}", u.name);
            self.fail_to_start(&id, message, Reason::ContainerLaunchFailed)
                .await;
            return;
        }
        self.fork(task, command, env, user).await;
    }

    /// Forks a process task's command and watches it; RUNNING once it runs.
    async fn fork(
        &mut self,
        task: v1::TaskInfo,
        command: v1::CommandInfo,
        env: Vec<(String, String)>,
        user: Option<users::TaskUser>,
    ) {
        let id = task.task_id.value.clone();
        let cgroup = self.cgroup_for(&task);
        let spawned = sandbox::command(&sandbox::Spec {
            command: &command,
            env: &env,
            dir: &self.directory,
        })
        .and_then(|mut c| {
            if let Some(cg) = &cgroup {
                cg.join_on_spawn(&mut c);
            }
            if let Some(u) = &user {
                u.switch_on_spawn(&mut c);
            }
            c.spawn()
        });
        // STARTING goes out after the fork, so that the command's start is
        // not delayed by a round trip to the agent.
        self.update(&id, TaskState::TaskStarting, None, None).await;
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy();
                }
                let message = format!("Failed to launch the command: {e}");
                self.update(
                    &id,
                    TaskState::TaskFailed,
                    Some(message),
                    Some(Reason::CommandExecutorFailed),
                )
                .await;
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        sandbox::record_group(&self.directory, &id, pid);
        info!(task = %id, pid, "forked command");
        if let Some(t) = self.tasks.get_mut(&id) {
            t.pgid = Some(pid as i32);
            t.memory = (docker::scalar(&task, "mem") * 1024.0 * 1024.0) as u64;
            t.cgroup = cgroup;
            t.user = user;
            if let Some(hc) = task.health_check.clone() {
                let mut check_env = env.clone();
                if let Some(e) = &command.environment {
                    check_env.extend(
                        e.variables
                            .iter()
                            .filter_map(|v| Some((v.name.clone(), v.value.clone()?))),
                    );
                }
                t.check_env = check_env;
                t.checker = Some(health::Checker::new(hc, Instant::now()));
            }
        }
        let exits = self.exits.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = exits.send((task_id, status));
            }
        });
        self.update(&id, TaskState::TaskRunning, None, None).await;
    }

    /// The user a process task runs as, when the agent switches users
    /// (`AGORA_SWITCH_USER`, and this executor is root) and it is not the
    /// executor's own: its command's, else its framework's.
    fn task_user(&self, task: &v1::TaskInfo) -> Result<Option<users::TaskUser>, String> {
        let switch = std::env::var("AGORA_SWITCH_USER").is_ok_and(|v| v == "1");
        if !switch || !users::can_switch() {
            return Ok(None);
        }
        let name = task
            .command
            .as_ref()
            .and_then(|c| c.user.clone())
            .or_else(|| self.framework_info.as_ref().map(|f| f.user.clone()))
            .filter(|u| !u.is_empty());
        let Some(name) = name else {
            return Ok(None);
        };
        let user = users::lookup(&name)?;
        Ok((user.uid != nix::unistd::Uid::effective()).then_some(user))
    }

    /// A cgroup with the task's cpu and memory, when isolation is on; a
    /// failure is logged and the task runs without limits.
    fn cgroup_for(&mut self, task: &v1::TaskInfo) -> Option<cgroups::Cgroup> {
        let hierarchy = self
            .cgroups
            .get_or_insert_with(|| {
                if std::env::var("AGORA_ISOLATION").is_ok_and(|v| v == "cgroups") {
                    cgroups::detect()
                        .map_err(|e| warn!(error = %e, "no cgroups: tasks run without limits"))
                        .ok()
                } else {
                    None
                }
            })
            .as_ref()?;
        let limits = cgroups::Limits {
            cpus: docker::scalar(task, "cpus"),
            cfs: cfs_enabled(),
            memory: (docker::scalar(task, "mem") * 1024.0 * 1024.0) as u64,
        };
        hierarchy
            .create(&cgroups::name_for(&task.task_id.value), limits)
            .map_err(|e| warn!(task = %task.task_id.value, error = %e, "cannot create the task's cgroup; it runs without limits"))
            .ok()
    }
}
