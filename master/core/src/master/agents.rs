//! Agent messages: registration and re-registration, status updates,
//! executor exits, pings. An agent's first message on a connection must be
//! `Register`.

use std::collections::{BTreeMap, BTreeSet};

use agora_proto::internal::{
    AgentMessage, KillTask, Ping, Register, Registered, StatusUpdate, agent_message, master_message,
};
use agora_proto::resources::Resources;
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use agora_proto::{operator, scheduler as sched};

use super::{Agent, AgentState, Framework, Master, Output, Task};
use crate::ids::{AgentId, ConnId, ExecutorId, FrameworkId, OfferId, TaskId};
use crate::time::Time;
use crate::validation::Capabilities;

/// A task an agent brought back: (framework, task, state, executor).
type Readded = (FrameworkId, TaskId, TaskState, Option<v1::ExecutorId>);

impl Master {
    pub(crate) fn agent_message(&mut self, now: Time, conn: ConnId, message: AgentMessage) {
        let Some(message) = message.message else {
            return;
        };
        if let agent_message::Message::Register(register) = message {
            self.register_agent(now, conn, register);
            return;
        }
        let Some(agent) = self.conns.get(&conn).cloned() else {
            // Anything before Register on a connection is refused.
            self.shutdown_agent_conn(conn, "the first message on a connection must be Register");
            return;
        };
        match message {
            agent_message::Message::Register(_) => unreachable!("handled above"),
            agent_message::Message::StatusUpdate(update) => self.status_update(now, &agent, update),
            agent_message::Message::ExecutorExited(exited) => {
                let framework = FrameworkId::from(&exited.framework_id);
                let executor = ExecutorId::from(&exited.executor_id);
                self.executor_exited(now, &agent, &framework, &executor, exited.status);
            }
            agent_message::Message::ExecutorMessage(m) => {
                let framework = FrameworkId::from(&m.framework_id);
                self.send(
                    &framework,
                    sched::Event {
                        r#type: Some(sched::event::Type::Message as i32),
                        message: Some(sched::event::Message {
                            agent_id: agent.to_proto(),
                            executor_id: m.executor_id,
                            data: m.data,
                        }),
                        ..Default::default()
                    },
                );
            }
            agent_message::Message::Pong(_) => {
                if let Some(a) = self.agents.get_mut(&agent) {
                    a.pong_pending = false;
                    a.missed_pongs = 0;
                }
            }
        }
    }

    fn register_agent(&mut self, now: Time, conn: ConnId, register: Register) {
        if register.epoch.is_some_and(|e| e > self.epoch) {
            // The agent has obeyed a newer leader: this master is stale.
            self.shutdown_agent_conn(conn, "agent has seen a newer master epoch");
            return;
        }
        let mut info = register.agent_info.clone();
        let total = match Resources::from_protos(&info.resources) {
            Ok(r) => r.unallocated(),
            Err(e) => {
                self.shutdown_agent_conn(conn, &format!("invalid agent resources: {e}"));
                return;
            }
        };
        if info.hostname.trim().is_empty() {
            self.shutdown_agent_conn(conn, "agent hostname must not be empty");
            return;
        }
        let id = match &info.id {
            Some(id) => AgentId::from(id),
            None => {
                let id = AgentId::new(format!("{}-S{}", self.info.id, self.next_agent));
                self.next_agent += 1;
                info.id = Some(id.to_proto());
                id
            }
        };
        if self.gone_agents.contains(&id) {
            self.shutdown_agent_conn(conn, "agent was marked gone by an operator");
            return;
        }
        if self.maintenance.is_down(&info.hostname, &register.address) {
            self.shutdown_agent_conn(conn, "machine is down for maintenance");
            return;
        }
        // A previous connection of the same agent is replaced.
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn)
            && old != conn
        {
            self.conns.remove(&old);
            self.out.push(Output::CloseAgent { conn: old });
        }
        // Withdraw its offers; the agent's report is the truth from now on.
        let offers: Vec<OfferId> = self
            .agents
            .get(&id)
            .map(|a| a.offers.iter().cloned().collect())
            .unwrap_or_default();
        for offer in offers {
            self.rescind_offer(now, &offer, None);
        }
        let was_unreachable = self.unreachable_agents.remove(&id).is_some();
        let known = self.agents.remove(&id);
        let mut agent = Agent::registered(
            id.clone(),
            info.clone(),
            &register,
            conn,
            total.clone(),
            now,
            known.as_ref(),
        );
        self.conns.insert(conn, id.clone());

        // Frameworks the agent runs things for, including ones this master
        // has not seen subscribe (after a master restart).
        for finfo in &register.frameworks {
            if let Some(fid) = finfo.id.as_ref().map(FrameworkId::from) {
                self.recover_framework(now, &fid, finfo);
            }
        }
        let reported: BTreeMap<(FrameworkId, TaskId), v1::Task> = register
            .tasks
            .iter()
            .map(|t| {
                (
                    (FrameworkId::from(&t.framework_id), TaskId::from(&t.task_id)),
                    t.clone(),
                )
            })
            .collect();
        // Tasks the master launched there that the agent does not have: the
        // launch was lost.
        let lost: Vec<(FrameworkId, TaskId)> = known
            .iter()
            .flat_map(|k| &k.tasks)
            .filter(|key| !reported.contains_key(*key))
            .cloned()
            .collect();
        let mut used = self.adopt_executors(&id, &mut agent, &register.executors);
        let readded = self.adopt_tasks(now, &id, &mut agent, &reported, was_unreachable, &mut used);
        let active = !agent.deactivated;
        self.agents.insert(id.clone(), agent);
        self.allocator.add_agent(id.clone(), total, used);
        if !active {
            self.allocator.deactivate_agent(&id);
        }
        self.out.push(Output::ToAgent {
            conn,
            message: Box::new(agora_proto::internal::MasterMessage {
                epoch: self.epoch,
                message: Some(master_message::Message::Registered(Registered {
                    agent_id: id.to_proto(),
                    master_info: self.info.clone(),
                    ping_interval_seconds: Some(self.config.agent_ping_timeout.as_secs_f64()),
                })),
            }),
        });
        self.after_registration(now, &id, lost, readded);
        self.drain_resume(now, &id);
        self.overlay_registered(&id, &register.address);
        self.emit_agent_added(&id);
        self.registry_dirty = true;
        self.allocation_requested = true;
    }

    /// Takes in the executors a (re-)registering agent reports; returns
    /// what they use, per framework and role.
    fn adopt_executors(
        &mut self,
        id: &AgentId,
        agent: &mut Agent,
        executors: &[agora_proto::internal::RunningExecutor],
    ) -> Vec<(FrameworkId, String, Resources)> {
        let mut used: Vec<(FrameworkId, String, Resources)> = Vec::new();
        for e in executors {
            let fid = FrameworkId::from(&e.framework_id);
            let eid = ExecutorId::from(&e.executor_info.executor_id);
            let er = Resources::from_protos(&e.executor_info.resources)
                .map(|r| r.unallocated())
                .unwrap_or_default();
            let role = self
                .frameworks
                .get(&fid)
                .and_then(|f| f.roles.first().cloned())
                .unwrap_or_else(|| "*".into());
            if !er.is_empty() {
                used.push((fid.clone(), role.clone(), er.clone()));
            }
            agent.executors.insert(
                (fid.clone(), eid.clone()),
                (e.executor_info.clone(), er, role),
            );
            if let Some(f) = self.frameworks.get_mut(&fid) {
                f.executors
                    .entry(id.clone())
                    .or_default()
                    .insert(eid, e.executor_info.clone());
            }
        }
        used
    }

    /// Takes in the tasks a (re-)registering agent reports (what it says
    /// is the truth); adds what they use to `used` and returns the tasks
    /// whose state frameworks must hear again.
    fn adopt_tasks(
        &mut self,
        now: Time,
        id: &AgentId,
        agent: &mut Agent,
        reported: &BTreeMap<(FrameworkId, TaskId), v1::Task>,
        was_unreachable: bool,
        used: &mut Vec<(FrameworkId, String, Resources)>,
    ) -> Vec<Readded> {
        let mut readded = Vec::new();
        for ((fid, tid), t) in reported {
            let state = t.state();
            let resources = Resources::from_protos(&t.resources)
                .map(|r| r.unallocated())
                .unwrap_or_default();
            let role = t
                .resources
                .iter()
                .find_map(|r| r.allocation_info.as_ref().and_then(|a| a.role.clone()))
                .or_else(|| {
                    self.frameworks
                        .get(fid)
                        .and_then(|f| f.roles.first().cloned())
                })
                .unwrap_or_else(|| "*".into());
            if !self.frameworks.contains_key(fid) {
                let finfo = v1::FrameworkInfo {
                    user: String::new(),
                    name: String::new(),
                    id: Some(fid.to_proto()),
                    ..Default::default()
                };
                self.recover_framework(now, fid, &finfo);
            }
            let f = self.frameworks.get_mut(fid).expect("recovered above");
            let previous = f
                .unreachable_tasks
                .remove(tid)
                .or_else(|| f.tasks.remove(tid));
            let terminal = is_terminal(state);
            if !terminal {
                used.push((fid.clone(), role.clone(), resources.clone()));
            }
            let mut proto = previous
                .as_ref()
                .map(|p| p.proto.clone())
                .unwrap_or_else(|| t.clone());
            proto.state = t.state;
            proto.agent_id = id.to_proto();
            f.tasks.insert(
                tid.clone(),
                Task {
                    proto,
                    agent: id.clone(),
                    role,
                    resources,
                    recovered: terminal,
                    launched: now,
                    update_sent: None,
                },
            );
            if !terminal {
                agent.tasks.insert((fid.clone(), tid.clone()));
            }
            if was_unreachable || previous.as_ref().is_none_or(|p| p.state() != state) {
                readded.push((fid.clone(), tid.clone(), state, t.executor_id.clone()));
            }
        }
        readded
    }

    /// After a registration: tasks the agent never received end, tasks it
    /// brought back are announced, kills asked for meanwhile are sent.
    fn after_registration(
        &mut self,
        now: Time,
        id: &AgentId,
        lost: Vec<(FrameworkId, TaskId)>,
        readded: Vec<Readded>,
    ) {
        for (fid, tid) in lost {
            let caps = self
                .frameworks
                .get(&fid)
                .map(|f| f.caps)
                .unwrap_or_default();
            let state = if caps.partition_aware {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            self.terminate_task(
                now,
                &fid,
                &tid,
                state,
                Reason::ResourcesUnknown,
                "Task was not received by the agent",
            );
        }
        for (fid, tid, state, executor) in readded {
            let caps = self
                .frameworks
                .get(&fid)
                .map(|f| f.caps)
                .unwrap_or_default();
            let mut status = self.master_status(
                now,
                &tid.to_proto(),
                Some(id),
                state,
                Reason::AgentReregistered,
                "Agent re-registered",
            );
            status.executor_id = executor;
            self.forward_status(&fid, caps, status);
        }
        // Kills requested while it was away.
        let kills = self
            .agents
            .get_mut(id)
            .map(|a| std::mem::take(&mut a.pending_kills))
            .unwrap_or_default();
        for (fid, tid, policy) in kills {
            self.send_to_agent(
                id,
                master_message::Message::KillTask(KillTask {
                    framework_id: fid.to_proto(),
                    task_id: tid.to_proto(),
                    kill_policy: policy,
                }),
            );
        }
    }

    /// A framework known only from an agent's report: kept, inactive, until
    /// it subscribes.
    fn recover_framework(&mut self, now: Time, id: &FrameworkId, info: &v1::FrameworkInfo) {
        if self.frameworks.contains_key(id) || self.removed_frameworks.contains(id) {
            return;
        }
        let framework = Framework::new(id.clone(), info, None, now);
        let roles = framework.roles.clone();
        self.frameworks.insert(id.clone(), framework);
        self.allocator.add_framework(
            id.clone(),
            &roles,
            false,
            Capabilities::of(info).gpu_resources,
            &[],
        );
    }

    fn status_update(&mut self, now: Time, agent: &AgentId, update: StatusUpdate) {
        let framework = FrameworkId::from(&update.framework_id);
        if !self.frameworks.contains_key(&framework) {
            self.metrics.invalid_status_updates += 1;
            if self.removed_frameworks.contains(&framework) {
                // Nobody will ever acknowledge it: tell the agent to stop.
                self.send_to_agent(
                    agent,
                    master_message::Message::ShutdownFramework(
                        agora_proto::internal::ShutdownFramework {
                            framework_id: framework.to_proto(),
                        },
                    ),
                );
            }
            return;
        }
        let mut status = update.status;
        if status.agent_id.is_none() {
            status.agent_id = Some(agent.to_proto());
        }
        let latest = update
            .latest_state
            .and_then(|s| TaskState::try_from(s).ok());
        self.drain_reason(agent, &framework, &mut status);
        self.update_task(now, &framework, status, latest);
        self.check_drained(now, agent);
    }

    fn executor_exited(
        &mut self,
        now: Time,
        agent: &AgentId,
        framework: &FrameworkId,
        executor: &ExecutorId,
        status: Option<i32>,
    ) {
        let removed = self
            .agents
            .get_mut(agent)
            .and_then(|a| a.executors.remove(&(framework.clone(), executor.clone())));
        if let Some((_, resources, role)) = removed {
            self.allocator
                .recover(agent, framework, &role, &resources, None, now);
            self.allocation_requested = true;
        }
        if let Some(f) = self.frameworks.get_mut(framework)
            && let Some(e) = f.executors.get_mut(agent)
        {
            e.remove(executor);
        }
        self.send(
            framework,
            sched::Event {
                r#type: Some(sched::event::Type::Failure as i32),
                failure: Some(sched::event::Failure {
                    agent_id: Some(agent.to_proto()),
                    executor_id: Some(executor.to_proto()),
                    status,
                }),
                ..Default::default()
            },
        );
    }

    pub(crate) fn agent_closed(&mut self, now: Time, conn: ConnId) {
        let Some(id) = self.conns.remove(&conn) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(&id) else {
            return;
        };
        if agent.conn != Some(conn) {
            return;
        }
        agent.conn = None;
        // As Mesos: an agent whose connection closed (a restart, or a host
        // that died) has what is left of its ping budget to come back, not
        // agent_reregister_timeout, which is for agents a new leader
        // expects after a failover. Its tasks are not shown running for
        // ten minutes on a host that is gone.
        agent.state = AgentState::Disconnected {
            deadline: now + self.config.agent_ping_timeout * self.config.max_agent_ping_timeouts,
            why: "agent disconnected and did not come back within its ping budget \
                  (agent_ping_timeout x max_agent_ping_timeouts)",
        };
        let offers: Vec<OfferId> = agent.offers.iter().cloned().collect();
        let tasks: Vec<(FrameworkId, TaskId)> = agent.tasks.iter().cloned().collect();
        self.allocator.deactivate_agent(&id);
        for offer in offers {
            self.rescind_offer(now, &offer, None);
        }
        // Tasks of frameworks that do not checkpoint do not survive an agent
        // restart: they are lost now.
        for (fw, task) in tasks {
            let checkpoint = self
                .frameworks
                .get(&fw)
                .is_some_and(|f| f.info.checkpoint.unwrap_or(false));
            if !checkpoint {
                self.terminate_task(
                    now,
                    &fw,
                    &task,
                    TaskState::TaskLost,
                    Reason::AgentDisconnected,
                    "Agent disconnected",
                );
            }
        }
        self.emit_agent_added(&id);
    }

    pub(crate) fn ping_agents(&mut self, now: Time) {
        let max = self.config.max_agent_ping_timeouts;
        let mut unreachable = Vec::new();
        let ids: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| a.is_connected())
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let Some(a) = self.agents.get_mut(&id) else {
                continue;
            };
            if a.pong_pending {
                a.missed_pongs += 1;
                if a.missed_pongs >= max {
                    unreachable.push(id);
                    continue;
                }
            }
            a.pong_pending = true;
            self.send_to_agent(&id, master_message::Message::Ping(Ping { sequence: None }));
        }
        for id in unreachable {
            self.mark_unreachable(now, &id, "agent did not answer pings");
        }
    }

    pub(crate) fn emit_agent_added(&mut self, id: &AgentId) {
        let id = id.clone();
        self.operator_event(|m| operator::Event {
            r#type: Some(operator::event::Type::AgentAdded as i32),
            agent_added: Some(operator::event::AgentAdded {
                agent: m.agent_view(m.agents.get(&id).expect("agent exists")),
            }),
            ..Default::default()
        });
    }
}

impl Agent {
    /// The record of an agent that just (re-)registered on `conn`, keeping
    /// what the master knew of it (`known`) that the agent cannot tell.
    fn registered(
        id: AgentId,
        info: v1::AgentInfo,
        register: &Register,
        conn: ConnId,
        total: Resources,
        now: Time,
        known: Option<&Agent>,
    ) -> Agent {
        let reregistering = register.agent_info.id.is_some();
        Agent {
            id,
            info,
            address: register.address.clone(),
            version: register
                .version
                .clone()
                .unwrap_or_else(|| agora_proto::MESOS_VERSION.to_string()),
            conn: Some(conn),
            state: AgentState::Registered,
            deactivated: known.is_some_and(|k| k.deactivated),
            total,
            registered_time: known.map(|k| k.registered_time).unwrap_or(now),
            reregistered_time: reregistering.then_some(now),
            tasks: BTreeSet::new(),
            offers: BTreeSet::new(),
            executors: BTreeMap::new(),
            pong_pending: false,
            missed_pongs: 0,
            pending_kills: known
                .as_ref()
                .map(|k| k.pending_kills.clone())
                .unwrap_or_default(),
            drain: known.and_then(|k| k.drain.clone()),
        }
    }
}
