//! DRAIN_AGENT (Mesos 1.9): no offers, every task killed within the grace
//! the operator gave, TASK_KILLED with REASON_AGENT_DRAINING, then DRAINED
//! (and gone when asked); REACTIVATE_AGENT ends it. With a drain notice,
//! frameworks get an inverse offer first and those that accept it move
//! their own tasks until the deadline.

use std::time::Duration;

use agora_master_core::ids::RequestId;
use agora_master_core::{Config, DRAIN_ANSWER, Input, MasterView, OperatorCall, Output};
use agora_proto::internal::master_message::Message as M;
use agora_proto::scheduler::event::Type as E;
use agora_proto::v1::{DrainState, TaskState, task_status::Reason};

use crate::harness::*;

fn drain(
    h: &mut Harness,
    ag: &Ag,
    grace: Option<Duration>,
    mark_gone: bool,
) -> Vec<agora_master_core::Output> {
    h.handle(Input::Operator {
        principal: None,
        request: RequestId(7),
        call: OperatorCall::DrainAgent {
            agent: ag.id.clone(),
            max_grace_period: grace,
            mark_gone,
        },
    })
}

fn drain_state(h: &Harness) -> Option<DrainState> {
    h.master.get_agents().agents[0]
        .drain_info
        .as_ref()
        .map(|d| d.state())
}

/// Mesos' drain: no notice, every task killed at once.
fn mesos() -> Harness {
    Harness::with_config(Config {
        drain_notice: Duration::ZERO,
        ..Default::default()
    })
}

fn killed_tasks(out: &[Output], ag: &Ag) -> Vec<String> {
    agent_messages(out, ag.conn)
        .into_iter()
        .filter_map(|m| match m {
            M::KillTask(k) => Some(k.task_id.value),
            _ => None,
        })
        .collect()
}

fn inverse_offers(out: &[Output], fw: &Fw) -> Vec<agora_proto::v1::InverseOffer> {
    events(out, &fw.stream)
        .into_iter()
        .filter_map(|e| e.inverse_offers)
        .flat_map(|i| i.inverse_offers)
        .collect()
}

fn answer(
    h: &mut Harness,
    fw: &Fw,
    offer: &agora_proto::v1::InverseOffer,
    accept: bool,
) -> Vec<Output> {
    let (kind, field) = if accept {
        ("ACCEPT_INVERSE_OFFERS", "accept_inverse_offers")
    } else {
        ("DECLINE_INVERSE_OFFERS", "decline_inverse_offers")
    };
    let (r, out) = h.call(
        fw,
        &format!(
            r#"{{"type":"{kind}","{field}":{{"inverse_offer_ids":[{{"value":"{}"}}]}}}}"#,
            offer.id.value
        ),
    );
    r.unwrap();
    out
}

/// An agent with one running task for each of `frameworks`.
fn busy_agent(h: &mut Harness, frameworks: &[&str]) -> (Ag, Vec<Fw>) {
    let ag = h.register_agent("a", "cpus:4;mem:1024");
    let fws: Vec<Fw> = frameworks.iter().map(|n| h.framework(n)).collect();
    for (i, fw) in fws.iter().enumerate() {
        let offer = h.offers_for(fw).remove(0);
        let task = format!("{}-task", frameworks[i]);
        h.launch(fw, &offer, &task, "cpus:1", "sleep 600");
        h.agent_update(&ag, fw, &task, TaskState::TaskRunning, i as u8 + 1);
    }
    (ag, fws)
}

#[test]
fn a_drained_agent_gets_no_offers_and_its_tasks_end_killed_for_the_drain() {
    let mut h = mesos();
    let ag = h.register_agent("a", "cpus:4;mem:1024");
    let (fw, _) =
        h.subscribe(r#"{"user":"root","name":"pa","capabilities":[{"type":"PARTITION_AWARE"}]}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t2", "cpus:1", "sleep 600");
    h.agent_update(&ag, &fw, "t1", TaskState::TaskRunning, 1);
    h.agent_update(&ag, &fw, "t2", TaskState::TaskRunning, 2);

    let out = drain(&mut h, &ag, Some(Duration::from_secs(5)), false);
    let kills: Vec<i64> = agent_messages(&out, ag.conn)
        .into_iter()
        .filter_map(|m| match m {
            M::KillTask(k) => k.kill_policy?.grace_period.map(|g| g.nanoseconds),
            _ => None,
        })
        .collect();
    assert_eq!(
        kills,
        [5_000_000_000, 5_000_000_000],
        "every task, within the grace"
    );
    assert_eq!(drain_state(&h), Some(DrainState::Draining));
    assert!(!h.master.get_agents().agents[0].active);
    assert!(
        h.advance(Duration::from_secs(2)).iter().all(|o| offers(
            std::slice::from_ref(o),
            &fw.stream
        )
        .is_empty())
    );

    let out = h.agent_update(&ag, &fw, "t1", TaskState::TaskKilled, 3);
    let u = &updates(&out, &fw.stream)[0];
    assert_eq!(
        (u.state(), u.reason()),
        (TaskState::TaskKilled, Reason::AgentDraining)
    );
    assert_eq!(drain_state(&h), Some(DrainState::Draining), "t2 still runs");
    h.agent_update(&ag, &fw, "t2", TaskState::TaskKilled, 4);
    assert_eq!(drain_state(&h), Some(DrainState::Drained));

    // REACTIVATE_AGENT ends the drain: offers again.
    h.handle(Input::Operator {
        principal: None,
        request: RequestId(8),
        call: OperatorCall::ReactivateAgent(ag.id.clone()),
    });
    assert_eq!(drain_state(&h), None);
    assert!(!h.offers_for(&fw).is_empty());
}

#[test]
fn an_idle_agent_drains_at_once_and_with_mark_gone_is_gone() {
    let mut h = mesos();
    let ag = h.register_agent("a", "cpus:4;mem:1024");
    let out = drain(&mut h, &ag, None, true);
    assert!(matches!(
        agent_messages(&out, ag.conn)[0],
        M::ShutdownAgent(_)
    ));
    assert_eq!(h.master.registry().gone, vec![ag.id.to_string()]);
    // An unknown agent is an error, not a panic.
    let mut h = Harness::new();
    let other = Ag {
        id: agora_master_core::ids::AgentId::new("nope"),
        conn: agora_master_core::ids::ConnId(99),
    };
    let out = drain(&mut h, &other, None, false);
    assert!(
        out.iter()
            .any(|o| matches!(o, agora_master_core::Output::Reply { result: Err(_), .. }))
    );
}

#[test]
fn a_drain_survives_a_master_failover() {
    let mut h = Harness::new();
    let ag = h.register_agent("a", "cpus:4;mem:1024");
    let (fw, _) = h.subscribe(r#"{"user":"root","name":"pa"}"#);
    let offer = h.offers_for(&fw).remove(0);
    h.launch(&fw, &offer, "t1", "cpus:1", "sleep 600");
    h.agent_update(&ag, &fw, "t1", TaskState::TaskRunning, 1);
    drain(&mut h, &ag, Some(Duration::from_secs(30)), false);
    let registry = h.master.registry();
    assert_eq!(registry.drains.len(), 1);
    assert_eq!(registry.drains[0].drained, Some(false));

    // A new leader knows the agent is draining before it is back, and once
    // it is back (running nothing now) it is drained, and gets no offers.
    let mut n = Harness::new();
    n.master.recover(n.now, registry);
    assert_eq!(drain_state(&n), Some(DrainState::Draining));
    n.register_agent_with("a", "cpus:4;mem:1024", "", Some(&ag.id));
    assert_eq!(drain_state(&n), Some(DrainState::Drained));
    let fw2 = n.framework("other");
    assert!(n.offers_for(&fw2).is_empty());
    assert!(n.master.registry().drains[0].drained == Some(true));
}

#[test]
fn a_framework_that_accepts_the_inverse_offer_moves_its_tasks_itself() {
    let mut h = Harness::new();
    let (ag, fws) = busy_agent(&mut h, &["mover", "plain"]);
    let (mover, plain) = (&fws[0], &fws[1]);
    let out = drain(&mut h, &ag, Some(Duration::from_secs(5)), false);
    assert!(
        killed_tasks(&out, &ag).is_empty(),
        "nobody is killed before the answers"
    );
    let offered = inverse_offers(&out, mover);
    assert_eq!(offered.len(), 1);
    assert_eq!(
        offered[0].agent_id.as_ref().unwrap().value,
        ag.id.to_string()
    );
    assert_eq!(
        offered[0].unavailability.start.nanoseconds as u64,
        h.now.as_nanos()
    );
    assert_eq!(inverse_offers(&out, plain).len(), 1);

    let out = answer(&mut h, mover, &offered[0], true);
    assert!(killed_tasks(&out, &ag).is_empty());
    // The one that did not answer is killed once its time to answer is up;
    // the one that accepted keeps its task.
    let out = h.advance(DRAIN_ANSWER);
    assert_eq!(killed_tasks(&out, &ag), ["plain-task"]);
    let out = h.agent_update(&ag, plain, "plain-task", TaskState::TaskKilled, 3);
    assert_eq!(
        updates(&out, &plain.stream)[0].reason(),
        Reason::AgentDraining
    );
    assert_eq!(drain_state(&h), Some(DrainState::Draining));
    // The mover ends its task itself (after starting it elsewhere): the
    // agent is drained and the inverse offer withdrawn.
    let out = h.agent_update(&ag, mover, "mover-task", TaskState::TaskKilled, 4);
    assert_ne!(
        updates(&out, &mover.stream)[0].reason(),
        Reason::AgentDraining
    );
    assert_eq!(drain_state(&h), Some(DrainState::Drained));
    assert!(event_types(&out, &mover.stream).contains(&E::RescindInverseOffer));
    assert!(killed_tasks(&h.advance(Duration::from_secs(700)), &ag).is_empty());
}

#[test]
fn a_framework_that_accepts_but_does_not_move_is_killed_at_the_deadline() {
    let mut h = Harness::with_config(Config {
        drain_notice: Duration::from_secs(60),
        ..Default::default()
    });
    let (ag, fws) = busy_agent(&mut h, &["slow"]);
    let out = drain(&mut h, &ag, None, false);
    answer(&mut h, &fws[0], &inverse_offers(&out, &fws[0])[0], true);
    assert!(killed_tasks(&h.advance(Duration::from_secs(59)), &ag).is_empty());
    assert_eq!(
        killed_tasks(&h.advance(Duration::from_secs(1)), &ag),
        ["slow-task"]
    );
    // Killed once, not at every tick after.
    assert!(killed_tasks(&h.advance(Duration::from_secs(5)), &ag).is_empty());
}

#[test]
fn a_decline_is_a_kill_at_once_and_a_reactivation_withdraws_the_offer() {
    let mut h = Harness::new();
    let (ag, fws) = busy_agent(&mut h, &["decliner", "stayer"]);
    let out = drain(&mut h, &ag, None, false);
    let out = answer(&mut h, &fws[0], &inverse_offers(&out, &fws[0])[0], false);
    assert_eq!(killed_tasks(&out, &ag), ["decliner-task"]);
    // Another framework's inverse offer cannot be answered by this one.
    let theirs = inverse_offers(&h.log, &fws[1]).remove(0);
    answer(&mut h, &fws[0], &theirs, true);
    assert_eq!(killed_tasks(&h.advance(DRAIN_ANSWER), &ag), ["stayer-task"]);

    let mut h = Harness::new();
    let (ag, fws) = busy_agent(&mut h, &["f"]);
    let out = drain(&mut h, &ag, None, false);
    answer(&mut h, &fws[0], &inverse_offers(&out, &fws[0])[0], true);
    let out = h.handle(Input::Operator {
        principal: None,
        request: RequestId(8),
        call: OperatorCall::ReactivateAgent(ag.id.clone()),
    });
    assert!(event_types(&out, &fws[0].stream).contains(&E::RescindInverseOffer));
    assert!(killed_tasks(&h.advance(Duration::from_secs(700)), &ag).is_empty());
}

#[test]
fn a_framework_that_subscribes_again_is_told_its_inverse_offers_again() {
    let mut h = Harness::new();
    let (ag, fws) = busy_agent(&mut h, &["f"]);
    let out = drain(&mut h, &ag, None, false);
    let first = inverse_offers(&out, &fws[0]);
    answer(&mut h, &fws[0], &first[0], true);
    let (again, out) = h.subscribe(&format!(
        r#"{{"user":"root","name":"f","failover_timeout":60,"id":{{"value":"{}"}}}}"#,
        fws[0].id
    ));
    assert_eq!(again.id, fws[0].id);
    assert_eq!(inverse_offers(&out, &again)[0].id, first[0].id);
    // Its acceptance stands.
    assert!(killed_tasks(&h.advance(DRAIN_ANSWER), &ag).is_empty());
}
