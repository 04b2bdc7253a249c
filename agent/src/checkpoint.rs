//! Checkpoints: what a restarted agent needs to find its executors again.
//!
//! For frameworks with `checkpoint: true` the agent writes, as Mesos does,
//! under `<work-dir>/meta/slaves/<agent>/frameworks/<fw>/`:
//!
//! ```text
//! framework.info                                  FrameworkInfo (protobuf)
//! executors/<ex>/executor.info                    ExecutorInfo (protobuf)
//! executors/<ex>/run.json                         container id, sandbox, pid + start time, kind
//! executors/<ex>/tasks/<task>/task.info           TaskInfo (protobuf)
//! executors/<ex>/tasks/<task>/state               the task's latest state, by name
//! ```
//!
//! Every file is written to a temporary name and renamed, so a crash leaves
//! the old version or the new one. Ids are validated by the master (no `/`,
//! not `.` or `..`), so they are safe path components.

use std::io;
use std::path::{Path, PathBuf};

use agora_proto::v1::{self, TaskState};
use prost::Message;
use tracing::warn;

pub use agora_agent_core::{RecoveredExecutor, RecoveredFramework, Run};

/// Writes checkpoints of one agent.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
}

impl Checkpoints {
    /// The checkpoints of agent `agent` in `work_dir`.
    pub fn new(work_dir: &Path, agent: &str) -> Self {
        Checkpoints {
            root: work_dir.join("meta").join("slaves").join(agent),
        }
    }

    fn framework_dir(&self, framework: &str) -> PathBuf {
        self.root.join("frameworks").join(framework)
    }

    fn executor_dir(&self, framework: &str, executor: &str) -> PathBuf {
        self.framework_dir(framework)
            .join("executors")
            .join(executor)
    }

    fn task_dir(&self, framework: &str, executor: &str, task: &str) -> PathBuf {
        self.executor_dir(framework, executor)
            .join("tasks")
            .join(task)
    }

    /// Records a framework.
    pub fn framework(&self, info: &v1::FrameworkInfo) -> io::Result<()> {
        let id = info.id.as_ref().map(|i| i.value.as_str()).unwrap_or("");
        write(
            &self.framework_dir(id).join("framework.info"),
            &info.encode_to_vec(),
        )
    }

    /// Records an executor run.
    pub fn executor(&self, framework: &str, info: &v1::ExecutorInfo, run: &Run) -> io::Result<()> {
        let dir = self.executor_dir(framework, &info.executor_id.value);
        write(&dir.join("executor.info"), &info.encode_to_vec())?;
        let json = serde_json::to_vec(run).map_err(io::Error::other)?;
        write(&dir.join("run.json"), &json)
    }

    /// Records a task given to an executor.
    pub fn task(&self, framework: &str, executor: &str, task: &v1::TaskInfo) -> io::Result<()> {
        let dir = self.task_dir(framework, executor, &task.task_id.value);
        write(&dir.join("task.info"), &task.encode_to_vec())?;
        write(
            &dir.join("state"),
            TaskState::TaskStaging.as_str_name().as_bytes(),
        )
    }

    /// Records a task's latest state (nothing for an unrecorded task).
    pub fn task_state(
        &self,
        framework: &str,
        executor: &str,
        task: &str,
        state: TaskState,
    ) -> io::Result<()> {
        let dir = self.task_dir(framework, executor, task);
        if !dir.exists() {
            return Ok(());
        }
        write(&dir.join("state"), state.as_str_name().as_bytes())
    }

    /// Forgets a task.
    pub fn remove_task(&self, framework: &str, executor: &str, task: &str) {
        remove(&self.task_dir(framework, executor, task));
    }

    /// Forgets an executor and its tasks.
    pub fn remove_executor(&self, framework: &str, executor: &str) {
        remove(&self.executor_dir(framework, executor));
    }

    /// Forgets a framework and everything under it.
    pub fn remove_framework(&self, framework: &str) {
        remove(&self.framework_dir(framework));
    }

    /// Everything checkpointed; unreadable entries are skipped with a warning.
    pub fn recover(&self) -> Vec<RecoveredFramework> {
        let mut out = Vec::new();
        for dir in subdirs(&self.root.join("frameworks")) {
            let Some(info) = read_proto::<v1::FrameworkInfo>(&dir.join("framework.info")) else {
                warn!(dir = %dir.display(), "skipping a framework checkpoint without framework.info");
                continue;
            };
            let mut executors = Vec::new();
            for edir in subdirs(&dir.join("executors")) {
                let info = read_proto::<v1::ExecutorInfo>(&edir.join("executor.info"));
                let run = std::fs::read(edir.join("run.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Run>(&b).ok());
                let (Some(info), Some(run)) = (info, run) else {
                    warn!(dir = %edir.display(), "skipping an incomplete executor checkpoint");
                    remove(&edir);
                    continue;
                };
                let mut tasks = Vec::new();
                for tdir in subdirs(&edir.join("tasks")) {
                    let Some(task) = read_proto::<v1::TaskInfo>(&tdir.join("task.info")) else {
                        continue;
                    };
                    let state = std::fs::read_to_string(tdir.join("state"))
                        .ok()
                        .and_then(|s| TaskState::from_str_name(s.trim()))
                        .unwrap_or(TaskState::TaskStaging);
                    tasks.push((task, state));
                }
                let alive = alive(&run);
                executors.push(RecoveredExecutor {
                    info,
                    run,
                    tasks,
                    alive,
                });
            }
            out.push(RecoveredFramework { info, executors });
        }
        out
    }
}

/// The start time of a live process (`/proc/<pid>/stat` field 22), `None`
/// when it is gone or a zombie.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); the start time is field 22.
    fields.nth(18)?.parse().ok()
}

/// Whether `run`'s executor process is still the one the agent started.
pub fn alive(run: &Run) -> bool {
    process_start(run.pid) == Some(run.start)
}

fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(dir = %dir.display(), error = %e, "cannot remove a checkpoint");
    }
}

fn read_proto<M: Message + Default>(path: &Path) -> Option<M> {
    M::decode(std::fs::read(path).ok()?.as_slice()).ok()
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_is_recovered_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Checkpoints::new(tmp.path(), "A-S1");
        let fw = v1::FrameworkInfo {
            id: Some(v1::FrameworkId {
                value: "F-1".into(),
            }),
            name: "marathon".into(),
            checkpoint: Some(true),
            ..Default::default()
        };
        c.framework(&fw).unwrap();
        let info = v1::ExecutorInfo {
            executor_id: v1::ExecutorId {
                value: "web.1".into(),
            },
            ..Default::default()
        };
        let run = Run {
            container: "c1".into(),
            dir: tmp.path().join("sandbox"),
            pid: std::process::id(),
            start: process_start(std::process::id()).unwrap(),
            kind: "command".into(),
            networks: Vec::new(),
        };
        c.executor("F-1", &info, &run).unwrap();
        let task = v1::TaskInfo {
            task_id: v1::TaskId {
                value: "web.1".into(),
            },
            name: "web".into(),
            ..Default::default()
        };
        c.task("F-1", "web.1", &task).unwrap();
        c.task_state("F-1", "web.1", "web.1", TaskState::TaskRunning)
            .unwrap();
        // A state for a task that was never checkpointed is not invented.
        c.task_state("F-1", "web.1", "other", TaskState::TaskRunning)
            .unwrap();

        let got = c.recover();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].info.name, "marathon");
        let e = &got[0].executors[0];
        assert_eq!(e.run, run);
        assert!(alive(&e.run));
        assert_eq!(e.tasks.len(), 1);
        assert_eq!(e.tasks[0].0.name, "web");
        assert_eq!(e.tasks[0].1, TaskState::TaskRunning);

        c.remove_executor("F-1", "web.1");
        assert!(c.recover()[0].executors.is_empty());
        c.remove_framework("F-1");
        assert!(c.recover().is_empty());
    }

    #[test]
    fn a_recycled_or_dead_pid_is_not_the_executor() {
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let run = |pid, start| Run {
            container: "c".into(),
            dir: PathBuf::new(),
            pid,
            start,
            kind: "command".into(),
            networks: Vec::new(),
        };
        assert!(alive(&run(me, start)));
        assert!(!alive(&run(me, start + 1)));
        assert!(!alive(&run(u32::MAX - 1, start)));
    }
}
