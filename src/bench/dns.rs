//! `agora bench dns`: `dnsperf` against `agora dns` with 1,000 running tasks
//! known, and in the same run against NSD serving the same names from a
//! zone file, each server pinned to one core (`taskset -c 0`), dnsperf on
//! the other.
//!
//! The cluster is real: a master, two agents and marathon-rs in this
//! process, one app of 1,000 instances (`sleep 3600`, one host port each).
//! The names asked are every record name the DNS server has (each task's
//! canonical name, the app's name, SRV names, leader, …), A for host names
//! and SRV for service names. The zone file for NSD is written from the
//! same record set.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

fn free_port() -> anyhow::Result<u16> {
    // UDP and TCP both free.
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

/// One dnsperf run: (queries per second, average latency ms, lost queries).
fn dnsperf(port: u16, queries: &Path, seconds: u32) -> anyhow::Result<(f64, f64, u64)> {
    let out = std::process::Command::new("taskset")
        .args(["-c", "1", "dnsperf", "-s", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-q", "200"])
        .output()
        .context("cannot run dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))?
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (Some(qps), Some(latency)) = (field("Queries per second"), field("Average Latency (s)"))
    else {
        bail!(
            "unexpected dnsperf output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let lost = field("Queries lost").unwrap_or(0.0) as u64;
    Ok((qps, latency * 1000.0, lost))
}

/// Waits until `port` answers `name` (A) over UDP.
async fn answers(port: u16, name: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let dig = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
                name,
            ])
            .output();
        if let Ok(o) = dig
            && !String::from_utf8_lossy(&o.stdout).trim().is_empty()
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the server on port {port} never answered {name}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The zone file of a record set (for NSD).
fn zone_file(r: &agora_dns::Records) -> String {
    let mut z = String::new();
    let _ = writeln!(z, "$ORIGIN {}\n$TTL 60", r.zone);
    let _ = writeln!(
        z,
        "@ IN SOA {} root.{} 1 60 600 86400 60",
        r.ns_name(),
        r.ns_name()
    );
    let _ = writeln!(z, "@ IN NS {}", r.ns_name());
    if !r.hosts.contains_key(&r.ns_name()) {
        let _ = writeln!(z, "{} IN A 127.0.0.1", r.ns_name());
    }
    for (name, ips) in &r.hosts {
        for ip in ips {
            let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
            let _ = writeln!(z, "{name} IN {kind} {ip}");
        }
    }
    for (name, targets) in &r.services {
        for (target, port) in targets {
            let _ = writeln!(z, "{name} IN SRV 0 1 {port} {target}");
        }
    }
    z
}

/// The cluster a DNS benchmark serves: a master, two agents and
/// marathon-rs in this process.
struct Cluster {
    master: agora_master::RunningMaster,
    agents: Vec<agora_agent::RunningAgent>,
    marathon: agora_marathon::RunningMarathon,
    /// marathon-rs' base URL.
    base: String,
}

impl Cluster {
    async fn start(dir: &Path, exe: &Path) -> anyhow::Result<Cluster> {
        let master = super::local_master().await?;
        let agents = super::local_agents(&master, dir, exe, 2, |i| {
            let base = 31000 + (i - 1) * 2000;
            format!(
                "cpus:64;mem:65536;disk:10000;ports:[{base}-{}]",
                base + 1999
            )
        })
        .await?;
        let marathon = agora_marathon::start(
            agora_marathon::MarathonOptions::new(&master.address(), dir.join("marathon")),
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        )
        .await?;
        let base = format!("http://{}", marathon.addr);
        Ok(Cluster {
            master,
            agents,
            marathon,
            base,
        })
    }

    /// Deploys `/bench/web` with `tasks` instances and waits until all run.
    async fn deploy(&self, client: &reqwest::Client, tasks: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let r = client
                .post(format!("{}/v2/apps", self.base))
                .json(&json!({"id": "/bench/web", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1,
                              "instances": tasks, "portDefinitions": [{"port": 0, "name": "http"}]}))
                .send()
                .await?;
            if r.status().as_u16() == 201 {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(20),
                "POST /v2/apps: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let a: Value = client
                .get(format!("{}/v2/apps/bench/web", self.base))
                .send()
                .await?
                .json()
                .await?;
            if a["app"]["tasksRunning"].as_u64() == Some(tasks as u64) {
                break;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(300),
                "the app did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{tasks} tasks running after {:.1} s",
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn stop(self) {
        self.marathon.stop().await;
        for a in self.agents {
            a.stop().await;
        }
        self.master.stop().await;
    }
}

/// dnsperf's query file for every name of `records`: A for host names, SRV
/// for service names (unless AGORA_BENCH_DNS_A_ONLY is set).
fn write_queries(records: &agora_dns::Records, file: &Path) -> anyhow::Result<()> {
    let mut queries = String::new();
    for name in records.hosts.keys() {
        let _ = writeln!(queries, "{name} A");
    }
    if std::env::var_os("AGORA_BENCH_DNS_A_ONLY").is_none() {
        for name in records.services.keys() {
            let _ = writeln!(queries, "{name} SRV");
        }
    }
    std::fs::write(file, &queries)?;
    println!(
        "{} A names, {} SRV names",
        records.hosts.len(),
        records.services.len()
    );
    Ok(())
}

/// agora dns (a child process pinned to core 0) under dnsperf.
async fn perf_agora_dns(
    exe: &Path,
    master: &str,
    probe: &str,
    queries: &Path,
    seconds: u32,
) -> anyhow::Result<(f64, f64, u64)> {
    let port = free_port()?;
    let mut ours = tokio::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .args([
            "dns",
            "--master",
            master,
            "--ip",
            "127.0.0.1",
            "--http-port",
            "0",
        ])
        .args(["--port", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start agora dns")?;
    answers(port, probe).await?;
    let result = dnsperf(port, queries, seconds);
    let _ = ours.kill().await;
    result
}

/// NSD serving the same names from a zone file, pinned to core 0, under
/// dnsperf.
async fn perf_nsd(
    dir: &Path,
    records: &agora_dns::Records,
    probe: &str,
    queries: &Path,
    seconds: u32,
) -> anyhow::Result<(f64, f64, u64)> {
    let nsd_dir = dir.join("nsd");
    std::fs::create_dir_all(&nsd_dir)?;
    std::fs::write(nsd_dir.join("mesos.zone"), zone_file(records))?;
    let nsd_port = free_port()?;
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{nsd_port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: \"{zone}\"\n  zonefile: \"mesos.zone\"\n",
        d = nsd_dir.display(),
        zone = records.zone
    );
    std::fs::write(nsd_dir.join("nsd.conf"), conf)?;
    let mut nsd = tokio::process::Command::new("taskset")
        .args(["-c", "0", "nsd", "-d", "-c"])
        .arg(nsd_dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start nsd")?;
    answers(nsd_port, probe).await?;
    let result = dnsperf(nsd_port, queries, seconds);
    let _ = nsd.kill().await;
    result
}

pub async fn run(tasks: usize, seconds: u32) -> anyhow::Result<()> {
    for tool in ["dnsperf", "nsd", "taskset", "dig"] {
        anyhow::ensure!(
            which(tool),
            "{tool} is missing (apt-get install dnsperf nsd util-linux bind9-dnsutils)"
        );
    }
    let dir = std::env::temp_dir().join(format!("agora-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let cluster = Cluster::start(&dir, &exe).await?;
    let client = reqwest::Client::new();
    cluster.deploy(&client, tasks).await?;
    // The records both servers will serve, from the same state.
    let state: Value = client
        .get(format!("http://{}/master/state", cluster.master.address()))
        .send()
        .await?
        .json()
        .await?;
    let records = agora_dns::records::build(&state, &agora_dns::Config::default());
    let query_file = dir.join("queries.txt");
    write_queries(&records, &query_file)?;
    let probe = records
        .hosts
        .keys()
        .find(|n| n.starts_with("web-bench-"))
        .cloned()
        .context("no task names")?;

    let master = cluster.master.address();
    let (q1, l1, lost1) = perf_agora_dns(&exe, &master, &probe, &query_file, seconds).await?;
    let (q2, l2, lost2) = perf_nsd(&dir, &records, &probe, &query_file, seconds).await?;
    println!(
        "{:<24} {:>12} {:>18} {:>8}",
        "server (1 core)", "queries/s", "avg latency ms", "lost"
    );
    println!("{:<24} {q1:>12.0} {l1:>18.3} {lost1:>8}", "agora dns");
    println!("{:<24} {q2:>12.0} {l2:>18.3} {lost2:>8}", "NSD (zone file)");
    println!("agora dns / NSD: {:.2}", q1 / q2);

    let mut lags = resolvable_lags(&cluster, &client, tasks).await?;
    lags.sort();
    println!(
        "TASK_RUNNING -> resolvable, 10 new tasks: p50 {:.1} ms, max {:.1} ms (Mesos-DNS: up to its 60 s refresh)",
        super::ms(lags[lags.len() / 2]),
        super::ms(lags[lags.len() - 1])
    );
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// From TASK_RUNNING (the master's operator event, as a subscriber sees it)
/// to the task's name in the zone being served, for 10 new instances added
/// one at a time.
async fn resolvable_lags(
    cluster: &Cluster,
    client: &reqwest::Client,
    tasks: usize,
) -> anyhow::Result<Vec<Duration>> {
    let master = cluster.master.address();
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse()?).await?;
    let dns = agora_dns::start(agora_dns::DnsOptions::new(master.clone()), udp, tcp, None).await?;
    let api = agora_rpc::client::ApiClient::new(
        format!("http://{master}/api/v1"),
        agora_rpc::http::Encoding::Protobuf,
    );
    let subscribe = agora_proto::operator::Call {
        r#type: Some(agora_proto::operator::call::Type::Subscribe as i32),
        ..Default::default()
    };
    let (_, mut events) = api
        .subscribe::<_, agora_proto::operator::Event>(&subscribe)
        .await?;
    let mut lags = Vec::new();
    for i in 1..=10 {
        let r = client
            .put(format!("{}/v2/apps/bench/web", cluster.base))
            .json(&json!({"instances": tasks + i}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "scaling: {}", r.status());
        let (task, agent, running_at) = loop {
            let Some(event) = events.next().await else {
                bail!("the operator event stream ended")
            };
            let event = event?;
            if let Some(u) = event.task_updated
                && u.state() == agora_proto::v1::TaskState::TaskRunning
            {
                let agent = u.status.agent_id.map(|a| a.value).unwrap_or_default();
                break (u.status.task_id.value, agent, Instant::now());
            }
        };
        let name = format!(
            "{}.marathon.mesos.",
            agora_dns::records::canonical("web-bench", &task, &agent)
        );
        loop {
            let known = dns
                .zone
                .read()
                .map(|z| z.records.hosts.contains_key(&name))
                .unwrap_or(false);
            if known {
                lags.push(running_at.elapsed());
                break;
            }
            anyhow::ensure!(
                running_at.elapsed() < Duration::from_secs(30),
                "{name} never appeared"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    dns.stop().await;
    Ok(lags)
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}
