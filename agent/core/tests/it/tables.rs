//! What the agent decides, case by case, on a virtual clock.

use std::time::Duration;

use agora_agent_core::{
    Checkpoint, Input, Output, RecoveredExecutor, RecoveredFramework, Run, StreamId,
};
use agora_proto::executor::event::Type as Event;
use agora_proto::internal::{Ping, agent_message, master_message};
use agora_proto::v1::{TaskState, task_status::Reason};

use crate::harness::*;

#[test]
fn registers_records_its_id_and_answers_pings() {
    let mut h = Harness::new();
    let out = h.input(Input::MasterConnected);
    let register = registers(&out).pop().unwrap();
    assert!(register.agent_info.id.is_none(), "a new agent has no id");
    assert!(register.tasks.is_empty());
    let out = h.registered();
    assert_eq!(out, vec![Output::PersistId(AGENT.into())]);
    assert_eq!(h.agent.id(), Some(AGENT));
    let out = h.master(master_message::Message::Ping(Ping { sequence: Some(3) }));
    assert!(matches!(
        to_master(&out).as_slice(),
        [agent_message::Message::Pong(p)] if p.sequence == Some(3)
    ));
    // A message from an older epoch (a deposed master) is ignored.
    h.epoch = 0;
    let out = h.master(master_message::Message::Ping(Ping { sequence: Some(4) }));
    assert!(out.is_empty());
}

#[test]
fn a_task_before_registration_fails() {
    let mut h = Harness::new();
    h.input(Input::MasterConnected);
    let out = h.run_task("f", "t", false);
    assert!(spawns(&out).is_empty());
    assert!(h.agent.executors().next().is_none());
    // Sent once the agent has an id.
    h.register();
    let sent = states(&h.log);
    assert_eq!(
        sent,
        vec![(
            "t".into(),
            TaskState::TaskFailed,
            Some(Reason::ContainerLaunchFailed)
        )]
    );
}

#[test]
fn reregisters_with_its_running_tasks_and_executors() {
    let mut h = Harness::new();
    h.register();
    h.running_task("f", "t1");
    h.input(Input::MasterDisconnected);
    // Nothing goes to a master while there is none.
    let (r, _) = h.update(&("f".into(), "t1".into()), "t1", TaskState::TaskRunning);
    assert_eq!(r, Ok(()));
    let out = h.input(Input::MasterConnected);
    let register = registers(&out).pop().unwrap();
    assert_eq!(
        register.agent_info.id.map(|i| i.value),
        Some(AGENT.to_string())
    );
    assert_eq!(register.tasks.len(), 1);
    assert_eq!(register.tasks[0].state(), TaskState::TaskRunning);
    assert!(
        register.tasks[0].executor_id.is_none(),
        "command tasks name no executor"
    );
    assert_eq!(register.frameworks.len(), 1);
    assert_eq!(register.epoch, Some(1));
    assert!(
        updates(&out).is_empty(),
        "updates wait for the registration"
    );
    let out = h.registered();
    assert_eq!(
        states(&out),
        vec![("t1".into(), TaskState::TaskRunning, None)],
        "the unacknowledged update is sent on registration"
    );
}

#[test]
fn an_executor_that_never_subscribes_is_destroyed_at_its_timeout() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", false);
    let (key, _) = h.spawned(&out, 100);
    let timeout = h.agent.config().executor_registration_timeout;
    assert_eq!(h.agent.next_deadline(), Some(h.now + timeout));
    let out = h.advance(timeout - Duration::from_secs(1));
    assert_eq!(destroyed(&out), 0);
    let out = h.advance(Duration::from_secs(1));
    assert_eq!(destroyed(&out), 1);
    let out = h.exited(&key, Some(9));
    assert_eq!(
        states(&out),
        vec![(
            "t".into(),
            TaskState::TaskFailed,
            Some(Reason::ExecutorRegistrationTimeout)
        )]
    );
    assert!(h.agent.executors().next().is_none());
}

#[test]
fn kill_goes_to_the_executor_and_shutdown_has_a_grace() {
    let mut h = Harness::new();
    h.register();
    let (key, stream) = h.running_task("f", "t");
    let out = h.kill("f", "t");
    assert_eq!(events(&out, stream), vec![Event::Kill]);
    assert_eq!(destroyed(&out), 0);
    let out = h.master(master_message::Message::ShutdownExecutor(
        agora_proto::internal::ShutdownExecutor {
            framework_id: agora_proto::v1::FrameworkId { value: "f".into() },
            executor_id: agora_proto::v1::ExecutorId { value: "t".into() },
        },
    ));
    assert_eq!(events(&out, stream), vec![Event::Shutdown]);
    let grace = h.agent.config().executor_shutdown_grace_period;
    assert_eq!(destroyed(&h.advance(grace - Duration::from_millis(1))), 0);
    assert_eq!(destroyed(&h.advance(Duration::from_millis(1))), 1);
    // Destroyed again while it does not exit, but not at every tick.
    assert_eq!(destroyed(&h.advance(Duration::from_millis(500))), 0);
    assert_eq!(destroyed(&h.advance(Duration::from_millis(500))), 1);
    let out = h.exited(&key, Some(9));
    assert_eq!(
        states(&out),
        vec![(
            "t".into(),
            TaskState::TaskKilled,
            Some(Reason::ExecutorTerminated)
        )]
    );
    assert!(out.contains(&Output::CloseStream(stream)));
}

#[test]
fn a_kill_before_delivery_ends_the_task_at_the_agent() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", false);
    h.spawned(&out, 100);
    let out = h.kill("f", "t");
    assert_eq!(
        states(&out),
        vec![(
            "t".into(),
            TaskState::TaskKilled,
            Some(Reason::TaskKilledDuringLaunch)
        )]
    );
    assert_eq!(destroyed(&out), 1, "nothing is left for the executor");
    // A kill of an unknown task is answered as Mesos does.
    let out = h.kill("f", "nope");
    assert_eq!(
        states(&out),
        vec![(
            "nope".into(),
            TaskState::TaskDropped,
            Some(Reason::TaskUnknown)
        )]
    );
}

#[test]
fn status_updates_are_retried_with_backoff_until_acknowledged_in_order() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", false);
    let (key, _) = h.spawned(&out, 100);
    let (stream, out) = h.subscribe(&key);
    assert_eq!(events(&out, stream), vec![Event::Subscribed, Event::Launch]);
    let before = h.log.len();
    let (r, running) = h.update(&key, "t", TaskState::TaskRunning);
    assert_eq!(r, Ok(()));
    let (r, finished) = h.update(&key, "t", TaskState::TaskFinished);
    assert_eq!(r, Ok(()));
    let sent = updates(&h.log[before..]);
    assert_eq!(sent.len(), 1, "one update in flight per task");
    assert_eq!(sent[0].status.uuid.as_deref(), Some(&running[..]));
    assert_eq!(
        events(&h.log[before..], stream),
        vec![Event::Acknowledged, Event::Acknowledged],
        "the agent acknowledges executors at once"
    );
    assert!(updates(&h.advance(Duration::from_secs(9))).is_empty());
    let out = h.advance(Duration::from_secs(1));
    let retried = updates(&out);
    assert_eq!(retried.len(), 1, "retried after 10 s");
    assert_eq!(
        retried[0].latest_state,
        Some(TaskState::TaskFinished as i32),
        "a retry tells the master the newest state"
    );
    assert!(updates(&h.advance(Duration::from_secs(19))).is_empty());
    assert_eq!(
        updates(&h.advance(Duration::from_secs(1))).len(),
        1,
        "then after 20 s"
    );
    // A stale acknowledgement changes nothing; the right one sends the next.
    assert!(updates(&h.ack("f", "t", &finished)).is_empty());
    let out = h.ack("f", "t", &running);
    let next = updates(&out);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].status.uuid.as_deref(), Some(&finished[..]));
    h.ack("f", "t", &finished);
    assert_eq!(h.agent.pending_updates(), 0);
    assert!(h.agent.next_deadline().is_none());
}

#[test]
fn an_executor_that_dies_fails_its_tasks_until_the_master_acknowledges() {
    let mut h = Harness::new();
    h.register();
    let (key, _) = h.running_task("f", "t");
    let out = h.exited(&key, Some(1 << 8));
    let sent = updates(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status.state(), TaskState::TaskFailed);
    assert_eq!(
        sent[0].status.message.as_deref(),
        Some("Executor terminated (exited with status 1)")
    );
    assert!(
        to_master(&out).iter().any(
            |m| matches!(m, agent_message::Message::ExecutorExited(e) if e.status == Some(256))
        )
    );
    // Until acknowledged, it is still reported to a new master.
    let register = registers(&h.input(Input::MasterConnected)).pop().unwrap();
    assert_eq!(register.tasks.len(), 1);
    assert_eq!(register.tasks[0].state(), TaskState::TaskFailed);
    let uuid = sent[0].status.uuid.clone().unwrap();
    h.ack("f", "t", &uuid);
    let register = registers(&h.input(Input::MasterConnected)).pop().unwrap();
    assert!(register.tasks.is_empty());
    assert_eq!(h.agent.completed_tasks().count(), 1);
}

#[test]
fn executor_calls_are_checked() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", false);
    let (key, _) = h.spawned(&out, 100);
    let (r, _) = h.update(&key, "t", TaskState::TaskRunning);
    assert!(
        matches!(r, Err(agora_agent_core::CallError::Forbidden(_))),
        "{r:?}"
    );
    h.subscribe(&key);
    let out = h.run_task("f", "u", false);
    let (other, _) = h.spawned(&out, 101);
    h.subscribe(&other);
    let (r, _) = h.update(&other, "t", TaskState::TaskRunning);
    assert!(
        matches!(&r, Err(agora_agent_core::CallError::Forbidden(m)) if m.contains("not a task of executor")),
        "{r:?}"
    );
    let (r, _) = h.update(&key, "t", TaskState::TaskStaging);
    assert!(matches!(r, Err(agora_agent_core::CallError::BadRequest(_))));
    let unknown = ("f".to_string(), "nope".to_string());
    let (r, _) = h.update(&unknown, "t", TaskState::TaskRunning);
    assert_eq!(
        r,
        Err(agora_agent_core::CallError::BadRequest(
            "Executor cannot be found".into()
        ))
    );
}

#[test]
fn a_failed_spawn_fails_its_tasks() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", true);
    let spawn = spawns(&out).pop().unwrap();
    let out = h.input(Input::SpawnFailed {
        key: spawn.key.clone(),
        container: spawn.container,
        error: "no such file".into(),
    });
    assert_eq!(
        states(&out),
        vec![(
            "t".into(),
            TaskState::TaskFailed,
            Some(Reason::ContainerLaunchFailed)
        )]
    );
    assert!(h.agent.executors().next().is_none());
    assert!(
        out.contains(&Output::Checkpoint(Box::new(Checkpoint::RemoveExecutor(
            spawn.key
        ))))
    );
}

#[test]
fn checkpointing_frameworks_write_their_executors_and_tasks() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("f", "t", true);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Checkpoint(_))),
        "nothing is written before the executor runs"
    );
    let (key, out) = h.spawned(&out, 100);
    let written: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Checkpoint(c) => Some(match **c {
                Checkpoint::Framework(_) => "framework",
                Checkpoint::Executor { .. } => "executor",
                Checkpoint::Task { .. } => "task",
                _ => "other",
            }),
            _ => None,
        })
        .collect();
    assert_eq!(written, vec!["framework", "executor", "task"]);
    h.subscribe(&key);
    assert_eq!(h.update(&key, "t", TaskState::TaskRunning).0, Ok(()));
    assert!(h.log.iter().any(|o| matches!(o, Output::Checkpoint(c) if matches!(**c, Checkpoint::TaskState { state: TaskState::TaskRunning, .. }))));
}

fn recovered(alive: bool) -> RecoveredFramework {
    RecoveredFramework {
        info: framework_info("f", true),
        executors: vec![RecoveredExecutor {
            info: agora_proto::v1::ExecutorInfo {
                executor_id: agora_proto::v1::ExecutorId { value: "t".into() },
                ..Default::default()
            },
            run: Run {
                container: "c1".into(),
                dir: "/w/sandbox".into(),
                pid: 4242,
                start: 99,
                kind: "command".into(),
                networks: Vec::new(),
            },
            tasks: vec![(task_info("t"), TaskState::TaskRunning)],
            alive,
        }],
    }
}

fn recovered_harness(alive: bool) -> (Harness, Vec<Output>) {
    let mut h = Harness::with_config(config());
    h.agent = agora_agent_core::Agent::new(config(), Some(AGENT.into()), 7);
    let out = h.input(Input::Recovered(vec![recovered(alive)]));
    (h, out)
}

#[test]
fn recovery_adopts_live_executors_and_waits_for_them_to_subscribe() {
    let (mut h, out) = recovered_harness(true);
    assert!(out.contains(&Output::Watch {
        key: ("f".into(), "t".into()),
        container: "c1".into(),
        pid: 4242,
        start: 99,
    }));
    let register = h.register();
    assert_eq!(register.tasks.len(), 1);
    assert_eq!(register.tasks[0].state(), TaskState::TaskRunning);
    let (stream, out) = h.subscribe(&("f".into(), "t".into()));
    assert_eq!(events(&out, stream), vec![Event::Subscribed]);
    assert_eq!(reply(&out), Ok(()));
    assert!(
        states(&h.log).is_empty(),
        "an adopted task is not restarted or failed"
    );
}

#[test]
fn recovery_ends_the_tasks_of_executors_that_died_while_the_agent_was_down() {
    let (mut h, out) = recovered_harness(false);
    assert!(
        out.contains(&Output::Checkpoint(Box::new(Checkpoint::RemoveExecutor((
            "f".into(),
            "t".into()
        )))))
    );
    assert!(h.agent.executors().next().is_none());
    h.register();
    assert_eq!(
        states(&h.log),
        vec![(
            "t".into(),
            TaskState::TaskFailed,
            Some(Reason::ExecutorTerminated)
        )]
    );
}

#[test]
fn an_adopted_executor_reaped_later_ends_its_tasks() {
    let (mut h, _) = recovered_harness(true);
    h.register();
    // The shell's watch finds its process gone.
    let out = h.input(Input::Exited {
        key: ("f".into(), "t".into()),
        container: "c1".into(),
        status: None,
    });
    assert_eq!(
        states(&out),
        vec![(
            "t".into(),
            TaskState::TaskFailed,
            Some(Reason::ExecutorTerminated)
        )]
    );
    // An exit of an older run of the same executor is not this one's.
    let out = h.input(Input::Exited {
        key: ("f".into(), "t".into()),
        container: "c0".into(),
        status: None,
    });
    assert!(out.is_empty());
}

#[test]
fn shutdown_waits_for_executors_then_destroys_what_is_left() {
    let mut h = Harness::new();
    h.register();
    let (_, stream) = h.running_task("f", "t");
    let out = h.input(Input::Shutdown);
    assert_eq!(events(&out, stream), vec![Event::Shutdown]);
    assert!(!out.contains(&Output::Stopped));
    let grace = h.agent.config().executor_shutdown_grace_period + Duration::from_secs(1);
    let out = h.advance(grace);
    assert!(out.contains(&Output::Stopped));
    assert!(destroyed(&out) >= 1);
    // A stopped agent does nothing more.
    assert!(h.input(Input::Tick).is_empty());
    let _ = StreamId(0);
}

#[test]
fn detach_keeps_checkpointed_executors_running() {
    let mut h = Harness::new();
    h.register();
    let out = h.run_task("keep", "a", true);
    h.spawned(&out, 100);
    let out = h.run_task("drop", "b", false);
    h.spawned(&out, 101);
    let out = h.input(Input::Detach);
    assert_eq!(destroyed(&out), 1);
    assert!(out.contains(&Output::Stopped));
}

#[test]
fn a_task_on_a_named_network_joins_it_and_reports_its_address_in_every_update() {
    use agora_proto::internal::RunTask;
    use agora_proto::v1;
    let mut h = Harness::new();
    h.register();
    let mut task = task_info("web");
    task.container = Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Mesos as i32,
        network_infos: vec![v1::NetworkInfo {
            name: Some("agora".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let out = h.master(master_message::Message::RunTask(RunTask {
        framework_info: framework_info("f", false),
        task,
    }));
    let spawn = spawns(&out).pop().unwrap();
    let names: Vec<_> = spawn.networks.iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, [Some("agora".to_string())]);
    let (key, _) = h.spawned(&out, 7);
    h.subscribe(&key);
    let mut call = executor_call(&key, agora_proto::executor::call::Type::Update);
    call.update = Some(agora_proto::executor::call::Update {
        status: v1::TaskStatus {
            task_id: v1::TaskId {
                value: "web".into(),
            },
            state: TaskState::TaskRunning as i32,
            uuid: Some(vec![41; 16]),
            source: Some(v1::task_status::Source::Executor as i32),
            ..Default::default()
        },
    });
    let out = h.input(Input::ExecutorCall(call));
    let sent = updates(&out);
    let c = sent[0]
        .status
        .container_status
        .as_ref()
        .expect("a container status");
    assert_eq!(
        c.network_infos[0].ip_addresses[0].ip_address.as_deref(),
        Some("10.200.0.7")
    );
    assert_eq!(c.network_infos[0].name.as_deref(), Some("agora"));
    assert_eq!(
        c.container_id.as_ref().map(|c| c.value.clone()),
        Some(spawn.container.clone())
    );
    // When the executor dies, its leftovers are killed, then the container
    // leaves its networks.
    h.ack("f", "web", &[41; 16]);
    let out = h.exited(&key, Some(9));
    assert_eq!(updates(&out)[0].status.state(), TaskState::TaskFailed);
    let leftovers = out
        .iter()
        .position(|o| matches!(o, Output::KillLeftovers { .. }));
    let leave = out
        .iter()
        .position(|o| matches!(o, Output::LeaveNetworks { .. }));
    assert!(leftovers < leave, "{out:?}");
    assert!(out.iter().any(
        |o| matches!(o, Output::LeaveNetworks { container } if *container == spawn.container)
    ));
    // A task on the host's network joins nothing and leaves nothing.
    let out = h.run_task("f", "plain", false);
    assert!(spawns(&out)[0].networks.is_empty());
    let (key, _) = h.spawned(&out, 8);
    let out = h.exited(&key, Some(0));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::LeaveNetworks { .. }))
    );
}

#[test]
fn the_overlay_picture_follows_the_master_and_goes_when_the_agent_is_refused() {
    use agora_proto::internal::{Overlay, OverlayNetwork, OverlayPeer, ShutdownAgent};
    let mut h = Harness::new();
    h.register();
    let peer = |id: &str, subnet: &str| OverlayPeer {
        agent_id: id.into(),
        underlay: format!("10.77.0.{}", id.len()),
        subnet: subnet.into(),
    };
    let pictures = |out: &[Output]| -> Vec<Vec<String>> {
        out.iter()
            .filter_map(|o| match o {
                Output::Overlay(o) => Some(o.peers.values().map(|p| p.subnet.clone()).collect()),
                _ => None,
            })
            .collect()
    };
    // A change before the whole picture is ignored.
    let out = h.master(master_message::Message::Overlay(Overlay {
        network: None,
        peers: vec![peer("b", "10.200.1.0/24")],
        removed: vec![],
        ..Default::default()
    }));
    assert!(pictures(&out).is_empty());
    let out = h.master(master_message::Message::Overlay(Overlay {
        network: Some(OverlayNetwork {
            name: "agora".into(),
            cidr: "10.200.0.0/16".into(),
            subnet: "10.200.0.0/24".into(),
            underlay: "10.77.0.1".into(),
            vni: 1,
            port: 4789,
        }),
        peers: vec![peer("b", "10.200.1.0/24")],
        removed: vec![],
        ..Default::default()
    }));
    assert_eq!(pictures(&out), [vec!["10.200.1.0/24".to_string()]]);
    let out = h.master(master_message::Message::Overlay(Overlay {
        network: None,
        peers: vec![peer("cc", "10.200.2.0/24")],
        removed: vec!["b".into()],
        ..Default::default()
    }));
    assert_eq!(pictures(&out), [vec!["10.200.2.0/24".to_string()]]);
    // A keyring (an encrypted overlay) joins the picture; peers stay.
    let out = h.master(master_message::Message::Overlay(Overlay {
        keys: vec![agora_proto::internal::OverlayKey {
            id: 3,
            key: vec![7; 20],
        }],
        primary_key: Some(3),
        ..Default::default()
    }));
    let keyed = out
        .iter()
        .find_map(|o| match o {
            Output::Overlay(o) => Some(o.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (keyed.keys.len(), keyed.primary_key, keyed.peers.len()),
        (1, Some(3), 1)
    );
    let out = h.master(master_message::Message::ShutdownAgent(ShutdownAgent {
        message: Some("marked gone".into()),
    }));
    assert!(out.iter().any(|o| matches!(o, Output::RemoveOverlay)));
}

/// A task with a persistent volume (role `db`, id `id`, at `path`).
fn with_volume(task: &str, id: &str, path: &str) -> agora_proto::v1::TaskInfo {
    use agora_proto::v1;
    let mut t = task_info(task);
    t.resources.push(v1::Resource {
        name: "disk".into(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value: 10.0 }),
        reservations: vec![v1::resource::ReservationInfo {
            r#type: Some(v1::resource::reservation_info::Type::Dynamic as i32),
            role: Some("db".into()),
            principal: None,
            labels: None,
        }],
        disk: Some(v1::resource::DiskInfo {
            persistence: Some(v1::resource::disk_info::Persistence {
                id: id.into(),
                principal: None,
            }),
            volume: Some(v1::Volume {
                container_path: path.into(),
                mode: v1::volume::Mode::Rw as i32,
                ..Default::default()
            }),
            source: None,
        }),
        ..Default::default()
    });
    t
}

#[test]
fn volumes_are_linked_when_an_executor_starts_and_when_tasks_join_it() {
    use agora_proto::internal::RunTaskGroup;
    use agora_proto::v1;
    let mut h = Harness::new();
    h.register();
    let executor = v1::ExecutorInfo {
        r#type: Some(v1::executor_info::Type::Default as i32),
        executor_id: v1::ExecutorId {
            value: "grp".into(),
        },
        ..Default::default()
    };
    let group = |tasks: Vec<v1::TaskInfo>| {
        master_message::Message::RunTaskGroup(RunTaskGroup {
            framework_info: framework_info("f", true),
            executor: executor.clone(),
            task_group: v1::TaskGroupInfo { tasks },
        })
    };
    let out = h.master(group(vec![with_volume("a", "v1", "data")]));
    let spawn = spawns(&out).pop().expect("the executor starts");
    assert_eq!(spawn.volumes.len(), 1);
    assert_eq!(
        spawn.volumes[0].host,
        std::path::Path::new("/w/volumes/roles/db/v1")
    );
    assert_eq!(spawn.volumes[0].container_path, "data");
    h.spawned(&out, 42);
    // A later group joins the running executor: its volume is linked into
    // the same sandbox.
    let out = h.master(group(vec![with_volume("b", "v2", "logs")]));
    let linked: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::LinkVolumes { dir, volumes } => Some((dir.clone(), volumes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(linked.len(), 1, "{out:?}");
    assert_eq!(linked[0].0, spawn.dir);
    assert_eq!(linked[0].1[0].container_path, "logs");
}
