//! pymesos 0.3.15, unmodified, against Agora: a scheduler running command
//! tasks, and a pymesos custom executor.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{Cluster, missing, repo, venv_python};

pub(crate) fn python() -> Option<PathBuf> {
    venv_python("pymesos")
}

pub(crate) async fn run_scheduler(
    python: &PathBuf,
    master: &str,
    mode: &str,
    count: usize,
) -> serde_json::Value {
    run_scheduler_as(python, master, mode, count, None).await
}

/// [`run_scheduler`], authenticating as `(principal, secret)` when given.
pub(crate) async fn run_scheduler_as(
    python: &PathBuf,
    master: &str,
    mode: &str,
    count: usize,
    credential: Option<(&str, &str)>,
) -> serde_json::Value {
    run_scheduler_in(
        tokio::process::Command::new(python),
        master,
        mode,
        count,
        credential,
    )
    .await
}

/// Runs the scheduler script with `cmd` (python, or python inside a host of
/// a testbed: `ip netns exec <host> python`).
pub(crate) async fn run_scheduler_in(
    mut cmd: tokio::process::Command,
    master: &str,
    mode: &str,
    count: usize,
    credential: Option<(&str, &str)>,
) -> serde_json::Value {
    let script = repo().join("tests/python/pymesos_scheduler.py");
    let executor = repo().join("tests/python/pymesos_executor.py");
    cmd.arg(&script)
        .arg(master)
        .arg(mode)
        .arg(count.to_string())
        .arg(&executor)
        .kill_on_drop(true);
    if let Some((principal, secret)) = credential {
        cmd.env("PYMESOS_PRINCIPAL", principal)
            .env("PYMESOS_SECRET", secret);
    }
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("pymesos scheduler finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pymesos scheduler failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("bad summary {stdout}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_scheduler_runs_command_tasks() {
    let Some(python) = python() else {
        return missing("pymesos in .venv (run tests/python/setup-venv.sh)");
    };
    let cluster = Cluster::start(3, "cpus:2;mem:2048").await;
    let summary = run_scheduler(&python, &cluster.master(), "command", 3).await;
    for i in 0..3 {
        let states: Vec<&str> = summary["states"][format!("py-{i}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(states.contains(&"TASK_RUNNING"), "py-{i}: {states:?}");
        assert_eq!(states.last(), Some(&"TASK_FINISHED"), "py-{i}: {states:?}");
    }
    // Its tasks ran with the Mesos environment and left their output in the sandbox.
    let fid = summary["framework_id"].as_str().unwrap().to_string();
    let out = find_file(
        cluster.dir.path(),
        "stdout",
        &format!("frameworks/{fid}/executors/py-0/"),
    );
    assert_eq!(std::fs::read_to_string(out).unwrap().trim(), "pymesos-py-0");
    // pymesos tore the framework down on stop().
    let frameworks = reqwest::get(cluster.url("/frameworks"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        frameworks["frameworks"].as_array().unwrap().len(),
        0,
        "{frameworks}"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_custom_executor_runs_tasks() {
    let Some(python) = python() else {
        return missing("pymesos in .venv (run tests/python/setup-venv.sh)");
    };
    let cluster = Cluster::start(1, "cpus:2;mem:2048").await;
    let summary = run_scheduler(&python, &cluster.master(), "executor", 2).await;
    for i in 0..2 {
        let states: Vec<&str> = summary["states"][format!("py-{i}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(states, vec!["TASK_RUNNING", "TASK_FINISHED"], "py-{i}");
        assert_eq!(
            summary["messages"][format!("py-{i}")],
            "finished by the pymesos executor"
        );
    }
    cluster.stop().await;
}

fn find_file(root: &std::path::Path, name: &str, containing: &str) -> PathBuf {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_symlink() {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == name)
                && p.to_string_lossy().contains(containing)
            {
                return p;
            }
        }
    }
    panic!("no {name} under {} containing {containing}", root.display());
}
