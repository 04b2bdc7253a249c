//! The state machine driven the way the shell drives it: REST calls, offers
//! and status updates in; scheduler calls, events and replies out.

use agora_proto::resources::{Resources, parse_attributes};

use super::*;

const NOW: Millis = Millis(1_700_000_000_000);

struct Harness {
    m: Marathon,
    now: Millis,
    offers: u32,
}

impl Harness {
    fn new() -> Self {
        let mut m = Marathon::new(Config::default(), State::default(), 7);
        m.subscribed(NOW, "fw-1");
        m.take_outputs();
        Harness {
            m,
            now: NOW,
            offers: 0,
        }
    }

    fn at(&mut self, ms: i64) -> Millis {
        self.now = self.now.plus(ms);
        self.now
    }

    fn offer(&mut self, agent: &str, cpus: f64, attrs: &str) -> v1::Offer {
        self.offers += 1;
        v1::Offer {
            id: v1::OfferId {
                value: format!("o{}", self.offers),
            },
            framework_id: v1::FrameworkId {
                value: "fw-1".into(),
            },
            agent_id: v1::AgentId {
                value: format!("id-{agent}"),
            },
            hostname: agent.into(),
            resources: Resources::parse(
                &format!("cpus:{cpus};mem:4096;disk:1000;ports:[31000-31100]"),
                "*",
            )
            .unwrap()
            .to_legacy_protos(),
            attributes: parse_attributes(attrs).unwrap(),
            ..Default::default()
        }
    }

    /// Offers one agent each; returns the tasks launched.
    fn offer_agents(&mut self, agents: &[(&str, &str)]) -> Vec<v1::TaskInfo> {
        let offers: Vec<v1::Offer> = agents
            .iter()
            .map(|(a, attrs)| self.offer(a, 4.0, attrs))
            .collect();
        let now = self.at(10);
        self.m.offers(now, offers);
        launched(&self.m.take_outputs())
    }

    fn status(&mut self, task: &str, state: TaskState, healthy: Option<bool>) -> Vec<Output> {
        let now = self.at(10);
        let agent = self
            .m
            .state()
            .instances
            .get(task)
            .map(|i| i.agent_id.clone())
            .unwrap_or_default();
        self.m.status(
            now,
            &v1::TaskStatus {
                task_id: v1::TaskId { value: task.into() },
                state: state as i32,
                agent_id: Some(v1::AgentId { value: agent }),
                healthy,
                ..Default::default()
            },
        );
        self.m.take_outputs()
    }

    fn run_all(&mut self, tasks: &[v1::TaskInfo]) {
        for t in tasks {
            self.status(&t.task_id.value, TaskState::TaskRunning, None);
        }
    }

    fn create(&mut self, json: &str) -> Reply {
        let now = self.at(1000);
        self.m.create_app(now, json.as_bytes(), false)
    }
}

fn launched(outputs: &[Output]) -> Vec<v1::TaskInfo> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Call(Call::Launch { tasks, .. }) => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn killed(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Call(Call::Kill { task, .. }) => Some(task.value.clone()),
            _ => None,
        })
        .collect()
}

fn events(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event { event_type, .. } => Some(event_type.clone()),
            _ => None,
        })
        .collect()
}

fn path(s: &str) -> PathId {
    PathId::parse(s).unwrap()
}

#[test]
fn an_app_is_deployed_when_its_instances_run() {
    let mut h = Harness::new();
    let r = h.create(r#"{"id":"/web","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":3}"#);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.location.as_deref(), Some("/web"));
    let dep = r.deployment.clone().unwrap();
    assert_eq!(r.body.as_ref().unwrap()["deployments"][0]["id"], json!(dep));
    // Service ports come from the local range.
    assert_eq!(
        r.body.as_ref().unwrap()["portDefinitions"][0]["port"],
        json!(10000)
    );
    let out = h.m.take_outputs();
    // StartApplication is done at once; ScaleApplication waits for tasks.
    assert_eq!(
        events(&out),
        [
            "api_post_event",
            "group_change_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_info"
        ]
    );
    assert_eq!(
        h.m.list_deployments()
            .body
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Offers are taken up to the need, on any agent.
    let tasks = h.offer_agents(&[("a1", ""), ("a2", "")]);
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t.task_id.value.starts_with("web.")));
    let queue = h.m.queue(h.now, &[]).body.unwrap();
    assert_eq!(queue["queue"].as_array().unwrap().len(), 0, "{queue}");

    h.status(&tasks[0].task_id.value, TaskState::TaskRunning, None);
    h.status(&tasks[1].task_id.value, TaskState::TaskRunning, None);
    assert_eq!(h.m.state().deployments.len(), 1);
    let out = h.status(&tasks[2].task_id.value, TaskState::TaskRunning, None);
    assert!(h.m.state().deployments.is_empty());
    let ev = events(&out);
    assert!(
        ev.ends_with(&[
            "deployment_step_success".into(),
            "deployment_success".into()
        ]),
        "{ev:?}"
    );

    let app = h.m.get_app("web", &[]).body.unwrap();
    assert_eq!(app["app"]["tasksRunning"], json!(3));
    assert_eq!(app["app"]["deployments"], json!([]));
    let tasks_json = h.m.app_tasks("/web").body.unwrap();
    assert_eq!(tasks_json["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(tasks_json["tasks"][0]["servicePorts"], json!([10000]));

    // With nothing left to launch, offers are declined for long and the
    // subscription suppressed.
    let o = h.offer("a3", 4.0, "");
    h.m.offers(h.now, vec![o]);
    let out = h.m.take_outputs();
    assert!(out.contains(&Output::Call(Call::Suppress)), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::Call(Call::Decline { refuse_seconds, .. }) if *refuse_seconds == 120.0)));
}

#[test]
fn scaling_down_kills_and_a_failed_task_is_replaced_after_backoff() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/w","cmd":"x","cpus":0.1,"mem":16,"instances":3,"backoffSeconds":2}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    assert!(h.m.state().deployments.is_empty());

    let now = h.at(1000);
    let r =
        h.m.put_app(now, "/w", br#"{"instances":1}"#, false, true, true);
    assert_eq!(r.status, 200, "{r:?}");
    let out = h.m.take_outputs();
    let k = killed(&out);
    assert_eq!(k.len(), 2);
    // The deployment waits for the kills to finish.
    assert_eq!(h.m.state().deployments.len(), 1);
    for t in &k {
        h.status(t, TaskState::TaskKilled, None);
    }
    assert!(h.m.state().deployments.is_empty());
    // A killed-on-request task is not a failure.
    assert!(h.m.state().backoff.is_empty());
    let survivor = h.m.state().instances.keys().next().unwrap().clone();

    // The survivor dies: it is a failure, recorded, and replaced after 2 s.
    let out = h.status(&survivor, TaskState::TaskFailed, None);
    assert!(out.contains(&Output::Call(Call::Revive)) || !h.m.suppressed);
    assert_eq!(
        h.m.state().last_failure[&path("/w")]["state"],
        json!("TASK_FAILED")
    );
    assert!(
        h.offer_agents(&[("a1", "")]).is_empty(),
        "launched during backoff"
    );
    // The shell is woken when the backoff ends, not polled.
    let until = h.m.state().backoff[&path("/w")].until;
    assert_eq!(h.m.next_deadline(h.now), Some(Millis(until)));
    let queue = h.m.queue(h.now, &[]).body.unwrap();
    assert_eq!(queue["queue"][0]["count"], json!(1), "{queue}");
    assert_eq!(
        queue["queue"][0]["delay"]["overdue"],
        json!(false),
        "{queue}"
    );
    h.at(2500);
    assert_eq!(h.offer_agents(&[("a1", "")]).len(), 1);
    // Nothing waits any more: nothing is timed.
    assert_eq!(h.m.next_deadline(h.now), None);
}

#[test]
fn restarts_roll_with_extra_capacity_and_health() {
    let mut h = Harness::new();
    h.create(
        r#"{"id":"/r","cmd":"x","cpus":0.1,"mem":16,"instances":2,
            "healthChecks":[{"protocol":"MESOS_TCP","portIndex":0}],
            "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0.5}}"#,
    );
    let first = h.offer_agents(&[("a1", "")]);
    assert_eq!(first.len(), 2);
    h.run_all(&first);
    // Running is not enough for health-checked apps.
    assert_eq!(h.m.state().deployments.len(), 1);
    for t in &first {
        h.status(&t.task_id.value, TaskState::TaskRunning, Some(true));
    }
    assert!(h.m.state().deployments.is_empty());

    let now = h.at(1000);
    let r = h.m.restart_app(now, "/r", false);
    assert_eq!(r.status, 200);
    assert!(
        killed(&h.m.take_outputs()).is_empty(),
        "nothing may be killed before a new instance is healthy"
    );
    // One extra instance at a time (2 × 0.5).
    let new = h.offer_agents(&[("a1", "")]);
    assert_eq!(new.len(), 1);
    h.status(&new[0].task_id.value, TaskState::TaskRunning, None);
    let out = h.status(&new[0].task_id.value, TaskState::TaskRunning, Some(true));
    let k = killed(&out);
    assert_eq!(k.len(), 1);
    assert!(first.iter().any(|t| t.task_id.value == k[0]));
    h.status(&k[0], TaskState::TaskKilled, None);
    let new2 = h.offer_agents(&[("a1", "")]);
    assert_eq!(new2.len(), 1);
    h.status(&new2[0].task_id.value, TaskState::TaskRunning, Some(true));
    let last =
        h.m.state()
            .instances
            .values()
            .find(|i| i.killing)
            .unwrap()
            .task_id
            .clone();
    let out = h.status(&last, TaskState::TaskKilled, None);
    assert!(
        events(&out).contains(&"deployment_success".to_string()),
        "{:?}",
        events(&out)
    );
    let remaining: BTreeSet<&String> = h.m.state().instances.keys().collect();
    assert_eq!(
        remaining,
        [&new[0].task_id.value, &new2[0].task_id.value].into()
    );
}

#[test]
fn deployments_lock_their_apps_unless_forced_and_can_be_rolled_back() {
    let mut h = Harness::new();
    let r = h.create(r#"{"id":"/l","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#);
    let first = r.deployment.unwrap();
    let now = h.at(1000);
    let r =
        h.m.put_app(now, "/l", br#"{"instances":5}"#, false, true, true);
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.body.unwrap()["deployments"][0]["id"], json!(first));

    let r =
        h.m.put_app(now, "/l", br#"{"instances":5}"#, true, true, true);
    assert_eq!(r.status, 200);
    let second = r.deployment.unwrap();
    assert!(events(&h.m.take_outputs()).contains(&"deployment_failed".to_string()));
    assert_eq!(h.m.state().deployments.len(), 1);
    assert_eq!(h.m.state().deployments[0].id, second);

    // Rolling back goes to the definition the deployment started from.
    let now = h.at(1000);
    let r = h.m.delete_deployment(now, &second, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(h.m.state().apps[&path("/l")].instances, 2);
    assert_eq!(h.m.state().deployments.len(), 1);
    assert_ne!(h.m.state().deployments[0].id, second);
    // Stopping (force) just forgets it.
    let id = h.m.state().deployments[0].id.clone();
    assert_eq!(h.m.delete_deployment(now, &id, true).status, 202);
    assert!(h.m.state().deployments.is_empty());
    assert_eq!(h.m.delete_deployment(now, &id, true).status, 404);
}

#[test]
fn unique_hostname_spreads_and_unplaceable_instances_say_why() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/u","cmd":"x","cpus":0.1,"mem":16,"instances":3,"constraints":[["hostname","UNIQUE"]]}"#);
    let tasks = h.offer_agents(&[("a1", "rack:r1"), ("a2", "rack:r2")]);
    assert_eq!(tasks.len(), 2);
    let hosts: BTreeSet<String> =
        h.m.state()
            .instances
            .values()
            .map(|i| i.placement.hostname.clone())
            .collect();
    assert_eq!(hosts.len(), 2);
    assert!(h.offer_agents(&[("a1", "rack:r1")]).is_empty());
    let queue = h.m.queue(h.now, &[]).body.unwrap();
    let q = &queue["queue"][0];
    assert_eq!(q["count"], json!(1), "{queue}");
    let reasons = q["processedOffersSummary"]["rejectSummaryLastOffers"]
        .as_array()
        .unwrap();
    let unique = reasons
        .iter()
        .find(|r| r["reason"] == "UnfulfilledConstraint")
        .unwrap();
    assert!(unique["declined"].as_u64().unwrap() >= 1, "{queue}");
    assert_eq!(h.offer_agents(&[("a3", "rack:r1")]).len(), 1);
}

#[test]
fn deleting_an_app_kills_its_tasks_and_finishes_when_they_are_gone() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/g/d","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    let now = h.at(1000);
    let r = h.m.delete_app(now, "g/d", false);
    assert_eq!(r.status, 200);
    assert!(h.m.get_app("/g/d", &[]).status == 404);
    let out = h.m.take_outputs();
    assert_eq!(killed(&out).len(), 2);
    assert!(events(&out).contains(&"app_terminated_event".to_string()));
    assert_eq!(h.m.state().deployments.len(), 1);
    for t in &tasks {
        h.status(&t.task_id.value, TaskState::TaskKilled, None);
    }
    assert!(h.m.state().deployments.is_empty());
    assert!(h.m.state().instances.is_empty());
    assert_eq!(h.m.delete_app(now, "/g/d", false).status, 404);
}

#[test]
fn bad_definitions_are_rejected_with_details() {
    let mut h = Harness::new();
    let r = h.create(r#"{"id":"/Bad_Id","cmd":"x"}"#);
    assert_eq!(r.status, 422, "{r:?}");
    let r = h.create(r#"{"id":"/x","cmd":"x","instances":-1}"#);
    assert_eq!(r.status, 422, "{r:?}");
    let r = h.create(r#"{"id":"/x","cmd":"x","cpus":"lots"}"#);
    assert!(r.status == 400 || r.status == 422, "{r:?}");
    assert!(r.body.unwrap()["message"].as_str().is_some());
    let r = h.create("{not json");
    assert_eq!(r.status, 400, "{r:?}");
    let r = h.create(r#"{"id":"/x"}"#);
    assert_eq!(r.status, 422, "no cmd, args or container: {r:?}");
    assert!(h.m.state().apps.is_empty());
    assert!(h.m.state().deployments.is_empty());
    let ok = h.create(r#"{"id":"/x","cmd":"x"}"#);
    assert_eq!(ok.status, 201);
    assert_eq!(h.create(r#"{"id":"/x","cmd":"x"}"#).status, 409);
}

#[test]
fn unknown_tasks_are_killed_and_reconciled_on_subscribe() {
    let mut h = Harness::new();
    let out = h.status("other.1234", TaskState::TaskRunning, None);
    assert_eq!(killed(&out), ["other.1234"]);
    h.create(r#"{"id":"/k","cmd":"x","cpus":0.1,"mem":16}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.m.disconnected();
    h.m.subscribed(h.now, "fw-1");
    let out = h.m.take_outputs();
    let explicit = out.iter().find_map(|o| match o {
        Output::Call(Call::Reconcile(ts)) if !ts.is_empty() => Some(ts.clone()),
        _ => None,
    });
    assert_eq!(explicit.unwrap()[0].0.value, tasks[0].task_id.value);
    assert!(out.contains(&Output::Call(Call::Reconcile(Vec::new()))));
}

#[test]
fn kill_and_scale_lowers_instances() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/s","cmd":"x","cpus":0.1,"mem":16,"instances":3}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    let now = h.at(1000);
    let body = json!({"ids": [tasks[0].task_id.value]}).to_string();
    let r = h.m.delete_tasks(
        now,
        body.as_bytes(),
        TaskKill {
            scale: true,
            ..Default::default()
        },
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.deployment.is_some());
    assert_eq!(h.m.state().apps[&path("/s")].instances, 2);
    // Without scale, the task is replaced.
    let now = h.at(1000);
    h.status(&tasks[0].task_id.value, TaskState::TaskKilled, None);
    let r =
        h.m.delete_app_task(now, "/s", &tasks[1].task_id.value, TaskKill::default());
    assert_eq!(r.status, 200, "{r:?}");
    h.status(&tasks[1].task_id.value, TaskState::TaskKilled, None);
    assert_eq!(h.offer_agents(&[("a1", "")]).len(), 1);
    let r =
        h.m.delete_tasks(now, br#"{"ids":["nope"]}"#, TaskKill::default());
    assert_eq!(r.status, 400);
}

#[test]
fn groups_deploy_in_dependency_order_and_scale() {
    let mut h = Harness::new();
    let now = h.at(1000);
    let body = r#"{"id":"/prod","apps":[
        {"id":"db","cmd":"x","cpus":0.1,"mem":16},
        {"id":"web","cmd":"x","cpus":0.1,"mem":16,"dependencies":["/prod/db"]}]}"#;
    let r = h.m.create_group(now, None, body.as_bytes(), false);
    assert_eq!(r.status, 201, "{r:?}");
    // Only the dependency starts first.
    let tasks = h.offer_agents(&[("a1", "")]);
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].task_id.value.starts_with("prod_db."));
    h.run_all(&tasks);
    let tasks = h.offer_agents(&[("a1", "")]);
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].task_id.value.starts_with("prod_web."));
    h.run_all(&tasks);
    assert!(h.m.state().deployments.is_empty());
    let g = h.m.get_group("/prod", &[]).body.unwrap();
    assert_eq!(g["apps"].as_array().unwrap().len(), 2, "{g}");

    let now = h.at(1000);
    let r = h.m.update_group(now, "/prod", br#"{"scaleBy":3}"#, false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(h.m.state().apps.values().all(|a| a.instances == 3));
    let now = h.at(1000);
    assert_eq!(h.m.delete_group(now, "/prod", true).status, 200);
    assert!(h.m.state().apps.is_empty());
}

#[test]
fn state_round_trips_through_json() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/p","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    let saved = serde_json::to_vec(h.m.state()).unwrap();
    let state: State = serde_json::from_slice(&saved).unwrap();
    let again = Marathon::new(Config::default(), state, 1);
    assert_eq!(again.state().instances.len(), 2);
    assert_eq!(again.get_app("/p", &[]).body, h.m.get_app("/p", &[]).body);
}

#[test]
fn a_batch_of_offers_is_filled_round_robin() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/spread","cmd":"x","cpus":0.1,"mem":16,"instances":7}"#);
    h.offer_agents(&[("a1", ""), ("a2", ""), ("a3", "")]);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for i in h.m.state().instances.values() {
        *per_host.entry(i.placement.hostname.clone()).or_default() += 1;
    }
    assert_eq!(
        per_host.values().copied().collect::<Vec<_>>(),
        [3, 2, 2],
        "{per_host:?}"
    );
}

mod placement_props {
    use proptest::prelude::*;

    use super::*;

    fn constraint() -> impl Strategy<Value = (Value, &'static str)> {
        prop_oneof![
            Just((json!(["hostname", "UNIQUE"]), "unique")),
            (1u32..3).prop_map(|n| (json!(["rack", "MAX_PER", n.to_string()]), "max_per")),
            Just((json!(["rack", "CLUSTER", "r1"]), "cluster")),
            Just((json!(["rack", "GROUP_BY"]), "group_by")),
            Just((json!(["hostname", "LIKE", "h[0-2]"]), "like")),
            Just((json!(["rack", "UNLIKE", "r0"]), "unlike")),
            Just((json!(["rack", "IS", "r2"]), "is")),
        ]
    }

    /// Whether `placed` keeps the constraint, given what was `before` this
    /// round of offers.
    fn holds(
        kind: &str,
        c: &Value,
        before: &[Placement],
        placed: &[Placement],
    ) -> Result<(), String> {
        let key = c[0].as_str().unwrap();
        let count = |placements: &[Placement]| {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for p in placements {
                *per.entry(p.field(key).unwrap_or_default()).or_default() += 1;
            }
            per
        };
        let per = count(placed);
        let ok = match kind {
            "unique" => per.values().all(|n| *n == 1),
            "max_per" => {
                let n: usize = c[2].as_str().unwrap().parse().unwrap();
                per.values().all(|v| *v <= n)
            }
            "cluster" => per.keys().all(|k| k == "r1"),
            "is" => per.keys().all(|k| k == "r2"),
            "group_by" => {
                // Marathon spreads over the values it has seen in offers; a
                // value first offered later starts from nothing, so the
                // counts need not end even. What holds: each instance went to
                // a least-loaded value, so no value that gained in this round
                // ends more than one above a value that held instances before;
                // and the first round (at most three offers, every value seen
                // before any has two instances more) ends even.
                let was = count(before);
                let (min, max) = (
                    per.values().min().copied().unwrap_or(0),
                    per.values().max().copied().unwrap_or(0),
                );
                if was.is_empty() {
                    max - min <= 1
                } else {
                    per.iter()
                        .filter(|(k, n)| **n > was.get(*k).copied().unwrap_or(0))
                        .all(|(_, n)| was.keys().all(|h| *n <= per[h] + 1))
                }
            }
            "like" => per.keys().all(|k| ["h0", "h1", "h2"].contains(&k.as_str())),
            "unlike" => per.keys().all(|k| k != "r0"),
            _ => unreachable!(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{kind} {c} broken: {per:?}"))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the agents, the constraint and the way offers arrive,
        /// the placed instances satisfy the constraint.
        #[test]
        fn constraints_always_hold_for_placed_tasks(
            racks in prop::collection::vec(0u8..4, 1..7),
            (c, kind) in constraint(),
            instances in 1u32..12,
            batches in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 1..4), 1..6),
        ) {
            let mut h = Harness::new();
            let app = json!({"id": "/p", "cmd": "x", "cpus": 0.1, "mem": 16, "instances": instances, "constraints": [c]});
            let r = h.create(&app.to_string());
            prop_assert_eq!(r.status, 201, "{:?}", r);
            let agents: Vec<(String, String)> =
                racks.iter().enumerate().map(|(i, r)| (format!("h{i}"), format!("rack:r{r}"))).collect();
            for batch in batches {
                let picked: Vec<(&str, &str)> = batch
                    .iter()
                    .map(|ix| { let (a, attrs) = ix.get(&agents); (a.as_str(), attrs.as_str()) })
                    .collect();
                let placements = |h: &Harness| -> Vec<Placement> {
                    h.m.state().instances.values().map(|i| i.placement.clone()).collect()
                };
                let before = placements(&h);
                h.offer_agents(&picked);
                let placed = placements(&h);
                prop_assert!(placed.len() <= instances as usize);
                if let Err(e) = holds(kind, &c, &before, &placed) {
                    prop_assert!(false, "{}", e);
                }
            }
        }
    }
}

#[test]
fn unreachable_instances_are_replaced_after_inactive_and_forgotten_after_expunge() {
    let mut h = Harness::new();
    h.create(
        r#"{"id":"/u","cmd":"x","cpus":0.1,"mem":16,"instances":2,
            "unreachableStrategy":{"inactiveAfterSeconds":10,"expungeAfterSeconds":30}}"#,
    );
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    let lost = tasks[0].task_id.value.clone();
    h.status(&lost, TaskState::TaskUnreachable, None);
    // Still counted: nothing is launched yet; the shell wakes when it turns
    // inactive.
    assert!(h.offer_agents(&[("a2", "")]).is_empty());
    let since = h.m.state().instances[&lost].unreachable_since.unwrap();
    assert_eq!(h.m.next_deadline(h.now), Some(since.plus(10_000)));
    h.at(11_000);
    let now = h.now;
    h.m.tick(now);
    h.m.take_outputs();
    let replacement = h.offer_agents(&[("a2", "")]);
    assert_eq!(replacement.len(), 1, "replaced after inactiveAfterSeconds");
    h.run_all(&replacement);
    // It comes back before the expunge: now one too many, one is killed.
    let out = h.status(&lost, TaskState::TaskRunning, None);
    assert_eq!(killed(&out).len(), 1, "{out:?}");

    // Another goes unreachable and never returns: forgotten (and killed) after 30 s.
    let mut h = Harness::new();
    h.create(
        r#"{"id":"/u","cmd":"x","cpus":0.1,"mem":16,"instances":1,
            "unreachableStrategy":{"inactiveAfterSeconds":10,"expungeAfterSeconds":30}}"#,
    );
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    let gone = tasks[0].task_id.value.clone();
    h.status(&gone, TaskState::TaskUnreachable, None);
    h.at(31_000);
    let now = h.now;
    h.m.tick(now);
    assert_eq!(killed(&h.m.take_outputs()), std::slice::from_ref(&gone));
    assert!(!h.m.state().instances.contains_key(&gone));

    // The default (0, 0): replaced at once.
    let mut h = Harness::new();
    h.create(r#"{"id":"/d","cmd":"x","cpus":0.1,"mem":16}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    h.status(&tasks[0].task_id.value, TaskState::TaskUnreachable, None);
    assert_eq!(h.offer_agents(&[("a2", "")]).len(), 1);
}

/// Issue 12.7: after an operator's TEARDOWN, marathon-rs showed 30 tasks
/// running for minutes with no process behind them.
#[test]
fn a_removed_framework_shows_no_tasks_and_registers_anew_only_when_told() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/web","cmd":"x","cpus":0.1,"mem":16,"instances":2}"#);
    let tasks = h.offer_agents(&[("a1", "")]);
    h.run_all(&tasks);
    assert_eq!(
        h.m.app_tasks("/web").body.unwrap()["tasks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    h.m.set_events(true);
    let now = h.at(1000);
    h.m.framework_removed(now, "Framework has been removed");
    let out = h.m.take_outputs();
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| *e == "status_update_event")
            .count(),
        2
    );
    assert!(h.m.state().instances.is_empty());
    assert_eq!(h.m.app_tasks("/web").body.unwrap()["tasks"], json!([]));
    let removed = h.m.state().framework_removed.clone().unwrap();
    assert_eq!(removed.framework_id, "fw-1");
    assert_eq!(h.m.info().body.unwrap()["frameworkId"], Value::Null);
    // Said once: a second notice changes nothing.
    h.m.framework_removed(h.now, "Framework has been removed");
    assert_eq!(h.m.state().framework_removed, Some(removed));
    // The app is still defined, waiting; forgetting the framework lets a new
    // one relaunch it.
    assert_eq!(h.m.get_app("/web", &[]).status, 200);
    h.m.forget_framework();
    assert_eq!(h.m.state().framework_id, None);
    let now = h.at(1000);
    h.m.subscribed(now, "fw-2");
    assert_eq!(h.offer_agents(&[("a1", "")]).len(), 2);
}

/// The store keeps an entry per app and per instance (issue 15): the
/// entries give back the same state, and a change to one instance changes
/// only its entry.
#[test]
fn the_state_round_trips_through_store_entries_and_changes_stay_small() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/web/a","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":2}"#);
    h.create(r#"{"id":"/db","cmd":"sleep 100","cpus":0.5,"mem":64,"instances":1}"#);
    let tasks = h.offer_agents(&[("a1", ""), ("a2", ""), ("a3", "")]);
    h.run_all(&tasks);
    let before = h.m.state().to_entries().unwrap();
    assert!(before.contains_key("app:%2Fweb%2Fa"), "{:?}", before.keys());
    assert_eq!(
        before.keys().filter(|k| k.starts_with("instance:")).count(),
        3
    );
    let back = State::from_entries(&before).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(h.m.state()).unwrap()
    );
    // One task fails: its instance goes, the app's backoff and failure
    // change (meta); the other apps' entries stay as they were.
    let failed = tasks[0].task_id.value.clone();
    h.status(&failed, TaskState::TaskFailed, None);
    let after = h.m.state().to_entries().unwrap();
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        changed
            .iter()
            .all(|k| *k == "meta" || k.starts_with("instance:")),
        "{changed:?}"
    );
    assert!(changed.contains(&&format!("instance:{failed}")));
    assert!(matches!(
        State::from_entries(&BTreeMap::from([("bogus".to_string(), b"{}".to_vec())])),
        Err(EntryError::Unknown(_))
    ));
}

fn inverse_offer(id: &str, agent: &str) -> v1::InverseOffer {
    v1::InverseOffer {
        id: v1::OfferId { value: id.into() },
        framework_id: v1::FrameworkId {
            value: "fw-1".into(),
        },
        agent_id: Some(v1::AgentId {
            value: format!("id-{agent}"),
        }),
        ..Default::default()
    }
}

#[test]
fn instances_move_off_a_drained_agent_within_the_upgrade_strategy() {
    let mut h = Harness::new();
    h.create(
        r#"{"id":"/web","cmd":"x","cpus":1,"mem":16,"instances":4,
            "healthChecks":[{"protocol":"MESOS_TCP","portIndex":0}],
            "upgradeStrategy":{"minimumHealthCapacity":1,"maximumOverCapacity":0.5}}"#,
    );
    let first = h.offer_agents(&[("a", ""), ("b", "")]);
    assert_eq!(first.len(), 4);
    for t in &first {
        h.status(&t.task_id.value, TaskState::TaskRunning, Some(true));
    }
    let on_a: BTreeSet<String> = first
        .iter()
        .filter(|t| t.agent_id.value == "id-a")
        .map(|t| t.task_id.value.clone())
        .collect();
    assert_eq!(on_a.len(), 2);

    // The master drains a: marathon-rs accepts and kills nothing yet.
    let now = h.at(10);
    h.m.inverse_offers(now, vec![inverse_offer("io-1", "a")]);
    let out = h.m.take_outputs();
    assert!(out.contains(&Output::Call(Call::AcceptInverseOffers(vec![
        v1::OfferId {
            value: "io-1".into()
        }
    ]))));
    assert!(
        killed(&out).is_empty(),
        "no healthy copy goes before its replacement"
    );
    // Nothing lands on a again (the master offers a leaving agent only in a
    // maintenance window, with its unavailability); replacements go to c,
    // two at most (4 × 0.5).
    let mut from_a = h.offer("a", 4.0, "");
    from_a.unavailability = Some(v1::Unavailability::default());
    let offers = vec![from_a, h.offer("c", 4.0, "")];
    let now = h.at(10);
    h.m.offers(now, offers);
    let moved = launched(&h.m.take_outputs());
    assert_eq!(moved.len(), 2);
    assert!(moved.iter().all(|t| t.agent_id.value == "id-c"));
    // Each healthy replacement lets one copy on a go.
    h.status(&moved[0].task_id.value, TaskState::TaskRunning, None);
    let out = h.status(&moved[0].task_id.value, TaskState::TaskRunning, Some(true));
    let k = killed(&out);
    assert_eq!(k.len(), 1);
    assert!(on_a.contains(&k[0]));
    let out = h.status(&moved[1].task_id.value, TaskState::TaskRunning, Some(true));
    let k2 = killed(&out);
    assert_eq!(k2.len(), 1);
    assert!(on_a.contains(&k2[0]) && k2[0] != k[0]);
    h.status(&k[0], TaskState::TaskKilled, None);
    h.status(&k2[0], TaskState::TaskKilled, None);
    let left: BTreeSet<String> =
        h.m.state()
            .instances
            .values()
            .map(|i| i.agent_id.clone())
            .collect();
    assert_eq!(left, ["id-b".to_string(), "id-c".to_string()].into());
    assert_eq!(h.m.state().instances.len(), 4);
}

#[test]
fn without_room_elsewhere_copies_stay_and_a_drain_kill_is_no_failure() {
    let mut h = Harness::new();
    h.create(r#"{"id":"/db","cmd":"x","cpus":1,"mem":16,"instances":1,"backoffSeconds":60}"#);
    let first = h.offer_agents(&[("a", "")]);
    h.run_all(&first);
    let now = h.at(10);
    h.m.inverse_offers(now, vec![inverse_offer("io-1", "a")]);
    h.m.take_outputs();
    // Only a offers room (in its maintenance window): the copy there stays.
    let mut from_a = h.offer("a", 4.0, "");
    from_a.unavailability = Some(v1::Unavailability::default());
    let now = h.at(10);
    h.m.offers(now, vec![from_a]);
    let out = h.m.take_outputs();
    assert!(launched(&out).is_empty() && killed(&out).is_empty());
    assert!(
        h.m.queue[&path("/db")]
            .reasons
            .contains_key("AgentMaintenance")
    );
    // The master's deadline kills the copy.
    let now = h.at(10);
    h.m.status(
        now,
        &v1::TaskStatus {
            task_id: first[0].task_id.clone(),
            state: TaskState::TaskKilled as i32,
            reason: Some(v1::task_status::Reason::AgentDraining as i32),
            agent_id: Some(first[0].agent_id.clone()),
            ..Default::default()
        },
    );
    h.m.take_outputs();
    assert!(
        !h.m.state().backoff.contains_key(&path("/db")),
        "no launch delay"
    );
    assert!(!h.m.state().last_failure.contains_key(&path("/db")));
    // The replacement starts at once, elsewhere.
    let again = h.offer_agents(&[("b", "")]);
    assert_eq!(again.len(), 1);

    // A rescinded inverse offer: a is fine again.
    let now = h.at(10);
    h.m.inverse_offer_rescinded(
        now,
        &v1::OfferId {
            value: "io-1".into(),
        },
    );
    assert_eq!(h.m.leaving().count(), 0);
    // So is an agent the master offers plainly again (a missed rescind).
    let now = h.at(10);
    h.m.inverse_offers(now, vec![inverse_offer("io-2", "a")]);
    assert_eq!(h.m.leaving().collect::<Vec<_>>(), ["id-a"]);
    h.offer_agents(&[("a", "")]);
    assert_eq!(h.m.leaving().count(), 0);
}
