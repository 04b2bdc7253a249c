//! App definitions: what clients send (`AppUpdate`, every field optional,
//! unknown fields ignored), how it is validated (422 with a `details` entry
//! per bad field) and normalised (`uris` → `fetch`, `ports` →
//! `portDefinitions`, legacy Docker network → `networks`), and the App JSON
//! Marathon 1.6–1.8 returns (`App`), which marathon-python parses strictly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::constraints::Constraint;
use crate::path::PathId;
use crate::time::Millis;

mod validate;
pub use validate::{MAX_SCALAR, validate};

/// One bad field: `{"path": "/cpus", "errors": ["…"]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// JSON pointer of the field.
    pub path: String,
    /// What is wrong with it.
    pub errors: Vec<String>,
}

/// Why a definition is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AppError {
    /// 400: not JSON, or a field of the wrong type.
    #[error("Invalid JSON")]
    InvalidJson(Vec<FieldError>),
    /// 422: well-formed but not valid.
    #[error("Object is not valid")]
    Invalid(Vec<FieldError>),
}

impl AppError {
    /// The `details` array.
    pub fn details(&self) -> &[FieldError] {
        match self {
            AppError::InvalidJson(d) | AppError::Invalid(d) => d,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AppError::InvalidJson(_) => 400,
            AppError::Invalid(_) => 422,
        }
    }
}

fn invalid(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        errors: vec![message.into()],
    }
}

/// An environment value: a string, or a reference to a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A plain value.
    Value(String),
    /// `{"secret": "<name>"}`.
    Secret {
        /// The secret's name.
        secret: String,
    },
}

/// An artifact to fetch into the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    /// Where from (a local path or http(s) URL).
    pub uri: String,
    /// Unpack archives.
    #[serde(default = "yes")]
    pub extract: bool,
    /// Make it executable.
    #[serde(default)]
    pub executable: bool,
    /// Cache it on the agent.
    #[serde(default)]
    pub cache: bool,
    /// File name in the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

/// A port of a host-networked app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port (0 = assign one).
    #[serde(default)]
    pub port: u32,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Its name (`PORT_<NAME>`, DNS SRV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels (marathon-lb reads some).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// A container port of a bridged or user-networked app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port inside the container.
    #[serde(default)]
    pub container_port: u32,
    /// Host port (0 = any offered port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    /// Service port (0 = assign one).
    #[serde(default)]
    pub service_port: u32,
    /// `tcp`, `udp` or `udp,tcp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A Docker parameter (`--key value`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    /// Flag name without dashes.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// `container.docker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    /// The image.
    #[serde(default)]
    pub image: String,
    /// Pull even if present.
    #[serde(default)]
    pub force_pull_image: bool,
    /// Privileged mode.
    #[serde(default)]
    pub privileged: bool,
    /// Extra `docker run` parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

/// A volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default = "rw")]
    pub mode: String,
    /// A local persistent volume of this size: the instance reserves its
    /// resources and keeps its data on one agent across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentVolume>,
}

/// `container.volumes[].persistent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolume {
    /// Size in MB.
    pub size: f64,
    /// `root` (a directory on the agent's disk; the only type offered).
    #[serde(rename = "type", default = "root_type")]
    pub kind: String,
}

fn root_type() -> String {
    "root".into()
}

/// `residency`: how a resident app's instances come back (Marathon 1.x).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Residency {
    /// Kept for compatibility: instances wait for their agent.
    #[serde(default = "hour")]
    pub relaunch_escalation_timeout_seconds: f64,
    /// `WAIT_FOREVER`: an instance on a lost agent is not replaced elsewhere.
    #[serde(default = "wait_forever")]
    pub task_lost_behavior: String,
}

fn hour() -> f64 {
    3600.0
}

fn wait_forever() -> String {
    "WAIT_FOREVER".into()
}

impl Default for Residency {
    fn default() -> Self {
        Residency {
            relaunch_escalation_timeout_seconds: hour(),
            task_lost_behavior: wait_forever(),
        }
    }
}

fn rw() -> String {
    "RW".into()
}

/// `container`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` or `MESOS`.
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    /// Docker settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Port mappings (non-host networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

fn container_mode() -> String {
    "container".into()
}

/// A network the app joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `host`, `container/bridge` or `container` (the default).
    #[serde(default = "container_mode")]
    pub mode: String,
    /// The network name (mode `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A health check command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    /// The shell command.
    pub value: String,
}

/// A health check (Marathon's fields and defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS`, `TCP`, `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`.
    #[serde(default = "http")]
    pub protocol: String,
    /// Path for HTTP checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Index into the app's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// A fixed port (wins over `portIndex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// The command of a COMMAND check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    /// Failures are ignored until the first success or this long.
    #[serde(default = "d300")]
    pub grace_period_seconds: f64,
    /// How often.
    #[serde(default = "d60")]
    pub interval_seconds: f64,
    /// Each check's timeout.
    #[serde(default = "d20")]
    pub timeout_seconds: f64,
    /// Failures in a row that kill the task (0 = never).
    #[serde(default = "d3")]
    pub max_consecutive_failures: u32,
    /// Delay before the first check.
    #[serde(default = "d15")]
    pub delay_seconds: f64,
    /// Treat 1xx as neither success nor failure.
    #[serde(default)]
    pub ignore_http1xx: bool,
}

fn http() -> String {
    "HTTP".into()
}
fn d300() -> f64 {
    300.0
}
fn d60() -> f64 {
    60.0
}
fn d20() -> f64 {
    20.0
}
fn d15() -> f64 {
    15.0
}
fn d3() -> u32 {
    3
}

/// How fast a restart may go.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Fraction of instances that must stay healthy.
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// Fraction of extra instances allowed during an upgrade.
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// What to do with instances on unreachable agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    /// Replace after `inactiveAfterSeconds`, forget after `expungeAfterSeconds`.
    Enabled {
        /// Seconds before a replacement is launched.
        #[serde(rename = "inactiveAfterSeconds", default)]
        inactive_after_seconds: f64,
        /// Seconds before the instance is forgotten.
        #[serde(rename = "expungeAfterSeconds", default)]
        expunge_after_seconds: f64,
    },
    /// `"disabled"`.
    Disabled(String),
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0.0,
            expunge_after_seconds: 0.0,
        }
    }
}

/// Which instances go first on scale-down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    /// Most recently started first (default).
    #[default]
    YoungestFirst,
    /// Longest running first.
    OldestFirst,
}

/// `versionInfo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Last change of `instances`.
    pub last_scaling_at: String,
    /// Last change of anything else.
    pub last_config_change_at: String,
}

/// A normalised, valid app definition; serialises to Marathon's App JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// The id.
    pub id: String,
    /// Shell command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Exec-form command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    /// Instances wanted.
    pub instances: u32,
    /// CPUs per instance.
    pub cpus: f64,
    /// Memory (MB) per instance.
    pub mem: f64,
    /// Disk (MB) per instance.
    pub disk: f64,
    /// GPUs per instance.
    pub gpus: f64,
    /// Executor (`""` = the command executor).
    pub executor: String,
    /// Placement constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Vec<String>>,
    /// Roles whose resources may be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_resource_roles: Vec<String>,
    /// Artifacts to fetch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<Fetch>,
    /// Ports (host networking only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Host ports must equal the declared ports.
    pub require_ports: bool,
    /// Container settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// Networks.
    pub networks: Vec<Network>,
    /// Health checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    /// Readiness checks (kept as given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<Value>,
    /// Apps this one starts after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Rolling upgrade limits.
    pub upgrade_strategy: UpgradeStrategy,
    /// First launch delay after a failure.
    pub backoff_seconds: f64,
    /// Delay growth per failure.
    pub backoff_factor: f64,
    /// Largest launch delay.
    pub max_launch_delay_seconds: f64,
    /// Scale-down order.
    pub kill_selection: KillSelection,
    /// Unreachable instances.
    pub unreachable_strategy: UnreachableStrategy,
    /// SIGTERM → SIGKILL delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Set for apps with persistent volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Residency>,
    /// The role its tasks run in (Marathon 1.9; default `--mesos-role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Labels (always present).
    pub labels: BTreeMap<String, String>,
    /// This version's timestamp.
    pub version: String,
    /// When it last scaled / last changed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<VersionInfo>,
}

/// What a client sends: every field optional. On POST absent fields take
/// their defaults; on PUT (partial update) they keep their current values.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppUpdate {
    /// Id.
    pub id: Option<String>,
    /// Shell command.
    pub cmd: Option<String>,
    /// Exec form.
    pub args: Option<Vec<String>>,
    /// User.
    pub user: Option<String>,
    /// Environment.
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// Instances.
    pub instances: Option<f64>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Memory.
    pub mem: Option<f64>,
    /// Disk.
    pub disk: Option<f64>,
    /// GPUs.
    pub gpus: Option<f64>,
    /// Executor.
    pub executor: Option<String>,
    /// Constraints.
    pub constraints: Option<Vec<Vec<String>>>,
    /// Accepted roles.
    pub accepted_resource_roles: Option<Vec<String>>,
    /// Deprecated URIs.
    pub uris: Option<Vec<String>>,
    /// Fetch.
    pub fetch: Option<Vec<Fetch>>,
    /// Deprecated ports.
    pub ports: Option<Vec<u32>>,
    /// Port definitions.
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Require ports.
    pub require_ports: Option<bool>,
    /// Container (legacy forms accepted).
    pub container: Option<Value>,
    /// Networks.
    pub networks: Option<Vec<Network>>,
    /// Health checks.
    pub health_checks: Option<Vec<HealthCheck>>,
    /// Readiness checks.
    pub readiness_checks: Option<Vec<Value>>,
    /// Dependencies.
    pub dependencies: Option<Vec<String>>,
    /// Upgrade strategy.
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// Backoff.
    pub backoff_seconds: Option<f64>,
    /// Backoff factor.
    pub backoff_factor: Option<f64>,
    /// Max launch delay.
    pub max_launch_delay_seconds: Option<f64>,
    /// Kill selection.
    pub kill_selection: Option<KillSelection>,
    /// Unreachable strategy.
    pub unreachable_strategy: Option<UnreachableStrategy>,
    /// Kill grace.
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Residency (apps with persistent volumes).
    pub residency: Option<Residency>,
    /// Role.
    pub role: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Rollback target (alone, or with `id`).
    pub version: Option<String>,
}

/// Parses a JSON body; type errors become 400 with the field's path.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let pointer = if path == "." {
                "/".to_string()
            } else {
                format!("/{}", path.replace('.', "/"))
            };
            Err(AppError::InvalidJson(vec![invalid(
                &pointer,
                e.inner().to_string(),
            )]))
        }
    }
}

impl AppUpdate {
    /// Whether this update only says `version` (and maybe `id`): a rollback.
    pub fn is_rollback(&self) -> bool {
        let only = AppUpdate {
            id: self.id.clone(),
            version: self.version.clone(),
            ..Default::default()
        };
        self.version.is_some() && *self == only
    }

    /// Whether it changes nothing but `instances` (and `id`).
    pub fn is_scale_only(&self) -> bool {
        let only = AppUpdate {
            id: self.id.clone(),
            instances: self.instances,
            ..Default::default()
        };
        self.instances.is_some() && *self == only
    }
}

impl App {
    /// The app's local persistent volumes.
    pub fn persistent_volumes(&self) -> impl Iterator<Item = (&Volume, &PersistentVolume)> + '_ {
        self.container
            .iter()
            .flat_map(|c| &c.volumes)
            .filter_map(|v| Some((v, v.persistent.as_ref()?)))
    }

    /// An app with persistent volumes: its instances are tied to the
    /// agents that hold their data.
    pub fn is_resident(&self) -> bool {
        self.persistent_volumes().next().is_some()
    }

    /// An app with Marathon's defaults (1 instance of 1 cpu, 128 MB, host
    /// networking).
    fn defaults(id: &PathId, version: Millis) -> App {
        App {
            id: id.to_string(),
            cmd: None,
            args: Vec::new(),
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0.0,
            executor: String::new(),
            constraints: Vec::new(),
            accepted_resource_roles: Vec::new(),
            fetch: Vec::new(),
            port_definitions: None,
            require_ports: false,
            container: None,
            networks: vec![Network {
                mode: "host".into(),
                name: None,
                labels: BTreeMap::new(),
            }],
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            backoff_seconds: 1.0,
            backoff_factor: 1.15,
            max_launch_delay_seconds: 300.0,
            kill_selection: KillSelection::YoungestFirst,
            unreachable_strategy: UnreachableStrategy::default(),
            task_kill_grace_period_seconds: None,
            residency: None,
            role: None,
            labels: BTreeMap::new(),
            version: version.iso(),
            version_info: None,
        }
    }
}

/// `instances`, `cpus`, `mem`, `disk` and `gpus` from `u`, each checked.
fn set_sizes(u: &AppUpdate, app: &mut App, errors: &mut Vec<FieldError>) {
    if let Some(n) = u.instances {
        if n < 0.0 || n.fract() != 0.0 || n > 1_000_000.0 {
            errors.push(invalid(
                "/instances",
                format!("got {n}, expected a whole number from 0 to 1000000"),
            ));
        } else {
            app.instances = n as u32;
        }
    }
    for (name, value, min, target) in [
        ("cpus", u.cpus, 0.001, &mut app.cpus),
        ("mem", u.mem, 0.0, &mut app.mem),
        ("disk", u.disk, 0.0, &mut app.disk),
        ("gpus", u.gpus, 0.0, &mut app.gpus),
    ] {
        if let Some(v) = value {
            // Mesos keeps scalars in fixed point with three decimals; far
            // below that limit, no agent could ever offer more.
            if !v.is_finite() || v < min || v > MAX_SCALAR {
                errors.push(invalid(
                    &format!("/{name}"),
                    format!("got {v}, expected from {min} to {MAX_SCALAR}"),
                ));
            } else {
                *target = v;
            }
        }
    }
}

/// Apps with persistent volumes are resident, with Marathon's defaults for
/// them: a residency, upgrades that never run more instances than asked
/// (minimumHealthCapacity 0.5, maximumOverCapacity 0), and instances on
/// unreachable agents waited for, not replaced.
fn settle_residency(u: &AppUpdate, app: &mut App) {
    if !app.is_resident() {
        app.residency = None;
        return;
    }
    if let Some(r) = &u.residency {
        app.residency = Some(r.clone());
    }
    app.residency.get_or_insert_with(Residency::default);
    if u.upgrade_strategy.is_none() && app.upgrade_strategy == UpgradeStrategy::default() {
        app.upgrade_strategy = UpgradeStrategy {
            minimum_health_capacity: 0.5,
            maximum_over_capacity: 0.0,
        };
    }
    if u.unreachable_strategy.is_none()
        && app.unreachable_strategy == UnreachableStrategy::default()
    {
        app.unreachable_strategy = UnreachableStrategy::Disabled("disabled".into());
    }
}

/// Settles which ports an app declares: host networking keeps
/// port definitions (one default port when none is given) and drops port
/// mappings; container networking the other way round.
fn settle_ports(app: &mut App) {
    let host = app.networks.iter().all(|n| n.mode == "host");
    if host {
        if app.port_definitions.is_none() {
            app.port_definitions = Some(vec![PortDefinition {
                port: 0,
                protocol: "tcp".into(),
                name: Some("default".into()),
                labels: BTreeMap::new(),
            }]);
        }
        if let Some(c) = &mut app.container {
            c.port_mappings = None;
        }
    } else {
        app.port_definitions = None;
        // Container networking runs in a container: a MESOS one when the
        // app names none (as Marathon normalises it).
        let c = app.container.get_or_insert_with(|| Container {
            kind: "MESOS".into(),
            docker: None,
            volumes: Vec::new(),
            port_mappings: None,
        });
        if c.port_mappings.is_none() {
            c.port_mappings = Some(Vec::new());
        }
    }
}

/// Builds the app an update describes: on top of `base` (partial update) or
/// of the defaults. `id` is the canonical id (from the path or the body).
/// Service ports of 0 stay 0 here; the caller assigns them.
pub fn build(
    id: &PathId,
    base: Option<&App>,
    u: &AppUpdate,
    version: Millis,
) -> Result<App, AppError> {
    let mut errors: Vec<FieldError> = Vec::new();
    if u.version.is_some() && !u.is_rollback() {
        errors.push(invalid(
            "/version",
            "The 'version' field may only be combined with the 'id' field.",
        ));
    }
    let defaults = App::defaults(id, version);
    let mut app = base.cloned().unwrap_or(defaults);
    app.id = id.to_string();
    app.version = version.iso();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = &u.$field {
                app.$field = v.clone();
            }
        };
    }
    if let Some(cmd) = &u.cmd {
        app.cmd = Some(cmd.clone());
        if u.args.is_none() {
            app.args.clear();
        }
    }
    if let Some(args) = &u.args {
        app.args = args.clone();
        if u.cmd.is_none() {
            app.cmd = None;
        }
    }
    if let Some(user) = &u.user {
        app.user = Some(user.clone());
    }
    set!(env);
    set_sizes(u, &mut app, &mut errors);
    set!(executor);
    set!(constraints);
    set!(accepted_resource_roles);
    if let Some(uris) = &u.uris {
        app.fetch = uris
            .iter()
            .map(|uri| Fetch {
                uri: uri.clone(),
                extract: true,
                executable: false,
                cache: false,
                dest_path: None,
            })
            .collect();
    }
    set!(fetch);
    if let Some(ports) = &u.ports {
        app.port_definitions = Some(
            ports
                .iter()
                .map(|p| PortDefinition {
                    port: *p,
                    protocol: "tcp".into(),
                    name: None,
                    labels: BTreeMap::new(),
                })
                .collect(),
        );
    }
    if let Some(pd) = &u.port_definitions {
        app.port_definitions = Some(pd.clone());
    }
    set!(require_ports);
    set!(networks);
    if let Some(container) = &u.container {
        match normalize_container(container, &mut app) {
            Ok(c) => app.container = c,
            Err(mut e) => errors.append(&mut e),
        }
    }
    set!(health_checks);
    set!(readiness_checks);
    set!(dependencies);
    set!(upgrade_strategy);
    set!(backoff_seconds);
    set!(backoff_factor);
    set!(max_launch_delay_seconds);
    set!(kill_selection);
    set!(unreachable_strategy);
    if let Some(g) = u.task_kill_grace_period_seconds {
        app.task_kill_grace_period_seconds = Some(g);
    }
    set!(labels);
    if let Some(role) = &u.role {
        match agora_proto::roles::validate(role) {
            Ok(()) => app.role = Some(role.clone()),
            Err(e) => errors.push(invalid("/role", e.to_string())),
        }
    }
    settle_ports(&mut app);
    settle_residency(u, &mut app);
    errors.extend(validate(&app));
    if errors.is_empty() {
        Ok(app)
    } else {
        Err(AppError::Invalid(errors))
    }
}

/// Accepts `container` in the current or the legacy form
/// (`docker.network`, `docker.portMappings`) and normalises it.
fn normalize_container(value: &Value, app: &mut App) -> Result<Option<Container>, Vec<FieldError>> {
    if value.is_null() {
        return Ok(None);
    }
    let mut v = value.clone();
    let mut legacy_network = None;
    let mut legacy_mappings = None;
    if let Some(docker) = v.get_mut("docker").and_then(Value::as_object_mut) {
        legacy_network = docker.remove("network");
        legacy_mappings = docker.remove("portMappings");
    }
    if legacy_mappings.is_some() && v.get("portMappings").is_some() {
        return Err(vec![invalid(
            "/container/portMappings",
            "port mappings are given both in container.docker and in container",
        )]);
    }
    if let (Some(m), Some(obj)) = (legacy_mappings, v.as_object_mut()) {
        obj.insert("portMappings".into(), m);
    }
    let container: Container =
        serde_json::from_value(v).map_err(|e| vec![invalid("/container", e.to_string())])?;
    if let Some(net) = legacy_network.as_ref().and_then(Value::as_str) {
        let mode = match net {
            "BRIDGE" => "container/bridge",
            "USER" => "container",
            "HOST" => "host",
            "NONE" => "container",
            other => {
                return Err(vec![invalid(
                    "/container/docker/network",
                    format!("unknown network '{other}'"),
                )]);
            }
        };
        app.networks = vec![Network {
            mode: mode.into(),
            name: None,
            labels: BTreeMap::new(),
        }];
    }
    Ok(Some(container))
}

/// Number of ports each instance needs from an offer.
pub fn port_count(app: &App) -> usize {
    app.ports().iter().filter(|p| p.host.is_some()).count()
}

/// One port an app declares, whichever way it declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPort {
    /// Its name.
    pub name: Option<String>,
    /// The port the app names: `portDefinitions[].port`, or the mapping's
    /// `containerPort`.
    pub declared: u32,
    /// Where agora lb serves it.
    pub service_port: u32,
    /// The host port each instance takes from its offer: `Some(0)` any,
    /// `Some(p)` that one, `None` none (a mapping without `hostPort`).
    pub host: Option<u32>,
    /// `tcp`, `udp` or `udp,tcp`.
    pub protocol: String,
}

/// Which of an app's two port lists counts.
enum PortList {
    Definitions,
    Mappings,
}

impl App {
    /// The one rule: `portDefinitions` when the app has them (host
    /// networking), else the container's `portMappings`.
    fn port_list(&self) -> PortList {
        if self.port_definitions.is_some() {
            PortList::Definitions
        } else {
            PortList::Mappings
        }
    }

    /// The app's ports in order, from whichever list counts.
    pub fn ports(&self) -> Vec<AppPort> {
        match self.port_list() {
            PortList::Definitions => self
                .port_definitions
                .iter()
                .flatten()
                .map(|p| AppPort {
                    name: p.name.clone(),
                    declared: p.port,
                    service_port: p.port,
                    host: Some(if self.require_ports { p.port } else { 0 }),
                    protocol: p.protocol.clone(),
                })
                .collect(),
            PortList::Mappings => self
                .container
                .iter()
                .flat_map(|c| c.port_mappings.iter().flatten())
                .map(|m| AppPort {
                    name: m.name.clone(),
                    declared: m.container_port,
                    service_port: m.service_port,
                    host: m.host_port,
                    protocol: m.protocol.clone(),
                })
                .collect(),
        }
    }
}

impl App {
    /// The id as a path.
    pub fn path(&self) -> PathId {
        PathId::parse(&self.id).unwrap_or_default()
    }

    /// The version as a time.
    pub fn version_millis(&self) -> Millis {
        Millis::parse(&self.version).unwrap_or_default()
    }

    /// The version of the last change that was not only a scale
    /// (instances of another config version are replaced on restart).
    pub fn config_version(&self) -> String {
        self.version_info
            .as_ref()
            .map(|v| v.last_config_change_at.clone())
            .unwrap_or_else(|| self.version.clone())
    }

    /// Whether `other` differs from `self` in more than `instances` (and
    /// version bookkeeping): such a change restarts the app.
    pub fn needs_restart(&self, other: &App) -> bool {
        let strip = |a: &App| App {
            instances: 0,
            version: String::new(),
            version_info: None,
            ..a.clone()
        };
        strip(self) != strip(other)
    }

    /// Service ports (portDefinitions' ports or portMappings' servicePorts).
    pub fn service_ports(&self) -> Vec<u32> {
        self.ports().iter().map(|p| p.service_port).collect()
    }

    /// Mutable references to every service port (to assign 0s).
    pub fn service_ports_mut(&mut self) -> Vec<&mut u32> {
        match self.port_list() {
            PortList::Definitions => self
                .port_definitions
                .iter_mut()
                .flatten()
                .map(|p| &mut p.port)
                .collect(),
            PortList::Mappings => self
                .container
                .iter_mut()
                .flat_map(|c| c.port_mappings.iter_mut().flatten())
                .map(|p| &mut p.service_port)
                .collect(),
        }
    }

    /// Whether the app is reached through host networking.
    pub fn host_networking(&self) -> bool {
        self.networks.iter().all(|n| n.mode == "host")
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
