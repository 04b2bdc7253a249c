use proptest::prelude::*;

use super::*;

fn res(text: &str) -> Resources {
    Resources::parse(text, "*").unwrap()
}

#[test]
fn parses_the_mesos_text_form() {
    let r = res("cpus:4;mem:8192; ports:[31000-31999, 32000-32000];disk(eng):10;tags:{a,b}");
    assert_eq!(r.scalar("cpus"), 4.0);
    assert_eq!(r.scalar("mem"), 8192.0);
    assert_eq!(r.ranges("ports").ranges(), &[(31000, 32000)]);
    assert_eq!(r.scalar("disk"), 10.0);
    assert_eq!(r.reserved().scalar("disk"), 10.0);
    assert_eq!(
        r.to_string(),
        "cpus:4; disk(eng):10; mem:8192; ports:[31000-32000]; tags:{a, b}"
    );
}

#[test]
fn rejects_bad_text() {
    for bad in [
        "cpus",
        "cpus:x",
        "cpus:-1",
        "ports:[5-1]",
        "ports:[1-2",
        "x(:1",
        ":3",
        "cpus(a b):1",
        "cpus:inf",
    ] {
        assert!(Resources::parse(bad, "*").is_err(), "{bad} should fail");
    }
}

#[test]
fn parses_json_array() {
    let r = Resources::parse(
        r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":2}}]"#,
        "*",
    )
    .unwrap();
    assert_eq!(r.scalar("cpus"), 2.0);
}

#[test]
fn scalars_are_fixed_point() {
    let mut r = Resources::new();
    for _ in 0..10 {
        r += &res("cpus:0.1");
    }
    assert_eq!(r, res("cpus:1"));
    r -= &res("cpus:0.3");
    assert_eq!(r.scalar("cpus"), 0.7);
}

#[test]
fn subtract_removes_emptied_entries() {
    let r = &res("cpus:1;ports:[1-3]") - &res("cpus:1;ports:[1-3]");
    assert!(r.is_empty());
}

#[test]
fn roles_keep_identities_apart() {
    let r = res("cpus:1;cpus(eng):2");
    assert_eq!(r.len(), 2);
    assert!(!r.contains(&res("cpus(eng):3")));
    assert!(r.contains(&res("cpus(eng):2;cpus:1")));
    assert_eq!(r.allocatable_to("eng").scalar("cpus"), 3.0);
    assert_eq!(r.allocatable_to("eng/web").scalar("cpus"), 3.0);
    assert_eq!(r.allocatable_to("ops").scalar("cpus"), 1.0);
}

#[test]
#[allow(deprecated)]
fn legacy_format_round_trips() {
    let r = res("cpus:1;mem(eng):5");
    let legacy = r.to_legacy_protos();
    assert!(
        legacy
            .iter()
            .all(|x| x.reservations.is_empty() && x.role.is_some())
    );
    assert_eq!(
        legacy
            .iter()
            .find(|x| x.name == "cpus")
            .unwrap()
            .role
            .as_deref(),
        Some("*")
    );
    assert_eq!(Resources::from_protos(&legacy).unwrap(), r);
}

#[test]
fn allocation_info_is_identity() {
    let r = res("cpus:1").allocated_to("eng");
    assert!(!res("cpus:1").contains(&r));
    assert_eq!(r.unallocated(), res("cpus:1"));
    assert_eq!(
        r.allocation_roles().into_iter().collect::<Vec<_>>(),
        vec!["eng".to_string()]
    );
}

#[test]
fn validation_errors_name_the_resource() {
    let bad = Resource {
        name: "cpus".into(),
        r#type: v1::value::Type::Scalar as i32,
        ..Default::default()
    };
    assert_eq!(
        Resources::from_protos(&[bad]),
        Err(ResourceError::TypeMismatch("cpus".into()))
    );
    let text = Resource {
        name: "t".into(),
        r#type: v1::value::Type::Text as i32,
        ..Default::default()
    };
    assert_eq!(
        Resources::from_protos(&[text]),
        Err(ResourceError::TextType("t".into()))
    );
}

#[test]
fn attributes() {
    let attrs = parse_attributes("rack:r1;level:2;ports:[1-3];tags:{a,b}").unwrap();
    let shown: Vec<String> = attrs.iter().map(attribute_value_string).collect();
    assert_eq!(shown, vec!["r1", "2", "[1-3]", "{a, b}"]);
    assert!(parse_attributes("rack").is_err());
}

#[test]
fn range_set_difference() {
    let a = RangeSet::from_ranges([(1, 10)]);
    let b = RangeSet::from_ranges([(3, 4), (8, 12)]);
    assert_eq!(a.difference(&b).ranges(), &[(1, 2), (5, 7)]);
    assert_eq!(a.count(), 10);
    assert!(a.contains(&RangeSet::from_ranges([(2, 3), (9, 10)])));
}

fn arb_resources() -> impl Strategy<Value = Resources> {
    (
        0u32..5000,
        0u32..100_000,
        prop::collection::vec((30000u64..30100, 0u64..5), 0..4),
        prop::sample::subsequence(vec!["a", "b", "c", "d"], 0..4),
        prop::option::of(0u32..3000),
    )
        .prop_map(|(cpus, mem, ports, set, reserved)| {
            let mut text = format!("cpus:{};mem:{}", f64::from(cpus) / 1000.0, mem);
            if !ports.is_empty() {
                let ranges: Vec<String> = ports
                    .iter()
                    .map(|(b, len)| format!("{}-{}", b, b + len))
                    .collect();
                text.push_str(&format!(";ports:[{}]", ranges.join(",")));
            }
            if !set.is_empty() {
                text.push_str(&format!(";s:{{{}}}", set.join(",")));
            }
            if let Some(r) = reserved {
                text.push_str(&format!(";cpus(eng):{}", f64::from(r) / 1000.0));
            }
            Resources::parse(&text, "*").unwrap()
        })
}

proptest! {
    #[test]
    fn add_then_subtract_restores(a in arb_resources(), b in arb_resources()) {
        let sum = &a + &b;
        prop_assert!(sum.contains(&a));
        prop_assert!(sum.contains(&b));
        // Ranges and sets are unions, so b - ... only restores what b did not share with a.
        let back = &sum - &b;
        prop_assert!(a.contains(&back));
        prop_assert_eq!(back.scalar_fixed("cpus"), a.scalar_fixed("cpus"));
        prop_assert_eq!(back.scalar_fixed("mem"), a.scalar_fixed("mem"));
    }

    #[test]
    fn addition_commutes(a in arb_resources(), b in arb_resources()) {
        prop_assert_eq!(&a + &b, &b + &a);
    }

    #[test]
    fn text_form_round_trips(a in arb_resources()) {
        prop_assert_eq!(Resources::parse(&a.to_string(), "*").unwrap(), a);
    }

    #[test]
    fn protos_round_trip(a in arb_resources()) {
        prop_assert_eq!(Resources::from_protos(&a.to_protos()).unwrap(), a.clone());
        prop_assert_eq!(Resources::from_protos(&a.to_legacy_protos()).unwrap(), a);
    }

    #[test]
    fn subtracting_contained_then_adding_back_is_identity(a in arb_resources(), b in arb_resources()) {
        let sum = &a + &b;
        // a is contained in sum; removing it and adding it back gives sum.
        let rest = &sum - &a;
        let restored = &rest + &a;
        prop_assert_eq!(restored, sum);
    }
}

#[test]
fn capped_cuts_scalars_and_keeps_ranges() {
    let r = Resources::parse("cpus:4;mem:1024;ports:[1-10]", "*").unwrap();
    let c = r.capped(|n| (n == "cpus").then_some(1500));
    assert_eq!(c.scalar("cpus"), 1.5);
    assert_eq!(c.scalar("mem"), 1024.0);
    assert_eq!(c.ranges("ports").count(), 10);
    assert_eq!(r.capped(|_| Some(0)).scalar("cpus"), 0.0);
    assert!(r.contains(&c));
}
