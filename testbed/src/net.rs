//! Hosts as network namespaces, made with iproute2 (`ip netns`, veth,
//! bridge) and removed when the [`Network`] is dropped.
//!
//! Layout of a network named `agora-t42-0` with hosts `zk1` and `master1`:
//!
//! ```text
//!   netns agora-t42-0-switch      br0 ── h1 ── h2
//!                                        │      │   (veth pairs)
//!   netns agora-t42-0-zk1         eth0 10.77.0.11/24
//!   netns agora-t42-0-master1            eth0 10.77.0.12/24
//! ```
//!
//! Each host's `/etc/hosts` (bind-mounted by `ip netns exec` from
//! `/etc/netns/<netns>/hosts`) names every host, so `master1` resolves on
//! every host the way a real cluster's DNS would. A file
//! `/etc/netns/<prefix>-switch/owner` holds the creating process' pid: a
//! later network removes the namespaces of an owner that died without
//! cleaning up (a test killed by its harness).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Where `ip netns exec` finds per-namespace files for `/etc`.
const ETC_NETNS: &str = "/etc/netns";

/// The first host's address is 10.77.0.11; the switch has none.
const FIRST_HOST: u8 = 11;

/// What can go wrong making or using a network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command (`ip …`, `iptables …`) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Network namespaces cannot be made here (not root, no iproute2).
    #[error(
        "network namespaces are not available ({0}); the multi-host tests need root and iproute2"
    )]
    Unavailable(String),
    /// A host name that is not a DNS label, or used twice, or too many hosts.
    #[error("bad host list: {0}")]
    BadHosts(String),
    /// A name that is no host of this network.
    #[error("no host '{0}' in this network")]
    NoHost(String),
    /// Another live process owns a network of this name.
    #[error("the network '{prefix}' is in use by process {pid}")]
    InUse {
        /// The network's name.
        prefix: String,
        /// Its owner.
        pid: u32,
    },
    /// Reading or writing a file, or a socket.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One host: a network namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name, resolvable on every host of the network.
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its network namespace (`ip netns exec <netns> …`).
    pub netns: String,
}

/// Makes TCP connections from inside one host: a thread that entered the
/// host's namespace (`setns`) and connects on request. A socket keeps the
/// namespace it was made in, so the stream it hands back works from any
/// thread of this process.
struct Connector {
    requests:
        std::sync::mpsc::Sender<(SocketAddr, oneshot::Sender<io::Result<std::net::TcpStream>>)>,
}

impl Connector {
    fn start(netns: &str) -> io::Result<Connector> {
        let file = std::fs::File::open(Path::new("/run/netns").join(netns))?;
        let (tx, rx) = std::sync::mpsc::channel::<(
            SocketAddr,
            oneshot::Sender<io::Result<std::net::TcpStream>>,
        )>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns-{netns}"))
            .spawn(move || {
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from);
                let failed = entered.is_err();
                let _ = ready_tx.send(entered);
                if failed {
                    return;
                }
                while let Ok((addr, reply)) = rx.recv() {
                    let stream =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5));
                    let _ = reply.send(stream);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        Ok(Connector { requests: tx })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((addr, tx))
            .map_err(|_| io::Error::other("the namespace thread ended"))?;
        let stream = rx
            .await
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        stream.set_nonblocking(true)?;
        TcpStream::from_std(stream)
    }
}

/// A loopback port of this process whose connections go to an address as
/// seen from inside a host. Stops forwarding when dropped.
pub struct Forward {
    /// `127.0.0.1:<port>` in this process' namespace.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A set of hosts on a private switch, removed on drop.
pub struct Network {
    prefix: String,
    hosts: Vec<Host>,
    connectors: Mutex<HashMap<String, std::sync::Arc<Connector>>>,
}

/// Runs `program args` and fails with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetError::Unavailable(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, NetError> {
    run("ip", args)
}

/// A host name: a DNS label of lowercase letters, digits and `-`, short
/// enough for a namespace name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && name != "switch"
}

fn owner_file(prefix: &str) -> PathBuf {
    Path::new(ETC_NETNS)
        .join(format!("{prefix}-switch"))
        .join("owner")
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The namespaces whose names start with `prefix-`.
fn namespaces_of(prefix: &str) -> Result<Vec<String>, NetError> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect())
}

/// Kills every process in `netns`, removes it and its `/etc` files.
fn remove_namespace(netns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", netns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Err(e) = ip(&["netns", "del", netns]) {
        warn!(netns, error = %e, "cannot remove a network namespace");
    }
    let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS).join(netns));
}

/// Removes the networks whose owner died without removing them.
pub fn sweep_abandoned() -> Result<(), NetError> {
    let Ok(entries) = std::fs::read_dir(ETC_NETNS) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(prefix) = name.strip_suffix("-switch") else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path().join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if owner.is_some_and(|pid| !alive(pid)) {
            debug!(prefix, "removing an abandoned network");
            for netns in namespaces_of(prefix)? {
                remove_namespace(&netns);
            }
        }
    }
    Ok(())
}

impl Network {
    /// Makes `hosts` (names, in order; addresses 10.77.0.11 upwards) on a
    /// switch of their own, under namespace names `<prefix>-<host>`. Fails
    /// if a live process already owns a network named `prefix`.
    pub fn create(prefix: &str, hosts: &[&str]) -> Result<Network, NetError> {
        if hosts.len() > 200 {
            return Err(NetError::BadHosts(format!(
                "{} hosts (at most 200)",
                hosts.len()
            )));
        }
        for (i, h) in hosts.iter().enumerate() {
            if !valid_name(h) {
                return Err(NetError::BadHosts(format!(
                    "'{h}' (lowercase letters, digits and '-', at most 24)"
                )));
            }
            if hosts[..i].contains(h) {
                return Err(NetError::BadHosts(format!("'{h}' twice")));
            }
        }
        ip(&["netns", "list"])?;
        sweep_abandoned()?;
        if let Some(pid) = std::fs::read_to_string(owner_file(prefix))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|pid| alive(*pid) && *pid != std::process::id())
        {
            return Err(NetError::InUse {
                prefix: prefix.to_string(),
                pid,
            });
        }
        for netns in namespaces_of(prefix)? {
            remove_namespace(&netns);
        }
        let mut network = Network {
            prefix: prefix.to_string(),
            hosts: Vec::new(),
            connectors: Mutex::new(HashMap::new()),
        };
        // From here on, a failure drops `network`, which removes what was made.
        let switch = format!("{prefix}-switch");
        ip(&["netns", "add", &switch])?;
        let owner = owner_file(prefix);
        std::fs::create_dir_all(owner.parent().unwrap_or(Path::new(ETC_NETNS)))?;
        std::fs::write(&owner, std::process::id().to_string())?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let netns = format!("{prefix}-{name}");
            let addr = Ipv4Addr::new(10, 77, 0, FIRST_HOST + i as u8);
            ip(&["netns", "add", &netns])?;
            network.hosts.push(Host {
                name: name.to_string(),
                addr,
                netns: netns.clone(),
            });
            let leg = format!("h{}", i + 1);
            ip(&[
                "-n", &switch, "link", "add", &leg, "type", "veth", "peer", "name", "eth0",
                "netns", &netns,
            ])?;
            ip(&["-n", &switch, "link", "set", &leg, "master", "br0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        }
        let mut hosts_file = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for h in &network.hosts {
            hosts_file.push_str(&format!("{} {}\n", h.addr, h.name));
        }
        for h in &network.hosts {
            let etc = Path::new(ETC_NETNS).join(&h.netns);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(etc.join("hosts"), &hosts_file)?;
        }
        Ok(network)
    }

    /// The network's name (the namespaces' prefix).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every host, in the order given.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host, NetError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| NetError::NoHost(name.to_string()))
    }

    /// `program` to run inside `host` (through `ip netns exec`, which also
    /// mounts the host's `/etc/hosts`).
    pub fn command(
        &self,
        host: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<tokio::process::Command, NetError> {
        let h = self.host(host)?;
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &h.netns]).arg(program);
        Ok(c)
    }

    /// Runs `program args` inside `host` and returns its stdout, failing
    /// with its stderr.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> Result<String, NetError> {
        let h = self.host(host)?;
        let mut all = vec!["netns", "exec", &h.netns, program];
        all.extend_from_slice(args);
        ip(&all)
    }

    fn connector(&self, host: &str) -> Result<std::sync::Arc<Connector>, NetError> {
        let h = self.host(host)?;
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connectors.get(host) {
            return Ok(c.clone());
        }
        let c = std::sync::Arc::new(Connector::start(&h.netns)?);
        connectors.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// A TCP connection to `addr` made from inside `host`.
    pub async fn connect(&self, host: &str, addr: SocketAddr) -> Result<TcpStream, NetError> {
        Ok(self.connector(host)?.connect(addr).await?)
    }

    /// A loopback port of this process forwarding to `target` as `from`
    /// sees it: how a test's HTTP client reaches a master on its host.
    pub async fn forward(&self, from: &str, target: SocketAddr) -> Result<Forward, NetError> {
        let connector = self.connector(from)?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connector = connector.clone();
                tokio::spawn(async move {
                    match connector.connect(target).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => debug!(%target, error = %e, "forwarded connection refused"),
                    }
                });
            }
        });
        Ok(Forward { addr, task })
    }

    /// Cuts `host` off from every other host: its firewall drops what
    /// comes in or goes out on its link, both ways, as a failed link or a
    /// pulled cable (what runs inside the host still talks to itself).
    /// [`Network::heal`] undoes it.
    pub fn partition(&self, host: &str) -> Result<(), NetError> {
        self.iptables(host, &["-A", "INPUT", "-i", "eth0", "-j", "DROP"])?;
        self.iptables(host, &["-A", "OUTPUT", "-o", "eth0", "-j", "DROP"])
    }

    /// Cuts `host` off from `others` only, both ways.
    pub fn cut(&self, host: &str, others: &[&str]) -> Result<(), NetError> {
        for other in others {
            let addr = self.host(other)?.addr.to_string();
            self.iptables(host, &["-A", "INPUT", "-s", &addr, "-j", "DROP"])?;
            self.iptables(host, &["-A", "OUTPUT", "-d", &addr, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Drops packets on `host`'s link at random, both ways, each with
    /// `probability` (iptables' statistic match): a lossy link.
    pub fn lose(&self, host: &str, probability: f64) -> Result<(), NetError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(NetError::BadHosts(format!(
                "a loss probability is within 0..1, not {probability}"
            )));
        }
        let p = format!("{probability}");
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            self.iptables(
                host,
                &[
                    "-A",
                    chain,
                    dir,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Undoes [`Network::partition`], [`Network::cut`] and
    /// [`Network::lose`] on `host`.
    pub fn heal(&self, host: &str) -> Result<(), NetError> {
        self.iptables(host, &["-F", "INPUT"])?;
        self.iptables(host, &["-F", "OUTPUT"])
    }

    fn iptables(&self, host: &str, args: &[&str]) -> Result<(), NetError> {
        let netns = self.host(host)?.netns.clone();
        let mut all = vec!["netns", "exec", &netns, "iptables", "-w"];
        all.extend_from_slice(args);
        ip(&all).map(drop)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.connectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for h in &self.hosts {
            remove_namespace(&h.netns);
        }
        remove_namespace(&format!("{}-switch", self.prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_labels() {
        for good in ["zk1", "master-2", "a"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Master", "a b", "-x", "x.y", "switch", &"a".repeat(25)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
