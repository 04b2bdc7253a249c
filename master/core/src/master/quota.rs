//! UPDATE_QUOTA and GET_QUOTA (Mesos 1.9's quota v2): per role, scalar
//! guarantees and limits that the allocator enforces (see
//! `allocator/quota.rs`). An update is all or nothing; it is refused when a
//! role already holds more than a new limit, unless `force`.

use std::collections::BTreeMap;

use agora_proto::acl::Action;
use agora_proto::resources::Resources;
use agora_proto::v1::{self, quota};

use super::scheduler::bad;
use super::{CallError, Master};
use crate::allocator::{Quota, under};

/// A role's quota from its QuotaConfig, checked.
fn from_config(c: &quota::QuotaConfig) -> Result<Quota, CallError> {
    let scalars = |m: &BTreeMap<String, v1::value::Scalar>,
                   what: &str|
     -> Result<BTreeMap<String, f64>, CallError> {
        let mut out = BTreeMap::new();
        for (name, v) in m {
            if name.trim().is_empty() {
                return Err(bad(format!(
                    "Quota {what} of role '{}' names no resource",
                    c.role
                )));
            }
            if !(v.value.is_finite() && v.value >= 0.0) {
                return Err(bad(format!(
                    "Quota {what} of role '{}': '{name}' must be a non-negative number",
                    c.role
                )));
            }
            out.insert(name.clone(), v.value);
        }
        Ok(out)
    };
    let q = Quota {
        guarantees: scalars(&c.guarantees, "guarantee")?,
        limits: scalars(&c.limits, "limit")?,
    };
    for (name, g) in &q.guarantees {
        if let Some(l) = q.limits.get(name)
            && g > l
        {
            return Err(bad(format!(
                "Role '{}': the guarantee of '{name}' ({g}) is above its limit ({l})",
                c.role
            )));
        }
    }
    Ok(q)
}

fn to_config(role: &str, q: &Quota) -> quota::QuotaConfig {
    let map = |m: &BTreeMap<String, f64>| {
        m.iter()
            .map(|(n, v)| (n.clone(), v1::value::Scalar { value: *v }))
            .collect()
    };
    quota::QuotaConfig {
        role: role.to_string(),
        guarantees: map(&q.guarantees),
        limits: map(&q.limits),
    }
}

impl Master {
    /// UPDATE_QUOTA: every config applies, or none.
    pub(crate) fn update_quota(
        &mut self,
        configs: &[quota::QuotaConfig],
        force: bool,
        principal: Option<&str>,
    ) -> Result<(), CallError> {
        let mut next: BTreeMap<String, Quota> = self
            .allocator
            .quotas()
            .map(|(r, q)| (r.to_string(), q.clone()))
            .collect();
        let mut touched = Vec::new();
        for c in configs {
            agora_proto::roles::validate(&c.role).map_err(|e| bad(e.to_string()))?;
            if c.role == "*" {
                return Err(bad("The default role '*' cannot have a quota"));
            }
            self.authorize(Action::UpdateQuotas, principal, Some(&c.role))?;
            let q = from_config(c)?;
            if !force {
                let consumed = self.allocator.consumed(&c.role);
                for (name, limit) in &q.limits {
                    let held = consumed.get(name).copied().unwrap_or(0.0);
                    if held > *limit {
                        return Err(bad(format!(
                            "Role '{}' already holds {held} {name}, above the new limit {limit} (force to set it anyway)",
                            c.role
                        )));
                    }
                }
            }
            if q == Quota::default() {
                next.remove(&c.role);
            } else {
                next.insert(c.role.clone(), q);
            }
            touched.push(c.role.clone());
        }
        // A role's limit may not exceed its parent's.
        for (role, q) in &next {
            for (parent, pq) in &next {
                if parent == role || !under(role, parent) {
                    continue;
                }
                for (name, limit) in &q.limits {
                    if let Some(pl) = pq.limits.get(name)
                        && limit > pl
                    {
                        return Err(bad(format!(
                            "Role '{role}': its limit of '{name}' ({limit}) is above that of '{parent}' ({pl})"
                        )));
                    }
                }
            }
        }
        for role in touched {
            self.allocator.set_quota(&role, next.remove(&role));
        }
        self.registry_dirty = true;
        self.allocation_requested = true;
        Ok(())
    }

    /// GET_QUOTA for `principal`: the roles it may see.
    pub fn get_quota(&self, principal: Option<&str>) -> quota::QuotaStatus {
        let mut status = quota::QuotaStatus::default();
        for (role, q) in self.allocator.quotas() {
            if !self.allows(Action::GetQuotas, principal, Some(role)) {
                continue;
            }
            #[allow(deprecated)]
            status.infos.push(quota::QuotaInfo {
                role: Some(role.to_string()),
                principal: None,
                guarantee: q
                    .guarantees
                    .iter()
                    .filter_map(|(n, v)| Resources::parse(&format!("{n}:{v}"), "*").ok())
                    .flat_map(|r| r.to_protos())
                    .collect(),
            });
            status.configs.push(to_config(role, q));
        }
        status
    }

    /// The quotas, for the registry.
    pub(crate) fn quotas_stored(&self) -> Vec<quota::QuotaConfig> {
        self.allocator
            .quotas()
            .map(|(r, q)| to_config(r, q))
            .collect()
    }

    /// Takes back stored quotas (dropping any no longer valid).
    pub(crate) fn recover_quotas(&mut self, configs: &[quota::QuotaConfig]) {
        for c in configs {
            if let Ok(q) = from_config(c) {
                self.allocator.set_quota(&c.role, Some(q));
            }
        }
    }
}
