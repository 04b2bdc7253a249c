//! How executors and tasks end: kills, shutdowns, exits, timeouts, and what
//! a restarted agent finds again (recovery).

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::executor;
use agora_proto::internal::{ExecutorExited, agent_message};
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState, task_status::Reason};
use tracing::{info, warn};

use crate::{
    Agent, Checkpoint, Container, Executor, ExecutorKey, Kind, Launch, MAX_COMPLETED, Output,
    RecoveredFramework, TaskRecord, Time,
};

/// How often an executor that was destroyed and has not exited yet is
/// destroyed again.
const DESTROY_RETRY: Duration = Duration::from_secs(1);

impl Agent {
    pub(crate) fn kill_task(
        &mut self,
        now: Time,
        framework: &str,
        task: &str,
        policy: Option<v1::KillPolicy>,
    ) {
        let Some(key) = self.executor_of(framework, task) else {
            let info = v1::TaskInfo {
                task_id: v1::TaskId { value: task.into() },
                ..Default::default()
            };
            self.agent_update(
                now,
                framework,
                &info,
                TaskState::TaskDropped,
                Reason::TaskUnknown,
                "Task is unknown to the agent",
            );
            return;
        };
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        let Some(record) = e.tasks.get_mut(task) else {
            return;
        };
        if is_terminal(record.state) {
            return;
        }
        if !record.delivered {
            // Not yet with its executor: the agent ends it itself.
            let info = record.info.clone();
            e.queued.retain(|l| match l {
                Launch::Task(t) => t.task_id.value != task,
                Launch::Group(g) => g.tasks.iter().all(|t| t.task_id.value != task),
            });
            record.state = TaskState::TaskKilled;
            let nothing_left = e
                .tasks
                .values()
                .all(|t| is_terminal(t.state) || !t.delivered)
                && e.queued.is_empty();
            self.agent_update(
                now,
                framework,
                &info,
                TaskState::TaskKilled,
                Reason::TaskKilledDuringLaunch,
                "Task killed before it was delivered to the executor",
            );
            if nothing_left {
                self.destroy_executor(now, &key, None);
            }
            return;
        }
        record.killing = true;
        let delivered = self.send_executor(
            &key,
            executor::Event {
                r#type: Some(executor::event::Type::Kill as i32),
                kill: Some(executor::event::Kill {
                    task_id: v1::TaskId { value: task.into() },
                    kill_policy: policy,
                }),
                ..Default::default()
            },
        );
        if !delivered {
            // The executor is not listening: destroy it; its tasks end as killed.
            self.destroy_executor(now, &key, None);
        }
    }

    /// The executor holding `task` of `framework`.
    fn executor_of(&self, framework: &str, task: &str) -> Option<ExecutorKey> {
        self.executors
            .iter()
            .find(|((f, _), e)| f == framework && e.tasks.contains_key(task))
            .map(|(k, _)| k.clone())
    }

    /// Asks an executor to shut down, with its grace period before it is
    /// destroyed (at once when it cannot be asked).
    pub(crate) fn shutdown_executor(&mut self, now: Time, key: &ExecutorKey) {
        let sent = self.send_executor(
            key,
            executor::Event {
                r#type: Some(executor::event::Type::Shutdown as i32),
                ..Default::default()
            },
        );
        let grace = self.config.executor_shutdown_grace_period;
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        for t in e.tasks.values_mut() {
            t.killing = true;
        }
        if sent {
            e.kill_at.get_or_insert(now + grace);
        } else {
            self.destroy_executor(now, key, None);
        }
    }

    pub(crate) fn destroy_executor(
        &mut self,
        now: Time,
        key: &ExecutorKey,
        reason: Option<Reason>,
    ) {
        if let Some(e) = self.executors.get_mut(key) {
            if e.destroy_reason.is_none() {
                e.destroy_reason = reason;
            }
            e.kill_at = Some(now + DESTROY_RETRY);
            let destroy = Output::Destroy {
                pid: e.pid,
                dir: e.dir.clone(),
            };
            self.out.push(destroy);
        }
    }

    /// An executor's process ended: its unfinished tasks end with it.
    pub(crate) fn executor_exited(
        &mut self,
        now: Time,
        key: ExecutorKey,
        container: &str,
        status: Option<i32>,
    ) {
        let Some(e) = self.remove_run(&key, container) else {
            return;
        };
        let (framework, executor) = key.clone();
        if let Some(stream) = e.stream {
            self.out.push(Output::CloseStream(stream));
        }
        // Anything it started is gone with it, and then its networks.
        self.out.push(Output::KillLeftovers { dir: e.dir.clone() });
        if e.joins_networks {
            self.out.push(Output::LeaveNetworks {
                container: e.container.clone(),
            });
        }
        if e.checkpoint {
            self.checkpoint(Checkpoint::RemoveExecutor(key.clone()));
        }
        let docker = e.tasks.values().any(|t| {
            t.info
                .container
                .as_ref()
                .is_some_and(|c| c.r#type() == v1::container_info::Type::Docker)
        });
        if docker && self.config.docker() {
            self.out.push(Output::ListContainers {
                of: Some(key.clone()),
            });
        }
        info!(framework.id = %framework, executor.id = %executor, ?status, "executor exited");
        for t in e.tasks.values() {
            if is_terminal(t.state) {
                continue;
            }
            let (state, reason, message) = if t.killing {
                (
                    TaskState::TaskKilled,
                    Reason::ExecutorTerminated,
                    "Task was killed".to_string(),
                )
            } else if let Some(r) = e.destroy_reason {
                (
                    TaskState::TaskFailed,
                    r,
                    "Executor did not register in time".to_string(),
                )
            } else {
                (
                    TaskState::TaskFailed,
                    Reason::ExecutorTerminated,
                    format!("Executor terminated ({})", describe_wait(status)),
                )
            };
            self.agent_update(now, &framework, &t.info, state, reason, &message);
        }
        for t in e.tasks.values() {
            let task_key = (framework.clone(), t.info.task_id.value.clone());
            if self.updates.has_pending(&task_key) {
                self.ended
                    .insert(task_key, (e.id.clone(), e.kind, t.clone()));
            } else {
                self.push_completed(&framework, &t.info, t.state);
            }
        }
        self.send_master(agent_message::Message::ExecutorExited(ExecutorExited {
            framework_id: v1::FrameworkId { value: framework },
            executor_id: v1::ExecutorId { value: executor },
            status,
        }));
    }

    fn push_completed(&mut self, framework: &str, info: &v1::TaskInfo, state: TaskState) {
        *self.terminated.entry(state).or_default() += 1;
        self.completed_tasks
            .push_back((framework.to_string(), info.clone(), state));
        while self.completed_tasks.len() > MAX_COMPLETED {
            self.completed_tasks.pop_front();
        }
    }

    /// A task whose terminal update was acknowledged.
    pub(crate) fn retire_task(&mut self, framework: &str, task: &str) {
        if let Some((_, _, record)) = self
            .ended
            .remove(&(framework.to_string(), task.to_string()))
        {
            self.push_completed(framework, &record.info, record.state);
            return;
        }
        if let Some(key) = self.executor_of(framework, task)
            && let Some(record) = self
                .executors
                .get_mut(&key)
                .and_then(|e| e.tasks.remove(task))
        {
            self.checkpoint(Checkpoint::RemoveTask {
                key: key.clone(),
                task: task.to_string(),
            });
            self.push_completed(framework, &record.info, record.state);
        }
    }

    // ----------------------------------------------------------- recovery

    /// Takes back the executors a previous run of this agent left running
    /// (for checkpointing frameworks): live ones wait for their executor to
    /// subscribe again; dead ones end their tasks. Docker containers of
    /// executors that are gone are removed.
    pub(crate) fn recover(&mut self, now: Time, frameworks: Vec<RecoveredFramework>) {
        let mut adopted = 0;
        let mut gone = Vec::new();
        for f in frameworks {
            let fid = f.info.id.clone().map(|i| i.value).unwrap_or_default();
            self.frameworks.insert(fid.clone(), f.info.clone());
            for r in f.executors {
                let eid = r.info.executor_id.value.clone();
                let key = (fid.clone(), eid.clone());
                let tasks = r
                    .tasks
                    .into_iter()
                    .map(|(info, state)| {
                        let record = TaskRecord {
                            info,
                            state,
                            delivered: true,
                            killing: false,
                        };
                        (record.info.task_id.value.clone(), record)
                    })
                    .collect::<BTreeMap<_, _>>();
                self.executors.insert(
                    key.clone(),
                    Executor {
                        framework: fid.clone(),
                        id: eid.clone(),
                        info: r.info,
                        kind: Kind::parse(&r.run.kind).unwrap_or(Kind::Custom),
                        container: r.run.container.clone(),
                        dir: r.run.dir.clone(),
                        pid: Some(r.run.pid),
                        stream: None,
                        queued: Vec::new(),
                        tasks,
                        started: now,
                        subscribed_once: false,
                        kill_at: None,
                        destroy_reason: None,
                        checkpoint: true,
                        joins_networks: !r.run.networks.is_empty(),
                        networks: r.run.networks.clone(),
                    },
                );
                if r.alive {
                    adopted += 1;
                    info!(framework.id = %fid, executor.id = %eid, pid = r.run.pid, "recovered a running executor; waiting for it to subscribe again");
                    self.out.push(Output::Watch {
                        key,
                        container: r.run.container,
                        pid: r.run.pid,
                        start: r.run.start,
                    });
                } else {
                    gone.push((key, r.run.container));
                }
            }
        }
        for (key, container) in gone {
            warn!(framework.id = %key.0, executor.id = %key.1, "an executor exited while the agent was down");
            self.executor_exited(now, key, &container, None);
        }
        if adopted > 0 || !self.executors.is_empty() {
            info!(adopted, "agent recovery done");
        }
        if self.config.docker() {
            self.out.push(Output::ListContainers { of: None });
        }
    }

    /// Containers whose executor this agent no longer runs are orphans:
    /// removed (stopped first).
    pub(crate) fn remove_orphans(&mut self, list: Vec<Container>) {
        let orphans: Vec<Container> = list
            .into_iter()
            .filter(|c| {
                !self
                    .executors
                    .contains_key(&(c.framework.clone(), c.executor.clone()))
            })
            .collect();
        if !orphans.is_empty() {
            self.out.push(Output::RemoveContainers(orphans));
        }
    }

    // --------------------------------------------------------------- timer

    pub(crate) fn tick(&mut self, now: Time) {
        self.flush_updates(now);
        let timeout = self.config.executor_registration_timeout;
        let mut late = Vec::new();
        let mut overdue = Vec::new();
        for (key, e) in &self.executors {
            if !e.subscribed_once && e.kill_at.is_none() && now.since(e.started) >= timeout {
                late.push(key.clone());
            }
            if e.kill_at.is_some_and(|k| now >= k) {
                overdue.push(key.clone());
            }
        }
        for key in late {
            warn!(framework.id = %key.0, executor.id = %key.1, "executor did not subscribe in time; destroying it");
            self.destroy_executor(now, &key, Some(Reason::ExecutorRegistrationTimeout));
        }
        for key in overdue {
            if let Some(e) = self.executors.get_mut(&key) {
                let destroy = Output::Destroy {
                    pid: e.pid,
                    dir: e.dir.clone(),
                };
                e.kill_at = Some(now + DESTROY_RETRY);
                self.out.push(destroy);
            }
        }
    }
}

/// A wait status as words.
fn describe_wait(status: Option<i32>) -> String {
    match status {
        None => "unknown status".into(),
        Some(s) if s & 0x7f == 0 => format!("exited with status {}", (s >> 8) & 0xff),
        Some(s) => format!("terminated by signal {}", s & 0x7f),
    }
}
