//! `agora-run-commands`: runs shell commands as tasks on an Agora (or Mesos)
//! cluster and prints how each ended.
//!
//! ```text
//! agora-run-commands --master 127.0.0.1:5050 'echo hello' 'exit 3'
//! ```

use std::process::ExitCode;
use std::time::Duration;

use agora_examples::{RunCommands, run_commands};
use clap::Parser;

/// Run shell commands as tasks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The master.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// Framework name (also the task id prefix).
    #[arg(long, default_value = "run-commands")]
    name: String,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The principal to authenticate as (with AGORA_SECRET).
    #[arg(long, env = "AGORA_PRINCIPAL")]
    principal: Option<String>,
    /// The cluster CA: reach the master over TLS (https).
    #[arg(long, env = "AGORA_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// The commands (each runs with `sh -c`).
    #[arg(required = true)]
    commands: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(args.cpus) || !positive(args.mem) {
        eprintln!("error: --cpus and --mem must be positive");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let credential = args
        .principal
        .map(|principal| agora_proto::auth::Credential {
            principal,
            secret: agora_proto::auth::Secret::new(
                std::env::var("AGORA_SECRET").unwrap_or_default(),
            ),
        });
    let tls = match args
        .ca_file
        .as_deref()
        .map(|ca| agora_rpc::tls::ClientTls::load(ca, None))
    {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("error: --ca-file: {e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let config = RunCommands {
        credential,
        tls,
        master: args.master,
        name: args.name,
        commands: args.commands,
        cpus: args.cpus,
        mem: args.mem,
        timeout: Duration::from_secs(args.timeout),
    };
    match runtime.block_on(run_commands(config)) {
        Ok(outcomes) => {
            println!(
                "{:<24} {:<14} {:<10} COMMAND / MESSAGE",
                "TASK", "STATE", "AGENT"
            );
            let mut ok = true;
            for o in &outcomes {
                ok &= o.state == agora_proto::v1::TaskState::TaskFinished;
                println!(
                    "{:<24} {:<14} {:<10} {}  ({})",
                    o.task_id,
                    o.state.as_str_name().trim_start_matches("TASK_"),
                    o.agent.as_deref().unwrap_or("-"),
                    o.command,
                    o.message.as_deref().unwrap_or("")
                );
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
