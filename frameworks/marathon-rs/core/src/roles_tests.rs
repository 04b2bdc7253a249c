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
