//! The record builder: a pure function from the master's state (the legacy
//! `/master/state` JSON) to the set of records `agora dns` serves, named the
//! way Mesos-DNS names them.
//!
//! Only running tasks on known agents get records. One task with a name that
//! normalises to nothing, or with ports that do not parse, loses its own
//! records and never the others'.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;
use sha1::{Digest as _, Sha1};

/// Where a task's addresses come from, tried in order (Mesos-DNS `IPSources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// NetworkInfo addresses of the latest TASK_RUNNING status.
    Netinfo,
    /// The status label `MesosContainerizer.NetworkSettings.IPAddress`.
    Mesos,
    /// The status label `Docker.NetworkSettings.IPAddress`.
    Docker,
    /// The agent's address.
    Host,
}

impl std::str::FromStr for IpSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "netinfo" => Ok(IpSource::Netinfo),
            "mesos" => Ok(IpSource::Mesos),
            "docker" => Ok(IpSource::Docker),
            "host" => Ok(IpSource::Host),
            other => Err(format!(
                "unknown IP source '{other}' (netinfo, mesos, docker, host)"
            )),
        }
    }
}

/// What shapes the records.
#[derive(Debug, Clone)]
pub struct Config {
    /// The domain, without dots at the ends (`mesos`).
    pub domain: String,
    /// IP sources in order.
    pub ip_sources: Vec<IpSource>,
    /// The name server's own addresses (for `ns1.<domain>`).
    pub ns_addresses: Vec<IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "mesos".into(),
            ip_sources: vec![IpSource::Netinfo, IpSource::Mesos, IpSource::Host],
            ns_addresses: Vec::new(),
        }
    }
}

/// The records: names are lowercase and end with a dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// `domain.`
    pub zone: String,
    /// A and AAAA records.
    pub hosts: BTreeMap<String, BTreeSet<IpAddr>>,
    /// SRV records: name → (target, port).
    pub services: BTreeMap<String, BTreeSet<(String, u16)>>,
    /// Every framework and the records of each of its running tasks, as
    /// Mesos-DNS' `/v1/enumerate` lists them.
    pub enumeration: Vec<EnumFramework>,
}

/// A framework in `/v1/enumerate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnumFramework {
    /// Its tasks that have records.
    pub tasks: Vec<EnumTask>,
    /// The framework's name.
    pub name: String,
}

/// A task in `/v1/enumerate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnumTask {
    /// The task's name.
    pub name: String,
    /// The task's id.
    pub id: String,
    /// The records it gave.
    pub records: Vec<EnumRecord>,
}

/// One record in `/v1/enumerate`: an A or AAAA name and address, or an SRV
/// name and `target:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnumRecord {
    /// The record's name.
    pub name: String,
    /// Its address, or `target:port`.
    pub host: String,
    /// `A`, `AAAA` or `SRV`.
    pub rtype: &'static str,
}

/// Adds records and notes each one for the enumeration.
struct Recorder<'a> {
    records: &'a mut Records,
    log: Vec<EnumRecord>,
}

impl Recorder<'_> {
    fn host(&mut self, name: String, ip: IpAddr) {
        self.log.push(EnumRecord {
            name: name.clone(),
            host: ip.to_string(),
            rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
        });
        self.records.host(name, ip);
    }

    fn service(&mut self, name: String, target: String, port: u16) {
        self.log.push(EnumRecord {
            name: name.clone(),
            host: format!("{target}:{port}"),
            rtype: "SRV",
        });
        self.records.service(name, target, port);
    }
}

impl Records {
    /// The name server of the zone (SOA mname, NS).
    pub fn ns_name(&self) -> String {
        format!("ns1.{}", self.zone)
    }

    fn host(&mut self, name: String, ip: IpAddr) {
        self.hosts.entry(name).or_default().insert(ip);
    }

    fn service(&mut self, name: String, target: String, port: u16) {
        self.services
            .entry(name)
            .or_default()
            .insert((target, port));
    }

    /// Whether any record has this name.
    pub fn knows(&self, name: &str) -> bool {
        name == self.zone || self.hosts.contains_key(name) || self.services.contains_key(name)
    }
}

/// An RFC 1123 label from a name: lowercase; `.`, `_` and `-` become `-`;
/// other characters are dropped; at most 63 characters, no `-` at the ends.
pub fn label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '.' | '_' | '-' => Some('-'),
            _ => None,
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut: String = trimmed.chars().take(63).collect();
    cut.trim_end_matches('-').to_string()
}

/// A name whose dots separate labels (framework names, DiscoveryInfo
/// names): each part normalised, empty parts dropped.
pub fn dotted(name: &str) -> String {
    name.split('.')
        .map(label)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// z-base-32 of `bytes` (most significant bit first).
pub fn zbase32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ZBASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ZBASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// `T-<h>-<s>`: the task's canonical, unique label.
pub fn canonical(task_label: &str, task_id: &str, agent_id: &str) -> String {
    let hash = zbase32(&Sha1::digest(task_id.as_bytes()));
    let tail = agent_id
        .rsplit('-')
        .next()
        .unwrap_or(agent_id)
        .to_lowercase();
    format!("{task_label}-{}-{}", &hash[..5], label(&tail))
}

/// The IP of a libprocess pid (`name@ip:port`) and its port.
fn pid_address(pid: &str) -> Option<(IpAddr, u16)> {
    let (_, addr) = pid.rsplit_once('@')?;
    let (ip, port) = addr.rsplit_once(':')?;
    Some((
        ip.trim_matches(['[', ']']).parse().ok()?,
        port.parse().ok()?,
    ))
}

/// Host ports from the legacy `resources.ports` string (`[31000-31001, 31005-31005]`).
pub fn ports(spec: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for range in spec.trim_matches(['[', ']']).split(',') {
        let range = range.trim();
        if range.is_empty() {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>())
            && a <= b
            && b - a < 1024
        {
            out.extend(a..=b);
        }
    }
    out
}

fn task_ips(task: &Value, agent_ip: Option<IpAddr>, sources: &[IpSource]) -> Vec<IpAddr> {
    let running = task["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|s| s["state"] == "TASK_RUNNING");
    for source in sources {
        let ips: Vec<IpAddr> = match source {
            // Only the addresses of named networks (CNI, Docker USER): an
            // unnamed one is the agent's own or a docker0-private address
            // other hosts cannot reach (Mesos-DNS' long-standing trap).
            IpSource::Netinfo => running
                .map(|s| {
                    s["container_status"]["network_infos"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|n| n["name"].as_str().is_some_and(|n| !n.is_empty()))
                        .flat_map(|n| n["ip_addresses"].as_array().into_iter().flatten())
                        .filter_map(|a| a["ip_address"].as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            IpSource::Mesos | IpSource::Docker => {
                let key = if *source == IpSource::Mesos {
                    "MesosContainerizer.NetworkSettings.IPAddress"
                } else {
                    "Docker.NetworkSettings.IPAddress"
                };
                running
                    .and_then(|s| {
                        s["labels"].as_array()?.iter().find(|l| l["key"] == key)?["value"]
                            .as_str()?
                            .parse()
                            .ok()
                    })
                    .into_iter()
                    .collect()
            }
            IpSource::Host => agent_ip.into_iter().collect(),
        };
        if !ips.is_empty() {
            return ips;
        }
    }
    Vec::new()
}

/// The records for a master state.
pub fn build(state: &Value, config: &Config) -> Records {
    let domain = dotted(&config.domain);
    let d = format!("{domain}.");
    let mut r = Records {
        zone: d.clone(),
        ..Records::default()
    };
    for ip in &config.ns_addresses {
        r.host(format!("ns1.{d}"), *ip);
    }
    // Masters.
    let leader = state["leader"].as_str().and_then(pid_address);
    if let Some((ip, port)) = leader {
        r.host(format!("leader.{d}"), ip);
        r.host(format!("master.{d}"), ip);
        r.host(format!("master0.{d}"), ip);
        for proto in ["tcp", "udp"] {
            r.service(format!("_leader._{proto}.{d}"), format!("leader.{d}"), port);
        }
    }
    // Agents.
    let mut agents: BTreeMap<String, IpAddr> = BTreeMap::new();
    for a in state["slaves"].as_array().into_iter().flatten() {
        let (Some(id), Some((ip, port))) =
            (a["id"].as_str(), a["pid"].as_str().and_then(pid_address))
        else {
            continue;
        };
        agents.insert(id.to_string(), ip);
        r.host(format!("slave.{d}"), ip);
        // Each agent by its hostname, too (Mesos-DNS has only `slave.D`).
        let h = label(a["hostname"].as_str().unwrap_or(""));
        if !h.is_empty() {
            r.host(format!("{h}.slave.{d}"), ip);
        }
        r.service(format!("_slave._tcp.{d}"), format!("slave.{d}"), port);
    }
    // Frameworks and their tasks.
    for f in state["frameworks"].as_array().into_iter().flatten() {
        let fname = dotted(f["name"].as_str().unwrap_or(""));
        if fname.is_empty() {
            continue;
        }
        if let Some((ip, port)) = f["pid"].as_str().and_then(pid_address) {
            r.host(format!("{fname}.{d}"), ip);
            r.service(
                format!("_framework._tcp.{fname}.{d}"),
                format!("{fname}.{d}"),
                port,
            );
        }
        let mut framework = EnumFramework {
            tasks: Vec::new(),
            name: f["name"].as_str().unwrap_or("").to_string(),
        };
        for t in f["tasks"].as_array().into_iter().flatten() {
            let mut recorder = Recorder {
                records: &mut r,
                log: Vec::new(),
            };
            task_records(&mut recorder, t, &fname, &d, &agents, config);
            if !recorder.log.is_empty() {
                framework.tasks.push(EnumTask {
                    name: t["name"].as_str().unwrap_or("").to_string(),
                    id: t["id"].as_str().unwrap_or("").to_string(),
                    records: recorder.log,
                });
            }
        }
        r.enumeration.push(framework);
    }
    r
}

fn task_records(
    r: &mut Recorder<'_>,
    t: &Value,
    fname: &str,
    d: &str,
    agents: &BTreeMap<String, IpAddr>,
    config: &Config,
) {
    if t["state"] != "TASK_RUNNING" {
        return;
    }
    let (Some(id), Some(agent)) = (t["id"].as_str(), t["slave_id"].as_str()) else {
        return;
    };
    let Some(&agent_ip) = agents.get(agent) else {
        return;
    };
    let name = t["name"].as_str().unwrap_or("");
    let tl = label(name);
    if tl.is_empty() {
        return;
    }
    let canon = canonical(&tl, id, agent);
    let ips = task_ips(t, Some(agent_ip), &config.ip_sources);
    // A task reachable under its label, its canonical label, and (for a
    // dotted DiscoveryInfo name such as Marathon's `app.group`) that name.
    let discovery = &t["discovery"];
    let raw = discovery["name"]
        .as_str()
        .map(dotted)
        .filter(|n| !n.is_empty() && *n != tl);
    for ip in &ips {
        r.host(format!("{tl}.{fname}.{d}"), *ip);
        r.host(format!("{canon}.{fname}.{d}"), *ip);
        if let Some(raw) = &raw {
            r.host(format!("{raw}.{fname}.{d}"), *ip);
        }
    }
    r.host(format!("{tl}.{fname}.slave.{d}"), agent_ip);
    r.host(format!("{canon}.{fname}.slave.{d}"), agent_ip);
    let host_ports = t["resources"]["ports"]
        .as_str()
        .map(ports)
        .unwrap_or_default();
    let has_discovery = discovery.is_object();
    for port in &host_ports {
        for proto in ["tcp", "udp"] {
            r.service(
                format!("_{tl}._{proto}.{fname}.slave.{d}"),
                format!("{canon}.{fname}.slave.{d}"),
                *port,
            );
            if !has_discovery {
                r.service(
                    format!("_{tl}._{proto}.{fname}.{d}"),
                    format!("{canon}.{fname}.{d}"),
                    *port,
                );
            }
        }
    }
    if !has_discovery {
        return;
    }
    let mut names = vec![tl.clone()];
    if let Some(raw) = &raw {
        names.push(raw.clone());
    }
    for p in discovery["ports"]["ports"].as_array().into_iter().flatten() {
        let Some(number) = p["number"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        let protos: Vec<String> = match p["protocol"].as_str().map(label) {
            Some(proto) if !proto.is_empty() => vec![proto],
            _ => vec!["tcp".into(), "udp".into()],
        };
        let port_name = p["name"].as_str().map(label).filter(|n| !n.is_empty());
        // Marathon scopes a container network's ports: one mapped to a host
        // port is reached at the agent, the others at the task's address.
        let host_scoped = p["labels"]["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["key"] == "network-scope" && l["value"] == "host");
        for n in &names {
            for proto in &protos {
                let target = if host_scoped {
                    format!("{canon}.{fname}.slave.{d}")
                } else {
                    format!("{canon}.{fname}.{d}")
                };
                r.service(format!("_{n}._{proto}.{fname}.{d}"), target.clone(), number);
                if let Some(pn) = &port_name {
                    r.service(format!("_{pn}._{n}._{proto}.{fname}.{d}"), target, number);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_follow_rfc1123() {
        assert_eq!(label("My_App.v2"), "my-app-v2");
        assert_eq!(label("--über!app--"), "berapp");
        assert_eq!(label(&"x".repeat(80)).len(), 63);
        assert_eq!(label("!!!"), "");
        assert_eq!(dotted("Marathon.User"), "marathon.user");
        assert_eq!(dotted("a..b"), "a.b");
    }

    #[test]
    fn zbase32_matches_the_reference() {
        // From the z-base-32 specification's examples.
        assert_eq!(zbase32(&[0xF0, 0xBF, 0xC7]), "6n9hq");
        assert_eq!(zbase32(&[0xD4, 0x7A, 0x04]), "4t7ye");
        assert_eq!(zbase32(&[0x00]), "yy");
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(
            ports("[31000-31001, 31005-31005]"),
            vec![31000, 31001, 31005]
        );
        assert_eq!(ports("[]"), Vec::<u16>::new());
        assert_eq!(ports("[x-1]"), Vec::<u16>::new());
    }

    fn state() -> Value {
        json!({
            "leader": "master@10.0.0.1:5050",
            "slaves": [
                {"id": "A-S1", "hostname": "agent-1", "pid": "slave(1)@10.0.0.11:5051"},
                {"id": "A-S2", "hostname": "agent-2", "pid": "slave(1)@10.0.0.12:5051"}
            ],
            "frameworks": [{
                "id": "F-1", "name": "marathon", "pid": "scheduler-1@10.0.0.5:8080",
                "tasks": [
                    {"id": "web_group.1", "name": "web.group", "slave_id": "A-S1", "state": "TASK_RUNNING",
                     "resources": {"ports": "[31000-31000]"},
                     "discovery": {"name": "web.group", "visibility": "FRAMEWORK",
                                   "ports": {"ports": [{"number": 31000, "name": "http", "protocol": "tcp"}]}},
                     "statuses": [{"state": "TASK_RUNNING"}]},
                    {"id": "web_group.2", "name": "web.group", "slave_id": "A-S2", "state": "TASK_RUNNING",
                     "resources": {"ports": "[31007-31007]"},
                     "discovery": {"name": "web.group", "visibility": "FRAMEWORK",
                                   "ports": {"ports": [{"number": 31007, "name": "http", "protocol": "tcp"}]}},
                     "statuses": [{"state": "TASK_RUNNING", "container_status": {"network_infos": [
                         {"ip_addresses": [{"ip_address": "172.17.0.9"}]}]}}]},
                    {"id": "staging.1", "name": "staging", "slave_id": "A-S1", "state": "TASK_STAGING"},
                    {"id": "bad.1", "name": "!!!", "slave_id": "A-S1", "state": "TASK_RUNNING"},
                    {"id": "plain.1", "name": "plain", "slave_id": "A-S2", "state": "TASK_RUNNING",
                     "resources": {"ports": "[31100-31101]"}}
                ]
            }]
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tasks_are_named_as_mesos_dns_names_them() {
        let r = build(&state(), &Config::default());
        let hosts = |n: &str| r.hosts.get(n).cloned().unwrap_or_default();
        // Task IPs: named networks' first, else the agent's (172.17.0.9, an
        // unnamed docker0 address, reaches nothing from other hosts).
        assert_eq!(
            hosts("web-group.marathon.mesos."),
            [ip("10.0.0.11"), ip("10.0.0.12")].into()
        );
        // Marathon's dotted DiscoveryInfo name answers too.
        assert_eq!(
            hosts("web.group.marathon.mesos."),
            hosts("web-group.marathon.mesos.")
        );
        assert_eq!(
            hosts("web-group.marathon.slave.mesos."),
            [ip("10.0.0.11"), ip("10.0.0.12")].into()
        );
        // Canonical names: one per task.
        let canon = canonical("web-group", "web_group.1", "A-S1");
        assert!(
            canon.starts_with("web-group-") && canon.ends_with("-s1"),
            "{canon}"
        );
        assert_eq!(
            hosts(&format!("{canon}.marathon.mesos.")),
            [ip("10.0.0.11")].into()
        );
        // SRV from DiscoveryInfo (named and not), and from the host ports.
        let srv = &r.services["_web-group._tcp.marathon.mesos."];
        assert_eq!(srv.len(), 2);
        assert!(srv.contains(&(format!("{canon}.marathon.mesos."), 31000)));
        assert!(
            r.services
                .contains_key("_http._web-group._tcp.marathon.mesos.")
        );
        assert!(r.services.contains_key("_web.group._tcp.marathon.mesos."));
        assert!(!r.services.contains_key("_web-group._udp.marathon.mesos."));
        assert_eq!(r.services["_web-group._udp.marathon.slave.mesos."].len(), 2);
        // Without DiscoveryInfo: both protocols under the framework too.
        assert_eq!(r.services["_plain._udp.marathon.mesos."].len(), 2);
        // Not running, or a name that normalises to nothing: no records,
        // and nothing else is lost.
        assert!(!r.hosts.contains_key("staging.marathon.mesos."));
        assert!(r.hosts.keys().all(|k| !k.starts_with('.')));
        // Masters, agents, the framework.
        assert_eq!(hosts("leader.mesos."), [ip("10.0.0.1")].into());
        assert_eq!(hosts("master.mesos."), [ip("10.0.0.1")].into());
        assert_eq!(hosts("slave.mesos.").len(), 2);
        assert_eq!(hosts("agent-2.slave.mesos."), [ip("10.0.0.12")].into());
        assert_eq!(hosts("marathon.mesos."), [ip("10.0.0.5")].into());
        assert!(r.services["_leader._tcp.mesos."].contains(&("leader.mesos.".to_string(), 5050)));
    }

    #[test]
    fn the_enumeration_lists_each_running_task_with_exactly_its_records() {
        let r = build(&state(), &Config::default());
        assert_eq!(r.enumeration.len(), 1);
        let f = &r.enumeration[0];
        assert_eq!(f.name, "marathon");
        let ids: Vec<&str> = f.tasks.iter().map(|t| t.id.as_str()).collect();
        // Not the staging task, nor the one whose name normalises to nothing.
        assert_eq!(ids, ["web_group.1", "web_group.2", "plain.1"]);
        let web = &f.tasks[0];
        assert_eq!(web.name, "web.group");
        let canon = canonical("web-group", "web_group.1", "A-S1");
        assert!(web.records.contains(&EnumRecord {
            name: "web-group.marathon.mesos.".into(),
            host: "10.0.0.11".into(),
            rtype: "A",
        }));
        assert!(web.records.contains(&EnumRecord {
            name: "_web-group._tcp.marathon.mesos.".into(),
            host: format!("{canon}.marathon.mesos.:31000"),
            rtype: "SRV",
        }));
        // Every record listed is served, and none of another task's.
        for rec in &web.records {
            assert!(r.knows(&rec.name), "{rec:?}");
            assert!(!rec.host.contains("-s2."), "{rec:?}");
        }
    }

    #[test]
    fn tasks_on_a_container_network_answer_with_their_own_address_and_scoped_ports() {
        let mut st = state();
        st["frameworks"][0]["tasks"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "id": "ipt.1", "name": "ipt", "slave_id": "A-S1", "state": "TASK_RUNNING",
                "resources": {"ports": "[31005-31005]"},
                "discovery": {"name": "ipt", "visibility": "FRAMEWORK", "ports": {"ports": [
                    {"number": 80, "name": "http", "protocol": "tcp", "labels": {"labels": [
                        {"key": "network-scope", "value": "container"}, {"key": "network-name", "value": "agora"}]}},
                    {"number": 31005, "name": "admin", "protocol": "tcp", "labels": {"labels": [
                        {"key": "network-scope", "value": "host"}]}}]}},
                "statuses": [{"state": "TASK_RUNNING", "container_status": {"network_infos": [
                    {"name": "agora", "ip_addresses": [{"protocol": "IPv4", "ip_address": "10.200.1.5"}]}]}}]}));
        let r = build(&st, &Config::default());
        assert_eq!(r.hosts["ipt.marathon.mesos."], [ip("10.200.1.5")].into());
        assert_eq!(
            r.hosts["ipt.marathon.slave.mesos."],
            [ip("10.0.0.11")].into()
        );
        let canon = canonical("ipt", "ipt.1", "A-S1");
        let srv = &r.services["_ipt._tcp.marathon.mesos."];
        assert!(
            srv.contains(&(format!("{canon}.marathon.mesos."), 80)),
            "{srv:?}"
        );
        assert!(
            srv.contains(&(format!("{canon}.marathon.slave.mesos."), 31005)),
            "a host-scoped port is at the agent: {srv:?}"
        );
    }

    #[test]
    fn ip_sources_are_tried_in_order() {
        let only_host = Config {
            ip_sources: vec![IpSource::Host],
            ..Config::default()
        };
        let r = build(&state(), &only_host);
        assert_eq!(
            r.hosts["web-group.marathon.mesos."],
            [ip("10.0.0.11"), ip("10.0.0.12")].into()
        );
        let none = Config {
            ip_sources: vec![IpSource::Docker],
            ..Config::default()
        };
        let r = build(&state(), &none);
        assert!(!r.hosts.contains_key("web-group.marathon.mesos."));
        // The agent-side names do not depend on the sources.
        assert!(r.hosts.contains_key("web-group.marathon.slave.mesos."));
    }
}

#[cfg(test)]
mod fuzz {
    //! The master's state, as agora dns reads it, with random shapes and
    //! names: records are built from what makes sense, nothing panics.
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn name() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9.-]{0,30}", "\\PC{0,30}", Just("a".repeat(300))]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn any_state_builds_records_without_panicking(
            fw in name(), task in name(), host in name(), ip in name(),
            ports in prop::collection::vec(any::<i64>(), 0..3),
            junk in prop_oneof![Just(Value::Null), Just(json!(3)), Just(json!("x")), Just(json!([1, {}]))],
        ) {
            let state = json!({
                "leader": format!("master@{ip}:5050"), "hostname": host, "pid": junk,
                "slaves": [{"id": "S1", "hostname": host, "pid": format!("slave(1)@{ip}:5051")}, junk],
                "frameworks": [{"name": fw, "id": "F1", "tasks": [
                    {"id": task, "name": task, "state": "TASK_RUNNING", "slave_id": "S1",
                     "resources": {"ports": format!("[{}-{}]", ports.first().copied().unwrap_or(0), ports.last().copied().unwrap_or(0))},
                     "discovery": {"name": task, "ports": {"ports": ports.iter().map(|p| json!({"number": p, "name": fw})).collect::<Vec<_>>()}},
                     "statuses": [{"state": "TASK_RUNNING", "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}}]},
                    junk]}],
            });
            let _ = super::build(&state, &super::Config::default());
        }
    }
}
