//! Talking with the master: registering (with everything running, so a new
//! master learns the agent's tasks), and what the master asks.

use std::collections::BTreeMap;

use agora_proto::executor;
use agora_proto::internal::{
    MasterMessage, Pong, Register, RunningExecutor, agent_message, master_message,
};
use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState};
use tracing::{debug, error, info, warn};

use crate::updates::Acked;
use crate::{Agent, Checkpoint, ExecutorKey, Kind, Output, Overlay, TaskRecord, Time};

impl Agent {
    /// This agent as the master and its executors see it.
    pub fn agent_info(&self) -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: self.config.hostname.clone(),
            port: Some(
                self.config
                    .advertise
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(5051),
            ),
            resources: self.config.resources.to_protos(),
            attributes: self.config.attributes.clone(),
            id: self.id.as_ref().map(|id| v1::AgentId { value: id.clone() }),
            domain: None,
        }
    }

    /// Registers (or re-registers) on a new master connection, reporting
    /// every task and custom executor.
    pub(crate) fn master_connected(&mut self) {
        let mut tasks = Vec::new();
        let mut executors = Vec::new();
        for ((framework, _), (executor, kind, t)) in &self.ended {
            tasks.push(self.task_proto(framework, executor, *kind, t));
        }
        for e in self.executors.values() {
            for t in e.tasks.values() {
                tasks.push(self.task_proto(&e.framework, &e.id, e.kind, t));
            }
            if e.kind == Kind::Custom {
                executors.push(RunningExecutor {
                    framework_id: v1::FrameworkId {
                        value: e.framework.clone(),
                    },
                    executor_info: e.info.clone(),
                });
            }
        }
        let register = Register {
            agent_info: self.agent_info(),
            address: self.config.advertise.clone(),
            version: Some(agora_proto::MESOS_VERSION.to_string()),
            tasks,
            executors,
            frameworks: self.frameworks.values().cloned().collect(),
            epoch: (self.epoch > 0).then_some(self.epoch),
        };
        self.connected = true;
        self.send_master(agent_message::Message::Register(register));
    }

    fn task_proto(&self, framework: &str, executor: &str, kind: Kind, t: &TaskRecord) -> v1::Task {
        let key = (framework.to_string(), t.info.task_id.value.clone());
        v1::Task {
            name: t.info.name.clone(),
            task_id: t.info.task_id.clone(),
            framework_id: v1::FrameworkId {
                value: framework.to_string(),
            },
            executor_id: (kind != Kind::Command).then(|| v1::ExecutorId {
                value: executor.to_string(),
            }),
            agent_id: v1::AgentId {
                value: self.id.clone().unwrap_or_default(),
            },
            state: self.updates.latest_state(&key).unwrap_or(t.state) as i32,
            resources: t.info.resources.clone(),
            labels: t.info.labels.clone(),
            discovery: t.info.discovery.clone(),
            container: t.info.container.clone(),
            health_check: t.info.health_check.clone(),
            kill_policy: t.info.kill_policy,
            ..Default::default()
        }
    }

    pub(crate) fn master_message(&mut self, now: Time, m: MasterMessage) {
        if m.epoch < self.epoch {
            warn!(
                epoch = m.epoch,
                newest = self.epoch,
                "ignoring a message from a deposed master"
            );
            return;
        }
        self.epoch = m.epoch;
        let Some(message) = m.message else { return };
        use master_message::Message as M;
        match message {
            M::Registered(r) => {
                let first = self.id.is_none();
                self.id = Some(r.agent_id.value.clone());
                self.master_info = Some(r.master_info);
                self.out.push(Output::PersistId(r.agent_id.value.clone()));
                info!(agent.id = %r.agent_id.value, first, "registered with the master");
                self.updates.resend_all();
                self.flush_updates(now);
            }
            M::RunTask(run) => {
                debug!(task.id = %run.task.task_id.value, "run task");
                let fid = framework_id(&run.framework_info);
                self.frameworks
                    .insert(fid.clone(), run.framework_info.clone());
                self.run_task(now, fid, run.task);
            }
            M::RunTaskGroup(run) => {
                let fid = framework_id(&run.framework_info);
                self.frameworks
                    .insert(fid.clone(), run.framework_info.clone());
                self.run_group(now, fid, run.executor, run.task_group);
            }
            M::KillTask(k) => {
                self.kill_task(now, &k.framework_id.value, &k.task_id.value, k.kill_policy)
            }
            M::Acknowledge(a) => {
                let key = (a.framework_id.value.clone(), a.task_id.value.clone());
                if let Acked::Head {
                    terminal: true,
                    drained,
                } = self.updates.acknowledge(&key, &a.uuid)
                    && drained
                {
                    self.retire_task(&key.0, &key.1);
                }
                self.flush_updates(now);
            }
            M::ShutdownExecutor(s) => {
                let key = (s.framework_id.value.clone(), s.executor_id.value.clone());
                self.shutdown_executor(now, &key);
            }
            M::ShutdownFramework(s) => self.shutdown_framework(now, &s.framework_id.value),
            M::FrameworkMessage(m) => {
                let key = (m.framework_id.value.clone(), m.executor_id.value.clone());
                self.send_executor(
                    &key,
                    executor::Event {
                        r#type: Some(executor::event::Type::Message as i32),
                        message: Some(executor::event::Message { data: m.data }),
                        ..Default::default()
                    },
                );
            }
            M::Ping(p) => self.send_master(agent_message::Message::Pong(Pong {
                sequence: p.sequence,
            })),
            M::Overlay(o) => self.overlay_changed(o),
            M::CheckpointResources(c) => match Resources::from_protos(&c.total) {
                Ok(total) => {
                    info!(resources = %total, "resources changed by an operation");
                    self.config.resources = total.clone();
                    self.out.push(Output::CheckpointResources(total));
                }
                Err(e) => warn!(error = %e, "the master sent resources that are not valid"),
            },
            M::ShutdownAgent(s) => {
                let why = s.message.unwrap_or_default();
                error!(reason = %why, "the master refused this agent");
                self.refused = Some(why);
                if self.overlay.take().is_some() {
                    self.out.push(Output::RemoveOverlay);
                }
                let keys: Vec<ExecutorKey> = self.executors.keys().cloned().collect();
                for key in keys {
                    self.shutdown_executor(now, &key);
                }
            }
        }
    }

    /// The master described the overlay (whole, after registration) or
    /// what changed in it.
    fn overlay_changed(&mut self, o: agora_proto::internal::Overlay) {
        let overlay = match (o.network, self.overlay.take()) {
            (Some(network), _) => Overlay {
                network,
                peers: BTreeMap::new(),
                keys: Vec::new(),
                primary_key: None,
            },
            (None, Some(known)) => known,
            (None, None) => {
                warn!("an overlay change before the overlay itself: ignored");
                return;
            }
        };
        let mut overlay = overlay;
        for id in &o.removed {
            overlay.peers.remove(id);
        }
        for peer in o.peers {
            overlay.peers.insert(peer.agent_id.clone(), peer);
        }
        if !o.keys.is_empty() {
            overlay.keys = o.keys.into_iter().map(|k| (k.id, k.key)).collect();
            overlay.primary_key = o.primary_key;
        }
        info!(
            subnet = %overlay.network.subnet,
            peers = overlay.peers.len(),
            "overlay network"
        );
        self.out.push(Output::Overlay(Box::new(overlay.clone())));
        self.overlay = Some(overlay);
    }

    fn shutdown_framework(&mut self, now: Time, fid: &str) {
        info!(framework.id = %fid, "shutting down framework");
        let keys: Vec<ExecutorKey> = self
            .executors
            .keys()
            .filter(|(f, _)| f == fid)
            .cloned()
            .collect();
        for key in keys {
            self.shutdown_executor(now, &key);
        }
        self.updates.remove_framework(fid);
        self.ended.retain(|(f, _), _| f != fid);
        self.frameworks.remove(fid);
        self.checkpoint(Checkpoint::RemoveFramework(fid.to_string()));
    }

    // ------------------------------------------------------- status updates

    /// An update the agent itself produces (source AGENT, with a uuid).
    pub(crate) fn agent_update(
        &mut self,
        now: Time,
        framework: &str,
        task: &v1::TaskInfo,
        state: TaskState,
        reason: v1::task_status::Reason,
        message: &str,
    ) {
        let status = v1::TaskStatus {
            task_id: task.task_id.clone(),
            state: state as i32,
            message: Some(message.to_string()),
            source: Some(v1::task_status::Source::Agent as i32),
            reason: Some(reason as i32),
            agent_id: self.id.as_ref().map(|id| v1::AgentId { value: id.clone() }),
            executor_id: task.executor.as_ref().map(|e| e.executor_id.clone()),
            timestamp: Some(now.as_secs_f64()),
            uuid: Some(self.uuid().as_bytes().to_vec()),
            ..Default::default()
        };
        self.enqueue(now, framework, status);
    }

    pub(crate) fn enqueue(&mut self, now: Time, framework: &str, mut status: v1::TaskStatus) {
        self.add_network_infos(framework, &mut status);
        let key = (framework.to_string(), status.task_id.value.clone());
        let update = agora_proto::internal::StatusUpdate {
            framework_id: v1::FrameworkId {
                value: framework.to_string(),
            },
            latest_state: Some(status.state),
            status,
        };
        self.updates.push(key, update);
        self.flush_updates(now);
    }

    /// The addresses of the task's container, in `container_status` as
    /// Mesos reports them on every update.
    fn add_network_infos(&self, framework: &str, status: &mut v1::TaskStatus) {
        let executor = status
            .executor_id
            .as_ref()
            .map_or(&status.task_id.value, |e| &e.value);
        let Some(e) = self
            .executors
            .get(&(framework.to_string(), executor.clone()))
            .filter(|e| !e.networks.is_empty())
        else {
            return;
        };
        let c = status
            .container_status
            .get_or_insert_with(v1::ContainerStatus::default);
        // The container's networks win over what the executor guessed (its
        // agent's address), as Mesos merges the containerizer's status.
        c.network_infos = e.networks.clone();
        if c.container_id.is_none() {
            c.container_id = Some(v1::ContainerId {
                value: e.container.clone(),
                parent: None,
            });
        }
    }

    pub(crate) fn flush_updates(&mut self, now: Time) {
        if !self.connected || self.id.is_none() {
            return;
        }
        for mut u in self.updates.due(now) {
            debug!(task.id = %u.status.task_id.value, state = ?u.status.state(), "forwarding status update");
            let key = (u.framework_id.value.clone(), u.status.task_id.value.clone());
            u.latest_state = self
                .updates
                .latest_state(&key)
                .map(|s| s as i32)
                .or(u.latest_state);
            self.send_master(agent_message::Message::StatusUpdate(u));
        }
    }
}

fn framework_id(info: &v1::FrameworkInfo) -> String {
    info.id
        .as_ref()
        .map(|i| i.value.clone())
        .unwrap_or_default()
}
