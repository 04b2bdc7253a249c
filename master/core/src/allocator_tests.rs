use proptest::prelude::*;

use super::*;

fn res(text: &str) -> Resources {
    Resources::parse(text, "*").unwrap()
}

fn fw(name: &str) -> FrameworkId {
    FrameworkId(name.into())
}

fn ag(name: &str) -> AgentId {
    AgentId(name.into())
}

fn star() -> Vec<String> {
    vec!["*".to_string()]
}

fn pass(a: &mut Allocator, now: Time) -> Vec<(String, String, String)> {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out: Vec<(String, String, String)> = a
        .allocate(now, &mut rng)
        .into_iter()
        .map(|x| {
            (
                x.framework.0.to_string(),
                x.agent.0.to_string(),
                x.resources.to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn offers_a_whole_agent_to_the_only_framework() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024;ports:[31000-31010]"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    assert_eq!(
        pass(&mut a, Time::ZERO),
        vec![(
            "f1".into(),
            "a1".into(),
            "cpus:4; mem:1024; ports:[31000-31010]".into()
        )]
    );
    // Everything is offered: a second pass offers nothing.
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.check_invariants().unwrap();
}

#[test]
fn drf_spreads_agents_between_frameworks() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_agent(ag("a2"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    a.add_framework(fw("f2"), &star(), true, false, &[]);
    let offers = pass(&mut a, Time::ZERO);
    let frameworks: BTreeSet<&str> = offers.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(frameworks.len(), 2, "{offers:?}");
    assert_eq!(a.framework_share(&fw("f1"), "*"), 0.5);
}

#[test]
fn lower_share_goes_first() {
    let mut a = Allocator::new(AllocatorConfig::default());
    // f1 already uses most of a1.
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    a.add_framework(fw("f2"), &star(), true, false, &[]);
    a.add_agent(
        ag("a1"),
        res("cpus:4;mem:1024"),
        vec![(fw("f1"), "*".into(), res("cpus:3;mem:100"))],
    );
    a.add_agent(ag("a2"), res("cpus:4;mem:1024"), vec![]);
    let offers = pass(&mut a, Time::ZERO);
    // Whichever agent comes first goes to f2 (lower share); the other to f2 as
    // well only if f2 is still lower. f2 gets a2's 4 cpus (share .5) vs f1 3/8.
    assert!(offers.iter().any(|o| o.0 == "f2"), "{offers:?}");
    a.check_invariants().unwrap();
}

#[test]
fn decline_filter_holds_until_expiry() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    let t0 = Time::from_secs(100);
    assert_eq!(pass(&mut a, t0).len(), 1);
    a.recover(
        &ag("a1"),
        &fw("f1"),
        "*",
        &res("cpus:4;mem:1024"),
        Some(Duration::from_secs(5)),
        t0,
    );
    assert!(pass(&mut a, t0 + Duration::from_secs(1)).is_empty());
    assert!(pass(&mut a, t0 + Duration::from_secs(4)).is_empty());
    assert_eq!(pass(&mut a, t0 + Duration::from_secs(5)).len(), 1);
}

#[test]
fn filter_stops_applying_when_the_agent_has_more() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    a.add_framework(fw("f2"), &star(), true, false, &[]);
    let t0 = Time::from_secs(1);
    let first = pass(&mut a, t0);
    assert_eq!(first.len(), 1);
    let (winner, loser) = if first[0].0 == "f1" {
        ("f1", "f2")
    } else {
        ("f2", "f1")
    };
    // The winner launches a task with 1 cpu and declines the rest for an hour.
    a.recover(
        &ag("a1"),
        &fw(winner),
        "*",
        &res("cpus:3;mem:1024"),
        Some(Duration::from_secs(3600)),
        t0,
    );
    let second = pass(&mut a, t0);
    assert_eq!(
        second,
        vec![(loser.into(), "a1".into(), "cpus:3; mem:1024".into())]
    );
    a.recover(
        &ag("a1"),
        &fw(loser),
        "*",
        &res("cpus:3;mem:1024"),
        Some(Duration::from_secs(3600)),
        t0,
    );
    assert!(pass(&mut a, t0).is_empty());
    // The task ends: the agent now has more than either filter refused.
    a.recover(&ag("a1"), &fw(winner), "*", &res("cpus:1"), None, t0);
    assert_eq!(pass(&mut a, t0).len(), 1);
    a.check_invariants().unwrap();
}

#[test]
fn suppress_and_revive() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    a.suppress(&fw("f1"), None);
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.revive(&fw("f1"), None);
    assert_eq!(pass(&mut a, Time::ZERO).len(), 1);
    // Revive clears filters too.
    a.recover(
        &ag("a1"),
        &fw("f1"),
        "*",
        &res("cpus:4;mem:1024"),
        Some(Duration::from_secs(3600)),
        Time::ZERO,
    );
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.revive(&fw("f1"), None);
    assert_eq!(pass(&mut a, Time::ZERO).len(), 1);
}

#[test]
fn inactive_frameworks_and_agents_get_nothing() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), false, false, &[]);
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.activate_framework(&fw("f1"));
    a.deactivate_agent(&ag("a1"));
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.activate_agent(&ag("a1"));
    assert_eq!(pass(&mut a, Time::ZERO).len(), 1);
}

#[test]
fn reservations_go_to_their_role_only() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(
        ag("a1"),
        res("cpus:2;mem:512;cpus(eng):2;mem(eng):512"),
        vec![],
    );
    a.add_framework(fw("ops"), &["ops".to_string()], true, false, &[]);
    a.add_framework(fw("eng"), &["eng".to_string()], true, false, &[]);
    let offers = pass(&mut a, Time::ZERO);
    let eng = offers
        .iter()
        .find(|o| o.0 == "eng")
        .expect("eng gets its reservation");
    assert!(eng.2.contains("cpus(eng):2"), "{offers:?}");
    for o in &offers {
        if o.0 == "ops" {
            assert!(
                !o.2.contains("(eng)"),
                "ops must not see eng's reservation: {offers:?}"
            );
        }
    }
    a.check_invariants().unwrap();
}

#[test]
fn weights_favour_the_heavier_role() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.set_weight("big", 3.0);
    for i in 0..8 {
        a.add_agent(ag(&format!("a{i}")), res("cpus:1;mem:128"), vec![]);
    }
    a.add_framework(fw("small"), &["small".to_string()], true, false, &[]);
    a.add_framework(fw("big"), &["big".to_string()], true, false, &[]);
    let offers = pass(&mut a, Time::ZERO);
    let big = offers.iter().filter(|o| o.0 == "big").count();
    assert_eq!(big, 6, "weight 3 against 1 gets 6 of 8 agents: {offers:?}");
}

#[test]
fn below_min_allocatable_is_not_offered() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:0.005;mem:16;disk:100"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    assert!(pass(&mut a, Time::ZERO).is_empty());
}

#[test]
fn gpu_agents_only_for_gpu_frameworks() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024;gpus:1"), vec![]);
    a.add_framework(fw("plain"), &star(), true, false, &[]);
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.add_framework(fw("gpu"), &star(), true, true, &[]);
    assert_eq!(pass(&mut a, Time::ZERO)[0].0, "gpu");
}

#[test]
fn removing_a_framework_releases_its_resources() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    assert_eq!(pass(&mut a, Time::ZERO).len(), 1);
    a.remove_framework(&fw("f1"));
    assert_eq!(a.available(&ag("a1")), Some(&res("cpus:4;mem:1024")));
    a.add_framework(fw("f2"), &star(), true, false, &[]);
    assert_eq!(pass(&mut a, Time::ZERO)[0].0, "f2");
    a.check_invariants().unwrap();
}

#[test]
fn recovering_more_than_held_is_harmless() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    pass(&mut a, Time::ZERO);
    a.recover(
        &ag("a1"),
        &fw("f1"),
        "*",
        &res("cpus:4;mem:1024"),
        None,
        Time::ZERO,
    );
    a.recover(
        &ag("a1"),
        &fw("f1"),
        "*",
        &res("cpus:4;mem:1024"),
        None,
        Time::ZERO,
    );
    a.check_invariants().unwrap();
    assert_eq!(a.available(&ag("a1")), Some(&res("cpus:4;mem:1024")));
}

#[derive(Clone, Debug)]
enum Op {
    AddAgent(u8),
    RemoveAgent(u8),
    AddFramework(u8, bool),
    RemoveFramework(u8),
    Allocate,
    /// Recover part (numerator/4) of a random allocation, with or without a filter.
    Recover(u8, u8, bool),
    Suppress(u8),
    Revive(u8),
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::AddAgent),
        (0u8..6).prop_map(Op::RemoveAgent),
        ((0u8..5), any::<bool>()).prop_map(|(f, r)| Op::AddFramework(f, r)),
        (0u8..5).prop_map(Op::RemoveFramework),
        Just(Op::Allocate),
        Just(Op::Allocate),
        ((0u8..50), (0u8..5), any::<bool>()).prop_map(|(i, n, f)| Op::Recover(i, n, f)),
        (0u8..5).prop_map(Op::Suppress),
        (0u8..5).prop_map(Op::Revive),
        (0u8..20).prop_map(Op::Tick),
    ]
}

proptest! {
    /// Whatever happens, every agent's resources are conserved
    /// (available + allocated = total), no agent is over-committed, and no
    /// resource is offered to two frameworks at once.
    #[test]
    fn conservation_and_no_double_offers(ops in prop::collection::vec(op(), 1..80), seed in any::<u64>()) {
        let mut a = Allocator::new(AllocatorConfig::default());
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut now = Time::from_secs(1);
        // Outstanding offers: (framework, agent, role, resources).
        let mut outstanding: Vec<Allocation> = Vec::new();
        for op in ops {
            match op {
                Op::AddAgent(i) => {
                    let id = ag(&format!("a{i}"));
                    if a.total(&id).is_none() {
                        a.add_agent(id, res(&format!("cpus:{};mem:{};ports:[31000-31020];disk(r1):50", i + 1, 256 * (i as u32 + 1))), vec![]);
                    }
                }
                Op::RemoveAgent(i) => {
                    let id = ag(&format!("a{i}"));
                    outstanding.retain(|o| o.agent != id);
                    a.remove_agent(&id);
                }
                Op::AddFramework(f, second_role) => {
                    let mut roles = vec!["*".to_string()];
                    if second_role { roles.push("r1".into()); }
                    a.add_framework(fw(&format!("f{f}")), &roles, true, false, &[]);
                }
                Op::RemoveFramework(f) => {
                    let id = fw(&format!("f{f}"));
                    outstanding.retain(|o| o.framework != id);
                    a.remove_framework(&id);
                }
                Op::Allocate => {
                    let offers = a.allocate(now, &mut rng);
                    outstanding.extend(offers);
                    // No resource is in two outstanding offers: on each agent,
                    // ports never overlap and scalars never sum past the total.
                    for (i, o) in outstanding.iter().enumerate() {
                        let total = a.total(&o.agent).unwrap();
                        let mut cpus = 0;
                        let mut mem = 0;
                        for (j, x) in outstanding.iter().enumerate().filter(|(_, x)| x.agent == o.agent) {
                            cpus += x.resources.scalar_fixed("cpus");
                            mem += x.resources.scalar_fixed("mem");
                            if i != j {
                                let ports = o.resources.ranges("ports");
                                let overlap = ports.difference(&ports.difference(&x.resources.ranges("ports")));
                                prop_assert!(overlap.is_empty(), "ports {} offered twice on {}", overlap, o.agent);
                            }
                        }
                        prop_assert!(cpus <= total.scalar_fixed("cpus") && mem <= total.scalar_fixed("mem"),
                            "agent {} offered more than it has", o.agent);
                    }
                }
                Op::Recover(i, n, filter) => {
                    if !outstanding.is_empty() {
                        let o = outstanding.remove(i as usize % outstanding.len());
                        // Keep (n/4) of the cpus as "used by a task"; recover the rest.
                        let cpus = o.resources.scalar("cpus");
                        let keep = (cpus * f64::from(n) / 4.0 * 1000.0).floor() / 1000.0;
                        let used = res(&format!("cpus:{keep}"));
                        let back = &o.resources - &used;
                        let f = filter.then(|| Duration::from_secs(5));
                        a.recover(&o.agent, &o.framework, &o.role, &back, f, now);
                    }
                }
                Op::Suppress(f) => a.suppress(&fw(&format!("f{f}")), None),
                Op::Revive(f) => a.revive(&fw(&format!("f{f}")), None),
                Op::Tick(s) => now = now + Duration::from_secs(u64::from(s)),
            }
            prop_assert_eq!(a.check_invariants(), Ok(()));
        }
    }
}

#[test]
fn filters_sharing_one_declined_offer_lift_together_when_the_agent_gains() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.add_framework(fw("f1"), &star(), true, false, &[]);
    a.add_framework(fw("f2"), &star(), true, false, &[]);
    a.add_framework(fw("f3"), &star(), true, false, &[]);
    a.add_agent(
        ag("a1"),
        res("cpus:4;mem:1024"),
        vec![(fw("f3"), "*".into(), res("cpus:2;mem:512"))],
    );
    let year = Some(MAX_FILTER);
    // f1 and f2 decline the same offer in turn: their filters share it.
    for _ in 0..2 {
        let mut rng = fastrand::Rng::with_seed(7);
        let offers = a.allocate(Time::ZERO, &mut rng);
        assert_eq!(offers.len(), 1);
        let o = &offers[0];
        assert_ne!(o.framework, fw("f3"));
        a.recover(
            &o.agent,
            &o.framework,
            &o.role,
            &o.resources,
            year,
            Time::ZERO,
        );
    }
    let slot = a.agent(0);
    let refused: Vec<&Arc<Resources>> = slot.filters.values().map(|f| &f.refused).collect();
    assert_eq!(refused.len(), 2);
    assert!(Arc::ptr_eq(refused[0], refused[1]));
    // f3 is offered the rest; it declines too (a filter of its own).
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(
        offers,
        vec![("f3".into(), "a1".into(), "cpus:2; mem:512".into())]
    );
    a.recover(
        &ag("a1"),
        &fw("f3"),
        "*",
        &res("cpus:2;mem:512"),
        year,
        Time::ZERO,
    );
    assert!(pass(&mut a, Time::ZERO).is_empty(), "all three declined");
    // f3's task ends: the agent has more than any of them declined, so no
    // filter (shared or not) holds anyone back.
    a.recover(
        &ag("a1"),
        &fw("f3"),
        "*",
        &res("cpus:2;mem:512"),
        None,
        Time::ZERO,
    );
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(offers[0].2, "cpus:4; mem:1024");
    // Declined again by whoever got it, the next in line gets it: the
    // others' filters (refusing less) do not block the larger offer.
    let first = offers[0].0.clone();
    a.recover(
        &ag("a1"),
        &fw(&first),
        "*",
        &res("cpus:4;mem:1024"),
        year,
        Time::ZERO,
    );
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_ne!(offers[0].0, first);
    a.check_invariants().unwrap();
}

fn quota(guarantees: &[(&str, f64)], limits: &[(&str, f64)]) -> Quota {
    Quota {
        guarantees: guarantees
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect(),
        limits: limits.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
    }
}

#[test]
fn a_role_is_never_offered_beyond_its_limit_nor_its_parents() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.set_quota("eng", Some(quota(&[], &[("cpus", 3.0)])));
    a.set_quota("eng/web", Some(quota(&[], &[("cpus", 2.0)])));
    a.add_framework(fw("web"), &["eng/web".to_string()], true, false, &[]);
    a.add_framework(fw("batch"), &["eng/batch".to_string()], true, false, &[]);
    for i in 0..4 {
        a.add_agent(ag(&format!("a{i}")), res("cpus:4;mem:1024"), vec![]);
    }
    let offers = pass(&mut a, Time::ZERO);
    let cpus = |f: &str| -> f64 {
        offers
            .iter()
            .filter(|o| o.0 == f)
            .map(|o| res(&o.2).scalar("cpus"))
            .sum()
    };
    // eng/web at most 2; eng (web and batch together) at most 3.
    assert_eq!(cpus("web"), 2.0, "{offers:?}");
    assert_eq!(cpus("batch"), 1.0, "{offers:?}");
    assert_eq!(a.consumed("eng")["cpus"], 3.0);
    // Nothing more while the offers are out.
    assert!(pass(&mut a, Time::ZERO).is_empty());
    a.check_invariants().unwrap();
    // Without the limits, the rest is offered.
    a.set_quota("eng", None);
    a.set_quota("eng/web", None);
    let more = pass(&mut a, Time::ZERO);
    let rest: f64 = more.iter().map(|o| res(&o.2).scalar("cpus")).sum();
    assert_eq!(rest, 13.0, "{more:?}");
}

#[test]
fn a_role_below_its_guarantee_is_offered_first() {
    // "small" holds half the cluster, "other" nothing: by DRF the free
    // agent goes to "other", unless "small" is below its guarantee.
    let setup = || {
        let mut a = Allocator::new(AllocatorConfig::default());
        a.add_framework(fw("small"), &["small".to_string()], true, false, &[]);
        a.add_framework(fw("other"), &["other".to_string()], true, false, &[]);
        a.add_agent(
            ag("a0"),
            res("cpus:4;mem:1024"),
            vec![(fw("small"), "small".into(), res("cpus:4;mem:1024"))],
        );
        a.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
        a
    };
    let mut a = setup();
    // Without quota DRF gives the free agent to "other" (share 0).
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(offers.iter().filter(|o| o.1 == "a1").count(), 1);
    assert_eq!(offers.iter().find(|o| o.1 == "a1").unwrap().0, "other");
    a.check_invariants().unwrap();

    let mut a = setup();
    a.set_quota("small", Some(quota(&[("cpus", 6.0)], &[])));
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(
        offers,
        vec![("small".into(), "a1".into(), "cpus:4; mem:1024".into())],
        "the guaranteed role gets the free agent first"
    );
    a.check_invariants().unwrap();
}

#[test]
fn what_guarantees_lack_is_held_back_from_other_roles() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.set_quota("db", Some(quota(&[("cpus", 4.0)], &[])));
    a.add_framework(fw("web"), &["web".to_string()], true, false, &[]);
    for i in 0..2 {
        a.add_agent(ag(&format!("a{i}")), res("cpus:4;mem:1024"), vec![]);
    }
    let cpus = |offers: &[(String, String, String)], f: &str| -> f64 {
        offers
            .iter()
            .filter(|o| o.0 == f)
            .map(|o| res(&o.2).scalar("cpus"))
            .sum()
    };
    // db has no framework yet: web gets the cpus db does not need.
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(cpus(&offers, "web"), 4.0, "{offers:?}");
    assert!(
        pass(&mut a, Time::ZERO)
            .iter()
            .all(|o| res(&o.2).scalar("cpus") == 0.0)
    );
    // db's framework comes and finds its guarantee.
    a.add_framework(fw("db"), &["db".to_string()], true, false, &[]);
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(cpus(&offers, "db"), 4.0, "{offers:?}");
    a.check_invariants().unwrap();
    // Met guarantees hold nothing back.
    let mut b = Allocator::new(AllocatorConfig::default());
    b.set_quota("db", Some(quota(&[("cpus", 4.0)], &[])));
    b.add_framework(fw("web"), &["web".to_string()], true, false, &[]);
    b.add_agent(
        ag("a0"),
        res("cpus:4;mem:1024"),
        vec![(fw("db"), "db".into(), res("cpus:4"))],
    );
    b.add_agent(ag("a1"), res("cpus:4;mem:1024"), vec![]);
    let offers = pass(&mut b, Time::ZERO);
    assert_eq!(cpus(&offers, "web"), 4.0, "{offers:?}");
}

#[test]
fn a_declined_offer_cut_to_a_limit_is_not_offered_again_while_filtered() {
    let mut a = Allocator::new(AllocatorConfig::default());
    a.set_quota("eng", Some(quota(&[], &[("cpus", 1.5)])));
    a.add_framework(fw("f"), &["eng".to_string()], true, false, &[]);
    a.add_agent(ag("a0"), res("cpus:4;mem:1024"), vec![]);
    let offers = pass(&mut a, Time::ZERO);
    assert_eq!(offers.len(), 1, "{offers:?}");
    let offered = res(&offers[0].2);
    assert_eq!(offered.scalar("cpus"), 1.5);
    // Declined with a filter: the agent still has 4 cpus, but what would
    // be offered is what was declined.
    a.recover(
        &ag("a0"),
        &fw("f"),
        "eng",
        &offered,
        Some(Duration::from_secs(10)),
        Time::ZERO,
    );
    assert!(pass(&mut a, Time::ZERO).is_empty());
    // Once the filter expires, it is offered again.
    let later = Time::ZERO + Duration::from_secs(11);
    assert_eq!(pass(&mut a, later).len(), 1);
    a.check_invariants().unwrap();
}
