//! The overlay's address plan: a subnet per agent, kept across its
//! re-registrations and the master's failovers, given back when it is marked
//! gone; every agent told the others' subnets and underlay addresses.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_master_core::master::OverlayConfig;
use agora_master_core::{Config, Input};
use agora_proto::internal::{Overlay, master_message::Message as M};

use crate::harness::*;

fn config() -> Config {
    Config {
        overlay: Some(OverlayConfig::new("agora", "10.200.0.0/16".parse().unwrap(), 24).unwrap()),
        ..Config::default()
    }
}

/// The overlay messages `ag` received in `out`.
fn overlay_messages(out: &[agora_master_core::Output], ag: &Ag) -> Vec<Overlay> {
    agent_messages(out, ag.conn)
        .into_iter()
        .filter_map(|m| match m {
            M::Overlay(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// What an agent knows from the messages it received: its subnet and its
/// peers' subnets by agent id.
fn picture(h: &Harness, ag: &Ag) -> (String, BTreeMap<String, String>) {
    let mut subnet = String::new();
    let mut peers = BTreeMap::new();
    for o in overlay_messages(&h.log, ag) {
        if let Some(n) = o.network {
            subnet = n.subnet;
            peers.clear();
        }
        for r in o.removed {
            peers.remove(&r);
        }
        for p in o.peers {
            peers.insert(p.agent_id, p.subnet);
        }
    }
    (subnet, peers)
}

#[test]
fn each_agent_gets_a_subnet_of_its_own_and_learns_the_others() {
    let mut h = Harness::with_config(config());
    let a = h.register_agent("a", "cpus:1;mem:128");
    let b = h.register_agent("b", "cpus:1;mem:128");
    let c = h.register_agent("c", "cpus:1;mem:128");
    let (sa, pa) = picture(&h, &a);
    let (sb, pb) = picture(&h, &b);
    let (sc, pc) = picture(&h, &c);
    assert_eq!(
        [sa.as_str(), sb.as_str(), sc.as_str()],
        ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]
    );
    // Each knows the two others (a learned of b and c after it registered).
    assert_eq!(
        pa.values().cloned().collect::<Vec<_>>(),
        [sb.clone(), sc.clone()]
    );
    assert_eq!(
        pb.values().cloned().collect::<Vec<_>>(),
        [sa.clone(), sc.clone()]
    );
    assert_eq!(
        pc.values().cloned().collect::<Vec<_>>(),
        [sa.clone(), sb.clone()]
    );
    let first = overlay_messages(&h.log, &a).remove(0).network.unwrap();
    assert_eq!(
        (
            first.name.as_str(),
            first.cidr.as_str(),
            first.vni,
            first.port
        ),
        ("agora", "10.200.0.0/16", 1, 4789)
    );
}

#[test]
fn an_agent_keeps_its_subnet_when_it_comes_back_and_after_a_failover() {
    let mut h = Harness::with_config(config());
    let a = h.register_agent("a", "cpus:1;mem:128");
    let b = h.register_agent("b", "cpus:1;mem:128");
    let (sb, _) = picture(&h, &b);
    // b re-registers (an agent restart): same subnet, and a hears nothing new.
    let before = overlay_messages(&h.log, &a).len();
    let b2 = h.register_agent_with("b", "cpus:1;mem:128", "", Some(&b.id));
    assert_eq!(picture(&h, &b2).0, sb);
    assert_eq!(overlay_messages(&h.log, &a).len(), before);

    // A new master starts from the registry: the same subnets, and a new
    // agent gets the next free one.
    let registry = h.master.registry();
    assert_eq!(registry.overlay_leases.len(), 2);
    let mut n = Harness::with_config(config());
    n.master.recover(n.now, registry);
    let b3 = n.register_agent_with("b", "cpus:1;mem:128", "", Some(&b.id));
    assert_eq!(picture(&n, &b3).0, sb);
    // (The harness' masters share an id: the new agent comes with its own.)
    let d_id = agora_master_core::ids::AgentId::new("M2-S0");
    let d = n.register_agent_with("d", "cpus:1;mem:128", "", Some(&d_id));
    assert_eq!(picture(&n, &d).0, "10.200.2.0/24");
    assert_eq!(picture(&n, &d).1.len(), 2, "a (not back yet) and b");
}

#[test]
fn a_gone_agent_gives_its_subnet_back_and_the_others_forget_it() {
    let mut h = Harness::with_config(config());
    let a = h.register_agent("a", "cpus:1;mem:128");
    let b = h.register_agent("b", "cpus:1;mem:128");
    h.handle(Input::Operator {
        principal: None,
        request: agora_master_core::ids::RequestId(1),
        call: agora_master_core::OperatorCall::MarkAgentGone(b.id.clone()),
    });
    assert!(picture(&h, &a).1.is_empty());
    assert!(h.master.registry().overlay_leases.len() == 1);
    let c = h.register_agent("c", "cpus:1;mem:128");
    assert_eq!(picture(&h, &c).0, "10.200.1.0/24", "b's subnet, free again");
}

#[test]
fn without_an_overlay_agents_hear_nothing_of_it_and_a_full_range_says_so() {
    let mut h = Harness::new();
    let a = h.register_agent("a", "cpus:1;mem:128");
    assert!(overlay_messages(&h.log, &a).is_empty());
    assert!(h.master.registry().overlay_leases.is_empty());

    // A /30 split in /31s... is refused; a /27 in /28s has two subnets.
    assert!(OverlayConfig::new("agora", "10.9.0.0/30".parse().unwrap(), 31).is_err());
    let mut h = Harness::with_config(Config {
        overlay: Some(OverlayConfig::new("agora", "10.9.0.0/27".parse().unwrap(), 28).unwrap()),
        ..Config::default()
    });
    h.register_agent("a", "cpus:1;mem:128");
    h.register_agent("b", "cpus:1;mem:128");
    let c = h.register_agent("c", "cpus:1;mem:128");
    assert!(overlay_messages(&h.log, &c).is_empty());
    assert!(h.log.iter().any(|o| matches!(o,
        agora_master_core::Output::Warn(w) if w.contains("every /28 of the overlay 10.9.0.0/27 is leased"))));
}

/// The keyring `ag` knows from its messages: (key ids, primary).
fn keyring(h: &Harness, ag: &Ag) -> (Vec<u32>, Option<u32>) {
    let mut ring = (Vec::new(), None);
    for o in overlay_messages(&h.log, ag) {
        if !o.keys.is_empty() {
            ring = (o.keys.iter().map(|k| k.id).collect(), o.primary_key);
        }
    }
    ring
}

#[test]
fn an_encrypted_overlay_rotates_keys_so_that_every_agent_can_always_read() {
    let mut cfg = config();
    cfg.overlay.as_mut().unwrap().encrypt = true;
    let mut h = Harness::with_config(cfg.clone());
    let a = h.register_agent("a", "cpus:1;mem:128");
    assert_eq!(keyring(&h, &a), (vec![], None), "no key yet");
    h.handle(Input::OverlayKey(vec![1; 20]));
    let b = h.register_agent("b", "cpus:1;mem:128");
    assert_eq!(keyring(&h, &a), (vec![0], Some(0)));
    assert_eq!(keyring(&h, &b), (vec![0], Some(0)), "in the whole picture");
    // A second key: accepted first, sent with after the overlap, the old one
    // forgotten after as long again.
    h.handle(Input::OverlayKey(vec![2; 20]));
    assert_eq!(keyring(&h, &b), (vec![0, 1], Some(0)));
    h.advance(Duration::from_secs(5));
    assert_eq!(keyring(&h, &a), (vec![0, 1], Some(1)));
    h.advance(Duration::from_secs(5));
    assert_eq!(keyring(&h, &a), (vec![1], Some(1)));
    assert_eq!(keyring(&h, &b), (vec![1], Some(1)));
    // A key of the wrong size is refused, and said so.
    let out = h.handle(Input::OverlayKey(vec![3; 8]));
    assert!(
        out.iter()
            .any(|o| matches!(o, agora_master_core::Output::Warn(_)))
    );
    // A new master keeps the keyring (no agent loses a beat at failover).
    let registry = h.master.registry();
    assert_eq!(registry.overlay_primary_key, Some(1));
    let mut n = Harness::with_config(cfg);
    n.master.recover(n.now, registry);
    let a2 = n.register_agent_with("a", "cpus:1;mem:128", "", Some(&a.id));
    assert_eq!(keyring(&n, &a2), (vec![1], Some(1)));
    // Without encryption, keys are ignored.
    let mut clear = Harness::with_config(config());
    let c = clear.register_agent("c", "cpus:1;mem:128");
    clear.handle(Input::OverlayKey(vec![1; 20]));
    assert_eq!(keyring(&clear, &c), (vec![], None));
}
