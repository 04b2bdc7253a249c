//! The web UI. `/`: apps with their health at a glance, deployments in
//! progress, what waits in the queue and why, and a form (or JSON) to
//! create an app. `/ui/app/<id>`: an app's tasks with their health, its
//! deployment's progress and last failure, and buttons to scale, restart,
//! edit, roll back and destroy it. Built from the same JSON the REST API
//! serves; the pages' script (`UI_JS`) calls the REST API and refreshes
//! the live part in place.

use askama::Template;
use http::StatusCode;
use serde_json::{Value, json};

use agora_rpc::http as h;

use crate::driver::Handle;

struct AppRow {
    id: String,
    status: &'static str,
    running: u64,
    instances: u64,
    healthy: String,
    cpus: String,
    mem: String,
    what: String,
    version: String,
}

struct DeploymentRow {
    id: String,
    apps: String,
    step: String,
    actions: String,
    version: String,
}

struct QueueRow {
    app: String,
    count: u64,
    delay: String,
    processed: u64,
    reasons: String,
}

#[derive(Template)]
#[template(path = "marathon.html")]
struct Page {
    css: &'static str,
    js: &'static str,
    leader: String,
    master: String,
    framework_id: String,
    /// Set when the master removed the framework: what to tell the reader.
    removed: Option<String>,
    /// Run with --insecure.
    insecure: bool,
    apps_count: usize,
    running: u64,
    wanted: u64,
    running_pct: u64,
    deployments_count: usize,
    waiting: u64,
    app_rows: Vec<AppRow>,
    deployment_rows: Vec<DeploymentRow>,
    queue_rows: Vec<QueueRow>,
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A row per app, its status from its deployments and the launch queue.
fn app_rows(apps: &Value, queue: &Value) -> Vec<AppRow> {
    let queued: std::collections::BTreeSet<String> = list(&queue["queue"])
        .iter()
        .map(|q| s(&q["app"]["id"]))
        .collect();
    list(&apps["apps"])
        .iter()
        .map(|a| {
            let id = s(&a["id"]);
            let running = u(&a["tasksRunning"]);
            let instances = u(&a["instances"]);
            let status = if !list(&a["deployments"]).is_empty() {
                "Deploying"
            } else if queued.contains(&id) {
                "Waiting"
            } else if instances == 0 {
                "Suspended"
            } else {
                "Running"
            };
            let checked = !list(&a["healthChecks"]).is_empty();
            AppRow {
                status,
                running,
                instances,
                healthy: if checked {
                    format!("{} / {}", u(&a["tasksHealthy"]), running)
                } else {
                    "—".into()
                },
                cpus: s(&a["cpus"]),
                mem: s(&a["mem"]),
                what: a["cmd"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        a["container"]["docker"]["image"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .unwrap_or_default(),
                version: s(&a["version"]),
                id,
            }
        })
        .collect()
}

/// A row per deployment: its apps, step and current actions.
fn deployment_rows(deployments: &Value) -> Vec<DeploymentRow> {
    list(deployments)
        .iter()
        .map(|d| DeploymentRow {
            id: s(&d["id"]),
            apps: list(&d["affectedApps"])
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(", "),
            step: format!("{} of {}", u(&d["currentStep"]), u(&d["totalSteps"])),
            actions: list(&d["currentActions"])
                .iter()
                .map(|a| format!("{} {}", s(&a["action"]), s(&a["app"])))
                .collect::<Vec<_>>()
                .join(", "),
            version: s(&d["version"]),
        })
        .collect()
}

/// A row per app waiting in the launch queue, with why offers did not fit.
fn queue_rows(queue: &Value) -> Vec<QueueRow> {
    list(&queue["queue"])
        .iter()
        .map(|q| QueueRow {
            app: s(&q["app"]["id"]),
            count: u(&q["count"]),
            delay: format!(
                "{:.1}",
                q["delay"]["timeLeftSeconds"].as_f64().unwrap_or(0.0)
            ),
            processed: u(&q["processedOffersSummary"]["processedOffersCount"]),
            reasons: list(&q["processedOffersSummary"]["rejectSummaryLastOffers"])
                .iter()
                .map(|r| format!("{} ×{}", s(&r["reason"]), u(&r["declined"])))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

/// The rendered page.
pub async fn page(marathon: &Handle, insecure: bool) -> warp::reply::Response {
    let read = marathon.read(|m, now| {
        (
            m.list_apps(None, None, None, &[]).body,
            m.list_deployments().body,
            m.queue(now, &[]).body,
            m.info().body,
            m.state().framework_removed.clone(),
        )
    });
    let Ok((apps, deployments, queue, info, removed)) = read.await else {
        return h::body(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "marathon-rs is shutting down",
        );
    };
    let (apps, deployments, queue, info) = (
        apps.unwrap_or_default(),
        deployments.unwrap_or_default(),
        queue.unwrap_or_default(),
        info.unwrap_or_default(),
    );
    let app_rows = app_rows(&apps, &queue);
    let deployment_rows = deployment_rows(&deployments);
    let queue_rows = queue_rows(&queue);
    let running: u64 = app_rows.iter().map(|a| a.running).sum();
    let wanted: u64 = app_rows.iter().map(|a| a.instances).sum();
    let page = Page {
        css: agora_rpc::http::UI_CSS,
        js: agora_rpc::http::UI_JS,
        leader: s(&info["leader"]),
        master: s(&info["marathon_config"]["master"]),
        framework_id: info["frameworkId"]
            .as_str()
            .unwrap_or(if removed.is_some() {
                "none"
            } else {
                "not subscribed yet"
            })
            .to_string(),
        insecure,
        removed: removed.map(|r| {
            format!(
                "The master removed framework {} at {} ({}): its tasks are gone and the apps \
                 wait. Restart marathon-rs with --reregister-when-removed to register a new \
                 framework and relaunch them.",
                r.framework_id, r.since, r.message
            )
        }),
        apps_count: app_rows.len(),
        running,
        wanted,
        running_pct: (running * 100).checked_div(wanted).unwrap_or(0).min(100),
        deployments_count: deployment_rows.len(),
        waiting: queue_rows.iter().map(|q| q.count).sum(),
        app_rows,
        deployment_rows,
        queue_rows,
    };
    let html = page
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"));
    h::body(StatusCode::OK, "text/html; charset=utf-8", html)
}

struct TaskRow {
    id: String,
    host: String,
    state: String,
    health: &'static str,
    ports: String,
    started: String,
    version: String,
}

struct Progress {
    id: String,
    step: u64,
    steps: u64,
    pct: u64,
    actions: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    css: &'static str,
    js: &'static str,
    id: String,
    /// The id as a JSON string, for the script.
    id_json: String,
    what: String,
    cpus: String,
    mem: String,
    /// The role its tasks run in.
    role: String,
    version: String,
    status: &'static str,
    running: u64,
    instances: u64,
    running_pct: u64,
    healthy: String,
    staged: u64,
    deployments: Vec<Progress>,
    last_failure: Option<String>,
    waiting: Option<String>,
    tasks: Vec<TaskRow>,
    /// The definition to edit: the app without what marathon-rs adds.
    definition: String,
    versions: Vec<String>,
}

/// What marathon-rs adds to an app's JSON: not part of a definition.
const RUNTIME_FIELDS: &[&str] = &[
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "version",
    "versionInfo",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// A task's health as the page shows it.
fn health(task: &Value, checked: bool) -> &'static str {
    if !checked {
        return "—";
    }
    match task["healthCheckResults"][0]["alive"].as_bool() {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "unknown",
    }
}

/// The page of app `id` (404 when there is none).
pub async fn app_page(marathon: &Handle, id: &str) -> warp::reply::Response {
    let id = id.to_string();
    let read = marathon.read(move |m, now| {
        (
            m.get_app(&id, &[]),
            m.app_versions(&id).body,
            m.list_deployments().body,
            m.queue(now, &[]).body,
        )
    });
    let Ok((app, versions, deployments, queue)) = read.await else {
        return h::body(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "marathon-rs is shutting down",
        );
    };
    if app.status != 200 {
        return h::body(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "No such app",
        );
    }
    let a = app.body.unwrap_or_default()["app"].clone();
    let queue = queue.unwrap_or_default();
    let id = s(&a["id"]);
    let checked = !list(&a["healthChecks"]).is_empty();
    let row = app_rows(&json!({"apps": [a.clone()]}), &queue).pop();
    let deployments = list(&deployments.unwrap_or_default())
        .iter()
        .filter(|d| list(&d["affectedApps"]).iter().any(|x| s(x) == id))
        .map(|d| {
            let (step, steps) = (u(&d["currentStep"]), u(&d["totalSteps"]));
            Progress {
                id: s(&d["id"]),
                step,
                steps,
                pct: (step * 100).checked_div(steps).unwrap_or(0),
                actions: list(&d["currentActions"])
                    .iter()
                    .map(|x| format!("{} {}", s(&x["action"]), s(&x["app"])))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    let waiting = queue_rows(&queue)
        .into_iter()
        .find(|q| q.app == id)
        .map(|q| {
            let why = if q.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", q.reasons)
            };
            format!("{} instance(s), {} offers seen{why}", q.count, q.processed)
        });
    let last_failure = a["lastTaskFailure"].as_object().map(|f| {
        format!(
            "{} on {} at {}: {}",
            s(&f["state"]),
            s(&f["host"]),
            s(&f["timestamp"]),
            s(&f["message"])
        )
    });
    let mut tasks: Vec<TaskRow> = list(&a["tasks"])
        .iter()
        .map(|t| TaskRow {
            id: s(&t["id"]),
            host: s(&t["host"]),
            state: s(&t["state"]),
            health: health(t, checked),
            ports: list(&t["ports"])
                .iter()
                .map(s)
                .collect::<Vec<_>>()
                .join(", "),
            started: t["startedAt"].as_str().unwrap_or("").to_string(),
            version: s(&t["version"]),
        })
        .collect();
    tasks.sort_by(|x, y| x.id.cmp(&y.id));
    let mut definition = a.clone();
    if let Some(o) = definition.as_object_mut() {
        for k in RUNTIME_FIELDS {
            o.remove(*k);
        }
    }
    let (running, instances) = (u(&a["tasksRunning"]), u(&a["instances"]));
    let page = AppPage {
        css: agora_rpc::http::UI_CSS,
        js: agora_rpc::http::UI_JS,
        id_json: Value::String(id.clone()).to_string(),
        what: row.as_ref().map(|r| r.what.clone()).unwrap_or_default(),
        cpus: s(&a["cpus"]),
        mem: s(&a["mem"]),
        role: s(&a["role"]),
        version: s(&a["version"]),
        status: row.as_ref().map_or("Running", |r| r.status),
        running,
        instances,
        running_pct: (running * 100).checked_div(instances).unwrap_or(0).min(100),
        healthy: if checked {
            format!("{} / {}", u(&a["tasksHealthy"]), running)
        } else {
            "—".into()
        },
        staged: u(&a["tasksStaged"]),
        deployments,
        last_failure,
        waiting,
        tasks,
        definition: serde_json::to_string_pretty(&definition).unwrap_or_default(),
        versions: list(&versions.unwrap_or_default()["versions"])
            .iter()
            .map(s)
            .collect(),
        id,
    };
    let html = page
        .render()
        .unwrap_or_else(|e| format!("template error: {e}"));
    h::body(StatusCode::OK, "text/html; charset=utf-8", html)
}
