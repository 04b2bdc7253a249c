//! `agora bench lb`: what `agora lb` costs at 1,000 to 33,000 backend
//! servers, with a real HAProxy.
//!
//! The servers are apps of 10 tasks each (http mode, a virtual host per
//! app, frontends on 127.0.0.1), on addresses nothing listens on (HAProxy
//! has no checks to run against them). Per size:
//!
//! - render: the apps document parsed (as fetched), services, the askama
//!   render;
//! - `haproxy -c` alone on the rendered file (the floor of any reload);
//! - a structural change (one app's balance label) applied: render, check,
//!   swap, reload, until the new worker answers on the admin socket;
//! - a server-set change (one task of one app replaced) applied through the
//!   Runtime API: the document parsed, services, diff, commands, file
//!   rewrite;
//! - Runtime API throughput: one task of every app replaced at once.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use agora_lb::Settings;
use agora_lb::haproxy::{Applied, Haproxy};
use anyhow::Context as _;
use serde_json::{Value, json};

const PER_APP: usize = 10;

/// The apps document for `apps` apps; `generation[i]` shifts the ports of
/// app `i`'s first task (a replaced task), `balance` is app 0's label.
fn document(apps: usize, generation: &[u32], balance: &str) -> Value {
    let apps: Vec<Value> = (0..apps)
        .map(|i| {
            let tasks: Vec<Value> = (0..PER_APP)
                .map(|k| {
                    let port = 31000 + k as u32 + if k == 0 { 100 * generation[i] } else { 0 };
                    json!({"id": format!("app-{i}.{k}"), "host": format!("10.{}.{}.{}", i / 250, i % 250, k + 1),
                           "state": "TASK_RUNNING", "ports": [port]})
                })
                .collect();
            let mut labels = json!({"HAPROXY_GROUP": "external",
                                    "HAPROXY_0_VHOST": format!("app-{i}.example.com"),
                                    "HAPROXY_0_BIND_ADDR": "127.0.0.1"});
            if i == 0 {
                labels["HAPROXY_0_BALANCE"] = json!(balance);
            }
            json!({"id": format!("/bench/app-{i}"), "labels": labels,
                   "portDefinitions": [{"port": 20000 + i}], "tasks": tasks})
        })
        .collect();
    json!({ "apps": apps })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(sizes: &[usize], changes: usize) -> anyhow::Result<()> {
    let version = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .context("haproxy is not installed (apt-get install haproxy)")?;
    let version = String::from_utf8_lossy(&version.stdout);
    println!("{}", version.lines().next().unwrap_or("haproxy"));
    println!(
        "{:>8} {:>6} {:>10} {:>10} {:>11} {:>12} {:>12} {:>12} {:>12}",
        "servers",
        "apps",
        "render ms",
        "check ms",
        "reload ms",
        "change p50",
        "change max",
        "all-apps ms",
        "cmds/s"
    );
    for &servers in sizes {
        one_size(servers, changes)?;
    }
    Ok(())
}

/// Settings with frontends on free local ports, files under `dir`.
fn bench_settings(dir: &std::path::Path) -> anyhow::Result<Settings> {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| format!("127.0.0.1:{}", a.port()))
            .context("no free port on 127.0.0.1")
    };
    Ok(Settings {
        group: "external".into(),
        http_bind: free()?,
        appid_bind: free()?,
        stats_bind: free()?,
        https_bind: free()?,
        ssl_certs: Vec::new(),
        map_dir: None,
        socket: dir.join("socket").display().to_string(),
        state_file: dir.join("state").display().to_string(),
        templates: agora_lb::Templates::default(),
    })
}

/// Render times (5 runs) and `haproxy -c` times (3 runs) of `apps` apps.
fn render_and_check(
    apps: usize,
    settings: &Settings,
    haproxy: &Haproxy,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let resolve = |h: &str| h.parse::<IpAddr>().ok();
    let mut renders = Vec::new();
    let body = serde_json::to_vec(&document(apps, &vec![0; apps], "roundrobin"))?;
    for _ in 0..5 {
        let t = Instant::now();
        let doc: Value = serde_json::from_slice(&body)?;
        let (svcs, _) = agora_lb::services(&doc, settings, &resolve);
        let text = agora_lb::render(&svcs, settings)?;
        renders.push(t.elapsed());
        std::hint::black_box(text);
    }
    let doc: Value = serde_json::from_slice(&body)?;
    let (svcs, errors) = agora_lb::services(&doc, settings, &resolve);
    anyhow::ensure!(errors.is_empty(), "bench apps rejected: {errors:?}");
    let file = dir.join("check.cfg");
    std::fs::write(&file, agora_lb::render(&svcs, settings)?)?;
    let mut checks = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        haproxy.check(&file)?;
        checks.push(t.elapsed());
    }
    Ok((renders, checks))
}

/// One row of the table: `servers` servers, `changes` single-task changes.
fn one_size(servers: usize, changes: usize) -> anyhow::Result<()> {
    let apps = servers.div_ceil(PER_APP);
    let dir = tempfile::tempdir()?;
    let settings = bench_settings(dir.path())?;
    let resolve = |h: &str| h.parse::<IpAddr>().ok();
    let mut generation = vec![0u32; apps];
    let mut haproxy = Haproxy::new("haproxy", dir.path().join("haproxy.cfg"), &settings.socket);
    let (renders, checks) = render_and_check(apps, &settings, &haproxy, dir.path())?;

    // Applies the apps document `generation` and `balance` give, as
    // `agora lb` would from a fetched body; what it did and how long.
    let apply = |haproxy: &mut Haproxy,
                 generation: &[u32],
                 balance: &str|
     -> anyhow::Result<(Applied, Duration)> {
        let body = serde_json::to_vec(&document(apps, generation, balance))?;
        let t = Instant::now();
        let doc: Value = serde_json::from_slice(&body)?;
        let (svcs, _) = agora_lb::services(&doc, &settings, &resolve);
        let applied = haproxy
            .apply(&svcs, &settings)
            .map_err(anyhow::Error::msg)?;
        Ok((applied, t.elapsed()))
    };

    // Start, then structural changes (reloads).
    let (started, _) = apply(&mut haproxy, &generation, "roundrobin")?;
    anyhow::ensure!(started == Applied::Started, "HAProxy did not start");
    let mut reloads = Vec::new();
    for (round, balance) in ["leastconn", "roundrobin", "leastconn"].iter().enumerate() {
        let (applied, took) = apply(&mut haproxy, &generation, balance)?;
        reloads.push(took);
        anyhow::ensure!(
            applied == Applied::Reloaded,
            "round {round}: {applied:?}, not a reload"
        );
    }
    let balance = "leastconn";

    // One task of one app replaced, `changes` times (Runtime API).
    let mut one = Vec::new();
    for round in 0..changes {
        generation[(round * 7919) % apps] += 1;
        let (applied, took) = apply(&mut haproxy, &generation, balance)?;
        one.push(took);
        anyhow::ensure!(
            matches!(applied, Applied::Runtime(_)),
            "a server change was {applied:?}, not a Runtime API update"
        );
    }
    let one_max = one.iter().max().copied().unwrap_or_default();

    // One task of every app replaced at once.
    for g in &mut generation {
        *g += 1;
    }
    let before = haproxy.stats.runtime_commands;
    let (applied, all) = apply(&mut haproxy, &generation, balance)?;
    anyhow::ensure!(
        matches!(applied, Applied::Runtime(_)),
        "replacing a task of every app was {applied:?}"
    );
    let commands = haproxy.stats.runtime_commands - before;
    haproxy.stop();
    println!(
        "{servers:>8} {apps:>6} {:>10.1} {:>10.1} {:>11.1} {:>12.2} {:>12.2} {:>12.1} {:>12.0}",
        ms(median(renders)),
        ms(median(checks)),
        ms(median(reloads)),
        ms(median(one)),
        ms(one_max),
        ms(all),
        commands as f64 / all.as_secs_f64()
    );
    Ok(())
}

/// A local HTTP server answering every request with a fixed 200, one
/// thread per connection; its port.
fn responder() -> anyhow::Result<u16> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
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
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    Ok(port)
}

/// Request latency through HAProxy's HTTP frontend with `vhosts` virtual
/// hosts, routed by one ACL per host (marathon-lb's default) and by
/// `--haproxy-map`: `requests` requests, each for a host drawn at random,
/// one connection each, against one local responder behind every backend.
pub fn routing(vhosts: &[usize], requests: usize) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let upstream = responder()?;
    println!();
    println!(
        "{:>8} {:>6} {:>10} {:>10} {:>10}",
        "vhosts", "mode", "p50 µs", "p99 µs", "non-200"
    );
    for &n in vhosts {
        for map in [false, true] {
            let dir = tempfile::tempdir()?;
            let http = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let free = || -> anyhow::Result<String> {
                let p = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                Ok(format!("127.0.0.1:{p}"))
            };
            let settings = Settings {
                http_bind: format!("127.0.0.1:{http}"),
                appid_bind: free()?,
                stats_bind: free()?,
                map_dir: map.then(|| dir.path().display().to_string()),
                socket: dir.path().join("socket").display().to_string(),
                state_file: dir.path().join("state").display().to_string(),
                ..Settings::default()
            };
            let apps: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"id": format!("/r/app-{i}"),
                           "labels": {"HAPROXY_GROUP": "external",
                                      "HAPROXY_0_VHOST": format!("app-{i}.example.com"),
                                      "HAPROXY_0_BIND_ADDR": "127.0.0.1"},
                           "portDefinitions": [{"port": 20000 + i}],
                           "tasks": [{"id": format!("app-{i}.1"), "host": "127.0.0.1",
                                      "state": "TASK_RUNNING", "ports": [upstream]}]})
                })
                .collect();
            let resolve = |h: &str| h.parse::<IpAddr>().ok();
            let (svcs, errors) = agora_lb::services(&json!({ "apps": apps }), &settings, &resolve);
            anyhow::ensure!(errors.is_empty(), "bench apps rejected: {errors:?}");
            let mut haproxy =
                Haproxy::new("haproxy", dir.path().join("haproxy.cfg"), &settings.socket);
            haproxy
                .apply(&svcs, &settings)
                .map_err(anyhow::Error::msg)?;
            let get = |host: &str| -> Option<bool> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                s.write_all(
                    format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .ok()?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).ok()?;
                Some(out.starts_with(b"HTTP/1.1 200"))
            };
            // Wait until it serves, then warm up.
            let ready = Instant::now();
            while get("app-0.example.com") != Some(true) {
                anyhow::ensure!(
                    ready.elapsed() < Duration::from_secs(30),
                    "HAProxy never served"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut lat = Vec::with_capacity(requests);
            let mut failed = 0;
            for _ in 0..requests {
                let host = format!("app-{}.example.com", fastrand::usize(..n));
                let t = Instant::now();
                if get(&host) != Some(true) {
                    failed += 1;
                }
                lat.push(t.elapsed());
            }
            haproxy.stop();
            lat.sort();
            let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
            println!(
                "{:>8} {:>6} {:>10.0} {:>10.0} {:>10}",
                n,
                if map { "map" } else { "acl" },
                p(0.5),
                p(0.99),
                failed
            );
        }
    }
    Ok(())
}
