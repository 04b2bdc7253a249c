//! Maintenance schedules, as Mesos' maintenance primitives: an operator
//! schedules windows of unavailability for machines
//! (UPDATE_MAINTENANCE_SCHEDULE); the agents on a scheduled machine are
//! DRAINING: their offers carry the window's `unavailability`, and each
//! framework with tasks there gets an inverse offer for it, whose answer
//! GET_MAINTENANCE_STATUS shows. Nothing is killed until START_MAINTENANCE
//! takes the machines DOWN: their agents are removed (tasks
//! TASK_GONE_BY_OPERATOR, or TASK_LOST for frameworks that are not
//! partition aware) and refused while the machine is down;
//! STOP_MAINTENANCE brings them UP and out of the schedule.
//!
//! A machine is a hostname and/or an IP; an agent is on it when each part
//! given matches (the hostname without regard to case, the IP of the
//! address the agent registered with).

use std::collections::BTreeSet;

use agora_proto::v1::{self, maintenance};

use super::scheduler::bad;
use super::{Agent, CallError, Master};
use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::time::Time;

/// The schedule and the machines that are down.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Maintenance {
    /// Windows, each with its machines (normalised), no machine twice.
    pub windows: Vec<maintenance::Window>,
    /// Machines taken down by START_MAINTENANCE (each in a window).
    pub down: Vec<v1::MachineId>,
}

/// A machine id with its hostname lowercased and its IP in canonical form;
/// an error for one with neither or an IP that is not one.
fn normalize(m: &v1::MachineId) -> Result<v1::MachineId, CallError> {
    let hostname = m
        .hostname
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase);
    let ip = match m.ip.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        Some(ip) => Some(
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| bad(format!("'{ip}' is not an IP address")))?
                .to_string(),
        ),
        None => None,
    };
    if hostname.is_none() && ip.is_none() {
        return Err(bad("A machine needs a hostname or an IP"));
    }
    Ok(v1::MachineId { hostname, ip })
}

fn describe(m: &v1::MachineId) -> String {
    match (&m.hostname, &m.ip) {
        (Some(h), Some(i)) => format!("{h} ({i})"),
        (Some(h), None) => h.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => "?".into(),
    }
}

/// Whether the agent `a` is on machine `m`.
fn on(m: &v1::MachineId, hostname: &str, ip: Option<&str>) -> bool {
    m.hostname
        .as_deref()
        .is_none_or(|h| h.eq_ignore_ascii_case(hostname))
        && m.ip.as_deref().is_none_or(|i| Some(i) == ip)
}

/// The IP of an agent's `ip:port` address.
fn ip_of(address: &str) -> Option<String> {
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_string())
}

impl Maintenance {
    fn window_of(&self, hostname: &str, ip: Option<&str>) -> Option<&maintenance::Window> {
        self.windows
            .iter()
            .find(|w| w.machine_ids.iter().any(|m| on(m, hostname, ip)))
    }

    /// Whether an agent at `hostname`/`address` is on a machine that is down.
    pub(crate) fn is_down(&self, hostname: &str, address: &str) -> bool {
        let ip = ip_of(address);
        self.down.iter().any(|m| on(m, hostname, ip.as_deref()))
    }

    fn scheduled(&self, m: &v1::MachineId) -> bool {
        self.windows.iter().any(|w| w.machine_ids.contains(m))
    }
}

impl Master {
    /// The window of the machine `a` is on, if it is scheduled (and not
    /// down).
    pub(crate) fn window_of(&self, a: &Agent) -> Option<&maintenance::Window> {
        // Asked for every offer made: nothing to parse when nothing is
        // scheduled.
        if self.maintenance.windows.is_empty() {
            return None;
        }
        let ip = ip_of(&a.address);
        self.maintenance.window_of(&a.info.hostname, ip.as_deref())
    }

    /// The unavailability offers of `agent` carry.
    pub(crate) fn unavailability(&self, agent: &AgentId) -> Option<v1::Unavailability> {
        let a = self.agents.get(agent)?;
        self.window_of(a).map(|w| w.unavailability)
    }

    /// UPDATE_MAINTENANCE_SCHEDULE.
    pub(crate) fn update_maintenance_schedule(
        &mut self,
        now: Time,
        schedule: maintenance::Schedule,
    ) -> Result<(), CallError> {
        let mut windows = Vec::with_capacity(schedule.windows.len());
        let mut seen = BTreeSet::new();
        for w in schedule.windows {
            if w.machine_ids.is_empty() {
                return Err(bad("A maintenance window needs at least one machine"));
            }
            if w.unavailability.duration.is_some_and(|d| d.nanoseconds < 0) {
                return Err(bad("A maintenance window's duration must not be negative"));
            }
            let mut machines = Vec::with_capacity(w.machine_ids.len());
            for m in &w.machine_ids {
                let m = normalize(m)?;
                if !seen.insert((m.hostname.clone(), m.ip.clone())) {
                    return Err(bad(format!(
                        "Machine {} is in more than one maintenance window",
                        describe(&m)
                    )));
                }
                machines.push(m);
            }
            windows.push(maintenance::Window {
                machine_ids: machines,
                unavailability: w.unavailability,
            });
        }
        let next = Maintenance {
            windows,
            down: self.maintenance.down.clone(),
        };
        if let Some(m) = next.down.iter().find(|m| !next.scheduled(m)) {
            return Err(bad(format!(
                "Machine {} is DOWN and cannot leave the schedule (STOP_MAINTENANCE first)",
                describe(m)
            )));
        }
        let before: Vec<(AgentId, Option<v1::Unavailability>)> = self
            .agents
            .keys()
            .map(|id| (id.clone(), self.unavailability(id)))
            .collect();
        self.maintenance = next;
        self.registry_dirty = true;
        for (id, old) in before {
            if self.unavailability(&id) == old {
                continue;
            }
            // Offers go out again with the new unavailability, inverse
            // offers with the new window (or none).
            let offers: Vec<OfferId> = self
                .agents
                .get(&id)
                .map(|a| a.offers.iter().cloned().collect())
                .unwrap_or_default();
            for o in offers {
                self.rescind_offer(now, &o, None);
            }
            if self.agents.get(&id).is_some_and(|a| a.drain.is_none()) {
                self.rescind_inverse_offers(&id);
            }
        }
        self.allocation_requested = true;
        self.maintenance_step(now);
        Ok(())
    }

    /// Inverse offers for scheduled machines: each framework with tasks on
    /// an agent there that has none gets one with the window.
    pub(crate) fn maintenance_step(&mut self, now: Time) {
        if self.maintenance.windows.is_empty() {
            return;
        }
        let mut wanted: Vec<(AgentId, FrameworkId, v1::Unavailability)> = Vec::new();
        for a in self.agents.values() {
            if a.drain.is_some() {
                continue;
            }
            let Some(w) = self.window_of(a) else {
                continue;
            };
            let frameworks: BTreeSet<&FrameworkId> = a.tasks.iter().map(|(f, _)| f).collect();
            for f in frameworks {
                let asked = self
                    .inverse_offers
                    .values()
                    .any(|o| &o.framework == f && o.agent == a.id);
                if !asked {
                    wanted.push((a.id.clone(), f.clone(), w.unavailability));
                }
            }
        }
        for (agent, framework, unavailability) in wanted {
            self.send_inverse_offer(now, &agent, &framework, unavailability);
        }
    }

    /// START_MAINTENANCE: the machines go DOWN and their agents are removed.
    pub(crate) fn start_maintenance(
        &mut self,
        now: Time,
        machines: &[v1::MachineId],
    ) -> Result<(), CallError> {
        let machines: Vec<v1::MachineId> =
            machines.iter().map(normalize).collect::<Result<_, _>>()?;
        if machines.is_empty() {
            return Err(bad("START_MAINTENANCE needs at least one machine"));
        }
        for m in &machines {
            if !self.maintenance.scheduled(m) {
                return Err(bad(format!(
                    "Machine {} is not scheduled for maintenance",
                    describe(m)
                )));
            }
            if self.maintenance.down.contains(m) {
                return Err(bad(format!("Machine {} is already DOWN", describe(m))));
            }
        }
        self.maintenance.down.extend(machines);
        self.registry_dirty = true;
        let down: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| self.maintenance.is_down(&a.info.hostname, &a.address))
            .map(|a| a.id.clone())
            .collect();
        for id in down {
            self.remove_by_operator(now, &id, false, "Machine is DOWN for maintenance");
        }
        Ok(())
    }

    /// STOP_MAINTENANCE: the machines come UP and leave the schedule.
    pub(crate) fn stop_maintenance(&mut self, machines: &[v1::MachineId]) -> Result<(), CallError> {
        let machines: Vec<v1::MachineId> =
            machines.iter().map(normalize).collect::<Result<_, _>>()?;
        if machines.is_empty() {
            return Err(bad("STOP_MAINTENANCE needs at least one machine"));
        }
        if let Some(m) = machines.iter().find(|m| !self.maintenance.down.contains(m)) {
            return Err(bad(format!("Machine {} is not DOWN", describe(m))));
        }
        self.maintenance.down.retain(|m| !machines.contains(m));
        for w in &mut self.maintenance.windows {
            w.machine_ids.retain(|m| !machines.contains(m));
        }
        self.maintenance
            .windows
            .retain(|w| !w.machine_ids.is_empty());
        self.registry_dirty = true;
        Ok(())
    }

    /// GET_MAINTENANCE_SCHEDULE.
    pub fn maintenance_schedule(&self) -> maintenance::Schedule {
        maintenance::Schedule {
            windows: self.maintenance.windows.clone(),
        }
    }

    /// GET_MAINTENANCE_STATUS: each scheduled machine that is not down,
    /// with the answers to the inverse offers for its agents (UNKNOWN until
    /// a framework answers), and the machines that are down.
    pub fn maintenance_status(&self) -> maintenance::ClusterStatus {
        use v1::allocator::{InverseOfferStatus, inverse_offer_status::Status};
        let mut draining = Vec::new();
        for w in &self.maintenance.windows {
            for m in &w.machine_ids {
                if self.maintenance.down.contains(m) {
                    continue;
                }
                let statuses = self
                    .inverse_offers
                    .values()
                    .filter(|o| {
                        self.agents
                            .get(&o.agent)
                            .is_some_and(|a| on(m, &a.info.hostname, ip_of(&a.address).as_deref()))
                    })
                    .map(|o| {
                        let (status, at) = o.answer.unwrap_or((Status::Unknown, o.sent));
                        InverseOfferStatus {
                            status: status as i32,
                            framework_id: o.framework.to_proto(),
                            timestamp: v1::TimeInfo {
                                nanoseconds: i64::try_from(at.as_nanos()).unwrap_or(i64::MAX),
                            },
                        }
                    })
                    .collect();
                draining.push(maintenance::cluster_status::DrainingMachine {
                    id: m.clone(),
                    statuses,
                });
            }
        }
        maintenance::ClusterStatus {
            draining_machines: draining,
            down_machines: self.maintenance.down.clone(),
        }
    }

    /// The schedule and the down machines, for the registry.
    pub(crate) fn maintenance_stored(&self) -> (Option<maintenance::Schedule>, Vec<v1::MachineId>) {
        let schedule = (!self.maintenance.windows.is_empty()).then(|| self.maintenance_schedule());
        (schedule, self.maintenance.down.clone())
    }

    /// Takes back a stored schedule (dropping anything invalid).
    pub(crate) fn recover_maintenance(
        &mut self,
        schedule: Option<maintenance::Schedule>,
        down: Vec<v1::MachineId>,
    ) {
        let windows: Vec<maintenance::Window> = schedule
            .map(|s| s.windows)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| {
                let machine_ids: Vec<v1::MachineId> = w
                    .machine_ids
                    .iter()
                    .filter_map(|m| normalize(m).ok())
                    .collect();
                (!machine_ids.is_empty()).then_some(maintenance::Window {
                    machine_ids,
                    unavailability: w.unavailability,
                })
            })
            .collect();
        let mut m = Maintenance {
            windows,
            down: down.iter().filter_map(|m| normalize(m).ok()).collect(),
        };
        let scheduled: Vec<v1::MachineId> =
            m.down.iter().filter(|d| m.scheduled(d)).cloned().collect();
        m.down = scheduled;
        self.maintenance = m;
    }
}

impl Master {
    /// GET_MAINTENANCE_SCHEDULE, for `principal`.
    pub fn get_maintenance_schedule(
        &self,
        principal: Option<&str>,
    ) -> Result<maintenance::Schedule, CallError> {
        self.authorize(
            agora_proto::acl::Action::GetMaintenanceSchedules,
            principal,
            None,
        )?;
        Ok(self.maintenance_schedule())
    }

    /// GET_MAINTENANCE_STATUS, for `principal`.
    pub fn get_maintenance_status(
        &self,
        principal: Option<&str>,
    ) -> Result<maintenance::ClusterStatus, CallError> {
        self.authorize(
            agora_proto::acl::Action::GetMaintenanceStatuses,
            principal,
            None,
        )?;
        Ok(self.maintenance_status())
    }
}
