//! The admin CLI against `agora dev`, as an operator on that machine uses
//! it: no flags naming the cluster, the CA or the credentials.

use std::process::Output;

use serde_json::Value;

use crate::cluster::{Dev, eventually};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `agora ARGS` and expects success; its stdout.
fn ok(dev: &Dev, args: &[&str]) -> String {
    let o = dev.agora(args);
    assert!(
        o.status.success(),
        "agora {}: {}{}",
        args.join(" "),
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

/// Runs `agora ARGS` and expects failure; its stderr.
fn fails(dev: &Dev, args: &[&str]) -> String {
    let o = dev.agora(args);
    assert!(!o.status.success(), "agora {} succeeded", args.join(" "));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(dev: &Dev, args: &[&str]) -> Value {
    let out = ok(dev, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The running tasks' ids of `app` (e.g. `ops_web`), by agent address.
fn running(dev: &Dev, app: &str) -> Vec<(String, String)> {
    let agents = json(dev, &["agent", "list", "--json"]);
    let address = |id: &str| {
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_info"]["id"]["value"] == id)
            .map(|a| a["agent_info"]["hostname"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    json(dev, &["task", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| {
            let id = t["task_id"]["value"].as_str()?;
            id.starts_with(&format!("{app}.")).then(|| {
                (
                    id.to_string(),
                    address(t["agent_id"]["value"].as_str().unwrap()),
                )
            })
        })
        .collect()
}

/// An operator lists agents, frameworks and tasks, reads a task's state
/// history and output (and follows it to its end), drains an agent and
/// watches its tasks move, reactivates it; what cannot be undone asks for
/// `--yes`, and a wrong name is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drains_an_agent_and_reads_task_logs_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), 3).await;
    let app = dir.path().join("web.json");
    std::fs::write(
        &app,
        r#"{"id": "/ops/web", "cpus": 0.1, "mem": 16, "instances": 4,
            "cmd": "echo started $MESOS_TASK_ID; while true; do echo tick; sleep 1; done"}"#,
    )
    .unwrap();
    ok(&dev, &["app", "deploy", app.to_str().unwrap()]);

    // Lists.
    let agents = ok(&dev, &["agent", "list"]);
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert!(
            agents
                .lines()
                .any(|l| l.contains(host) && l.contains("active")),
            "{agents}"
        );
    }
    // `agora top --once`: a row per agent with its tasks, and the totals.
    let top = ok(&dev, &["top", "--once"]);
    assert!(top.contains("3 agents"), "{top}");
    let tasks_on = |host: &str| -> usize {
        top.lines()
            .find(|l| l.contains(host))
            .and_then(|l| l.split('┆').next_back())
            .and_then(|c| c.trim().trim_end_matches('│').trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    assert_eq!(
        tasks_on("127.0.0.2") + tasks_on("127.0.0.3") + tasks_on("127.0.0.4"),
        4,
        "{top}"
    );
    assert!(top.contains("marathon (4)"), "{top}");
    let frameworks = ok(&dev, &["framework", "list"]);
    assert!(
        frameworks
            .lines()
            .any(|l| l.contains("marathon") && l.contains("active")),
        "{frameworks}"
    );
    let tasks = running(&dev, "ops_web");
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    let table = ok(&dev, &["task", "list"]);
    assert_eq!(table.matches("ops_web.").count(), 4, "{table}");

    // One task: its history and its output.
    let (task, _) = &tasks[0];
    let show = ok(&dev, &["task", "show", task]);
    assert!(
        show.contains("STARTING") && show.contains("RUNNING"),
        "{show}"
    );
    let logs = eventually("the task has printed twice", || async {
        let out = ok(&dev, &["task", "logs", task, "-n", "100"]);
        (out.matches("tick").count() >= 2).then_some(out)
    })
    .await;
    assert!(logs.starts_with(&format!("started {task}\n")), "{logs}");
    let last = ok(&dev, &["task", "logs", task, "-n", "1"]);
    assert_eq!(last, "tick\n");

    // `-f` follows a task until it ends, and prints what it wrote last.
    let once = dir.path().join("once.json");
    std::fs::write(
        &once,
        r#"{"id": "/ops/once", "cpus": 0.1, "mem": 16, "instances": 1,
            "cmd": "echo first; sleep 3; echo last; sleep 100000"}"#,
    )
    .unwrap();
    ok(&dev, &["app", "deploy", once.to_str().unwrap()]);
    let (once_task, _) = running(&dev, "ops_once").remove(0);
    let work = dev.work.clone();
    let follow = tokio::spawn(async move {
        tokio::process::Command::new(crate::cluster::agora_bin())
            .args(["task", "logs", "-f", &once_task])
            .env_remove("AGORA_MASTER_URL")
            .env("AGORA_WORK_DIR", work)
            .output()
            .await
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!follow.is_finished(), "-f returned while the task ran");
    ok(&dev, &["app", "destroy", "/ops/once"]);
    let followed = tokio::time::timeout(std::time::Duration::from_secs(30), follow)
        .await
        .expect("-f ends when its task ends")
        .unwrap();
    assert!(followed.status.success(), "{followed:?}");
    assert_eq!(stdout(&followed), "first\nlast\n");

    // Drain the agent 127.0.0.2: marathon-rs moves its instances, the CLI
    // waits until it is DRAINED.
    let drained = ok(
        &dev,
        &["agent", "drain", "127.0.0.2", "--max-grace-period", "2s"],
    );
    assert!(drained.contains("drained"), "{drained}");
    let agents = json(&dev, &["agent", "list", "--json"]);
    let there = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_info"]["hostname"] == "127.0.0.2")
        .unwrap()
        .clone();
    assert_eq!(there["drain_info"]["state"], "DRAINED", "{there}");
    assert_eq!(
        ok(&dev, &["task", "list", "--agent", "127.0.0.2"]).trim(),
        "No tasks."
    );
    eventually("4 instances run elsewhere", || async {
        let now = running(&dev, "ops_web");
        (now.len() == 4 && now.iter().all(|(_, host)| host != "127.0.0.2")).then_some(())
    })
    .await;
    let list = ok(&dev, &["agent", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("127.0.0.2") && l.contains("drained")),
        "{list}"
    );
    ok(&dev, &["agent", "reactivate", "127.0.0.2"]);
    let list = ok(&dev, &["agent", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("127.0.0.2") && l.contains("active")),
        "{list}"
    );

    // What cannot be undone needs --yes; wrong names are clear errors.
    assert!(fails(&dev, &["agent", "gone", "127.0.0.2"]).contains("--yes"));
    assert!(fails(&dev, &["agent", "show", "127.0.0.9"]).contains("no agent '127.0.0.9'"));
    assert!(fails(&dev, &["task", "logs", "nope"]).contains("no task 'nope'"));
    assert!(fails(&dev, &["framework", "teardown", "nope", "--yes"]).contains("no framework"));
    // A wrong secret: 401, with the hint of what to set.
    let o = std::process::Command::new(crate::cluster::agora_bin())
        .args(["agent", "list", "--principal", "admin", "--secret", "wrong"])
        .env("AGORA_WORK_DIR", &dev.work)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("401"), "{err}");
    dev.stop().await;
}

/// Maintenance from the CLI: a scheduled machine's instances move before
/// anything is killed (marathon-rs accepts the inverse offer), START takes
/// it down with nothing left to kill, STOP brings its agent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_moves_instances_before_the_machine_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), 3).await;
    let app = dir.path().join("web.json");
    std::fs::write(
        &app,
        r#"{"id": "/ops/kept", "cpus": 0.1, "mem": 16, "instances": 6, "cmd": "sleep 100000"}"#,
    )
    .unwrap();
    ok(&dev, &["app", "deploy", app.to_str().unwrap()]);
    let before = running(&dev, "ops_kept");
    assert_eq!(before.len(), 6);
    assert!(
        before.iter().any(|(_, host)| host == "127.0.0.3"),
        "{before:?}"
    );

    ok(
        &dev,
        &["maintenance", "add", "127.0.0.3", "--duration", "2h"],
    );
    let schedule = ok(&dev, &["maintenance", "schedule"]);
    assert!(
        schedule.contains("127.0.0.3") && schedule.contains("2h"),
        "{schedule}"
    );
    eventually("6 instances run off the scheduled machine", || async {
        let now = running(&dev, "ops_kept");
        (now.len() == 6 && now.iter().all(|(_, host)| host != "127.0.0.3")).then_some(())
    })
    .await;
    let status = json(&dev, &["maintenance", "status", "--json"]);
    let machine = &status["status"]["draining_machines"][0];
    assert_eq!(machine["id"]["ip"], "127.0.0.3", "{status}");
    assert_eq!(machine["statuses"][0]["status"], "ACCEPT", "{status}");
    let table = ok(&dev, &["maintenance", "status"]);
    assert!(table.contains("marathon (accept)"), "{table}");

    // Down: the agent is removed; nothing of the app was there any more.
    assert!(fails(&dev, &["maintenance", "start", "127.0.0.3"]).contains("--yes"));
    ok(&dev, &["maintenance", "start", "127.0.0.3", "--yes"]);
    let agents = ok(&dev, &["agent", "list"]);
    assert!(!agents.contains("127.0.0.3"), "{agents}");
    let ended = json(&dev, &["task", "list", "--all", "--json"]);
    assert!(
        ended["completed_tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|t| t["state"] != "TASK_GONE_BY_OPERATOR"),
        "{ended}"
    );
    assert_eq!(running(&dev, "ops_kept").len(), 6);
    // A DOWN machine stays in the schedule until it is brought up.
    assert!(fails(&dev, &["maintenance", "remove", "127.0.0.3"]).contains("DOWN"));

    ok(&dev, &["maintenance", "stop", "127.0.0.3"]);
    assert!(ok(&dev, &["maintenance", "status"]).contains("No machine"));
    eventually("the agent registers again", || async {
        ok(&dev, &["agent", "list"])
            .lines()
            .any(|l| l.contains("127.0.0.3") && l.contains("active"))
            .then_some(())
    })
    .await;
    dev.stop().await;
}

/// Quota from the CLI: set, read back with what the role holds, refused
/// when invalid, removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_set_read_and_removed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Dev::start(&dir.path().join("dev"), 1).await;
    ok(
        &dev,
        &[
            "quota",
            "set",
            "dev",
            "--guarantee",
            "cpus:0.5",
            "--limit",
            "cpus:1,mem:512",
        ],
    );
    ok(&dev, &["quota", "set", "dev/web", "--limit", "cpus:0.5"]);
    let table = ok(&dev, &["quota", "get"]);
    let line = table
        .lines()
        .find(|l| l.contains("dev ") || l.contains(" dev"))
        .unwrap_or_default();
    assert!(
        line.contains("cpus:0.5") && line.contains("mem:512"),
        "{table}"
    );
    let raw = json(&dev, &["quota", "get", "--json"]);
    let configs = raw["status"]["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2, "{raw}");
    // A child's limit above its parent's, and a bad amount, are refused.
    let err = fails(&dev, &["quota", "set", "dev/api", "--limit", "cpus:2"]);
    assert!(err.contains("above that of 'dev'"), "{err}");
    let err = fails(&dev, &["quota", "set", "dev", "--limit", "cpus:-1"]);
    assert!(err.contains("--limit"), "{err}");
    ok(&dev, &["quota", "remove", "dev/web"]);
    ok(&dev, &["quota", "remove", "dev"]);
    assert!(ok(&dev, &["quota", "get"]).contains("No role has a quota"));
    dev.stop().await;
}
