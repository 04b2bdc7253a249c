//! Operator API calls that change state: TEARDOWN, UPDATE_WEIGHTS,
//! MARK_AGENT_GONE, DEACTIVATE_AGENT, REACTIVATE_AGENT and DRAIN_AGENT
//! (`drain.rs`).

use agora_proto::operator;
use agora_proto::v1::{TaskState, task_status::Reason};

use super::scheduler::bad;
use super::{CallError, Master, OperatorCall};
use crate::ids::{AgentId, FrameworkId, OfferId, TaskId};
use crate::time::Time;
use agora_proto::acl::Action;

impl Master {
    pub(crate) fn operator_call(
        &mut self,
        now: Time,
        call: OperatorCall,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        match &call {
            OperatorCall::Teardown(id) => {
                let target = self
                    .frameworks
                    .get(id)
                    .and_then(|f| f.info.principal.clone());
                self.authorize(Action::TeardownFrameworks, principal, target.as_deref())?;
            }
            OperatorCall::UpdateWeights(weights) => {
                for (role, _) in weights {
                    self.authorize(Action::UpdateWeights, principal, Some(role))?;
                }
            }
            OperatorCall::MarkAgentGone(_) => {
                self.authorize(Action::MarkAgentsGone, principal, None)?;
            }
            OperatorCall::DeactivateAgent(_) => {
                self.authorize(Action::DeactivateAgents, principal, None)?;
            }
            OperatorCall::ReactivateAgent(_) => {
                self.authorize(Action::ReactivateAgents, principal, None)?;
            }
            OperatorCall::DrainAgent { .. } => {
                self.authorize(Action::DrainAgents, principal, None)?;
            }
            OperatorCall::UpdateMaintenanceSchedule(_) => {
                self.authorize(Action::UpdateMaintenanceSchedules, principal, None)?;
            }
            OperatorCall::StartMaintenance(_) => {
                self.authorize(Action::StartMaintenances, principal, None)?;
            }
            OperatorCall::StopMaintenance(_) => {
                self.authorize(Action::StopMaintenances, principal, None)?;
            }
            // Per role, in `update_quota`; per resource, in `conversion`.
            OperatorCall::UpdateQuota { .. } | OperatorCall::Resources { .. } => {}
        }
        match call {
            OperatorCall::Teardown(id) => {
                if !self.frameworks.contains_key(&id) {
                    return Err(bad(format!("No framework found with specified ID {id}")));
                }
                self.remove_framework(now, &id, "torn down by an operator");
                Ok(())
            }
            OperatorCall::UpdateWeights(weights) => {
                for (role, _) in &weights {
                    agora_proto::roles::validate(role).map_err(|e| bad(e.to_string()))?;
                }
                for (role, w) in weights {
                    if !(w > 0.0 && w.is_finite()) {
                        return Err(bad(format!("weight of role '{role}' must be positive")));
                    }
                    self.allocator.set_weight(&role, w);
                }
                self.registry_dirty = true;
                self.allocation_requested = true;
                Ok(())
            }
            OperatorCall::MarkAgentGone(id) => {
                if !self.agents.contains_key(&id) && !self.unreachable_agents.contains_key(&id) {
                    return Err(CallError::NotFound(format!("Agent {id} not found")));
                }
                self.mark_gone(now, &id);
                Ok(())
            }
            OperatorCall::DeactivateAgent(id) => {
                let a = self
                    .agents
                    .get_mut(&id)
                    .ok_or_else(|| CallError::NotFound(format!("Agent {id} not found")))?;
                a.deactivated = true;
                let offers: Vec<OfferId> = a.offers.iter().cloned().collect();
                self.allocator.deactivate_agent(&id);
                for o in offers {
                    self.rescind_offer(now, &o, None);
                }
                self.emit_agent_added(&id);
                Ok(())
            }
            OperatorCall::ReactivateAgent(id) => {
                let a = self
                    .agents
                    .get_mut(&id)
                    .ok_or_else(|| CallError::NotFound(format!("Agent {id} not found")))?;
                if !a.deactivated {
                    return Err(bad(format!("Agent {id} is not deactivated")));
                }
                a.deactivated = false;
                if a.is_connected() {
                    self.allocator.activate_agent(&id);
                }
                self.end_drain(&id);
                self.allocation_requested = true;
                self.emit_agent_added(&id);
                Ok(())
            }
            OperatorCall::DrainAgent {
                agent,
                max_grace_period,
                mark_gone,
            } => self.drain_agent(now, &agent, max_grace_period, mark_gone),
            OperatorCall::UpdateMaintenanceSchedule(schedule) => {
                self.update_maintenance_schedule(now, schedule)
            }
            OperatorCall::StartMaintenance(machines) => self.start_maintenance(now, &machines),
            OperatorCall::StopMaintenance(machines) => self.stop_maintenance(&machines),
            OperatorCall::UpdateQuota { force, configs } => {
                self.update_quota(&configs, force, principal)
            }
            OperatorCall::Resources { agent, op } => {
                self.operator_resource_op(now, &agent, &op, principal)
            }
        }
    }

    pub(crate) fn mark_gone(&mut self, now: Time, id: &AgentId) {
        self.remove_by_operator(now, id, true, "Agent was marked gone by an operator");
    }

    /// Removes an agent for an operator: it is shut down, its tasks end as
    /// TASK_GONE_BY_OPERATOR (TASK_LOST for legacy frameworks) with
    /// `message`; when `gone`, it is never admitted again (else it may come
    /// back, e.g. after maintenance).
    pub(crate) fn remove_by_operator(
        &mut self,
        now: Time,
        id: &AgentId,
        gone: bool,
        message: &str,
    ) {
        if gone {
            self.gone_agents.insert(id.clone());
            self.overlay_removed(id);
        }
        self.registry_dirty = true;
        self.rescind_inverse_offers(id);
        if let Some(conn) = self.agents.get(id).and_then(|a| a.conn) {
            self.shutdown_agent_conn(conn, &message.to_ascii_lowercase());
        }
        // Tasks on it end as TASK_GONE_BY_OPERATOR (TASK_LOST for legacy frameworks).
        let tasks: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(id)
            .map(|a| a.tasks.iter().cloned().collect())
            .unwrap_or_default();
        for (fw, t) in tasks {
            self.terminate_task(
                now,
                &fw,
                &t,
                TaskState::TaskGoneByOperator,
                Reason::AgentRemovedByOperator,
                message,
            );
        }
        let unreachable: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .values()
            .flat_map(|f| {
                f.unreachable_tasks
                    .values()
                    .filter(|t| &t.agent == id)
                    .map(|t| (f.id.clone(), TaskId::from(&t.proto.task_id)))
            })
            .collect();
        for (fw, t) in unreachable {
            self.terminate_task(
                now,
                &fw,
                &t,
                TaskState::TaskGoneByOperator,
                Reason::AgentRemovedByOperator,
                message,
            );
        }
        if let Some(a) = self.agents.remove(id) {
            if let Some(conn) = a.conn {
                self.conns.remove(&conn);
            }
            for o in a.offers {
                self.take_offer(&o);
            }
            self.allocator.remove_agent(id);
            let agent_id = id.to_proto();
            self.operator_event(|_| operator::Event {
                r#type: Some(operator::event::Type::AgentRemoved as i32),
                agent_removed: Some(operator::event::AgentRemoved { agent_id }),
                ..Default::default()
            });
        }
        self.unreachable_agents.remove(id);
        self.allocation_requested = true;
    }
}
