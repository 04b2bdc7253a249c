//! An Agora cluster over the hosts of a [`Network`]: each component a real
//! process on its own host, started with the flags an operator would give
//! it, secured (TLS with certificates for the hosts' names, credentials for
//! every component, as `agora dev`).
//!
//! | host | runs | listens (inside its namespace) |
//! |---|---|---|
//! | `zk1`… | ZooKeeper (Debian's) in an ensemble | 2181, 2888, 3888 |
//! | `master1`… | `agora master --zk zk://zk1:2181,…/mesos` | 5050 |
//! | `agent1`… | `agora agent --master zk://…/mesos` | 5051, tasks on 31000–31999 |
//! | `marathon1`… | `agora marathon --zk zk://…/marathon` | 8080 |
//! | `dns` | `agora dns` | 53 (UDP, TCP), 8123 |
//! | `lb` | `agora lb` with HAProxy | 80, 9090 (stats), 9092 |
//! | `client1`… | nothing: where tests and people run clients | |
//!
//! A test reaches the cluster from `client1` through [`Cluster::forward`],
//! so a host cut off by [`Network::partition`] is cut off from the test too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agora_rpc::tls::Role;
use serde_json::Value;
use tracing::{debug, info};

use crate::net::{Forward, NetError, Network};

mod components;
use crate::secrets::{CertSpec, Secrets, SecretsError};

/// Debian's ZooKeeper (libzookeeper-java).
pub const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

/// Where a master listens on its host.
pub const MASTER_PORT: u16 = 5050;
/// Where an agent listens on its host.
pub const AGENT_PORT: u16 = 5051;
/// Where marathon-rs listens on its host.
pub const MARATHON_PORT: u16 = 8080;
/// Where ZooKeeper serves clients.
pub const ZK_PORT: u16 = 2181;
/// agora dns' DNS port.
pub const DNS_PORT: u16 = 53;
/// agora dns' HTTP API.
pub const DNS_HTTP_PORT: u16 = 8123;
/// agora lb's HTTP (virtual host) frontend.
pub const LB_HTTP_PORT: u16 = 80;

/// What can go wrong starting or driving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The hosts.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The certificates and credentials.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A file or process.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something the layout needs is not installed.
    #[error("{0} is not installed")]
    Missing(&'static str),
    /// A layout that cannot run.
    #[error("bad layout: {0}")]
    Layout(String),
    /// A component did not come up in time; its log's last lines follow.
    #[error("{what} did not happen within {secs} s{log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
        /// The end of a relevant log, if any.
        log: String,
    },
    /// An HTTP call to a component failed.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// No process runs on this host, or it is already running.
    #[error("host {0}: {1}")]
    Process(String, &'static str),
}

/// How many of each component, and on what scale.
#[derive(Debug, Clone)]
pub struct Layout {
    /// ZooKeeper servers (1 or 3, or 0 for one master without ZooKeeper).
    pub zookeepers: usize,
    /// Masters (more than one needs ZooKeeper).
    pub masters: usize,
    /// Agents.
    pub agents: usize,
    /// marathon-rs instances (0 for none; more than one needs ZooKeeper).
    pub marathons: usize,
    /// Run agora dns.
    pub dns: bool,
    /// Run agora lb (needs marathon-rs and HAProxy).
    pub lb: bool,
    /// Empty hosts for clients (at least one: `client1`).
    pub clients: usize,
    /// Each agent's resources (ports included).
    pub agent_resources: String,
    /// ZooKeeper session timeout of masters and marathon-rs: how long a
    /// dead leader leads on.
    pub zk_session_timeout: Duration,
    /// More flags for every master (e.g. a shorter agent ping budget).
    pub master_flags: Vec<String>,
    /// More flags for every agent.
    pub agent_flags: Vec<String>,
    /// More flags for every marathon-rs.
    pub marathon_flags: Vec<String>,
    /// The lb host also runs an agent (`lb-agent`), whose resources are
    /// reserved for role `slave_public` so that no app lands there by
    /// accident: as DC/OS' public agents ran marathon-lb, it puts the load
    /// balancer on the overlay.
    pub lb_agent: bool,
}

impl Default for Layout {
    /// The full layout: 3 ZooKeeper servers, 3 masters, 3 agents, 2
    /// marathon-rs, agora dns, agora lb and a client.
    fn default() -> Layout {
        Layout {
            zookeepers: 3,
            masters: 3,
            agents: 3,
            marathons: 2,
            dns: true,
            lb: true,
            clients: 1,
            agent_resources: "cpus:2;mem:1024;disk:1024;ports:[31000-31999]".into(),
            zk_session_timeout: Duration::from_secs(4),
            master_flags: vec![],
            agent_flags: vec![],
            marathon_flags: vec![],
            lb_agent: false,
        }
    }
}

impl Layout {
    /// The host names, in address order.
    pub fn hosts(&self) -> Vec<String> {
        fn n(prefix: &'static str, count: usize) -> impl Iterator<Item = String> {
            (1..=count).map(move |i| format!("{prefix}{i}"))
        }
        let mut hosts: Vec<String> = n("zk", self.zookeepers)
            .chain(n("master", self.masters))
            .chain(n("agent", self.agents))
            .chain(n("marathon", self.marathons))
            .collect();
        if self.dns {
            hosts.push("dns".into());
        }
        if self.lb {
            hosts.push("lb".into());
        }
        hosts.extend(n("client", self.clients));
        hosts
    }

    fn check(&self) -> Result<(), ClusterError> {
        let bad = |m: &str| Err(ClusterError::Layout(m.into()));
        if ![0, 1, 3, 5].contains(&self.zookeepers) {
            return bad("--zookeepers is 0, 1, 3 or 5");
        }
        if self.masters == 0 || self.agents == 0 || self.clients == 0 {
            return bad("at least one master, one agent and one client host");
        }
        if self.zookeepers == 0 && (self.masters > 1 || self.marathons > 1) {
            return bad("more than one master or marathon-rs needs ZooKeeper");
        }
        if self.lb && self.marathons == 0 {
            return bad("agora lb needs marathon-rs");
        }
        if self.lb_agent && !self.lb {
            return bad("an agent on the lb host needs the lb host");
        }
        if self.hosts().len() > 200 {
            return bad("at most 200 hosts");
        }
        Ok(())
    }
}

/// A component's process: what runs it, and the child while it runs.
struct Proc {
    command: Vec<OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

/// How a host's component runs: (host, command line, environment).
type Def = (String, Vec<String>, Vec<(String, String)>);

/// A running cluster; dropping it kills every process on its hosts and
/// removes the hosts.
pub struct Cluster {
    procs: Mutex<HashMap<String, Proc>>,
    forwards: Mutex<HashMap<(String, u16), SocketAddr>>,
    forward_guards: Mutex<Vec<Forward>>,
    secrets: Secrets,
    layout: Layout,
    dir: PathBuf,
    http: reqwest::Client,
    // Dropped last: removing the namespaces kills what still runs in them.
    net: Network,
}

impl Drop for Cluster {
    /// Before the hosts go: the processes that left their host's network
    /// namespace (tasks in networks of their own) but run from this
    /// cluster's directories, and the handles of those namespaces.
    fn drop(&mut self) {
        let Ok(dir) = self.dir.canonicalize() else {
            return;
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Docker containers of this cluster's agents (labelled with their
        // ids, which each agent keeps in `<work>/meta/agent_id`): they run
        // in the engine, outside every host.
        for host in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(id) = std::fs::read_to_string(host.path().join("meta").join("agent_id")) else {
                continue;
            };
            let label = format!("label=agora.agent_id={}", id.trim());
            let listed = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &label])
                .output();
            if let Ok(out) = listed {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
        }
        // Each agent's records of its containers (`<work>/cni/containers/<id>`).
        for host in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let containers = host.path().join("cni").join("containers");
            for c in std::fs::read_dir(containers)
                .into_iter()
                .flatten()
                .flatten()
            {
                let handle = Path::new("/run/netns")
                    .join(format!("agora-{}", c.file_name().to_string_lossy()));
                let _ = std::process::Command::new("umount").arg(&handle).output();
                let _ = std::fs::remove_file(handle);
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "; last lines of {}:\n{}",
        path.display(),
        all[start..].join("\n")
    )
}

fn installed(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Cluster {
    /// Makes the hosts of `layout` (namespaces `<prefix>-<host>`), its
    /// secrets under `dir/secrets`, and starts every component, `agora`
    /// being the binary; returns once the agents are registered with a
    /// leading master and marathon-rs, agora dns and agora lb answer.
    pub async fn start(
        layout: Layout,
        prefix: &str,
        agora: &Path,
        dir: &Path,
    ) -> Result<Cluster, ClusterError> {
        layout.check()?;
        if layout.zookeepers > 0 && (!Path::new(ZK_JAR).exists() || !installed("java", "-version"))
        {
            return Err(ClusterError::Missing(
                "ZooKeeper (Debian's libzookeeper-java and default-jre-headless)",
            ));
        }
        if layout.lb && !installed("haproxy", "-v") {
            return Err(ClusterError::Missing("HAProxy"));
        }
        let names = layout.hosts();
        let net = Network::create(
            prefix,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let addrs_of = |prefix: &str| -> Vec<String> {
            net.hosts()
                .iter()
                .filter(|h| h.name.starts_with(prefix))
                .flat_map(|h| [h.name.clone(), h.addr.to_string()])
                .chain(["localhost".to_string(), "127.0.0.1".to_string()])
                .collect()
        };
        let secrets = Secrets::ensure(
            &dir.join("secrets"),
            agora_rpc::tls::DEFAULT_CLUSTER,
            &[
                CertSpec {
                    file: "master".into(),
                    role: Role::Master,
                    names: addrs_of("master"),
                },
                CertSpec {
                    file: "agent".into(),
                    role: Role::Agent,
                    names: if layout.lb_agent {
                        addrs_of("agent")
                            .into_iter()
                            .chain(addrs_of("lb"))
                            .collect()
                    } else {
                        addrs_of("agent")
                    },
                },
                CertSpec {
                    file: "marathon".into(),
                    role: Role::Client,
                    names: addrs_of("marathon"),
                },
            ],
            &["admin", "marathon", "dns", "agent"],
        )?;
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&secrets.ca)?)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let cluster = Cluster {
            procs: Mutex::new(HashMap::new()),
            forwards: Mutex::new(HashMap::new()),
            forward_guards: Mutex::new(Vec::new()),
            secrets,
            layout,
            dir: dir.to_path_buf(),
            http,
            net,
        };
        cluster.define(agora)?;
        cluster.boot().await?;
        Ok(cluster)
    }

    /// The hosts.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// The layout it runs.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Its CA and credentials.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The admin's `(principal, secret)`.
    pub fn admin(&self) -> (String, String) {
        let c = self.secrets.credential("admin").cloned();
        c.map(|c| (c.principal, c.secret.expose().to_string()))
            .unwrap_or_default()
    }

    /// `zk://zk1:2181,…/<path>`, or the first master when there is no
    /// ZooKeeper.
    pub fn zk_url(&self, path: &str) -> String {
        let servers: Vec<String> = (1..=self.layout.zookeepers)
            .map(|i| format!("zk{i}:{ZK_PORT}"))
            .collect();
        format!("zk://{}/{path}", servers.join(","))
    }

    /// `--zk <url>/<path> --zk-session-timeout …` for a contender, or
    /// nothing without ZooKeeper.
    fn zk_flags(&self, path: &str) -> Vec<String> {
        if self.layout.zookeepers == 0 {
            return vec![];
        }
        vec![
            "--zk".into(),
            self.zk_url(path),
            "--zk-session-timeout".into(),
            agora_proto::duration::format(self.layout.zk_session_timeout),
        ]
    }

    fn master_flag(&self) -> String {
        if self.layout.zookeepers == 0 {
            format!("master1:{MASTER_PORT}")
        } else {
            self.zk_url("mesos")
        }
    }

    /// Records how each host's component is run.
    fn define(&self, agora: &Path) -> Result<(), ClusterError> {
        let agora_cmd = |args: Vec<String>| -> Vec<String> {
            std::iter::once(agora.display().to_string())
                .chain(args)
                .collect()
        };
        let mut defs: Vec<Def> = Vec::new();
        for i in 1..=self.layout.zookeepers {
            defs.push((format!("zk{i}"), self.zookeeper(i)?, vec![]));
        }
        for i in 1..=self.layout.masters {
            defs.push((
                format!("master{i}"),
                agora_cmd(self.master_args(i)?),
                vec![],
            ));
        }
        for i in 1..=self.layout.agents {
            defs.push((
                format!("agent{i}"),
                agora_cmd(self.agent_args(i, agora)?),
                vec![],
            ));
        }
        let (admin, admin_secret) = self.admin();
        for i in 1..=self.layout.marathons {
            let env = vec![(
                "MESOSPHERE_HTTP_CREDENTIALS".to_string(),
                format!("{admin}:{admin_secret}"),
            )];
            defs.push((
                format!("marathon{i}"),
                agora_cmd(self.marathon_args(i)?),
                env,
            ));
        }
        if self.layout.dns {
            defs.push(("dns".into(), agora_cmd(self.dns_args()?), vec![]));
        }
        if self.layout.lb {
            defs.push(("lb".into(), agora_cmd(self.lb_args()?), vec![]));
        }
        if self.layout.lb_agent {
            defs.push((
                "lb-agent".into(),
                agora_cmd(self.agent_args_on(
                    "lb",
                    "lb-agent",
                    "cpus(slave_public):1;mem(slave_public):256;disk(slave_public):256",
                    "public:true",
                    agora,
                )?),
                vec![],
            ));
        }
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for (host, command, env) in defs {
            procs.insert(
                host.clone(),
                Proc {
                    command: command.into_iter().map(OsString::from).collect(),
                    env,
                    log: self.dir.join(format!("{host}.log")),
                    child: None,
                },
            );
        }
        Ok(())
    }

    /// Starts every component in order, waiting for each tier.
    async fn boot(&self) -> Result<(), ClusterError> {
        let hosts = self.layout.hosts();
        let tier = |prefix: &str| -> Vec<String> {
            hosts
                .iter()
                .filter(|h| h.starts_with(prefix))
                .cloned()
                .collect()
        };
        for h in tier("zk") {
            self.start_host(&h)?;
        }
        for h in tier("zk") {
            self.wait_port(&h, ZK_PORT, Duration::from_secs(60)).await?;
        }
        for h in tier("master") {
            self.start_host(&h)?;
        }
        for h in tier("agent") {
            self.start_host(&h)?;
        }
        self.wait_agents(self.layout.agents, Duration::from_secs(60))
            .await?;
        for h in tier("marathon").into_iter().chain(tier("dns")) {
            self.start_host(&h)?;
        }
        for h in tier("marathon") {
            self.wait_port(&h, MARATHON_PORT, Duration::from_secs(30))
                .await?;
        }
        if self.layout.dns {
            self.wait_port("dns", DNS_HTTP_PORT, Duration::from_secs(30))
                .await?;
        }
        if self.layout.lb {
            self.start_host("lb")?;
            self.wait_port("lb", 9092, Duration::from_secs(30)).await?;
        }
        if self.layout.lb_agent {
            self.start_host("lb-agent")?;
            self.wait_agents(self.layout.agents + 1, Duration::from_secs(60))
                .await?;
        }
        info!(prefix = self.net.prefix(), "cluster is up");
        Ok(())
    }

    /// Starts the component of `host` (again, after [`Cluster::kill_host`]).
    pub fn start_host(&self, host: &str) -> Result<(), ClusterError> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs
            .get_mut(host)
            .ok_or_else(|| ClusterError::Process(host.into(), "runs no component"))?;
        if p.child.is_some() {
            return Err(ClusterError::Process(host.into(), "is already running"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)?;
        // `lb-agent` runs on the lb host; every other component on the host
        // of its name.
        let netns_host = if host == "lb-agent" { "lb" } else { host };
        let mut c = self.net.command(netns_host, &p.command[0])?;
        c.args(&p.command[1..])
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .env_remove("AGORA_REQUIRE_ALL")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        debug!(host, "starting");
        p.child = Some(c.spawn()?);
        Ok(())
    }

    /// SIGKILLs the component of `host` (its tasks, if an agent, live on).
    pub async fn kill_host(&self, host: &str) -> Result<(), ClusterError> {
        let child = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            let p = procs
                .get_mut(host)
                .ok_or_else(|| ClusterError::Process(host.into(), "runs no component"))?;
            p.child.take()
        };
        if let Some(mut child) = child {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts again every component that exited on its own (a leader that
    /// stepped down exits, as Mesos' masters do, for its supervisor to
    /// restart it): what systemd's `Restart=always` would do. Returns the
    /// hosts restarted.
    pub fn restart_exited(&self) -> Result<Vec<String>, ClusterError> {
        let exited: Vec<String> = {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            procs
                .iter_mut()
                .filter_map(|(host, p)| {
                    let child = p.child.as_mut()?;
                    matches!(child.try_wait(), Ok(Some(_))).then(|| {
                        p.child = None;
                        host.clone()
                    })
                })
                .collect()
        };
        for host in &exited {
            info!(host, "restarting what exited");
            self.start_host(host)?;
        }
        Ok(exited)
    }

    /// The process id of `host`'s component, while it runs.
    pub fn pid(&self, host: &str) -> Option<u32> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.get(host)?.child.as_ref()?.id()
    }

    /// The log of `host`'s component.
    pub fn log(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.log"))
    }

    /// `127.0.0.1:<port>` of this process that reaches `host:port` from
    /// `client1` (made once per target, kept until the cluster drops).
    pub async fn forward(&self, host: &str, port: u16) -> Result<SocketAddr, ClusterError> {
        let key = (host.to_string(), port);
        if let Some(a) = self
            .forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(*a);
        }
        let target = SocketAddr::new(self.net.host(host)?.addr.into(), port);
        let f = self.net.forward("client1", target).await?;
        let addr = f.addr;
        self.forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addr);
        self.forward_guards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
        Ok(addr)
    }

    /// `GET https://<host>:<port><path>` as the admin, from `client1`:
    /// (status, JSON body or Null).
    pub async fn get(
        &self,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, Value), ClusterError> {
        let addr = self.forward(host, port).await?;
        let (user, password) = self.admin();
        let r = self
            .http
            .get(format!("https://{addr}{path}"))
            .basic_auth(user, Some(password))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `GET https://<host>:<port><path>` as the admin, from `client1`,
    /// not following a redirect: (status, `Location`).
    pub async fn location(
        &self,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, Option<String>), ClusterError> {
        let addr = self.forward(host, port).await?;
        let (user, password) = self.admin();
        let r = self
            .http
            .get(format!("https://{addr}{path}"))
            .basic_auth(user, Some(password))
            .send()
            .await?;
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        Ok((r.status().as_u16(), location))
    }

    /// `POST`/`PUT`/`DELETE` with a JSON body, as the admin, from `client1`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        host: &str,
        port: u16,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value), ClusterError> {
        let addr = self.forward(host, port).await?;
        let (user, password) = self.admin();
        let r = self
            .http
            .request(method, format!("https://{addr}{path}"))
            .basic_auth(user, Some(password))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The master leading now, by what the masters say (`/master/state`'s
    /// `leader_info`), or None.
    pub async fn leading_master(&self) -> Option<String> {
        for i in 1..=self.layout.masters {
            let host = format!("master{i}");
            if let Ok((200, state)) = self.get(&host, MASTER_PORT, "/master/state").await
                && state["leader_info"]["hostname"].as_str() == Some(host.as_str())
            {
                return Some(host);
            }
        }
        None
    }

    /// The leading master's `/master/state`.
    pub async fn master_state(&self) -> Option<Value> {
        let leader = self.leading_master().await?;
        self.get(&leader, MASTER_PORT, "/master/state")
            .await
            .ok()
            .map(|(_, v)| v)
    }

    /// What each master answers now, one line each: for a start that
    /// timed out.
    async fn masters_seen(&self) -> String {
        let mut seen = String::new();
        for i in 1..=self.layout.masters {
            let host = format!("master{i}");
            let line = match self.get(&host, MASTER_PORT, "/master/state").await {
                Ok((status, state)) => format!(
                    "HTTP {status}, leader {}, {} agents",
                    state["leader_info"]["hostname"],
                    state["slaves"].as_array().map_or(0, Vec::len)
                ),
                Err(e) => {
                    let mut chain = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        chain += &format!(": {s}");
                        source = s.source();
                    }
                    chain
                }
            };
            seen += &format!("{host}: {line}\n");
        }
        seen
    }

    /// The agents the leading master lacks: whether each still runs, and
    /// the end of its log.
    async fn missing_agents(&self) -> String {
        let registered: Vec<String> = match self.master_state().await {
            Some(state) => state["slaves"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["hostname"].as_str().map(str::to_string))
                .collect(),
            None => Vec::new(),
        };
        let mut report = String::new();
        for i in 1..=self.layout.agents {
            let host = format!("agent{i}");
            if registered.contains(&host) {
                continue;
            }
            let running = {
                let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
                match procs.get_mut(&host).and_then(|p| p.child.as_mut()) {
                    Some(child) => match child.try_wait() {
                        Ok(None) => "runs".to_string(),
                        Ok(Some(status)) => format!("exited ({status})"),
                        Err(e) => format!("cannot be waited for ({e})"),
                    },
                    None => "was not started".to_string(),
                }
            };
            report += &format!("\n{host} {running}{}", tail(&self.log(&host), 30));
        }
        report
    }

    async fn wait_agents(&self, n: usize, within: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(state) = self.master_state().await {
                let active = state["slaves"]
                    .as_array()
                    .map(|a| a.iter().filter(|s| s["active"] == true).count())
                    .unwrap_or(0);
                if active >= n {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{n} agents registered with a leading master"),
                    secs: within.as_secs(),
                    log: self.masters_seen().await + &self.missing_agents().await,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `host:port` accepts TCP connections from `client1`.
    pub async fn wait_port(
        &self,
        host: &str,
        port: u16,
        within: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + within;
        let target = SocketAddr::new(self.net.host(host)?.addr.into(), port);
        loop {
            if self.net.connect("client1", target).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{host}:{port} listening"),
                    secs: within.as_secs(),
                    log: tail(&self.log(host), 20),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A person's summary: each host, its address and what runs there.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for h in self.net.hosts() {
            let what = match h.name.trim_end_matches(|c: char| c.is_ascii_digit()) {
                "zk" => format!("ZooKeeper :{ZK_PORT}"),
                "master" => format!("agora master https://{}:{MASTER_PORT}", h.name),
                "agent" => format!("agora agent https://{}:{AGENT_PORT}", h.name),
                "marathon" => format!("marathon-rs https://{}:{MARATHON_PORT}", h.name),
                "dns" => format!("agora dns :{DNS_PORT} (dig @dns web.marathon.mesos)"),
                "lb" => format!("agora lb + HAProxy :{LB_HTTP_PORT}, stats :9090"),
                _ => "clients (nothing runs here)".to_string(),
            };
            out.push_str(&format!(
                "  {:<10} {:<12} {what}\n             enter: ip netns exec {} bash\n",
                h.name, h.addr, h.netns
            ));
        }
        out
    }
}
