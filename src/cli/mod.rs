//! The command line: subcommands only wire the crates together.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod app;
mod bench;
mod bench_dns;
mod bench_docker;
mod bench_lb;
mod bench_marathon;
mod bench_offers;
mod dev;
mod dns;
mod lb;
mod marathon;
mod master;

/// Agora: a cluster manager in the Mesos tradition.
#[derive(Parser, Debug)]
#[command(name = "agora", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole cluster on this machine: a master and local agents.
    Dev(dev::DevArgs),
    /// Run a master (Mesos v1 scheduler and operator APIs, agents over gRPC).
    Master(master::MasterArgs),
    /// Run an agent that offers this machine's resources to a master.
    Agent(agent::AgentArgs),
    /// Run marathon-rs: long-running apps behind a Marathon-compatible REST API.
    Marathon(marathon::MarathonArgs),
    /// Serve every running task by name over DNS, as Mesos-DNS names them.
    Dns(dns::DnsArgs),
    /// HAProxy configuration for marathon-rs apps, from their marathon-lb labels.
    Lb(lb::LbArgs),
    /// Manage marathon-rs apps: list, show, deploy, scale, restart, destroy, tasks.
    App(app::AppArgs),
    /// Measure allocation and launch latency (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
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
            Command::Executor => agent::executor().await,
            Command::Bench(args) => bench::run(args).await,
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
    Ok(reqwest::Client::builder().default_headers(headers))
}
