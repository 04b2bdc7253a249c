//! Offer traffic, measured where frameworks cause it.
//!
//! - [`master_decline_offers`]: Mesos' `DeclineOffers` grid driven through
//!   the master core (`Master::handle`), each framework declining all its
//!   offers in **one** DECLINE call, as marathon-rs and most frameworks do.
//!   The allocator-only grid (`bench.rs`) hands declines to the allocator
//!   directly and so never met the master's handling of a DECLINE.
//! - [`backoff`]: a master, 3 agents and marathon-rs in this process; one app
//!   whose task fails at once sits in launch backoff; `master/offers_made`
//!   over a window gives the offer rate it causes, with the CPU used.

use std::time::{Duration, Instant};

use agora_master_core::ids::{ConnId, RequestId, StreamId};
use agora_master_core::{Config, Input, Master, Output, Time};
use agora_proto::internal::{AgentMessage, Register, agent_message};
use agora_proto::resources::Resources;
use agora_proto::{scheduler as sched, v1};
use anyhow::Context as _;
use serde_json::{Value, json};

/// One pass per round after every framework declined (one call each) what
/// it was offered with a long filter. Returns each pass's time and offers.
pub fn master_decline_offers(
    agents: usize,
    frameworks: usize,
    rounds: usize,
) -> anyhow::Result<Vec<(Duration, usize)>> {
    let now = Time::from_secs(1_000_000);
    let info = v1::MasterInfo {
        id: "bench".into(),
        ip: 16777343,
        port: 5050,
        ..Default::default()
    };
    let mut master = Master::new(Config::default(), info, 1, 1, now);
    let mut ids = 0u64;
    let mut next = || {
        ids += 1;
        ids
    };
    let total =
        Resources::parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000]", "*")?.to_protos();
    for i in 0..agents {
        let conn = ConnId(next());
        let register = Register {
            agent_info: v1::AgentInfo {
                hostname: format!("agent-{i}"),
                port: Some(5051),
                resources: total.clone(),
                ..Default::default()
            },
            address: format!("10.0.{}.{}:5051", i / 250, i % 250),
            ..Default::default()
        };
        master.handle(
            now,
            Input::Agent {
                conn,
                message: AgentMessage {
                    message: Some(agent_message::Message::Register(register)),
                },
            },
        );
    }
    let mut streams = Vec::with_capacity(frameworks);
    for i in 0..frameworks {
        let stream = StreamId(format!("s{i}"));
        let call = sched::Call {
            r#type: Some(sched::call::Type::Subscribe as i32),
            subscribe: Some(sched::call::Subscribe {
                framework_info: v1::FrameworkInfo {
                    user: "bench".into(),
                    name: format!("framework-{i}"),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = master.handle(
            now,
            Input::Subscribe {
                request: RequestId(next()),
                stream: stream.clone(),
                call,
                principal: None,
            },
        );
        let id = out
            .iter()
            .find_map(|o| match o {
                Output::Event { event, .. } => event.subscribed.as_ref(),
                _ => None,
            })
            .map(|s| s.framework_id.clone())
            .context("a framework did not subscribe")?;
        streams.push((stream, id));
    }
    let mut offered = offers_by_stream(master.handle(now, Input::Tick));
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        for (stream, framework) in &streams {
            let Some(offer_ids) = offered.remove(stream) else {
                continue;
            };
            let call = sched::Call {
                framework_id: Some(framework.clone()),
                r#type: Some(sched::call::Type::Decline as i32),
                decline: Some(sched::call::Decline {
                    offer_ids,
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(365.0 * 24.0 * 3600.0),
                    }),
                }),
                ..Default::default()
            };
            master.handle(
                now,
                Input::Call {
                    request: RequestId(next()),
                    stream: Some(stream.clone()),
                    call,
                    principal: None,
                },
            );
        }
        let start = Instant::now();
        let out = master.handle(now, Input::Tick);
        let took = start.elapsed();
        offered = offers_by_stream(out);
        times.push((took, offered.values().map(Vec::len).sum()));
    }
    Ok(times)
}

fn offers_by_stream(out: Vec<Output>) -> std::collections::HashMap<StreamId, Vec<v1::OfferId>> {
    let mut by = std::collections::HashMap::<StreamId, Vec<v1::OfferId>>::new();
    for o in out {
        if let Output::Event { stream, event } = o
            && let Some(offers) = &event.offers
        {
            by.entry(stream)
                .or_default()
                .extend(offers.offers.iter().map(|o| o.id.clone()));
        }
    }
    by
}

/// CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64;
    ticks / hz
}

async fn metric(client: &reqwest::Client, master: &str, name: &str) -> anyhow::Result<f64> {
    let m: Value = client
        .get(format!("http://{master}/metrics/snapshot"))
        .send()
        .await?
        .json()
        .await?;
    m[name]
        .as_f64()
        .with_context(|| format!("{name} is missing"))
}

/// The offer rate of one app in launch backoff over `seconds`.
pub async fn backoff(seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let master = super::local_master().await?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut agents = Vec::new();
    for i in 1..=3u32 {
        let mut o = agora_agent::AgentOptions::new(
            master.address(),
            dir.path().join(format!("agent-{i}")),
            exe.clone(),
        );
        o.hostname = format!("agent-{i}");
        let base = 31000 + (i - 1) * 1000;
        o.resources = Some(Resources::parse(
            &format!("cpus:4;mem:4096;disk:1000;ports:[{base}-{}]", base + 999),
            "*",
        )?);
        let a = agora_agent::start(o, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
        a.registered(Duration::from_secs(10))
            .await
            .context("an agent did not register")?;
        agents.push(a);
    }
    let marathon = agora_marathon::start(
        agora_marathon::MarathonOptions::new(&master.address(), dir.path().join("marathon")),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/v2/apps", marathon.addr))
        .json(
            &json!({"id": "/bench/crashing", "cmd": "exit 1", "cpus": 0.1, "mem": 16,
                      "instances": 1}),
        )
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "POST /v2/apps: {}", r.status());
    // Let it fail a few times, so that it is in backoff.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let address = master.address();
    let (offers0, declined0, cpu0, t0) = (
        metric(&client, &address, "master/offers_made").await?,
        metric(&client, &address, "master/offers_declined").await?,
        cpu_seconds(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let offers = metric(&client, &address, "master/offers_made").await? - offers0;
    let declined = metric(&client, &address, "master/offers_declined").await? - declined0;
    let cpu = cpu_seconds() - cpu0;
    let queue: Value = client
        .get(format!("http://{}/v2/queue", marathon.addr))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "one app in launch backoff, 3 agents, {elapsed:.1} s: {offers} offers ({:.1}/s), \
         {declined} declined, CPU {:.1}% of one core (master, agents and marathon-rs); \
         backoff now {} s",
        offers / elapsed,
        100.0 * cpu / elapsed,
        queue["queue"][0]["delay"]["timeLeftSeconds"]
    );
    marathon.stop().await;
    for a in agents {
        a.stop().await;
    }
    master.stop().await;
    Ok(())
}
