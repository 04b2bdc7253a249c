//! The state as the store keeps it: one entry per app (with its versions),
//! one per instance, and one for the rest, as Marathon keeps apps and
//! instances in ZooKeeper nodes of their own, so a change rewrites only
//! what it changed.
//!
//! ```text
//! app:<id>          {"id", "app": App | null, "versions": [App, …]}   ('/' as %2F)
//! instance:<task>   Instance
//! reservation:<id>  Reservation (resident apps)
//! meta              groups, dependencies, deployments, backoff, last failures, framework id
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FrameworkRemoved, State};
use crate::app::App;
use crate::deployment::Deployment;
use crate::instance::{Instance, Reservation};
use crate::path::PathId;
use crate::planner::Backoff;

/// Why stored entries are not a state.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// An entry does not parse.
    #[error("entry '{key}': {source}")]
    Json {
        /// Which.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// An entry's key names nothing this store writes.
    #[error("entry '{0}' is not a marathon-rs entry")]
    Unknown(String),
}

const META: &str = "meta";
const APP: &str = "app:";
const INSTANCE: &str = "instance:";
const RESERVATION: &str = "reservation:";

#[derive(Serialize)]
struct MetaRef<'a> {
    groups: &'a BTreeSet<PathId>,
    group_dependencies: &'a BTreeMap<PathId, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    enforce_role: &'a BTreeSet<PathId>,
    deployments: &'a Vec<Deployment>,
    backoff: &'a BTreeMap<PathId, Backoff>,
    last_failure: &'a BTreeMap<PathId, Value>,
    framework_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    framework_removed: &'a Option<FrameworkRemoved>,
    root_version: &'a String,
}

#[derive(Deserialize)]
struct Meta {
    groups: BTreeSet<PathId>,
    group_dependencies: BTreeMap<PathId, Vec<String>>,
    #[serde(default)]
    enforce_role: BTreeSet<PathId>,
    deployments: Vec<Deployment>,
    backoff: BTreeMap<PathId, Backoff>,
    last_failure: BTreeMap<PathId, Value>,
    framework_id: Option<String>,
    #[serde(default)]
    framework_removed: Option<FrameworkRemoved>,
    root_version: String,
}

#[derive(Serialize)]
struct AppRef<'a> {
    id: &'a PathId,
    app: Option<&'a App>,
    versions: &'a [App],
}

#[derive(Deserialize)]
struct AppEntry {
    id: PathId,
    app: Option<App>,
    versions: Vec<App>,
}

/// A key part with `%` and `/` escaped, so it names one node or file.
fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

impl State {
    /// The state as store entries (key → JSON).
    pub fn to_entries(&self) -> Result<BTreeMap<String, Vec<u8>>, serde_json::Error> {
        let mut out = BTreeMap::new();
        let meta = MetaRef {
            groups: &self.groups,
            group_dependencies: &self.group_dependencies,
            enforce_role: &self.enforce_role,
            deployments: &self.deployments,
            backoff: &self.backoff,
            last_failure: &self.last_failure,
            framework_id: &self.framework_id,
            framework_removed: &self.framework_removed,
            root_version: &self.root_version,
        };
        out.insert(META.to_string(), serde_json::to_vec(&meta)?);
        let ids: BTreeSet<&PathId> = self.apps.keys().chain(self.versions.keys()).collect();
        for id in ids {
            let entry = AppRef {
                id,
                app: self.apps.get(id),
                versions: self.versions.get(id).map_or(&[], Vec::as_slice),
            };
            out.insert(
                format!("{APP}{}", escape(&id.to_string())),
                serde_json::to_vec(&entry)?,
            );
        }
        for (task, instance) in &self.instances {
            out.insert(
                format!("{INSTANCE}{}", escape(task)),
                serde_json::to_vec(instance)?,
            );
        }
        for (id, reservation) in &self.reservations {
            out.insert(
                format!("{RESERVATION}{}", escape(id)),
                serde_json::to_vec(reservation)?,
            );
        }
        Ok(out)
    }

    /// The state the entries hold.
    pub fn from_entries(entries: &BTreeMap<String, Vec<u8>>) -> Result<State, EntryError> {
        let json = |key: &str| {
            let key = key.to_string();
            move |source| EntryError::Json { key, source }
        };
        let mut state = State::default();
        if let Some(bytes) = entries.get(META) {
            let m: Meta = serde_json::from_slice(bytes).map_err(json(META))?;
            state.groups = m.groups;
            state.group_dependencies = m.group_dependencies;
            state.enforce_role = m.enforce_role;
            state.deployments = m.deployments;
            state.backoff = m.backoff;
            state.last_failure = m.last_failure;
            state.framework_id = m.framework_id;
            state.framework_removed = m.framework_removed;
            state.root_version = m.root_version;
        }
        for (key, bytes) in entries {
            if key.starts_with(APP) {
                let e: AppEntry = serde_json::from_slice(bytes).map_err(json(key))?;
                let id = e.id;
                if let Some(app) = e.app {
                    state.apps.insert(id.clone(), app);
                }
                if !e.versions.is_empty() {
                    state.versions.insert(id, e.versions);
                }
            } else if key.starts_with(INSTANCE) {
                let i: Instance = serde_json::from_slice(bytes).map_err(json(key))?;
                state.instances.insert(i.task_id.clone(), i);
            } else if key.starts_with(RESERVATION) {
                let r: Reservation = serde_json::from_slice(bytes).map_err(json(key))?;
                state.reservations.insert(r.id.clone(), r);
            } else if key != META {
                return Err(EntryError::Unknown(key.clone()));
            }
        }
        Ok(state)
    }
}
