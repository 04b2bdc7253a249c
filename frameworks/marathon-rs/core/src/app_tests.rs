use super::*;

fn id(s: &str) -> PathId {
    PathId::parse(s).unwrap()
}

fn create(json: &str) -> Result<App, AppError> {
    let u: AppUpdate = parse_json(json.as_bytes())?;
    let path = PathId::parse(u.id.as_deref().unwrap_or("")).unwrap();
    build(&path, None, &u, Millis(1_700_000_000_000))
}

#[test]
fn a_minimal_app_gets_marathon_defaults_and_json_shape() {
    // Exactly what marathon-python 0.13.0 sends for a command app.
    let app =
        create(r#"{"cmd":"sleep 3600","cpus":0.1,"id":"sleeper","instances":5,"mem":16}"#).unwrap();
    assert_eq!(app.id, "/sleeper");
    assert_eq!(
        (app.instances, app.disk, app.gpus, app.backoff_factor),
        (5, 0.0, 0.0, 1.15)
    );
    let v = serde_json::to_value(&app).unwrap();
    let obj = v.as_object().unwrap();
    for key in [
        "id",
        "backoffFactor",
        "backoffSeconds",
        "cpus",
        "disk",
        "executor",
        "instances",
        "labels",
        "maxLaunchDelaySeconds",
        "mem",
        "gpus",
        "networks",
        "requirePorts",
        "upgradeStrategy",
        "version",
        "unreachableStrategy",
        "killSelection",
        "portDefinitions",
    ] {
        assert!(obj.contains_key(key), "missing {key}: {v}");
    }
    for absent in [
        "container",
        "args",
        "constraints",
        "env",
        "fetch",
        "healthChecks",
        "dependencies",
        "uris",
        "ports",
    ] {
        assert!(!obj.contains_key(absent), "{absent} must be omitted: {v}");
    }
    assert_eq!(v["version"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["killSelection"], "YOUNGEST_FIRST");
    assert_eq!(v["portDefinitions"][0]["name"], "default");
    assert_eq!(v["networks"], serde_json::json!([{"mode": "host"}]));
    assert_eq!(
        v["unreachableStrategy"],
        serde_json::json!({"inactiveAfterSeconds": 0.0, "expungeAfterSeconds": 0.0})
    );
}

#[test]
fn type_errors_are_400_with_a_path() {
    let err = create(r#"{"id":"a","cmd":"x","cpus":"lots"}"#).unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(err.details()[0].path, "/cpus");
    let err = create(r#"{"id":"a", "#).unwrap_err();
    assert_eq!(err.status(), 400);
}

#[test]
fn semantic_errors_are_422_naming_each_field() {
    let err = create(
        r#"{"id":"a","cmd":"x","cpus":0,"mem":-1,"upgradeStrategy":{"minimumHealthCapacity":2}}"#,
    )
    .unwrap_err();
    assert_eq!(err.status(), 422);
    let paths: Vec<&str> = err.details().iter().map(|d| d.path.as_str()).collect();
    assert!(
        paths.contains(&"/cpus")
            && paths.contains(&"/mem")
            && paths.contains(&"/upgradeStrategy/minimumHealthCapacity"),
        "{paths:?}"
    );
    let err = create(r#"{"id":"a"}"#).unwrap_err();
    assert!(err.details()[0].errors[0].contains("'cmd' or 'args'"));
    let err = create(r#"{"id":"a","cmd":"x","args":["y"]}"#).unwrap_err();
    assert_eq!(err.status(), 422);
    let err =
        create(r#"{"id":"a","cmd":"x","constraints":[["hostname","SOMETIMES"]]}"#).unwrap_err();
    assert_eq!(err.details()[0].path, "/constraints(0)");
    let err = create(r#"{"id":"a","cmd":"x","healthChecks":[{"protocol":"HTTP","portIndex":3}]}"#)
        .unwrap_err();
    assert!(err.details()[0].errors[0].contains("port indices"));
    let err = create(r#"{"id":"a","cmd":"x","instances":2.5}"#).unwrap_err();
    assert_eq!(err.details()[0].path, "/instances");
}

#[test]
fn unknown_fields_are_ignored() {
    assert!(create(r#"{"id":"a","cmd":"x","storeUrls":[],"someday":true}"#).is_ok());
}

#[test]
fn legacy_forms_are_normalised() {
    let app = create(
        r#"{"id":"web","container":{"type":"DOCKER","docker":{"image":"busybox","network":"BRIDGE",
            "portMappings":[{"containerPort":80,"hostPort":0,"protocol":"tcp","name":"http"}]}},
            "uris":["http://x/y.tgz"],"ports":[0,0]}"#,
    )
    .unwrap();
    assert_eq!(app.networks[0].mode, "container/bridge");
    assert!(
        app.port_definitions.is_none(),
        "bridge apps have no portDefinitions"
    );
    let pm = app
        .container
        .as_ref()
        .unwrap()
        .port_mappings
        .as_ref()
        .unwrap();
    assert_eq!(pm[0].container_port, 80);
    assert_eq!(app.fetch[0].uri, "http://x/y.tgz");
    assert!(app.fetch[0].extract);
    let v = serde_json::to_value(&app).unwrap();
    assert!(v["container"]["docker"].get("network").is_none());
    assert!(v["container"]["docker"].get("portMappings").is_none());
    assert_eq!(v["container"]["portMappings"][0]["name"], "http");
}

#[test]
fn partial_updates_keep_what_they_do_not_say() {
    let base = create(r#"{"id":"a","cmd":"sleep 1","cpus":0.5,"labels":{"x":"y"}}"#).unwrap();
    let scale: AppUpdate = parse_json(br#"{"instances":4}"#).unwrap();
    assert!(scale.is_scale_only());
    let scaled = build(&id("/a"), Some(&base), &scale, Millis(2_000_000_000_000)).unwrap();
    assert_eq!(
        (
            scaled.instances,
            scaled.cpus,
            scaled.labels.get("x").map(String::as_str)
        ),
        (4, 0.5, Some("y"))
    );
    assert!(!base.needs_restart(&scaled));
    let change: AppUpdate = parse_json(br#"{"cmd":"sleep 2"}"#).unwrap();
    let changed = build(&id("/a"), Some(&base), &change, Millis(2_000_000_000_000)).unwrap();
    assert!(base.needs_restart(&changed));
    let rollback: AppUpdate = parse_json(br#"{"version":"2023-11-14T22:13:20.000Z"}"#).unwrap();
    assert!(rollback.is_rollback());
    let mixed: AppUpdate =
        parse_json(br#"{"version":"2023-11-14T22:13:20.000Z","cmd":"x"}"#).unwrap();
    let err = build(&id("/a"), Some(&base), &mixed, Millis(1)).unwrap_err();
    assert!(err.details()[0].errors[0].contains("may only be combined"));
}

#[test]
fn service_port_views() {
    let mut app =
        create(r#"{"id":"a","cmd":"x","portDefinitions":[{"port":0},{"port":0,"name":"admin"}]}"#)
            .unwrap();
    assert_eq!(app.service_ports(), vec![0, 0]);
    for (i, p) in app.service_ports_mut().into_iter().enumerate() {
        *p = 10000 + i as u32;
    }
    assert_eq!(app.service_ports(), vec![10000, 10001]);
    assert_eq!(port_count(&app), 2);
}
