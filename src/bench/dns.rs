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

use agora_proto::resources::Resources;
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

pub async fn run(tasks: usize, seconds: u32) -> anyhow::Result<()> {
    for tool in ["dnsperf", "nsd", "taskset", "dig"] {
        anyhow::ensure!(
            which(tool),
            "{tool} is missing (apt-get install dnsperf nsd util-linux bind9-dnsutils)"
        );
    }
    let dir = std::env::temp_dir().join(format!("agora-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let master = super::local_master().await?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut agents = Vec::new();
    for i in 1..=2u32 {
        let mut o = agora_agent::AgentOptions::new(
            master.address(),
            dir.join(format!("agent-{i}")),
            exe.clone(),
        );
        o.hostname = format!("agent-{i}");
        let base = 31000 + (i - 1) * 2000;
        o.resources = Some(Resources::parse(
            &format!(
                "cpus:64;mem:65536;disk:10000;ports:[{base}-{}]",
                base + 1999
            ),
            "*",
        )?);
        let a = agora_agent::start(o, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
        a.registered(Duration::from_secs(10))
            .await
            .context("an agent did not register")?;
        agents.push(a);
    }
    let marathon = agora_marathon::start(
        agora_marathon::MarathonOptions::new(&master.address(), dir.join("marathon")),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let base = format!("http://{}", marathon.addr);
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let r = client
            .post(format!("{base}/v2/apps"))
            .json(
                &json!({"id": "/bench/web", "cmd": "sleep 3600", "cpus": 0.01, "mem": 1,
                          "instances": tasks, "portDefinitions": [{"port": 0, "name": "http"}]}),
            )
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
            .get(format!("{base}/v2/apps/bench/web"))
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
    // The records both servers will serve, from the same state.
    let state: Value = client
        .get(format!("http://{}/master/state", master.address()))
        .send()
        .await?
        .json()
        .await?;
    let records = agora_dns::records::build(&state, &agora_dns::Config::default());
    let mut queries = String::new();
    for name in records.hosts.keys() {
        let _ = writeln!(queries, "{name} A");
    }
    if std::env::var_os("AGORA_BENCH_DNS_A_ONLY").is_none() {
        for name in records.services.keys() {
            let _ = writeln!(queries, "{name} SRV");
        }
    }
    let query_file = dir.join("queries.txt");
    std::fs::write(&query_file, &queries)?;
    println!(
        "{} A names, {} SRV names",
        records.hosts.len(),
        records.services.len()
    );
    let probe = records
        .hosts
        .keys()
        .find(|n| n.starts_with("web-bench-"))
        .cloned()
        .context("no task names")?;

    // agora dns, pinned to core 0.
    let port = free_port()?;
    let mut ours = tokio::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(&exe)
        .args([
            "dns",
            "--master",
            &master.address(),
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
    answers(port, &probe).await?;
    let (q1, l1, lost1) = dnsperf(port, &query_file, seconds)?;
    let _ = ours.kill().await;

    // NSD with the same names, pinned to core 0.
    let nsd_dir = dir.join("nsd");
    std::fs::create_dir_all(&nsd_dir)?;
    std::fs::write(nsd_dir.join("mesos.zone"), zone_file(&records))?;
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
    answers(nsd_port, &probe).await?;
    let (q2, l2, lost2) = dnsperf(nsd_port, &query_file, seconds)?;
    let _ = nsd.kill().await;

    println!(
        "{:<24} {:>12} {:>18} {:>8}",
        "server (1 core)", "queries/s", "avg latency ms", "lost"
    );
    println!("{:<24} {q1:>12.0} {l1:>18.3} {lost1:>8}", "agora dns");
    println!("{:<24} {q2:>12.0} {l2:>18.3} {lost2:>8}", "NSD (zone file)");
    println!("agora dns / NSD: {:.2}", q1 / q2);

    // From TASK_RUNNING (the master's operator event, as a subscriber sees
    // it) to the task's name in the zone being served, for new instances.
    let (udp, tcp) = agora_dns::bind("127.0.0.1:0".parse()?).await?;
    let dns =
        agora_dns::start(agora_dns::DnsOptions::new(master.address()), udp, tcp, None).await?;
    let api = agora_rpc::client::ApiClient::new(
        format!("http://{}/api/v1", master.address()),
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
            .put(format!("{base}/v2/apps/bench/web"))
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
    lags.sort();
    println!(
        "TASK_RUNNING -> resolvable, 10 new tasks: p50 {:.1} ms, max {:.1} ms (Mesos-DNS: up to its 60 s refresh)",
        super::ms(lags[lags.len() / 2]),
        super::ms(lags[lags.len() - 1])
    );
    dns.stop().await;

    marathon.stop().await;
    for a in agents {
        a.stop().await;
    }
    master.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}
