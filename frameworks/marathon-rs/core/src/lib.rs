#![recursion_limit = "256"]
//! marathon-rs's planning core: data in, decisions out.
//!
//! Everything marathon-rs decides lives here, without I/O or clocks: app
//! definitions and their validation ([`app`]), placement constraints
//! ([`constraints`]), what each app needs next ([`planner`]), which offers
//! to use for which apps ([`offers`]), deployments ([`deployment`]), and the
//! state machine that ties them together ([`marathon`]). The shell
//! (`agora-marathon`) feeds it API calls, scheduler events and ticks, and
//! carries out the calls, writes and events it returns.

pub mod app;
pub mod constraints;
pub mod deployment;
pub mod instance;
pub mod marathon;
pub mod offers;
pub mod path;
pub mod planner;
pub mod time;

#[cfg(test)]
mod fuzz_tests;
