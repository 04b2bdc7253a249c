//! A test harness for the agent core: a virtual clock, a simulated master
//! and executors, and a record of every output.

use std::time::Duration;

use agora_agent_core::{Agent, CallError, Config, ExecutorKey, Input, Output, StreamId, Time};
use agora_proto::executor;
use agora_proto::internal::{
    AcknowledgeUpdate, AgentMessage, KillTask, MasterMessage, Register, Registered, RunTask,
    StatusUpdate, agent_message, master_message,
};
use agora_proto::v1::{self, TaskState};

pub const AGENT: &str = "A-S0";

pub struct Harness {
    pub agent: Agent,
    pub now: Time,
    pub epoch: u64,
    next_stream: u64,
    next_uuid: u8,
    /// Every output so far, in order.
    pub log: Vec<Output>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(config())
    }

    pub fn with_config(config: Config) -> Self {
        Harness {
            agent: Agent::new(config, None, 7),
            now: Time::from_secs(1_700_000_000),
            epoch: 1,
            next_stream: 0,
            next_uuid: 0,
            log: Vec::new(),
        }
    }

    /// Hands one input to the agent; returns (and records) its outputs.
    pub fn input(&mut self, input: Input) -> Vec<Output> {
        let out = self.agent.handle(self.now, input);
        self.log.extend(out.iter().cloned());
        out
    }

    /// Lets `d` pass, ticking at every deadline on the way, as the shell does.
    pub fn advance(&mut self, d: Duration) -> Vec<Output> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.agent.next_deadline().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            out.extend(self.input(Input::Tick));
        }
        self.now = end;
        out
    }

    pub fn master(&mut self, message: master_message::Message) -> Vec<Output> {
        let m = MasterMessage {
            epoch: self.epoch,
            message: Some(message),
        };
        self.input(Input::Master(Box::new(m)))
    }

    /// Connects and registers: the Register sent, and the agent's id given.
    pub fn register(&mut self) -> Register {
        let out = self.input(Input::MasterConnected);
        let register = registers(&out).pop().expect("the agent registers");
        self.registered();
        register
    }

    /// The master's REGISTERED, giving the agent its id.
    pub fn registered(&mut self) -> Vec<Output> {
        self.master(master_message::Message::Registered(Registered {
            agent_id: v1::AgentId {
                value: AGENT.into(),
            },
            master_info: v1::MasterInfo::default(),
            ping_interval_seconds: None,
        }))
    }

    /// RUN_TASK of a command task of `framework`.
    pub fn run_task(&mut self, framework: &str, task: &str, checkpoint: bool) -> Vec<Output> {
        self.master(master_message::Message::RunTask(RunTask {
            framework_info: framework_info(framework, checkpoint),
            task: task_info(task),
        }))
    }

    /// Answers the last Spawn in `out` as the shell does when it started.
    pub fn spawned(&mut self, out: &[Output], pid: u32) -> (ExecutorKey, Vec<Output>) {
        let spawn = spawns(out).pop().expect("an executor is spawned");
        let key = spawn.key.clone();
        let more = self.input(Input::Spawned {
            key: spawn.key,
            container: spawn.container,
            pid: Some(pid),
            start: Some(1000 + u64::from(pid)),
            // Each network gives the container 10.200.0.<pid>.
            networks: spawn
                .networks
                .iter()
                .map(|n| agora_proto::v1::NetworkInfo {
                    ip_addresses: vec![agora_proto::v1::network_info::IpAddress {
                        ip_address: Some(format!("10.200.0.{}", pid % 250)),
                        ..Default::default()
                    }],
                    ..n.clone()
                })
                .collect(),
        });
        (key, more)
    }

    pub fn subscribe(&mut self, key: &ExecutorKey) -> (StreamId, Vec<Output>) {
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        let out = self.input(Input::ExecutorSubscribe {
            stream,
            call: executor_call(key, executor::call::Type::Subscribe),
        });
        (stream, out)
    }

    /// The executor's UPDATE of `task`: the reply and its uuid.
    pub fn update(
        &mut self,
        key: &ExecutorKey,
        task: &str,
        state: TaskState,
    ) -> (Result<(), CallError>, Vec<u8>) {
        self.next_uuid += 1;
        let uuid = vec![self.next_uuid; 16];
        let mut call = executor_call(key, executor::call::Type::Update);
        call.update = Some(executor::call::Update {
            status: v1::TaskStatus {
                task_id: v1::TaskId { value: task.into() },
                state: state as i32,
                uuid: Some(uuid.clone()),
                source: Some(v1::task_status::Source::Executor as i32),
                ..Default::default()
            },
        });
        let out = self.input(Input::ExecutorCall(call));
        (reply(&out), uuid)
    }

    pub fn ack(&mut self, framework: &str, task: &str, uuid: &[u8]) -> Vec<Output> {
        self.master(master_message::Message::Acknowledge(AcknowledgeUpdate {
            framework_id: v1::FrameworkId {
                value: framework.into(),
            },
            task_id: v1::TaskId { value: task.into() },
            uuid: uuid.to_vec(),
        }))
    }

    pub fn kill(&mut self, framework: &str, task: &str) -> Vec<Output> {
        self.master(master_message::Message::KillTask(KillTask {
            framework_id: v1::FrameworkId {
                value: framework.into(),
            },
            task_id: v1::TaskId { value: task.into() },
            kill_policy: None,
        }))
    }

    /// The executor's process exited.
    pub fn exited(&mut self, key: &ExecutorKey, status: Option<i32>) -> Vec<Output> {
        let container = self
            .agent
            .executor(key)
            .map(|e| e.container.clone())
            .expect("the executor runs");
        self.input(Input::Exited {
            key: key.clone(),
            container,
            status,
        })
    }

    /// A running command task with a subscribed executor: (key, stream).
    pub fn running_task(&mut self, framework: &str, task: &str) -> (ExecutorKey, StreamId) {
        let out = self.run_task(framework, task, false);
        let (key, _) = self.spawned(&out, 100);
        let (stream, _) = self.subscribe(&key);
        let (r, uuid) = self.update(&key, task, TaskState::TaskRunning);
        assert_eq!(r, Ok(()));
        self.ack(framework, task, &uuid);
        (key, stream)
    }
}

pub fn config() -> Config {
    Config {
        work_dir: "/w".into(),
        executor_path: "/bin/agora".into(),
        ..Config::default()
    }
}

pub fn framework_info(framework: &str, checkpoint: bool) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        id: Some(v1::FrameworkId {
            value: framework.into(),
        }),
        name: "fw".into(),
        user: "nobody".into(),
        checkpoint: Some(checkpoint),
        ..Default::default()
    }
}

pub fn task_info(task: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: task.into(),
        task_id: v1::TaskId { value: task.into() },
        agent_id: v1::AgentId {
            value: AGENT.into(),
        },
        command: Some(v1::CommandInfo {
            value: Some("sleep 1000".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn executor_call(key: &ExecutorKey, kind: executor::call::Type) -> executor::Call {
    executor::Call {
        framework_id: v1::FrameworkId {
            value: key.0.clone(),
        },
        executor_id: v1::ExecutorId {
            value: key.1.clone(),
        },
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

// ----------------------------------------------------------- reading outputs

pub fn to_master(out: &[Output]) -> Vec<agent_message::Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToMaster(m) => {
                let AgentMessage { message } = (**m).clone();
                message
            }
            _ => None,
        })
        .collect()
}

pub fn registers(out: &[Output]) -> Vec<Register> {
    to_master(out)
        .into_iter()
        .filter_map(|m| match m {
            agent_message::Message::Register(r) => Some(r),
            _ => None,
        })
        .collect()
}

pub fn updates(out: &[Output]) -> Vec<StatusUpdate> {
    to_master(out)
        .into_iter()
        .filter_map(|m| match m {
            agent_message::Message::StatusUpdate(u) => Some(u),
            _ => None,
        })
        .collect()
}

/// (task, state, reason) of each status update sent.
pub fn states(out: &[Output]) -> Vec<(String, TaskState, Option<v1::task_status::Reason>)> {
    updates(out)
        .into_iter()
        .map(|u| {
            let reason = u.status.reason.map(|_| u.status.reason());
            (u.status.task_id.value.clone(), u.status.state(), reason)
        })
        .collect()
}

pub fn spawns(out: &[Output]) -> Vec<agora_agent_core::Spawn> {
    out.iter()
        .filter_map(|o| match o {
            Output::Spawn(s) => Some((**s).clone()),
            _ => None,
        })
        .collect()
}

/// The events sent on `stream`, by type.
pub fn events(out: &[Output], stream: StreamId) -> Vec<executor::event::Type> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToExecutor { stream: s, event } if *s == stream => Some(event.r#type()),
            _ => None,
        })
        .collect()
}

pub fn destroyed(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Destroy { .. }))
        .count()
}

pub fn reply(out: &[Output]) -> Result<(), CallError> {
    out.iter()
        .find_map(|o| match o {
            Output::Reply(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a call is answered")
}
