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

use crate::cluster::{agora_bin, missing};
use crate::marathon::eventually;

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
    let (status, body) = cluster
        .send(
            reqwest::Method::POST,
            standby,
            MARATHON_PORT,
            "/v2/apps",
            &app,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let task_ids: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let seen = std::sync::Mutex::new(BTreeSet::new());
    eventually("HAProxy has answered from every task", || async {
        if let Ok(r) = client
            .get(format!("http://{lb}/"))
            .header("connection", "close")
            .send()
            .await
            && let Ok(body) = r.text().await
        {
            seen.lock().unwrap().insert(body.trim().to_string());
        }
        (*seen.lock().unwrap() == task_ids).then_some(())
    })
    .await;

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
