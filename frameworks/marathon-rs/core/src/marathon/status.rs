//! Status updates: what a task's state, address and health change in its
//! instance, the events they make, and how an instance ends.

use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState};
use serde_json::json;

use super::{Call, Marathon, Output, condition};
use crate::app::UnreachableStrategy;
use crate::instance::{Health, Instance, app_of_task};
use crate::time::Millis;

impl Marathon {
    /// A status update for one of our tasks (or an unknown one).
    pub fn status(&mut self, now: Millis, status: &v1::TaskStatus) {
        let task_id = status.task_id.value.clone();
        let state = status.state();
        let Some(inst) = self.state.instances.get_mut(&task_id) else {
            if !is_terminal(state) {
                // A task this marathon does not know (e.g. launched before a
                // state loss): kill it rather than let it run unmanaged.
                self.out.push(Output::Call(Call::Kill {
                    task: status.task_id.clone(),
                    agent: status.agent_id.clone(),
                }));
                if let Some(app) = app_of_task(&task_id) {
                    self.event(now, "unknown_instance_terminated_event", json!({
                        "instanceId": task_id, "runSpecId": app.to_string(), "condition": "Killed",
                    }));
                }
            }
            return;
        };
        let app_id = inst.app_id.clone();
        let before = inst.task_state();
        inst.state = state as i32;
        if state == TaskState::TaskRunning && inst.started_at.is_none() {
            inst.started_at = Some(now);
        }
        if let Some(cs) = &status.container_status {
            let ips: Vec<String> = cs
                .network_infos
                .iter()
                .flat_map(|n| n.ip_addresses.iter().filter_map(|ip| ip.ip_address.clone()))
                .collect();
            if !ips.is_empty() {
                inst.ip_addresses = ips;
            }
        }
        let health_changed = record_health(inst, now, status);
        let inst = inst.clone();
        self.dirty = true;
        self.status_events(now, &inst, status, before, health_changed);
        let unreachable = state == TaskState::TaskUnreachable;
        let strategy = self
            .state
            .apps
            .get(&app_id)
            .map(|a| a.unreachable_strategy.clone())
            .unwrap_or_default();
        let expunge_now = unreachable
            && matches!(strategy, UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds }
                if inactive_after_seconds <= 0.0 && expunge_after_seconds <= 0.0);
        if let Some(i) = self.state.instances.get_mut(&task_id) {
            if unreachable {
                i.unreachable_since.get_or_insert(now);
            } else if !is_terminal(state) {
                // Back from an unreachable agent: it counts again (the
                // planner kills whatever is now too many).
                i.unreachable_since = None;
                i.inactive = false;
            }
        }
        if is_terminal(state) || expunge_now {
            self.instance_ended(now, &inst, status);
        }
        self.reconcile_one(now, &app_id);
    }

    /// The events of a status update: the status and instance change, and
    /// a health change.
    fn status_events(
        &mut self,
        now: Millis,
        inst: &Instance,
        status: &v1::TaskStatus,
        before: TaskState,
        health_changed: Option<bool>,
    ) {
        let (task_id, state, app_id) = (&status.task_id.value, status.state(), &inst.app_id);
        if before != state || is_terminal(state) {
            self.event(
                now,
                "status_update_event",
                json!({
                    "slaveId": inst.agent_id,
                    "taskId": task_id,
                    "taskStatus": state.as_str_name(),
                    "message": status.message.clone().unwrap_or_default(),
                    "appId": app_id.to_string(),
                    "host": inst.placement.hostname,
                    "ipAddresses": inst.ip_addresses.iter().map(|ip| json!({
                        "ipAddress": ip,
                        "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" },
                    })).collect::<Vec<_>>(),
                    "ports": inst.ports,
                    "version": inst.version,
                }),
            );
            self.event(
                now,
                "instance_changed_event",
                json!({
                    "instanceId": task_id,
                    "condition": condition(state),
                    "runSpecId": app_id.to_string(),
                    "agentId": inst.agent_id,
                    "host": inst.placement.hostname,
                    "runSpecVersion": inst.version,
                }),
            );
        }
        if let Some(healthy) = health_changed {
            self.event(now, "health_status_changed_event", json!({
                "appId": app_id.to_string(), "instanceId": task_id, "version": inst.version, "alive": healthy,
            }));
            self.event(now, "instance_health_changed_event", json!({
                "instanceId": task_id, "runSpecId": app_id.to_string(), "runSpecVersion": inst.version, "healthy": healthy,
            }));
        }
    }

    /// An instance ended (or was expunged): it is removed; a failure backs
    /// its app's launches off and is its app's last failure.
    fn instance_ended(&mut self, now: Millis, inst: &Instance, status: &v1::TaskStatus) {
        let (task_id, state, app_id) = (&status.task_id.value, status.state(), &inst.app_id);
        self.state.instances.remove(task_id);
        // Its reservation waits for the app's next task.
        if let Some(r) = inst
            .reservation
            .as_ref()
            .and_then(|id| self.state.reservations.get_mut(id))
            && r.task_id.as_deref() == Some(task_id.as_str())
        {
            r.task_id = None;
        }
        // Failures (not kills we asked for) slow the next launches down; an
        // instance a drain ended did not fail, and its replacement starts
        // without delay.
        let drained = status.reason() == v1::task_status::Reason::AgentDraining;
        if drained {
            self.state.backoff.remove(app_id);
        }
        let failed = !drained
            && (matches!(
                state,
                TaskState::TaskFailed | TaskState::TaskFinished | TaskState::TaskError
            ) || (state == TaskState::TaskKilled && !inst.killing));
        if failed && let Some(app) = self.state.apps.get(app_id).cloned() {
            self.state
                .backoff
                .entry(app_id.clone())
                .or_default()
                .failed(&app, now.0);
        }
        if !inst.killing && !drained && state != TaskState::TaskFinished {
            self.state.last_failure.insert(
                app_id.clone(),
                json!({
                    "appId": app_id.to_string(),
                    "host": inst.placement.hostname,
                    "message": status.message.clone().unwrap_or_default(),
                    "state": state.as_str_name(),
                    "taskId": task_id,
                    "timestamp": now.iso(),
                    "version": inst.version,
                    "slaveId": inst.agent_id,
                }),
            );
        }
    }
}

/// Records a status' health in its instance; returns the new health when
/// it changed (or first failed, or first succeeded).
fn record_health(inst: &mut Instance, now: Millis, status: &v1::TaskStatus) -> Option<bool> {
    let healthy = status.healthy?;
    let h = inst.health.get_or_insert_with(Health::default);
    let was = h.alive;
    h.alive = healthy;
    if healthy {
        h.consecutive_failures = 0;
        h.last_success = Some(now);
        h.first_success.get_or_insert(now);
    } else {
        h.consecutive_failures += 1;
        h.last_failure = Some(now);
        h.last_failure_cause = status.message.clone();
    }
    (was != healthy || h.consecutive_failures == 1 || h.first_success == Some(now))
        .then_some(healthy)
}
