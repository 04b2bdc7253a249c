//! Matching offers to the instances apps need, and building their TaskInfos.
//! A "no" for an app on an offer comes back as a reason (insufficient cpus,
//! ports, an unmet constraint …) for `/v2/queue`.

use std::collections::BTreeMap;

use agora_proto::labels::SHUTDOWN_DELAY as SHUTDOWN_DELAY_LABEL;
use agora_proto::resources::{RangeSet, Resources, attribute_value_string};
use agora_proto::v1;

use crate::app::{App, EnvValue};
use crate::constraints::{Constraint, Placement, Unsatisfied, check_all};
use crate::path::PathId;

/// Why an offer has no room for an instance (Marathon's reject reasons,
/// counted per app in `/v2/queue`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// Too few cpus left.
    #[error("InsufficientCpus")]
    InsufficientCpus,
    /// Too little memory left.
    #[error("InsufficientMemory")]
    InsufficientMemory,
    /// Too little disk left.
    #[error("InsufficientDisk")]
    InsufficientDisk,
    /// Too few GPUs left.
    #[error("InsufficientGpus")]
    InsufficientGpus,
    /// The agent breaks one of the app's constraints.
    #[error("UnfulfilledConstraint: {0}")]
    UnfulfilledConstraint(Unsatisfied),
    /// The ports the app needs are not offered.
    #[error("InsufficientPorts")]
    InsufficientPorts,
    /// The agent is being drained or is scheduled for maintenance.
    #[error("AgentMaintenance")]
    AgentMaintenance,
    /// A resident app needs a role to reserve for, and the offer is for `*`.
    #[error("UnfulfilledRole")]
    UnfulfilledRole,
}

impl Unfit {
    /// The reason's name, as Marathon's `rejectSummary` lists it.
    pub fn reason(&self) -> &'static str {
        match self {
            Unfit::InsufficientCpus => "InsufficientCpus",
            Unfit::InsufficientMemory => "InsufficientMemory",
            Unfit::InsufficientDisk => "InsufficientDisk",
            Unfit::InsufficientGpus => "InsufficientGpus",
            Unfit::UnfulfilledConstraint(_) => "UnfulfilledConstraint",
            Unfit::InsufficientPorts => "InsufficientPorts",
            Unfit::AgentMaintenance => "AgentMaintenance",
            Unfit::UnfulfilledRole => "UnfulfilledRole",
        }
    }
}

/// The label with marathon-rs' framework id (on resident apps'
/// reservations, as Marathon labels them).
pub const FRAMEWORK_LABEL: &str = "marathon_framework_id";
/// The label with the reservation's id.
pub const RESERVATION_LABEL: &str = "marathon_task_id";

/// What is left of an offer while instances are placed on it.
#[derive(Clone, Debug)]
pub struct OfferSpace {
    /// The offer.
    pub offer: v1::Offer,
    /// Where it is.
    pub placement: Placement,
    /// The agent is leaving (drained, or in a maintenance window): nothing
    /// is placed on it.
    pub leaving: bool,
    /// The role the offer is allocated to (None from a master that does not
    /// say).
    pub role: Option<String>,
    // Unreserved resources left.
    cpus: f64,
    mem: f64,
    disk: f64,
    gpus: f64,
    ports: RangeSet,
    /// Resources reserved to the offer's role that no resident app of
    /// marathon-rs holds (static reservations from the agent's
    /// `--resources`, an operator's): plain apps of the role take from
    /// them before unreserved ones, as Marathon's `acceptedResourceRoles`
    /// allow.
    reserved: Resources,
}

/// What an instance takes from an offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Taken {
    /// The host ports chosen.
    pub ports: Vec<u32>,
    /// The TaskInfo's resources: reserved pieces as offered, then the rest
    /// unreserved.
    pub resources: Vec<v1::Resource>,
}

/// Whether a reserved resource is one a plain app may use: reserved to
/// `role`, no volume, not one of marathon-rs' resident reservations.
fn usable_reservation(r: &v1::Resource, role: &str) -> bool {
    let mine = r
        .reservations
        .last()
        .and_then(|res| res.labels.as_ref())
        .is_some_and(|l| {
            l.labels
                .iter()
                .any(|l| l.key == FRAMEWORK_LABEL || l.key == RESERVATION_LABEL)
        });
    r.reservations.last().and_then(|res| res.role.as_deref()) == Some(role)
        && !mine
        && r.disk.is_none()
        && r.shared.is_none()
}

impl OfferSpace {
    /// The space an offer has.
    pub fn new(offer: v1::Offer) -> Self {
        let all = Resources::from_protos(&offer.resources)
            .map(|r| r.unallocated())
            .unwrap_or_default();
        let r = all.unreserved();
        let role = offer.allocation_info.as_ref().and_then(|a| a.role.clone());
        let reserved = match &role {
            Some(role) => all.filter(|r| usable_reservation(r, role)),
            None => Resources::new(),
        };
        let placement = Placement {
            hostname: offer.hostname.clone(),
            region: offer
                .domain
                .as_ref()
                .and_then(|d| d.fault_domain.as_ref())
                .map(|f| f.region.name.clone()),
            zone: offer
                .domain
                .as_ref()
                .and_then(|d| d.fault_domain.as_ref())
                .map(|f| f.zone.name.clone()),
            attributes: offer
                .attributes
                .iter()
                .map(|a| (a.name.clone(), attribute_value_string(a)))
                .collect(),
        };
        OfferSpace {
            placement,
            leaving: offer.unavailability.is_some(),
            cpus: r.scalar("cpus"),
            mem: r.scalar("mem"),
            disk: r.scalar("disk"),
            gpus: r.scalar("gpus"),
            ports: r.ranges("ports"),
            role,
            reserved,
            offer,
        }
    }

    /// Takes room for one instance of a plain app: from the offer role's
    /// reservations first, then unreserved resources, as the app's
    /// `acceptedResourceRoles` allow (by default, both).
    pub fn reserve(
        &mut self,
        app: &App,
        constraints: &[Constraint],
        placed: &[&Placement],
    ) -> Result<Taken, Unfit> {
        let (unreserved, reserved) = if app.accepted_resource_roles.is_empty() {
            (true, true)
        } else {
            let accepts = |role: &str| app.accepted_resource_roles.iter().any(|r| r == role);
            (accepts("*"), app.role.as_deref().is_some_and(accepts))
        };
        self.take(app, app.disk, constraints, placed, unreserved, reserved)
    }

    /// Takes room for a new reservation of a resident app (its volumes'
    /// disk as well): unreserved resources only, which RESERVE converts.
    /// Returns the host ports chosen.
    pub fn reserve_new(
        &mut self,
        app: &App,
        constraints: &[Constraint],
        placed: &[&Placement],
    ) -> Result<Vec<u32>, Unfit> {
        let disk = app.disk + app.persistent_volumes().map(|(_, p)| p.size).sum::<f64>();
        self.take(app, disk, constraints, placed, true, false)
            .map(|t| t.ports)
    }

    fn take(
        &mut self,
        app: &App,
        disk: f64,
        constraints: &[Constraint],
        placed: &[&Placement],
        unreserved: bool,
        reserved: bool,
    ) -> Result<Taken, Unfit> {
        const EPS: f64 = 1e-9;
        if self.leaving {
            return Err(Unfit::AgentMaintenance);
        }
        let reserved = reserved && !self.reserved.is_empty();
        let have = |name: &str, free: f64| {
            (if unreserved { free } else { 0.0 })
                + (if reserved {
                    self.reserved.scalar(name)
                } else {
                    0.0
                })
        };
        if have("cpus", self.cpus) + EPS < app.cpus {
            return Err(Unfit::InsufficientCpus);
        }
        if have("mem", self.mem) + EPS < app.mem {
            return Err(Unfit::InsufficientMemory);
        }
        if have("disk", self.disk) + EPS < disk {
            return Err(Unfit::InsufficientDisk);
        }
        if have("gpus", self.gpus) + EPS < app.gpus {
            return Err(Unfit::InsufficientGpus);
        }
        check_all(constraints, &self.placement, placed).map_err(Unfit::UnfulfilledConstraint)?;
        let mut free = if unreserved {
            self.ports.clone()
        } else {
            RangeSet::default()
        };
        if reserved {
            free = free.union(&self.reserved.ranges("ports"));
        }
        let ports = pick_ports(app, &free).ok_or(Unfit::InsufficientPorts)?;
        if !reserved {
            self.cpus -= app.cpus;
            self.mem -= app.mem;
            self.disk -= disk;
            self.gpus -= app.gpus;
            self.ports = self.ports.difference(&port_set(&ports));
            let resources = task_resources(app, &ports);
            return Ok(Taken { ports, resources });
        }
        // Reserved pieces first (as offered, cut to what is needed), the
        // rest unreserved.
        let offered = self.reserved.to_protos();
        let mut pieces: Vec<v1::Resource> = Vec::new();
        let mut resources = Vec::new();
        for (name, need, free) in [
            ("cpus", app.cpus, &mut self.cpus),
            ("mem", app.mem, &mut self.mem),
            ("disk", disk, &mut self.disk),
            ("gpus", app.gpus, &mut self.gpus),
        ] {
            let mut left = need;
            for r in offered.iter().filter(|r| r.name == name) {
                let amount = r.scalar.map_or(0.0, |s| s.value).min(left);
                if amount <= EPS {
                    continue;
                }
                let mut piece = r.clone();
                piece.scalar = Some(v1::value::Scalar { value: amount });
                pieces.push(piece.clone());
                resources.push(piece);
                left -= amount;
            }
            if left > EPS || (need <= EPS && (name == "cpus" || name == "mem")) {
                resources.push(scalar(name, left.max(0.0)));
                *free -= left.max(0.0);
            }
        }
        let mut plain_ports = Vec::new();
        for port in &ports {
            let p = u64::from(*port);
            let owner = offered.iter().find(|r| {
                r.name == "ports"
                    && r.ranges
                        .as_ref()
                        .is_some_and(|rs| rs.range.iter().any(|x| x.begin <= p && p <= x.end))
            });
            match owner {
                Some(r) => {
                    let mut piece = r.clone();
                    piece.ranges = Some(v1::value::Ranges {
                        range: vec![v1::value::Range { begin: p, end: p }],
                    });
                    pieces.push(piece.clone());
                    resources.push(piece);
                }
                None => plain_ports.push(*port),
            }
        }
        if !plain_ports.is_empty() {
            resources.push(ports_resource(&plain_ports));
            self.ports = self.ports.difference(&port_set(&plain_ports));
        }
        if let Ok(used) = Resources::from_protos(&pieces) {
            self.reserved.subtract_all(&used);
        }
        Ok(Taken { ports, resources })
    }
}

/// Ports as a range set.
fn port_set(ports: &[u32]) -> RangeSet {
    RangeSet::from_ranges(ports.iter().map(|p| (u64::from(*p), u64::from(*p))))
}

/// A task's `ports` resource.
fn ports_resource(ports: &[u32]) -> v1::Resource {
    v1::Resource {
        name: "ports".into(),
        r#type: v1::value::Type::Ranges as i32,
        ranges: Some(v1::value::Ranges {
            range: ports
                .iter()
                .map(|p| v1::value::Range {
                    begin: u64::from(*p),
                    end: u64::from(*p),
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// The host ports an instance takes from `free`: any (a port 0) or the
/// one it names.
fn pick_ports(app: &App, free: &RangeSet) -> Option<Vec<u32>> {
    let wanted: Vec<Option<u32>> = app
        .ports()
        .iter()
        .filter_map(|p| p.host.map(|h| (h != 0).then_some(h)))
        .collect();
    let mut free = free.clone();
    let mut out = Vec::with_capacity(wanted.len());
    for w in wanted {
        let port = match w {
            Some(p) if free.contains_value(u64::from(p)) => p,
            Some(_) => return None,
            None => free.values().next().map(|p| p as u32)?,
        };
        free = free.difference(&RangeSet::from_ranges([(u64::from(port), u64::from(port))]));
        out.push(port);
    }
    Some(out)
}

fn scalar(name: &str, value: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value }),
        ..Default::default()
    }
}

fn env_var(name: &str, value: &str) -> v1::environment::Variable {
    v1::environment::Variable {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// Port names, declared ports and protocols, in the order of the host
/// ports an instance takes.
fn declared_ports(app: &App) -> Vec<(Option<String>, u32, String)> {
    app.ports()
        .into_iter()
        .filter(|p| p.host.is_some())
        .map(|p| (p.name, p.declared, p.protocol))
        .collect()
}

/// The resources one instance takes: its scalars and its host ports.
pub fn task_resources(app: &App, ports: &[u32]) -> Vec<v1::Resource> {
    let mut resources = vec![scalar("cpus", app.cpus), scalar("mem", app.mem)];
    if app.disk > 0.0 {
        resources.push(scalar("disk", app.disk));
    }
    if app.gpus > 0.0 {
        resources.push(scalar("gpus", app.gpus));
    }
    if !ports.is_empty() {
        resources.push(ports_resource(ports));
    }
    resources
}

/// The environment Marathon gives a task: HOST, PORT*, MESOS_TASK_ID,
/// MARATHON_APP_* (labels too) and the app's own variables.
fn task_env(
    app: &App,
    path: &PathId,
    task_id: &str,
    offer: &v1::Offer,
    ports: &[u32],
) -> BTreeMap<String, String> {
    let declared = declared_ports(app);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("HOST".into(), offer.hostname.clone());
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
        if let Some((name, declared_port, _)) = declared.get(i) {
            if *declared_port != 0 {
                env.insert(format!("PORT_{declared_port}"), p.to_string());
            }
            if let Some(n) = name {
                let key: String = n
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                env.insert(format!("PORT_{key}"), p.to_string());
            }
        }
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
        env.insert(
            "PORTS".into(),
            ports
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    env.insert("MESOS_TASK_ID".into(), task_id.into());
    env.insert("MARATHON_APP_ID".into(), path.to_string());
    env.insert("MARATHON_APP_VERSION".into(), app.version.clone());
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    env.insert("MARATHON_APP_RESOURCE_DISK".into(), app.disk.to_string());
    env.insert("MARATHON_APP_RESOURCE_GPUS".into(), app.gpus.to_string());
    if let Some(image) = app
        .container
        .as_ref()
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.clone())
    {
        env.insert("MARATHON_APP_DOCKER_IMAGE".into(), image);
    }
    let label_keys: Vec<String> = app
        .labels
        .keys()
        .filter(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|k| k.to_ascii_uppercase())
        .collect();
    env.insert("MARATHON_APP_LABELS".into(), label_keys.join(" "));
    for (k, v) in &app.labels {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            env.insert(
                format!("MARATHON_APP_LABEL_{}", k.to_ascii_uppercase()),
                v.clone(),
            );
        }
    }
    for (k, v) in &app.env {
        if let EnvValue::Value(v) = v {
            env.insert(k.clone(), v.clone());
        }
    }
    env
}

/// The TaskInfo for one instance of `app` on `offer` with host `ports`.
pub fn task_info(
    app: &App,
    path: &PathId,
    task_id: &str,
    offer: &v1::Offer,
    ports: &[u32],
) -> v1::TaskInfo {
    let resources = task_resources(app, ports);
    let env = task_env(app, path, task_id, offer, ports);
    let declared = declared_ports(app);
    let mut command = match (&app.cmd, app.args.is_empty()) {
        (Some(cmd), _) => v1::CommandInfo {
            value: Some(cmd.clone()),
            shell: Some(true),
            ..Default::default()
        },
        (None, false) => v1::CommandInfo {
            value: Some(app.args[0].clone()),
            arguments: app.args.clone(),
            shell: Some(false),
            ..Default::default()
        },
        (None, true) => v1::CommandInfo {
            shell: Some(false),
            ..Default::default()
        },
    };
    command.user = app.user.clone();
    command.environment = Some(v1::Environment {
        variables: env.iter().map(|(k, v)| env_var(k, v)).collect(),
    });
    command.uris = app
        .fetch
        .iter()
        .map(|f| v1::command_info::Uri {
            value: f.uri.clone(),
            executable: Some(f.executable),
            extract: Some(f.extract),
            cache: Some(f.cache),
            output_file: f.dest_path.clone(),
        })
        .collect();
    let name = path.reversed_dotted();
    let labels = task_labels(app);
    let discovery_ports: Vec<v1::Port> = if app.host_networking() {
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| v1::Port {
                number: *p,
                name: declared.get(i).and_then(|d| d.0.clone()),
                protocol: Some(
                    declared
                        .get(i)
                        .map(|d| d.2.clone())
                        .unwrap_or_else(|| "tcp".into()),
                ),
                visibility: None,
                labels: None,
            })
            .collect()
    } else {
        container_discovery_ports(app, ports)
    };
    let mut task = v1::TaskInfo {
        name: name.clone(),
        task_id: v1::TaskId {
            value: task_id.into(),
        },
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(command),
        labels: (!labels.is_empty()).then(|| v1::Labels {
            labels: labels
                .iter()
                .map(|(k, v)| v1::Label {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }),
        discovery: Some(v1::DiscoveryInfo {
            visibility: v1::discovery_info::Visibility::Framework as i32,
            name: Some(name),
            ports: Some(v1::Ports {
                ports: discovery_ports,
            }),
            ..Default::default()
        }),
        kill_policy: app.task_kill_grace_period_seconds.map(|g| v1::KillPolicy {
            grace_period: Some(v1::DurationInfo {
                nanoseconds: (g * 1e9) as i64,
            }),
        }),
        ..Default::default()
    };
    if let Some(hc) = app.health_checks.first() {
        task.health_check = Some(health_check(hc, ports));
    }
    if let Some(c) = &app.container {
        task.container = Some(container_info(app, c, ports));
    } else if !app.host_networking() {
        task.container = Some(v1::ContainerInfo {
            r#type: v1::container_info::Type::Mesos as i32,
            network_infos: network_infos(app, ports),
            ..Default::default()
        });
    }
    task
}

/// The port mappings of an app on container networks, each with the host
/// port it was given (mappings without `hostPort` take none).
fn mappings_with_host_ports<'a>(
    app: &'a App,
    ports: &[u32],
) -> Vec<(&'a crate::app::PortMapping, Option<u32>)> {
    let mut allocated = ports.iter();
    app.container
        .iter()
        .flat_map(|c| c.port_mappings.iter().flatten())
        .map(|m| {
            let host = m.host_port.and_then(|_| allocated.next().copied());
            (m, host)
        })
        .collect()
}

/// A MESOS container's networks, as Marathon asks Mesos: per container
/// network its name and labels, a request for one address, and the port
/// mappings that take a host port.
fn network_infos(app: &App, ports: &[u32]) -> Vec<v1::NetworkInfo> {
    let mappings = mappings_with_host_ports(app, ports);
    app.networks
        .iter()
        .filter(|n| n.mode != "host")
        .map(|n| v1::NetworkInfo {
            name: Some(if n.mode == "container/bridge" {
                "mesos-bridge".to_string()
            } else {
                n.name.clone().unwrap_or_default()
            }),
            labels: (!n.labels.is_empty()).then(|| v1::Labels {
                labels: n
                    .labels
                    .iter()
                    .map(|(k, v)| v1::Label {
                        key: k.clone(),
                        value: Some(v.clone()),
                    })
                    .collect(),
            }),
            ip_addresses: vec![v1::network_info::IpAddress::default()],
            port_mappings: mappings
                .iter()
                .filter_map(|(m, host)| {
                    host.map(|h| v1::network_info::PortMapping {
                        host_port: h,
                        container_port: if m.container_port == 0 {
                            h
                        } else {
                            m.container_port
                        },
                        protocol: Some(m.protocol.clone()),
                    })
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Discovery ports of an app on container networks (Marathon's
/// `PortDiscovery`): a mapping with a host port is that port, scoped
/// `host`; one without is the container port on each container network,
/// scoped `container`.
fn container_discovery_ports(app: &App, ports: &[u32]) -> Vec<v1::Port> {
    let label = |k: &str, v: &str| v1::Label {
        key: k.into(),
        value: Some(v.into()),
    };
    let networks: Vec<String> = app
        .networks
        .iter()
        .filter(|n| n.mode == "container")
        .filter_map(|n| n.name.clone())
        .collect();
    let mut out = Vec::new();
    for (m, host) in mappings_with_host_ports(app, ports) {
        let port = |number: u32, labels: Vec<v1::Label>| v1::Port {
            number,
            name: m.name.clone(),
            protocol: Some(m.protocol.clone()),
            visibility: None,
            labels: Some(v1::Labels { labels }),
        };
        match host {
            Some(h) => out.push(port(h, vec![label("network-scope", "host")])),
            None => {
                for n in &networks {
                    out.push(port(
                        m.container_port,
                        vec![
                            label("network-scope", "container"),
                            label("network-name", n),
                        ],
                    ));
                }
            }
        }
    }
    out
}

/// How long a task behind agora lb keeps running after it is told to stop
/// (TASK_KILLING, on which agora lb takes it out of HAProxy), unless the
/// app's `AGORA_SHUTDOWN_DELAY` label says otherwise; None for an app not
/// behind a load balancer (no `HAPROXY_GROUP` label).
///
/// Derived from what the app declares: its fastest HTTP or TCP health
/// check's interval, within 2 to 10 s, since HAProxy checks servers at that
/// interval (so even a load balancer that missed the event has stopped
/// sending new requests by then); 2 s without one, which covers agora lb
/// hearing the event (milliseconds) and requests in flight finishing.
pub fn drain_before_kill(app: &App) -> Option<f64> {
    if app.labels.contains_key(SHUTDOWN_DELAY_LABEL) || !app.labels.contains_key("HAPROXY_GROUP") {
        return None;
    }
    let interval = app
        .health_checks
        .iter()
        .filter(|h| h.protocol != "COMMAND")
        .map(|h| h.interval_seconds)
        .fold(None, |min: Option<f64>, i| {
            Some(min.map_or(i, |m| m.min(i)))
        });
    Some(interval.unwrap_or(2.0).clamp(2.0, 10.0))
}

/// The app's labels, with the drain of [`drain_before_kill`] added.
fn task_labels(app: &App) -> BTreeMap<String, String> {
    let mut labels = app.labels.clone();
    if let Some(secs) = drain_before_kill(app) {
        labels.insert(SHUTDOWN_DELAY_LABEL.into(), secs.to_string());
    }
    labels
}

fn health_check(hc: &crate::app::HealthCheck, ports: &[u32]) -> v1::HealthCheck {
    use v1::health_check::Type;
    let port = hc
        .port
        .or_else(|| ports.get(hc.port_index.unwrap_or(0) as usize).copied())
        .unwrap_or(0);
    let mut out = v1::HealthCheck {
        delay_seconds: Some(hc.delay_seconds),
        interval_seconds: Some(hc.interval_seconds),
        timeout_seconds: Some(hc.timeout_seconds),
        consecutive_failures: Some(hc.max_consecutive_failures),
        grace_period_seconds: Some(hc.grace_period_seconds),
        ..Default::default()
    };
    match hc.protocol.as_str() {
        "COMMAND" => {
            out.set_type(Type::Command);
            out.command = Some(v1::CommandInfo {
                value: hc.command.as_ref().map(|c| c.value.clone()),
                shell: Some(true),
                ..Default::default()
            });
        }
        "TCP" | "MESOS_TCP" => {
            out.set_type(Type::Tcp);
            out.tcp = Some(v1::health_check::TcpCheckInfo {
                protocol: None,
                port,
            });
        }
        proto => {
            out.set_type(Type::Http);
            out.http = Some(v1::health_check::HttpCheckInfo {
                protocol: None,
                scheme: Some(if proto.ends_with("HTTPS") {
                    "https".into()
                } else {
                    "http".into()
                }),
                port,
                path: hc.path.clone().or_else(|| Some("/".into())),
                statuses: Vec::new(),
            });
        }
    }
    out
}

fn container_info(app: &App, c: &crate::app::Container, ports: &[u32]) -> v1::ContainerInfo {
    use v1::container_info::docker_info::Network;
    let network = match app.networks.first().map(|n| n.mode.as_str()) {
        Some("container/bridge") => Network::Bridge,
        Some("container") => Network::User,
        _ => Network::Host,
    };
    let mappings: Vec<v1::container_info::docker_info::PortMapping> = c
        .port_mappings
        .iter()
        .flatten()
        .filter(|m| m.host_port.is_some())
        .zip(ports.iter())
        .map(|(m, host)| v1::container_info::docker_info::PortMapping {
            host_port: *host,
            container_port: if m.container_port == 0 {
                *host
            } else {
                m.container_port
            },
            protocol: Some(m.protocol.clone()),
        })
        .collect();
    let mut info = v1::ContainerInfo {
        r#type: if c.kind == "MESOS" {
            v1::container_info::Type::Mesos as i32
        } else {
            v1::container_info::Type::Docker as i32
        },
        network_infos: if c.kind == "MESOS" {
            network_infos(app, ports)
        } else {
            Vec::new()
        },
        volumes: c
            .volumes
            .iter()
            .map(|v| v1::Volume {
                mode: if v.mode == "RO" {
                    v1::volume::Mode::Ro as i32
                } else {
                    v1::volume::Mode::Rw as i32
                },
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    if let Some(d) = &c.docker {
        info.docker = Some(v1::container_info::DockerInfo {
            image: d.image.clone(),
            network: Some(network as i32),
            port_mappings: mappings,
            privileged: Some(d.privileged),
            parameters: d
                .parameters
                .iter()
                .map(|p| v1::Parameter {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
            force_pull_image: Some(d.force_pull_image),
            ..Default::default()
        });
        if network == Network::User {
            info.network_infos = app
                .networks
                .iter()
                .filter_map(|n| n.name.clone())
                .map(|name| v1::NetworkInfo {
                    name: Some(name),
                    ..Default::default()
                })
                .collect();
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{AppUpdate, build, parse_json};
    use crate::time::Millis;

    fn offer(cpus: f64, ports: &str) -> v1::Offer {
        v1::Offer {
            id: v1::OfferId { value: "o1".into() },
            framework_id: v1::FrameworkId { value: "f".into() },
            agent_id: v1::AgentId { value: "s1".into() },
            hostname: "agent-1".into(),
            resources: Resources::parse(&format!("cpus:{cpus};mem:1024;ports:{ports}"), "*")
                .unwrap()
                .to_legacy_protos(),
            attributes: agora_proto::resources::parse_attributes("rack:r1").unwrap(),
            ..Default::default()
        }
    }

    fn app(json: &str) -> App {
        let u: AppUpdate = parse_json(json.as_bytes()).unwrap();
        build(
            &PathId::parse(u.id.as_deref().unwrap()).unwrap(),
            None,
            &u,
            Millis(1),
        )
        .unwrap()
    }

    #[test]
    fn tasks_behind_the_load_balancer_drain_before_they_are_killed() {
        let drain = |json: &str| drain_before_kill(&app(json));
        // Not behind agora lb: no drain.
        assert_eq!(drain(r#"{"id":"/a","cmd":"x"}"#), None);
        // Behind it: 2 s, or the fastest HTTP/TCP check's interval (2..10 s).
        let lb = r#""labels":{"HAPROXY_GROUP":"external"}"#;
        assert_eq!(
            drain(&format!(r#"{{"id":"/a","cmd":"x",{lb}}}"#)),
            Some(2.0)
        );
        let checks = |i: &str| {
            format!(
                r#"{{"id":"/a","cmd":"x",{lb},"healthChecks":[{{"protocol":"HTTP","intervalSeconds":{i}}},{{"protocol":"COMMAND","command":{{"value":"true"}},"intervalSeconds":1}},{{"protocol":"TCP","intervalSeconds":30}}]}}"#
            )
        };
        assert_eq!(drain(&checks("5")), Some(5.0));
        assert_eq!(drain(&checks("1")), Some(2.0));
        assert_eq!(drain(&checks("60")), Some(10.0));
        // The app's own label wins (0: none), and reaches the task as given.
        let own = app(
            r#"{"id":"/a","cmd":"x","labels":{"HAPROXY_GROUP":"external","AGORA_SHUTDOWN_DELAY":"0"}}"#,
        );
        assert_eq!(drain_before_kill(&own), None);
        assert_eq!(task_labels(&own)[SHUTDOWN_DELAY_LABEL], "0");
        let derived = app(&format!(r#"{{"id":"/a","cmd":"x",{lb}}}"#));
        assert_eq!(task_labels(&derived)[SHUTDOWN_DELAY_LABEL], "2");
    }

    #[test]
    fn instances_are_packed_until_something_runs_out() {
        let a = app(
            r#"{"id":"/g/web","cmd":"serve","cpus":0.5,"mem":64,"portDefinitions":[{"port":0},{"port":0,"name":"admin"}]}"#,
        );
        let mut space = OfferSpace::new(offer(1.2, "[31000-31002]"));
        let first = space.reserve(&a, &[], &[]).unwrap();
        assert_eq!(first.ports, vec![31000, 31001]);
        assert_eq!(
            space.reserve(&a, &[], &[]).unwrap_err(),
            Unfit::InsufficientPorts
        );
        let mut space = OfferSpace::new(offer(0.8, "[31000-31010]"));
        space.reserve(&a, &[], &[]).unwrap();
        assert_eq!(
            space.reserve(&a, &[], &[]).unwrap_err(),
            Unfit::InsufficientCpus
        );
    }

    /// An offer allocated to `db` of `text` (`cpus(db):1` is reserved).
    fn db_offer(text: &str) -> v1::Offer {
        v1::Offer {
            resources: Resources::parse(text, "*")
                .unwrap()
                .allocated_to("db")
                .to_protos(),
            allocation_info: Some(v1::resource::AllocationInfo {
                role: Some("db".into()),
            }),
            ..offer(0.0, "[1-1]")
        }
    }

    /// (cpus reserved, cpus unreserved, ports reserved) of a task.
    fn split(resources: &[v1::Resource]) -> (f64, f64, Vec<u64>) {
        let mut out = (0.0, 0.0, Vec::new());
        for r in resources {
            let reserved = !r.reservations.is_empty();
            match r.name.as_str() {
                "cpus" if reserved => out.0 += r.scalar.unwrap().value,
                "cpus" => out.1 += r.scalar.unwrap().value,
                "ports" if reserved => {
                    out.2
                        .extend(r.ranges.as_ref().unwrap().range.iter().map(|x| x.begin));
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn plain_apps_use_their_roles_reservations_first_then_unreserved_resources() {
        let text =
            "cpus(db):0.75;mem(db):100;ports(db):[31000-31000];cpus:1;mem:512;ports:[32000-32010]";
        let a = app(
            r#"{"id":"/db/api","cmd":"x","cpus":0.5,"mem":64,"role":"db","portDefinitions":[{"port":0}]}"#,
        );
        let mut space = OfferSpace::new(db_offer(text));
        let first = space.reserve(&a, &[], &[]).unwrap();
        assert_eq!(split(&first.resources), (0.5, 0.0, vec![31000]));
        assert_eq!(first.ports, vec![31000]);
        // The rest of the reservation, then unreserved cpus; mem likewise.
        let second = space.reserve(&a, &[], &[]).unwrap();
        assert_eq!(split(&second.resources), (0.25, 0.25, vec![]));
        assert_eq!(second.ports, vec![32000]);
        let mem: Vec<(bool, f64)> = second
            .resources
            .iter()
            .filter(|r| r.name == "mem")
            .map(|r| (r.reservations.is_empty(), r.scalar.unwrap().value))
            .collect();
        assert_eq!(mem, [(false, 36.0), (true, 28.0)]);
        // What a task takes is in the offer: the master would refuse more.
        let offered = Resources::from_protos(&db_offer(text).resources)
            .unwrap()
            .unallocated();
        let mut used = Resources::from_protos(&first.resources).unwrap();
        used.add_all(&Resources::from_protos(&second.resources).unwrap());
        assert!(offered.contains(&used), "{used} not in {offered}");

        // acceptedResourceRoles: only unreserved, or only the role's.
        let only = |roles: &str| {
            app(&format!(
                r#"{{"id":"/db/api","cmd":"x","cpus":0.5,"mem":64,"role":"db","acceptedResourceRoles":{roles}}}"#
            ))
        };
        let t = OfferSpace::new(db_offer(text))
            .reserve(&only(r#"["*"]"#), &[], &[])
            .unwrap();
        assert_eq!(split(&t.resources), (0.0, 0.5, vec![]));
        let mut space = OfferSpace::new(db_offer(text));
        let t = space.reserve(&only(r#"["db"]"#), &[], &[]).unwrap();
        assert_eq!(split(&t.resources), (0.5, 0.0, vec![31000]));
        assert_eq!(
            space.reserve(&only(r#"["db"]"#), &[], &[]).unwrap_err(),
            Unfit::InsufficientCpus
        );
    }

    #[test]
    fn resident_reservations_are_not_for_plain_apps() {
        let mut o = db_offer("cpus(db):2;mem(db):512;cpus:0.1;mem:16");
        for res in o
            .resources
            .iter_mut()
            .filter_map(|r| r.reservations.first_mut())
        {
            res.labels = Some(v1::Labels {
                labels: vec![v1::Label {
                    key: RESERVATION_LABEL.into(),
                    value: Some("db_x.1".into()),
                }],
            });
        }
        let a = app(r#"{"id":"/db/api","cmd":"x","cpus":0.5,"mem":64,"role":"db"}"#);
        assert_eq!(
            OfferSpace::new(o).reserve(&a, &[], &[]).unwrap_err(),
            Unfit::InsufficientCpus
        );
    }

    #[test]
    fn required_ports_must_be_offered() {
        let a = app(
            r#"{"id":"/web","cmd":"serve","cpus":0.1,"requirePorts":true,"portDefinitions":[{"port":31005}]}"#,
        );
        assert_eq!(
            OfferSpace::new(offer(1.0, "[31000-31010]"))
                .reserve(&a, &[], &[])
                .unwrap()
                .ports,
            vec![31005]
        );
        assert!(
            OfferSpace::new(offer(1.0, "[32000-32010]"))
                .reserve(&a, &[], &[])
                .is_err()
        );
    }

    #[test]
    fn task_info_carries_marathon_env_discovery_and_health() {
        let a = app(
            r#"{"id":"/g/web","cmd":"serve","cpus":0.1,"mem":32,"labels":{"tier":"front"},"env":{"X":"1"},
                "portDefinitions":[{"port":10005,"name":"http"}],
                "healthChecks":[{"protocol":"MESOS_HTTP","path":"/health","portIndex":0}],
                "taskKillGracePeriodSeconds":7}"#,
        );
        let o = offer(1.0, "[31000-31010]");
        let t = task_info(&a, &a.path(), "g_web.123", &o, &[31003]);
        assert_eq!(t.name, "web.g");
        let env: BTreeMap<String, String> = t
            .command
            .as_ref()
            .unwrap()
            .environment
            .as_ref()
            .unwrap()
            .variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone().unwrap()))
            .collect();
        for (k, v) in [
            ("PORT0", "31003"),
            ("PORT", "31003"),
            ("PORTS", "31003"),
            ("PORT_10005", "31003"),
            ("PORT_HTTP", "31003"),
            ("HOST", "agent-1"),
            ("MARATHON_APP_ID", "/g/web"),
            ("MARATHON_APP_LABEL_TIER", "front"),
            ("X", "1"),
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        let hc = t.health_check.unwrap();
        assert_eq!(hc.http.as_ref().unwrap().port, 31003);
        assert_eq!(hc.http.unwrap().path.as_deref(), Some("/health"));
        assert_eq!(
            t.discovery.unwrap().ports.unwrap().ports[0].name.as_deref(),
            Some("http")
        );
        assert_eq!(
            t.kill_policy.unwrap().grace_period.unwrap().nanoseconds,
            7_000_000_000
        );
    }

    #[test]
    fn an_app_on_a_container_network_asks_mesos_for_it_as_marathon_does() {
        let a = app(r#"{"id":"/web","cmd":"serve","cpus":0.1,"mem":32,
                "networks":[{"name":"agora","labels":{"zone":"a"}}],
                "container":{"type":"MESOS","portMappings":[
                    {"containerPort":80,"name":"http","servicePort":10080},
                    {"containerPort":9090,"hostPort":0,"name":"admin"}]}}"#);
        assert_eq!(a.networks[0].mode, "container", "the default mode");
        let o = offer(1.0, "[31000-31010]");
        let t = task_info(&a, &a.path(), "web.1", &o, &[31004]);
        let c = t.container.unwrap();
        assert_eq!(c.r#type(), v1::container_info::Type::Mesos);
        let n = &c.network_infos[0];
        assert_eq!(n.name.as_deref(), Some("agora"));
        assert_eq!(n.ip_addresses.len(), 1, "a request for one address");
        assert_eq!(n.labels.as_ref().unwrap().labels[0].key, "zone");
        assert_eq!(
            n.port_mappings
                .iter()
                .map(|m| (m.host_port, m.container_port))
                .collect::<Vec<_>>(),
            [(31004, 9090)],
            "only the mapping with a host port"
        );
        let ports = t.discovery.unwrap().ports.unwrap().ports;
        let scoped: Vec<(u32, Vec<(String, String)>)> = ports
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.labels
                        .iter()
                        .flat_map(|l| &l.labels)
                        .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            scoped,
            [
                (
                    80,
                    vec![
                        ("network-scope".into(), "container".into()),
                        ("network-name".into(), "agora".into())
                    ]
                ),
                (31004, vec![("network-scope".into(), "host".into())]),
            ]
        );
        // Without a container, one is made: MESOS, on the network.
        let bare =
            app(r#"{"id":"/b","cmd":"serve","networks":[{"mode":"container","name":"agora"}]}"#);
        let t = task_info(&bare, &bare.path(), "b.1", &o, &[]);
        let c = t.container.unwrap();
        assert_eq!(c.r#type(), v1::container_info::Type::Mesos);
        assert_eq!(c.network_infos[0].name.as_deref(), Some("agora"));
        assert!(t.resources.iter().all(|r| r.name != "ports"));
    }

    #[test]
    fn container_networks_are_named_and_only_they_are() {
        let bad = |json: &str| {
            let u: AppUpdate = parse_json(json.as_bytes()).unwrap();
            build(&PathId::parse("/n").unwrap(), None, &u, Millis(1)).unwrap_err()
        };
        let e = format!(
            "{:?}",
            bad(r#"{"id":"/n","cmd":"x","networks":[{"mode":"container"}]}"#)
        );
        assert!(e.contains("/networks(0)/name"), "{e}");
        let e = format!(
            "{:?}",
            bad(r#"{"id":"/n","cmd":"x","networks":[{"mode":"host","name":"a"}]}"#)
        );
        assert!(e.contains("only a container network has a name"), "{e}");
        let e = format!(
            "{:?}",
            bad(r#"{"id":"/n","cmd":"x","networks":[{"name":"-bad name"}]}"#)
        );
        assert!(e.contains("/networks(0)/name"), "{e}");
    }
}
