//! JSON views: AppInfo with its embeds, groups, tasks, the queue, info.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Marathon;
use crate::app::App;
use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::path::PathId;
use crate::time::Millis;

/// Which AppInfo extras to include.
#[derive(Clone, Copy, Debug, Default)]
pub struct Embed {
    /// `tasks` (and deployments).
    pub tasks: bool,
    /// `lastTaskFailure`.
    pub last_task_failure: bool,
    /// `taskStats`.
    pub task_stats: bool,
    /// `readiness` → `readinessCheckResults`.
    pub readiness: bool,
}

impl Embed {
    /// Parses `embed` values (`app.tasks`, `apps.counts`, `group.apps.tasks`, …).
    pub fn parse(values: &[String]) -> Embed {
        let mut e = Embed::default();
        for v in values {
            let last = v.rsplit('.').next().unwrap_or(v);
            match last {
                "tasks" => e.tasks = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                }
                "taskStats" => e.task_stats = true,
                "readiness" => e.readiness = true,
                _ => {}
            }
        }
        e
    }

    /// Everything (GET /v2/apps/{id}).
    pub fn all() -> Embed {
        Embed {
            tasks: true,
            last_task_failure: true,
            task_stats: false,
            readiness: false,
        }
    }
}

impl Marathon {
    /// A task's JSON: the instance's, with its app's `role` (Marathon
    /// 1.9) and, for a resident app, its `localVolumes`.
    pub(crate) fn task_json(&self, i: &Instance, service_ports: Option<&[u32]>) -> Value {
        let app = self.state.apps.get(&i.app_id);
        let checked = app.is_some_and(|a| !a.health_checks.is_empty());
        let mut v = i.json(service_ports, checked);
        if let Some(role) = app.and_then(|a| a.role.as_deref()) {
            v["role"] = json!(role);
        }
        if let Some(r) = i
            .reservation
            .as_ref()
            .and_then(|id| self.state.reservations.get(id))
        {
            v["localVolumes"] = json!(
                r.volumes
                    .iter()
                    .map(|(id, path)| json!({"containerPath": path, "persistenceId": id}))
                    .collect::<Vec<_>>()
            );
        }
        v
    }

    /// AppInfo: the app with counts and deployments, plus embeds.
    pub fn app_info(&self, app: &App, embed: Embed) -> Value {
        let path = app.path();
        let mut v = serde_json::to_value(app).unwrap_or(Value::Null);
        let checked = !app.health_checks.is_empty();
        let instances: Vec<_> = self.instances_of(&path).collect();
        let staged = instances
            .iter()
            .filter(|i| {
                matches!(
                    i.task_state(),
                    agora_proto::v1::TaskState::TaskStaging
                        | agora_proto::v1::TaskState::TaskStarting
                )
            })
            .count();
        let running = instances.iter().filter(|i| i.is_running()).count();
        let healthy = if checked {
            instances.iter().filter(|i| i.is_healthy(true)).count()
        } else {
            0
        };
        let unhealthy = if checked {
            instances
                .iter()
                .filter(|i| i.health.as_ref().is_some_and(|h| !h.alive))
                .count()
        } else {
            0
        };
        v["tasksStaged"] = json!(staged);
        v["tasksRunning"] = json!(running);
        v["tasksHealthy"] = json!(healthy);
        v["tasksUnhealthy"] = json!(unhealthy);
        v["deployments"] = json!(
            self.deployments_of(&path)
                .iter()
                .map(|id| json!({"id": id}))
                .collect::<Vec<_>>()
        );
        if embed.tasks {
            v["tasks"] = json!(
                instances
                    .iter()
                    .map(|i| self.task_json(i, None))
                    .collect::<Vec<_>>()
            );
        }
        if embed.last_task_failure
            && let Some(f) = self.state.last_failure.get(&path)
        {
            v["lastTaskFailure"] = f.clone();
        }
        if embed.readiness {
            v["readinessCheckResults"] = json!([]);
        }
        if embed.task_stats {
            let counts = json!({"stats": {"counts": {"staged": staged, "running": running, "healthy": healthy, "unhealthy": unhealthy},
                "lifeTime": {"averageSeconds": 0.0, "medianSeconds": 0.0}}});
            v["taskStats"] = json!({"totalSummary": counts});
        }
        v
    }

    pub(crate) fn deployments_of(&self, app: &PathId) -> Vec<String> {
        self.state
            .deployments
            .iter()
            .filter(|d| d.target.contains_key(app))
            .map(|d| d.id.clone())
            .collect()
    }

    /// Whether `path` is a group (one of [`Self::group_paths`]) without
    /// building them all: the root, an explicit group or an ancestor of
    /// one, or an ancestor of an app. Children sort right after
    /// `path.child("")` (the empty segment sorts first).
    pub(crate) fn group_exists(&self, path: &PathId) -> bool {
        let below = path.child("");
        path.is_root()
            || self.state.groups.contains(path)
            || self
                .state
                .groups
                .range(&below..)
                .next()
                .is_some_and(|g| g.starts_with(path))
            || self
                .state
                .apps
                .range(&below..)
                .next()
                .is_some_and(|(a, _)| a.starts_with(path))
    }

    /// All group paths: explicit ones and every ancestor of an app.
    pub(crate) fn group_paths(&self) -> BTreeSet<PathId> {
        let mut groups: BTreeSet<PathId> = self.state.groups.clone();
        groups.insert(PathId::root());
        for p in self.state.apps.keys() {
            let mut g = p.parent();
            loop {
                groups.insert(g.clone());
                if g.is_root() {
                    break;
                }
                g = g.parent();
            }
        }
        let explicit: Vec<PathId> = self.state.groups.iter().cloned().collect();
        for mut g in explicit {
            while !g.is_root() {
                g = g.parent();
                groups.insert(g.clone());
            }
        }
        groups
    }

    /// Group JSON for `id` (apps with `embed`, nested groups).
    pub fn group_json(
        &self,
        id: &PathId,
        embed: Embed,
        apps: &std::collections::BTreeMap<PathId, App>,
    ) -> Value {
        let groups = self.group_paths();
        let children: Vec<&PathId> = groups
            .iter()
            .filter(|g| !g.is_root() && &g.parent() == id && *g != id)
            .collect();
        let mut group = json!({
            "id": id.to_string(),
            "apps": apps.iter().filter(|(p, _)| &p.parent() == id).map(|(_, a)| self.app_info(a, embed)).collect::<Vec<_>>(),
            "groups": children.iter().map(|g| self.group_json(g, embed, apps)).collect::<Vec<_>>(),
            "pods": [],
            "dependencies": self.state.group_dependencies.get(id).cloned().unwrap_or_default(),
            "version": if self.state.root_version.is_empty() { Millis(0).iso() } else { self.state.root_version.clone() },
        });
        // Marathon 1.9's key, only where it is on: the `marathon` 0.13.0
        // client refuses groups that carry it.
        if self.state.enforce_role.contains(id) {
            group["enforceRole"] = json!(true);
        }
        group
    }

    /// A deployment plan as events carry it: with `original` and `target`
    /// root groups (Marathon ≤1.6; marathon-python needs them).
    pub(crate) fn plan_with_groups(&self, d: &Deployment) -> Value {
        if !self.events_on {
            return Value::Null;
        }
        let mut plan = d.plan_json();
        let mut original = self.state.apps.clone();
        let mut target = self.state.apps.clone();
        for (p, a) in &d.original {
            match a {
                Some(a) => original.insert(p.clone(), a.clone()),
                None => original.remove(p),
            };
        }
        for (p, a) in &d.target {
            match a {
                Some(a) => target.insert(p.clone(), a.clone()),
                None => target.remove(p),
            };
        }
        let plain = |apps: &std::collections::BTreeMap<PathId, App>| {
            json!({
                "id": "/",
                "apps": apps.values().map(|a| serde_json::to_value(a).unwrap_or(Value::Null)).collect::<Vec<_>>(),
                "groups": [],
                "pods": [],
                "dependencies": [],
                "version": d.version,
            })
        };
        plan["original"] = plain(&original);
        plan["target"] = plain(&target);
        plan
    }

    /// `GET /v2/queue`.
    pub fn queue_json(&self, now: Millis, with_offers: bool) -> Value {
        let mut items = Vec::new();
        for (path, count) in self.needs.iter().filter(|(_, n)| **n > 0) {
            let Some(app) = self.effective(path) else {
                continue;
            };
            let stats = self.queue.get(path).cloned().unwrap_or_default();
            let backoff = self.state.backoff.get(path).copied().unwrap_or_default();
            let left = backoff.left(now.0);
            let reasons: Vec<Value> = stats
                .reasons
                .iter()
                .map(|(reason, n)| json!({"reason": reason, "declined": n, "processed": stats.processed}))
                .collect();
            let mut item = json!({
                "app": serde_json::to_value(&app).unwrap_or(Value::Null),
                "count": count,
                "delay": {"timeLeftSeconds": left, "overdue": left <= 0.0},
                "since": stats.since.unwrap_or(now).iso(),
                "processedOffersSummary": {
                    "processedOffersCount": stats.processed,
                    "unusedOffersCount": stats.unused,
                    "lastUnusedOfferAt": stats.last_unused.map(Millis::iso),
                    "lastUsedOfferAt": stats.last_used.map(Millis::iso),
                    "rejectSummaryLastOffers": reasons,
                    "rejectSummaryLaunchAttempt": reasons,
                },
            });
            if with_offers {
                item["lastUnusedOffers"] = json!([]);
            }
            items.push(item);
        }
        json!({"queue": items})
    }

    /// `GET /v2/info`.
    pub fn info_json(&self) -> Value {
        let c = &self.config;
        json!({
            "name": "marathon",
            "version": "1.6.322",
            "buildref": format!("agora-{}", agora_proto::AGORA_VERSION),
            "elected": true,
            "leader": c.leader,
            // No framework while the master has removed it (no key of its
            // own: the `marathon` client refuses keys it does not know).
            "frameworkId": if self.state.framework_removed.is_some() { None } else { self.state.framework_id.clone() },
            "marathon_config": {
                "access_control_allow_origin": null, "checkpoint": true, "decline_offer_duration": (c.decline_offer_seconds * 1000.0) as u64,
                "default_network_name": null, "env_vars_prefix": null, "executor": "//cmd", "failover_timeout": 604800,
                "features": [], "framework_name": c.framework_name, "ha": c.zk.is_some(), "hostname": c.leader.split(':').next().unwrap_or(""),
                "launch_token": 100, "launch_token_refresh_interval": 30000, "leader_proxy_connection_timeout_ms": 5000,
                "leader_proxy_read_timeout_ms": 10000, "local_port_max": c.local_port_max, "local_port_min": c.local_port_min,
                "master": c.master, "max_instances_per_offer": 100, "mesos_bridge_name": "mesos-bridge",
                "mesos_heartbeat_failure_threshold": 5, "mesos_heartbeat_interval": 15000, "mesos_leader_ui_url": format!("http://{}/", c.master),
                "mesos_role": c.role, "mesos_user": "root", "new_group_enforce_role": if c.new_group_enforce_role { "top" } else { "off" }, "min_revive_offers_interval": 5000,
                "offer_matching_timeout": 3000, "on_elected_prepare_timeout": 180000, "reconciliation_initial_delay": 15000,
                "reconciliation_interval": 600000, "scale_apps_initial_delay": 15000, "scale_apps_interval": 300000,
                "store_cache": true, "task_launch_confirm_timeout": 300000, "task_launch_timeout": 300000,
                "task_lost_expunge_initial_delay": 300000, "task_lost_expunge_interval": 30000, "task_reservation_timeout": 20000,
                "webui_url": null, "maintenance_mode": false,
            },
            "zookeeper_config": {
                "zk": c.zk, "zk_compression": false, "zk_compression_threshold": 65536, "zk_connection_timeout": 10000,
                "zk_max_node_size": 1024000, "zk_max_versions": c.max_versions, "zk_session_timeout": c.zk_session_timeout_ms, "zk_timeout": 10000,
            },
            "http_config": {"http_port": c.leader.rsplit(':').next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(8080), "https_port": 8443},
        })
    }
}
