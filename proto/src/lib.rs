//! Agora's shared vocabulary.
//!
//! Every other crate speaks in these types:
//!
//! - [`mesos`]: the Mesos v1 protobuf messages (scheduler, executor and
//!   operator APIs), wire compatible by field number with Apache Mesos, so
//!   existing frameworks and tools work unmodified;
//! - [`internal`]: the agent ↔ master protocol (carried over gRPC by
//!   `agora-rpc`);
//! - [`json`]: the Mesos JSON ⇄ protobuf mapping, which is not proto3's
//!   canonical JSON (snake_case names, enums by name, int64 as numbers, proto2
//!   defaults in output, lenient input);
//! - [`recordio`]: the framing of the v1 streaming APIs;
//! - [`resources`]: `Resources` arithmetic (scalars, ranges, sets, roles and
//!   reservations) and the Mesos text syntax for `--resources`/`--attributes`.
//!
//! This crate does no I/O and is used by the deterministic cores as much as by
//! the shells.

pub mod acl;
pub mod auth;
pub mod duration;
pub mod ids;
pub mod json;
pub mod labels;
pub mod recordio;
pub mod resources;
pub mod roles;
pub mod status;
pub mod time;

/// Generated protobuf types, one module per protobuf package.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod mesos {
    /// `mesos.v1`: the shared Mesos v1 types.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));
        /// `mesos.v1.scheduler`: the scheduler API's Call and Event.
        pub mod scheduler {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
        }
        /// `mesos.v1.executor`: the executor API's Call and Event.
        pub mod executor {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.rs"));
        }
        /// `mesos.v1.master`: the master operator API.
        pub mod master {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.master.rs"));
        }
        /// `mesos.v1.agent`: the agent operator API.
        pub mod agent {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.agent.rs"));
        }
        /// `mesos.v1.quota`.
        pub mod quota {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.quota.rs"));
        }
        /// `mesos.v1.maintenance`.
        pub mod maintenance {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.maintenance.rs"));
        }
        /// `mesos.v1.allocator`.
        pub mod allocator {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.allocator.rs"));
        }
    }
}

/// Agora's own protobuf packages.
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod agora {
    /// `agora.internal`.
    pub mod internal {
        /// `agora.internal.v1`: the agent ↔ master messages.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/agora.internal.v1.rs"));
        }
    }
}

pub use agora::internal::v1 as internal;

pub use mesos::v1;
pub use mesos::v1::{executor, master as operator, scheduler};

/// The Mesos version Agora reports on `/version` and in `MasterInfo`. It must
/// stay a plain `X.Y.Z`: pymesos parses it as a tuple of integers.
pub const MESOS_VERSION: &str = "1.11.0";

/// Agora's own version.
pub const AGORA_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod parsers_fuzz;
