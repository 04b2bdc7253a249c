//! Applying to a real HAProxy (Debian's haproxy): server changes go through
//! the Runtime API without a reload, structural ones reload, an invalid
//! configuration is never applied. Servers are small HTTP listeners in this
//! process that answer with their own name.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use agora_lb::haproxy::{Applied, Haproxy};
use agora_lb::{Settings, services};
use serde_json::{Value, json};

fn haproxy_installed() -> bool {
    let ok = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("AGORA_REQUIRE_ALL").is_err(),
            "haproxy is required (AGORA_REQUIRE_ALL=1) but missing"
        );
        eprintln!("SKIPPED: haproxy is not installed");
    }
    ok
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP server answering every request with `name`; returns its port.
fn backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                        name.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

/// The bodies of `n` requests through HAProxy on `port`.
fn bodies(port: u16, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.starts_with("HTTP/1.1 200")
            && let Some((_, body)) = out.split_once("\r\n\r\n")
        {
            seen.insert(body.to_string());
        }
    }
    seen
}

/// A `/v2/apps?embed=apps.tasks` document: app `/web` in http mode on
/// `service` with a task per port; `extra` labels.
fn apps(service: u16, ports: &[u16], extra: Value) -> Value {
    let mut labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http"});
    for (k, v) in extra.as_object().unwrap() {
        labels[k] = v.clone();
    }
    let tasks: Vec<Value> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"id": format!("web.{i}"), "host": "127.0.0.1", "state": "TASK_RUNNING",
                   "ports": [p]})
        })
        .collect();
    json!({"apps": [{"id": "/web", "labels": labels,
                     "portDefinitions": [{"port": service}], "tasks": tasks}]})
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out: {what}");
}

#[test]
fn server_changes_go_through_the_runtime_api_and_structure_changes_reload() {
    if !haproxy_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        http_bind: format!("127.0.0.1:{}", free_port()),
        appid_bind: format!("127.0.0.1:{}", free_port()),
        stats_bind: format!("127.0.0.1:{}", free_port()),
        socket: dir.path().join("socket").display().to_string(),
        state_file: dir.path().join("state").display().to_string(),
        ..Settings::default()
    };
    let resolve = |h: &str| h.parse().ok();
    let service = free_port();
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let ports: Vec<u16> = names.iter().map(|n| backend(n)).collect();
    let set = |k: &[usize]| {
        k.iter()
            .map(|&i| names[i].to_string())
            .collect::<BTreeSet<_>>()
    };
    let mut haproxy = Haproxy::new("haproxy", dir.path().join("haproxy.cfg"), &settings.socket);
    let apply = |haproxy: &mut Haproxy, ports: &[u16], extra: Value| {
        let (svcs, errors) = services(&apps(service, ports, extra), &settings, &resolve);
        assert!(errors.is_empty(), "{errors:?}");
        haproxy.apply(&svcs, &settings).map_err(|e| e.to_string())
    };

    // Two servers: HAProxy starts with them (and spare slots).
    assert_eq!(
        apply(&mut haproxy, &ports[..2], json!({})),
        Ok(Applied::Started)
    );
    assert_eq!(bodies(service, 6), set(&[0, 1]));
    // The same again changes nothing.
    assert_eq!(
        apply(&mut haproxy, &ports[..2], json!({})),
        Ok(Applied::Unchanged)
    );
    // A third task: a spare slot is filled, no reload.
    assert!(matches!(
        apply(&mut haproxy, &ports[..3], json!({})),
        Ok(Applied::Runtime(_))
    ));
    assert_eq!(bodies(service, 9), set(&[0, 1, 2]));
    // The first task goes: its slot is put in maintenance.
    assert!(matches!(
        apply(&mut haproxy, &ports[1..3], json!({})),
        Ok(Applied::Runtime(_))
    ));
    assert_eq!(bodies(service, 9), set(&[1, 2]));
    // A replacement of both (a rolling update within the slots).
    assert!(matches!(
        apply(&mut haproxy, &ports[3..5], json!({})),
        Ok(Applied::Runtime(_))
    ));
    assert_eq!(bodies(service, 9), set(&[3, 4]));
    // The live file follows, for the next start.
    let file = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    assert!(file.contains(&format!("127.0.0.1:{}", ports[3])), "{file}");
    assert!(
        !file.contains(&format!("127.0.0.1:{} ", ports[0])),
        "{file}"
    );
    // Ten servers do not fit the four slots: a reload, with more slots.
    assert_eq!(
        apply(&mut haproxy, &ports, json!({})),
        Ok(Applied::Reloaded)
    );
    assert_eq!(haproxy.capacity(&format!("web_{service}")), 20);
    eventually("all ten answer after the reload", || {
        bodies(service, 30) == set(&(0..10).collect::<Vec<_>>())
    });
    // A label change is structural: a reload.
    assert_eq!(
        apply(
            &mut haproxy,
            &ports,
            json!({"HAPROXY_0_BALANCE": "leastconn"})
        ),
        Ok(Applied::Reloaded)
    );
    // A configuration HAProxy refuses is not applied: the app keeps its
    // last good one, named with its label, and the other apps go on.
    let other_service = free_port();
    let two = |web_ports: &[u16], web_labels: Value, other_ports: &[u16]| {
        let mut doc = apps(service, web_ports, web_labels);
        let other = apps(other_service, other_ports, json!({}))["apps"][0].clone();
        let mut other = other;
        other["id"] = json!("/other");
        doc["apps"].as_array_mut().unwrap().push(other);
        services(&doc, &settings, &resolve).0
    };
    let svcs = two(
        &ports,
        json!({"HAPROXY_0_BALANCE": "leastconn"}),
        &ports[..1],
    );
    assert_eq!(haproxy.apply(&svcs, &settings).unwrap(), Applied::Reloaded);
    eventually("the other app answers", || {
        bodies(other_service, 3) == set(&[0])
    });
    let svcs = two(
        &ports,
        json!({"HAPROXY_0_BALANCE": "nonsense"}),
        &ports[..2],
    );
    assert!(matches!(
        haproxy.apply(&svcs, &settings),
        Ok(Applied::Runtime(_))
    ));
    let why = haproxy.stats.last_error.clone().unwrap();
    assert!(
        why.contains("app /web") && why.contains("HAPROXY_0_BALANCE") && why.contains("nonsense"),
        "{why}"
    );
    assert_eq!(haproxy.stats.failed_checks, 1);
    assert_eq!(
        bodies(other_service, 6),
        set(&[0, 1]),
        "the other app's change is applied"
    );
    assert_eq!(
        bodies(service, 30),
        set(&(0..10).collect::<Vec<_>>()),
        "the refused app keeps serving"
    );
    // Asked again, it is not checked again.
    assert_eq!(haproxy.apply(&svcs, &settings).unwrap(), Applied::Unchanged);
    assert_eq!(haproxy.stats.failed_checks, 1);
    // Fixed, it is applied and the error is gone.
    let svcs = two(
        &ports,
        json!({"HAPROXY_0_BALANCE": "static-rr"}),
        &ports[..2],
    );
    assert_eq!(haproxy.apply(&svcs, &settings).unwrap(), Applied::Reloaded);
    assert_eq!(haproxy.stats.last_error, None);
    assert_eq!(haproxy.stats.reloads, 4);
    assert_eq!(haproxy.stats.runtime_updates, 4);
    eventually("all ten answer", || {
        bodies(service, 30) == set(&(0..10).collect::<Vec<_>>())
    });
    haproxy.stop();
}

/// The body of `GET /` to 127.0.0.1:`port` with `header` (e.g. `Host: a`),
/// or the status line when it is not a 200.
fn get_with(port: u16, header: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return "no connection".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ =
        s.write_all(format!("GET / HTTP/1.1\r\n{header}\r\nConnection: close\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    if out.starts_with("HTTP/1.1 200") {
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    } else {
        out.lines().next().unwrap_or("").to_string()
    }
}

#[test]
fn with_map_files_virtual_hosts_and_app_ids_route_and_follow_changes() {
    if !haproxy_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (http, appid) = (free_port(), free_port());
    let settings = Settings {
        http_bind: format!("127.0.0.1:{http}"),
        appid_bind: format!("127.0.0.1:{appid}"),
        stats_bind: format!("127.0.0.1:{}", free_port()),
        socket: dir.path().join("socket").display().to_string(),
        state_file: dir.path().join("state").display().to_string(),
        map_dir: Some(dir.path().display().to_string()),
        ..Settings::default()
    };
    let resolve = |h: &str| h.parse().ok();
    let (one, two) = (backend("one"), backend("two"));
    let doc = |two_host: &str| {
        let app = |id: &str, vhost: &str, port: u16| {
            json!({"id": id, "portDefinitions": [{"port": free_port()}],
                   "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": vhost},
                   "tasks": [{"id": format!("{id}.1"), "host": "127.0.0.1",
                              "state": "TASK_RUNNING", "ports": [port]}]})
        };
        json!({"apps": [app("/one", "one.example.com", one), app("/two", two_host, two)]})
    };
    let mut haproxy = Haproxy::new("haproxy", dir.path().join("haproxy.cfg"), &settings.socket);
    let (svcs, errors) = services(&doc("two.example.com"), &settings, &resolve);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(haproxy.apply(&svcs, &settings).unwrap(), Applied::Started);
    eventually("both hosts route through the map", || {
        get_with(http, "Host: one.example.com") == "one"
            && get_with(http, "Host: TWO.example.com:80") == "two"
    });
    assert_eq!(get_with(appid, "X-Marathon-App-Id: /two"), "two");
    assert!(get_with(http, "Host: nobody.example.com").contains("503"));
    // A virtual host changes: the map follows (with a reload).
    let (svcs, _) = services(&doc("deux.example.com"), &settings, &resolve);
    assert_eq!(haproxy.apply(&svcs, &settings).unwrap(), Applied::Reloaded);
    eventually("the new host routes", || {
        get_with(http, "Host: deux.example.com") == "two"
    });
    assert!(get_with(http, "Host: two.example.com").contains("503"));
    haproxy.stop();
}
