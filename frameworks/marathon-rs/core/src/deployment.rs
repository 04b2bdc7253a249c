//! Deployments: the steps that take the apps from one root definition to
//! another (Marathon's DeploymentPlan), and their JSON.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::App;
use crate::path::PathId;

/// What a step does to an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Register a new app (with 0 instances).
    StartApplication,
    /// Kill all instances and remove the app.
    StopApplication,
    /// Reach the target instance count.
    ScaleApplication,
    /// Replace every instance with the new config (rolling).
    RestartApplication,
}

/// One action of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The kind.
    pub kind: ActionKind,
    /// The app.
    pub app: PathId,
}

/// A deployment in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id (a uuid).
    pub id: String,
    /// The root version it deploys.
    pub version: String,
    /// Steps, each a set of actions run together.
    pub steps: Vec<Vec<Action>>,
    /// The step in progress (0-based); `steps.len()` when done.
    pub current: usize,
    /// The affected apps before (None: did not exist).
    pub original: BTreeMap<PathId, Option<App>>,
    /// The affected apps after (None: removed).
    pub target: BTreeMap<PathId, Option<App>>,
}

impl Deployment {
    /// Builds the plan from `original` to `target` (only apps that differ
    /// are affected). Steps: stops, starts, then new or changed apps layered
    /// by the length of their dependency chains.
    pub fn plan(
        id: String,
        version: String,
        original: &BTreeMap<PathId, App>,
        target: &BTreeMap<PathId, App>,
        restart: &BTreeSet<PathId>,
    ) -> Option<Deployment> {
        let mut steps: Vec<Vec<Action>> = Vec::new();
        let stopped: Vec<PathId> = original
            .keys()
            .filter(|p| !target.contains_key(*p))
            .cloned()
            .collect();
        let started: Vec<PathId> = target
            .keys()
            .filter(|p| !original.contains_key(*p))
            .cloned()
            .collect();
        let changed: BTreeSet<PathId> = target
            .iter()
            .filter(|(p, a)| match original.get(*p) {
                None => true,
                Some(o) => restart.contains(*p) || o.needs_restart(a) || o.instances != a.instances,
            })
            .map(|(p, _)| p.clone())
            .collect();
        if stopped.is_empty() && changed.is_empty() {
            return None;
        }
        steps.push(
            stopped
                .iter()
                .map(|p| Action {
                    kind: ActionKind::StopApplication,
                    app: p.clone(),
                })
                .collect(),
        );
        steps.push(
            started
                .iter()
                .map(|p| Action {
                    kind: ActionKind::StartApplication,
                    app: p.clone(),
                })
                .collect(),
        );
        let depth = dependency_depths(target, &changed);
        let max = depth.values().copied().max().unwrap_or(0);
        for layer in 0..=max {
            let actions: Vec<Action> = changed
                .iter()
                .filter(|p| depth.get(*p) == Some(&layer))
                .map(|p| {
                    let kind = match original.get(p) {
                        None => ActionKind::ScaleApplication,
                        Some(o) if !restart.contains(p) && !o.needs_restart(&target[p]) => {
                            ActionKind::ScaleApplication
                        }
                        Some(_) => ActionKind::RestartApplication,
                    };
                    Action {
                        kind,
                        app: p.clone(),
                    }
                })
                .collect();
            steps.push(actions);
        }
        steps.retain(|s| !s.is_empty());
        let affected: BTreeSet<PathId> = steps.iter().flatten().map(|a| a.app.clone()).collect();
        Some(Deployment {
            id,
            version,
            steps,
            current: 0,
            original: affected
                .iter()
                .map(|p| (p.clone(), original.get(p).cloned()))
                .collect(),
            target: affected
                .iter()
                .map(|p| (p.clone(), target.get(p).cloned()))
                .collect(),
        })
    }

    /// The apps it touches.
    pub fn affected(&self) -> Vec<PathId> {
        self.target.keys().cloned().collect()
    }

    /// The definition `app` should have now, as far as this deployment has
    /// got: the original until its first action, then the latest action's.
    pub fn effective(&self, app: &PathId) -> Option<Option<Cow<'_, App>>> {
        if !self.target.contains_key(app) {
            return None;
        }
        let upto = self.current.min(self.steps.len().saturating_sub(1));
        let last = self.steps[..=upto]
            .iter()
            .flatten()
            .rev()
            .find(|a| &a.app == app);
        let original = self.original.get(app).and_then(Option::as_ref);
        let target = self.target.get(app).and_then(Option::as_ref);
        Some(match last {
            None => original.map(Cow::Borrowed),
            Some(a) => match a.kind {
                ActionKind::StopApplication => None,
                ActionKind::StartApplication => target.map(|t| {
                    let mut t = t.clone();
                    t.instances = 0;
                    Cow::Owned(t)
                }),
                ActionKind::ScaleApplication | ActionKind::RestartApplication => {
                    target.map(Cow::Borrowed)
                }
            },
        })
    }

    fn action_json(a: &Action) -> Value {
        json!({"action": format!("{:?}", a.kind), "app": a.app.to_string()})
    }

    /// `GET /v2/deployments` element.
    pub fn json(&self) -> Value {
        let current: Vec<Value> = self
            .steps
            .get(self.current)
            .map(|s| {
                s.iter()
                    .map(|a| {
                        let mut v = Self::action_json(a);
                        v["readinessCheckResults"] = json!([]);
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": self.id,
            "version": self.version,
            "affectedApps": self.affected().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": self.steps.iter().map(|s| json!({"actions": s.iter().map(Self::action_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "currentActions": current,
            "currentStep": (self.current + 1).min(self.steps.len()),
            "totalSteps": self.steps.len(),
        })
    }

    /// The plan as events carry it (`original`/`target` groups are added by
    /// the caller).
    pub fn plan_json(&self) -> Value {
        json!({
            "id": self.id,
            "version": self.version,
            "steps": self.steps.iter().map(|s| json!({"actions": s.iter().map(Self::action_json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        })
    }

    /// `{"actions": …}` of the current step.
    pub fn current_step_json(&self) -> Value {
        json!({"actions": self.steps.get(self.current).map(|s| s.iter().map(Self::action_json).collect::<Vec<_>>()).unwrap_or_default()})
    }
}

/// The depth of each changed app in the dependency graph among the changed
/// apps: 0 for an app that depends on none of them; a layer is deployed
/// after the layers below it.
fn dependency_depths(
    target: &BTreeMap<PathId, App>,
    changed: &BTreeSet<PathId>,
) -> BTreeMap<PathId, usize> {
    let deps_of = |p: &PathId| -> Vec<PathId> {
        let app = &target[p];
        let mut out = Vec::new();
        for d in &app.dependencies {
            let Ok(dp) = PathId::parse_relative(d, &p.parent()) else {
                continue;
            };
            // A dependency on a group means every app in it.
            for other in changed.iter().filter(|o| *o != p && o.starts_with(&dp)) {
                out.push(other.clone());
            }
        }
        out
    };
    let mut depth: BTreeMap<PathId, usize> = BTreeMap::new();
    fn depth_of(
        p: &PathId,
        deps_of: &dyn Fn(&PathId) -> Vec<PathId>,
        depth: &mut BTreeMap<PathId, usize>,
        visiting: &mut BTreeSet<PathId>,
    ) -> usize {
        if let Some(d) = depth.get(p) {
            return *d;
        }
        if !visiting.insert(p.clone()) {
            return 0; // a cycle: validation refuses these; do not loop
        }
        let d = deps_of(p)
            .iter()
            .map(|q| depth_of(q, deps_of, depth, visiting) + 1)
            .max()
            .unwrap_or(0);
        visiting.remove(p);
        depth.insert(p.clone(), d);
        d
    }
    let mut visiting = BTreeSet::new();
    for p in changed {
        depth_of(p, &deps_of, &mut depth, &mut visiting);
    }
    depth
}
