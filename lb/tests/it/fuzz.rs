//! Property-based fuzzing of what agora lb reads from marathon-rs: apps with
//! random marathon-lb labels (names of the real ones, values with HAProxy
//! syntax, quotes, newlines, huge numbers). Every app is either rendered or
//! left out with an error naming it; nothing panics, and no label value
//! breaks out of its line in the configuration.

#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use serde_json::{Value, json};

const LABELS: &[&str] = &[
    "HAPROXY_GROUP",
    "HAPROXY_0_VHOST",
    "HAPROXY_0_MODE",
    "HAPROXY_0_PORT",
    "HAPROXY_0_BIND_ADDR",
    "HAPROXY_0_BALANCE",
    "HAPROXY_0_STICKY",
    "HAPROXY_0_REDIRECT_TO_HTTPS",
    "HAPROXY_0_PATH",
    "HAPROXY_0_BACKEND_WEIGHT",
    "HAPROXY_0_SSL_CERT",
    "HAPROXY_0_USE_HSTS",
    "HAPROXY_0_AUTH",
    "HAPROXY_0_GROUP",
    "HAPROXY_1_VHOST",
];

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.:/_-]{0,24}",
        "\\PC{0,24}",
        Just("external".to_string()),
        Just("a.example.com,b.example.com".to_string()),
        Just("x\nbackend evil".to_string()),
        Just("realm:user:$6$salt$hash".to_string()),
        Just("99999999999999999999".to_string()),
    ]
}

fn apps() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            "/[a-z]{1,6}(/[a-z]{1,6})?",
            prop::collection::btree_map(prop::sample::select(LABELS), label_value(), 0..6),
            prop::collection::vec(0u32..70000, 0..3),
        ),
        0..5,
    )
    .prop_map(|apps| {
        let apps: Vec<Value> = apps
            .into_iter()
            .map(|(id, labels, ports)| {
                let mut labels: serde_json::Map<String, Value> =
                    labels.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                labels.entry("HAPROXY_GROUP").or_insert(json!("external"));
                json!({"id": id, "labels": labels,
                       "portDefinitions": ports.iter().map(|p| json!({"port": p})).collect::<Vec<_>>(),
                       "tasks": [{"id": "t1", "host": "10.0.0.1", "ports": ports, "state": "TASK_RUNNING"}]})
            })
            .collect();
        json!({ "apps": apps })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn labels_are_rendered_or_refused_never_injected(apps in apps()) {
        let settings = agora_lb::Settings::default();
        let (services, errors) = agora_lb::services(&apps, &settings, &|_| None);
        for e in &errors {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Ok(text) = agora_lb::render(&services, &settings) {
            prop_assert!(!text.contains("backend evil"), "{text}");
        }
    }
}
