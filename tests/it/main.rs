//! End-to-end and real-client tests: real masters and agents on
//! `127.0.0.1:0`, real executor processes, the SDK, pymesos.

#![allow(clippy::unwrap_used, missing_docs)]

mod admin;
mod api;
mod auth;
mod cluster;
mod dns;
mod docker;
mod e2e;
mod faults;
mod ha;
mod hosts;
mod lb;
mod marathon;
mod metrics;
mod operate;
mod overlay;
mod pymesos;
mod recovery;
mod tls;
mod ui;
mod volumes;
