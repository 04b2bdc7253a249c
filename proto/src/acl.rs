//! Mesos ACLs (the local authorizer's `--acls` JSON) as data: parsed once,
//! then asked "may this principal do this action on this object?". Pure, so
//! the master core decides with it like with anything else.
//!
//! Semantics are Mesos': for the action's list, in file order, the first
//! ACL whose subject and object both *match* the request decides, by
//! whether both *allow* it; when none matches, `permissive` (default true)
//! decides. A request without a principal is the subject ANY, which only
//! ANY and NONE entities match. Unknown keys are ignored.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// The actions Agora authorizes, by their key in the ACL JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// SUBSCRIBE with a role (object: each role).
    RegisterFrameworks,
    /// LAUNCH a task as a unix user (object: the user).
    RunTasks,
    /// TEARDOWN another principal's framework (object: its principal).
    TeardownFrameworks,
    /// See a framework in state reads (object: FrameworkInfo.user).
    ViewFrameworks,
    /// See a task (object: its user).
    ViewTasks,
    /// See an executor (object: its user).
    ViewExecutors,
    /// Read a sandbox (object: the executor's user).
    AccessSandboxes,
    /// GET an authorizable endpoint (object: the path).
    GetEndpoints,
    /// UPDATE_WEIGHTS (object: each role).
    UpdateWeights,
    /// Read roles and weights (object: the role).
    ViewRoles,
    /// An agent registering (object: ANY).
    RegisterAgents,
    /// MARK_AGENT_GONE (object: ANY).
    MarkAgentsGone,
    /// DEACTIVATE_AGENT (object: ANY).
    DeactivateAgents,
    /// REACTIVATE_AGENT (object: ANY).
    ReactivateAgents,
    /// DRAIN_AGENT (object: ANY).
    DrainAgents,
    /// UPDATE_MAINTENANCE_SCHEDULE (object: ANY).
    UpdateMaintenanceSchedules,
    /// GET_MAINTENANCE_SCHEDULE (object: ANY).
    GetMaintenanceSchedules,
    /// START_MAINTENANCE (object: ANY).
    StartMaintenances,
    /// STOP_MAINTENANCE (object: ANY).
    StopMaintenances,
    /// GET_MAINTENANCE_STATUS (object: ANY).
    GetMaintenanceStatuses,
    /// UPDATE_QUOTA (object: each role).
    UpdateQuotas,
    /// GET_QUOTA (object: each role shown).
    GetQuotas,
    /// RESERVE, RESERVE_RESOURCES (object: the reservation's role).
    ReserveResources,
    /// UNRESERVE, UNRESERVE_RESOURCES (object: the principal that reserved).
    UnreserveResources,
    /// CREATE, CREATE_VOLUMES (object: the volume's role).
    CreateVolumes,
    /// DESTROY, DESTROY_VOLUMES (object: the principal that created it).
    DestroyVolumes,
}

impl Action {
    /// Every action, for listing and parsing.
    pub const ALL: [Action; 26] = [
        Action::RegisterFrameworks,
        Action::RunTasks,
        Action::TeardownFrameworks,
        Action::ViewFrameworks,
        Action::ViewTasks,
        Action::ViewExecutors,
        Action::AccessSandboxes,
        Action::GetEndpoints,
        Action::UpdateWeights,
        Action::ViewRoles,
        Action::RegisterAgents,
        Action::MarkAgentsGone,
        Action::DeactivateAgents,
        Action::ReactivateAgents,
        Action::DrainAgents,
        Action::UpdateMaintenanceSchedules,
        Action::GetMaintenanceSchedules,
        Action::StartMaintenances,
        Action::StopMaintenances,
        Action::GetMaintenanceStatuses,
        Action::UpdateQuotas,
        Action::GetQuotas,
        Action::ReserveResources,
        Action::UnreserveResources,
        Action::CreateVolumes,
        Action::DestroyVolumes,
    ];

    /// The key of its list in the ACL JSON.
    pub fn key(self) -> &'static str {
        match self {
            Action::RegisterFrameworks => "register_frameworks",
            Action::RunTasks => "run_tasks",
            Action::TeardownFrameworks => "teardown_frameworks",
            Action::ViewFrameworks => "view_frameworks",
            Action::ViewTasks => "view_tasks",
            Action::ViewExecutors => "view_executors",
            Action::AccessSandboxes => "access_sandboxes",
            Action::GetEndpoints => "get_endpoints",
            Action::UpdateWeights => "update_weights",
            Action::ViewRoles => "view_roles",
            Action::RegisterAgents => "register_agents",
            Action::MarkAgentsGone => "mark_agents_gone",
            Action::DeactivateAgents => "deactivate_agents",
            Action::ReactivateAgents => "reactivate_agents",
            Action::DrainAgents => "drain_agents",
            Action::UpdateMaintenanceSchedules => "update_maintenance_schedules",
            Action::GetMaintenanceSchedules => "get_maintenance_schedules",
            Action::StartMaintenances => "start_maintenances",
            Action::StopMaintenances => "stop_maintenances",
            Action::GetMaintenanceStatuses => "get_maintenance_statuses",
            Action::UpdateQuotas => "update_quotas",
            Action::GetQuotas => "get_quotas",
            Action::ReserveResources => "reserve_resources",
            Action::UnreserveResources => "unreserve_resources",
            Action::CreateVolumes => "create_volumes",
            Action::DestroyVolumes => "destroy_volumes",
        }
    }

    /// The name of the object field in each of its ACLs.
    pub fn object_field(self) -> &'static str {
        match self {
            Action::RegisterFrameworks
            | Action::UpdateWeights
            | Action::ViewRoles
            | Action::UpdateQuotas
            | Action::GetQuotas
            | Action::ReserveResources
            | Action::CreateVolumes => "roles",
            Action::UnreserveResources => "reserver_principals",
            Action::DestroyVolumes => "creator_principals",
            Action::RunTasks
            | Action::ViewFrameworks
            | Action::ViewTasks
            | Action::ViewExecutors
            | Action::AccessSandboxes => "users",
            Action::TeardownFrameworks => "framework_principals",
            Action::GetEndpoints => "paths",
            Action::RegisterAgents
            | Action::MarkAgentsGone
            | Action::DeactivateAgents
            | Action::ReactivateAgents
            | Action::DrainAgents => "agents",
            Action::UpdateMaintenanceSchedules
            | Action::GetMaintenanceSchedules
            | Action::StartMaintenances
            | Action::StopMaintenances
            | Action::GetMaintenanceStatuses => "machines",
        }
    }

    /// Whether the object is a role (`eng/%` matches roles nested in `eng`).
    fn on_roles(self) -> bool {
        self.object_field() == "roles"
    }

    /// Whether the object may only be ANY or NONE (Mesos validates it).
    fn implicit_object(self) -> bool {
        matches!(self.object_field(), "agents" | "machines")
    }
}

/// An ACL entity: who or what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    /// Anything (and unauthenticated requests).
    Any,
    /// Nothing: matches everything but allows nothing.
    None,
    /// These values.
    Some(Vec<String>),
}

#[derive(Deserialize)]
struct RawEntity {
    #[serde(default)]
    values: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl RawEntity {
    fn entity(self, field: &str) -> Result<Entity, AclError> {
        match self.kind.as_deref() {
            Some("ANY") => Ok(Entity::Any),
            Some("NONE") => Ok(Entity::None),
            Some("SOME") | None => Ok(Entity::Some(self.values)),
            Some(other) => Err(AclError::Invalid(format!(
                "'{field}': type must be ANY, NONE or SOME, not '{other}'"
            ))),
        }
    }
}

/// One rule of an action's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// Whom it is about.
    pub principals: Entity,
    /// What it is about.
    pub object: Entity,
}

/// What can be wrong with an ACL file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    /// Not JSON of the expected shape.
    #[error("not Mesos ACLs: {0}")]
    Malformed(String),
    /// Well-formed but not acceptable (Mesos refuses to start on it).
    #[error("invalid ACLs: {0}")]
    Invalid(String),
}

/// A request's side of an entity: a value, or unspecified (ANY).
type Request<'a> = Option<&'a str>;

/// The ACLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acls {
    /// The answer when no ACL matches.
    pub permissive: bool,
    rules: HashMap<Action, Vec<Acl>>,
}

impl Default for Acls {
    /// No ACL at all, permissive: everything is allowed.
    fn default() -> Acls {
        Acls {
            permissive: true,
            rules: HashMap::new(),
        }
    }
}

impl Acls {
    /// Parses Mesos' ACL JSON.
    pub fn parse(json: &[u8]) -> Result<Acls, AclError> {
        let doc: serde_json::Map<String, Value> =
            serde_json::from_slice(json).map_err(|e| AclError::Malformed(e.to_string()))?;
        let permissive = match doc.get("permissive") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(AclError::Malformed(format!(
                    "'permissive' must be true or false, not {other}"
                )));
            }
        };
        let mut rules = HashMap::new();
        for action in Action::ALL {
            let Some(list) = doc.get(action.key()) else {
                continue;
            };
            let list = list.as_array().ok_or_else(|| {
                AclError::Malformed(format!("'{}' must be a list of ACLs", action.key()))
            })?;
            let mut acls = Vec::with_capacity(list.len());
            for (i, acl) in list.iter().enumerate() {
                let field = |name: &str| -> Result<Entity, AclError> {
                    let path = format!("{}[{i}].{name}", action.key());
                    match acl.get(name) {
                        None => Ok(Entity::Any),
                        Some(v) => serde_json::from_value::<RawEntity>(v.clone())
                            .map_err(|e| AclError::Malformed(format!("'{path}': {e}")))?
                            .entity(&path),
                    }
                };
                let object = field(action.object_field())?;
                if action.implicit_object() && matches!(object, Entity::Some(_)) {
                    return Err(AclError::Invalid(format!(
                        "'{}[{i}].{}' must be ANY or NONE",
                        action.key(),
                        action.object_field()
                    )));
                }
                acls.push(Acl {
                    principals: field("principals")?,
                    object,
                });
            }
            rules.insert(action, acls);
        }
        Ok(Acls { permissive, rules })
    }

    /// Whether every request of `action` is allowed without looking (no
    /// ACL for it, and permissive).
    pub fn is_open(&self, action: Action) -> bool {
        self.permissive && self.rules.get(&action).is_none_or(Vec::is_empty)
    }

    /// Whether `principal` (None: unauthenticated) may do `action` on
    /// `object` (None: unspecified).
    pub fn allows(&self, action: Action, principal: Request<'_>, object: Request<'_>) -> bool {
        let roles = action.on_roles();
        for acl in self.rules.get(&action).into_iter().flatten() {
            if matches(&acl.principals, principal, false) && matches(&acl.object, object, roles) {
                return allowed(&acl.principals, principal, false)
                    && allowed(&acl.object, object, roles);
            }
        }
        self.permissive
    }
}

/// Whether the ACL's `values` name `value`; a single `x/%` names the roles
/// strictly nested in `x` when `roles`.
fn names(values: &[String], value: &str, roles: bool) -> bool {
    if roles
        && let [only] = values
        && let Some(parent) = only.strip_suffix("/%")
    {
        return value
            .strip_prefix(parent)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1);
    }
    values.iter().any(|v| v == value)
}

fn matches(acl: &Entity, request: Request<'_>, roles: bool) -> bool {
    match (request, acl) {
        (_, Entity::Any | Entity::None) => true,
        (Some(v), Entity::Some(values)) => names(values, v, roles),
        (None, Entity::Some(_)) => false,
    }
}

fn allowed(acl: &Entity, request: Request<'_>, roles: bool) -> bool {
    match (request, acl) {
        (_, Entity::Any) => true,
        (_, Entity::None) => false,
        (Some(v), Entity::Some(values)) => names(values, v, roles),
        (None, Entity::Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"permissive": false,
     "register_frameworks": [{"principals":{"values":["fw1"]},"roles":{"values":["analytics"]}},
                             {"principals":{"values":["eng"]},"roles":{"values":["eng/%"]}}],
     "run_tasks": [{"principals":{"values":["fw1"]},"users":{"values":["nobody"]}}],
     "teardown_frameworks": [{"principals":{"values":["ops"]},"framework_principals":{"type":"ANY"}}],
     "view_frameworks": [{"principals":{"type":"ANY"},"users":{"type":"ANY"}}],
     "set_quotas": [{"principals":{"type":"ANY"}}],
     "deactivate_agents": [{"principals":{"type":"NONE"},"agents":{"type":"ANY"}}]}"#;

    #[test]
    fn the_mesos_example_decides_as_mesos_does() {
        let acls = Acls::parse(EXAMPLE.as_bytes()).unwrap();
        use Action::*;
        assert!(acls.allows(RegisterFrameworks, Some("fw1"), Some("analytics")));
        assert!(!acls.allows(RegisterFrameworks, Some("fw1"), Some("web")));
        assert!(!acls.allows(RegisterFrameworks, Some("fw2"), Some("analytics")));
        // Unauthenticated requests match only ANY/NONE entities: not permissive.
        assert!(!acls.allows(RegisterFrameworks, None, Some("analytics")));
        assert!(acls.allows(RunTasks, Some("fw1"), Some("nobody")));
        assert!(!acls.allows(RunTasks, Some("fw1"), Some("root")));
        assert!(acls.allows(TeardownFrameworks, Some("ops"), Some("fw1")));
        assert!(!acls.allows(TeardownFrameworks, Some("fw1"), Some("fw1")));
        // ANY principals include unauthenticated requests.
        assert!(acls.allows(ViewFrameworks, None, Some("root")));
        // NONE matches and denies.
        assert!(!acls.allows(DeactivateAgents, Some("ops"), None));
        // Nothing said about view_tasks: permissive (false).
        assert!(!acls.allows(ViewTasks, Some("ops"), Some("root")));
    }

    #[test]
    fn nested_roles_match_strictly_below_their_parent() {
        let acls = Acls::parse(EXAMPLE.as_bytes()).unwrap();
        let ok = |role| acls.allows(Action::RegisterFrameworks, Some("eng"), Some(role));
        assert!(ok("eng/dev") && ok("eng/dev/x"));
        assert!(!ok("eng") && !ok("engineering/x") && !ok("eng/"));
    }

    #[test]
    fn first_match_decides_and_permissive_is_the_default() {
        let acls = Acls::parse(
            br#"{"run_tasks": [
                {"principals":{"values":["a"]},"users":{"type":"NONE"}},
                {"principals":{"type":"ANY"},"users":{"type":"ANY"}}]}"#,
        )
        .unwrap();
        assert!(acls.permissive);
        assert!(!acls.allows(Action::RunTasks, Some("a"), Some("root")));
        assert!(acls.allows(Action::RunTasks, Some("b"), Some("root")));
        assert!(Acls::default().allows(Action::RunTasks, None, Some("root")));
    }

    #[test]
    fn bad_acls_are_refused_with_the_place() {
        for (bad, want) in [
            ("[]", "not Mesos ACLs"),
            (r#"{"permissive": "no"}"#, "permissive"),
            (r#"{"run_tasks": {}}"#, "run_tasks"),
            (
                r#"{"run_tasks": [{"users": {"type": "SOMETIMES"}}]}"#,
                "run_tasks[0].users",
            ),
            (
                r#"{"register_agents": [{"agents": {"values": ["a1"]}}]}"#,
                "ANY or NONE",
            ),
        ] {
            let e = Acls::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
