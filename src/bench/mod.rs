//! `agora bench`: the measurements behind BENCHMARKS.md.
//!
//! - `agora bench allocator`: Mesos' allocator benchmark (`DeclineOffers`):
//!   agents `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`, each partly
//!   used by one framework; every round every framework declines what it was
//!   offered with a long filter, then one allocation pass is timed.
//!   With `--through-master` the same grid runs through the master core,
//!   each framework declining all its offers in one call (`offers.rs`).
//! - `agora bench backoff`: the offer rate of an app in launch backoff.
//! - `agora bench launch`: a master and one agent in this process; one task
//!   (`true`) at a time; time from ACCEPT to TASK_RUNNING and TASK_FINISHED,
//!   against a bare spawn of the same command.
//! - `agora bench marathon`: a master and local agents in this process,
//!   marathon-rs as a child process; apps of `sleep` tasks are POSTed and the
//!   time until every instance runs is measured, with marathon-rs' CPU time
//!   and peak RSS (see `marathon.rs`).
//! - `agora bench dns`: dnsperf against `agora dns` and NSD with the same
//!   names, each pinned to one core (see `dns.rs`).
//! - `agora bench docker`: Docker Swarm against a marathon-rs app of the same
//!   image, and per-container launch overhead over `docker run` (see
//!   `docker.rs`).
//! - `agora bench lb`: `agora lb`'s render, check, reload and Runtime API
//!   times at 1,000 to 33,000 servers with a real HAProxy (see
//!   `lb.rs`).

mod dns;
mod docker;
mod lb;
mod marathon;
mod offers;
mod security;

use std::time::{Duration, Instant};

use agora_master_core::Time;
use agora_master_core::allocator::{Allocator, AllocatorConfig};
use agora_master_core::ids::{AgentId, FrameworkId};
use agora_proto::resources::Resources;
use anyhow::Context as _;
use clap::{Args, Subcommand};

/// `agora bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Subcommand, Debug, Clone)]
enum Bench {
    /// Allocation pass time on Mesos' allocator benchmark grid.
    Allocator {
        /// Agents, e.g. 10000 (several: comma separated, paired with --frameworks).
        #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000,10000")]
        agents: Vec<usize>,
        /// Frameworks, e.g. 1000.
        #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000")]
        frameworks: Vec<usize>,
        /// Rounds per size (default: twice the frameworks, as Mesos).
        #[arg(long)]
        rounds: Option<usize>,
        /// Drive the master core instead of the allocator alone: agents
        /// register, frameworks subscribe, and each declines all its offers
        /// in one DECLINE call, as marathon-rs does.
        #[arg(long)]
        through_master: bool,
        /// Also run each size with the frameworks in this many roles, each
        /// with a quota (a guarantee and a limit), beside the rows without
        /// (0: only those).
        #[arg(long, default_value_t = 100)]
        quota_roles: usize,
    },
    /// What TLS and authentication cost: registration, launch, GET_STATE, with and without.
    Security {
        /// Tasks launched one at a time (and then in the state).
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        /// Agents registered one after another.
        #[arg(long, default_value_t = 20)]
        registrations: usize,
        /// GET_STATE requests.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// The offer rate of one Marathon app in launch backoff (`master/offers_made`).
    Backoff {
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Task launch latency on one local agent.
    Launch {
        /// Tasks, launched one at a time.
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        /// The agora binary for the command executor (default: this one).
        #[arg(long)]
        executor_path: Option<std::path::PathBuf>,
    },
    /// marathon-rs deploy time: POST to every instance running, with its CPU and RSS.
    Marathon {
        /// Scenarios `APPSxINSTANCES`, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1x1000,100x10", value_parser = scenario)]
        scenarios: Vec<(usize, usize)>,
        /// Local agents.
        #[arg(long, default_value_t = 3, value_parser = between::<usize>(1, 1000))]
        agents: usize,
    },
    /// DNS queries per second: agora dns against NSD, each on one core (dnsperf).
    Dns {
        /// Running tasks the servers know.
        #[arg(long, default_value_t = 1000, value_parser = between::<usize>(1, 3000))]
        tasks: usize,
        /// Seconds of dnsperf per server.
        #[arg(long, default_value_t = 10, value_parser = between::<u32>(1, 600))]
        seconds: u32,
    },
    /// Docker tasks: Swarm against marathon-rs, and launch overhead over `docker run`.
    Docker {
        /// The image (built from /bin/busybox when missing).
        #[arg(long, default_value = "agora-bench/busybox:1", value_parser = image_reference)]
        image: String,
        /// Replicas / instances of the service and the app.
        #[arg(long, default_value_t = 20, value_parser = between::<usize>(1, 500))]
        replicas: usize,
        /// Containers launched one at a time for the overhead.
        #[arg(long, default_value_t = 30, value_parser = between::<usize>(1, 1000))]
        launches: usize,
        /// Rounds of Swarm against Agora (the median is reported; 0 skips it).
        #[arg(long, default_value_t = 3, value_parser = between::<usize>(0, 20))]
        rounds: usize,
    },
    /// agora lb: render, haproxy -c, reload and Runtime API update times.
    Lb {
        /// Backend servers (apps of 10 tasks), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,33000",
              value_parser = between::<usize>(10, 40_000))]
        servers: Vec<usize>,
        /// Single-task changes applied per size.
        #[arg(long, default_value_t = 20, value_parser = between::<usize>(1, 1000))]
        changes: usize,
        /// Virtual hosts for the routing comparison (ACL per host against
        /// --haproxy-map), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000",
              value_parser = between::<usize>(1, 50_000))]
        routing: Vec<usize>,
        /// Requests per routing measurement.
        #[arg(long, default_value_t = 2000, value_parser = between::<usize>(10, 100_000))]
        requests: usize,
    },
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Bench::Allocator {
            agents,
            frameworks,
            rounds,
            through_master,
            quota_roles,
        } => allocator(&agents, &frameworks, rounds, through_master, quota_roles),
        Bench::Backoff { seconds } => offers::backoff(seconds).await,
        Bench::Security {
            tasks,
            registrations,
            requests,
        } => security::run(tasks, registrations, requests).await,
        Bench::Launch {
            tasks,
            executor_path,
        } => launch_latency(tasks, executor_path).await,
        Bench::Dns { tasks, seconds } => dns::run(tasks, seconds).await,
        Bench::Lb {
            servers,
            changes,
            routing,
            requests,
        } => tokio::task::block_in_place(|| {
            lb::run(&servers, changes)?;
            lb::routing(&routing, requests)
        }),
        Bench::Docker {
            image,
            replicas,
            launches,
            rounds,
        } => docker::run(&image, replicas, launches, rounds).await,
        Bench::Marathon { scenarios, agents } => marathon::run(&scenarios, agents).await,
    }
}

/// A flag's value parser for integers from `min` to `max`: clap names the
/// flag and the range when a value is outside it.
fn between<T>(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    clap::builder::RangedU64ValueParser::<T>::new().range(min..=max)
}

/// `--scenarios`: `APPSxINSTANCES`, at most 20,000 tasks.
fn scenario(s: &str) -> Result<(usize, usize), String> {
    let (apps, instances) = s
        .split_once('x')
        .and_then(|(a, i)| {
            Some((
                a.trim().parse::<usize>().ok()?,
                i.trim().parse::<usize>().ok()?,
            ))
        })
        .ok_or_else(|| format!("'{s}' is not APPSxINSTANCES, e.g. 1x1000"))?;
    if apps == 0 || instances == 0 || apps.saturating_mul(instances) > 20_000 {
        return Err(format!("'{s}' must be between 1x1 and 20,000 tasks"));
    }
    Ok((apps, instances))
}

/// `--image`: a Docker image reference.
fn image_reference(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 255
        || s.starts_with('-')
        || !s.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(format!("'{s}' is not an image reference"));
    }
    Ok(s.to_string())
}

/// `agora bench allocator`: a table row per (agents, frameworks) size.
fn allocator(
    agents: &[usize],
    frameworks: &[usize],
    rounds: Option<usize>,
    through_master: bool,
    quota_roles: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        agents.len() == frameworks.len(),
        "--agents and --frameworks need the same number of values"
    );
    println!(
        "{:>7} {:>10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10} {:>17}",
        "agents",
        "frameworks",
        "quotas",
        "rounds",
        "first ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "offering p50 ms"
    );
    let with_quota: &[usize] = if through_master || quota_roles == 0 {
        &[0]
    } else {
        &[0, quota_roles]
    };
    for ((&a, &f), &q) in agents
        .iter()
        .zip(frameworks)
        .flat_map(|p| with_quota.iter().map(move |q| (p, q)))
    {
        let r = rounds.unwrap_or(2 * f);
        let (first, rounds) = if through_master {
            let rounds = offers::master_decline_offers(a, f, r)?;
            (rounds.first().map(|t| t.0).unwrap_or_default(), rounds)
        } else {
            allocator_decline_offers(a, f, r, q)
        };
        let times: Vec<Duration> = rounds.iter().map(|(t, _)| *t).collect();
        // The rounds that offered something (the others find every agent
        // declined by every framework).
        let offering: Vec<Duration> = rounds
            .iter()
            .filter(|(_, offers)| *offers > 0)
            .map(|(t, _)| *t)
            .collect();
        let p = |q: f64| percentile(&times, q);
        println!(
            "{a:>7} {f:>10} {q:>6} {r:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} ({:>4})",
            ms(first),
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*times.iter().max().unwrap_or(&Duration::ZERO)),
            ms(percentile(&offering, 0.5)),
            offering.len()
        );
    }
    Ok(())
}

/// A master on an ephemeral local port, as every benchmark starts one.
pub(super) async fn local_master() -> anyhow::Result<agora_master::RunningMaster> {
    Ok(agora_master::start(
        agora_master::MasterOptions {
            hostname: Some("127.0.0.1".into()),
            ..Default::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?)
}

/// `count` agents named `agent-1`… on local ports, registered with
/// `master`, each offering `resources(i)` (i from 1), work dirs under `dir`.
pub(super) async fn local_agents(
    master: &agora_master::RunningMaster,
    dir: &std::path::Path,
    exe: &std::path::Path,
    count: usize,
    resources: impl Fn(usize) -> String,
) -> anyhow::Result<Vec<agora_agent::RunningAgent>> {
    let mut agents = Vec::new();
    for i in 1..=count {
        let mut o = agora_agent::AgentOptions::new(
            master.address(),
            dir.join(format!("agent-{i}")),
            exe.to_path_buf(),
        );
        o.hostname = format!("agent-{i}");
        o.resources = Some(Resources::parse(&resources(i), "*")?);
        let a = agora_agent::start(o, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
        a.registered(Duration::from_secs(10))
            .await
            .context("an agent did not register")?;
        agents.push(a);
    }
    Ok(agents)
}

/// Keeps one offer for the next launch (when none is kept) and declines
/// the others.
pub(super) async fn keep_one_offer(
    scheduler: &agora_sdk::Scheduler,
    kept: &mut Option<agora_proto::v1::Offer>,
    offers: Vec<agora_proto::v1::Offer>,
) -> anyhow::Result<()> {
    for offer in offers {
        if kept.is_none() {
            *kept = Some(offer);
        } else {
            scheduler.decline(vec![offer.id], 0.0).await?;
        }
    }
    Ok(())
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(super) fn percentile(sorted_or_not: &[Duration], q: f64) -> Duration {
    let mut v = sorted_or_not.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Returns the first pass's time and every pass's time. With `quota_roles`,
/// framework i is in role `team-{i % quota_roles}`, and each role has a
/// guarantee of 8 cpus and a limit of 24 cpus per framework in it (limits
/// that cut offers once a role's frameworks hold most of what they may).
fn allocator_decline_offers(
    agents: usize,
    frameworks: usize,
    rounds: usize,
    quota_roles: usize,
) -> (Duration, Vec<(Duration, usize)>) {
    let mut allocator = Allocator::new(AllocatorConfig::default());
    let role_of = |i: usize| -> String {
        if quota_roles == 0 {
            "*".to_string()
        } else {
            format!("team-{}", i % quota_roles)
        }
    };
    let ids: Vec<FrameworkId> = (0..frameworks)
        .map(|i| FrameworkId::new(format!("framework-{i}")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        allocator.add_framework(id.clone(), &[role_of(i)], true, false, &[]);
    }
    for k in 0..quota_roles {
        let members = (0..frameworks).filter(|i| i % quota_roles == k).count();
        let mut q = agora_master_core::allocator::Quota::default();
        q.guarantees.insert("cpus".into(), 8.0);
        q.limits.insert(
            "cpus".into(),
            24.0 * members.max(1) as f64 * agents as f64 / frameworks.max(1) as f64,
        );
        allocator.set_quota(&format!("team-{k}"), Some(q));
    }
    let total =
        Resources::parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]", "*").expect("valid");
    for i in 0..agents {
        // 16 tasks of one cpu and a port each, as in the Mesos benchmark.
        let used =
            Resources::parse("cpus:16;mem:2014;disk:1024;ports:[31000-31015]", "*").expect("valid");
        allocator.add_agent(
            AgentId::new(format!("agent-{i}")),
            total.clone(),
            vec![(ids[i % frameworks].clone(), role_of(i % frameworks), used)],
        );
    }
    let mut rng = fastrand::Rng::with_seed(1);
    let mut now = Time::from_secs(1_000_000);
    let mut offers = Vec::new();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for o in offers.drain(..) {
            let o: agora_master_core::allocator::Allocation = o;
            allocator.recover(
                &o.agent,
                &o.framework,
                &o.role,
                &o.resources,
                Some(Duration::from_secs(365 * 24 * 3600)),
                now,
            );
        }
        now = now + Duration::from_secs(1);
        let start = Instant::now();
        offers = allocator.allocate(now, &mut rng);
        let took = start.elapsed();
        times.push((took, offers.len()));
        if std::env::var_os("AGORA_BENCH_TRACE").is_some() && times.len() % 50 == 1 {
            eprintln!(
                "round {:>5}: {:>8.3} ms, {} offers",
                times.len() - 1,
                ms(took),
                offers.len()
            );
        }
    }
    (times.first().map(|t| t.0).unwrap_or_default(), times)
}

/// Launches `tasks` tasks running `true`, one at a time, each on an offer as
/// it comes; returns the times from ACCEPT to TASK_RUNNING and to
/// TASK_FINISHED.
pub(super) async fn one_at_a_time(
    scheduler: &agora_sdk::Scheduler,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<agora_sdk::Event>,
    tasks: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    use agora_sdk::{Event, TaskBuilder};
    let mut running = Vec::with_capacity(tasks);
    let mut finished = Vec::with_capacity(tasks);
    let mut offer = None;
    for i in 0..tasks {
        let o = loop {
            if let Some(o) = offer.take() {
                break o;
            }
            match events.recv().await {
                Some(Event::Offers(mut os)) => {
                    let first = os.remove(0);
                    for other in os {
                        scheduler.decline(vec![other.id], 0.0).await?;
                    }
                    offer = Some(first);
                }
                Some(_) => {}
                None => anyhow::bail!("event stream ended"),
            }
        };
        let id = format!("t{i}");
        let task = TaskBuilder::new(&id, &o)
            .command("true")
            .cpus(0.1)
            .mem(16.0)
            .build();
        let start = Instant::now();
        scheduler.launch(&o, vec![task], 0.0).await?;
        loop {
            match events.recv().await {
                Some(Event::Update(s)) if s.task_id.value == id => match s.state() {
                    agora_proto::v1::TaskState::TaskRunning => running.push(start.elapsed()),
                    agora_proto::v1::TaskState::TaskFinished => {
                        finished.push(start.elapsed());
                        break;
                    }
                    st if agora_proto::status::is_terminal(st) => {
                        anyhow::bail!("task {id} ended {st:?}: {:?}", s.message)
                    }
                    _ => {}
                },
                Some(Event::Offers(os)) => keep_one_offer(scheduler, &mut offer, os).await?,
                Some(_) => {}
                None => anyhow::bail!("event stream ended"),
            }
        }
    }
    Ok((running, finished))
}

async fn launch_latency(
    tasks: usize,
    executor_path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use agora_sdk::SchedulerConfig;
    // Bare spawn of the same command, for reference.
    let mut bare = Vec::new();
    for _ in 0..tasks.min(200) {
        let t = Instant::now();
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("true")
            .status()
            .await?;
        bare.push(t.elapsed());
    }
    let dir = std::env::temp_dir().join(format!("agora-bench-{}", std::process::id()));
    let master = local_master().await?;
    let exe = crate::cli::agent::executor_path(executor_path)?;
    let mut o = agora_agent::AgentOptions::new(master.address(), dir.join("agent"), exe);
    o.resources = Some(Resources::parse("cpus:8;mem:8192", "*")?);
    let agent = agora_agent::start(o, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
    agent
        .registered(Duration::from_secs(10))
        .await
        .context("the agent did not register")?;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&master.address(), "bench-launch")).await?;
    let (running, finished) = one_at_a_time(&scheduler, &mut events, tasks).await?;
    scheduler.teardown().await.ok();
    agent.stop().await;
    master.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let line = |name: &str, v: &[Duration]| {
        println!(
            "{name:<28} p50 {:>8.2} ms   p99 {:>8.2} ms   (n={})",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            v.len()
        );
    };
    line("bare spawn of sh -c true", &bare);
    line("ACCEPT -> TASK_RUNNING", &running);
    line("ACCEPT -> TASK_FINISHED", &finished);
    println!(
        "p50 above the bare spawn: RUNNING {:.2} ms, FINISHED {:.2} ms",
        ms(percentile(&running, 0.5)) - ms(percentile(&bare, 0.5)),
        ms(percentile(&finished, 0.5)) - ms(percentile(&bare, 0.5))
    );
    Ok(())
}
