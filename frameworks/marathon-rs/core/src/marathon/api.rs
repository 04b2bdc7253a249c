//! The REST v2 operations, HTTP-agnostic: each returns a [`Reply`] (status,
//! JSON body, deployment id, location). Mutations go through `deploy`,
//! which plans, checks locks, stores the new root and starts the deployment
//! before returning, so a deployment is visible as soon as the call
//! returns.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::views::Embed;
use super::{Call, Marathon, Output};
use crate::app::{self, App, AppError, AppUpdate, VersionInfo};
use crate::deployment::Deployment;
use crate::instance::app_of_task;
use crate::path::PathId;
use crate::time::Millis;

/// An answer to a REST call.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body (`None`: empty body).
    pub body: Option<Value>,
    /// `Marathon-Deployment-Id`.
    pub deployment: Option<String>,
    /// `Location`.
    pub location: Option<String>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(body),
            deployment: None,
            location: None,
        }
    }

    /// An error with `{"message": …}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: Some(json!({"message": message.into()})),
            deployment: None,
            location: None,
        }
    }

    pub(super) fn app_error(e: AppError) -> Reply {
        Reply {
            status: e.status(),
            body: Some(json!({"message": e.to_string(), "details": e.details()})),
            deployment: None,
            location: None,
        }
    }

    pub(super) fn deployment(id: String, version: String) -> Reply {
        Reply {
            status: 200,
            body: Some(json!({"deploymentId": id, "version": version})),
            deployment: Some(id),
            location: None,
        }
    }
}

/// The killed tasks' JSON, and the scale deployment (id, version) if any.
type Killed = (Vec<Value>, Option<(String, String)>);

/// How to kill tasks.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskKill {
    /// Lower `instances` instead of replacing the tasks.
    pub scale: bool,
    /// Forget the instances (no replacement of reservations).
    pub wipe: bool,
    /// Override deployment locks.
    pub force: bool,
}

pub(super) fn parse_path(id: &str) -> Result<PathId, Reply> {
    PathId::parse(id).map_err(|e| {
        Reply::app_error(AppError::Invalid(vec![app::FieldError {
            path: "/id".into(),
            errors: vec![e.to_string()],
        }]))
    })
}

/// A label selector (`key`, `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`; comma = and).
fn label_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .all(|p| {
            let set = |s: &str| -> Vec<String> {
                s.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .collect()
            };
            if let Some((k, v)) = p.split_once("==") {
                labels.get(k.trim()).is_some_and(|x| x == v.trim())
            } else if let Some((k, v)) = p.split_once("!=") {
                labels.get(k.trim()).is_none_or(|x| x != v.trim())
            } else if let Some((k, v)) = p.split_once(" notin ") {
                labels.get(k.trim()).is_none_or(|x| !set(v).contains(x))
            } else if let Some((k, v)) = p.split_once(" in ") {
                labels.get(k.trim()).is_some_and(|x| set(v).contains(x))
            } else {
                labels.contains_key(p)
            }
        })
}

impl Marathon {
    // ---------------------------------------------------------------- reads

    /// `GET /v2/apps`.
    pub fn list_apps(
        &self,
        cmd: Option<&str>,
        id: Option<&str>,
        label: Option<&str>,
        embed: &[String],
    ) -> Reply {
        let embed = Embed::parse(embed);
        let apps: Vec<Value> = self
            .state
            .apps
            .values()
            .filter(|a| {
                cmd.is_none_or(|c| {
                    a.cmd
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(&c.to_lowercase()))
                })
            })
            .filter(|a| id.is_none_or(|i| a.id.to_lowercase().contains(&i.to_lowercase())))
            .filter(|a| label.is_none_or(|l| label_matches(l, &a.labels)))
            .map(|a| self.app_info(a, embed))
            .collect();
        Reply::ok(json!({"apps": apps}))
    }

    /// `GET /v2/apps/{id}` (and `/v2/apps/{group}/*`).
    pub fn get_app(&self, id: &str, embed: &[String]) -> Reply {
        if let Some(group) = id.strip_suffix("/*") {
            let Ok(g) = PathId::parse(group) else {
                return Reply::error(404, format!("Group '{group}' does not exist"));
            };
            let embed = Embed::parse(embed);
            let apps: Vec<Value> = self
                .state
                .apps
                .values()
                .filter(|a| a.path().starts_with(&g))
                .map(|a| self.app_info(a, embed))
                .collect();
            return Reply::ok(json!({"*": apps}));
        }
        match PathId::parse(id).ok().and_then(|p| self.state.apps.get(&p)) {
            Some(app) => Reply::ok(json!({"app": self.app_info(app, Embed::all())})),
            None => Reply::error(404, format!("App '{}' does not exist", canonical(id))),
        }
    }

    /// `GET /v2/apps/{id}/tasks`.
    pub fn app_tasks(&self, id: &str) -> Reply {
        let (prefix, group) = match id.strip_suffix("/*") {
            Some(g) => (g, true),
            None => (id, false),
        };
        let Ok(path) = PathId::parse(prefix) else {
            return Reply::error(404, format!("App '{}' does not exist", canonical(id)));
        };
        if !group && !self.state.apps.contains_key(&path) {
            return Reply::error(404, format!("App '{path}' does not exist"));
        }
        let tasks: Vec<Value> = self
            .state
            .instances
            .values()
            .filter(|i| {
                if group {
                    i.app_id.starts_with(&path)
                } else {
                    i.app_id == path
                }
            })
            .map(|i| {
                let app = self.state.apps.get(&i.app_id);
                let ports = app.map(App::service_ports).unwrap_or_default();
                self.task_json(i, Some(&ports))
            })
            .collect();
        Reply::ok(json!({"tasks": tasks}))
    }

    /// `GET /v2/apps/{id}/versions`.
    pub fn app_versions(&self, id: &str) -> Reply {
        match PathId::parse(id).ok().and_then(|p| {
            self.state
                .versions
                .get(&p)
                .filter(|_| self.state.apps.contains_key(&p))
        }) {
            Some(v) => Reply::ok(
                json!({"versions": v.iter().rev().map(|a| a.version.clone()).collect::<Vec<_>>()}),
            ),
            None => Reply::error(404, format!("App '{}' does not exist", canonical(id))),
        }
    }

    /// `GET /v2/apps/{id}/versions/{version}`.
    pub fn app_version(&self, id: &str, version: &str) -> Reply {
        let Some(versions) = PathId::parse(id)
            .ok()
            .and_then(|p| self.state.versions.get(&p))
        else {
            return Reply::error(404, format!("App '{}' does not exist", canonical(id)));
        };
        let wanted = Millis::parse(version);
        match versions.iter().find(|a| {
            a.version == version || (wanted.is_some() && Millis::parse(&a.version) == wanted)
        }) {
            Some(a) => Reply::ok(serde_json::to_value(a).unwrap_or(Value::Null)),
            None => Reply::error(
                404,
                format!(
                    "App '{}' does not exist in version {version}",
                    canonical(id)
                ),
            ),
        }
    }

    /// `GET /v2/tasks`.
    pub fn list_tasks(&self, statuses: &[String]) -> Reply {
        let tasks: Vec<Value> = self
            .state
            .instances
            .values()
            .filter(|i| {
                statuses.is_empty()
                    || statuses.iter().any(|s| match s.to_lowercase().as_str() {
                        "running" => i.is_running(),
                        "staging" => matches!(
                            i.task_state(),
                            agora_proto::v1::TaskState::TaskStaging
                                | agora_proto::v1::TaskState::TaskStarting
                        ),
                        _ => false,
                    })
            })
            .map(|i| {
                let app = self.state.apps.get(&i.app_id);
                let service = app.map(|a| a.service_ports()).unwrap_or_default();
                self.task_json(i, Some(&service))
            })
            .collect();
        Reply::ok(json!({"tasks": tasks}))
    }

    /// `GET /v2/deployments`.
    pub fn list_deployments(&self) -> Reply {
        Reply::ok(json!(
            self.state
                .deployments
                .iter()
                .map(Deployment::json)
                .collect::<Vec<_>>()
        ))
    }

    /// `GET /v2/queue`.
    pub fn queue(&self, now: Millis, embed: &[String]) -> Reply {
        Reply::ok(self.queue_json(now, embed.iter().any(|e| e.contains("lastUnusedOffers"))))
    }

    /// `GET /v2/info`.
    pub fn info(&self) -> Reply {
        Reply::ok(self.info_json())
    }

    /// `GET /v2/groups[/{id}]`.
    pub fn get_group(&self, id: &str, embed: &[String]) -> Reply {
        let Ok(path) = PathId::parse(id) else {
            return Reply::error(404, format!("Group '{}' does not exist", canonical(id)));
        };
        if !self.group_exists(&path) {
            return Reply::error(404, format!("Group '{path}' does not exist"));
        }
        let e = if embed.is_empty() {
            Embed::default()
        } else {
            Embed::parse(embed)
        };
        Reply::ok(self.group_json(&path, e, &self.state.apps))
    }

    // ------------------------------------------------------------ mutations

    /// Plans and starts the move to `target`. `restart` forces these apps to
    /// restart even if unchanged.
    pub(super) fn deploy(
        &mut self,
        now: Millis,
        target: BTreeMap<PathId, App>,
        restart: BTreeSet<PathId>,
        force: bool,
    ) -> Result<(String, String), Reply> {
        let version = now.iso();
        let id = self.uuid();
        let original = self.state.apps.clone();
        let Some(plan) =
            Deployment::plan(id.clone(), version.clone(), &original, &target, &restart)
        else {
            // Nothing changes: a deployment that is done at once.
            self.adopt_new_groups(&target);
            self.state.apps = target;
            self.roles_stale = true;
            return Ok((id, version));
        };
        let affected: BTreeSet<PathId> = plan.affected().into_iter().collect();
        // What this change may move: its apps and those of deployments it
        // cancels (the others are as they were).
        let mut touched = affected.clone();
        let conflicts: Vec<String> = self
            .state
            .deployments
            .iter()
            .filter(|d| d.affected().iter().any(|p| affected.contains(p)))
            .map(|d| d.id.clone())
            .collect();
        if !conflicts.is_empty() {
            if !force {
                return Err(Reply {
                    status: 409,
                    body: Some(json!({
                        "message": format!(
                            "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.",
                            conflicts[0]
                        ),
                        "deployments": conflicts.iter().map(|d| json!({"id": d})).collect::<Vec<_>>(),
                    })),
                    deployment: None,
                    location: None,
                });
            }
            let cancelled: Vec<Deployment> = self
                .state
                .deployments
                .iter()
                .filter(|d| conflicts.contains(&d.id))
                .cloned()
                .collect();
            self.state
                .deployments
                .retain(|d| !conflicts.contains(&d.id));
            for d in &cancelled {
                touched.extend(d.affected());
            }
            for d in cancelled {
                let plan = self.plan_with_groups(&d);
                self.event(
                    now,
                    "deployment_failed",
                    json!({"id": d.id, "plan": plan, "reason": "cancelled by a forced deployment"}),
                );
            }
        }
        if self.state.deployments.len() >= self.config.max_running_deployments {
            return Err(Reply::error(
                403,
                format!(
                    "Max number of running deployments is exceeded: {}",
                    self.config.max_running_deployments
                ),
            ));
        }
        // Store versions of what changed, then swap the root.
        for p in &affected {
            if let Some(a) = target.get(p) {
                let versions = self.state.versions.entry(p.clone()).or_default();
                if versions.last().is_none_or(|last| last != a) {
                    versions.push(a.clone());
                }
                let excess = versions.len().saturating_sub(self.config.max_versions);
                versions.drain(..excess);
            }
            self.state.backoff.remove(p);
        }
        self.adopt_new_groups(&target);
        self.state.apps = target;
        self.roles_stale = true;
        self.state.root_version = version.clone();
        let plan_json = self.plan_with_groups(&plan);
        let step = plan.current_step_json();
        self.state.deployments.push(plan);
        self.dirty = true;
        self.event(
            now,
            "group_change_success",
            json!({"groupId": "/", "version": version}),
        );
        self.event(
            now,
            "deployment_info",
            json!({"plan": plan_json, "currentStep": step}),
        );
        self.reconcile_paths(now, touched);
        Ok((id, version))
    }

    pub(super) fn with_version_info(new: &mut App, base: Option<&App>) {
        let v = new.version.clone();
        new.version_info = Some(match base {
            Some(b) if !b.needs_restart(new) => VersionInfo {
                last_scaling_at: if b.instances != new.instances {
                    v.clone()
                } else {
                    b.version_info
                        .as_ref()
                        .map(|i| i.last_scaling_at.clone())
                        .unwrap_or(v.clone())
                },
                last_config_change_at: b.config_version(),
            },
            _ => VersionInfo {
                last_scaling_at: v.clone(),
                last_config_change_at: v,
            },
        });
    }

    /// Builds a new app from an update, with ports and version info.
    pub(super) fn build_app(
        &self,
        now: Millis,
        path: &PathId,
        base: Option<&App>,
        update: &AppUpdate,
        enforce: Option<bool>,
    ) -> Result<App, Reply> {
        let mut app = if update.is_rollback() {
            let wanted = update.version.clone().unwrap_or_default();
            let stored = self.state.versions.get(path).and_then(|v| {
                v.iter().find(|a| {
                    a.version == wanted
                        || Millis::parse(&a.version)
                            .is_some_and(|m| Some(m) == Millis::parse(&wanted))
                })
            });
            let Some(stored) = stored else {
                return Err(Reply::error(
                    404,
                    format!("App '{path}' does not exist in version {wanted}"),
                ));
            };
            let mut a = stored.clone();
            a.version = now.iso();
            a
        } else {
            app::build(path, base, update, now).map_err(Reply::app_error)?
        };
        // Marathon 1.9: --mesos-role or its top-level group's role.
        self.settle_role(path, &mut app, enforce)?;
        if app.is_resident() && app.role.as_deref() == Some("*") {
            return Err(Reply::app_error(AppError::Invalid(vec![app::FieldError {
                path: "/container/volumes".into(),
                errors: vec![
                    "persistent volumes need resources reserved for a role: start marathon-rs with --mesos-role other than '*'"
                        .into(),
                ],
            }])));
        }
        self.assign_service_ports(&mut app, base)
            .map_err(|e| Reply::error(422, e))?;
        Self::with_version_info(&mut app, base);
        if self.group_exists(path) && !self.state.apps.contains_key(path) {
            return Err(Reply::error(
                409,
                format!("A group with id [{path}] already exists."),
            ));
        }
        Ok(app)
    }

    /// `POST /v2/apps`.
    pub fn create_app(&mut self, now: Millis, body: &[u8], force: bool) -> Reply {
        let update: AppUpdate = match app::parse_json(body) {
            Ok(u) => u,
            Err(e) => return Reply::app_error(e),
        };
        let Some(id) = update.id.clone().filter(|i| !i.trim().is_empty()) else {
            return Reply::app_error(AppError::Invalid(vec![app::FieldError {
                path: "/id".into(),
                errors: vec!["error.path.missing".into()],
            }]));
        };
        let path = match parse_path(&id) {
            Ok(p) if !p.is_root() => p,
            Ok(_) => return Reply::error(422, "An app cannot be the root group"),
            Err(r) => return r,
        };
        if self.state.apps.contains_key(&path) {
            return Reply::error(409, format!("An app with id [{path}] already exists."));
        }
        let app = match self.build_app(now, &path, None, &update, None) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let mut target = self.state.apps.clone();
        target.insert(path.clone(), app.clone());
        self.event(
            now,
            "api_post_event",
            json!({"clientIp": "", "uri": "/v2/apps", "appDefinition": app}),
        );
        match self.deploy(now, target, BTreeSet::new(), force) {
            Ok((dep, _)) => {
                let mut info = self.app_info(&app, Embed::default());
                info["deployments"] = json!([{"id": dep.clone()}]);
                Reply {
                    status: 201,
                    body: Some(info),
                    deployment: Some(dep),
                    location: Some(path.to_string()),
                }
            }
            Err(r) => r,
        }
    }

    /// `PUT /v2/apps/{id}` (and PATCH with `create = false`).
    pub fn put_app(
        &mut self,
        now: Millis,
        id: &str,
        body: &[u8],
        force: bool,
        partial: bool,
        create: bool,
    ) -> Reply {
        let update: AppUpdate = match app::parse_json(body) {
            Ok(u) => u,
            Err(e) => return Reply::app_error(e),
        };
        let path = match parse_path(id) {
            Ok(p) if !p.is_root() => p,
            Ok(_) => return Reply::error(422, "An app cannot be the root group"),
            Err(r) => return r,
        };
        let existing = self.state.apps.get(&path).cloned();
        if existing.is_none() && !create {
            return Reply::error(404, format!("App '{path}' does not exist"));
        }
        let base = if partial || update.is_rollback() {
            existing.as_ref()
        } else {
            None
        };
        let mut app = match self.build_app(now, &path, base, &update, None) {
            Ok(a) => a,
            Err(r) => return r,
        };
        if let Some(e) = &existing {
            Self::with_version_info(&mut app, Some(e));
        }
        let mut target = self.state.apps.clone();
        target.insert(path.clone(), app.clone());
        self.event(
            now,
            "api_post_event",
            json!({"clientIp": "", "uri": format!("/v2/apps{path}"), "appDefinition": app}),
        );
        match self.deploy(now, target, BTreeSet::new(), force) {
            Ok((dep, version)) => {
                let mut r = Reply::deployment(dep, version);
                if existing.is_none() {
                    r.status = 201;
                    r.location = Some(path.to_string());
                }
                r
            }
            Err(r) => r,
        }
    }

    /// `PUT /v2/apps` (bulk): one deployment for all.
    pub fn put_apps(&mut self, now: Millis, body: &[u8], force: bool, partial: bool) -> Reply {
        let updates: Vec<AppUpdate> = match app::parse_json(body) {
            Ok(u) => u,
            Err(e) => return Reply::app_error(e),
        };
        let mut target = self.state.apps.clone();
        for (i, u) in updates.iter().enumerate() {
            let Some(id) = u.id.clone() else {
                return Reply::app_error(AppError::Invalid(vec![app::FieldError {
                    path: format!("({i})/id"),
                    errors: vec!["error.path.missing".into()],
                }]));
            };
            let path = match parse_path(&id) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let existing = self.state.apps.get(&path).cloned();
            let base = if partial { existing.as_ref() } else { None };
            let mut app = match self.build_app(now, &path, base, u, None) {
                Ok(a) => a,
                Err(r) => return r,
            };
            if let Some(e) = &existing {
                Self::with_version_info(&mut app, Some(e));
            }
            target.insert(path, app);
        }
        match self.deploy(now, target, BTreeSet::new(), force) {
            Ok((dep, version)) => Reply::deployment(dep, version),
            Err(r) => r,
        }
    }

    /// `DELETE /v2/apps/{id}`.
    pub fn delete_app(&mut self, now: Millis, id: &str, force: bool) -> Reply {
        let Some(path) = PathId::parse(id)
            .ok()
            .filter(|p| self.state.apps.contains_key(p))
        else {
            return Reply::error(404, format!("App '{}' does not exist", canonical(id)));
        };
        let mut target = self.state.apps.clone();
        target.remove(&path);
        let r = match self.deploy(now, target, BTreeSet::new(), force) {
            Ok((dep, version)) => Reply::deployment(dep, version),
            Err(r) => return r,
        };
        self.event(
            now,
            "app_terminated_event",
            json!({"appId": path.to_string()}),
        );
        r
    }

    /// `POST /v2/apps/{id}/restart`.
    pub fn restart_app(&mut self, now: Millis, id: &str, force: bool) -> Reply {
        let Some(path) = PathId::parse(id)
            .ok()
            .filter(|p| self.state.apps.contains_key(p))
        else {
            return Reply::error(404, format!("App '{}' does not exist", canonical(id)));
        };
        let mut app = self.state.apps[&path].clone();
        app.version = now.iso();
        app.version_info = Some(VersionInfo {
            last_scaling_at: app.version.clone(),
            last_config_change_at: app.version.clone(),
        });
        let mut target = self.state.apps.clone();
        target.insert(path.clone(), app);
        match self.deploy(now, target, [path].into(), force) {
            Ok((dep, version)) => Reply::deployment(dep, version),
            Err(r) => r,
        }
    }

    /// Kills instances; with `scale`, lowers their apps' instance counts in
    /// one deployment.
    fn kill(&mut self, now: Millis, ids: &[String], how: TaskKill) -> Result<Killed, Reply> {
        let mut killed = Vec::new();
        let mut per_app: BTreeMap<PathId, u32> = BTreeMap::new();
        for id in ids {
            let Some(inst) = self.state.instances.get_mut(id) else {
                continue;
            };
            if !inst.killing {
                inst.killing = true;
                self.out.push(Output::Call(Call::Kill {
                    task: agora_proto::v1::TaskId { value: id.clone() },
                    agent: Some(agora_proto::v1::AgentId {
                        value: inst.agent_id.clone(),
                    }),
                }));
            }
            *per_app.entry(inst.app_id.clone()).or_default() += 1;
            // `wipe`: the instance's reservation goes too (its volumes are
            // destroyed when next offered); the app gets a new one.
            let wiped = if how.wipe {
                inst.reservation.take()
            } else {
                None
            };
            let inst = inst.clone();
            if let Some(r) = wiped {
                self.state.reservations.remove(&r);
                self.orphaned.insert(r);
            }
            killed.push(self.task_json(&inst, None));
        }
        self.dirty = true;
        let deployment = if how.scale && !per_app.is_empty() {
            let mut target = self.state.apps.clone();
            for (p, n) in &per_app {
                if let Some(a) = target.get_mut(p) {
                    let base = a.clone();
                    a.instances = a.instances.saturating_sub(*n);
                    a.version = now.iso();
                    Self::with_version_info(a, Some(&base));
                }
            }
            Some(self.deploy(now, target, BTreeSet::new(), how.force)?)
        } else {
            self.reconcile(now);
            None
        };
        Ok((killed, deployment))
    }

    /// `POST /v2/tasks/delete`.
    pub fn delete_tasks(&mut self, now: Millis, body: &[u8], how: TaskKill) -> Reply {
        #[derive(Deserialize)]
        struct Ids {
            ids: Vec<String>,
        }
        if how.scale && how.wipe {
            return Reply::error(400, "You cannot use scale and wipe at the same time.");
        }
        let ids: Ids = match app::parse_json(body) {
            Ok(i) => i,
            Err(e) => return Reply::app_error(e),
        };
        for id in &ids.ids {
            if app_of_task(id).is_none() {
                return Reply::error(400, format!("Invalid task id '{id}'"));
            }
        }
        match self.kill(now, &ids.ids, how) {
            Ok((_, Some((dep, version)))) => Reply::deployment(dep, version),
            Ok((tasks, None)) => Reply::ok(json!({"tasks": tasks})),
            Err(r) => r,
        }
    }

    /// `DELETE /v2/apps/{id}/tasks[?host=]`.
    pub fn delete_app_tasks(
        &mut self,
        now: Millis,
        id: &str,
        host: Option<&str>,
        how: TaskKill,
    ) -> Reply {
        if how.scale && how.wipe {
            return Reply::error(400, "You cannot use scale and wipe at the same time.");
        }
        let Some(path) = PathId::parse(id)
            .ok()
            .filter(|p| self.state.apps.contains_key(p))
        else {
            return Reply::error(404, format!("App '{}' does not exist", canonical(id)));
        };
        let ids: Vec<String> = self
            .state
            .instances
            .values()
            .filter(|i| {
                i.app_id == path && host.is_none_or(|h| h == "*" || i.placement.hostname == h)
            })
            .map(|i| i.task_id.clone())
            .collect();
        match self.kill(now, &ids, how) {
            Ok((_, Some((dep, version)))) => Reply::deployment(dep, version),
            Ok((tasks, None)) => Reply::ok(json!({"tasks": tasks})),
            Err(r) => r,
        }
    }

    /// `DELETE /v2/apps/{id}/tasks/{taskId}`.
    pub fn delete_app_task(&mut self, now: Millis, id: &str, task: &str, how: TaskKill) -> Reply {
        if how.scale && how.wipe {
            return Reply::error(400, "You cannot use scale and wipe at the same time.");
        }
        let path = PathId::parse(id).ok();
        if self
            .state
            .instances
            .get(task)
            .is_none_or(|i| Some(&i.app_id) != path.as_ref())
        {
            return Reply::error(404, format!("Task '{task}' does not exist"));
        }
        match self.kill(now, &[task.to_string()], how) {
            Ok((_, Some((dep, version)))) => Reply::deployment(dep, version),
            Ok((mut tasks, None)) => Reply::ok(json!({"task": tasks.pop()})),
            Err(r) => r,
        }
    }

    /// `DELETE /v2/deployments/{id}`: rollback (a forced deployment back to
    /// the original definitions), or with `force` just stop it (202).
    pub fn delete_deployment(&mut self, now: Millis, id: &str, force: bool) -> Reply {
        let Some(pos) = self.state.deployments.iter().position(|d| d.id == id) else {
            return Reply::error(404, format!("DeploymentPlan {id} does not exist"));
        };
        if force {
            let d = self.state.deployments.remove(pos);
            self.roles_stale = true;
            self.dirty = true;
            let plan = self.plan_with_groups(&d);
            self.event(
                now,
                "deployment_failed",
                json!({"id": d.id, "plan": plan, "reason": "stopped"}),
            );
            self.reconcile(now);
            return Reply {
                status: 202,
                body: None,
                deployment: None,
                location: None,
            };
        }
        let d = self.state.deployments[pos].clone();
        let mut target = self.state.apps.clone();
        for (p, a) in &d.original {
            match a {
                Some(a) => {
                    let mut a = a.clone();
                    let current = target.get(p).cloned();
                    a.version = now.iso();
                    Self::with_version_info(&mut a, current.as_ref());
                    target.insert(p.clone(), a)
                }
                None => target.remove(p),
            };
        }
        match self.deploy(now, target, BTreeSet::new(), true) {
            Ok((dep, version)) => Reply::deployment(dep, version),
            Err(r) => r,
        }
    }

    /// `DELETE /v2/queue/{appId}/delay`.
    pub fn reset_delay(&mut self, now: Millis, id: &str) -> Reply {
        let Some(path) = PathId::parse(id)
            .ok()
            .filter(|p| self.needs.contains_key(p))
        else {
            return Reply::error(
                404,
                format!("Application {} not found in tasks queue.", canonical(id)),
            );
        };
        self.state.backoff.remove(&path);
        self.dirty = true;
        self.reconcile(now);
        Reply {
            status: 204,
            body: None,
            deployment: None,
            location: None,
        }
    }
}

pub(super) fn canonical(id: &str) -> String {
    PathId::parse(id)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| format!("/{}", id.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [
            ("tier".to_string(), "front".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]
        .into();
        assert!(label_matches("tier", &labels));
        assert!(label_matches("tier==front,env!=dev", &labels));
        assert!(label_matches("env in (prod, stage)", &labels));
        assert!(!label_matches("env notin (prod)", &labels));
        assert!(!label_matches("missing", &labels));
    }
}
