//! Helpers to build TaskInfos from offers.

use agora_proto::v1;

/// A scalar resource (`cpus`, `mem`, `disk`, …) of role `*`.
pub fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.to_string(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value }),
        ..Default::default()
    }
}

/// Builds a command TaskInfo for an offer.
#[derive(Clone, Debug)]
pub struct TaskBuilder {
    task: v1::TaskInfo,
    allocation_role: Option<String>,
}

impl TaskBuilder {
    /// A task with this id (also its name) on the offer's agent.
    pub fn new(id: &str, offer: &v1::Offer) -> Self {
        TaskBuilder {
            task: v1::TaskInfo {
                name: id.to_string(),
                task_id: v1::TaskId {
                    value: id.to_string(),
                },
                agent_id: offer.agent_id.clone(),
                ..Default::default()
            },
            allocation_role: offer.allocation_info.as_ref().and_then(|a| a.role.clone()),
        }
    }

    /// The task's name.
    pub fn name(mut self, name: &str) -> Self {
        self.task.name = name.to_string();
        self
    }

    /// A shell command (`sh -c`).
    pub fn command(mut self, command: &str) -> Self {
        self.task.command = Some(v1::CommandInfo {
            value: Some(command.to_string()),
            ..Default::default()
        });
        self
    }

    /// An environment variable of the command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        let cmd = self.task.command.get_or_insert_with(Default::default);
        cmd.environment
            .get_or_insert_with(Default::default)
            .variables
            .push(v1::environment::Variable {
                name: name.to_string(),
                value: Some(value.to_string()),
                ..Default::default()
            });
        self
    }

    /// Adds a scalar resource.
    pub fn resource(mut self, name: &str, value: f64) -> Self {
        let mut r = scalar(name, value);
        if let Some(role) = &self.allocation_role {
            r.allocation_info = Some(v1::resource::AllocationInfo {
                role: Some(role.clone()),
            });
        }
        self.task.resources.push(r);
        self
    }

    /// CPUs.
    pub fn cpus(self, cpus: f64) -> Self {
        self.resource("cpus", cpus)
    }

    /// Memory in MB.
    pub fn mem(self, mb: f64) -> Self {
        self.resource("mem", mb)
    }

    /// The kill grace period.
    pub fn kill_grace(mut self, grace: std::time::Duration) -> Self {
        self.task.kill_policy = Some(v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: grace.as_nanos() as i64,
            }),
        });
        self
    }

    /// The TaskInfo.
    pub fn build(self) -> v1::TaskInfo {
        self.task
    }
}
