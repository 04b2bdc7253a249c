//! `agora agent list|show|drain|reactivate|deactivate|gone`: the cluster's
//! agents through the master's operator API. An agent is named by its id,
//! its hostname or its `host:port`.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::operator::{Operator, OperatorArgs, id, scalar, time};
use super::{table, text};

/// `agora agent` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum AgentCommand {
    /// List agents: address, state, resources in use of their total, tasks.
    List {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Show one agent and the tasks it runs.
    Show {
        /// The agent's id, hostname or host:port.
        agent: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Drain an agent for maintenance: no new tasks, frameworks move theirs
    /// (within the master's --drain-notice), what is left is killed; waits
    /// until it is DRAINED, with progress.
    Drain {
        /// The agent's id, hostname or host:port.
        agent: String,
        /// The longest grace a task gets when killed, e.g. `30s` (default:
        /// each task's own).
        #[arg(long, value_parser = agora_proto::duration::parse)]
        max_grace_period: Option<Duration>,
        /// Mark the agent gone once drained (it may never come back).
        #[arg(long)]
        mark_gone: bool,
        /// Return once the drain has started.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this many seconds (the drain goes on).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Stop offering an agent's resources; its tasks keep running.
    Deactivate {
        /// The agent's id, hostname or host:port.
        agent: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Offer a deactivated or draining agent's resources again (ends a drain).
    Reactivate {
        /// The agent's id, hostname or host:port.
        agent: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Mark an agent gone for good: its tasks end TASK_GONE_BY_OPERATOR and
    /// it is refused if it comes back.
    Gone {
        /// The agent's id, hostname or host:port.
        agent: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::List { op } => list(&Operator::new(&op)?).await,
        AgentCommand::Show { agent, op } => show(&Operator::new(&op)?, &agent).await,
        AgentCommand::Drain {
            agent,
            max_grace_period,
            mark_gone,
            detach,
            timeout,
            op,
        } => {
            let o = Operator::new(&op)?;
            let a = find(&o, &agent).await?;
            let agent_id = id(&a["agent_info"]["id"]);
            let mut drain = json!({"agent_id": {"value": agent_id}, "mark_gone": mark_gone});
            if let Some(g) = max_grace_period {
                drain["max_grace_period"] = json!({"nanoseconds": g.as_nanos() as u64});
            }
            o.call(&json!({"type": "DRAIN_AGENT", "drain_agent": drain}))
                .await?;
            if detach {
                println!("draining {} ({agent_id})", name(&a));
                return Ok(());
            }
            follow_drain(&o, &a, Duration::from_secs(timeout)).await
        }
        AgentCommand::Deactivate { agent, op } => {
            simple(
                &Operator::new(&op)?,
                &agent,
                "DEACTIVATE_AGENT",
                "deactivated",
            )
            .await
        }
        AgentCommand::Reactivate { agent, op } => {
            simple(
                &Operator::new(&op)?,
                &agent,
                "REACTIVATE_AGENT",
                "reactivated",
            )
            .await
        }
        AgentCommand::Gone { agent, yes, op } => {
            if !yes {
                bail!("marking an agent gone cannot be undone; pass --yes to do it");
            }
            simple(
                &Operator::new(&op)?,
                &agent,
                "MARK_AGENT_GONE",
                "marked gone",
            )
            .await
        }
    }
}

/// An operator call that takes only the agent's id.
async fn simple(o: &Operator, agent: &str, kind: &str, done: &str) -> anyhow::Result<()> {
    let a = find(o, agent).await?;
    let agent_id = id(&a["agent_info"]["id"]);
    let key = kind.to_ascii_lowercase();
    o.call(&json!({"type": kind, key: {"agent_id": {"value": agent_id}}}))
        .await?;
    println!("✔ {} ({agent_id}) {done}", name(&a));
    Ok(())
}

/// `hostname:port` of an agent in GET_AGENTS.
fn name(a: &Value) -> String {
    format!(
        "{}:{}",
        text(&a["agent_info"]["hostname"]),
        a["agent_info"]["port"].as_u64().unwrap_or(5051)
    )
}

/// The address an agent serves its HTTP API on (from its pid,
/// `slave(1)@ip:port`), else its hostname and port.
pub fn address(a: &Value) -> String {
    a["pid"]
        .as_str()
        .and_then(|p| p.split_once('@'))
        .map(|(_, addr)| addr.to_string())
        .unwrap_or_else(|| name(a))
}

/// The agent's state in words: active, deactivated, draining, drained,
/// disconnected.
pub fn state(a: &Value) -> String {
    match a["drain_info"]["state"].as_str() {
        Some("DRAINING") => return "draining".into(),
        Some("DRAINED") => return "drained".into(),
        _ => {}
    }
    if a["deactivated"] == true {
        "deactivated".into()
    } else if a["active"] == true {
        "active".into()
    } else {
        "disconnected".into()
    }
}

/// The one agent `reference` names among GET_AGENTS.
pub async fn find(o: &Operator, reference: &str) -> anyhow::Result<Value> {
    let agents = o.get("GET_AGENTS").await?;
    let all: Vec<&Value> = agents["agents"].as_array().into_iter().flatten().collect();
    if let Some(a) = all.iter().find(|a| id(&a["agent_info"]["id"]) == reference) {
        return Ok((*a).clone());
    }
    let matching: Vec<&&Value> = all
        .iter()
        .filter(|a| {
            a["agent_info"]["hostname"] == reference
                || name(a) == reference
                || address(a) == reference
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok((**one).clone()),
        [] => {
            bail!("no agent '{reference}' (an id, hostname or host:port; see `agora agent list`)")
        }
        many => bail!(
            "'{reference}' names {} agents ({}); use an id",
            many.len(),
            many.iter()
                .map(|a| id(&a["agent_info"]["id"]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Tasks not yet terminal.
async fn live_tasks(o: &Operator) -> anyhow::Result<Vec<Value>> {
    let tasks = o.get("GET_TASKS").await?;
    Ok(tasks["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !super::tasks::ended(t))
        .cloned()
        .collect())
}

fn used_of(a: &Value, what: &str) -> String {
    let total = scalar(&a["total_resources"], what);
    let used = scalar(&a["allocated_resources"], what);
    let fmt = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    format!("{} / {}", fmt(used), fmt(total))
}

fn attributes(a: &Value) -> String {
    a["agent_info"]["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let v = x["text"]["value"]
                .as_str()
                .map(str::to_string)
                .or_else(|| x["scalar"]["value"].as_f64().map(|f| f.to_string()))
                .unwrap_or_default();
            format!("{}:{v}", text(&x["name"]))
        })
        .collect::<Vec<_>>()
        .join(";")
}

async fn list(o: &Operator) -> anyhow::Result<()> {
    let agents = o.get("GET_AGENTS").await?;
    if o.json {
        o.print_json(&agents);
        return Ok(());
    }
    let tasks = live_tasks(o).await?;
    let all = agents["agents"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("No agents are registered.");
        return Ok(());
    }
    let mut t = table(&[
        "ID",
        "HOST",
        "STATE",
        "CPUS",
        "MEM (MB)",
        "DISK (MB)",
        "TASKS",
        "ATTRIBUTES",
    ]);
    for a in &all {
        let agent_id = id(&a["agent_info"]["id"]);
        let n = tasks
            .iter()
            .filter(|t| id(&t["agent_id"]) == agent_id)
            .count();
        t.add_row(vec![
            agent_id,
            address(a),
            state(a),
            used_of(a, "cpus"),
            used_of(a, "mem"),
            used_of(a, "disk"),
            n.to_string(),
            attributes(a),
        ]);
    }
    println!("{t}");
    Ok(())
}

async fn show(o: &Operator, reference: &str) -> anyhow::Result<()> {
    let a = find(o, reference).await?;
    if o.json {
        o.print_json(&a);
        return Ok(());
    }
    let agent_id = id(&a["agent_info"]["id"]);
    let mut t = table(&["", ""]);
    t.add_row(vec!["id".into(), agent_id.clone()]);
    t.add_row(vec!["address".into(), address(&a)]);
    t.add_row(vec!["hostname".into(), text(&a["agent_info"]["hostname"])]);
    t.add_row(vec!["state".into(), state(&a)]);
    t.add_row(vec!["version".into(), text(&a["version"])]);
    t.add_row(vec!["registered".into(), time(&a["registered_time"])]);
    if !a["reregistered_time"].is_null() {
        t.add_row(vec!["re-registered".into(), time(&a["reregistered_time"])]);
    }
    for what in ["cpus", "mem", "disk"] {
        t.add_row(vec![format!("{what} used / total"), used_of(&a, what)]);
    }
    t.add_row(vec!["attributes".into(), attributes(&a)]);
    if let Some(d) = a["drain_info"].as_object() {
        let mut s = text(&d["state"]["value"]);
        if s.is_empty() {
            s = text(&d["state"]);
        }
        if let Some(g) = d["config"]["max_grace_period"]["nanoseconds"].as_u64() {
            s.push_str(&format!(" (max grace {}s)", g / 1_000_000_000));
        }
        if d["config"]["mark_gone"] == true {
            s.push_str(", then gone");
        }
        t.add_row(vec!["drain".into(), s]);
    }
    println!("{t}");
    let tasks: Vec<Value> = live_tasks(o)
        .await?
        .into_iter()
        .filter(|t| id(&t["agent_id"]) == agent_id)
        .collect();
    if tasks.is_empty() {
        println!("No tasks run there.");
    } else {
        println!("{}", super::tasks::table_of(o, &tasks).await?);
    }
    Ok(())
}

/// Waits until the agent is DRAINED (or gone), drawing the tasks that have
/// left it.
async fn follow_drain(o: &Operator, a: &Value, timeout: Duration) -> anyhow::Result<()> {
    let agent_id = id(&a["agent_info"]["id"]);
    let on_agent = |tasks: &[Value]| {
        tasks
            .iter()
            .filter(|t| id(&t["agent_id"]) == agent_id)
            .count() as u64
    };
    let first = on_agent(&live_tasks(o).await?);
    let bar = ProgressBar::new(first.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} tasks gone {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("draining {}", name(a)));
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let agents = o.get("GET_AGENTS").await?;
        let now = agents["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| id(&x["agent_info"]["id"]) == agent_id)
            .cloned();
        let left = on_agent(&live_tasks(o).await?);
        bar.set_position(first.saturating_sub(left));
        let done = match &now {
            None => Some(" and marked gone"),
            Some(x) if state(x) == "drained" => Some(""),
            Some(x) if state(x) != "draining" => {
                bar.finish_and_clear();
                bail!("the drain of {} ended: the agent is {}", name(a), state(x));
            }
            Some(_) => None,
        };
        if let Some(how) = done {
            bar.finish_and_clear();
            println!(
                "✔ {} ({agent_id}) drained{how}: {first} tasks moved or ended in {:.1}s",
                name(a),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        bar.set_message(format!("({left} left)"));
        if started.elapsed() > timeout {
            bar.finish_and_clear();
            bail!(
                "{} still draining after {}s ({left} tasks left); the drain goes on",
                name(a),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
