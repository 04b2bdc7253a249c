//! The status page: apps with their health at a glance, deployments in
//! progress, and what waits in the queue and why. Built from the same JSON
//! the REST API serves.

use askama::Template;
use http::StatusCode;
use serde_json::Value;

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
