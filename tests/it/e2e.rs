//! The offer cycle end to end: master + 3 agents + frameworks, real
//! executor processes.

use std::time::Duration;

use agora_examples::{RunCommands, run_commands};
use agora_proto::v1::TaskState;
use agora_sdk::{Event, SchedulerConfig, TaskBuilder};

use crate::cluster::{Cluster, process_alive};

pub(crate) async fn next_matching<T>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = events.recv().await.expect("event stream open");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    })
    .await
    .expect("expected event within 30 s")
}

/// The first offers' first offer.
pub(crate) async fn first_offer(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> agora_proto::v1::Offer {
    next_matching(events, |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await
}

/// Waits until some task reaches `state`.
pub(crate) async fn until_state(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    state: TaskState,
) {
    next_matching(events, |e| {
        matches!(e, Event::Update(s) if s.state() == state).then_some(())
    })
    .await
}

/// Launches one command task (0.1 cpus, 16 MB) `id` on `offer`, then waits
/// until it reaches `state`.
pub(crate) async fn run_until(
    scheduler: &agora_sdk::Scheduler,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    offer: &agora_proto::v1::Offer,
    (id, command): (&str, &str),
    state: TaskState,
) {
    let task = TaskBuilder::new(id, offer)
        .command(command)
        .cpus(0.1)
        .mem(16.0)
        .build();
    scheduler.launch(offer, vec![task], 0.0).await.unwrap();
    until_state(events, state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_all_finish() {
    let cluster = Cluster::start(3, "cpus:4;mem:4096").await;
    let commands: Vec<String> = (0..200).map(|i| format!("test {i} -ge 0")).collect();
    let outcomes = run_commands(RunCommands {
        credential: None,
        tls: None,
        master: cluster.master(),
        name: "two-hundred".into(),
        commands,
        cpus: 0.1,
        mem: 16.0,
        timeout: Duration::from_secs(240),
    })
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 200);
    let finished = outcomes
        .iter()
        .filter(|o| o.state == TaskState::TaskFinished)
        .count();
    assert_eq!(
        finished,
        200,
        "not finished: {:?}",
        outcomes
            .iter()
            .filter(|o| o.state != TaskState::TaskFinished)
            .collect::<Vec<_>>()
    );
    // The work was spread over the agents.
    let agents: std::collections::BTreeSet<_> =
        outcomes.iter().filter_map(|o| o.agent.clone()).collect();
    assert!(agents.len() >= 2, "tasks ran on {agents:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_reports_its_exit_status() {
    let cluster = Cluster::start(3, "cpus:2;mem:2048").await;
    let outcomes = run_commands(RunCommands {
        credential: None,
        tls: None,
        master: cluster.master(),
        name: "exit3".into(),
        commands: vec!["exit 3".into(), "echo fine".into()],
        cpus: 0.1,
        mem: 16.0,
        timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    assert_eq!(outcomes[0].state, TaskState::TaskFailed);
    assert_eq!(
        outcomes[0].message.as_deref(),
        Some("Command exited with status 3")
    );
    assert_eq!(outcomes[1].state, TaskState::TaskFinished);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_a_sleeping_task_and_its_process() {
    let cluster = Cluster::start(3, "cpus:2;mem:2048").await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&cluster.master(), "killer"))
            .await
            .unwrap();
    let marker = format!("agora-kill-test-{}", std::process::id());
    let offer = first_offer(&mut events).await;
    let task = TaskBuilder::new("sleeper", &offer)
        .command(&format!("sleep 600 # {marker}"))
        .cpus(0.1)
        .mem(16.0)
        .build();
    scheduler.launch(&offer, vec![task], 0.0).await.unwrap();
    next_matching(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskRunning).then_some(())
    })
    .await;
    assert!(process_alive(&marker), "the task's process runs");
    scheduler
        .kill(
            &agora_proto::v1::TaskId {
                value: "sleeper".into(),
            },
            Some(&offer.agent_id),
        )
        .await
        .unwrap();
    let killed = next_matching(&mut events, |e| match e {
        Event::Update(s) if agora_proto::status::is_terminal(s.state()) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(killed.state(), TaskState::TaskKilled, "{killed:?}");
    // The process is gone (give the kernel a moment to reap it).
    let mut gone = false;
    for _ in 0..50 {
        if !process_alive(&marker) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the sleep process survived the kill");
    scheduler.teardown().await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_bigger_than_any_agent_is_never_launched() {
    let cluster = Cluster::start(3, "cpus:1;mem:1024").await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&cluster.master(), "greedy"))
            .await
            .unwrap();
    // Over a few allocation rounds, no offer is big enough for 2 cpus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut offers_seen = 0;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        if let Event::Offers(offers) = e {
            for o in offers {
                let cpus: f64 = o
                    .resources
                    .iter()
                    .filter(|r| r.name == "cpus")
                    .map(|r| r.scalar.as_ref().unwrap().value)
                    .sum();
                assert!(cpus < 2.0, "an offer with {cpus} cpus");
                offers_seen += 1;
                last = Some(o.clone());
                scheduler.decline(vec![o.id.clone()], 0.2).await.unwrap();
            }
        }
    }
    assert!(offers_seen >= 3, "offers keep coming ({offers_seen})");
    // Asking for it anyway is refused with TASK_ERROR and nothing runs.
    let offer = first_offer(&mut events).await;
    let _ = last;
    let task = TaskBuilder::new("huge", &offer)
        .command("true")
        .cpus(2.0)
        .mem(16.0)
        .build();
    scheduler.launch(&offer, vec![task], 0.0).await.unwrap();
    let status = next_matching(&mut events, |e| match e {
        Event::Update(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(status.state(), TaskState::TaskError);
    let tasks = reqwest::get(cluster.url("/tasks"))
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 0, "{tasks}");
    scheduler.teardown().await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reregister_when_the_master_restarts() {
    let Cluster {
        master,
        agents,
        dir,
    } = Cluster::start(3, "cpus:1;mem:1024").await;
    let addr = master.addr;
    let mut ids = Vec::new();
    for a in &agents {
        ids.push(a.agent_id().await.unwrap());
    }
    master.stop().await;
    let master = crate::cluster::start_master(
        Default::default(),
        tokio::net::TcpListener::bind(addr).await.unwrap(),
    )
    .await;
    let cluster = Cluster {
        master,
        agents,
        dir,
    };
    // The agents find the new master and keep their ids.
    let mut seen = Vec::new();
    for _ in 0..100 {
        let state = reqwest::get(cluster.url("/slaves"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        seen = state["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        if seen.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_group_runs_under_the_default_executor() {
    use agora_proto::v1;
    let cluster = Cluster::start(1, "cpus:2;mem:2048").await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&cluster.master(), "grouper"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    let executor = v1::ExecutorInfo {
        r#type: Some(v1::executor_info::Type::Default as i32),
        executor_id: v1::ExecutorId {
            value: "group-exec".into(),
        },
        framework_id: scheduler.framework_id(),
        resources: vec![
            agora_sdk::scalar("cpus", 0.1),
            agora_sdk::scalar("mem", 32.0),
        ],
        ..Default::default()
    };
    let tasks = ["a", "b"].map(|n| {
        TaskBuilder::new(&format!("group-{n}"), &offer)
            .command(&format!("echo {n}"))
            .cpus(0.1)
            .mem(16.0)
            .build()
    });
    let op = v1::offer::Operation {
        r#type: Some(v1::offer::operation::Type::LaunchGroup as i32),
        launch_group: Some(v1::offer::operation::LaunchGroup {
            executor,
            task_group: v1::TaskGroupInfo {
                tasks: tasks.to_vec(),
            },
        }),
        ..Default::default()
    };
    scheduler
        .accept(vec![offer.id.clone()], vec![op], 0.0)
        .await
        .unwrap();
    let mut finished = std::collections::BTreeSet::new();
    while finished.len() < 2 {
        let s = next_matching(&mut events, |e| match e {
            Event::Update(s) if agora_proto::status::is_terminal(s.state()) => Some(s.clone()),
            _ => None,
        })
        .await;
        assert_eq!(s.state(), TaskState::TaskFinished, "{s:?}");
        assert_eq!(
            s.executor_id.as_ref().map(|e| e.value.as_str()),
            Some("group-exec")
        );
        finished.insert(s.task_id.value.clone());
    }
    scheduler.teardown().await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_shutdown_delay_is_killing_before_it_is_signalled() {
    let cluster = Cluster::start(1, "cpus:2;mem:2048").await;
    let mut config = SchedulerConfig::new(&cluster.master(), "drainer");
    config
        .framework_info
        .capabilities
        .push(agora_proto::v1::framework_info::Capability {
            r#type: Some(
                agora_proto::v1::framework_info::capability::Type::TaskKillingState as i32,
            ),
        });
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = first_offer(&mut events).await;
    let dir = tempfile::tempdir().unwrap();
    let termed = dir.path().join("termed");
    let mut task = TaskBuilder::new("drained", &offer)
        .command(&format!(
            "trap 'touch {}; exit 0' TERM; while true; do sleep 0.1; done",
            termed.display()
        ))
        .cpus(0.1)
        .mem(16.0)
        .build();
    task.labels = Some(agora_proto::v1::Labels {
        labels: vec![agora_proto::v1::Label {
            key: "AGORA_SHUTDOWN_DELAY".into(),
            value: Some("3".into()),
        }],
    });
    scheduler.launch(&offer, vec![task], 0.0).await.unwrap();
    next_matching(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskRunning).then_some(())
    })
    .await;
    let id = agora_proto::v1::TaskId {
        value: "drained".into(),
    };
    scheduler.kill(&id, Some(&offer.agent_id)).await.unwrap();
    // TASK_KILLING first, while the task still runs untouched.
    next_matching(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskKilling).then_some(())
    })
    .await;
    assert!(!termed.exists(), "SIGTERM came before the shutdown delay");
    // Then SIGTERM, which the task handles, and TASK_KILLED.
    let killed = next_matching(&mut events, |e| match e {
        Event::Update(s) if agora_proto::status::is_terminal(s.state()) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(killed.state(), TaskState::TaskKilled, "{killed:?}");
    assert!(termed.exists(), "the task never saw SIGTERM");
    scheduler.teardown().await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_on_its_work_dir_recovers_its_registry() {
    let work = tempfile::tempdir().unwrap();
    let options = |timeout: Duration| agora_master::MasterOptions {
        config: agora_master_core::Config {
            allocation_interval: Duration::from_millis(200),
            agent_reregister_timeout: timeout,
            ..Default::default()
        },
        hostname: Some("127.0.0.1".into()),
        work_dir: Some(work.path().to_path_buf()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let master = agora_master::start(options(Duration::from_secs(600)), listener)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent =
        crate::cluster::start_agent(&addr.to_string(), dir.path(), 1, "cpus:1;mem:256").await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/api/v1"))
        .json(&serde_json::json!({"type": "UPDATE_WEIGHTS",
            "update_weights": {"weight_infos": [{"role": "web", "weight": 3.0}]}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // The agent goes for good, and the master restarts.
    agent.stop().await;
    master.stop().await;
    let master = agora_master::start(
        options(Duration::from_secs(1)),
        tokio::net::TcpListener::bind(addr).await.unwrap(),
    )
    .await
    .unwrap();
    // The weight is back; the agent, admitted before, is expected and,
    // when it does not come back in time, unreachable.
    let weights: serde_json::Value = http
        .post(format!("http://{addr}/api/v1"))
        .json(&serde_json::json!({"type": "GET_WEIGHTS"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        weights["get_weights"]["weight_infos"],
        serde_json::json!([{"role": "web", "weight": 3.0}]),
        "{weights}"
    );
    crate::cluster::eventually("the agent that did not return is unreachable", || async {
        let m: serde_json::Value = http
            .get(format!("http://{addr}/metrics/snapshot"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (m["master/slaves_unreachable"] == 1.0).then_some(())
    })
    .await;
    master.stop().await;
}

/// Issue 12.6: any local process could POST a TASK_FAILED for a running task
/// to the agent's executor API; the master believed it and the task kept
/// running, untracked. Calls for an executor are taken only from its own
/// process now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_executor_update_is_refused() {
    let cluster = Cluster::start(1, "cpus:2;mem:2048").await;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&cluster.master(), "forged"))
            .await
            .unwrap();
    let offer = first_offer(&mut events).await;
    run_until(
        &scheduler,
        &mut events,
        &offer,
        ("victim", "sleep 600"),
        TaskState::TaskRunning,
    )
    .await;
    let framework = scheduler.framework_id().unwrap().value;
    let forged = serde_json::json!({
        "type": "UPDATE",
        "framework_id": {"value": framework},
        "executor_id": {"value": "victim"},
        "update": {"status": {
            "task_id": {"value": "victim"},
            "state": "TASK_FAILED",
            "source": "SOURCE_EXECUTOR",
            "uuid": "AAAAAAAAAAAAAAAAAAAAAA==",
            "message": "forged"
        }}
    });
    let agent = &cluster.agents[0];
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/executor", agent.addr))
        .json(&forged)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only from its own process"), "{body}");
    // Nothing reaches the framework, and the master still has it running.
    let more = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.recv().await {
                Some(Event::Update(s)) => return s,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await;
    assert!(more.is_err(), "an update got through: {more:?}");
    let state: serde_json::Value = reqwest::get(cluster.url("/master/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING",
        "{state}"
    );
    cluster.stop().await;
}
