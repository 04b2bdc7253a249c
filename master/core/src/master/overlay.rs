//! The overlay network's addresses (`--overlay-cidr`): each agent leases a
//! subnet of the cluster's range when it registers, keeps it across its
//! restarts and the master's failovers (the leases are in the registry), and
//! gives it back when it is marked gone. Every agent is told the others'
//! underlay addresses and subnets, and told again when they change: the
//! flannel VXLAN model, with the master as the lease store.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use agora_proto::internal::{Overlay, OverlayKey, OverlayNetwork, OverlayPeer, master_message};
use ipnet::Ipv4Net;

use super::Master;
use crate::ids::AgentId;

/// The VXLAN network identifier agents use (flannel's default).
pub const VNI: u32 = 1;
/// The VXLAN UDP port (IANA's).
pub const PORT: u16 = 4789;
/// A key's length: AES-128 and the 4-byte salt of RFC 4106.
pub const KEY_LEN: usize = 20;
/// How long a new key is only accepted before agents send with it, and an
/// old one still accepted after: time for every agent to hear of the
/// change.
pub const KEY_OVERLAP: std::time::Duration = std::time::Duration::from_secs(5);

/// The overlay network's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct OverlayConfig {
    /// Its name (`--overlay-name`, `agora` by default): what tasks ask for.
    pub name: String,
    /// The cluster's range (`--overlay-cidr`).
    pub cidr: Ipv4Net,
    /// The prefix length of each agent's subnet (`--overlay-subnet-prefix`).
    pub subnet_prefix: u8,
    /// Traffic between agents in IPsec ESP (`--overlay-encrypt`): the
    /// master holds the keys and the shell gives it a new one on a
    /// schedule ([`crate::Input::OverlayKey`]).
    pub encrypt: bool,
    /// How often the shell makes a new key (`--overlay-key-rotation`).
    pub key_rotation: std::time::Duration,
}

/// Overlay settings that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OverlayError {
    /// A name that cannot name network devices.
    #[error(
        "overlay name '{0}' must be 1 to 12 characters of a-z, 0-9 and '-' (it names the agents' bridge devices)"
    )]
    Name(String),
    /// A subnet size that does not fit the range.
    #[error(
        "an agent's subnet /{subnet} must be longer than the overlay's /{cidr} and at most /28"
    )]
    Prefix {
        /// The range's prefix length.
        cidr: u8,
        /// The asked subnet prefix length.
        subnet: u8,
    },
}

impl OverlayConfig {
    /// Checked settings.
    pub fn new(name: &str, cidr: Ipv4Net, subnet_prefix: u8) -> Result<Self, OverlayError> {
        let name_ok = (1..=12).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-');
        if !name_ok {
            return Err(OverlayError::Name(name.to_string()));
        }
        if subnet_prefix <= cidr.prefix_len() || subnet_prefix > 28 {
            return Err(OverlayError::Prefix {
                cidr: cidr.prefix_len(),
                subnet: subnet_prefix,
            });
        }
        Ok(OverlayConfig {
            name: name.to_string(),
            cidr: cidr.trunc(),
            subnet_prefix,
            encrypt: false,
            key_rotation: std::time::Duration::from_secs(12 * 3600),
        })
    }
}

/// The encrypted overlay's keys and what happens to them next.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keyring {
    /// (id, key), oldest first.
    pub keys: Vec<(u32, Vec<u8>)>,
    /// The key agents send with.
    pub primary: u32,
    /// The next step of a rotation.
    pub step: Option<(crate::Time, KeyStep)>,
}

/// A rotation's steps after a new key went out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum KeyStep {
    /// Send with this key.
    Promote(u32),
    /// Forget every key but the primary.
    Prune,
}

/// An agent's subnet and where its VXLAN packets go.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lease {
    pub subnet: Ipv4Net,
    pub underlay: Ipv4Addr,
}

/// The IPv4 address of an agent's `ip:port` (None for a name or IPv6).
fn underlay_of(address: &str) -> Option<Ipv4Addr> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    match host.parse::<IpAddr>().ok()? {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

fn peer(id: &AgentId, lease: &Lease) -> OverlayPeer {
    OverlayPeer {
        agent_id: id.to_string(),
        underlay: lease.underlay.to_string(),
        subnet: lease.subnet.to_string(),
    }
}

impl Master {
    /// After an agent (re-)registered from `address`: its lease (the one it
    /// had, or the first free subnet), the whole picture sent to it, and
    /// the change to every other agent.
    pub(crate) fn overlay_registered(&mut self, id: &AgentId, address: &str) {
        let Some(config) = &self.config.overlay else {
            return;
        };
        let Some(underlay) = underlay_of(address) else {
            self.out.push(super::Output::Warn(format!(
                "agent {id} registered from {address}, not an IPv4 address: it gets no overlay subnet"
            )));
            return;
        };
        let changed = match self.overlay.get_mut(id) {
            Some(lease) if lease.underlay == underlay => false,
            Some(lease) => {
                lease.underlay = underlay;
                true
            }
            None => {
                let used: std::collections::BTreeSet<Ipv4Net> =
                    self.overlay.values().map(|l| l.subnet).collect();
                let Some(subnet) = config
                    .cidr
                    .subnets(config.subnet_prefix)
                    .ok()
                    .and_then(|mut s| s.find(|s| !used.contains(s)))
                else {
                    let cidr = config.cidr;
                    self.out.push(super::Output::Warn(format!(
                        "every /{} of the overlay {cidr} is leased: agent {id} gets none",
                        config.subnet_prefix
                    )));
                    return;
                };
                self.overlay.insert(id.clone(), Lease { subnet, underlay });
                true
            }
        };
        let lease = self.overlay[id].clone();
        let network = OverlayNetwork {
            name: config.name.clone(),
            cidr: config.cidr.to_string(),
            subnet: lease.subnet.to_string(),
            underlay: lease.underlay.to_string(),
            vni: VNI,
            port: u32::from(PORT),
        };
        let peers = self
            .overlay
            .iter()
            .filter(|(other, _)| *other != id)
            .map(|(other, l)| peer(other, l))
            .collect();
        let (keys, primary_key) = self.keyring_message();
        self.send_to_agent(
            id,
            master_message::Message::Overlay(Overlay {
                network: Some(network),
                peers,
                removed: Vec::new(),
                keys,
                primary_key,
            }),
        );
        if changed {
            self.registry_dirty = true;
            self.overlay_broadcast(id, vec![peer(id, &lease)], Vec::new());
        }
    }

    /// An agent left for good (marked gone): its subnet is free again and
    /// the others forget it.
    pub(crate) fn overlay_removed(&mut self, id: &AgentId) {
        if self.overlay.remove(id).is_some() {
            self.registry_dirty = true;
            self.overlay_broadcast(id, Vec::new(), vec![id.to_string()]);
        }
    }

    /// Tells every connected agent with a lease, but `about`, what changed.
    fn overlay_broadcast(
        &mut self,
        about: &AgentId,
        peers: Vec<OverlayPeer>,
        removed: Vec<String>,
    ) {
        let others: Vec<AgentId> = self
            .overlay
            .keys()
            .filter(|a| *a != about)
            .cloned()
            .collect();
        for other in others {
            self.send_to_agent(
                &other,
                master_message::Message::Overlay(Overlay {
                    network: None,
                    peers: peers.clone(),
                    removed: removed.clone(),
                    keys: Vec::new(),
                    primary_key: None,
                }),
            );
        }
    }

    /// The keyring as agents get it (nothing on a clear overlay).
    pub(crate) fn keyring_message(&self) -> (Vec<OverlayKey>, Option<u32>) {
        if self.overlay_keys.keys.is_empty() {
            return (Vec::new(), None);
        }
        let keys = self
            .overlay_keys
            .keys
            .iter()
            .map(|(id, key)| OverlayKey {
                id: *id,
                key: key.clone(),
            })
            .collect();
        (keys, Some(self.overlay_keys.primary))
    }

    /// Tells every connected agent with a lease the keyring.
    fn broadcast_keys(&mut self) {
        self.registry_dirty = true;
        let (keys, primary_key) = self.keyring_message();
        let agents: Vec<AgentId> = self.overlay.keys().cloned().collect();
        for agent in agents {
            self.send_to_agent(
                &agent,
                master_message::Message::Overlay(Overlay {
                    keys: keys.clone(),
                    primary_key,
                    ..Default::default()
                }),
            );
        }
    }

    /// A new key from the shell: the first is used at once; a later one is
    /// accepted everywhere first, sent with after [`KEY_OVERLAP`], and the
    /// old one forgotten after as long again.
    pub(crate) fn overlay_key(&mut self, now: crate::Time, key: Vec<u8>) {
        if !self.config.overlay.as_ref().is_some_and(|o| o.encrypt) {
            return;
        }
        if key.len() != KEY_LEN {
            self.out.push(super::Output::Warn(format!(
                "an overlay key of {} bytes (not {KEY_LEN}) was ignored",
                key.len()
            )));
            return;
        }
        let ring = &mut self.overlay_keys;
        // Ids only grow: the newest key is the last.
        let id = ring.keys.last().map_or(0, |(id, _)| id.wrapping_add(1));
        ring.keys.push((id, key));
        if ring.keys.len() == 1 {
            ring.primary = id;
        } else {
            // Never more than three: the oldest goes if a rotation is still
            // under way.
            while ring.keys.len() > 3 {
                ring.keys.remove(0);
            }
            ring.step = Some((now + KEY_OVERLAP, KeyStep::Promote(id)));
        }
        self.broadcast_keys();
    }

    /// A rotation's next step, when due.
    pub(crate) fn overlay_key_tick(&mut self, now: crate::Time) {
        let Some((due, step)) = self.overlay_keys.step else {
            return;
        };
        if due > now {
            return;
        }
        let ring = &mut self.overlay_keys;
        match step {
            KeyStep::Promote(id) => {
                ring.primary = id;
                ring.step = Some((now + KEY_OVERLAP, KeyStep::Prune));
            }
            KeyStep::Prune => {
                let primary = ring.primary;
                ring.keys.retain(|(id, _)| *id == primary);
                ring.step = None;
            }
        }
        self.broadcast_keys();
    }

    /// When the rotation's next step is due.
    pub(crate) fn overlay_key_deadline(&self) -> Option<crate::Time> {
        self.overlay_keys.step.map(|(due, _)| due)
    }

    /// Takes back a stored keyring (an encrypted overlay only).
    pub(crate) fn recover_overlay_keys(&mut self, keys: &[OverlayKey], primary: Option<u32>) {
        if !self.config.overlay.as_ref().is_some_and(|o| o.encrypt) {
            return;
        }
        let keys: Vec<(u32, Vec<u8>)> = keys
            .iter()
            .filter(|k| k.key.len() == KEY_LEN)
            .map(|k| (k.id, k.key.clone()))
            .collect();
        let Some(primary) = primary.filter(|p| keys.iter().any(|(id, _)| id == p)) else {
            return;
        };
        self.overlay_keys = Keyring {
            keys,
            primary,
            step: None,
        };
    }

    /// The leases for the registry.
    pub(crate) fn overlay_leases(&self) -> Vec<OverlayPeer> {
        self.overlay.iter().map(|(id, l)| peer(id, l)).collect()
    }

    /// Takes back stored leases that still fit the configured range.
    pub(crate) fn recover_overlay(&mut self, leases: &[OverlayPeer]) {
        let Some(config) = &self.config.overlay else {
            return;
        };
        let mut kept: BTreeMap<AgentId, Lease> = BTreeMap::new();
        for l in leases {
            let (Ok(subnet), Ok(underlay)) = (l.subnet.parse::<Ipv4Net>(), l.underlay.parse())
            else {
                continue;
            };
            if subnet.prefix_len() == config.subnet_prefix
                && config.cidr.contains(&subnet)
                && !kept.values().any(|k| k.subnet == subnet)
            {
                kept.insert(AgentId::new(l.agent_id.clone()), Lease { subnet, underlay });
            }
        }
        self.overlay = kept;
    }

    /// An agent's overlay subnet, if it has one.
    pub fn overlay_subnet(&self, agent: &AgentId) -> Option<Ipv4Net> {
        self.overlay.get(agent).map(|l| l.subnet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let cidr: Ipv4Net = "10.200.0.0/16".parse().unwrap();
        assert!(OverlayConfig::new("agora", cidr, 24).is_ok());
        assert_eq!(
            OverlayConfig::new("Agora", cidr, 24),
            Err(OverlayError::Name("Agora".into()))
        );
        assert!(OverlayConfig::new("a-very-long-name", cidr, 24).is_err());
        assert!(OverlayConfig::new("agora", cidr, 16).is_err());
        assert!(OverlayConfig::new("agora", cidr, 30).is_err());
    }

    #[test]
    fn underlays_are_ipv4_addresses() {
        assert_eq!(
            underlay_of("10.77.0.5:5051"),
            Some(Ipv4Addr::new(10, 77, 0, 5))
        );
        assert_eq!(underlay_of("agent-1:5051"), None);
        assert_eq!(underlay_of("0.0.0.0:5051"), None);
        assert_eq!(underlay_of("[::1]:5051"), None);
    }
}
