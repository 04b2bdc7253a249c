//! The master's web pages: `GET /` (cluster totals, agents with drain and
//! reactivate buttons, frameworks, roles with quota and usage, recent
//! tasks) and `GET /ui/task?framework=…&id=…` (a task's status history and
//! a link to its sandbox on its agent, where stdout and stderr are
//! followed live). Rendered with askama; a little script (`UI_JS`) calls
//! the operator API and refreshes the live part in place.

use std::collections::HashMap;

use agora_proto::resources::Resources;
use agora_proto::v1;
use askama::Template;

use crate::legacy::View;

struct AgentRow {
    id: String,
    hostname: String,
    address: String,
    /// active, inactive, deactivated, DRAINING, DRAINED.
    state: String,
    state_class: &'static str,
    can_drain: bool,
    can_reactivate: bool,
    cpus: String,
    mem: String,
    tasks: usize,
    attributes: String,
}

struct RoleRow {
    name: String,
    weight: String,
    frameworks: usize,
    cpus: String,
    mem: String,
    guarantee: String,
    limit: String,
    /// How much of its cpu limit the role holds (0 without one).
    over_pct: u32,
}

struct FrameworkRow {
    id: String,
    name: String,
    roles: String,
    connected: bool,
    tasks: usize,
    cpus: String,
    mem: String,
}

struct TaskRow {
    id: String,
    name: String,
    framework: String,
    agent_host: String,
    state: String,
}

#[derive(Template)]
#[template(path = "master.html")]
struct Page {
    css: &'static str,
    js: &'static str,
    hostname: String,
    pid: String,
    version: String,
    epoch: u64,
    /// Run with --insecure: said on the page.
    insecure: bool,
    agents: usize,
    active_agents: usize,
    frameworks_count: usize,
    running_tasks: usize,
    cpus_used: String,
    cpus_total: String,
    cpus_pct: u32,
    mem_used: String,
    mem_total: String,
    mem_pct: u32,
    agent_rows: Vec<AgentRow>,
    framework_rows: Vec<FrameworkRow>,
    role_rows: Vec<RoleRow>,
    task_rows: Vec<TaskRow>,
}

struct StatusRow {
    time: String,
    state: String,
    source: String,
    reason: String,
    healthy: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    css: &'static str,
    js: &'static str,
    hostname: String,
    id: String,
    name: String,
    framework: String,
    state: String,
    agent: String,
    agent_host: String,
    resources: String,
    statuses: Vec<StatusRow>,
    /// The sandbox page on the task's agent (scheme-relative).
    sandbox_url: Option<String>,
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn pct(used: f64, total: f64) -> u32 {
    if total > 0.0 {
        ((used / total) * 100.0).round().clamp(0.0, 100.0) as u32
    } else {
        0
    }
}

/// `ip:port` of an agent's HTTP API.
fn agent_address(a: &agora_proto::operator::response::get_agents::Agent) -> String {
    a.pid
        .clone()
        .unwrap_or_default()
        .trim_start_matches("slave(1)@")
        .to_string()
}

/// Tasks not yet ended, by agent id (counted once for the page).
fn tasks_by_agent(state: &agora_proto::operator::response::GetState) -> HashMap<&str, usize> {
    let mut n = HashMap::new();
    for t in state.get_tasks.iter().flat_map(|t| t.tasks.iter()) {
        *n.entry(t.agent_id.value.as_str()).or_insert(0) += 1;
    }
    n
}

/// `cpus:2, mem:1024` of a quota's scalars.
fn scalars(map: &std::collections::BTreeMap<String, v1::value::Scalar>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}:{}", num(v.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row per role: weight, frameworks, what it holds, its quota.
fn role_rows(view: &View<'_>, quota: &v1::quota::QuotaStatus) -> Vec<RoleRow> {
    view.roles
        .roles
        .iter()
        .map(|r| {
            let held = Resources::from_protos(&r.resources).unwrap_or_default();
            let config = quota.configs.iter().find(|c| c.role == r.name);
            let cpu_limit = config.and_then(|c| c.limits.get("cpus")).map(|s| s.value);
            RoleRow {
                name: r.name.clone(),
                weight: num(r.weight),
                frameworks: r.frameworks.len(),
                cpus: num(held.scalar("cpus")),
                mem: num(held.scalar("mem")),
                guarantee: config.map(|c| scalars(&c.guarantees)).unwrap_or_default(),
                limit: config.map(|c| scalars(&c.limits)).unwrap_or_default(),
                over_pct: cpu_limit.map_or(0, |l| pct(held.scalar("cpus"), l).max(1)),
            }
        })
        .collect()
}

/// Renders the page.
pub(crate) fn render(view: &View<'_>, quota: &v1::quota::QuotaStatus) -> String {
    let s = view.summary();
    let state = view.state;
    let tasks_on = tasks_by_agent(state);
    let agent_rows = state
        .get_agents
        .iter()
        .flat_map(|a| a.agents.iter())
        .map(|a| {
            let total = Resources::from_protos(&a.total_resources).unwrap_or_default();
            let used = Resources::from_protos(&a.allocated_resources).unwrap_or_default();
            let id = crate::legacy::agent_id(a);
            let drain = a.drain_info.as_ref().map(|d| d.state());
            let deactivated = a.deactivated.unwrap_or(false);
            let (state, state_class) = match drain {
                Some(v1::DrainState::Draining) => ("DRAINING".to_string(), "warn"),
                Some(v1::DrainState::Drained) => ("DRAINED".to_string(), "muted"),
                _ if deactivated => ("deactivated".to_string(), "warn"),
                _ if a.active => ("active".to_string(), "ok"),
                _ => ("inactive".to_string(), "bad"),
            };
            AgentRow {
                tasks: tasks_on.get(id.as_str()).copied().unwrap_or(0),
                can_drain: drain.is_none() && a.active && !deactivated,
                can_reactivate: deactivated || drain.is_some(),
                state,
                state_class,
                id,
                hostname: a.agent_info.hostname.clone(),
                address: agent_address(a),
                cpus: format!(
                    "{} / {}",
                    num(used.scalar("cpus")),
                    num(total.scalar("cpus"))
                ),
                mem: format!("{} / {}", num(used.scalar("mem")), num(total.scalar("mem"))),
                attributes: a
                    .agent_info
                    .attributes
                    .iter()
                    .map(|x| {
                        format!(
                            "{}:{}",
                            x.name,
                            agora_proto::resources::attribute_value_string(x)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect();
    let tasks: Vec<&v1::Task> = state
        .get_tasks
        .iter()
        .flat_map(|t| t.tasks.iter())
        .collect();
    let framework_rows = state
        .get_frameworks
        .iter()
        .flat_map(|f| f.frameworks.iter())
        .map(|f| {
            let id = f
                .framework_info
                .id
                .as_ref()
                .map(|i| i.value.clone())
                .unwrap_or_default();
            let used = Resources::from_protos(&f.allocated_resources).unwrap_or_default();
            #[allow(deprecated)]
            let roles = if f.framework_info.roles.is_empty() {
                f.framework_info.role.clone().unwrap_or_else(|| "*".into())
            } else {
                f.framework_info.roles.join(", ")
            };
            FrameworkRow {
                tasks: tasks.iter().filter(|t| t.framework_id.value == id).count(),
                id,
                name: f.framework_info.name.clone(),
                roles,
                connected: f.connected,
                cpus: num(used.scalar("cpus")),
                mem: num(used.scalar("mem")),
            }
        })
        .collect();
    let hosts: HashMap<String, &str> = state
        .get_agents
        .iter()
        .flat_map(|a| a.agents.iter())
        .map(|a| (crate::legacy::agent_id(a), a.agent_info.hostname.as_str()))
        .collect();
    let task_rows = tasks
        .iter()
        .rev()
        .take(100)
        .map(|t| TaskRow {
            id: t.task_id.value.clone(),
            name: t.name.clone(),
            framework: t.framework_id.value.clone(),
            agent_host: hosts
                .get(&t.agent_id.value)
                .map_or_else(|| t.agent_id.value.clone(), |h| h.to_string()),
            state: t.state().as_str_name().to_string(),
        })
        .collect();
    let page = Page {
        css: agora_rpc::http::UI_CSS,
        js: agora_rpc::http::UI_JS,
        role_rows: role_rows(view, quota),
        hostname: view.info.hostname.clone().unwrap_or_default(),
        pid: view.info.pid.clone().unwrap_or_default(),
        version: agora_proto::MESOS_VERSION.to_string(),
        epoch: view.epoch,
        insecure: view
            .flags
            .iter()
            .any(|(k, v)| k == "insecure" && v == "true"),
        agents: s.agents,
        active_agents: s.active_agents,
        frameworks_count: s.frameworks,
        running_tasks: s.running_tasks,
        cpus_used: num(s.cpus.0),
        cpus_total: num(s.cpus.1),
        cpus_pct: pct(s.cpus.0, s.cpus.1),
        mem_used: num(s.mem.0),
        mem_total: num(s.mem.1),
        mem_pct: pct(s.mem.0, s.mem.1),
        agent_rows,
        framework_rows,
        task_rows,
    };
    page.render()
        .unwrap_or_else(|e| format!("template error: {e}"))
}

fn agent_of<'a>(
    state: &'a agora_proto::operator::response::GetState,
    id: &str,
) -> Option<&'a agora_proto::operator::response::get_agents::Agent> {
    state
        .get_agents
        .iter()
        .flat_map(|a| a.agents.iter())
        .find(|a| a.agent_info.id.as_ref().is_some_and(|i| i.value == id))
}

/// The page of task `id` of `framework` (None: no such task here).
pub(crate) fn render_task(view: &View<'_>, framework: &str, id: &str) -> Option<String> {
    let state = view.state;
    let t = state
        .get_tasks
        .iter()
        .flat_map(|t| t.tasks.iter().chain(&t.completed_tasks))
        .find(|t| t.task_id.value == id && t.framework_id.value == framework)?;
    let agent = agent_of(state, &t.agent_id.value);
    let executor = t
        .executor_id
        .as_ref()
        .map_or(t.task_id.value.as_str(), |e| e.value.as_str());
    let sandbox = format!(
        "slaves/{}/frameworks/{framework}/executors/{executor}/runs/latest",
        t.agent_id.value
    );
    let sandbox_url = agent.map(|a| {
        format!(
            "//{}/ui/sandbox?path={}",
            agent_address(a),
            percent_encoding::utf8_percent_encode(&sandbox, percent_encoding::NON_ALPHANUMERIC)
        )
    });
    let resources = Resources::from_protos(&t.resources).unwrap_or_default();
    let statuses = t
        .statuses
        .iter()
        .map(|st| StatusRow {
            time: st.timestamp.and_then(chrono_like).unwrap_or_default(),
            state: st.state().as_str_name().to_string(),
            source: st
                .source
                .map(|_| {
                    st.source()
                        .as_str_name()
                        .trim_start_matches("SOURCE_")
                        .to_lowercase()
                })
                .unwrap_or_default(),
            reason: st
                .reason
                .map(|_| {
                    st.reason()
                        .as_str_name()
                        .trim_start_matches("REASON_")
                        .to_lowercase()
                })
                .unwrap_or_default(),
            healthy: match st.healthy {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            },
            message: st.message.clone().unwrap_or_default(),
        })
        .collect();
    let page = TaskPage {
        css: agora_rpc::http::UI_CSS,
        js: agora_rpc::http::UI_JS,
        hostname: view.info.hostname.clone().unwrap_or_default(),
        id: id.to_string(),
        name: t.name.clone(),
        framework: framework.to_string(),
        state: t.state().as_str_name().to_string(),
        agent: t.agent_id.value.clone(),
        agent_host: agent.map_or_else(String::new, |a| a.agent_info.hostname.clone()),
        resources: format!(
            "{} cpus · {} MB",
            num(resources.scalar("cpus")),
            num(resources.scalar("mem"))
        ),
        statuses,
        sandbox_url,
    };
    Some(
        page.render()
            .unwrap_or_else(|e| format!("template error: {e}")),
    )
}

/// A status timestamp (seconds since the epoch) as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
fn chrono_like(secs: f64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64)?;
    Some(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
}
