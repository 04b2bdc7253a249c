//! `agora master`.

use std::net::SocketAddr;
use std::time::Duration;

use agora_master::{MasterOptions, flags_of};
use agora_master_core::Config;
use anyhow::Context as _;
use clap::Args;

/// Flags of `agora master` (Mesos names where Mesos users know them).
#[derive(Args, Debug, Clone)]
pub struct MasterArgs {
    /// Address to listen on (HTTP APIs and agent gRPC share it).
    #[arg(long, env = "AGORA_MASTER_IP", default_value = "0.0.0.0")]
    pub ip: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "AGORA_MASTER_PORT", default_value_t = 5050)]
    pub port: u16,
    /// Hostname advertised to agents and frameworks.
    #[arg(long, env = "AGORA_MASTER_HOSTNAME")]
    pub hostname: Option<String>,
    /// Batch allocation interval, e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s", value_parser = agora_proto::duration::parse)]
    pub allocation_interval: Duration,
    /// How often agents are pinged.
    #[arg(long, default_value = "15s", value_parser = agora_proto::duration::parse)]
    pub agent_ping_timeout: Duration,
    /// Missed pings before an agent is unreachable.
    #[arg(long, default_value_t = 5)]
    pub max_agent_ping_timeouts: u32,
    /// How long an agent admitted before a master failover may take to re-register (an agent whose connection closes has its ping budget: --agent-ping-timeout x --max-agent-ping-timeouts).
    #[arg(long, default_value = "10m", value_parser = agora_proto::duration::parse)]
    pub agent_reregister_timeout: Duration,
    /// How long frameworks that accept a drained agent's inverse offer
    /// (marathon-rs does) may take to move their tasks elsewhere before
    /// they are killed; frameworks that do not answer within 2s are killed
    /// at once. 0 kills every task at once, as Mesos' DRAIN_AGENT.
    #[arg(long, default_value = "10mins", value_parser = agora_proto::duration::parse)]
    pub drain_notice: Duration,
    /// Rescind offers older than this (none when unset).
    #[arg(long, value_parser = agora_proto::duration::parse)]
    pub offer_timeout: Option<Duration>,
    /// Role weights, `role=weight,role=weight`.
    #[arg(long, value_parser = parse_weights)]
    pub weights: Option<Weights>,
    /// Only these roles (comma separated) may be used.
    #[arg(long, value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// An overlay network over this range (e.g. `10.200.0.0/16`): each agent
    /// gets a subnet of it and tasks that ask for the network an address of
    /// their own; none when unset.
    #[arg(long)]
    pub overlay_cidr: Option<ipnet::Ipv4Net>,
    /// The overlay network's name (tasks ask for it in `network_infos`,
    /// Marathon apps in `networks`).
    #[arg(long, default_value = "agora")]
    pub overlay_name: String,
    /// The prefix length of each agent's subnet of --overlay-cidr.
    #[arg(long, default_value_t = 24)]
    pub overlay_subnet_prefix: u8,
    /// Encrypt the overlay between agents (IPsec ESP, AES-128-GCM, keys
    /// made by the master and handed to agents over their TLS channel).
    #[arg(long, requires = "overlay_cidr")]
    pub overlay_encrypt: bool,
    /// How often the encrypted overlay's key is replaced.
    #[arg(long, default_value = "12h", value_parser = agora_proto::duration::parse)]
    pub overlay_key_rotation: Duration,
    /// Contend for leadership in ZooKeeper (`zk://host:2181[,host:2181]/mesos`):
    /// a standby redirects to the leader until it is elected.
    #[arg(long, value_parser = parse_zk)]
    pub zk: Option<agora_zk::ZkUrl>,
    /// ZooKeeper session timeout: a leader cut off from ZooKeeper this long
    /// stops leading (the process exits).
    #[arg(long, default_value = "10s", value_parser = agora_proto::duration::parse)]
    pub zk_session_timeout: Duration,
    /// IP advertised to agents, frameworks and ZooKeeper (default: --ip).
    #[arg(long)]
    pub advertise_ip: Option<std::net::IpAddr>,
    /// Where the registry (admitted, unreachable and gone agents, weights)
    /// survives restarts; without it and without --zk it is kept in memory.
    #[arg(long, env = "AGORA_MASTER_WORK_DIR")]
    pub work_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub auth: MasterAuthArgs,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Run without TLS or without credentials (logged, and shown on the UI
    /// and in /flags).
    #[arg(long)]
    pub insecure: bool,
}

/// Authentication flags (Mesos' names; `_` spellings accepted).
#[derive(Args, Debug, Clone, Default)]
pub struct MasterAuthArgs {
    /// Mesos credentials JSON (`{"credentials":[{"principal":…,"secret":…}]}`),
    /// re-read on SIGHUP. With it, every realm below requires credentials
    /// unless turned off.
    #[arg(long, alias = "credentials_file")]
    pub credentials: Option<std::path::PathBuf>,
    /// Require credentials on /api/v1/scheduler (realm mesos-master-scheduler).
    #[arg(long, alias = "authenticate_http_frameworks", num_args = 0..=1, default_missing_value = "true")]
    pub authenticate_http_frameworks: Option<bool>,
    /// Require credentials on the operator API and /teardown (mesos-master-readwrite).
    #[arg(long, alias = "authenticate_http_readwrite", num_args = 0..=1, default_missing_value = "true")]
    pub authenticate_http_readwrite: Option<bool>,
    /// Require credentials on /state, /metrics and the other reads, and the UI
    /// (mesos-master-readonly).
    #[arg(long, alias = "authenticate_http_readonly", num_args = 0..=1, default_missing_value = "true")]
    pub authenticate_http_readonly: Option<bool>,
    /// Agents must present credentials from --credentials (agent
    /// `--credential`); on by default with --credentials.
    #[arg(long, alias = "authenticate_agents", num_args = 0..=1, default_missing_value = "true")]
    pub authenticate_agents: Option<bool>,
    /// Mesos ACLs: inline JSON or a file (`/p`, `file:///p`), e.g.
    /// `{"permissive": false, "run_tasks": [...]}`. Without it everything
    /// is allowed.
    #[arg(long, value_parser = parse_acls)]
    pub acls: Option<agora_proto::acl::Acls>,
}

pub(super) fn parse_acls(s: &str) -> Result<agora_proto::acl::Acls, String> {
    let text = s.trim_start();
    let json = if text.starts_with('{') {
        text.as_bytes().to_vec()
    } else {
        let path = agora_rpc::auth::strip_file_scheme(std::path::Path::new(s));
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
    };
    agora_proto::acl::Acls::parse(&json).map_err(|e| e.to_string())
}

impl MasterAuthArgs {
    /// The realms and credentials these flags describe.
    pub fn http_auth(&self) -> anyhow::Result<agora_rpc::auth::HttpAuth> {
        use agora_proto::auth::Realm;
        let on = self.credentials.is_some();
        let realms: Vec<Realm> = [
            (
                self.authenticate_http_frameworks,
                Realm::MasterScheduler,
                "--authenticate-http-frameworks",
            ),
            (
                self.authenticate_http_readwrite,
                Realm::MasterReadwrite,
                "--authenticate-http-readwrite",
            ),
            (
                self.authenticate_http_readonly,
                Realm::MasterReadonly,
                "--authenticate-http-readonly",
            ),
        ]
        .into_iter()
        .map(|(flag, realm, name)| match (flag.unwrap_or(on), on) {
            (true, false) => Err(anyhow::anyhow!(
                "{name} needs --credentials (a Mesos credentials file)"
            )),
            (wanted, _) => Ok(wanted.then_some(realm)),
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
        match &self.credentials {
            Some(path) => {
                Ok(agora_rpc::auth::HttpAuth::from_file(realms, path).context("--credentials")?)
            }
            None => Ok(agora_rpc::auth::HttpAuth::open()),
        }
    }
}

fn parse_zk(s: &str) -> Result<agora_zk::ZkUrl, String> {
    s.parse()
}

/// Parsed `--weights`.
#[derive(Debug, Clone)]
pub struct Weights(pub Vec<(String, f64)>);

fn parse_weights(s: &str) -> Result<Weights, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, w) = part
            .split_once('=')
            .ok_or_else(|| format!("expected role=weight, got '{part}'"))?;
        agora_proto::roles::validate(role).map_err(|e| e.to_string())?;
        let w: f64 = w
            .parse()
            .map_err(|_| format!("weight of '{role}' is not a number"))?;
        if !(w > 0.0 && w.is_finite()) {
            return Err(format!("weight of '{role}' must be positive"));
        }
        out.push((role.to_string(), w));
    }
    Ok(Weights(out))
}

impl MasterArgs {
    /// The flags' defaults (for `agora dev`).
    pub fn try_parse_defaults() -> anyhow::Result<MasterArgs> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: MasterArgs,
        }
        use clap::Parser as _;
        Ok(Wrapper::try_parse_from(["agora"])?.args)
    }

    /// The core configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<Config> {
        let overlay = match self.overlay_cidr {
            Some(cidr) => {
                let mut o = agora_master_core::master::OverlayConfig::new(
                    &self.overlay_name,
                    cidr,
                    self.overlay_subnet_prefix,
                )
                .context("--overlay-cidr, --overlay-name, --overlay-subnet-prefix")?;
                anyhow::ensure!(
                    self.overlay_key_rotation >= Duration::from_secs(10),
                    "--overlay-key-rotation must be at least 10s (a rotation takes 10s)"
                );
                o.encrypt = self.overlay_encrypt;
                o.key_rotation = self.overlay_key_rotation;
                Some(o)
            }
            None => None,
        };
        Ok(Config {
            allocation_interval: self.allocation_interval,
            agent_ping_timeout: self.agent_ping_timeout,
            max_agent_ping_timeouts: self.max_agent_ping_timeouts,
            agent_reregister_timeout: self.agent_reregister_timeout,
            offer_timeout: self.offer_timeout,
            drain_notice: self.drain_notice,
            weights: self.weights.clone().map(|w| w.0).unwrap_or_default(),
            roles: self.roles.clone(),
            acls: self.auth.acls.clone().unwrap_or_default(),
            overlay,
            ..Config::default()
        })
    }

    /// What security is missing from these flags.
    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.tls.ssl_cert_file.is_none() {
            m.push("TLS (--ssl-cert-file, --ssl-key-file, --ssl-ca-file)");
        }
        if self.auth.credentials.is_none() {
            m.push("credentials (--credentials)");
        }
        m
    }

    /// The master options.
    pub fn options(&self) -> anyhow::Result<MasterOptions> {
        let config = self.config()?;
        let auth = std::sync::Arc::new(self.auth.http_auth()?);
        let on = |r| auth.requires(r).to_string();
        use agora_proto::auth::Realm;
        let flags = flags_of(
            &config,
            &[
                ("port", self.port.to_string()),
                ("ip", self.ip.to_string()),
                ("authenticate_http_frameworks", on(Realm::MasterScheduler)),
                ("authenticate_http_readwrite", on(Realm::MasterReadwrite)),
                ("authenticate_http_readonly", on(Realm::MasterReadonly)),
                ("insecure", (!self.missing().is_empty()).to_string()),
            ],
        );
        agora_rpc::auth::reload_on_sighup(auth.clone());
        let authenticate_agents = match (self.auth.authenticate_agents, &self.auth.credentials) {
            (Some(true), None) => anyhow::bail!("--authenticate-agents needs --credentials"),
            (flag, creds) => flag.unwrap_or(creds.is_some()),
        };
        Ok(MasterOptions {
            transport: self.tls.transport()?,
            cluster: self.tls.cluster.clone(),
            authenticate_agents,
            config,
            hostname: self.hostname.clone(),
            flags,
            seed: 0,
            advertise_ip: self.advertise_ip,
            work_dir: self.work_dir.clone(),
            auth,
        })
    }
}

pub async fn run(args: MasterArgs) -> anyhow::Result<()> {
    super::secure_or_insecure("master", args.insecure, &args.missing())?;
    let addr = SocketAddr::new(args.ip, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--ip/--port)"))?;
    if let Some(zk) = args.zk.clone() {
        eprintln!("agora master listening on http://{addr}, contending in {zk}");
        agora_master::run_contending(
            args.options()?,
            listener,
            zk,
            args.zk_session_timeout,
            super::shutdown_signal(),
        )
        .await
        .context("leadership lost")?;
        return Ok(());
    }
    let master = agora_master::start(args.options()?, listener).await?;
    eprintln!("agora master listening on http://{}", master.addr);
    super::shutdown_signal().await;
    master.stop().await;
    Ok(())
}
