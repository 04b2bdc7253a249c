//! Every component on its own host: hosts are network namespaces this test
//! makes (agora-testbed), each with its own address and name; a ZooKeeper
//! ensemble of 3, 3 masters, 6 agents, 2 marathon-rs, agora dns and agora
//! lb with HAProxy, all real processes, secured as `agora dev` is. Checked
//! from a client host: Marathon tasks spread over the agents with the
//! agents' own addresses, `dig` finds them, HAProxy reaches every one, and
//! pymesos (unmodified, finding the master through ZooKeeper) runs a task
//! on every agent.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_testbed::cluster::{DNS_PORT, MARATHON_PORT, MASTER_PORT};
use agora_testbed::{Cluster, Layout};
use serde_json::{Value, json};

use crate::cluster::eventually;
use crate::cluster::{agora_bin, missing};

/// Held by each test that runs a testbed cluster: one at a time, as
/// twenty processes and three JVMs each already fill two cores.
pub(crate) async fn one_testbed() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

/// A testbed cluster of `layout`, named for this process; None (skipped,
/// or a failure under AGORA_REQUIRE_ALL) where hosts cannot be made.
pub(crate) async fn testbed(layout: Layout, dir: &std::path::Path) -> Option<Cluster> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "agora-t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    match Cluster::start(layout, &prefix, &agora_bin(), dir).await {
        Ok(c) => Some(c),
        Err(
            e @ (agora_testbed::cluster::ClusterError::Missing(_)
            | agora_testbed::cluster::ClusterError::Net(
                agora_testbed::net::NetError::Unavailable(_),
            )),
        ) => {
            missing(&format!("a multi-host testbed: {e}"));
            None
        }
        Err(e) => panic!("the testbed cluster did not start: {e}"),
    }
}

/// POSTs `app` to marathon-rs on `host`, which must create it. A
/// connection cut before the answer (a loaded testbed host; a leader
/// stepping down) is retried, as Marathon clients retry; an app that the
/// cut request did create then answers 409.
pub(crate) async fn post_app(cluster: &Cluster, host: &str, app: &Value) {
    let mut cut = None;
    for _ in 0..3 {
        match cluster
            .send(reqwest::Method::POST, host, MARATHON_PORT, "/v2/apps", app)
            .await
        {
            Ok((status, body)) => {
                let created_before = status == 409 && cut.is_some();
                assert!(status == 201 || created_before, "{status} {body}");
                return;
            }
            Err(e) => {
                cut = Some(e);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    panic!("POST /v2/apps on {host}: {cut:?}");
}

/// Asks HAProxy at `lb` for `/` until each of `ids` (the tasks, which
/// answer with their id) has answered.
pub(crate) async fn every_task_answers(lb: std::net::SocketAddr, ids: &BTreeSet<String>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let seen = std::sync::Mutex::new(BTreeSet::new());
    eventually("HAProxy to answer from every task", || async {
        if let Ok(r) = client
            .get(format!("http://{lb}/"))
            .header("connection", "close")
            .send()
            .await
            && let Ok(body) = r.text().await
        {
            seen.lock().unwrap().insert(body.trim().to_string());
        }
        (*seen.lock().unwrap() == *ids).then_some(())
    })
    .await;
}

/// `dig +short name` from `host`, against agora dns on its host (sorted).
fn dig_from(cluster: &Cluster, host: &str, name: &str) -> Vec<String> {
    let out = cluster
        .network()
        .exec(
            host,
            "dig",
            &[
                "@dns",
                "-p",
                &DNS_PORT.to_string(),
                "+short",
                "+time=2",
                "+tries=1",
                name,
            ],
        )
        .unwrap_or_default();
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_on_its_own_host() {
    let _hosts = one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        agents: 6,
        ..Layout::default()
    };
    let Some(cluster) = testbed(layout, dir.path()).await else {
        return;
    };
    let net = cluster.network();
    let agent_addrs: BTreeSet<String> = (1..=6)
        .map(|i| net.host(&format!("agent{i}")).unwrap().addr.to_string())
        .collect();

    // One master leads; the others know it. Every agent registered with
    // its own name and address.
    let leader = cluster.leading_master().await.expect("a leading master");
    let state = cluster.master_state().await.unwrap();
    let mut agents: Vec<(String, String)> = state["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["hostname"].as_str().unwrap().to_string(),
                s["pid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    agents.sort();
    assert_eq!(agents.len(), 6, "{agents:?}");
    for (i, (name, pid)) in agents.iter().enumerate() {
        let addr = net.host(name).unwrap().addr;
        assert_eq!(name, &format!("agent{}", i + 1));
        assert!(pid.ends_with(&format!("@{addr}:5051")), "{name}: {pid}");
    }
    for i in 1..=3 {
        let host = format!("master{i}");
        if host == leader {
            continue;
        }
        let (status, location) = cluster
            .location(&host, MASTER_PORT, "/master/state")
            .await
            .unwrap();
        assert_eq!(status, 307, "{host} is a standby");
        assert_eq!(
            location.as_deref(),
            Some(format!("//{leader}:{MASTER_PORT}/master/state").as_str()),
            "{host} redirects to the leader by name"
        );
    }

    // A Marathon app of 6 instances, one per agent, created through the
    // standby marathon-rs (which forwards to the leader), load balanced.
    let app = json!({
        "id": "/web",
        "cmd": "mkdir -p www && echo \"$MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p $PORT0 -h www",
        "cpus": 0.1,
        "mem": 32,
        "instances": 6,
        "constraints": [["hostname", "UNIQUE"]],
        "portDefinitions": [{"port": 10000, "protocol": "tcp"}],
        "labels": {"HAPROXY_GROUP": "external"},
    });
    let marathon = eventually("a marathon-rs leads", || async {
        for m in ["marathon1", "marathon2"] {
            if let Ok((200, v)) = cluster.get(m, MARATHON_PORT, "/v2/leader").await
                && let Some(l) = v["leader"].as_str()
            {
                return Some(l.split(':').next().unwrap_or_default().to_string());
            }
        }
        None
    })
    .await;
    let standby = if marathon == "marathon1" {
        "marathon2"
    } else {
        "marathon1"
    };
    post_app(&cluster, standby, &app).await;
    let tasks: Vec<Value> = eventually("6 tasks of /web run", || async {
        let (_, v) = cluster
            .get(marathon.as_str(), MARATHON_PORT, "/v2/apps/web/tasks")
            .await
            .ok()?;
        let tasks = v["tasks"].as_array()?.clone();
        let running = tasks
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .count();
        (running == 6).then_some(tasks)
    })
    .await;
    let mut hosts = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for t in &tasks {
        let host = t["host"].as_str().unwrap();
        let ip = t["ipAddresses"][0]["ipAddress"].as_str().unwrap_or("none");
        assert_eq!(
            ip,
            net.host(host).unwrap().addr.to_string(),
            "task {} on {host}: {t}",
            t["id"]
        );
        hosts.insert(host.to_string());
        ips.insert(ip.to_string());
    }
    assert_eq!(hosts.len(), 6, "one instance per agent: {hosts:?}");
    assert_eq!(ips, agent_addrs);

    // agora dns, on its host, answers a client host with those addresses.
    let found = eventually("dig finds the 6 tasks", || async {
        let a = dig_from(&cluster, "client1", "web.marathon.mesos");
        (a.len() == 6).then_some(a)
    })
    .await;
    assert_eq!(found.into_iter().collect::<BTreeSet<_>>(), agent_addrs);

    // HAProxy on the lb host reaches every task by the service port.
    let lb = cluster.forward("lb", 10000).await.unwrap();
    let task_ids: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    every_task_answers(lb, &task_ids).await;

    // pymesos, unmodified, on the client host: finds the leading master
    // through ZooKeeper and runs one task on each agent.
    let Some(python) = crate::pymesos::python() else {
        return missing("pymesos in .venv (run tests/python/setup-venv.sh)");
    };
    let cmd = net.command("client1", &python).unwrap();
    let (_, secret) = cluster.admin();
    let summary = crate::pymesos::run_scheduler_in(
        cmd,
        &cluster.zk_url("mesos"),
        "spread",
        6,
        Some(("admin", &secret)),
    )
    .await;
    let ran_on: BTreeSet<&str> = summary["hosts"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ran_on.len(), 6, "{summary}");
    for (task, states) in summary["states"].as_object().unwrap() {
        assert_eq!(
            states.as_array().unwrap().last().unwrap(),
            "TASK_FINISHED",
            "{task}: {states}"
        );
    }
}

/// A Marathon app behind agora lb, as users wrote them for marathon-lb
/// (`HAPROXY_*` labels and a health check, nothing Agora-specific), whose
/// server dies at once on SIGTERM: a rolling update, a scale-down and a
/// restart under 4 keep-alive clients through HAProxy on the lb host fail
/// no request, because tasks behind the load balancer drain before they
/// are signalled by default. (With `"AGORA_SHUTDOWN_DELAY": "0"` on the
/// app, a few requests in 60,000 fail with 503.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balanced_app_loses_no_request_through_updates() {
    let _hosts = one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        dns: false,
        ..Layout::default()
    };
    let Some(cluster) = testbed(layout, dir.path()).await else {
        return;
    };
    let app = |version: &str, instances: u32| {
        json!({
            "id": "/shop", "cpus": 0.1, "mem": 16, "instances": instances,
            // busybox httpd exits on SIGTERM mid-response.
            "cmd": "echo $VERSION > index.html && exec busybox httpd -f -p $PORT0 -h .",
            "env": {"VERSION": version},
            "labels": {"HAPROXY_GROUP": "external"},
            "portDefinitions": [{"port": 10001}],
            "healthChecks": [{"protocol": "HTTP", "path": "/index.html", "portIndex": 0,
                              "gracePeriodSeconds": 5, "intervalSeconds": 1}]
        })
    };
    let marathon = eventually("a marathon-rs leads", || {
        crate::faults::marathon_leader(&cluster)
    })
    .await;
    let send = |method: reqwest::Method, path: &'static str, body: Value| {
        let (cluster, marathon) = (&cluster, marathon.clone());
        async move {
            let (status, r) = cluster
                .send(method, &marathon, MARATHON_PORT, path, &body)
                .await
                .unwrap();
            assert!(status < 300, "{path}: {status} {r}");
        }
    };
    let settled = |version: &'static str, n: usize| {
        let (cluster, marathon) = (&cluster, marathon.clone());
        async move {
            eventually(
                &format!("{n} healthy {version} instances, no deployment"),
                || async {
                    let (_, d) = cluster
                        .get(&marathon, MARATHON_PORT, "/v2/deployments")
                        .await
                        .ok()?;
                    let (_, a) = cluster
                        .get(&marathon, MARATHON_PORT, "/v2/apps/shop")
                        .await
                        .ok()?;
                    let app = &a["app"];
                    let done = d.as_array()?.is_empty()
                        && app["tasksHealthy"].as_u64() == Some(n as u64)
                        && app["tasksRunning"].as_u64() == Some(n as u64)
                        && app["env"]["VERSION"] == version;
                    done.then_some(())
                },
            )
            .await;
        }
    };
    send(reqwest::Method::POST, "/v2/apps", app("v1", 3)).await;
    settled("v1", 3).await;
    let lb = cluster.forward("lb", 10001).await.unwrap();
    let url = format!("http://{lb}/index.html");
    eventually("HAProxy serves v1", || async {
        let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
        (body.trim() == "v1").then_some(())
    })
    .await;

    // 4 keep-alive clients, one request after another each.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url, answered) = (stop.clone(), url.clone(), answered.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    answered.fetch_add(1, Ordering::Relaxed);
                    // As HTTP clients do, a GET whose kept-alive connection
                    // was closed under it (HAProxy's idle timeout racing the
                    // request) is sent again once; any HTTP answer counts.
                    let sent = match client.get(&url).send().await {
                        Err(e) if e.is_request() || e.is_connect() => client.get(&url).send().await,
                        other => other,
                    };
                    match sent {
                        Ok(r) if r.status().is_success() => match r.text().await {
                            Ok(body) if !body.trim().is_empty() => ok += 1,
                            Ok(_) => failed.push("an empty body".to_string()),
                            Err(e) => failed.push(format!("body: {e}")),
                        },
                        Ok(r) => failed.push(format!("HTTP {}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A rolling update, a scale-down, a restart.
    send(reqwest::Method::PUT, "/v2/apps/shop", app("v2", 3)).await;
    settled("v2", 3).await;
    send(reqwest::Method::PUT, "/v2/apps/shop", app("v2", 2)).await;
    settled("v2", 2).await;
    send(reqwest::Method::POST, "/v2/apps/shop/restart", json!({})).await;
    settled("v2", 2).await;
    // At least 20,000 requests in all: the clients keep going until then.
    eventually("20,000 requests made", || async {
        (answered.load(Ordering::Relaxed) >= 20_000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "FIGURES behind agora lb: {ok} requests answered, {} failed, through a rolling update, a scale-down and a restart",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok >= 20_000, "only {ok} requests");
}

/// agora lb follows marathon-rs' HA pair (`--marathon` takes both): with
/// the marathon-rs it was following killed, it follows the other and still
/// sees the app scale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_lb_follows_the_other_marathon_when_one_dies() {
    let _hosts = one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        dns: false,
        ..Layout::default()
    };
    let Some(cluster) = testbed(layout, dir.path()).await else {
        return;
    };
    let app = |instances: u32| {
        json!({
            "id": "/echo", "cpus": 0.1, "mem": 16, "instances": instances,
            "cmd": "mkdir -p www && echo \"$MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p $PORT0 -h www",
            "labels": {"HAPROXY_GROUP": "external"},
            "portDefinitions": [{"port": 10003}],
        })
    };
    let leader = eventually("a marathon-rs leads", || {
        crate::faults::marathon_leader(&cluster)
    })
    .await;
    let (status, body) = cluster
        .send(
            reqwest::Method::POST,
            &leader,
            MARATHON_PORT,
            "/v2/apps",
            &app(1),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let lb = cluster.forward("lb", 10003).await.unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let served = |n: usize| {
        let (client, url) = (client.clone(), format!("http://{lb}/"));
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..(4 * n) {
                let r = client
                    .get(&url)
                    .header("connection", "close")
                    .send()
                    .await
                    .ok()?;
                seen.insert(r.text().await.ok()?.trim().to_string());
            }
            (seen.len() == n).then_some(seen)
        }
    };
    eventually("HAProxy serves the one instance", || served(1)).await;
    // agora lb followed marathon1 first; it dies (whether or not it led).
    cluster.kill_host("marathon1").await.unwrap();
    let leader = eventually("marathon2 leads", || async {
        crate::faults::marathon_leader(&cluster)
            .await
            .filter(|l| l == "marathon2")
    })
    .await;
    // The new leader may still be loading its state: a PUT it cannot take
    // yet fails or times out, and is sent again.
    eventually("marathon2 scales the app", || async {
        let (status, _) = cluster
            .send(
                reqwest::Method::PUT,
                &leader,
                MARATHON_PORT,
                "/v2/apps/echo",
                &app(3),
            )
            .await
            .ok()?;
        (status == 200).then_some(())
    })
    .await;
    eventually("HAProxy serves the 3 instances", || served(3)).await;
}
