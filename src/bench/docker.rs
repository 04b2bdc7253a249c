//! `agora bench docker`: containers on this machine's Docker engine, Agora
//! against Docker Swarm and against a bare `docker run`.
//!
//! 1. **Swarm vs Agora**, the same image and command: `docker service create
//!    --replicas N IMAGE sleep 3600` until `docker service ls` shows N/N, then
//!    a marathon-rs app of N instances (POSTed to marathon-rs, which runs on a
//!    master and one agent in this process, all with their default settings)
//!    until `/v2/apps` shows N running. Swarm is initialised for the run (and
//!    left again) unless it already was.
//!    Then the floor: N containers created and started at once straight
//!    through the engine's API, with no orchestrator.
//! 2. **Launch overhead**: one container at a time, `docker run -d IMAGE sleep
//!    3600` against a Docker task launched through the master (ACCEPT to
//!    TASK_RUNNING, with the SDK); p50 of each and the difference.
//!
//! The image is built from Debian's busybox-static when it is missing, as the
//! tests build theirs; no registry is needed.

use std::time::{Duration, Instant};

use agora_proto::resources::Resources;
use agora_proto::v1;
use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{ms, percentile};

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("cannot run the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds `image` from /bin/busybox (Debian's busybox-static) if missing.
fn ensure_image(image: &str) -> anyhow::Result<()> {
    if docker(&["image", "inspect", image]).is_ok() {
        return Ok(());
    }
    let busybox = std::path::Path::new("/bin/busybox");
    anyhow::ensure!(
        busybox.exists(),
        "image {image} is missing and /bin/busybox (busybox-static) is not there to build it"
    );
    let dir = tempfile::tempdir()?;
    std::fs::copy(busybox, dir.path().join("busybox"))?;
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )?;
    let path = dir.path().display().to_string();
    docker(&["build", "-q", "-t", image, &path])?;
    Ok(())
}

async fn poll(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Seconds until a Swarm service of `replicas` is `replicas/replicas`.
async fn swarm(image: &str, replicas: usize) -> anyhow::Result<f64> {
    let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    let ours = state != "active";
    if ours {
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
    }
    let name = format!("agora-bench-{}", std::process::id());
    let want = format!("{replicas}/{replicas}");
    let start = Instant::now();
    let result = async {
        // --no-resolve-image: there is no registry to ask for a digest.
        docker(&[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &name,
            "--replicas",
            &replicas.to_string(),
            image,
            "sleep",
            "3600",
        ])?;
        poll("the Swarm service", Duration::from_secs(300), || {
            docker(&[
                "service",
                "ls",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Replicas}}",
            ])
            .is_ok_and(|r| r.starts_with(&want))
        })
        .await?;
        Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
    }
    .await;
    let _ = docker(&["service", "rm", &name]);
    let filter = format!("label=com.docker.swarm.service.name={name}");
    let _ = poll(
        "the service's containers to go",
        Duration::from_secs(120),
        || docker(&["ps", "-aq", "--filter", &filter]).is_ok_and(|s| s.is_empty()),
    )
    .await;
    if ours {
        let _ = docker(&["swarm", "leave", "--force"]);
    }
    result
}

/// Seconds for `n` containers created and started at once straight through
/// the engine's API (bollard), the floor under any orchestrator.
async fn engine_floor(image: &str, n: usize) -> anyhow::Result<f64> {
    use bollard::query_parameters as q;
    let d = agora_agent::docker::connect()
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let start = Instant::now();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (d, image) = (d.clone(), image.to_string());
        all.spawn(async move {
            let body = bollard::models::ContainerCreateBody {
                image: Some(image),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some([("agora-bench".to_string(), "floor".to_string())].into()),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some("host".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let c = d
                .create_container(None::<q::CreateContainerOptions>, body)
                .await?;
            d.start_container(&c.id, None::<q::StartContainerOptions>)
                .await?;
            Ok::<String, bollard::errors::Error>(c.id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = all.join_next().await {
        ids.push(r??);
    }
    let took = start.elapsed().as_secs_f64();
    for id in ids {
        let _ = agora_agent::docker::remove(&d, &id).await;
    }
    Ok(took)
}

struct Local {
    master: agora_master::RunningMaster,
    agent: agora_agent::RunningAgent,
    dir: std::path::PathBuf,
}

async fn local() -> anyhow::Result<Local> {
    let dir = std::env::temp_dir().join(format!("agora-bench-docker-{}", std::process::id()));
    let master = super::local_master().await?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut o = agora_agent::AgentOptions::new(master.address(), dir.join("agent"), exe);
    o.hostname = "agent-1".into();
    o.resources = Some(Resources::parse(
        "cpus:64;mem:65536;disk:10000;ports:[31000-32000]",
        "*",
    )?);
    let agent = agora_agent::start(o, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
    agent
        .registered(Duration::from_secs(10))
        .await
        .context("the agent did not register")?;
    Ok(Local { master, agent, dir })
}

/// Seconds until a marathon-rs app of `instances` Docker tasks is launched
/// (all staged) and until it runs.
async fn agora_app(image: &str, instances: usize) -> anyhow::Result<(f64, f64)> {
    let l = local().await?;
    let marathon = agora_marathon::start(
        agora_marathon::MarathonOptions::new(&l.master.address(), l.dir.join("marathon")),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let base = format!("http://{}", marathon.addr);
    let client = reqwest::Client::new();
    let subscribed = Instant::now();
    loop {
        let info: Value = client
            .get(format!("{base}/v2/info"))
            .send()
            .await?
            .json()
            .await?;
        if info["frameworkId"].is_string() {
            break;
        }
        anyhow::ensure!(
            subscribed.elapsed() < Duration::from_secs(20),
            "marathon-rs did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app = json!({
        "id": "/bench/docker", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8,
        "instances": instances, "portDefinitions": [],
        "container": {"type": "DOCKER", "docker": {"image": image, "network": "HOST"}}
    });
    let start = Instant::now();
    let r = client
        .post(format!("{base}/v2/apps"))
        .json(&app)
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "POST /v2/apps: {}", r.status());
    let mut launched = None;
    let took = loop {
        let a: Value = client
            .get(format!("{base}/v2/apps/bench/docker"))
            .send()
            .await?
            .json()
            .await?;
        let count = |k: &str| a["app"][k].as_u64().unwrap_or(0);
        if launched.is_none() && count("tasksStaged") + count("tasksRunning") >= instances as u64 {
            launched = Some(start.elapsed().as_secs_f64());
        }
        if count("tasksRunning") == instances as u64 {
            break start.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the app did not reach {instances} running: {}",
            a["app"]["lastTaskFailure"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    client
        .delete(format!("{base}/v2/apps/bench/docker?force=true"))
        .send()
        .await?;
    let filter = format!(
        "label=agora.agent_id={}",
        l.agent.agent_id().await.unwrap_or_default()
    );
    poll(
        "the app's containers to go",
        Duration::from_secs(120),
        || docker(&["ps", "-aq", "--filter", &filter]).is_ok_and(|s| s.is_empty()),
    )
    .await?;
    marathon.stop().await;
    l.agent.stop().await;
    l.master.stop().await;
    let _ = std::fs::remove_dir_all(&l.dir);
    Ok((launched.unwrap_or(took), took))
}

/// `docker run -d` one at a time: time to return (the container started).
fn bare_runs(image: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = docker(&["run", "-d", "--network", "host", image, "sleep", "3600"])?;
        times.push(t.elapsed());
        docker(&["rm", "-f", &id])?;
    }
    Ok(times)
}

/// Docker tasks through the master one at a time: ACCEPT to TASK_RUNNING.
async fn agora_launches(image: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    use agora_sdk::{Event, SchedulerConfig, TaskBuilder};
    let l = local().await?;
    let (scheduler, mut events) =
        agora_sdk::subscribe(SchedulerConfig::new(&l.master.address(), "bench-docker")).await?;
    let mut times = Vec::with_capacity(n);
    let mut offer: Option<v1::Offer> = None;
    for i in 0..n {
        let o = loop {
            if let Some(o) = offer.take() {
                break o;
            }
            match events.recv().await {
                Some(Event::Offers(mut os)) if !os.is_empty() => offer = Some(os.remove(0)),
                Some(_) => {}
                None => bail!("event stream ended"),
            }
        };
        let id = format!("c{i}");
        let mut task = TaskBuilder::new(&id, &o)
            .command("sleep 3600")
            .cpus(0.01)
            .mem(8.0)
            .kill_grace(Duration::ZERO)
            .build();
        task.container = Some(v1::ContainerInfo {
            r#type: v1::container_info::Type::Docker as i32,
            docker: Some(v1::container_info::DockerInfo {
                image: image.to_string(),
                network: Some(v1::container_info::docker_info::Network::Host as i32),
                ..Default::default()
            }),
            ..Default::default()
        });
        let agent = o.agent_id.clone();
        let start = Instant::now();
        scheduler.launch(&o, vec![task], 0.0).await?;
        let mut killed = false;
        loop {
            match events.recv().await {
                Some(Event::Update(s)) if s.task_id.value == id => match s.state() {
                    v1::TaskState::TaskRunning if !killed => {
                        times.push(start.elapsed());
                        killed = true;
                        scheduler.kill(&s.task_id, Some(&agent)).await?;
                    }
                    v1::TaskState::TaskKilled if killed => break,
                    st if agora_proto::status::is_terminal(st) => {
                        bail!("task {id} ended {st:?}: {:?}", s.message)
                    }
                    _ => {}
                },
                Some(Event::Offers(os)) => {
                    super::keep_one_offer(&scheduler, &mut offer, os).await?
                }
                Some(_) => {}
                None => bail!("event stream ended"),
            }
        }
    }
    scheduler.teardown().await.ok();
    l.agent.stop().await;
    l.master.stop().await;
    let _ = std::fs::remove_dir_all(&l.dir);
    Ok(times)
}

/// Runs both comparisons and prints them.
pub async fn run(
    image: &str,
    replicas: usize,
    launches: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    ensure_image(image)?;
    let engine = docker(&["version", "--format", "{{.Server.Version}}"])?;
    let driver = docker(&["info", "--format", "{{.Driver}}"])?;
    println!("Docker engine {engine} ({driver}); image {image}; command: sleep 3600");
    println!(
        "{:>5} {:>10} {:>14} {:>14} {:>7} {:>16}",
        "round", "Swarm s", "Agora staged s", "Agora run s", "ratio", "engine floor s"
    );
    let (mut swarms, mut agoras, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=rounds {
        // Each phase starts with the engine idle (removals done).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = swarm(image, replicas).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (launched, a) = agora_app(image, replicas).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let f = engine_floor(image, replicas).await?;
        println!(
            "{r:>5} {s:>10.2} {launched:>14.2} {a:>14.2} {:>6.1}x {f:>16.2}",
            s / a
        );
        swarms.push(s);
        agoras.push(a);
        floors.push(f);
    }
    if rounds > 0 {
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (s, a, f) = (
            median(&mut swarms),
            median(&mut agoras),
            median(&mut floors),
        );
        println!(
            "{replicas} replicas running, median of {rounds}: Docker Swarm {s:.2} s, Agora (marathon-rs) {a:.2} s: Agora {:.1}x faster",
            s / a
        );
        println!(
            "the engine alone ({replicas} create+start at once through its API): {f:.2} s; Agora is {:.2} s above it",
            a - f
        );
    }
    let bare = bare_runs(image, launches)?;
    let agora = agora_launches(image, launches).await?;
    let line = |name: &str, v: &[Duration]| {
        println!(
            "{name:<40} p50 {:>8.1} ms   p99 {:>8.1} ms   (n={})",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            v.len()
        );
    };
    line("docker run -d (CLI, until it returns)", &bare);
    line("Agora ACCEPT -> TASK_RUNNING (Docker)", &agora);
    println!(
        "agent overhead over a bare docker run, p50: {:.1} ms",
        ms(percentile(&agora, 0.5)) - ms(percentile(&bare, 0.5))
    );
    Ok(())
}
