//! The agent's `/metrics/snapshot` (Mesos' `slave/…` keys, which
//! dashboards built for Mesos read) and `/metrics` (the same in the
//! Prometheus text format, with HTTP latencies).

use agora_proto::resources::Resources;
use agora_proto::v1::TaskState;

use crate::actor::Actor;

/// Mesos' agent keys and their values now; `uptime` in seconds.
pub(crate) fn snapshot(a: &Actor, uptime: f64) -> Vec<(String, f64)> {
    let core = &a.core;
    let total = &a.settings.core.resources;
    let mut used = Resources::new();
    let mut live = std::collections::BTreeMap::<TaskState, u64>::new();
    let mut executors = 0.0;
    for e in core.executors() {
        executors += 1.0;
        for t in e.tasks.values() {
            if agora_proto::status::is_terminal(t.state) {
                continue;
            }
            *live.entry(t.state).or_default() += 1;
            if let Ok(r) = Resources::from_protos(&t.info.resources) {
                used += &r;
            }
        }
    }
    let live_count = |s: TaskState| live.get(&s).copied().unwrap_or(0) as f64;
    let ended = |s: TaskState| core.terminated().get(&s).copied().unwrap_or(0) as f64;
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut put = |k: &str, v: f64| out.push((format!("slave/{k}"), v));
    put("registered", if core.registered() { 1.0 } else { 0.0 });
    put("uptime_secs", uptime);
    for name in ["cpus", "mem", "disk", "gpus"] {
        let (t, u) = (total.scalar(name), used.scalar(name));
        put(&format!("{name}_total"), t);
        put(&format!("{name}_used"), u);
        put(
            &format!("{name}_percent"),
            if t > 0.0 { (u / t).min(1.0) } else { 0.0 },
        );
    }
    put("executors_running", executors);
    put("tasks_staging", live_count(TaskState::TaskStaging));
    put("tasks_starting", live_count(TaskState::TaskStarting));
    put("tasks_running", live_count(TaskState::TaskRunning));
    put("tasks_killing", live_count(TaskState::TaskKilling));
    put("tasks_finished", ended(TaskState::TaskFinished));
    put("tasks_failed", ended(TaskState::TaskFailed));
    put("tasks_killed", ended(TaskState::TaskKilled));
    put("tasks_lost", ended(TaskState::TaskLost));
    put("tasks_gone", ended(TaskState::TaskGone));
    put("tasks_dropped", ended(TaskState::TaskDropped));
    put("tasks_error", ended(TaskState::TaskError));
    out
}
