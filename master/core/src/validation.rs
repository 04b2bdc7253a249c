//! Validation of what frameworks send: FrameworkInfo on SUBSCRIBE and
//! UPDATE_FRAMEWORK, TaskInfo and ExecutorInfo on ACCEPT. A failure is a
//! message for the framework (an ERROR event or a TASK_ERROR update).

use std::time::Duration;

use agora_proto::resources::Resources;
use agora_proto::v1::{self, framework_info::capability::Type as Cap};
use agora_proto::{ids, roles};

/// The capabilities that change what the master sends a framework.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// TASK_UNREACHABLE, TASK_GONE, … instead of TASK_LOST.
    pub partition_aware: bool,
    /// `roles` instead of `role`; `allocation_info` in offers.
    pub multi_role: bool,
    /// Resources in `reservations[]` form.
    pub reservation_refinement: bool,
    /// TASK_KILLING is sent.
    pub task_killing_state: bool,
    /// Offered agents with GPUs.
    pub gpu_resources: bool,
}

impl Capabilities {
    /// Reads the capabilities of a FrameworkInfo.
    pub fn of(info: &v1::FrameworkInfo) -> Self {
        let mut caps = Capabilities::default();
        for c in &info.capabilities {
            match c.r#type() {
                Cap::PartitionAware => caps.partition_aware = true,
                Cap::MultiRole => caps.multi_role = true,
                Cap::ReservationRefinement => caps.reservation_refinement = true,
                Cap::TaskKillingState => caps.task_killing_state = true,
                Cap::GpuResources => caps.gpu_resources = true,
                _ => {}
            }
        }
        caps
    }
}

/// The roles a framework is subscribed to: `roles` with MULTI_ROLE, else the
/// deprecated `role` (default `*`).
#[allow(deprecated)]
pub fn framework_roles(info: &v1::FrameworkInfo) -> Vec<String> {
    if Capabilities::of(info).multi_role {
        info.roles.clone()
    } else {
        vec![info.role.clone().unwrap_or_else(|| "*".to_string())]
    }
}

/// Checks a FrameworkInfo as Mesos does on SUBSCRIBE.
#[allow(deprecated)]
pub fn validate_framework_info(
    info: &v1::FrameworkInfo,
    whitelist: Option<&[String]>,
) -> Result<(), String> {
    framework_info_bounds(info)?;
    let caps = Capabilities::of(info);
    if caps.multi_role {
        if info.role.is_some() {
            return Err("'FrameworkInfo.role' must not be set when the MULTI_ROLE capability is present; use 'roles'".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for role in &info.roles {
            if !seen.insert(role) {
                return Err(format!(
                    "'FrameworkInfo.roles' contains duplicate role '{role}'"
                ));
            }
        }
    } else if !info.roles.is_empty() {
        return Err("'FrameworkInfo.roles' is set but the MULTI_ROLE capability is not".into());
    }
    for role in framework_roles(info) {
        roles::validate(&role).map_err(|e| e.to_string())?;
        if let Some(allowed) = whitelist
            && role != "*"
            && !allowed.iter().any(|r| r == &role)
        {
            return Err(format!(
                "role '{role}' is not present in the master's --roles"
            ));
        }
    }
    if let Some(t) = info.failover_timeout
        && (!t.is_finite() || t < 0.0 || Duration::try_from_secs_f64(t).is_err())
    {
        return Err(format!(
            "invalid failover_timeout {t}: must be a non-negative number of seconds"
        ));
    }
    if let Some(id) = &info.id {
        ids::validate(&id.value).map_err(|e| format!("invalid framework id: {e}"))?;
    }
    if info.user.chars().any(char::is_control) {
        return Err("'FrameworkInfo.user' contains control characters".into());
    }
    Ok(())
}

/// The most a FrameworkInfo may take, encoded. A master keeps every
/// framework's info (50 completed ones too) and repeats it in `/state` and
/// events; generous for package metadata in labels, far from gigabytes.
pub const MAX_FRAMEWORK_INFO_BYTES: usize = 256 * 1024;
/// The most labels, roles and capabilities a framework may declare.
pub const MAX_FRAMEWORK_LABELS: usize = 256;
/// See [`MAX_FRAMEWORK_LABELS`].
pub const MAX_FRAMEWORK_ROLES: usize = 256;
/// See [`MAX_FRAMEWORK_LABELS`]: there are fewer than 16 kinds.
pub const MAX_FRAMEWORK_CAPABILITIES: usize = 32;

/// Bounds on what one framework may make the master keep.
fn framework_info_bounds(info: &v1::FrameworkInfo) -> Result<(), String> {
    use prost::Message as _;
    let labels = info.labels.as_ref().map_or(0, |l| l.labels.len());
    for (what, n, max) in [
        ("labels", labels, MAX_FRAMEWORK_LABELS),
        ("roles", info.roles.len(), MAX_FRAMEWORK_ROLES),
        (
            "capabilities",
            info.capabilities.len(),
            MAX_FRAMEWORK_CAPABILITIES,
        ),
    ] {
        if n > max {
            return Err(format!(
                "'FrameworkInfo.{what}' has {n} entries; at most {max} are allowed"
            ));
        }
    }
    let len = info.encoded_len();
    if len > MAX_FRAMEWORK_INFO_BYTES {
        return Err(format!(
            "'FrameworkInfo' takes {len} bytes encoded; at most {MAX_FRAMEWORK_INFO_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// Checks a CommandInfo. `needs_value` is false when a container image can
/// supply the command.
pub fn validate_command(command: &v1::CommandInfo, needs_value: bool) -> Result<(), String> {
    let shell = command.shell.unwrap_or(true);
    if needs_value && command.value.is_none() {
        return Err(if shell {
            "'CommandInfo.value' must be set when 'CommandInfo.shell' is true".into()
        } else {
            "'CommandInfo.value' (the executable) must be set when 'CommandInfo.shell' is false"
                .into()
        });
    }
    if let Some(env) = &command.environment {
        for var in &env.variables {
            if var.name.is_empty() {
                return Err("environment variable has an empty name".into());
            }
            if var.name.contains('=') || var.name.contains('\0') {
                return Err(format!(
                    "environment variable name '{}' contains '=' or NUL",
                    var.name
                ));
            }
            if var.r#type() == v1::environment::variable::Type::Secret {
                return Err(format!(
                    "environment variable '{}' uses a secret, which is not supported",
                    var.name
                ));
            }
        }
    }
    for uri in &command.uris {
        if uri.value.trim().is_empty() {
            return Err("'CommandInfo.uris' has an empty value".into());
        }
    }
    Ok(())
}

/// Checks an ExecutorInfo of a task or task group.
pub fn validate_executor(executor: &v1::ExecutorInfo, framework: &str) -> Result<(), String> {
    ids::validate(&executor.executor_id.value).map_err(|e| format!("invalid executor id: {e}"))?;
    if let Some(fid) = &executor.framework_id
        && fid.value != framework
    {
        return Err(format!(
            "ExecutorInfo has framework id '{}' but the framework is '{framework}'",
            fid.value
        ));
    }
    let default = executor.r#type() == v1::executor_info::Type::Default;
    match &executor.command {
        Some(cmd) => validate_command(cmd, !default && executor.container.is_none())?,
        None if !default => {
            return Err("ExecutorInfo has no 'command' (required unless type is DEFAULT)".into());
        }
        None => {}
    }
    Resources::from_protos(&executor.resources)
        .map_err(|e| format!("invalid executor resources: {e}"))?;
    Ok(())
}

/// Checks the parts of a TaskInfo that do not depend on the offer.
pub fn validate_task(task: &v1::TaskInfo, framework: &str) -> Result<Resources, String> {
    ids::validate(&task.task_id.value).map_err(|e| format!("invalid task id: {e}"))?;
    match (&task.command, &task.executor) {
        (Some(_), Some(_)) | (None, None) => {
            return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into());
        }
        (Some(cmd), None) => {
            let docker = task.container.as_ref().is_some_and(|c| c.docker.is_some());
            validate_command(cmd, !docker)?;
        }
        (None, Some(executor)) => validate_executor(executor, framework)?,
    }
    let resources =
        Resources::from_protos(&task.resources).map_err(|e| format!("invalid resources: {e}"))?;
    if resources.is_empty() {
        return Err("Task uses no resources".into());
    }
    if let Some(kp) = &task.kill_policy
        && kp.grace_period.as_ref().is_some_and(|g| g.nanoseconds < 0)
    {
        return Err("Task's 'kill_policy.grace_period' must be non-negative".into());
    }
    if task
        .max_completion_time
        .as_ref()
        .is_some_and(|d| d.nanoseconds < 0)
    {
        return Err("Task's 'max_completion_time' must be non-negative".into());
    }
    if let Some(hc) = &task.health_check {
        validate_health_check(hc)?;
    }
    Ok(resources.unallocated())
}

fn validate_health_check(hc: &v1::HealthCheck) -> Result<(), String> {
    use v1::health_check::Type;
    let ok = match hc.r#type() {
        Type::Command => hc.command.is_some(),
        Type::Http => hc.http.is_some(),
        Type::Tcp => hc.tcp.is_some(),
        Type::Unknown => false,
    };
    if !ok {
        return Err(
            "HealthCheck must have a 'type' and the matching 'command', 'http' or 'tcp'".into(),
        );
    }
    for (name, v) in [
        ("delay_seconds", hc.delay_seconds),
        ("interval_seconds", hc.interval_seconds),
        ("timeout_seconds", hc.timeout_seconds),
        ("grace_period_seconds", hc.grace_period_seconds),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(format!(
                "HealthCheck '{name}' must be a non-negative number"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> v1::FrameworkInfo {
        agora_proto::json::from_slice(json.as_bytes()).unwrap()
    }

    #[test]
    fn framework_roles_follow_multi_role() {
        assert_eq!(
            framework_roles(&info(r#"{"user":"u","name":"n"}"#)),
            vec!["*"]
        );
        assert_eq!(
            framework_roles(&info(r#"{"user":"u","name":"n","role":"eng"}"#)),
            vec!["eng"]
        );
        let multi = info(
            r#"{"user":"u","name":"n","roles":["a","b"],"capabilities":[{"type":"MULTI_ROLE"}]}"#,
        );
        assert_eq!(framework_roles(&multi), vec!["a", "b"]);
    }

    #[test]
    fn framework_info_errors() {
        assert!(validate_framework_info(&info(r#"{"user":"u","name":"n"}"#), None).is_ok());
        for bad in [
            r#"{"user":"u","name":"n","roles":["a"]}"#,
            r#"{"user":"u","name":"n","roles":["a","a"],"capabilities":[{"type":"MULTI_ROLE"}]}"#,
            r#"{"user":"u","name":"n","role":"a b"}"#,
            r#"{"user":"u","name":"n","failover_timeout":-1}"#,
            r#"{"user":"u","name":"n","failover_timeout":1e300}"#,
            r#"{"user":"u","name":"n","id":{"value":"a/b"}}"#,
        ] {
            assert!(validate_framework_info(&info(bad), None).is_err(), "{bad}");
        }
        let whitelisted = info(r#"{"user":"u","name":"n","role":"eng"}"#);
        assert!(validate_framework_info(&whitelisted, Some(&["ops".to_string()])).is_err());
    }

    /// Issue 12.5: one SUBSCRIBE with 400,000 labels took the master to
    /// 748 MB. What a framework declares is bounded, with the field named.
    #[test]
    fn framework_info_is_bounded() {
        let labels = |n: usize, value: &str| {
            let l: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"key":"k{i}","value":"{value}"}}"#))
                .collect();
            info(&format!(
                r#"{{"user":"u","name":"n","labels":{{"labels":[{}]}}}}"#,
                l.join(",")
            ))
        };
        assert!(validate_framework_info(&labels(256, "v"), None).is_ok());
        let many = validate_framework_info(&labels(257, "v"), None).unwrap_err();
        assert!(many.contains("labels") && many.contains("257"), "{many}");
        // Few labels, but huge ones.
        let big = "x".repeat(100_000);
        let huge = validate_framework_info(&labels(3, &big), None).unwrap_err();
        assert!(huge.contains("bytes"), "{huge}");
        let roles: Vec<String> = (0..300).map(|i| format!(r#""r{i}""#)).collect();
        let many_roles = info(&format!(
            r#"{{"user":"u","name":"n","roles":[{}],"capabilities":[{{"type":"MULTI_ROLE"}}]}}"#,
            roles.join(",")
        ));
        assert!(
            validate_framework_info(&many_roles, None)
                .unwrap_err()
                .contains("roles")
        );
    }

    #[test]
    fn task_errors() {
        let task = |json: &str| -> v1::TaskInfo {
            agora_proto::json::from_slice(json.as_bytes()).unwrap()
        };
        let ok = task(
            r#"{"name":"t","task_id":{"value":"t1"},"agent_id":{"value":"a"},"command":{"value":"true"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        assert_eq!(validate_task(&ok, "f").unwrap().scalar("cpus"), 0.1);
        let both = task(
            r#"{"name":"t","task_id":{"value":"t1"},"agent_id":{"value":"a"},"command":{"value":"true"},
               "executor":{"executor_id":{"value":"e"},"command":{"value":"x"}},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        assert!(validate_task(&both, "f").unwrap_err().contains("not both"));
        let none = task(
            r#"{"name":"t","task_id":{"value":"t1"},"agent_id":{"value":"a"},"command":{"value":"true"}}"#,
        );
        assert_eq!(
            validate_task(&none, "f").unwrap_err(),
            "Task uses no resources"
        );
        let bad_id = task(
            r#"{"name":"t","task_id":{"value":"a/b"},"agent_id":{"value":"a"},"command":{"value":"true"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        assert!(
            validate_task(&bad_id, "f")
                .unwrap_err()
                .contains("invalid task id")
        );
        let no_value = task(
            r#"{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},"command":{},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        assert!(
            validate_task(&no_value, "f")
                .unwrap_err()
                .contains("CommandInfo.value")
        );
    }
}
