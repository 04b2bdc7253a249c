#![allow(clippy::unwrap_used, missing_docs)]

//! Core table tests: inputs in, outputs recorded and checked, on a virtual
//! clock with simulated agents and frameworks.

mod agents;
mod authz;
mod drain;
mod harness;
mod maintenance;
mod overlay;
mod properties;
mod quota;
mod reservations;
mod scheduler;
mod simulation;
