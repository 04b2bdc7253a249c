//! `agora maintenance schedule|add|remove|status|start|stop`: Mesos'
//! maintenance primitives through the master's operator API. A machine is
//! named by its hostname or its IP, as its agents registered.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::operator::{Operator, OperatorArgs, id, time};
use super::{table, text};

/// `agora maintenance` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum MaintenanceCommand {
    /// Show the schedule: each window's machines, start and length.
    Schedule {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Schedule machines for maintenance: frameworks are asked to move
    /// their tasks off them (marathon-rs does), nothing is killed yet.
    Add {
        /// Hostnames or IPs.
        #[arg(required = true)]
        machines: Vec<String>,
        /// When the window starts: `now`, `+30m` (from now) or an RFC 3339
        /// time.
        #[arg(long, default_value = "now")]
        start: String,
        /// How long the machines will be unavailable, e.g. `2h`.
        #[arg(long, default_value = "1h", value_parser = agora_proto::duration::parse)]
        duration: Duration,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Take machines out of the schedule (not those that are down).
    Remove {
        /// Hostnames or IPs, as scheduled.
        #[arg(required = true)]
        machines: Vec<String>,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Show each scheduled machine's mode and the frameworks' answers.
    Status {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Take scheduled machines DOWN: their agents are removed and their
    /// tasks end (TASK_GONE_BY_OPERATOR).
    Start {
        /// Hostnames or IPs, as scheduled.
        #[arg(required = true)]
        machines: Vec<String>,
        /// Confirm: what still runs there ends.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Bring DOWN machines back UP (and out of the schedule).
    Stop {
        /// Hostnames or IPs, as scheduled.
        #[arg(required = true)]
        machines: Vec<String>,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

/// A MachineID from a hostname or an IP.
fn machine(s: &str) -> anyhow::Result<Value> {
    let s = s.trim();
    if s.is_empty() {
        bail!("a machine is a hostname or an IP");
    }
    Ok(match s.parse::<std::net::IpAddr>() {
        Ok(ip) => json!({"ip": ip.to_string()}),
        Err(_) => json!({"hostname": s.to_ascii_lowercase()}),
    })
}

fn machines(list: &[String]) -> anyhow::Result<Vec<Value>> {
    list.iter().map(|m| machine(m)).collect()
}

fn name(m: &Value) -> String {
    match (m["hostname"].as_str(), m["ip"].as_str()) {
        (Some(h), Some(i)) => format!("{h} ({i})"),
        (Some(h), None) => h.to_string(),
        (None, Some(i)) => i.to_string(),
        _ => "?".into(),
    }
}

/// `--start` as nanoseconds since the epoch.
fn start_nanos(s: &str) -> anyhow::Result<i64> {
    let now = chrono::Utc::now();
    let at = if s == "now" {
        now
    } else if let Some(rel) = s.strip_prefix('+') {
        let d =
            agora_proto::duration::parse(rel).map_err(|e| anyhow::anyhow!("--start '{s}': {e}"))?;
        now + chrono::Duration::from_std(d).context("--start is too far")?
    } else {
        chrono::DateTime::parse_from_rfc3339(s)
            .with_context(|| {
                format!("--start '{s}' is not `now`, `+DURATION` or an RFC 3339 time")
            })?
            .with_timezone(&chrono::Utc)
    };
    at.timestamp_nanos_opt().context("--start is out of range")
}

fn seconds(d: &Value) -> String {
    match d["nanoseconds"].as_i64() {
        Some(n) => {
            let s = n / 1_000_000_000;
            if s % 3600 == 0 {
                format!("{}h", s / 3600)
            } else if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{s}s")
            }
        }
        None => "open".into(),
    }
}

async fn current(o: &Operator) -> anyhow::Result<Vec<Value>> {
    let s = o.get("GET_MAINTENANCE_SCHEDULE").await?;
    Ok(s["schedule"]["windows"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

async fn update(o: &Operator, windows: Vec<Value>) -> anyhow::Result<()> {
    o.call(&json!({
        "type": "UPDATE_MAINTENANCE_SCHEDULE",
        "update_maintenance_schedule": {"schedule": {"windows": windows}},
    }))
    .await?;
    Ok(())
}

pub async fn run(command: MaintenanceCommand) -> anyhow::Result<()> {
    match command {
        MaintenanceCommand::Schedule { op } => {
            let o = Operator::new(&op)?;
            let windows = current(&o).await?;
            if o.json {
                o.print_json(&json!({"windows": windows}));
            } else if windows.is_empty() {
                println!("Nothing is scheduled.");
            } else {
                let mut t = table(&["MACHINES", "START", "DURATION"]);
                for w in &windows {
                    let names: Vec<String> = w["machine_ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(name)
                        .collect();
                    t.add_row(vec![
                        names.join(", "),
                        time(&w["unavailability"]["start"]),
                        seconds(&w["unavailability"]["duration"]),
                    ]);
                }
                println!("{t}");
            }
            Ok(())
        }
        MaintenanceCommand::Add {
            machines: list,
            start,
            duration,
            op,
        } => {
            let o = Operator::new(&op)?;
            let new = machines(&list)?;
            let mut windows = current(&o).await?;
            windows.push(json!({
                "machine_ids": new,
                "unavailability": {
                    "start": {"nanoseconds": start_nanos(&start)?},
                    "duration": {"nanoseconds": i64::try_from(duration.as_nanos()).context("--duration is too long")?},
                },
            }));
            update(&o, windows).await?;
            println!(
                "✔ scheduled {}: frameworks are asked to move their tasks (`agora maintenance status`)",
                list.join(", ")
            );
            Ok(())
        }
        MaintenanceCommand::Remove { machines: list, op } => {
            let o = Operator::new(&op)?;
            let gone = machines(&list)?;
            let mut windows = current(&o).await?;
            let before: usize = windows
                .iter()
                .map(|w| w["machine_ids"].as_array().map_or(0, Vec::len))
                .sum();
            for w in &mut windows {
                if let Some(ids) = w["machine_ids"].as_array_mut() {
                    ids.retain(|m| !gone.contains(m));
                }
            }
            windows.retain(|w| w["machine_ids"].as_array().is_some_and(|m| !m.is_empty()));
            let after: usize = windows
                .iter()
                .map(|w| w["machine_ids"].as_array().map_or(0, Vec::len))
                .sum();
            if before == after {
                bail!(
                    "none of {} is scheduled (see `agora maintenance schedule`)",
                    list.join(", ")
                );
            }
            update(&o, windows).await?;
            println!("✔ {} left the schedule", list.join(", "));
            Ok(())
        }
        MaintenanceCommand::Status { op } => status(&Operator::new(&op)?).await,
        MaintenanceCommand::Start {
            machines: list,
            yes,
            op,
        } => {
            if !yes {
                bail!(
                    "the machines' agents are removed and what runs there ends; pass --yes to do it"
                );
            }
            let o = Operator::new(&op)?;
            o.call(&json!({"type": "START_MAINTENANCE", "start_maintenance": {"machines": machines(&list)?}}))
                .await?;
            println!("✔ {} DOWN for maintenance", list.join(", "));
            Ok(())
        }
        MaintenanceCommand::Stop { machines: list, op } => {
            let o = Operator::new(&op)?;
            o.call(&json!({"type": "STOP_MAINTENANCE", "stop_maintenance": {"machines": machines(&list)?}}))
                .await?;
            println!("✔ {} UP again (their agents may register)", list.join(", "));
            Ok(())
        }
    }
}

async fn status(o: &Operator) -> anyhow::Result<()> {
    let s = o.get("GET_MAINTENANCE_STATUS").await?;
    if o.json {
        o.print_json(&s);
        return Ok(());
    }
    let status = &s["status"];
    let draining = status["draining_machines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let down = status["down_machines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if draining.is_empty() && down.is_empty() {
        println!("No machine is scheduled or down.");
        return Ok(());
    }
    let frameworks = o.get("GET_FRAMEWORKS").await?;
    let framework = |fid: String| {
        frameworks["frameworks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| id(&f["framework_info"]["id"]) == fid)
            .map_or(fid, |f| text(&f["framework_info"]["name"]))
    };
    let mut t = table(&["MACHINE", "MODE", "FRAMEWORKS (ANSWER)"]);
    for m in &draining {
        let answers: Vec<String> = m["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} ({})",
                    framework(id(&s["framework_id"])),
                    text(&s["status"]).to_lowercase()
                )
            })
            .collect();
        t.add_row(vec![name(&m["id"]), "DRAINING".into(), answers.join("\n")]);
    }
    for m in &down {
        t.add_row(vec![name(m), "DOWN".into(), String::new()]);
    }
    println!("{t}");
    Ok(())
}
