//! Faults on a cluster of hosts (agora-testbed): leaders killed, agents
//! killed and restarted, hosts cut off, ZooKeeper losing servers and
//! quorum, lossy links. Each scenario runs small here; the `full_*` tests
//! (`--ignored`) run it at the size of issue 14 and print its figures, as
//! BENCHMARKS.md records:
//!
//! ```text
//! cargo test --release --test it -- --ignored --nocapture faults::full_
//! ```
//!
//! "Nothing lost" is counted from outside: the task processes on every
//! host (found by their command line), the task ids marathon-rs and the
//! master report, and the processes' ids, which change when a task is
//! restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_testbed::cluster::{MARATHON_PORT, MASTER_PORT};
use agora_testbed::{Cluster, Layout};
use serde_json::{Value, json};

use crate::cluster::eventually;
use crate::hosts::testbed;

/// A scenario's test in CI (small) and at full size (`--ignored`), both
/// printing the figures.
macro_rules! scenario {
    ($small:ident: $run:ident($($s:expr),*), $full:ident($($f:expr),*), $why:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $small() {
            if let Some(f) = $run($($s),*).await {
                f.print();
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = $why]
        async fn $full() {
            if let Some(f) = $run($($f),*).await {
                f.print();
            }
        }
    };
}

/// Figures of one scenario: durations measured each round.
struct Figures {
    what: &'static str,
    samples: Vec<Duration>,
}

impl Figures {
    fn new(what: &'static str) -> Figures {
        Figures {
            what,
            samples: vec![],
        }
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * p).round() as usize;
        s.get(i).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "FIGURES {}: {} rounds, p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            self.what,
            self.samples.len(),
            self.percentile(0.5).as_secs_f64(),
            self.percentile(0.99).as_secs_f64(),
            self.samples
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        );
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The processes of every agent host whose command line is exactly
/// `argv`: a task's own process, found from outside.
fn task_processes(cluster: &Cluster, argv: &[&str]) -> BTreeMap<String, BTreeSet<u32>> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut out = BTreeMap::new();
    for i in 1..=cluster.layout().agents {
        let host = format!("agent{i}");
        let netns = cluster.network().host(&host).unwrap().netns.clone();
        let pids = std::process::Command::new("ip")
            .args(["netns", "pids", &netns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let found: BTreeSet<u32> = pids
            .lines()
            .filter_map(|p| p.trim().parse().ok())
            .filter(|pid: &u32| {
                std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone())
            })
            .collect();
        out.insert(host, found);
    }
    out
}

fn count(procs: &BTreeMap<String, BTreeSet<u32>>) -> usize {
    procs.values().map(BTreeSet::len).sum()
}

/// The marathon-rs leading now.
pub(crate) async fn marathon_leader(cluster: &Cluster) -> Option<String> {
    for i in 1..=cluster.layout().marathons {
        let host = format!("marathon{i}");
        if let Ok((200, v)) = cluster.get(&host, MARATHON_PORT, "/v2/leader").await
            && let Some(l) = v["leader"].as_str()
        {
            let leader = l.split(':').next().unwrap_or_default().to_string();
            if leader == host {
                return Some(leader);
            }
        }
    }
    None
}

/// The leading master, waited for (a moment without one, or a slow
/// answer from a busy host, is no failure).
async fn leading_master(cluster: &Cluster) -> String {
    until(cluster, "a leading master", Duration::from_secs(60), || {
        cluster.leading_master()
    })
    .await
}

/// The leading marathon-rs, waited for.
async fn leading_marathon(cluster: &Cluster) -> String {
    until(
        cluster,
        "a leading marathon-rs",
        Duration::from_secs(60),
        || marathon_leader(cluster),
    )
    .await
}

/// marathon-rs' running task ids of `app`, from its leader.
async fn running_tasks(cluster: &Cluster, app: &str) -> Option<BTreeSet<String>> {
    let leader = marathon_leader(cluster).await?;
    let (status, v) = cluster
        .get(&leader, MARATHON_PORT, &format!("/v2/apps/{app}/tasks"))
        .await
        .ok()?;
    (status == 200).then_some(())?;
    Some(
        v["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// The task ids the leading master holds as running.
async fn master_running_tasks(cluster: &Cluster) -> Option<BTreeSet<String>> {
    let state = cluster.master_state().await?;
    Some(
        state["frameworks"]
            .as_array()?
            .iter()
            .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["state"] == "TASK_RUNNING")
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// True once the leading master has every agent active (re-registered).
async fn all_agents_active(cluster: &Cluster) -> bool {
    let Some(state) = cluster.master_state().await else {
        return false;
    };
    let active = state["slaves"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["active"] == true).count())
        .unwrap_or(0);
    active == cluster.layout().agents
}

/// Waits for `what`, restarting what exits meanwhile (the supervisor a
/// real host has), for at most `within`.
async fn until<T, F, Fut>(cluster: &Cluster, what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        cluster.restart_exited().unwrap();
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A long-running app of `n` instances; its tasks run `sleep <marker>`.
async fn deploy_sleepers(cluster: &Cluster, id: &str, n: usize, marker: &str, extra: Value) {
    let mut app = json!({
        "id": id,
        "cmd": format!("exec sleep {marker}"),
        "cpus": 0.01,
        "mem": 8,
        "instances": n,
    });
    if let (Some(a), Some(e)) = (app.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    let leader = until(
        cluster,
        "a marathon-rs leads",
        Duration::from_secs(60),
        || marathon_leader(cluster),
    )
    .await;
    crate::hosts::post_app(cluster, &leader, &app).await;
}

/// What is running, seen from outside: task processes per host, the
/// ids marathon-rs and the master report.
#[derive(Debug, PartialEq)]
struct Snapshot {
    processes: BTreeMap<String, BTreeSet<u32>>,
    marathon: BTreeSet<String>,
    master: BTreeSet<String>,
}

/// Waits until `n` instances of `app` run, each one process, and returns
/// what runs.
async fn steady(
    cluster: &Cluster,
    app: &str,
    marker: &str,
    n: usize,
    within: Duration,
) -> Snapshot {
    let argv = ["sleep", marker];
    let deadline = Instant::now() + within;
    let mut seen = String::from("nothing yet");
    loop {
        cluster.restart_exited().unwrap();
        if all_agents_active(cluster).await
            && let Some(marathon) = running_tasks(cluster, app).await
            && let Some(master) = master_running_tasks(cluster).await
        {
            let processes = task_processes(cluster, &argv);
            if marathon.len() == n && master == marathon && count(&processes) == n {
                return Snapshot {
                    processes,
                    marathon,
                    master,
                };
            }
            seen = format!(
                "marathon-rs {} running, the master {} ({} not at marathon-rs), {} processes",
                marathon.len(),
                master.len(),
                master.difference(&marathon).count(),
                count(&processes)
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} instances of {app} running: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A test bed of `layout`, one at a time, running `n` instances of
/// `/sleepers` (tasks `sleep <marker>`), steady: where most scenarios
/// start. Dropped in order: the cluster, its directory, then the lock.
struct Bed {
    cluster: Cluster,
    _dir: tempfile::TempDir,
    _lock: tokio::sync::MutexGuard<'static, ()>,
    before: Snapshot,
}

async fn bed_with_sleepers(layout: Layout, n: usize, marker: &str) -> Option<Bed> {
    let lock = crate::hosts::one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = testbed(layout, dir.path()).await?;
    deploy_sleepers(&cluster, "/sleepers", n, marker, json!({})).await;
    let before = steady(&cluster, "sleepers", marker, n, Duration::from_secs(180)).await;
    Some(Bed {
        cluster,
        _dir: dir,
        _lock: lock,
        before,
    })
}

fn small_layout() -> Layout {
    Layout {
        dns: false,
        lb: false,
        ..Layout::default()
    }
}

/// The leading master SIGKILLed `rounds` times (and restarted after) with
/// `tasks` running: a new leader each round, every agent re-registered,
/// the same tasks in the same processes.
async fn leader_master_killed(rounds: usize, tasks: usize) -> Option<Figures> {
    let layout = Layout {
        agent_resources: "cpus:8;mem:4096;disk:1024;ports:[31000-31999]".into(),
        ..small_layout()
    };
    let bed = bed_with_sleepers(layout, tasks, "100001").await?;
    let (cluster, before) = (&bed.cluster, &bed.before);
    let mut figures =
        Figures::new("leader master SIGKILL: to a new leader with every agent re-registered");
    for round in 0..rounds {
        let leader = leading_master(cluster).await;
        let t0 = Instant::now();
        cluster.kill_host(&leader).await.unwrap();
        until(
            cluster,
            "a new leader with every agent",
            Duration::from_secs(60),
            || async {
                let now = cluster.leading_master().await?;
                (now != leader && all_agents_active(cluster).await).then_some(())
            },
        )
        .await;
        figures.samples.push(t0.elapsed());
        cluster.start_host(&leader).unwrap();
        let after = steady(
            cluster,
            "sleepers",
            "100001",
            tasks,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            &after, before,
            "round {round}: a task was killed or restarted"
        );
    }
    Some(figures)
}

scenario!(
    leader_master_sigkill_keeps_every_task: leader_master_killed(2, 12),
    full_leader_master_sigkill(50, 300),
    "full size (issue 14): 50 rounds, 300 tasks"
);

/// The leading marathon-rs SIGKILLed `rounds` times: the standby leads
/// with the same framework id, no task lost or doubled.
async fn leader_marathon_killed(rounds: usize) -> Option<Figures> {
    let bed = bed_with_sleepers(small_layout(), 6, "100002").await?;
    let (cluster, before) = (&bed.cluster, &bed.before);
    let framework = |leader: String| {
        let cluster = &cluster;
        async move {
            let (_, info) = cluster.get(&leader, MARATHON_PORT, "/v2/info").await.ok()?;
            info["frameworkId"].as_str().map(str::to_string)
        }
    };
    let leader = leading_marathon(cluster).await;
    let id = framework(leader).await.expect("a framework id");
    let mut figures = Figures::new("leader marathon-rs SIGKILL: to the standby leading");
    for round in 0..rounds {
        let leader = marathon_leader(cluster)
            .await
            .expect("a leading marathon-rs");
        let t0 = Instant::now();
        cluster.kill_host(&leader).await.unwrap();
        let next = until(
            cluster,
            "the standby marathon-rs leads",
            Duration::from_secs(60),
            || async { marathon_leader(cluster).await.filter(|l| *l != leader) },
        )
        .await;
        figures.samples.push(t0.elapsed());
        assert_eq!(
            framework(next).await.as_deref(),
            Some(id.as_str()),
            "round {round}"
        );
        cluster.start_host(&leader).unwrap();
        let after = steady(cluster, "sleepers", "100002", 6, Duration::from_secs(60)).await;
        assert_eq!(
            &after, before,
            "round {round}: a task was lost, doubled or restarted"
        );
    }
    Some(figures)
}

scenario!(
    leader_marathon_sigkill_keeps_the_framework_and_tasks: leader_marathon_killed(2),
    full_leader_marathon_sigkill(20),
    "full size (issue 14): 20 rounds"
);

/// An agent SIGKILLed and restarted on its work dir `rounds` times: its
/// tasks are adopted, none restarted.
async fn agent_killed(rounds: usize, tasks: usize) -> Option<Figures> {
    let layout = Layout {
        agent_resources: "cpus:8;mem:4096;disk:1024;ports:[31000-31999]".into(),
        ..small_layout()
    };
    let bed = bed_with_sleepers(layout, tasks, "100003").await?;
    let (cluster, before) = (&bed.cluster, &bed.before);
    let mut figures = Figures::new("agent SIGKILL + restart: to re-registered");
    for round in 0..rounds {
        let agent = format!("agent{}", round % cluster.layout().agents + 1);
        cluster.kill_host(&agent).await.unwrap();
        let t0 = Instant::now();
        let started = unix_now();
        cluster.start_host(&agent).unwrap();
        until(
            cluster,
            "the agent re-registered",
            Duration::from_secs(60),
            || async {
                let state = cluster.master_state().await?;
                state["slaves"]
                    .as_array()?
                    .iter()
                    .any(|s| {
                        s["hostname"] == agent.as_str()
                            && s["active"] == true
                            && s["reregistered_time"]
                                .as_f64()
                                .is_some_and(|t| t >= started)
                    })
                    .then_some(())
            },
        )
        .await;
        figures.samples.push(t0.elapsed());
        let after = steady(
            cluster,
            "sleepers",
            "100003",
            tasks,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            &after, before,
            "round {round}: a task on {agent} was not adopted"
        );
    }
    Some(figures)
}

scenario!(
    agent_sigkill_and_restart_adopts_its_tasks: agent_killed(3, 9),
    full_agent_sigkill_and_restart(100, 50),
    "full size (issue 14): 100 rounds, 50 tasks"
);

/// An agent host cut off (iptables DROP both ways) for `cut`, `rounds`
/// times: its tasks become unreachable, marathon-rs replaces them, and
/// after healing the old copies are killed: exactly `n` instances, no
/// process left over.
async fn agent_partitioned(rounds: usize, cut: Duration) -> Option<Figures> {
    let _hosts = crate::hosts::one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        // Unreachable after 3 missed pings of 1 s.
        master_flags: [
            "--agent-ping-timeout",
            "1s",
            "--max-agent-ping-timeouts",
            "3",
        ]
        .map(String::from)
        .to_vec(),
        ..small_layout()
    };
    let cluster = testbed(layout, dir.path()).await?;
    let n = 6;
    deploy_sleepers(
        &cluster,
        "/sleepers",
        n,
        "100004",
        json!({"unreachableStrategy": {"inactiveAfterSeconds": 2, "expungeAfterSeconds": 4}}),
    )
    .await;
    steady(&cluster, "sleepers", "100004", n, Duration::from_secs(60)).await;
    let mut figures = Figures::new("agent partitioned: cut to every instance replaced elsewhere");
    for round in 0..rounds {
        let procs = task_processes(&cluster, &["sleep", "100004"]);
        // The agent with the most instances.
        let (agent, on_it) = procs
            .iter()
            .max_by_key(|(_, p)| p.len())
            .map(|(h, p)| (h.clone(), p.clone()))
            .unwrap();
        assert!(!on_it.is_empty());
        let t0 = Instant::now();
        cluster.network().partition(&agent).unwrap();
        // Replacements elsewhere: n processes off the cut host.
        until(
            &cluster,
            "replacements off the cut agent",
            cut + Duration::from_secs(60),
            || async {
                let procs = task_processes(&cluster, &["sleep", "100004"]);
                let elsewhere: usize = procs
                    .iter()
                    .filter(|(h, _)| **h != agent)
                    .map(|(_, p)| p.len())
                    .sum();
                (elsewhere == n).then_some(())
            },
        )
        .await;
        figures.samples.push(t0.elapsed());
        let left = cut.saturating_sub(t0.elapsed());
        tokio::time::sleep(left).await;
        // Still cut off: its old copies run on (nothing could tell them).
        assert_eq!(
            task_processes(&cluster, &["sleep", "100004"])[&agent],
            on_it
        );
        cluster.network().heal(&agent).unwrap();
        let after = steady(&cluster, "sleepers", "100004", n, Duration::from_secs(90)).await;
        assert!(
            after.processes[&agent].is_disjoint(&on_it),
            "round {round}: the old copies on {agent} were killed after healing"
        );
    }
    Some(figures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_agent_is_replaced_and_its_old_copies_killed() {
    agent_partitioned(1, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "full size (issue 14): 3 rounds of 30 s, 3 of 5 min"]
async fn full_partitioned_agent() {
    for cut in [Duration::from_secs(30), Duration::from_secs(300)] {
        if let Some(f) = agent_partitioned(3, cut).await {
            f.print();
        }
    }
}

/// Samples which masters answer as the leader, every 100 ms, until
/// `stop`: (master, first and last moment seen leading) per epoch of
/// leadership, in order.
async fn leadership_timeline(
    cluster: &Cluster,
    within: Duration,
    mut stop: impl FnMut(&[(String, Instant, Instant)]) -> bool,
) -> Vec<(String, Instant, Instant)> {
    let deadline = Instant::now() + within;
    let mut timeline: Vec<(String, Instant, Instant)> = vec![];
    loop {
        for i in 1..=cluster.layout().masters {
            let host = format!("master{i}");
            let sent = Instant::now();
            if let Ok((200, state)) = cluster.get(&host, MASTER_PORT, "/master/state").await
                && state["leader_info"]["hostname"] == host.as_str()
            {
                let answered = Instant::now();
                match timeline.last_mut() {
                    Some((h, _, last)) if *h == host => *last = sent,
                    _ => timeline.push((host, answered, sent)),
                }
            }
        }
        if stop(&timeline) {
            return timeline;
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not move: {timeline:?}"
        );
        cluster.restart_exited().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leading master cut off from ZooKeeper only, `rounds` times: it
/// stops answering as leader before another master starts.
async fn leader_cut_from_zookeeper(rounds: usize) -> Option<Figures> {
    let _hosts = crate::hosts::one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = testbed(small_layout(), dir.path()).await?;
    let mut figures = Figures::new(
        "leader cut from ZooKeeper: gap between its last and the next leader's first answer",
    );
    for round in 0..rounds {
        let leader = leading_master(&cluster).await;
        cluster
            .network()
            .cut(&leader, &["zk1", "zk2", "zk3"])
            .unwrap();
        let timeline = leadership_timeline(&cluster, Duration::from_secs(60), |t| {
            t.iter().any(|(h, _, _)| *h != leader)
        })
        .await;
        // The old leader's last answer as leader was sent before the new
        // one first answered: never two leaders at once.
        let old_last = timeline
            .iter()
            .filter(|(h, _, _)| *h == leader)
            .map(|(_, _, last)| *last)
            .max();
        let (next, new_first, _) = timeline.iter().find(|(h, _, _)| *h != leader).unwrap();
        println!("round {round}: leadership {timeline:?}");
        if let Some(old_last) = old_last {
            assert!(
                old_last < *new_first,
                "round {round}: {leader} still led after {next} started: {timeline:?}"
            );
            figures.samples.push(*new_first - old_last);
        }
        cluster.network().heal(&leader).unwrap();
        until(
            &cluster,
            "every agent with the new leader",
            Duration::from_secs(60),
            || async { all_agents_active(&cluster).await.then_some(()) },
        )
        .await;
    }
    Some(figures)
}

scenario!(
    leader_cut_from_zookeeper_stops_before_another_leads: leader_cut_from_zookeeper(1),
    full_leader_cut_from_zookeeper(5),
    "full size (issue 14): 5 rounds"
);

/// ZooKeeper loses one server of 3 (no effect), then a second (quorum
/// lost: leaders step down, nothing running is killed), then both come
/// back and everything resumes.
async fn zookeeper_quorum(rounds: usize) -> Option<Figures> {
    let bed = bed_with_sleepers(small_layout(), 6, "100005").await?;
    let (cluster, before) = (&bed.cluster, &bed.before);
    let mut figures =
        Figures::new("ZooKeeper quorum back: to every agent re-registered and 6 tasks running");
    for round in 0..rounds {
        let master = leading_master(cluster).await;
        let master_pid = cluster.pid(&master);
        let marathon = marathon_leader(cluster)
            .await
            .expect("a marathon-rs leader");
        let marathon_pid = cluster.pid(&marathon);

        cluster.kill_host("zk1").await.unwrap();
        // Two session timeouts: long enough for a leader to have noticed.
        tokio::time::sleep(cluster.layout().zk_session_timeout * 2).await;
        assert_eq!(
            cluster.leading_master().await.as_deref(),
            Some(master.as_str()),
            "round {round}"
        );
        assert_eq!(
            cluster.pid(&master),
            master_pid,
            "round {round}: one server down changed the leader"
        );
        // The same marathon-rs leads, not restarted. (A commit of its state
        // whose answer died with zk1 once made it take its own commit for
        // another leader's and step down; `zk::Entries` now reads it back.)
        let leader = until(
            cluster,
            "marathon-rs answering as leader",
            Duration::from_secs(20),
            || marathon_leader(cluster),
        )
        .await;
        assert_eq!(
            leader, marathon,
            "round {round}: one server down changed the leader"
        );
        assert_eq!(cluster.pid(&marathon), marathon_pid);

        cluster.kill_host("zk2").await.unwrap();
        eventually("the leaders step down", || async {
            let stepped = cluster.leading_master().await.is_none()
                && marathon_leader(cluster).await.is_none();
            stepped.then_some(())
        })
        .await;
        // Nothing running was killed.
        assert_eq!(
            task_processes(cluster, &["sleep", "100005"]),
            before.processes,
            "round {round}"
        );

        let t0 = Instant::now();
        cluster.start_host("zk1").unwrap();
        cluster.start_host("zk2").unwrap();
        let after = steady(cluster, "sleepers", "100005", 6, Duration::from_secs(120)).await;
        figures.samples.push(t0.elapsed());
        assert_eq!(
            &after, before,
            "round {round}: a task was lost after the quorum returned"
        );
    }
    Some(figures)
}

scenario!(
    zookeeper_losing_quorum_kills_nothing: zookeeper_quorum(1),
    full_zookeeper_quorum(3),
    "full size (issue 14): 3 rounds"
);

/// `tasks` short tasks of a pymesos framework while every agent's link
/// drops 10% of its packets: every task ends FINISHED, its updates in
/// order (at least once each, as Mesos promises).
async fn lossy_links(rounds: usize, tasks: usize) -> Option<Figures> {
    let _hosts = crate::hosts::one_testbed().await;
    let Some(python) = crate::pymesos::python() else {
        crate::cluster::missing("pymesos in .venv (run tests/python/setup-venv.sh)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        marathons: 0,
        ..small_layout()
    };
    let cluster = testbed(layout, dir.path()).await?;
    for i in 1..=cluster.layout().agents {
        cluster.network().lose(&format!("agent{i}"), 0.1).unwrap();
    }
    let rank = |s: &str| match s {
        "TASK_STAGING" => 0,
        "TASK_STARTING" => 1,
        "TASK_RUNNING" => 2,
        _ => 3,
    };
    let mut figures = Figures::new("10% loss on agent links: all short tasks FINISHED");
    for round in 0..rounds {
        let mut cmd = cluster.network().command("client1", &python).unwrap();
        cmd.env("PYMESOS_WAIT", "300");
        let (_, secret) = cluster.admin();
        let t0 = Instant::now();
        let summary = crate::pymesos::run_scheduler_in(
            cmd,
            &cluster.zk_url("mesos"),
            "many",
            tasks,
            Some(("admin", &secret)),
        )
        .await;
        figures.samples.push(t0.elapsed());
        let states = summary["states"].as_object().unwrap();
        assert_eq!(states.len(), tasks, "round {round}: {summary}");
        for (task, s) in states {
            let s: Vec<&str> = s
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                s.last(),
                Some(&"TASK_FINISHED"),
                "round {round}, {task}: {s:?}"
            );
            assert!(
                s.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
                "round {round}, {task}: updates out of order: {s:?}"
            );
        }
    }
    Some(figures)
}

scenario!(
    lossy_agent_links_lose_no_status_update: lossy_links(1, 40),
    full_lossy_agent_links(3, 200),
    "full size (issue 14): 3 rounds of 200 tasks"
);

/// The leading master killed in the middle of deploying `n` instances,
/// `rounds` times: the deployment completes with exactly `n`, no
/// duplicate and no orphan process.
async fn master_killed_during_deployment(rounds: usize, n: usize) -> Option<Figures> {
    let _hosts = crate::hosts::one_testbed().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout {
        agents: if n > 100 { 5 } else { 3 },
        agent_resources: "cpus:64;mem:131072;disk:1024;ports:[31000-31999]".into(),
        // Starting 1,000 executors on 2 cores starves ZooKeeper's clients
        // long enough for 4 s sessions to expire (leaders flap); this is
        // the default (as Mesos').
        zk_session_timeout: if n > 100 {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(4)
        },
        ..small_layout()
    };
    let cluster = testbed(layout, dir.path()).await?;
    let mut figures = Figures::new("leader master killed mid-deployment: to all instances running");
    for round in 0..rounds {
        let marker = format!("{}", 200000 + round);
        let app = format!("/deploy{round}");
        let t0 = Instant::now();
        deploy_sleepers(&cluster, &app, n, &marker, json!({})).await;
        until(
            &cluster,
            "a third of the instances running",
            Duration::from_secs(300),
            || async {
                (count(&task_processes(&cluster, &["sleep", &marker])) >= n / 3).then_some(())
            },
        )
        .await;
        let killed = leading_master(&cluster).await;
        cluster.kill_host(&killed).await.unwrap();
        let after = steady(
            &cluster,
            app.trim_start_matches('/'),
            &marker,
            n,
            Duration::from_secs(600),
        )
        .await;
        figures.samples.push(t0.elapsed());
        // Its supervisor brings the killed master back, as a standby.
        cluster.start_host(&killed).unwrap();
        let leader = leading_marathon(&cluster).await;
        until(
            &cluster,
            "the deployment done",
            Duration::from_secs(60),
            || async {
                let (_, d) = cluster
                    .get(&leader, MARATHON_PORT, "/v2/deployments")
                    .await
                    .ok()?;
                d.as_array()?.is_empty().then_some(())
            },
        )
        .await;
        assert_eq!(
            after.marathon.len(),
            n,
            "round {round}: no duplicate instance"
        );
        assert_eq!(
            count(&task_processes(&cluster, &["sleep", &marker])),
            n,
            "round {round}: no orphan"
        );
        // Destroyed, nothing of it is left on any host.
        let (status, body) = cluster
            .send(
                reqwest::Method::DELETE,
                &leader,
                MARATHON_PORT,
                &format!("/v2/apps{app}"),
                &json!({}),
            )
            .await
            .unwrap();
        assert!(status < 300, "{status} {body}");
        until(
            &cluster,
            "the app's processes gone",
            Duration::from_secs(300),
            || async { (count(&task_processes(&cluster, &["sleep", &marker])) == 0).then_some(()) },
        )
        .await;
    }
    Some(figures)
}

scenario!(
    leader_master_killed_mid_deployment_completes_it: master_killed_during_deployment(1, 30),
    full_leader_master_killed_mid_deployment(5, 1000),
    "full size (issue 14): 5 rounds of 1,000 instances"
);
