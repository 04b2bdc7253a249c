//! Masters in HA with a real ZooKeeper (Debian's `zookeeper`, a server the
//! test starts): a leader elected in Mesos' layout, a standby that
//! redirects, and an agent, a framework, pymesos and `agora dns` that all
//! find the leader through ZooKeeper and follow it when it dies.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use agora_proto::v1::TaskState;
use agora_sdk::{Event, SchedulerConfig, TaskBuilder};
use agora_zk as zk;

use crate::cluster::eventually;
use crate::cluster::{agora_bin, free_port, missing, start_agent};
use crate::cluster::{dig, dig_available};
use crate::e2e::next_matching;

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper server on a free port, stopped on drop.
pub(crate) struct ZkServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    /// The `zk://` URL of `path` on this server.
    pub(crate) fn url(&self, path: &str) -> zk::ZkUrl {
        format!("zk://127.0.0.1:{}{path}", self.port)
            .parse()
            .unwrap()
    }

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
                // A whole-document store writes up to megabytes per change,
                // and the server keeps its last 500 proposals in memory.
                "-Xmx512m",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                // slf4j-simple, when installed, makes the server's log readable.
                &format!("{ZK_JAR}:/usr/share/java/slf4j-simple.jar"),
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
        .args([
            "master",
            "--insecure",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
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
    let agent = start_agent(&url, dir.path(), 1, "cpus:2;mem:1024;ports:[11900-11999]").await;
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = agora_dns::DnsOptions::new(url.clone());
    options.refresh = Duration::from_secs(3600);
    let dns = agora_dns::start(options, udp, tcp, None).await.unwrap();
    // And one given the masters as a list, the standby first (Mesos-DNS'
    // `masters`): the standby's 307 names the leader.
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut options = agora_dns::DnsOptions::new(format!(
        "127.0.0.1:{},127.0.0.1:{}",
        second.port, first.port
    ));
    options.refresh = Duration::from_secs(3600);
    let listed = agora_dns::start(options, udp, tcp, None).await.unwrap();
    let mut config = SchedulerConfig::new(&url, "hafw");
    config.framework_info.checkpoint = Some(true);
    config.framework_info.failover_timeout = Some(600.0);
    let (scheduler, mut events) = agora_sdk::subscribe(config).await.unwrap();
    let offer = next_matching(&mut events, |e| match e {
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
    next_matching(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskRunning).then_some(())
    })
    .await;
    let port_of_leader = |dns: &agora_dns::RunningDns| {
        dig(dns, &["_leader._tcp.mesos", "SRV"])
            .first()
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    };
    let leader_port = || port_of_leader(&dns);
    let want = first.port.to_string();
    eventually("agora dns names the first master and the task", || async {
        (leader_port().as_deref() == Some(want.as_str())
            && port_of_leader(&listed).as_deref() == Some(want.as_str())
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
    let killed = std::time::Instant::now();
    eventually("the second master leads", || async {
        (get(second.port, "/master/state").await?.0 == 200).then_some(())
    })
    .await;
    let elected = killed.elapsed();
    let want = second.port.to_string();
    eventually("agora dns follows the new leader", || async {
        (leader_port().as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    eprintln!(
        "master failover (2 s session timeout): new leader after {elected:?}, agora dns after {:?}",
        killed.elapsed()
    );
    // Its leadership has a newer epoch (what agents fence older masters by).
    let page = reqwest::get(format!("http://127.0.0.1:{}/", second.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("leading, epoch 2"), "{page}");
    eventually("the listed agora dns follows too", || async {
        (port_of_leader(&listed).as_deref() == Some(want.as_str())).then_some(())
    })
    .await;
    // The agent re-registers with its running task, the framework
    // resubscribes, and the task keeps its name.
    eventually("the agent re-registers with the new leader", || async {
        let s = state(second.port).await;
        (s["slaves"].as_array()?.len() == 1 && s.to_string().contains("\"web\"")).then_some(())
    })
    .await;
    next_matching(&mut events, |e| {
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
    next_matching(&mut events, |e| {
        matches!(e, Event::Update(s) if s.state() == TaskState::TaskKilled).then_some(())
    })
    .await;
    scheduler.teardown().await.unwrap();
    dns.stop().await;
    listed.stop().await;
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

/// An `agora marathon --zk …` process.
struct MarathonProcess {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn spawn_marathon(master: &str, zk: &str) -> MarathonProcess {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(agora_bin())
        .args([
            "marathon",
            "--insecure",
            "--master",
            master,
            "--hostname",
            "127.0.0.1",
        ])
        .args([
            "--http-address",
            "127.0.0.1",
            "--http-port",
            &port.to_string(),
        ])
        .arg("--work-dir")
        .arg(dir.path())
        .args(["--zk", zk, "--zk-session-timeout", "2s"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    MarathonProcess {
        child,
        port,
        _dir: dir,
    }
}

async fn leader_of(port: u16) -> Option<String> {
    let (status, _) = get(port, "/v2/leader").await?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/v2/leader"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["leader"].as_str().map(str::to_string)
}

/// The ids of the app's running tasks, asked through `port` (redirects
/// followed).
async fn running(port: u16, app: &str) -> std::collections::BTreeSet<String> {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/v2/apps/{app}/tasks")).await else {
        return Default::default();
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_rs_fails_over_to_a_standby_with_its_apps_and_tasks_from_zookeeper() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let cluster = crate::cluster::Cluster::start(1, "cpus:4;mem:2048").await;
    let url = format!("zk://127.0.0.1:{}/agora/marathon", zk.port);
    let mut first = spawn_marathon(&cluster.master(), &url);
    let me = format!("127.0.0.1:{}", first.port);
    eventually("the first marathon-rs leads", || async {
        (leader_of(first.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    let second = spawn_marathon(&cluster.master(), &url);
    eventually("the second names the first as leader", || async {
        (leader_of(second.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    let info: serde_json::Value = reqwest::get(format!("http://{me}/v2/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["marathon_config"]["ha"], true, "{info}");
    assert_eq!(info["zookeeper_config"]["zk"], url.as_str(), "{info}");
    // The standby forwards to the leader, as Marathon's do: answers, not
    // redirects, and the event stream too.
    let (status, location) = get(second.port, "/v2/apps?embed=apps.tasks").await.unwrap();
    assert_eq!((status, location), (200, None));
    let mut events = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v2/events", second.port))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first_event = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .expect("the first event comes through the standby")
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first_event).contains("event_stream_attached"),
        "{first_event:?}"
    );
    drop(events);
    // A POST through the standby, body and all.
    let app = serde_json::json!({"id": "/ha/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16,
                                 "instances": 2});
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v2/apps", second.port))
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let before = eventually("2 tasks run", || async {
        let ids = running(first.port, "ha/web").await;
        (ids.len() == 2).then_some(ids)
    })
    .await;
    // The `marathon` client from PyPI, given only the standby, works
    // through it.
    match crate::cluster::venv_python("marathon") {
        Some(python) => {
            let script = "import sys\nfrom marathon import MarathonClient\n\
                c = MarathonClient(sys.argv[1])\n\
                app = c.get_app('/ha/web', embed_tasks=True)\n\
                c.scale_app('/ha/web', instances=2)\n\
                print(app.instances, len(app.tasks), [a.id for a in c.list_apps()])";
            let out = tokio::process::Command::new(python)
                .args(["-c", script, &format!("http://127.0.0.1:{}", second.port)])
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.trim() == "2 2 ['/ha/web']",
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => missing("the marathon client in .venv (run tests/python/setup-venv.sh)"),
    }

    // The leader dies; the standby takes over with the state it left in
    // ZooKeeper, under the same framework id, with the same tasks.
    first.child.kill().await.unwrap();
    let killed = std::time::Instant::now();
    let me = format!("127.0.0.1:{}", second.port);
    eventually("the second marathon-rs leads", || async {
        (leader_of(second.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    eventually("the same 2 tasks are its own", || async {
        (running(second.port, "ha/web").await == before).then_some(())
    })
    .await;
    eprintln!(
        "marathon-rs failover (2 s session timeout): serving its tasks after {:?}",
        killed.elapsed()
    );
    let frameworks: serde_json::Value = reqwest::get(cluster.url("/frameworks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        frameworks["frameworks"].as_array().unwrap().len(),
        1,
        "one framework, failed over: {frameworks}"
    );
    let r = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{}/v2/apps/ha/web", second.port))
        .json(&serde_json::json!({"instances": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let three = eventually("3 tasks run, the first 2 among them", || async {
        let ids = running(second.port, "ha/web").await;
        (ids.len() == 3 && ids.is_superset(&before)).then_some(ids)
    })
    .await;
    // DELETE /v2/leader: the leader abdicates and a third instance leads.
    let third = spawn_marathon(&cluster.master(), &url);
    eventually("the third names the second as leader", || async {
        (leader_of(third.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .delete(format!("http://127.0.0.1:{}/v2/leader", second.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let me = format!("127.0.0.1:{}", third.port);
    eventually("the third leads, with the same 3 tasks", || async {
        (leader_of(second.port).await.as_deref() == Some(me.as_str())
            && running(third.port, "ha/web").await == three)
            .then_some(())
    })
    .await;
    drop(third);
    drop(second);
    cluster.stop().await;
}

/// A client of the ZooKeeper servers of `url`.
async fn zk_client(url: &zk::ZkUrl) -> zk::zookeeper_client::Client {
    zk::zookeeper_client::Client::connect(&url.servers)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zookeeper_document_is_chunked_whole_and_fenced_against_a_deposed_writer() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let url = server.url("/doc");
    let connect = || zk_client(&url);
    let old = zk::Document::new(connect().await, &url, "/doc/state".into());
    assert_eq!(old.read().await.unwrap(), None);
    // Bigger than ZooKeeper's 1 MB node limit: stored in chunks.
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    old.write(&big).await.unwrap();
    let new = zk::Document::new(connect().await, &url, "/doc/state".into());
    assert_eq!(new.read().await.unwrap().as_deref(), Some(&big[..]));
    new.write(b"the new leader's").await.unwrap();
    // The old writer has not seen that write: its next one is refused.
    let refused = old.write(b"a deposed leader's").await.unwrap_err();
    assert!(matches!(refused, zk::ZkError::Fenced(_)), "{refused}");
    let fresh = zk::Document::new(connect().await, &url, "/doc/state".into());
    assert_eq!(
        fresh.read().await.unwrap().as_deref(),
        Some(&b"the new leader's"[..])
    );
    // The big document's chunks are gone.
    let client = connect().await;
    assert_eq!(
        client
            .list_children("/doc/state/chunks")
            .await
            .unwrap()
            .len(),
        1
    );
    // A pointer that makes no sense is an error, not a crash.
    let open = zk::zookeeper_client::CreateMode::Persistent
        .with_acls(zk::zookeeper_client::Acls::anyone_all());
    client.mkdir("/doc/broken", &open).await.unwrap();
    client
        .create("/doc/broken/current", b"1 99999999 99999999999999", &open)
        .await
        .unwrap();
    let broken = zk::Document::new(connect().await, &url, "/doc/broken".into());
    let err = broken.read().await.unwrap_err();
    assert!(matches!(err, zk::ZkError::Corrupt(..)), "{err}");
}

/// The keyed store (marathon-rs' state, issue 15): entries written in
/// fenced transactions, a write of many carried in several, removals, and a
/// deposed writer refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_entries_write_only_what_they_are_given_and_fence_a_deposed_writer() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let url = server.url("/entries");
    let connect = || zk_client(&url);
    let old = zk::Entries::new(connect().await, &url, "/entries/state".into());
    assert_eq!(old.read().await.unwrap(), None, "nothing written yet");
    // 3 MB in 300 entries: more than one transaction may carry.
    let big: Vec<zk::Change> = (0..300)
        .map(|i| (format!("app:{i}"), Some(vec![i as u8; 10_000])))
        .collect();
    old.write(&big).await.unwrap();
    old.write(&[("app:7".into(), None), ("meta".into(), Some(b"m".to_vec()))])
        .await
        .unwrap();
    let new = zk::Entries::new(connect().await, &url, "/entries/state".into());
    let read = new.read().await.unwrap().unwrap();
    assert_eq!(read.len(), 300, "299 apps and meta");
    assert!(!read.contains_key("app:7"));
    assert_eq!(read["app:8"], vec![8u8; 10_000]);
    assert_eq!(read["meta"], b"m".to_vec());
    new.write(&[("meta".into(), Some(b"the new leader's".to_vec()))])
        .await
        .unwrap();
    // The old writer has not seen that commit: its next one is refused,
    // and changes nothing.
    let refused = old
        .write(&[("meta".into(), Some(b"a deposed leader's".to_vec()))])
        .await
        .unwrap_err();
    assert!(matches!(refused, zk::ZkError::Fenced(_)), "{refused}");
    let fresh = zk::Entries::new(connect().await, &url, "/entries/state".into());
    assert_eq!(
        fresh.read().await.unwrap().unwrap()["meta"],
        b"the new leader's".to_vec()
    );
    let bad = fresh.write(&[("a/b".into(), Some(Vec::new()))]).await;
    assert!(bad.is_err(), "a key with '/' names no single node");
}

/// A TCP proxy to ZooKeeper that, once armed with an operation code, lets
/// the next request of that kind through and cuts the connection instead of
/// passing on its answer: what a client sees when the server it talks to
/// dies right after a commit.
struct ReplyCutter {
    port: u16,
    /// The operation whose answer to cut (0: none).
    armed: Arc<AtomicI32>,
    cuts: Arc<AtomicUsize>,
}

/// ZooKeeper's operation codes.
const OP_SET_DATA: i32 = 5;
const OP_MULTI: i32 = 14;

impl ReplyCutter {
    async fn start(upstream: u16) -> ReplyCutter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicI32::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                tokio::spawn(Self::relay(client, server, a.clone(), c.clone()));
            }
        });
        ReplyCutter { port, armed, cuts }
    }

    fn arm(&self, op: i32) {
        self.armed.store(op, Ordering::SeqCst);
    }

    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Both ways carry frames of a 4-byte length and a body. The first
    /// frame each way is the session's connect request or answer; after
    /// it, a request starts with its xid and operation code, an answer with
    /// the xid it answers.
    async fn relay(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        armed: Arc<AtomicI32>,
        cuts: Arc<AtomicUsize>,
    ) {
        use tokio::io::AsyncWriteExt;
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        // The xid whose answer is cut (0: none yet).
        let cut = Arc::new(AtomicI32::new(0));
        let watch = cut.clone();
        let requests = tokio::spawn(async move {
            let mut frames = Frames::default();
            while let Some(frame) = frames.next(&mut client_read).await {
                if let Some((xid, op)) = frames.header(&frame) {
                    let wanted = armed.load(Ordering::SeqCst);
                    if wanted != 0
                        && op == wanted
                        && armed
                            .compare_exchange(wanted, 0, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        watch.store(xid, Ordering::SeqCst);
                    }
                }
                if server_write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let mut frames = Frames::default();
        while let Some(frame) = frames.next(&mut server_read).await {
            let xid = frames.header(&frame).map(|(xid, _)| xid);
            let target = cut.load(Ordering::SeqCst);
            if target != 0 && xid == Some(target) {
                cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if client_write.write_all(&frame).await.is_err() {
                break;
            }
        }
        requests.abort();
    }
}

/// Length-prefixed frames read off one direction of a ZooKeeper connection.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
    seen: usize,
}

impl Frames {
    async fn next(&mut self, from: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    self.seen += 1;
                    return Some(self.buf.drain(..4 + len).collect());
                }
            }
            let mut chunk = [0u8; 8192];
            match from.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The xid and the next 4 bytes (a request's operation code) of a frame
    /// other than the connection's first.
    fn header(&self, frame: &[u8]) -> Option<(i32, i32)> {
        (self.seen > 1 && frame.len() >= 12).then(|| {
            (
                i32::from_be_bytes(frame[4..8].try_into().unwrap()),
                i32::from_be_bytes(frame[8..12].try_into().unwrap()),
            )
        })
    }
}

/// A commit whose answer is lost with the connection went through: the
/// writer finds its own token on the fence and goes on. (Before, its next
/// write took that commit for another writer's and the marathon-rs leader
/// stepped down when a ZooKeeper server died under it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_found_applied_and_the_writer_goes_on() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let cutter = ReplyCutter::start(server.port).await;
    let url: zk::ZkUrl = format!("zk://127.0.0.1:{}/lost", cutter.port)
        .parse()
        .unwrap();
    let writer = zk::Entries::new(zk_client(&url).await, &url, "/lost/state".into());
    writer
        .write(&[("meta".into(), Some(b"1".to_vec()))])
        .await
        .unwrap();

    cutter.arm(OP_MULTI);
    writer
        .write(&[
            ("meta".into(), Some(b"2".to_vec())),
            ("app:a".into(), Some(b"a".to_vec())),
        ])
        .await
        .expect("the commit went through; its answer was lost");
    assert_eq!(cutter.cuts(), 1);
    // Not fenced by its own commit, and it knows app:a exists (a create
    // would fail).
    writer
        .write(&[
            ("meta".into(), Some(b"3".to_vec())),
            ("app:a".into(), Some(b"b".to_vec())),
        ])
        .await
        .unwrap();
    let reader = zk::Entries::new(zk_client(&url).await, &url, "/lost/state".into());
    let read = reader.read().await.unwrap().unwrap();
    assert_eq!(read["meta"], b"3".to_vec());
    assert_eq!(read["app:a"], b"b".to_vec());

    // The same for the master's registry (a document whose pointer swap's
    // answer is lost).
    let doc = zk::Document::new(zk_client(&url).await, &url, "/lost/registry".into());
    doc.write(b"one").await.unwrap();
    cutter.arm(OP_SET_DATA);
    doc.write(b"two")
        .await
        .expect("the swap went through; its answer was lost");
    assert_eq!(cutter.cuts(), 2);
    doc.write(b"three").await.unwrap();
    let fresh = zk::Document::new(zk_client(&url).await, &url, "/lost/registry".into());
    assert_eq!(fresh.read().await.unwrap().as_deref(), Some(&b"three"[..]));
}

/// A detector that starts before any master has made the election's
/// directory sees the first master that does, whenever it comes: right
/// after the directory appears as well (seen in CI: an agent listed no
/// children, the directory was made before it set its watch for it, and it
/// never heard of the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_started_before_any_master_sees_the_first_one() {
    let Some(server) = ZkServer::start().await else {
        return;
    };
    let record = br#"{"address": {"ip": "10.0.0.1", "port": 5050}, "hostname": "m1"}"#;
    for round in 0..30u64 {
        let url = server.url(&format!("/race{round}"));
        let mut leader = zk::detect(url.clone());
        // The master comes a little after, a different moment each round.
        tokio::time::sleep(Duration::from_millis(round % 10)).await;
        let _candidacy = zk::contend(&url, record, Duration::from_secs(10))
            .await
            .unwrap();
        let seen = zk::current_leader(&mut leader, Duration::from_secs(10)).await;
        assert_eq!(
            seen.map(|l| l.address),
            Some("10.0.0.1:5050".to_string()),
            "round {round}: the detector never saw the master"
        );
    }
}

/// Issue 12.1: marathon-rs with `--zk` hung under concurrent POSTs (a store
/// write waited on ZooKeeper while holding the state machine's lock). Four
/// clients create apps at once while `/ping` and a read are asked
/// throughout; every request must be answered, and every app must be in
/// ZooKeeper for the standby that takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_rs_in_ha_answers_throughout_concurrent_writes_and_keeps_every_app() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let cluster = crate::cluster::Cluster::start(1, "cpus:4;mem:2048").await;
    let url = format!("zk://127.0.0.1:{}/agora/marathon-load", zk.port);
    let mut first = spawn_marathon(&cluster.master(), &url);
    let me = format!("127.0.0.1:{}", first.port);
    eventually("the first marathon-rs leads", || async {
        (leader_of(first.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    let second = spawn_marathon(&cluster.master(), &url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Issue 15: apps stored as entries of their own. 1,000 in CI;
    // AGORA_HA_APPS=5000 for the figures in BENCHMARKS.md.
    let apps: usize = std::env::var("AGORA_HA_APPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let (clients, per_client) = (4, apps.div_ceil(4));
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let (client, writing, base) = (client.clone(), writing.clone(), me.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            let mut worst = Duration::ZERO;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/ping", "/v2/apps/load/w0-0"] {
                    let started = std::time::Instant::now();
                    let r = client.get(format!("http://{base}{path}")).send().await;
                    let r = r.unwrap_or_else(|e| panic!("GET {path} while writing: {e}"));
                    assert!(r.status().as_u16() < 500, "GET {path}: {}", r.status());
                    worst = worst.max(started.elapsed());
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (answered, worst)
        })
    };
    let started = std::time::Instant::now();
    let writers: Vec<_> = (0..clients)
        .map(|w| {
            let (client, base) = (client.clone(), me.clone());
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let app = serde_json::json!({"id": format!("/load/w{w}-{i}"), "cmd": "sleep 1",
                                                 "cpus": 0.01, "mem": 8, "instances": 0});
                    let started = std::time::Instant::now();
                    let r = client
                        .post(format!("http://{base}/v2/apps"))
                        .json(&app)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("POST /load/w{w}-{i}: {e}"));
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                    took.push(started.elapsed());
                }
                took
            })
        })
        .collect();
    // Each client's POSTs in order: the first and the last tenth say
    // whether a write grows with the number of apps stored.
    let mut per_writer = Vec::new();
    for w in writers {
        per_writer.push(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let (answered, worst) = prober.await.unwrap();
    let tenth = per_client / 10;
    let mean = |pick: &dyn Fn(&Vec<Duration>) -> &[Duration]| {
        let all: Vec<Duration> = per_writer.iter().flat_map(|t| pick(t).to_vec()).collect();
        all.iter().sum::<Duration>() / all.len().max(1) as u32
    };
    let (early, late) = (mean(&|t| &t[..tenth]), mean(&|t| &t[t.len() - tenth..]));
    let mut took: Vec<Duration> = per_writer.into_iter().flatten().collect();
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "marathon-rs in HA: {} POSTs from {clients} clients in {elapsed:?}: p50 {:?}, p99 {:?}, \
         max {:?}; the first tenth {early:?} on average, the last {late:?}; \
         {answered} reads answered meanwhile, the slowest in {worst:?}",
        clients * per_client,
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let ids = |v: serde_json::Value| -> std::collections::BTreeSet<String> {
        v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["id"].as_str().map(str::to_string))
            .filter(|id| id.starts_with("/load/"))
            .collect()
    };
    let apps = |port: u16| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://127.0.0.1:{port}/v2/apps"))
                .send()
                .await
                .ok()?;
            r.json::<serde_json::Value>().await.ok()
        }
    };
    let created = ids(apps(first.port).await.unwrap());
    assert_eq!(created.len(), clients * per_client);
    // The leader dies; the standby has every app from ZooKeeper.
    first.child.kill().await.unwrap();
    let me = format!("127.0.0.1:{}", second.port);
    eventually("the second marathon-rs leads", || async {
        (leader_of(second.port).await.as_deref() == Some(me.as_str())).then_some(())
    })
    .await;
    assert_eq!(ids(apps(second.port).await.unwrap()), created);
    drop(second);
    cluster.stop().await;
}
