//! `agora dev`: a whole cluster in one process on this machine: a master and
//! `--agents` local agents (each with its own work dir, port range, address
//! and name 127.0.0.N, and attribute `rack:rN`), marathon-rs on port 8080
//! with its state under the work dir, `agora dns` on 8053 and, with
//! HAProxy, `agora lb`. Ctrl-C stops everything and kills its tasks.
//! `--hosts N` runs the multi-host test bed instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora_agent::AgentOptions;
use agora_proto::auth::Realm;
use agora_proto::resources::{Resources, parse_attributes};
use agora_rpc::auth::HttpAuth;
use agora_rpc::serve::Transport;
use anyhow::Context as _;
use clap::Args;

use super::agent::{executor_path, parse_resources};
use super::dev_secrets::DevSecrets;
use super::master::MasterArgs;

/// Flags of `agora dev`.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of local agents.
    #[arg(long, default_value_t = 3)]
    pub agents: u16,
    /// Port of the master; agents take the next ones.
    #[arg(long, default_value_t = 5050)]
    pub port: u16,
    /// Where the agents' sandboxes live.
    #[arg(long, env = "AGORA_WORK_DIR", default_value = "/tmp/agora-dev")]
    pub work_dir: PathBuf,
    /// Resources of each agent (detected from the machine when unset);
    /// the port range is given per agent.
    #[arg(long, value_parser = parse_resources)]
    pub agent_resources: Option<Resources>,
    /// The agora binary whose `executor` subcommand runs command tasks.
    #[arg(long)]
    pub executor_path: Option<PathBuf>,
    /// Port of marathon-rs (0: do not run it).
    #[arg(long, default_value_t = 8080)]
    pub marathon_port: u16,
    /// Port of `agora dns` (UDP and TCP, domain `mesos`; 0: do not run it).
    #[arg(long, default_value_t = 8053)]
    pub dns_port: u16,
    /// HTTP (virtual host) port of `agora lb`, run when HAProxy is installed
    /// and marathon-rs runs (stats on 9090, `/metrics` on 9092; 0: do not
    /// run it).
    #[arg(long, default_value_t = 9080)]
    pub lb_http_port: u16,
    /// Run every component on a host of its own instead: N agents, 3
    /// ZooKeeper servers, 3 masters, 2 marathon-rs, agora dns, agora lb and
    /// a client, each a network namespace with its own address (10.77.0.x)
    /// and name, to try failover by hand (needs root, iproute2, ZooKeeper
    /// and HAProxy). Prints each host and how to enter it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub hosts: Option<u16>,
}

/// The address of dev agent `i` (1-based): 127.0.0.2 onwards, so each
/// agent has an address and a name of its own that resolve everywhere
/// (the agent's hostname is its address, as Mesos' `--hostname_lookup=false`),
/// as marathon-lb and UNIQUE hostname constraints need.
pub fn agent_ip(i: u16) -> Ipv4Addr {
    let [_, _, hi, lo] = (u32::from(Ipv4Addr::LOCALHOST) + u32::from(i)).to_be_bytes();
    Ipv4Addr::new(127, 0, hi, lo)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if let Some(n) = args.hosts {
        return on_hosts(n, &args.work_dir, args.executor_path.clone()).await;
    }
    if args.agents == 0 {
        anyhow::bail!("--agents must be at least 1");
    }
    // TLS and authentication, as every Agora cluster: made here at the
    // first start, reused afterwards.
    let secrets = super::dev_secrets::load_or_make(
        &args.work_dir,
        args.port,
        args.marathon_port,
        args.agents,
    )?;
    let master = start_master(&args, &secrets).await?;
    let agents = start_agents(&args, &secrets, &master).await?;
    let marathon = start_marathon(&args, &secrets, &master).await?;
    let dns = start_dns(&args, &secrets, &master).await?;
    let haproxy_installed = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    let (lb_stop, lb_stopped) = tokio::sync::oneshot::channel::<()>();
    let lb = match &marathon {
        Some(m) if args.lb_http_port != 0 && haproxy_installed => {
            let mut lb_args =
                super::lb::LbArgs::dev(format!("https://{}", m.addr), &args.work_dir.join("lb"));
            lb_args.bind_http_port = args.lb_http_port;
            lb_args.marathon_ca_cert = Some(secrets.ca.clone());
            lb_args.auth_credentials = Some((
                secrets.admin.principal.clone(),
                secrets.admin.secret.expose().to_string(),
            ));
            let ports = (lb_args.bind_http_port, lb_args.stats_port);
            let task = tokio::spawn(super::lb::follow(lb_args, async {
                let _ = lb_stopped.await;
            }));
            Some((task, ports))
        }
        _ => None,
    };
    print_summary(
        &args,
        &secrets,
        &master,
        &agents,
        marathon.as_ref(),
        dns.as_ref(),
        lb.as_ref().map(|(_, ports)| *ports),
    );
    println!("Press Ctrl-C to stop (running tasks are killed).");
    super::shutdown_signal().await;
    eprintln!("stopping: killing tasks and shutting down");
    let _ = lb_stop.send(());
    if let Some((task, _)) = lb
        && let Ok(Err(e)) = task.await
    {
        eprintln!("agora lb: {e:#}");
    }
    if let Some(d) = dns {
        d.stop().await;
    }
    if let Some(m) = marathon {
        m.stop().await;
    }
    for a in agents {
        a.stop().await;
    }
    master.stop().await;
    Ok(())
}

/// What runs where, and how to reach it.
fn print_summary(
    args: &DevArgs,
    secrets: &DevSecrets,
    master: &agora_master::RunningMaster,
    agents: &[agora_agent::RunningAgent],
    marathon: Option<&agora_marathon::RunningMarathon>,
    dns: Option<&agora_dns::RunningDns>,
    lb: Option<(u16, u16)>,
) {
    println!("Agora dev cluster is up (TLS and authentication on):");
    println!(
        "  master    https://{}         (UI, Mesos v1 scheduler and operator APIs)",
        master.addr
    );
    for (i, a) in agents.iter().enumerate() {
        println!(
            "  agent     https://{}         rack:r{}  {}",
            a.addr,
            i + 1,
            a.settings.core.resources
        );
    }
    if let Some(m) = marathon {
        println!(
            "  marathon  https://{}         (UI, Marathon v2 REST API, /v2/events)",
            m.addr
        );
    }
    if let Some(d) = dns {
        println!(
            "  dns       {}                (dig @{} -p {} web.marathon.mesos){}",
            d.addr,
            d.addr.ip(),
            d.addr.port(),
            d.http_addr
                .map(|a| format!(", HTTP API http://{a}/v1/"))
                .unwrap_or_default()
        );
    }
    match lb {
        Some((http, stats)) => println!(
            "  lb        http://127.0.0.1:{http}          (HAProxy: apps labelled HAPROXY_GROUP=external on their service ports and HAPROXY_0_VHOST; stats http://127.0.0.1:{stats}/)"
        ),
        None if args.lb_http_port != 0 && marathon.is_some() => {
            println!("  lb        not running: HAProxy is not installed")
        }
        None => {}
    }
    println!(
        "  overlay   off: an address per task needs agents on hosts of their own (sudo agora dev --hosts 3)"
    );
    println!(
        "  work dir  {} (certificates and credentials in {})",
        args.work_dir.display(),
        secrets.dir.display()
    );
    let (user, password) = (&secrets.admin.principal, secrets.admin.secret.expose());
    let ca = secrets.ca.display();
    println!(
        "Log in as {user} / {password} (all principals: {}).",
        secrets.credentials.display()
    );
    println!(
        "  curl --cacert {ca} -u {user}:{password} https://{}/master/state",
        master.addr
    );
    println!(
        "  agora app list                      (finds marathon-rs, the CA and {user} by itself)"
    );
    println!(
        "  pymesos: MesosSchedulerDriver(sched, framework, '{}', principal='{user}', secret='{password}')   (plain HTTP is served for it)",
        master.addr
    );
    println!(
        "  marathon client: MarathonClient('https://127.0.0.1:{}', username='{user}', password='{password}', verify='{ca}')",
        args.marathon_port
    );
}

/// The HTTP authentication of `realms` from the dev credentials file,
/// reloaded on SIGHUP.
fn realms(secrets: &DevSecrets, realms: &[Realm]) -> anyhow::Result<Arc<HttpAuth>> {
    let auth = Arc::new(HttpAuth::from_file(
        realms.iter().copied(),
        &secrets.credentials,
    )?);
    agora_rpc::auth::reload_on_sighup(auth.clone());
    Ok(auth)
}

/// The dev master on 127.0.0.1:`--port`, secured with `secrets`.
async fn start_master(
    args: &DevArgs,
    secrets: &DevSecrets,
) -> anyhow::Result<agora_master::RunningMaster> {
    let master_args = MasterArgs::try_parse_defaults()?;
    let mut options = master_args.options()?;
    options.hostname = Some("localhost".into());
    options.work_dir = Some(args.work_dir.join("master"));
    options.auth = realms(
        secrets,
        &[
            Realm::MasterScheduler,
            Realm::MasterReadwrite,
            Realm::MasterReadonly,
        ],
    )?;
    options.authenticate_agents = true;
    // Plain HTTP is served too, for clients that cannot speak TLS (pymesos);
    // they still authenticate.
    options.transport = Transport::tls(secrets.master.clone(), true);
    options.flags.retain(|(k, _)| k != "insecure");
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--port)"))?;
    Ok(agora_master::start(options, listener).await?)
}

/// `--agents` agents on 127.0.0.2 onwards, each on the port after the
/// previous one, registered with `master`.
async fn start_agents(
    args: &DevArgs,
    secrets: &DevSecrets,
    master: &agora_master::RunningMaster,
) -> anyhow::Result<Vec<agora_agent::RunningAgent>> {
    let agent_auth = realms(secrets, &[Realm::AgentReadonly])?;
    let executor = executor_path(args.executor_path.clone())?;
    let mut agents = Vec::new();
    for i in 1..=args.agents {
        let port_base = 31000 + u32::from(i - 1) * 1000;
        let mut resources = args
            .agent_resources
            .clone()
            .unwrap_or_default()
            .filter(|r| r.name != "ports");
        resources += &Resources::parse(&format!("ports:[{}-{}]", port_base, port_base + 999), "*")?;
        let mut o = AgentOptions::new(
            master.address(),
            args.work_dir.join(format!("agent-{i}")),
            executor.clone(),
        );
        let agent_ip = IpAddr::V4(agent_ip(i));
        o.hostname = agent_ip.to_string();
        o.advertise_ip = Some(agent_ip);
        o.tls = Some(secrets.agent.clone());
        o.credential = Some(secrets.agent_credential.clone());
        o.http_auth = agent_auth.clone();
        o.resources = Some(resources);
        o.attributes = parse_attributes(&format!("rack:r{i}"))?;
        let agent_addr = SocketAddr::new(agent_ip, args.port + i);
        let listener = tokio::net::TcpListener::bind(agent_addr)
            .await
            .with_context(|| format!("cannot listen on {agent_addr} for agent {i} (agents use the ports after --port)"))?;
        agents.push(agora_agent::start(o, listener).await?);
    }
    for a in &agents {
        let _ = a.registered(std::time::Duration::from_secs(10)).await;
    }
    Ok(agents)
}

/// marathon-rs on `--marathon-port` (None when 0).
async fn start_marathon(
    args: &DevArgs,
    secrets: &DevSecrets,
    master: &agora_master::RunningMaster,
) -> anyhow::Result<Option<agora_marathon::RunningMarathon>> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(if args.marathon_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(ip, args.marathon_port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for marathon-rs (--marathon-port, 0 to skip)")
        })?;
        let mut options =
            agora_marathon::MarathonOptions::new(&master.address(), args.work_dir.join("marathon"));
        options.transport = Transport::tls(secrets.marathon.clone(), false);
        options.client_tls = Some(secrets.marathon.client());
        options.credential = Some(secrets.framework.clone());
        // A role of its own, so that apps with persistent volumes can
        // reserve (nothing can be reserved for `*`).
        options.role = "marathon".into();
        options.http_auth = Arc::new(agora_marathon::auth::HttpAuth::new(
            Some((
                secrets.admin.principal.clone(),
                secrets.admin.secret.clone(),
            )),
            Vec::new(),
            "Mesosphere",
        ));
        Some(agora_marathon::start(options, listener).await?)
    })
}

/// agora dns on `--dns-port` (None when 0), its HTTP API on 8123 when free.
async fn start_dns(
    args: &DevArgs,
    secrets: &DevSecrets,
    master: &agora_master::RunningMaster,
) -> anyhow::Result<Option<agora_dns::RunningDns>> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(if args.dns_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(ip, args.dns_port);
        let (udp, tcp) = agora_dns::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for agora dns (--dns-port, 0 to skip)")
        })?;
        // The HTTP API on 8123 when that port is free.
        let http = tokio::net::TcpListener::bind(SocketAddr::new(ip, 8123))
            .await
            .ok();
        let mut options = agora_dns::DnsOptions::new(master.address());
        options.credential = Some(secrets.dns.clone());
        options.tls = Some(agora_rpc::tls::ClientTls::load(&secrets.ca, None)?);
        Some(agora_dns::start(options, udp, tcp, http).await?)
    })
}

/// The dev cluster's overlay range.
const DEV_OVERLAY: &str = "10.200.0.0/16";

/// Whether this machine can run the overlay: VXLAN in the kernel (tried in
/// a namespace of its own) and the CNI plugins; why not, plainly.
fn overlay_possible() -> Result<(), String> {
    if !Path::new("/usr/lib/cni/bridge").exists() && !Path::new("/opt/cni/bin/bridge").exists() {
        return Err("no CNI plugins (apt-get install containernetworking-plugins)".into());
    }
    let ns = format!("agora-dev-probe-{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ip(&["netns", "add", &ns]) {
        return Err("cannot make network namespaces (root is needed)".into());
    }
    let vxlan = ip(&[
        "-n", &ns, "link", "add", "probe", "type", "vxlan", "id", "1", "dstport", "4789",
    ]);
    ip(&["netns", "del", &ns]);
    if vxlan {
        Ok(())
    } else {
        Err("the kernel has no VXLAN".into())
    }
}

/// `agora dev --hosts N`: the multi-host test bed, for a person.
async fn on_hosts(
    agents: u16,
    work_dir: &std::path::Path,
    agora: Option<PathBuf>,
) -> anyhow::Result<()> {
    let agora = executor_path(agora)?;
    let overlay = overlay_possible();
    let layout = agora_testbed::Layout {
        agents: usize::from(agents),
        master_flags: if overlay.is_ok() {
            vec!["--overlay-cidr".into(), DEV_OVERLAY.into()]
        } else {
            Vec::new()
        },
        ..agora_testbed::Layout::default()
    };
    let dir = work_dir.join("hosts");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    agora_testbed::net::sweep_abandoned()?;
    eprintln!(
        "starting {} hosts (network namespaces agora-dev-*)…",
        layout.hosts().len()
    );
    // Ctrl-C while it boots drops the start, which removes what it made.
    let cluster = tokio::select! {
        c = agora_testbed::Cluster::start(layout, "agora-dev", &agora, &dir) => {
            c.context("agora dev --hosts")?
        }
        () = super::shutdown_signal() => anyhow::bail!("stopped while starting"),
    };
    let (user, password) = cluster.admin();
    let ca = cluster.secrets().ca.display().to_string();
    println!("Agora dev cluster is up on hosts of its own (TLS and authentication on):");
    print!("{}", cluster.describe());
    println!("Log in as {user} / {password}; the CA is {ca}. From the client host:");
    println!(
        "  ip netns exec agora-dev-client1 curl -sL --cacert {ca} -u {user}:{password} https://master1:5050/master/state"
    );
    println!("  ip netns exec agora-dev-client1 dig @dns web.marathon.mesos");
    match overlay {
        Ok(()) => println!(
            "Overlay {DEV_OVERLAY}: a /24 per agent; tasks on the network \"agora\" get their own address\n  (Marathon: \"networks\": [{{\"mode\": \"container\", \"name\": \"agora\"}}]; see the README)"
        ),
        Err(why) => println!("Overlay off: {why}"),
    }
    println!("Try failover: kill the leading master's process (ip netns pids agora-dev-masterN),");
    println!("or cut a host off: ip netns exec agora-dev-agent1 iptables -A INPUT -i eth0 -j DROP");
    println!(
        "Logs: {}/<host>.log. Press Ctrl-C to stop (the hosts and all in them go).",
        dir.display()
    );
    super::shutdown_signal().await;
    eprintln!("stopping: removing the hosts");
    drop(cluster);
    Ok(())
}
