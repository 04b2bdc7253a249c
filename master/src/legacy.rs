//! The legacy JSON endpoints (`/state`, `/slaves`, `/frameworks`, `/tasks`,
//! `/roles`, `/flags`, `/version`, `/metrics/snapshot`) in Mesos' legacy
//! object model: plain-string ids, `slave` names, float-second times, and
//! resources as `{"cpus":…,"mem":…,"ports":"[a-b]"}`. Built from the same
//! operator views as the v1 API.

use agora_proto::operator::response;
use agora_proto::resources::{Resources, attribute_value_string};
use agora_proto::v1;
use serde_json::{Map, Value, json};

/// Everything a legacy view needs.
pub(crate) struct View<'a> {
    pub info: &'a v1::MasterInfo,
    pub flags: &'a [(String, String)],
    pub start_time: f64,
    pub state: &'a response::GetState,
    pub roles: &'a response::GetRoles,
    /// The leadership epoch (1 without ZooKeeper).
    pub epoch: u64,
}

/// `/tasks` query parameters.
pub(crate) struct TaskQuery {
    pub limit: i64,
    pub offset: usize,
    pub ascending: bool,
    pub framework_id: Option<String>,
    pub task_id: Option<String>,
}

/// `/version`.
pub(crate) fn version() -> Value {
    let v = version_info();
    json!({
        "version": v.version,
        "build_date": v.build_date,
        "build_time": v.build_time,
        "build_user": v.build_user,
        "git_tag": v.git_tag,
    })
}

/// The VersionInfo of GET_VERSION.
pub(crate) fn version_info() -> v1::VersionInfo {
    v1::VersionInfo {
        version: agora_proto::MESOS_VERSION.to_string(),
        build_date: Some("2026-11-26 00:00:00".into()),
        build_time: Some(1_795_651_200.0),
        build_user: Some(format!("agora {}", agora_proto::AGORA_VERSION)),
        git_sha: None,
        git_branch: None,
        git_tag: Some(agora_proto::MESOS_VERSION.to_string()),
    }
}

/// `/flags`.
pub(crate) fn flags(flags: &[(String, String)]) -> Value {
    let map: Map<String, Value> = flags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({ "flags": map })
}

/// `/metrics/snapshot`.
pub(crate) fn metrics(metrics: &[(String, f64)], start_time: f64) -> Value {
    let map: Map<String, Value> = with_uptime(metrics, start_time)
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    Value::Object(map)
}

/// The core's snapshot with `master/uptime_secs`.
pub(crate) fn with_uptime(metrics: &[(String, f64)], start_time: f64) -> Vec<(String, f64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut all = metrics.to_vec();
    all.push(("master/uptime_secs".into(), now - start_time));
    all
}

/// Resources as a legacy object.
pub(crate) fn resources(list: &[v1::Resource]) -> Value {
    let r = Resources::from_protos(list).unwrap_or_default();
    let mut map = Map::new();
    for name in ["cpus", "gpus", "mem", "disk"] {
        map.insert(name.into(), json!(r.scalar(name)));
    }
    for name in r.names() {
        if map.contains_key(name) {
            continue;
        }
        let ranges = r.ranges(name);
        if !ranges.is_empty() {
            map.insert(name.into(), json!(ranges.to_string()));
        } else {
            map.insert(name.into(), json!(r.scalar(name)));
        }
    }
    Value::Object(map)
}

fn attributes(list: &[v1::Attribute]) -> Value {
    let mut map = Map::new();
    for a in list {
        let v = match a.r#type() {
            v1::value::Type::Scalar => json!(a.scalar.as_ref().map(|s| s.value).unwrap_or(0.0)),
            _ => json!(attribute_value_string(a)),
        };
        map.insert(a.name.clone(), v);
    }
    Value::Object(map)
}

fn secs(t: &Option<v1::TimeInfo>) -> Value {
    match t {
        Some(t) => json!(t.nanoseconds as f64 / 1e9),
        None => Value::Null,
    }
}

fn proto_json<M: prost::Message + prost::Name>(m: &M) -> Value {
    agora_proto::json::to_value(m)
}

impl View<'_> {
    fn pid(&self) -> String {
        self.info.pid.clone().unwrap_or_default()
    }

    fn agents(&self) -> &[response::get_agents::Agent] {
        self.state
            .get_agents
            .as_ref()
            .map(|a| a.agents.as_slice())
            .unwrap_or(&[])
    }

    fn frameworks_list(
        &self,
    ) -> (
        &[response::get_frameworks::Framework],
        &[response::get_frameworks::Framework],
    ) {
        match &self.state.get_frameworks {
            Some(f) => (&f.frameworks, &f.completed_frameworks),
            None => (&[], &[]),
        }
    }

    fn all_tasks(&self) -> Vec<&v1::Task> {
        let Some(t) = &self.state.get_tasks else {
            return Vec::new();
        };
        t.tasks
            .iter()
            .chain(t.unreachable_tasks.iter())
            .chain(t.completed_tasks.iter())
            .collect()
    }

    fn slave(&self, a: &response::get_agents::Agent) -> Value {
        let total = Resources::from_protos(&a.total_resources).unwrap_or_default();
        let mut reserved = Map::new();
        for r in total.reserved().to_legacy_protos() {
            #[allow(deprecated)]
            let role = r.role.clone().unwrap_or_default();
            let e = reserved.entry(role).or_insert_with(|| json!([]));
            if let Value::Array(v) = e {
                v.push(proto_json(&r));
            }
        }
        // As Mesos: `reserved_resources_full` lists each reserved resource
        // (reservations, labels, volumes); `reserved_resources` sums them.
        let reserved_full: Map<String, Value> = reserved.clone().into_iter().collect();
        let reserved: Map<String, Value> = reserved
            .into_iter()
            .map(|(role, v)| {
                let list: Vec<v1::Resource> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| agora_proto::json::from_value(x).ok())
                    .collect();
                (role, resources(&list))
            })
            .collect();
        let info = &a.agent_info;
        json!({
            "id": info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
            "hostname": info.hostname,
            "port": info.port.unwrap_or(5051),
            "attributes": attributes(&info.attributes),
            "pid": a.pid,
            "registered_time": secs(&a.registered_time),
            "reregistered_time": secs(&a.reregistered_time),
            "resources": resources(&a.total_resources),
            "used_resources": resources(&a.allocated_resources),
            "offered_resources": resources(&a.offered_resources),
            "reserved_resources": reserved,
            "reserved_resources_full": reserved_full,
            "unreserved_resources": resources(&total.unreserved().to_legacy_protos()),
            "active": a.active,
            "deactivated": a.deactivated.unwrap_or(false),
            "version": a.version,
            "capabilities": a.capabilities.iter().map(|c| c.r#type().as_str_name()).collect::<Vec<_>>(),
        })
    }

    fn task(&self, t: &v1::Task) -> Value {
        let role = t
            .resources
            .iter()
            .find_map(|r| r.allocation_info.as_ref().and_then(|a| a.role.clone()))
            .unwrap_or_else(|| "*".into());
        let statuses: Vec<Value> = t
            .statuses
            .iter()
            .map(|s| {
                let mut m = json!({ "state": s.state().as_str_name(), "timestamp": s.timestamp.unwrap_or(0.0) });
                if let Some(cs) = &s.container_status {
                    m["container_status"] = proto_json(cs);
                }
                if let Some(h) = s.healthy {
                    m["healthy"] = json!(h);
                }
                if let Some(l) = &s.labels {
                    m["labels"] = proto_json(l)["labels"].clone();
                }
                m
            })
            .collect();
        let mut v = json!({
            "id": t.task_id.value,
            "name": t.name,
            "framework_id": t.framework_id.value,
            "executor_id": t.executor_id.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
            "slave_id": t.agent_id.value,
            "state": t.state().as_str_name(),
            "resources": resources(&t.resources),
            "role": role,
            "statuses": statuses,
        });
        if let Some(u) = &t.user {
            v["user"] = json!(u);
        }
        if let Some(l) = &t.labels {
            v["labels"] = proto_json(l)["labels"].clone();
        }
        if let Some(d) = &t.discovery {
            v["discovery"] = proto_json(d);
        }
        if let Some(c) = &t.container {
            v["container"] = proto_json(c);
        }
        if let Some(hc) = &t.health_check {
            v["health_check"] = proto_json(hc);
        }
        v
    }

    fn framework(&self, f: &response::get_frameworks::Framework) -> Value {
        let info = &f.framework_info;
        let id = info
            .id
            .as_ref()
            .map(|i| i.value.clone())
            .unwrap_or_default();
        let tasks = self.state.get_tasks.as_ref();
        let mine = |list: Option<&Vec<v1::Task>>| -> Vec<Value> {
            list.into_iter()
                .flatten()
                .filter(|t| t.framework_id.value == id)
                .map(|t| self.task(t))
                .collect()
        };
        let caps: Vec<&str> = info
            .capabilities
            .iter()
            .map(|c| c.r#type().as_str_name())
            .collect();
        let mut used = Resources::from_protos(&f.allocated_resources).unwrap_or_default();
        used += &Resources::new();
        let offers: Vec<Value> = f
            .offers
            .iter()
            .map(|o| {
                json!({
                    "id": o.id.value,
                    "framework_id": o.framework_id.value,
                    "slave_id": o.agent_id.value,
                    "allocation_info": o.allocation_info.as_ref().map(proto_json).unwrap_or(json!({})),
                    "resources": resources(&o.resources),
                })
            })
            .collect();
        let mut v = json!({
            "id": id,
            "name": info.name,
            "used_resources": resources(&f.allocated_resources),
            "offered_resources": resources(&f.offered_resources),
            "resources": resources(&f.allocated_resources),
            "capabilities": caps,
            "hostname": info.hostname.clone().unwrap_or_default(),
            "webui_url": info.webui_url.clone().unwrap_or_default(),
            "active": f.active,
            "connected": f.connected,
            "recovered": f.recovered,
            "user": info.user,
            "failover_timeout": info.failover_timeout.unwrap_or(0.0),
            "checkpoint": info.checkpoint.unwrap_or(false),
            "registered_time": secs(&f.registered_time),
            "unregistered_time": secs(&f.unregistered_time),
            "tasks": mine(tasks.map(|t| &t.tasks)),
            "unreachable_tasks": mine(tasks.map(|t| &t.unreachable_tasks)),
            "completed_tasks": mine(tasks.map(|t| &t.completed_tasks)),
            "offers": offers,
            "executors": [],
        });
        if f.reregistered_time.is_some() {
            v["reregistered_time"] = secs(&f.reregistered_time);
        }
        if let Some(p) = &info.principal {
            v["principal"] = json!(p);
        }
        if caps.contains(&"MULTI_ROLE") {
            v["roles"] = json!(info.roles);
        } else {
            #[allow(deprecated)]
            let role = info.role.clone().unwrap_or_else(|| "*".into());
            v["role"] = json!(role);
        }
        if let Some(l) = &info.labels {
            v["labels"] = proto_json(l)["labels"].clone();
        }
        v
    }

    /// `/state`.
    pub fn state(&self) -> Value {
        let (active, completed) = self.frameworks_list();
        let agents = self.agents();
        let v = version_info();
        json!({
            "version": v.version,
            "git_tag": v.git_tag,
            "build_date": v.build_date,
            "build_time": v.build_time,
            "build_user": v.build_user,
            "start_time": self.start_time,
            "elected_time": self.start_time,
            "id": self.info.id,
            "pid": self.pid(),
            "hostname": self.info.hostname.clone().unwrap_or_default(),
            "capabilities": self.info.capabilities.iter().map(|c| c.r#type().as_str_name()).collect::<Vec<_>>(),
            "activated_slaves": agents.iter().filter(|a| a.active).count(),
            "deactivated_slaves": agents.iter().filter(|a| !a.active).count(),
            "unreachable_slaves": 0,
            "leader": self.pid(),
            "leader_info": proto_json(self.info),
            "flags": flags(self.flags)["flags"].clone(),
            "slaves": agents.iter().map(|a| self.slave(a)).collect::<Vec<_>>(),
            "recovered_slaves": [],
            "frameworks": active.iter().map(|f| self.framework(f)).collect::<Vec<_>>(),
            "completed_frameworks": completed.iter().map(|f| self.framework(f)).collect::<Vec<_>>(),
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        })
    }

    /// `/state-summary`.
    pub fn state_summary(&self) -> Value {
        let (active, _) = self.frameworks_list();
        let tasks = self.all_tasks();
        let count = |pred: &dyn Fn(&v1::Task) -> bool, state: v1::TaskState| {
            tasks
                .iter()
                .filter(|t| pred(t) && t.state() == state)
                .count()
        };
        let states = [
            v1::TaskState::TaskStaging,
            v1::TaskState::TaskStarting,
            v1::TaskState::TaskRunning,
            v1::TaskState::TaskKilling,
            v1::TaskState::TaskFinished,
            v1::TaskState::TaskKilled,
            v1::TaskState::TaskFailed,
            v1::TaskState::TaskLost,
            v1::TaskState::TaskError,
            v1::TaskState::TaskUnreachable,
        ];
        let slaves: Vec<Value> = self
            .agents()
            .iter()
            .map(|a| {
                let mut s = self.slave(a);
                let id = agent_id(a);
                for st in states {
                    s[st.as_str_name()] = json!(count(&|t: &v1::Task| t.agent_id.value == id, st));
                }
                let fws: std::collections::BTreeSet<String> = tasks
                    .iter()
                    .filter(|t| t.agent_id.value == id)
                    .map(|t| t.framework_id.value.clone())
                    .collect();
                s["framework_ids"] = json!(fws);
                s
            })
            .collect();
        let frameworks: Vec<Value> = active
            .iter()
            .map(|f| {
                let id = f
                    .framework_info
                    .id
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default();
                let mut v = json!({
                    "id": id,
                    "name": f.framework_info.name,
                    "active": f.active,
                    "connected": f.connected,
                    "used_resources": resources(&f.allocated_resources),
                    "offered_resources": resources(&f.offered_resources),
                });
                for st in states {
                    v[st.as_str_name()] =
                        json!(count(&|t: &v1::Task| t.framework_id.value == id, st));
                }
                let agents: std::collections::BTreeSet<String> = tasks
                    .iter()
                    .filter(|t| t.framework_id.value == id)
                    .map(|t| t.agent_id.value.clone())
                    .collect();
                v["slave_ids"] = json!(agents);
                v
            })
            .collect();
        json!({ "hostname": self.info.hostname, "slaves": slaves, "frameworks": frameworks })
    }

    /// `/slaves`.
    pub fn slaves(&self, only: Option<&str>) -> Value {
        let slaves: Vec<Value> = self
            .agents()
            .iter()
            .filter(|a| {
                only.is_none_or(|id| a.agent_info.id.as_ref().is_some_and(|i| i.value == id))
            })
            .map(|a| self.slave(a))
            .collect();
        json!({ "slaves": slaves, "recovered_slaves": [] })
    }

    /// `/frameworks`.
    pub fn frameworks(&self, only: Option<&str>) -> Value {
        let (active, completed) = self.frameworks_list();
        let keep = |f: &&response::get_frameworks::Framework| {
            only.is_none_or(|id| f.framework_info.id.as_ref().is_some_and(|i| i.value == id))
        };
        json!({
            "frameworks": active.iter().filter(keep).map(|f| self.framework(f)).collect::<Vec<_>>(),
            "completed_frameworks": completed.iter().filter(keep).map(|f| self.framework(f)).collect::<Vec<_>>(),
            "unregistered_frameworks": [],
        })
    }

    /// `/tasks`.
    pub fn tasks(&self, q: &TaskQuery) -> Value {
        let mut tasks: Vec<&v1::Task> = self
            .all_tasks()
            .into_iter()
            .filter(|t| {
                q.framework_id
                    .as_ref()
                    .is_none_or(|f| &t.framework_id.value == f)
            })
            .filter(|t| q.task_id.as_ref().is_none_or(|id| &t.task_id.value == id))
            .collect();
        let first = |t: &&v1::Task| t.statuses.first().and_then(|s| s.timestamp);
        tasks.sort_by(|a, b| {
            let (x, y) = (first(a), first(b));
            let ord = match (x, y) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            };
            if q.ascending { ord } else { ord.reverse() }
        });
        // Mesos parses limit as an int and casts it to unsigned: -1 is "all".
        let limit = if q.limit < 0 {
            usize::MAX
        } else {
            q.limit as usize
        };
        let page: Vec<Value> = tasks
            .iter()
            .skip(q.offset)
            .take(limit)
            .map(|t| self.task(t))
            .collect();
        json!({ "tasks": page })
    }

    /// `/roles`.
    pub fn roles(&self) -> Value {
        let roles: Vec<Value> = self
            .roles
            .roles
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "weight": r.weight,
                    "frameworks": r.frameworks.iter().map(|f| f.value.clone()).collect::<Vec<_>>(),
                    "resources": resources(&r.resources),
                    "allocated": resources(&r.resources),
                    "offered": resources(&[]),
                    "reserved": resources(&[]),
                    "quota": { "role": r.name, "guarantee": {}, "limit": {}, "consumed": {} },
                })
            })
            .collect();
        json!({ "roles": roles })
    }

    /// The summary numbers the UI shows.
    pub fn summary(&self) -> Summary {
        let agents = self.agents();
        let mut total = Resources::new();
        let mut used = Resources::new();
        for a in agents {
            total += &Resources::from_protos(&a.total_resources).unwrap_or_default();
            used += &Resources::from_protos(&a.allocated_resources).unwrap_or_default();
        }
        let tasks = self.state.get_tasks.as_ref();
        Summary {
            agents: agents.len(),
            active_agents: agents.iter().filter(|a| a.active).count(),
            frameworks: self.frameworks_list().0.len(),
            running_tasks: tasks
                .map(|t| {
                    t.tasks
                        .iter()
                        .filter(|t| t.state() == v1::TaskState::TaskRunning)
                        .count()
                })
                .unwrap_or(0),
            cpus: (used.scalar("cpus"), total.scalar("cpus")),
            mem: (used.scalar("mem"), total.scalar("mem")),
        }
    }
}

/// Cluster totals for the UI.
pub(crate) struct Summary {
    pub agents: usize,
    pub active_agents: usize,
    pub frameworks: usize,
    pub running_tasks: usize,
    pub cpus: (f64, f64),
    pub mem: (f64, f64),
}

/// An agent's id (empty when it has none yet).
pub(crate) fn agent_id(a: &response::get_agents::Agent) -> String {
    a.agent_info
        .id
        .as_ref()
        .map(|i| i.value.clone())
        .unwrap_or_default()
}
