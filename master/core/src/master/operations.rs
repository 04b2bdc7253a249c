//! RESERVE, UNRESERVE, CREATE and DESTROY: dynamic reservations and
//! persistent volumes, from a framework's ACCEPT (on what it was offered)
//! or an operator's RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES
//! and DESTROY_VOLUMES (on what the agent has available).
//!
//! Each operation converts resources: `from` becomes `to` in the agent's
//! total, and the agent is sent its new total to checkpoint, so that the
//! reservations and volumes outlive agent restarts (it registers with them)
//! and master failovers. Validation follows Mesos' messages.

use std::path::{Component, Path};

use agora_proto::acl::Action;
use agora_proto::internal::{CheckpointResources, master_message};
use agora_proto::resources::{self, Resources};
use agora_proto::scheduler as sched;
use agora_proto::v1::{self, Resource};

use super::scheduler::bad;
use super::{CallError, Master};
use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::time::Time;

/// An operation on resources, as a framework or an operator asks it.
#[derive(Clone, Debug, PartialEq)]
pub enum ResourceOp {
    /// Reserve these resources (each with a new DYNAMIC reservation last).
    Reserve(Vec<Resource>),
    /// Give these reserved resources back to their previous role.
    Unreserve(Vec<Resource>),
    /// Make persistent volumes of reserved disk.
    Create(Vec<Resource>),
    /// Turn persistent volumes back into reserved disk (their data is deleted).
    Destroy(Vec<Resource>),
}

impl ResourceOp {
    /// The operation in a framework's ACCEPT, if it is one of these.
    pub fn from_offer_operation(op: &v1::offer::Operation) -> Option<ResourceOp> {
        use v1::offer::operation::Type as Op;
        Some(match op.r#type() {
            Op::Reserve => ResourceOp::Reserve(op.reserve.clone()?.resources),
            Op::Unreserve => ResourceOp::Unreserve(op.unreserve.clone()?.resources),
            Op::Create => ResourceOp::Create(op.create.clone()?.volumes),
            Op::Destroy => ResourceOp::Destroy(op.destroy.clone()?.volumes),
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            ResourceOp::Reserve(_) => "RESERVE",
            ResourceOp::Unreserve(_) => "UNRESERVE",
            ResourceOp::Create(_) => "CREATE",
            ResourceOp::Destroy(_) => "DESTROY",
        }
    }

    fn resources(&self) -> &[Resource] {
        match self {
            ResourceOp::Reserve(r)
            | ResourceOp::Unreserve(r)
            | ResourceOp::Create(r)
            | ResourceOp::Destroy(r) => r,
        }
    }
}

/// Why an operation was refused.
#[derive(Debug)]
enum Refused {
    Invalid(String),
    Unauthorized(CallError),
}

/// What an operation does: `from` becomes `to`.
struct Conversion {
    from: Resources,
    to: Resources,
}

impl Master {
    /// An operation in an ACCEPT, on what is left of the offers in
    /// `available`. The framework hears how it ended when it gave the
    /// operation an id (UPDATE_OPERATION_STATUS).
    pub(crate) fn accept_resource_op(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        role: &str,
        available: &mut Resources,
        op: &v1::offer::Operation,
    ) {
        let Some(resource_op) = ResourceOp::from_offer_operation(op) else {
            return;
        };
        let principal = self
            .frameworks
            .get(framework)
            .and_then(|f| f.info.principal.clone());
        let result = self
            .conversion(agent, &resource_op, principal.as_deref(), Some(role))
            .and_then(|c| {
                if available.contains(&c.from) {
                    Ok(c)
                } else {
                    Err(Refused::Invalid(format!(
                        "Invalid {} operation: {} are not in the offers ({available})",
                        resource_op.name(),
                        c.from
                    )))
                }
            });
        let (state, message) = match result {
            Ok(c) => {
                *available -= &c.from;
                *available += &c.to;
                self.allocator
                    .convert_allocated(agent, framework, role, &c.from, &c.to);
                self.apply_conversion(agent, &c);
                self.metrics.operations_finished += 1;
                (v1::OperationState::OperationFinished, None)
            }
            Err(Refused::Invalid(m)) => (v1::OperationState::OperationError, Some(m)),
            Err(Refused::Unauthorized(e)) => {
                (v1::OperationState::OperationError, Some(e.to_string()))
            }
        };
        if message.is_some() {
            self.metrics.operations_error += 1;
        }
        if let Some(id) = op.id.clone() {
            self.send(framework, operation_update(id, agent, state, message));
        }
    }

    /// An operator's RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES
    /// or DESTROY_VOLUMES: on the agent's available resources, after
    /// rescinding its offers when they hold what it needs.
    pub(crate) fn operator_resource_op(
        &mut self,
        now: Time,
        agent: &AgentId,
        op: &ResourceOp,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        let Some(a) = self.agents.get(agent) else {
            return Err(CallError::NotFound(format!("Unknown agent {agent}")));
        };
        if !a.is_connected() {
            return Err(CallError::Conflict(format!(
                "Agent {agent} is not connected"
            )));
        }
        let c = self
            .conversion(agent, op, principal, None)
            .map_err(|e| match e {
                Refused::Invalid(m) => bad(m),
                Refused::Unauthorized(e) => e,
            })?;
        let available = |m: &Master| {
            m.allocator
                .available(agent)
                .is_some_and(|r| r.contains(&c.from))
        };
        if !available(self) {
            let offers: Vec<OfferId> = self
                .agents
                .get(agent)
                .map(|a| a.offers.iter().cloned().collect())
                .unwrap_or_default();
            for o in offers {
                self.rescind_offer(now, &o, None);
            }
        }
        if !available(self) || !self.allocator.convert_available(agent, &c.from, &c.to) {
            return Err(CallError::Conflict(format!(
                "Invalid {} operation: {} are not available on agent {agent}",
                op.name(),
                c.from
            )));
        }
        self.apply_conversion(agent, &c);
        self.metrics.operations_finished += 1;
        self.allocation_requested = true;
        Ok(())
    }

    /// The agent's total after a conversion, checkpointed by the agent.
    fn apply_conversion(&mut self, agent: &AgentId, c: &Conversion) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        a.total -= &c.from;
        a.total += &c.to;
        a.info.resources = a.total.to_protos();
        let total = a.info.resources.clone();
        self.send_to_agent(
            agent,
            master_message::Message::CheckpointResources(CheckpointResources { total }),
        );
        self.emit_agent_added(agent);
    }

    /// Validates and authorizes an operation by `principal` (for a
    /// framework: on resources allocated to `role`).
    fn conversion(
        &self,
        agent: &AgentId,
        op: &ResourceOp,
        principal: Option<&str>,
        role: Option<&str>,
    ) -> Result<Conversion, Refused> {
        let name = op.name();
        let invalid = |m: String| Refused::Invalid(format!("Invalid {name} operation: {m}"));
        if op.resources().is_empty() {
            return Err(invalid("no resources".into()));
        }
        let given = Resources::from_protos(op.resources())
            .map_err(|e| invalid(e.to_string()))?
            .unallocated();
        let total = self
            .agents
            .get(agent)
            .map(|a| a.total.clone())
            .unwrap_or_default();
        let authorize = |action: Action, object: Option<&str>| {
            self.authorize(action, principal, object)
                .map_err(Refused::Unauthorized)
        };
        match op {
            ResourceOp::Reserve(_) => {
                for r in given.keys() {
                    let last = dynamic_reservation(r).ok_or_else(|| {
                        invalid(format!(
                            "resource {} must have a DYNAMIC reservation last",
                            r.name
                        ))
                    })?;
                    if resources::is_persistent_volume(r) {
                        return Err(invalid("a persistent volume cannot be reserved".into()));
                    }
                    let reserved_role = last.role.as_deref().unwrap_or("*");
                    if reserved_role == "*" {
                        return Err(invalid("resources cannot be reserved to role '*'".into()));
                    }
                    check_principal(principal, last.principal.as_deref(), "reserved resource")
                        .map_err(invalid)?;
                    if let Some(role) = role
                        && reserved_role != role
                    {
                        return Err(invalid(format!(
                            "reservation role '{reserved_role}' does not match the allocation role '{role}'"
                        )));
                    }
                    authorize(Action::ReserveResources, Some(reserved_role))?;
                }
                let from = given.map_identity(|r| {
                    r.reservations.pop();
                });
                Ok(Conversion { from, to: given })
            }
            ResourceOp::Unreserve(_) => {
                for r in given.keys() {
                    let last = dynamic_reservation(r).ok_or_else(|| {
                        invalid(format!("resource {} is not dynamically reserved", r.name))
                    })?;
                    if resources::is_persistent_volume(r) {
                        return Err(invalid(
                            "a persistent volume cannot be unreserved; DESTROY it first".into(),
                        ));
                    }
                    authorize(Action::UnreserveResources, last.principal.as_deref())?;
                }
                let to = given.map_identity(|r| {
                    r.reservations.pop();
                });
                Ok(Conversion { from: given, to })
            }
            ResourceOp::Create(_) => {
                let existing: Vec<String> = total
                    .persistent_volumes()
                    .keys()
                    .filter_map(persistence_id)
                    .collect();
                let mut ids = Vec::new();
                for r in given.keys() {
                    validate_volume(r).map_err(invalid)?;
                    let id = persistence_id(r).unwrap_or_default();
                    if existing.contains(&id) || ids.contains(&id) {
                        return Err(invalid(format!("persistence ID '{id}' already exists")));
                    }
                    ids.push(id);
                    check_principal(principal, creator(r), "persistent volume").map_err(invalid)?;
                    let reserved_role = r
                        .reservations
                        .last()
                        .and_then(|x| x.role.as_deref())
                        .unwrap_or("*");
                    if let Some(role) = role
                        && !agora_proto::roles::is_self_or_ancestor(reserved_role, role)
                    {
                        return Err(invalid(format!(
                            "the volume's role '{reserved_role}' is not the allocation role '{role}' or its ancestor"
                        )));
                    }
                    authorize(Action::CreateVolumes, Some(reserved_role))?;
                }
                let from = given.map_identity(resources::without_volume);
                Ok(Conversion { from, to: given })
            }
            ResourceOp::Destroy(_) => {
                for r in given.keys() {
                    let id = persistence_id(r).ok_or_else(|| {
                        invalid(format!("resource {} is not a persistent volume", r.name))
                    })?;
                    if !total.persistent_volumes().keys().any(|v| v == r) {
                        return Err(invalid(format!(
                            "persistent volume '{id}' does not exist on agent {agent}"
                        )));
                    }
                    if let Some(task) = self.task_using_volume(agent, &id) {
                        return Err(invalid(format!(
                            "persistent volume '{id}' is in use by task {task}"
                        )));
                    }
                    authorize(Action::DestroyVolumes, creator(r))?;
                }
                let to = given.map_identity(resources::without_volume);
                Ok(Conversion { from: given, to })
            }
        }
    }

    /// A task on the agent whose resources include the volume `id`.
    fn task_using_volume(&self, agent: &AgentId, id: &str) -> Option<String> {
        let a = self.agents.get(agent)?;
        a.tasks.iter().find_map(|(fw, t)| {
            let task = self.frameworks.get(fw)?.tasks.get(t)?;
            task.resources
                .persistent_volumes()
                .keys()
                .any(|v| persistence_id(v).as_deref() == Some(id))
                .then(|| t.to_string())
        })
    }
}

/// The resource's last reservation, when it is DYNAMIC.
fn dynamic_reservation(r: &Resource) -> Option<&v1::resource::ReservationInfo> {
    resources::is_dynamically_reserved(r)
        .then(|| r.reservations.last())
        .flatten()
}

/// A persistent volume's id.
fn persistence_id(r: &Resource) -> Option<String> {
    Some(r.disk.as_ref()?.persistence.as_ref()?.id.clone())
}

/// The principal that created a persistent volume.
fn creator(r: &Resource) -> Option<&str> {
    r.disk.as_ref()?.persistence.as_ref()?.principal.as_deref()
}

/// An authenticated caller may only reserve or create in its own name.
fn check_principal(caller: Option<&str>, given: Option<&str>, what: &str) -> Result<(), String> {
    match caller {
        Some(p) if given != Some(p) => Err(format!(
            "the authenticated principal '{p}' does not match the {what}'s principal '{}'",
            given.unwrap_or("")
        )),
        _ => Ok(()),
    }
}

/// A persistent volume to create: disk, reserved, with an id and a
/// relative container path that stays in the sandbox.
fn validate_volume(r: &Resource) -> Result<(), String> {
    let Some(disk) = &r.disk else {
        return Err(format!("resource {} has no disk info", r.name));
    };
    if r.name != "disk" {
        return Err(format!(
            "only disk can be a persistent volume, not {}",
            r.name
        ));
    }
    let Some(persistence) = &disk.persistence else {
        return Err("a volume needs 'disk.persistence'".into());
    };
    agora_proto::ids::validate(&persistence.id).map_err(|e| format!("persistence ID: {e}"))?;
    if r.reservations.is_empty() {
        return Err("persistent volumes cannot be created from unreserved resources".into());
    }
    let Some(volume) = &disk.volume else {
        return Err("a persistent volume needs 'disk.volume'".into());
    };
    if volume.host_path.is_some() {
        return Err("a persistent volume must not have a host_path".into());
    }
    let path = Path::new(&volume.container_path);
    if volume.container_path.is_empty()
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "container_path '{}' must be relative and stay in the sandbox",
            volume.container_path
        ));
    }
    Ok(())
}

/// UPDATE_OPERATION_STATUS for an operation with an id.
pub(crate) fn operation_update(
    id: v1::OperationId,
    agent: &AgentId,
    state: v1::OperationState,
    message: Option<String>,
) -> sched::Event {
    sched::Event {
        r#type: Some(sched::event::Type::UpdateOperationStatus as i32),
        update_operation_status: Some(sched::event::UpdateOperationStatus {
            status: v1::OperationStatus {
                operation_id: Some(id),
                state: state as i32,
                message,
                agent_id: Some(agent.to_proto()),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}
