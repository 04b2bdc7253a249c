//! Example frameworks built on `agora-sdk`.
//!
//! [`run_commands`] runs a list of shell commands as tasks, packing as many
//! as fit into each offer, and returns when every one has ended. The
//! `agora-run-commands` binary wraps it for the command line.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState};
use agora_sdk::{Event, SchedulerConfig, SdkError, TaskBuilder};
use tracing::{debug, info};

/// What to run and with what.
#[derive(Clone, Debug)]
pub struct RunCommands {
    /// The master (`host:port`).
    pub master: String,
    /// The framework's name.
    pub name: String,
    /// One task per command.
    pub commands: Vec<String>,
    /// CPUs per task.
    pub cpus: f64,
    /// Memory (MB) per task.
    pub mem: f64,
    /// Give up after this long.
    pub timeout: Duration,
    /// Principal and secret, when the master requires them.
    pub credential: Option<agora_proto::auth::Credential>,
    /// The cluster CA, to reach the master over TLS.
    pub tls: Option<agora_rpc::tls::ClientTls>,
}

/// How one command ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Position in the command list.
    pub index: usize,
    /// The command.
    pub command: String,
    /// The task id.
    pub task_id: String,
    /// The terminal state.
    pub state: TaskState,
    /// The status message (e.g. "Command exited with status 3").
    pub message: Option<String>,
    /// The agent's hostname.
    pub agent: Option<String>,
}

fn scalar(offer: &v1::Offer, name: &str) -> f64 {
    offer
        .resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref())
        .map(|s| s.value)
        .sum()
}

/// Runs the commands; returns their outcomes in command order.
pub async fn run_commands(config: RunCommands) -> Result<Vec<Outcome>, SdkError> {
    let mut sc = SchedulerConfig::new(&config.master, &config.name);
    sc.credential = config.credential.clone();
    sc.tls = config.tls.clone();
    sc.framework_info.failover_timeout = Some(0.0);
    let (scheduler, mut events) = agora_sdk::subscribe(sc).await?;
    let mut pending: Vec<usize> = (0..config.commands.len()).rev().collect();
    let mut launched: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + config.timeout;
    let total = config.commands.len();
    let mut suppressed = false;
    while outcomes.len() < total {
        let event = tokio::select! {
            e = events.recv() => e,
            () = tokio::time::sleep_until(deadline) => {
                scheduler.teardown().await.ok();
                return Err(SdkError::Ended(format!("timed out with {} of {total} commands done", outcomes.len())));
            }
        };
        let Some(event) = event else {
            return Err(SdkError::Ended("the event stream ended".into()));
        };
        match event {
            Event::Offers(offers) => {
                for offer in offers {
                    let (mut cpus, mut mem) = (scalar(&offer, "cpus"), scalar(&offer, "mem"));
                    let mut tasks = Vec::new();
                    while let Some(&i) = pending.last() {
                        if cpus + 1e-9 < config.cpus || mem + 1e-9 < config.mem {
                            break;
                        }
                        pending.pop();
                        cpus -= config.cpus;
                        mem -= config.mem;
                        let id = format!("{}-{i}", config.name);
                        let task = TaskBuilder::new(&id, &offer)
                            .command(&config.commands[i])
                            .cpus(config.cpus)
                            .mem(config.mem)
                            .build();
                        launched.insert(id, (i, offer.hostname.clone()));
                        tasks.push(task);
                    }
                    if tasks.is_empty() {
                        let refuse = if pending.is_empty() { 60.0 } else { 1.0 };
                        scheduler.decline(vec![offer.id.clone()], refuse).await?;
                    } else {
                        debug!(tasks = tasks.len(), agent = %offer.hostname, "launching");
                        scheduler.launch(&offer, tasks, 0.0).await?;
                    }
                }
                if pending.is_empty() && !suppressed {
                    scheduler.suppress(vec![]).await?;
                    suppressed = true;
                }
            }
            Event::Update(status) => {
                let state = status.state();
                if !is_terminal(state) {
                    continue;
                }
                let Some((index, agent)) = launched.get(&status.task_id.value).cloned() else {
                    continue;
                };
                outcomes.entry(index).or_insert_with(|| Outcome {
                    index,
                    command: config.commands[index].clone(),
                    task_id: status.task_id.value.clone(),
                    state,
                    message: status.message.clone(),
                    agent: Some(agent),
                });
                if outcomes.len().is_multiple_of(50) {
                    info!(done = outcomes.len(), total, "progress");
                }
            }
            Event::Error(message) => return Err(SdkError::Ended(message)),
            _ => {}
        }
    }
    scheduler.teardown().await.ok();
    Ok(outcomes.into_values().collect())
}
