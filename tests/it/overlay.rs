//! The overlay network on hosts of their own (issue 16): with
//! `--overlay-cidr`, each agent gets a subnet from the master and sets up
//! the VXLAN device, its bridge and a route, neighbour and forwarding entry
//! per other agent; hosts reach each other's subnets through it, and an
//! agent restarted with the same work dir keeps its subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agora_testbed::{Cluster, Layout};

use crate::cluster::eventually;
use crate::hosts::{every_task_answers, one_testbed, post_app, testbed};

/// One master (no ZooKeeper) with the overlay over 10.200.0.0/16 and three
/// agents, nothing else unless `more` adds it.
fn overlay_layout(more: impl FnOnce(&mut Layout)) -> Layout {
    let mut layout = Layout {
        zookeepers: 0,
        masters: 1,
        agents: 3,
        marathons: 0,
        dns: false,
        lb: false,
        master_flags: vec!["--overlay-cidr".into(), "10.200.0.0/16".into()],
        ..Layout::default()
    };
    more(&mut layout);
    layout
}

/// A cluster of `overlay_layout(more)`, the only testbed running: (the
/// testbed lock, its directory, the cluster), dropped in the reverse
/// order; None when it cannot run here.
async fn overlay_cluster(
    more: impl FnOnce(&mut Layout),
) -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    Cluster,
)> {
    let hosts = one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = testbed(overlay_layout(more), dir.path()).await?;
    Some((hosts, dir, cluster))
}

/// Whether Debian's CNI plugins are installed (else it says so).
fn cni_plugins() -> bool {
    let there = std::path::Path::new("/usr/lib/cni/bridge").exists();
    if !there {
        crate::cluster::missing("the CNI plugins (apt-get install containernetworking-plugins)");
    }
    there
}

/// The address of `host`'s overlay bridge (`10.200.x.1/25`), once it has one.
fn bridge_address(cluster: &Cluster, host: &str) -> Option<String> {
    let out = cluster
        .network()
        .exec(host, "ip", &["-j", "-4", "addr", "show", "dev", "ag-agora"])
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let a = &v[0]["addr_info"][0];
    Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"]))
}

/// The subnets `host` routes through the VXLAN device.
fn vxlan_routes(cluster: &Cluster, host: &str) -> Vec<String> {
    let out = cluster
        .network()
        .exec(host, "ip", &["-j", "-4", "route", "show", "dev", "agora.1"])
        .unwrap_or_default();
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    let mut routes: Vec<String> = v
        .iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect();
    routes.sort();
    routes
}

/// Whether `from` gets an answer to one ping of `to`.
fn pings(cluster: &Cluster, from: &str, to: &str) -> bool {
    cluster
        .network()
        .exec(from, "busybox", &["ping", "-c", "1", "-W", "2", to])
        .is_ok()
}

/// Every agent's bridge address, once all three have one and route to the
/// two others' subnets.
async fn overlay_ready(cluster: &Cluster) -> BTreeMap<String, String> {
    eventually("every agent's overlay to be set up", || async {
        let mut bridges = BTreeMap::new();
        for i in 1..=3 {
            let host = format!("agent{i}");
            let bridge = bridge_address(cluster, &host)?;
            if vxlan_routes(cluster, &host).len() != 2 {
                return None;
            }
            bridges.insert(host, bridge);
        }
        Some(bridges)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reach_each_others_subnets_over_vxlan() {
    let Some((_hosts, _dir, cluster)) = overlay_cluster(|_| {}).await else {
        return;
    };
    let bridges = overlay_ready(&cluster).await;
    // Three subnets of the range, one per agent, each bridge on the first
    // address of its subnet's first half.
    let mut subnets: Vec<&str> = bridges.values().map(String::as_str).collect();
    subnets.sort();
    assert_eq!(
        subnets,
        ["10.200.0.1/25", "10.200.1.1/25", "10.200.2.1/25"],
        "{}",
        cluster.describe()
    );
    // Each routes the two others' /24s through the VXLAN device, whose MTU
    // leaves room for the encapsulation.
    for (host, bridge) in &bridges {
        let own = format!("{}.0/24", bridge.rsplit_once('.').unwrap().0);
        let mut others: Vec<String> = subnets
            .iter()
            .map(|s| format!("{}.0/24", s.rsplit_once('.').unwrap().0))
            .filter(|s| *s != own)
            .collect();
        others.sort();
        assert_eq!(vxlan_routes(&cluster, host), others, "{host}");
    }
    let link = cluster
        .network()
        .exec(
            "agent1",
            "ip",
            &["-j", "-d", "link", "show", "dev", "agora.1"],
        )
        .unwrap();
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["mtu"], 1450, "{link}");
    assert_eq!(link[0]["linkinfo"]["info_data"]["id"], 1, "{link}");
    assert_eq!(link[0]["linkinfo"]["info_data"]["port"], 4789, "{link}");

    // Every agent reaches every other agent's bridge through the overlay.
    let ip = |h: &str| bridges[h].split('/').next().unwrap().to_string();
    for from in bridges.keys() {
        for to in bridges.keys().filter(|t| *t != from) {
            assert!(
                pings(&cluster, from, &ip(to)),
                "{from} does not reach {to}'s bridge {}",
                ip(to)
            );
        }
    }

    // An agent killed and started again (same work dir) keeps its subnet,
    // and the overlay works as before.
    let before = bridges["agent2"].clone();
    cluster.kill_host("agent2").await.unwrap();
    cluster.start_host("agent2").unwrap();
    let again = overlay_ready(&cluster).await;
    assert_eq!(again["agent2"], before);
    eventually("agent1 to reach agent2 again", || async {
        pings(&cluster, "agent1", &ip("agent2")).then_some(())
    })
    .await;
    assert!(pings(&cluster, "agent2", &ip("agent3")));

    // An agent marked gone: the others forget its subnet, and it removes
    // its devices.
    let state = cluster.master_state().await.unwrap();
    let agent3 = state["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == "agent3")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let call = serde_json::json!({"type": "MARK_AGENT_GONE",
                                  "mark_agent_gone": {"agent_id": {"value": agent3}}});
    let (status, body) = cluster
        .send(
            reqwest::Method::POST,
            "master1",
            agora_testbed::cluster::MASTER_PORT,
            "/api/v1",
            &call,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    eventually("the others to drop agent3's route", || async {
        (vxlan_routes(&cluster, "agent1").len() == 1 && vxlan_routes(&cluster, "agent2").len() == 1)
            .then_some(())
    })
    .await;
    eventually("agent3 to remove its devices", || async {
        bridge_address(&cluster, "agent3").is_none().then_some(())
    })
    .await;
}

/// `curl` of `url` from `host` (from inside the network namespace of
/// process `pid`, when given): the body.
fn fetch(cluster: &Cluster, host: &str, pid: Option<u32>, url: &str) -> Option<String> {
    let curl = ["curl", "-sS", "-m", "3", url];
    let result = match pid {
        Some(pid) => {
            let pid = pid.to_string();
            let mut args = vec!["-t", pid.as_str(), "-n"];
            args.extend(curl);
            cluster.network().exec(host, "nsenter", &args)
        }
        None => cluster.network().exec(host, curl[0], &curl[1..]),
    };
    result.ok().map(|b| b.trim().to_string())
}

/// The pid of a task process on `host` (its sandbox is under the host's
/// work dir) whose command line contains `what`.
fn task_pid(dir: &std::path::Path, host: &str, what: &str) -> Option<u32> {
    let work = dir.canonicalize().ok()?.join(host);
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
        (cwd.starts_with(&work) && String::from_utf8_lossy(&cmdline).contains(what)).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_tasks_get_overlay_addresses_and_reach_each_other() {
    use agora_testbed::cluster::MARATHON_PORT;
    use serde_json::{Value, json};
    if !cni_plugins() {
        return;
    }
    let Some((_hosts, dir, cluster)) = overlay_cluster(|l| {
        l.marathons = 1;
        l.dns = true;
    })
    .await
    else {
        return;
    };
    let bridges = overlay_ready(&cluster).await;
    // Two apps, an instance of each on every agent, all listening on port
    // 80: each task has an address of its own.
    for name in ["web", "api"] {
        let app = json!({
            "id": format!("/{name}"),
            "cmd": format!("mkdir -p www && echo \"{name} $MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p 80 -h www"),
            "cpus": 0.1,
            "mem": 32,
            "instances": 3,
            "constraints": [["hostname", "UNIQUE"]],
            "networks": [{"mode": "container", "name": "agora"}],
            "container": {"type": "MESOS", "portMappings": [{"containerPort": 80, "name": "http"}]},
        });
        post_app(&cluster, "marathon1", &app).await;
    }
    // A task without the network keeps the host's.
    let plain = json!({"id": "/plain", "cmd": "sleep 3600", "cpus": 0.1, "mem": 16, "instances": 1,
                       "constraints": [["hostname", "CLUSTER", "agent1"]]});
    post_app(&cluster, "marathon1", &plain).await;
    let tasks: Vec<Value> = eventually("6 tasks run with their addresses", || async {
        let (_, v) = cluster
            .get("marathon1", MARATHON_PORT, "/v2/tasks")
            .await
            .ok()?;
        let tasks: Vec<Value> = v["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["appId"] != "/plain")
            .cloned()
            .collect();
        let ready = tasks
            .iter()
            .filter(|t| {
                t["state"] == "TASK_RUNNING" && t["ipAddresses"][0]["ipAddress"].is_string()
            })
            .count();
        (ready == 6).then_some(tasks)
    })
    .await;
    let mut per_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &tasks {
        let host = t["host"].as_str().unwrap().to_string();
        let ip = t["ipAddresses"][0]["ipAddress"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(t["ipAddresses"][0]["protocol"], "IPv4");
        // In the first half of its agent's subnet, not the bridge itself.
        let bridge: ipnet::Ipv4Net = bridges[&host].parse().unwrap();
        let addr: std::net::Ipv4Addr = ip.parse().unwrap();
        assert!(
            bridge.trunc().contains(&addr) && addr != bridge.addr(),
            "{ip} of a task on {host} is not in {bridge}"
        );
        assert_eq!(t["ports"], json!([]), "no host port taken: {t}");
        per_host.entry(host).or_default().push(ip);
    }
    assert_eq!(per_host.len(), 3, "{per_host:?}");
    assert!(
        per_host
            .values()
            .all(|ips| ips.len() == 2 && ips[0] != ips[1])
    );

    // Every task answers on port 80 at its address, from another host.
    for t in &tasks {
        let ip = t["ipAddresses"][0]["ipAddress"].as_str().unwrap();
        let app = t["appId"].as_str().unwrap().trim_start_matches('/');
        let want = format!("{app} {}", t["id"].as_str().unwrap());
        let from = if t["host"] == "agent1" {
            "agent2"
        } else {
            "agent1"
        };
        let got = eventually(&format!("{from} reaches {ip}"), || async {
            fetch(&cluster, from, None, &format!("http://{ip}:80/")).filter(|b| !b.is_empty())
        })
        .await;
        assert_eq!(got, want);
    }
    // And a task reaches a task on another host: from inside a task's
    // network namespace on agent1 to one on agent3, by address and by the
    // name agora dns gives it (asked from the task, across the underlay).
    let pid = task_pid(dir.path(), "agent1", "httpd").expect("a task process on agent1");
    let far = &per_host["agent3"][0];
    let got =
        fetch(&cluster, "agent1", Some(pid), &format!("http://{far}:80/")).unwrap_or_default();
    assert!(got.starts_with("web ") || got.starts_with("api "), "{got}");
    let dns = cluster.network().host("dns").unwrap().addr.to_string();
    let dig = |kind: &str, name: &str| {
        let pid = pid.to_string();
        let port = agora_testbed::cluster::DNS_PORT.to_string();
        let server = format!("@{dns}");
        let args = [
            "-t",
            pid.as_str(),
            "-n",
            "dig",
            server.as_str(),
            "-p",
            port.as_str(),
            "+short",
            "+time=2",
            "+tries=1",
            kind,
            name,
        ];
        let mut lines: Vec<String> = cluster
            .network()
            .exec("agent1", "nsenter", &args)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let mut api_ips: Vec<String> = tasks
        .iter()
        .filter(|t| t["appId"] == "/api")
        .map(|t| {
            t["ipAddresses"][0]["ipAddress"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    api_ips.sort();
    let found = eventually(
        "agora dns answers with the tasks' own addresses",
        || async {
            let a = dig("A", "api.marathon.mesos");
            (a == api_ips).then_some(a)
        },
    )
    .await;
    let got = fetch(
        &cluster,
        "agent1",
        Some(pid),
        &format!("http://{}:80/", found[0]),
    )
    .unwrap_or_default();
    assert!(got.starts_with("api "), "{got}");
    let srv = dig("SRV", "_api._tcp.marathon.mesos");
    assert_eq!(srv.len(), 3, "{srv:?}");
    assert!(
        srv.iter()
            .all(|r| r.split_whitespace().nth(2) == Some("80")),
        "the container port: {srv:?}"
    );
    // The agents' own addresses stay under the .slave. names.
    let slave = dig("A", "api.marathon.slave.mesos");
    assert!(
        slave.len() == 3 && slave.iter().all(|ip| ip.starts_with("10.77.")),
        "{slave:?}"
    );

    let plain_ip = eventually("the plain task runs", || async {
        let (_, v) = cluster
            .get("marathon1", MARATHON_PORT, "/v2/apps/plain/tasks")
            .await
            .ok()?;
        let t = v["tasks"].as_array()?.first()?.clone();
        (t["state"] == "TASK_RUNNING").then(|| {
            t["ipAddresses"][0]["ipAddress"]
                .as_str()
                .map(str::to_string)
        })?
    })
    .await;
    assert_eq!(
        plain_ip,
        cluster.network().host("agent1").unwrap().addr.to_string()
    );

    // agent1 killed and started again: its tasks keep running with the
    // same addresses, reachable as before.
    let on_agent1: BTreeMap<String, String> = tasks
        .iter()
        .filter(|t| t["host"] == "agent1")
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["ipAddresses"][0]["ipAddress"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    cluster.kill_host("agent1").await.unwrap();
    cluster.start_host("agent1").unwrap();
    eventually("agent1 to be back", || async {
        let state = cluster.master_state().await?;
        state["slaves"]
            .as_array()?
            .iter()
            .any(|s| {
                s["hostname"] == "agent1"
                    && s["active"] == true
                    && s["reregistered_time"].is_number()
            })
            .then_some(())
    })
    .await;
    let (_, v) = cluster
        .get("marathon1", MARATHON_PORT, "/v2/tasks")
        .await
        .unwrap();
    for (id, ip) in &on_agent1 {
        let t = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
            .unwrap();
        assert_eq!(t["state"], "TASK_RUNNING", "{t}");
        assert_eq!(t["ipAddresses"][0]["ipAddress"], ip.as_str(), "{t}");
        let got = fetch(&cluster, "agent2", None, &format!("http://{ip}:80/")).unwrap_or_default();
        assert!(got.ends_with(id.as_str()), "{got}");
    }

    // A mapping with a host port: the task is also reached at its agent's
    // address on that port (CNI's portmap).
    let mapped = json!({
        "id": "/mapped", "cpus": 0.1, "mem": 32, "instances": 1,
        "cmd": "mkdir -p www && echo \"mapped $MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p 8080 -h www",
        "constraints": [["hostname", "CLUSTER", "agent2"]],
        "networks": [{"mode": "container", "name": "agora"}],
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 8080, "hostPort": 0}]},
    });
    post_app(&cluster, "marathon1", &mapped).await;
    let t = eventually("the mapped task runs", || async {
        let (_, v) = cluster
            .get("marathon1", MARATHON_PORT, "/v2/apps/mapped/tasks")
            .await
            .ok()?;
        let t = v["tasks"].as_array()?.first()?.clone();
        (t["state"] == "TASK_RUNNING" && t["ports"][0].is_u64()).then_some(t)
    })
    .await;
    let host_port = t["ports"][0].as_u64().unwrap();
    let agent2 = cluster.network().host("agent2").unwrap().addr.to_string();
    let want = format!("mapped {}", t["id"].as_str().unwrap());
    let got = fetch(
        &cluster,
        "agent1",
        None,
        &format!("http://{agent2}:{host_port}/"),
    );
    assert_eq!(got.as_deref(), Some(want.as_str()), "at the agent's port");
    let ip = t["ipAddresses"][0]["ipAddress"].as_str().unwrap();
    let got = fetch(&cluster, "agent1", None, &format!("http://{ip}:8080/"));
    assert_eq!(got.as_deref(), Some(want.as_str()), "at its own address");

    // A Docker task on the overlay (the engine's container joins it
    // through CNI) and process tasks reach each other.
    if let Some(image) = crate::docker::image() {
        let dock = json!({
            "id": "/dock", "cpus": 0.1, "mem": 32, "instances": 1,
            "cmd": "mkdir -p /www && echo \"dock $MESOS_TASK_ID\" > /www/index.html && exec httpd -f -p 80 -h /www",
            "constraints": [["hostname", "CLUSTER", "agent3"]],
            "networks": [{"mode": "container", "name": "agora"}],
            "container": {"type": "DOCKER", "docker": {"image": image}},
        });
        post_app(&cluster, "marathon1", &dock).await;
        let t = eventually("the Docker task runs with an overlay address", || async {
            let (_, v) = cluster
                .get("marathon1", MARATHON_PORT, "/v2/apps/dock/tasks")
                .await
                .ok()?;
            let t = v["tasks"].as_array()?.first()?.clone();
            (t["state"] == "TASK_RUNNING" && t["ipAddresses"][0]["ipAddress"].is_string())
                .then_some(t)
        })
        .await;
        let ip = t["ipAddresses"][0]["ipAddress"]
            .as_str()
            .unwrap()
            .to_string();
        let bridge: ipnet::Ipv4Net = bridges["agent3"].parse().unwrap();
        assert!(
            bridge
                .trunc()
                .contains(&ip.parse::<std::net::Ipv4Addr>().unwrap()),
            "{ip}"
        );
        let got =
            fetch(&cluster, "agent1", Some(pid), &format!("http://{ip}:80/")).unwrap_or_default();
        assert_eq!(got, format!("dock {}", t["id"].as_str().unwrap()));
        // And from inside the container to a process task on agent1.
        let web = tasks
            .iter()
            .find(|t| t["host"] == "agent1" && t["appId"] == "/web")
            .or_else(|| tasks.iter().find(|t| t["host"] == "agent1"))
            .unwrap();
        let web_ip = web["ipAddresses"][0]["ipAddress"].as_str().unwrap();
        let ps = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=agora.task_id={}", t["id"].as_str().unwrap()),
            ])
            .output()
            .unwrap();
        let ids = String::from_utf8_lossy(&ps.stdout).to_string();
        let got = ids.split_whitespace().find_map(|c| {
            let out = std::process::Command::new("docker")
                .args([
                    "exec",
                    c,
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    &format!("http://{web_ip}:80/"),
                ])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
        assert_eq!(
            got.as_deref(),
            Some(
                format!(
                    "{} {}",
                    web["appId"].as_str().unwrap().trim_start_matches('/'),
                    web["id"].as_str().unwrap()
                )
                .as_str()
            )
        );
    }

    // A task killed leaves its network: its records and namespace go.
    let containers = |host: &str| containers(dir.path(), host);
    // web, api and mapped.
    assert_eq!(containers("agent2"), 3);
    let victim = tasks.iter().find(|t| t["host"] == "agent2").unwrap();
    let id = victim["id"].as_str().unwrap();
    let app = victim["appId"].as_str().unwrap();
    kill_task(&cluster, app, id).await;
    left_networks(&cluster, dir.path(), "agent2", 2).await;
    // So does one on agent1, whose agent was restarted since it joined.
    let id = on_agent1.keys().next().unwrap();
    let app = if id.starts_with("web") {
        "/web"
    } else {
        "/api"
    };
    kill_task(&cluster, app, id).await;
    left_networks(&cluster, dir.path(), "agent1", 1).await;
}

/// Kills task `id` of `app` through marathon-rs, scaling the app down.
async fn kill_task(cluster: &Cluster, app: &str, id: &str) {
    let (status, body) = cluster
        .send(
            reqwest::Method::DELETE,
            "marathon1",
            agora_testbed::cluster::MARATHON_PORT,
            &format!("/v2/apps{app}/tasks/{id}?scale=true"),
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// The running tasks of `app`: (id, host, first address, first host port).
async fn running(cluster: &Cluster, app: &str) -> Vec<(String, String, String, u64)> {
    let path = format!("/v2/apps/{app}/tasks");
    let Ok((_, v)) = cluster
        .get("marathon1", agora_testbed::cluster::MARATHON_PORT, &path)
        .await
    else {
        return Vec::new();
    };
    v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| {
            Some((
                t["id"].as_str()?.to_string(),
                t["host"].as_str()?.to_string(),
                t["ipAddresses"][0]["ipAddress"].as_str()?.to_string(),
                t["ports"][0].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}

/// The containers the agent of `host` has network records of.
fn containers(dir: &std::path::Path, host: &str) -> usize {
    std::fs::read_dir(dir.join(host).join("cni/containers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the agent of `host` has records of `n` containers (a killed
/// one left its networks); else fails with what its log says of networks.
async fn left_networks(cluster: &Cluster, dir: &std::path::Path, host: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while containers(dir, host) != n {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(cluster.log(host)).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["network", "CNI", "kill", "exited", "executor", "WARN"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .collect();
            let mut others = String::new();
            for h in ["master1", "marathon1"] {
                let log = std::fs::read_to_string(cluster.log(h)).unwrap_or_default();
                for l in log.lines().filter(|l| {
                    let l = l.to_lowercase();
                    l.contains("kill") || l.contains("warn") || l.contains("deployment")
                }) {
                    others.push_str(&format!("{h}: {l}\n"));
                }
            }
            let out = std::process::Command::new("find")
                .arg(dir.join(host))
                .args(["-name", "stderr"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            for f in out.lines() {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                others.push_str(&format!("== {f}\n{}\n", tail.join("\n")));
            }
            panic!(
                "{host} still has {} containers with networks, not {n}:\n{}\n{others}",
                containers(dir, host),
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.0 request from `host` to `addr`: the time to the whole answer.
async fn request(cluster: &Cluster, host: &str, addr: std::net::SocketAddr) -> Option<Duration> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let start = std::time::Instant::now();
    let mut s = cluster.network().connect(host, addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.ok()?;
    body.starts_with(b"HTTP/1.").then(|| start.elapsed())
}

/// iperf3 from `host` (inside process `pid`'s network, when given) to
/// `server:port` for 5 s: gigabits per second received.
fn iperf(cluster: &Cluster, host: &str, pid: Option<u32>, server: &str, port: u64) -> f64 {
    let port = port.to_string();
    let client = ["iperf3", "-c", server, "-p", port.as_str(), "-t", "5", "-J"];
    let out = match pid {
        Some(pid) => {
            let pid = pid.to_string();
            let mut args = vec!["-t", pid.as_str(), "-n"];
            args.extend(client);
            cluster.network().exec(host, "nsenter", &args)
        }
        None => cluster.network().exec(host, client[0], &client[1..]),
    }
    .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn percentile(mut v: Vec<Duration>, q: f64) -> f64 {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The figures of BENCHMARKS.md's overlay section: throughput and request
/// latency between hosts on the host network and on the overlay, the time
/// from TASK_RUNNING to a new task answering from another host, and what a
/// CNI ADD costs. `cargo test --test it -- --ignored --nocapture
/// overlay::figures` (needs iperf3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn figures() {
    use serde_json::json;
    let Some((_hosts, dir, cluster)) = overlay_cluster(|l| {
        l.marathons = 1;
    })
    .await
    else {
        return;
    };
    overlay_ready(&cluster).await;
    let on = |host: &str| json!([["hostname", "CLUSTER", host]]);
    let overlay = json!([{"mode": "container", "name": "agora"}]);
    let mapping = json!({"type": "MESOS", "portMappings": [{"containerPort": 80}]});
    let www = "mkdir -p www && echo ok > www/index.html && exec busybox httpd -f -h www";
    for app in [
        json!({"id": "/web-host", "cmd": format!("{www} -p $PORT0"), "cpus": 0.1, "mem": 32,
               "constraints": on("agent1"), "portDefinitions": [{"port": 0}]}),
        json!({"id": "/web-ovl", "cmd": format!("{www} -p 80"), "cpus": 0.1, "mem": 32,
               "constraints": on("agent1"), "networks": overlay, "container": mapping}),
        json!({"id": "/iperf-host", "cmd": "exec iperf3 -s -p $PORT0", "cpus": 0.1, "mem": 64,
               "constraints": on("agent1"), "portDefinitions": [{"port": 0}]}),
        json!({"id": "/iperf-ovl", "cmd": "exec iperf3 -s -p 5201", "cpus": 0.1, "mem": 64,
               "constraints": on("agent1"), "networks": overlay,
               "container": {"type": "MESOS", "portMappings": [{"containerPort": 5201}]}}),
        json!({"id": "/client", "cmd": "exec sleep 3600", "cpus": 0.1, "mem": 16,
               "constraints": on("agent2"), "networks": overlay}),
    ] {
        post_app(&cluster, "marathon1", &app).await;
    }
    for app in ["web-host", "web-ovl", "iperf-host", "iperf-ovl", "client"] {
        eventually(&format!("{app} runs"), || async {
            (!running(&cluster, app).await.is_empty()).then_some(())
        })
        .await;
    }
    let agent1 = cluster.network().host("agent1").unwrap().addr.to_string();
    let first = |v: Vec<(String, String, String, u64)>| v.into_iter().next().unwrap();
    let (_, _, _, web_port) = first(running(&cluster, "web-host").await);
    let (_, _, web_ip, _) = first(running(&cluster, "web-ovl").await);
    let (_, _, _, iperf_port) = first(running(&cluster, "iperf-host").await);
    let (_, _, iperf_ip, _) = first(running(&cluster, "iperf-ovl").await);
    let client = task_pid(dir.path(), "agent2", "sleep").expect("the client task");

    // Request latency, 300 requests each, from agent2.
    let mut latency = Vec::new();
    for addr in [format!("{agent1}:{web_port}"), format!("{web_ip}:80")] {
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let mut times = Vec::new();
        for _ in 0..300 {
            if let Some(t) = request(&cluster, "agent2", addr).await {
                times.push(t);
            }
        }
        assert_eq!(times.len(), 300, "requests to {addr} failed");
        latency.push((percentile(times.clone(), 0.5), percentile(times, 0.99)));
    }
    // Throughput: agent2's host to agent1's host; a task on agent2 to a
    // task on agent1 over the overlay.
    let host_gbps = iperf(&cluster, "agent2", None, &agent1, iperf_port);
    let ovl_gbps = iperf(&cluster, "agent2", Some(client), &iperf_ip, 5201);

    // TASK_RUNNING (as marathon-rs reports it, polled every 5 ms) to the
    // new task answering from agent2, for 20 tasks started one at a time.
    post_app(
        &cluster,
        "marathon1",
        &json!({"id": "/fresh", "cmd": format!("{www} -p 80"), "cpus": 0.01, "mem": 8,
                "instances": 0, "constraints": on("agent3"), "networks": overlay,
                "container": mapping}),
    )
    .await;
    let mut answering = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 1..=20 {
        let (status, _) = cluster
            .send(
                reqwest::Method::PUT,
                "marathon1",
                agora_testbed::cluster::MARATHON_PORT,
                "/v2/apps/fresh",
                &json!({"instances": i}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        let (ip, t0) = loop {
            let new = running(&cluster, "fresh")
                .await
                .into_iter()
                .find(|t| !seen.contains(&t.0));
            if let Some((id, _, ip, _)) = new {
                seen.insert(id);
                break (ip, std::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let addr: std::net::SocketAddr = format!("{ip}:80").parse().unwrap();
        while request(&cluster, "agent2", addr).await.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        answering.push(t0.elapsed());
    }
    // CNI ADD, as the agents logged it.
    let mut adds: Vec<Duration> = Vec::new();
    for h in ["agent1", "agent2", "agent3"] {
        let log = std::fs::read_to_string(cluster.log(h)).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("joined a network")) {
            // Without the log's colours: `add_ms=12.3`.
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    let _ = chars.by_ref().find(|c| *c == 'm');
                } else {
                    plain.push(c);
                }
            }
            let ms = plain
                .split("add_ms=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(ms) = ms {
                adds.push(Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }
    println!(
        "{:<44} {:>12} {:>12}",
        "between two hosts", "host network", "overlay"
    );
    println!(
        "{:<44} {:>12.2} {:>12.2}",
        "TCP throughput, Gbit/s (iperf3, 5 s)", host_gbps, ovl_gbps
    );
    println!(
        "{:<44} {:>12.3} {:>12.3}",
        "HTTP request, p50 ms (300)", latency[0].0, latency[1].0
    );
    println!(
        "{:<44} {:>12.3} {:>12.3}",
        "HTTP request, p99 ms (300)", latency[0].1, latency[1].1
    );
    println!(
        "TASK_RUNNING -> answering across hosts (20 tasks): p50 {:.1} ms, p99 {:.1} ms",
        percentile(answering.clone(), 0.5),
        percentile(answering, 0.99)
    );
    println!(
        "CNI ADD (bridge + host-local + portmap), {} containers: p50 {:.1} ms, p99 {:.1} ms",
        adds.len(),
        percentile(adds.clone(), 0.5),
        percentile(adds, 0.99)
    );
}

/// The SPIs of the IPsec states on `host`.
fn spis(cluster: &Cluster, host: &str) -> BTreeSet<String> {
    let out = cluster
        .network()
        .exec(host, "ip", &["xfrm", "state"])
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "spi")
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "spi")
        .map(|w| w[1].to_string())
        .collect()
}

/// Packets counted by the iptables rule of `host`'s INPUT chain whose text
/// contains `what` (as `iptables -L -v -x` prints it).
fn counted(cluster: &Cluster, host: &str, what: &str) -> u64 {
    let out = cluster
        .network()
        .exec(host, "iptables", &["-L", "INPUT", "-v", "-x", "-n"])
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Whether this kernel has IPsec ESP with AES-GCM (tried in a namespace
/// of its own).
fn kernel_has_esp() -> bool {
    let ns = format!("agora-esp-{}", std::process::id());
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output();
    if !ip(&["netns", "add", &ns]).is_ok_and(|o| o.status.success()) {
        return false;
    }
    let ok = ip(&[
        "-n",
        &ns,
        "xfrm",
        "state",
        "add",
        "src",
        "10.0.0.1",
        "dst",
        "10.0.0.2",
        "proto",
        "esp",
        "spi",
        "0x1000",
        "mode",
        "transport",
        "aead",
        "rfc4106(gcm(aes))",
        "0x0102030405060708090a0b0c0d0e0f1011121314",
        "128",
    ])
    .is_ok_and(|o| o.status.success());
    let _ = ip(&["netns", "del", &ns]);
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_overlay_carries_esp_and_rotates_its_keys() {
    let Some((_hosts, _dir, cluster)) = overlay_cluster(|l| {
        l.master_flags
            .extend(["--overlay-encrypt", "--overlay-key-rotation", "10s"].map(String::from));
    })
    .await
    else {
        return;
    };
    let bridges = overlay_ready(&cluster).await;
    let ip = |h: &str| bridges[h].split('/').next().unwrap().to_string();
    // Count what reaches agent2: ESP, and VXLAN that came in the clear.
    let net = cluster.network();
    net.exec("agent2", "iptables", &["-I", "INPUT", "-p", "esp"])
        .unwrap();
    let clear_rule = [
        "-I", "INPUT", "-p", "udp", "--dport", "4789", "-m", "policy", "--dir", "in", "--pol",
        "none",
    ];
    let policy_match = net.exec("agent2", "iptables", &clear_rule).is_ok();
    if !kernel_has_esp() {
        // This kernel cannot encrypt (no esp4 or gcm): the overlay stays
        // closed rather than carry tasks' traffic in the clear, and the
        // agents say why.
        eventually("the agents to say the kernel cannot encrypt", || async {
            std::fs::read_to_string(cluster.log("agent2"))
                .ok()?
                .contains("the kernel has no IPsec ESP")
                .then_some(())
        })
        .await;
        for _ in 0..3 {
            assert!(
                !pings(&cluster, "agent1", &ip("agent2")),
                "clear traffic on an encrypted overlay"
            );
        }
        assert_eq!(counted(&cluster, "agent2", "esp"), 0);
        eprintln!("SKIPPED the ESP and rotation checks: this kernel has no IPsec ESP with AES-GCM");
        return;
    }
    eventually(
        "agent1 reaches agent2 over the encrypted overlay",
        || async { pings(&cluster, "agent1", &ip("agent2")).then_some(()) },
    )
    .await;
    for _ in 0..5 {
        assert!(pings(&cluster, "agent1", &ip("agent2")));
        assert!(pings(&cluster, "agent3", &ip("agent2")));
    }
    assert!(
        counted(&cluster, "agent2", "esp") >= 10,
        "ESP on the wire: {}\n{}\n{}",
        net.exec("agent2", "ip", &["xfrm", "state"])
            .unwrap_or_default(),
        net.exec("agent2", "ip", &["xfrm", "policy"])
            .unwrap_or_default(),
        std::fs::read_to_string(cluster.log("agent2"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("overlay") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if policy_match {
        assert_eq!(
            counted(&cluster, "agent2", "policy"),
            0,
            "no VXLAN in the clear"
        );
    }
    let link = net
        .exec("agent1", "ip", &["-j", "link", "show", "dev", "agora.1"])
        .unwrap();
    let link: serde_json::Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["mtu"], 1410, "room for ESP too: {link}");

    // Keys rotate every 10 s: the states change, and every ping meanwhile
    // is answered.
    let before = spis(&cluster, "agent1");
    assert!(!before.is_empty());
    let start = std::time::Instant::now();
    let mut lost = 0;
    while start.elapsed() < Duration::from_secs(25) {
        if !pings(&cluster, "agent1", &ip("agent3")) {
            lost += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = spis(&cluster, "agent1");
    assert!(
        before.is_disjoint(&after) || before != after,
        "{before:?} -> {after:?}"
    );
    assert_eq!(lost, 0, "pings lost during key rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_lb_on_the_overlay_serves_tasks_at_their_own_addresses() {
    use agora_testbed::cluster::MARATHON_PORT;
    use serde_json::json;
    if !cni_plugins() {
        return;
    }
    let Some((_hosts, _dir, cluster)) = overlay_cluster(|l| {
        l.marathons = 1;
        l.lb = true;
        l.lb_agent = true;
    })
    .await
    else {
        return;
    };
    // The lb host is on the overlay through its agent.
    eventually("the lb host to route the agents' subnets", || async {
        (vxlan_routes(&cluster, "lb").len() == 3).then_some(())
    })
    .await;
    let app = json!({
        "id": "/svc", "instances": 3, "cpus": 0.1, "mem": 32,
        "cmd": "mkdir -p www && echo \"$MESOS_TASK_ID\" > www/index.html && exec busybox httpd -f -p 80 -h www",
        "constraints": [["hostname", "UNIQUE"]],
        "networks": [{"mode": "container", "name": "agora"}],
        "container": {"type": "MESOS", "portMappings": [{"containerPort": 80, "servicePort": 10000}]},
        "labels": {"HAPROXY_GROUP": "external"},
    });
    post_app(&cluster, "marathon1", &app).await;
    let ids: BTreeSet<String> = eventually("3 tasks run with addresses", || async {
        let (_, v) = cluster
            .get("marathon1", MARATHON_PORT, "/v2/apps/svc/tasks")
            .await
            .ok()?;
        let tasks = v["tasks"].as_array()?;
        let ready: BTreeSet<String> = tasks
            .iter()
            .filter(|t| {
                t["state"] == "TASK_RUNNING" && t["ipAddresses"][0]["ipAddress"].is_string()
            })
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        (ready.len() == 3).then_some(ready)
    })
    .await;
    // None on the lb host's agent (its resources are not for apps).
    let (_, v) = cluster
        .get("marathon1", MARATHON_PORT, "/v2/apps/svc/tasks")
        .await
        .unwrap();
    assert!(
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["host"] != "lb")
    );
    let lb = cluster.forward("lb", 10000).await.unwrap();
    every_task_answers(lb, &ids).await;
}
