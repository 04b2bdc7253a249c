//! Scheduler API calls: SUBSCRIBE, ACCEPT, DECLINE, KILL, ACKNOWLEDGE,
//! RECONCILE and the rest, with Mesos' validation and answers.

use std::collections::BTreeSet;
use std::time::Duration;

use agora_proto::internal::{
    AcknowledgeUpdate, FrameworkToExecutor, KillTask, RunTask, RunTaskGroup, master_message,
};
use agora_proto::resources::Resources;
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use agora_proto::{operator, scheduler as sched};
use sched::call::Type as CallType;

use super::{AgentState, CallError, Framework, Master, OperatorCall, Output, Task};
use crate::allocator::MAX_FILTER;
use crate::ids::{AgentId, ExecutorId, FrameworkId, OfferId, RequestId, StreamId, TaskId};
use crate::time::Time;
use crate::validation::{self, Capabilities};
use agora_proto::acl::Action;

/// Filters: the default `refuse_seconds` (Mesos' proto default).
const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

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

/// Mesos' words when the authenticated principal is not the framework's.
fn principal_mismatch(authenticated: &str, declared: &str) -> String {
    format!(
        "Failed to validate scheduler::Call: Authenticated principal '{authenticated}' does not match principal '{declared}' set in `FrameworkInfo`"
    )
}

fn bad(message: impl Into<String>) -> CallError {
    CallError::BadRequest(message.into())
}

impl Master {
    // --------------------------------------------------------------- SUBSCRIBE

    pub(crate) fn subscribe(
        &mut self,
        now: Time,
        request: RequestId,
        stream: StreamId,
        call: sched::Call,
        principal: Option<String>,
    ) {
        let Some(subscribe) = call.subscribe.clone() else {
            self.out.push(Output::Reply {
                request,
                result: Err(bad("Expecting 'subscribe' to be present")),
            });
            return;
        };
        let mut info = subscribe.framework_info;
        match (&call.framework_id, &info.id) {
            (Some(a), Some(b)) if a.value != b.value => {
                self.out.push(Output::Reply {
                    request,
                    result: Err(bad(
                        "'framework_id' differs from 'subscribe.framework_info.id'",
                    )),
                });
                return;
            }
            (Some(a), None) => info.id = Some(a.clone()),
            _ => {}
        }
        // An authenticated framework is who it authenticated as (as in Mesos).
        if let Some(p) = principal {
            match &info.principal {
                Some(q) if *q != p => {
                    self.out.push(Output::Reply {
                        request,
                        result: Err(bad(principal_mismatch(&p, q))),
                    });
                    return;
                }
                _ => info.principal = Some(p),
            }
        }
        // From here on the answer is 200 with a stream; problems are ERROR events.
        self.out.push(Output::Reply {
            request,
            result: Ok(()),
        });
        if let Err(message) =
            validation::validate_framework_info(&info, self.config.roles.as_deref())
        {
            self.stream_error(&stream, &message);
            return;
        }
        if let Err(message) = self.may_register(&info) {
            self.stream_error(&stream, &message);
            return;
        }
        if let Some(id) = &info.id {
            let id = FrameworkId::from(id);
            if self.removed_frameworks.contains(&id) {
                self.stream_error(&stream, super::FRAMEWORK_REMOVED);
                return;
            }
        }
        let caps = Capabilities::of(&info);
        let roles = validation::framework_roles(&info);
        let suppressed: BTreeSet<String> = subscribe.suppressed_roles.iter().cloned().collect();
        let id = match &info.id {
            Some(id) => FrameworkId::from(id),
            None => {
                let id = FrameworkId::new(format!("{}-{:04}", self.info.id, self.next_framework));
                self.next_framework += 1;
                info.id = Some(id.to_proto());
                id
            }
        };
        let existing = self.frameworks.contains_key(&id);
        if existing {
            // Failover: a new subscription replaces the old one.
            let f = self.frameworks.get_mut(&id).expect("checked above");
            if let Some(old) = f.stream.take() {
                self.streams.remove(&old);
                self.out.push(Output::Event {
                    stream: old.clone(),
                    event: Box::new(error_event("Framework failed over")),
                });
                self.out.push(Output::CloseStream { stream: old });
            }
            let f = self.frameworks.get_mut(&id).expect("checked above");
            // user and checkpoint cannot change on re-subscription.
            if !f.recovered {
                info.user = f.info.user.clone();
                info.checkpoint = f.info.checkpoint;
            }
            let offers: Vec<OfferId> = f.offers.iter().cloned().collect();
            for offer in offers {
                self.rescind_offer(now, &offer, None);
            }
            let f = self.frameworks.get_mut(&id).expect("checked above");
            f.info = info.clone();
            f.caps = caps;
            f.roles = roles.clone();
            f.stream = Some(stream.clone());
            f.active = true;
            f.recovered = false;
            f.failover_deadline = None;
            f.reregistered_time = Some(now);
            f.suppressed_roles = suppressed.clone();
            self.allocator
                .update_framework(&id, &roles, caps.gpu_resources);
            self.allocator.revive(&id, None);
            if !suppressed.is_empty() {
                let s: Vec<String> = suppressed.iter().cloned().collect();
                self.allocator.suppress(&id, Some(&s));
            }
            self.allocator.activate_framework(&id);
        } else {
            let mut framework = Framework::new(id.clone(), &info, Some(stream.clone()), now);
            framework.suppressed_roles = suppressed.clone();
            self.frameworks.insert(id.clone(), framework);
            let s: Vec<String> = suppressed.iter().cloned().collect();
            self.allocator
                .add_framework(id.clone(), &roles, true, caps.gpu_resources, &s);
        }
        self.streams.insert(stream.clone(), id.clone());
        self.out.push(Output::Event {
            stream: stream.clone(),
            event: Box::new(sched::Event {
                r#type: Some(sched::event::Type::Subscribed as i32),
                subscribed: Some(sched::event::Subscribed {
                    framework_id: id.to_proto(),
                    heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
                    master_info: Some(self.info.clone()),
                }),
                ..Default::default()
            }),
        });
        self.out.push(Output::Event {
            stream,
            event: Box::new(sched::Event {
                r#type: Some(sched::event::Type::Heartbeat as i32),
                ..Default::default()
            }),
        });
        let fid = id.clone();
        if existing {
            self.emit_framework_updated(&fid);
        } else {
            self.operator_event(|m| operator::Event {
                r#type: Some(operator::event::Type::FrameworkAdded as i32),
                framework_added: Some(operator::event::FrameworkAdded {
                    framework: m.framework_view(m.frameworks.get(&fid).expect("just added")),
                }),
                ..Default::default()
            });
        }
        self.allocation_requested = true;
    }

    fn stream_error(&mut self, stream: &StreamId, message: &str) {
        self.out.push(Output::Event {
            stream: stream.clone(),
            event: Box::new(error_event(message)),
        });
        self.out.push(Output::CloseStream {
            stream: stream.clone(),
        });
    }

    pub(crate) fn stream_closed(&mut self, now: Time, stream: &StreamId) {
        if let Some(id) = self.streams.remove(stream) {
            let current = self.frameworks.get(&id).and_then(|f| f.stream.as_ref()) == Some(stream);
            if current {
                self.disconnect_framework(now, &id);
            }
        }
    }

    // ------------------------------------------------------------ other calls

    pub(crate) fn call(
        &mut self,
        now: Time,
        stream: Option<StreamId>,
        call: sched::Call,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        let kind = call.r#type();
        if kind == CallType::Unknown {
            return Err(CallError::NotImplemented("Received 'UNKNOWN' call".into()));
        }
        if kind == CallType::Subscribe {
            return Err(bad(
                "SUBSCRIBE must be sent without a Mesos-Stream-Id, on its own connection",
            ));
        }
        let framework_id = call
            .framework_id
            .as_ref()
            .map(FrameworkId::from)
            .ok_or_else(|| bad("Expecting 'framework_id' to be present"))?;
        check_payload(&call)?;
        let Some(framework) = self.frameworks.get(&framework_id) else {
            return Err(bad("Framework cannot be found"));
        };
        if let Some(p) = principal {
            let registered = framework.info.principal.as_deref().unwrap_or_default();
            if p != registered {
                return Err(bad(principal_mismatch(p, registered)));
            }
        }
        let Some(current) = &framework.stream else {
            return Err(CallError::Forbidden("Framework is not subscribed".into()));
        };
        match &stream {
            None => {
                return Err(bad(
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                ));
            }
            Some(s) if s != current => {
                return Err(bad(format!(
                    "The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"
                )));
            }
            Some(_) => {}
        }
        match kind {
            CallType::Teardown => {
                self.remove_framework(now, &framework_id, "framework asked to be torn down");
                Ok(())
            }
            CallType::Accept => {
                let accept = call.accept.unwrap_or_default();
                self.accept(
                    now,
                    &framework_id,
                    accept.offer_ids,
                    accept.operations,
                    accept.filters,
                );
                Ok(())
            }
            CallType::Decline => {
                let decline = call.decline.unwrap_or_default();
                self.decline(now, &framework_id, decline.offer_ids, decline.filters);
                Ok(())
            }
            CallType::Revive => {
                let roles = call.revive.map(|r| r.roles).unwrap_or_default();
                self.revive(&framework_id, roles)
            }
            CallType::Suppress => {
                let roles = call.suppress.map(|r| r.roles).unwrap_or_default();
                self.suppress(&framework_id, roles)
            }
            CallType::Kill => {
                let kill = call.kill.unwrap_or_default();
                self.kill(now, &framework_id, kill);
                Ok(())
            }
            CallType::Shutdown => {
                let shutdown = call.shutdown.unwrap_or_default();
                let agent = AgentId::from(&shutdown.agent_id);
                self.send_to_agent(
                    &agent,
                    master_message::Message::ShutdownExecutor(
                        agora_proto::internal::ShutdownExecutor {
                            framework_id: framework_id.to_proto(),
                            executor_id: shutdown.executor_id,
                        },
                    ),
                );
                Ok(())
            }
            CallType::Acknowledge => {
                let ack = call.acknowledge.unwrap_or_default();
                self.acknowledge(&framework_id, ack)
            }
            CallType::Reconcile => {
                let tasks = call.reconcile.map(|r| r.tasks).unwrap_or_default();
                self.reconcile(now, &framework_id, tasks);
                Ok(())
            }
            CallType::Message => {
                let message = call.message.unwrap_or_default();
                let agent = AgentId::from(&message.agent_id);
                self.send_to_agent(
                    &agent,
                    master_message::Message::FrameworkMessage(FrameworkToExecutor {
                        framework_id: framework_id.to_proto(),
                        executor_id: message.executor_id,
                        data: message.data,
                    }),
                );
                Ok(())
            }
            CallType::UpdateFramework => {
                let update = call.update_framework.unwrap_or_default();
                self.update_framework(now, &framework_id, update)
            }
            // Accepted and ignored, as the built-in Mesos allocator does.
            CallType::Request
            | CallType::AcceptInverseOffers
            | CallType::DeclineInverseOffers
            | CallType::AcknowledgeOperationStatus
            | CallType::ReconcileOperations => Ok(()),
            CallType::Subscribe | CallType::Unknown => unreachable!("handled above"),
        }
    }

    fn revive(&mut self, framework: &FrameworkId, roles: Vec<String>) -> Result<(), CallError> {
        let f = self
            .frameworks
            .get_mut(framework)
            .expect("checked by caller");
        for role in &roles {
            if !f.roles.contains(role) {
                return Err(bad(format!(
                    "REVIVE names role '{role}' the framework is not subscribed to"
                )));
            }
        }
        if roles.is_empty() {
            f.suppressed_roles.clear();
            self.allocator.revive(framework, None);
        } else {
            for r in &roles {
                f.suppressed_roles.remove(r);
            }
            self.allocator.revive(framework, Some(&roles));
        }
        self.allocation_requested = true;
        Ok(())
    }

    fn suppress(&mut self, framework: &FrameworkId, roles: Vec<String>) -> Result<(), CallError> {
        let f = self
            .frameworks
            .get_mut(framework)
            .expect("checked by caller");
        for role in &roles {
            if !f.roles.contains(role) {
                return Err(bad(format!(
                    "SUPPRESS names role '{role}' the framework is not subscribed to"
                )));
            }
        }
        if roles.is_empty() {
            f.suppressed_roles.extend(f.roles.iter().cloned());
            self.allocator.suppress(framework, None);
        } else {
            f.suppressed_roles.extend(roles.iter().cloned());
            self.allocator.suppress(framework, Some(&roles));
        }
        Ok(())
    }

    fn update_framework(
        &mut self,
        now: Time,
        id: &FrameworkId,
        update: sched::call::UpdateFramework,
    ) -> Result<(), CallError> {
        let info = update.framework_info;
        if info.id.as_ref().map(|i| i.value.as_str()) != Some(id.as_str()) {
            return Err(bad(
                "'update_framework.framework_info.id' must equal 'framework_id'",
            ));
        }
        validation::validate_framework_info(&info, self.config.roles.as_deref()).map_err(bad)?;
        self.may_register(&info).map_err(CallError::Forbidden)?;
        let f = self.frameworks.get(id).expect("checked by caller");
        if info.user != f.info.user {
            return Err(bad("'FrameworkInfo.user' cannot be changed"));
        }
        if info.checkpoint.unwrap_or(false) != f.info.checkpoint.unwrap_or(false) {
            return Err(bad("'FrameworkInfo.checkpoint' cannot be changed"));
        }
        if info.principal != f.info.principal {
            return Err(bad("'FrameworkInfo.principal' cannot be changed"));
        }
        let caps = Capabilities::of(&info);
        let roles = validation::framework_roles(&info);
        let old_roles = f.roles.clone();
        // Offers for roles the framework leaves are rescinded.
        let stale: Vec<OfferId> = f
            .offers
            .iter()
            .filter(|o| {
                self.offers
                    .get(*o)
                    .is_some_and(|o| !roles.contains(&o.role))
            })
            .cloned()
            .collect();
        for offer in stale {
            self.rescind_offer(now, &offer, None);
        }
        let f = self.frameworks.get_mut(id).expect("checked by caller");
        f.info = info;
        f.caps = caps;
        f.roles = roles.clone();
        f.suppressed_roles = update.suppressed_roles.iter().cloned().collect();
        self.allocator
            .update_framework(id, &roles, caps.gpu_resources);
        let added: Vec<String> = roles
            .iter()
            .filter(|r| !old_roles.contains(r))
            .cloned()
            .collect();
        if !added.is_empty() {
            self.allocator.revive(id, Some(&added));
        }
        if !update.suppressed_roles.is_empty() {
            self.allocator.suppress(id, Some(&update.suppressed_roles));
        }
        self.emit_framework_updated(id);
        self.allocation_requested = true;
        Ok(())
    }

    // ---------------------------------------------------------------- ACCEPT

    /// ACCEPT (DECLINE is an ACCEPT without operations).
    /// DECLINE: each offer goes back with the filter on its own agent. As
    /// in Mesos, one call may name offers of many agents (a framework
    /// declines what it cannot use in one batch); offers that are unknown
    /// (rescinded meanwhile) or another framework's are skipped.
    fn decline(
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

    fn accept(
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
        // Validate the offers: known, this framework's, one agent, no duplicates.
        let mut error = None;
        let mut seen = BTreeSet::new();
        let mut agent: Option<AgentId> = None;
        let mut role: Option<String> = None;
        for id in &offer_ids {
            let oid = OfferId::from(id);
            if !seen.insert(oid.clone()) {
                error = Some(format!("Duplicate offer {oid} in ACCEPT"));
                break;
            }
            match self.offers.get(&oid) {
                None => {
                    error = Some(format!("Offer {oid} is no longer valid"));
                    break;
                }
                Some(o) if &o.framework != framework => {
                    error = Some(format!(
                        "Offer {oid} has invalid framework {} while framework {framework} is expected",
                        o.framework
                    ));
                    break;
                }
                Some(o) => {
                    if agent.as_ref().is_some_and(|a| a != &o.agent) {
                        error = Some("Aggregated offers must belong to one single agent".into());
                        break;
                    }
                    if role.as_ref().is_some_and(|r| r != &o.role) {
                        error = Some("Aggregated offers must be allocated to the same role".into());
                        break;
                    }
                    agent = Some(o.agent.clone());
                    role = Some(o.role.clone());
                }
            }
        }
        if offer_ids.is_empty() && !operations.is_empty() {
            error = Some("No offers specified".into());
        }
        if error.is_none()
            && let Some(a) = &agent
            && !self.agents.get(a).is_some_and(|a| a.is_connected())
        {
            error = Some(format!("Agent {a} is not connected"));
        }
        if let Some(message) = error {
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
        let (Some(agent), Some(role)) = (agent, role) else {
            return;
        };
        let mut available = Resources::new();
        for id in &offer_ids {
            if let Some(o) = self.take_offer(&OfferId::from(id)) {
                available += &o.resources;
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
                _ => {
                    if let Some(id) = op.id {
                        self.send(
                            framework,
                            operation_status(
                                id,
                                &agent,
                                "operation type is not supported by Agora",
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

    fn drop_launches(
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

    fn task_error(
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
    fn may_register(&self, info: &v1::FrameworkInfo) -> Result<(), String> {
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
    fn may_run(
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
    fn launch(
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
            Err(message) => {
                self.task_error(now, framework, &task, Reason::TaskInvalid, message);
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
        let mut needed = resources.clone();
        let mut new_executor = None;
        if let Some(e) = &executor {
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
                    let message = format!(
                        "ExecutorInfo for executor {eid} differs from the one already running on agent {agent}"
                    );
                    self.task_error(now, framework, &task, Reason::TaskInvalid, message);
                    return false;
                }
                Some(_) => {}
                None => {
                    let er = match Resources::from_protos(&e.resources) {
                        Ok(r) => r.unallocated(),
                        Err(err) => {
                            self.task_error(
                                now,
                                framework,
                                &task,
                                Reason::TaskInvalid,
                                format!("invalid executor resources: {err}"),
                            );
                            return false;
                        }
                    };
                    needed += &er;
                    new_executor = Some((eid, e.clone(), er));
                }
            }
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
        let proto = v1::Task {
            name: task.name.clone(),
            task_id: task.task_id.clone(),
            framework_id: framework.to_proto(),
            executor_id: executor.as_ref().map(|e| e.executor_id.clone()),
            agent_id: agent.to_proto(),
            state: TaskState::TaskStaging as i32,
            resources: format_task_resources(&resources, role),
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
        };
        let f = self.frameworks.get_mut(framework).expect("checked above");
        f.tasks.insert(
            task_id.clone(),
            Task {
                proto: proto.clone(),
                agent: agent.clone(),
                role: role.to_string(),
                resources,
                recovered: false,
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

    fn launch_group(
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
            fail_all(self, e);
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
    fn check_task_against(
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

    fn kill(&mut self, now: Time, framework: &FrameworkId, kill: sched::call::Kill) {
        let task_id = TaskId::from(&kill.task_id);
        let task = self
            .frameworks
            .get(framework)
            .and_then(|f| f.tasks.get(&task_id))
            .map(|t| t.agent.clone());
        let Some(agent) = task else {
            // Unknown task: answer as an explicit reconciliation would.
            let entry = sched::call::reconcile::Task {
                task_id: kill.task_id,
                agent_id: kill.agent_id,
            };
            self.reconcile(now, framework, vec![entry]);
            return;
        };
        if kill
            .agent_id
            .as_ref()
            .is_some_and(|a| a.value != agent.as_str())
        {
            return; // Mesos ignores a kill naming the wrong agent.
        }
        let message = master_message::Message::KillTask(KillTask {
            framework_id: framework.to_proto(),
            task_id: task_id.to_proto(),
            kill_policy: kill.kill_policy,
        });
        if !self.send_to_agent(&agent, message)
            && let Some(a) = self.agents.get_mut(&agent)
        {
            a.pending_kills
                .push((framework.clone(), task_id, kill.kill_policy));
        }
    }

    fn acknowledge(
        &mut self,
        framework: &FrameworkId,
        ack: sched::call::Acknowledge,
    ) -> Result<(), CallError> {
        if ack.uuid.len() != 16 {
            return Err(bad(format!(
                "Failed to validate scheduler::Call: 'acknowledge.uuid' must be 16 bytes, got {}",
                ack.uuid.len()
            )));
        }
        let task_id = TaskId::from(&ack.task_id);
        let agent = AgentId::from(&ack.agent_id);
        let mut done = false;
        if let Some(task) = self
            .frameworks
            .get(framework)
            .and_then(|f| f.tasks.get(&task_id))
            && task.proto.status_update_uuid.as_deref() == Some(ack.uuid.as_slice())
            && task
                .proto
                .status_update_state
                .and_then(|s| TaskState::try_from(s).ok())
                .is_some_and(is_terminal)
        {
            done = true;
        }
        self.send_to_agent(
            &agent,
            master_message::Message::Acknowledge(AcknowledgeUpdate {
                framework_id: framework.to_proto(),
                task_id: ack.task_id,
                uuid: ack.uuid,
            }),
        );
        if done {
            self.complete_task(framework, &task_id);
        }
        Ok(())
    }

    // -------------------------------------------------------------- RECONCILE

    /// Answers RECONCILE as Mesos' decision table says: a known task's latest state; an unknown one
    /// TASK_GONE on a registered agent, TASK_UNREACHABLE (or LOST) on an unreachable one,
    /// TASK_UNKNOWN (or LOST) elsewhere.
    pub(crate) fn reconcile(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        tasks: Vec<sched::call::reconcile::Task>,
    ) {
        let Some(f) = self.frameworks.get(framework) else {
            return;
        };
        let caps = f.caps;
        let mut answers = Vec::new();
        let latest = |t: &Task| -> TaskState {
            t.proto
                .status_update_state
                .and_then(|s| TaskState::try_from(s).ok())
                .unwrap_or_else(|| t.state())
        };
        if tasks.is_empty() {
            for t in f.tasks.values().chain(f.unreachable_tasks.values()) {
                answers.push((
                    t.proto.task_id.clone(),
                    Some(t.agent.clone()),
                    latest(t),
                    "Reconciliation: Latest task state".to_string(),
                    t.proto.executor_id.clone(),
                ));
            }
        } else {
            for entry in tasks {
                let id = TaskId::from(&entry.task_id);
                if let Some(t) = f.tasks.get(&id).or_else(|| f.unreachable_tasks.get(&id)) {
                    answers.push((
                        entry.task_id,
                        Some(t.agent.clone()),
                        latest(t),
                        "Reconciliation: Latest task state".into(),
                        t.proto.executor_id.clone(),
                    ));
                    continue;
                }
                let agent = entry.agent_id.as_ref().map(AgentId::from);
                let (state, message) = match &agent {
                    Some(a)
                        if self
                            .agents
                            .get(a)
                            .is_some_and(|a| a.state == AgentState::Registered) =>
                    {
                        (
                            TaskState::TaskGone,
                            "Reconciliation: Task is unknown to the agent",
                        )
                    }
                    Some(a) if self.agents.contains_key(a) => continue, // disconnected: no answer yet
                    Some(a) if self.unreachable_agents.contains_key(a) => (
                        TaskState::TaskUnreachable,
                        "Reconciliation: Task is unreachable",
                    ),
                    Some(a) if self.gone_agents.contains(a) => (
                        TaskState::TaskGoneByOperator,
                        "Reconciliation: Task is gone",
                    ),
                    _ => (TaskState::TaskUnknown, "Reconciliation: Task is unknown"),
                };
                answers.push((entry.task_id, agent, state, message.to_string(), None));
            }
        }
        for (task_id, agent, state, message, executor) in answers {
            let mut status = self.master_status(
                now,
                &task_id,
                agent.as_ref(),
                state,
                Reason::Reconciliation,
                message,
            );
            status.executor_id = executor;
            if state == TaskState::TaskUnreachable
                && let Some((_, since)) =
                    agent.as_ref().and_then(|a| self.unreachable_agents.get(a))
            {
                status.unreachable_time = Some(v1::TimeInfo {
                    nanoseconds: since.as_nanos() as i64,
                });
            }
            self.forward_status(framework, caps, status);
        }
    }

    // --------------------------------------------------------------- operator

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
                self.allocation_requested = true;
                self.emit_agent_added(&id);
                Ok(())
            }
        }
    }

    fn mark_gone(&mut self, now: Time, id: &AgentId) {
        self.gone_agents.insert(id.clone());
        self.registry_dirty = true;
        if let Some(conn) = self.agents.get(id).and_then(|a| a.conn) {
            self.shutdown_agent_conn(conn, "agent was marked gone by an operator");
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
                "Agent was marked gone by an operator",
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
                "Agent was marked gone by an operator",
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

/// Checks that the call carries the payload its type needs.
fn check_payload(call: &sched::Call) -> Result<(), CallError> {
    let missing = match call.r#type() {
        CallType::Accept if call.accept.is_none() => Some("accept"),
        CallType::Decline if call.decline.is_none() => Some("decline"),
        CallType::Kill if call.kill.is_none() => Some("kill"),
        CallType::Shutdown if call.shutdown.is_none() => Some("shutdown"),
        CallType::Acknowledge if call.acknowledge.is_none() => Some("acknowledge"),
        CallType::Reconcile if call.reconcile.is_none() => Some("reconcile"),
        CallType::Message if call.message.is_none() => Some("message"),
        CallType::UpdateFramework if call.update_framework.is_none() => Some("update_framework"),
        CallType::AcceptInverseOffers if call.accept_inverse_offers.is_none() => {
            Some("accept_inverse_offers")
        }
        CallType::DeclineInverseOffers if call.decline_inverse_offers.is_none() => {
            Some("decline_inverse_offers")
        }
        CallType::AcknowledgeOperationStatus if call.acknowledge_operation_status.is_none() => {
            Some("acknowledge_operation_status")
        }
        CallType::ReconcileOperations if call.reconcile_operations.is_none() => {
            Some("reconcile_operations")
        }
        _ => None,
    };
    match missing {
        Some(name) => Err(bad(format!("Expecting '{name}' to be present"))),
        None => Ok(()),
    }
}

pub(crate) fn error_event(message: &str) -> sched::Event {
    sched::Event {
        r#type: Some(sched::event::Type::Error as i32),
        error: Some(sched::event::Error {
            message: message.to_string(),
        }),
        ..Default::default()
    }
}

fn operation_status(id: v1::OperationId, agent: &AgentId, message: &str) -> sched::Event {
    sched::Event {
        r#type: Some(sched::event::Type::UpdateOperationStatus as i32),
        update_operation_status: Some(sched::event::UpdateOperationStatus {
            status: v1::OperationStatus {
                operation_id: Some(id),
                state: v1::OperationState::OperationUnsupported as i32,
                message: Some(message.to_string()),
                agent_id: Some(agent.to_proto()),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// A task's resources as `Task.resources` shows them (with allocation info).
fn format_task_resources(resources: &Resources, role: &str) -> Vec<v1::Resource> {
    resources.allocated_to(role).to_protos()
}
