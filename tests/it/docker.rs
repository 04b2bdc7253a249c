//! Docker tasks end to end: marathon-rs apps with `container.docker`, run by
//! the agent's executor on the real Docker engine, from an image the test
//! builds (`FROM scratch` plus Debian's busybox-static).

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::eventually;
use crate::cluster::{AgentProcess, Cluster, free_port, missing};
use crate::marathon::Marathon;

const IMAGE: &str = "agora-test/busybox:1";

/// Builds the test image once; `None` (after saying why) without Docker or
/// busybox-static.
pub(crate) fn image() -> Option<&'static str> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let busybox = std::path::Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err("busybox-static (/bin/busybox)".into());
        }
        let ok = std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err("a Docker engine".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::copy(busybox, dir.path().join("busybox")).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .map_err(|e| e.to_string())?;
        let out = std::process::Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("docker build: {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    match built {
        Ok(()) => Some(IMAGE),
        Err(what) => {
            missing(what);
            None
        }
    }
}

fn inspect(filter: &str) -> Vec<Value> {
    let ids = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let out = std::process::Command::new("docker")
        .arg("inspect")
        .args(&ids)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_app_serves_on_its_mapped_port_with_env_and_labels() {
    let Some(image) = image() else { return };
    let cluster = Cluster::start(2, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let app = json!({
        "id": "/docker/web",
        "cmd": "mkdir -p /www && echo \"hello $GREETING from $HOST\" > /www/index.html && exec httpd -f -p 8080 -h /www",
        "cpus": 0.2, "mem": 32, "instances": 2,
        "env": {"GREETING": "bonjour"},
        "labels": {"team": "web"},
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/index.html", "portIndex": 0,
                          "delaySeconds": 0, "intervalSeconds": 1}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("docker/web", 2).await;
    eventually("both containers are healthy", || async {
        (m.app("docker/web").await["tasksHealthy"] == 2).then_some(())
    })
    .await;
    let tasks = m.tasks("docker/web").await;
    for t in &tasks {
        let port = t["ports"][0].as_u64().unwrap();
        let body = reqwest::get(format!("http://127.0.0.1:{port}/index.html"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.starts_with("hello bonjour from agent-"), "{body}");
        // The task carries the container's own IP, as Mesos reports it.
        let ip = t["ipAddresses"][0]["ipAddress"].as_str().unwrap();
        assert_ne!(ip, "127.0.0.1", "{t}");
    }
    // Labels identify the task and carry the app's labels; limits are set.
    let id = tasks[0]["id"].as_str().unwrap();
    let containers = inspect(&format!("label=agora.task_id={id}"));
    assert_eq!(containers.len(), 1, "{containers:?}");
    let c = &containers[0];
    assert_eq!(c["Config"]["Labels"]["team"], "web");
    assert_eq!(c["HostConfig"]["Memory"], 32 * 1024 * 1024);
    assert_eq!(c["HostConfig"]["NetworkMode"], "bridge");

    // Destroy: the containers are stopped and removed.
    let (status, _) = m.call("DELETE", "/v2/apps/docker/web", None).await;
    assert_eq!(status, 200);
    eventually("the containers are gone", || async {
        (m.call("GET", "/v2/apps/docker/web", None).await.0 == 404
            && inspect(&format!("label=agora.task_id={id}")).is_empty())
        .then_some(())
    })
    .await;
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_networking_volumes_and_a_missing_image() {
    let Some(image) = image() else { return };
    let cluster = Cluster::start(1, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let shared = tempfile::tempdir().unwrap();
    // Legacy Marathon form (as marathon-python sends it): docker.network HOST, volumes at the container level.
    let app = json!({
        "id": "/docker/writer", "cmd": "echo written-by-$MESOS_TASK_ID > /data/out.txt; exec sleep 600",
        "cpus": 0.1, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"},
                      "volumes": [{"containerPath": "/data", "hostPath": shared.path().display().to_string(), "mode": "RW"}]}
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("docker/writer", 1).await;
    let task = m.tasks("docker/writer").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let written = eventually("the container wrote into the volume", || async {
        std::fs::read_to_string(shared.path().join("out.txt")).ok()
    })
    .await;
    assert_eq!(written.trim(), format!("written-by-{task}"));
    let c = &inspect(&format!("label=agora.task_id={task}"))[0];
    assert_eq!(c["HostConfig"]["NetworkMode"], "host");

    // Killing stops the container within its grace period.
    let started = std::time::Instant::now();
    m.call("DELETE", "/v2/apps/docker/writer", None).await;
    eventually("the task is killed", || async {
        inspect(&format!("label=agora.task_id={task}"))
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));

    // An image that is not there and cannot be pulled: TASK_FAILED naming it.
    let app = json!({"id": "/docker/missing", "cmd": "true", "cpus": 0.1, "mem": 16,
                     "container": {"type": "DOCKER", "docker": {"image": "agora-test/no-such-image:404"}}});
    assert_eq!(m.call("POST", "/v2/apps", Some(app)).await.0, 201);
    let failure = eventually("the launch fails with the image named", || async {
        let a = m.app("docker/missing").await;
        a["lastTaskFailure"]
            .is_object()
            .then(|| a["lastTaskFailure"].clone())
    })
    .await;
    assert_eq!(failure["state"], "TASK_FAILED");
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("agora-test/no-such-image:404"),
        "{failure}"
    );
    m.stop().await;
    cluster.stop().await;
}

fn running(container: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.State.Running}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_adopts_running_containers_and_removes_orphans() {
    use nix::sys::signal::Signal;
    let Some(image) = image() else { return };
    let cluster = Cluster::start(0, "cpus:1").await;
    let m = Marathon::start(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&cluster.master(), dir.path(), free_port());
    let app = json!({
        "id": "/docker/survivor",
        "cmd": "mkdir -p /www && echo alive > /www/index.html && exec httpd -f -p 8080 -h /www",
        "cpus": 0.2, "mem": 32,
        "networks": [{"mode": "container/bridge"}],
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "portMappings": [{"containerPort": 8080, "hostPort": 0}]},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/index.html", "portIndex": 0,
                          "delaySeconds": 0, "intervalSeconds": 1}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("docker/survivor", 1).await;
    let task = m.tasks("docker/survivor").await[0].clone();
    let (id, port) = (
        task["id"].as_str().unwrap().to_string(),
        task["ports"][0].as_u64().unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/index.html");
    let container = inspect(&format!("label=agora.task_id={id}"))[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let agent_id = task["slaveId"].as_str().unwrap().to_string();
    // A container labelled as this agent's whose executor it never ran.
    let orphan = std::process::Command::new("docker")
        .args(["run", "-d", "--label"])
        .arg(format!("agora.agent_id={agent_id}"))
        .args([
            "--label",
            "agora.framework_id=gone",
            "--label",
            "agora.executor_id=ghost",
            image,
            "sleep",
            "600",
        ])
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{orphan:?}");
    let orphan = String::from_utf8_lossy(&orphan.stdout).trim().to_string();

    // SIGTERM: the agent goes, its container stays and keeps serving.
    agent.signal(Signal::SIGTERM);
    assert!(running(&container), "{}", agent.log());
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(body.trim(), "alive");

    // The next run adopts it: same task, still running and healthy, no
    // replacement; the orphan is removed.
    agent.spawn();
    eventually("the orphaned container is removed", || async {
        (!running(&orphan) && inspect("label=agora.executor_id=ghost").is_empty()).then_some(())
    })
    .await;
    eventually("the agent is back with its task", || async {
        let tasks = crate::cluster::master_tasks(&cluster).await?;
        (tasks.len() == 1 && tasks[0]["state"] == "TASK_RUNNING").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.log().contains("recovered a running executor"),
        "{}",
        agent.log()
    );
    let tasks = m.tasks("docker/survivor").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["id"], id.as_str(), "the task was replaced");
    assert!(running(&container));
    eventually("the adopted task is healthy", || async {
        (m.app("docker/survivor").await["tasksHealthy"] == 1).then_some(())
    })
    .await;

    // The adopted executor takes orders: destroying the app kills it.
    assert_eq!(
        m.call("DELETE", "/v2/apps/docker/survivor", None).await.0,
        200
    );
    eventually("the adopted container is killed and removed", || async {
        inspect(&format!("label=agora.task_id={id}"))
            .is_empty()
            .then_some(())
    })
    .await;
    agent.signal(Signal::SIGUSR1);
    m.stop().await;
    cluster.stop().await;
}

/// The last status of the first completed task of `app` as the master's
/// operator API (GET_TASKS) reports it.
async fn completed_status(cluster: &Cluster, app: &str) -> Option<Value> {
    let resp: Value = reqwest::Client::new()
        .post(cluster.url("/api/v1"))
        .header("Content-Type", "application/json")
        .body(r#"{"type":"GET_TASKS"}"#)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let tasks = resp["get_tasks"]["completed_tasks"].as_array()?;
    let t = tasks.iter().find(|t| {
        t["task_id"]["value"]
            .as_str()
            .is_some_and(|id| id.starts_with(app))
    })?;
    t["statuses"].as_array()?.last().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limits_end_a_process_task_and_a_container() {
    let Some(image) = image() else { return };
    if agora_agent::cgroups::detect().is_err() {
        crate::cluster::missing("writable cgroups (memory and cpu controllers)");
        return;
    }
    let cluster = Cluster::start(1, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    // `tail` keeps a line without a newline in memory: 300 MB against 32 MB.
    let hog = "head -c 300000000 /dev/zero | tail";
    let process = json!({"id": "/oom/process", "cmd": hog, "cpus": 0.1, "mem": 32,
                         "backoffSeconds": 60});
    let container = json!({"id": "/oom/container", "cmd": hog, "cpus": 0.1, "mem": 32,
                           "backoffSeconds": 60,
                           "container": {"type": "DOCKER", "docker": {"image": image}}});
    for app in [process, container] {
        let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
        assert_eq!(status, 201, "{r}");
    }
    for (app, prefix, words) in [
        (
            "oom/process",
            "oom_process.",
            "Memory limit exceeded: Requested: 32MB",
        ),
        (
            "oom/container",
            "oom_container.",
            "exceeded its memory limit",
        ),
    ] {
        let status = eventually(&format!("{app} is ended by its memory limit"), || {
            completed_status(&cluster, prefix)
        })
        .await;
        assert_eq!(status["state"], "TASK_FAILED", "{status}");
        assert_eq!(
            status["reason"], "REASON_CONTAINER_LIMITATION_MEMORY",
            "{status}"
        );
        assert!(
            status["message"].as_str().unwrap().contains(words),
            "{status}"
        );
        let failure = m.app(app).await["lastTaskFailure"].clone();
        assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    }

    // A running process task sits in its own cgroup with its cpus and mem.
    let app = json!({"id": "/limits", "cmd": "sleep 600", "cpus": 0.5, "mem": 48});
    assert_eq!(m.call("POST", "/v2/apps", Some(app)).await.0, 201);
    m.settled("limits", 1).await;
    let task = m.tasks("limits").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let find = |root: &std::path::Path| {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&task))
            .expect("the task's cgroup")
    };
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    match agora_agent::cgroups::detect().unwrap() {
        agora_agent::cgroups::Hierarchy::V1 { memory, cpu } => {
            assert_eq!(
                read(find(&memory).join("memory.limit_in_bytes")),
                "50331648"
            );
            // cpus are a weight; a hard quota only with --cgroups-enable-cfs.
            assert_eq!(read(find(&cpu).join("cpu.shares")), "512");
            assert_eq!(read(find(&cpu).join("cpu.cfs_quota_us")), "-1");
        }
        agora_agent::cgroups::Hierarchy::V2 { root } => {
            assert_eq!(read(find(&root).join("memory.max")), "50331648");
            assert_eq!(read(find(&root).join("cpu.max")), "max 100000");
            assert_eq!(read(find(&root).join("cpu.weight")), "20");
        }
    }
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_grace_periods_and_a_user_network() {
    let Some(image) = image() else { return };
    let cluster = Cluster::start(1, "cpus:4;mem:4096;disk:1000").await;
    let m = Marathon::start(&cluster).await;
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().display().to_string();

    // SIGTERM first: a task that cleans up within its grace period finishes
    // cleaning; one that ignores SIGTERM is killed when the grace is over.
    let polite = json!({
        "id": "/kill/polite", "cpus": 0.1, "mem": 16, "taskKillGracePeriodSeconds": 5,
        "cmd": "trap 'echo term >> /data/polite; sleep 1; echo clean >> /data/polite; exit 0' TERM; echo up >> /data/polite; while true; do sleep 0.2; done",
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "volumes": [{"containerPath": "/data", "hostPath": data, "mode": "RW"}]}
    });
    let stubborn = json!({
        "id": "/kill/stubborn", "cpus": 0.1, "mem": 16, "taskKillGracePeriodSeconds": 1,
        "cmd": "trap 'echo ignored >> /data/stubborn' TERM; echo up >> /data/stubborn; while true; do sleep 0.2; done",
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "volumes": [{"containerPath": "/data", "hostPath": data, "mode": "RW"}]}
    });
    for app in [polite, stubborn] {
        let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
        assert_eq!(status, 201, "{r}");
    }
    m.settled("kill/polite", 1).await;
    m.settled("kill/stubborn", 1).await;
    let read = |name: &str| std::fs::read_to_string(shared.path().join(name)).unwrap_or_default();
    eventually("both tasks are up", || async {
        (read("polite").contains("up") && read("stubborn").contains("up")).then_some(())
    })
    .await;
    let ids: Vec<String> = [m.tasks("kill/polite").await, m.tasks("kill/stubborn").await]
        .iter()
        .map(|t| t[0]["id"].as_str().unwrap().to_string())
        .collect();
    for app in ["kill/polite", "kill/stubborn"] {
        assert_eq!(
            m.call("DELETE", &format!("/v2/apps/{app}"), None).await.0,
            200
        );
    }
    for id in &ids {
        eventually("the container is stopped and removed", || async {
            inspect(&format!("label=agora.task_id={id}"))
                .is_empty()
                .then_some(())
        })
        .await;
    }
    assert_eq!(
        read("polite").lines().collect::<Vec<_>>(),
        ["up", "term", "clean"]
    );
    // It saw SIGTERM and kept running, so only SIGKILL ended it.
    assert_eq!(
        read("stubborn").lines().collect::<Vec<_>>(),
        ["up", "ignored"]
    );
    for id in &ids {
        let status = eventually("the kill is reported", || completed_status(&cluster, id)).await;
        assert_eq!(status["state"], "TASK_KILLED", "{status}");
    }

    // USER networking: the container joins the named network and reports
    // its address there, where other containers reach it.
    let net = format!("agora-test-{}", std::process::id());
    let made = std::process::Command::new("docker")
        .args(["network", "create", &net])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let app = json!({
        "id": "/net/user", "cpus": 0.1, "mem": 16,
        "cmd": "mkdir -p /www && echo on-the-user-network > /www/index.html && exec httpd -f -p 8080 -h /www",
        "networks": [{"mode": "container", "name": net}],
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "portMappings": [{"containerPort": 8080, "name": "http"}]}
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("net/user", 1).await;
    let task = m.tasks("net/user").await[0].clone();
    let ip = task["ipAddresses"][0]["ipAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let c = &inspect(&format!(
        "label=agora.task_id={}",
        task["id"].as_str().unwrap()
    ))[0];
    assert_eq!(c["HostConfig"]["NetworkMode"], net.as_str());
    assert_eq!(
        c["NetworkSettings"]["Networks"][&net]["IPAddress"],
        ip.as_str()
    );
    let fetched = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", &net, image, "wget", "-qO-"])
        .arg(format!("http://{ip}:8080/index.html"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout).trim(),
        "on-the-user-network",
        "{fetched:?}"
    );
    assert_eq!(m.call("DELETE", "/v2/apps/net/user", None).await.0, 200);
    let id = task["id"].as_str().unwrap().to_string();
    eventually("the container is removed", || async {
        inspect(&format!("label=agora.task_id={id}"))
            .is_empty()
            .then_some(())
    })
    .await;
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &net])
        .output();
    m.stop().await;
    cluster.stop().await;
}
