//! UPDATE_QUOTA / GET_QUOTA (Mesos 1.9 quota v2): limits cut offers,
//! updates are validated all or nothing, and quotas survive a failover.

use agora_master_core::ids::RequestId;
use agora_master_core::{CallError, Input, OperatorCall, Output};
use agora_proto::v1::{quota::QuotaConfig, value::Scalar};

use crate::harness::*;

fn config(role: &str, guarantees: &[(&str, f64)], limits: &[(&str, f64)]) -> QuotaConfig {
    let map = |l: &[(&str, f64)]| {
        l.iter()
            .map(|(n, v)| (n.to_string(), Scalar { value: *v }))
            .collect()
    };
    QuotaConfig {
        role: role.into(),
        guarantees: map(guarantees),
        limits: map(limits),
    }
}

fn update(h: &mut Harness, force: bool, configs: Vec<QuotaConfig>) -> Result<(), CallError> {
    let out = h.handle(Input::Operator {
        principal: None,
        request: RequestId(11),
        call: OperatorCall::UpdateQuota { force, configs },
    });
    out.iter()
        .find_map(|o| match o {
            Output::Reply {
                request: RequestId(11),
                result,
            } => Some(result.clone().map(|_| ())),
            _ => None,
        })
        .expect("a reply")
}

fn cpus(offers: &[agora_proto::v1::Offer]) -> f64 {
    offers
        .iter()
        .flat_map(|o| &o.resources)
        .filter(|r| r.name == "cpus")
        .filter_map(|r| r.scalar.map(|s| s.value))
        .sum()
}

#[test]
fn a_limit_cuts_offers_and_updates_are_validated() {
    let mut h = Harness::new();
    h.register_agent("a", "cpus:4;mem:1024");
    update(&mut h, false, vec![config("dev", &[], &[("cpus", 1.5)])]).unwrap();
    let (fw, _) = h.subscribe(r#"{"user":"root","name":"dev","role":"dev"}"#);
    let offers = h.offers_for(&fw);
    assert_eq!(cpus(&offers), 1.5, "{offers:?}");
    let offer = offers[0].clone();
    h.launch(&fw, &offer, "t1", "cpus:1.5", "sleep 600");

    // GET_QUOTA: the config and the deprecated info.
    let status = h.master.get_quota(None);
    assert_eq!(status.configs.len(), 1);
    assert_eq!(status.configs[0].limits["cpus"].value, 1.5);

    // Refused, all or nothing: below what dev holds; above a parent's
    // limit; a guarantee above its limit; the default role.
    let err = update(&mut h, false, vec![config("dev", &[], &[("cpus", 1.0)])]).unwrap_err();
    assert!(err.to_string().contains("above the new limit"), "{err}");
    assert!(
        update(
            &mut h,
            false,
            vec![
                config("eng", &[], &[("cpus", 2.0)]),
                config("eng/web", &[], &[("cpus", 3.0)])
            ]
        )
        .unwrap_err()
        .to_string()
        .contains("above that of 'eng'")
    );
    assert!(
        h.master
            .get_quota(None)
            .configs
            .iter()
            .all(|c| c.role != "eng")
    );
    assert!(
        update(
            &mut h,
            false,
            vec![config("x", &[("cpus", 2.0)], &[("cpus", 1.0)])]
        )
        .unwrap_err()
        .to_string()
        .contains("above its limit")
    );
    assert!(update(&mut h, false, vec![config("*", &[], &[("cpus", 1.0)])]).is_err());
    // With force, a limit below what is held is set; it is in the registry.
    update(&mut h, true, vec![config("dev", &[], &[("cpus", 1.0)])]).unwrap();
    let stored = h.master.registry();
    assert_eq!(stored.quotas.len(), 1);
    assert_eq!(stored.quotas[0].limits["cpus"].value, 1.0);
    // Empty guarantees and limits remove it.
    update(&mut h, false, vec![config("dev", &[], &[])]).unwrap();
    assert!(h.master.get_quota(None).configs.is_empty());
}
