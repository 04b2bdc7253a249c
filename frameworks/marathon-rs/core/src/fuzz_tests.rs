//! Property-based fuzzing of what marathon-rs reads from the network: app
//! and group definitions (JSON with Marathon's field names, wrong types,
//! huge numbers, broken text) and constraints. Each must be answered with a
//! 2xx or a 4xx with a message, never a panic or a 5xx.

use proptest::prelude::*;
use serde_json::Value;

use crate::constraints::Constraint;
use crate::marathon::{Config, Marathon, State};
use crate::time::Millis;

const NAMES: &[&str] = &[
    "id",
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "instances",
    "user",
    "env",
    "labels",
    "constraints",
    "container",
    "type",
    "docker",
    "image",
    "network",
    "portMappings",
    "containerPort",
    "hostPort",
    "servicePort",
    "portDefinitions",
    "port",
    "protocol",
    "name",
    "healthChecks",
    "path",
    "portIndex",
    "intervalSeconds",
    "upgradeStrategy",
    "minimumHealthCapacity",
    "maximumOverCapacity",
    "backoffSeconds",
    "backoffFactor",
    "dependencies",
    "apps",
    "groups",
    "networks",
    "mode",
    "volumes",
    "containerPath",
    "hostPath",
    "unreachableStrategy",
    "killSelection",
    "fetch",
    "uri",
    "version",
    "secrets",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(Value::from(1e308)),
        "[a-zA-Z0-9_ ./:*%{}-]{0,20}".prop_map(Value::String),
        prop::sample::select(
            &[
                "/a",
                "/a/b",
                "UNIQUE",
                "hostname",
                "DOCKER",
                "MESOS",
                "BRIDGE",
                "tcp",
                "HTTP",
                "container/bridge"
            ][..]
        )
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(
                (prop::sample::select(NAMES).prop_map(String::from), inner),
                0..7
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        value().prop_map(|v| v.to_string().into_bytes()),
        (value(), any::<usize>()).prop_map(|(v, cut)| {
            let mut b = v.to_string().into_bytes();
            let n = b.len();
            b.truncate(cut % (n + 1));
            b
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn answered(status: u16, body: &Option<Value>) {
    assert!(status < 500, "{status}: {body:?}");
    if status >= 400 {
        let message = body.as_ref().and_then(|b| b["message"].as_str());
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{status} without a message: {body:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn app_and_group_definitions_are_answered_never_crash(b in body()) {
        let mut m = Marathon::new(Config::default(), State::default(), 1);
        let now = Millis(1_700_000_000_000);
        let r = m.create_app(now, &b, false);
        answered(r.status, &r.body);
        let r = m.put_app(now, "/x", &b, false, true, true);
        answered(r.status, &r.body);
        let r = m.put_apps(now, &b, false, true);
        answered(r.status, &r.body);
        let r = m.create_group(now, None, &b, false);
        answered(r.status, &r.body);
    }

    #[test]
    fn constraints_never_panic(parts in prop::collection::vec("[A-Za-z0-9_:.*|-]{0,12}", 0..5)) {
        let _ = Constraint::parse(&parts);
    }
}
