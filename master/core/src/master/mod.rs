//! The master state machine.
//!
//! [`Master::handle`] applies one [`Input`] at a time `now` and returns the
//! [`Output`]s the shell must carry out, in order: events for framework
//! streams, messages for agent connections, replies to HTTP requests. Timers
//! (allocation, agent pings, failover and re-registration timeouts) fire on
//! [`Input::Tick`]; [`Master::next_deadline`] says when the next one is due.

mod agents;
mod authz;
mod drain;
mod launch;
mod maintenance;
mod operations;
mod operator_calls;
mod overlay;
mod quota;
mod scheduler;
mod state;
mod views;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use agora_proto::internal::{AgentMessage, MasterMessage, master_message};
use agora_proto::resources::Resources;
use agora_proto::{operator, scheduler as sched, v1};

use crate::allocator::{Allocator, AllocatorConfig};
use crate::ids::{AgentId, ConnId, ExecutorId, FrameworkId, OfferId, RequestId, StreamId, TaskId};
use crate::time::Time;
use crate::validation::Capabilities;

pub use authz::Viewer;
pub use drain::DRAIN_ANSWER;
pub use operations::ResourceOp;
pub use overlay::{KEY_LEN as OVERLAY_KEY_LEN, OverlayConfig, OverlayError};
pub use views::MasterView;

/// Master settings (Mesos flag names in the docs).
#[derive(Clone, Debug)]
pub struct Config {
    /// `--allocation_interval`: a batch allocation at least this often.
    pub allocation_interval: Duration,
    /// `--agent_ping_timeout`: how often agents are pinged.
    pub agent_ping_timeout: Duration,
    /// `--max_agent_ping_timeouts`: missed pongs before an agent is unreachable.
    pub max_agent_ping_timeouts: u32,
    /// `--agent_reregister_timeout`: how long an agent admitted before a
    /// failover (known from the registry) may take to come back before it is
    /// marked unreachable. An agent whose connection closes has its ping
    /// budget instead.
    pub agent_reregister_timeout: Duration,
    /// `--offer_timeout`: rescind offers older than this (none by default).
    pub offer_timeout: Option<Duration>,
    /// `--max_completed_frameworks`.
    pub max_completed_frameworks: usize,
    /// `--max_completed_tasks_per_framework`.
    pub max_completed_tasks_per_framework: usize,
    /// `--max_unreachable_tasks_per_framework`.
    pub max_unreachable_tasks_per_framework: usize,
    /// Heartbeat interval announced in SUBSCRIBED (the shell sends them).
    pub heartbeat_interval: Duration,
    /// `--roles`: when set, frameworks may only use these roles (and `*`).
    pub roles: Option<Vec<String>>,
    /// `--weights`.
    pub weights: Vec<(String, f64)>,
    /// Allocator settings.
    pub allocator: AllocatorConfig,
    /// `--acls`: who may do what (the default allows everything).
    pub acls: agora_proto::acl::Acls,
    /// `--overlay-cidr`: a subnet of this range for each agent (no overlay
    /// when None).
    pub overlay: Option<OverlayConfig>,
    /// `--drain-notice`: how long frameworks that accept a drain's inverse
    /// offer may take to move their tasks off the agent before they are
    /// killed (0: killed at once, as Mesos).
    pub drain_notice: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allocation_interval: Duration::from_secs(1),
            agent_ping_timeout: Duration::from_secs(15),
            max_agent_ping_timeouts: 5,
            agent_reregister_timeout: Duration::from_secs(600),
            offer_timeout: None,
            max_completed_frameworks: 50,
            max_completed_tasks_per_framework: 1000,
            max_unreachable_tasks_per_framework: 1000,
            heartbeat_interval: Duration::from_secs(15),
            roles: None,
            weights: Vec::new(),
            allocator: AllocatorConfig::default(),
            acls: agora_proto::acl::Acls::default(),
            overlay: None,
            drain_notice: Duration::from_secs(600),
        }
    }
}

/// Something that happened, for the master to act on.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed: fire due timers (allocation, pings, timeouts).
    Tick,
    /// A fresh key for the encrypted overlay (20 random bytes: AES-128 and
    /// its salt), given at start and on the rotation schedule.
    OverlayKey(Vec<u8>),
    /// A SUBSCRIBE call. The shell has opened `stream` and buffers its events;
    /// the reply says whether to answer 200 with the stream or an error.
    Subscribe {
        /// The HTTP request.
        request: RequestId,
        /// The new stream's id (sent back as `Mesos-Stream-Id`).
        stream: StreamId,
        /// The call.
        call: sched::Call,
        /// Who the shell authenticated (None: the realm is open).
        principal: Option<String>,
    },
    /// Any other scheduler call.
    Call {
        /// The HTTP request.
        request: RequestId,
        /// The `Mesos-Stream-Id` header, if present.
        stream: Option<StreamId>,
        /// The call.
        call: sched::Call,
        /// Who the shell authenticated (None: the realm is open).
        principal: Option<String>,
    },
    /// A subscription stream was closed by the client or the network.
    StreamClosed {
        /// Which one.
        stream: StreamId,
    },
    /// A message on an agent connection.
    Agent {
        /// The connection.
        conn: ConnId,
        /// The message.
        message: AgentMessage,
    },
    /// An agent connection ended.
    AgentClosed {
        /// The connection.
        conn: ConnId,
    },
    /// An operator API write call.
    Operator {
        /// The HTTP request.
        request: RequestId,
        /// The call.
        call: OperatorCall,
        /// Who the shell authenticated (None: the realm is open).
        principal: Option<String>,
    },
}

/// Operator calls that change state.
#[derive(Clone, Debug)]
pub enum OperatorCall {
    /// TEARDOWN a framework.
    Teardown(FrameworkId),
    /// UPDATE_WEIGHTS.
    UpdateWeights(Vec<(String, f64)>),
    /// MARK_AGENT_GONE.
    MarkAgentGone(AgentId),
    /// DEACTIVATE_AGENT.
    DeactivateAgent(AgentId),
    /// REACTIVATE_AGENT (also ends a drain).
    ReactivateAgent(AgentId),
    /// DRAIN_AGENT: deactivate, kill every task with at most
    /// `max_grace_period`, then DRAINED (and gone, with `mark_gone`).
    DrainAgent {
        /// The agent.
        agent: AgentId,
        /// The most a task's kill may wait.
        max_grace_period: Option<std::time::Duration>,
        /// Mark it gone once drained.
        mark_gone: bool,
    },
    /// UPDATE_MAINTENANCE_SCHEDULE: the whole schedule.
    UpdateMaintenanceSchedule(agora_proto::v1::maintenance::Schedule),
    /// START_MAINTENANCE: scheduled machines go DOWN.
    StartMaintenance(Vec<agora_proto::v1::MachineId>),
    /// STOP_MAINTENANCE: down machines come UP and leave the schedule.
    StopMaintenance(Vec<agora_proto::v1::MachineId>),
    /// RESERVE_RESOURCES, UNRESERVE_RESOURCES, CREATE_VOLUMES and
    /// DESTROY_VOLUMES on an agent's unused resources.
    Resources {
        /// The agent.
        agent: AgentId,
        /// What to do.
        op: ResourceOp,
    },
    /// UPDATE_QUOTA: roles' guarantees and limits (empty ones: removed).
    UpdateQuota {
        /// Set limits below what roles hold.
        force: bool,
        /// One per role.
        configs: Vec<agora_proto::v1::quota::QuotaConfig>,
    },
}

/// Why a call was refused; the shell turns it into an HTTP status and a
/// plain-text body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 501.
    #[error("{0}")]
    NotImplemented(String),
}

impl CallError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            CallError::BadRequest(_) => 400,
            CallError::Forbidden(_) => 403,
            CallError::NotFound(_) => 404,
            CallError::Conflict(_) => 409,
            CallError::NotImplemented(_) => 501,
        }
    }
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Answer an HTTP request.
    Reply {
        /// Which request.
        request: RequestId,
        /// 200/202 or an error.
        result: Result<(), CallError>,
    },
    /// Send an event on a framework's subscription stream.
    Event {
        /// Which stream.
        stream: StreamId,
        /// The event.
        event: Box<sched::Event>,
    },
    /// End a subscription stream (after its last event).
    CloseStream {
        /// Which stream.
        stream: StreamId,
    },
    /// Send a message on an agent connection.
    ToAgent {
        /// Which connection.
        conn: ConnId,
        /// The message.
        message: Box<MasterMessage>,
    },
    /// End an agent connection.
    CloseAgent {
        /// Which connection.
        conn: ConnId,
    },
    /// An event for operator API subscribers (`SUBSCRIBE` on `/api/v1`).
    OperatorEvent(Box<operator::Event>),
    /// Something an operator should know that no caller is told (the shell
    /// logs it).
    Warn(String),
}

/// A framework the master knows.
#[derive(Clone, Debug)]
pub(crate) struct Framework {
    pub id: FrameworkId,
    pub info: v1::FrameworkInfo,
    pub caps: Capabilities,
    pub roles: Vec<String>,
    pub stream: Option<StreamId>,
    /// Subscribed and not yet failed over: receives offers.
    pub active: bool,
    /// Known only from an agent's report (after a master restart), not yet
    /// subscribed to this master.
    pub recovered: bool,
    pub registered_time: Option<Time>,
    pub reregistered_time: Option<Time>,
    pub unregistered_time: Option<Time>,
    pub failover_deadline: Option<Time>,
    pub tasks: BTreeMap<TaskId, Task>,
    pub unreachable_tasks: BTreeMap<TaskId, Task>,
    pub completed_tasks: VecDeque<Task>,
    pub offers: BTreeSet<OfferId>,
    /// Custom executors by agent.
    pub executors: BTreeMap<AgentId, BTreeMap<ExecutorId, v1::ExecutorInfo>>,
    pub suppressed_roles: BTreeSet<String>,
}

/// A task the master knows.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub proto: v1::Task,
    pub agent: AgentId,
    pub role: String,
    /// The task's own resources (without its executor's).
    pub resources: Resources,
    /// Its resources went back to the allocator (at the first terminal state).
    pub recovered: bool,
    /// When it was launched (or, for a task an agent reported, found).
    pub launched: Time,
    /// When its latest update (`status_update_uuid`) went to the framework.
    pub update_sent: Option<Time>,
}

impl Task {
    pub fn state(&self) -> v1::TaskState {
        self.proto.state()
    }
}

/// What a removed framework is told, on its stream and when it subscribes
/// again (Mesos' words; schedulers match on them).
pub(crate) const FRAMEWORK_REMOVED: &str = "Framework has been removed";

/// Where an agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentState {
    /// Connected and registered.
    Registered,
    /// Not connected; it may come back until the deadline. `why` says what
    /// it missed when it does not (for the log and the FAILURE).
    Disconnected { deadline: Time, why: &'static str },
}

/// An agent the master knows.
#[derive(Clone, Debug)]
pub(crate) struct Agent {
    pub id: AgentId,
    pub info: v1::AgentInfo,
    pub address: String,
    pub version: String,
    pub conn: Option<ConnId>,
    pub state: AgentState,
    /// An operator deactivated it (DEACTIVATE_AGENT).
    pub deactivated: bool,
    pub total: Resources,
    pub registered_time: Time,
    pub reregistered_time: Option<Time>,
    pub tasks: BTreeSet<(FrameworkId, TaskId)>,
    pub offers: BTreeSet<OfferId>,
    /// Executors and their resources, by framework.
    pub executors: BTreeMap<(FrameworkId, ExecutorId), (v1::ExecutorInfo, Resources, String)>,
    pub pong_pending: bool,
    pub missed_pongs: u32,
    /// Kills requested while the agent was away, sent on re-registration.
    pub pending_kills: Vec<(FrameworkId, TaskId, Option<v1::KillPolicy>)>,
    /// A drain under way or done (DRAIN_AGENT).
    pub drain: Option<drain::Drain>,
}

/// An outstanding offer.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    pub id: OfferId,
    pub framework: FrameworkId,
    pub agent: AgentId,
    pub role: String,
    pub resources: Resources,
    pub created: Time,
}

/// The master. See the module documentation.
#[derive(Debug)]
pub struct Master {
    pub(crate) config: Config,
    pub(crate) info: v1::MasterInfo,
    pub(crate) epoch: u64,
    pub(crate) start_time: Time,
    pub(crate) allocator: Allocator,
    pub(crate) rng: fastrand::Rng,
    pub(crate) frameworks: BTreeMap<FrameworkId, Framework>,
    pub(crate) completed_frameworks: VecDeque<Framework>,
    pub(crate) removed_frameworks: BTreeSet<FrameworkId>,
    pub(crate) streams: BTreeMap<StreamId, FrameworkId>,
    pub(crate) agents: BTreeMap<AgentId, Agent>,
    pub(crate) conns: BTreeMap<ConnId, AgentId>,
    /// Agents marked unreachable, with the time.
    pub(crate) unreachable_agents: BTreeMap<AgentId, (v1::AgentInfo, Time)>,
    /// Agents an operator marked gone: shut down if they return.
    pub(crate) gone_agents: BTreeSet<AgentId>,
    /// Overlay subnets leased to agents.
    pub(crate) overlay: BTreeMap<AgentId, overlay::Lease>,
    /// The encrypted overlay's keys.
    pub(crate) overlay_keys: overlay::Keyring,
    /// The registry changed since the shell last asked.
    pub(crate) registry_dirty: bool,
    pub(crate) offers: BTreeMap<OfferId, Offer>,
    /// Inverse offers outstanding (agents being drained, or on machines
    /// scheduled for maintenance).
    pub(crate) inverse_offers: BTreeMap<OfferId, drain::InverseOffer>,
    /// The maintenance schedule and the machines that are down.
    pub(crate) maintenance: maintenance::Maintenance,
    pub(crate) next_framework: u64,
    pub(crate) next_agent: u64,
    pub(crate) next_offer: u64,
    pub(crate) allocation_requested: bool,
    pub(crate) next_allocation: Time,
    pub(crate) next_ping: Time,
    pub(crate) operator_events: bool,
    pub(crate) out: Vec<Output>,
    pub(crate) metrics: Metrics,
    /// Latencies for the shell's histograms, taken with
    /// [`Master::take_observations`].
    pub(crate) observations: Vec<(Observation, std::time::Duration)>,
}

/// A latency the master measures, for the shell's histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// From an offer to the ACCEPT that used it.
    OfferToAccept,
    /// From a task's launch to its first TASK_RUNNING.
    Launch,
    /// From a status update sent to its framework to the acknowledgement.
    StatusUpdateRoundTrip,
}

/// Counters for `/metrics/snapshot`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Status updates routed to frameworks.
    pub valid_status_updates: u64,
    /// Status updates for unknown frameworks.
    pub invalid_status_updates: u64,
    /// Allocation passes run.
    pub allocation_runs: u64,
    /// Offers made.
    pub offers_made: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Offers rescinded.
    pub offers_rescinded: u64,
    /// Tasks launched.
    pub tasks_launched: u64,
    /// Tasks refused with TASK_ERROR.
    pub tasks_error: u64,
    /// Tasks dropped or lost at launch (invalid offers).
    pub tasks_dropped: u64,
    /// RESERVE, UNRESERVE, CREATE and DESTROY operations applied.
    pub operations_finished: u64,
    /// Those refused.
    pub operations_error: u64,
}

impl Master {
    /// A master with no agents or frameworks. `info` is this master's
    /// MasterInfo (id, address, version); `epoch` its leadership epoch; `seed`
    /// drives the allocator's agent order.
    pub fn new(config: Config, info: v1::MasterInfo, epoch: u64, seed: u64, now: Time) -> Self {
        let mut allocator = Allocator::new(config.allocator.clone());
        for (role, w) in &config.weights {
            allocator.set_weight(role, *w);
        }
        Master {
            next_allocation: now + config.allocation_interval,
            next_ping: now + config.agent_ping_timeout,
            config,
            info,
            epoch,
            start_time: now,
            allocator,
            rng: fastrand::Rng::with_seed(seed),
            frameworks: BTreeMap::new(),
            completed_frameworks: VecDeque::new(),
            removed_frameworks: BTreeSet::new(),
            streams: BTreeMap::new(),
            agents: BTreeMap::new(),
            conns: BTreeMap::new(),
            unreachable_agents: BTreeMap::new(),
            gone_agents: BTreeSet::new(),
            overlay: BTreeMap::new(),
            overlay_keys: overlay::Keyring::default(),
            registry_dirty: false,
            offers: BTreeMap::new(),
            inverse_offers: BTreeMap::new(),
            maintenance: maintenance::Maintenance::default(),
            next_framework: 0,
            next_agent: 0,
            next_offer: 0,
            allocation_requested: false,
            operator_events: false,
            out: Vec::new(),
            metrics: Metrics::default(),
            observations: Vec::new(),
        }
    }

    /// Applies one input at time `now`; returns what the shell must do, in order.
    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Output> {
        match input {
            Input::Tick => self.tick(now),
            Input::OverlayKey(key) => self.overlay_key(now, key),
            Input::Subscribe {
                request,
                stream,
                call,
                principal,
            } => self.subscribe(now, request, stream, call, principal),
            Input::Call {
                request,
                stream,
                call,
                principal,
            } => {
                let result = self.call(now, stream, call, principal.as_deref());
                self.out.push(Output::Reply { request, result });
            }
            Input::StreamClosed { stream } => self.stream_closed(now, &stream),
            Input::Agent { conn, message } => self.agent_message(now, conn, message),
            Input::AgentClosed { conn } => self.agent_closed(now, conn),
            Input::Operator {
                request,
                call,
                principal,
            } => {
                let result = self.operator_call(now, call, principal.as_deref());
                self.out.push(Output::Reply { request, result });
            }
        }
        std::mem::take(&mut self.out)
    }

    /// When the shell must next call `handle(now, Input::Tick)`.
    pub fn next_deadline(&self) -> Option<Time> {
        let mut next = self.next_allocation.min(self.next_ping);
        if self.allocation_requested {
            // As soon as the shell has drained its queue: coalesces bursts.
            next = Time::ZERO;
        }
        for f in self.frameworks.values() {
            if let Some(d) = f.failover_deadline {
                next = next.min(d);
            }
        }
        for a in self.agents.values() {
            if let AgentState::Disconnected { deadline, .. } = a.state {
                next = next.min(deadline);
            }
        }
        if let Some(timeout) = self.config.offer_timeout
            && let Some(oldest) = self.offers.values().map(|o| o.created).min()
        {
            next = next.min(oldest + timeout);
        }
        if let Some(due) = self.overlay_key_deadline() {
            next = next.min(due);
        }
        if let Some(due) = self.drain_deadline() {
            next = next.min(due);
        }
        Some(next)
    }

    /// Turns operator events on or off (the shell enables them while an
    /// operator API subscriber is connected).
    pub fn set_operator_events(&mut self, enabled: bool) {
        self.operator_events = enabled;
    }

    /// The registry: admitted agents, unreachable agents, agents marked
    /// gone, role weights; what a restarted or newly elected master cannot
    /// learn from agents and frameworks.
    pub fn registry(&self) -> agora_proto::internal::Registry {
        use agora_proto::internal::{Registry, RoleWeight, UnreachableAgent};
        let (overlay_keys, overlay_primary_key) = self.keyring_message();
        let (maintenance, down_machines) = self.maintenance_stored();
        Registry {
            admitted: self.agents.values().map(|a| a.info.clone()).collect(),
            unreachable: self
                .unreachable_agents
                .values()
                .map(|(info, since)| UnreachableAgent {
                    info: info.clone(),
                    since_nanos: since.as_nanos(),
                })
                .collect(),
            gone: self.gone_agents.iter().map(|g| g.to_string()).collect(),
            weights: self
                .allocator
                .weights()
                .map(|(role, weight)| RoleWeight {
                    role: role.to_string(),
                    weight,
                })
                .collect(),
            overlay_leases: self.overlay_leases(),
            overlay_keys,
            overlay_primary_key,
            drains: self.drains_stored(),
            maintenance,
            down_machines,
            quotas: self.quotas_stored(),
        }
    }

    /// Whether the registry changed since the last call: the shell stores
    /// it when so.
    pub fn take_registry_changed(&mut self) -> bool {
        std::mem::take(&mut self.registry_dirty)
    }

    /// Starts from a stored registry: admitted agents are expected back
    /// within `agent_reregister_timeout` (then they are unreachable), and
    /// unreachable and gone agents and weights are as they were.
    pub fn recover(&mut self, now: Time, registry: agora_proto::internal::Registry) {
        for (role, weight) in registry.weights.iter().map(|w| (w.role.as_str(), w.weight)) {
            if agora_proto::roles::validate(role).is_ok() && weight > 0.0 && weight.is_finite() {
                self.allocator.set_weight(role, weight);
            }
        }
        for gone in &registry.gone {
            self.gone_agents.insert(AgentId::new(gone.clone()));
        }
        self.recover_overlay(&registry.overlay_leases);
        self.recover_overlay_keys(&registry.overlay_keys, registry.overlay_primary_key);
        for u in registry.unreachable {
            if let Some(id) = u.info.id.as_ref().map(AgentId::from) {
                self.unreachable_agents
                    .insert(id, (u.info, Time::from_nanos(u.since_nanos)));
            }
        }
        for info in registry.admitted {
            let Some(id) = info.id.as_ref().map(AgentId::from) else {
                continue;
            };
            if self.agents.contains_key(&id) || self.gone_agents.contains(&id) {
                continue;
            }
            let total = Resources::from_protos(&info.resources)
                .map(|r| r.unallocated())
                .unwrap_or_default();
            self.agents.insert(
                id.clone(),
                Agent {
                    id,
                    info,
                    address: String::new(),
                    version: String::new(),
                    conn: None,
                    state: AgentState::Disconnected {
                        deadline: now + self.config.agent_reregister_timeout,
                        why: "agent did not re-register within agent_reregister_timeout after a master failover",
                    },
                    deactivated: false,
                    total,
                    registered_time: now,
                    reregistered_time: None,
                    tasks: BTreeSet::new(),
                    offers: BTreeSet::new(),
                    executors: BTreeMap::new(),
                    pong_pending: false,
                    missed_pongs: 0,
                    pending_kills: Vec::new(),
                    drain: None,
                },
            );
        }
        self.recover_drains(now, &registry.drains);
        self.recover_maintenance(registry.maintenance, registry.down_machines);
        self.recover_quotas(&registry.quotas);
    }

    /// The settings it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The master's leadership epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This master's MasterInfo.
    pub fn info(&self) -> &v1::MasterInfo {
        &self.info
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The latencies measured since the last call, for histograms.
    pub fn take_observations(&mut self) -> Vec<(Observation, std::time::Duration)> {
        std::mem::take(&mut self.observations)
    }

    /// Records a latency (dropped once 10,000 wait: nobody takes them).
    pub(crate) fn observe(&mut self, what: Observation, took: std::time::Duration) {
        if self.observations.len() < 10_000 {
            self.observations.push((what, took));
        }
    }

    /// The allocator (read-only), for views and benchmarks.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    fn tick(&mut self, now: Time) {
        self.overlay_key_tick(now);
        // Timeouts first, so that allocation sees their effects.
        let expired: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| f.failover_deadline.is_some_and(|d| d <= now))
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            self.remove_framework(now, &id, "framework failover timeout expired");
        }
        let lost: Vec<(AgentId, &'static str)> = self
            .agents
            .values()
            .filter_map(|a| match a.state {
                AgentState::Disconnected { deadline, why } if deadline <= now => {
                    Some((a.id.clone(), why))
                }
                _ => None,
            })
            .collect();
        for (id, why) in lost {
            self.mark_unreachable(now, &id, why);
        }
        self.drain_tick(now);
        if now >= self.next_ping {
            self.next_ping = now + self.config.agent_ping_timeout;
            self.ping_agents(now);
        }
        if let Some(timeout) = self.config.offer_timeout {
            let stale: Vec<OfferId> = self
                .offers
                .values()
                .filter(|o| o.created + timeout <= now)
                .map(|o| o.id.clone())
                .collect();
            for id in stale {
                self.rescind_offer(now, &id, None);
            }
        }
        if self.allocation_requested || now >= self.next_allocation {
            self.allocation_requested = false;
            self.next_allocation = now + self.config.allocation_interval;
            self.allocate(now);
        }
    }

    fn send(&mut self, framework: &FrameworkId, event: sched::Event) {
        if let Some(stream) = self
            .frameworks
            .get(framework)
            .and_then(|f| f.stream.clone())
        {
            self.out.push(Output::Event {
                stream,
                event: Box::new(event),
            });
        }
    }

    fn send_to_agent(&mut self, agent: &AgentId, message: master_message::Message) -> bool {
        match self.agents.get(agent).and_then(|a| a.conn) {
            Some(conn) => {
                self.out.push(Output::ToAgent {
                    conn,
                    message: Box::new(MasterMessage {
                        epoch: self.epoch,
                        message: Some(message),
                    }),
                });
                true
            }
            None => false,
        }
    }

    fn operator_event(&mut self, event: impl FnOnce(&Self) -> operator::Event) {
        if self.operator_events {
            let e = event(self);
            self.out.push(Output::OperatorEvent(Box::new(e)));
        }
    }
}
