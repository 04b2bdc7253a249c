//! The Agora master as a deterministic state machine.
//!
//! This crate holds every decision the master makes (which agent's resources
//! are offered to whom, whether an ACCEPT is valid, where a status update goes,
//! when an agent or framework has been gone too long) and none of the I/O.
//! The shell (`agora-master`) feeds it [`Input`]s with the current time and
//! carries out the [`Output`]s it returns, in order. See ARCHITECTURE.md (The master).

pub mod allocator;
pub mod ids;
pub mod time;

pub use time::Time;
pub mod master;
pub mod validation;

pub use master::{
    CallError, Config, DRAIN_ANSWER, Input, Master, MasterView, Observation, OperatorCall, Output,
    Viewer,
};
