//! `agora lb` with a real HAProxy (Debian's haproxy): apps reachable on their
//! service ports and virtual hosts, following scale changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::cluster::{Cluster, free_port, missing};
use crate::marathon::{Marathon, eventually};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_serves_apps_by_service_port_and_vhost_and_follows_scaling() {
    if !haproxy_available() {
        return;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        return missing("busybox-static (/bin/busybox)");
    }
    let cluster = Cluster::start(2, "cpus:4;mem:4096").await;
    let m = Marathon::start(&cluster).await;
    let (service, http, stats, appid) = (free_port(), free_port(), free_port(), free_port());
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
    let dir = tempfile::tempdir().unwrap();
    let mut lb = tokio::process::Command::new(crate::cluster::agora_bin())
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
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lb.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), lb.wait()).await;
    m.stop().await;
    cluster.stop().await;
}
