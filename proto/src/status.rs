//! Task state facts shared by master, agent and frameworks.

use crate::v1::TaskState;

/// Terminal states: the task will never run again (LOST may be revised when a
/// partitioned agent returns, but its resources are released).
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

/// States a framework without PARTITION_AWARE never sees: they are reported to
/// it as TASK_LOST.
pub fn needs_partition_awareness(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskUnreachable
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
            | TaskState::TaskUnknown
            | TaskState::TaskDropped
    )
}
