//! Which roles an app may run in (Marathon 1.9 multi-role): `--mesos_role`
//! or the role named after its top-level group (`/dev/api` → `dev`). A
//! top-level group that enforces its role (`enforceRole`) makes the group
//! role the default and the only one for new roles; an app keeps the role it
//! already has either way, so turning enforcement on breaks nothing running.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Marathon;
use super::api::{Reply, parse_path};
use crate::app::{self, App, AppError, FieldError};
use crate::path::PathId;

/// The top-level group an app is in (`None` for the root group's apps).
pub(super) fn top_group(app: &PathId) -> Option<PathId> {
    if app.parent().is_root() {
        return None;
    }
    app.segments().first().map(|s| PathId::root().child(s))
}

/// `PATCH /v2/groups/{id}`: Marathon's GroupPartialUpdate.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupPatch {
    enforce_role: Option<bool>,
}

impl Marathon {
    /// Whether a top-level group enforces its role: as set, and for a group
    /// that does not exist yet as `--new_group_enforce_role` says.
    pub(super) fn enforces_role(&self, top: &PathId) -> bool {
        self.state.enforce_role.contains(top)
            || (self.config.new_group_enforce_role && !self.group_exists(top))
    }

    /// Gives `app` (at `path`) its default role when it has none, and
    /// refuses a role it may not take. `enforce` overrides its top-level
    /// group's setting (a group request that sets it).
    pub(super) fn settle_role(
        &self,
        path: &PathId,
        app: &mut App,
        enforce: Option<bool>,
    ) -> Result<(), Reply> {
        let mesos_role = self.config.role.clone();
        let (default, mut valid) = match top_group(path) {
            None => (mesos_role.clone(), BTreeSet::from([mesos_role])),
            Some(top) => {
                let group_role = top.name().to_string();
                if enforce.unwrap_or_else(|| self.enforces_role(&top)) {
                    (group_role.clone(), BTreeSet::from([group_role]))
                } else {
                    (mesos_role.clone(), BTreeSet::from([mesos_role, group_role]))
                }
            }
        };
        let existing = self.state.apps.get(path).and_then(|a| a.role.clone());
        valid.extend(existing.clone());
        let role = app.role.get_or_insert(default).clone();
        if !valid.contains(&role) {
            let expected: Vec<&str> = valid.iter().map(String::as_str).collect();
            return Err(invalid(
                "/role",
                format!("got {role}, expected one of: [{}]", expected.join(", ")),
            ));
        }
        // Which resources it takes: unreserved (`*`), reserved to its role,
        // or (empty) both; a resident app reserves unreserved ones.
        let accepted = &app.accepted_resource_roles;
        if accepted.iter().any(|r| r != "*" && *r != role) {
            return Err(invalid(
                "/acceptedResourceRoles",
                format!("acceptedResourceRoles can only contain * and {role}"),
            ));
        }
        if app.is_resident() && !accepted.is_empty() && accepted.iter().any(|r| r != "*") {
            return Err(invalid(
                "/acceptedResourceRoles",
                "A resident app must have `acceptedResourceRoles = [\"*\"]`.",
            ));
        }
        // Reservations are made for a role and cannot move to another one.
        if let Some(old) = existing.filter(|old| *old != role)
            && self.state.reservations.values().any(|r| &r.app_id == path)
        {
            return Err(invalid(
                "/role",
                format!(
                    "It is not possible to change the role for existing reservations: {path} holds \
                     reservations for role {old}. Scale it to 0 and remove them (wipe=true) first"
                ),
            ));
        }
        Ok(())
    }

    /// `PATCH /v2/groups/{id}`: sets a top-level group's `enforceRole`
    /// (absent: `--new_group_enforce_role`). No deployment: apps keep their
    /// roles, new apps and role changes follow the setting.
    pub fn patch_group(&mut self, id: &str, body: &[u8]) -> Reply {
        let patch: GroupPatch = match app::parse_json(body) {
            Ok(p) => p,
            Err(e) => return Reply::app_error(e),
        };
        let path = match parse_path(id) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if path.segments().len() != 1 {
            return invalid("/", "Path needs to be top-level");
        }
        if !self.group_exists(&path) {
            return Reply::error(404, format!("Group '{path}' does not exist"));
        }
        let enforce = patch
            .enforce_role
            .unwrap_or(self.config.new_group_enforce_role);
        self.set_enforce_role(&path, enforce);
        Reply {
            status: 200,
            body: None,
            deployment: None,
            location: None,
        }
    }

    /// Records a top-level group's setting (the group becomes explicit, so
    /// it stays when its last app goes, as Marathon keeps groups).
    pub(super) fn set_enforce_role(&mut self, top: &PathId, enforce: bool) {
        self.state.groups.insert(top.clone());
        if enforce {
            self.state.enforce_role.insert(top.clone());
        } else {
            self.state.enforce_role.remove(top);
        }
        self.dirty = true;
    }

    /// Top-level groups that `target` creates take `--new_group_enforce_role`
    /// (recorded, so a later change of the flag leaves them as they are).
    pub(super) fn adopt_new_groups(&mut self, target: &std::collections::BTreeMap<PathId, App>) {
        if !self.config.new_group_enforce_role {
            return;
        }
        let new: BTreeSet<PathId> = target
            .keys()
            .filter_map(top_group)
            .filter(|top| !self.group_exists(top))
            .collect();
        for top in new {
            self.set_enforce_role(&top, true);
        }
    }
}

/// A 422 about one field, as Marathon's validation answers.
pub(super) fn invalid(path: &str, message: impl Into<String>) -> Reply {
    Reply::app_error(AppError::Invalid(vec![FieldError {
        path: path.into(),
        errors: vec![message.into()],
    }]))
}
