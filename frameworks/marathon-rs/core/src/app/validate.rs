//! An app's validation: every field checked, each error with its JSON
//! path, as Marathon answers 422.

use super::*;

/// The largest `cpus`, `mem`, `disk` or `gpus` an app may ask for.
pub const MAX_SCALAR: f64 = 1e9;

/// Semantic checks of a complete definition.
pub fn validate(app: &App) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let has_cmd = app.cmd.as_ref().is_some_and(|c| !c.trim().is_empty());
    if has_cmd && !app.args.is_empty() {
        errors.push(invalid(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
        ));
    }
    if !has_cmd && app.args.is_empty() && app.container.is_none() {
        errors.push(invalid(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
        ));
    }
    check_container(app, &mut errors);
    check_timings(app, &mut errors);
    for (i, c) in app.constraints.iter().enumerate() {
        if let Err(e) = Constraint::parse(c) {
            errors.push(invalid(&format!("/constraints({i})"), e.to_string()));
        }
    }
    check_ports_and_health(app, &mut errors);
    for (i, n) in app.networks.iter().enumerate() {
        if !matches!(n.mode.as_str(), "host" | "container/bridge" | "container") {
            errors.push(invalid(
                &format!("/networks({i})/mode"),
                "must be host, container/bridge or container",
            ));
        }
        match (n.mode.as_str(), n.name.as_deref()) {
            ("container", None | Some("")) => errors.push(invalid(
                &format!("/networks({i})/name"),
                "a container network needs a name",
            )),
            ("container", Some(name)) if !valid_network_name(name) => errors.push(invalid(
                &format!("/networks({i})/name"),
                "must be letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63",
            )),
            ("host" | "container/bridge", Some(_)) => errors.push(invalid(
                &format!("/networks({i})/name"),
                "only a container network has a name",
            )),
            _ => {}
        }
    }
    if app.networks.len() > 1 && app.networks.iter().any(|n| n.mode != "container") {
        errors.push(invalid(
            "/networks",
            "host or bridge networking excludes other networks",
        ));
    }
    for (k, _) in app.env.iter() {
        if k.is_empty() || k.contains('=') {
            errors.push(invalid(
                &format!("/env/{k}"),
                "environment variable names must be non-empty and have no '='",
            ));
        }
    }
    for (i, d) in app.dependencies.iter().enumerate() {
        if PathId::parse(d).is_err() {
            errors.push(invalid(
                &format!("/dependencies({i})"),
                format!("'{d}' is not a valid path"),
            ));
        }
    }
    errors
}

/// `container`: its type, image and volume modes.
fn check_container(app: &App, errors: &mut Vec<FieldError>) {
    if let Some(c) = &app.container {
        if c.kind != "DOCKER" && c.kind != "MESOS" {
            errors.push(invalid("/container/type", "must be DOCKER or MESOS"));
        }
        if c.kind == "DOCKER" && c.docker.as_ref().is_none_or(|d| d.image.trim().is_empty()) {
            errors.push(invalid(
                "/container/docker/image",
                "a DOCKER container needs an image",
            ));
        }
        for (i, v) in c.volumes.iter().enumerate() {
            if v.mode != "RO" && v.mode != "RW" {
                errors.push(invalid(
                    &format!("/container/volumes({i})/mode"),
                    "must be RO or RW",
                ));
            }
            if let Some(p) = &v.persistent {
                check_persistent(i, v, p, errors);
            }
        }
    }
}

/// A local persistent volume: a size, a plain relative path in the
/// sandbox, and no host path (Marathon's rules).
fn check_persistent(
    i: usize,
    v: &crate::app::Volume,
    p: &crate::app::PersistentVolume,
    errors: &mut Vec<FieldError>,
) {
    let at = |field: &str| format!("/container/volumes({i})/{field}");
    if !(p.size > 0.0 && p.size <= super::MAX_SCALAR) {
        errors.push(invalid(&at("persistent/size"), "must be more than 0"));
    }
    if p.kind != "root" {
        errors.push(invalid(
            &at("persistent/type"),
            "only 'root' volumes are offered by Agora agents",
        ));
    }
    let path = &v.container_path;
    if path.is_empty() || path.contains('/') || path == "." || path == ".." {
        errors.push(invalid(
            &at("containerPath"),
            "a persistent volume's containerPath is a name in the sandbox, without '/'",
        ));
    }
    if v.host_path.is_some() {
        errors.push(invalid(
            &at("hostPath"),
            "a persistent volume has no hostPath",
        ));
    }
}

/// The upgrade strategy's bounds, backoff and kill grace.
fn check_timings(app: &App, errors: &mut Vec<FieldError>) {
    let us = &app.upgrade_strategy;
    for (name, v) in [
        ("minimumHealthCapacity", us.minimum_health_capacity),
        ("maximumOverCapacity", us.maximum_over_capacity),
    ] {
        if !(0.0..=1.0).contains(&v) {
            errors.push(invalid(
                &format!("/upgradeStrategy/{name}"),
                format!("is {}, must be between 0 and 1", v),
            ));
        }
    }
    if app.is_resident() && us.maximum_over_capacity != 0.0 {
        errors.push(invalid(
            "/upgradeStrategy/maximumOverCapacity",
            "must be 0 for apps with persistent volumes (an instance cannot run twice on its data)",
        ));
    }
    if !(app.backoff_factor >= 1.0 && app.backoff_factor.is_finite()) {
        errors.push(invalid("/backoffFactor", "must be 1 or more"));
    }
    if !(app.backoff_seconds >= 0.0 && app.backoff_seconds.is_finite()) {
        errors.push(invalid("/backoffSeconds", "must be 0 or more"));
    }
    if !(app.max_launch_delay_seconds >= 0.0 && app.max_launch_delay_seconds.is_finite()) {
        errors.push(invalid("/maxLaunchDelaySeconds", "must be 0 or more"));
    }
    if app
        .task_kill_grace_period_seconds
        .is_some_and(|g| !(g >= 0.0 && g.is_finite()))
    {
        errors.push(invalid("/taskKillGracePeriodSeconds", "must be 0 or more"));
    }
}

/// Port definitions, `requirePorts`, and health checks (whose port
/// indices address those ports).
fn check_ports_and_health(app: &App, errors: &mut Vec<FieldError>) {
    let port_count = port_count(app);
    let mut names = std::collections::BTreeSet::new();
    for (i, pd) in app.port_definitions.iter().flatten().enumerate() {
        if !matches!(pd.protocol.as_str(), "tcp" | "udp" | "udp,tcp") {
            errors.push(invalid(
                &format!("/portDefinitions({i})/protocol"),
                "must be tcp, udp or udp,tcp",
            ));
        }
        if pd.port > 65535 {
            errors.push(invalid(
                &format!("/portDefinitions({i})/port"),
                "must be at most 65535",
            ));
        }
        if let Some(n) = &pd.name
            && !names.insert(n.clone())
        {
            errors.push(invalid("/portDefinitions", "Port names must be unique."));
        }
    }
    if app.require_ports && app.port_definitions.iter().flatten().any(|p| p.port == 0) {
        errors.push(invalid(
            "/requirePorts",
            "requirePorts needs every port to be declared (non-zero)",
        ));
    }
    for (i, hc) in app.health_checks.iter().enumerate() {
        let path = format!("/healthChecks({i})");
        match hc.protocol.as_str() {
            "HTTP" | "HTTPS" | "TCP" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP" => {
                if hc.port.is_none() && hc.port_index.unwrap_or(0) as usize >= port_count {
                    errors.push(invalid(
                        &path,
                        "Health check port indices must address an element of the ports array or container port mappings.",
                    ));
                }
            }
            "COMMAND" => {
                if hc
                    .command
                    .as_ref()
                    .is_none_or(|c| c.value.trim().is_empty())
                {
                    errors.push(invalid(
                        &format!("{path}/command"),
                        "a COMMAND health check needs a command",
                    ));
                }
            }
            other => errors.push(invalid(
                &format!("{path}/protocol"),
                format!("unknown protocol '{other}'"),
            )),
        }
        for (name, v) in [
            ("gracePeriodSeconds", hc.grace_period_seconds),
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
            ("delaySeconds", hc.delay_seconds),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                errors.push(invalid(&format!("{path}/{name}"), "must be 0 or more"));
            }
        }
    }
}

/// A CNI network name (`[A-Za-z0-9][A-Za-z0-9_.-]*`), of a sane length.
fn valid_network_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
