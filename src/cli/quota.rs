//! `agora quota get|set|remove`: roles' guarantees and limits (Mesos 1.9's
//! UPDATE_QUOTA / GET_QUOTA) through the master's operator API, with what
//! each role holds now (GET_ROLES).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::operator::{Operator, OperatorArgs};
use super::{table, text};

/// `agora quota` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum QuotaCommand {
    /// Every role's quota and what the role holds now.
    Get {
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Set a role's quota (replacing it), e.g.
    /// `agora quota set dev --limit cpus:10,mem:4096 --guarantee cpus:2`.
    Set {
        /// The role, e.g. `dev` or `eng/web`.
        role: String,
        /// What the role is offered before roles without a guarantee.
        #[arg(long, value_parser = scalars, default_value = "")]
        guarantee: Scalars,
        /// What the role (with the roles below it) is never offered beyond.
        #[arg(long, value_parser = scalars, default_value = "")]
        limit: Scalars,
        /// Set limits below what the role holds now.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        op: OperatorArgs,
    },
    /// Remove a role's quota.
    Remove {
        /// The role.
        role: String,
        #[command(flatten)]
        op: OperatorArgs,
    },
}

/// `cpus:2,mem:1024` as (name, amount) pairs.
#[derive(Clone, Debug, Default)]
pub struct Scalars(Vec<(String, f64)>);

fn scalars(s: &str) -> Result<Scalars, String> {
    let mut out = Vec::new();
    for part in s.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, v)) = part.split_once(':') else {
            return Err(format!("'{part}' is not NAME:AMOUNT (e.g. cpus:2)"));
        };
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("'{part}': '{v}' is not a number"))?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("'{part}': the amount must not be negative"));
        }
        out.push((name.trim().to_string(), v));
    }
    Ok(Scalars(out))
}

fn map(s: &Scalars) -> Value {
    Value::Object(
        s.0.iter()
            .map(|(n, v)| (n.clone(), json!({"value": v})))
            .collect::<Map<String, Value>>(),
    )
}

/// `{"cpus": {"value": 2}}` as `cpus:2, mem:1024`.
fn show(m: &Value) -> String {
    m.as_object()
        .into_iter()
        .flatten()
        .map(|(n, v)| format!("{n}:{}", text(&v["value"])))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn update(o: &Operator, config: Value, force: bool) -> anyhow::Result<()> {
    o.call(&json!({
        "type": "UPDATE_QUOTA",
        "update_quota": {"force": force, "quota_configs": [config]},
    }))
    .await?;
    Ok(())
}

pub async fn run(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::Get { op } => get(&Operator::new(&op)?).await,
        QuotaCommand::Set {
            role,
            guarantee,
            limit,
            force,
            op,
        } => {
            if guarantee.0.is_empty() && limit.0.is_empty() {
                bail!("give --guarantee and/or --limit (or `agora quota remove {role}`)");
            }
            let o = Operator::new(&op)?;
            update(
                &o,
                json!({"role": role, "guarantees": map(&guarantee), "limits": map(&limit)}),
                force,
            )
            .await?;
            println!("✔ quota of {role} set");
            Ok(())
        }
        QuotaCommand::Remove { role, op } => {
            let o = Operator::new(&op)?;
            update(
                &o,
                json!({"role": role, "guarantees": {}, "limits": {}}),
                false,
            )
            .await?;
            println!("✔ quota of {role} removed");
            Ok(())
        }
    }
}

async fn get(o: &Operator) -> anyhow::Result<()> {
    let q = o.get("GET_QUOTA").await?;
    if o.json {
        o.print_json(&q);
        return Ok(());
    }
    let configs = q["status"]["configs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if configs.is_empty() {
        println!("No role has a quota.");
        return Ok(());
    }
    let roles = o.get("GET_ROLES").await?;
    let mut t = table(&["ROLE", "GUARANTEE", "LIMIT", "ALLOCATED NOW"]);
    for c in &configs {
        let role = text(&c["role"]);
        // What the role and the roles below it hold.
        let mut held: std::collections::BTreeMap<String, f64> = Default::default();
        for r in roles["roles"].as_array().into_iter().flatten() {
            let name = text(&r["name"]);
            if name == role || name.starts_with(&format!("{role}/")) {
                for res in r["resources"].as_array().into_iter().flatten() {
                    if let Some(v) = res["scalar"]["value"].as_f64() {
                        *held.entry(text(&res["name"])).or_default() += v;
                    }
                }
            }
        }
        let held = held
            .iter()
            .map(|(n, v)| format!("{n}:{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        t.add_row(vec![role, show(&c["guarantees"]), show(&c["limits"]), held]);
    }
    println!("{t}");
    Ok(())
}
