//! `agora bench security`: what TLS and authentication cost, the same run
//! with and without them. A master and one agent in this process; in the
//! secure run TLS everywhere (certificates from an in-process CA), mutual
//! TLS and a credential for the agent, HTTP Basic on every master realm, the
//! executor's token. Measured: agent registration (start to registered),
//! launch latency (one `true` task at a time, ACCEPT to TASK_RUNNING), and
//! the allocator-free request path (`POST /api/v1` GET_STATE, JSON, with the
//! launched tasks in the state), each p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::auth::{Credential, Credentials, Realm, Secret};
use agora_proto::resources::Resources;
use agora_rpc::auth::HttpAuth;
use agora_rpc::serve::Transport;
use agora_rpc::tls::{ClientTls, Role, Tls, ca};
use anyhow::Context as _;

use super::{ms, one_at_a_time, percentile};

struct Secure {
    master: Arc<Tls>,
    agent: Arc<Tls>,
    ca_pem: Vec<u8>,
}

fn certificates() -> anyhow::Result<Secure> {
    let (ca_cert, ca_key) = ca::init("agora")?;
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let tls = |role| -> anyhow::Result<Arc<Tls>> {
        let (c, k) = ca::issue("agora", &ca_key, role, &names)?;
        Ok(Arc::new(Tls::from_pem(
            c.into_bytes(),
            k.into_bytes(),
            ca_cert.clone().into_bytes(),
        )?))
    };
    Ok(Secure {
        master: tls(Role::Master)?,
        agent: tls(Role::Agent)?,
        ca_pem: ca_cert.into_bytes(),
    })
}

fn credential(p: &str) -> Credential {
    Credential {
        principal: p.into(),
        secret: Secret::new(format!("{p}-bench-secret")),
    }
}

struct Figures {
    registration: Vec<Duration>,
    running: Vec<Duration>,
    get_state: Vec<Duration>,
}

async fn run_once(
    secure: Option<&Secure>,
    tasks: usize,
    registrations: usize,
    requests: usize,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let mut options = agora_master::MasterOptions {
        hostname: Some("127.0.0.1".into()),
        ..Default::default()
    };
    if let Some(s) = secure {
        options.transport = Transport::tls(s.master.clone(), false);
        {
            options.auth = Arc::new(HttpAuth::new(
                [
                    Realm::MasterScheduler,
                    Realm::MasterReadwrite,
                    Realm::MasterReadonly,
                ],
                Credentials::of(["ops", "fw", "agent"].map(credential)),
            ));
            options.authenticate_agents = true;
        }
    }
    let master =
        agora_master::start(options, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let agent_options = |i: usize| {
        let mut o = agora_agent::AgentOptions::new(
            master.address(),
            dir.path().join(format!("agent-{i}")),
            exe.clone(),
        );
        o.resources = Resources::parse("cpus:8;mem:8192", "*").ok();
        if let Some(s) = secure {
            o.tls = Some(s.agent.clone());
            o.credential = Some(credential("agent"));
        }
        o
    };
    // Registration: a new agent each time.
    let mut registration = Vec::new();
    for i in 0..registrations {
        let start = Instant::now();
        let a = agora_agent::start(
            agent_options(i + 1),
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        )
        .await?;
        a.registered(Duration::from_secs(10))
            .await
            .context("an agent did not register")?;
        registration.push(start.elapsed());
        a.stop().await;
    }
    let agent = agora_agent::start(
        agent_options(0),
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    agent
        .registered(Duration::from_secs(10))
        .await
        .context("the agent did not register")?;
    let mut config = agora_sdk::SchedulerConfig::new(&master.address(), "bench-security");
    if let Some(s) = secure {
        config.credential = Some(credential("fw"));
        config.tls = Some(ClientTls {
            ca_pem: s.ca_pem.clone(),
            identity: None,
        });
    }
    let (scheduler, mut events) = agora_sdk::subscribe(config).await?;
    let (running, _) = one_at_a_time(&scheduler, &mut events, tasks).await?;
    // GET_STATE over one kept-alive connection, as a dashboard polls.
    let (client, url) = match secure {
        Some(s) => (
            ClientTls {
                ca_pem: s.ca_pem.clone(),
                identity: None,
            }
            .reqwest()?
            .build()?,
            format!("https://{}/api/v1", master.address()),
        ),
        None => (
            reqwest::Client::new(),
            format!("http://{}/api/v1", master.address()),
        ),
    };
    let mut get_state = Vec::with_capacity(requests);
    for _ in 0..requests {
        let mut req = client
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(r#"{"type":"GET_STATE"}"#);
        if secure.is_some() {
            req = req.basic_auth("ops", Some("ops-bench-secret"));
        }
        let start = Instant::now();
        let r = req.send().await?;
        anyhow::ensure!(r.status().is_success(), "GET_STATE: {}", r.status());
        let _ = r.bytes().await?;
        get_state.push(start.elapsed());
    }
    scheduler.teardown().await.ok();
    agent.stop().await;
    master.stop().await;
    Ok(Figures {
        registration,
        running,
        get_state,
    })
}

pub async fn run(tasks: usize, registrations: usize, requests: usize) -> anyhow::Result<()> {
    let secure = certificates()?;
    let plain = run_once(None, tasks, registrations, requests).await?;
    let tls = run_once(Some(&secure), tasks, registrations, requests).await?;
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>12}",
        "", "plain p50", "secure p50", "plain p99", "secure p99"
    );
    let row = |name: &str, a: &[Duration], b: &[Duration]| {
        println!(
            "{name:<34} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms",
            ms(percentile(a, 0.5)),
            ms(percentile(b, 0.5)),
            ms(percentile(a, 0.99)),
            ms(percentile(b, 0.99)),
        );
    };
    row(
        &format!("agent registration (n={registrations})"),
        &plain.registration,
        &tls.registration,
    );
    row(
        &format!("ACCEPT -> TASK_RUNNING (n={tasks})"),
        &plain.running,
        &tls.running,
    );
    row(
        &format!("GET_STATE, {tasks} tasks (n={requests})"),
        &plain.get_state,
        &tls.get_state,
    );
    println!(
        "launch p50 cost of TLS and authentication: {:+.2} ms",
        ms(percentile(&tls.running, 0.5)) - ms(percentile(&plain.running, 0.5))
    );
    Ok(())
}
