//! `agora framework list|teardown`: frameworks through the master's
//! operator API. A framework is named by its id or its name.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use super::operator::{Operator, OperatorArgs, id, scalar, time};
use super::{table, text};

/// `agora framework` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum FrameworkCommand {
    /// List frameworks (`--all`: removed ones too).
    List {
        /// Removed frameworks too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Remove a framework: its tasks are killed, its offers rescinded, and
    /// it may not subscribe again with its id.
    Teardown {
        /// The framework's id or name.
        framework: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

pub async fn run(command: FrameworkCommand) -> anyhow::Result<()> {
    match command {
        FrameworkCommand::List { all, op } => list(&Operator::new(&op)?, all).await,
        FrameworkCommand::Teardown { framework, yes, op } => {
            let o = Operator::new(&op)?;
            let fid = find(&o, &framework).await?;
            if !yes {
                bail!(
                    "a torn down framework's tasks are killed and it cannot come back; pass --yes to do it"
                );
            }
            o.call(&json!({"type": "TEARDOWN", "teardown": {"framework_id": {"value": fid}}}))
                .await?;
            println!("✔ framework {fid} torn down");
            Ok(())
        }
    }
}

/// The id of the one active framework `reference` names (its id or name).
pub async fn find(o: &Operator, reference: &str) -> anyhow::Result<String> {
    let r = o.get("GET_FRAMEWORKS").await?;
    let all: Vec<&Value> = r["frameworks"].as_array().into_iter().flatten().collect();
    let fid = |f: &Value| id(&f["framework_info"]["id"]);
    if let Some(f) = all.iter().find(|f| fid(f) == reference) {
        return Ok(fid(f));
    }
    let named: Vec<String> = all
        .iter()
        .filter(|f| f["framework_info"]["name"] == reference)
        .map(|f| fid(f))
        .collect();
    match named.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no framework '{reference}' (an id or a name; see `agora framework list`)"),
        many => bail!(
            "'{reference}' names {} frameworks ({}); use an id",
            many.len(),
            many.join(", ")
        ),
    }
}

async fn list(o: &Operator, all: bool) -> anyhow::Result<()> {
    let r = o.get("GET_FRAMEWORKS").await?;
    if o.json {
        o.print_json(&r);
        return Ok(());
    }
    let tasks = o.get("GET_TASKS").await?;
    let mut t = table(&[
        "ID",
        "NAME",
        "ROLES",
        "STATE",
        "TASKS",
        "CPUS",
        "MEM (MB)",
        "REGISTERED",
    ]);
    let mut rows = 0;
    let active = r["frameworks"].as_array().into_iter().flatten();
    let removed = r["completed_frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|_| all);
    for (f, gone) in active.map(|f| (f, false)).chain(removed.map(|f| (f, true))) {
        let info = &f["framework_info"];
        let fid = id(&info["id"]);
        let roles: Vec<String> = match info["roles"].as_array() {
            Some(r) if !r.is_empty() => r.iter().map(text).collect(),
            _ => vec![text(&info["role"])],
        };
        let state = if gone {
            "removed"
        } else if f["active"] == true {
            "active"
        } else if f["connected"] == true {
            "inactive"
        } else {
            "disconnected"
        };
        let running = tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| id(&t["framework_id"]) == fid)
            .count();
        t.add_row(vec![
            fid,
            text(&info["name"]),
            roles.join(","),
            state.into(),
            running.to_string(),
            scalar(&f["allocated_resources"], "cpus").to_string(),
            scalar(&f["allocated_resources"], "mem").to_string(),
            time(&f["registered_time"]),
        ]);
        rows += 1;
    }
    if rows == 0 {
        println!("No frameworks.");
    } else {
        println!("{t}");
    }
    Ok(())
}
