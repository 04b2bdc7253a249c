//! RESERVE, UNRESERVE, CREATE and DESTROY: from a framework's ACCEPT and
//! from the operator API; the agent is told its new total to checkpoint,
//! and what it registers with afterwards is offered again.

use agora_master_core::ids::RequestId;
use agora_master_core::master::ResourceOp;
use agora_master_core::{CallError, Input, OperatorCall, Output};
use agora_proto::internal::master_message;
use agora_proto::resources::Resources;
use agora_proto::v1;

use crate::harness::*;

const FRAMEWORK: &str = r#"{"user":"root","name":"db","roles":["db"],"principal":"ops",
    "capabilities":[{"type":"MULTI_ROLE"},{"type":"RESERVATION_REFINEMENT"}]}"#;

/// A scalar reserved to `db` by `ops`, labelled with the instance it is for.
fn reserved(name: &str, value: f64) -> String {
    format!(
        r#"{{"name":"{name}","type":"SCALAR","scalar":{{"value":{value}}},"allocation_info":{{"role":"db"}},
        "reservations":[{{"type":"DYNAMIC","role":"db","principal":"ops","labels":{{"labels":[{{"key":"instance","value":"i1"}}]}}}}]}}"#
    )
}

/// The persistent volume `id` of 100 MB on that reservation.
fn volume(id: &str, path: &str) -> String {
    format!(
        r#"{{"name":"disk","type":"SCALAR","scalar":{{"value":100}},"allocation_info":{{"role":"db"}},
        "reservations":[{{"type":"DYNAMIC","role":"db","principal":"ops","labels":{{"labels":[{{"key":"instance","value":"i1"}}]}}}}],
        "disk":{{"persistence":{{"id":"{id}","principal":"ops"}},"volume":{{"mode":"RW","container_path":"{path}"}}}}}}"#
    )
}

fn accept(offer: &v1::Offer, operations: &[String]) -> String {
    format!(
        r#"{{"type":"ACCEPT","accept":{{"offer_ids":[{{"value":"{}"}}],"operations":[{}],"filters":{{"refuse_seconds":0}}}}}}"#,
        offer.id.value,
        operations.join(",")
    )
}

fn op(kind: &str, field: &str, list: &str, resources: &[String]) -> String {
    format!(
        r#"{{"type":"{kind}","id":{{"value":"{kind}-1"}},"{field}":{{"{list}":[{}]}}}}"#,
        resources.join(",")
    )
}

fn task_on(offer: &v1::Offer, task_id: &str, resources: &[String]) -> String {
    format!(
        r#"{{"type":"LAUNCH","launch":{{"task_infos":[{{"name":"{task_id}","task_id":{{"value":"{task_id}"}},
        "agent_id":{{"value":"{}"}},"resources":[{}],"command":{{"value":"sleep 600"}}}}]}}}}"#,
        offer.agent_id.value,
        resources.join(",")
    )
}

/// The operations' outcomes the framework heard: (id, state, message).
fn operation_updates(out: &[Output], fw: &Fw) -> Vec<(String, v1::OperationState, Option<String>)> {
    events(out, &fw.stream)
        .into_iter()
        .filter_map(|e| e.update_operation_status)
        .map(|u| {
            let state = u.status.state();
            (
                u.status.operation_id.unwrap().value,
                state,
                u.status.message,
            )
        })
        .collect()
}

fn checkpoints(out: &[Output], ag: &Ag) -> Vec<Resources> {
    agent_messages(out, ag.conn)
        .into_iter()
        .filter_map(|m| match m {
            master_message::Message::CheckpointResources(c) => {
                Some(Resources::from_protos(&c.total).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn offered(offers: &[v1::Offer]) -> Resources {
    let mut all = Resources::new();
    for o in offers {
        all += &Resources::from_protos(&o.resources).unwrap().unallocated();
    }
    all
}

fn operator(h: &mut Harness, principal: Option<&str>, call: OperatorCall) -> Result<(), CallError> {
    let out = h.handle(Input::Operator {
        principal: principal.map(str::to_string),
        request: RequestId(77),
        call,
    });
    out.iter()
        .find_map(|o| match o {
            Output::Reply {
                request: RequestId(77),
                result,
            } => Some(result.clone().map(|_| ())),
            _ => None,
        })
        .expect("a reply")
}

fn protos(json: &[String]) -> Vec<v1::Resource> {
    json.iter()
        .map(|j| agora_proto::json::from_slice(j.as_bytes()).unwrap())
        .collect()
}

#[test]
fn a_framework_reserves_creates_a_volume_and_launches_in_one_accept_and_gets_it_back() {
    let mut h = Harness::new();
    h.principal = Some("ops".into());
    let ag = h.register_agent("a", "cpus:4;mem:1024;disk:1000");
    let (fw, _) = h.subscribe(FRAMEWORK);
    let offer = h.offers_for(&fw).remove(0);

    let resources = [
        reserved("cpus", 1.0),
        reserved("mem", 128.0),
        reserved("disk", 100.0),
    ];
    let call = accept(
        &offer,
        &[
            op("RESERVE", "reserve", "resources", &resources),
            op("CREATE", "create", "volumes", &[volume("v1", "data")]),
            task_on(
                &offer,
                "t1",
                &[
                    reserved("cpus", 1.0),
                    reserved("mem", 128.0),
                    volume("v1", "data"),
                ],
            ),
        ],
    );
    let (r, out) = h.call(&fw, &call);
    r.unwrap();
    assert_eq!(
        operation_updates(&out, &fw),
        [
            (
                "RESERVE-1".into(),
                v1::OperationState::OperationFinished,
                None
            ),
            (
                "CREATE-1".into(),
                v1::OperationState::OperationFinished,
                None
            ),
        ]
    );
    // The agent checkpoints each new total before it is asked to run the task.
    let messages = agent_messages(&out, ag.conn);
    let last_checkpoint = messages
        .iter()
        .rposition(|m| matches!(m, master_message::Message::CheckpointResources(_)))
        .unwrap();
    let run = messages
        .iter()
        .position(|m| matches!(m, master_message::Message::RunTask(_)))
        .expect("the task is launched");
    assert!(last_checkpoint < run);
    let total = checkpoints(&out, &ag).pop().unwrap();
    assert_eq!(total.scalar("cpus"), 4.0);
    assert_eq!(total.persistent_volumes().len(), 1);
    assert_eq!(total.reserved().scalar("disk"), 100.0);

    // DESTROY while the task uses the volume: refused.
    let offer = h.offers_for(&fw).remove(0);
    let (r, out) = h.call(
        &fw,
        &accept(
            &offer,
            &[op("DESTROY", "destroy", "volumes", &[volume("v1", "data")])],
        ),
    );
    r.unwrap();
    let updates = operation_updates(&out, &fw);
    assert_eq!(updates[0].1, v1::OperationState::OperationError);
    assert!(
        updates[0]
            .2
            .as_deref()
            .unwrap()
            .contains("in use by task t1"),
        "{updates:?}"
    );

    // The task ends: its reservation and volume come back in offers.
    h.agent_update(&ag, &fw, "t1", v1::TaskState::TaskFinished, 1);
    let again = offered(&h.offers_for(&fw));
    assert_eq!(again.persistent_volumes().len(), 1, "{again}");
    assert_eq!(again.reserved().scalar("cpus"), 1.0, "{again}");
    assert_eq!(again.unreserved().scalar("cpus"), 3.0, "{again}");

    // The agent restarts and registers with what it checkpointed: the same.
    let conn_total = total.to_protos();
    let ag2 = h.register_agent_with_resources("a", conn_total, Some(&ag.id));
    assert_eq!(ag2.id, ag.id);
    let after = offered(&h.offers_for(&fw));
    assert_eq!(after.persistent_volumes(), again.persistent_volumes());
}

#[test]
fn operators_destroy_and_unreserve_on_unused_resources_rescinding_offers() {
    let mut h = Harness::new();
    let ag = h.register_agent("a", "cpus:4;mem:1024;disk:1000");
    let reserve = ResourceOp::Reserve(protos(&[reserved("disk", 100.0)]));
    operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: reserve,
        },
    )
    .unwrap();
    let create = ResourceOp::Create(protos(&[volume("v9", "data")]));
    operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: create,
        },
    )
    .unwrap();

    // A framework holds the volume in an offer; the operator's DESTROY
    // rescinds it and goes through.
    let (fw, _) = h.subscribe(FRAMEWORK);
    let offers = h.offers_for(&fw);
    assert_eq!(offered(&offers).persistent_volumes().len(), 1);
    let unreserve_volume = ResourceOp::Unreserve(protos(&[volume("v9", "data")]));
    let err = operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: unreserve_volume,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("DESTROY it first"), "{err}");
    let destroy = ResourceOp::Destroy(protos(&[volume("v9", "data")]));
    operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: destroy,
        },
    )
    .unwrap();
    let unreserve = ResourceOp::Unreserve(protos(&[reserved("disk", 100.0)]));
    operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: unreserve,
        },
    )
    .unwrap();
    let last = checkpoints(&h.log, &ag).pop().unwrap();
    assert!(last.reserved().is_empty(), "{last}");
    let now = offered(&h.offers_for(&fw));
    assert_eq!(
        now,
        Resources::parse("cpus:4;mem:1024;disk:1000", "*").unwrap()
    );

    // Unknown agents are 404; resources the agent lacks are 409.
    let missing = ResourceOp::Reserve(protos(&[reserved("cpus", 40.0)]));
    let err = operator(
        &mut h,
        None,
        OperatorCall::Resources {
            agent: ag.id.clone(),
            op: missing,
        },
    )
    .unwrap_err();
    assert_eq!(err.status(), 409, "{err}");
}

#[test]
fn invalid_operations_are_refused_with_mesos_reasons() {
    let mut h = Harness::new();
    h.principal = Some("ops".into());
    h.register_agent("a", "cpus:4;mem:1024;disk:1000");
    let (fw, _) = h.subscribe(FRAMEWORK);
    let offer = h.offers_for(&fw).remove(0);
    let other_role =
        reserved("cpus", 1.0).replace(r#""role":"db","principal""#, r#""role":"web","principal""#);
    let other_principal =
        reserved("cpus", 1.0).replace(r#""principal":"ops""#, r#""principal":"eve""#);
    let unreserved_volume = r#"{"name":"disk","type":"SCALAR","scalar":{"value":10},
        "disk":{"persistence":{"id":"v2","principal":"ops"},"volume":{"mode":"RW","container_path":"d"}}}"#;
    let escaping = volume("v3", "../../etc");
    let (r, out) = h.call(
        &fw,
        &accept(
            &offer,
            &[
                op("RESERVE", "reserve", "resources", &[other_role]),
                op("RESERVE", "reserve", "resources", &[other_principal]),
                op(
                    "CREATE",
                    "create",
                    "volumes",
                    &[unreserved_volume.to_string()],
                ),
                op(
                    "RESERVE",
                    "reserve",
                    "resources",
                    &[reserved("disk", 100.0)],
                ),
                op("CREATE", "create", "volumes", &[escaping]),
                op(
                    "CREATE",
                    "create",
                    "volumes",
                    &[volume("v4", "data"), volume("v4", "data2")],
                ),
            ],
        ),
    );
    r.unwrap();
    let updates = operation_updates(&out, &fw);
    let messages: Vec<String> = updates
        .iter()
        .map(|u| u.2.clone().unwrap_or_default())
        .collect();
    assert!(
        messages[0].contains("does not match the allocation role 'db'"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("does not match the reserved resource's principal 'eve'"),
        "{messages:?}"
    );
    assert!(messages[2].contains("unreserved resources"), "{messages:?}");
    assert_eq!(updates[3].1, v1::OperationState::OperationFinished);
    assert!(messages[4].contains("stay in the sandbox"), "{messages:?}");
    assert!(messages[5].contains("already exists"), "{messages:?}");
}
