use super::*;
use crate::v1::{self, TaskState};
use crate::{executor, scheduler};

#[test]
fn output_uses_proto_names_enum_names_and_defaults() {
    let info = v1::FrameworkInfo {
        user: "root".into(),
        name: "fw".into(),
        ..Default::default()
    };
    let json = to_string(&info);
    // failover_timeout and checkpoint have explicit defaults; role is deprecated.
    assert_eq!(
        json,
        r#"{"user":"root","name":"fw","failover_timeout":0.0,"checkpoint":false}"#
    );
}

#[test]
fn output_is_compact_ascii_with_base64_and_numbers() {
    let status = v1::TaskStatus {
        task_id: crate::ids::task("t-é"),
        state: TaskState::TaskRunning as i32,
        uuid: Some(vec![0xff; 16]),
        timestamp: Some(1700000000.5),
        unreachable_time: Some(v1::TimeInfo {
            nanoseconds: 1_700_000_000_000_000_000,
        }),
        ..Default::default()
    };
    let json = to_string(&status);
    assert!(json.is_ascii());
    assert!(!json.contains('\n'));
    assert!(json.contains(r#""task_id":{"value":"t-\u00e9"}"#), "{json}");
    assert!(json.contains(r#""state":"TASK_RUNNING""#));
    assert!(json.contains(r#""uuid":"/////////////////////w==""#));
    assert!(json.contains(r#""nanoseconds":1700000000000000000"#));
    let back: v1::TaskStatus = from_slice(json.as_bytes()).unwrap();
    assert_eq!(back, status);
}

#[test]
fn integral_doubles_keep_a_decimal_point_and_infinity_is_bare() {
    let scalar = v1::value::Scalar { value: 1024.0 };
    assert_eq!(to_string(&scalar), r#"{"value":1024.0}"#);
    let inf = v1::value::Scalar {
        value: f64::INFINITY,
    };
    assert_eq!(to_string(&inf), r#"{"value":Infinity}"#);
    let back: v1::value::Scalar = from_slice(br#"{"value":"Infinity"}"#).unwrap();
    assert!(back.value.is_infinite());
}

#[test]
fn input_is_lenient() {
    // Unknown keys ignored, numbers and booleans as strings, a single object
    // for a repeated field, null ignored, unknown optional enum dropped.
    let body = br#"{"type":"SUBSCRIBE","bogus":1,"subscribe":{"framework_info":{
        "user":"root","name":"x","failover_timeout":"100","checkpoint":"true",
        "capabilities":{"type":"NOT_A_CAPABILITY"},"hostname":null,"roles":"eng"}}}"#;
    let call: scheduler::Call = from_slice(body).unwrap();
    let info = call.subscribe.unwrap().framework_info;
    assert_eq!(info.failover_timeout, Some(100.0));
    assert_eq!(info.checkpoint, Some(true));
    assert_eq!(info.roles, vec!["eng".to_string()]);
    assert_eq!(info.capabilities.len(), 1);
    assert_eq!(info.capabilities[0].r#type, None);
    assert_eq!(info.hostname, None);
}

#[test]
fn missing_required_fields_are_named() {
    let err = from_slice::<scheduler::Call>(
        br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root"}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        DecodeError::MissingRequired(vec!["subscribe.framework_info.name".into()])
    );
    assert_eq!(
        err.to_string(),
        "Missing required fields: subscribe.framework_info.name"
    );
}

#[test]
fn wrong_types_and_syntax_are_errors() {
    assert!(matches!(
        from_slice::<scheduler::Call>(b"{not json"),
        Err(DecodeError::Syntax(_))
    ));
    assert!(matches!(
        from_slice::<scheduler::Call>(b"[1,2]"),
        Err(DecodeError::Field { .. })
    ));
    let err = from_slice::<v1::TaskStatus>(
        br#"{"task_id":{"value":"t"},"state":"TASK_RUNNING","uuid":7}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::Field { ref field, .. } if field == "uuid"),
        "{err}"
    );
    let err =
        from_slice::<v1::TaskStatus>(br#"{"task_id":{"value":"t"},"state":"NOPE"}"#).unwrap_err();
    assert!(
        matches!(err, DecodeError::Field { ref field, .. } if field == "state"),
        "{err}"
    );
}

#[test]
fn nesting_is_limited() {
    let mut body = String::from(r#"{"value":"a""#);
    let mut tail = String::from("}");
    for _ in 0..100 {
        body.push_str(r#","parent":{"value":"a""#);
        tail.push('}');
    }
    body.push_str(&tail);
    assert_eq!(
        from_slice::<v1::ContainerId>(body.as_bytes()),
        Err(DecodeError::TooDeep)
    );
}

#[test]
fn maps_are_objects() {
    let task: v1::TaskInfo = from_slice(
        br#"{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},
            "limits":{"cpus":{"value":"Infinity"},"mem":{"value":512}}}"#,
    )
    .unwrap();
    assert_eq!(task.limits.get("mem").map(|s| s.value), Some(512.0));
    let json = to_string(&task);
    assert!(
        json.contains(r#""limits":{"cpus":{"value":Infinity},"mem":{"value":512.0}}"#),
        "{json}"
    );
}

#[test]
fn protobuf_input_checks_required_fields() {
    use prost::Message;
    let call = executor::Call {
        executor_id: crate::ids::executor("e"),
        framework_id: crate::ids::framework("f"),
        r#type: Some(executor::call::Type::Heartbeat as i32),
        ..Default::default()
    };
    let bytes = call.encode_to_vec();
    assert_eq!(from_protobuf::<executor::Call>(&bytes).unwrap(), call);
    // A TaskStatus without its required task_id and state.
    let empty = v1::TaskStatus::default();
    let partial = v1::TaskInfo {
        name: "x".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(
        from_protobuf::<v1::TaskInfo>(&partial).is_ok(),
        "prost writes required fields even when default"
    );
    assert!(from_protobuf::<v1::TaskStatus>(&[0x0a]).is_err());
    let _ = empty;
}

#[test]
fn pymesos_subscribe_parses() {
    let body =
        br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":"pymesos-test",
        "capabilities":[{"type":"GPU_RESOURCES"}],"failover_timeout":100}}}"#;
    let call: scheduler::Call = from_slice(body).unwrap();
    assert_eq!(call.r#type(), scheduler::call::Type::Subscribe);
    let info = call.subscribe.unwrap().framework_info;
    assert_eq!(
        info.capabilities[0].r#type(),
        v1::framework_info::capability::Type::GpuResources
    );
}

/// Issue 12.5: a 16 MB body of tiny values took 730 MB to parse. Bodies
/// are refused once they pass MAX_VALUES values, before being built whole.
#[test]
fn bodies_with_too_many_values_are_refused() {
    let labels = |n: usize| {
        let l: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"key":"k{i}","value":"v"}}"#))
            .collect();
        format!(r#"{{"labels":[{}]}}"#, l.join(","))
    };
    // Each label is 3 values (the object, its key's value, its value's).
    let fits = from_slice::<v1::Labels>(labels(1000).as_bytes()).unwrap();
    assert_eq!(fits.labels.len(), 1000);
    assert_eq!(
        from_slice::<v1::Labels>(labels(MAX_VALUES / 3 + 1).as_bytes()),
        Err(DecodeError::TooManyValues)
    );
    // Syntax errors are still syntax errors.
    assert!(matches!(
        from_slice::<v1::Labels>(b"{\"labels\": [}"),
        Err(DecodeError::Syntax(_))
    ));
    assert!(matches!(
        from_slice::<v1::Labels>(b"{} trailing"),
        Err(DecodeError::Syntax(_))
    ));
}
