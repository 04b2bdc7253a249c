//! The executor API: subscriptions and calls (status updates, messages).

use agora_proto::executor;
use agora_proto::internal::{ExecutorToFramework, agent_message};
use agora_proto::v1::{self, TaskState, task_status::Source};
use tracing::debug;

use crate::launch::{launch_event, mark_delivered};
use crate::{Agent, CallError, Checkpoint, Output, StreamId, Time};

fn bad(message: &str) -> CallError {
    CallError::BadRequest(message.to_string())
}

impl Agent {
    pub(crate) fn executor_subscribe(
        &mut self,
        stream: StreamId,
        call: executor::Call,
    ) -> Result<(), CallError> {
        let fid = call.framework_id.value.clone();
        let eid = call.executor_id.value.clone();
        let Some(framework) = self.frameworks.get(&fid).cloned() else {
            return Err(bad("Framework cannot be found"));
        };
        let key = (fid.clone(), eid.clone());
        let agent_info = self.agent_info();
        let Some(e) = self.executors.get_mut(&key) else {
            return Err(bad("Executor cannot be found"));
        };
        let mut executor_info = e.info.clone();
        executor_info.framework_id = Some(v1::FrameworkId { value: fid.clone() });
        let subscribed = executor::Event {
            r#type: Some(executor::event::Type::Subscribed as i32),
            subscribed: Some(executor::event::Subscribed {
                executor_info,
                framework_info: framework,
                agent_info,
                container_id: Some(v1::ContainerId {
                    value: e.container.clone(),
                    parent: None,
                }),
            }),
            ..Default::default()
        };
        self.out.push(Output::ToExecutor {
            stream,
            event: Box::new(subscribed),
        });
        if let Some(old) = e.stream.replace(stream) {
            self.out.push(Output::CloseStream(old));
        }
        e.subscribed_once = true;
        for launch in std::mem::take(&mut e.queued) {
            self.out.push(Output::ToExecutor {
                stream,
                event: Box::new(launch_event(&launch)),
            });
            mark_delivered(e, &launch);
        }
        // On re-subscription the executor lists updates the agent has not
        // acknowledged; they are already queued here or were lost with an
        // agent restart, so nothing more is needed.
        debug!(framework.id = %fid, executor.id = %eid, "executor subscribed");
        Ok(())
    }

    pub(crate) fn executor_call(
        &mut self,
        now: Time,
        call: executor::Call,
    ) -> Result<(), CallError> {
        use executor::call::Type as T;
        let kind = call.r#type();
        if kind == T::Heartbeat {
            return Ok(());
        }
        let fid = call.framework_id.value.clone();
        let eid = call.executor_id.value.clone();
        if !self.frameworks.contains_key(&fid) {
            return Err(bad("Framework cannot be found"));
        }
        let Some(e) = self.executors.get(&(fid.clone(), eid.clone())) else {
            return Err(bad("Executor cannot be found"));
        };
        if e.stream.is_none() {
            return Err(CallError::Forbidden("Executor is not subscribed".into()));
        }
        match kind {
            T::Update => {
                let update = call
                    .update
                    .ok_or_else(|| bad("Expecting 'update' to be present"))?;
                self.executor_update(now, fid, eid, update.status)
            }
            T::Message => {
                let m = call
                    .message
                    .ok_or_else(|| bad("Expecting 'message' to be present"))?;
                self.send_master(agent_message::Message::ExecutorMessage(
                    ExecutorToFramework {
                        framework_id: v1::FrameworkId { value: fid },
                        executor_id: v1::ExecutorId { value: eid },
                        data: m.data,
                    },
                ));
                Ok(())
            }
            T::Subscribe => Err(bad("SUBSCRIBE must open its own stream")),
            T::Heartbeat => Ok(()),
            T::Unknown => Err(CallError::NotImplemented("Received 'UNKNOWN' call".into())),
        }
    }

    /// An executor's UPDATE: checked, recorded, queued for the master and
    /// acknowledged to the executor.
    fn executor_update(
        &mut self,
        now: Time,
        fid: String,
        eid: String,
        mut status: v1::TaskStatus,
    ) -> Result<(), CallError> {
        let uuid = status.uuid.clone().unwrap_or_default();
        if uuid.len() != 16 {
            return Err(bad("'status.uuid' must be 16 bytes"));
        }
        if status.state() == TaskState::TaskStaging {
            return Err(bad("'status.state' must not be TASK_STAGING"));
        }
        if status.executor_id.as_ref().is_some_and(|x| x.value != eid) {
            return Err(bad(
                "'status.executor_id' does not match the call's executor_id",
            ));
        }
        if status.source.is_some() && status.source() != Source::Executor {
            return Err(bad("'status.source' must be SOURCE_EXECUTOR"));
        }
        let key = (fid.clone(), eid.clone());
        // An executor speaks only for its own tasks.
        let task_id = status.task_id.clone();
        let elsewhere = self.executors.iter().any(|((f, ex), other)| {
            *f == fid && *ex != eid && other.tasks.contains_key(&task_id.value)
        });
        if elsewhere {
            return Err(CallError::Forbidden(format!(
                "Task '{}' is not a task of executor '{eid}'",
                task_id.value
            )));
        }
        status.source = Some(Source::Executor as i32);
        status.agent_id = self.id.as_ref().map(|id| v1::AgentId { value: id.clone() });
        status.executor_id = Some(v1::ExecutorId { value: eid.clone() });
        if status.timestamp.is_none() {
            status.timestamp = Some(now.as_secs_f64());
        }
        let Some(e) = self.executors.get_mut(&key) else {
            return Err(bad("Executor cannot be found"));
        };
        let cs = status.container_status.get_or_insert_with(Default::default);
        if cs.container_id.is_none() {
            cs.container_id = Some(v1::ContainerId {
                value: e.container.clone(),
                parent: None,
            });
        }
        let state = status.state();
        let mut record_state = false;
        if let Some(record) = e.tasks.get_mut(&task_id.value) {
            record.state = state;
            record.delivered = true;
            record_state = e.checkpoint;
        }
        if record_state {
            self.checkpoint(Checkpoint::TaskState {
                key: key.clone(),
                task: task_id.value.clone(),
                state,
            });
        }
        self.enqueue(now, &fid, status);
        self.send_executor(
            &key,
            executor::Event {
                r#type: Some(executor::event::Type::Acknowledged as i32),
                acknowledged: Some(executor::event::Acknowledged { task_id, uuid }),
                ..Default::default()
            },
        );
        Ok(())
    }
}
