//! ACCEPT and DECLINE: offers used or handed back, tasks and task groups
//! validated, authorized and sent to their agents.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_proto::internal::{RunTask, RunTaskGroup, master_message};
use agora_proto::operator;
use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState, task_status::Reason};

use super::operations::operation_update;
use super::{Master, Observation, Task};
use crate::allocator::MAX_FILTER;
use crate::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use crate::time::Time;
use crate::validation::{self};
use agora_proto::acl::Action;

/// Filters: the default `refuse_seconds` (Mesos' proto default).
const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

impl Master {
    /// ACCEPT (DECLINE is an ACCEPT without operations).
    /// DECLINE: each offer goes back with the filter on its own agent. As
    /// in Mesos, one call may name offers of many agents (a framework
    /// declines what it cannot use in one batch); offers that are unknown
    /// (rescinded meanwhile) or another framework's are skipped.
    pub(crate) fn decline(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        offer_ids: Vec<v1::OfferId>,
        filters: Option<v1::Filters>,
    ) {
        let filter = filter_duration(filters.as_ref(), self.config.allocation_interval);
        for id in &offer_ids {
            let oid = OfferId::from(id);
            if self
                .offers
                .get(&oid)
                .is_none_or(|o| &o.framework != framework)
            {
                continue;
            }
            if let Some(o) = self.take_offer(&oid) {
                self.metrics.offers_declined += 1;
                self.allocator
                    .recover(&o.agent, framework, &o.role, &o.resources, filter, now);
            }
        }
        self.allocation_requested = true;
    }

    pub(crate) fn accept(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<v1::offer::Operation>,
        filters: Option<v1::Filters>,
    ) {
        let filter = filter_duration(filters.as_ref(), self.config.allocation_interval);
        if operations.is_empty() {
            self.metrics.offers_declined += offer_ids.len() as u64;
        }
        // The offers: known, this framework's, one agent, no duplicates.
        let checked = self.check_offers(framework, &offer_ids, !operations.is_empty());
        if let Err(message) = checked {
            // Valid offers among them go back without a filter; tasks are dropped.
            for id in &offer_ids {
                let oid = OfferId::from(id);
                if self
                    .offers
                    .get(&oid)
                    .is_some_and(|o| &o.framework == framework)
                    && let Some(o) = self.take_offer(&oid)
                {
                    self.allocator.recover(
                        &o.agent,
                        &o.framework,
                        &o.role,
                        &o.resources,
                        None,
                        now,
                    );
                }
            }
            self.drop_launches(now, framework, &operations, Reason::InvalidOffers, &message);
            self.allocation_requested = true;
            return;
        }
        let Ok(Some((agent, role))) = checked else {
            return;
        };
        let mut available = Resources::new();
        for id in &offer_ids {
            if let Some(o) = self.take_offer(&OfferId::from(id)) {
                available += &o.resources;
                if !operations.is_empty() {
                    self.observe(Observation::OfferToAccept, now.since(o.created));
                }
            }
        }
        for op in operations {
            use v1::offer::operation::Type as Op;
            match op.r#type() {
                Op::Launch => {
                    for task in op.launch.map(|l| l.task_infos).unwrap_or_default() {
                        self.launch(now, framework, &agent, &role, &mut available, task, None);
                    }
                }
                Op::LaunchGroup => {
                    if let Some(group) = op.launch_group {
                        self.launch_group(now, framework, &agent, &role, &mut available, group);
                    }
                }
                Op::Reserve | Op::Unreserve | Op::Create | Op::Destroy => {
                    self.accept_resource_op(framework, &agent, &role, &mut available, &op);
                }
                _ => {
                    if let Some(id) = op.id {
                        self.send(
                            framework,
                            operation_update(
                                id,
                                &agent,
                                v1::OperationState::OperationUnsupported,
                                Some("operation type is not supported by Agora".into()),
                            ),
                        );
                    }
                }
            }
        }
        // Whatever was not used is declined with the filter.
        self.allocator
            .recover(&agent, framework, &role, &available, filter, now);
        self.allocation_requested = true;
    }

    /// The agent and role of the offers an ACCEPT names (None for no
    /// offers and no operations), or why they cannot be accepted together.
    fn check_offers(
        &self,
        framework: &FrameworkId,
        offer_ids: &[v1::OfferId],
        operations: bool,
    ) -> Result<Option<(AgentId, String)>, String> {
        let mut seen = BTreeSet::new();
        let mut agent: Option<AgentId> = None;
        let mut role: Option<String> = None;
        for id in offer_ids {
            let oid = OfferId::from(id);
            if !seen.insert(oid.clone()) {
                return Err(format!("Duplicate offer {oid} in ACCEPT"));
            }
            let Some(o) = self.offers.get(&oid) else {
                return Err(format!("Offer {oid} is no longer valid"));
            };
            if &o.framework != framework {
                return Err(format!(
                    "Offer {oid} has invalid framework {} while framework {framework} is expected",
                    o.framework
                ));
            }
            if agent.as_ref().is_some_and(|a| a != &o.agent) {
                return Err("Aggregated offers must belong to one single agent".into());
            }
            if role.as_ref().is_some_and(|r| r != &o.role) {
                return Err("Aggregated offers must be allocated to the same role".into());
            }
            agent = Some(o.agent.clone());
            role = Some(o.role.clone());
        }
        if offer_ids.is_empty() && operations {
            return Err("No offers specified".into());
        }
        if let Some(a) = &agent
            && !self.agents.get(a).is_some_and(|a| a.is_connected())
        {
            return Err(format!("Agent {a} is not connected"));
        }
        Ok(agent.zip(role))
    }

    pub(crate) fn drop_launches(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        operations: &[v1::offer::Operation],
        reason: Reason,
        message: &str,
    ) {
        let caps = self
            .frameworks
            .get(framework)
            .map(|f| f.caps)
            .unwrap_or_default();
        let state = if caps.partition_aware {
            TaskState::TaskDropped
        } else {
            TaskState::TaskLost
        };
        for op in operations {
            let mut tasks: Vec<&v1::TaskInfo> = op
                .launch
                .as_ref()
                .map(|l| l.task_infos.iter().collect())
                .unwrap_or_default();
            if let Some(g) = &op.launch_group {
                tasks.extend(g.task_group.tasks.iter());
            }
            for task in tasks {
                self.metrics.tasks_dropped += 1;
                let agent = AgentId::from(&task.agent_id);
                let status =
                    self.master_status(now, &task.task_id, Some(&agent), state, reason, message);
                self.forward_status(framework, caps, status);
            }
        }
    }

    pub(crate) fn task_error(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        task: &v1::TaskInfo,
        reason: Reason,
        message: String,
    ) {
        self.metrics.tasks_error += 1;
        let caps = self
            .frameworks
            .get(framework)
            .map(|f| f.caps)
            .unwrap_or_default();
        let agent = AgentId::from(&task.agent_id);
        let status = self.master_status(
            now,
            &task.task_id,
            Some(&agent),
            TaskState::TaskError,
            reason,
            message,
        );
        self.forward_status(framework, caps, status);
    }

    /// Validates one task against the framework and what is left of the
    /// offer; on success launches it. `group_executor` is set for LAUNCH_GROUP.
    /// register_frameworks: every role of the framework must be allowed to
    /// its principal (Mesos' message on refusal).
    pub(crate) fn may_register(&self, info: &v1::FrameworkInfo) -> Result<(), String> {
        let roles = validation::framework_roles(info);
        let principal = info.principal.as_deref();
        if roles
            .iter()
            .all(|r| self.allows(Action::RegisterFrameworks, principal, Some(r)))
        {
            return Ok(());
        }
        let name = info
            .id
            .as_ref()
            .map_or_else(|| info.name.clone(), |id| id.value.clone());
        Err(format!(
            "Not authorized to register framework {name} with roles {{ {} }}",
            roles.join(", ")
        ))
    }

    /// run_tasks: the task's user (its command's, else its executor's, else
    /// the framework's) must be allowed to the framework's principal.
    pub(crate) fn may_run(
        &self,
        framework: &FrameworkId,
        task: &v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
    ) -> Result<(), String> {
        let Some(f) = self.frameworks.get(framework) else {
            return Ok(());
        };
        let executor = group_executor.or(task.executor.as_ref());
        let user = task
            .command
            .as_ref()
            .and_then(|c| c.user.as_deref())
            .or_else(|| executor.and_then(|e| e.command.as_ref()?.user.as_deref()))
            .unwrap_or(&f.info.user);
        let principal = f.info.principal.as_deref();
        if self.allows(Action::RunTasks, principal, Some(user)) {
            return Ok(());
        }
        // Mesos' message, its typo included.
        Err(format!(
            "Principal '{}' no authorized to launch task {} of framework {framework} under user '{user}'",
            principal.unwrap_or(""),
            task.task_id.value
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        agent: &AgentId,
        role: &str,
        available: &mut Resources,
        mut task: v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
    ) -> bool {
        let resources = match validation::validate_task(&task, framework.as_str()) {
            Ok(r) => r,
            Err(invalid) => {
                self.task_error(
                    now,
                    framework,
                    &task,
                    Reason::TaskInvalid,
                    invalid.to_string(),
                );
                return false;
            }
        };
        if let Err(message) = self.check_task_against(framework, agent, &task) {
            self.task_error(now, framework, &task, Reason::TaskInvalid, message);
            return false;
        }
        if let Err(message) = self.may_run(framework, &task, group_executor) {
            let reason = if group_executor.is_some() {
                Reason::TaskGroupUnauthorized
            } else {
                Reason::TaskUnauthorized
            };
            self.task_error(now, framework, &task, reason, message);
            return false;
        }
        // A new executor's resources come out of the offer as well.
        let executor = group_executor.cloned().or_else(|| task.executor.clone());
        let new_executor = match executor
            .as_ref()
            .map(|e| self.new_executor(framework, agent, e))
            .transpose()
        {
            Ok(n) => n.flatten(),
            Err(message) => {
                self.task_error(now, framework, &task, Reason::TaskInvalid, message);
                return false;
            }
        };
        let mut needed = resources.clone();
        if let Some((_, _, er)) = &new_executor {
            needed += er;
        }
        if !available.contains(&needed) {
            let message = format!("Task uses more resources {needed} than available {available}");
            self.task_error(now, framework, &task, Reason::TaskInvalid, message);
            return false;
        }
        *available -= &needed;
        let Some(f) = self.frameworks.get_mut(framework) else {
            return false;
        };
        let framework_info = f.info.clone();
        if let Some((eid, info, er)) = new_executor {
            f.executors
                .entry(agent.clone())
                .or_default()
                .insert(eid.clone(), info.clone());
            if let Some(a) = self.agents.get_mut(agent) {
                a.executors
                    .insert((framework.clone(), eid), (info, er, role.to_string()));
            }
        }
        let task_id = TaskId::from(&task.task_id);
        let proto = task_proto(
            &task,
            framework,
            agent,
            executor.as_ref(),
            &resources,
            role,
            &framework_info,
        );
        let f = self.frameworks.get_mut(framework).expect("checked above");
        f.tasks.insert(
            task_id.clone(),
            Task {
                proto: proto.clone(),
                agent: agent.clone(),
                role: role.to_string(),
                resources,
                recovered: false,
                launched: now,
                update_sent: None,
            },
        );
        if let Some(a) = self.agents.get_mut(agent) {
            a.tasks.insert((framework.clone(), task_id));
        }
        self.metrics.tasks_launched += 1;
        self.operator_event(|_| operator::Event {
            r#type: Some(operator::event::Type::TaskAdded as i32),
            task_added: Some(operator::event::TaskAdded { task: proto }),
            ..Default::default()
        });
        if group_executor.is_none() {
            task.agent_id = agent.to_proto();
            self.send_to_agent(
                agent,
                master_message::Message::RunTask(RunTask {
                    framework_info,
                    task,
                }),
            );
        }
        true
    }

    /// An executor a task brings, when it is new on the agent: its id,
    /// info and resources (None when it runs there already). An executor
    /// that differs from the one running, or has bad resources, is an
    /// error.
    fn new_executor(
        &self,
        framework: &FrameworkId,
        agent: &AgentId,
        e: &v1::ExecutorInfo,
    ) -> Result<Option<(ExecutorId, v1::ExecutorInfo, Resources)>, String> {
        let eid = ExecutorId::from(&e.executor_id);
        let known = self
            .frameworks
            .get(framework)
            .and_then(|f| f.executors.get(agent))
            .and_then(|m| m.get(&eid));
        match known {
            Some(existing)
                if existing.command != e.command || existing.resources != e.resources =>
            {
                Err(format!(
                    "ExecutorInfo for executor {eid} differs from the one already running on agent {agent}"
                ))
            }
            Some(_) => Ok(None),
            None => {
                let er = Resources::from_protos(&e.resources)
                    .map_err(|err| format!("invalid executor resources: {err}"))?
                    .unallocated();
                Ok(Some((eid, e.clone(), er)))
            }
        }
    }

    pub(crate) fn launch_group(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        agent: &AgentId,
        role: &str,
        available: &mut Resources,
        group: v1::offer::operation::LaunchGroup,
    ) {
        let mut executor = group.executor;
        if executor.framework_id.is_none() {
            executor.framework_id = Some(framework.to_proto());
        }
        let fail_all = |m: &mut Master, message: String| {
            for task in &group.task_group.tasks {
                m.task_error(
                    now,
                    framework,
                    task,
                    Reason::TaskGroupInvalid,
                    message.clone(),
                );
            }
        };
        if group.task_group.tasks.is_empty() {
            return;
        }
        if let Err(e) = validation::validate_executor(&executor, framework.as_str()) {
            fail_all(self, e.to_string());
            return;
        }
        if executor.r#type() == v1::executor_info::Type::Unknown {
            fail_all(
                self,
                "'ExecutorInfo.type' must be DEFAULT or CUSTOM for LAUNCH_GROUP".into(),
            );
            return;
        }
        let mut ids = BTreeSet::new();
        for t in &group.task_group.tasks {
            if t.executor.is_some() {
                fail_all(
                    self,
                    format!(
                        "Task {} in a task group must not have an ExecutorInfo",
                        t.task_id.value
                    ),
                );
                return;
            }
            if !ids.insert(t.task_id.value.clone()) {
                fail_all(
                    self,
                    format!("Task group has duplicate task id {}", t.task_id.value),
                );
                return;
            }
        }
        // All or nothing: check the whole group against a copy of the offer.
        let mut trial = available.clone();
        let mut launched = Vec::new();
        let framework_info = self
            .frameworks
            .get(framework)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        for t in &group.task_group.tasks {
            let mut t = t.clone();
            t.executor = None;
            if t.command.is_none() {
                t.command = Some(v1::CommandInfo {
                    value: Some(String::new()),
                    ..Default::default()
                });
            }
            let snapshot_out = self.out.len();
            if !self.launch(
                now,
                framework,
                agent,
                role,
                &mut trial,
                t.clone(),
                Some(&executor),
            ) {
                // Undo the tasks already added and fail the rest.
                self.out.truncate(snapshot_out);
                for done in &launched {
                    if let Some(f) = self.frameworks.get_mut(framework) {
                        f.tasks.remove(done);
                    }
                    if let Some(a) = self.agents.get_mut(agent) {
                        a.tasks.remove(&(framework.clone(), TaskId::clone(done)));
                    }
                }
                let message = format!(
                    "Task group is invalid: task {} could not be launched",
                    t.task_id.value
                );
                fail_all(self, message);
                return;
            }
            launched.push(TaskId::from(&t.task_id));
        }
        *available = trial;
        let mut tasks = group.task_group.tasks.clone();
        for t in &mut tasks {
            t.agent_id = agent.to_proto();
            t.executor = Some(executor.clone());
        }
        self.send_to_agent(
            agent,
            master_message::Message::RunTaskGroup(RunTaskGroup {
                framework_info,
                executor,
                task_group: v1::TaskGroupInfo { tasks },
            }),
        );
    }

    /// Checks that depend on the master's state: duplicate ids, the agent.
    pub(crate) fn check_task_against(
        &self,
        framework: &FrameworkId,
        agent: &AgentId,
        task: &v1::TaskInfo,
    ) -> Result<(), String> {
        let id = TaskId::from(&task.task_id);
        let f = self.frameworks.get(framework).ok_or("framework is gone")?;
        if f.tasks.contains_key(&id) || f.unreachable_tasks.contains_key(&id) {
            return Err(format!("Task has duplicate ID: {id}"));
        }
        if task.agent_id.value != agent.as_str() {
            return Err(format!(
                "Task uses agent ID {} but the offer is for agent {agent}",
                task.agent_id.value
            ));
        }
        Ok(())
    }

    // ------------------------------------------------------------ KILL, ACK
}

/// A task's resources as `Task.resources` shows them (with allocation info).
fn format_task_resources(resources: &Resources, role: &str) -> Vec<v1::Resource> {
    resources.allocated_to(role).to_protos()
}

/// The filter duration for a DECLINE or the unused part of an ACCEPT.
fn filter_duration(filters: Option<&v1::Filters>, interval: Duration) -> Option<Duration> {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    let d = if !secs.is_finite() || secs < 0.0 {
        DEFAULT_REFUSE
    } else if secs == 0.0 {
        return None;
    } else {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_FILTER)
            .min(MAX_FILTER)
    };
    Some(d.max(interval))
}

/// The master's record of a task being launched (TASK_STAGING).
fn task_proto(
    task: &v1::TaskInfo,
    framework: &FrameworkId,
    agent: &AgentId,
    executor: Option<&v1::ExecutorInfo>,
    resources: &Resources,
    role: &str,
    framework_info: &v1::FrameworkInfo,
) -> v1::Task {
    v1::Task {
        name: task.name.clone(),
        task_id: task.task_id.clone(),
        framework_id: framework.to_proto(),
        executor_id: executor.map(|e| e.executor_id.clone()),
        agent_id: agent.to_proto(),
        state: TaskState::TaskStaging as i32,
        resources: format_task_resources(resources, role),
        statuses: Vec::new(),
        status_update_state: None,
        status_update_uuid: None,
        labels: task.labels.clone(),
        discovery: task.discovery.clone(),
        container: task.container.clone(),
        health_check: task.health_check.clone(),
        kill_policy: task.kill_policy,
        user: task
            .command
            .as_ref()
            .and_then(|c| c.user.clone())
            .or_else(|| Some(framework_info.user.clone()).filter(|u| !u.is_empty())),
        limits: task.limits.clone(),
    }
}
