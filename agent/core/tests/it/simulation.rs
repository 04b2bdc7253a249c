//! A seeded simulation of the agent core between a simulated master and
//! simulated executor processes: random schedules of tasks launched (alone
//! or several on one custom executor), spawns that fail, executors that
//! subscribe late or never, updates, kills and shutdowns, executors that
//! crash or whose streams drop, master connections lost and regained,
//! acknowledgements dropped, and time passing.
//!
//! After every step: the executors the agent holds are exactly the
//! processes that run (or whose exit it has not heard yet); no task is
//! held by two executors; no update is forwarded again after the master
//! acknowledged it; per task, updates first reach the master in the order
//! they were accepted. At the end, with the connection healed, every
//! process gone and every update acknowledged: every update accepted was
//! delivered, and every task ended with a terminal update.
//!
//! `AGORA_SIM_SEEDS=n` runs n seeds (default 2,000); a failure prints its
//! seed, and `AGORA_SIM_SEED=s` replays just that one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agora_agent_core::{ExecutorKey, Input, Output, StreamId};
use agora_proto::executor::{self, event::Type as Event};
use agora_proto::internal::{
    AcknowledgeUpdate, KillTask, MasterMessage, Registered, RunTask, RunTaskGroup,
    ShutdownExecutor, StatusUpdate, agent_message, master_message,
};
use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState};

use crate::harness::{Harness, config, executor_call, framework_info, task_info};

/// SplitMix64: a small, fixed generator, so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())].clone())
    }
}

/// An executor process as the simulated host sees it.
struct Process {
    container: String,
    /// Still running (false: exited, the agent not yet told).
    running: bool,
    stream: Option<StreamId>,
    /// Tasks launched to it, with the last state it reported.
    tasks: BTreeMap<String, Option<TaskState>>,
    /// Tasks it was asked to kill.
    killing: BTreeSet<String>,
}

struct World {
    h: Harness,
    rng: Rng,
    procs: BTreeMap<ExecutorKey, Process>,
    next_task: u32,
    next_stream: u64,
    next_uuid: u64,
    connected: bool,
    /// Updates the agent accepted, per task, in order (uuid).
    accepted: BTreeMap<(String, String), Vec<Vec<u8>>>,
    /// Updates forwarded to the master and not yet acknowledged.
    inbox: Vec<StatusUpdate>,
    /// Uuids the master acknowledged.
    acked: BTreeSet<Vec<u8>>,
    /// Uuids forwarded at least once, per task in first-forwarding order.
    forwarded: BTreeMap<(String, String), Vec<Vec<u8>>>,
    /// The last state the master heard per task.
    heard: BTreeMap<(String, String), TaskState>,
}

const FRAMEWORKS: [&str; 2] = ["f0", "f1"];

impl World {
    fn new(seed: u64) -> World {
        World {
            h: Harness::with_config(config()),
            rng: Rng(seed),
            procs: BTreeMap::new(),
            next_task: 0,
            next_stream: 0,
            next_uuid: 0,
            connected: false,
            accepted: BTreeMap::new(),
            inbox: Vec::new(),
            acked: BTreeSet::new(),
            forwarded: BTreeMap::new(),
            heard: BTreeMap::new(),
        }
    }

    /// Feeds an input and plays the outputs as the shell and the world do.
    fn feed(&mut self, input: Input) -> Vec<Output> {
        let mut all = Vec::new();
        let mut inputs = std::collections::VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let out = self.h.input(input);
            for o in &out {
                if let Some(next) = self.play(o) {
                    inputs.push_back(next);
                }
            }
            all.extend(out);
        }
        all
    }

    fn play(&mut self, o: &Output) -> Option<Input> {
        match o {
            Output::Spawn(s) => {
                if self.rng.chance(5) {
                    return Some(Input::SpawnFailed {
                        key: s.key.clone(),
                        container: s.container.clone(),
                        error: "simulated".into(),
                    });
                }
                self.procs.insert(
                    s.key.clone(),
                    Process {
                        container: s.container.clone(),
                        running: true,
                        stream: None,
                        tasks: BTreeMap::new(),
                        killing: BTreeSet::new(),
                    },
                );
                Some(Input::Spawned {
                    key: s.key.clone(),
                    container: s.container.clone(),
                    pid: Some(1),
                    start: Some(1),
                    networks: Vec::new(),
                })
            }
            Output::ToMaster(m) => {
                if let Some(agent_message::Message::StatusUpdate(u)) = &m.message {
                    self.forwarded_update(u.clone());
                }
                None
            }
            Output::ToExecutor { stream, event } => {
                self.deliver_event(*stream, event);
                None
            }
            Output::Destroy { dir, .. } => {
                // Its process dies (the agent hears of it later) and its
                // stream ends.
                let key = self
                    .h
                    .agent
                    .executors()
                    .find(|e| e.dir == *dir)
                    .map(|e| (e.framework.clone(), e.id.clone()))?;
                let p = self.procs.get_mut(&key)?;
                p.running = false;
                p.stream.take().map(Input::StreamClosed)
            }
            _ => None,
        }
    }

    fn forwarded_update(&mut self, u: StatusUpdate) {
        let uuid = u.status.uuid.clone().unwrap_or_default();
        assert!(
            !self.acked.contains(&uuid),
            "an update was forwarded again after its acknowledgement"
        );
        let key = (u.framework_id.value.clone(), u.status.task_id.value.clone());
        let seen = self.forwarded.entry(key).or_default();
        if !seen.contains(&uuid) {
            seen.push(uuid);
        }
        if self.connected {
            self.inbox.push(u);
        }
    }

    fn deliver_event(&mut self, stream: StreamId, event: &executor::Event) {
        let Some((_, p)) = self
            .procs
            .iter_mut()
            .find(|(_, p)| p.stream == Some(stream))
        else {
            return;
        };
        match event.r#type() {
            Event::Launch => {
                if let Some(l) = &event.launch {
                    p.tasks.insert(l.task.task_id.value.clone(), None);
                }
            }
            Event::LaunchGroup => {
                if let Some(g) = &event.launch_group {
                    for t in &g.task_group.tasks {
                        p.tasks.insert(t.task_id.value.clone(), None);
                    }
                }
            }
            Event::Kill => {
                if let Some(k) = &event.kill {
                    p.killing.insert(k.task_id.value.clone());
                }
            }
            Event::Shutdown => {
                let all: Vec<String> = p.tasks.keys().cloned().collect();
                p.killing.extend(all);
            }
            _ => {}
        }
    }

    // --------------------------------------------------------------- steps

    fn step(&mut self) {
        match self.rng.below(20) {
            0 | 1 => self.launch(),
            2..=4 => self.subscribe(),
            5..=9 => self.executor_update(),
            10 => self.kill(),
            11 => self.crash(),
            12 => self.reap_destroyed(),
            13 => self.toggle_master(),
            14..=16 => self.acknowledge(),
            17 => self.pass_time(),
            18 => self.drop_stream(),
            _ => self.shutdown_executor(),
        }
        self.check();
    }

    fn master(&mut self, message: master_message::Message) {
        let m = MasterMessage {
            epoch: 1,
            message: Some(message),
        };
        self.feed(Input::Master(Box::new(m)));
    }

    fn launch(&mut self) {
        self.next_task += 1;
        let fw = FRAMEWORKS[self.rng.below(2)];
        let task = format!("t{}", self.next_task);
        let checkpoint = fw == "f1";
        if self.rng.chance(60) {
            self.master(master_message::Message::RunTask(RunTask {
                framework_info: framework_info(fw, checkpoint),
                task: task_info(&task),
            }));
        } else {
            // A task group on one of two shared executors.
            let executor = format!("e{}", self.rng.below(2));
            let mut t = task_info(&task);
            t.command = None;
            self.master(master_message::Message::RunTaskGroup(RunTaskGroup {
                framework_info: framework_info(fw, checkpoint),
                executor: v1::ExecutorInfo {
                    r#type: Some(v1::executor_info::Type::Default as i32),
                    executor_id: v1::ExecutorId { value: executor },
                    ..Default::default()
                },
                task_group: v1::TaskGroupInfo { tasks: vec![t] },
            }));
        }
        self.accepted.entry((fw.to_string(), task)).or_default();
    }

    fn running(&self) -> Vec<ExecutorKey> {
        self.procs
            .iter()
            .filter(|(_, p)| p.running)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn subscribe(&mut self) {
        let unsubscribed: Vec<ExecutorKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.running && p.stream.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(key) = self.rng.pick(&unsubscribed) else {
            return;
        };
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        if let Some(p) = self.procs.get_mut(&key) {
            p.stream = Some(stream);
        }
        let out = self.feed(Input::ExecutorSubscribe {
            stream,
            call: executor_call(&key, executor::call::Type::Subscribe),
        });
        if !out.iter().any(|o| matches!(o, Output::Reply(Ok(()))))
            && let Some(p) = self.procs.get_mut(&key)
        {
            p.stream = None;
        }
    }

    fn executor_update(&mut self) {
        let subscribed: Vec<ExecutorKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.running && p.stream.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(key) = self.rng.pick(&subscribed) else {
            return;
        };
        let p = &self.procs[&key];
        let open: Vec<String> = p
            .tasks
            .iter()
            .filter(|(_, s)| !s.is_some_and(is_terminal))
            .map(|(t, _)| t.clone())
            .collect();
        let Some(task) = self.rng.pick(&open) else {
            return;
        };
        let state = match (p.tasks[&task], p.killing.contains(&task)) {
            (_, true) => TaskState::TaskKilled,
            (None, _) => TaskState::TaskRunning,
            (Some(_), _) => {
                if self.rng.chance(70) {
                    TaskState::TaskFinished
                } else {
                    TaskState::TaskFailed
                }
            }
        };
        self.next_uuid += 1;
        let mut uuid = vec![0u8; 16];
        uuid[..8].copy_from_slice(&self.next_uuid.to_le_bytes());
        uuid[8] = 0xEE;
        let mut call = executor_call(&key, executor::call::Type::Update);
        call.update = Some(executor::call::Update {
            status: v1::TaskStatus {
                task_id: v1::TaskId {
                    value: task.clone(),
                },
                state: state as i32,
                uuid: Some(uuid.clone()),
                ..Default::default()
            },
        });
        let out = self.feed(Input::ExecutorCall(call));
        if out.iter().any(|o| matches!(o, Output::Reply(Ok(())))) {
            if let Some(p) = self.procs.get_mut(&key) {
                p.tasks.insert(task.clone(), Some(state));
            }
            self.accepted
                .entry((key.0.clone(), task))
                .or_default()
                .push(uuid);
        }
        // The executor of a command task, or one with nothing left, exits.
        let done = self.procs.get(&key).is_some_and(|p| {
            !p.tasks.is_empty() && p.tasks.values().all(|s| s.is_some_and(is_terminal))
        });
        if done && self.rng.chance(80) {
            self.exit(&key);
        }
    }

    fn kill(&mut self) {
        let tasks: Vec<(String, String)> = self.accepted.keys().cloned().collect();
        if let Some((fw, task)) = self.rng.pick(&tasks) {
            self.master(master_message::Message::KillTask(KillTask {
                framework_id: v1::FrameworkId { value: fw },
                task_id: v1::TaskId { value: task },
                kill_policy: None,
            }));
        }
    }

    fn shutdown_executor(&mut self) {
        if let Some((fw, ex)) = self.rng.pick(&self.running()) {
            self.master(master_message::Message::ShutdownExecutor(
                ShutdownExecutor {
                    framework_id: v1::FrameworkId { value: fw },
                    executor_id: v1::ExecutorId { value: ex },
                },
            ));
        }
    }

    /// A process dies now; the agent hears of it at once or later.
    fn crash(&mut self) {
        if let Some(key) = self.rng.pick(&self.running()) {
            if let Some(p) = self.procs.get_mut(&key) {
                p.running = false;
                p.stream = None;
            }
            if self.rng.chance(50) {
                self.exit(&key);
            }
        }
    }

    /// The agent hears that `key`'s process exited.
    fn exit(&mut self, key: &ExecutorKey) {
        if let Some(p) = self.procs.remove(key) {
            if let Some(stream) = p.stream {
                self.feed(Input::StreamClosed(stream));
            }
            self.feed(Input::Exited {
                key: key.clone(),
                container: p.container,
                status: Some(9),
            });
        }
    }

    /// Some processes that died (crashed, or destroyed by the agent) are
    /// reaped: the agent hears they exited.
    fn reap_destroyed(&mut self) {
        let dead: Vec<ExecutorKey> = self
            .procs
            .iter()
            .filter(|(_, p)| !p.running)
            .map(|(k, _)| k.clone())
            .collect();
        for key in dead {
            if self.rng.chance(70) {
                self.exit(&key);
            }
        }
    }

    fn toggle_master(&mut self) {
        if self.connected {
            self.connected = false;
            self.inbox.clear();
            self.feed(Input::MasterDisconnected);
        } else {
            self.connected = true;
            self.feed(Input::MasterConnected);
            self.master(master_message::Message::Registered(Registered {
                agent_id: v1::AgentId {
                    value: "A-S0".into(),
                },
                master_info: v1::MasterInfo::default(),
                ping_interval_seconds: None,
            }));
        }
    }

    fn acknowledge(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let u = self.inbox.remove(self.rng.below(self.inbox.len()));
        let key = (u.framework_id.value.clone(), u.status.task_id.value.clone());
        if self.rng.chance(15) {
            return; // lost on the way
        }
        let uuid = u.status.uuid.clone().unwrap_or_default();
        self.heard.insert(key.clone(), u.status.state());
        self.master(master_message::Message::Acknowledge(AcknowledgeUpdate {
            framework_id: v1::FrameworkId { value: key.0 },
            task_id: v1::TaskId { value: key.1 },
            uuid: uuid.clone(),
        }));
        // Acknowledged: the agent must not forward it again (duplicates of
        // it still in the inbox were forwarded before, and are dropped).
        self.acked.insert(uuid.clone());
        self.inbox
            .retain(|i| i.status.uuid.as_deref() != Some(&uuid[..]));
    }

    fn pass_time(&mut self) {
        let secs = [1, 5, 11, 30, 61][self.rng.below(5)];
        let out = self.h.advance(Duration::from_secs(secs));
        for o in &out {
            if let Some(next) = self.play(o) {
                self.feed(next);
            }
        }
    }

    fn drop_stream(&mut self) {
        let with_stream: Vec<ExecutorKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.stream.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(key) = self.rng.pick(&with_stream)
            && let Some(stream) = self.procs.get_mut(&key).and_then(|p| p.stream.take())
        {
            self.feed(Input::StreamClosed(stream));
        }
    }

    // ---------------------------------------------------------- invariants

    fn check(&self) {
        let held: BTreeSet<ExecutorKey> = self
            .h
            .agent
            .executors()
            .map(|e| (e.framework.clone(), e.id.clone()))
            .collect();
        let procs: BTreeSet<ExecutorKey> = self.procs.keys().cloned().collect();
        assert_eq!(
            held, procs,
            "the agent holds exactly the executors whose processes it has not seen exit"
        );
        let mut owners = BTreeMap::new();
        for e in self.h.agent.executors() {
            for t in e.tasks.keys() {
                let previous = owners.insert((e.framework.clone(), t.clone()), e.id.clone());
                assert!(previous.is_none(), "task {t} is held by two executors");
            }
        }
        for (task, order) in &self.forwarded {
            let accepted = self.accepted.get(task).map(Vec::as_slice).unwrap_or(&[]);
            let from_executors: Vec<&Vec<u8>> =
                order.iter().filter(|u| accepted.contains(u)).collect();
            let expected: Vec<&Vec<u8>> = accepted
                .iter()
                .filter(|u| from_executors.contains(u))
                .collect();
            assert_eq!(
                from_executors, expected,
                "updates of {task:?} reached the master out of order"
            );
        }
    }

    /// Heals everything and runs until every update is acknowledged.
    fn settle(&mut self) {
        if !self.connected {
            self.toggle_master();
        }
        let keys: Vec<ExecutorKey> = self.procs.keys().cloned().collect();
        for key in keys {
            self.exit(&key);
        }
        for _ in 0..200 {
            while !self.inbox.is_empty() {
                let u = self.inbox.remove(0);
                let uuid = u.status.uuid.clone().unwrap_or_default();
                let key = (u.framework_id.value.clone(), u.status.task_id.value.clone());
                if self.acked.contains(&uuid) {
                    continue;
                }
                self.heard.insert(key.clone(), u.status.state());
                self.master(master_message::Message::Acknowledge(AcknowledgeUpdate {
                    framework_id: v1::FrameworkId { value: key.0 },
                    task_id: v1::TaskId { value: key.1 },
                    uuid: uuid.clone(),
                }));
                self.acked.insert(uuid);
            }
            if self.h.agent.pending_updates() == 0 {
                break;
            }
            self.pass_time();
        }
        assert_eq!(
            self.h.agent.pending_updates(),
            0,
            "every update is acknowledged in the end"
        );
        assert!(self.h.agent.executors().next().is_none());
        for (task, uuids) in &self.accepted {
            for u in uuids {
                assert!(
                    self.acked.contains(u),
                    "an update of {task:?} accepted from its executor never reached the master"
                );
            }
            let last = self.heard.get(task);
            assert!(
                last.is_some_and(|s| is_terminal(*s)),
                "{task:?} did not end with a terminal update (last heard {last:?})"
            );
        }
    }
}

fn run(seed: u64, steps: usize) -> World {
    let mut w = World::new(seed);
    w.toggle_master();
    for _ in 0..steps {
        w.step();
    }
    w.settle();
    w
}

#[test]
fn random_schedules_lose_no_update_and_leave_no_executor_behind() {
    if let Some(seed) = std::env::var("AGORA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let w = run(seed, 300);
        eprintln!(
            "seed {seed}: {} tasks, {} updates accepted from executors, {} forwarded, {} outputs",
            w.accepted.len(),
            w.accepted.values().map(Vec::len).sum::<usize>(),
            w.forwarded.values().map(Vec::len).sum::<usize>(),
            w.h.log.len()
        );
        return;
    }
    let seeds: u64 = std::env::var("AGORA_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| drop(run(seed, 300)));
        if result.is_err() {
            panic!("agent simulation failed for seed {seed}: replay with AGORA_SIM_SEED={seed}");
        }
    }
}
