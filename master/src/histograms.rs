//! The master's latency histograms for `/metrics`: the allocation pass
//! (timed by the driver), and what the core measures on its own clock
//! (offer to accept, launch to TASK_RUNNING, status update to its
//! acknowledgement; [`agora_master_core::Observation`]).

use std::time::Duration;

use agora_master_core::Observation;
use agora_rpc::metrics::prometheus::{self, Histogram};

/// Every histogram of the master. Cheap to clone (shared series).
#[derive(Clone)]
pub(crate) struct Histograms {
    pub allocation: Histogram,
    offer_to_accept: Histogram,
    launch: Histogram,
    status_update: Histogram,
}

fn histogram(name: &str, help: &str) -> Histogram {
    agora_rpc::metrics::histogram("master", name, help, &[]).with_label_values(&[] as &[&str])
}

impl Histograms {
    pub fn new() -> Histograms {
        Histograms {
            allocation: histogram(
                "allocation_pass_duration",
                "Time of the master's steps that ran an allocation pass (offers to frameworks).",
            ),
            offer_to_accept: histogram(
                "offer_to_accept",
                "Time from an offer to the ACCEPT that used it.",
            ),
            launch: histogram(
                "task_launch",
                "Time from a task's launch (ACCEPT) to its first TASK_RUNNING.",
            ),
            status_update: histogram(
                "status_update_round_trip",
                "Time from a status update sent to its framework to the acknowledgement.",
            ),
        }
    }

    /// Records what the core measured.
    pub fn observe(&self, what: Observation, took: Duration) {
        let h = match what {
            Observation::OfferToAccept => &self.offer_to_accept,
            Observation::Launch => &self.launch,
            Observation::StatusUpdateRoundTrip => &self.status_update,
        };
        h.observe(took.as_secs_f64());
    }

    /// The series, for `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        [
            &self.allocation,
            &self.offer_to_accept,
            &self.launch,
            &self.status_update,
        ]
        .into_iter()
        .map(|h| Box::new(h.clone()) as Box<dyn prometheus::core::Collector>)
        .collect()
    }
}
