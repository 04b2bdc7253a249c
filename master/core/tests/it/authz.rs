//! The master's ACLs as Mesos applies them: SUBSCRIBE (register_frameworks),
//! LAUNCH (run_tasks), operator writes (teardown, weights, agents) and the
//! state reads, filtered per principal (view_*).

use agora_master_core::ids::RequestId;
use agora_master_core::{Config, Input, MasterView, OperatorCall, Output};
use agora_proto::acl::Acls;
use agora_proto::v1::{TaskState, task_status::Reason};

use crate::harness::*;

const ACLS: &str = r#"{"permissive": false,
  "register_frameworks": [{"principals":{"values":["web","batch"]},"roles":{"type":"ANY"}}],
  "run_tasks": [{"principals":{"values":["web"]},"users":{"values":["www"]}},
                {"principals":{"values":["batch"]},"users":{"type":"ANY"}}],
  "teardown_frameworks": [{"principals":{"values":["ops"]},"framework_principals":{"type":"ANY"}}],
  "view_frameworks": [{"principals":{"values":["ops"]},"users":{"type":"ANY"}},
                      {"principals":{"values":["web"]},"users":{"values":["www"]}}],
  "view_tasks": [{"principals":{"type":"ANY"},"users":{"type":"ANY"}}],
  "mark_agents_gone": [{"principals":{"values":["ops"]},"agents":{"type":"ANY"}}]}"#;

fn harness() -> Harness {
    Harness::with_config(Config {
        acls: Acls::parse(ACLS.as_bytes()).unwrap(),
        ..Config::default()
    })
}

fn subscribe_as(h: &mut Harness, principal: &str, user: &str) -> (Fw, Vec<Output>) {
    h.principal = Some(principal.into());
    h.subscribe(&format!(
        r#"{{"user":"{user}","name":"{principal}-fw","failover_timeout":60}}"#
    ))
}

fn operator(h: &mut Harness, principal: &str, call: OperatorCall) -> u16 {
    let out = h.handle(Input::Operator {
        request: RequestId(999),
        call,
        principal: Some(principal.into()),
    });
    match out.iter().find_map(|o| match o {
        Output::Reply { result, .. } => Some(result.clone()),
        _ => None,
    }) {
        Some(Ok(())) => 200,
        Some(Err(e)) => e.status(),
        None => 0,
    }
}

#[test]
fn register_frameworks_refuses_with_an_error_event() {
    let mut h = harness();
    let (fw, out) = subscribe_as(&mut h, "stranger", "www");
    let events = events(&out, &fw.stream);
    let error = events[0].error.as_ref().expect("an ERROR event");
    assert_eq!(
        error.message,
        "Not authorized to register framework stranger-fw with roles { * }"
    );
    assert!(h.master.get_frameworks().frameworks.is_empty());
    let (web, _) = subscribe_as(&mut h, "web", "www");
    assert!(!web.id.as_str().is_empty());
}

#[test]
fn run_tasks_refuses_users_the_principal_may_not_run_as() {
    let mut h = harness();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let (web, _) = subscribe_as(&mut h, "web", "root");
    let offer = h.offers_for(&web).remove(0);
    let out = h.launch(&web, &offer, "t-root", "cpus:1", "id");
    let up = updates(&out, &web.stream);
    assert_eq!(
        (up[0].state(), up[0].reason()),
        (TaskState::TaskError, Reason::TaskUnauthorized)
    );
    assert!(
        up[0]
            .message
            .as_deref()
            .unwrap()
            .contains("Principal 'web' no authorized to launch task t-root"),
        "{:?}",
        up[0].message
    );
    // As a user it may run as (CommandInfo.user overrides the framework's).
    let offer = h.offers_for(&web).remove(0);
    let task = task_json("t-www", &offer.agent_id.value, "cpus:1", "id").replace(
        r#""command":{"value":"id"}"#,
        r#""command":{"value":"id","user":"www"}"#,
    );
    let call = format!(
        r#"{{"type":"ACCEPT","accept":{{"offer_ids":[{{"value":"{}"}}],"operations":[{{"type":"LAUNCH","launch":{{"task_infos":[{task}]}}}}]}}}}"#,
        offer.id.value
    );
    let (r, out) = h.call(&web, &call);
    r.unwrap();
    assert!(
        updates(&out, &web.stream).is_empty(),
        "launched, not refused"
    );
    assert_eq!(h.master.get_tasks().tasks.len(), 1);
}

#[test]
fn operator_writes_need_their_action() {
    let mut h = harness();
    let ag = h.register_agent("agent-1", "cpus:4;mem:1024");
    let (batch, _) = subscribe_as(&mut h, "batch", "nobody");
    assert_eq!(
        operator(&mut h, "web", OperatorCall::Teardown(batch.id.clone())),
        403
    );
    assert_eq!(
        operator(&mut h, "web", OperatorCall::MarkAgentGone(ag.id.clone())),
        403
    );
    assert_eq!(
        operator(&mut h, "ops", OperatorCall::Teardown(batch.id.clone())),
        200
    );
    assert_eq!(
        operator(&mut h, "ops", OperatorCall::MarkAgentGone(ag.id.clone())),
        200
    );
}

#[test]
fn state_reads_are_filtered_not_refused() {
    let mut h = harness();
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let (batch, _) = subscribe_as(&mut h, "batch", "nobody");
    let offer = h.offers_for(&batch).remove(0);
    h.launch(&batch, &offer, "b1", "cpus:1", "sleep 9");
    subscribe_as(&mut h, "web", "www");
    let seen = |who: Option<&str>| {
        let mut s = h.master.get_state();
        h.master.viewer(who).state(&mut s);
        let frameworks: Vec<String> = s
            .get_frameworks
            .unwrap()
            .frameworks
            .iter()
            .map(|f| f.framework_info.name.clone())
            .collect();
        let tasks = s.get_tasks.unwrap().tasks.len();
        (frameworks, tasks)
    };
    let (mut all, tasks) = seen(Some("ops"));
    all.sort();
    assert_eq!(
        (all, tasks),
        (vec!["batch-fw".to_string(), "web-fw".into()], 1)
    );
    // web sees its own framework (user www) only, and so no batch task.
    assert_eq!(seen(Some("web")), (vec!["web-fw".to_string()], 0));
    // Unauthenticated: nothing (not permissive).
    assert_eq!(seen(None), (vec![], 0));
}

#[test]
fn the_operator_event_stream_is_filtered_per_principal() {
    let mut h = harness();
    h.master.set_operator_events(true);
    h.register_agent("agent-1", "cpus:4;mem:1024");
    let (batch, _) = subscribe_as(&mut h, "batch", "nobody");
    let offer = h.offers_for(&batch).remove(0);
    let out = h.launch(&batch, &offer, "b1", "cpus:1", "sleep 9");
    let events: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::OperatorEvent(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let task_added = events
        .iter()
        .find(|e| e.task_added.is_some())
        .expect("TASK_ADDED");
    assert!(h.master.viewer(Some("ops")).operator_event(task_added));
    // web may see only www's frameworks; batch runs as nobody.
    assert!(!h.master.viewer(Some("web")).operator_event(task_added));
    assert!(!h.master.viewer(None).operator_event(task_added));
}
