//! `agora marathon`: marathon-rs, the bundled framework for long-running
//! apps, with Marathon's flag names.

use std::net::SocketAddr;
use std::path::PathBuf;

use agora_marathon::MarathonOptions;
use anyhow::Context as _;
use clap::Args;

/// Flags of `agora marathon`.
#[derive(Args, Debug, Clone)]
pub struct MarathonArgs {
    /// The master, `host:port`, or `zk://host:2181[,host:2181]/mesos`.
    #[arg(long, env = "AGORA_MASTER", default_value = "localhost:5050")]
    pub master: String,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub http_address: std::net::IpAddr,
    /// Port of the REST API and UI.
    #[arg(long, env = "AGORA_MARATHON_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Hostname advertised to the master and in `/v2/leader`.
    #[arg(long, default_value = "localhost")]
    pub hostname: String,
    /// Where the state (apps, versions, deployments, tasks, framework id) is kept.
    #[arg(
        long,
        env = "AGORA_MARATHON_WORK_DIR",
        default_value = "/tmp/agora-marathon"
    )]
    pub work_dir: PathBuf,
    /// The framework name registered with the master.
    #[arg(long, default_value = "marathon")]
    pub framework_name: String,
    /// The role to register with.
    #[arg(long, default_value = "*")]
    pub mesos_role: String,
    /// Whether top-level groups created without `enforceRole` enforce their
    /// role: `off` (apps default to --mesos-role) or `top` (apps in `/dev`
    /// run in role `dev`).
    #[arg(long, alias = "new_group_enforce_role", default_value = "off", action = clap::ArgAction::Set,
          value_name = "off|top",
          value_parser = parse_enforce_role)]
    pub new_group_enforce_role: bool,
    /// Lowest service port assigned to apps.
    #[arg(long, default_value_t = 10000)]
    pub local_port_min: u32,
    /// Highest service port assigned to apps.
    #[arg(long, default_value_t = 20000)]
    pub local_port_max: u32,
    /// At most this many deployments at once.
    #[arg(long, default_value_t = 100)]
    pub max_running_deployments: usize,
    /// How long offers that are not needed are declined, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub decline_offer_duration: f64,
    /// Run highly available: elect a leader and keep the state in ZooKeeper
    /// (`zk://host:2181[,host:2181]/marathon`) instead of --work-dir.
    #[arg(long, value_parser = |s: &str| s.parse::<agora_zk::ZkUrl>())]
    pub zk: Option<agora_zk::ZkUrl>,
    /// After an operator's TEARDOWN removed the framework, register a new one
    /// and relaunch every app (without it, marathon-rs says so and waits).
    #[arg(long)]
    pub reregister_when_removed: bool,
    /// `user:password` required on every HTTP request (Basic), as
    /// Marathon's flag (split at the last `:`).
    #[arg(long, alias = "http_credentials", env = "MESOSPHERE_HTTP_CREDENTIALS", hide_env_values = true,
          value_parser = agora_marathon::auth::parse_user_password)]
    pub http_credentials: Option<(String, agora_proto::auth::Secret)>,
    /// The realm named in 401 answers.
    #[arg(long, alias = "http_realm", default_value = "Mesosphere")]
    pub http_realm: String,
    /// A file of bearer tokens, one a line, also accepted on every request
    /// (`Authorization: Bearer <t>`, or `token=<t>` as the `marathon` client sends).
    #[arg(long, alias = "http_tokens_file")]
    pub http_tokens_file: Option<PathBuf>,
    /// The principal marathon-rs registers with (`FrameworkInfo.principal`)
    /// and authenticates as, with the secret below.
    #[arg(long, alias = "mesos_authentication_principal")]
    pub mesos_authentication_principal: Option<String>,
    /// A file holding the secret, read raw (a trailing newline is part of
    /// it, as Marathon reads it).
    #[arg(
        long,
        alias = "mesos_authentication_secret_file",
        conflicts_with = "mesos_authentication_secret"
    )]
    pub mesos_authentication_secret_file: Option<PathBuf>,
    /// The secret itself (prefer the file: flags show in `ps`).
    #[arg(
        long,
        alias = "mesos_authentication_secret",
        env = "AGORA_MESOS_AUTHENTICATION_SECRET",
        hide_env_values = true
    )]
    pub mesos_authentication_secret: Option<String>,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Run without TLS or without credentials on the REST API (logged, and
    /// shown on the UI).
    #[arg(long)]
    pub insecure: bool,
    /// ZooKeeper session timeout: a leader cut off this long steps down.
    #[arg(long, default_value = "10s", value_parser = agora_proto::duration::parse)]
    pub zk_session_timeout: std::time::Duration,
}

impl MarathonArgs {
    /// The options these flags describe.
    pub fn options(&self) -> anyhow::Result<MarathonOptions> {
        if self.local_port_min > self.local_port_max || self.local_port_max > 65535 {
            anyhow::bail!(
                "--local-port-min {} / --local-port-max {} must be an ascending range within 0-65535",
                self.local_port_min,
                self.local_port_max
            );
        }
        if !(self.decline_offer_duration >= 0.0 && self.decline_offer_duration.is_finite()) {
            anyhow::bail!("--decline-offer-duration must be a non-negative number of seconds");
        }
        let mut o = MarathonOptions::new(&self.master, self.work_dir.clone());
        o.hostname = self.hostname.clone();
        o.role = self.mesos_role.clone();
        o.config.framework_name = self.framework_name.clone();
        o.config.new_group_enforce_role = self.new_group_enforce_role;
        o.config.local_port_min = self.local_port_min;
        o.config.local_port_max = self.local_port_max;
        o.config.max_running_deployments = self.max_running_deployments;
        o.config.decline_offer_seconds = self.decline_offer_duration;
        o.reregister_when_removed = self.reregister_when_removed;
        o.credential = self.credential()?;
        o.transport = self.tls.transport()?;
        o.client_tls = self.tls.client()?;
        o.insecure = !self.missing().is_empty();
        let tokens = match &self.http_tokens_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--http-tokens-file {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(agora_proto::auth::Secret::new)
                .collect(),
            None => Vec::new(),
        };
        o.http_auth = std::sync::Arc::new(agora_marathon::auth::HttpAuth::new(
            self.http_credentials.clone(),
            tokens,
            &self.http_realm,
        ));
        o.config.zk = self.zk.as_ref().map(|z| z.to_string());
        o.config.zk_session_timeout_ms = self.zk_session_timeout.as_millis() as u64;
        Ok(o)
    }
}

impl MarathonArgs {
    /// What security is missing from these flags.
    fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.tls.ssl_cert_file.is_none() {
            missing.push("TLS (--ssl-cert-file, --ssl-key-file, --ssl-ca-file)");
        }
        if self.http_credentials.is_none() && self.http_tokens_file.is_none() {
            missing.push("credentials (--http-credentials or --http-tokens-file)");
        }
        missing
    }

    fn credential(&self) -> anyhow::Result<Option<agora_proto::auth::Credential>> {
        let secret = match (
            &self.mesos_authentication_secret_file,
            &self.mesos_authentication_secret,
        ) {
            (Some(path), _) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("--mesos-authentication-secret-file {}", path.display())
            })?),
            (None, s) => s.clone(),
        };
        match (&self.mesos_authentication_principal, secret) {
            (Some(p), secret) => Ok(Some(agora_proto::auth::Credential {
                principal: p.clone(),
                secret: agora_proto::auth::Secret::new(secret.unwrap_or_default()),
            })),
            (None, Some(_)) => anyhow::bail!(
                "a Mesos authentication secret needs --mesos-authentication-principal"
            ),
            (None, None) => Ok(None),
        }
    }
}

pub async fn run(args: MarathonArgs) -> anyhow::Result<()> {
    super::secure_or_insecure("marathon", args.insecure, &args.missing())?;
    let options = args.options()?;
    let addr = SocketAddr::new(args.http_address, args.http_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--http-address/--http-port)"))?;
    if let Some(zk) = args.zk.clone() {
        println!(
            "marathon-rs at http://{addr} contending in {zk} (master {})",
            args.master
        );
        agora_marathon::run_contending(
            options,
            listener,
            zk,
            args.zk_session_timeout,
            super::shutdown_signal(),
        )
        .await
        .context("leadership lost")?;
        return Ok(());
    }
    let marathon = agora_marathon::start(options, listener).await?;
    println!(
        "marathon-rs is up at http://{} (master {})",
        marathon.addr, args.master
    );
    super::shutdown_signal().await;
    marathon.stop().await;
    Ok(())
}

/// `--new-group-enforce-role`: `off` or `top`, in any case (as Marathon).
fn parse_enforce_role(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Ok(false),
        "top" => Ok(true),
        _ => Err(format!("{s:?}: expected off or top")),
    }
}
