//! The master's web page (`GET /`): cluster totals, agents, frameworks and
//! recent tasks at a glance. Rendered with askama; refreshes itself.

use agora_proto::resources::Resources;
use agora_proto::v1;
use askama::Template;

use crate::legacy::View;

struct AgentRow {
    id: String,
    hostname: String,
    address: String,
    active: bool,
    cpus: String,
    mem: String,
    attributes: String,
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
    agent: String,
    state: String,
}

#[derive(Template)]
#[template(path = "master.html")]
struct Page {
    css: &'static str,
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
    task_rows: Vec<TaskRow>,
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

/// Renders the page.
pub(crate) fn render(view: &View<'_>) -> String {
    let s = view.summary();
    let state = view.state;
    let agent_rows = state
        .get_agents
        .iter()
        .flat_map(|a| a.agents.iter())
        .map(|a| {
            let total = Resources::from_protos(&a.total_resources).unwrap_or_default();
            let used = Resources::from_protos(&a.allocated_resources).unwrap_or_default();
            AgentRow {
                id: a
                    .agent_info
                    .id
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default(),
                hostname: a.agent_info.hostname.clone(),
                address: a
                    .pid
                    .clone()
                    .unwrap_or_default()
                    .trim_start_matches("slave(1)@")
                    .to_string(),
                active: a.active,
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
    let task_rows = tasks
        .iter()
        .rev()
        .take(100)
        .map(|t| TaskRow {
            id: t.task_id.value.clone(),
            name: t.name.clone(),
            framework: t.framework_id.value.clone(),
            agent: t.agent_id.value.clone(),
            state: t.state().as_str_name().to_string(),
        })
        .collect();
    let page = Page {
        css: agora_rpc::http::UI_CSS,
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
