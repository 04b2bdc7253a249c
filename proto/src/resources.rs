//! `Resources`: Mesos resource arithmetic.
//!
//! A resource is a name (`cpus`, `mem`, `ports`, …), a value (scalar, ranges
//! or set) and an identity: its reservations, allocation role, disk info and
//! so on. Resources with the same identity merge: scalars add, ranges and sets
//! unite. Scalars are fixed point with three decimals, as in Mesos, so that
//! adding and subtracting never drifts.
//!
//! Reservations are kept in the post-refinement form (`reservations[]`);
//! [`Resources::to_legacy_protos`] writes the pre-refinement form (`role` +
//! `reservation`) that frameworks without RESERVATION_REFINEMENT expect.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::Arc;

use prost::Message;

use crate::roles;
use crate::v1::{self, Resource, resource::ReservationInfo, value};

/// Why a resource or a resource string is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    /// A resource has no name.
    #[error("resource has no name")]
    NoName,
    /// The value does not match the declared type.
    #[error("resource '{0}' has a value that does not match its type")]
    TypeMismatch(String),
    /// A scalar is negative, infinite or NaN.
    #[error("resource '{0}' has an invalid scalar value (must be finite and not negative)")]
    BadScalar(String),
    /// A range has begin > end.
    #[error("resource '{0}' has a range whose begin is after its end")]
    BadRange(String),
    /// TEXT is not a valid resource type.
    #[error("resource '{0}' has type TEXT, which resources cannot have")]
    TextType(String),
    /// A role name is invalid.
    #[error("resource '{name}': {source}")]
    Role {
        /// The resource.
        name: String,
        /// The role problem.
        source: roles::RoleError,
    },
    /// The text form could not be parsed.
    #[error("cannot parse resources {input:?}: {reason}")]
    Parse {
        /// The piece that failed.
        input: String,
        /// Why.
        reason: String,
    },
}

/// A set of inclusive `[begin, end]` ranges, kept sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Builds a set from arbitrary ranges (overlapping or adjacent ones merge).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges.into_iter().filter(|(b, e)| b <= e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        RangeSet(out)
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Number of values in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// Whether the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every value of `other` is in `self`.
    pub fn contains(&self, other: &RangeSet) -> bool {
        other
            .0
            .iter()
            .all(|&(b, e)| self.0.iter().any(|&(sb, se)| sb <= b && e <= se))
    }

    /// Whether `value` is in the set.
    pub fn contains_value(&self, value: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= value && value <= e)
    }

    /// Union.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        RangeSet::from_ranges(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Difference.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut pieces = vec![(b, e)];
            for &(ob, oe) in &other.0 {
                let mut next = Vec::new();
                for (pb, pe) in pieces {
                    if oe < pb || ob > pe {
                        next.push((pb, pe));
                        continue;
                    }
                    if ob > pb {
                        next.push((pb, ob - 1));
                    }
                    if oe < pe {
                        next.push((oe + 1, pe));
                    }
                }
                pieces = next;
            }
            out.extend(pieces);
        }
        RangeSet::from_ranges(out)
    }

    /// Every value, in order (for small sets such as a task's ports).
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }

    fn to_proto(&self) -> value::Ranges {
        value::Ranges {
            range: self
                .0
                .iter()
                .map(|&(begin, end)| value::Range { begin, end })
                .collect(),
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// The value of one resource entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Quantity {
    /// Thousandths.
    Scalar(i64),
    Ranges(RangeSet),
    Set(BTreeSet<String>),
}

impl Quantity {
    fn is_empty(&self) -> bool {
        match self {
            Quantity::Scalar(v) => *v <= 0,
            Quantity::Ranges(r) => r.is_empty(),
            Quantity::Set(s) => s.is_empty(),
        }
    }

    fn add(&mut self, other: &Quantity) {
        match (self, other) {
            (Quantity::Scalar(a), Quantity::Scalar(b)) => *a += b,
            (Quantity::Ranges(a), Quantity::Ranges(b)) => *a = a.union(b),
            (Quantity::Set(a), Quantity::Set(b)) => a.extend(b.iter().cloned()),
            _ => {}
        }
    }

    fn subtract(&mut self, other: &Quantity) {
        match (self, other) {
            (Quantity::Scalar(a), Quantity::Scalar(b)) => *a -= b,
            (Quantity::Ranges(a), Quantity::Ranges(b)) => *a = a.difference(b),
            (Quantity::Set(a), Quantity::Set(b)) => a.retain(|x| !b.contains(x)),
            _ => {}
        }
    }

    fn contains(&self, other: &Quantity) -> bool {
        match (self, other) {
            (Quantity::Scalar(a), Quantity::Scalar(b)) => a >= b,
            (Quantity::Ranges(a), Quantity::Ranges(b)) => a.contains(b),
            (Quantity::Set(a), Quantity::Set(b)) => b.is_subset(a),
            _ => false,
        }
    }
}

/// Converts a scalar to Mesos' fixed point (three decimals).
pub fn to_fixed(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

/// Converts Mesos' fixed point back to a double.
pub fn from_fixed(v: i64) -> f64 {
    v as f64 / 1000.0
}

#[derive(Clone, Debug)]
struct Entry {
    /// The resource with its value fields cleared: its identity.
    /// Shared: cloning resources copies pointers, not protobuf messages.
    key: Arc<Resource>,
    /// `key` encoded, used to order and compare identities.
    id: Arc<[u8]>,
    /// A hash of `id`, to tell identities apart quickly.
    hash: u64,
    quantity: Quantity,
}

/// FNV-1a: a fast, stable hash for short byte strings.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.quantity == other.quantity
            && (Arc::ptr_eq(&self.id, &other.id) || self.id == other.id)
    }
}

impl Eq for Entry {}

impl Entry {
    fn to_proto(&self) -> Resource {
        let mut r = (*self.key).clone();
        match &self.quantity {
            Quantity::Scalar(v) => {
                r.scalar = Some(value::Scalar {
                    value: from_fixed(*v),
                })
            }
            Quantity::Ranges(ranges) => r.ranges = Some(ranges.to_proto()),
            Quantity::Set(items) => {
                r.set = Some(value::Set {
                    item: items.iter().cloned().collect(),
                })
            }
        }
        r
    }

    /// The role the resource is reserved to (the last refinement), or `*`.
    fn reservation_role(&self) -> &str {
        self.key
            .reservations
            .last()
            .and_then(|r| r.role.as_deref())
            .unwrap_or("*")
    }
}

/// A normalized collection of resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Sorted by (name, identity); no two entries share an identity; no entry
    /// is empty.
    entries: Vec<Entry>,
}

impl Resources {
    /// No resources.
    pub fn new() -> Self {
        Resources::default()
    }

    /// Validates and normalizes protobuf resources (either reservation format).
    pub fn from_protos(resources: &[Resource]) -> Result<Self, ResourceError> {
        let mut out = Resources::new();
        for r in resources {
            let (key, quantity) = normalize(r)?;
            out.add_entry(key, quantity);
        }
        Ok(out)
    }

    /// Parses the Mesos text form, `cpus:4;mem:8192;ports:[31000-32000];disk(role):10;x:{a,b}`,
    /// or a JSON array of Resource objects. Unreserved resources get `default_role`.
    pub fn parse(text: &str, default_role: &str) -> Result<Self, ResourceError> {
        let trimmed = text.trim();
        if trimmed.starts_with('[')
            && let Ok(serde_json::Value::Array(items)) =
                serde_json::from_str::<serde_json::Value>(trimmed)
        {
            let mut protos = Vec::with_capacity(items.len());
            for item in &items {
                protos.push(crate::json::from_value::<Resource>(item).map_err(|e| {
                    ResourceError::Parse {
                        input: item.to_string(),
                        reason: e.to_string(),
                    }
                })?);
            }
            return Resources::from_protos(&protos);
        }
        let mut out = Resources::new();
        for piece in trimmed.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: &str| ResourceError::Parse {
                input: piece.to_string(),
                reason: reason.to_string(),
            };
            let (name_role, value) = piece
                .split_once(':')
                .ok_or_else(|| bad("expected 'name:value'"))?;
            let name_role = name_role.trim();
            let (name, role) = match name_role.split_once('(') {
                Some((name, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| bad("unclosed '(' in role"))?;
                    (name.trim(), role.trim())
                }
                None => (name_role, default_role),
            };
            if name.is_empty() {
                return Err(bad("empty resource name"));
            }
            let value = value.trim();
            let mut r = Resource {
                name: name.to_string(),
                ..Default::default()
            };
            if let Some(inner) = value.strip_prefix('[') {
                let inner = inner.strip_suffix(']').ok_or_else(|| bad("unclosed '['"))?;
                let mut ranges = Vec::new();
                for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (b, e) = part.split_once('-').unwrap_or((part, part));
                    let b: u64 = b
                        .trim()
                        .parse()
                        .map_err(|_| bad("range bounds must be integers"))?;
                    let e: u64 = e
                        .trim()
                        .parse()
                        .map_err(|_| bad("range bounds must be integers"))?;
                    if b > e {
                        return Err(bad("range begin is after its end"));
                    }
                    ranges.push(value::Range { begin: b, end: e });
                }
                r.set_type(v1::value::Type::Ranges);
                r.ranges = Some(value::Ranges { range: ranges });
            } else if let Some(inner) = value.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| bad("unclosed '{'"))?;
                let items = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                r.set_type(v1::value::Type::Set);
                r.set = Some(value::Set { item: items });
            } else {
                let v: f64 = value
                    .parse()
                    .map_err(|_| bad("expected a number, [ranges] or {set}"))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad("scalar must be finite and not negative"));
                }
                r.set_type(v1::value::Type::Scalar);
                r.scalar = Some(value::Scalar { value: v });
            }
            if role != "*" {
                roles::validate(role).map_err(|e| bad(&e.to_string()))?;
                r.reservations.push(ReservationInfo {
                    r#type: Some(v1::resource::reservation_info::Type::Static as i32),
                    role: Some(role.to_string()),
                    principal: None,
                    labels: None,
                });
            }
            let (key, quantity) = normalize(&r)?;
            out.add_entry(key, quantity);
        }
        Ok(out)
    }

    /// The resources in post-refinement format (`reservations[]`).
    pub fn to_protos(&self) -> Vec<Resource> {
        self.entries.iter().map(Entry::to_proto).collect()
    }

    /// The resources in pre-refinement format: `role` (`*` when unreserved) and,
    /// for dynamic reservations, `reservation`. This is what frameworks without
    /// RESERVATION_REFINEMENT and the legacy endpoints show.
    #[allow(deprecated)]
    pub fn to_legacy_protos(&self) -> Vec<Resource> {
        self.entries
            .iter()
            .map(|e| {
                let mut r = e.to_proto();
                let last = r.reservations.pop();
                r.reservations.clear();
                match last {
                    Some(res) => {
                        r.role = res.role.clone();
                        if res.r#type() == v1::resource::reservation_info::Type::Dynamic {
                            r.reservation = Some(ReservationInfo {
                                r#type: None,
                                role: None,
                                principal: res.principal,
                                labels: res.labels,
                            });
                        }
                    }
                    None => r.role = Some("*".to_string()),
                }
                r
            })
            .collect()
    }

    /// Whether there is nothing here.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of distinct entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn add_entry(&mut self, key: Resource, quantity: Quantity) {
        if quantity.is_empty() {
            return;
        }
        let id: Arc<[u8]> = key.encode_to_vec().into();
        let hash = fnv1a(&id);
        match self.search(&key.name, &id, hash) {
            Ok(i) => self.entries[i].quantity.add(&quantity),
            Err(i) => self.entries.insert(
                i,
                Entry {
                    key: Arc::new(key),
                    id,
                    hash,
                    quantity,
                },
            ),
        }
    }

    /// Finds an identity: `Ok(index)`, or `Err(where it would go)`. Sets are
    /// small, so a scan that compares hashes first beats a binary search on
    /// the encoded bytes.
    fn search(&self, name: &str, id: &Arc<[u8]>, hash: u64) -> Result<usize, usize> {
        // Identities are shared between sets derived from one another, so a
        // pointer comparison usually settles it.
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.hash == hash && (Arc::ptr_eq(&e.id, id) || *e.id == **id))
        {
            return Ok(i);
        }
        let id: &[u8] = id;
        Err(self
            .entries
            .partition_point(|e| (e.key.name.as_str(), &*e.id) < (name, id)))
    }

    /// A hash of the whole contents: equal resources have equal
    /// fingerprints (used to cache decisions about unchanged resources).
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for e in &self.entries {
            h = h.rotate_left(5) ^ e.hash;
            let q = match &e.quantity {
                Quantity::Scalar(v) => *v as u64,
                Quantity::Ranges(r) => {
                    r.0.iter()
                        .fold(0u64, |acc, (b, x)| acc.rotate_left(7) ^ b ^ (x << 1))
                }
                Quantity::Set(items) => items
                    .iter()
                    .fold(0u64, |acc, i| acc.rotate_left(7) ^ fnv1a(i.as_bytes())),
            };
            h = h.wrapping_mul(0x0100_0000_01b3) ^ q;
        }
        h
    }

    /// Adds `other` into `self` (also `+=`).
    pub fn add_all(&mut self, other: &Resources) {
        for e in &other.entries {
            match self.search(&e.key.name, &e.id, e.hash) {
                Ok(i) => self.entries[i].quantity.add(&e.quantity),
                Err(i) => self.entries.insert(i, e.clone()),
            }
        }
    }

    /// Removes `other` from `self`, as far as `self` holds it (also `-=`).
    pub fn subtract_all(&mut self, other: &Resources) {
        for e in &other.entries {
            if let Ok(i) = self.search(&e.key.name, &e.id, e.hash) {
                self.entries[i].quantity.subtract(&e.quantity);
                if self.entries[i].quantity.is_empty() {
                    self.entries.remove(i);
                }
            }
        }
    }

    /// Whether every resource of `other` is in `self` (same identity, enough of it).
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .entries
            .iter()
            .all(|e| match self.search(&e.key.name, &e.id, e.hash) {
                Ok(i) => self.entries[i].quantity.contains(&e.quantity),
                Err(_) => false,
            })
    }

    /// The total scalar amount of `name` across all identities.
    pub fn scalar(&self, name: &str) -> f64 {
        from_fixed(self.scalar_fixed(name))
    }

    /// The total scalar amount of `name`, in thousandths.
    pub fn scalar_fixed(&self, name: &str) -> i64 {
        self.entries
            .iter()
            .filter(|e| e.key.name == name)
            .map(|e| match e.quantity {
                Quantity::Scalar(v) => v,
                _ => 0,
            })
            .sum()
    }

    /// The union of the `name` ranges across all identities.
    pub fn ranges(&self, name: &str) -> RangeSet {
        let mut out = RangeSet::default();
        for e in self.entries.iter().filter(|e| e.key.name == name) {
            if let Quantity::Ranges(r) = &e.quantity {
                out = out.union(r);
            }
        }
        out
    }

    /// The names present, sorted, without duplicates.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.iter().map(|e| e.key.name.as_str()).collect();
        names.dedup();
        names
    }

    /// Every scalar entry as (name, thousandths); a name may repeat (one
    /// entry per identity). Does not allocate.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.entries.iter().filter_map(|e| match e.quantity {
            Quantity::Scalar(v) => Some((e.key.name.as_str(), v)),
            _ => None,
        })
    }

    /// The scalar totals by name (cpus, mem, disk, gpus, …), in thousandths.
    pub fn scalar_totals(&self) -> Vec<(&str, i64)> {
        let mut out: Vec<(&str, i64)> = Vec::new();
        for e in &self.entries {
            if let Quantity::Scalar(v) = e.quantity {
                match out.last_mut() {
                    Some((n, total)) if *n == e.key.name => *total += v,
                    _ => out.push((e.key.name.as_str(), v)),
                }
            }
        }
        out
    }

    /// The same resources with each scalar name's total cut to at most
    /// `cap(name)` thousandths (None: not cut); what is cut to nothing is
    /// left out. Ranges and sets are kept whole.
    pub fn capped(&self, mut cap: impl FnMut(&str) -> Option<i64>) -> Resources {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut current: Option<(&str, Option<i64>)> = None;
        for e in &self.entries {
            let Quantity::Scalar(v) = e.quantity else {
                out.push(e.clone());
                continue;
            };
            let name = e.key.name.as_str();
            if current.is_none_or(|(n, _)| n != name) {
                current = Some((name, cap(name)));
            }
            let left = &mut current.as_mut().expect("set above").1;
            let take = match left {
                None => v,
                Some(l) => {
                    let t = v.min(*l).max(0);
                    *l -= t;
                    t
                }
            };
            if take > 0 {
                let mut e = e.clone();
                e.quantity = Quantity::Scalar(take);
                out.push(e);
            }
        }
        Resources { entries: out }
    }

    /// The resources whose protobuf form satisfies `keep`.
    pub fn filter(&self, mut keep: impl FnMut(&Resource) -> bool) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|e| keep(&e.key))
                .cloned()
                .collect(),
        }
    }

    /// Unreserved resources.
    pub fn unreserved(&self) -> Resources {
        self.filter(|r| r.reservations.is_empty())
    }

    /// Reserved resources, of any role.
    pub fn reserved(&self) -> Resources {
        self.filter(|r| !r.reservations.is_empty())
    }

    /// What a framework in `role` may be offered: unreserved resources and
    /// those reserved to `role` or to one of its ancestors.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        Resources {
            entries: self
                .entries
                .iter()
                .filter(|e| {
                    let reserved = e.reservation_role();
                    reserved == "*" || roles::is_self_or_ancestor(reserved, role)
                })
                .cloned()
                .collect(),
        }
    }

    /// The same resources, marked as allocated to `role` (`allocation_info`).
    pub fn allocated_to(&self, role: &str) -> Resources {
        self.map_identity(|key| {
            key.allocation_info = Some(v1::resource::AllocationInfo {
                role: Some(role.to_string()),
            });
        })
    }

    /// The same resources without `allocation_info`.
    pub fn unallocated(&self) -> Resources {
        self.map_identity(|key| key.allocation_info = None)
    }

    /// The same quantities under changed identities (entries that end up
    /// with one identity merge).
    pub fn map_identity(&self, mut change: impl FnMut(&mut Resource)) -> Resources {
        let mut out = Resources::new();
        for e in &self.entries {
            let mut key = (*e.key).clone();
            change(&mut key);
            out.add_entry(key, e.quantity.clone());
        }
        out
    }

    /// What operations made of the static resources: dynamic reservations
    /// and persistent volumes (what an agent checkpoints).
    pub fn checkpointed(&self) -> Resources {
        self.filter(|r| is_dynamically_reserved(r) || is_persistent_volume(r))
    }

    /// Persistent volumes.
    pub fn persistent_volumes(&self) -> Resources {
        self.filter(is_persistent_volume)
    }

    /// The identities (without quantities) of these resources.
    pub fn keys(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.entries.iter().map(|e| &*e.key)
    }

    /// The allocation roles present in these resources.
    pub fn allocation_roles(&self) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter_map(|e| e.key.allocation_info.as_ref().and_then(|a| a.role.clone()))
            .collect()
    }

    /// Whether every scalar here is at least as large as in `min` (names absent
    /// from `min` are ignored). Used for `--min_allocatable_resources`.
    pub fn covers_quantities(&self, min: &[(String, f64)]) -> bool {
        min.iter()
            .all(|(name, v)| self.scalar_fixed(name) >= to_fixed(*v))
    }
}

fn normalize(r: &Resource) -> Result<(Resource, Quantity), ResourceError> {
    if r.name.is_empty() {
        return Err(ResourceError::NoName);
    }
    let name = r.name.clone();
    let quantity = match v1::value::Type::try_from(r.r#type) {
        Ok(v1::value::Type::Scalar) => {
            let v = r
                .scalar
                .as_ref()
                .ok_or_else(|| ResourceError::TypeMismatch(name.clone()))?
                .value;
            if !v.is_finite() || v < 0.0 {
                return Err(ResourceError::BadScalar(name));
            }
            Quantity::Scalar(to_fixed(v))
        }
        Ok(v1::value::Type::Ranges) => {
            let ranges = r
                .ranges
                .as_ref()
                .ok_or_else(|| ResourceError::TypeMismatch(name.clone()))?;
            if ranges.range.iter().any(|x| x.begin > x.end) {
                return Err(ResourceError::BadRange(name));
            }
            Quantity::Ranges(RangeSet::from_ranges(
                ranges.range.iter().map(|x| (x.begin, x.end)),
            ))
        }
        Ok(v1::value::Type::Set) => {
            let set = r
                .set
                .as_ref()
                .ok_or_else(|| ResourceError::TypeMismatch(name.clone()))?;
            Quantity::Set(set.item.iter().cloned().collect())
        }
        Ok(v1::value::Type::Text) | Err(_) => return Err(ResourceError::TextType(name)),
    };
    let mut key = r.clone();
    key.scalar = None;
    key.ranges = None;
    key.set = None;
    #[allow(deprecated)]
    {
        // Pre-refinement format: `role` (+ `reservation` when dynamic).
        let role = key.role.take();
        let reservation = key.reservation.take();
        if let Some(role) = role.filter(|role| role != "*")
            && key.reservations.is_empty()
        {
            let dynamic = reservation.is_some();
            let reservation = reservation.unwrap_or_default();
            key.reservations.push(ReservationInfo {
                r#type: Some(if dynamic {
                    v1::resource::reservation_info::Type::Dynamic as i32
                } else {
                    v1::resource::reservation_info::Type::Static as i32
                }),
                role: Some(role),
                principal: reservation.principal,
                labels: reservation.labels,
            });
        }
    }
    for res in &key.reservations {
        if let Some(role) = &res.role {
            roles::validate(role).map_err(|source| ResourceError::Role {
                name: name.clone(),
                source,
            })?;
        }
    }
    if let Some(role) = key.allocation_info.as_ref().and_then(|a| a.role.as_ref()) {
        roles::validate(role).map_err(|source| ResourceError::Role {
            name: name.clone(),
            source,
        })?;
    }
    Ok((key, quantity))
}

/// Whether a resource's last reservation is dynamic (RESERVE made it).
pub fn is_dynamically_reserved(r: &Resource) -> bool {
    r.reservations
        .last()
        .is_some_and(|x| x.r#type == Some(v1::resource::reservation_info::Type::Dynamic as i32))
}

/// Whether a resource is a persistent volume (CREATE made it).
pub fn is_persistent_volume(r: &Resource) -> bool {
    r.disk.as_ref().is_some_and(|d| d.persistence.is_some())
}

/// A persistent volume as it was before CREATE: plain (reserved) disk,
/// its source kept.
pub fn without_volume(r: &mut Resource) {
    if let Some(disk) = &mut r.disk {
        disk.persistence = None;
        disk.volume = None;
        if disk.source.is_none() {
            r.disk = None;
        }
    }
}

/// What static resources an operation-made resource came from: without
/// its volume and its dynamic reservations.
pub fn as_static(r: &mut Resource) {
    without_volume(r);
    while is_dynamically_reserved(r) {
        r.reservations.pop();
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&e.key.name)?;
            let role = e.reservation_role();
            if role != "*" {
                write!(f, "({role})")?;
            }
            f.write_str(":")?;
            match &e.quantity {
                Quantity::Scalar(v) => write!(f, "{}", from_fixed(*v))?,
                Quantity::Ranges(r) => write!(f, "{r}")?,
                Quantity::Set(s) => {
                    f.write_str("{")?;
                    for (j, item) in s.iter().enumerate() {
                        if j > 0 {
                            f.write_str(", ")?;
                        }
                        f.write_str(item)?;
                    }
                    f.write_str("}")?;
                }
            }
        }
        Ok(())
    }
}

impl AddAssign<&Resources> for Resources {
    fn add_assign(&mut self, rhs: &Resources) {
        self.add_all(rhs);
    }
}

impl SubAssign<&Resources> for Resources {
    fn sub_assign(&mut self, rhs: &Resources) {
        self.subtract_all(rhs);
    }
}

impl Add<&Resources> for &Resources {
    type Output = Resources;
    fn add(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out.add_all(rhs);
        out
    }
}

impl Sub<&Resources> for &Resources {
    type Output = Resources;
    fn sub(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out.subtract_all(rhs);
        out
    }
}

/// Parses `--attributes` (`rack:r1;zone:a;level:2;ports:[1-3];tags:{a,b}`):
/// numbers become SCALAR, `[..]` RANGES, `{..}` SET, anything else TEXT.
pub fn parse_attributes(text: &str) -> Result<Vec<v1::Attribute>, ResourceError> {
    let mut out = Vec::new();
    for piece in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |reason: &str| ResourceError::Parse {
            input: piece.to_string(),
            reason: reason.to_string(),
        };
        let (name, value) = piece
            .split_once(':')
            .ok_or_else(|| bad("expected 'name:value'"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(bad("attribute name and value must not be empty"));
        }
        let mut a = v1::Attribute {
            name: name.to_string(),
            ..Default::default()
        };
        if value.starts_with('[') || value.starts_with('{') {
            let parsed = Resources::parse(&format!("x:{value}"), "*")?;
            let proto = parsed.to_protos().pop().ok_or_else(|| bad("empty value"))?;
            a.r#type = proto.r#type;
            a.ranges = proto.ranges;
            a.set = proto.set;
        } else if let Ok(v) = value
            .parse::<f64>()
            .map_err(|_| ())
            .and_then(|v| if v.is_finite() { Ok(v) } else { Err(()) })
        {
            a.set_type(v1::value::Type::Scalar);
            a.scalar = Some(value::Scalar { value: v });
        } else {
            a.set_type(v1::value::Type::Text);
            a.text = Some(value::Text {
                value: value.to_string(),
            });
        }
        out.push(a);
    }
    Ok(out)
}

/// An attribute's value as the legacy endpoints and constraint matching show it:
/// a number, `[a-b, …]`, `{a, b}` or the text itself.
pub fn attribute_value_string(a: &v1::Attribute) -> String {
    match v1::value::Type::try_from(a.r#type) {
        Ok(v1::value::Type::Scalar) => {
            let v = a.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            format!("{v}")
        }
        Ok(v1::value::Type::Ranges) => {
            let r = a
                .ranges
                .as_ref()
                .map(|r| RangeSet::from_ranges(r.range.iter().map(|x| (x.begin, x.end))));
            r.unwrap_or_default().to_string()
        }
        Ok(v1::value::Type::Set) => {
            let items = a
                .set
                .as_ref()
                .map(|s| s.item.join(", "))
                .unwrap_or_default();
            format!("{{{items}}}")
        }
        _ => a.text.as_ref().map(|t| t.value.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
