//! Resident apps (local persistent volumes), as Marathon runs them: an
//! instance's first launch reserves its resources and creates its volumes
//! on the agent in the same ACCEPT (RESERVE, CREATE, LAUNCH); the
//! reservation is labelled with marathon-rs' framework id and its own id
//! (`marathon_framework_id`, `marathon_task_id`). When the task ends, the
//! reservation stays, and the next task of the app launches on it when its
//! agent offers it again, finding the data the last one left. Reservations
//! whose app is gone, or that no state records (an earlier marathon-rs'),
//! are destroyed and unreserved when they are offered.

use std::collections::BTreeMap;

use agora_proto::resources::{self, Resources};
use agora_proto::v1::{self, offer::operation::Type as Op};

use super::Marathon;
use crate::app::App;
use crate::instance::Reservation;

pub use crate::offers::{FRAMEWORK_LABEL, RESERVATION_LABEL};

/// The reservations of framework `framework_id` in an offer: their
/// resources as offered, by reservation id.
pub(super) fn offered(
    offer: &v1::Offer,
    framework_id: &str,
) -> BTreeMap<String, Vec<v1::Resource>> {
    let mut out: BTreeMap<String, Vec<v1::Resource>> = BTreeMap::new();
    // Most offers hold no reservation: nothing to parse (either format).
    #[allow(deprecated)]
    let reserved = offer
        .resources
        .iter()
        .any(|r| !r.reservations.is_empty() || r.reservation.is_some());
    if !reserved {
        return out;
    }
    let Ok(all) = Resources::from_protos(&offer.resources) else {
        return out;
    };
    for r in all.reserved().to_protos() {
        let labels = r
            .reservations
            .last()
            .and_then(|x| x.labels.as_ref())
            .map(|l| &l.labels[..])
            .unwrap_or_default();
        let label = |key: &str| {
            labels
                .iter()
                .find(|l| l.key == key)
                .and_then(|l| l.value.clone())
        };
        if label(FRAMEWORK_LABEL).as_deref() == Some(framework_id)
            && let Some(id) = label(RESERVATION_LABEL)
        {
            out.entry(id).or_default().push(r);
        }
    }
    out
}

fn operation(kind: Op, resources: Vec<v1::Resource>) -> v1::offer::Operation {
    let mut op = v1::offer::Operation {
        r#type: Some(kind as i32),
        ..Default::default()
    };
    match kind {
        Op::Reserve => {
            op.reserve = Some(v1::offer::operation::Reserve {
                resources,
                source: Vec::new(),
            })
        }
        Op::Unreserve => op.unreserve = Some(v1::offer::operation::Unreserve { resources }),
        Op::Create => op.create = Some(v1::offer::operation::Create { volumes: resources }),
        Op::Destroy => op.destroy = Some(v1::offer::operation::Destroy { volumes: resources }),
        _ => {}
    }
    op
}

/// DESTROY (its volumes) and UNRESERVE (everything) for a reservation no
/// app owns.
pub(super) fn cleanup(resources: &[v1::Resource]) -> Vec<v1::offer::Operation> {
    let volumes: Vec<v1::Resource> = resources
        .iter()
        .filter(|r| resources::is_persistent_volume(r))
        .cloned()
        .collect();
    let unreserve: Vec<v1::Resource> = resources
        .iter()
        .cloned()
        .map(|mut r| {
            resources::without_volume(&mut r);
            r
        })
        .collect();
    let mut ops = Vec::new();
    if !volumes.is_empty() {
        ops.push(operation(Op::Destroy, volumes));
    }
    ops.push(operation(Op::Unreserve, unreserve));
    ops
}

/// The host ports a reservation holds.
pub(super) fn ports(resources: &[v1::Resource]) -> Vec<u32> {
    resources
        .iter()
        .filter(|r| r.name == "ports")
        .filter_map(|r| r.ranges.as_ref())
        .flat_map(|r| &r.range)
        .flat_map(|r| r.begin..=r.end)
        .map(|p| p as u32)
        .collect()
}

/// A new reservation for one instance of `app`: the RESERVE and CREATE
/// operations, and the resources its task launches with.
pub(super) struct NewReservation {
    pub operations: Vec<v1::offer::Operation>,
    pub task_resources: Vec<v1::Resource>,
    pub volumes: Vec<(String, String)>,
}

impl Marathon {
    /// RESERVE and CREATE for a new reservation `id` of `app` in `role`,
    /// on the unreserved `task_resources` the offer had room for.
    pub(super) fn new_reservation(
        &mut self,
        app: &App,
        id: &str,
        role: &str,
        task_resources: Vec<v1::Resource>,
    ) -> NewReservation {
        let framework_id = self.state.framework_id.clone().unwrap_or_default();
        let reservation = v1::resource::ReservationInfo {
            r#type: Some(v1::resource::reservation_info::Type::Dynamic as i32),
            role: Some(role.to_string()),
            principal: self.config.principal.clone(),
            labels: Some(v1::Labels {
                labels: [
                    (FRAMEWORK_LABEL, framework_id),
                    (RESERVATION_LABEL, id.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| v1::Label {
                    key: k.into(),
                    value: Some(v),
                })
                .collect(),
            }),
        };
        let reserved = |mut r: v1::Resource| {
            r.allocation_info = Some(v1::resource::AllocationInfo {
                role: Some(role.to_string()),
            });
            r.reservations.push(reservation.clone());
            r
        };
        let mut to_reserve: Vec<v1::Resource> = task_resources.into_iter().map(reserved).collect();
        let mut launch_with = to_reserve.clone();
        let mut volumes = Vec::new();
        let mut created = Vec::new();
        for (v, p) in app.persistent_volumes() {
            let disk = reserved(v1::Resource {
                name: "disk".into(),
                r#type: v1::value::Type::Scalar as i32,
                scalar: Some(v1::value::Scalar { value: p.size }),
                ..Default::default()
            });
            to_reserve.push(disk.clone());
            let persistence_id =
                format!("{}#{}#{}", app.path().safe(), v.container_path, self.uuid());
            let mut volume = disk;
            volume.disk = Some(v1::resource::DiskInfo {
                persistence: Some(v1::resource::disk_info::Persistence {
                    id: persistence_id.clone(),
                    principal: self.config.principal.clone(),
                }),
                volume: Some(v1::Volume {
                    container_path: v.container_path.clone(),
                    mode: if v.mode == "RO" {
                        v1::volume::Mode::Ro
                    } else {
                        v1::volume::Mode::Rw
                    } as i32,
                    ..Default::default()
                }),
                source: None,
            });
            created.push(volume.clone());
            launch_with.push(volume);
            volumes.push((persistence_id, v.container_path.clone()));
        }
        NewReservation {
            operations: vec![
                operation(Op::Reserve, to_reserve),
                operation(Op::Create, created),
            ],
            task_resources: launch_with,
            volumes,
        }
    }

    /// Reservations of `app` with no task on them, not yet used in this
    /// round of placement.
    pub(super) fn free_reservations<'a>(
        &'a self,
        app: &'a crate::path::PathId,
    ) -> impl Iterator<Item = &'a Reservation> + 'a {
        self.state
            .reservations
            .values()
            .filter(move |r| &r.app_id == app && r.task_id.is_none())
    }
}

#[cfg(test)]
#[path = "../resident_tests.rs"]
mod tests;
