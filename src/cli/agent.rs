//! `agora agent` and `agora executor`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use agora_agent::AgentOptions;
use agora_proto::resources::{Resources, parse_attributes};
use agora_proto::v1;
use anyhow::Context as _;
use clap::Args;

/// Flags of `agora agent` (Mesos names where Mesos users know them); with a
/// subcommand (`agora agent list`, `drain`, …) it manages the cluster's
/// agents instead of running one.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub admin: Option<super::agents::AgentCommand>,
    /// The master, `host:port` (the port defaults to 5050), or
    /// `zk://host:2181[,host:2181]/mesos` to follow the leader ZooKeeper names.
    #[arg(long, env = "AGORA_MASTER", required = true)]
    pub master: Option<String>,
    /// Where sandboxes and the agent's metadata live.
    #[arg(long, env = "AGORA_WORK_DIR", default_value = "/tmp/agora/agent")]
    pub work_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub ip: IpAddr,
    /// Port of the agent's HTTP API (executor API, state, files).
    #[arg(long, default_value_t = 5051)]
    pub port: u16,
    /// Address executors and the master use to reach this agent.
    #[arg(long)]
    pub advertise_ip: Option<IpAddr>,
    /// Hostname in offers (defaults to the machine's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Resources in Mesos syntax, e.g. `cpus:4;mem:8192;ports:[31000-32000]`;
    /// what it leaves out is detected.
    #[arg(long, value_parser = parse_resources)]
    pub resources: Option<Resources>,
    /// Attributes, e.g. `rack:r1;zone:a`.
    #[arg(long, value_parser = parse_attrs)]
    pub attributes: Option<Attributes>,
    /// The agora binary whose `executor` subcommand runs command tasks.
    #[arg(long)]
    pub executor_path: Option<PathBuf>,
    /// How long an executor may take to subscribe.
    #[arg(long, default_value = "1m", value_parser = agora_proto::duration::parse)]
    pub executor_registration_timeout: Duration,
    /// How long an executor has to exit after SHUTDOWN.
    #[arg(long, default_value = "5s", value_parser = agora_proto::duration::parse)]
    pub executor_shutdown_grace_period: Duration,
    /// Containerizers, comma separated: `docker` (tasks with a DOCKER
    /// ContainerInfo) and `process` (everything else).
    #[arg(long, value_delimiter = ',', default_value = "docker,process", value_parser = ["docker", "process"])]
    pub containerizers: Vec<String>,
    /// Let Docker tasks run privileged and mount the Docker socket.
    #[arg(long)]
    pub docker_allow_privileged: bool,
    /// How long executors of checkpointing frameworks wait for a restarted
    /// agent before they kill their tasks.
    #[arg(long, default_value = "15m", value_parser = agora_proto::duration::parse)]
    pub recovery_timeout: Duration,
    /// Process task isolation: `cgroups` (cpu and memory limits, v2 or v1;
    /// without writable cgroups the agent says so and runs without) or `none`.
    #[arg(long, default_value = "cgroups", value_parser = ["cgroups", "none"])]
    pub isolation: String,
    /// Enforce `cpus` as a hard limit (CFS quota) for process and Docker
    /// tasks; without it cpus are a relative weight (cpu shares), as in Mesos.
    #[arg(long)]
    pub cgroups_enable_cfs: bool,
    /// A file with the agent's principal and secret for the master
    /// (`{"principal": "agent", "secret": "…"}`, Mesos' `--credential`).
    #[arg(long, value_parser = super::credential_file)]
    pub credential: Option<agora_proto::auth::Credential>,
    /// Mesos credentials JSON for the agent's own HTTP endpoints; with it
    /// `/state` and `/files/*` require credentials (realm mesos-agent-readonly).
    #[arg(long, alias = "http_credentials")]
    pub http_credentials: Option<std::path::PathBuf>,
    /// Require credentials on `/state` and `/files/*` (needs --http-credentials;
    /// on by default with it).
    #[arg(long, alias = "authenticate_http_readonly", num_args = 0..=1, default_missing_value = "true")]
    pub authenticate_http_readonly: Option<bool>,
    /// Executor calls must carry the token the agent gave the executor
    /// (MESOS_EXECUTOR_AUTHENTICATION_TOKEN). Executors that cannot send it
    /// (pymesos') then fail, as with Mesos; without it such calls are taken
    /// only from the executor's own process.
    #[arg(long, alias = "authenticate_http_executors")]
    pub authenticate_http_executors: bool,
    /// The key executors' tokens are signed with (raw bytes of the file);
    /// default: one made at first start in `<work-dir>/meta/jwt_secret_key`.
    #[arg(long, alias = "jwt_secret_key")]
    pub jwt_secret_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Run tasks as the users their frameworks name (needs root; Mesos'
    /// `--switch_user`). `--switch-user=false`: everything runs as the agent.
    #[arg(long, alias = "switch_user", default_value_t = true, action = clap::ArgAction::Set)]
    pub switch_user: bool,
    /// Mesos ACLs for this agent's endpoints (access_sandboxes: who may read
    /// which sandboxes by their user): inline JSON or a file.
    #[arg(long, value_parser = super::master::parse_acls)]
    pub acls: Option<agora_proto::acl::Acls>,
    /// Where CNI plugins are (`:`-separated; default: Debian's
    /// /usr/lib/cni, then /opt/cni/bin).
    #[arg(long, alias = "network_cni_plugins_dir")]
    pub network_cni_plugins_dir: Option<String>,
    /// CNI network configurations (Mesos' single-plugin files or
    /// `.conflist`s), found by their `name`; the overlay network needs none.
    #[arg(long, alias = "network_cni_config_dir")]
    pub network_cni_config_dir: Option<PathBuf>,
    /// Run without TLS or without credentials for its endpoints (logged).
    #[arg(long)]
    pub insecure: bool,
}

/// Parsed `--attributes`.
#[derive(Debug, Clone)]
pub struct Attributes(pub Vec<v1::Attribute>);

/// `--resources`: the Mesos text form or a JSON array.
pub fn parse_resources(s: &str) -> Result<Resources, String> {
    Resources::parse(s, "*").map_err(|e| e.to_string())
}

fn parse_attrs(s: &str) -> Result<Attributes, String> {
    parse_attributes(s)
        .map(Attributes)
        .map_err(|e| e.to_string())
}

/// The agora binary to run executors with.
pub fn executor_path(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => {
            std::env::current_exe().context("cannot find the agora binary; pass --executor-path")
        }
    }
}

impl AgentArgs {
    /// The agent options these flags describe.
    pub fn options(&self) -> anyhow::Result<AgentOptions> {
        let master = self.master.clone().context("--master is required")?;
        let mut o = AgentOptions::new(
            master,
            self.work_dir.clone(),
            executor_path(self.executor_path.clone())?,
        );
        if let Some(h) = &self.hostname {
            o.hostname = h.clone();
        }
        o.advertise_ip = self.advertise_ip;
        o.resources = self.resources.clone();
        o.attributes = self.attributes.clone().map(|a| a.0).unwrap_or_default();
        o.executor_registration_timeout = self.executor_registration_timeout;
        o.executor_shutdown_grace_period = self.executor_shutdown_grace_period;
        o.containerizers = self.containerizers.clone();
        o.docker_allow_privileged = self.docker_allow_privileged;
        o.recovery_timeout = self.recovery_timeout;
        o.cgroups = self.isolation == "cgroups";
        o.cgroups_enable_cfs = self.cgroups_enable_cfs;
        o.credential = self.credential.clone();
        o.authenticate_http_executors = self.authenticate_http_executors;
        o.jwt_secret_key = self.jwt_secret_key.clone();
        o.switch_user = self.switch_user;
        o.acls = self.acls.clone().unwrap_or_default();
        o.network_cni_plugins_dir = self.network_cni_plugins_dir.clone();
        o.network_cni_config_dir = self.network_cni_config_dir.clone();
        o.tls = self.tls.tls()?;
        o.cluster = self.tls.cluster.clone();
        let readonly = match (self.authenticate_http_readonly, &self.http_credentials) {
            (Some(true), None) => {
                anyhow::bail!("--authenticate-http-readonly needs --http-credentials")
            }
            (flag, creds) => flag.unwrap_or(creds.is_some()),
        };
        if let Some(path) = &self.http_credentials {
            let realms = readonly.then_some(agora_proto::auth::Realm::AgentReadonly);
            let auth =
                agora_rpc::auth::HttpAuth::from_file(realms, path).context("--http-credentials")?;
            let auth = std::sync::Arc::new(auth);
            agora_rpc::auth::reload_on_sighup(auth.clone());
            o.http_auth = auth;
        }
        Ok(o)
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(admin) = args.admin {
        return super::agents::run(admin).await;
    }
    let mut missing = Vec::new();
    if args.tls.ssl_cert_file.is_none() {
        missing.push("TLS (--ssl-cert-file, --ssl-key-file, --ssl-ca-file)");
    }
    if args.http_credentials.is_none() {
        missing.push("credentials for /state and /files (--http-credentials)");
    }
    super::secure_or_insecure("agent", args.insecure, &missing)?;
    let options = args.options()?;
    let addr = SocketAddr::new(args.ip, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--ip/--port)"))?;
    let agent = agora_agent::start(options, listener)
        .await
        .with_context(|| {
            format!(
                "cannot start the agent in --work-dir {}",
                args.work_dir.display()
            )
        })?;
    eprintln!(
        "agora agent listening on http://{} (master {})",
        agent.addr,
        args.master.as_deref().unwrap_or_default()
    );
    match &agent.settings.core.isolation {
        Some(how) => eprintln!("process tasks: cpu and memory limits with {how}"),
        None => eprintln!(
            "process tasks: no cpu and memory limits (--isolation or cgroups not writable)"
        ),
    }
    // As Mesos: SIGTERM or Ctrl-C stops the agent but not the tasks of
    // checkpointing frameworks (the next run with this work dir adopts them);
    // SIGUSR1 kills everything first.
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("cannot handle SIGUSR1")?;
    tokio::select! {
        _ = super::shutdown_signal() => {
            eprintln!("stopping: tasks of checkpointing frameworks keep running for the next run of this agent");
            agent.detach().await;
        }
        _ = usr1.recv() => {
            eprintln!("stopping: killing this agent's tasks (SIGUSR1)");
            agent.stop().await;
        }
    }
    Ok(())
}

/// `agora executor`: started by an agent, never by hand.
pub async fn executor() -> anyhow::Result<()> {
    agora_agent::command_executor::run().await?;
    Ok(())
}
