//! Resident apps: the first launch reserves and creates its volume, later
//! tasks come back to the same reservation, and a deleted app's
//! reservations are destroyed and unreserved.

use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState};

use super::super::{Call, Config, Marathon, Output, State};
use crate::time::Millis;

const NOW: Millis = Millis(1_700_000_000_000);
const APP: &str = r#"{"id":"/db","cmd":"cat data/x || echo 1 > data/x; sleep 600","cpus":0.5,"mem":64,
    "container":{"type":"MESOS","volumes":[{"containerPath":"data","mode":"RW","persistent":{"size":10}}]}}"#;

fn marathon(role: &str) -> Marathon {
    let config = Config {
        role: role.into(),
        principal: Some("marathon".into()),
        ..Config::default()
    };
    let mut m = Marathon::new(config, State::default(), 7);
    m.subscribed(NOW, "fw-1");
    m.take_outputs();
    m
}

/// An offer of `resources` (normalised protobufs) allocated to `db`.
fn offer(n: u32, agent: &str, resources: Vec<v1::Resource>) -> v1::Offer {
    v1::Offer {
        id: v1::OfferId {
            value: format!("o{n}"),
        },
        framework_id: v1::FrameworkId {
            value: "fw-1".into(),
        },
        agent_id: v1::AgentId {
            value: agent.into(),
        },
        hostname: agent.into(),
        resources,
        allocation_info: Some(v1::resource::AllocationInfo {
            role: Some("db".into()),
        }),
        ..Default::default()
    }
}

fn unreserved(agent: &str, n: u32) -> v1::Offer {
    let r = Resources::parse("cpus:4;mem:4096;disk:1000;ports:[31000-31100]", "*")
        .unwrap()
        .allocated_to("db");
    offer(n, agent, r.to_protos())
}

/// What the master would offer after the operations of an accept: the
/// reserved resources the launched task held.
fn reserved_again(task: &v1::TaskInfo, agent: &str, n: u32) -> v1::Offer {
    offer(n, agent, task.resources.clone())
}

fn status(m: &mut Marathon, task: &str, state: TaskState) {
    m.status(
        NOW.plus(100),
        &v1::TaskStatus {
            task_id: v1::TaskId { value: task.into() },
            state: state as i32,
            ..Default::default()
        },
    );
}

fn operate(out: &[Output]) -> Option<(Vec<v1::offer::Operation>, Vec<v1::TaskInfo>)> {
    out.iter().find_map(|o| match o {
        Output::Call(Call::Operate {
            operations, tasks, ..
        }) => Some((operations.clone(), tasks.clone())),
        _ => None,
    })
}

fn launched(out: &[Output]) -> Vec<v1::TaskInfo> {
    out.iter()
        .filter_map(|o| match o {
            Output::Call(Call::Launch { tasks, .. }) => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn volume_ids(task: &v1::TaskInfo) -> Vec<String> {
    task.resources
        .iter()
        .filter_map(|r| Some(r.disk.as_ref()?.persistence.as_ref()?.id.clone()))
        .collect()
}

#[test]
fn the_first_launch_reserves_and_creates_and_replacements_come_back_to_the_data() {
    let mut m = marathon("db");
    let reply = m.create_app(NOW, APP.as_bytes(), false);
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let app = &reply.body.unwrap();
    assert_eq!(app["upgradeStrategy"]["maximumOverCapacity"], 0.0);
    assert_eq!(app["unreachableStrategy"], "disabled");
    assert_eq!(app["residency"]["taskLostBehavior"], "WAIT_FOREVER");
    m.take_outputs();

    m.offers(NOW.plus(10), vec![unreserved("a1", 1)]);
    let (ops, tasks) = operate(&m.take_outputs()).expect("RESERVE, CREATE and LAUNCH");
    let kinds: Vec<_> = ops.iter().map(|o| o.r#type()).collect();
    use v1::offer::operation::Type as Op;
    assert_eq!(kinds, [Op::Reserve, Op::Create]);
    let reserve = &ops[0].reserve.as_ref().unwrap().resources;
    let labels = &reserve[0].reservations[0].labels.as_ref().unwrap().labels;
    assert_eq!(labels[0].key, "marathon_framework_id");
    assert_eq!(labels[0].value.as_deref(), Some("fw-1"));
    assert_eq!(
        reserve[0].reservations[0].principal.as_deref(),
        Some("marathon")
    );
    let disk: f64 = reserve
        .iter()
        .filter(|r| r.name == "disk")
        .map(|r| r.scalar.unwrap().value)
        .sum();
    assert_eq!(disk, 10.0, "the volume's disk is reserved");
    let first = tasks[0].clone();
    assert_eq!(volume_ids(&first).len(), 1);
    assert!(first.resources.iter().all(|r| !r.reservations.is_empty()));

    // The task is killed (its replacement may not double the reservation
    // while it stops), then fails. Another agent's offer gets nothing: the
    // instance waits for its reservation's agent.
    status(&mut m, &first.task_id.value, TaskState::TaskRunning);
    let how = super::super::TaskKill::default();
    m.delete_app_task(NOW.plus(200), "/db", &first.task_id.value, how);
    m.take_outputs();
    m.offers(NOW.plus(300), vec![unreserved("a2", 2)]);
    let out = m.take_outputs();
    assert!(
        operate(&out).is_none() && launched(&out).is_empty(),
        "{out:?}"
    );
    status(&mut m, &first.task_id.value, TaskState::TaskFailed);
    m.take_outputs();
    let later = NOW.plus(60_000);
    m.offers(later, vec![unreserved("a2", 2)]);
    let out = m.take_outputs();
    assert!(
        operate(&out).is_none() && launched(&out).is_empty(),
        "{out:?}"
    );

    // Its agent offers the reservation: the replacement launches on it,
    // with the same volume and ports.
    let mut resources = reserved_again(&first, "a1", 3).resources;
    resources.extend(unreserved("a1", 3).resources);
    m.offers(later.plus(10), vec![offer(3, "a1", resources)]);
    let out = m.take_outputs();
    let again = launched(&out);
    assert_eq!(again.len(), 1, "{out:?}");
    assert_eq!(volume_ids(&again[0]), volume_ids(&first));
    assert_ne!(again[0].task_id, first.task_id);
    assert_eq!(m.state().reservations.len(), 1);
    // /v2/tasks shows the volume (and the app's role), as Marathon.
    let tasks = m.list_tasks(&[]).body.unwrap();
    let task = &tasks["tasks"][0];
    assert_eq!(task["role"], "db");
    assert_eq!(task["localVolumes"][0]["containerPath"], "data");
    assert_eq!(
        task["localVolumes"][0]["persistenceId"].as_str(),
        volume_ids(&first).first().map(String::as_str)
    );
    let stored = State::from_entries(&m.state().to_entries().unwrap()).unwrap();
    assert_eq!(stored.reservations, m.state().reservations);

    // The app is deleted: once its task is gone, the offered reservation
    // is destroyed and unreserved.
    m.delete_app(later.plus(20), "/db", false);
    status(&mut m, &again[0].task_id.value, TaskState::TaskKilled);
    m.take_outputs();
    assert!(m.state().reservations.is_empty());
    m.offers(later.plus(30), vec![reserved_again(&again[0], "a1", 4)]);
    let (ops, tasks) = operate(&m.take_outputs()).expect("DESTROY and UNRESERVE");
    let kinds: Vec<_> = ops.iter().map(|o| o.r#type()).collect();
    assert_eq!(kinds, [Op::Destroy, Op::Unreserve]);
    assert!(tasks.is_empty());
    let unreserve = &ops[1].unreserve.as_ref().unwrap().resources;
    assert!(unreserve.iter().all(|r| r.disk.is_none()), "{unreserve:?}");
}

#[test]
fn persistent_volumes_need_a_role_and_resident_upgrade_limits() {
    let mut m = marathon("*");
    let reply = m.create_app(NOW, APP.as_bytes(), false);
    assert_eq!(reply.status, 422);
    assert!(reply.body.unwrap().to_string().contains("--mesos-role"));

    let mut m = marathon("db");
    let over = APP.replace(
        r#""cpus":0.5"#,
        r#""cpus":0.5,"upgradeStrategy":{"maximumOverCapacity":0.5}"#,
    );
    let reply = m.create_app(NOW, over.as_bytes(), false);
    assert_eq!(reply.status, 422);
    assert!(
        reply
            .body
            .unwrap()
            .to_string()
            .contains("maximumOverCapacity")
    );
    let slash = APP.replace(
        r#""containerPath":"data""#,
        r#""containerPath":"/var/data""#,
    );
    let reply = m.create_app(NOW, slash.as_bytes(), false);
    assert_eq!(reply.status, 422);
}

#[test]
fn wiping_a_task_gives_up_its_reservation() {
    let mut m = marathon("db");
    m.create_app(NOW, APP.as_bytes(), false);
    m.offers(NOW.plus(10), vec![unreserved("a1", 1)]);
    let (_, tasks) = operate(&m.take_outputs()).unwrap();
    let task = tasks[0].task_id.value.clone();
    status(&mut m, &task, TaskState::TaskRunning);
    let how = super::super::TaskKill {
        wipe: true,
        ..Default::default()
    };
    m.delete_app_task(NOW.plus(200), "/db", &task, how);
    assert!(m.state().reservations.is_empty());
    status(&mut m, &task, TaskState::TaskKilled);
    m.take_outputs();
    // Another agent: a new reservation there.
    m.offers(NOW.plus(60_000), vec![unreserved("a2", 2)]);
    let (ops, tasks) = operate(&m.take_outputs()).expect("a new reservation");
    assert_eq!(ops.len(), 2);
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        m.state().reservations.values().next().unwrap().agent_id,
        "a2"
    );
}
