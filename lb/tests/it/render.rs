//! Golden-file tests of the rendered configuration, and HAProxy's own
//! check of it (`haproxy -c`, when HAProxy is installed).

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;

use agora_lb::{Settings, render, services};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn resolve(host: &str) -> Option<IpAddr> {
    match host {
        "agent1" => Some("1.1.1.1".parse().unwrap()),
        "agent2" => Some("1.1.1.2".parse().unwrap()),
        other => other.parse().ok(),
    }
}

fn rendered(settings: &Settings) -> (String, Vec<agora_lb::LabelError>) {
    let apps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("apps.json")).unwrap()).unwrap();
    let (svcs, errors) = services(&apps, settings, &resolve);
    (render(&svcs, settings).unwrap(), errors)
}

/// Compares with `tests/golden/<name>`; `AGORA_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, text: &str) {
    let path = dir().join(name);
    if std::env::var_os("AGORA_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "{name} differs (AGORA_UPDATE_GOLDEN=1 to accept):\n{text}"
    );
}

/// Writes `cfg` to `file` and asserts that `haproxy -c` accepts it.
fn assert_haproxy_accepts(file: &std::path::Path, cfg: &str) {
    std::fs::write(file, cfg).unwrap();
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c refused {}:\n{}\n{cfg}",
        file.display(),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_external_group_renders_as_marathon_lb_does() {
    let (cfg, errors) = rendered(&Settings::default());
    golden("external.cfg", &cfg);
    // One bad app is reported by name and label; the others are served.
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("/bad") && errors[0].contains("HAPROXY_0_MODE"));
    assert!(errors[1].contains("/evil") && errors[1].contains("HAPROXY_0_VHOST"));
    assert!(!cfg.contains("1.2.3.4"));
    // Only running, healthy tasks receive traffic.
    assert!(cfg.contains("server agent1_1_1_1_1_1024 1.1.1.1:1024 id "));
    assert!(!cfg.contains(":1025") && !cfg.contains(":1026"));
    // Other groups and unlabelled apps are not here.
    assert!(!cfg.contains("private_10004") && !cfg.contains("unlabelled"));
    assert!(!cfg.contains("api_10003"));
}

#[test]
fn the_internal_group_and_every_group() {
    let internal = Settings {
        group: "internal".into(),
        ..Settings::default()
    };
    let (cfg, _) = rendered(&internal);
    golden("internal.cfg", &cfg);
    assert!(cfg.contains("backend api_10003") && cfg.contains("backend shop_db_10001"));
    assert!(!cfg.contains("backend nginx_10000"));
    let all = Settings {
        group: "*".into(),
        ..Settings::default()
    };
    let (cfg, _) = rendered(&all);
    assert!(cfg.contains("backend unlabelled_10005") && cfg.contains("backend nginx_10000"));
}

#[test]
fn server_ids_are_stable_and_never_zero() {
    assert_eq!(agora_lb::server_id("a"), agora_lb::server_id("a"));
    for name in ["a", "b", "agent1_1_1_1_1_1024", ""] {
        let id = agora_lb::server_id(name);
        assert!((1..32767).contains(&id), "{name}: {id}");
    }
}

#[test]
fn haproxy_accepts_the_rendered_configuration() {
    let Ok(out) = std::process::Command::new("haproxy").arg("-v").output() else {
        assert!(
            std::env::var("AGORA_REQUIRE_ALL").is_err(),
            "haproxy is required (AGORA_REQUIRE_ALL=1) but missing"
        );
        eprintln!("SKIPPED: haproxy is not installed");
        return;
    };
    assert!(out.status.success());
    let tmp = std::env::temp_dir().join(format!("agora-lb-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let settings = Settings {
        group: "*".into(),
        socket: tmp.join("socket").display().to_string(),
        state_file: tmp.join("state").display().to_string(),
        ..Settings::default()
    };
    let (cfg, _) = rendered(&settings);
    let overridden = Settings {
        templates: agora_lb::Templates::load(&dir().join("templates")).unwrap(),
        ..settings.clone()
    };
    let (cfg2, _) = rendered(&overridden);
    assert_haproxy_accepts(&tmp.join("overridden.cfg"), &cfg2);
    assert_haproxy_accepts(&tmp.join("haproxy.cfg"), &cfg);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_port_bound_twice_leaves_the_later_app_out() {
    let apps = serde_json::json!({"apps": [
        {"id": "/a", "labels": {"HAPROXY_GROUP": "external"}, "portDefinitions": [{"port": 10010}],
         "tasks": []},
        {"id": "/b", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_PORT": "10010"},
         "portDefinitions": [{"port": 10011}], "tasks": []},
        {"id": "/c", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_PORT": "9090"},
         "portDefinitions": [{"port": 10012}], "tasks": []},
        {"id": "/d", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_BIND_ADDR": "127.0.0.2",
                                "HAPROXY_0_PORT": "10010"},
         "portDefinitions": [{"port": 10013}], "tasks": []}
    ]});
    let (svcs, errors) = services(&apps, &Settings::default(), &resolve);
    let ids: Vec<&str> = svcs.iter().map(|s| s.app_id.as_str()).collect();
    assert_eq!(ids, ["/a"]);
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "app /b: label HAPROXY_0_PORT: port 10010 is already bound by app /a",
            "app /c: label HAPROXY_0_PORT: port 9090 is already bound by the stats page",
            "app /d: label HAPROXY_0_PORT: port 10010 is already bound by app /a",
        ]
    );
}

#[test]
fn templates_from_a_directory_replace_their_parts() {
    let templates = agora_lb::Templates::load(&dir().join("templates")).unwrap();
    let settings = Settings {
        templates,
        ..Settings::default()
    };
    let (cfg, _) = rendered(&settings);
    golden("overridden.cfg", &cfg);
    assert!(cfg.starts_with("global\n  stats socket /var/run/haproxy/socket"));
    assert!(cfg.contains("frontend nginx_10000\n  bind *:10000\n  mode http\n  timeout client 1m\n  use_backend nginx_10000"));
    assert!(cfg.contains(
        "backend nginx_10000\n  balance roundrobin\n  mode http\n  # {managed by agora lb}\n"
    ));
    // What is not overridden stays.
    assert!(cfg.contains("frontend marathon_http_in\n  bind *:80"));
}

#[test]
fn a_template_that_cannot_be_used_is_refused_by_name() {
    use std::collections::HashMap;
    let one = |name: &str, text: &str| {
        agora_lb::Templates::new(HashMap::from([(name.to_string(), text.to_string())])).unwrap_err()
    };
    let e = one("HAPROXY_NOPE", "x");
    assert!(
        e.contains("HAPROXY_NOPE") && e.contains("HAPROXY_BACKEND_HEAD"),
        "{e}"
    );
    let e = one("HAPROXY_BACKEND_HEAD", "backend {app}\n");
    assert!(
        e.contains("HAPROXY_BACKEND_HEAD") && e.contains("{backend}"),
        "{e}"
    );
    let e = one(
        "HAPROXY_HEAD",
        "global\n  stats socket {socket} level admin\n",
    );
    assert!(e.contains("expose-fd listeners"), "{e}");
    let e = one(
        "HAPROXY_HEAD",
        "global\n  daemon\n  stats socket {socket} level admin expose-fd listeners\n",
    );
    assert!(e.contains("daemon"), "{e}");
    let e = one(
        "HAPROXY_HEAD",
        "global\n  stats socket /other level admin expose-fd listeners\n",
    );
    assert!(e.contains("{socket}"), "{e}");
}

/// Apps for the HTTPS tests: a virtual host with basic auth, HSTS and a
/// redirect to https, and a TCP service whose own port speaks TLS.
fn tls_apps(password: &str) -> serde_json::Value {
    let task = |port: u16| {
        serde_json::json!({"id": format!("t{port}"), "host": "agent1", "ports": [port],
                           "state": "TASK_RUNNING", "ipAddresses": []})
    };
    serde_json::json!({"apps": [
        {"id": "/secure", "portDefinitions": [{"port": 10010}], "tasks": [task(1030)],
         "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "secure.example.com",
                    "HAPROXY_0_AUTH": format!("Staff only:admin:{password}"),
                    "HAPROXY_0_USE_HSTS": "true", "HAPROXY_0_REDIRECT_TO_HTTPS": "true"}},
        {"id": "/db", "portDefinitions": [{"port": 10011}], "tasks": [task(1031)],
         "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_SSL_CERT": "/etc/ssl/db.pem"}},
        {"id": "/badauth", "portDefinitions": [{"port": 10012}], "tasks": [task(1032)],
         "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "b.example.com",
                    "HAPROXY_0_AUTH": "realm:user:\" insecure"}}
    ]})
}

const HASH: &str = "$6$agora$8Mx8TA6dnKq0K8r4fK0cXc3xNbn3zKpFh1z0yk3oNvH3sDq9n3L1m4bC5o0bq9yYb0lZ8w1uK7oE9JxJ1m0Z/.";

#[test]
fn https_auth_and_hsts_render_as_marathon_lb_does() {
    let settings = Settings {
        ssl_certs: vec!["/etc/ssl/cert.pem".into()],
        ..Settings::default()
    };
    let (svcs, errors) = services(&tls_apps(HASH), &settings, &resolve);
    let cfg = render(&svcs, &settings).unwrap();
    golden("https.cfg", &cfg);
    // A malformed AUTH label leaves its app out, named.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("/badauth")
            && errors[0].to_string().contains("HAPROXY_0_AUTH")
    );
    assert!(cfg.contains("bind *:443 ssl crt /etc/ssl/cert.pem"));
    assert!(cfg.contains("use_backend secure_10010 if { ssl_fc_sni secure.example.com }"));
    assert!(cfg.contains("userlist user_secure_10010"));
    assert!(cfg.contains("bind *:10011 ssl crt /etc/ssl/db.pem"));
    // Without certificates there is no HTTPS frontend.
    let plain = render(&svcs, &Settings::default()).unwrap();
    assert!(!plain.contains("marathon_https_in"));
}

#[test]
fn haproxy_accepts_the_https_configuration() {
    let have = |bin: &str| {
        std::process::Command::new(bin)
            .arg("version")
            .output()
            .is_ok()
    };
    if !have("haproxy") || !have("openssl") {
        assert!(
            std::env::var("AGORA_REQUIRE_ALL").is_err(),
            "haproxy and openssl are required (AGORA_REQUIRE_ALL=1)"
        );
        eprintln!("SKIPPED: haproxy or openssl is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pem = tmp.path().join("cert.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=agora",
        ])
        .arg("-keyout")
        .arg(&pem)
        .arg("-out")
        .arg(tmp.path().join("crt.pem"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut both = std::fs::read(&pem).unwrap();
    both.extend(std::fs::read(tmp.path().join("crt.pem")).unwrap());
    std::fs::write(&pem, both).unwrap();
    let settings = Settings {
        group: "external".into(),
        ssl_certs: vec![pem.display().to_string()],
        socket: tmp.path().join("socket").display().to_string(),
        state_file: tmp.path().join("state").display().to_string(),
        ..Settings::default()
    };
    let apps = tls_apps(HASH)
        .to_string()
        .replace("/etc/ssl/db.pem", &pem.display().to_string());
    let (svcs, _) = services(&serde_json::from_str(&apps).unwrap(), &settings, &resolve);
    let cfg = render(&svcs, &settings).unwrap();
    assert_haproxy_accepts(&tmp.path().join("haproxy.cfg"), &cfg);
}

#[test]
fn with_haproxy_map_vhosts_and_app_ids_route_through_map_files() {
    let settings = Settings {
        map_dir: Some("/etc/haproxy".into()),
        ..Settings::default()
    };
    let (cfg, _) = rendered(&settings);
    golden("map.cfg", &cfg);
    assert!(cfg.contains(
        "use_backend %[req.hdr(host),lower,regsub(:.*$,,),map(/etc/haproxy/domain2backend.map)]"
    ));
    assert!(cfg.contains(
        "use_backend %[req.hdr(x-marathon-app-id),lower,map(/etc/haproxy/app2backend.map)]"
    ));
    // Plain virtual hosts have no ACL of their own any more; one with a
    // path (and a redirect) keeps its ACL.
    assert!(!cfg.contains("acl host_test_example_com_nginx"));
    assert!(cfg.contains("acl host_example_com_api"));
    let apps: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("apps.json")).unwrap()).unwrap();
    let (svcs, _) = services(&apps, &settings, &resolve);
    let (domains, app_ids) = agora_lb::maps(&svcs);
    assert_eq!(
        domains,
        "test.example.com nginx_10000\nwww.example.com nginx_10000\n"
    );
    assert!(
        app_ids.contains("/nginx nginx_10000\n") && app_ids.contains("/api api_10002\n"),
        "{app_ids}"
    );
}

#[test]
fn tasks_on_a_container_network_are_served_at_their_own_address_and_container_port() {
    let apps = serde_json::json!({"apps": [
        {"id": "/ipt", "labels": {"HAPROXY_GROUP": "external"},
         "networks": [{"mode": "container", "name": "agora"}],
         "container": {"type": "MESOS", "portMappings": [
             {"containerPort": 80, "hostPort": 31000, "servicePort": 10080, "name": "http"}]},
         "tasks": [
             {"id": "ipt.1", "host": "agent1", "state": "TASK_RUNNING", "ports": [31000],
              "ipAddresses": [{"ipAddress": "10.200.0.5", "protocol": "IPv4"}]},
             {"id": "ipt.2", "host": "agent2", "state": "TASK_RUNNING", "ports": [],
              "ipAddresses": [{"ipAddress": "10.200.1.7", "protocol": "IPv4"}]},
             {"id": "ipt.3", "host": "agent2", "state": "TASK_RUNNING", "ports": []}]},
        {"id": "/bridged", "labels": {"HAPROXY_GROUP": "external"},
         "container": {"type": "DOCKER", "docker": {"image": "x", "network": "BRIDGE"},
                       "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10081}]},
         "tasks": [{"id": "b.1", "host": "agent1", "state": "TASK_RUNNING", "ports": [31555],
                    "ipAddresses": [{"ipAddress": "172.17.0.3", "protocol": "IPv4"}]}]}
    ]});
    let settings = Settings::default();
    let (svcs, errors) = services(&apps, &settings, &resolve);
    assert!(errors.is_empty(), "{errors:?}");
    let servers = |port: u16| -> Vec<String> {
        svcs.iter()
            .find(|s| s.service_port == port)
            .unwrap()
            .servers
            .iter()
            .map(|s| s.address.clone())
            .collect()
    };
    // The task's own address and the container port (hostPort ignored, as
    // marathon-lb does); a task without an address yet waits.
    assert_eq!(servers(10080), ["10.200.0.5:80", "10.200.1.7:80"]);
    // Docker's bridge: the agent and the mapped host port.
    assert_eq!(servers(10081), ["1.1.1.1:31555"]);
}
