#![allow(clippy::unwrap_used, missing_docs)]

//! Agent core tests: inputs in, outputs recorded and checked, on a virtual
//! clock with a simulated master and executors.

mod harness;
mod simulation;
mod tables;
