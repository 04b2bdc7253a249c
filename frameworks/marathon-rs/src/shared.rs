//! The state machine behind a lock, and where its outputs go.
//!
//! Every input (a REST call, a scheduler event, a tick) locks the
//! [`Marathon`], runs, and drains its outputs while still holding the lock,
//! so scheduler calls and events leave in the order they were decided.
//! Calls go to the caller task ([`crate::scheduler`]), events to the
//! `/v2/events` bus. State is saved before a REST call answers and before
//! tasks are launched (so a restarted marathon-rs knows every task it
//! launched); other changes (status updates) are saved by the periodic flush.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use agora_marathon_core::marathon::{Call, Marathon, Output, Reply};
use agora_marathon_core::time::Millis;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tracing::error;

use crate::store::Store;

/// One event for `/v2/events`, serialised once for every subscriber.
#[derive(Debug)]
pub struct BusEvent {
    /// `eventType`.
    pub event_type: String,
    /// The JSON payload on one line.
    pub full: String,
    /// The payload without the plan's `original`/`target`, for
    /// `plan-format=light` subscribers (`None`: same as `full`).
    pub light: Option<String>,
}

impl BusEvent {
    fn new(event_type: String, mut payload: Value) -> BusEvent {
        let full = payload.to_string();
        let light = payload
            .get_mut("plan")
            .and_then(Value::as_object_mut)
            .map(|plan| {
                plan.remove("original");
                plan.remove("target");
            })
            .map(|()| payload.to_string());
        BusEvent {
            event_type,
            full,
            light,
        }
    }
}

/// What the HTTP handlers, the scheduler loop and the ticker share.
pub struct Shared {
    marathon: Mutex<Marathon>,
    calls: mpsc::UnboundedSender<Call>,
    events: broadcast::Sender<Arc<BusEvent>>,
    store: Store,
    unsaved: AtomicBool,
}

/// The wall clock in Marathon's terms.
pub fn now() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Shared {
    /// Shares `marathon`; calls go to `calls`.
    pub fn new(
        marathon: Marathon,
        store: Store,
        calls: mpsc::UnboundedSender<Call>,
    ) -> Arc<Shared> {
        let (events, _) = broadcast::channel(4096);
        Arc::new(Shared {
            marathon: Mutex::new(marathon),
            calls,
            events,
            store,
            unsaved: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Marathon> {
        self.marathon.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read: no outputs, no writes.
    pub fn read<R>(&self, f: impl FnOnce(&Marathon, Millis) -> R) -> R {
        f(&self.lock(), now())
    }

    /// A REST mutation: its changes are stored before it returns.
    pub fn write(&self, f: impl FnOnce(&mut Marathon, Millis) -> Reply) -> Reply {
        let mut m = self.lock();
        m.set_events(self.events.receiver_count() > 0);
        let reply = f(&mut m, now());
        self.finish(&mut m, true);
        reply
    }

    /// A scheduler event or tick.
    pub fn input(&self, f: impl FnOnce(&mut Marathon, Millis)) {
        let mut m = self.lock();
        m.set_events(self.events.receiver_count() > 0);
        f(&mut m, now());
        self.finish(&mut m, false);
    }

    /// Saves if anything changed since the last save.
    pub fn flush(&self) {
        if self.unsaved.load(Ordering::Relaxed) {
            let mut m = self.lock();
            self.save(&mut m);
        }
    }

    /// Subscribes to the event bus.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.events.subscribe()
    }

    fn save(&self, m: &mut Marathon) {
        match self.store.save(m.state()) {
            Ok(()) => self.unsaved.store(false, Ordering::Relaxed),
            Err(e) => error!(error = %e, "cannot save marathon-rs state"),
        }
    }

    fn finish(&self, m: &mut Marathon, save_now: bool) {
        let outputs = m.take_outputs();
        if m.take_dirty() {
            self.unsaved.store(true, Ordering::Relaxed);
        }
        let launches = outputs
            .iter()
            .any(|o| matches!(o, Output::Call(Call::Launch { .. })));
        if (save_now || launches) && self.unsaved.load(Ordering::Relaxed) {
            self.save(m);
        }
        for o in outputs {
            match o {
                Output::Call(c) => {
                    let _ = self.calls.send(c);
                }
                Output::Event {
                    event_type,
                    payload,
                } => {
                    let _ = self
                        .events
                        .send(Arc::new(BusEvent::new(event_type, payload)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn light_events_drop_the_plan_groups_only() {
        let e = BusEvent::new(
            "deployment_info".into(),
            json!({"eventType": "deployment_info", "plan": {"id": "d", "original": {}, "target": {}}}),
        );
        assert!(e.full.contains("original"));
        let light = e.light.unwrap();
        assert!(
            !light.contains("original")
                && !light.contains("target")
                && light.contains("\"id\":\"d\"")
        );
        assert!(BusEvent::new("x".into(), json!({"a": 1})).light.is_none());
    }
}
