//! The hierarchical DRF allocator: decides which framework is offered which
//! agent's resources.
//!
//! Two levels, as in Mesos: roles are ordered by their weighted dominant
//! share, frameworks within a role by theirs. A *client* is one (framework,
//! role) pair. Each allocation pass visits the active agents in a random order
//! (the caller passes the random source) and gives everything an agent has
//! that a role may use (unreserved resources plus the role's reservations) to
//! the first eligible client that no offer filter holds back.
//!
//! Offer filters (DECLINE, or the unused part of an ACCEPT) are kept per agent.
//! Each agent caches, as a bit set, which clients its filters currently block,
//! so a pass over an agent whose resources have not changed is a few bit tests,
//! and an agent that every eligible client has declined is skipped at once.
//! The cache is rebuilt when the agent's available resources, its filters or
//! the set of eligible clients change.
//!
//! The allocator owns no clock and no randomness: `now` and the random source
//! are arguments, so a pass is reproducible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::resources::{Resources, from_fixed, to_fixed};
use rustc_hash::FxHashMap;

use crate::ids::{AgentId, FrameworkId};
use crate::time::Time;

mod pass;
mod quota;

pub use quota::Quota;
pub(crate) use quota::under;

/// Allocator settings (master flags).
#[derive(Clone, Debug)]
pub struct AllocatorConfig {
    /// Resources are offered only if they meet one of these sets
    /// (`--min_allocatable_resources`, default `cpus:0.01|mem:32`).
    pub min_allocatable: Vec<Vec<(String, f64)>>,
    /// Agents with GPUs are offered only to GPU_RESOURCES frameworks.
    pub filter_gpu_resources: bool,
    /// Resource names left out of the share computation.
    pub fair_sharing_excluded: Vec<String>,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            min_allocatable: vec![vec![("cpus".into(), 0.01)], vec![("mem".into(), 32.0)]],
            filter_gpu_resources: true,
            fair_sharing_excluded: Vec::new(),
        }
    }
}

/// Resources handed to a framework for one role on one agent: an offer to make.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// Who gets the offer.
    pub framework: FrameworkId,
    /// Whose resources.
    pub agent: AgentId,
    /// The role the resources are allocated to.
    pub role: Arc<str>,
    /// What is offered (without `allocation_info`; the master adds it).
    pub resources: Resources,
}

/// The largest filter Mesos installs (365 days).
pub const MAX_FILTER: Duration = Duration::from_secs(365 * 24 * 3600);

type ClientIdx = u32;

#[derive(Debug)]
struct Client {
    framework: FrameworkId,
    role: u32,
    /// Still one of its framework's roles.
    live: bool,
    /// Live, framework active, role not suppressed.
    eligible: bool,
    gpu: bool,
    /// Allocated scalars (offered or used), thousandths, by name index.
    allocated: Vec<i64>,
    /// Position in its role's order: (share bits, index).
    key: u64,
}

#[derive(Debug)]
struct Role {
    name: Arc<str>,
    weight: f64,
    clients: BTreeSet<(u64, ClientIdx)>,
    allocated: Vec<i64>,
    key: u64,
    eligible_clients: usize,
    /// Indexes of the quotas that apply (its own and its ancestors').
    quotas: Vec<u32>,
}

#[derive(Debug)]
struct FrameworkSlot {
    /// role name → client.
    clients: BTreeMap<String, ClientIdx>,
    active: bool,
    suppressed: BTreeSet<String>,
    gpu: bool,
}

#[derive(Debug)]
struct Filter {
    /// Shared with the agent's other filters that refused the same
    /// resources (every framework declining one offer in turn).
    refused: Arc<Resources>,
    expires: Time,
    /// The last verdict: (fingerprint of the available resources, blocks?).
    verdict: Option<(u64, bool)>,
}

#[derive(Debug)]
struct AgentSlot {
    id: AgentId,
    total: Resources,
    available: Resources,
    /// `available.fingerprint()`, until `available` changes.
    available_fp: Option<u64>,
    allocated: BTreeMap<ClientIdx, Resources>,
    active: bool,
    has_gpus: bool,
    has_reservations: bool,
    /// By client (hashed: an agent every framework declined holds a
    /// filter per framework, looked up once per pass).
    filters: FxHashMap<ClientIdx, Filter>,
    next_expiry: Option<Time>,
    /// Clients whose filter covers what this agent has available.
    blocked: Vec<u64>,
    /// How many of those clients are eligible.
    blocked_eligible: usize,
    /// `blocked` was built for this eligibility generation (None: rebuild)…
    blocked_generation: Option<u64>,
    /// …and for available resources with this fingerprint.
    blocked_fingerprint: u64,
    /// Clients whose filter was added or removed since `blocked` was built.
    dirty: Vec<ClientIdx>,
    /// The refused resources of the last filter added, with their
    /// fingerprint: the next filter refusing the same shares them.
    last_refused: Option<(u64, Arc<Resources>)>,
    /// The last containment verdict without reservations: (refused,
    /// fingerprint of what was available, blocks?). Filters sharing
    /// `refused` share it.
    last_verdict: Option<(Arc<Resources>, u64, bool)>,
}

impl AgentSlot {
    fn is_blocked(&self, c: ClientIdx) -> bool {
        let (word, bit) = ((c / 64) as usize, c % 64);
        self.blocked.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Whether `c` has a filter that refuses `offer` (what a cut offer
    /// is, rather than the whole agent, is what `is_blocked` compares).
    fn refuses(&self, c: ClientIdx, offer: &Resources) -> bool {
        self.filters
            .get(&c)
            .is_some_and(|f| f.refused.contains(offer))
    }

    /// A filter of `c` was added or removed.
    fn filter_changed(&mut self, c: ClientIdx) {
        self.dirty.push(c);
    }

    /// The fingerprint of `available`, computed once per change.
    fn available_fingerprint(&mut self) -> u64 {
        *self
            .available_fp
            .get_or_insert_with(|| self.available.fingerprint())
    }

    /// `resources` as a filter's refused set, shared with the last filter's
    /// when they are the same.
    fn intern_refused(&mut self, resources: &Resources, fp: u64) -> Arc<Resources> {
        if let Some((f, r)) = &self.last_refused
            && *f == fp
            && **r == *resources
        {
            return r.clone();
        }
        let r = Arc::new(resources.clone());
        self.last_refused = Some((fp, r.clone()));
        r
    }
}

/// The allocator. See the module documentation.
#[derive(Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: Vec<Option<AgentSlot>>,
    agent_index: BTreeMap<AgentId, u32>,
    free_agents: Vec<u32>,
    clients: Vec<Option<Client>>,
    free_clients: Vec<ClientIdx>,
    frameworks: BTreeMap<FrameworkId, FrameworkSlot>,
    roles: Vec<Role>,
    role_index: BTreeMap<String, u32>,
    role_order: BTreeSet<(u64, u32)>,
    weights: BTreeMap<String, f64>,
    /// Scalar resource names seen, interned: index → name.
    names: Vec<String>,
    /// Scalar totals of active agents, thousandths, by name index: the
    /// share denominators.
    totals: Vec<i64>,
    shares_stale: bool,
    generation: u64,
    eligible_count: usize,
    /// Eligible clients as a bit set (for agents most clients have declined).
    eligible_bits: Vec<u64>,
    order: Vec<u32>,
    order_stale: bool,
    /// Roles' quotas.
    quotas: Vec<quota::QuotaSlot>,
    /// During a pass with unmet guarantees: what may go beyond guarantees,
    /// by name index (`quota.rs`, headroom).
    headroom: Option<Vec<i64>>,
    /// Allocation passes run.
    pub passes: u64,
}

impl Allocator {
    /// An allocator with no agents and no frameworks.
    pub fn new(config: AllocatorConfig) -> Self {
        Allocator {
            config,
            agents: Vec::new(),
            agent_index: BTreeMap::new(),
            free_agents: Vec::new(),
            clients: Vec::new(),
            free_clients: Vec::new(),
            frameworks: BTreeMap::new(),
            roles: Vec::new(),
            role_index: BTreeMap::new(),
            role_order: BTreeSet::new(),
            weights: BTreeMap::new(),
            names: Vec::new(),
            totals: Vec::new(),
            shares_stale: false,
            generation: 0,
            eligible_count: 0,
            eligible_bits: Vec::new(),
            order: Vec::new(),
            order_stale: true,
            quotas: Vec::new(),
            headroom: None,
            passes: 0,
        }
    }

    // ---------------------------------------------------------------- agents

    /// Adds an agent with its total resources and what frameworks already use
    /// on it (tasks reported when an agent re-registers).
    pub fn add_agent(
        &mut self,
        id: AgentId,
        total: Resources,
        used: Vec<(FrameworkId, String, Resources)>,
    ) {
        if self.agent_index.contains_key(&id) {
            self.remove_agent(&id);
        }
        let has_gpus = total.scalar_fixed("gpus") > 0;
        let has_reservations = !total.reserved().is_empty();
        let slot = AgentSlot {
            id: id.clone(),
            available: total.clone(),
            available_fp: None,
            total,
            allocated: BTreeMap::new(),
            active: true,
            has_gpus,
            has_reservations,
            filters: FxHashMap::default(),
            next_expiry: None,
            blocked: Vec::new(),
            blocked_eligible: 0,
            blocked_generation: None,
            blocked_fingerprint: 0,
            dirty: Vec::new(),
            last_refused: None,
            last_verdict: None,
        };
        let idx = match self.free_agents.pop() {
            Some(i) => {
                self.agents[i as usize] = Some(slot);
                i
            }
            None => {
                self.agents.push(Some(slot));
                (self.agents.len() - 1) as u32
            }
        };
        self.agent_index.insert(id.clone(), idx);
        self.add_totals(idx, 1);
        self.order_stale = true;
        for (framework, role, resources) in used {
            if !self.frameworks.contains_key(&framework) {
                self.add_framework(
                    framework.clone(),
                    std::slice::from_ref(&role),
                    false,
                    false,
                    &[],
                );
            }
            let c = self.ensure_client(&framework, &role);
            self.allocate_to(idx, c, &resources);
        }
    }

    /// Removes an agent and everything allocated on it.
    pub fn remove_agent(&mut self, id: &AgentId) {
        let Some(idx) = self.agent_index.remove(id) else {
            return;
        };
        let allocated: Vec<(ClientIdx, Resources)> =
            self.agent(idx).allocated.clone().into_iter().collect();
        for (c, resources) in allocated {
            self.change_client_allocation(c, &resources, -1);
        }
        self.add_totals(idx, -1);
        self.agents[idx as usize] = None;
        self.free_agents.push(idx);
        self.order_stale = true;
    }

    /// Stops offering an agent's resources (it disconnected, or is draining).
    pub fn deactivate_agent(&mut self, id: &AgentId) {
        if let Some(&idx) = self.agent_index.get(id)
            && self.agent(idx).active
        {
            self.add_totals(idx, -1);
            self.agent_mut(idx).active = false;
            self.order_stale = true;
        }
    }

    /// Offers an agent's resources again.
    pub fn activate_agent(&mut self, id: &AgentId) {
        if let Some(&idx) = self.agent_index.get(id)
            && !self.agent(idx).active
        {
            self.agent_mut(idx).active = true;
            self.add_totals(idx, 1);
            self.order_stale = true;
        }
    }

    fn add_totals(&mut self, idx: u32, sign: i64) {
        let slot = self.agents[idx as usize].as_ref().expect("live agent slot");
        if !slot.active {
            return;
        }
        let totals: Vec<(String, i64)> = slot
            .total
            .scalar_totals()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        for (name, v) in totals {
            let i = self.name_index(&name);
            self.totals[i] += sign * v;
        }
        self.shares_stale = true;
    }

    /// The index of a scalar resource name already seen.
    fn known_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The index of a scalar resource name (interned on first sight).
    fn name_index(&mut self, name: &str) -> usize {
        if let Some(i) = self.known_name(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.totals.push(0);
        self.names.len() - 1
    }

    fn agent(&self, idx: u32) -> &AgentSlot {
        self.agents[idx as usize].as_ref().expect("live agent slot")
    }

    fn agent_mut(&mut self, idx: u32) -> &mut AgentSlot {
        self.agents[idx as usize].as_mut().expect("live agent slot")
    }

    // ------------------------------------------------------------ frameworks

    /// Adds a framework subscribed to `roles`.
    pub fn add_framework(
        &mut self,
        id: FrameworkId,
        roles: &[String],
        active: bool,
        gpu: bool,
        suppressed: &[String],
    ) {
        if self.frameworks.contains_key(&id) {
            self.update_framework(&id, roles, gpu);
            if active {
                self.activate_framework(&id);
            }
            return;
        }
        self.frameworks.insert(
            id.clone(),
            FrameworkSlot {
                clients: BTreeMap::new(),
                active,
                suppressed: suppressed.iter().cloned().collect(),
                gpu,
            },
        );
        for role in roles {
            self.ensure_client(&id, role);
        }
        self.refresh_eligibility(&id);
    }

    /// Changes a framework's roles or GPU capability (re-subscription,
    /// UPDATE_FRAMEWORK). Roles it leaves stay allocated until recovered.
    pub fn update_framework(&mut self, id: &FrameworkId, roles: &[String], gpu: bool) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        fw.gpu = gpu;
        let old: Vec<(String, ClientIdx)> =
            fw.clients.iter().map(|(r, c)| (r.clone(), *c)).collect();
        for (role, c) in old {
            if !roles.contains(&role) {
                self.client_mut(c).live = false;
                self.maybe_drop_client(c);
            }
        }
        for role in roles {
            let c = self.ensure_client(id, role);
            self.client_mut(c).live = true;
        }
        for c in self
            .frameworks
            .get(id)
            .map(|f| f.clients.values().copied().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            self.client_mut(c).gpu = gpu;
        }
        self.refresh_eligibility(id);
    }

    /// Removes a framework. The master recovers its offers and tasks first;
    /// anything left is released here.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        let Some(fw) = self.frameworks.get(id) else {
            return;
        };
        let clients: Vec<ClientIdx> = fw.clients.values().copied().collect();
        for c in clients {
            let holders: Vec<u32> = self
                .agents
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    a.as_ref()
                        .filter(|a| a.allocated.contains_key(&c))
                        .map(|_| i as u32)
                })
                .collect();
            for a in holders {
                if let Some(resources) = self.agent(a).allocated.get(&c).cloned() {
                    self.release(a, c, &resources);
                }
            }
            for a in self.agents.iter_mut().flatten() {
                if a.filters.remove(&c).is_some() {
                    a.filter_changed(c);
                }
            }
            self.client_mut(c).live = false;
            self.client_mut(c).eligible = false;
        }
        self.frameworks.remove(id);
        let dead: Vec<ClientIdx> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| &c.framework == id)
                    .map(|_| i as ClientIdx)
            })
            .collect();
        for c in dead {
            self.drop_client(c);
        }
        self.recount_eligible();
    }

    /// The framework's subscription is live again.
    pub fn activate_framework(&mut self, id: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            fw.active = true;
        }
        self.refresh_eligibility(id);
    }

    /// The framework disconnected: no offers until it is back.
    pub fn deactivate_framework(&mut self, id: &FrameworkId) {
        if let Some(fw) = self.frameworks.get_mut(id) {
            fw.active = false;
        }
        self.refresh_eligibility(id);
    }

    /// SUPPRESS: no offers for these roles (all when `None`).
    pub fn suppress(&mut self, id: &FrameworkId, roles: Option<&[String]>) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        let roles: Vec<String> = roles
            .map(<[String]>::to_vec)
            .unwrap_or_else(|| fw.clients.keys().cloned().collect());
        fw.suppressed.extend(roles);
        self.refresh_eligibility(id);
    }

    /// REVIVE: offers again for these roles (all when `None`), and their
    /// offer filters are cleared.
    pub fn revive(&mut self, id: &FrameworkId, roles: Option<&[String]>) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        let roles: Vec<String> = roles
            .map(<[String]>::to_vec)
            .unwrap_or_else(|| fw.clients.keys().cloned().collect());
        let mut clients = Vec::new();
        for role in &roles {
            fw.suppressed.remove(role);
            if let Some(c) = fw.clients.get(role) {
                clients.push(*c);
            }
        }
        for a in self.agents.iter_mut().flatten() {
            for c in &clients {
                if a.filters.remove(c).is_some() {
                    a.filter_changed(*c);
                }
            }
        }
        self.refresh_eligibility(id);
    }

    /// Weights set for roles (roles without one weigh 1).
    pub fn weights(&self) -> impl Iterator<Item = (&str, f64)> {
        self.weights.iter().map(|(r, w)| (r.as_str(), *w))
    }

    /// Sets a role's weight (`--weights`, UPDATE_WEIGHTS).
    pub fn set_weight(&mut self, role: &str, weight: f64) {
        let weight = if weight > 0.0 && weight.is_finite() {
            weight
        } else {
            1.0
        };
        self.weights.insert(role.to_string(), weight);
        if let Some(&r) = self.role_index.get(role) {
            self.roles[r as usize].weight = weight;
            self.shares_stale = true;
        }
    }

    fn ensure_client(&mut self, framework: &FrameworkId, role: &str) -> ClientIdx {
        if let Some(c) = self
            .frameworks
            .get(framework)
            .and_then(|f| f.clients.get(role))
        {
            return *c;
        }
        let r = self.ensure_role(role);
        let gpu = self.frameworks.get(framework).is_some_and(|f| f.gpu);
        let client = Client {
            framework: framework.clone(),
            role: r,
            live: true,
            eligible: false,
            gpu,
            allocated: Vec::new(),
            key: 0,
        };
        let c = match self.free_clients.pop() {
            Some(c) => {
                self.clients[c as usize] = Some(client);
                c
            }
            None => {
                self.clients.push(Some(client));
                (self.clients.len() - 1) as ClientIdx
            }
        };
        self.roles[r as usize].clients.insert((0, c));
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.clients.insert(role.to_string(), c);
        }
        self.shares_stale = true;
        c
    }

    fn ensure_role(&mut self, role: &str) -> u32 {
        if let Some(&r) = self.role_index.get(role) {
            return r;
        }
        let weight = self.weights.get(role).copied().unwrap_or(1.0);
        let quotas = self.quotas_of(role);
        self.roles.push(Role {
            name: role.into(),
            weight,
            clients: BTreeSet::new(),
            allocated: Vec::new(),
            key: 0,
            eligible_clients: 0,
            quotas,
        });
        let r = (self.roles.len() - 1) as u32;
        self.role_index.insert(role.to_string(), r);
        self.role_order.insert((0, r));
        self.shares_stale = true;
        r
    }

    fn client(&self, c: ClientIdx) -> &Client {
        self.clients[c as usize].as_ref().expect("live client")
    }

    fn client_mut(&mut self, c: ClientIdx) -> &mut Client {
        self.clients[c as usize].as_mut().expect("live client")
    }

    /// A client that left its framework's roles is dropped once nothing is
    /// allocated to it.
    fn maybe_drop_client(&mut self, c: ClientIdx) {
        let client = self.client(c);
        if client.live || client.allocated.iter().any(|v| *v > 0) {
            return;
        }
        let framework = client.framework.clone();
        let role = self.roles[client.role as usize].name.clone();
        if let Some(fw) = self.frameworks.get_mut(&framework) {
            fw.clients.remove(&*role);
        }
        for a in self.agents.iter_mut().flatten() {
            if a.filters.remove(&c).is_some() {
                a.filter_changed(c);
            }
        }
        self.drop_client(c);
    }

    fn drop_client(&mut self, c: ClientIdx) {
        let Some(client) = self.clients[c as usize].take() else {
            return;
        };
        self.roles[client.role as usize]
            .clients
            .remove(&(client.key, c));
        self.free_clients.push(c);
    }

    fn refresh_eligibility(&mut self, id: &FrameworkId) {
        if let Some(fw) = self.frameworks.get(id) {
            let updates: Vec<(ClientIdx, bool)> = fw
                .clients
                .iter()
                .map(|(role, c)| (*c, fw.active && !fw.suppressed.contains(role)))
                .collect();
            for (c, eligible) in updates {
                let client = self.client_mut(c);
                client.eligible = eligible && client.live;
            }
        }
        self.recount_eligible();
    }

    fn recount_eligible(&mut self) {
        for role in &mut self.roles {
            role.eligible_clients = 0;
        }
        let mut count = 0;
        let mut bits = vec![0u64; self.clients.len().div_ceil(64)];
        for (i, client) in self.clients.iter().enumerate() {
            let Some(client) = client else { continue };
            if client.eligible {
                count += 1;
                self.roles[client.role as usize].eligible_clients += 1;
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        self.eligible_count = count;
        self.eligible_bits = bits;
        self.generation += 1;
    }

    // ------------------------------------------------------------ accounting

    /// Returns resources to an agent: a declined offer, the unused part of an
    /// accepted one, a finished task. With `filter`, the framework is not
    /// offered these resources on this agent again until it expires.
    pub fn recover(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &str,
        resources: &Resources,
        filter: Option<Duration>,
        now: Time,
    ) {
        let Some(&a) = self.agent_index.get(agent) else {
            return;
        };
        let Some(c) = self.client_of(framework, role) else {
            return;
        };
        let held = self.agent(a).allocated.get(&c).cloned().unwrap_or_default();
        // Only what is actually allocated comes back (guards double recovery).
        let mut give_back = resources.clone();
        give_back = &give_back - &(&give_back - &held);
        // Computed only when used, at most once.
        let mut fp = None;
        let mut fingerprint = || *fp.get_or_insert_with(|| resources.fingerprint());
        if !give_back.is_empty() {
            let was_empty = self.agent(a).available.is_empty();
            self.release(a, c, &give_back);
            // A whole offer declined: what is available is what was offered,
            // whose fingerprint is known.
            if was_empty && give_back == *resources {
                self.agent_mut(a).available_fp = Some(fingerprint());
            }
        }
        if let Some(d) = filter.filter(|d| !d.is_zero()) {
            let d = d.min(MAX_FILTER);
            let expires = now + d;
            let fp = fingerprint();
            let slot = self.agent_mut(a);
            let refused = slot.intern_refused(resources, fp);
            slot.filters.insert(
                c,
                Filter {
                    refused,
                    expires,
                    verdict: None,
                },
            );
            slot.next_expiry = Some(slot.next_expiry.map_or(expires, |e| e.min(expires)));
            slot.filter_changed(c);
        }
        self.maybe_drop_client(c);
    }

    /// An operation (RESERVE, UNRESERVE, CREATE, DESTROY) in an ACCEPT
    /// changed what a framework was offered: `from` became `to`, in its
    /// allocation and in the agent's total. False when it does not hold
    /// `from` there.
    pub fn convert_allocated(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &str,
        from: &Resources,
        to: &Resources,
    ) -> bool {
        let Some(&a) = self.agent_index.get(agent) else {
            return false;
        };
        let Some(c) = self.client_of(framework, role) else {
            return false;
        };
        if !self
            .agent(a)
            .allocated
            .get(&c)
            .is_some_and(|held| held.contains(from))
        {
            return false;
        }
        self.change_total(a, |total| {
            *total -= from;
            *total += to;
        });
        let slot = self.agent_mut(a);
        let held = slot.allocated.entry(c).or_default();
        *held -= from;
        *held += to;
        self.change_client_allocation(c, from, -1);
        self.change_client_allocation(c, to, 1);
        true
    }

    /// An operator's RESERVE_RESOURCES, CREATE_VOLUMES, … on what an agent
    /// has available: `from` becomes `to`. False when `from` is not
    /// available (offered or used).
    pub fn convert_available(&mut self, agent: &AgentId, from: &Resources, to: &Resources) -> bool {
        let Some(&a) = self.agent_index.get(agent) else {
            return false;
        };
        if !self.agent(a).available.contains(from) {
            return false;
        }
        self.change_total(a, |total| {
            *total -= from;
            *total += to;
        });
        let slot = self.agent_mut(a);
        slot.available -= from;
        slot.available += to;
        slot.available_fp = None;
        true
    }

    /// The client of `framework` in `role`.
    fn client_of(&self, framework: &FrameworkId, role: &str) -> Option<ClientIdx> {
        self.frameworks
            .get(framework)
            .and_then(|f| f.clients.get(role))
            .copied()
    }

    fn change_total(&mut self, a: u32, change: impl FnOnce(&mut Resources)) {
        self.add_totals(a, -1);
        let slot = self.agent_mut(a);
        change(&mut slot.total);
        slot.has_reservations = !slot.total.reserved().is_empty();
        self.add_totals(a, 1);
    }

    // ----------------------------------------------------------------- views

    /// What an agent has that is neither offered nor used.
    pub fn available(&self, agent: &AgentId) -> Option<&Resources> {
        self.agent_index
            .get(agent)
            .map(|&a| &self.agent(a).available)
    }

    /// What an agent has, in total.
    pub fn total(&self, agent: &AgentId) -> Option<&Resources> {
        self.agent_index.get(agent).map(|&a| &self.agent(a).total)
    }

    /// What each (framework, role) holds on an agent (offered or used).
    pub fn allocated(&self, agent: &AgentId) -> Vec<(FrameworkId, String, Resources)> {
        let Some(&a) = self.agent_index.get(agent) else {
            return Vec::new();
        };
        self.agent(a)
            .allocated
            .iter()
            .map(|(c, r)| {
                let client = self.client(*c);
                (
                    client.framework.clone(),
                    self.roles[client.role as usize].name.to_string(),
                    r.clone(),
                )
            })
            .collect()
    }

    /// The weighted dominant share of a role, for `/roles` and tests.
    pub fn role_share(&self, role: &str) -> f64 {
        self.role_index
            .get(role)
            .map(|&r| self.share(&self.roles[r as usize].allocated) / self.roles[r as usize].weight)
            .unwrap_or(0.0)
    }

    /// The dominant share of a framework within a role.
    pub fn framework_share(&self, framework: &FrameworkId, role: &str) -> f64 {
        self.frameworks
            .get(framework)
            .and_then(|f| f.clients.get(role))
            .map(|&c| self.share(&self.client(c).allocated))
            .unwrap_or(0.0)
    }

    /// A role's weight.
    pub fn weight(&self, role: &str) -> f64 {
        self.weights.get(role).copied().unwrap_or(1.0)
    }

    /// Scalar totals of the active agents.
    pub fn cluster_totals(&self) -> Vec<(String, f64)> {
        self.names
            .iter()
            .zip(&self.totals)
            .map(|(n, v)| (n.clone(), from_fixed(*v)))
            .collect()
    }

    /// Checks the bookkeeping: on every agent, available + allocated = total,
    /// and nothing allocated exceeds the total. Used by tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        for slot in self.agents.iter().flatten() {
            let mut sum = slot.available.clone();
            for r in slot.allocated.values() {
                sum += r;
            }
            if sum != slot.total {
                return Err(format!(
                    "agent {}: available + allocated = {} but total is {}",
                    slot.id, sum, slot.total
                ));
            }
            for (name, v) in slot.total.scalar_totals() {
                let used: i64 = slot.allocated.values().map(|r| r.scalar_fixed(name)).sum();
                if used > v {
                    return Err(format!(
                        "agent {} over-committed on {name}: {} > {}",
                        slot.id, used, v
                    ));
                }
            }
        }
        let _ = to_fixed(0.0);
        Ok(())
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
