//! `agora task list|show|logs`: tasks through the master's operator API;
//! a task's output through its agent's files API (`-f` follows it).

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use comfy_table::Table;
use serde_json::Value;

use super::operator::{Operator, OperatorArgs, id, scalar, short_state, time};
use super::{table, text};

/// `agora task` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum TaskCommand {
    /// List tasks that have not ended (`--all`: ended ones too).
    List {
        /// Only the tasks on this agent (id, hostname or host:port).
        #[arg(long)]
        agent: Option<String>,
        /// Only this framework's tasks (id or name).
        #[arg(long)]
        framework: Option<String>,
        /// Ended tasks too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Show a task and the history of its states.
    Show {
        /// The task id.
        task: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Print a task's output (its sandbox's stdout, or stderr).
    Logs {
        /// The task id.
        task: String,
        /// Keep printing what the task writes until it ends (Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// How many lines from the end to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

pub async fn run(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::List {
            agent,
            framework,
            all,
            op,
        } => {
            let o = Operator::new(&op)?;
            let agent = match agent {
                Some(a) => Some(id(&super::agents::find(&o, &a).await?["agent_info"]["id"])),
                None => None,
            };
            let framework = match framework {
                Some(f) => Some(super::frameworks::find(&o, &f).await?),
                None => None,
            };
            list(&o, agent.as_deref(), framework.as_deref(), all).await
        }
        TaskCommand::Show { task, op } => show(&Operator::new(&op)?, &task).await,
        TaskCommand::Logs {
            task,
            follow,
            stderr,
            lines,
            op,
        } => {
            let file = if stderr { "stderr" } else { "stdout" };
            logs(&Operator::new(&op)?, &task, file, lines, follow).await
        }
    }
}

/// Every task the master knows, ended ones after the others.
async fn all_tasks(o: &Operator) -> anyhow::Result<(Value, Vec<Value>)> {
    let r = o.get("GET_TASKS").await?;
    let mut tasks = Vec::new();
    for key in [
        "tasks",
        "unreachable_tasks",
        "completed_tasks",
        "orphan_tasks",
    ] {
        tasks.extend(r[key].as_array().into_iter().flatten().cloned());
    }
    Ok((r, tasks))
}

/// Whether a task (GET_TASKS JSON) has ended.
pub fn ended(t: &Value) -> bool {
    t["state"]
        .as_str()
        .and_then(agora_proto::v1::TaskState::from_str_name)
        .is_some_and(agora_proto::status::is_terminal)
}

/// The table of `tasks`, agents by address and frameworks by name.
pub async fn table_of(o: &Operator, tasks: &[Value]) -> anyhow::Result<Table> {
    let agents = o.get("GET_AGENTS").await?;
    let frameworks = o.get("GET_FRAMEWORKS").await?;
    let agent = |aid: &str| {
        agents["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| id(&a["agent_info"]["id"]) == aid)
            .map_or_else(|| aid.to_string(), super::agents::address)
    };
    let framework = |fid: &str| {
        ["frameworks", "completed_frameworks"]
            .iter()
            .flat_map(|k| frameworks[k].as_array().into_iter().flatten())
            .find(|f| id(&f["framework_info"]["id"]) == fid)
            .map_or_else(|| fid.to_string(), |f| text(&f["framework_info"]["name"]))
    };
    let mut t = table(&["TASK", "STATE", "AGENT", "CPUS", "MEM (MB)", "FRAMEWORK"]);
    for task in tasks {
        t.add_row(vec![
            id(&task["task_id"]),
            short_state(&task["state"]),
            agent(&id(&task["agent_id"])),
            scalar(&task["resources"], "cpus").to_string(),
            scalar(&task["resources"], "mem").to_string(),
            framework(&id(&task["framework_id"])),
        ]);
    }
    Ok(t)
}

async fn list(
    o: &Operator,
    agent: Option<&str>,
    framework: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    let (raw, tasks) = all_tasks(o).await?;
    let tasks: Vec<Value> = tasks
        .into_iter()
        .filter(|t| all || !ended(t))
        .filter(|t| agent.is_none_or(|a| id(&t["agent_id"]) == a))
        .filter(|t| framework.is_none_or(|f| id(&t["framework_id"]) == f))
        .collect();
    if o.json {
        if agent.is_none() && framework.is_none() && all {
            o.print_json(&raw);
        } else {
            o.print_json(&Value::Array(tasks));
        }
        return Ok(());
    }
    if tasks.is_empty() {
        println!("No tasks.");
    } else {
        println!("{}", table_of(o, &tasks).await?);
    }
    Ok(())
}

/// The task `task_id` names.
async fn find(o: &Operator, task_id: &str) -> anyhow::Result<Value> {
    let (_, tasks) = all_tasks(o).await?;
    tasks
        .into_iter()
        .find(|t| id(&t["task_id"]) == task_id)
        .with_context(|| {
            format!("the master knows no task '{task_id}' (see `agora task list --all`)")
        })
}

async fn show(o: &Operator, task_id: &str) -> anyhow::Result<()> {
    let t = find(o, task_id).await?;
    if o.json {
        o.print_json(&t);
        return Ok(());
    }
    let mut info = table(&["", ""]);
    info.add_row(vec!["id".into(), id(&t["task_id"])]);
    info.add_row(vec!["name".into(), text(&t["name"])]);
    info.add_row(vec!["state".into(), short_state(&t["state"])]);
    info.add_row(vec!["framework".into(), id(&t["framework_id"])]);
    info.add_row(vec!["agent".into(), id(&t["agent_id"])]);
    if !t["executor_id"].is_null() {
        info.add_row(vec!["executor".into(), id(&t["executor_id"])]);
    }
    for what in ["cpus", "mem", "disk"] {
        info.add_row(vec![what.into(), scalar(&t["resources"], what).to_string()]);
    }
    if let Some(user) = t["user"].as_str() {
        info.add_row(vec!["user".to_string(), user.to_string()]);
    }
    println!("{info}");
    let mut history = table(&["TIME", "STATE", "SOURCE", "REASON", "MESSAGE"]);
    for s in t["statuses"].as_array().into_iter().flatten() {
        let when = s["timestamp"]
            .as_f64()
            .map(|secs| time(&serde_json::json!({"nanoseconds": (secs * 1e9) as i64})))
            .unwrap_or_default();
        history.add_row(vec![
            when,
            short_state(&s["state"]),
            text(&s["source"])
                .trim_start_matches("SOURCE_")
                .to_lowercase(),
            text(&s["reason"]).trim_start_matches("REASON_").to_string(),
            text(&s["message"]),
        ]);
    }
    println!("{history}");
    Ok(())
}

/// The files API path of a task's `file` (relative to its agent's work
/// dir; the executor's latest run).
fn sandbox_path(t: &Value, file: &str) -> String {
    let executor = match id(&t["executor_id"]) {
        e if e.is_empty() => id(&t["task_id"]),
        e => e,
    };
    format!(
        "slaves/{}/frameworks/{}/executors/{executor}/runs/latest/{file}",
        id(&t["agent_id"]),
        id(&t["framework_id"]),
    )
}

/// One `/files/read` from `offset` (`None`: the file's size, no data).
async fn read(
    o: &Operator,
    agent: &str,
    path: &str,
    offset: Option<u64>,
) -> anyhow::Result<(u64, String)> {
    let mut q = format!("/files/read?path={}", encode(path));
    if let Some(off) = offset {
        q.push_str(&format!("&offset={off}&length=65536"));
    }
    let r = o.agent_get(agent, &q).await?;
    let at = r["offset"].as_u64().unwrap_or(0);
    Ok((at, text(&r["data"])))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn logs(
    o: &Operator,
    task_id: &str,
    file: &str,
    lines: usize,
    follow: bool,
) -> anyhow::Result<()> {
    let t = find(o, task_id).await?;
    let agent = super::agents::find(o, &id(&t["agent_id"]))
        .await
        .with_context(|| format!("the agent of task {task_id} is not registered"))?;
    let agent = super::agents::address(&agent);
    let path = sandbox_path(&t, file);
    let (size, _) = read(o, &agent, &path, None)
        .await
        .with_context(|| format!("cannot read the {file} of task {task_id}"))?;
    // The last `lines` lines: from at most 64 KiB before the end.
    let start = size.saturating_sub(64 * 1024);
    let (_, tail) = read(o, &agent, &path, Some(start)).await?;
    let mut offset = start + tail.len() as u64;
    let mut tail: &str = &tail;
    if start > 0 {
        // Drop a line cut at the chunk's start.
        tail = tail.split_once('\n').map_or("", |(_, rest)| rest);
    }
    let keep: Vec<&str> = tail.split_inclusive('\n').collect();
    let mut out = std::io::stdout();
    for l in &keep[keep.len().saturating_sub(lines)..] {
        out.write_all(l.as_bytes())?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut last_check = std::time::Instant::now();
    let mut done = ended(&t);
    loop {
        let (at, data) = read(o, &agent, &path, Some(offset)).await?;
        if at < offset {
            bail!("the {file} of task {task_id} was truncated");
        }
        if !data.is_empty() {
            offset = at + data.len() as u64;
            out.write_all(data.as_bytes())?;
            out.flush()?;
            continue;
        }
        if done {
            return Ok(());
        }
        if last_check.elapsed() > Duration::from_secs(2) {
            // Read once more after the task ended: what it wrote last.
            done = ended(&find(o, task_id).await?);
            last_check = std::time::Instant::now();
            if done {
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
