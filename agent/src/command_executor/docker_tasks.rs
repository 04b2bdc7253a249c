//! The executor's Docker tasks: a container per task through the engine
//! (bollard), its exit, and removing the containers at the end.

use super::*;

impl Executor {
    /// Runs a Docker task: image, container, output into the sandbox, exit
    /// watched. Failures end the task as TASK_FAILED with the cause.
    pub(super) async fn launch_docker(&mut self, task: v1::TaskInfo) {
        let id = task.task_id.value.clone();
        self.update(&id, TaskState::TaskStarting, None, None).await;
        match self.start_container(&task).await {
            Ok((container, ip, network)) => {
                info!(task = %id, %container, ?ip, "container started");
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.container = Some(container);
                    t.ip = ip;
                    t.network = network;
                    if let Some(hc) = task.health_check.clone() {
                        t.check_env = task_env(&task, &self.directory.to_string_lossy());
                        t.checker = Some(health::Checker::new(hc, Instant::now()));
                    }
                }
                self.update(&id, TaskState::TaskRunning, None, None).await;
            }
            Err(message) => {
                warn!(task = %id, %message, "cannot run the container");
                self.update(
                    &id,
                    TaskState::TaskFailed,
                    Some(message),
                    Some(Reason::ContainerLaunchFailed),
                )
                .await;
            }
        }
    }

    /// Starts the task's container: its id, its address, and the CNI
    /// network it joined.
    pub(super) async fn start_container(
        &mut self,
        task: &v1::TaskInfo,
    ) -> Result<(String, Option<String>, Option<v1::NetworkInfo>), String> {
        let enabled =
            std::env::var("AGORA_CONTAINERIZERS").unwrap_or_else(|_| "docker,process".into());
        if !enabled.split(',').any(|c| c.trim() == "docker") {
            return Err(
                "the docker containerizer is not enabled on this agent (--containerizers)".into(),
            );
        }
        let d = match &self.docker {
            Some(d) => d.clone(),
            None => {
                let version = std::env::var("AGORA_DOCKER_API_VERSION").ok();
                let d = docker::connect_at(version.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                self.docker = Some(d.clone());
                d
            }
        };
        if let Some(command) = &task.command
            && !command.uris.is_empty()
        {
            fetch::fetch_all(&command.uris, &self.directory).await?;
        }
        docker::check_host_paths(task).map_err(|e| e.to_string())?;
        let mut task = task.clone();
        // The sandbox is mounted where Mesos mounts it.
        if let Some(c) = task.container.as_mut() {
            c.volumes.push(v1::Volume {
                mode: v1::volume::Mode::Rw as i32,
                container_path: "/mnt/mesos/sandbox".into(),
                host_path: Some(self.directory.to_string_lossy().into_owned()),
                ..Default::default()
            });
        }
        let env = task_env(&task, "/mnt/mesos/sandbox");
        let agent = std::env::var("MESOS_SLAVE_ID").unwrap_or_default();
        let labels = vec![
            (docker::LABEL_AGENT.to_string(), agent),
            (
                docker::LABEL_FRAMEWORK.to_string(),
                self.framework_id.clone(),
            ),
            (docker::LABEL_EXECUTOR.to_string(), self.executor_id.clone()),
            (docker::LABEL_TASK.to_string(), task.task_id.value.clone()),
        ];
        let policy = docker::Policy {
            allow_privileged: std::env::var("AGORA_DOCKER_ALLOW_PRIVILEGED")
                .is_ok_and(|v| v == "1"),
            enable_cfs: cfs_enabled(),
        };
        let mut body =
            docker::container_config(&task, &env, &labels, &policy).map_err(|e| e.to_string())?;
        let volumes =
            docker::persistent_volume_binds(&task, &self.directory).map_err(|e| e.to_string())?;
        if !volumes.is_empty()
            && let Some(h) = body.host_config.as_mut()
        {
            h.binds.get_or_insert_with(Vec::new).extend(volumes);
        }
        // On a CNI network (the overlay), the container starts on none of
        // Docker's and joins it through CNI once it runs.
        let cni = cni_network(&task);
        if cni.is_some()
            && let Some(h) = body.host_config.as_mut()
        {
            h.network_mode = Some("none".into());
        }
        let info = task.container.as_ref().and_then(|c| c.docker.as_ref());
        let image = info.map(|i| i.image.clone()).unwrap_or_default();
        let force_pull = info.and_then(|i| i.force_pull_image).unwrap_or(false);
        let host_network = body
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            == Some("host");
        let container_id = self
            .container_id
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        let name = docker::container_name(&task.task_id.value, &container_id);
        let container = docker::start(&d, &name, body, &image, force_pull)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(docker::copy_logs(
            d.clone(),
            container.clone(),
            self.directory.clone(),
        ));
        let (waiter, exits, task_id, c) = (
            d.clone(),
            self.docker_exits.clone(),
            task.task_id.value.clone(),
            container.clone(),
        );
        tokio::spawn(async move {
            let exit = docker::wait(&waiter, &c).await;
            let _ = exits.send((task_id, exit));
        });
        if let Some((asked, config)) = cni {
            return match self.join_cni(&d, &container, &asked, config).await {
                Ok(n) => {
                    let ip = n.ip_addresses.first().and_then(|a| a.ip_address.clone());
                    Ok((container, ip, Some(n)))
                }
                Err(e) => {
                    let _ = docker::remove(&d, &container).await;
                    Err(format!(
                        "cannot join network {:?}: {e}",
                        asked.name.unwrap_or_default()
                    ))
                }
            };
        }
        // On the host's network the task has the host's address.
        let ip = if host_network {
            None
        } else {
            docker::ip_address(&d, &container).await
        };
        Ok((container, ip, None))
    }

    /// Joins the running container `container` to network `asked` through
    /// CNI, recorded under this executor's container id (the agent undoes
    /// it when the executor ends).
    async fn join_cni(
        &self,
        d: &bollard::Docker,
        container: &str,
        asked: &v1::NetworkInfo,
        config: serde_json::Value,
    ) -> Result<v1::NetworkInfo, String> {
        let pid = docker::pid(d, container)
            .await
            .ok_or("the container has no process (it exited at once?)")?;
        let (Ok(plugins), Ok(root)) = (
            std::env::var("AGORA_CNI_PATH"),
            std::env::var("AGORA_CNI_ROOT"),
        ) else {
            return Err("the agent gave no CNI settings".into());
        };
        let cni = crate::cni::Cni::for_executor(plugins, root.into());
        let run = self
            .container_id
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default();
        cni.join_process(&run, pid, asked, config)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) async fn container_exited(&mut self, id: &str, exit: docker::Exit) {
        let Some(t) = self.tasks.get(id) else { return };
        let (state, reason, message) = if let Some(cause) = &t.health_kill {
            (
                TaskState::TaskKilled,
                None,
                format!("Task killed after failing its health checks: {cause}"),
            )
        } else if t.killed {
            (
                TaskState::TaskKilled,
                None,
                format!("Container stopped (exit status {})", exit.code),
            )
        } else if exit.oom_killed {
            (
                TaskState::TaskFailed,
                Some(Reason::ContainerLimitationMemory),
                "Container exceeded its memory limit and was killed".to_string(),
            )
        } else if exit.code == 0 {
            (
                TaskState::TaskFinished,
                None,
                "Container exited with status 0".to_string(),
            )
        } else {
            (
                TaskState::TaskFailed,
                None,
                format!("Container exited with status {}", exit.code),
            )
        };
        info!(task = %id, %message);
        self.update(id, state, Some(message), reason).await;
    }

    /// Removes the containers of finished tasks (their terminal updates are
    /// acknowledged by now).
    pub(super) async fn remove_containers(&mut self) {
        let Some(d) = self.docker.clone() else { return };
        for t in self.tasks.values() {
            if let Some(c) = &t.container
                && let Err(e) = docker::remove(&d, c).await
            {
                warn!(container = %c, error = %e, "cannot remove the container");
            }
        }
    }
}

/// The CNI network a Docker task joins: its USER network, when the agent
/// handed its configuration (`AGORA_CNI_NETWORKS`); the NetworkInfo it
/// asked with, and the configuration.
fn cni_network(task: &v1::TaskInfo) -> Option<(v1::NetworkInfo, serde_json::Value)> {
    use v1::container_info::docker_info::Network;
    let c = task.container.as_ref()?;
    if c.docker.as_ref()?.network() != Network::User {
        return None;
    }
    let asked = c.network_infos.iter().find(|n| n.name.is_some())?.clone();
    let configs: serde_json::Value =
        serde_json::from_str(&std::env::var("AGORA_CNI_NETWORKS").ok()?).ok()?;
    let config = configs.get(asked.name.as_deref()?)?.clone();
    Some((asked, config))
}
