//! Quota (Mesos 1.9's quota v2): per role, scalar guarantees and limits.
//!
//! A role's consumption is what is allocated (offered or used) to it and to
//! the roles below it (`eng` counts `eng/web`). A limit caps every offer to
//! a role under it: the offer is cut to what is left of the tightest limit
//! among the role and its ancestors, and a role with nothing left gets
//! nothing. Roles below their own guarantee are visited before every other
//! role, in DRF order, so guaranteed resources go to them first.
//!
//! Headroom, as Mesos: what guarantees still miss is held back. At the
//! start of a pass the allocator sums, per resource name, what each
//! guaranteed role (the top-most one of a tree) lacks of its guarantee; of
//! what is not allocated, only the rest (the spare) may go to roles beyond
//! their guarantees, so a guaranteed role whose framework is away, or
//! declined, finds its resources when it asks. A role below its guarantee
//! may take its unmet guarantee plus the spare. Names no guarantee lacks
//! are not held back.

use std::collections::BTreeMap;

use agora_proto::resources::{Resources, from_fixed, to_fixed};

use super::*;

/// A role's quota: guarantees and limits by scalar resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quota {
    /// What the role is offered before roles without a guarantee.
    pub guarantees: BTreeMap<String, f64>,
    /// What the role (with the roles below it) is never offered beyond.
    pub limits: BTreeMap<String, f64>,
}

#[derive(Debug)]
pub(super) struct QuotaSlot {
    pub path: String,
    pub quota: Quota,
    /// (name index, thousandths).
    guarantees: Vec<(usize, i64)>,
    limits: Vec<(usize, i64)>,
    /// Allocated to the role and those below it, by name index.
    consumed: Vec<i64>,
}

/// Whether `role` is `path` or below it.
pub(crate) fn under(role: &str, path: &str) -> bool {
    role == path || role.strip_prefix(path).is_some_and(|r| r.starts_with('/'))
}

impl Allocator {
    /// Sets (or with None removes) `role`'s quota.
    pub fn set_quota(&mut self, role: &str, quota: Option<Quota>) {
        self.quotas.retain(|q| q.path != role);
        if let Some(quota) = quota {
            let mut fixed = |m: &BTreeMap<String, f64>| -> Vec<(usize, i64)> {
                m.iter()
                    .map(|(n, v)| (self.name_index(n), to_fixed(*v)))
                    .collect()
            };
            let guarantees = fixed(&quota.guarantees);
            let limits = fixed(&quota.limits);
            self.quotas.push(QuotaSlot {
                path: role.to_string(),
                quota,
                guarantees,
                limits,
                consumed: Vec::new(),
            });
        }
        self.index_quotas();
    }

    /// Every role's quota.
    pub fn quotas(&self) -> impl Iterator<Item = (&str, &Quota)> {
        self.quotas.iter().map(|q| (q.path.as_str(), &q.quota))
    }

    /// What `role` and the roles below it are allocated, by resource name.
    pub fn consumed(&self, role: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for r in &self.roles {
            if under(&r.name, role) {
                for (i, v) in r.allocated.iter().enumerate() {
                    if *v > 0 {
                        *out.entry(self.names[i].clone()).or_insert(0.0) += from_fixed(*v);
                    }
                }
            }
        }
        out
    }

    /// Which quotas apply to each role, and what each quota's roles hold.
    pub(super) fn index_quotas(&mut self) {
        for r in 0..self.roles.len() {
            let name = self.roles[r].name.clone();
            self.roles[r].quotas = self
                .quotas
                .iter()
                .enumerate()
                .filter(|(_, q)| under(&name, &q.path))
                .map(|(i, _)| i as u32)
                .collect();
        }
        let names = self.names.len();
        for q in &mut self.quotas {
            q.consumed = vec![0; names];
        }
        for role in &self.roles {
            for &q in &role.quotas {
                let consumed = &mut self.quotas[q as usize].consumed;
                for (i, v) in role.allocated.iter().enumerate() {
                    if consumed.len() <= i {
                        consumed.resize(i + 1, 0);
                    }
                    consumed[i] += v;
                }
            }
        }
    }

    /// The quotas of a role just made.
    pub(super) fn quotas_of(&self, role: &str) -> Vec<u32> {
        self.quotas
            .iter()
            .enumerate()
            .filter(|(_, q)| under(role, &q.path))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Role `r`'s allocation changed by `v` of name `i`.
    pub(super) fn quota_consume(&mut self, r: usize, i: usize, v: i64) {
        for k in 0..self.roles[r].quotas.len() {
            let q = self.roles[r].quotas[k] as usize;
            let consumed = &mut self.quotas[q].consumed;
            if consumed.len() <= i {
                consumed.resize(i + 1, 0);
            }
            consumed[i] = (consumed[i] + v).max(0);
        }
    }

    /// Whether role `r` has a guarantee of its own it does not hold yet.
    pub(super) fn below_guarantee(&self, r: u32) -> bool {
        let role = &self.roles[r as usize];
        role.quotas.iter().any(|&q| {
            let q = &self.quotas[q as usize];
            *q.path == *role.name
                && q.guarantees
                    .iter()
                    .any(|(i, g)| q.consumed.get(*i).copied().unwrap_or(0) < *g)
        })
    }

    /// The headroom of this pass (see the module documentation): the spare
    /// per name index (`i64::MAX` for names no guarantee lacks), or None
    /// when every guarantee is met.
    pub(super) fn compute_headroom(&mut self) {
        self.headroom = None;
        if self.quotas.iter().all(|q| q.guarantees.is_empty()) {
            return;
        }
        let n = self.names.len();
        let mut required = vec![0i64; n];
        for q in &self.quotas {
            // Counted once, at the top-most guaranteed role of a tree.
            let nested = self
                .quotas
                .iter()
                .any(|p| !p.guarantees.is_empty() && p.path != q.path && under(&q.path, &p.path));
            if q.guarantees.is_empty() || nested {
                continue;
            }
            for &(i, g) in &q.guarantees {
                required[i] += (g - q.consumed.get(i).copied().unwrap_or(0)).max(0);
            }
        }
        if required.iter().all(|r| *r == 0) {
            return;
        }
        let mut unallocated = self.totals.clone();
        unallocated.resize(n, 0);
        for role in &self.roles {
            for (i, v) in role.allocated.iter().enumerate() {
                unallocated[i] -= v;
            }
        }
        self.headroom = Some(
            unallocated
                .iter()
                .zip(&required)
                .map(|(u, r)| if *r > 0 { (u - r).max(0) } else { i64::MAX })
                .collect(),
        );
    }

    /// What role `r` lacks of its own guarantee, by name index.
    fn unmet_guarantee(&self, r: u32) -> Vec<i64> {
        let role = &self.roles[r as usize];
        let mut unmet = vec![0; self.names.len()];
        for &q in &role.quotas {
            let q = &self.quotas[q as usize];
            if *q.path == *role.name {
                for &(i, g) in &q.guarantees {
                    unmet[i] = (g - q.consumed.get(i).copied().unwrap_or(0)).max(0);
                }
            }
        }
        unmet
    }

    /// What of `offer` role `r` may take without eating into what other
    /// guarantees lack: its own unmet guarantee and the spare.
    pub(super) fn within_headroom(&self, r: u32, offer: Resources) -> Resources {
        let Some(spare) = &self.headroom else {
            return offer;
        };
        let unmet = self.unmet_guarantee(r);
        offer.capped(|name| {
            let i = self.known_name(name)?;
            let s = *spare.get(i)?;
            (s != i64::MAX).then(|| s + unmet.get(i).copied().unwrap_or(0))
        })
    }

    /// `offer` goes to role `r`: what is beyond its unmet guarantee comes
    /// out of the spare.
    pub(super) fn take_headroom(&mut self, r: u32, offer: &Resources) {
        if self.headroom.is_none() {
            return;
        }
        let unmet = self.unmet_guarantee(r);
        let taken: Vec<(usize, i64)> = offer
            .scalars()
            .filter_map(|(name, v)| Some((self.known_name(name)?, v)))
            .collect();
        if let Some(spare) = self.headroom.as_mut() {
            for (i, v) in taken {
                if let Some(s) = spare.get_mut(i).filter(|s| **s != i64::MAX) {
                    let covered = v.min(unmet.get(i).copied().unwrap_or(0));
                    *s = (*s - (v - covered)).max(0);
                }
            }
        }
    }

    /// What of `base` role `r` may be offered under its limits and its
    /// ancestors'.
    pub(super) fn within_limits(&self, r: u32, base: Resources) -> Resources {
        let quotas = &self.roles[r as usize].quotas;
        if quotas
            .iter()
            .all(|&q| self.quotas[q as usize].limits.is_empty())
        {
            return base;
        }
        base.capped(|name| {
            let i = self.known_name(name)?;
            quotas
                .iter()
                .filter_map(|&q| {
                    let q = &self.quotas[q as usize];
                    let (_, limit) = q.limits.iter().find(|(n, _)| *n == i)?;
                    Some((limit - q.consumed.get(i).copied().unwrap_or(0)).max(0))
                })
                .min()
        })
    }

    /// `pick` when some role has a quota: roles below their guarantee
    /// first, then the others, each in DRF order; each role's offer cut to
    /// its limits. `offerable` receives the offer.
    pub(super) fn pick_with_quota(&self, a: u32, offerable: &mut Resources) -> Option<ClientIdx> {
        let slot = self.agent(a);
        let unblocked = self.eligible_count.saturating_sub(slot.blocked_eligible);
        if unblocked * unblocked < self.eligible_count {
            return self.pick_with_quota_among_unblocked(slot, offerable);
        }
        for guaranteed in [true, false] {
            for &(_, r) in &self.role_order {
                let role = &self.roles[r as usize];
                if role.eligible_clients == 0 || self.below_guarantee(r) != guaranteed {
                    continue;
                }
                // Whether the role has a client that may take this agent;
                // only then what it would be offered.
                let may = |c: ClientIdx| {
                    let client = self.client(c);
                    client.eligible
                        && !slot.is_blocked(c)
                        && !(self.config.filter_gpu_resources && slot.has_gpus && !client.gpu)
                };
                if !role.clients.iter().any(|&(_, c)| may(c)) {
                    continue;
                }
                let base = if slot.has_reservations {
                    slot.available.allocatable_to(&role.name)
                } else {
                    slot.available.clone()
                };
                let o = self.within_headroom(r, self.within_limits(r, base));
                if !self.allocatable(&o) {
                    continue;
                }
                // A client that declined this very offer (cut to the
                // role's limit) is not offered it again.
                let Some(c) = role
                    .clients
                    .iter()
                    .map(|&(_, c)| c)
                    .find(|&c| may(c) && !slot.refuses(c, &o))
                else {
                    continue;
                };
                *offerable = o;
                return Some(c);
            }
        }
        None
    }

    /// `pick_with_quota` for an agent most clients have declined: the
    /// unblocked eligible clients, in the same order.
    fn pick_with_quota_among_unblocked(
        &self,
        slot: &AgentSlot,
        offerable: &mut Resources,
    ) -> Option<ClientIdx> {
        let mut candidates: Vec<(bool, u64, u32, u64, ClientIdx)> = self
            .unblocked(slot)
            .map(|(c, client)| {
                let r = client.role;
                (
                    !self.below_guarantee(r),
                    self.roles[r as usize].key,
                    r,
                    client.key,
                    c,
                )
            })
            .collect();
        candidates.sort_unstable();
        for (_, _, r, _, c) in candidates {
            let base = if slot.has_reservations {
                slot.available.allocatable_to(&self.roles[r as usize].name)
            } else {
                slot.available.clone()
            };
            let o = self.within_headroom(r, self.within_limits(r, base));
            if self.allocatable(&o) && !slot.refuses(c, &o) {
                *offerable = o;
                return Some(c);
            }
        }
        None
    }
}
