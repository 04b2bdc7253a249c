//! Apps' roles (Marathon 1.9): an app runs in its role (default
//! `--mesos-role`), the framework takes every app's role with
//! UPDATE_FRAMEWORK, and offers of other roles are not used for it.

use agora_proto::resources::Resources;
use agora_proto::v1;

use super::{Call, Config, Marathon, Output, State};
use crate::time::Millis;

const NOW: Millis = Millis(1_700_000_000_000);

fn offer(n: u32, role: &str) -> v1::Offer {
    v1::Offer {
        id: v1::OfferId {
            value: format!("o{n}"),
        },
        agent_id: v1::AgentId {
            value: format!("a{n}"),
        },
        hostname: format!("a{n}"),
        resources: Resources::parse("cpus:4;mem:4096;ports:[31000-31100]", "*")
            .unwrap()
            .allocated_to(role)
            .to_protos(),
        allocation_info: Some(v1::resource::AllocationInfo {
            role: Some(role.into()),
        }),
        ..Default::default()
    }
}

fn roles_updates(out: &[Output]) -> Vec<Vec<String>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Call(Call::UpdateRoles(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn launched(out: &[Output]) -> usize {
    out.iter()
        .filter_map(|o| match o {
            Output::Call(Call::Launch { tasks, .. }) => Some(tasks.len()),
            _ => None,
        })
        .sum()
}

#[test]
fn apps_run_in_their_roles_and_the_framework_takes_them() {
    let mut m = Marathon::new(
        Config {
            role: "marathon".into(),
            ..Config::default()
        },
        State::default(),
        1,
    );
    m.subscribed(NOW, "fw");
    assert!(roles_updates(&m.take_outputs()).is_empty());

    let r = m.create_app(
        NOW,
        br#"{"id":"/dev/api","cmd":"sleep 1","role":"dev"}"#,
        false,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body.unwrap()["role"], "dev");
    let r = m.create_app(NOW, br#"{"id":"/web","cmd":"sleep 1"}"#, false);
    assert_eq!(r.body.unwrap()["role"], "marathon", "the default role");
    let out = m.take_outputs();
    assert_eq!(
        roles_updates(&out),
        [vec!["dev".to_string(), "marathon".to_string()]]
    );

    // An offer for `marathon` runs /web only; one for `dev` runs /dev/api.
    m.offers(NOW.plus(10), vec![offer(1, "marathon")]);
    assert_eq!(launched(&m.take_outputs()), 1);
    let queue = m.queue(NOW.plus(11), &[]).body.unwrap();
    assert!(queue.to_string().contains("UnfulfilledRole"), "{queue}");
    m.offers(NOW.plus(20), vec![offer(2, "dev")]);
    assert_eq!(launched(&m.take_outputs()), 1);

    // Deleting the only app of `dev` gives the role up; a bad role is 422.
    m.delete_app(NOW.plus(30), "/dev/api", false);
    let out = m.take_outputs();
    let updates = roles_updates(&out);
    assert!(updates.is_empty() || updates.last().unwrap().contains(&"dev".into()));
    let bad = m.create_app(NOW, br#"{"id":"/x","cmd":"sleep 1","role":"a//b"}"#, false);
    assert_eq!(bad.status, 422);
}

fn marathon(enforce_new_groups: bool) -> Marathon {
    let mut m = Marathon::new(
        Config {
            role: "marathon".into(),
            principal: Some("marathon".into()),
            new_group_enforce_role: enforce_new_groups,
            ..Config::default()
        },
        State::default(),
        1,
    );
    m.subscribed(NOW, "fw");
    m.take_outputs();
    m
}

/// The role of a created or updated app (panics on an error).
fn role_of(m: &Marathon, id: &str) -> String {
    let app = m.get_app(id, &[]).body.unwrap();
    app["app"]["role"].as_str().unwrap().to_string()
}

/// The `details` errors of a refusal.
fn errors(r: &super::Reply) -> String {
    r.body
        .as_ref()
        .map(|b| b["details"].to_string())
        .unwrap_or_default()
}

/// Asserts a 422 whose details say `what`.
fn assert_refused(r: &super::Reply, what: &str) {
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(errors(r).contains(what), "{}", errors(r));
}

#[test]
fn apps_take_the_mesos_role_or_their_top_level_groups_role() {
    let mut m = marathon(false);
    let ok = |r: super::Reply| assert!(r.status < 300, "{} {:?}", r.status, r.body);
    ok(m.create_app(NOW, br#"{"id":"/dev/old","cmd":"sleep 1"}"#, false));
    assert_eq!(role_of(&m, "/dev/old"), "marathon", "the default role");
    ok(m.create_app(
        NOW,
        br#"{"id":"/dev/team/x","cmd":"sleep 1","role":"dev"}"#,
        false,
    ));
    assert_eq!(role_of(&m, "/dev/team/x"), "dev", "the group role, nested");

    let r = m.create_app(
        NOW,
        br#"{"id":"/dev/y","cmd":"sleep 1","role":"ops"}"#,
        false,
    );
    assert_refused(&r, "got ops, expected one of: [dev, marathon]");
    // The root group has no group role.
    let r = m.create_app(NOW, br#"{"id":"/top","cmd":"sleep 1","role":"dev"}"#, false);
    assert_refused(&r, "expected one of: [marathon]");

    // acceptedResourceRoles: `*` and the app's role only.
    let r = m.create_app(
        NOW,
        br#"{"id":"/dev/z","cmd":"sleep 1","role":"dev","acceptedResourceRoles":["slave_public"]}"#,
        false,
    );
    assert_refused(&r, "can only contain * and dev");

    // A group that does not enforce its role: Marathon 1.6's JSON.
    let g = m.get_group("/dev", &[]).body.unwrap();
    assert!(g.get("enforceRole").is_none(), "{g}");
}

#[test]
fn a_group_that_enforces_its_role_gives_it_to_new_apps_and_keeps_old_ones() {
    let mut m = marathon(false);
    let r = m.create_app(NOW, br#"{"id":"/dev/old","cmd":"sleep 1"}"#, false);
    assert_eq!(r.status, 201);

    // PATCH: top-level groups only, known ones only; no deployment.
    let r = m.patch_group("/dev/team", br#"{"enforceRole":true}"#);
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(
        m.patch_group("/nope", br#"{"enforceRole":true}"#).status,
        404
    );
    assert_eq!(
        m.patch_group("/dev", br#"{"enforceRole":"yes"}"#).status,
        400
    );
    let deployments = m.state().deployments.len();
    let r = m.patch_group("/dev", br#"{"enforceRole":true}"#);
    assert_eq!((r.status, r.body), (200, None));
    assert_eq!(m.state().deployments.len(), deployments);
    let root = m.get_group("/", &[]).body.unwrap();
    assert!(root.get("enforceRole").is_none(), "{root}");
    assert_eq!(root["groups"][0]["id"], "/dev");
    assert_eq!(root["groups"][0]["enforceRole"], true);

    // New apps run in the group role, and may not leave it.
    let r = m.create_app(NOW, br#"{"id":"/dev/new","cmd":"sleep 1"}"#, false);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(role_of(&m, "/dev/new"), "dev");
    let r = m.put_app(
        NOW,
        "/dev/new",
        br#"{"role":"marathon"}"#,
        true,
        true,
        false,
    );
    assert_refused(&r, "got marathon, expected one of: [dev]");
    // An app that had its role keeps it through updates.
    let r = m.put_app(NOW, "/dev/old", br#"{"instances":2}"#, true, true, false);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(role_of(&m, "/dev/old"), "marathon");

    // The setting is stored, and outlives the group's apps.
    let stored = State::from_entries(&m.state().to_entries().unwrap()).unwrap();
    assert!(
        stored
            .enforce_role
            .contains(&crate::path::PathId::parse("/dev").unwrap())
    );
    for id in ["/dev/old", "/dev/new"] {
        assert!(m.delete_app(NOW, id, true).status < 300);
    }
    let g = m.get_group("/dev", &[]).body.unwrap();
    assert_eq!(g["enforceRole"], true, "{g}");

    // Turned off (an empty patch means --new_group_enforce_role, off here).
    assert_eq!(m.patch_group("/dev", b"{}").status, 200);
    let g = m.get_group("/dev", &[]).body.unwrap();
    assert!(g.get("enforceRole").is_none(), "{g}");
    let r = m.create_app(NOW, br#"{"id":"/dev/z","cmd":"sleep 1"}"#, false);
    assert_eq!(r.status, 201);
    assert_eq!(role_of(&m, "/dev/z"), "marathon");
}

#[test]
fn new_groups_enforce_their_role_with_new_group_enforce_role_top() {
    let mut m = marathon(true);
    let info = m.info().body.unwrap();
    assert_eq!(info["marathon_config"]["new_group_enforce_role"], "top");
    assert_eq!(info["marathon_config"]["mesos_role"], "marathon");

    // An app creates its top-level group, which enforces its role.
    let r = m.create_app(NOW, br#"{"id":"/team/a","cmd":"sleep 1"}"#, false);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(role_of(&m, "/team/a"), "team");
    assert_eq!(m.get_group("/team", &[]).body.unwrap()["enforceRole"], true);
    // Apps of the root group keep --mesos-role.
    assert_eq!(
        m.create_app(NOW, br#"{"id":"/b","cmd":"sleep 1"}"#, false)
            .status,
        201
    );
    assert_eq!(role_of(&m, "/b"), "marathon");

    // POST /v2/groups: a group may say otherwise; subgroups may not.
    let r = m.create_group(
        NOW,
        None,
        br#"{"id":"/ops","enforceRole":false,"apps":[{"id":"x","cmd":"sleep 1"}]}"#,
        false,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(role_of(&m, "/ops/x"), "marathon");
    assert!(
        m.get_group("/ops", &[])
            .body
            .unwrap()
            .get("enforceRole")
            .is_none()
    );
    let r = m.create_group(NOW, None, br#"{"id":"/ops/sub","enforceRole":true}"#, false);
    assert_eq!(r.status, 422, "{:?}", r.body);
    let r = m.create_group(
        NOW,
        None,
        br#"{"id":"/web","groups":[{"id":"api","apps":[{"id":"s","cmd":"sleep 1"}]}]}"#,
        false,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(role_of(&m, "/web/api/s"), "web");
    // PUT without enforceRole keeps the group's setting.
    let r = m.update_group(
        NOW,
        "/ops",
        br#"{"apps":[{"id":"x","cmd":"sleep 2"}]}"#,
        true,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(role_of(&m, "/ops/x"), "marathon");

    // Roles apps run in are the framework's roles.
    let out = m.take_outputs();
    let updates = roles_updates(&out);
    assert_eq!(
        updates.last().unwrap(),
        &["marathon", "team", "web"].map(String::from)
    );

    // Deleting a group forgets its setting.
    assert!(m.delete_group(NOW, "/team", true).status < 300);
    assert!(
        !m.state()
            .enforce_role
            .iter()
            .any(|g| g.to_string() == "/team")
    );
}

#[test]
fn a_resident_app_cannot_move_its_reservations_to_another_role() {
    let mut m = marathon(false);
    let r = m.create_app(
        NOW,
        br#"{"id":"/dev/db","cmd":"sleep 600","cpus":0.5,"mem":64,
            "container":{"type":"MESOS","volumes":[{"containerPath":"data","mode":"RW","persistent":{"size":10}}]}}"#,
        false,
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut o = offer(1, "marathon");
    o.resources = Resources::parse("cpus:4;mem:4096;disk:100;ports:[31000-31100]", "*")
        .unwrap()
        .allocated_to("marathon")
        .to_protos();
    m.offers(NOW.plus(10), vec![o]);
    m.take_outputs();
    assert_eq!(m.state().reservations.len(), 1);
    let r = m.put_app(NOW, "/dev/db", br#"{"role":"dev"}"#, true, true, false);
    assert_refused(&r, "reservations for role marathon");
    assert_eq!(role_of(&m, "/dev/db"), "marathon");
}
