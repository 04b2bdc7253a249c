//! Masters in HA with a real ZooKeeper (Debian's `zookeeper`, a server the
//! test starts): a leader elected in Mesos' layout, a standby that
//! redirects, and an agent, a framework, pymesos and `agora dns` that all
//! find the leader through ZooKeeper and follow it when it dies.

use std::path::Path;
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_rpc::zk;
use agora_sdk::{Event, SchedulerConfig, TaskBuilder};

use crate::cluster::{agora_bin, free_port, missing, start_agent};
use crate::dns::{dig, dig_available};
use crate::marathon::eventually;

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper server on a free port, stopped on drop.
pub(crate) struct ZkServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    /// Starts one (a 500 ms tick, so sessions may be as short as 1 s), or
    /// None when ZooKeeper is not installed.
    pub(crate) async fn start() -> Option<ZkServer> {
        let java = std::process::Command::new("java")
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !java || !Path::new(ZK_JAR).exists() {
            missing("ZooKeeper (Debian's libzookeeper-java and default-jre-headless)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("zookeeper.log")).unwrap();
        let child = std::process::Command::new("java")
            .args([
                "-Xmx128m",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                ZK_JAR,
            ])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(port.to_string())
            .arg(dir.path().join("data"))
            .arg("500")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = ZkServer {
            child,
            port,
            _dir: dir,
        };
        eventually("ZooKeeper listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Some(server)
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `agora master --zk …` process.
struct MasterProcess {
    child: tokio::process::Child,
    port: u16,
}

fn spawn_master(zk: &str) -> MasterProcess {
    let port = free_port();
    let child = tokio::process::Command::new(agora_bin())
        .args(["master", "--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--zk", zk, "--zk-session-timeout", "2s"])
        .args(["--allocation-interval", "200ms"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    MasterProcess { child, port }
}

/// Status and `Location` of `GET path` on a master, without following
/// redirects.
async fn get(port: u16, path: &str) -> Option<(u16, Option<String>)> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    Some((r.status().as_u16(), location))
}

async fn state(port: u16) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/master/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn next_event<T>(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(t) = f(&events.recv().await.expect("event stream open")) {
                return t;
            }
        }
    })
    .await
    .expect("expected event within 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_is_elected_in_zookeeper_and_everyone_follows_it_when_it_dies() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    if !dig_available() {
        return;
    }
    let url = format!("zk://127.0.0.1:{}/agora/ha", zk.port);
    let mut first = spawn_master(&url);
    eventually("the first master leads", || async {
        (get(first.port, "/master/state").await?.0 == 200).then_some(())
    })
    .await;
    let second = spawn_master(&url);
    // The second stands by and sends clients to the leader, as Mesos does.
    let want = format!("//127.0.0.1:{}/api/v1/scheduler", first.port);
    eventually("the standby redirects to the leader", || async {
        let (status, location) = get(second.port, "/api/v1/scheduler").await?;
        (status == 307 && location.as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    assert_eq!(
        get(second.port, "/redirect").await.unwrap(),
        (307, Some(format!("//127.0.0.1:{}", first.port)))
    );
    assert_eq!(get(second.port, "/health").await.unwrap().0, 200);
    // ZooKeeper holds the leader's MasterInfo where Mesos readers look.
    let mut detector = zk::detect(url.parse().unwrap());
    let leader = zk::current_leader(&mut detector, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(leader.address, format!("127.0.0.1:{}", first.port));
    for field in ["id", "ip", "port", "pid", "hostname", "address", "version"] {
        assert!(leader.info.get(field).is_some(), "{field}: {}", leader.info);
    }

    // An agent, a framework and agora dns, all given only ZooKeeper.
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&url, dir.path(), 1, "cpus:2;mem:1024;ports:[31000-31099]").await;
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = agora_dns::DnsOptions::new(url.clone());
    options.refresh = Duration::from_secs(3600);
    let dns = agora_dns::start(options, udp, tcp, None).await.unwrap();
    let mut config = SchedulerConfig::new(&url, "hafw");
    config.framework_info.checkpoint = Some(true);
    config.framework_info.failover_timeout = Some(600.0);
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = next_event(&mut events, |e| match e {
        Event::Offers(o) => o.first().cloned(),
        _ => None,
    })
    .await;
    let task = TaskBuilder::new("web", &offer)
        .command("sleep 600")
        .cpus(0.1)
        .mem(16.0)
        .build();
    // No more offers: what the task leaves goes to pymesos below.
    scheduler.suppress(vec![]).await.unwrap();
    scheduler.launch(&offer, vec![task], 0.0).await.unwrap();
    next_event(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskRunning).then_some(())
    })
    .await;
    let leader_port = || {
        dig(&dns, &["_leader._tcp.mesos", "SRV"])
            .first()
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    };
    let want = first.port.to_string();
    eventually("agora dns names the first master and the task", || async {
        (leader_port().as_deref() == Some(want.as_str())
            && dig(&dns, &["web.hafw.mesos", "A"]) == ["127.0.0.1"])
        .then_some(())
    })
    .await;
    // pymesos (with kazoo) finds the leader through ZooKeeper too.
    if let Some(python) = crate::pymesos::python() {
        let summary = crate::pymesos::run_scheduler(&python, &url, "command", 1).await;
        let states = summary["states"]["py-0"].to_string();
        assert!(states.contains("TASK_FINISHED"), "{summary}");
    } else {
        missing("pymesos and kazoo in .venv (run tests/python/setup-venv.sh)");
    }

    // The leader dies without a word: its ZooKeeper session expires.
    first.child.kill().await.unwrap();
    eventually("the second master leads", || async {
        (get(second.port, "/master/state").await?.0 == 200).then_some(())
    })
    .await;
    let want = second.port.to_string();
    eventually("agora dns follows the new leader", || async {
        (leader_port().as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    // The agent re-registers with its running task, the framework
    // resubscribes, and the task keeps its name.
    eventually("the agent re-registers with the new leader", || async {
        let s = state(second.port).await;
        (s["slaves"].as_array()?.len() == 1 && s.to_string().contains("\"web\"")).then_some(())
    })
    .await;
    next_event(&mut events, |e| {
        matches!(
            e,
            Event::Subscribed {
                resubscribed: true,
                ..
            }
        )
        .then_some(())
    })
    .await;
    eventually("the task is still found by name", || async {
        (dig(&dns, &["web.hafw.mesos", "A"]) == ["127.0.0.1"]).then_some(())
    })
    .await;
    // The new leader commands the agent: the task is killed through it.
    scheduler
        .kill(
            &agora_proto::v1::TaskId {
                value: "web".into(),
            },
            Some(&offer.agent_id),
        )
        .await
        .unwrap();
    next_event(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskKilled).then_some(())
    })
    .await;
    scheduler.teardown().await.unwrap();
    dns.stop().await;
    agent.stop().await;
    // ZooKeeper goes: a leader that cannot keep its session stops leading
    // (it exits with an error, as a Mesos master aborts).
    let mut second = second;
    drop(zk);
    let exit = tokio::time::timeout(Duration::from_secs(30), second.child.wait())
        .await
        .expect("the leader exits once its session is lost")
        .unwrap();
    assert!(!exit.success(), "{exit:?}");
}
