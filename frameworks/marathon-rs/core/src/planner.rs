//! What to do for one app right now: how many instances to launch and which
//! to kill, from its target definition and its current instances. Stateless:
//! called after every change, it converges on the target.
//!
//! Scaling launches or kills the difference (kill order: unreachable,
//! staging, starting, then running; ties by `killSelection`). A restart
//! (instances of another config version exist) follows Marathon's rolling
//! upgrade: at most `floor(I × (1 + maximumOverCapacity))` instances at once,
//! never fewer healthy than `ceil(I × minimumHealthCapacity)`, old instances
//! killed as new ones become healthy.
//!
//! Instances on agents that are leaving (drained, or in a maintenance
//! window) are moved the same way: they count as old, so replacements start
//! elsewhere within the same bounds and the leaving copies are killed as
//! the replacements become healthy.

use agora_proto::v1::TaskState;

use crate::app::{App, KillSelection};
use crate::instance::Instance;

/// The plan for one app.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppPlan {
    /// New instances of the target config to launch.
    pub launch: u32,
    /// Task ids to kill.
    pub kill: Vec<String>,
    /// The target is reached: `instances` instances of the target config,
    /// all healthy, nothing else.
    pub done: bool,
}

/// The bounds of a rolling upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Fewest healthy instances allowed.
    pub min_healthy: u32,
    /// Most instances at once.
    pub max_capacity: u32,
}

/// `minHealthy = ceil(I × minimumHealthCapacity)`,
/// `maxCapacity = floor(I × (1 + maximumOverCapacity))`.
pub fn bounds(app: &App) -> Bounds {
    let i = f64::from(app.instances);
    let us = app.upgrade_strategy;
    Bounds {
        min_healthy: (i * us.minimum_health_capacity - 1e-9).ceil().max(0.0) as u32,
        max_capacity: (i * (1.0 + us.maximum_over_capacity) + 1e-9).floor() as u32,
    }
}

fn kill_rank(i: &Instance) -> u8 {
    match i.task_state() {
        TaskState::TaskUnreachable => 0,
        TaskState::TaskStaging => 1,
        TaskState::TaskStarting => 2,
        TaskState::TaskRunning => 3,
        _ => 4,
    }
}

/// Orders instances for killing: unhealthy first, then by state (staging
/// before running), then by `killSelection`.
pub fn kill_order<'a>(app: &App, mut candidates: Vec<&'a Instance>) -> Vec<&'a Instance> {
    let checked = !app.health_checks.is_empty();
    candidates.sort_by(|a, b| {
        let ha = a.is_healthy(checked);
        let hb = b.is_healthy(checked);
        let by_age = match app.kill_selection {
            KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
            KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
        };
        ha.cmp(&hb)
            .then(kill_rank(a).cmp(&kill_rank(b)))
            .then(by_age)
            .then(a.task_id.cmp(&b.task_id))
    });
    candidates
}

/// The plan for `app` given all its instances (active or not).
pub fn plan(app: &App, instances: &[&Instance]) -> AppPlan {
    plan_leaving(app, instances, |_| false)
}

/// The plan for `app` when the instances for which `leaving` holds must
/// move off their agents.
pub fn plan_leaving(
    app: &App,
    instances: &[&Instance],
    leaving: impl Fn(&Instance) -> bool,
) -> AppPlan {
    let checked = !app.health_checks.is_empty();
    let config = app.config_version();
    let current = |i: &Instance| i.config_version == config && !leaving(i);
    let active: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| i.is_active())
        .collect();
    let (new, old): (Vec<&Instance>, Vec<&Instance>) = active.iter().partition(|i| current(i));
    let target = app.instances;
    let new_count = new.len() as u32;
    let new_healthy = new.iter().filter(|i| i.is_healthy(checked)).count() as u32;
    // Old instances still shutting down hold their resources: count them.
    let dying = instances
        .iter()
        .filter(|i| i.killing && !agora_proto::status::is_terminal(i.task_state()) && !current(i))
        .count() as u32;
    let mut out = AppPlan::default();
    if old.is_empty() && dying == 0 {
        if new_count < target {
            out.launch = target - new_count;
        } else if new_count > target {
            out.kill = kill_order(app, new)
                .into_iter()
                .take((new_count - target) as usize)
                .map(|i| i.task_id.clone())
                .collect();
        }
        out.done = new_count == target && new_healthy == target;
        return out;
    }
    // Rolling restart.
    let Bounds {
        mut min_healthy,
        mut max_capacity,
    } = bounds(app);
    let old_healthy = old.iter().filter(|i| i.is_healthy(checked)).count() as u32;
    let healthy = old_healthy + new_healthy;
    if min_healthy == max_capacity && max_capacity <= healthy {
        if app.is_resident() {
            // An instance cannot run twice on its data (its replacement
            // needs its reservation): one goes first, as in Marathon.
            min_healthy -= 1;
        } else {
            // Room for one more, or nothing could ever move.
            max_capacity += 1;
        }
    }
    let mut kill_budget = healthy.saturating_sub(min_healthy);
    let surplus = (old.len() as u32 + new_count).saturating_sub(max_capacity.max(target));
    kill_budget = kill_budget.max(surplus);
    // Old instances that are not healthy do not hold capacity up: they go first.
    let ordered = kill_order(app, old.clone());
    for i in ordered {
        let unhealthy = !i.is_healthy(checked);
        if unhealthy || kill_budget > 0 {
            if !unhealthy {
                kill_budget -= 1;
            }
            out.kill.push(i.task_id.clone());
        }
    }
    let old_left = old.len() as u32 + dying;
    let room = max_capacity.saturating_sub(old_left + new_count);
    out.launch = target.saturating_sub(new_count).min(room);
    out.done = false;
    out
}

/// Launch backoff of an app (Marathon's RateLimiter).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    /// Current delay in seconds (0 = none).
    pub delay: f64,
    /// No launch before this (ms since the epoch).
    pub until: i64,
}

impl Backoff {
    /// Another failure at `now`: the delay starts at `backoffSeconds` and
    /// grows by `backoffFactor`, capped at `maxLaunchDelaySeconds`.
    pub fn failed(&mut self, app: &App, now: i64) {
        let next = if self.delay <= 0.0 {
            app.backoff_seconds
        } else {
            self.delay * app.backoff_factor
        };
        self.delay = next.min(app.max_launch_delay_seconds).max(0.0);
        self.until = now + (self.delay * 1000.0) as i64;
    }

    /// Whether launches wait at `now`.
    pub fn waiting(&self, now: i64) -> bool {
        now < self.until
    }

    /// Seconds left at `now`.
    pub fn left(&self, now: i64) -> f64 {
        ((self.until - now) as f64 / 1000.0).max(0.0)
    }
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
