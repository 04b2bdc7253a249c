//! The allocation pass: which client each agent's resources go to, the
//! dominant shares that order them, and the offer filters that hold them
//! back (cached per agent as a bit set of blocked clients).

use std::sync::Arc;

use agora_proto::resources::Resources;

use super::*;

impl Allocator {
    pub(super) fn allocate_to(&mut self, a: u32, c: ClientIdx, resources: &Resources) {
        let slot = self.agent_mut(a);
        *slot.allocated.entry(c).or_default() += resources;
        slot.available -= resources;
        slot.available_fp = None;
        self.change_client_allocation(c, resources, 1);
    }

    pub(super) fn release(&mut self, a: u32, c: ClientIdx, resources: &Resources) {
        let slot = self.agent_mut(a);
        if let Some(held) = slot.allocated.get_mut(&c) {
            *held -= resources;
            if held.is_empty() {
                slot.allocated.remove(&c);
            }
        }
        slot.available += resources;
        slot.available_fp = None;
        self.change_client_allocation(c, resources, -1);
    }

    pub(super) fn change_client_allocation(
        &mut self,
        c: ClientIdx,
        resources: &Resources,
        sign: i64,
    ) {
        let role = self.client(c).role as usize;
        for (name, v) in resources.scalars() {
            let i = match self.names.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    self.names.push(name.to_string());
                    self.totals.push(0);
                    self.names.len() - 1
                }
            };
            for allocated in [
                &mut self.clients[c as usize]
                    .as_mut()
                    .expect("live client")
                    .allocated,
                &mut self.roles[role].allocated,
            ] {
                if allocated.len() <= i {
                    allocated.resize(i + 1, 0);
                }
                allocated[i] = (allocated[i] + sign * v).max(0);
            }
            if !self.quotas.is_empty() {
                self.quota_consume(role, i, sign * v);
            }
        }
        if !self.shares_stale {
            self.reposition_client(c);
            self.reposition_role(role as u32);
        }
    }

    pub(super) fn share(&self, allocated: &[i64]) -> f64 {
        let mut share: f64 = 0.0;
        for (i, v) in allocated.iter().enumerate() {
            if *v == 0
                || self
                    .config
                    .fair_sharing_excluded
                    .iter()
                    .any(|x| *x == self.names[i])
            {
                continue;
            }
            if let Some(total) = self.totals.get(i).filter(|t| **t > 0) {
                share = share.max(*v as f64 / *total as f64);
            }
        }
        share
    }

    pub(super) fn reposition_client(&mut self, c: ClientIdx) {
        let key = self.share(&self.client(c).allocated).to_bits();
        let client = self.clients[c as usize].as_mut().expect("live client");
        let role = &mut self.roles[client.role as usize];
        role.clients.remove(&(client.key, c));
        client.key = key;
        role.clients.insert((key, c));
    }

    pub(super) fn reposition_role(&mut self, r: u32) {
        let role = &self.roles[r as usize];
        let key = (self.share(&role.allocated) / role.weight).to_bits();
        let old = role.key;
        self.role_order.remove(&(old, r));
        self.roles[r as usize].key = key;
        self.role_order.insert((key, r));
    }

    pub(super) fn refresh_shares(&mut self) {
        self.shares_stale = false;
        let clients: Vec<ClientIdx> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i as ClientIdx)
            .collect();
        for c in clients {
            self.reposition_client(c);
        }
        for r in 0..self.roles.len() as u32 {
            self.reposition_role(r);
        }
    }

    // ------------------------------------------------------------ allocation

    /// One allocation pass over every active agent, in an order drawn from
    /// `rng`. Returns the offers to make.
    pub fn allocate(&mut self, now: Time, rng: &mut fastrand::Rng) -> Vec<Allocation> {
        self.passes += 1;
        if self.shares_stale {
            self.refresh_shares();
        }
        if self.order_stale {
            self.order = self
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.as_ref().is_some_and(|a| a.active))
                .map(|(i, _)| i as u32)
                .collect();
            self.order_stale = false;
        }
        let mut order = std::mem::take(&mut self.order);
        rng.shuffle(&mut order);
        if !self.quotas.is_empty() {
            self.compute_headroom();
        }
        let mut out = Vec::with_capacity(order.len());
        if self.eligible_count > 0 {
            for &a in &order {
                self.allocate_agent(a, now, &mut out);
            }
        }
        self.order = order;
        self.headroom = None;
        out
    }

    pub(super) fn allocate_agent(&mut self, a: u32, now: Time, out: &mut Vec<Allocation>) {
        // Expire filters, then make sure the blocked set is current.
        let slot = self.agent_mut(a);
        if slot.next_expiry.is_some_and(|e| e <= now) {
            let expired: Vec<ClientIdx> = slot
                .filters
                .iter()
                .filter(|(_, f)| f.expires <= now)
                .map(|(c, _)| *c)
                .collect();
            for c in expired {
                slot.filters.remove(&c);
                slot.filter_changed(c);
            }
            slot.next_expiry = slot.filters.values().map(|f| f.expires).min();
        }
        if self.agent(a).available.is_empty() {
            return;
        }
        self.refresh_blocked(a);
        let slot = self.agent(a);
        if slot.blocked_eligible >= self.eligible_count {
            return;
        }
        if !self.agent(a).has_reservations && self.quotas.is_empty() {
            // Everything goes to the first client in DRF order.
            let Some(c) = self.pick(a, None) else { return };
            let slot = self.agents[a as usize].as_mut().expect("live agent slot");
            let resources = std::mem::take(&mut slot.available);
            slot.available_fp = None;
            match slot.allocated.get_mut(&c) {
                Some(held) => *held += &resources,
                None => {
                    slot.allocated.insert(c, resources.clone());
                }
            }
            let agent = slot.id.clone();
            self.change_client_allocation(c, &resources, 1);
            let client = self.client(c);
            out.push(Allocation {
                framework: client.framework.clone(),
                agent,
                role: self.roles[client.role as usize].name.clone(),
                resources,
            });
            return;
        }
        // With reservations or quotas, each role may get its own offer.
        for _ in 0..self.roles.len() {
            let mut offerable = Resources::new();
            let Some(c) = self.pick(a, Some(&mut offerable)) else {
                return;
            };
            let r = self.client(c).role;
            self.take_headroom(r, &offerable);
            let role = self.roles[r as usize].name.clone();
            out.push(Allocation {
                framework: self.client(c).framework.clone(),
                agent: self.agent(a).id.clone(),
                role,
                resources: offerable.clone(),
            });
            self.allocate_to(a, c, &offerable);
            if self.agent(a).available.is_empty() {
                return;
            }
            self.refresh_blocked(a);
        }
    }

    /// The first eligible, unblocked client in DRF order. For an agent with
    /// reservations, `offerable` receives what that client's role may use.
    pub(super) fn pick(&self, a: u32, mut offerable: Option<&mut Resources>) -> Option<ClientIdx> {
        if !self.quotas.is_empty()
            && let Some(out) = offerable.as_deref_mut()
        {
            return self.pick_with_quota(a, out);
        }
        let slot = self.agent(a);
        if !slot.has_reservations && !self.allocatable(&slot.available) {
            return None;
        }
        // Walking the DRF order past blocked clients takes about n/u steps
        // when u of n eligible clients are unblocked; looking at the u
        // directly takes u. Use the cheaper (u² < n).
        let unblocked = self.eligible_count.saturating_sub(slot.blocked_eligible);
        if !slot.has_reservations && unblocked * unblocked < self.eligible_count {
            return self.pick_among_unblocked(slot);
        }
        for &(_, r) in &self.role_order {
            let role = &self.roles[r as usize];
            if role.eligible_clients == 0 {
                continue;
            }
            let role_offerable = if slot.has_reservations {
                let o = slot.available.allocatable_to(&role.name);
                if !self.allocatable(&o) {
                    continue;
                }
                Some(o)
            } else {
                None
            };
            for &(_, c) in &role.clients {
                let client = self.client(c);
                if !client.eligible || slot.is_blocked(c) {
                    continue;
                }
                if self.config.filter_gpu_resources && slot.has_gpus && !client.gpu {
                    continue;
                }
                if let (Some(out), Some(o)) = (offerable.as_deref_mut(), role_offerable) {
                    *out = o;
                }
                return Some(c);
            }
        }
        None
    }

    /// `pick` for an agent that most clients have declined: the first of
    /// the unblocked eligible clients in DRF order.
    pub(super) fn pick_among_unblocked(&self, slot: &AgentSlot) -> Option<ClientIdx> {
        self.unblocked(slot)
            .map(|(c, client)| {
                (
                    self.roles[client.role as usize].key,
                    client.role,
                    client.key,
                    c,
                )
            })
            .min()
            .map(|b| b.3)
    }

    /// The eligible clients `slot` does not block (nor refuses for GPUs),
    /// read from the bit sets.
    pub(super) fn unblocked<'a>(
        &'a self,
        slot: &'a AgentSlot,
    ) -> impl Iterator<Item = (ClientIdx, &'a Client)> + 'a {
        self.eligible_bits
            .iter()
            .enumerate()
            .flat_map(move |(w, eligible)| {
                let mut bits = eligible & !slot.blocked.get(w).copied().unwrap_or(0);
                std::iter::from_fn(move || {
                    (bits != 0).then(|| {
                        let c = (w * 64) as ClientIdx + bits.trailing_zeros();
                        bits &= bits - 1;
                        c
                    })
                })
            })
            .filter_map(move |c| Some((c, self.clients[c as usize].as_ref()?)))
            .filter(move |(_, client)| {
                !(self.config.filter_gpu_resources && slot.has_gpus && !client.gpu)
            })
    }

    pub(super) fn allocatable(&self, r: &Resources) -> bool {
        !r.is_empty()
            && (self.config.min_allocatable.is_empty()
                || self
                    .config
                    .min_allocatable
                    .iter()
                    .any(|set| r.covers_quantities(set)))
    }

    /// Brings the agent's blocked set up to date: a full rebuild when the
    /// eligible clients or the available resources changed, else only the
    /// filters added or removed since.
    pub(super) fn refresh_blocked(&mut self, a: u32) {
        let generation = self.generation;
        let slot = self.agents[a as usize].as_mut().expect("live agent slot");
        let fingerprint = slot.available_fingerprint();
        if slot.blocked_generation != Some(generation) || slot.blocked_fingerprint != fingerprint {
            self.rebuild_blocked(a, fingerprint);
            return;
        }
        let slot = self.agents[a as usize].as_mut().expect("live agent slot");
        // Taken out and put back emptied: its buffer is kept for the next
        // pass instead of allocated again.
        let mut dirty = std::mem::take(&mut slot.dirty);
        for &c in &dirty {
            let Some(client) = self.clients[c as usize].as_ref() else {
                continue;
            };
            let blocks = match slot.filters.get_mut(&c) {
                Some(filter) => filter_blocks(
                    filter,
                    &slot.available,
                    slot.has_reservations,
                    &self.roles[client.role as usize].name,
                    fingerprint,
                    &mut slot.last_verdict,
                ),
                None => false,
            };
            let (word, bit) = ((c / 64) as usize, 1u64 << (c % 64));
            if slot.blocked.len() <= word {
                slot.blocked.resize(word + 1, 0);
            }
            let was = slot.blocked[word] & bit != 0;
            if blocks != was {
                slot.blocked[word] ^= bit;
                if client.eligible {
                    if blocks {
                        slot.blocked_eligible += 1;
                    } else {
                        slot.blocked_eligible -= 1;
                    }
                }
            }
        }
        dirty.clear();
        slot.dirty = dirty;
    }

    pub(super) fn rebuild_blocked(&mut self, a: u32, fingerprint: u64) {
        let generation = self.generation;
        let words = self.clients.len().div_ceil(64);
        let slot = self.agents[a as usize].as_mut().expect("live agent slot");
        let mut blocked = vec![0u64; words];
        let mut eligible = 0;
        for (&c, filter) in slot.filters.iter_mut() {
            let Some(client) = self.clients[c as usize].as_ref() else {
                continue;
            };
            let role = &self.roles[client.role as usize].name;
            if filter_blocks(
                filter,
                &slot.available,
                slot.has_reservations,
                role,
                fingerprint,
                &mut slot.last_verdict,
            ) {
                blocked[(c / 64) as usize] |= 1 << (c % 64);
                if client.eligible {
                    eligible += 1;
                }
            }
        }
        slot.blocked = blocked;
        slot.blocked_eligible = eligible;
        slot.blocked_generation = Some(generation);
        slot.blocked_fingerprint = fingerprint;
        slot.dirty.clear();
    }
}

/// Whether `filter` holds back what the agent offers `role` (its available
/// resources are a subset of what was refused). The verdict is cached per
/// fingerprint of the available resources, which repeat from pass to pass.
fn filter_blocks(
    filter: &mut Filter,
    available: &Resources,
    has_reservations: bool,
    role: &str,
    fingerprint: u64,
    last: &mut Option<(Arc<Resources>, u64, bool)>,
) -> bool {
    if let Some((fp, verdict)) = filter.verdict
        && fp == fingerprint
    {
        return verdict;
    }
    let verdict = if has_reservations {
        filter.refused.contains(&available.allocatable_to(role))
    } else {
        match last {
            Some((refused, fp, verdict))
                if *fp == fingerprint && Arc::ptr_eq(refused, &filter.refused) =>
            {
                *verdict
            }
            _ => {
                let verdict = filter.refused.contains(available);
                *last = Some((filter.refused.clone(), fingerprint, verdict));
                verdict
            }
        }
    };
    filter.verdict = Some((fingerprint, verdict));
    verdict
}
