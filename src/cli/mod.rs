//! The command line: subcommands only wire the crates together.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) mod agent;
mod agents;
mod app;
mod ca;
mod dev;
mod dev_secrets;
mod dns;
mod frameworks;
mod lb;
mod maintenance;
mod marathon;
mod master;
mod operator;
mod quota;
mod tasks;
mod top;

/// Agora: a cluster manager in the Mesos tradition.
#[derive(Parser, Debug)]
#[command(name = "agora", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole cluster on this machine: a master and local agents.
    Dev(dev::DevArgs),
    /// Run a master (Mesos v1 scheduler and operator APIs, agents over gRPC).
    Master(master::MasterArgs),
    /// Run an agent that offers this machine's resources to a master; or,
    /// with a subcommand, manage the cluster's agents (list, show, drain,
    /// deactivate, reactivate, gone).
    Agent(agent::AgentArgs),
    /// The cluster's frameworks: list, teardown.
    #[command(subcommand)]
    Framework(frameworks::FrameworkCommand),
    /// The cluster's tasks: list, show, logs (`-f` follows).
    #[command(subcommand)]
    Task(tasks::TaskCommand),
    /// Maintenance windows: schedule machines, see who moved off, take them
    /// down and bring them back.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCommand),
    /// Roles' quotas: guarantees and limits, and what each role holds.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// A live table of the agents, what they use and run, and the totals.
    Top(top::TopArgs),
    /// Run marathon-rs: long-running apps behind a Marathon-compatible REST API.
    Marathon(marathon::MarathonArgs),
    /// Serve every running task by name over DNS, as Mesos-DNS names them.
    Dns(dns::DnsArgs),
    /// HAProxy configuration for marathon-rs apps, from their marathon-lb labels.
    Lb(lb::LbArgs),
    /// Manage marathon-rs apps: list, show, deploy, scale, restart, destroy, tasks.
    App(app::AppArgs),
    /// Measure allocation and launch latency (see BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
    /// A cluster CA and its certificates (masters, agents, clients).
    Ca(ca::CaArgs),
    /// The command executor (started by agents, not by hand).
    #[command(hide = true)]
    Executor,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let executor = matches!(cli.command, Command::Executor);
    if executor {
        // Executors are many, small and short-lived: zeroing transparent huge
        // pages for their allocator was 30% of the CPU of a 1,000-task
        // deployment (see BENCHMARKS.md); one thread is all they need.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
    // `agora dns` on one core (e.g. under `taskset -c 0`) answers more
    // queries on one thread than with a worker and a reactor handing work
    // to each other.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let single_thread = executor || (one_core && matches!(cli.command, Command::Dns(_)));
    let mut builder = if single_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Master(args) => master::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Marathon(args) => marathon::run(args).await,
            Command::Dns(args) => dns::run(args).await,
            Command::Lb(args) => lb::run(args).await,
            Command::App(args) => app::run(args).await,
            Command::Framework(c) => frameworks::run(c).await,
            Command::Task(c) => tasks::run(c).await,
            Command::Maintenance(c) => maintenance::run(c).await,
            Command::Quota(c) => quota::run(c).await,
            Command::Top(args) => top::run(args).await,
            Command::Executor => agent::executor().await,
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Ca(args) => ca::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A server's base URL as the CLI's `flag` gives it: `http://` when no
/// scheme is given, no trailing `/`, checked to be a URL.
pub(crate) fn base_url(given: &str, flag: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let b = given.trim().trim_end_matches('/');
    let base = if b.starts_with("http://") || b.starts_with("https://") {
        b.to_string()
    } else {
        format!("http://{b}")
    };
    reqwest::Url::parse(&base).with_context(|| format!("{flag} '{base}' is not a URL"))?;
    Ok(base)
}

/// A table in the CLI's style.
pub(crate) fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    t
}

/// A JSON value as a table cell: strings without quotes, null empty.
pub(crate) fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A `--credential` flag: a file with one Mesos credential
/// (`{"principal": "p", "secret": "s"}`).
pub fn credential_file(path: &str) -> Result<agora_proto::auth::Credential, String> {
    let bytes = std::fs::read(agora_rpc::auth::strip_file_scheme(std::path::Path::new(
        path,
    )))
    .map_err(|e| format!("cannot read {path}: {e}"))?;
    agora_proto::auth::parse_credential(&bytes).map_err(|e| format!("{path}: {e}"))
}

/// marathon-lb's `--auth-credentials user:pass`: exactly one `:`.
pub fn auth_credentials(s: &str) -> Result<(String, String), String> {
    let mut parts = s.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(u), Some(p), None) if !u.is_empty() => Ok((u.to_string(), p.to_string())),
        _ => Err("Please provide marathon credentials in user:pass format".into()),
    }
}

/// An HTTP client for marathon-rs that sends `credentials` (HTTP Basic)
/// with every request, the event stream included.
pub fn marathon_client(
    credentials: Option<&(String, String)>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, password)) = credentials {
        let c = agora_proto::auth::Credential {
            principal: user.clone(),
            secret: agora_proto::auth::Secret::new(password.clone()),
        };
        let mut v = reqwest::header::HeaderValue::from_str(&c.basic_header())?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let builder = match ca {
        Some(ca) => agora_rpc::tls::ClientTls::load(ca, None)?.reqwest()?,
        None => reqwest::Client::builder(),
    };
    Ok(builder.default_headers(headers))
}

/// TLS flags of the daemons (Mesos' `LIBPROCESS_SSL_*` names as environment
/// variables).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This node's certificate chain (PEM) from the cluster CA (`agora ca issue`).
    #[arg(long, env = "LIBPROCESS_SSL_CERT_FILE", requires_all = ["ssl_key_file", "ssl_ca_file"])]
    pub ssl_cert_file: Option<std::path::PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "LIBPROCESS_SSL_KEY_FILE", requires = "ssl_cert_file")]
    pub ssl_key_file: Option<std::path::PathBuf>,
    /// The cluster CA (PEM): peers are verified against it alone.
    #[arg(long, env = "LIBPROCESS_SSL_CA_FILE")]
    pub ssl_ca_file: Option<std::path::PathBuf>,
    /// With TLS, also serve plain HTTP on the same port (for clients that
    /// cannot speak TLS, such as pymesos); gRPC to agents stays TLS.
    #[arg(long, env = "LIBPROCESS_SSL_SUPPORT_DOWNGRADE")]
    pub ssl_support_downgrade: bool,
    /// The cluster name in certificate names (`master.<cluster>`, …).
    #[arg(long, default_value = agora_rpc::tls::DEFAULT_CLUSTER)]
    pub cluster: String,
}

impl TlsArgs {
    /// This node's certificates, when given.
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<agora_rpc::tls::Tls>>> {
        use anyhow::Context as _;
        match (&self.ssl_cert_file, &self.ssl_key_file, &self.ssl_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(std::sync::Arc::new(
                agora_rpc::tls::Tls::load(cert, key, ca)
                    .context("--ssl-cert-file/--ssl-key-file/--ssl-ca-file")?,
            ))),
            (None, None, _) => Ok(None),
            _ => anyhow::bail!("--ssl-cert-file, --ssl-key-file and --ssl-ca-file go together"),
        }
    }

    /// How the node's listener speaks.
    pub fn transport(&self) -> anyhow::Result<agora_rpc::serve::Transport> {
        Ok(match self.tls()? {
            Some(tls) => agora_rpc::serve::Transport::tls(tls, self.ssl_support_downgrade),
            None => agora_rpc::serve::Transport::plain(),
        })
    }

    /// What the node needs as a client: the CA, and its own certificate
    /// when it has one.
    pub fn client(&self) -> anyhow::Result<Option<agora_rpc::tls::ClientTls>> {
        use anyhow::Context as _;
        if let Some(tls) = self.tls()? {
            return Ok(Some(tls.client()));
        }
        match &self.ssl_ca_file {
            Some(ca) => Ok(Some(
                agora_rpc::tls::ClientTls::load(ca, None).context("--ssl-ca-file")?,
            )),
            None => Ok(None),
        }
    }
}

/// Security is on by default: a daemon without `missing` refuses to start
/// unless `--insecure` says so, in which case it says so loudly.
pub fn secure_or_insecure(daemon: &str, insecure: bool, missing: &[&str]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            missing = %missing.join(", "),
            "agora {daemon} runs INSECURE (--insecure): anyone who reaches it may use it"
        );
        return Ok(());
    }
    anyhow::bail!(
        "agora {daemon} runs with TLS and authentication unless told otherwise; missing: {}. \
         Make certificates with `agora ca init` and `agora ca issue`, or run with --insecure \
         to go without (`agora dev` sets everything up by itself)",
        missing.join(", ")
    )
}
