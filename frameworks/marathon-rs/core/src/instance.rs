//! Instances: marathon-rs's record of each task it launched, and their JSON
//! (`/v2/apps/{id}/tasks`, `/v2/tasks`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use agora_proto::status::is_terminal;
use agora_proto::v1::TaskState;

use crate::constraints::Placement;
use crate::path::PathId;
use crate::time::Millis;

/// The latest health check outcome of an instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Last result.
    pub alive: bool,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// First success.
    pub first_success: Option<Millis>,
    /// Last success.
    pub last_success: Option<Millis>,
    /// Last failure.
    pub last_failure: Option<Millis>,
    /// Why it last failed.
    pub last_failure_cause: Option<String>,
}

/// A task marathon-rs launched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Mesos task id (`group_app.<uuid>`).
    pub task_id: String,
    /// The app.
    pub app_id: PathId,
    /// The app version it was launched with.
    pub version: String,
    /// The app's config version then (restarts replace other config versions).
    pub config_version: String,
    /// Agent id.
    pub agent_id: String,
    /// Where it runs (hostname, attributes) for constraints.
    pub placement: Placement,
    /// Host ports it got.
    pub ports: Vec<u32>,
    /// Its IP addresses.
    pub ip_addresses: Vec<String>,
    /// Latest Mesos state (as a number).
    pub state: i32,
    /// Health, when the app has health checks and a result came in.
    pub health: Option<Health>,
    /// Launched at.
    pub staged_at: Millis,
    /// First TASK_RUNNING.
    pub started_at: Option<Millis>,
    /// A kill was sent.
    pub killing: bool,
    /// Since when its agent is unreachable (TASK_UNREACHABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Millis>,
    /// Unreachable for longer than the app's `inactiveAfterSeconds`: it no
    /// longer counts, and a replacement is launched.
    #[serde(default)]
    pub inactive: bool,
    /// The reservation it runs on (resident apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
}

/// A resident app's reservation: resources reserved and persistent volumes
/// created on one agent for one of its instances. Its tasks come and go on
/// it (each replacement finds the data the last one left); it is destroyed
/// and unreserved when its app is deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Its id (`<app>.<uuid>`, the `marathon_task_id` label of its
    /// resources, as Marathon labels reservations).
    pub id: String,
    /// The app.
    pub app_id: PathId,
    /// The agent that holds it.
    pub agent_id: String,
    /// Where that is (hostname, attributes) for constraints.
    pub placement: Placement,
    /// Its volumes: (persistence id, container path).
    pub volumes: Vec<(String, String)>,
    /// The task running on it, if any.
    pub task_id: Option<String>,
}

impl Instance {
    /// The Mesos state.
    pub fn task_state(&self) -> TaskState {
        TaskState::try_from(self.state).unwrap_or(TaskState::TaskStaging)
    }

    /// Not terminal, not being killed, not unreachable for too long:
    /// counts toward the app's instances.
    pub fn is_active(&self) -> bool {
        !self.killing && !self.inactive && !is_terminal(self.task_state())
    }

    /// Running.
    pub fn is_running(&self) -> bool {
        self.task_state() == TaskState::TaskRunning
    }

    /// Running, and healthy if the app checks health.
    pub fn is_healthy(&self, checked: bool) -> bool {
        self.is_running() && (!checked || self.health.as_ref().is_some_and(|h| h.alive))
    }

    /// Task JSON (`servicePorts` only for `/v2/tasks`).
    pub fn json(&self, service_ports: Option<&[u32]>, with_health: bool) -> Value {
        let mut v = json!({
            "id": self.task_id,
            "appId": self.app_id.to_string(),
            "host": self.placement.hostname,
            "slaveId": self.agent_id,
            "state": self.task_state().as_str_name(),
            "ports": self.ports,
            "stagedAt": self.staged_at.iso(),
            "version": self.version,
            "ipAddresses": self.ip_addresses.iter().map(|ip| json!({
                "ipAddress": ip,
                "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" },
            })).collect::<Vec<_>>(),
        });
        if let Some(s) = self.started_at {
            v["startedAt"] = json!(s.iso());
        }
        if let Some(sp) = service_ports {
            v["servicePorts"] = json!(sp);
        }
        if with_health {
            if let Some(h) = &self.health {
                let mut r = json!({
                    "alive": h.alive,
                    "consecutiveFailures": h.consecutive_failures,
                    "instanceId": self.task_id,
                });
                if let Some(t) = h.first_success {
                    r["firstSuccess"] = json!(t.iso());
                }
                if let Some(t) = h.last_success {
                    r["lastSuccess"] = json!(t.iso());
                }
                if let Some(t) = h.last_failure {
                    r["lastFailure"] = json!(t.iso());
                }
                if let Some(c) = &h.last_failure_cause {
                    r["lastFailureCause"] = json!(c);
                }
                v["healthCheckResults"] = json!([r]);
            } else {
                v["healthCheckResults"] = json!([]);
            }
        }
        v
    }
}

/// Parses a Marathon task id back to its app id (`group_app.<uuid>`,
/// `group_app.instance-<uuid>._app`, legacy forms).
pub fn app_of_task(task_id: &str) -> Option<PathId> {
    let prefix = if let Some(i) = task_id
        .find(".instance-")
        .or_else(|| task_id.find(".marathon-"))
    {
        &task_id[..i]
    } else {
        let i = task_id.rfind(['.', '_'])?;
        &task_id[..i]
    };
    if prefix.is_empty() {
        return None;
    }
    PathId::parse(&format!("/{}", prefix.replace('_', "/"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_name_their_app() {
        assert_eq!(
            app_of_task("group_app.0b9f6c1e-1111-2222")
                .unwrap()
                .to_string(),
            "/group/app"
        );
        assert_eq!(app_of_task("sleeper.0b9f").unwrap().to_string(), "/sleeper");
        assert_eq!(
            app_of_task("a_b.instance-123._app").unwrap().to_string(),
            "/a/b"
        );
        assert_eq!(
            app_of_task("a_b.marathon-123._app.2").unwrap().to_string(),
            "/a/b"
        );
        assert!(app_of_task("nodots").is_none());
    }
}
