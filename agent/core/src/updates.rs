//! The status update manager: forwards each task's status updates to the
//! master one at a time, in order, retrying with backoff until the framework
//! acknowledges (at-least-once; duplicates are harmless). Pure bookkeeping:
//! the agent core asks it what to send and when.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use agora_proto::internal::StatusUpdate;
use agora_proto::status::is_terminal;
use agora_proto::time::Time;
use agora_proto::v1::TaskState;

/// First retry after this long without an acknowledgement.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Retries back off to at most this.
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// (framework id, task id).
pub type TaskKey = (String, String);

#[derive(Debug)]
struct Stream {
    pending: VecDeque<StatusUpdate>,
    /// When the head was last sent, and the current backoff.
    sent: Option<(Time, Duration)>,
}

/// What came of an acknowledgement.
#[derive(Debug, PartialEq, Eq)]
pub enum Acked {
    /// It matched the head; `terminal` says whether that update ended the task.
    Head {
        /// The acknowledged update was terminal.
        terminal: bool,
        /// Nothing more is queued for the task.
        drained: bool,
    },
    /// Not the head (a duplicate or stale acknowledgement).
    Ignored,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct StatusUpdateManager {
    streams: BTreeMap<TaskKey, Stream>,
}

impl StatusUpdateManager {
    /// Queues an update for forwarding.
    pub fn push(&mut self, key: TaskKey, update: StatusUpdate) {
        self.streams
            .entry(key)
            .or_insert_with(|| Stream {
                pending: VecDeque::new(),
                sent: None,
            })
            .pending
            .push_back(update);
    }

    /// The updates to send now: each stream's head if it was never sent or
    /// its retry is due. Marks them sent at `now`.
    pub fn due(&mut self, now: Time) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            let Some(head) = stream.pending.front() else {
                continue;
            };
            match stream.sent {
                None => {
                    stream.sent = Some((now, FIRST_RETRY));
                    out.push(head.clone());
                }
                Some((at, backoff)) if now.since(at) >= backoff => {
                    stream.sent = Some((now, (backoff * 2).min(MAX_RETRY)));
                    out.push(head.clone());
                }
                Some(_) => {}
            }
        }
        out
    }

    /// When `due` next has something to send: the earliest retry, or
    /// None when every head waits for an acknowledgement within its backoff
    /// and nothing is unsent. (A head never sent is due at once: `Some`
    /// of the zero time.)
    pub fn next_due(&self) -> Option<Time> {
        self.streams
            .values()
            .filter(|s| !s.pending.is_empty())
            .map(|s| match s.sent {
                None => Time::ZERO,
                Some((at, backoff)) => at + backoff,
            })
            .min()
    }

    /// Forgets when heads were sent, so `due` returns every head again (after
    /// the master connection is re-established).
    pub fn resend_all(&mut self) {
        for stream in self.streams.values_mut() {
            stream.sent = None;
        }
    }

    /// An acknowledgement from the framework (through the master).
    pub fn acknowledge(&mut self, key: &TaskKey, uuid: &[u8]) -> Acked {
        let Some(stream) = self.streams.get_mut(key) else {
            return Acked::Ignored;
        };
        let matches = stream
            .pending
            .front()
            .is_some_and(|u| u.status.uuid.as_deref() == Some(uuid));
        if !matches {
            return Acked::Ignored;
        }
        let head = stream.pending.pop_front().expect("checked above");
        stream.sent = None;
        let drained = stream.pending.is_empty();
        if drained {
            self.streams.remove(key);
        }
        Acked::Head {
            terminal: is_terminal(head.status.state()),
            drained,
        }
    }

    /// Whether updates are still waiting for the task.
    pub fn has_pending(&self, key: &TaskKey) -> bool {
        self.streams.get(key).is_some_and(|s| !s.pending.is_empty())
    }

    /// The newest state queued for the task, if any.
    pub fn latest_state(&self, key: &TaskKey) -> Option<TaskState> {
        self.streams
            .get(key)
            .and_then(|s| s.pending.back())
            .map(|u| u.status.state())
    }

    /// Drops every update of a framework (it was removed).
    pub fn remove_framework(&mut self, framework: &str) {
        self.streams.retain(|(f, _), _| f != framework);
    }

    /// Number of updates waiting.
    pub fn len(&self) -> usize {
        self.streams.values().map(|s| s.pending.len()).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1;

    fn update(task: &str, state: TaskState, uuid: u8) -> StatusUpdate {
        StatusUpdate {
            framework_id: v1::FrameworkId { value: "f".into() },
            status: v1::TaskStatus {
                task_id: v1::TaskId { value: task.into() },
                state: state as i32,
                uuid: Some(vec![uuid; 16]),
                ..Default::default()
            },
            latest_state: None,
        }
    }

    fn key(task: &str) -> TaskKey {
        ("f".into(), task.into())
    }

    #[test]
    fn one_at_a_time_in_order_per_task() {
        let mut m = StatusUpdateManager::default();
        let t0 = Time::from_secs(1_000);
        m.push(key("a"), update("a", TaskState::TaskRunning, 1));
        m.push(key("a"), update("a", TaskState::TaskFinished, 2));
        m.push(key("b"), update("b", TaskState::TaskRunning, 3));
        let sent: Vec<u8> = m
            .due(t0)
            .iter()
            .map(|u| u.status.uuid.as_ref().unwrap()[0])
            .collect();
        assert_eq!(sent, vec![1, 3]);
        assert!(m.due(t0).is_empty(), "nothing is resent before the backoff");
        assert_eq!(
            m.acknowledge(&key("a"), &[2; 16]),
            Acked::Ignored,
            "only the head can be acknowledged"
        );
        assert_eq!(
            m.acknowledge(&key("a"), &[1; 16]),
            Acked::Head {
                terminal: false,
                drained: false
            }
        );
        let sent: Vec<u8> = m
            .due(t0)
            .iter()
            .map(|u| u.status.uuid.as_ref().unwrap()[0])
            .collect();
        assert_eq!(sent, vec![2]);
        assert_eq!(
            m.acknowledge(&key("a"), &[2; 16]),
            Acked::Head {
                terminal: true,
                drained: true
            }
        );
        assert!(!m.has_pending(&key("a")));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn retries_back_off() {
        let mut m = StatusUpdateManager::default();
        let t0 = Time::from_secs(1_000);
        m.push(key("a"), update("a", TaskState::TaskRunning, 1));
        assert_eq!(m.due(t0).len(), 1);
        assert!(m.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(m.due(t0 + Duration::from_secs(10)).len(), 1);
        // Next retry after 20 s more.
        assert!(m.due(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(m.due(t0 + Duration::from_secs(30)).len(), 1);
        m.resend_all();
        assert_eq!(m.due(t0 + Duration::from_secs(31)).len(), 1);
    }
}
