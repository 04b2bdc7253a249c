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

/// Why a framework's or a task's description is refused, in Mesos' words
/// (the shell answers 400 with it; a task gets TASK_ERROR with it).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// A rule broken, as Mesos words it.
    #[error("{0}")]
    Rule(&'static str),
    /// An id that is not a valid Mesos id.
    #[error("invalid {what} id: {error}")]
    Id {
        /// `framework`, `executor` or `task`.
        what: &'static str,
        /// Why.
        error: String,
    },
    /// Resources that do not parse.
    #[error("invalid {of}resources: {error}")]
    Resources {
        /// Whose (`executor ` or nothing for a task's).
        of: &'static str,
        /// Why.
        error: String,
    },
    /// A role name that is not valid.
    #[error("{0}")]
    Role(String),
    /// A role outside the master's `--roles`.
    #[error("role '{0}' is not present in the master's --roles")]
    RoleNotAllowed(String),
    /// A role named twice.
    #[error("'FrameworkInfo.roles' contains duplicate role '{0}'")]
    DuplicateRole(String),
    /// Too many labels, roles or capabilities.
    #[error("'FrameworkInfo.{what}' has {n} entries; at most {max} are allowed")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// How many.
        n: usize,
        /// The most allowed.
        max: usize,
    },
    /// A FrameworkInfo too big to keep.
    #[error("'FrameworkInfo' takes {len} bytes encoded; at most {max} are allowed")]
    TooBig {
        /// Its encoded size.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// A failover timeout that is not a duration.
    #[error("invalid failover_timeout {0}: must be a non-negative number of seconds")]
    FailoverTimeout(f64),
    /// An environment variable name with `=` or NUL.
    #[error("environment variable name '{0}' contains '=' or NUL")]
    EnvName(String),
    /// An environment variable from a secret.
    #[error("environment variable '{0}' uses a secret, which is not supported")]
    EnvSecret(String),
    /// An ExecutorInfo of another framework.
    #[error("ExecutorInfo has framework id '{given}' but the framework is '{framework}'")]
    ExecutorFramework {
        /// The id it names.
        given: String,
        /// The framework launching it.
        framework: String,
    },
    /// A negative or infinite health check time.
    #[error("HealthCheck '{0}' must be a non-negative number")]
    HealthCheckTime(&'static str),
}

impl Invalid {
    fn id(what: &'static str, error: impl std::fmt::Display) -> Invalid {
        Invalid::Id {
            what,
            error: error.to_string(),
        }
    }
}

/// Checks a FrameworkInfo as Mesos does on SUBSCRIBE.
#[allow(deprecated)]
pub fn validate_framework_info(
    info: &v1::FrameworkInfo,
    whitelist: Option<&[String]>,
) -> Result<(), Invalid> {
    framework_info_bounds(info)?;
    let caps = Capabilities::of(info);
    if caps.multi_role {
        if info.role.is_some() {
            return Err(Invalid::Rule(
                "'FrameworkInfo.role' must not be set when the MULTI_ROLE capability is present; use 'roles'",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for role in &info.roles {
            if !seen.insert(role) {
                return Err(Invalid::DuplicateRole(role.clone()));
            }
        }
    } else if !info.roles.is_empty() {
        return Err(Invalid::Rule(
            "'FrameworkInfo.roles' is set but the MULTI_ROLE capability is not",
        ));
    }
    for role in framework_roles(info) {
        roles::validate(&role).map_err(|e| Invalid::Role(e.to_string()))?;
        if let Some(allowed) = whitelist
            && role != "*"
            && !allowed.iter().any(|r| r == &role)
        {
            return Err(Invalid::RoleNotAllowed(role));
        }
    }
    if let Some(t) = info.failover_timeout
        && (!t.is_finite() || t < 0.0 || Duration::try_from_secs_f64(t).is_err())
    {
        return Err(Invalid::FailoverTimeout(t));
    }
    if let Some(id) = &info.id {
        ids::validate(&id.value).map_err(|e| Invalid::id("framework", e))?;
    }
    if info.user.chars().any(char::is_control) {
        return Err(Invalid::Rule(
            "'FrameworkInfo.user' contains control characters",
        ));
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
fn framework_info_bounds(info: &v1::FrameworkInfo) -> Result<(), Invalid> {
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
            return Err(Invalid::TooMany { what, n, max });
        }
    }
    let len = info.encoded_len();
    if len > MAX_FRAMEWORK_INFO_BYTES {
        return Err(Invalid::TooBig {
            len,
            max: MAX_FRAMEWORK_INFO_BYTES,
        });
    }
    Ok(())
}

/// Checks a CommandInfo. `needs_value` is false when a container image can
/// supply the command.
pub fn validate_command(command: &v1::CommandInfo, needs_value: bool) -> Result<(), Invalid> {
    let shell = command.shell.unwrap_or(true);
    if needs_value && command.value.is_none() {
        return Err(Invalid::Rule(if shell {
            "'CommandInfo.value' must be set when 'CommandInfo.shell' is true"
        } else {
            "'CommandInfo.value' (the executable) must be set when 'CommandInfo.shell' is false"
        }));
    }
    if let Some(env) = &command.environment {
        for var in &env.variables {
            if var.name.is_empty() {
                return Err(Invalid::Rule("environment variable has an empty name"));
            }
            if var.name.contains('=') || var.name.contains('\0') {
                return Err(Invalid::EnvName(var.name.clone()));
            }
            if var.r#type() == v1::environment::variable::Type::Secret {
                return Err(Invalid::EnvSecret(var.name.clone()));
            }
        }
    }
    for uri in &command.uris {
        if uri.value.trim().is_empty() {
            return Err(Invalid::Rule("'CommandInfo.uris' has an empty value"));
        }
    }
    Ok(())
}

/// Checks an ExecutorInfo of a task or task group.
pub fn validate_executor(executor: &v1::ExecutorInfo, framework: &str) -> Result<(), Invalid> {
    ids::validate(&executor.executor_id.value).map_err(|e| Invalid::id("executor", e))?;
    if let Some(fid) = &executor.framework_id
        && fid.value != framework
    {
        return Err(Invalid::ExecutorFramework {
            given: fid.value.clone(),
            framework: framework.to_string(),
        });
    }
    let default = executor.r#type() == v1::executor_info::Type::Default;
    match &executor.command {
        Some(cmd) => validate_command(cmd, !default && executor.container.is_none())?,
        None if !default => {
            return Err(Invalid::Rule(
                "ExecutorInfo has no 'command' (required unless type is DEFAULT)",
            ));
        }
        None => {}
    }
    Resources::from_protos(&executor.resources).map_err(|e| Invalid::Resources {
        of: "executor ",
        error: e.to_string(),
    })?;
    Ok(())
}

/// Checks the parts of a TaskInfo that do not depend on the offer.
pub fn validate_task(task: &v1::TaskInfo, framework: &str) -> Result<Resources, Invalid> {
    ids::validate(&task.task_id.value).map_err(|e| Invalid::id("task", e))?;
    match (&task.command, &task.executor) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(Invalid::Rule(
                "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present",
            ));
        }
        (Some(cmd), None) => {
            let docker = task.container.as_ref().is_some_and(|c| c.docker.is_some());
            validate_command(cmd, !docker)?;
        }
        (None, Some(executor)) => validate_executor(executor, framework)?,
    }
    let resources = Resources::from_protos(&task.resources).map_err(|e| Invalid::Resources {
        of: "",
        error: e.to_string(),
    })?;
    if resources.is_empty() {
        return Err(Invalid::Rule("Task uses no resources"));
    }
    if let Some(kp) = &task.kill_policy
        && kp.grace_period.as_ref().is_some_and(|g| g.nanoseconds < 0)
    {
        return Err(Invalid::Rule(
            "Task's 'kill_policy.grace_period' must be non-negative",
        ));
    }
    if task
        .max_completion_time
        .as_ref()
        .is_some_and(|d| d.nanoseconds < 0)
    {
        return Err(Invalid::Rule(
            "Task's 'max_completion_time' must be non-negative",
        ));
    }
    if let Some(hc) = &task.health_check {
        validate_health_check(hc)?;
    }
    Ok(resources.unallocated())
}

fn validate_health_check(hc: &v1::HealthCheck) -> Result<(), Invalid> {
    use v1::health_check::Type;
    let ok = match hc.r#type() {
        Type::Command => hc.command.is_some(),
        Type::Http => hc.http.is_some(),
        Type::Tcp => hc.tcp.is_some(),
        Type::Unknown => false,
    };
    if !ok {
        return Err(Invalid::Rule(
            "HealthCheck must have a 'type' and the matching 'command', 'http' or 'tcp'",
        ));
    }
    for (name, v) in [
        ("delay_seconds", hc.delay_seconds),
        ("interval_seconds", hc.interval_seconds),
        ("timeout_seconds", hc.timeout_seconds),
        ("grace_period_seconds", hc.grace_period_seconds),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(Invalid::HealthCheckTime(name));
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
        assert_eq!(
            validate_framework_info(&whitelisted, Some(&["ops".to_string()])),
            Err(Invalid::RoleNotAllowed("eng".into()))
        );
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
        assert_eq!(
            many,
            Invalid::TooMany {
                what: "labels",
                n: 257,
                max: MAX_FRAMEWORK_LABELS
            }
        );
        assert!(many.to_string().contains("257"), "{many}");
        // Few labels, but huge ones.
        let big = "x".repeat(100_000);
        let huge = validate_framework_info(&labels(3, &big), None).unwrap_err();
        assert!(matches!(huge, Invalid::TooBig { .. }), "{huge}");
        assert!(huge.to_string().contains("bytes"), "{huge}");
        let roles: Vec<String> = (0..300).map(|i| format!(r#""r{i}""#)).collect();
        let many_roles = info(&format!(
            r#"{{"user":"u","name":"n","roles":[{}],"capabilities":[{{"type":"MULTI_ROLE"}}]}}"#,
            roles.join(",")
        ));
        assert!(matches!(
            validate_framework_info(&many_roles, None),
            Err(Invalid::TooMany { what: "roles", .. })
        ));
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
        assert!(
            validate_task(&both, "f")
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let none = task(
            r#"{"name":"t","task_id":{"value":"t1"},"agent_id":{"value":"a"},"command":{"value":"true"}}"#,
        );
        assert_eq!(
            validate_task(&none, "f").unwrap_err(),
            Invalid::Rule("Task uses no resources")
        );
        let bad_id = task(
            r#"{"name":"t","task_id":{"value":"a/b"},"agent_id":{"value":"a"},"command":{"value":"true"},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        let e = validate_task(&bad_id, "f").unwrap_err();
        assert!(matches!(e, Invalid::Id { what: "task", .. }), "{e}");
        assert!(e.to_string().starts_with("invalid task id: "), "{e}");
        let no_value = task(
            r#"{"name":"t","task_id":{"value":"t"},"agent_id":{"value":"a"},"command":{},
               "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}}]}"#,
        );
        assert!(
            validate_task(&no_value, "f")
                .unwrap_err()
                .to_string()
                .contains("CommandInfo.value")
        );
    }
}
