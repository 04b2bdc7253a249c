//! Local persistent volumes end to end: marathon-rs (role `db`) runs a
//! resident app on a real agent; each of its tasks appends a line to a file
//! on its volume. A killed task's replacement and the task after an agent
//! restart find the lines of those before them; deleting the app destroys
//! the volume and unreserves its resources. The operator API reserves and
//! unreserves over HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::cluster::{Cluster, eventually, start_agent};
use crate::marathon::Marathon;

const RESOURCES: &str = "cpus:2;mem:1024;disk:500";

/// The volume directories under an agent's work dir.
fn volume_dirs(agent_dir: &Path) -> Vec<PathBuf> {
    let root = agent_dir.join("volumes").join("roles").join("db");
    std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

fn lines(volume: &Path) -> usize {
    std::fs::read_to_string(volume.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn state_agent(cluster: &Cluster) -> Value {
    let state: Value = reqwest::get(cluster.url("/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["slaves"][0].clone()
}

async fn operator(cluster: &Cluster, call: Value) -> (u16, String) {
    cluster.post("/api/v1", &call).await
}

async fn running_task(m: &Marathon, not: Option<&str>) -> String {
    eventually("a running task of /db", || async {
        m.tasks("db")
            .await
            .into_iter()
            .find(|t| t["state"] == "TASK_RUNNING" && t["id"].as_str() != not)
            .and_then(|t| t["id"].as_str().map(str::to_string))
    })
    .await
}

/// marathon-rs with role `db`, whose resident apps reserve for it.
async fn marathon_for_db(cluster: &Cluster) -> Marathon {
    let work_dir = tempfile::tempdir().unwrap();
    let mut o = agora_marathon::MarathonOptions::new(&cluster.master(), work_dir.path().into());
    o.tick = Duration::from_millis(200);
    o.role = "db".into();
    o.config.decline_offer_seconds = 2.0;
    let running = agora_marathon::start(o, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    Marathon::attach(running, work_dir, cluster.master())
}

/// Deploys the resident app `app` (each of its tasks appends a line to
/// `runs` on its volume), waits for the first task's line, kills that task
/// and waits for its replacement's line on the same volume: the volume's
/// directory and the replacement.
async fn deploy_and_replace(m: &Marathon, agent_dir: &Path, app: Value) -> (PathBuf, String) {
    let (status, body) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{body}");
    let first = running_task(m, None).await;
    let volume = eventually("the volume's directory", || async {
        volume_dirs(agent_dir).pop()
    })
    .await;
    eventually("the first run's line", || async {
        (lines(&volume) == 1).then_some(())
    })
    .await;
    // A killed task's replacement comes back to the volume.
    let (status, _) = m
        .call("DELETE", &format!("/v2/apps/db/tasks/{first}"), None)
        .await;
    assert_eq!(status, 200);
    let second = running_task(m, Some(&first)).await;
    eventually("the second run's line", || async {
        (lines(&volume) == 2).then_some(())
    })
    .await;
    (volume, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_apps_data_outlives_its_tasks_and_agent_restarts() {
    let mut cluster = Cluster::start(1, RESOURCES).await;
    let agent_dir = cluster.dir.path().join("agent-1");
    let m = marathon_for_db(&cluster).await;

    let (volume, second) = deploy_and_replace(
        &m,
        &agent_dir,
        json!({
            "id": "/db", "cmd": "echo run >> data/runs && sleep 600",
            "cpus": 0.2, "mem": 32, "instances": 1,
            "container": {"type": "MESOS", "volumes": [
                {"containerPath": "data", "mode": "RW", "persistent": {"size": 50}}
            ]}
        }),
    )
    .await;
    let agent = state_agent(&cluster).await;
    let full = &agent["reserved_resources_full"]["db"];
    assert!(
        full.as_array()
            .unwrap()
            .iter()
            .any(|r| r["disk"]["persistence"]["id"].is_string()),
        "{agent}"
    );

    // The agent restarts: it registers with its reservations and volume,
    // and the next task finds both lines.
    let ports = state_agent(&cluster).await["resources"]["ports"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = cluster.agents.pop().unwrap();
    agent.stop().await;
    let master = cluster.master();
    let resources = format!("{RESOURCES};ports:{ports}");
    cluster
        .agents
        .push(start_agent(&master, cluster.dir.path(), 1, &resources).await);
    running_task(&m, Some(&second)).await;
    eventually("the third run's line", || async {
        (lines(&volume) == 3).then_some(())
    })
    .await;
    assert_eq!(
        volume_dirs(&agent_dir),
        std::slice::from_ref(&volume),
        "one volume all along"
    );

    // A rolling restart (maximumOverCapacity 0) replaces the task on the
    // same reservation.
    let third = running_task(&m, None).await;
    let (status, body) = m.call("POST", "/v2/apps/db/restart", None).await;
    assert_eq!(status, 200, "{body}");
    running_task(&m, Some(&third)).await;
    eventually("the fourth run's line", || async {
        (lines(&volume) == 4).then_some(())
    })
    .await;

    // Deleting the app destroys the volume and unreserves.
    let (status, _) = m.call("DELETE", "/v2/apps/db", None).await;
    assert_eq!(status, 200);
    eventually("the volume is destroyed and unreserved", || async {
        let agent = state_agent(&cluster).await;
        let reserved = agent["reserved_resources_full"].as_object()?.is_empty();
        (reserved && !volume.exists()).then_some(())
    })
    .await;

    // Operators reserve and unreserve over HTTP (202 as in Mesos); a
    // reservation the agent cannot hold is 409.
    let agent_id = state_agent(&cluster).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cpus = |value: f64| {
        json!([{"name": "cpus", "type": "SCALAR", "scalar": {"value": value},
                "reservations": [{"type": "DYNAMIC", "role": "ops"}]}])
    };
    let (status, body) = operator(
        &cluster,
        json!({"type": "RESERVE_RESOURCES", "reserve_resources": {"agent_id": {"value": agent_id}, "resources": cpus(1.0)}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let agent = state_agent(&cluster).await;
    assert_eq!(agent["reserved_resources"]["ops"]["cpus"], 1.0, "{agent}");
    let (status, body) = operator(
        &cluster,
        json!({"type": "RESERVE_RESOURCES", "reserve_resources": {"agent_id": {"value": agent_id}, "resources": cpus(5.0)}}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = operator(
        &cluster,
        json!({"type": "UNRESERVE_RESOURCES", "unreserve_resources": {"agent_id": {"value": agent_id}, "resources": cpus(1.0)}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_task_finds_its_volume_under_the_sandbox_mount() {
    let Some(image) = crate::docker::image() else {
        return;
    };
    let cluster = Cluster::start(1, RESOURCES).await;
    let agent_dir = cluster.dir.path().join("agent-1");
    let m = marathon_for_db(&cluster).await;
    let (volume, _) = deploy_and_replace(
        &m,
        &agent_dir,
        json!({
            "id": "/db", "cmd": "echo run >> /mnt/mesos/sandbox/data/runs && exec sleep 600",
            "cpus": 0.2, "mem": 32,
            "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"},
                "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 50}}]}
        }),
    )
    .await;
    let (status, _) = m.call("DELETE", "/v2/apps/db", None).await;
    assert_eq!(status, 200);
    eventually("the volume is destroyed", || async {
        (!volume.exists()).then_some(())
    })
    .await;
    m.stop().await;
    cluster.stop().await;
}
