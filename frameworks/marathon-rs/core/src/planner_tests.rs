use proptest::prelude::*;

use super::*;
use crate::app::{AppUpdate, UpgradeStrategy, build};
use crate::constraints::Placement;
use crate::path::PathId;
use crate::time::Millis;

fn app(instances: u32, min: f64, max: f64, checks: bool) -> App {
    let mut u = AppUpdate {
        cmd: Some("sleep 1000".into()),
        instances: Some(f64::from(instances)),
        ..Default::default()
    };
    u.upgrade_strategy = Some(UpgradeStrategy {
        minimum_health_capacity: min,
        maximum_over_capacity: max,
    });
    if checks {
        u.health_checks = Some(vec![
            serde_json::from_str(r#"{"protocol":"COMMAND","command":{"value":"true"}}"#).unwrap(),
        ]);
    }
    build(&PathId::parse("/a").unwrap(), None, &u, Millis(1000)).unwrap()
}

fn inst(id: &str, config: &str, state: TaskState, healthy: Option<bool>, staged: i64) -> Instance {
    Instance {
        task_id: id.into(),
        app_id: PathId::parse("/a").unwrap(),
        version: config.into(),
        config_version: config.into(),
        agent_id: "s".into(),
        placement: Placement::default(),
        ports: vec![],
        ip_addresses: vec![],
        state: state as i32,
        health: healthy.map(|alive| crate::instance::Health {
            alive,
            ..Default::default()
        }),
        staged_at: Millis(staged),
        started_at: None,
        killing: false,
        unreachable_since: None,
        inactive: false,
        reservation: None,
    }
}

#[test]
fn scale_up_and_down() {
    let a = app(3, 1.0, 1.0, false);
    let v = a.config_version();
    let i1 = inst("t1", &v, TaskState::TaskRunning, None, 1);
    let p = plan(&a, &[&i1]);
    assert_eq!((p.launch, p.kill.len(), p.done), (2, 0, false));
    let i2 = inst("t2", &v, TaskState::TaskRunning, None, 2);
    let i3 = inst("t3", &v, TaskState::TaskStaging, None, 3);
    let i4 = inst("t4", &v, TaskState::TaskRunning, None, 4);
    // Four for three: the staging one goes first.
    let p = plan(&a, &[&i1, &i2, &i3, &i4]);
    assert_eq!(p.kill, vec!["t3".to_string()]);
    // Four running for three: youngest first.
    let i3r = inst("t3", &v, TaskState::TaskRunning, None, 3);
    assert_eq!(
        plan(&a, &[&i1, &i2, &i3r, &i4]).kill,
        vec!["t4".to_string()]
    );
    let mut oldest = a.clone();
    oldest.kill_selection = KillSelection::OldestFirst;
    assert_eq!(
        plan(&oldest, &[&i1, &i2, &i3r, &i4]).kill,
        vec!["t1".to_string()]
    );
    assert!(plan(&a, &[&i1, &i2, &i3r]).done);
}

#[test]
fn health_checked_apps_are_done_only_when_healthy() {
    let a = app(2, 1.0, 1.0, true);
    let v = a.config_version();
    let i1 = inst("t1", &v, TaskState::TaskRunning, Some(true), 1);
    let i2 = inst("t2", &v, TaskState::TaskRunning, None, 2);
    assert!(!plan(&a, &[&i1, &i2]).done);
    let i2h = inst("t2", &v, TaskState::TaskRunning, Some(true), 2);
    assert!(plan(&a, &[&i1, &i2h]).done);
}

#[test]
fn default_rolling_upgrade_starts_all_new_then_kills_old_one_per_healthy() {
    let a = app(3, 1.0, 1.0, false);
    let old: Vec<Instance> = (0..3)
        .map(|i| inst(&format!("o{i}"), "old", TaskState::TaskRunning, None, i))
        .collect();
    let refs: Vec<&Instance> = old.iter().collect();
    let p = plan(&a, &refs);
    assert_eq!((p.launch, p.kill.len()), (3, 0));
    let v = a.config_version();
    let mut all = old.clone();
    all.push(inst("n0", &v, TaskState::TaskRunning, None, 10));
    all.push(inst("n1", &v, TaskState::TaskStaging, None, 11));
    all.push(inst("n2", &v, TaskState::TaskStaging, None, 12));
    let refs: Vec<&Instance> = all.iter().collect();
    let p = plan(&a, &refs);
    assert_eq!(
        (p.launch, p.kill.len()),
        (0, 1),
        "one new healthy → one old killed"
    );
}

#[test]
fn zero_zero_kills_everything_then_starts() {
    let a = app(3, 0.0, 0.0, false);
    let mut old: Vec<Instance> = (0..3)
        .map(|i| inst(&format!("o{i}"), "old", TaskState::TaskRunning, None, i))
        .collect();
    let refs: Vec<&Instance> = old.iter().collect();
    let p = plan(&a, &refs);
    assert_eq!((p.launch, p.kill.len()), (0, 3));
    for o in &mut old {
        o.killing = true;
    }
    let refs: Vec<&Instance> = old.iter().collect();
    assert_eq!(plan(&a, &refs).launch, 0, "waits for the old ones to end");
    for o in &mut old {
        o.state = TaskState::TaskKilled as i32;
    }
    let refs: Vec<&Instance> = old.iter().collect();
    assert_eq!(plan(&a, &refs).launch, 3);
}

#[test]
fn a_single_resident_instance_is_killed_before_its_replacement_starts() {
    let mut a = app(1, 0.5, 0.0, false);
    a.container = Some(
        serde_json::from_str(
            r#"{"type":"MESOS","volumes":[{"containerPath":"d","persistent":{"size":1}}]}"#,
        )
        .unwrap(),
    );
    let old = inst("o", "old", TaskState::TaskRunning, None, 0);
    let p = plan(&a, &[&old]);
    assert_eq!(p.kill, ["o"]);
    assert_eq!(p.launch, 0, "nothing starts before the old task is gone");
    // A plain app with the same strategy starts the new one first.
    let plain = app(1, 0.5, 0.0, false);
    let p = plan(&plain, &[&old]);
    assert_eq!((p.kill.len(), p.launch), (0, 1));
}

#[test]
fn half_and_zero_kills_half_first() {
    let a = app(4, 0.5, 0.0, false);
    let old: Vec<Instance> = (0..4)
        .map(|i| inst(&format!("o{i}"), "old", TaskState::TaskRunning, None, i))
        .collect();
    let refs: Vec<&Instance> = old.iter().collect();
    let p = plan(&a, &refs);
    assert_eq!(p.kill.len(), 2);
}

#[test]
fn backoff_grows_and_caps() {
    let mut a = app(1, 1.0, 1.0, false);
    a.backoff_seconds = 1.0;
    a.backoff_factor = 2.0;
    a.max_launch_delay_seconds = 5.0;
    let mut b = Backoff::default();
    b.failed(&a, 0);
    assert_eq!(b.delay, 1.0);
    b.failed(&a, 0);
    b.failed(&a, 0);
    assert_eq!(b.delay, 4.0);
    b.failed(&a, 0);
    assert_eq!(b.delay, 5.0);
    assert!(b.waiting(4999) && !b.waiting(5000));
}

/// Simulates a rolling upgrade driven only by `plan`: new instances become
/// healthy one at a time, kills take effect one step later. Checks the
/// invariants at every step and that it finishes.
fn simulate(instances: u32, min: f64, max: f64, seed: u64) -> Result<(), TestCaseError> {
    let a = app(instances, min, max, true);
    let v = a.config_version();
    let b = bounds(&a);
    let mut all: Vec<Instance> = (0..instances)
        .map(|i| {
            inst(
                &format!("o{i}"),
                "old",
                TaskState::TaskRunning,
                Some(true),
                i64::from(i),
            )
        })
        .collect();
    let mut rng = seed;
    let mut next = 0;
    for _step in 0..500 {
        // Kills sent last step take effect.
        for i in all.iter_mut().filter(|i| i.killing) {
            i.state = TaskState::TaskKilled as i32;
        }
        all.retain(|i| i.is_active() || i.killing);
        let refs: Vec<&Instance> = all.iter().collect();
        let p = plan(&a, &refs);
        if p.done {
            return Ok(());
        }
        let healthy_before = all
            .iter()
            .filter(|i| i.is_active() && i.is_healthy(true))
            .count() as u32;
        for k in &p.kill {
            if let Some(i) = all.iter_mut().find(|i| &i.task_id == k) {
                i.killing = true;
            }
        }
        let healthy_after = all
            .iter()
            .filter(|i| i.is_active() && i.is_healthy(true))
            .count() as u32;
        prop_assert!(
            healthy_after >= b.min_healthy.min(healthy_before),
            "healthy fell from {} to {} below {}",
            healthy_before,
            healthy_after,
            b.min_healthy
        );
        for _ in 0..p.launch {
            next += 1;
            all.push(inst(
                &format!("n{next}"),
                &v,
                TaskState::TaskStaging,
                None,
                100 + next,
            ));
        }
        let occupying = all
            .iter()
            .filter(|i| !agora_proto::status::is_terminal(i.task_state()))
            .count() as u32;
        let limit = (b.max_capacity + 1).max(instances);
        prop_assert!(
            occupying <= limit,
            "{} instances alive, limit {}",
            occupying,
            limit
        );
        // One staging instance starts running and becomes healthy.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let staging: Vec<usize> = all
            .iter()
            .enumerate()
            .filter(|(_, i)| i.task_state() == TaskState::TaskStaging)
            .map(|(n, _)| n)
            .collect();
        if !staging.is_empty() {
            let n = staging[(rng >> 33) as usize % staging.len()];
            all[n].state = TaskState::TaskRunning as i32;
            all[n].health = Some(crate::instance::Health {
                alive: true,
                ..Default::default()
            });
        }
    }
    prop_assert!(false, "the upgrade did not finish");
    Ok(())
}

proptest! {
    #[test]
    fn rolling_upgrades_keep_their_bounds_and_finish(
        instances in 1u32..12,
        min in prop::sample::select(vec![0.0, 0.25, 0.5, 0.75, 1.0]),
        max in prop::sample::select(vec![0.0, 0.25, 0.5, 1.0]),
        seed in any::<u64>(),
    ) {
        simulate(instances, min, max, seed)?;
    }
}
