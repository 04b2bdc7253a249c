//! `agora top`: a live table of the cluster's agents (state, what is used
//! of each resource, tasks) and its totals, redrawn every `--interval`.

use std::time::Duration;

use serde_json::Value;

use super::operator::{Operator, OperatorArgs, id, scalar};
use super::{table, text};

/// Flags of `agora top`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// How often the table is redrawn.
    #[arg(long, default_value = "2s", value_parser = agora_proto::duration::parse)]
    pub interval: Duration,
    /// Print the table once and exit (for scripts).
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub op: OperatorArgs,
}

/// `used / total` with a bar of 10 cells.
fn gauge(used: f64, total: f64) -> String {
    let ratio = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (ratio * 10.0).round() as usize;
    let num = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    format!(
        "{}{} {:>3.0}% {}/{}",
        "█".repeat(full),
        "░".repeat(10 - full),
        ratio * 100.0,
        num(used),
        num(total)
    )
}

/// The screen: one row per agent, then the cluster's totals.
async fn screen(o: &Operator) -> anyhow::Result<String> {
    let agents = o.get("GET_AGENTS").await?;
    let tasks = o.get("GET_TASKS").await?;
    let frameworks = o.get("GET_FRAMEWORKS").await?;
    let live: Vec<&Value> = tasks["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !super::tasks::ended(t))
        .collect();
    let mut t = table(&["AGENT", "STATE", "CPUS", "MEM (MB)", "DISK (MB)", "TASKS"]);
    let (mut totals, mut used) = ([0.0; 3], [0.0; 3]);
    let all = agents["agents"].as_array().cloned().unwrap_or_default();
    for a in &all {
        let agent_id = id(&a["agent_info"]["id"]);
        let mut row = vec![super::agents::address(a), super::agents::state(a)];
        for (i, what) in ["cpus", "mem", "disk"].iter().enumerate() {
            let (u, tot) = (
                scalar(&a["allocated_resources"], what),
                scalar(&a["total_resources"], what),
            );
            totals[i] += tot;
            used[i] += u;
            row.push(gauge(u, tot));
        }
        row.push(
            live.iter()
                .filter(|t| id(&t["agent_id"]) == agent_id)
                .count()
                .to_string(),
        );
        t.add_row(row);
    }
    t.add_row(vec![
        format!("{} agents", all.len()),
        String::new(),
        gauge(used[0], totals[0]),
        gauge(used[1], totals[1]),
        gauge(used[2], totals[2]),
        live.len().to_string(),
    ]);
    let names: Vec<String> = frameworks["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let fid = id(&f["framework_info"]["id"]);
            let n = live
                .iter()
                .filter(|t| id(&t["framework_id"]) == fid)
                .count();
            format!("{} ({n})", text(&f["framework_info"]["name"]))
        })
        .collect();
    Ok(format!(
        "{t}\nframeworks (tasks): {}\n",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let o = Operator::new(&args.op)?;
    if args.once {
        print!("{}", screen(&o).await?);
        return Ok(());
    }
    let interval = args.interval.max(Duration::from_millis(200));
    loop {
        let s = screen(&o).await?;
        // Home and clear, then the screen.
        println!("\x1b[H\x1b[2J{s}(every {interval:?}; Ctrl-C quits)");
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = super::shutdown_signal() => return Ok(()),
        }
    }
}
