//! A library for writing frameworks against the Mesos v1 scheduler API (any
//! Mesos-compatible master, Agora's included).
//!
//! ```no_run
//! # async fn example() -> Result<(), agora_sdk::SdkError> {
//! use agora_sdk::{Event, SchedulerConfig, TaskBuilder};
//! let config = SchedulerConfig::new("127.0.0.1:5050", "my-framework");
//! let (scheduler, mut events) = agora_sdk::subscribe(config).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Offers(offers) = event {
//!         let offer = &offers[0];
//!         let task = TaskBuilder::new("hello", offer).command("echo hello").cpus(0.1).mem(32.0).build();
//!         scheduler.launch(offer, vec![task], 0.0).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A background task owns the subscription: it detects a lost stream
//! (missing heartbeats), resubscribes with the framework id, follows a
//! redirect to the leading master, and acknowledges status updates unless
//! told not to. Events arrive on a channel; calls go through [`Scheduler`].

mod builder;
mod scheduler;

pub use builder::{TaskBuilder, scalar};
pub use scheduler::{Event, Scheduler, SchedulerConfig, SdkError, removed, subscribe};

pub use agora_proto::{scheduler as sched, v1};
