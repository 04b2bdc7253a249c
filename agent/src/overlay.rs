//! The overlay's data plane on this host, the flannel VXLAN way: one VXLAN
//! device (`agora.<vni>`, learning off, MTU 50 below the underlay's) holding
//! this agent's VTEP address (its subnet's network address, /32); a bridge
//! (`ag-<network>`) with the first address of the subnet's first half, where
//! tasks' interfaces attach; and for every other agent a route to its subnet
//! through its VTEP address, a permanent neighbour entry giving that
//! address the peer's VTEP MAC, and a forwarding entry sending that MAC to
//! the peer's underlay address. Made with iproute2 (`ip`, `bridge`), in
//! batches; what a previous run made is reused, and what no longer belongs
//! is removed.
//!
//! The master describes the overlay; the agent core turns that into the
//! whole wanted picture; this module applies the difference from what it
//! applied last, one picture at a time (the newest wins), retrying while
//! the kernel refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use agora_agent_core::Overlay;
use agora_proto::internal::OverlayPeer;
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tracing::{info, warn};

/// VXLAN's encapsulation on an IPv4 underlay: outer IP, UDP, VXLAN header
/// and the inner Ethernet header.
const VXLAN_OVERHEAD: u32 = 50;
/// ESP in transport mode with AES-GCM: header, IV, trailer and ICV, padded
/// (at most 37 bytes; 40 keeps the MTU a multiple of 4).
const ESP_OVERHEAD: u32 = 40;
/// The request id of the encrypted overlay's IPsec states and policies.
const REQID: u32 = 0x4147;

/// What the host's overlay should be.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Want {
    /// Nothing asked yet (leave what is there alone).
    Nothing,
    /// This overlay.
    Overlay(Box<Overlay>),
    /// None: the agent was removed, its devices go.
    Removed,
}

/// A failed change of the host's network.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// A command could not run.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command (and its batch, for `-batch`).
        command: String,
        /// What it said.
        stderr: String,
    },
    /// The kernel cannot do what the encrypted overlay needs.
    #[error(
        "the kernel has no IPsec ESP with AES-GCM (esp4, gcm): the encrypted overlay stays closed ({0})"
    )]
    NoIpsec(String),
    /// What the master sent does not parse.
    #[error("the overlay's {what} '{value}' is not valid")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// The VXLAN device of network identifier `vni`.
pub fn vxlan_device(vni: u32) -> String {
    format!("agora.{vni}")
}

/// The bridge of the overlay `network` (at most 15 characters, as Linux
/// allows: the master limits names to 12).
pub fn bridge_device(network: &str) -> String {
    format!("ag-{network}")
}

/// The VTEP MAC of the agent with `subnet`: locally administered, the
/// subnet's network address in its last four bytes (as Kubernetes makes
/// MACs from addresses), so every agent knows every other's without asking.
pub fn vtep_mac(subnet: Ipv4Net) -> String {
    let [a, b, c, d] = subnet.network().octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The bridge's MAC: like the VTEP's, from its own address.
pub fn bridge_mac(subnet: Ipv4Net) -> String {
    let [a, b, c, d] = bridge_address(subnet).addr().octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The bridge's address: the first host of the subnet's first half (the
/// second half is for the Docker network).
pub fn bridge_address(subnet: Ipv4Net) -> Ipv4Net {
    let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    Ipv4Net::new(first, subnet.prefix_len() + 1).unwrap_or(subnet)
}

/// The range process tasks' addresses come from: the subnet's first half.
pub fn task_range(subnet: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(subnet.network(), subnet.prefix_len() + 1).unwrap_or(subnet)
}

/// A peer as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Peer {
    subnet: Ipv4Net,
    underlay: Ipv4Addr,
}

impl Peer {
    fn parse(p: &OverlayPeer) -> Result<Peer, OverlayError> {
        Ok(Peer {
            subnet: parse(&p.subnet, "peer subnet")?,
            underlay: parse(&p.underlay, "peer underlay address")?,
        })
    }

    fn vtep(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

fn parse<T: std::str::FromStr>(value: &str, what: &'static str) -> Result<T, OverlayError> {
    value.parse().map_err(|_| OverlayError::Invalid {
        what,
        value: value.to_string(),
    })
}

/// Runs `program args…`, feeding `input` on stdin; its stdout.
async fn run(program: &str, args: &[&str], input: &str) -> Result<String, OverlayError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| OverlayError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| OverlayError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(OverlayError::Failed {
            command: if input.is_empty() {
                command
            } else {
                format!("{command} <<< {}", input.trim())
            },
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -batch` (or `bridge -batch`) of `lines`; nothing when empty.
async fn batch(program: &str, lines: &[String]) -> Result<(), OverlayError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut input = lines.join("\n");
    input.push('\n');
    run(program, &["-batch", "-"], &input).await.map(|_| ())
}

/// `ip -force -batch` (or `bridge`) of removals that may find their
/// entries already gone: it goes on, and what it says is of no use.
async fn remove_all(program: &str, lines: &[String]) {
    if !lines.is_empty() {
        let _ = run(
            program,
            &["-force", "-batch", "-"],
            &(lines.join("\n") + "\n"),
        )
        .await;
    }
}

/// `ip -j …` parsed (an empty list when the device does not exist).
async fn ip_json(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    match run("ip", &all, "").await {
        Ok(out) => serde_json::from_str(&out).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// The MTU of the interface holding `address` (1500 when none does).
async fn underlay_mtu(address: Ipv4Addr) -> u32 {
    let links = ip_json(&["-4", "addr", "show"]).await;
    links
        .iter()
        .find(|l| {
            l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["local"] == address.to_string()))
        })
        .and_then(|l| l["mtu"].as_u64())
        .map_or(1500, |m| m as u32)
}

/// The rules the overlay needs in the host's firewall (flannel's): traffic
/// of the overlay is forwarded even where the FORWARD policy drops (Docker
/// sets it so), and what leaves the overlay for elsewhere is masqueraded
/// behind the host's address (the overlay's addresses mean nothing
/// outside). Each rule is added once.
async fn firewall(cidr: Ipv4Net) {
    let cidr = cidr.to_string();
    let rules: [(&str, &str, Vec<&str>); 3] = [
        ("filter", "FORWARD", vec!["-s", &cidr, "-j", "ACCEPT"]),
        ("filter", "FORWARD", vec!["-d", &cidr, "-j", "ACCEPT"]),
        (
            "nat",
            "POSTROUTING",
            vec!["-s", &cidr, "!", "-d", &cidr, "-j", "MASQUERADE"],
        ),
    ];
    for (table, chain, rule) in rules {
        let mut check = vec!["-w", "-t", table, "-C", chain];
        check.extend(&rule);
        if run("iptables", &check, "").await.is_ok() {
            continue;
        }
        let mut add = vec!["-w", "-t", table, "-I", chain, "1"];
        add.extend(&rule);
        if let Err(e) = run("iptables", &add, "").await {
            warn!(error = %e, "cannot add an overlay firewall rule");
        }
    }
}

/// The overlay's settings as the data plane needs them.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    vni: u32,
    port: u32,
    vxlan: String,
    bridge: String,
    subnet: Ipv4Net,
    underlay: Ipv4Addr,
    cidr: Ipv4Net,
    encrypted: bool,
}

impl Plan {
    fn of(want: &Overlay) -> Result<Plan, OverlayError> {
        let n = &want.network;
        Ok(Plan {
            vni: n.vni,
            port: n.port,
            vxlan: vxlan_device(n.vni),
            bridge: bridge_device(&n.name),
            subnet: parse(&n.subnet, "subnet")?,
            underlay: parse(&n.underlay, "underlay address")?,
            cidr: parse(&n.cidr, "range")?,
            encrypted: !want.keys.is_empty(),
        })
    }
}

/// The host's overlay data plane: what was applied last.
#[derive(Debug, Default)]
pub(crate) struct Dataplane {
    /// The devices' settings and the peers as applied.
    applied: Option<(Plan, BTreeMap<String, Peer>)>,
    /// The IPsec states and policies as applied: what identifies each (to
    /// delete it) → the line that added it.
    ipsec: BTreeMap<String, String>,
}

impl Dataplane {
    /// Makes the host's overlay `want`.
    pub(crate) async fn apply(&mut self, want: &Overlay) -> Result<(), OverlayError> {
        let plan = Plan::of(want)?;
        let mut peers = BTreeMap::new();
        for (id, p) in &want.peers {
            peers.insert(id.clone(), Peer::parse(p)?);
        }
        let (before, fresh) = match self.applied.take() {
            Some((p, before)) if p == plan => (before, false),
            _ => {
                self.devices(&plan).await?;
                (BTreeMap::new(), true)
            }
        };
        self.peers(&plan.vxlan, &before, &peers, fresh).await?;
        self.encryption(&plan, &peers, want, fresh).await?;
        self.applied = Some((plan, peers));
        Ok(())
    }

    /// The VXLAN device and the bridge, with their addresses; forwarding on.
    async fn devices(&self, plan: &Plan) -> Result<(), OverlayError> {
        let Plan {
            vni,
            port,
            vxlan,
            bridge,
            subnet,
            underlay,
            cidr,
            encrypted,
        } = plan;
        let overhead = VXLAN_OVERHEAD + if *encrypted { ESP_OVERHEAD } else { 0 };
        let mtu = underlay_mtu(*underlay).await.saturating_sub(overhead);
        let existing = ip_json(&["-d", "link", "show", "dev", vxlan]).await;
        let same = existing.first().is_some_and(|l| {
            let v = &l["linkinfo"]["info_data"];
            v["id"].as_u64() == Some(u64::from(*vni))
                && v["local"].as_str() == Some(&underlay.to_string())
                && v["port"].as_u64() == Some(u64::from(*port))
        });
        let mut lines = Vec::new();
        if !existing.is_empty() && !same {
            lines.push(format!("link del {vxlan}"));
        }
        if !same {
            lines.push(format!(
                "link add {vxlan} type vxlan id {vni} local {underlay} dstport {port} nolearning"
            ));
        }
        lines.push(format!(
            "link set {vxlan} address {} mtu {mtu}",
            vtep_mac(*subnet)
        ));
        lines.push(format!("addr replace {}/32 dev {vxlan}", subnet.network()));
        lines.push(format!("link set {vxlan} up"));
        if ip_json(&["link", "show", "dev", bridge]).await.is_empty() {
            lines.push(format!("link add {bridge} type bridge"));
        }
        // A MAC of its own, set: else the bridge takes its lowest port's,
        // and changes it when containers come and go, leaving their cached
        // gateway address stale (the executor loses its agent for a while).
        lines.push(format!(
            "link set {bridge} address {} mtu {mtu}",
            bridge_mac(*subnet)
        ));
        lines.push(format!(
            "addr replace {} dev {bridge}",
            bridge_address(*subnet)
        ));
        lines.push(format!("link set {bridge} up"));
        batch("ip", &lines).await?;
        // Tasks' packets cross from the bridge to the VXLAN device.
        if let Err(e) = tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await {
            warn!(error = %e, "cannot turn IPv4 forwarding on: tasks on other hosts will not be reached");
        }
        firewall(*cidr).await;
        info!(device = %vxlan, bridge = %bridge, %subnet, %underlay, %cidr, mtu, encrypted, "overlay devices ready");
        Ok(())
    }

    /// On an encrypted overlay, the VXLAN packets between this host and
    /// each peer in IPsec ESP (transport mode, AES-128-GCM): an outbound
    /// and an inbound policy per peer (the inbound one makes the kernel drop
    /// what comes unencrypted), an inbound state per peer and key, and an
    /// outbound state per peer under the primary key. SPIs come from the
    /// addresses and the key id, so both ends agree without talking.
    async fn encryption(
        &mut self,
        plan: &Plan,
        peers: &BTreeMap<String, Peer>,
        want: &Overlay,
        fresh: bool,
    ) -> Result<(), OverlayError> {
        let a = plan.underlay;
        let port = plan.port;
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        let aead = |key: &[u8]| {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            format!("aead 'rfc4106(gcm(aes))' 0x{hex} 128")
        };
        // A clear overlay has none (and removes any a previous run made).
        let encrypted_peers = if plan.encrypted { peers.len() } else { 0 };
        for peer in peers.values().take(encrypted_peers) {
            let p = peer.underlay;
            for (dir, src, dst) in [("out", a, p), ("in", p, a)] {
                wanted.insert(
                    format!("xfrm policy delete src {src}/32 dst {dst}/32 proto udp dport {port} dir {dir}"),
                    format!(
                        "xfrm policy add src {src}/32 dst {dst}/32 proto udp dport {port} dir {dir} \
                         tmpl src {src} dst {dst} proto esp reqid {REQID} mode transport"
                    ),
                );
            }
            for (id, key) in &want.keys {
                let mut directions = vec![(p, a)];
                if want.primary_key == Some(*id) {
                    directions.push((a, p));
                }
                for (src, dst) in directions {
                    let spi = spi(src, dst, *id);
                    wanted.insert(
                        format!("xfrm state delete src {src} dst {dst} proto esp spi {spi:#x}"),
                        format!(
                            "xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid {REQID} mode transport {}",
                            aead(key)
                        ),
                    );
                }
            }
        }
        if fresh {
            // A previous run's, whatever they were.
            let _ = run(
                "ip",
                &["xfrm", "state", "deleteall", "reqid", &REQID.to_string()],
                "",
            )
            .await;
            let _ = run(
                "ip",
                &[
                    "xfrm",
                    "policy",
                    "deleteall",
                    "proto",
                    "udp",
                    "dport",
                    &port.to_string(),
                ],
                "",
            )
            .await;
            self.ipsec.clear();
        }
        let gone: Vec<String> = self
            .ipsec
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        let added: Vec<String> = wanted
            .iter()
            .filter(|(k, _)| !self.ipsec.contains_key(*k))
            .map(|(_, line)| line.clone())
            .collect();
        // Policies first: until a peer's states exist, what would go to it
        // in the clear is dropped instead (fail closed); then the states.
        let (states, policies): (Vec<String>, Vec<String>) =
            added.into_iter().partition(|l| l.starts_with("xfrm state"));
        batch("ip", &policies).await?;
        self.ipsec = wanted.clone();
        batch("ip", &states).await.map_err(|e| match e {
            OverlayError::Failed { stderr, .. }
                if stderr.contains("type not found") || stderr.contains("algorithm not found") =>
            {
                OverlayError::NoIpsec(stderr)
            }
            other => other,
        })?;
        if !gone.is_empty() {
            remove_all("ip", &gone).await;
        }
        if !wanted.is_empty() || !self.ipsec.is_empty() {
            info!(entries = wanted.len(), primary_key = ?want.primary_key, keys = want.keys.len(), "overlay encryption");
        }
        self.ipsec = wanted;
        Ok(())
    }

    /// Routes, neighbour and forwarding entries: those of peers that went
    /// or changed removed, new ones added. After the devices were (re)made,
    /// every entry on the VXLAN device that is not a peer's is removed.
    async fn peers(
        &self,
        vxlan: &str,
        before: &BTreeMap<String, Peer>,
        now: &BTreeMap<String, Peer>,
        fresh: bool,
    ) -> Result<(), OverlayError> {
        let wanted: BTreeSet<&Peer> = now.values().collect();
        let mut gone: Vec<Peer> = before
            .values()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        if fresh {
            gone.extend(self.stale(vxlan, &wanted).await);
        }
        let had: BTreeSet<&Peer> = before.values().collect();
        let added: Vec<&Peer> = if fresh {
            wanted.iter().copied().collect()
        } else {
            wanted
                .iter()
                .copied()
                .filter(|p| !had.contains(p))
                .collect()
        };
        let mut ip = Vec::new();
        let mut bridge = Vec::new();
        for p in &gone {
            ip.push(format!("route del {} dev {vxlan}", p.subnet));
            ip.push(format!("neigh del {} dev {vxlan}", p.vtep()));
            bridge.push(format!(
                "fdb del {} dev {vxlan} dst {} self",
                vtep_mac(p.subnet),
                p.underlay
            ));
        }
        // Removals may find entries already gone (-force goes on).
        if !ip.is_empty() {
            remove_all("ip", &ip).await;
            remove_all("bridge", &bridge).await;
        }
        let (mut ip, mut bridge) = (Vec::new(), Vec::new());
        for p in &added {
            let mac = vtep_mac(p.subnet);
            ip.push(format!(
                "neigh replace {} lladdr {mac} dev {vxlan} nud permanent",
                p.vtep()
            ));
            ip.push(format!(
                "route replace {} via {} dev {vxlan} onlink",
                p.subnet,
                p.vtep()
            ));
            bridge.push(format!(
                "fdb replace {mac} dev {vxlan} dst {} self permanent",
                p.underlay
            ));
        }
        batch("bridge", &bridge).await?;
        batch("ip", &ip).await?;
        if !gone.is_empty() || !added.is_empty() {
            info!(
                peers = now.len(),
                added = added.len(),
                removed = gone.len(),
                "overlay peers"
            );
        }
        Ok(())
    }

    /// Routes on the VXLAN device that no peer wants (a previous run's):
    /// as peers, so that their entries go too.
    async fn stale(&self, vxlan: &str, wanted: &BTreeSet<&Peer>) -> Vec<Peer> {
        let subnets: BTreeSet<Ipv4Net> = wanted.iter().map(|p| p.subnet).collect();
        let routes = ip_json(&["-4", "route", "show", "dev", vxlan]).await;
        let fdb: Vec<serde_json::Value> =
            match run("bridge", &["-j", "fdb", "show", "dev", vxlan], "").await {
                Ok(out) => serde_json::from_str(&out).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
        routes
            .iter()
            .filter_map(|r| r["dst"].as_str()?.parse::<Ipv4Net>().ok())
            .filter(|s| !subnets.contains(s))
            .map(|subnet| {
                let mac = vtep_mac(subnet);
                let underlay = fdb
                    .iter()
                    .find(|f| f["mac"].as_str() == Some(&mac))
                    .and_then(|f| f["dst"].as_str()?.parse().ok())
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                Peer { subnet, underlay }
            })
            .collect()
    }

    /// Removes the devices (the agent was removed from the cluster).
    pub(crate) async fn remove(&mut self, want: &Overlay) -> Result<(), OverlayError> {
        self.applied = None;
        if !self.ipsec.is_empty() {
            let gone: Vec<String> = std::mem::take(&mut self.ipsec).into_keys().collect();
            remove_all("ip", &gone).await;
        }
        remove_all(
            "ip",
            &[
                format!("link del {}", vxlan_device(want.network.vni)),
                format!("link del {}", bridge_device(&want.network.name)),
            ],
        )
        .await;
        Ok(())
    }
}

/// The SPI of the ESP state from `src` to `dst` under key `id`: FNV-1a
/// over the three, never below 256 (reserved).
fn spi(src: Ipv4Addr, dst: Ipv4Addr, id: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in src
        .octets()
        .into_iter()
        .chain(dst.octets())
        .chain(id.to_be_bytes())
    {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x100
}

/// Starts the task that keeps the host's overlay what the sender says.
pub(crate) fn start() -> watch::Sender<Want> {
    let (tx, mut rx) = watch::channel(Want::Nothing);
    tokio::spawn(async move {
        let mut plane = Dataplane::default();
        let mut last: Option<Overlay> = None;
        loop {
            let want = rx.borrow_and_update().clone();
            let result = match &want {
                Want::Nothing => Ok(()),
                Want::Overlay(o) => {
                    let r = plane.apply(o).await;
                    last = Some((**o).clone());
                    r
                }
                Want::Removed => match last.take() {
                    Some(o) => plane.remove(&o).await,
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot set up the overlay; trying again in 5 s");
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_subnet() {
        let s: Ipv4Net = "10.200.3.0/24".parse().unwrap();
        assert_eq!(vtep_mac(s), "0a:58:0a:c8:03:00");
        assert_eq!(bridge_address(s).to_string(), "10.200.3.1/25");
        assert_eq!(bridge_mac(s), "0a:58:0a:c8:03:01");
        assert_eq!(task_range(s).to_string(), "10.200.3.0/25");
        assert_eq!(vxlan_device(1), "agora.1");
        assert_eq!(bridge_device("agora"), "ag-agora");
    }
}
