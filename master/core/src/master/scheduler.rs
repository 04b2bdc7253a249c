//! Scheduler API calls: SUBSCRIBE, KILL, ACKNOWLEDGE, RECONCILE, REVIVE,
//! SUPPRESS and the rest, with Mesos' validation and answers (ACCEPT and
//! DECLINE are in `launch.rs`, operator calls in `operator_calls.rs`).

use std::collections::BTreeSet;

use agora_proto::internal::{AcknowledgeUpdate, FrameworkToExecutor, KillTask, master_message};
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use agora_proto::{operator, scheduler as sched};
use sched::call::Type as CallType;

use super::{AgentState, CallError, Framework, Master, Output, Task};
use crate::ids::{AgentId, FrameworkId, OfferId, RequestId, StreamId, TaskId};
use crate::time::Time;
use crate::validation::{self, Capabilities};

/// Mesos' words when the authenticated principal is not the framework's.
fn principal_mismatch(authenticated: &str, declared: &str) -> String {
    format!(
        "Failed to validate scheduler::Call: Authenticated principal '{authenticated}' does not match principal '{declared}' set in `FrameworkInfo`"
    )
}

pub(crate) fn bad(message: impl Into<String>) -> CallError {
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
        if let Err(invalid) =
            validation::validate_framework_info(&info, self.config.roles.as_deref())
        {
            self.stream_error(&stream, &invalid.to_string());
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
            self.fail_over_framework(now, &id, info, &stream, &suppressed);
        } else {
            let mut framework = Framework::new(id.clone(), &info, Some(stream.clone()), now);
            framework.suppressed_roles = suppressed.clone();
            self.frameworks.insert(id.clone(), framework);
            let s: Vec<String> = suppressed.iter().cloned().collect();
            self.allocator
                .add_framework(id.clone(), &roles, true, caps.gpu_resources, &s);
        }
        self.announce_subscription(&id, stream, existing);
        if existing {
            self.resend_inverse_offers(&id);
        }
        self.allocation_requested = true;
    }

    /// Tells a subscribed framework it is (SUBSCRIBED, then a HEARTBEAT)
    /// and operator subscribers that it was added or updated.
    fn announce_subscription(&mut self, id: &FrameworkId, stream: StreamId, existing: bool) {
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
    }

    /// A framework subscribing again (failover): the new stream replaces
    /// the old, its offers are rescinded, and the allocator hears of its
    /// roles and suppressions anew.
    fn fail_over_framework(
        &mut self,
        now: Time,
        id: &FrameworkId,
        mut info: v1::FrameworkInfo,
        stream: &StreamId,
        suppressed: &BTreeSet<String>,
    ) {
        let caps = Capabilities::of(&info);
        let roles = validation::framework_roles(&info);
        // Failover: a new subscription replaces the old one.
        let f = self.frameworks.get_mut(id).expect("checked above");
        if let Some(old) = f.stream.take() {
            self.streams.remove(&old);
            self.out.push(Output::Event {
                stream: old.clone(),
                event: Box::new(error_event("Framework failed over")),
            });
            self.out.push(Output::CloseStream { stream: old });
        }
        let f = self.frameworks.get_mut(id).expect("checked above");
        // user and checkpoint cannot change on re-subscription.
        if !f.recovered {
            info.user = f.info.user.clone();
            info.checkpoint = f.info.checkpoint;
        }
        let offers: Vec<OfferId> = f.offers.iter().cloned().collect();
        for offer in offers {
            self.rescind_offer(now, &offer, None);
        }
        let f = self.frameworks.get_mut(id).expect("checked above");
        f.info = info;
        f.caps = caps;
        f.roles = roles.clone();
        f.stream = Some(stream.clone());
        f.active = true;
        f.recovered = false;
        f.failover_deadline = None;
        f.reregistered_time = Some(now);
        f.suppressed_roles = suppressed.clone();
        self.allocator
            .update_framework(id, &roles, caps.gpu_resources);
        self.allocator.revive(id, None);
        if !suppressed.is_empty() {
            let s: Vec<String> = suppressed.iter().cloned().collect();
            self.allocator.suppress(id, Some(&s));
        }
        self.allocator.activate_framework(id);
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

    /// The framework a non-SUBSCRIBE call comes from, once the call is
    /// well formed and comes on the framework's current stream from its
    /// principal.
    fn caller(
        &self,
        stream: Option<StreamId>,
        call: &sched::Call,
        principal: Option<&str>,
    ) -> Result<FrameworkId, CallError> {
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
        check_payload(call)?;
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
        Ok(framework_id)
    }

    pub(crate) fn call(
        &mut self,
        now: Time,
        stream: Option<StreamId>,
        call: sched::Call,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        let kind = call.r#type();
        let framework_id = self.caller(stream, &call, principal)?;
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
                self.acknowledge(now, &framework_id, ack)
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
            CallType::AcceptInverseOffers | CallType::DeclineInverseOffers => {
                let accept = kind == CallType::AcceptInverseOffers;
                let ids = if accept {
                    call.accept_inverse_offers.map(|a| a.inverse_offer_ids)
                } else {
                    call.decline_inverse_offers.map(|d| d.inverse_offer_ids)
                };
                self.answer_inverse_offers(now, &framework_id, &ids.unwrap_or_default(), accept);
                Ok(())
            }
            // Accepted and ignored, as the built-in Mesos allocator does.
            CallType::Request
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
        validation::validate_framework_info(&info, self.config.roles.as_deref())
            .map_err(|e| bad(e.to_string()))?;
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
        now: Time,
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
        let round_trip = self
            .frameworks
            .get_mut(framework)
            .and_then(|f| f.tasks.get_mut(&task_id))
            .filter(|t| t.proto.status_update_uuid.as_deref() == Some(ack.uuid.as_slice()))
            .and_then(|t| t.update_sent.take());
        if let Some(sent) = round_trip {
            self.observe(super::Observation::StatusUpdateRoundTrip, now.since(sent));
        }
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
