//! `agora lb` with a real HAProxy (Debian's haproxy): apps reachable on their
//! service ports and virtual hosts, following scale changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::cluster::eventually;
use crate::cluster::{Cluster, free_port, missing};
use crate::marathon::Marathon;

fn haproxy_available() -> bool {
    let ok = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing("haproxy");
    }
    ok
}

/// The bodies of `n` requests to `url` (with `host` as the Host header).
async fn bodies(url: &str, host: Option<&str>, n: usize) -> BTreeSet<String> {
    let client = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let mut req = client.get(url).timeout(Duration::from_secs(2));
        if let Some(h) = host {
            req = req.header("Host", h);
        }
        if let Ok(r) = req.send().await
            && r.status().is_success()
            && let Ok(body) = r.text().await
        {
            seen.insert(body.trim().to_string());
        }
    }
    seen
}

/// A client loop, one request after another (keep-alive), counting what
/// failed and the bodies seen.
struct Requests {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: tokio::task::JoinHandle<(u32, Vec<String>, BTreeSet<String>)>,
}

impl Requests {
    fn start(url: &str) -> Requests {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = tokio::spawn({
            let stop = stop.clone();
            let url = url.to_string();
            async move {
                let client = reqwest::Client::new();
                let (mut ok, mut failed, mut seen) = (0u32, Vec::new(), BTreeSet::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client
                        .get(&url)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => match r.text().await {
                            Ok(body) if !body.trim().is_empty() => {
                                ok += 1;
                                seen.insert(body.trim().to_string());
                            }
                            Ok(_) => failed.push("an empty body".into()),
                            Err(e) => failed.push(format!("body: {e}")),
                        },
                        Ok(r) => failed.push(format!("HTTP {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (ok, failed, seen)
            }
        });
        Requests { stop, client }
    }

    /// Stops the loop and asserts that no request failed (and that there
    /// were enough to mean something); returns the bodies seen.
    async fn none_failed(self, what: &str) -> BTreeSet<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed, seen) = self.client.await.unwrap();
        eprintln!("{what}: {ok} requests answered, {} failed", failed.len());
        assert!(
            failed.is_empty(),
            "{what}: {} of {} requests failed: {failed:?}",
            failed.len(),
            ok as usize + failed.len()
        );
        assert!(ok > 50, "{what}: only {ok} requests");
        seen
    }
}

/// Two agents and marathon-rs, when HAProxy and busybox are installed.
async fn cluster_with_marathon() -> Option<(Cluster, Marathon)> {
    cluster_of(2).await
}

/// `n` agents and marathon-rs, when HAProxy and busybox are installed.
async fn cluster_of(n: usize) -> Option<(Cluster, Marathon)> {
    if !haproxy_available() {
        return None;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        missing("busybox-static (/bin/busybox)");
        return None;
    }
    let cluster = Cluster::start(n, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    Some((cluster, m))
}

/// `agora lb` running against marathon-rs, with its ports.
struct Lb {
    child: tokio::process::Child,
    http: u16,
    metrics: u16,
    _dir: tempfile::TempDir,
}

impl Lb {
    fn start(m: &Marathon) -> Lb {
        Self::start_with(m, &[])
    }

    /// With more `agora lb` flags.
    fn start_with(m: &Marathon, extra: &[String]) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let (http, stats, appid, metrics) = (free_port(), free_port(), free_port(), free_port());
        let child = tokio::process::Command::new(crate::cluster::agora_bin())
            .args(["lb", "--marathon", &m.url(""), "--resync", "2s"])
            .arg("--haproxy-config")
            .arg(dir.path().join("haproxy.cfg"))
            .arg("--socket")
            .arg(dir.path().join("run/socket"))
            .arg("--state-file")
            .arg(dir.path().join("state/global"))
            .args(["--bind-http-port", &http.to_string()])
            .args(["--stats-port", &stats.to_string()])
            .args(["--appid-port", &appid.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .args(extra)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Lb {
            child,
            http,
            metrics,
            _dir: dir,
        }
    }

    /// `/status`.
    async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("http://127.0.0.1:{}/status", self.metrics))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_serves_apps_by_service_port_and_vhost_and_follows_scaling() {
    let Some((cluster, m)) = cluster_with_marathon().await else {
        return;
    };
    let service = free_port();
    let app = json!({
        "id": "/lb/web", "cpus": 0.1, "mem": 16, "instances": 3,
        "cmd": "echo $MESOS_TASK_ID > index.html && exec /bin/busybox httpd -f -p 127.0.0.1:$PORT0 -h .",
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.example.com",
                   "HAPROXY_0_PORT": service.to_string()},
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "HTTP", "path": "/index.html", "portIndex": 0,
                          "delaySeconds": 0, "intervalSeconds": 1}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/web", 3).await;
    let lb = Lb::start(&m);
    let http = lb.http;
    let ids = m.running_ids("lb/web").await;
    // Through the service port: every healthy task takes its turn.
    let by_port = format!("http://127.0.0.1:{service}/index.html");
    eventually("all 3 tasks answer through the service port", || async {
        (bodies(&by_port, None, 9).await == ids).then_some(())
    })
    .await;
    // Through the virtual host on the HTTP frontend.
    let by_vhost = format!("http://127.0.0.1:{http}/index.html");
    assert_eq!(bodies(&by_vhost, Some("web.example.com"), 9).await, ids);
    assert!(
        bodies(&by_vhost, Some("other.example.com"), 2)
            .await
            .is_empty()
    );
    // Scaling to 4: the new task joins once it is healthy.
    let (status, _) = m
        .call("PUT", "/v2/apps/lb/web", Some(json!({"instances": 4})))
        .await;
    assert_eq!(status, 200);
    m.settled("lb/web", 4).await;
    let ids = m.running_ids("lb/web").await;
    eventually("all 4 tasks answer", || async {
        (bodies(&by_port, None, 12).await == ids).then_some(())
    })
    .await;
    // Without a reload: the new server took a spare slot through the
    // Runtime API.
    let status = lb.status().await;
    assert_eq!(status["reloads"], 0, "{status}");
    assert!(status["runtimeUpdates"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["servers"], 4, "{status}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", lb.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agora_lb_reloads_total 0"), "{metrics}");
    crate::cluster::promtool_accepts("agora lb", &metrics);
    lb.stop().await;
    m.stop().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_tasks_get_no_traffic_and_a_bad_label_leaves_the_others_served() {
    let Some((cluster, m)) = cluster_with_marathon().await else {
        return;
    };
    let sandboxes = tempfile::tempdir().unwrap();
    let service = free_port();
    // A COMMAND health check: HAProxy does not check these itself, so only
    // agora lb's reading of the health results keeps traffic away.
    let app = json!({
        "id": "/lb/flaky", "cpus": 0.1, "mem": 16, "instances": 3,
        "cmd": format!("echo $MESOS_TASK_ID > index.html && touch healthy && pwd > {}/$MESOS_TASK_ID && exec /bin/busybox httpd -f -p 127.0.0.1:$PORT0 -h .", sandboxes.path().display()),
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_PORT": service.to_string()},
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f healthy"},
                          "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "maxConsecutiveFailures": 0}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    let bad = json!({
        "id": "/lb/bad", "cpus": 0.1, "mem": 16, "instances": 1, "cmd": "sleep 600",
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "udp"},
        "portDefinitions": [{"port": 0}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(bad)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/flaky", 3).await;
    let lb = Lb::start(&m);
    let ids = m.running_ids("lb/flaky").await;
    let url = format!("http://127.0.0.1:{service}/index.html");
    eventually("all 3 healthy tasks answer", || async {
        (bodies(&url, None, 9).await == ids).then_some(())
    })
    .await;
    // The bad app is left out, named with its label; the others are served.
    let status = lb.status().await;
    let left_out = status["leftOut"].to_string();
    assert!(
        left_out.contains("/lb/bad") && left_out.contains("HAPROXY_0_MODE"),
        "{status}"
    );
    // One task turns unhealthy: it gets no more traffic.
    let sick = ids.iter().next().unwrap().clone();
    let sandbox = std::fs::read_to_string(sandboxes.path().join(&sick)).unwrap();
    std::fs::remove_file(std::path::Path::new(sandbox.trim()).join("healthy")).unwrap();
    let healthy: BTreeSet<String> = ids.iter().filter(|i| **i != sick).cloned().collect();
    eventually("only the 2 healthy tasks answer", || async {
        (bodies(&url, None, 6).await == healthy).then_some(())
    })
    .await;
    assert_eq!(bodies(&url, None, 20).await, healthy);
    // Healthy again: it is back.
    std::fs::write(std::path::Path::new(sandbox.trim()).join("healthy"), "").unwrap();
    eventually("all 3 answer again", || async {
        (bodies(&url, None, 9).await == ids).then_some(())
    })
    .await;
    let status = lb.status().await;
    assert_eq!(status["reloads"], 0, "{status}");
    assert!(status["runtimeUpdates"].as_u64().unwrap() >= 2, "{status}");
    lb.stop().await;
    m.stop().await;
    cluster.stop().await;
}

// busybox httpd dies at once on SIGTERM, even mid-response: a task behind
// agora lb drains by default (2 s here, from its 1 s health check), so each
// old task leaves HAProxy (on TASK_KILLING) before it is signalled; the app
// says nothing Agora-specific.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_continuous_requests_fails_none() {
    let Some((cluster, m)) = cluster_with_marathon().await else {
        return;
    };
    let service = free_port();
    let app = |version: &str| {
        json!({
            "id": "/lb/roll", "cpus": 0.1, "mem": 16, "instances": 3,
            "cmd": "echo $VERSION > index.html && exec /bin/busybox httpd -f -p 127.0.0.1:$PORT0 -h .",
            "env": {"VERSION": version},
            "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "roll.example.com",
                       "HAPROXY_0_PORT": service.to_string()},
            "portDefinitions": [{"port": 0}],
            "healthChecks": [{"protocol": "HTTP", "path": "/index.html", "portIndex": 0,
                              "gracePeriodSeconds": 5, "intervalSeconds": 1}]
        })
    };
    let (status, r) = m.call("POST", "/v2/apps", Some(app("v1"))).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/roll", 3).await;
    let lb = Lb::start(&m);
    let url = format!("http://127.0.0.1:{service}/index.html");
    eventually("v1 answers", || async {
        (bodies(&url, None, 3).await == BTreeSet::from(["v1".to_string()])).then_some(())
    })
    .await;
    // A client loop, one request after another, through the update.
    let requests = Requests::start(&url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = m.running_ids("lb/roll").await;
    let (status, r) = m.call("PUT", "/v2/apps/lb/roll", Some(app("v2"))).await;
    assert_eq!(status, 200, "{r}");
    m.settled("lb/roll", 3).await;
    assert!(m.running_ids("lb/roll").await.is_disjoint(&old));
    eventually("only v2 answers", || async {
        (bodies(&url, None, 6).await == BTreeSet::from(["v2".to_string()])).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = requests.none_failed("rolling update").await;
    assert_eq!(seen, BTreeSet::from(["v1".to_string(), "v2".to_string()]));
    // The whole update went through the Runtime API.
    let status = lb.status().await;
    assert_eq!(status["reloads"], 0, "{status}");
    lb.stop().await;
    m.stop().await;
    cluster.stop().await;
}

/// Draining an agent under load: marathon-rs accepts the drain's inverse
/// offer and moves the app's instances (replacements healthy before the
/// old copies go, as its upgradeStrategy says), agora lb takes each old
/// copy out before it is signalled: no request fails, and the agent ends
/// DRAINED with no task, every one of its tasks ended by marathon-rs and
/// none by the drain's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_agent_under_requests_fails_none() {
    let Some((cluster, m)) = cluster_of(3).await else {
        return;
    };
    let service = free_port();
    let app = json!({
        "id": "/lb/drain", "cpus": 0.1, "mem": 16, "instances": 6,
        "cmd": "hostname > index.html && exec /bin/busybox httpd -f -p 127.0.0.1:$PORT0 -h .",
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_PORT": service.to_string()},
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "path": "/index.html", "portIndex": 0,
                          "gracePeriodSeconds": 5, "intervalSeconds": 1}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/drain", 6).await;
    let lb = Lb::start(&m);
    let url = format!("http://127.0.0.1:{service}/index.html");
    eventually("the app answers", || async {
        (!bodies(&url, None, 3).await.is_empty()).then_some(())
    })
    .await;
    let requests = Requests::start(&url);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The agent with the most instances.
    let mut per_agent: std::collections::BTreeMap<String, usize> = Default::default();
    for t in m.tasks("lb/drain").await {
        *per_agent
            .entry(t["slaveId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let (agent, n) = per_agent.iter().max_by_key(|(_, n)| **n).unwrap();
    eprintln!("draining {agent}, which runs {n} of 6");
    let api = cluster.url("/api/v1");
    operator(
        &api,
        json!({"type": "DRAIN_AGENT", "drain_agent": {"agent_id": {"value": agent}}}),
    )
    .await;
    eventually("the agent is drained", || async {
        let agents = operator(&api, json!({"type": "GET_AGENTS"})).await;
        agents["get_agents"]["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["agent_info"]["id"]["value"] == agent.as_str()
                    && a["drain_info"]["state"] == "DRAINED"
            })
            .then_some(())
    })
    .await;
    m.settled("lb/drain", 6).await;
    let tasks = m.tasks("lb/drain").await;
    assert!(
        tasks.iter().all(|t| t["slaveId"] != agent.as_str()),
        "{tasks:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    requests.none_failed("drain").await;

    // The master ran nothing more there, and ended nothing for the drain.
    let state: serde_json::Value = reqwest::get(cluster.url("/master/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let framework = &state["frameworks"][0];
    assert!(
        framework["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["slave_id"] != agent.as_str())
    );
    let ended_there: Vec<&serde_json::Value> = framework["completed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["slave_id"] == agent.as_str())
        .collect();
    assert_eq!(ended_there.len(), *n, "{ended_there:?}");
    for t in ended_there {
        let last = t["statuses"].as_array().unwrap().last().unwrap();
        assert_ne!(last["reason"], "REASON_AGENT_DRAINING", "{t}");
    }
    lb.stop().await;
    m.stop().await;
    cluster.stop().await;
}

/// One operator API call that must succeed; its JSON answer.
async fn operator(api: &str, call: serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(api)
        .json(&call)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{call}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_default()
}

/// `curl -sk` through `port` as `host` (SNI and Host), with more `args`:
/// the status line's code, the headers and the body.
fn curl(host: &str, port: u16, path: &str, args: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-D", "-", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(args)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_sni_with_basic_auth_and_hsts() {
    let Some((cluster, m)) = cluster_with_marathon().await else {
        return;
    };
    let tools = ["openssl", "curl"].iter().all(|t| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok()
    });
    if !tools {
        missing("openssl and curl");
        return;
    }
    // A self-signed certificate, and a crypt(3) password for the label.
    let dir = tempfile::tempdir().unwrap();
    let (key, crt, pem) = (
        dir.path().join("key.pem"),
        dir.path().join("crt.pem"),
        dir.path().join("site.pem"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=secure.example.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut both = std::fs::read(&crt).unwrap();
    both.extend(std::fs::read(&key).unwrap());
    std::fs::write(&pem, both).unwrap();
    let hash = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", "agora", "s3cret"])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    let app = json!({
        "id": "/lb/secure", "cpus": 0.1, "mem": 16, "instances": 1,
        "cmd": "echo $MESOS_TASK_ID > index.html && exec /bin/busybox httpd -f -p 127.0.0.1:$PORT0 -h .",
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "secure.example.com",
                   "HAPROXY_0_AUTH": format!("Staff only:admin:{hash}"),
                   "HAPROXY_0_USE_HSTS": "true", "HAPROXY_0_PORT": free_port().to_string()},
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "path": "/index.html", "portIndex": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 1}]
    });
    let (status, r) = m.call("POST", "/v2/apps", Some(app)).await;
    assert_eq!(status, 201, "{r}");
    m.settled("lb/secure", 1).await;
    let https = free_port();
    let lb = Lb::start_with(
        &m,
        &[
            "--bind-https-port".into(),
            https.to_string(),
            "--ssl-certs".into(),
            pem.display().to_string(),
        ],
    );
    let ids = m.running_ids("lb/secure").await;
    let id = ids.iter().next().unwrap().clone();
    // TLS by SNI: without the user, 401 asking for the realm.
    let (code, head) = eventually("the HTTPS frontend answers", || async {
        let (code, head, _) = curl("secure.example.com", https, "/index.html", &[]);
        (code == 401).then_some((code, head))
    })
    .await;
    assert_eq!(code, 401);
    assert!(head.contains("Staff only"), "{head}");
    // With it: the task answers, with HSTS.
    let (code, head, body) = curl(
        "secure.example.com",
        https,
        "/index.html",
        &["-u", "admin:s3cret"],
    );
    assert_eq!((code, body.as_str()), (200, id.as_str()), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{head}"
    );
    // A wrong password is refused.
    let (code, _, _) = curl(
        "secure.example.com",
        https,
        "/index.html",
        &["-u", "admin:nope"],
    );
    assert_eq!(code, 401);
    lb.stop().await;
    m.stop().await;
    cluster.stop().await;
}
