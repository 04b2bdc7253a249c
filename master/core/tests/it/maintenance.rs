//! Maintenance schedules (Mesos' maintenance primitives): scheduled
//! machines' offers carry the window, frameworks with tasks there get
//! inverse offers whose answers GET_MAINTENANCE_STATUS shows; nothing is
//! killed until START_MAINTENANCE takes the machine DOWN; its agent is
//! refused until STOP_MAINTENANCE.

use agora_master_core::ids::RequestId;
use agora_master_core::{CallError, Input, MasterView, OperatorCall, Output};
use agora_proto::internal::master_message::Message as M;
use agora_proto::v1::allocator::inverse_offer_status::Status;
use agora_proto::v1::{self, TaskState, maintenance};

use crate::harness::*;

fn operator(h: &mut Harness, call: OperatorCall) -> (Result<(), CallError>, Vec<Output>) {
    let out = h.handle(Input::Operator {
        principal: None,
        request: RequestId(9),
        call,
    });
    let result = out
        .iter()
        .find_map(|o| match o {
            Output::Reply {
                request: RequestId(9),
                result,
            } => Some(result.clone().map(|_| ())),
            _ => None,
        })
        .expect("a reply");
    (result, out)
}

fn machine(hostname: &str, ip: Option<&str>) -> v1::MachineId {
    v1::MachineId {
        hostname: Some(hostname.into()),
        ip: ip.map(Into::into),
    }
}

const START: i64 = 1_900_000_000_000_000_000;

fn window(machines: Vec<v1::MachineId>, hours: i64) -> maintenance::Window {
    maintenance::Window {
        machine_ids: machines,
        unavailability: v1::Unavailability {
            start: v1::TimeInfo { nanoseconds: START },
            duration: Some(v1::DurationInfo {
                nanoseconds: hours * 3_600_000_000_000,
            }),
        },
    }
}

fn schedule(
    h: &mut Harness,
    windows: Vec<maintenance::Window>,
) -> (Result<(), CallError>, Vec<Output>) {
    operator(
        h,
        OperatorCall::UpdateMaintenanceSchedule(maintenance::Schedule { windows }),
    )
}

fn inverse_offers(out: &[Output], fw: &Fw) -> Vec<v1::InverseOffer> {
    events(out, &fw.stream)
        .into_iter()
        .filter_map(|e| e.inverse_offers)
        .flat_map(|i| i.inverse_offers)
        .collect()
}

#[test]
fn a_scheduled_machine_is_offered_with_its_window_and_its_frameworks_are_asked_to_leave() {
    let mut h = Harness::new();
    let a = h.register_agent("a.example", "cpus:4;mem:1024");
    let b = h.register_agent("b.example", "cpus:4;mem:1024");
    let fw = h.framework("web");
    let first = h.offers_for(&fw);
    let on_a = first
        .iter()
        .find(|o| o.agent_id.value == a.id.to_string())
        .unwrap()
        .clone();
    h.launch(&fw, &on_a, "t1", "cpus:1", "sleep 600");
    h.agent_update(&a, &fw, "t1", TaskState::TaskRunning, 1);

    // The hostname matches without regard to case; the IP must match too.
    let (r, out) = schedule(
        &mut h,
        vec![window(vec![machine("A.Example", Some("127.0.0.1"))], 2)],
    );
    r.unwrap();
    let asked = inverse_offers(&out, &fw);
    assert_eq!(asked.len(), 1, "{out:?}");
    assert_eq!(asked[0].agent_id.as_ref().unwrap().value, a.id.to_string());
    assert_eq!(asked[0].unavailability.start.nanoseconds, START);
    // Nothing is killed.
    assert!(
        !agent_messages(&out, a.conn)
            .iter()
            .any(|m| matches!(m, M::KillTask(_))),
        "{out:?}"
    );

    // Offers of a carry the window; b's do not.
    let out = h.advance(std::time::Duration::from_secs(6));
    let mut seen = offers(&out, &fw.stream);
    seen.extend(h.offers_for(&fw));
    let of = |id: &str| seen.iter().find(|o| o.agent_id.value == id).cloned();
    let o = of(&a.id.to_string()).expect("a is offered again");
    assert_eq!(o.unavailability.unwrap().start.nanoseconds, START);
    if let Some(o) = of(&b.id.to_string()) {
        assert!(o.unavailability.is_none());
    }

    // The answer shows in the status; the schedule reads back normalised.
    let (r, _) = h.call(
        &fw,
        &format!(
            r#"{{"type":"ACCEPT_INVERSE_OFFERS","accept_inverse_offers":{{"inverse_offer_ids":[{{"value":"{}"}}]}}}}"#,
            asked[0].id.value
        ),
    );
    r.unwrap();
    let status = h.master.get_maintenance_status(None).unwrap();
    assert_eq!(status.draining_machines.len(), 1);
    let m = &status.draining_machines[0];
    assert_eq!(m.id.hostname.as_deref(), Some("a.example"));
    assert_eq!(m.statuses.len(), 1);
    assert_eq!(m.statuses[0].status(), Status::Accept);
    assert!(status.down_machines.is_empty());
    let read = h.master.get_maintenance_schedule(None).unwrap();
    assert_eq!(
        read.windows[0].machine_ids[0].hostname.as_deref(),
        Some("a.example")
    );

    // Taken out of the schedule: the inverse offer is rescinded.
    let (r, out) = schedule(&mut h, vec![]);
    r.unwrap();
    assert!(
        events(&out, &fw.stream)
            .iter()
            .any(|e| e.rescind_inverse_offer.is_some()),
        "{out:?}"
    );
    assert!(
        h.master
            .get_maintenance_status(None)
            .unwrap()
            .draining_machines
            .is_empty()
    );
}

#[test]
fn start_maintenance_takes_the_machine_down_and_stop_brings_it_back() {
    let mut h = Harness::new();
    let a = h.register_agent("a.example", "cpus:4;mem:1024");
    let (fw, _) =
        h.subscribe(r#"{"user":"root","name":"pa","capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.agent_update(&a, &fw, "t1", TaskState::TaskRunning, 1);

    // Only a scheduled machine can go down.
    let (r, _) = operator(
        &mut h,
        OperatorCall::StartMaintenance(vec![machine("a.example", None)]),
    );
    assert!(matches!(r, Err(CallError::BadRequest(m)) if m.contains("not scheduled")));
    schedule(&mut h, vec![window(vec![machine("a.example", None)], 1)])
        .0
        .unwrap();
    let (r, out) = operator(
        &mut h,
        OperatorCall::StartMaintenance(vec![machine("a.example", None)]),
    );
    r.unwrap();
    assert!(
        agent_messages(&out, a.conn)
            .iter()
            .any(|m| matches!(m, M::ShutdownAgent(_))),
        "{out:?}"
    );
    let gone = updates(&out, &fw.stream);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].state(), TaskState::TaskGoneByOperator);
    assert!(h.master.get_agents().agents.is_empty());
    let status = h.master.get_maintenance_status(None).unwrap();
    assert_eq!(status.down_machines.len(), 1);
    assert!(status.draining_machines.is_empty());

    // A DOWN machine cannot leave the schedule, and its agent is refused.
    let (r, _) = schedule(&mut h, vec![]);
    assert!(matches!(r, Err(CallError::BadRequest(m)) if m.contains("DOWN")));
    let conn = agora_master_core::ids::ConnId(999);
    let out = h.handle(Input::Agent {
        conn,
        message: agora_proto::internal::AgentMessage {
            message: Some(agora_proto::internal::agent_message::Message::Register(
                agora_proto::internal::Register {
                    agent_info: v1::AgentInfo {
                        hostname: "a.example".into(),
                        port: Some(5051),
                        resources: vec![],
                        attributes: vec![],
                        id: Some(a.id.to_proto()),
                        domain: None,
                    },
                    address: "127.0.0.1:5051".into(),
                    version: None,
                    tasks: vec![],
                    executors: vec![],
                    frameworks: vec![],
                    epoch: None,
                },
            )),
        },
    });
    assert!(
        agent_messages(&out, conn)
            .iter()
            .any(|m| matches!(m, M::ShutdownAgent(_))),
        "{out:?}"
    );

    // STOP_MAINTENANCE: UP, out of the schedule; the agent is admitted
    // again with its id.
    let (r, _) = operator(
        &mut h,
        OperatorCall::StopMaintenance(vec![machine("b.example", None)]),
    );
    assert!(matches!(r, Err(CallError::BadRequest(m)) if m.contains("not DOWN")));
    operator(
        &mut h,
        OperatorCall::StopMaintenance(vec![machine("A.EXAMPLE", None)]),
    )
    .0
    .unwrap();
    assert!(
        h.master
            .get_maintenance_schedule(None)
            .unwrap()
            .windows
            .is_empty()
    );
    let back = h.register_agent_with("a.example", "cpus:4;mem:1024", "", Some(&a.id));
    assert_eq!(back.id, a.id);
    // The registry keeps the schedule across a failover.
    schedule(&mut h, vec![window(vec![machine("a.example", None)], 1)])
        .0
        .unwrap();
    let stored = h.master.registry();
    assert_eq!(stored.maintenance.unwrap().windows.len(), 1);
}

#[test]
fn a_schedule_is_validated_as_mesos_does() {
    let mut h = Harness::new();
    let refused = |h: &mut Harness, windows, what: &str| {
        let (r, _) = schedule(h, windows);
        match r {
            Err(CallError::BadRequest(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        }
    };
    refused(&mut h, vec![window(vec![], 1)], "at least one machine");
    refused(
        &mut h,
        vec![window(
            vec![v1::MachineId {
                hostname: None,
                ip: None,
            }],
            1,
        )],
        "hostname or an IP",
    );
    refused(
        &mut h,
        vec![window(vec![machine("x", Some("not-an-ip"))], 1)],
        "not an IP",
    );
    refused(
        &mut h,
        vec![
            window(vec![machine("x", None)], 1),
            window(vec![machine("X", None)], 1),
        ],
        "more than one",
    );
    refused(
        &mut h,
        vec![window(vec![machine("x", None)], -1)],
        "negative",
    );
    assert!(
        h.master
            .get_maintenance_schedule(None)
            .unwrap()
            .windows
            .is_empty()
    );
}
