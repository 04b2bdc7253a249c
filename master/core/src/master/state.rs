//! Shared state changes: offers, task status, framework and agent removal.
//! The call and message handlers in `scheduler.rs` and `agents.rs` build on
//! these.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agora_proto::internal::{ShutdownAgent, ShutdownFramework, master_message};
use agora_proto::resources::Resources;
use agora_proto::status::{is_terminal, needs_partition_awareness};
use agora_proto::v1::{self, TaskState, task_status::Reason, task_status::Source};
use agora_proto::{operator, scheduler as sched};

use super::{Agent, AgentState, Framework, Master, Offer, Output, Task};
use crate::allocator::Allocation;
use crate::ids::{AgentId, FrameworkId, OfferId, StreamId, TaskId};
use crate::time::Time;
use crate::validation::Capabilities;

/// Statuses kept per task (oldest dropped first).
const MAX_STATUSES: usize = 32;

impl Master {
    // ------------------------------------------------------------------ offers

    pub(crate) fn allocate(&mut self, now: Time) {
        self.metrics.allocation_runs += 1;
        self.maintenance_step(now);
        let allocations = self.allocator.allocate(now, &mut self.rng);
        if allocations.is_empty() {
            return;
        }
        let mut by_framework: BTreeMap<FrameworkId, Vec<v1::Offer>> = BTreeMap::new();
        for alloc in allocations {
            if let Some(offer) = self.make_offer(now, alloc) {
                by_framework.entry(offer.0).or_default().push(offer.1);
            }
        }
        for (framework, offers) in by_framework {
            self.metrics.offers_made += offers.len() as u64;
            self.send(
                &framework,
                sched::Event {
                    r#type: Some(sched::event::Type::Offers as i32),
                    offers: Some(sched::event::Offers { offers }),
                    ..Default::default()
                },
            );
        }
    }

    fn make_offer(&mut self, now: Time, alloc: Allocation) -> Option<(FrameworkId, v1::Offer)> {
        let usable = self
            .frameworks
            .get(&alloc.framework)
            .is_some_and(|f| f.active && f.stream.is_some())
            && self
                .agents
                .get(&alloc.agent)
                .is_some_and(|a| a.conn.is_some());
        if !usable {
            // Should not happen (the allocator only sees active ones); give it back.
            self.allocator.recover(
                &alloc.agent,
                &alloc.framework,
                &alloc.role,
                &alloc.resources,
                None,
                now,
            );
            return None;
        }
        self.next_offer += 1;
        let id = OfferId::new(format!("{}-O{}", self.info.id, self.next_offer));
        let offer = Offer {
            id: id.clone(),
            framework: alloc.framework.clone(),
            agent: alloc.agent.clone(),
            role: alloc.role.to_string(),
            resources: alloc.resources,
            created: now,
        };
        let proto = self.offer_proto(&offer);
        if let Some(f) = self.frameworks.get_mut(&alloc.framework) {
            f.offers.insert(id.clone());
        }
        if let Some(a) = self.agents.get_mut(&alloc.agent) {
            a.offers.insert(id.clone());
        }
        self.offers.insert(id, offer);
        Some((alloc.framework, proto))
    }

    /// An offer as its framework sees it.
    pub(crate) fn offer_proto(&self, offer: &Offer) -> v1::Offer {
        let caps = self
            .frameworks
            .get(&offer.framework)
            .map(|f| f.caps)
            .unwrap_or_default();
        let agent = self.agents.get(&offer.agent);
        let (hostname, url, attributes, domain) = match agent {
            Some(a) => (
                a.info.hostname.clone(),
                Some(agent_url(a)),
                a.info.attributes.clone(),
                a.info.domain.clone(),
            ),
            None => (String::new(), None, Vec::new(), None),
        };
        let executor_ids = self
            .frameworks
            .get(&offer.framework)
            .and_then(|f| f.executors.get(&offer.agent))
            .map(|e| e.keys().map(|id| id.to_proto()).collect())
            .unwrap_or_default();
        v1::Offer {
            id: offer.id.to_proto(),
            framework_id: offer.framework.to_proto(),
            agent_id: offer.agent.to_proto(),
            hostname,
            url,
            domain,
            resources: format_resources(&offer.resources, &offer.role, caps),
            attributes,
            executor_ids,
            unavailability: self.unavailability(&offer.agent),
            allocation_info: caps.multi_role.then(|| v1::resource::AllocationInfo {
                role: Some(offer.role.clone()),
            }),
        }
    }

    /// Removes an offer from every index without recovering its resources.
    pub(crate) fn take_offer(&mut self, id: &OfferId) -> Option<Offer> {
        let offer = self.offers.remove(id)?;
        if let Some(f) = self.frameworks.get_mut(&offer.framework) {
            f.offers.remove(id);
        }
        if let Some(a) = self.agents.get_mut(&offer.agent) {
            a.offers.remove(id);
        }
        Some(offer)
    }

    /// Withdraws an offer: RESCIND to its framework, resources back to the
    /// allocator (with `filter`, if any).
    pub(crate) fn rescind_offer(&mut self, now: Time, id: &OfferId, filter: Option<Duration>) {
        let Some(offer) = self.take_offer(id) else {
            return;
        };
        self.metrics.offers_rescinded += 1;
        self.allocator.recover(
            &offer.agent,
            &offer.framework,
            &offer.role,
            &offer.resources,
            filter,
            now,
        );
        self.send(
            &offer.framework,
            sched::Event {
                r#type: Some(sched::event::Type::Rescind as i32),
                rescind: Some(sched::event::Rescind {
                    offer_id: offer.id.to_proto(),
                }),
                ..Default::default()
            },
        );
        self.allocation_requested = true;
    }

    // ------------------------------------------------------------------- tasks

    /// Applies a status update to a task and forwards it to the framework.
    /// `latest` is the newest state the agent knows (may be ahead of `status`).
    pub(crate) fn update_task(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        mut status: v1::TaskStatus,
        latest: Option<TaskState>,
    ) {
        let task_id = TaskId::from(&status.task_id);
        let Some(f) = self.frameworks.get_mut(framework) else {
            return;
        };
        let caps = f.caps;
        let task = f
            .tasks
            .get_mut(&task_id)
            .or_else(|| f.unreachable_tasks.get_mut(&task_id));
        let mut recover = None;
        let mut launch_took = None;
        if let Some(task) = task {
            if status.agent_id.is_none() {
                status.agent_id = Some(task.agent.to_proto());
            }
            if status.executor_id.is_none() {
                status.executor_id = task.proto.executor_id.clone();
            }
            if status.timestamp.is_none() {
                status.timestamp = Some(now.as_secs_f64());
            }
            let first_running = status.state() == TaskState::TaskRunning
                && !task
                    .proto
                    .statuses
                    .iter()
                    .any(|s| s.state() == TaskState::TaskRunning);
            if first_running {
                launch_took = Some(now.since(task.launched));
            }
            task.update_sent = status.uuid.is_some().then_some(now);
            task.proto.status_update_state = Some(status.state);
            task.proto.status_update_uuid = status.uuid.clone();
            task.proto.state = latest.map(|s| s as i32).unwrap_or(status.state);
            let mut kept = status.clone();
            kept.data = None;
            task.proto.statuses.push(kept);
            if task.proto.statuses.len() > MAX_STATUSES {
                task.proto.statuses.remove(0);
            }
            if is_terminal(task.state()) && !task.recovered {
                task.recovered = true;
                recover = Some((
                    task.agent.clone(),
                    task.role.clone(),
                    task.resources.clone(),
                ));
            }
        }
        if let Some(took) = launch_took {
            self.observe(super::Observation::Launch, took);
        }
        if let Some((agent, role, resources)) = recover {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.tasks.remove(&(framework.clone(), task_id.clone()));
            }
            self.allocator
                .recover(&agent, framework, &role, &resources, None, now);
            self.allocation_requested = true;
        }
        let state = status.state();
        let fw = framework.clone();
        self.operator_event(|_| operator::Event {
            r#type: Some(operator::event::Type::TaskUpdated as i32),
            task_updated: Some(operator::event::TaskUpdated {
                framework_id: fw.to_proto(),
                status: status.clone(),
                state: latest.map(|s| s as i32).unwrap_or(state as i32),
            }),
            ..Default::default()
        });
        self.forward_status(framework, caps, status);
    }

    /// Sends an UPDATE, translating states a legacy framework does not know.
    pub(crate) fn forward_status(
        &mut self,
        framework: &FrameworkId,
        caps: Capabilities,
        mut status: v1::TaskStatus,
    ) {
        if !caps.partition_aware && needs_partition_awareness(status.state()) {
            status.set_state(TaskState::TaskLost);
        }
        if !caps.task_killing_state && status.state() == TaskState::TaskKilling {
            return;
        }
        self.metrics.valid_status_updates += 1;
        self.send(
            framework,
            sched::Event {
                r#type: Some(sched::event::Type::Update as i32),
                update: Some(sched::event::Update { status }),
                ..Default::default()
            },
        );
    }

    /// A status the master itself produces (no uuid: not acknowledged).
    pub(crate) fn master_status(
        &self,
        now: Time,
        task: &v1::TaskId,
        agent: Option<&AgentId>,
        state: TaskState,
        reason: Reason,
        message: impl Into<String>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.clone(),
            state: state as i32,
            message: Some(message.into()),
            source: Some(Source::Master as i32),
            reason: Some(reason as i32),
            agent_id: agent.map(AgentId::to_proto),
            timestamp: Some(now.as_secs_f64()),
            ..Default::default()
        }
    }

    /// Ends a task by the master's own decision (agent lost, framework gone):
    /// records the terminal status, recovers resources, sends the update and
    /// moves the task to completed (no acknowledgement is expected).
    pub(crate) fn terminate_task(
        &mut self,
        now: Time,
        framework: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        reason: Reason,
        message: &str,
    ) {
        let Some(agent) = self
            .frameworks
            .get(framework)
            .and_then(|f| {
                f.tasks
                    .get(task_id)
                    .or_else(|| f.unreachable_tasks.get(task_id))
            })
            .map(|t| t.agent.clone())
        else {
            return;
        };
        let status = self.master_status(
            now,
            &task_id.to_proto(),
            Some(&agent),
            state,
            reason,
            message,
        );
        self.update_task(now, framework, status, Some(state));
        self.complete_task(framework, task_id);
    }

    /// Moves a task to its framework's completed tasks.
    pub(crate) fn complete_task(&mut self, framework: &FrameworkId, task_id: &TaskId) {
        let max = self.config.max_completed_tasks_per_framework;
        let Some(f) = self.frameworks.get_mut(framework) else {
            return;
        };
        let task = f
            .tasks
            .remove(task_id)
            .or_else(|| f.unreachable_tasks.remove(task_id));
        if let Some(task) = task {
            if let Some(a) = self.agents.get_mut(&task.agent) {
                a.tasks.remove(&(framework.clone(), task_id.clone()));
            }
            let f = self
                .frameworks
                .get_mut(framework)
                .expect("framework exists");
            f.completed_tasks.push_back(task);
            while f.completed_tasks.len() > max {
                f.completed_tasks.pop_front();
            }
        }
    }

    // -------------------------------------------------------------- frameworks

    /// The framework's stream is gone: no more offers; it has
    /// `failover_timeout` to come back.
    pub(crate) fn disconnect_framework(&mut self, now: Time, id: &FrameworkId) {
        let Some(f) = self.frameworks.get_mut(id) else {
            return;
        };
        if let Some(stream) = f.stream.take() {
            self.streams.remove(&stream);
        }
        f.active = false;
        f.unregistered_time = Some(now);
        let timeout = f.info.failover_timeout.unwrap_or(0.0);
        let offers: Vec<OfferId> = f.offers.iter().cloned().collect();
        f.failover_deadline =
            Some(now + Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO));
        self.allocator.deactivate_framework(id);
        for offer in offers {
            if let Some(o) = self.take_offer(&offer) {
                self.allocator
                    .recover(&o.agent, &o.framework, &o.role, &o.resources, None, now);
            }
        }
        self.allocation_requested = true;
        self.emit_framework_updated(id);
        if timeout <= 0.0 {
            self.remove_framework(
                now,
                id,
                "framework disconnected with a failover_timeout of 0",
            );
        }
    }

    /// Removes a framework for good: its tasks are killed, its executors shut
    /// down, and its id can never subscribe again.
    pub(crate) fn remove_framework(&mut self, now: Time, id: &FrameworkId, why: &str) {
        let Some(mut f) = self.frameworks.remove(id) else {
            return;
        };
        let _ = why;
        self.forget_inverse_offers(id);
        if let Some(stream) = f.stream.take() {
            // Tell the scheduler before closing its stream, so it knows
            // resubscribing cannot help (Mesos' FrameworkErrorMessage).
            self.streams.remove(&stream);
            self.out.push(Output::Event {
                stream: stream.clone(),
                event: Box::new(super::scheduler::error_event(super::FRAMEWORK_REMOVED)),
            });
            self.out.push(Output::CloseStream { stream });
        }
        for offer in f.offers.iter().cloned().collect::<Vec<_>>() {
            self.take_offer(&offer);
        }
        // Tell every agent that runs something of it.
        let agents: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                a.tasks.iter().any(|(fw, _)| fw == id) || a.executors.keys().any(|(fw, _)| fw == id)
            })
            .map(|a| a.id.clone())
            .collect();
        for agent in &agents {
            self.send_to_agent(
                agent,
                master_message::Message::ShutdownFramework(ShutdownFramework {
                    framework_id: id.to_proto(),
                }),
            );
            if let Some(a) = self.agents.get_mut(agent) {
                a.tasks.retain(|(fw, _)| fw != id);
                a.executors.retain(|(fw, _), _| fw != id);
            }
        }
        for (_, mut task) in std::mem::take(&mut f.tasks) {
            if !is_terminal(task.state()) {
                task.proto.set_state(TaskState::TaskKilled);
            }
            f.completed_tasks.push_back(task);
        }
        while f.completed_tasks.len() > self.config.max_completed_tasks_per_framework {
            f.completed_tasks.pop_front();
        }
        f.active = false;
        f.failover_deadline = None;
        f.unregistered_time = Some(now);
        self.allocator.remove_framework(id);
        self.allocation_requested = true;
        let info = f.info.clone();
        self.operator_event(|_| operator::Event {
            r#type: Some(operator::event::Type::FrameworkRemoved as i32),
            framework_removed: Some(operator::event::FrameworkRemoved {
                framework_info: info,
            }),
            ..Default::default()
        });
        self.removed_frameworks.insert(id.clone());
        // A completed framework keeps its info and last tasks, for /state;
        // nothing it ran is left to describe.
        f.executors.clear();
        f.offers.clear();
        f.suppressed_roles.clear();
        self.completed_frameworks.push_back(f);
        while self.completed_frameworks.len() > self.config.max_completed_frameworks {
            self.completed_frameworks.pop_front();
        }
    }

    pub(crate) fn emit_framework_updated(&mut self, id: &FrameworkId) {
        let id = id.clone();
        self.operator_event(|m| operator::Event {
            r#type: Some(operator::event::Type::FrameworkUpdated as i32),
            framework_updated: Some(operator::event::FrameworkUpdated {
                framework: m.framework_view(m.frameworks.get(&id).expect("framework exists")),
            }),
            ..Default::default()
        });
    }

    // ------------------------------------------------------------------ agents

    /// An agent stopped answering: its tasks become unreachable (TASK_LOST
    /// for frameworks that are not partition-aware), its offers are
    /// rescinded, and every framework gets a FAILURE.
    pub(crate) fn mark_unreachable(&mut self, now: Time, id: &AgentId, why: &str) {
        let offers: Vec<OfferId> = match self.agents.get(id) {
            Some(a) => a.offers.iter().cloned().collect(),
            None => return,
        };
        for offer in offers {
            self.rescind_offer(now, &offer, None);
        }
        self.rescind_inverse_offers(id);
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        self.registry_dirty = true;
        if let Some(conn) = agent.conn {
            self.conns.remove(&conn);
            self.out.push(Output::CloseAgent { conn });
        }
        self.allocator.remove_agent(id);
        let max = self.config.max_unreachable_tasks_per_framework;
        for (fw, task_id) in &agent.tasks {
            let Some(f) = self.frameworks.get_mut(fw) else {
                continue;
            };
            let Some(mut task) = f.tasks.remove(task_id) else {
                continue;
            };
            let caps = f.caps;
            let mut status = v1::TaskStatus {
                task_id: task_id.to_proto(),
                state: TaskState::TaskUnreachable as i32,
                message: Some(format!("Agent {id} is unreachable: {why}")),
                source: Some(Source::Master as i32),
                reason: Some(Reason::AgentRemoved as i32),
                agent_id: Some(id.to_proto()),
                timestamp: Some(now.as_secs_f64()),
                unreachable_time: Some(v1::TimeInfo {
                    nanoseconds: now.as_nanos() as i64,
                }),
                ..Default::default()
            };
            status.executor_id = task.proto.executor_id.clone();
            task.proto.set_state(TaskState::TaskUnreachable);
            task.proto.statuses.push(status.clone());
            task.recovered = true;
            f.unreachable_tasks.insert(task_id.clone(), task);
            while f.unreachable_tasks.len() > max {
                let first = f.unreachable_tasks.keys().next().cloned();
                if let Some(k) = first {
                    f.unreachable_tasks.remove(&k);
                }
            }
            self.forward_status(fw, caps, status);
        }
        for (fw, exec) in agent.executors.keys() {
            if let Some(f) = self.frameworks.get_mut(fw)
                && let Some(e) = f.executors.get_mut(id)
            {
                e.remove(exec);
            }
        }
        let failure = sched::Event {
            r#type: Some(sched::event::Type::Failure as i32),
            failure: Some(sched::event::Failure {
                agent_id: Some(id.to_proto()),
                executor_id: None,
                status: None,
            }),
            ..Default::default()
        };
        for fw in self.frameworks.keys().cloned().collect::<Vec<_>>() {
            self.send(&fw, failure.clone());
        }
        self.unreachable_agents
            .insert(id.clone(), (agent.info.clone(), now));
        let agent_id = id.to_proto();
        self.operator_event(|_| operator::Event {
            r#type: Some(operator::event::Type::AgentRemoved as i32),
            agent_removed: Some(operator::event::AgentRemoved { agent_id }),
            ..Default::default()
        });
        self.allocation_requested = true;
    }

    /// Tells an agent to shut down and forgets its connection.
    pub(crate) fn shutdown_agent_conn(&mut self, conn: crate::ids::ConnId, message: &str) {
        self.out.push(Output::ToAgent {
            conn,
            message: Box::new(agora_proto::internal::MasterMessage {
                epoch: self.epoch,
                message: Some(master_message::Message::ShutdownAgent(ShutdownAgent {
                    message: Some(message.into()),
                })),
            }),
        });
        self.out.push(Output::CloseAgent { conn });
    }
}

/// Resources as a framework with these capabilities expects them.
pub(crate) fn format_resources(
    resources: &Resources,
    role: &str,
    caps: Capabilities,
) -> Vec<v1::Resource> {
    let r = if caps.multi_role {
        resources.allocated_to(role)
    } else {
        resources.clone()
    };
    if caps.reservation_refinement {
        r.to_protos()
    } else {
        r.to_legacy_protos()
    }
}

/// The agent's HTTP endpoint as an offer URL.
pub(crate) fn agent_url(agent: &Agent) -> v1::Url {
    let (ip, port) = split_address(&agent.address);
    v1::Url {
        scheme: "http".into(),
        address: v1::Address {
            hostname: Some(agent.info.hostname.clone()),
            ip: Some(ip),
            port,
        },
        path: Some("/slave(1)".into()),
        query: Vec::new(),
        fragment: None,
    }
}

/// Splits `ip:port` (the port defaults to 5051).
pub(crate) fn split_address(address: &str) -> (String, i32) {
    match address.rsplit_once(':') {
        Some((ip, port)) => (
            ip.trim_matches(|c| c == '[' || c == ']').to_string(),
            port.parse().unwrap_or(5051),
        ),
        None => (address.to_string(), 5051),
    }
}

impl Framework {
    /// A framework the master starts to know of: subscribed on `stream`
    /// (active, registered `now`), or, without a stream, recovered from an
    /// agent's report (inactive until it subscribes).
    pub(crate) fn new(
        id: FrameworkId,
        info: &v1::FrameworkInfo,
        stream: Option<StreamId>,
        now: Time,
    ) -> Framework {
        let subscribed = stream.is_some();
        Framework {
            id,
            info: info.clone(),
            caps: Capabilities::of(info),
            roles: crate::validation::framework_roles(info),
            stream,
            active: subscribed,
            recovered: !subscribed,
            registered_time: subscribed.then_some(now),
            reregistered_time: None,
            unregistered_time: None,
            failover_deadline: None,
            tasks: BTreeMap::new(),
            unreachable_tasks: BTreeMap::new(),
            completed_tasks: Default::default(),
            offers: BTreeSet::new(),
            executors: BTreeMap::new(),
            suppressed_roles: BTreeSet::new(),
        }
    }

    /// The state a legacy framework would be told for `state`.
    #[allow(dead_code)]
    pub(crate) fn visible_state(&self, state: TaskState) -> TaskState {
        if !self.caps.partition_aware && needs_partition_awareness(state) {
            TaskState::TaskLost
        } else {
            state
        }
    }
}

impl Agent {
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some() && self.state == AgentState::Registered
    }
}

impl Task {
    #[allow(dead_code)]
    pub(crate) fn framework(&self) -> FrameworkId {
        FrameworkId::from(&self.proto.framework_id)
    }
}
