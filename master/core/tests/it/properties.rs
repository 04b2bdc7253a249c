//! Properties of the whole master under random traffic: resources are
//! conserved, no agent is over-committed, and no resource is in two
//! outstanding offers at once.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_proto::resources::Resources;
use agora_proto::v1::{self, TaskState};
use proptest::prelude::*;

use crate::harness::*;

#[derive(Clone, Debug)]
enum Step {
    Tick(u8),
    /// Framework i launches a task of (cpus tenths, mem) on its first offer.
    Launch(u8, u8, u16),
    /// Framework i declines all its offers with a filter of n seconds.
    Decline(u8, u8),
    /// A running task finishes.
    Finish(u8),
    /// Framework i disconnects and comes back.
    Reconnect(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..10).prop_map(Step::Tick),
        ((0u8..3), (1u8..30), (16u16..600)).prop_map(|(f, c, m)| Step::Launch(f, c, m)),
        ((0u8..3), (0u8..20)).prop_map(|(f, n)| Step::Decline(f, n)),
        (0u8..50).prop_map(Step::Finish),
        (0u8..3).prop_map(Step::Reconnect),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn offers_never_overlap_and_agents_are_never_over_committed(steps in prop::collection::vec(step(), 1..60)) {
        let mut h = Harness::new();
        h.auto_pong = true;
        let agents: Vec<Ag> = (0..3).map(|i| h.register_agent(&format!("agent-{i}"), &format!("cpus:{};mem:1024;ports:[31000-31005]", i + 1))).collect();
        let mut frameworks: Vec<Fw> = (0..3).map(|i| h.framework(&format!("fw{i}"))).collect();
        // Outstanding offers per framework, as the framework sees them.
        let mut outstanding: BTreeMap<usize, Vec<v1::Offer>> = BTreeMap::new();
        let mut running: Vec<(usize, String, String)> = Vec::new();
        let mut next_task = 0;
        for s in steps {
            let out = match s {
                Step::Tick(secs) => h.advance(Duration::from_secs(u64::from(secs))),
                Step::Launch(f, cpus, mem) => {
                    let f = f as usize;
                    let Some(offer) = outstanding.get_mut(&f).and_then(|v| v.pop()) else { continue };
                    next_task += 1;
                    let id = format!("t{next_task}");
                    let out = h.launch(&frameworks[f], &offer, &id, &format!("cpus:{};mem:{}", f64::from(cpus) / 10.0, mem), "sleep 1");
                    if updates(&out, &frameworks[f].stream).is_empty() {
                        running.push((f, id, offer.agent_id.value.clone()));
                    }
                    out
                }
                Step::Decline(f, n) => {
                    let f = f as usize;
                    let ids: Vec<String> = outstanding.remove(&f).unwrap_or_default().iter().map(|o| format!(r#"{{"value":"{}"}}"#, o.id.value)).collect();
                    h.call(&frameworks[f], &format!(r#"{{"type":"DECLINE","decline":{{"offer_ids":[{}],"filters":{{"refuse_seconds":{n}}}}}}}"#, ids.join(","))).1
                }
                Step::Finish(i) => {
                    if running.is_empty() { continue }
                    let (f, id, agent) = running.remove(i as usize % running.len());
                    let ag = agents.iter().find(|a| a.id.as_str() == agent).unwrap().clone();
                    let fw = frameworks[f].clone();
                    let mut out = h.agent_update(&ag, &fw, &id, TaskState::TaskFinished, 9);
                    if h.ack(&fw, &ag, &id, 9).is_ok() {
                        out.extend(h.tick());
                    }
                    out
                }
                Step::Reconnect(f) => {
                    let f = f as usize;
                    h.handle(agora_master_core::Input::StreamClosed { stream: frameworks[f].stream.clone() });
                    outstanding.remove(&f);
                    let (fw, out) = h.subscribe(&format!(r#"{{"user":"root","name":"fw{f}","failover_timeout":60,"id":{{"value":"{}"}}}}"#, frameworks[f].id));
                    frameworks[f] = fw;
                    out
                }
            };
            for (i, fw) in frameworks.iter().enumerate() {
                for e in events(&out, &fw.stream) {
                    if let Some(o) = e.offers { outstanding.entry(i).or_default().extend(o.offers); }
                    if let Some(r) = e.rescind { outstanding.entry(i).or_default().retain(|o| o.id != r.offer_id); }
                }
            }
            prop_assert_eq!(h.master.allocator().check_invariants(), Ok(()));
            // Outstanding offers on one agent never overlap and fit the agent.
            for ag in &agents {
                let mut sum_cpus = 0.0;
                let mut ports = agora_proto::resources::RangeSet::default();
                for o in outstanding.values().flatten().filter(|o| o.agent_id.value == ag.id.as_str()) {
                    let r = Resources::from_protos(&o.resources).unwrap();
                    sum_cpus += r.scalar("cpus");
                    let p = r.ranges("ports");
                    prop_assert!(ports.difference(&p) == ports, "ports offered twice on {}", ag.id);
                    ports = ports.union(&p);
                }
                let total = h.master.allocator().total(&ag.id).unwrap().scalar("cpus");
                prop_assert!(sum_cpus <= total + 1e-9, "{} cpus offered on an agent with {}", sum_cpus, total);
            }
        }
    }
}
