//! Read-only views of the master for the operator API (GET_STATE,
//! GET_AGENTS, …) and the legacy endpoints, built as the Mesos v1 operator
//! messages. The shell renders them as JSON or protobuf.

use agora_proto::operator::response;
use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState};

use super::{Agent, Framework, Master};
use crate::ids::{AgentId, FrameworkId};
use crate::time::Time;

/// Read access to the master for the shell's query handlers.
pub trait MasterView {
    /// GET_STATE.
    fn get_state(&self) -> response::GetState;
    /// GET_AGENTS.
    fn get_agents(&self) -> response::GetAgents;
    /// GET_FRAMEWORKS.
    fn get_frameworks(&self) -> response::GetFrameworks;
    /// GET_TASKS.
    fn get_tasks(&self) -> response::GetTasks;
    /// GET_EXECUTORS.
    fn get_executors(&self) -> response::GetExecutors;
    /// GET_ROLES.
    fn get_roles(&self) -> response::GetRoles;
    /// GET_MASTER.
    fn get_master(&self) -> response::GetMaster;
    /// Numbers for `/metrics/snapshot`.
    fn metrics_snapshot(&self) -> Vec<(String, f64)>;
}

fn time_info(t: Time) -> v1::TimeInfo {
    v1::TimeInfo {
        nanoseconds: t.as_nanos() as i64,
    }
}

impl Master {
    pub(crate) fn agent_view(&self, a: &Agent) -> response::get_agents::Agent {
        let mut allocated = Resources::new();
        let mut offered = Resources::new();
        for (fw, role, r) in self.allocator.allocated(&a.id) {
            let held = r.allocated_to(&role);
            let offers: Resources = a
                .offers
                .iter()
                .filter_map(|o| self.offers.get(o))
                .filter(|o| o.framework == fw && o.role == role)
                .fold(Resources::new(), |mut acc, o| {
                    acc += &o.resources.allocated_to(&o.role);
                    acc
                });
            offered += &offers;
            allocated += &(&held - &offers);
        }
        use v1::agent_info::capability::Type as Cap;
        response::get_agents::Agent {
            agent_info: a.info.clone(),
            active: a.is_connected() && !a.deactivated,
            deactivated: Some(a.deactivated),
            version: a.version.clone(),
            pid: Some(format!("slave(1)@{}", a.address)),
            registered_time: Some(time_info(a.registered_time)),
            reregistered_time: a.reregistered_time.map(time_info),
            total_resources: a.total.to_legacy_protos(),
            allocated_resources: allocated.to_legacy_protos(),
            offered_resources: offered.to_legacy_protos(),
            capabilities: [
                Cap::MultiRole,
                Cap::HierarchicalRole,
                Cap::ReservationRefinement,
            ]
            .iter()
            .map(|c| v1::agent_info::Capability {
                r#type: Some(*c as i32),
            })
            .collect(),
            resource_providers: Vec::new(),
            drain_info: a.drain.as_ref().map(|d| d.info()),
            estimated_drain_start_time: None,
        }
    }

    pub(crate) fn framework_view(&self, f: &Framework) -> response::get_frameworks::Framework {
        let mut offered = Resources::new();
        let offers: Vec<v1::Offer> = f
            .offers
            .iter()
            .filter_map(|o| self.offers.get(o))
            .map(|o| {
                offered += &o.resources.allocated_to(&o.role);
                self.offer_proto(o)
            })
            .collect();
        let mut allocated = Resources::new();
        for t in f.tasks.values().filter(|t| !t.recovered) {
            allocated += &t.resources.allocated_to(&t.role);
        }
        response::get_frameworks::Framework {
            framework_info: f.info.clone(),
            active: f.active,
            connected: f.stream.is_some(),
            recovered: f.recovered,
            registered_time: f.registered_time.map(time_info),
            reregistered_time: f.reregistered_time.map(time_info),
            unregistered_time: f.unregistered_time.map(time_info),
            offers,
            inverse_offers: Vec::new(),
            allocated_resources: allocated.to_legacy_protos(),
            offered_resources: offered.to_legacy_protos(),
            offer_constraints: None,
        }
    }

    /// A framework by id, for views of one framework.
    pub fn framework_info(&self, id: &FrameworkId) -> Option<&v1::FrameworkInfo> {
        self.frameworks.get(id).map(|f| &f.info)
    }

    /// The HTTP address (`ip:port`) of a registered agent.
    pub fn agent_address(&self, id: &AgentId) -> Option<&str> {
        self.agents.get(id).map(|a| a.address.as_str())
    }

    /// Number of subscribed (connected) frameworks.
    pub fn connected_frameworks(&self) -> usize {
        self.frameworks
            .values()
            .filter(|f| f.stream.is_some())
            .count()
    }

    /// Number of connected agents.
    pub fn connected_agents(&self) -> usize {
        self.agents.values().filter(|a| a.is_connected()).count()
    }
}

impl MasterView for Master {
    fn get_state(&self) -> response::GetState {
        response::GetState {
            get_tasks: Some(self.get_tasks()),
            get_executors: Some(self.get_executors()),
            get_frameworks: Some(self.get_frameworks()),
            get_agents: Some(self.get_agents()),
        }
    }

    fn get_agents(&self) -> response::GetAgents {
        response::GetAgents {
            agents: self.agents.values().map(|a| self.agent_view(a)).collect(),
            recovered_agents: Vec::new(),
        }
    }

    fn get_frameworks(&self) -> response::GetFrameworks {
        response::GetFrameworks {
            frameworks: self
                .frameworks
                .values()
                .map(|f| self.framework_view(f))
                .collect(),
            completed_frameworks: self
                .completed_frameworks
                .iter()
                .map(|f| self.framework_view(f))
                .collect(),
            #[allow(deprecated)]
            recovered_frameworks: Vec::new(),
        }
    }

    fn get_tasks(&self) -> response::GetTasks {
        let all = self
            .frameworks
            .values()
            .chain(self.completed_frameworks.iter());
        let mut out = response::GetTasks::default();
        for f in all {
            out.tasks.extend(
                f.tasks
                    .values()
                    .filter(|t| !t.recovered || !agora_proto::status::is_terminal(t.state()))
                    .map(|t| t.proto.clone()),
            );
            // Terminal but not yet acknowledged tasks are still "tasks" in Mesos.
            out.tasks.extend(
                f.tasks
                    .values()
                    .filter(|t| t.recovered && agora_proto::status::is_terminal(t.state()))
                    .map(|t| t.proto.clone()),
            );
            out.unreachable_tasks
                .extend(f.unreachable_tasks.values().map(|t| t.proto.clone()));
            out.completed_tasks
                .extend(f.completed_tasks.iter().map(|t| t.proto.clone()));
        }
        out
    }

    fn get_executors(&self) -> response::GetExecutors {
        let mut out = response::GetExecutors::default();
        for a in self.agents.values() {
            for ((_, _), (info, _, _)) in a.executors.iter() {
                out.executors.push(response::get_executors::Executor {
                    executor_info: info.clone(),
                    agent_id: a.id.to_proto(),
                });
            }
        }
        out
    }

    fn get_roles(&self) -> response::GetRoles {
        let mut roles: std::collections::BTreeMap<String, (Vec<v1::FrameworkId>, Resources)> =
            Default::default();
        roles.entry("*".into()).or_default();
        for (role, _) in self.allocator.quotas() {
            roles.entry(role.to_string()).or_default();
        }
        for f in self.frameworks.values() {
            for r in &f.roles {
                roles.entry(r.clone()).or_default().0.push(f.id.to_proto());
            }
        }
        for a in self.agents.values() {
            for (_, role, r) in self.allocator.allocated(&a.id) {
                let quantities: Resources =
                    r.filter(|x| matches!(x.name.as_str(), "cpus" | "mem" | "disk" | "gpus"));
                let plain = Resources::parse(
                    &quantities
                        .scalar_totals()
                        .iter()
                        .map(|(n, v)| format!("{n}:{}", *v as f64 / 1000.0))
                        .collect::<Vec<_>>()
                        .join(";"),
                    "*",
                )
                .unwrap_or_default();
                roles.entry(role).or_default().1 += &plain;
            }
        }
        response::GetRoles {
            roles: roles
                .into_iter()
                .map(|(name, (frameworks, resources))| v1::Role {
                    weight: self.allocator.weight(&name),
                    name,
                    frameworks,
                    resources: resources
                        .to_protos()
                        .into_iter()
                        .map(|mut r| {
                            r.reservations.clear();
                            r
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn get_master(&self) -> response::GetMaster {
        response::GetMaster {
            master_info: Some(self.info.clone()),
            start_time: Some(self.start_time.as_secs_f64()),
            elected_time: Some(self.start_time.as_secs_f64()),
        }
    }

    fn metrics_snapshot(&self) -> Vec<(String, f64)> {
        let mut m: Vec<(String, f64)> = Vec::new();
        let mut put = |k: &str, v: f64| m.push((k.to_string(), v));
        put("master/elected", 1.0);
        let connected = self.agents.values().filter(|a| a.is_connected()).count();
        put(
            "master/slaves_active",
            self.agents
                .values()
                .filter(|a| a.is_connected() && !a.deactivated)
                .count() as f64,
        );
        put("master/slaves_connected", connected as f64);
        put(
            "master/slaves_disconnected",
            (self.agents.len() - connected) as f64,
        );
        put(
            "master/slaves_inactive",
            self.agents.values().filter(|a| a.deactivated).count() as f64,
        );
        put(
            "master/slaves_unreachable",
            self.unreachable_agents.len() as f64,
        );
        let fconnected = self
            .frameworks
            .values()
            .filter(|f| f.stream.is_some())
            .count();
        put(
            "master/frameworks_active",
            self.frameworks.values().filter(|f| f.active).count() as f64,
        );
        put("master/frameworks_connected", fconnected as f64);
        put(
            "master/frameworks_disconnected",
            (self.frameworks.len() - fconnected) as f64,
        );
        put(
            "master/frameworks_inactive",
            self.frameworks.values().filter(|f| !f.active).count() as f64,
        );
        let mut counts = std::collections::BTreeMap::<&str, f64>::new();
        for f in self.frameworks.values() {
            for t in f.tasks.values() {
                let k = match t.state() {
                    TaskState::TaskStaging => "staging",
                    TaskState::TaskStarting => "starting",
                    TaskState::TaskRunning => "running",
                    TaskState::TaskKilling => "killing",
                    _ => continue,
                };
                *counts.entry(k).or_default() += 1.0;
            }
            for t in f.completed_tasks.iter().chain(
                f.tasks
                    .values()
                    .filter(|t| agora_proto::status::is_terminal(t.state())),
            ) {
                let k = match t.state() {
                    TaskState::TaskFinished => "finished",
                    TaskState::TaskFailed => "failed",
                    TaskState::TaskKilled => "killed",
                    TaskState::TaskLost => "lost",
                    TaskState::TaskError => "error",
                    TaskState::TaskDropped => "dropped",
                    TaskState::TaskGone => "gone",
                    _ => continue,
                };
                *counts.entry(k).or_default() += 1.0;
            }
            *counts.entry("unreachable").or_default() += f.unreachable_tasks.len() as f64;
        }
        for k in [
            "staging",
            "starting",
            "running",
            "killing",
            "finished",
            "failed",
            "killed",
            "lost",
            "error",
            "dropped",
            "gone",
            "unreachable",
        ] {
            put(
                &format!("master/tasks_{k}"),
                counts.get(k).copied().unwrap_or(0.0),
            );
        }
        for name in ["cpus", "mem", "disk", "gpus"] {
            let total: f64 = self
                .agents
                .values()
                .filter(|a| a.is_connected())
                .map(|a| a.total.scalar(name))
                .sum();
            let used: f64 = self
                .agents
                .values()
                .filter(|a| a.is_connected())
                .map(|a| {
                    self.allocator
                        .allocated(&a.id)
                        .iter()
                        .map(|(_, _, r)| r.scalar(name))
                        .sum::<f64>()
                })
                .sum();
            // `+ 0.0` turns an empty sum's -0.0 into 0.0.
            let (total, used) = (total + 0.0, used + 0.0);
            put(&format!("master/{name}_total"), total);
            put(&format!("master/{name}_used"), used);
            put(
                &format!("master/{name}_percent"),
                if total > 0.0 { used / total } else { 0.0 },
            );
        }
        put("master/outstanding_offers", self.offers.len() as f64);
        put(
            "master/valid_status_updates",
            self.metrics.valid_status_updates as f64,
        );
        put(
            "master/invalid_status_updates",
            self.metrics.invalid_status_updates as f64,
        );
        put("master/tasks_launched", self.metrics.tasks_launched as f64);
        put(
            "allocator/mesos/allocation_runs",
            self.metrics.allocation_runs as f64,
        );
        put("master/offers_made", self.metrics.offers_made as f64);
        put(
            "master/offers_declined",
            self.metrics.offers_declined as f64,
        );
        put(
            "master/offers_rescinded",
            self.metrics.offers_rescinded as f64,
        );
        put(
            "master/operations/finished",
            self.metrics.operations_finished as f64,
        );
        put(
            "master/operations/error",
            self.metrics.operations_error as f64,
        );
        m
    }
}
