//! Agent restarts: an `agora agent` process stopped with SIGTERM leaves the
//! tasks of checkpointing frameworks running; its next run adopts them.
//! (Containers: `docker.rs`.)

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::cluster::eventually;
use crate::cluster::{AgentProcess, Cluster, free_port, master_tasks, process_alive};
use crate::marathon::Marathon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_tasks_survive_an_agent_restart_and_are_adopted() {
    let cluster = Cluster::start(0, "cpus:1").await;
    let m = Marathon::start(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&cluster.master(), dir.path(), free_port());
    // A marker no other test's command has.
    let marker = format!("sleep 7{}", std::process::id() % 100_000);
    let app = json!({"id": "/survivor", "cmd": marker, "cpus": 0.1, "mem": 16, "instances": 2});
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("survivor", 2).await;
    let before = m.running_ids("survivor").await;

    agent.signal(Signal::SIGTERM);
    assert!(process_alive(&marker), "{}", agent.log());

    // One executor dies while the agent is down (its task keeps running in
    // its own process group): the next run must end that task and its
    // processes, and adopt the other.
    let mut ids = before.iter();
    let (victim, kept) = (ids.next().unwrap().clone(), ids.next().unwrap().clone());
    let run = find_file(dir.path(), &format!("executors/{victim}/run.json")).expect("a checkpoint");
    let run: Value = serde_json::from_slice(&std::fs::read(run).unwrap()).unwrap();
    let sandbox = std::path::PathBuf::from(run["dir"].as_str().unwrap());
    let pgid: i32 = std::fs::read_to_string(sandbox.join(".agora/pgids").join(&victim))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let executor = nix::unistd::Pid::from_raw(run["pid"].as_u64().unwrap() as i32);
    nix::sys::signal::kill(executor, Signal::SIGKILL).unwrap();
    assert!(group_alive(pgid), "the task outlives its executor");

    agent.spawn();
    eventually(
        "the agent is back; one task adopted, one replaced",
        || async {
            let tasks = master_tasks(&cluster).await?;
            let running = m.running_ids("survivor").await;
            (tasks.len() == 2
                && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
                && running.contains(&kept)
                && !running.contains(&victim)
                && running.len() == 2)
                .then_some(())
        },
    )
    .await;
    assert!(
        agent.log().contains("recovered a running executor")
            && agent
                .log()
                .contains("an executor exited while the agent was down"),
        "{}",
        agent.log()
    );
    assert!(
        !group_alive(pgid),
        "the dead executor's task is still running"
    );
    let failure = m.app("survivor").await["lastTaskFailure"].clone();
    assert_eq!(failure["taskId"], victim.as_str(), "{failure}");
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(m.running_ids("survivor").await.contains(&kept));

    // The adopted executors take kills.
    assert_eq!(m.call("DELETE", "/v2/apps/survivor", None).await.0, 200);
    eventually("the tasks' processes are gone", || async {
        (!process_alive(&marker)).then_some(())
    })
    .await;
    agent.signal(Signal::SIGUSR1);
    m.stop().await;
    cluster.stop().await;
}

/// The first file under `dir` whose path ends with `suffix`.
/// Issue 12.3: a host dies (its agent, executors and tasks killed at once).
/// The master must not show its tasks running until agent_reregister_timeout
/// (10 minutes): once the ping budget is spent (1 s x 2 here) the agent is
/// unreachable, its tasks TASK_UNREACHABLE, and marathon-rs replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_dies_is_unreachable_once_its_ping_budget_is_spent() {
    let cluster = Cluster::with_config(
        0,
        "cpus:1",
        agora_master_core::Config {
            allocation_interval: Duration::from_millis(200),
            agent_ping_timeout: Duration::from_secs(1),
            max_agent_ping_timeouts: 2,
            ..Default::default()
        },
    )
    .await;
    let m = Marathon::start(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProcess::start(&cluster.master(), dir.path(), free_port());
    let marker = format!("sleep 8{}", std::process::id() % 100_000);
    let app = json!({"id": "/doomed", "cmd": marker, "cpus": 0.1, "mem": 16, "instances": 2});
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("doomed", 2).await;
    let before = m.running_ids("doomed").await;

    // The host dies: the agent, then every executor and task it ran.
    agent.kill();
    for task in &before {
        let run = find_file(dir.path(), &format!("executors/{task}/run.json")).expect("a run");
        let run: Value = serde_json::from_slice(&std::fs::read(run).unwrap()).unwrap();
        let sandbox = std::path::PathBuf::from(run["dir"].as_str().unwrap());
        let pgid: i32 = std::fs::read_to_string(sandbox.join(".agora/pgids").join(task))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        let executor = nix::unistd::Pid::from_raw(run["pid"].as_u64().unwrap() as i32);
        let _ = nix::sys::signal::kill(executor, Signal::SIGKILL);
    }
    let killed = std::time::Instant::now();
    eventually(
        "the master and marathon-rs no longer show the tasks running",
        || async {
            let state: Value = reqwest::get(cluster.url("/master/state"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let tasks = |key: &str| -> Vec<Value> {
                state["frameworks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|f| f[key].as_array().cloned().unwrap_or_default())
                    .collect()
            };
            let running = tasks("tasks")
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .count();
            let unreachable = tasks("unreachable_tasks").len();
            let shown = m.running_ids("doomed").await;
            (running == 0 && unreachable == 2 && shown.is_disjoint(&before)).then_some(())
        },
    )
    .await;
    eprintln!(
        "a dead host's tasks stopped showing as running after {:?} (ping budget 2 s)",
        killed.elapsed()
    );
    drop(m);
    cluster.stop().await;
}

fn find_file(dir: &std::path::Path, suffix: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(suffix) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(found) = find_file(&path, suffix)
        {
            return Some(found);
        }
    }
    None
}

/// Whether a live (not zombie) process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // After the command's ')': state, ppid, pgrp.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}
