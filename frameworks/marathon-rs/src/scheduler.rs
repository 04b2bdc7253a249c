//! marathon-rs as a framework: the subscription loop feeds scheduler events
//! to the state machine; the caller task carries out its calls, in order.
//!
//! The REST API works before and between subscriptions; decisions that need
//! the master wait in the state machine (launches happen on offers, kills are
//! sent again on resubscription).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_marathon_core::marathon::Call;
use agora_proto::v1;
use agora_sdk::{Event, Scheduler, SchedulerConfig};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::driver::Handle;

/// The scheduler handle of the current subscription.
pub type Slot = Arc<Mutex<Option<Scheduler>>>;

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The master's `host:port`.
    pub master: String,
    /// `--framework_name`.
    pub name: String,
    /// FrameworkInfo.hostname.
    pub hostname: String,
    /// FrameworkInfo.webui_url.
    pub webui_url: String,
    /// FrameworkInfo.failover_timeout (seconds).
    pub failover_timeout: f64,
    /// Role.
    pub role: String,
    /// After the master removed the framework, register a new one (and so
    /// relaunch every app) instead of waiting for an operator.
    pub reregister_when_removed: bool,
    /// Principal and secret for the master.
    pub credential: Option<agora_proto::auth::Credential>,
    /// TLS to the master.
    pub tls: Option<agora_rpc::tls::ClientTls>,
}

fn current(slot: &Slot) -> Option<Scheduler> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn set(slot: &Slot, s: Option<Scheduler>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = s;
}

/// Subscribes (again and again), feeding events to the state machine, until
/// the task is aborted, or until the master has removed the framework (then
/// it says so once and stops, unless told to register a new framework).
pub async fn run(marathon: Handle, sub: Subscription, slot: Slot) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Ok((framework_id, removed)) = marathon
            .read(|m, _| {
                let s = m.state();
                (s.framework_id.clone(), s.framework_removed.clone())
            })
            .await
        else {
            return;
        };
        if let Some(removed) = removed {
            if !sub.reregister_when_removed {
                // Said once; subscribing again with this id cannot help.
                error!(
                    framework.id = %removed.framework_id,
                    message = %removed.message,
                    since = %removed.since,
                    "the master removed marathon-rs' framework: its tasks are gone and its apps \
                     wait; restart with --reregister-when-removed to register a new framework \
                     and relaunch them"
                );
                return;
            }
            warn!(
                framework.id = %removed.framework_id,
                "the master removed the framework; registering a new one (--reregister-when-removed)"
            );
            marathon.input(|m, _| m.forget_framework());
            continue;
        }
        let mut config = SchedulerConfig::new(&sub.master, &sub.name);
        config.credential = sub.credential.clone();
        config.tls = sub.tls.clone();
        let fi = &mut config.framework_info;
        fi.id = framework_id.map(|value| v1::FrameworkId { value });
        fi.failover_timeout = Some(sub.failover_timeout);
        fi.checkpoint = Some(true);
        fi.hostname = Some(sub.hostname.clone());
        fi.webui_url = Some(sub.webui_url.clone());
        fi.roles = vec![sub.role.clone()];
        // As Marathon: TASK_KILLING tells agora lb and agora dns that a task
        // is going before it stops answering.
        fi.capabilities = [
            v1::framework_info::capability::Type::MultiRole,
            v1::framework_info::capability::Type::TaskKillingState,
        ]
        .into_iter()
        .map(|t| v1::framework_info::Capability {
            r#type: Some(t as i32),
        })
        .collect();
        match agora_sdk::subscribe(config).await {
            Ok((scheduler, mut events)) => {
                backoff = Duration::from_millis(200);
                set(&slot, Some(scheduler));
                while let Some(event) = events.recv().await {
                    handle(&marathon, event);
                }
                set(&slot, None);
                marathon.input(|m, _| m.disconnected());
                warn!("the subscription ended; subscribing again");
            }
            Err(e) if e.is_removal() => {
                let message = e.to_string();
                marathon.input(move |m, now| m.framework_removed(now, &message));
                continue;
            }
            Err(e) => {
                warn!(error = %e, master = %sub.master, retry_in = ?backoff, "cannot subscribe");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn handle(marathon: &Handle, event: Event) {
    match event {
        Event::Subscribed {
            framework_id,
            resubscribed,
            ..
        } => {
            info!(framework.id = %framework_id.value, resubscribed, "subscribed");
            marathon.input(move |m, now| m.subscribed(now, &framework_id.value));
        }
        Event::Offers(offers) => {
            debug!(offers = offers.len(), "offers");
            marathon.input(move |m, now| m.offers(now, offers));
        }
        Event::Rescind(offer) => marathon.input(move |m, _| m.rescinded(&offer)),
        Event::InverseOffers(offers) => marathon.input(move |m, now| m.inverse_offers(now, offers)),
        Event::RescindInverseOffer(id) => {
            marathon.input(move |m, now| m.inverse_offer_rescinded(now, &id))
        }
        Event::Update(status) => marathon.input(move |m, now| m.status(now, &status)),
        Event::Disconnected(reason) => {
            warn!(%reason, "disconnected from the master");
            marathon.input(|m, _| m.disconnected());
        }
        Event::Error(message) if agora_sdk::removed(&message) => {
            marathon.input(move |m, now| m.framework_removed(now, &message));
        }
        Event::Error(message) => warn!(%message, "the master sent an error"),
        Event::Message { .. } | Event::Failure { .. } => {}
    }
}

/// Carries out the state machine's calls in order. Calls made while
/// unsubscribed are dropped: on resubscription the state machine reconciles,
/// kills again and revives.
pub async fn caller(mut calls: mpsc::UnboundedReceiver<Call>, slot: Slot) {
    while let Some(call) = calls.recv().await {
        let Some(s) = current(&slot) else {
            debug!(?call, "not subscribed; dropping the call");
            continue;
        };
        let result = match call {
            Call::Launch {
                offer,
                tasks,
                refuse_seconds,
            } => {
                let op = v1::offer::Operation {
                    r#type: Some(v1::offer::operation::Type::Launch as i32),
                    launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
                    ..Default::default()
                };
                s.accept(vec![offer], vec![op], refuse_seconds).await
            }
            Call::Operate {
                offer,
                mut operations,
                tasks,
                refuse_seconds,
            } => {
                if !tasks.is_empty() {
                    operations.push(v1::offer::Operation {
                        r#type: Some(v1::offer::operation::Type::Launch as i32),
                        launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
                        ..Default::default()
                    });
                }
                s.accept(vec![offer], operations, refuse_seconds).await
            }
            Call::Decline {
                offers,
                refuse_seconds,
            } => s.decline(offers, refuse_seconds).await,
            Call::Kill { task, agent } => s.kill(&task, agent.as_ref()).await,
            Call::Reconcile(tasks) => s.reconcile(tasks).await,
            Call::AcceptInverseOffers(ids) => s.accept_inverse_offers(ids).await,
            Call::UpdateRoles(roles) => {
                s.update_framework(|info| {
                    info.roles = roles;
                    #[allow(deprecated)]
                    {
                        info.role = None;
                    }
                })
                .await
            }
            Call::Revive => s.revive(Vec::new()).await,
            Call::Suppress => s.suppress(Vec::new()).await,
        };
        if let Err(e) = result {
            warn!(error = %e, "scheduler call failed");
        }
    }
}
