//! The driver: the one task that owns marathon-rs' state machine.
//!
//! HTTP handlers, the subscription loop and the ticker send [`Command`]s over
//! a channel; the driver applies them to the [`Marathon`] in order and carries
//! out its outputs: events to the `/v2/events` bus at once, scheduler calls to
//! the caller task ([`crate::scheduler`]), replies to the requests.
//!
//! Nothing waits on the store while holding the state machine. A change
//! bumps the state's version; one write at a time runs beside the driver,
//! carrying the newest state, so a burst of changes costs one write (writes
//! coalesce). What must be durable waits for the write that covers it, not
//! the driver: a REST mutation's reply, and a launch (so a restarted
//! marathon-rs knows every task it launched) together with every call after
//! it, so calls still leave in the order they were decided. Changes nobody
//! waits for (status updates) are written within `tick`. The state machine
//! is ticked at its own next deadline (`Marathon::next_deadline`), and every
//! 30 s as a sweep.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use agora_marathon_core::marathon::{Call, Marathon, Output, Reply};
use agora_marathon_core::time::Millis;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use crate::store::{Store, StoreError};

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

/// The wall clock in Marathon's terms.
pub fn now() -> Millis {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type ReadFn = Box<dyn FnOnce(&Marathon, Millis) + Send>;
type WriteFn = Box<dyn FnOnce(&mut Marathon, Millis) -> Reply + Send>;
type InputFn = Box<dyn FnOnce(&mut Marathon, Millis) + Send>;

/// A request to the driver.
enum Command {
    /// A query: no outputs, no changes.
    Read(ReadFn),
    /// A REST mutation, answered once its changes are stored.
    Write(WriteFn, oneshot::Sender<Reply>),
    /// A scheduler event.
    Input(InputFn),
    /// Answered once everything decided so far is stored.
    Flush(oneshot::Sender<()>),
}

/// marathon-rs has stopped (its driver is gone).
#[derive(Debug, thiserror::Error)]
#[error("marathon-rs is shutting down")]
pub struct Stopped;

/// A cheap, cloneable way to talk to the driver.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    events: broadcast::Sender<Arc<BusEvent>>,
}

impl Handle {
    /// Runs `f` on the state machine and returns its result.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Marathon, Millis) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Read(Box::new(move |m, now| {
                let _ = tx.send(f(m, now));
            })))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Applies a REST mutation; its reply comes once its changes are stored.
    pub async fn write(
        &self,
        f: impl FnOnce(&mut Marathon, Millis) -> Reply + Send + 'static,
    ) -> Result<Reply, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Write(Box::new(f), tx))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Feeds a scheduler event (or anything else nobody waits for).
    pub fn input(&self, f: impl FnOnce(&mut Marathon, Millis) + Send + 'static) {
        let _ = self.tx.send(Command::Input(Box::new(f)));
    }

    /// Waits until everything decided so far is stored.
    pub async fn flush(&self) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Flush(tx)).map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Subscribes to the event bus.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.events.subscribe()
    }
}

/// Starts the driver of `marathon`: its calls go to `calls`, its state to
/// `store`. Timers (backoffs, unreachable instances) fire at the state
/// machine's own deadline; `tick` is how long changes nobody waits for
/// (status updates) may stay unwritten.
pub fn spawn(
    marathon: Marathon,
    store: Store,
    calls: mpsc::UnboundedSender<Call>,
    tick: Duration,
) -> (Handle, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(4096);
    let driver = Driver {
        marathon,
        rx,
        calls,
        events: events.clone(),
        store,
        tick,
        version: 0,
        stored: 0,
        writing: None,
        retry: None,
        failures: 0,
        replies: VecDeque::new(),
        held: VecDeque::new(),
        flushes: Vec::new(),
        flush_at: None,
    };
    (Handle { tx, events }, tokio::spawn(driver.run()))
}

/// A write in flight: the version it carries, and its outcome.
type Write = JoinHandle<(u64, Result<(), StoreError>)>;

struct Driver {
    marathon: Marathon,
    rx: mpsc::UnboundedReceiver<Command>,
    calls: mpsc::UnboundedSender<Call>,
    events: broadcast::Sender<Arc<BusEvent>>,
    store: Store,
    tick: Duration,
    /// The in-memory state's version: bumped by every change.
    version: u64,
    /// The newest version the store holds.
    stored: u64,
    writing: Option<Write>,
    /// When to try again after a failed write.
    retry: Option<tokio::time::Instant>,
    failures: u32,
    /// Replies waiting for their version to be stored.
    replies: VecDeque<(u64, oneshot::Sender<Reply>, Reply)>,
    /// Calls waiting for a version to be stored (a launch, and everything
    /// decided after it).
    held: VecDeque<(u64, Call)>,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// When changes nobody waits for are written.
    flush_at: Option<tokio::time::Instant>,
}

/// Every app is reconciled at least this often, besides the state
/// machine's own deadlines.
const SWEEP: Duration = Duration::from_secs(30);

impl Driver {
    async fn run(mut self) {
        // A slow sweep besides the deadlines: every app is reconciled at
        // least this often, whatever happens.
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry = self.retry;
            let flush = self.flush_at;
            let deadline = self.marathon.next_deadline(now()).map(|t| {
                let wait = u64::try_from(t.0 - now().0).unwrap_or(0);
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                command = self.rx.recv() => {
                    let Some(command) = command else { break };
                    self.apply(command);
                    // What queued meanwhile joins the same write.
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(c) => self.apply(c),
                            Err(_) => break,
                        }
                    }
                }
                done = async { self.writing.as_mut().expect("guarded").await }, if self.writing.is_some() => {
                    self.writing = None;
                    self.written(done);
                }
                () = async { tokio::time::sleep_until(retry.expect("guarded")).await }, if retry.is_some() => {
                    self.retry = None;
                }
                () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    self.input(Box::new(|m, now| m.tick(now)));
                }
                () = async { tokio::time::sleep_until(flush.expect("guarded")).await }, if flush.is_some() => {
                    self.flush_at = None;
                    self.save(true);
                }
                _ = sweep.tick() => {
                    self.input(Box::new(|m, now| m.tick(now)));
                    self.save(true);
                }
            }
            // Changes nobody waits for are written within `tick`.
            if self.version > self.stored && self.flush_at.is_none() {
                self.flush_at = Some(tokio::time::Instant::now() + self.tick);
            }
            self.save(false);
        }
        debug!("marathon-rs driver stopped");
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Read(f) => f(&self.marathon, now()),
            Command::Input(f) => self.input(f),
            Command::Write(f, reply) => {
                self.marathon.set_events(self.events.receiver_count() > 0);
                let answer = f(&mut self.marathon, now());
                if self.finish() {
                    self.replies.push_back((self.version, reply, answer));
                } else {
                    let _ = reply.send(answer);
                }
            }
            Command::Flush(done) => {
                if self.stored >= self.version {
                    let _ = done.send(());
                } else {
                    self.flushes.push((self.version, done));
                }
            }
        }
    }

    fn input(&mut self, f: InputFn) {
        self.marathon.set_events(self.events.receiver_count() > 0);
        f(&mut self.marathon, now());
        self.finish();
    }

    /// Takes the state machine's outputs; returns whether the state changed
    /// (and so is not stored yet).
    fn finish(&mut self) -> bool {
        let changed = self.marathon.take_dirty();
        if changed {
            self.version += 1;
        }
        for o in self.marathon.take_outputs() {
            match o {
                Output::Call(c) => {
                    let needs = match c {
                        Call::Launch { .. } | Call::Operate { .. } => self.version,
                        _ => 0,
                    };
                    if self.held.is_empty() && needs <= self.stored {
                        let _ = self.calls.send(c);
                    } else {
                        self.held.push_back((needs, c));
                    }
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
        changed
    }

    /// Starts a write of the newest state when one is due: someone waits
    /// for it, or `tick` (changes nobody waits for).
    fn save(&mut self, tick: bool) {
        if self.writing.is_some() || self.retry.is_some() || self.stored >= self.version {
            return;
        }
        let waiting = !self.replies.is_empty() || !self.held.is_empty() || !self.flushes.is_empty();
        if !waiting && !tick {
            return;
        }
        let entries = match self.marathon.state().to_entries() {
            Ok(e) => e,
            Err(e) => {
                error!(error = %e, "cannot serialise marathon-rs state");
                return;
            }
        };
        let (store, version) = (self.store.clone(), self.version);
        self.writing = Some(tokio::spawn(
            async move { (version, store.save(entries).await) },
        ));
    }

    fn written(&mut self, done: Result<(u64, Result<(), StoreError>), tokio::task::JoinError>) {
        match done {
            Ok((version, Ok(()))) => {
                self.failures = 0;
                self.stored = version;
                self.release();
            }
            Ok((_, Err(StoreError::Zk(agora_zk::ZkError::Fenced(_))))) => {
                // The store has told the leader loop, which stops us.
                self.retry = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            Ok((_, Err(e))) => {
                self.failures += 1;
                let wait = Duration::from_millis(100 << self.failures.min(6));
                if self.failures == 1 || self.failures.is_power_of_two() {
                    error!(error = %e, failures = self.failures, retry_in = ?wait,
                           "cannot save marathon-rs state; requests that change it wait");
                }
                self.retry = Some(tokio::time::Instant::now() + wait);
            }
            Err(e) => warn!(error = %e, "the store write stopped"),
        }
    }

    /// Sends what waited for versions now stored.
    fn release(&mut self) {
        while self.replies.front().is_some_and(|r| r.0 <= self.stored) {
            if let Some((_, tx, reply)) = self.replies.pop_front() {
                let _ = tx.send(reply);
            }
        }
        while self.held.front().is_some_and(|c| c.0 <= self.stored) {
            if let Some((_, call)) = self.held.pop_front() {
                let _ = self.calls.send(call);
            }
        }
        let stored = self.stored;
        for (_, done) in self.flushes.extract_if(.., |(v, _)| *v <= stored) {
            let _ = done.send(());
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
