use std::time::Duration;

use agora_master_core::ids::ConnId;
use agora_master_core::{Config, Input, MasterView, Output};
use agora_proto::internal::master_message::Message as M;
use agora_proto::internal::{AgentMessage, ExecutorExited, Pong, StatusUpdate, agent_message};
use agora_proto::scheduler::event::Type as E;
use agora_proto::v1::{self, TaskState, task_status::Reason};

use crate::harness::*;

#[test]
fn agents_get_master_scoped_ids() {
    let mut h = Harness::new();
    let a = h.register_agent("agent-1", "cpus:1;mem:64");
    let b = h.register_agent("agent-2", "cpus:1;mem:64");
    assert_eq!((a.id.as_str(), b.id.as_str()), ("M-S0", "M-S1"));
    assert_eq!(h.master.get_agents().agents.len(), 2);
}

#[test]
fn messages_before_register_and_bad_resources_shut_the_agent_down() {
    let mut h = Harness::new();
    let out = h.handle(Input::Agent {
        conn: ConnId(99),
        message: AgentMessage {
            message: Some(agent_message::Message::Pong(Pong { sequence: None })),
        },
    });
    assert!(matches!(
        agent_messages(&out, ConnId(99))[0],
        M::ShutdownAgent(_)
    ));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::CloseAgent { conn: ConnId(99) }))
    );
}

#[test]
fn a_restarted_agent_keeps_its_id_and_tasks() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let (fw, _) =
        h.subscribe(r#"{"user":"root","name":"fw","checkpoint":true,"failover_timeout":60}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.agent_update(&ag, &fw, "t1", TaskState::TaskRunning, 1);
    let out = h.handle(Input::AgentClosed { conn: ag.conn });
    // Checkpointing framework: no TASK_LOST, but nothing is offered from the agent.
    assert!(updates(&out, &fw.stream).is_empty());
    assert!(offers(&h.advance(Duration::from_secs(2)), &fw.stream).is_empty());
    // It comes back (same id) and reports its task.
    let task = h.master.get_tasks().tasks[0].clone();
    let conn = ConnId(500);
    let out = h.handle(Input::Agent {
        conn,
        message: AgentMessage {
            message: Some(agent_message::Message::Register(
                agora_proto::internal::Register {
                    agent_info: v1::AgentInfo {
                        hostname: "agent-1".into(),
                        id: Some(ag.id.to_proto()),
                        resources: agora_proto::resources::Resources::parse("cpus:4;mem:1024", "*")
                            .unwrap()
                            .to_protos(),
                        ..Default::default()
                    },
                    address: "127.0.0.1:5051".into(),
                    tasks: vec![v1::Task {
                        state: TaskState::TaskRunning as i32,
                        ..task
                    }],
                    ..Default::default()
                },
            )),
        },
    });
    assert!(
        matches!(agent_messages(&out, conn)[0], M::Registered(ref r) if r.agent_id.value == ag.id.as_str())
    );
    assert_eq!(h.master.get_tasks().tasks.len(), 1);
    // The task's cpu stays allocated: the new offer has 3 cpus.
    let offers = h.offers_for(&fw);
    assert_eq!(
        offers[0]
            .resources
            .iter()
            .find(|r| r.name == "cpus")
            .unwrap()
            .scalar
            .as_ref()
            .unwrap()
            .value,
        3.0
    );
}

#[test]
fn disconnect_loses_tasks_of_frameworks_that_do_not_checkpoint() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    let o2 = h.offers_for(&fw);
    assert_eq!(o2.len(), 1);
    let out = h.handle(Input::AgentClosed { conn: ag.conn });
    let evs = events(&out, &fw.stream);
    assert!(
        evs.iter()
            .any(|e| e.r#type() == E::Rescind && e.rescind.as_ref().unwrap().offer_id == o2[0].id)
    );
    let up = updates(&out, &fw.stream);
    assert_eq!(
        (up[0].state(), up[0].reason()),
        (TaskState::TaskLost, Reason::AgentDisconnected)
    );
}

/// Issue 12.3: an agent whose connection closed (a host that died) is
/// unreachable once its ping budget (here 10 s x 3) is spent, not after
/// agent_reregister_timeout (10 minutes by default), which only applies to
/// agents a new leader expects after a failover.
#[test]
fn an_agent_that_stays_away_becomes_unreachable() {
    let mut h = Harness::with_config(Config {
        agent_ping_timeout: Duration::from_secs(10),
        max_agent_ping_timeouts: 3,
        ..Config::default()
    });
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let (fw, _) = h.subscribe(r#"{"user":"root","name":"pa","checkpoint":true,"failover_timeout":600,"capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.handle(Input::AgentClosed { conn: ag.conn });
    let out = h.advance(Duration::from_secs(29));
    assert!(
        updates(&out, &fw.stream).is_empty(),
        "still within its budget"
    );
    let out = h.advance(Duration::from_secs(1));
    let up = updates(&out, &fw.stream);
    assert_eq!(
        (up[0].state(), up[0].reason()),
        (TaskState::TaskUnreachable, Reason::AgentRemoved)
    );
    assert!(up[0].unreachable_time.is_some());
    assert!(
        events(&out, &fw.stream)
            .iter()
            .any(|e| e.r#type() == E::Failure
                && e.failure.as_ref().unwrap().agent_id.as_ref().unwrap().value == ag.id.as_str())
    );
    assert_eq!(h.master.get_tasks().unreachable_tasks.len(), 1);
    // Explicit reconciliation of an unknown task on it says UNREACHABLE.
    let call = format!(
        r#"{{"type":"RECONCILE","reconcile":{{"tasks":[{{"task_id":{{"value":"x"}},"agent_id":{{"value":"{}"}}}}]}}}}"#,
        ag.id
    );
    let (_, out) = h.call(&fw, &call);
    assert_eq!(
        updates(&out, &fw.stream)[0].state(),
        TaskState::TaskUnreachable
    );
}

#[test]
fn missed_pings_make_an_agent_unreachable() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    // The agent answers the first ping, then goes silent.
    let out = h.advance(Duration::from_secs(15));
    assert!(
        agent_messages(&out, ag.conn)
            .iter()
            .any(|m| matches!(m, M::Ping(_)))
    );
    h.handle(Input::Agent {
        conn: ag.conn,
        message: AgentMessage {
            message: Some(agent_message::Message::Pong(Pong { sequence: None })),
        },
    });
    let mut failure_at = None;
    for i in 1..=6 {
        let out = h.advance(Duration::from_secs(15));
        if events(&out, &fw.stream)
            .iter()
            .any(|e| e.r#type() == E::Failure)
        {
            failure_at = Some(i);
            break;
        }
    }
    // Ping i=1 is sent; misses are counted at pings 2..=6: five misses.
    assert_eq!(failure_at, Some(6));
    assert_eq!(h.master.get_agents().agents.len(), 0);
}

#[test]
fn updates_for_removed_frameworks_tell_the_agent_to_shut_them_down() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    h.call(&fw, r#"{"type":"TEARDOWN"}"#).0.unwrap();
    let out = h.agent_update(&ag, &fw, "t1", TaskState::TaskFinished, 3);
    assert!(matches!(
        agent_messages(&out, ag.conn)[0],
        M::ShutdownFramework(_)
    ));
    // An update for a framework nobody knows is dropped.
    let out = h.handle(Input::Agent {
        conn: ag.conn,
        message: AgentMessage {
            message: Some(agent_message::Message::StatusUpdate(StatusUpdate {
                framework_id: v1::FrameworkId {
                    value: "nobody".into(),
                },
                status: v1::TaskStatus {
                    task_id: v1::TaskId { value: "t".into() },
                    state: 1,
                    ..Default::default()
                },
                latest_state: None,
            })),
        },
    });
    assert!(out.is_empty());
}

#[test]
fn executor_exit_is_a_failure_event_and_frees_its_resources() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:2;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    let call = format!(
        r#"{{"type":"ACCEPT","accept":{{"offer_ids":[{{"value":"{}"}}],"operations":[{{"type":"LAUNCH","launch":{{"task_infos":[
            {{"name":"a","task_id":{{"value":"a"}},"agent_id":{{"value":"{}"}},
              "resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":0.5}}}}],
              "executor":{{"executor_id":{{"value":"e"}},"command":{{"value":"./exec"}},
                 "resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":0.5}}}}]}}}}]}}}}],"filters":{{"refuse_seconds":0}}}}}}"#,
        offer.id.value, ag.id
    );
    h.call(&fw, &call).0.unwrap();
    h.agent_update(&ag, &fw, "a", TaskState::TaskFinished, 1);
    h.ack(&fw, &ag, "a", 1).unwrap();
    let out = h.handle(Input::Agent {
        conn: ag.conn,
        message: AgentMessage {
            message: Some(agent_message::Message::ExecutorExited(ExecutorExited {
                framework_id: fw.id.to_proto(),
                executor_id: v1::ExecutorId { value: "e".into() },
                status: Some(0),
            })),
        },
    });
    let failure = events(&out, &fw.stream)
        .into_iter()
        .find_map(|e| e.failure)
        .unwrap();
    assert_eq!(failure.executor_id.unwrap().value, "e");
    let offers = h.offers_for(&fw);
    let cpus: f64 = offers
        .iter()
        .flat_map(|o| o.resources.iter())
        .filter(|r| r.name == "cpus")
        .map(|r| r.scalar.as_ref().unwrap().value)
        .sum();
    assert_eq!(cpus, 2.0);
}

#[test]
fn marking_an_agent_gone_ends_its_tasks_and_refuses_it_later() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let (fw, _) =
        h.subscribe(r#"{"user":"root","name":"pa","capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    let out = h.handle(Input::Operator {
        principal: None,
        request: agora_master_core::ids::RequestId(77),
        call: agora_master_core::OperatorCall::MarkAgentGone(ag.id.clone()),
    });
    assert_eq!(
        updates(&out, &fw.stream)[0].state(),
        TaskState::TaskGoneByOperator
    );
    // If it ever comes back, it is told to shut down.
    let conn = ConnId(900);
    let out = h.handle(Input::Agent {
        conn,
        message: AgentMessage {
            message: Some(agent_message::Message::Register(
                agora_proto::internal::Register {
                    agent_info: v1::AgentInfo {
                        hostname: "agent-1".into(),
                        id: Some(ag.id.to_proto()),
                        ..Default::default()
                    },
                    address: "127.0.0.1:5051".into(),
                    ..Default::default()
                },
            )),
        },
    });
    assert!(matches!(agent_messages(&out, conn)[0], M::ShutdownAgent(_)));
}

#[test]
fn a_master_recovered_from_the_registry_expects_its_agents_back_and_keeps_the_rest() {
    let mut h = Harness::new();
    let back = h.register_agent("agent-back", "cpus:4;mem:1024");
    let away = h.register_agent("agent-away", "cpus:2;mem:512");
    let gone = h.register_agent("agent-gone", "cpus:1;mem:256");
    assert!(h.master.take_registry_changed());
    assert!(!h.master.take_registry_changed(), "asked once, told once");
    h.handle(Input::Operator {
        principal: None,
        request: agora_master_core::ids::RequestId(1),
        call: agora_master_core::OperatorCall::MarkAgentGone(gone.id.clone()),
    });
    h.handle(Input::Operator {
        principal: None,
        request: agora_master_core::ids::RequestId(2),
        call: agora_master_core::OperatorCall::UpdateWeights(vec![("web".into(), 3.0)]),
    });
    assert!(h.master.take_registry_changed());
    let registry = h.master.registry();
    assert_eq!(registry.admitted.len(), 2, "{registry:?}");
    assert_eq!(registry.gone, vec![gone.id.to_string()]);

    // A new master (a failover) starts from it.
    let mut n = Harness::with_config(Config {
        agent_reregister_timeout: Duration::from_secs(60),
        ..Config::default()
    });
    n.master.recover(n.now, registry);
    assert_eq!(n.master.allocator().weight("web"), 3.0);
    // The agent marked gone stays out.
    let conn = ConnId(900);
    let out = n.handle(Input::Agent {
        conn,
        message: AgentMessage {
            message: Some(agent_message::Message::Register(
                agora_proto::internal::Register {
                    agent_info: v1::AgentInfo {
                        hostname: "agent-gone".into(),
                        id: Some(gone.id.to_proto()),
                        ..Default::default()
                    },
                    address: "127.0.0.1:5051".into(),
                    ..Default::default()
                },
            )),
        },
    });
    assert!(matches!(agent_messages(&out, conn)[0], M::ShutdownAgent(_)));
    // One agent comes back in time; the other does not and is unreachable.
    n.register_agent_with("agent-back", "cpus:4;mem:1024", "", Some(&back.id));
    n.advance(Duration::from_secs(61));
    let registry = n.master.registry();
    let unreachable: Vec<String> = registry
        .unreachable
        .iter()
        .map(|u| u.info.hostname.clone())
        .collect();
    assert_eq!(unreachable, vec!["agent-away".to_string()]);
    assert_eq!(registry.admitted.len(), 1);
    assert_eq!(registry.admitted[0].hostname, "agent-back");
    // A framework reconciling a task on it hears it is unreachable.
    let fw = n.framework("pa");
    let (result, out) = n.call(
        &fw,
        &format!(
            r#"{{"type":"RECONCILE","reconcile":{{"tasks":[{{"task_id":{{"value":"t9"}},"agent_id":{{"value":"{}"}}}}]}}}}"#,
            away.id
        ),
    );
    assert!(result.is_ok(), "{result:?}");
    let states: Vec<TaskState> = updates(&out, &fw.stream)
        .iter()
        .map(|s| s.state())
        .collect();
    assert!(
        states == [TaskState::TaskUnreachable] || states == [TaskState::TaskLost],
        "{states:?}"
    );
}
