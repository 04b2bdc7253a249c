//! The Docker containerizer, as the command executor uses it: a task whose
//! ContainerInfo is DOCKER runs as a container on the agent's Docker engine
//! (through bollard) instead of a child process.
//!
//! [`container_config`] turns the TaskInfo into the engine's create body
//! (image, command or the image's entrypoint, environment, labels, network
//! HOST/BRIDGE/USER with port mappings, volumes, a safe subset of
//! `parameters`, cpu shares/quota and memory from the task's resources) and
//! refuses what the agent does not allow (`privileged`, the Docker socket)
//! unless started with `--docker-allow-privileged`. The rest drives the
//! engine: the image (pulled only when missing or `force_pull_image`), the
//! container's output into the sandbox's stdout/stderr, its exit, its IP.

use std::collections::HashMap;
use std::path::Path;

use agora_proto::resources::Resources;
use agora_proto::v1::{self, container_info::docker_info::Network};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters as q;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

/// Label keys the agent puts on every container it starts.
pub const LABEL_AGENT: &str = "agora.agent_id";
/// The framework's id.
pub const LABEL_FRAMEWORK: &str = "agora.framework_id";
/// The task's id.
pub const LABEL_TASK: &str = "agora.task_id";
/// The executor's id.
pub const LABEL_EXECUTOR: &str = "agora.executor_id";

/// `docker run` options a task may pass as `parameters`: they change the
/// container's own environment, not the host's.
const SAFE_PARAMETERS: &[&str] = &[
    "env",
    "label",
    "hostname",
    "workdir",
    "user",
    "add-host",
    "entrypoint",
    "stop-signal",
    "dns",
];

/// What the agent lets Docker tasks do.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `privileged` and mounting the Docker socket are allowed.
    pub allow_privileged: bool,
    /// Hard cpu limits (CFS quota) besides shares (`--cgroups-enable-cfs`).
    pub enable_cfs: bool,
}

/// What can go wrong running a Docker task.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached.
    #[error("cannot reach the Docker engine: {0}")]
    Unreachable(bollard::errors::Error),
    /// The task's ContainerInfo is malformed or asks for what this agent
    /// refuses (privileged, the Docker socket, unknown parameters).
    #[error("{0}")]
    Refused(String),
    /// A forced pull failed.
    #[error("cannot pull image '{image}' (force_pull_image): {source}")]
    ForcedPull {
        /// The image.
        image: String,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// The image is missing and cannot be pulled.
    #[error("image '{image}' is not on this agent and cannot be pulled: {source}")]
    Missing {
        /// The image.
        image: String,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// Creating the container failed.
    #[error("cannot create the container: {0}")]
    Create(bollard::errors::Error),
    /// Starting it failed.
    #[error("cannot start the container: {0}")]
    Start(bollard::errors::Error),
    /// Running a command in it failed.
    #[error("cannot exec in the container: {0}")]
    Exec(bollard::errors::Error),
    /// A health check command exited non-zero.
    #[error("health check command exited with status {0}")]
    CheckFailed(i64),
    /// A health check command did not finish.
    #[error("health check command did not finish")]
    CheckUnfinished,
    /// Any other answer of the engine.
    #[error(transparent)]
    Engine(#[from] bollard::errors::Error),
}

fn refused(message: impl Into<String>) -> DockerError {
    DockerError::Refused(message.into())
}

/// The engine at the API version the agent negotiated (`version`, `M.m`),
/// without asking again; else negotiated here.
pub async fn connect_at(version: Option<&str>) -> Result<Docker, DockerError> {
    let parsed = version.and_then(|v| {
        let (major, minor) = v.split_once('.')?;
        Some(bollard::ClientVersion {
            major_version: major.parse().ok()?,
            minor_version: minor.parse().ok()?,
        })
    });
    match parsed {
        Some(v) if std::env::var_os("DOCKER_HOST").is_none() => {
            Docker::connect_with_local("unix:///var/run/docker.sock", 120, &v)
                .map_err(DockerError::Unreachable)
        }
        _ => connect().await,
    }
}

/// The engine, with the API version negotiated.
pub async fn connect() -> Result<Docker, DockerError> {
    let d = Docker::connect_with_local_defaults().map_err(DockerError::Unreachable)?;
    d.negotiate_version()
        .await
        .map_err(DockerError::Unreachable)
}

/// A scalar resource of a task (0 when absent).
pub(crate) fn scalar(task: &v1::TaskInfo, name: &str) -> f64 {
    Resources::from_protos(&task.resources)
        .map(|r| r.scalar(name))
        .unwrap_or(0.0)
}

/// The create body for `task` (pure; the engine is not asked).
pub fn container_config(
    task: &v1::TaskInfo,
    env: &[(String, String)],
    labels: &[(String, String)],
    policy: &Policy,
) -> Result<ContainerCreateBody, DockerError> {
    let container = task
        .container
        .as_ref()
        .ok_or_else(|| refused("the task has no ContainerInfo"))?;
    let docker = container
        .docker
        .as_ref()
        .ok_or_else(|| refused("a DOCKER container needs ContainerInfo.docker"))?;
    if docker.image.trim().is_empty() {
        return Err(refused("ContainerInfo.docker.image is empty"));
    }
    if docker.privileged.unwrap_or(false) && !policy.allow_privileged {
        return Err(refused(
            "privileged containers are refused by this agent (start it with --docker-allow-privileged)",
        ));
    }
    let mut body = ContainerCreateBody {
        image: Some(docker.image.clone()),
        hostname: container.hostname.clone(),
        ..Default::default()
    };
    // The command: `sh -c value` by default, else the image's entrypoint
    // with the arguments.
    if let Some(cmd) = &task.command {
        if cmd.shell.unwrap_or(true) {
            if let Some(v) = cmd.value.as_ref().filter(|v| !v.is_empty()) {
                body.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
                body.cmd = Some(vec![v.clone()]);
            }
        } else if !cmd.arguments.is_empty() {
            body.cmd = Some(cmd.arguments.clone());
        }
    }
    let mut all_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Some(e) = task.command.as_ref().and_then(|c| c.environment.as_ref()) {
        all_env.extend(
            e.variables
                .iter()
                .filter_map(|v| Some(format!("{}={}", v.name, v.value.as_ref()?))),
        );
    }
    let mut all_labels: HashMap<String, String> = labels.iter().cloned().collect();
    if let Some(l) = &task.labels {
        for label in &l.labels {
            all_labels.insert(label.key.clone(), label.value.clone().unwrap_or_default());
        }
    }
    let mut host = HostConfig::default();
    // Resources: cpu shares (and a CFS quota when enabled, as Mesos'
    // --cgroups_enable_cfs), memory.
    let cpus = scalar(task, "cpus");
    if cpus > 0.0 {
        host.cpu_shares = Some((cpus * 1024.0).round().max(2.0) as i64);
        if policy.enable_cfs {
            host.cpu_period = Some(100_000);
            host.cpu_quota = Some((cpus * 100_000.0).round().max(1000.0) as i64);
        }
    }
    let mem = scalar(task, "mem");
    if mem > 0.0 {
        host.memory = Some((mem * 1024.0 * 1024.0) as i64);
        host.memory_swap = Some((mem * 1024.0 * 1024.0) as i64);
    }
    set_network(&mut body, &mut host, container, docker)?;
    let binds = volume_binds(container, policy)?;
    if !binds.is_empty() {
        host.binds = Some(binds);
    }
    // Parameters (a safe subset).
    let mut extra_hosts = Vec::new();
    for p in &docker.parameters {
        match p.key.as_str() {
            "env" | "e" => all_env.push(p.value.clone()),
            "label" | "l" => {
                let (k, v) = p.value.split_once('=').unwrap_or((&p.value, ""));
                all_labels.insert(k.to_string(), v.to_string());
            }
            "hostname" | "h" => body.hostname = Some(p.value.clone()),
            "workdir" | "w" => body.working_dir = Some(p.value.clone()),
            "user" | "u" => body.user = Some(p.value.clone()),
            "add-host" => extra_hosts.push(p.value.clone()),
            "entrypoint" => body.entrypoint = Some(vec![p.value.clone()]),
            "stop-signal" => body.stop_signal = Some(p.value.clone()),
            "dns" => host.dns.get_or_insert_with(Vec::new).push(p.value.clone()),
            other => {
                return Err(refused(format!(
                    "docker parameter '{other}' is not allowed (allowed: {})",
                    SAFE_PARAMETERS.join(", ")
                )));
            }
        }
    }
    if !extra_hosts.is_empty() {
        host.extra_hosts = Some(extra_hosts);
    }
    host.privileged = Some(docker.privileged.unwrap_or(false));
    body.env = Some(all_env);
    body.labels = Some(all_labels);
    body.host_config = Some(host);
    Ok(body)
}

/// The container's network (Mesos' `docker.network`, host by default):
/// bridge networking with its port mappings, or a user network by name.
fn set_network(
    body: &mut ContainerCreateBody,
    host: &mut HostConfig,
    container: &v1::ContainerInfo,
    docker: &v1::container_info::DockerInfo,
) -> Result<(), DockerError> {
    let network = docker
        .network
        .and_then(|n| Network::try_from(n).ok())
        .unwrap_or(Network::Host);
    match network {
        Network::Host => host.network_mode = Some("host".into()),
        Network::None => host.network_mode = Some("none".into()),
        Network::Bridge => {
            host.network_mode = Some("bridge".into());
            let mut exposed = Vec::new();
            let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
            for pm in &docker.port_mappings {
                let protos = pm.protocol.clone().unwrap_or_else(|| "tcp".into());
                for proto in protos.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if proto != "tcp" && proto != "udp" {
                        return Err(refused(format!(
                            "port mapping protocol '{proto}' must be tcp or udp"
                        )));
                    }
                    let key = format!("{}/{proto}", pm.container_port);
                    exposed.push(key.clone());
                    bindings
                        .entry(key)
                        .or_insert_with(|| Some(Vec::new()))
                        .get_or_insert_with(Vec::new)
                        .push(PortBinding {
                            host_ip: Some("0.0.0.0".into()),
                            host_port: Some(pm.host_port.to_string()),
                        });
                }
            }
            body.exposed_ports = Some(exposed);
            host.port_bindings = Some(bindings);
        }
        Network::User => {
            let name = container
                .network_infos
                .iter()
                .find_map(|n| n.name.clone())
                .ok_or_else(|| {
                    refused("USER networking needs a network name in ContainerInfo.network_infos")
                })?;
            host.network_mode = Some(name);
        }
    }
    Ok(())
}

/// The container's bind mounts from its volumes: absolute paths only, and
/// the Docker socket only where privileged containers are allowed.
fn volume_binds(
    container: &v1::ContainerInfo,
    policy: &Policy,
) -> Result<Vec<String>, DockerError> {
    let mut binds = Vec::new();
    for v in &container.volumes {
        let Some(host_path) = v.host_path.as_ref().filter(|p| !p.is_empty()) else {
            continue;
        };
        if !host_path.starts_with('/') || !v.container_path.starts_with('/') {
            return Err(refused(format!(
                "volume {host_path}:{} must use absolute paths",
                v.container_path
            )));
        }
        if host_path.trim_end_matches('/').ends_with("docker.sock") && !policy.allow_privileged {
            return Err(refused(
                "mounting the Docker socket is refused by this agent (start it with --docker-allow-privileged)",
            ));
        }
        let mode = if v.mode == v1::volume::Mode::Ro as i32 {
            "ro"
        } else {
            "rw"
        };
        binds.push(format!("{host_path}:{}:{mode}", v.container_path));
    }
    Ok(binds)
}

/// Where a Docker task finds its sandbox's persistent volumes, as under
/// Mesos' Docker containerizer.
pub const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";

/// Bind mounts for the task's persistent volumes: the agent linked each
/// into the sandbox at its container path; the container gets the volume's
/// directory at `/mnt/mesos/sandbox/<container path>`.
pub fn persistent_volume_binds(
    task: &v1::TaskInfo,
    sandbox: &std::path::Path,
) -> Result<Vec<String>, DockerError> {
    let mut binds = Vec::new();
    for r in &task.resources {
        let Some(volume) = r
            .disk
            .as_ref()
            .filter(|d| d.persistence.is_some())
            .and_then(|d| d.volume.as_ref())
        else {
            continue;
        };
        let link = sandbox.join(&volume.container_path);
        let host = std::fs::canonicalize(&link).map_err(|e| {
            refused(format!(
                "persistent volume {} is not in the sandbox: {e}",
                volume.container_path
            ))
        })?;
        let mode = if volume.mode == v1::volume::Mode::Ro as i32 {
            "ro"
        } else {
            "rw"
        };
        binds.push(format!(
            "{}:{SANDBOX_MOUNT}/{}:{mode}",
            host.display(),
            volume.container_path
        ));
    }
    Ok(binds)
}

/// Makes sure the image is there: pulled when missing or `force_pull`.
pub async fn ensure_image(d: &Docker, image: &str, force_pull: bool) -> Result<(), DockerError> {
    let present = d.inspect_image(image).await.is_ok();
    if present && !force_pull {
        return Ok(());
    }
    let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((n, t)) => (n.to_string(), t.to_string()),
        None => (image.to_string(), "latest".to_string()),
    };
    let mut pull = d.create_image(
        Some(q::CreateImageOptions {
            from_image: Some(name),
            tag: Some(tag),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(step) = pull.next().await {
        if let Err(source) = step {
            let image = image.to_string();
            return Err(if present {
                DockerError::ForcedPull { image, source }
            } else {
                DockerError::Missing { image, source }
            });
        }
    }
    Ok(())
}

/// Creates and starts the container; returns its id.
pub async fn start(
    d: &Docker,
    name: &str,
    body: ContainerCreateBody,
    image: &str,
    force_pull: bool,
) -> Result<String, DockerError> {
    if force_pull {
        ensure_image(d, image, true).await?;
    }
    let create = |body| {
        d.create_container(
            Some(q::CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
    };
    // The image is usually there: asking first would cost every launch a
    // round trip. A 404 means it is missing (or a named network is).
    let created = match create(body.clone()).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            ensure_image(d, image, false).await?;
            create(body).await
        }
        other => other,
    }
    .map_err(DockerError::Create)?;
    if let Err(e) = d
        .start_container(&created.id, None::<q::StartContainerOptions>)
        .await
    {
        let _ = remove(d, &created.id).await;
        return Err(DockerError::Start(e));
    }
    Ok(created.id)
}

/// Copies the container's output into the sandbox's stdout/stderr files
/// until it ends.
pub async fn copy_logs(d: Docker, id: String, sandbox: std::path::PathBuf) {
    use bollard::container::LogOutput;
    let open = |name: &str| {
        let p = sandbox.join(name);
        async move {
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .await
        }
    };
    let (Ok(mut out), Ok(mut err)) = (open("stdout").await, open("stderr").await) else {
        return;
    };
    let mut logs = d.logs(
        &id,
        Some(q::LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    while let Some(Ok(chunk)) = logs.next().await {
        let _ = match chunk {
            LogOutput::StdErr { message } => err.write_all(&message).await,
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                out.write_all(&message).await
            }
            LogOutput::StdIn { .. } => Ok(()),
        };
    }
    let _ = out.flush().await;
    let _ = err.flush().await;
}

/// How a container ended.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Its exit code.
    pub code: i64,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

/// Waits for the container to end.
pub async fn wait(d: &Docker, id: &str) -> Exit {
    let mut w = d.wait_container(id, None::<q::WaitContainerOptions>);
    let code = match w.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        _ => -1,
    };
    // The engine may learn of an OOM kill after the exit: a SIGKILLed
    // container is asked again for a moment.
    let mut oom_killed = false;
    for _ in 0..10 {
        oom_killed = d
            .inspect_container(id, None::<q::InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state?.oom_killed)
            .unwrap_or(false);
        if oom_killed || code != 128 + 9 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Exit { code, oom_killed }
}

/// The process id of the container's first process, while it runs.
pub async fn pid(d: &Docker, id: &str) -> Option<u32> {
    let c = d
        .inspect_container(id, None::<q::InspectContainerOptions>)
        .await
        .ok()?;
    c.state?
        .pid
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// The container's IP address on its network (none with host networking).
pub async fn ip_address(d: &Docker, id: &str) -> Option<String> {
    let c = d
        .inspect_container(id, None::<q::InspectContainerOptions>)
        .await
        .ok()?;
    let settings = c.network_settings?;
    settings
        .networks?
        .into_values()
        .filter_map(|n| n.ip_address)
        .find(|ip| !ip.is_empty())
}

/// Stops it (SIGTERM, then SIGKILL after `grace`).
pub async fn stop(d: &Docker, id: &str, grace: std::time::Duration) -> Result<(), DockerError> {
    d.stop_container(
        id,
        Some(q::StopContainerOptions {
            t: Some(grace.as_secs().min(i32::MAX as u64) as i32),
            ..Default::default()
        }),
    )
    .await
    .map_err(DockerError::Engine)
}

/// Every container (running or not) labelled with this agent's id, as its
/// labels describe it (`agora.framework_id`, `agora.executor_id`,
/// `agora.task_id`).
pub async fn list_labelled(
    d: &Docker,
    agent: &str,
) -> Result<Vec<agora_agent_core::Container>, DockerError> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_AGENT}={agent}")])]);
    let list = d
        .list_containers(Some(q::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
            Some(agora_agent_core::Container {
                id: c.id?,
                framework: get(LABEL_FRAMEWORK),
                executor: get(LABEL_EXECUTOR),
                task: get(LABEL_TASK),
            })
        })
        .collect())
}

/// Removes it (and its anonymous volumes).
pub async fn remove(d: &Docker, id: &str) -> Result<(), DockerError> {
    d.remove_container(
        id,
        Some(q::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        }),
    )
    .await
    .map_err(DockerError::Engine)
}

/// Runs `command` in the container (COMMAND health checks).
pub async fn exec(d: &Docker, id: &str, command: &str) -> Result<(), DockerError> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let e = d
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec![
                    "/bin/sh".to_string(),
                    "-c".to_string(),
                    command.to_string(),
                ]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(DockerError::Exec)?;
    if let StartExecResults::Attached { mut output, .. } =
        d.start_exec(&e.id, None).await.map_err(DockerError::Exec)?
    {
        while output.next().await.is_some() {}
    }
    let inspect = d.inspect_exec(&e.id).await?;
    match inspect.exit_code {
        Some(0) => Ok(()),
        Some(code) => Err(DockerError::CheckFailed(code)),
        None => Err(DockerError::CheckUnfinished),
    }
}

/// A container name for a task: Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]`.
pub fn container_name(task_id: &str, container_id: &str) -> String {
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!(
        "agora-{safe}-{}",
        &container_id[..container_id.len().min(8)]
    )
}

/// The host path must exist for a bind mount.
pub fn check_host_paths(task: &v1::TaskInfo) -> Result<(), DockerError> {
    for v in task.container.iter().flat_map(|c| c.volumes.iter()) {
        if let Some(p) = v.host_path.as_deref().filter(|p| !p.is_empty())
            && !Path::new(p).exists()
        {
            return Err(refused(format!(
                "volume host path {p} does not exist on this agent"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: serde_json::Value) -> v1::TaskInfo {
        agora_proto::json::from_value(&json).unwrap()
    }

    fn docker_task(network: &str, extra: serde_json::Value) -> v1::TaskInfo {
        let mut t = serde_json::json!({
            "name": "web", "task_id": {"value": "web.1"}, "agent_id": {"value": "a"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}
            ],
            "command": {"value": "httpd -f -p 8080", "environment": {"variables": [{"name": "X", "value": "1"}]}},
            "labels": {"labels": [{"key": "tier", "value": "front"}]},
            "container": {"type": "DOCKER", "docker": {"image": "busybox:local", "network": network,
                "port_mappings": [{"host_port": 31005, "container_port": 8080, "protocol": "tcp"}]}}
        });
        if let (Some(o), Some(e)) = (t["container"].as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        task(t)
    }

    #[test]
    fn bridge_tasks_map_ports_and_carry_env_labels_and_limits() {
        let t = docker_task(
            "BRIDGE",
            serde_json::json!({
                "volumes": [{"container_path": "/data", "host_path": "/tmp", "mode": "RO"}]
            }),
        );
        let env = [("PORT0".to_string(), "31005".to_string())];
        let labels = [(LABEL_TASK.to_string(), "web.1".to_string())];
        let b = container_config(&t, &env, &labels, &Policy::default()).unwrap();
        assert_eq!(
            b.entrypoint.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".to_string()][..])
        );
        assert_eq!(
            b.cmd.as_deref(),
            Some(&["httpd -f -p 8080".to_string()][..])
        );
        let env = b.env.unwrap();
        assert!(env.contains(&"PORT0=31005".to_string()) && env.contains(&"X=1".to_string()));
        let labels = b.labels.unwrap();
        assert_eq!(labels["tier"], "front");
        assert_eq!(labels[LABEL_TASK], "web.1");
        let h = b.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        let binding = &h.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!(binding.host_port.as_deref(), Some("31005"));
        assert_eq!(h.memory, Some(64 * 1024 * 1024));
        assert_eq!(h.cpu_shares, Some(512));
        assert_eq!(h.cpu_quota, None, "no hard cpu limit unless enabled");
        let cfs = Policy {
            enable_cfs: true,
            ..Policy::default()
        };
        let h = container_config(&t, &[], &[], &cfs)
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(h.cpu_quota, Some(50_000));
        assert_eq!(h.binds.unwrap(), ["/tmp:/data:ro"]);
        assert_eq!(h.privileged, Some(false));
    }

    #[test]
    fn dangerous_settings_are_refused_unless_allowed() {
        let t = docker_task("HOST", serde_json::json!({}));
        let mut privileged = t.clone();
        privileged
            .container
            .as_mut()
            .unwrap()
            .docker
            .as_mut()
            .unwrap()
            .privileged = Some(true);
        let err = container_config(&privileged, &[], &[], &Policy::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--docker-allow-privileged"), "{err}");
        assert!(
            container_config(
                &privileged,
                &[],
                &[],
                &Policy {
                    allow_privileged: true,
                    enable_cfs: false,
                }
            )
            .is_ok()
        );
        let sock = docker_task(
            "HOST",
            serde_json::json!({
                "volumes": [{"container_path": "/var/run/docker.sock", "host_path": "/var/run/docker.sock", "mode": "RW"}]
            }),
        );
        assert!(
            container_config(&sock, &[], &[], &Policy::default())
                .unwrap_err()
                .to_string()
                .contains("Docker socket")
        );
        let mut param = t.clone();
        param
            .container
            .as_mut()
            .unwrap()
            .docker
            .as_mut()
            .unwrap()
            .parameters = vec![v1::Parameter {
            key: "cap-add".into(),
            value: "ALL".into(),
        }];
        assert!(
            container_config(&param, &[], &[], &Policy::default())
                .unwrap_err()
                .to_string()
                .contains("cap-add")
        );
        let h = container_config(&t, &[], &[], &Policy::default())
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("host"));
    }

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(
            container_name("g_web.1234", "abcdef0123"),
            "agora-g_web.1234-abcdef01"
        );
        assert_eq!(container_name("a b/c", "x"), "agora-a_b_c-x");
    }
}
