//! The marathon-rs state machine.
//!
//! State: the apps (the root group), their versions, the instances launched,
//! the deployments in progress, launch backoff. Inputs: REST calls (in
//! `api.rs`), scheduler events (subscribed, offers, rescinds, status
//! updates) and ticks. Outputs: scheduler calls, and events for
//! `/v2/events`. After every input the apps are reconciled: each app's
//! effective definition (the deployment's view, else the root's) is compared
//! with its instances by the planner, which says what to launch and kill;
//! deployments advance when their steps are done.

mod api;
mod groups;
mod resident;
mod roles;
mod status;
mod stored;
mod views;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use agora_proto::status::is_terminal;
use agora_proto::v1::{self, TaskState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{App, UnreachableStrategy};
use crate::constraints::{Constraint, Placement};
use crate::deployment::{ActionKind, Deployment};
use crate::instance::{Instance, Reservation, app_of_task};
use crate::offers::{self, OfferSpace, Unfit, task_info};
use crate::path::PathId;
use crate::planner::{self, Backoff};
use crate::time::Millis;

pub use api::{Reply, TaskKill};
pub use stored::EntryError;

/// Settings (Marathon flags).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// `--framework_name`.
    pub framework_name: String,
    /// This marathon's `host:port`.
    pub leader: String,
    /// `--master`.
    pub master: String,
    /// Service ports are assigned from this range.
    pub local_port_min: u32,
    /// Upper end of the range.
    pub local_port_max: u32,
    /// `--decline_offer_duration` (seconds) when nothing needs launching.
    pub decline_offer_seconds: f64,
    /// Versions kept per app.
    pub max_versions: usize,
    /// `--max_running_deployments`.
    pub max_running_deployments: usize,
    /// `--zk` without credentials, when run highly available.
    pub zk: Option<String>,
    /// `--zk_session_timeout`, milliseconds.
    pub zk_session_timeout_ms: u64,
    /// `--mesos_role`: the role resident apps reserve for.
    pub role: String,
    /// The principal marathon-rs authenticates as (reservations and
    /// volumes are made in its name).
    pub principal: Option<String>,
    /// `--new_group_enforce_role top`: top-level groups created without
    /// `enforceRole` enforce their role (`off`: they do not).
    #[serde(default)]
    pub new_group_enforce_role: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            framework_name: "marathon".into(),
            leader: "localhost:8080".into(),
            master: "localhost:5050".into(),
            local_port_min: 10000,
            local_port_max: 20000,
            decline_offer_seconds: 120.0,
            max_versions: 50,
            max_running_deployments: 100,
            zk: None,
            zk_session_timeout_ms: 10_000,
            role: "*".into(),
            principal: None,
            new_group_enforce_role: false,
        }
    }
}

/// Everything that is persisted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The apps of the root group, by id.
    pub apps: BTreeMap<PathId, App>,
    /// Groups created explicitly (groups of apps exist implicitly).
    pub groups: BTreeSet<PathId>,
    /// Group dependencies.
    pub group_dependencies: BTreeMap<PathId, Vec<String>>,
    /// Top-level groups that enforce their role (Marathon 1.9
    /// `enforceRole`): their apps run in the group's role.
    #[serde(default)]
    pub enforce_role: BTreeSet<PathId>,
    /// Stored versions per app, oldest first.
    pub versions: BTreeMap<PathId, Vec<App>>,
    /// Instances by task id.
    pub instances: BTreeMap<String, Instance>,
    /// Resident apps' reservations (resources and volumes on one agent,
    /// kept while their tasks come and go), by id.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reservation>,
    /// Deployments in progress, in order.
    pub deployments: Vec<Deployment>,
    /// Launch backoff per app.
    pub backoff: BTreeMap<PathId, Backoff>,
    /// The last task failure per app (JSON).
    pub last_failure: BTreeMap<PathId, Value>,
    /// The framework id, once subscribed.
    pub framework_id: Option<String>,
    /// Set when the master removed the framework (an operator's TEARDOWN):
    /// its tasks are gone and its id can never subscribe again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_removed: Option<FrameworkRemoved>,
    /// The root group's version.
    pub root_version: String,
}

/// When and why the master removed marathon-rs' framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRemoved {
    /// The removed framework's id.
    pub framework_id: String,
    /// What the master said.
    pub message: String,
    /// When it was noticed (ISO 8601).
    pub since: String,
}

/// Why an app is waiting in the queue.
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    /// Offers looked at for it.
    pub processed: u64,
    /// Offers it could not use.
    pub unused: u64,
    /// Reasons, with counts.
    pub reasons: BTreeMap<String, u64>,
    /// When it started waiting.
    pub since: Option<Millis>,
    /// Last offer it could not use.
    pub last_unused: Option<Millis>,
    /// Last offer it used.
    pub last_used: Option<Millis>,
}

/// A call marathon-rs makes on the scheduler API.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// Launch tasks on an offer; the rest is declined for `refuse_seconds`.
    Launch {
        /// The offer.
        offer: v1::OfferId,
        /// The tasks.
        tasks: Vec<v1::TaskInfo>,
        /// Filter on the unused rest.
        refuse_seconds: f64,
    },
    /// Apply operations to an offer (RESERVE, CREATE, DESTROY,
    /// UNRESERVE), then launch tasks on it; the rest is declined for
    /// `refuse_seconds`.
    Operate {
        /// The offer.
        offer: v1::OfferId,
        /// The operations, in order, before the launch.
        operations: Vec<v1::offer::Operation>,
        /// The tasks (may be none).
        tasks: Vec<v1::TaskInfo>,
        /// Filter on the unused rest.
        refuse_seconds: f64,
    },
    /// Decline offers.
    Decline {
        /// The offers.
        offers: Vec<v1::OfferId>,
        /// For how long.
        refuse_seconds: f64,
    },
    /// Kill a task.
    Kill {
        /// The task.
        task: v1::TaskId,
        /// Its agent.
        agent: Option<v1::AgentId>,
    },
    /// Reconcile tasks (all when empty).
    Reconcile(Vec<(v1::TaskId, Option<v1::AgentId>)>),
    /// The framework will leave the agents of these inverse offers.
    AcceptInverseOffers(Vec<v1::OfferId>),
    /// UPDATE_FRAMEWORK: the framework's roles are now these (`--mesos-role`
    /// and every app's role).
    UpdateRoles(Vec<String>),
    /// Offers are needed again.
    Revive,
    /// No offers are needed.
    Suppress,
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A scheduler call.
    Call(Call),
    /// An event for `/v2/events` subscribers.
    Event {
        /// `eventType`.
        event_type: String,
        /// The payload (with `eventType` and `timestamp`).
        payload: Value,
    },
}

/// What marathon-rs does with one offer.
#[derive(Clone, Debug, Default)]
struct Planned {
    operations: Vec<v1::offer::Operation>,
    tasks: Vec<v1::TaskInfo>,
}

/// How an instance was placed on an offer.
enum Placement_ {
    /// On unreserved resources or the role's other reservations.
    Plain { taken: offers::Taken },
    /// On a reservation (made now, with `operations`, or earlier).
    Reserved {
        ports: Vec<u32>,
        reservation: String,
        operations: Vec<v1::offer::Operation>,
        resources: Vec<v1::Resource>,
    },
}

/// An app that needs instances, as placement sees it.
struct Want {
    path: PathId,
    app: App,
    constraints: Vec<Constraint>,
    /// Where its active instances are (only kept with constraints).
    placed: Vec<Placement>,
}

/// The state machine. See the module documentation.
pub struct Marathon {
    pub(crate) config: Config,
    pub(crate) state: State,
    pub(crate) queue: BTreeMap<PathId, QueueStats>,
    /// Launches needed per app (recomputed on every reconcile).
    pub(crate) needs: BTreeMap<PathId, u32>,
    /// Agents the master asked marathon-rs to leave (drained, or in a
    /// maintenance window), with the inverse offers that asked.
    pub(crate) leaving: BTreeMap<String, BTreeSet<String>>,
    /// Reservations given up (their app deleted, or wiped) that offers must
    /// bring back to be destroyed and unreserved: offers are not
    /// suppressed until they have.
    pub(crate) orphaned: BTreeSet<String>,
    /// The roles the framework has now (as last subscribed or updated).
    pub(crate) roles: BTreeSet<String>,
    /// Apps or deployments changed since the roles were last compared (a
    /// status update changes neither, and does not pay for the comparison).
    pub(crate) roles_stale: bool,
    pub(crate) rng: fastrand::Rng,
    pub(crate) out: Vec<Output>,
    pub(crate) suppressed: bool,
    pub(crate) subscribed: bool,
    /// State changed since the last `take_dirty`.
    pub(crate) dirty: bool,
    /// Whether events are produced (off while nobody listens: deployment
    /// events carry whole plans).
    pub(crate) events_on: bool,
}

impl Marathon {
    /// A marathon with `state` (empty, or loaded from the store).
    pub fn new(config: Config, state: State, seed: u64) -> Self {
        let roles = BTreeSet::from([config.role.clone()]);
        Marathon {
            config,
            state,
            queue: BTreeMap::new(),
            needs: BTreeMap::new(),
            leaving: BTreeMap::new(),
            orphaned: BTreeSet::new(),
            roles,
            roles_stale: true,
            rng: fastrand::Rng::with_seed(seed),
            out: Vec::new(),
            suppressed: false,
            subscribed: false,
            dirty: false,
            events_on: true,
        }
    }

    /// Turns event outputs on or off.
    pub fn set_events(&mut self, on: bool) {
        self.events_on = on;
    }

    /// The persistent state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Whether state changed since the last call (then it should be saved).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Outputs produced so far.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn uuid(&mut self) -> String {
        let a = self.rng.u64(..);
        let b = self.rng.u64(..);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (0x8000 | (b >> 48) as u16 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    pub(crate) fn event(&mut self, now: Millis, event_type: &str, mut payload: Value) {
        if !self.events_on {
            return;
        }
        payload["eventType"] = json!(event_type);
        payload["timestamp"] = json!(now.iso());
        self.out.push(Output::Event {
            event_type: event_type.to_string(),
            payload,
        });
    }

    // ------------------------------------------------------------ scheduler

    /// SUBSCRIBED: remember the framework id, reconcile every task.
    pub fn subscribed(&mut self, now: Millis, framework_id: &str) {
        if self.state.framework_id.as_deref() != Some(framework_id) {
            self.state.framework_id = Some(framework_id.to_string());
            self.dirty = true;
        }
        self.subscribed = true;
        self.suppressed = false;
        // A new subscription registers with --mesos-role alone.
        self.roles = BTreeSet::from([self.config.role.clone()]);
        self.roles_stale = true;
        self.announce_roles();
        let known: Vec<(v1::TaskId, Option<v1::AgentId>)> = self
            .state
            .instances
            .values()
            .map(|i| {
                (
                    v1::TaskId {
                        value: i.task_id.clone(),
                    },
                    Some(v1::AgentId {
                        value: i.agent_id.clone(),
                    }),
                )
            })
            .collect();
        if !known.is_empty() {
            self.out.push(Output::Call(Call::Reconcile(known)));
        }
        // Implicit reconciliation finds tasks this marathon does not know.
        self.out.push(Output::Call(Call::Reconcile(Vec::new())));
        // Kills sent while disconnected may have been lost: send them again.
        let killing: Vec<Call> = self
            .state
            .instances
            .values()
            .filter(|i| i.killing)
            .map(|i| Call::Kill {
                task: v1::TaskId {
                    value: i.task_id.clone(),
                },
                agent: Some(v1::AgentId {
                    value: i.agent_id.clone(),
                }),
            })
            .collect();
        self.out.extend(killing.into_iter().map(Output::Call));
        self.out.push(Output::Call(Call::Revive));
        self.reconcile(now);
    }

    /// The subscription broke (the SDK resubscribes).
    pub fn disconnected(&mut self) {
        self.subscribed = false;
    }

    /// The master removed the framework (TEARDOWN): its tasks were killed
    /// with it, so every instance ends (TASK_KILLED, with the master's
    /// message) instead of being shown running; the apps stay defined and
    /// wait until the framework registers anew ([`Self::forget_framework`]).
    pub fn framework_removed(&mut self, now: Millis, message: &str) {
        self.subscribed = false;
        if self.state.framework_removed.is_some() {
            return;
        }
        self.state.framework_removed = Some(FrameworkRemoved {
            framework_id: self.state.framework_id.clone().unwrap_or_default(),
            message: message.to_string(),
            since: now.iso(),
        });
        self.dirty = true;
        let tasks: Vec<(String, String)> = self
            .state
            .instances
            .values()
            .map(|i| (i.task_id.clone(), i.agent_id.clone()))
            .collect();
        for (task, agent) in tasks {
            let status = v1::TaskStatus {
                task_id: v1::TaskId { value: task },
                state: TaskState::TaskKilled as i32,
                message: Some(format!("the framework was removed: {message}")),
                agent_id: Some(v1::AgentId { value: agent }),
                ..Default::default()
            };
            self.status(now, &status);
        }
        // The instances did not fail: their apps owe no launch delay.
        self.state.backoff.clear();
    }

    /// Forgets a removed framework, so that the next subscription registers
    /// a new one (whose offers relaunch every app's instances).
    pub fn forget_framework(&mut self) {
        if self.state.framework_removed.take().is_some() {
            self.state.framework_id = None;
            // Reservations are labelled with the old framework's id: the new
            // one makes its own.
            self.state.reservations.clear();
            self.dirty = true;
        }
    }

    /// New offers: launch what apps need, decline the rest. Instances are
    /// spread over the batch one offer at a time (round robin), so a large
    /// deployment starts on every agent at once instead of filling the
    /// first offer. Reservations no app owns are destroyed and unreserved.
    pub fn offers(&mut self, now: Millis, offers: Vec<v1::Offer>) {
        // The master offers no agent it is draining: one offered without an
        // unavailability stays (a rescind of its inverse offer was missed
        // while disconnected, or it came from a master since replaced).
        for o in offers.iter().filter(|o| o.unavailability.is_none()) {
            self.leaving.remove(&o.agent_id.value);
        }
        self.reconcile(now);
        let nothing_needed = self.needs.values().all(|n| *n == 0);
        let reserved = self.offered_reservations(&offers);
        let mut planned = if nothing_needed {
            vec![Planned::default(); offers.len()]
        } else {
            self.place(now, &offers, &reserved)
        };
        for (p, mine) in planned.iter_mut().zip(&reserved) {
            for (id, resources) in mine {
                if !self.state.reservations.contains_key(id) {
                    p.operations.extend(resident::cleanup(resources));
                    self.orphaned.remove(id);
                }
            }
        }
        let mut declined = Vec::new();
        for (offer, p) in offers.into_iter().zip(planned) {
            if p.operations.is_empty() && p.tasks.is_empty() {
                declined.push(offer.id);
            } else if p.operations.is_empty() {
                self.out.push(Output::Call(Call::Launch {
                    offer: offer.id,
                    tasks: p.tasks,
                    refuse_seconds: 1.0,
                }));
            } else {
                self.out.push(Output::Call(Call::Operate {
                    offer: offer.id,
                    operations: p.operations,
                    tasks: p.tasks,
                    refuse_seconds: 1.0,
                }));
            }
        }
        if !declined.is_empty() {
            let refuse = if nothing_needed {
                self.config.decline_offer_seconds
            } else {
                1.0
            };
            self.out.push(Output::Call(Call::Decline {
                offers: declined,
                refuse_seconds: refuse,
            }));
        }
        if nothing_needed && self.orphaned.is_empty() && !self.suppressed && self.subscribed {
            self.suppressed = true;
            self.out.push(Output::Call(Call::Suppress));
        }
    }

    /// marathon-rs' reservations in each offer, by reservation id.
    fn offered_reservations(
        &self,
        offers: &[v1::Offer],
    ) -> Vec<BTreeMap<String, Vec<v1::Resource>>> {
        match &self.state.framework_id {
            Some(fw) => offers.iter().map(|o| resident::offered(o, fw)).collect(),
            None => vec![BTreeMap::new(); offers.len()],
        }
    }

    /// The apps that need instances now (not waiting out a backoff), with
    /// their constraints and where their active instances are.
    fn wants(&self, now: Millis) -> Vec<Want> {
        let mut wants: Vec<Want> = Vec::new();
        for (path, n) in &self.needs {
            if *n == 0
                || self
                    .state
                    .backoff
                    .get(path)
                    .is_some_and(|b| b.waiting(now.0))
            {
                continue;
            }
            let Some(app) = self.effective(path) else {
                continue;
            };
            let constraints: Vec<Constraint> = app
                .constraints
                .iter()
                .filter_map(|c| Constraint::parse(c).ok())
                .collect();
            let placed = if constraints.is_empty() {
                Vec::new()
            } else {
                self.state
                    .instances
                    .values()
                    .filter(|i| i.app_id == *path && i.is_active())
                    .map(|i| i.placement.clone())
                    .collect()
            };
            wants.push(Want {
                path: path.clone(),
                app,
                constraints,
                placed,
            });
        }
        wants
    }

    /// Places needed instances on `offers`, one per offer per round, until
    /// nothing more fits or is needed. Returns the operations and tasks
    /// per offer. A resident app's instance goes to one of its free
    /// reservations when its agent offers it, and makes a new one only
    /// when the app has fewer reservations than it needs.
    fn place(
        &mut self,
        now: Millis,
        offers: &[v1::Offer],
        reserved: &[BTreeMap<String, Vec<v1::Resource>>],
    ) -> Vec<Planned> {
        let mut wants = self.wants(now);
        let mut spaces: Vec<OfferSpace> = offers
            .iter()
            .map(|o| {
                let mut space = OfferSpace::new(o.clone());
                space.leaving |= self.leaving.contains_key(&o.agent_id.value);
                space
            })
            .collect();
        let mut planned: Vec<Planned> = vec![Planned::default(); offers.len()];
        // (offer, app) pairs that did not fit: space only shrinks, so they never will.
        let mut full: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut seen: BTreeSet<(usize, usize)> = BTreeSet::new();
        loop {
            let mut progressed = false;
            for (o, offer) in offers.iter().enumerate() {
                for (w, want) in wants.iter_mut().enumerate() {
                    if full.contains(&(o, w))
                        || self.needs.get(&want.path).copied().unwrap_or(0) == 0
                    {
                        continue;
                    }
                    if seen.insert((o, w)) {
                        self.queue.entry(want.path.clone()).or_default().processed += 1;
                    }
                    let offer_role = spaces[o].role.as_deref().unwrap_or(&self.config.role);
                    let result = if want.app.role.as_deref().is_some_and(|r| r != offer_role) {
                        Err(Some(Unfit::UnfulfilledRole))
                    } else if want.app.is_resident() {
                        self.place_resident(want, &mut spaces[o], offer, &reserved[o])
                    } else {
                        let placed: Vec<&Placement> = want.placed.iter().collect();
                        spaces[o]
                            .reserve(&want.app, &want.constraints, &placed)
                            .map(|taken| Placement_::Plain { taken })
                            .map_err(Some)
                    };
                    match result {
                        Ok(how) => {
                            let task_id = format!("{}.{}", want.path.safe(), self.uuid());
                            let (ports, reservation) = match how {
                                Placement_::Plain { taken } => {
                                    let mut task = task_info(
                                        &want.app,
                                        &want.path,
                                        &task_id,
                                        offer,
                                        &taken.ports,
                                    );
                                    task.resources = taken.resources;
                                    planned[o].tasks.push(task);
                                    (taken.ports, None)
                                }
                                Placement_::Reserved {
                                    ports,
                                    reservation,
                                    operations,
                                    resources,
                                } => {
                                    let mut task =
                                        task_info(&want.app, &want.path, &task_id, offer, &ports);
                                    task.resources = resources;
                                    planned[o].operations.extend(operations);
                                    planned[o].tasks.push(task);
                                    if let Some(r) = self.state.reservations.get_mut(&reservation) {
                                        r.task_id = Some(task_id.clone());
                                    }
                                    (ports, Some(reservation))
                                }
                            };
                            if !want.constraints.is_empty() {
                                want.placed.push(spaces[o].placement.clone());
                            }
                            self.state.instances.insert(
                                task_id.clone(),
                                Instance {
                                    task_id,
                                    app_id: want.path.clone(),
                                    version: want.app.version.clone(),
                                    config_version: want.app.config_version(),
                                    agent_id: offer.agent_id.value.clone(),
                                    placement: spaces[o].placement.clone(),
                                    ports,
                                    ip_addresses: Vec::new(),
                                    state: TaskState::TaskStaging as i32,
                                    health: None,
                                    staged_at: now,
                                    started_at: None,
                                    killing: false,
                                    unreachable_since: None,
                                    inactive: false,
                                    reservation,
                                },
                            );
                            if let Some(n) = self.needs.get_mut(&want.path) {
                                *n -= 1;
                            }
                            let stats = self.queue.entry(want.path.clone()).or_default();
                            stats.last_used = Some(now);
                            self.dirty = true;
                            progressed = true;
                            // One instance per offer per round.
                            break;
                        }
                        Err(None) => {
                            // A resident app waiting for its reservations' agents.
                            full.insert((o, w));
                        }
                        Err(Some(reason)) => {
                            full.insert((o, w));
                            let launched_here = planned[o].tasks.iter().any(|t| {
                                app_of_task(&t.task_id.value).as_ref() == Some(&want.path)
                            });
                            let stats = self.queue.entry(want.path.clone()).or_default();
                            *stats
                                .reasons
                                .entry(reason.reason().to_string())
                                .or_default() += 1;
                            if !launched_here {
                                stats.unused += 1;
                                stats.last_unused = Some(now);
                            }
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        planned
    }

    /// One instance of a resident app on an offer: on a free reservation of
    /// the app in it, else (when the app has fewer reservations than
    /// instances) on a new one. `Err(None)`: not here, and no reason
    /// to report (its reservations are elsewhere).
    fn place_resident(
        &mut self,
        want: &Want,
        space: &mut OfferSpace,
        offer: &v1::Offer,
        reserved: &BTreeMap<String, Vec<v1::Resource>>,
    ) -> Result<Placement_, Option<Unfit>> {
        let free: Vec<String> = self
            .free_reservations(&want.path)
            .map(|r| r.id.clone())
            .collect();
        if let Some(id) = free.iter().find(|id| reserved.contains_key(*id)) {
            let resources = reserved[id].clone();
            return Ok(Placement_::Reserved {
                ports: resident::ports(&resources),
                reservation: id.clone(),
                operations: Vec::new(),
                resources,
            });
        }
        // A new reservation only while the app has fewer than its
        // instances: a killed task's reservation is reused once the task
        // is gone, never doubled while it stops.
        let held = self
            .state
            .reservations
            .values()
            .filter(|r| r.app_id == want.path)
            .count();
        if held >= want.app.instances as usize {
            return Err(None);
        }
        let role = space
            .role
            .clone()
            .unwrap_or_else(|| self.config.role.clone());
        if role == "*" {
            return Err(Some(Unfit::UnfulfilledRole));
        }
        let placed: Vec<&Placement> = want.placed.iter().collect();
        let ports = space
            .reserve_new(&want.app, &want.constraints, &placed)
            .map_err(Some)?;
        let id = format!("{}.{}", want.path.safe(), self.uuid());
        let made = self.new_reservation(
            &want.app,
            &id,
            &role,
            offers::task_resources(&want.app, &ports),
        );
        self.state.reservations.insert(
            id.clone(),
            Reservation {
                id: id.clone(),
                app_id: want.path.clone(),
                agent_id: offer.agent_id.value.clone(),
                placement: space.placement.clone(),
                volumes: made.volumes,
                task_id: None,
            },
        );
        Ok(Placement_::Reserved {
            ports,
            reservation: id,
            operations: made.operations,
            resources: made.task_resources,
        })
    }

    /// An offer was withdrawn (nothing to do: offers are used at once).
    pub fn rescinded(&mut self, _offer: &v1::OfferId) {}

    /// INVERSE_OFFERS: the master asks marathon-rs to leave these agents (a
    /// drain or a maintenance window). It accepts: nothing more is placed
    /// there, and each app's instances on them move as a rolling restart
    /// moves them (replacements elsewhere first, within the app's
    /// upgradeStrategy, then the leaving copies are killed). Where no other
    /// agent has room the instances stay until the master's deadline.
    pub fn inverse_offers(&mut self, now: Millis, offers: Vec<v1::InverseOffer>) {
        let mut accepted = Vec::new();
        for o in offers {
            if let Some(agent) = o.agent_id {
                self.leaving
                    .entry(agent.value)
                    .or_default()
                    .insert(o.id.value.clone());
                accepted.push(o.id);
            }
        }
        if !accepted.is_empty() {
            self.out
                .push(Output::Call(Call::AcceptInverseOffers(accepted)));
        }
        self.reconcile(now);
    }

    /// RESCIND_INVERSE_OFFER: the agent stays (its drain ended).
    pub fn inverse_offer_rescinded(&mut self, now: Millis, id: &v1::OfferId) {
        for offers in self.leaving.values_mut() {
            offers.remove(&id.value);
        }
        self.leaving.retain(|_, offers| !offers.is_empty());
        self.reconcile(now);
    }

    /// The agents marathon-rs is leaving.
    pub fn leaving(&self) -> impl Iterator<Item = &str> {
        self.leaving.keys().map(String::as_str)
    }

    /// Periodic work: backoff expiry can free launches; instances on
    /// unreachable agents are replaced after `inactiveAfterSeconds` and
    /// forgotten (and killed, should they come back) after
    /// `expungeAfterSeconds`.
    pub fn tick(&mut self, now: Millis) {
        let mut expunged = Vec::new();
        for i in self.state.instances.values_mut() {
            let Some(since) = i.unreachable_since else {
                continue;
            };
            let strategy = self
                .state
                .apps
                .get(&i.app_id)
                .map(|a| a.unreachable_strategy.clone())
                .unwrap_or_default();
            let UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } = strategy
            else {
                continue;
            };
            let elapsed = since.seconds_until(now);
            if elapsed >= inactive_after_seconds && !i.inactive {
                i.inactive = true;
                self.dirty = true;
            }
            if elapsed >= expunge_after_seconds.max(inactive_after_seconds) {
                expunged.push((i.task_id.clone(), i.agent_id.clone()));
            }
        }
        for (task, agent) in expunged {
            self.state.instances.remove(&task);
            self.dirty = true;
            self.out.push(Output::Call(Call::Kill {
                task: v1::TaskId { value: task },
                agent: Some(v1::AgentId { value: agent }),
            }));
        }
        self.reconcile(now);
    }

    /// When [`Self::tick`] must next run (after `now`): a launch backoff
    /// ending for an app that waits to launch, or an unreachable instance
    /// turning inactive or expunged. None: nothing is timed.
    pub fn next_deadline(&self, now: Millis) -> Option<Millis> {
        let backoffs = self
            .state
            .backoff
            .iter()
            .filter(|(app, b)| b.until > now.0 && self.needs.get(*app).is_some_and(|n| *n > 0))
            .map(|(_, b)| Millis(b.until));
        let unreachable = self.state.instances.values().filter_map(|i| {
            let since = i.unreachable_since?;
            let UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } = self.state.apps.get(&i.app_id)?.unreachable_strategy.clone()
            else {
                return None;
            };
            let at = |secs: f64| since.plus((secs * 1000.0) as i64);
            let inactive = (!i.inactive).then(|| at(inactive_after_seconds));
            let expunge = at(expunge_after_seconds.max(inactive_after_seconds));
            Some(inactive.map_or(expunge, |i| i.min(expunge)))
        });
        backoffs
            .chain(unreachable)
            .map(|t| t.max(Millis(now.0 + 1)))
            .min()
    }

    // ------------------------------------------------------------ reconcile

    /// The definition `app` should have now: the deployment's view while one
    /// touches it, else the root's.
    pub fn effective(&self, app: &PathId) -> Option<App> {
        self.effective_ref(app).map(Cow::into_owned)
    }

    /// [`Self::effective`] without copying when it can be borrowed.
    pub(crate) fn effective_ref(&self, app: &PathId) -> Option<Cow<'_, App>> {
        for d in &self.state.deployments {
            if let Some(def) = d.effective(app) {
                return def;
            }
        }
        self.state.apps.get(app).map(Cow::Borrowed)
    }

    /// The instances of `app`. Task ids start with the app's safe name and a
    /// dot, so they are one range of the map (ids of `/a.b` share the
    /// prefix of `/a` and are filtered out).
    pub(crate) fn instances_of<'a>(
        &'a self,
        app: &'a PathId,
    ) -> impl Iterator<Item = &'a Instance> + 'a {
        let prefix = format!("{}.", app.safe());
        self.state
            .instances
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, i)| i)
            .filter(move |i| i.app_id == *app)
    }

    /// Compares every app with its instances (kills, launches to queue) and
    /// advances deployments whose current step is done, until nothing moves.
    pub(crate) fn reconcile(&mut self, now: Millis) {
        self.reconcile_apps(now);
        // Each round advances at least one step, so this ends.
        while !self.advance_deployments(now).is_empty() {
            self.reconcile_apps(now);
        }
    }

    /// [`Marathon::reconcile`] for a change that touched only `paths`:
    /// those apps, then the apps of each deployment that advances, until
    /// nothing moves. A change to one app of thousands costs that app.
    pub(crate) fn reconcile_paths(&mut self, now: Millis, mut paths: BTreeSet<PathId>) {
        loop {
            for path in &paths {
                let known = self.state.apps.contains_key(path)
                    || self.instances_of(path).next().is_some()
                    || self.state.reservations.values().any(|r| &r.app_id == path)
                    || self
                        .state
                        .deployments
                        .iter()
                        .any(|d| d.affected().contains(path));
                if known {
                    self.reconcile_app(now, path);
                } else {
                    self.needs.remove(path);
                    self.queue.remove(path);
                }
            }
            self.revive_if_needed();
            // Each round advances at least one step, so this ends.
            paths = self.advance_deployments(now);
            if paths.is_empty() {
                return;
            }
        }
    }

    fn reconcile_apps(&mut self, now: Millis) {
        let mut paths: BTreeSet<PathId> = self.state.apps.keys().cloned().collect();
        paths.extend(self.state.instances.values().map(|i| i.app_id.clone()));
        paths.extend(self.state.reservations.values().map(|r| r.app_id.clone()));
        for d in &self.state.deployments {
            paths.extend(d.affected());
        }
        self.needs.retain(|p, _| paths.contains(p));
        self.queue.retain(|p, _| paths.contains(p));
        for path in paths {
            self.reconcile_app(now, &path);
        }
        self.revive_if_needed();
    }

    /// Status updates change one app: reconcile it, then the deployments.
    fn reconcile_one(&mut self, now: Millis, path: &PathId) {
        self.reconcile_paths(now, BTreeSet::from([path.clone()]));
    }

    /// The roles the framework needs: `--mesos-role` and its apps'.
    fn wanted_roles(&self) -> BTreeSet<String> {
        let mut roles = BTreeSet::from([self.config.role.clone()]);
        roles.extend(self.state.apps.values().filter_map(|a| a.role.clone()));
        for d in &self.state.deployments {
            for path in d.affected() {
                if let Some(role) = self.effective_ref(&path).and_then(|a| a.role.clone()) {
                    roles.insert(role);
                }
            }
        }
        roles
    }

    /// UPDATE_FRAMEWORK when the roles apps need changed.
    fn announce_roles(&mut self) {
        if !self.subscribed || !self.roles_stale {
            return;
        }
        self.roles_stale = false;
        let wanted = self.wanted_roles();
        if wanted != self.roles {
            self.out.push(Output::Call(Call::UpdateRoles(
                wanted.iter().cloned().collect(),
            )));
            self.roles = wanted;
        }
    }

    fn revive_if_needed(&mut self) {
        self.announce_roles();
        let wanted = self.needs.values().any(|n| *n > 0) || !self.orphaned.is_empty();
        if wanted && self.suppressed && self.subscribed {
            self.suppressed = false;
            self.out.push(Output::Call(Call::Revive));
        }
    }

    /// Kills what `path` has too many of and records what it needs.
    fn reconcile_app(&mut self, now: Millis, path: &PathId) {
        if self.effective_ref(path).is_none() {
            // A deleted app's reservations go once no task uses them (the
            // next offers of them destroy and unreserve them).
            let gone: Vec<String> = self
                .state
                .reservations
                .values()
                .filter(|r| &r.app_id == path && r.task_id.is_none())
                .map(|r| r.id.clone())
                .collect();
            for id in gone {
                self.state.reservations.remove(&id);
                self.orphaned.insert(id);
                self.dirty = true;
            }
        }
        let (launch, kill) = {
            let instances: Vec<&Instance> = self.instances_of(path).collect();
            match self.effective_ref(path) {
                None => (
                    0,
                    instances
                        .iter()
                        .filter(|i| i.is_active())
                        .map(|i| i.task_id.clone())
                        .collect::<Vec<_>>(),
                ),
                Some(app) => {
                    let p = planner::plan_leaving(&app, &instances, |i| {
                        self.leaving.contains_key(&i.agent_id)
                    });
                    (p.launch, p.kill)
                }
            }
        };
        for task in kill {
            if let Some(i) = self.state.instances.get_mut(&task) {
                i.killing = true;
                self.dirty = true;
                self.out.push(Output::Call(Call::Kill {
                    task: v1::TaskId {
                        value: task.clone(),
                    },
                    agent: Some(v1::AgentId {
                        value: i.agent_id.clone(),
                    }),
                }));
            }
        }
        if launch > 0 {
            self.needs.insert(path.clone(), launch);
            self.queue
                .entry(path.clone())
                .or_default()
                .since
                .get_or_insert(now);
        } else {
            self.needs.remove(path);
            self.queue.remove(path);
        }
    }

    fn step_done(&self, d: &Deployment, step: usize) -> bool {
        d.steps[step].iter().all(|a| match a.kind {
            ActionKind::StartApplication => true,
            ActionKind::StopApplication => !self
                .instances_of(&a.app)
                .any(|i| !is_terminal(i.task_state())),
            ActionKind::ScaleApplication | ActionKind::RestartApplication => {
                match d.target.get(&a.app).and_then(Option::as_ref) {
                    None => true,
                    Some(app) => {
                        let instances: Vec<&Instance> = self.instances_of(&a.app).collect();
                        planner::plan_leaving(app, &instances, |i| {
                            self.leaving.contains_key(&i.agent_id)
                        })
                        .done
                            && !instances
                                .iter()
                                .any(|i| i.killing && !is_terminal(i.task_state()))
                    }
                }
            }
        })
    }

    /// Moves every deployment whose current step is done one step on;
    /// finished deployments are removed. Returns whether anything moved.
    /// Advances the deployments whose current step is done; returns the
    /// apps of those that moved (empty: none did).
    fn advance_deployments(&mut self, now: Millis) -> BTreeSet<PathId> {
        let mut moved = BTreeSet::new();
        let mut idx = 0;
        while idx < self.state.deployments.len() {
            let d = &self.state.deployments[idx];
            if d.current < d.steps.len() && self.step_done(d, d.current) {
                let plan = self.plan_with_groups(d);
                let step = d.current_step_json();
                self.event(
                    now,
                    "deployment_step_success",
                    json!({"plan": plan, "currentStep": step}),
                );
                self.state.deployments[idx].current += 1;
                self.dirty = true;
                moved.extend(self.state.deployments[idx].affected());
                let d = &self.state.deployments[idx];
                if d.current < d.steps.len() {
                    let plan = self.plan_with_groups(d);
                    let step = d.current_step_json();
                    self.event(
                        now,
                        "deployment_info",
                        json!({"plan": plan, "currentStep": step}),
                    );
                }
            }
            let d = &self.state.deployments[idx];
            if d.current >= d.steps.len() {
                let d = self.state.deployments.remove(idx);
                self.roles_stale = true;
                let plan = self.plan_with_groups(&d);
                self.event(now, "deployment_success", json!({"id": d.id, "plan": plan}));
                self.dirty = true;
                moved.extend(d.affected());
                continue;
            }
            idx += 1;
        }
        moved
    }

    /// Assigns cluster-unique service ports to the 0s of `app`.
    pub(crate) fn assign_service_ports(
        &self,
        app: &mut App,
        keep: Option<&App>,
    ) -> Result<(), String> {
        let mut used: BTreeSet<u32> = self
            .state
            .apps
            .values()
            .filter(|a| a.id != app.id)
            .flat_map(|a| a.service_ports())
            .collect();
        let previous: Vec<u32> = keep.map(|k| k.service_ports()).unwrap_or_default();
        let (min, max) = (self.config.local_port_min, self.config.local_port_max);
        let mut next = min;
        for (i, port) in app.service_ports_mut().into_iter().enumerate() {
            if *port != 0 {
                continue;
            }
            if let Some(p) = previous.get(i).filter(|p| **p != 0 && !used.contains(p)) {
                *port = *p;
                used.insert(*p);
                continue;
            }
            while used.contains(&next) && next <= max {
                next += 1;
            }
            if next > max {
                return Err(format!("no service port left in {min}-{max}"));
            }
            *port = next;
            used.insert(next);
        }
        Ok(())
    }
}

/// Marathon's instance condition for a Mesos state.
fn condition(state: TaskState) -> &'static str {
    match state {
        TaskState::TaskStaging => "Staging",
        TaskState::TaskStarting => "Starting",
        TaskState::TaskRunning => "Running",
        TaskState::TaskKilling => "Killing",
        TaskState::TaskFinished => "Finished",
        TaskState::TaskFailed => "Failed",
        TaskState::TaskKilled => "Killed",
        TaskState::TaskError => "Error",
        TaskState::TaskLost => "Gone",
        TaskState::TaskDropped => "Dropped",
        TaskState::TaskUnreachable => "Unreachable",
        TaskState::TaskGone => "Gone",
        TaskState::TaskGoneByOperator => "GoneByOperator",
        TaskState::TaskUnknown => "Unknown",
    }
}

#[cfg(test)]
#[path = "../marathon_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "../roles_tests.rs"]
mod roles_tests;
