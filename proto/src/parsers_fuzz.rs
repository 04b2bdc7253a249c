//! Property-based fuzzing of every parser in this crate that faces the
//! network: Mesos JSON and protobuf calls (scheduler, executor, operator),
//! RecordIO, resource strings, attributes, credentials files, ACL files,
//! Basic headers and executor tokens. Inputs are random bytes and random
//! JSON shaped like the real messages (their field names, wrong types,
//! huge numbers, deep nesting); every one must be answered (a value or an
//! error with a message), never a panic.

use proptest::prelude::*;
use serde_json::Value;

use crate::{acl, auth, executor, json, operator, recordio, resources, scheduler};

/// Field names of the messages, so random JSON reaches deep into them.
const NAMES: &[&str] = &[
    "type",
    "subscribe",
    "framework_info",
    "framework_id",
    "user",
    "name",
    "id",
    "value",
    "roles",
    "role",
    "capabilities",
    "labels",
    "key",
    "accept",
    "decline",
    "offer_ids",
    "operations",
    "launch",
    "task_infos",
    "task_id",
    "agent_id",
    "resources",
    "scalar",
    "ranges",
    "range",
    "begin",
    "end",
    "set",
    "item",
    "command",
    "uris",
    "environment",
    "variables",
    "container",
    "docker",
    "image",
    "network_infos",
    "executor",
    "executor_id",
    "update",
    "status",
    "state",
    "uuid",
    "kill",
    "acknowledge",
    "reconcile",
    "tasks",
    "filters",
    "refuse_seconds",
    "teardown",
    "update_weights",
    "weight_infos",
    "weight",
    "mark_agent_gone",
    "health_check",
    "limits",
    "principal",
    "secret",
    "credentials",
    "permissive",
    "run_tasks",
    "register_frameworks",
    "principals",
    "users",
    "values",
    "failover_timeout",
    "checkpoint",
    "hostname",
    "webui_url",
    "offer_constraints",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(1e308)),
        Just(Value::from(u64::MAX)),
        "[a-zA-Z0-9_ ./:*%-]{0,24}".prop_map(Value::String),
        prop::sample::select(NAMES).prop_map(|s| Value::String(s.to_uppercase())),
        prop::sample::select(
            &[
                "SUBSCRIBE",
                "ACCEPT",
                "LAUNCH",
                "SCALAR",
                "RANGES",
                "TASK_RUNNING",
                "GET_STATE",
                "UPDATE"
            ][..]
        )
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(NAMES).prop_map(String::from),
                        "[a-z_]{1,10}".prop_map(String::from),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Bytes that are sometimes JSON, sometimes broken JSON, sometimes noise.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), any::<usize>()).prop_map(|(v, cut)| {
            let mut b = v.to_string().into_bytes();
            let n = b.len();
            b.truncate(cut % (n + 1));
            b
        }),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn answered<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        assert!(!e.to_string().is_empty(), "an error without a message");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mesos_json_calls_never_panic(b in body()) {
        answered(json::from_slice::<scheduler::Call>(&b));
        answered(json::from_slice::<executor::Call>(&b));
        answered(json::from_slice::<operator::Call>(&b));
    }

    #[test]
    fn mesos_protobuf_calls_never_panic(b in prop::collection::vec(any::<u8>(), 0..1024)) {
        answered(json::from_protobuf::<scheduler::Call>(&b));
        answered(json::from_protobuf::<executor::Call>(&b));
        answered(json::from_protobuf::<operator::Call>(&b));
    }

    #[test]
    fn recordio_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut d = recordio::Decoder::new(4096);
        for c in &chunks {
            d.push(c);
            while let Ok(Some(_)) = d.next_record() {}
        }
    }

    #[test]
    fn resource_and_attribute_strings_never_panic(s in "[a-z0-9:;,\\[\\]()*.{}/ -]{0,80}") {
        answered(resources::Resources::parse(&s, "*"));
        answered(resources::parse_attributes(&s));
    }

    #[test]
    fn credentials_and_acl_files_never_panic(b in body()) {
        answered(auth::Credentials::parse(&b));
        answered(auth::parse_credential(&b));
        answered(acl::Acls::parse(&b));
    }

    #[test]
    fn authorization_headers_never_panic(s in "\\PC{0,80}", key in prop::collection::vec(any::<u8>(), 0..32)) {
        let _ = auth::parse_basic(&s);
        let _ = auth::parse_basic(&format!("Basic {s}"));
        answered(auth::verify_executor_token(&key, &s));
    }
}
