use std::time::Duration;

use agora_master_core::Output;
use agora_master_core::ids::{FrameworkId, StreamId};
use agora_proto::internal::master_message::Message as M;
use agora_proto::scheduler::event::Type as E;
use agora_proto::v1::{TaskState, task_status::Reason};

use crate::harness::*;

#[test]
fn subscribe_sends_subscribed_then_heartbeat() {
    let mut h = Harness::new();
    let (fw, out) = h.subscribe(r#"{"user":"root","name":"fw"}"#);
    assert_eq!(fw.id, FrameworkId("M-0000".into()));
    assert_eq!(
        event_types(&out, &fw.stream),
        vec![E::Subscribed, E::Heartbeat]
    );
    let subscribed = events(&out, &fw.stream)[0].subscribed.clone().unwrap();
    assert_eq!(subscribed.heartbeat_interval_seconds, Some(15.0));
    assert_eq!(
        subscribed.master_info.unwrap().version.as_deref(),
        Some("1.11.0")
    );
    assert!(matches!(out[0], Output::Reply { result: Ok(()), .. }));
    // The next framework gets the next id.
    assert_eq!(h.framework("second").id, FrameworkId("M-0001".into()));
}

#[test]
fn invalid_framework_info_is_an_error_event_on_a_200_stream() {
    let mut h = Harness::new();
    let (fw, out) = h.subscribe(r#"{"user":"root","name":"fw","roles":["a"]}"#);
    assert!(matches!(out[0], Output::Reply { result: Ok(()), .. }));
    let evs = events(&out, &fw.stream);
    assert_eq!(evs.len(), 1);
    assert!(
        evs[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("MULTI_ROLE")
    );
    assert!(closed(&out, &fw.stream));
}

#[test]
fn framework_id_mismatch_is_400() {
    let mut h = Harness::new();
    let call: agora_proto::scheduler::Call = agora_proto::json::from_slice(
        br#"{"type":"SUBSCRIBE","framework_id":{"value":"a"},"subscribe":{"framework_info":{"user":"u","name":"n","id":{"value":"b"}}}}"#,
    )
    .unwrap();
    let out = h.handle(agora_master_core::Input::Subscribe {
        request: agora_master_core::ids::RequestId(1),
        stream: StreamId("s".into()),
        call,
        principal: None,
    });
    assert!(matches!(&out[0], Output::Reply { result: Err(e), .. } if e.status() == 400));
}

#[test]
fn resubscribing_fails_over_the_old_stream() {
    let mut h = Harness::new();
    let fw = h.framework("fw");
    let (again, out) = h.subscribe(&format!(
        r#"{{"user":"root","name":"fw","id":{{"value":"{}"}}}}"#,
        fw.id
    ));
    assert_eq!(again.id, fw.id);
    let old = events(&out, &fw.stream);
    assert_eq!(
        old[0].error.as_ref().unwrap().message,
        "Framework failed over"
    );
    assert!(closed(&out, &fw.stream));
    // Calls on the old stream id are now refused.
    let (r, _) = h.call(&fw, r#"{"type":"REVIVE"}"#);
    assert_eq!(r.unwrap_err().status(), 400);
    let (r, _) = h.call(&again, r#"{"type":"REVIVE"}"#);
    assert!(r.is_ok());
}

#[test]
fn a_torn_down_framework_cannot_come_back() {
    let mut h = Harness::new();
    let fw = h.framework("fw");
    let (r, out) = h.call(&fw, r#"{"type":"TEARDOWN"}"#);
    assert!(r.is_ok());
    assert!(closed(&out, &fw.stream));
    let (again, out) = h.subscribe(&format!(
        r#"{{"user":"root","name":"fw","id":{{"value":"{}"}}}}"#,
        fw.id
    ));
    assert_eq!(
        events(&out, &again.stream)[0]
            .error
            .as_ref()
            .unwrap()
            .message,
        "Framework has been removed"
    );
}

#[test]
fn call_errors_follow_mesos() {
    let mut h = Harness::new();
    let fw = h.framework("fw");
    let mut call: agora_proto::scheduler::Call =
        agora_proto::json::from_slice(br#"{"type":"REVIVE"}"#).unwrap();
    call.framework_id = Some(fw.id.to_proto());
    // No Mesos-Stream-Id.
    assert_eq!(h.call_raw(None, call.clone()).0.unwrap_err().status(), 400);
    // Wrong stream id.
    assert_eq!(
        h.call_raw(Some(StreamId("nope".into())), call.clone())
            .0
            .unwrap_err()
            .status(),
        400
    );
    // Unknown framework.
    let mut unknown = call.clone();
    unknown.framework_id = Some(FrameworkId("zzz".into()).to_proto());
    let err = h.call_raw(Some(fw.stream.clone()), unknown).0.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (400, "Framework cannot be found")
    );
    // Missing payload.
    let (r, _) = h.call(&fw, r#"{"type":"ACCEPT"}"#);
    assert_eq!(
        r.unwrap_err().to_string(),
        "Expecting 'accept' to be present"
    );
    // UNKNOWN.
    let (r, _) = h.call(&fw, r#"{"type":"UNKNOWN"}"#);
    assert_eq!(r.unwrap_err().status(), 501);
    // ACKNOWLEDGE with a uuid that is not 16 bytes.
    let (r, _) = h.call(&fw, r#"{"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"AAAA"}}"#);
    assert_eq!(r.unwrap_err().status(), 400);
    // The stream drops: the framework is no longer subscribed (403).
    h.handle(agora_master_core::Input::StreamClosed {
        stream: fw.stream.clone(),
    });
    assert_eq!(
        h.call_raw(Some(fw.stream.clone()), call)
            .0
            .unwrap_err()
            .status(),
        403
    );
}

#[test]
fn offers_use_the_legacy_format_without_multi_role() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024;ports:[31000-31009]");
    let fw = h.framework("fw");
    let offers = h.offers_for(&fw);
    assert_eq!(offers.len(), 1);
    let o = &offers[0];
    assert_eq!(o.agent_id.value, ag.id.as_str());
    assert_eq!(o.hostname, "agent-1");
    assert!(o.allocation_info.is_none());
    #[allow(deprecated)]
    let roles: Vec<_> = o
        .resources
        .iter()
        .map(|r| r.role.clone().unwrap_or_default())
        .collect();
    assert_eq!(roles, vec!["*", "*", "*"]);
    assert!(o.resources.iter().all(|r| r.allocation_info.is_none()));
    assert_eq!(o.url.as_ref().unwrap().path.as_deref(), Some("/slave(1)"));
}

#[test]
fn offers_carry_allocation_info_with_multi_role() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let (fw, _) = h.subscribe(
        r#"{"user":"root","name":"fw","roles":["eng"],"capabilities":[{"type":"MULTI_ROLE"},{"type":"RESERVATION_REFINEMENT"}]}"#,
    );
    let offers = h.offers_for(&fw);
    assert_eq!(
        offers[0].allocation_info.as_ref().unwrap().role.as_deref(),
        Some("eng")
    );
    assert!(
        offers[0]
            .resources
            .iter()
            .all(|r| r.allocation_info.as_ref().unwrap().role.as_deref() == Some("eng"))
    );
}

#[test]
fn launch_update_acknowledge_complete() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    let out = h.launch(&fw, &offer, "t1", "cpus:1;mem:128", "sleep 1");
    let run = agent_messages(&out, ag.conn);
    let M::RunTask(run) = &run[0] else {
        panic!("expected RunTask, got {run:?}")
    };
    assert_eq!(run.task.task_id.value, "t1");
    assert_eq!(run.framework_info.name, "fw");
    // The unused part was declined with refuse_seconds 0: re-offered at once.
    let again = h.offers_for(&fw);
    assert_eq!(
        again[0]
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

    let out = h.agent_update(&ag, &fw, "t1", TaskState::TaskRunning, 1);
    let up = updates(&out, &fw.stream);
    assert_eq!(up[0].state(), TaskState::TaskRunning);
    assert_eq!(up[0].agent_id.as_ref().unwrap().value, ag.id.as_str());
    assert_eq!(up[0].uuid.as_deref(), Some(&[1u8; 16][..]));
    assert!(up[0].timestamp.is_some());
    h.ack(&fw, &ag, "t1", 1).unwrap();
    let acked = agent_messages(&h.log, ag.conn)
        .into_iter()
        .filter(|m| matches!(m, M::Acknowledge(_)))
        .count();
    assert_eq!(acked, 1);

    h.agent_update(&ag, &fw, "t1", TaskState::TaskFinished, 2);
    // Resources come back at the first terminal update, before the ack.
    use agora_master_core::MasterView;
    assert_eq!(h.master.get_tasks().tasks.len(), 1);
    h.ack(&fw, &ag, "t1", 2).unwrap();
    let tasks = h.master.get_tasks();
    assert_eq!((tasks.tasks.len(), tasks.completed_tasks.len()), (0, 1));
    assert_eq!(tasks.completed_tasks[0].state(), TaskState::TaskFinished);
}

#[test]
fn accept_of_unknown_offer_drops_or_loses_tasks() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let mut offer = h.offers_for(&fw).remove(0);
    offer.id.value = "M-O999".into();
    let out = h.launch(&fw, &offer, "t1", "cpus:1", "true");
    let up = updates(&out, &fw.stream);
    assert_eq!(up[0].state(), TaskState::TaskLost);
    assert_eq!(up[0].reason(), Reason::InvalidOffers);
    assert!(up[0].uuid.is_none());

    let (pa, _) =
        h.subscribe(r#"{"user":"root","name":"pa","capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let out = h.launch(&pa, &offer, "t2", "cpus:1", "true");
    assert_eq!(updates(&out, &pa.stream)[0].state(), TaskState::TaskDropped);
}

#[test]
fn accept_of_more_than_offered_is_task_error() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:1;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    let out = h.launch(&fw, &offer, "big", "cpus:2;mem:64", "true");
    let up = updates(&out, &fw.stream);
    assert_eq!(up[0].state(), TaskState::TaskError);
    assert_eq!(up[0].reason(), Reason::TaskInvalid);
    assert!(
        up[0].message.as_deref().unwrap().contains("more resources"),
        "{:?}",
        up[0].message
    );
    assert!(
        agent_messages(&out, ag.conn).is_empty(),
        "nothing is sent to the agent"
    );
}

#[test]
fn duplicate_task_ids_are_refused() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "true");
    let offer = h.offers_for(&fw).remove(0);
    let out = h.launch(&fw, &offer, "t1", "cpus:1", "true");
    let up = updates(&out, &fw.stream);
    assert_eq!(up[0].state(), TaskState::TaskError);
    assert!(up[0].message.as_deref().unwrap().contains("duplicate ID"));
}

#[test]
fn decline_filter_holds_then_expires() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    let (r, _) = h.call(
        &fw,
        &format!(r#"{{"type":"DECLINE","decline":{{"offer_ids":[{{"value":"{}"}}],"filters":{{"refuse_seconds":10}}}}}}"#, offer.id.value),
    );
    r.unwrap();
    assert!(offers(&h.tick(), &fw.stream).is_empty());
    assert!(offers(&h.advance(Duration::from_secs(9)), &fw.stream).is_empty());
    assert_eq!(
        offers(&h.advance(Duration::from_secs(1)), &fw.stream).len(),
        1
    );
}

/// Issue 12.2: one DECLINE naming offers of three agents (as marathon-rs
/// declines in batches) filters every one of them.
#[test]
fn one_decline_of_offers_from_many_agents_filters_each() {
    let mut h = Harness::new();
    for i in 1..=3 {
        h.register_agent(&format!("agent-{i}"), "cpus:4;mem:1024");
    }
    let fw = h.framework("fw");
    let offered = h.offers_for(&fw);
    assert_eq!(offered.len(), 3);
    let ids: Vec<String> = offered
        .iter()
        .map(|o| format!(r#"{{"value":"{}"}}"#, o.id.value))
        .collect();
    let (r, _) = h.call(
        &fw,
        &format!(
            r#"{{"type":"DECLINE","decline":{{"offer_ids":[{},{{"value":"rescinded-long-ago"}}],"filters":{{"refuse_seconds":5}}}}}}"#,
            ids.join(",")
        ),
    );
    r.unwrap();
    assert!(offers(&h.tick(), &fw.stream).is_empty());
    assert!(offers(&h.advance(Duration::from_secs(4)), &fw.stream).is_empty());
    assert_eq!(
        offers(&h.advance(Duration::from_secs(1)), &fw.stream).len(),
        3
    );
}

#[test]
fn suppress_and_revive() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.call(&fw, r#"{"type":"SUPPRESS"}"#).0.unwrap();
    h.call(&fw, &format!(r#"{{"type":"DECLINE","decline":{{"offer_ids":[{{"value":"{}"}}],"filters":{{"refuse_seconds":0}}}}}}"#, offer.id.value))
        .0
        .unwrap();
    assert!(offers(&h.advance(Duration::from_secs(5)), &fw.stream).is_empty());
    h.call(&fw, r#"{"type":"REVIVE"}"#).0.unwrap();
    assert_eq!(h.offers_for(&fw).len(), 1);
    // Roles the framework does not have are refused.
    let (r, _) = h.call(&fw, r#"{"type":"SUPPRESS","suppress":{"roles":["other"]}}"#);
    assert_eq!(r.unwrap_err().status(), 400);
}

#[test]
fn kill_reaches_the_agent_and_unknown_kills_reconcile() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    let (_, out) = h.call(&fw, r#"{"type":"KILL","kill":{"task_id":{"value":"t1"}}}"#);
    assert!(
        matches!(agent_messages(&out, ag.conn)[0], M::KillTask(ref k) if k.task_id.value == "t1")
    );
    let (_, out) = h.call(
        &fw,
        r#"{"type":"KILL","kill":{"task_id":{"value":"ghost"}}}"#,
    );
    let up = updates(&out, &fw.stream);
    assert_eq!(
        (up[0].state(), up[0].reason()),
        (TaskState::TaskLost, Reason::Reconciliation)
    );
}

#[test]
fn reconcile_implicit_and_explicit() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let (fw, _) =
        h.subscribe(r#"{"user":"root","name":"pa","capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.agent_update(&ag, &fw, "t1", TaskState::TaskRunning, 1);
    let (_, out) = h.call(&fw, r#"{"type":"RECONCILE","reconcile":{"tasks":[]}}"#);
    let up = updates(&out, &fw.stream);
    assert_eq!(up.len(), 1);
    assert_eq!(
        (up[0].state(), up[0].reason()),
        (TaskState::TaskRunning, Reason::Reconciliation)
    );
    assert!(up[0].uuid.is_none());
    let call = format!(
        r#"{{"type":"RECONCILE","reconcile":{{"tasks":[{{"task_id":{{"value":"t1"}}}},{{"task_id":{{"value":"nope"}},"agent_id":{{"value":"{}"}}}},{{"task_id":{{"value":"x"}}}}]}}}}"#,
        ag.id
    );
    let (_, out) = h.call(&fw, &call);
    let states: Vec<TaskState> = updates(&out, &fw.stream)
        .iter()
        .map(|s| s.state())
        .collect();
    assert_eq!(
        states,
        vec![
            TaskState::TaskRunning,
            TaskState::TaskGone,
            TaskState::TaskUnknown
        ]
    );
}

#[test]
fn teardown_shuts_the_framework_down_on_its_agents() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    let (_, out) = h.call(&fw, r#"{"type":"TEARDOWN"}"#);
    assert!(
        agent_messages(&out, ag.conn)
            .iter()
            .any(|m| matches!(m, M::ShutdownFramework(_)))
    );
    use agora_master_core::MasterView;
    let frameworks = h.master.get_frameworks();
    assert_eq!(
        (
            frameworks.frameworks.len(),
            frameworks.completed_frameworks.len()
        ),
        (0, 1)
    );
    // Its resources are free for the next framework.
    let other = h.framework("other");
    let offers = h.offers_for(&other);
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
        4.0
    );
}

#[test]
fn failover_timeout_removes_a_framework_that_does_not_return() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw"); // failover_timeout 60
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.handle(agora_master_core::Input::StreamClosed {
        stream: fw.stream.clone(),
    });
    let out = h.advance(Duration::from_secs(30));
    assert!(
        agent_messages(&out, ag.conn)
            .iter()
            .all(|m| !matches!(m, M::ShutdownFramework(_)))
    );
    let out = h.advance(Duration::from_secs(31));
    assert!(
        agent_messages(&out, ag.conn)
            .iter()
            .any(|m| matches!(m, M::ShutdownFramework(_)))
    );
}

#[test]
fn resubscribing_within_the_failover_timeout_keeps_the_tasks() {
    let mut h = Harness::new();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.handle(agora_master_core::Input::StreamClosed {
        stream: fw.stream.clone(),
    });
    h.advance(Duration::from_secs(30));
    let (again, out) = h.subscribe(&format!(
        r#"{{"user":"root","name":"fw","id":{{"value":"{}"}},"failover_timeout":60}}"#,
        fw.id
    ));
    assert_eq!(event_types(&out, &again.stream)[0], E::Subscribed);
    h.advance(Duration::from_secs(60));
    use agora_master_core::MasterView;
    assert_eq!(h.master.get_tasks().tasks.len(), 1);
}

#[test]
fn zero_failover_timeout_removes_at_once() {
    let mut h = Harness::new();
    let (fw, _) = h.subscribe(r#"{"user":"root","name":"fw"}"#);
    h.handle(agora_master_core::Input::StreamClosed {
        stream: fw.stream.clone(),
    });
    use agora_master_core::MasterView;
    assert_eq!(h.master.get_frameworks().completed_frameworks.len(), 1);
}

#[test]
fn executor_resources_are_charged_once() {
    let mut h = Harness::new();
    let ag = h.register_agent("agent-1", "cpus:2;mem:1024");
    let fw = h.framework("fw");
    let offer = h.offers_for(&fw).remove(0);
    let task = |id: &str| {
        format!(
            r#"{{"name":"{id}","task_id":{{"value":"{id}"}},"agent_id":{{"value":"{}"}},
                "resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":0.5}}}}],
                "executor":{{"executor_id":{{"value":"e"}},"command":{{"value":"./exec"}},
                    "resources":[{{"name":"cpus","type":"SCALAR","scalar":{{"value":0.5}}}}]}}}}"#,
            ag.id
        )
    };
    let call = format!(
        r#"{{"type":"ACCEPT","accept":{{"offer_ids":[{{"value":"{}"}}],"operations":[{{"type":"LAUNCH","launch":{{"task_infos":[{},{}]}}}}],"filters":{{"refuse_seconds":0}}}}}}"#,
        offer.id.value,
        task("a"),
        task("b")
    );
    let (_, out) = h.call(&fw, &call);
    // 0.5 (executor) + 0.5 + 0.5 fits in 2 cpus; both tasks go to the agent.
    assert_eq!(agent_messages(&out, ag.conn).len(), 2);
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
        0.5
    );
    assert_eq!(offers[0].executor_ids[0].value, "e");
}
