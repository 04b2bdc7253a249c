//! The groups of the REST v2 API: POST, GET, PUT and DELETE `/v2/groups`,
//! each turned into one deployment of the apps it touches.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::Marathon;
use super::api::{Reply, canonical, parse_path};
use super::roles::invalid;
use crate::app::{self, App, AppError, AppUpdate};
use crate::path::PathId;
use crate::time::Millis;

/// A group found in a request: its id, dependencies and, for a top-level
/// group, whether it enforces its role.
type Collected = (PathId, Vec<String>, Option<bool>);

/// A group definition in POST/PUT /v2/groups.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupUpdate {
    id: Option<String>,
    apps: Option<Vec<Value>>,
    groups: Option<Vec<GroupUpdate>>,
    dependencies: Option<Vec<String>>,
    scale_by: Option<f64>,
    version: Option<String>,
    /// Top-level groups only (Marathon 1.9).
    enforce_role: Option<bool>,
}

impl Marathon {
    /// Collects the apps and groups of `g`. `enforce` is the setting of the
    /// top-level group `g` is in, when the request decides it.
    fn collect_group(
        &self,
        now: Millis,
        base: &PathId,
        g: &GroupUpdate,
        enforce: Option<bool>,
        apps: &mut BTreeMap<PathId, App>,
        groups: &mut Vec<Collected>,
    ) -> Result<(), Reply> {
        let gid = match &g.id {
            Some(id) => PathId::parse_relative(id, &base.parent())
                .map_err(|e| Reply::error(422, e.to_string()))?,
            None => base.clone(),
        };
        let top_level = gid.segments().len() == 1;
        if g.enforce_role == Some(true) && !top_level {
            return Err(invalid(
                "/enforceRole",
                format!("only top-level groups can enforce their role; {gid} is not one"),
            ));
        }
        // A top-level group keeps its setting unless the request sets it;
        // a new one takes --new_group_enforce_role.
        let enforce = if top_level {
            Some(g.enforce_role.unwrap_or_else(|| self.enforces_role(&gid)))
        } else {
            enforce
        };
        groups.push((
            gid.clone(),
            g.dependencies.clone().unwrap_or_default(),
            enforce.filter(|_| top_level),
        ));
        for (i, raw) in g.apps.iter().flatten().enumerate() {
            let mut update: AppUpdate =
                app::parse_json(raw.to_string().as_bytes()).map_err(Reply::app_error)?;
            let Some(id) = update.id.take() else {
                return Err(Reply::app_error(AppError::Invalid(vec![app::FieldError {
                    path: format!("/apps({i})/id"),
                    errors: vec!["error.path.missing".into()],
                }])));
            };
            let path =
                PathId::parse_relative(&id, &gid).map_err(|e| Reply::error(422, e.to_string()))?;
            if update.dependencies.is_none() {
                update.dependencies = g.dependencies.clone();
            }
            let existing = self.state.apps.get(&path).cloned();
            let mut app = self.build_app(now, &path, existing.as_ref(), &update, enforce)?;
            if let Some(e) = &existing {
                Self::with_version_info(&mut app, Some(e));
            }
            apps.insert(path, app);
        }
        for sub in g.groups.iter().flatten() {
            let sub_base = match &sub.id {
                Some(id) => PathId::parse_relative(id, &gid)
                    .map_err(|e| Reply::error(422, e.to_string()))?,
                None => gid.clone(),
            };
            let mut sub = sub.clone();
            sub.id = Some(sub_base.to_string());
            self.collect_group(now, &sub_base, &sub, enforce, apps, groups)?;
        }
        Ok(())
    }

    /// `POST /v2/groups[/{id}]`.
    pub fn create_group(
        &mut self,
        now: Millis,
        id: Option<&str>,
        body: &[u8],
        force: bool,
    ) -> Reply {
        let g: GroupUpdate = match app::parse_json(body) {
            Ok(g) => g,
            Err(e) => return Reply::app_error(e),
        };
        let Some(gid) = id.map(str::to_string).or_else(|| g.id.clone()) else {
            return Reply::error(422, "A group needs an id");
        };
        let path = match parse_path(&gid) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if self.group_exists(&path) || self.state.apps.contains_key(&path) {
            return Reply::error(
                409,
                format!("An app or group with id [{path}] already exists."),
            );
        }
        let mut g = g;
        g.id = Some(path.to_string());
        let mut r = self.apply_group(now, &path, &g, force, false);
        if r.status == 200 {
            r.status = 201;
            r.location = Some(path.to_string());
        }
        r
    }

    fn apply_group(
        &mut self,
        now: Millis,
        path: &PathId,
        g: &GroupUpdate,
        force: bool,
        replace: bool,
    ) -> Reply {
        let mut apps = BTreeMap::new();
        let mut groups = Vec::new();
        if let Err(r) = self.collect_group(now, path, g, None, &mut apps, &mut groups) {
            return r;
        }
        let mut target = self.state.apps.clone();
        if replace && g.apps.is_some() {
            target.retain(|p, _| !p.starts_with(path) || apps.contains_key(p));
        }
        target.extend(apps);
        let (dep, version) = match self.deploy(now, target, BTreeSet::new(), force) {
            Ok(d) => d,
            Err(r) => return r,
        };
        // The groups change with the apps, not when the change is refused.
        for (gp, deps, enforce) in groups {
            if let Some(enforce) = enforce {
                self.set_enforce_role(&gp, enforce);
            }
            self.state.groups.insert(gp.clone());
            if !deps.is_empty() {
                self.state.group_dependencies.insert(gp, deps);
            }
        }
        self.dirty = true;
        Reply::deployment(dep, version)
    }

    /// `PUT /v2/groups[/{id}]`: a definition, `{"scaleBy": f}`.
    pub fn update_group(&mut self, now: Millis, id: &str, body: &[u8], force: bool) -> Reply {
        let mut g: GroupUpdate = match app::parse_json(body) {
            Ok(g) => g,
            Err(e) => return Reply::app_error(e),
        };
        let path = match parse_path(id) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if g.version.is_some() {
            return Reply::error(
                422,
                "Rolling a group back to a version is not supported; roll back its apps instead",
            );
        }
        if let Some(f) = g.scale_by {
            if !(f >= 0.0 && f.is_finite()) {
                return Reply::error(422, "scaleBy must be a non-negative number");
            }
            let mut target = self.state.apps.clone();
            for (p, a) in target.iter_mut() {
                if p.starts_with(&path) {
                    let base = a.clone();
                    a.instances = (f64::from(a.instances) * f).ceil() as u32;
                    a.version = now.iso();
                    Self::with_version_info(a, Some(&base));
                }
            }
            return match self.deploy(now, target, BTreeSet::new(), force) {
                Ok((dep, version)) => Reply::deployment(dep, version),
                Err(r) => r,
            };
        }
        g.id = Some(path.to_string());
        self.apply_group(now, &path, &g, force, true)
    }

    /// `DELETE /v2/groups[/{id}]`.
    pub fn delete_group(&mut self, now: Millis, id: &str, force: bool) -> Reply {
        let Some(path) = PathId::parse(id).ok().filter(|p| self.group_exists(p)) else {
            return Reply::error(404, format!("Group '{}' does not exist", canonical(id)));
        };
        let mut target = self.state.apps.clone();
        target.retain(|p, _| !p.starts_with(&path));
        self.state
            .groups
            .retain(|g| !g.starts_with(&path) || g.is_root());
        self.state
            .group_dependencies
            .retain(|g, _| !g.starts_with(&path));
        self.state.enforce_role.retain(|g| !g.starts_with(&path));
        self.dirty = true;
        match self.deploy(now, target, BTreeSet::new(), force) {
            Ok((dep, version)) => Reply::deployment(dep, version),
            Err(r) => r,
        }
    }
}
