//! `agora bench marathon`: deploy time of marathon-rs.
//!
//! A master and `agents` agents run in this process (each agent offers
//! `cpus:64;mem:65536`, so space is never the limit); marathon-rs runs as a
//! child process (`agora marathon`) so that its CPU time and peak RSS can be
//! read from `/proc`. For each scenario `A×N`, A apps of N `sleep` tasks
//! (0.01 cpus, 1 MB, no ports) are POSTed one after another; the clock runs
//! from the first POST until `/v2/apps` reports every instance running. The
//! apps are then destroyed and the next scenario waits until every task is
//! gone.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// CPU seconds (user + system) and peak RSS (MB) of a process.
fn usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // Fields after the command: state is [0]; utime [11], stime [12].
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()??
        .max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / hz, hwm_kb / 1024.0))
}

async fn running(client: &reqwest::Client, base: &str) -> anyhow::Result<(u64, u64)> {
    let apps: Value = client
        .get(format!("{base}/v2/apps"))
        .send()
        .await?
        .json()
        .await?;
    let list = apps["apps"].as_array().cloned().unwrap_or_default();
    let r = list
        .iter()
        .map(|a| a["tasksRunning"].as_u64().unwrap_or(0))
        .sum();
    let s: u64 = list
        .iter()
        .map(|a| a["tasksStaged"].as_u64().unwrap_or(0))
        .sum();
    Ok((r, r + s))
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !f().await? {
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn live_tasks(master: &str) -> anyhow::Result<usize> {
    let v: Value = reqwest::get(format!("http://{master}/master/tasks"))
        .await?
        .json()
        .await?;
    Ok(v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            !matches!(
                t["state"].as_str(),
                Some("TASK_FINISHED" | "TASK_KILLED" | "TASK_FAILED" | "TASK_LOST")
            )
        })
        .count())
}

/// marathon-rs as a child process (so its CPU time and RSS can be read),
/// subscribed: the child, its pid and its base URL.
async fn start_marathon(
    exe: &Path,
    master: &str,
    dir: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let child = tokio::process::Command::new(exe)
        // The benchmark measures deployment, on loopback.
        .args(["marathon", "--insecure", "--master", master])
        .args([
            "--http-address",
            "127.0.0.1",
            "--http-port",
            &port.to_string(),
        ])
        .args(["--decline-offer-duration", "5"])
        .arg("--work-dir")
        .arg(dir.join("marathon"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start agora marathon")?;
    let pid = child.id().context("marathon-rs has no pid")?;
    let base = format!("http://127.0.0.1:{port}");
    wait_until(
        "marathon-rs to subscribe",
        Duration::from_secs(20),
        async || {
            let info = client.get(format!("{base}/v2/info")).send().await;
            Ok(match info {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["frameworkId"].is_string()),
                Err(_) => false,
            })
        },
    )
    .await?;
    Ok((child, pid, base))
}

pub async fn run(scenarios: &[(usize, usize)], agents: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("agora-bench-marathon-{}", std::process::id()));
    let master = super::local_master().await?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let running_agents = super::local_agents(&master, &dir, &exe, agents, |_| {
        "cpus:64;mem:65536;disk:10000".to_string()
    })
    .await?;
    let client = reqwest::Client::new();
    let (mut child, pid, base) = start_marathon(&exe, &master.address(), &dir, &client).await?;
    println!(
        "{agents} agents; marathon-rs pid {pid}; tasks: sleep 3600, 0.01 cpus, 1 MB, no ports"
    );
    println!(
        "{:>6} {:>10} {:>8} {:>10} {:>15} {:>14} {:>16} {:>14}",
        "apps",
        "instances",
        "tasks",
        "POST ms",
        "all launched s",
        "all running s",
        "marathon CPU s",
        "peak RSS MB"
    );
    for &(apps, instances) in scenarios {
        scenario(&client, &base, pid, apps, instances).await?;
        // Clean up: destroy the group and wait until every task is gone.
        client
            .delete(format!("{base}/v2/groups/bench?force=true"))
            .send()
            .await?;
        let m = master.address();
        wait_until("every task to end", Duration::from_secs(600), async || {
            let deployments: Value = client
                .get(format!("{base}/v2/deployments"))
                .send()
                .await?
                .json()
                .await?;
            Ok(live_tasks(&m).await? == 0 && deployments.as_array().is_some_and(Vec::is_empty))
        })
        .await?;
    }
    let _ = child.kill().await;
    for a in running_agents {
        a.stop().await;
    }
    master.stop().await;
    remove(&dir);
    Ok(())
}

/// One scenario: `apps` apps of `instances` POSTed one after another, timed
/// until every instance runs; prints its row.
async fn scenario(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    apps: usize,
    instances: usize,
) -> anyhow::Result<()> {
    let (cpu0, _) = usage(pid).unwrap_or_default();
    let start = Instant::now();
    for a in 0..apps {
        let app = json!({"id": format!("/bench/app-{a}"), "cmd": "sleep 3600", "cpus": 0.01, "mem": 1,
                         "instances": instances, "portDefinitions": []});
        let r = client
            .post(format!("{base}/v2/apps"))
            .json(&app)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!(
                "POST /v2/apps answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    let posted = start.elapsed();
    let total = (apps * instances) as u64;
    let mut launched = None;
    wait_until(
        "every instance to run",
        Duration::from_secs(600),
        async || {
            let (running, known) = running(client, base).await?;
            if known >= total && launched.is_none() {
                launched = Some(start.elapsed());
            }
            Ok(running >= total)
        },
    )
    .await?;
    let launched = launched.unwrap_or_default();
    let took = start.elapsed();
    let (cpu1, rss) = usage(pid).unwrap_or_default();
    println!(
        "{apps:>6} {instances:>10} {total:>8} {:>10.1} {:>15.2} {:>14.2} {:>16.2} {:>14.1}",
        posted.as_secs_f64() * 1000.0,
        launched.as_secs_f64(),
        took.as_secs_f64(),
        cpu1 - cpu0,
        rss
    );
    Ok(())
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
