//! Containers in networks of their own, through CNI (Mesos' `network/cni`
//! isolator): a container that names networks in its `ContainerInfo` gets a
//! network namespace (`/run/netns/agora-<container>`, with `lo` up), and for
//! each network, in order, interface `eth<i>` from the network's plugins
//! (ADD at launch, DEL in reverse order when it ends, and at recovery for
//! containers no executor owns). The executor starts inside the namespace,
//! so it and its tasks have the network's address; the addresses go back
//! to the core, which reports them in every status update.
//!
//! A network's configuration comes from `--network-cni-config-dir` (Mesos'
//! single-plugin files, and `.conflist` lists) by its `name`; the overlay
//! network (`agora master --overlay-cidr`) needs none: the agent writes its
//! own (`bridge` on the overlay bridge with `host-local` addresses from the
//! agent's subnet, then `portmap` for host ports) to `<work-dir>/cni/`.
//!
//! CNI is a process protocol (environment, a JSON configuration in, a
//! JSON result out); the Rust crates that run it are young and unmaintained,
//! so the few rules a runtime follows (chaining with `prevResult`,
//! `runtimeConfig` for declared capabilities, the result kept for DEL) are
//! here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use agora_agent_core::Overlay;
use agora_proto::v1;
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tracing::{info, warn};

/// Where named network namespaces live (as `ip netns` makes them).
const NETNS_DIR: &str = "/run/netns";

/// A failed network attachment or detachment.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No configuration names this network.
    #[error("unknown CNI network '{0}' (not in --network-cni-config-dir, and not the overlay)")]
    Unknown(String),
    /// A network named twice.
    #[error("the container names network '{0}' twice")]
    Twice(String),
    /// A configuration file that cannot be used.
    #[error("CNI configuration {file}: {why}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// A plugin binary missing from the plugin directories.
    #[error("CNI plugin '{plugin}' is not in {path}")]
    NoPlugin {
        /// The plugin's type.
        plugin: String,
        /// The search path.
        path: String,
    },
    /// A plugin failed.
    #[error("CNI plugin '{plugin}' {command} failed: {message}")]
    Plugin {
        /// The plugin's type.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// Its error message (or output).
        message: String,
    },
    /// Running a command or reading a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CniError {
    let what = what.into();
    move |source| CniError::Io { what, source }
}

/// The agent's CNI settings and state.
#[derive(Debug, Clone)]
pub struct Cni {
    /// `CNI_PATH`: where plugins are looked for (`:`-separated).
    plugins: String,
    /// `--network-cni-config-dir`.
    config_dir: Option<PathBuf>,
    /// `<work-dir>/cni`: each container's attachments, and host-local's
    /// leases for the overlay network.
    root: PathBuf,
}

/// One network of a container, as recorded for its DEL.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Attachment {
    /// The network's name.
    name: String,
    /// The interface in the container.
    ifname: String,
    /// The configuration list used for ADD.
    config: Value,
    /// The ADD result (the last plugin's).
    result: Value,
    /// The addresses it gave (without prefixes).
    ips: Vec<String>,
    /// The NetworkInfo's labels, port mappings: what the task asked for
    /// (kept to report the same NetworkInfo after a restart).
    #[serde(default)]
    port_mappings: Vec<(u32, u32, String)>,
}

impl Cni {
    /// The default plugin path: Debian's `containernetworking-plugins`, then
    /// the CNI project's own.
    pub const DEFAULT_PLUGINS: &'static str = "/usr/lib/cni:/opt/cni/bin";

    /// CNI with plugins in `plugins` (`:`-separated), configurations in
    /// `config_dir`, state under `work_dir/cni`.
    pub fn new(plugins: Option<String>, config_dir: Option<PathBuf>, work_dir: &Path) -> Cni {
        Cni {
            plugins: plugins.unwrap_or_else(|| Self::DEFAULT_PLUGINS.to_string()),
            config_dir,
            root: work_dir.join("cni"),
        }
    }

    /// [`Cni::new`] from the agent's flags: a configuration directory
    /// given must exist (as Mesos requires).
    pub fn configured(
        plugins: Option<String>,
        config_dir: Option<PathBuf>,
        work_dir: &Path,
    ) -> std::io::Result<Cni> {
        if let Some(dir) = config_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "--network-cni-config-dir {} is not a directory",
                    dir.display()
                ),
            ));
        }
        Ok(Cni::new(plugins, config_dir, work_dir))
    }

    /// CNI for an executor joining its Docker containers to networks: the
    /// agent's plugin path and state directory (`AGORA_CNI_PATH`,
    /// `AGORA_CNI_ROOT`), no configuration directory (the agent hands it
    /// the configurations).
    pub fn for_executor(plugins: String, root: PathBuf) -> Cni {
        Cni {
            plugins,
            config_dir: None,
            root,
        }
    }

    /// The plugin path (`CNI_PATH`).
    pub fn plugins(&self) -> &str {
        &self.plugins
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn netns_name(container: &str) -> String {
        format!("agora-{container}")
    }

    /// The path of a container's network namespace.
    pub fn netns_path(container: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(Self::netns_name(container))
    }

    fn container_dir(&self, container: &str) -> PathBuf {
        self.root.join("containers").join(container)
    }

    /// The configuration list of network `name`: a file in the config
    /// directory (the first, in name order, whose `name` it is), else the
    /// overlay's own.
    pub fn config(&self, name: &str, overlay: Option<&Overlay>) -> Result<Value, CniError> {
        if let Some(dir) = &self.config_dir {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(format!("reading {}", dir.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let Ok(text) = std::fs::read_to_string(&file) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    warn!(file = %file.display(), "not JSON: skipped");
                    continue;
                };
                if v["name"].as_str() == Some(name) {
                    return as_list(v).map_err(|why| CniError::Config {
                        file: file.display().to_string(),
                        why,
                    });
                }
            }
        }
        match overlay {
            Some(o) if o.network.name == name => self.overlay_config(o),
            _ => Err(CniError::Unknown(name.to_string())),
        }
    }

    /// The overlay network's configuration: the agent's bridge, addresses
    /// from the first half of its subnet, a default route through the
    /// bridge (the executor reaches the agent that way), host ports mapped.
    /// Written to `<work-dir>/cni/<name>.conflist` for operators to read.
    fn overlay_config(&self, o: &Overlay) -> Result<Value, CniError> {
        let subnet: Ipv4Net = o.network.subnet.parse().map_err(|_| CniError::Config {
            file: "(overlay)".into(),
            why: format!("subnet '{}' is not a CIDR", o.network.subnet),
        })?;
        let bridge = crate::overlay::bridge_device(&o.network.name);
        let mtu: u32 = std::fs::read_to_string(format!("/sys/class/net/{bridge}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse().ok())
            .unwrap_or(1450);
        let gateway = crate::overlay::bridge_address(subnet).addr();
        let config = json!({
            "cniVersion": "1.0.0",
            "name": o.network.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "isDefaultGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "mtu": mtu,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{
                            "subnet": crate::overlay::task_range(subnet).to_string(),
                            "gateway": gateway.to_string(),
                        }]],
                        "dataDir": self.root.join("ipam").display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ],
        });
        // Written when it changes, not at every launch.
        let file = self.root.join(format!("{}.conflist", o.network.name));
        if let Ok(text) = serde_json::to_string_pretty(&config)
            && std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str())
        {
            let _ = std::fs::create_dir_all(&self.root);
            let _ = std::fs::write(&file, text);
        }
        Ok(config)
    }

    /// Puts container `container` in `networks` (named, in order): its
    /// namespace, then each network's plugins. The namespace's handle (to
    /// enter before exec) and the networks with their addresses. On
    /// failure, whatever was done is undone.
    pub async fn attach(
        &self,
        container: &str,
        networks: &[v1::NetworkInfo],
        overlay: Option<&Overlay>,
    ) -> Result<(std::fs::File, Vec<v1::NetworkInfo>), CniError> {
        let mut names = BTreeSet::new();
        let mut configs = Vec::new();
        for n in networks {
            let name = n.name.clone().unwrap_or_default();
            if !names.insert(name.clone()) {
                return Err(CniError::Twice(name));
            }
            configs.push(self.config(&name, overlay)?);
        }
        let result = self.attach_all(container, networks, configs).await;
        if result.is_err()
            && let Err(e) = self.detach(container).await
        {
            warn!(container, error = %e, "cannot undo a failed network attachment");
        }
        result
    }

    async fn attach_all(
        &self,
        container: &str,
        networks: &[v1::NetworkInfo],
        configs: Vec<Value>,
    ) -> Result<(std::fs::File, Vec<v1::NetworkInfo>), CniError> {
        let ns = Self::netns_name(container);
        let dir = self.container_dir(container);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        run("ip", &["netns", "add", &ns]).await?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
        let netns = Self::netns_path(container);
        let mut joined = Vec::new();
        for (i, (n, config)) in networks.iter().zip(configs).enumerate() {
            joined.push(self.join(container, i, &netns, n, config).await?);
        }
        let handle = std::fs::File::open(Self::netns_path(container))
            .map_err(io(format!("opening the namespace of {container}")))?;
        Ok((handle, joined))
    }

    /// Adds interface `eth<index>` of the namespace at `netns` to the
    /// network `config` describes (the one `n` names), and records it for
    /// its DEL: `n` with the addresses it was given.
    async fn join(
        &self,
        container: &str,
        index: usize,
        netns: &Path,
        n: &v1::NetworkInfo,
        config: Value,
    ) -> Result<v1::NetworkInfo, CniError> {
        let ifname = format!("eth{index}");
        let name = n.name.clone().unwrap_or_default();
        let started = std::time::Instant::now();
        let result = match self.add(container, &ifname, netns, &config, n).await {
            Ok(r) => r,
            Err(e) => {
                // DEL must follow a failed ADD.
                self.del(container, &ifname, Some(netns), &config, None)
                    .await;
                return Err(e);
            }
        };
        let ips = addresses(&result);
        let attachment = Attachment {
            name: name.clone(),
            ifname,
            config,
            result,
            ips: ips.clone(),
            port_mappings: n
                .port_mappings
                .iter()
                .map(|m| {
                    (
                        m.host_port,
                        m.container_port,
                        m.protocol.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        };
        let dir = self.container_dir(container);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let file = dir.join(format!("{index}.json"));
        let text = serde_json::to_vec(&attachment).unwrap_or_default();
        std::fs::write(&file, text).map_err(io(format!("writing {}", file.display())))?;
        let add_ms = started.elapsed().as_secs_f64() * 1000.0;
        info!(container, network = %name, ips = ?ips, add_ms, "joined a network");
        Ok(with_addresses(n, &ips))
    }

    /// Puts the running process `pid` (a Docker container's first process,
    /// on no network of Docker's) in network `n`, whose configuration list is
    /// `config`, recorded under `container` for the agent to DEL when that
    /// container ends. `n` with its addresses.
    pub async fn join_process(
        &self,
        container: &str,
        pid: u32,
        n: &v1::NetworkInfo,
        config: Value,
    ) -> Result<v1::NetworkInfo, CniError> {
        let index = recorded(&self.container_dir(container)).len();
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        self.join(container, index, &netns, n, config).await
    }

    /// ADD through every plugin of `list`, each given the previous result.
    async fn add(
        &self,
        container: &str,
        ifname: &str,
        netns: &Path,
        list: &Value,
        info: &v1::NetworkInfo,
    ) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in plugins(list) {
            let conf = plugin_config(list, plugin, prev.as_ref(), info);
            let out = self
                .exec("ADD", container, ifname, Some(netns), &conf)
                .await?;
            prev = Some(out);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through every plugin of `list` in reverse order (each given the
    /// ADD result, as CNI 0.4+ asks); failures are logged, and the rest go on.
    async fn del(
        &self,
        container: &str,
        ifname: &str,
        netns: Option<&Path>,
        list: &Value,
        result: Option<&Value>,
    ) -> bool {
        let netns = netns.filter(|p| is_netns(p));
        let mut ok = true;
        for plugin in plugins(list).iter().rev() {
            let conf = plugin_config(list, plugin, result, &v1::NetworkInfo::default());
            if let Err(e) = self.exec("DEL", container, ifname, netns, &conf).await {
                warn!(container, error = %e, "CNI DEL failed");
                ok = false;
            }
        }
        ok
    }

    /// Runs one plugin.
    async fn exec(
        &self,
        command: &'static str,
        container: &str,
        ifname: &str,
        netns: Option<&Path>,
        conf: &Value,
    ) -> Result<Value, CniError> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let binary = self
            .plugins
            .split(':')
            .map(|d| Path::new(d).join(&plugin))
            .find(|p| !plugin.is_empty() && !plugin.contains('/') && p.is_file())
            .ok_or_else(|| CniError::NoPlugin {
                plugin: plugin.clone(),
                path: self.plugins.clone(),
            })?;
        let mut c = tokio::process::Command::new(&binary);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.plugins)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(netns) = netns {
            c.env("CNI_NETNS", netns);
        }
        let mut child = c
            .spawn()
            .map_err(io(format!("running {}", binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(io(format!("running {}", binary.display())))?;
        let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let message = match (stdout["msg"].as_str(), stdout["details"].as_str()) {
                (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
                (Some(m), _) => m.to_string(),
                _ => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            };
            return Err(CniError::Plugin {
                plugin,
                command,
                message,
            });
        }
        Ok(stdout)
    }

    /// Takes a container out of its networks (DEL, last network first) and
    /// removes its namespace. Nothing recorded: nothing to do.
    pub async fn detach(&self, container: &str) -> Result<(), CniError> {
        let dir = self.container_dir(container);
        let mut attachments = recorded(&dir);
        attachments.reverse();
        let mut ok = true;
        let handle = Self::netns_path(container);
        for a in &attachments {
            ok &= self
                .del(
                    container,
                    &a.ifname,
                    Some(&handle),
                    &a.config,
                    Some(&a.result),
                )
                .await;
        }
        let path = Self::netns_path(container);
        if is_netns(&path) {
            run("ip", &["netns", "del", &Self::netns_name(container)]).await?;
        } else if path.exists() {
            // A handle mounted in another mount namespace (an agent before
            // this one, started elsewhere): only the file is left here.
            let _ = std::fs::remove_file(&path);
        }
        if ok {
            let _ = std::fs::remove_dir_all(&dir);
            if !attachments.is_empty() {
                info!(container, "left its networks");
            }
            Ok(())
        } else {
            Err(CniError::Plugin {
                plugin: "(several)".into(),
                command: "DEL",
                message: format!("{container} kept its records for a later try"),
            })
        }
    }

    /// The networks a container joined, with their addresses (what a
    /// previous run of the agent recorded).
    pub fn networks(&self, container: &str) -> Vec<v1::NetworkInfo> {
        recorded(&self.container_dir(container))
            .into_iter()
            .map(|a| {
                let asked = v1::NetworkInfo {
                    name: Some(a.name.clone()),
                    port_mappings: a
                        .port_mappings
                        .iter()
                        .map(|(h, c, p)| v1::network_info::PortMapping {
                            host_port: *h,
                            container_port: *c,
                            protocol: (!p.is_empty()).then(|| p.clone()),
                        })
                        .collect(),
                    ..Default::default()
                };
                with_addresses(&asked, &a.ips)
            })
            .collect()
    }

    /// Detaches every container this agent has records of (made before its
    /// namespace, so none is missed) that is not in `keep`: those of
    /// executors that ended while the agent was down. (Not every `agora-*`
    /// namespace: several agents may share a host.)
    pub async fn remove_orphans(&self, keep: &BTreeSet<String>) {
        let mut orphans: BTreeSet<String> = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(self.root.join("containers")) {
            orphans.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok()),
            );
        }
        for container in orphans.difference(keep) {
            warn!(
                container,
                "removing the networks of a container no executor owns"
            );
            if let Err(e) = self.detach(container).await {
                warn!(container, error = %e, "cannot remove an orphaned container's networks");
            }
        }
    }
}

/// A configuration file's content as a list: a `.conflist` as it is, a
/// single-plugin configuration (Mesos' kind) as a list of one.
fn as_list(v: Value) -> Result<Value, String> {
    if v["plugins"].is_array() {
        if v["plugins"].as_array().is_some_and(Vec::is_empty) {
            return Err("'plugins' is empty".into());
        }
        return Ok(v);
    }
    if !v["type"].is_string() {
        return Err("neither 'type' nor 'plugins'".into());
    }
    let mut plugin = v.clone();
    if let Some(o) = plugin.as_object_mut() {
        o.remove("name");
        o.remove("cniVersion");
    }
    Ok(json!({
        "cniVersion": v["cniVersion"].as_str().unwrap_or("0.2.0"),
        "name": v["name"],
        "plugins": [plugin],
    }))
}

fn plugins(list: &Value) -> Vec<&Value> {
    list["plugins"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default()
}

/// What plugin `plugin` of `list` is given: its configuration with the
/// list's `name` and `cniVersion`, the previous result, `runtimeConfig` for
/// the capabilities it declares, and the task's NetworkInfo under
/// `args."org.apache.mesos"` (as Mesos passes it).
fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    info: &v1::NetworkInfo,
) -> Value {
    let mut conf = plugin.clone();
    let Some(o) = conf.as_object_mut() else {
        return conf;
    };
    o.insert("name".into(), list["name"].clone());
    o.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        o.insert("prevResult".into(), prev.clone());
    }
    let capabilities = o.remove("capabilities").unwrap_or(Value::Null);
    if capabilities["portMappings"] == json!(true) {
        let mappings: Vec<Value> = info
            .port_mappings
            .iter()
            .map(|m| {
                json!({"hostPort": m.host_port, "containerPort": m.container_port,
                       "protocol": m.protocol.clone().unwrap_or_else(|| "tcp".into())})
            })
            .collect();
        o.insert("runtimeConfig".into(), json!({ "portMappings": mappings }));
    }
    let mut args = o.remove("args").unwrap_or_else(|| json!({}));
    args["org.apache.mesos"] = json!({"network_info": {
        "name": info.name,
        "port_mappings": info.port_mappings.iter().map(|m| json!({
            "host_port": m.host_port, "container_port": m.container_port, "protocol": m.protocol,
        })).collect::<Vec<_>>(),
    }});
    o.insert("args".into(), args);
    conf
}

/// The container's addresses in a result: CNI 0.2.0's `ip4`/`ip6`, or the
/// `ips` of later versions (those on interfaces inside the container when
/// the result says which), without prefixes.
fn addresses(result: &Value) -> Vec<String> {
    let strip = |a: &str| a.split('/').next().unwrap_or(a).to_string();
    let mut ips = Vec::new();
    for key in ["ip4", "ip6"] {
        if let Some(ip) = result[key]["ip"].as_str() {
            ips.push(strip(ip));
        }
    }
    let interfaces = result["interfaces"].as_array();
    for ip in result["ips"].as_array().into_iter().flatten() {
        let inside = match (ip["interface"].as_u64(), interfaces) {
            (Some(i), Some(list)) => list
                .get(i as usize)
                .is_some_and(|itf| itf["sandbox"].as_str().is_some_and(|s| !s.is_empty())),
            _ => true,
        };
        if inside && let Some(a) = ip["address"].as_str() {
            ips.push(strip(a));
        }
    }
    ips
}

/// `asked` with `ips` as its addresses, as Mesos reports them.
fn with_addresses(asked: &v1::NetworkInfo, ips: &[String]) -> v1::NetworkInfo {
    use v1::network_info::{IpAddress, Protocol};
    v1::NetworkInfo {
        ip_addresses: ips
            .iter()
            .map(|ip| IpAddress {
                protocol: Some(if ip.contains(':') {
                    Protocol::IPv6 as i32
                } else {
                    Protocol::IPv4 as i32
                }),
                ip_address: Some(ip.clone()),
            })
            .collect(),
        ..asked.clone()
    }
}

/// Whether `path` is a network namespace (a mounted handle), not an empty
/// file left behind: DEL is given one only when it is.
fn is_netns(path: &Path) -> bool {
    std::fs::File::open(path)
        .and_then(|f| nix::sys::statfs::fstatfs(&f).map_err(std::io::Error::from))
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// A container's recorded attachments, in the order they were made.
fn recorded(dir: &Path) -> Vec<Attachment> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let i = name.strip_suffix(".json")?.parse().ok()?;
            Some((i, e.path()))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, f)| serde_json::from_slice(&std::fs::read(f).ok()?).ok())
        .collect()
}

/// Runs a command to completion, failing with its stderr.
async fn run(program: &str, args: &[&str]) -> Result<(), CniError> {
    let what = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io(format!("running {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CniError::Io {
            what,
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_plugin_files_become_lists_and_plugins_get_what_the_runtime_adds() {
        let list = as_list(json!({"name": "mynet", "type": "bridge", "bridge": "b0",
                                  "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}))
        .unwrap();
        assert_eq!(list["cniVersion"], "0.2.0");
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert!(list["plugins"][0].get("name").is_none());
        assert!(as_list(json!({"name": "x"})).is_err());
        assert!(as_list(json!({"name": "x", "plugins": []})).is_err());

        let list = json!({"cniVersion": "1.0.0", "name": "agora", "plugins": [
            {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}]});
        let info = v1::NetworkInfo {
            name: Some("agora".into()),
            port_mappings: vec![v1::network_info::PortMapping {
                host_port: 31000,
                container_port: 80,
                protocol: None,
            }],
            ..Default::default()
        };
        let prev = json!({"ips": [{"address": "10.200.0.5/25"}]});
        let conf = plugin_config(&list, &list["plugins"][1], Some(&prev), &info);
        assert_eq!(conf["name"], "agora");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert!(conf.get("capabilities").is_none());
        assert_eq!(
            conf["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 31000, "containerPort": 80, "protocol": "tcp"}])
        );
        assert_eq!(
            conf["args"]["org.apache.mesos"]["network_info"]["name"],
            "agora"
        );
        let first = plugin_config(&list, &list["plugins"][0], None, &info);
        assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none());
    }

    #[test]
    fn addresses_come_from_either_result_shape() {
        assert_eq!(
            addresses(&json!({"ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1"}})),
            ["10.1.0.5"]
        );
        let r = json!({"interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                       "ips": [{"address": "10.200.0.5/25", "interface": 2}, {"address": "10.9.9.9/32", "interface": 0}]});
        assert_eq!(addresses(&r), ["10.200.0.5"]);
        let n = with_addresses(
            &v1::NetworkInfo::default(),
            &["10.200.0.5".into(), "fd00::5".into()],
        );
        assert_eq!(
            n.ip_addresses[1].protocol,
            Some(v1::network_info::Protocol::IPv6 as i32)
        );
    }
}
