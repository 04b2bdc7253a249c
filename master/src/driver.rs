//! The driver: the one task that owns the master core.
//!
//! HTTP handlers and agent connections send [`Command`]s over a channel; the
//! driver applies them to the core in order, carries out its outputs (events
//! to framework streams, messages to agents, replies to requests), and ticks
//! the core when its next deadline comes. Nothing else touches the core.

use std::collections::HashMap;

use agora_master_core::ids::{ConnId, RequestId, StreamId};
use agora_master_core::{CallError, Input, Master, MasterView, OperatorCall, Output};
use agora_proto::internal::{AgentMessage, MasterMessage};
use agora_proto::operator;
use agora_proto::scheduler as sched;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::clock::Clock;

type Reply = oneshot::Sender<Result<(), CallError>>;

/// A request to the driver.
pub(crate) enum Command {
    Subscribe {
        call: sched::Call,
        stream: StreamId,
        principal: Option<String>,
        events: mpsc::UnboundedSender<sched::Event>,
        reply: Reply,
    },
    Call {
        call: sched::Call,
        stream: Option<StreamId>,
        principal: Option<String>,
        reply: Reply,
    },
    StreamClosed(StreamId),
    AgentOpened {
        conn: ConnId,
        sender: mpsc::UnboundedSender<MasterMessage>,
    },
    AgentMessage {
        conn: ConnId,
        message: AgentMessage,
    },
    AgentClosed(ConnId),
    Operator {
        call: OperatorCall,
        principal: Option<String>,
        reply: Reply,
    },
    OperatorSubscribe {
        events: mpsc::UnboundedSender<operator::Event>,
        principal: Option<String>,
        heartbeat: std::time::Duration,
    },
    Query(Box<dyn FnOnce(&Master) + Send>),
}

/// The master has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the master is shutting down")]
pub struct Stopped;

/// A cheap, cloneable way to talk to the driver.
#[derive(Clone)]
pub struct MasterHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl MasterHandle {
    pub(crate) fn send(&self, command: Command) {
        let _ = self.tx.send(command);
    }

    async fn ask(
        &self,
        make: impl FnOnce(Reply) -> Command,
    ) -> Result<Result<(), CallError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub(crate) async fn subscribe(
        &self,
        call: sched::Call,
        stream: StreamId,
        principal: Option<String>,
        events: mpsc::UnboundedSender<sched::Event>,
    ) -> Result<Result<(), CallError>, Stopped> {
        self.ask(|reply| Command::Subscribe {
            call,
            stream,
            principal,
            events,
            reply,
        })
        .await
    }

    pub(crate) async fn call(
        &self,
        call: sched::Call,
        stream: Option<StreamId>,
        principal: Option<String>,
    ) -> Result<Result<(), CallError>, Stopped> {
        self.ask(|reply| Command::Call {
            call,
            stream,
            principal,
            reply,
        })
        .await
    }

    pub(crate) async fn operator(
        &self,
        call: OperatorCall,
        principal: Option<String>,
    ) -> Result<Result<(), CallError>, Stopped> {
        self.ask(|reply| Command::Operator {
            call,
            principal,
            reply,
        })
        .await
    }

    /// Runs a read-only closure on the master core and returns its result.
    pub async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Master) -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Query(Box::new(move |m| {
                let _ = tx.send(f(m));
            })))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Starts the driver task for `master`; its registry goes to `registry`
/// whenever it changes.
pub(crate) fn spawn(
    master: Master,
    clock: Clock,
    registry: Option<tokio::sync::watch::Sender<Option<agora_proto::internal::Registry>>>,
    histograms: crate::histograms::Histograms,
) -> (MasterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        master,
        clock,
        histograms,
        registry,
        rx,
        next_request: 0,
        replies: HashMap::new(),
        streams: HashMap::new(),
        agents: HashMap::new(),
        operator: Vec::new(),
    };
    (MasterHandle { tx }, tokio::spawn(driver.run()))
}

struct Driver {
    master: Master,
    clock: Clock,
    /// Latencies: the core's steps that ran an allocation pass, and what
    /// the core measured.
    histograms: crate::histograms::Histograms,
    registry: Option<tokio::sync::watch::Sender<Option<agora_proto::internal::Registry>>>,
    rx: mpsc::UnboundedReceiver<Command>,
    next_request: u64,
    /// Requests waiting for the core's verdict.
    replies: HashMap<RequestId, Reply>,
    /// Open framework subscription streams (held by their HTTP responses).
    streams: HashMap<StreamId, mpsc::UnboundedSender<sched::Event>>,
    /// Open agent connections (held by their gRPC sessions).
    agents: HashMap<ConnId, mpsc::UnboundedSender<MasterMessage>>,
    /// Operator API SUBSCRIBE streams.
    /// With the principal each may see things as.
    operator: Vec<(mpsc::UnboundedSender<operator::Event>, Option<String>)>,
}

impl Driver {
    async fn run(mut self) {
        // The encrypted overlay's keys: one now, a new one on schedule.
        let mut rotation = self
            .master
            .config()
            .overlay
            .as_ref()
            .filter(|o| o.encrypt)
            .map(|o| tokio::time::interval(o.key_rotation.max(std::time::Duration::from_secs(1))));
        loop {
            let deadline = self.master.next_deadline().map(|t| self.clock.instant(t));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let rotate = async {
                match rotation.as_mut() {
                    Some(r) => r.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = rotate => {
                    let mut key = vec![0u8; agora_master_core::master::OVERLAY_KEY_LEN];
                    match getrandom::fill(&mut key) {
                        Ok(()) => self.input(Input::OverlayKey(key)),
                        Err(e) => warn!(error = %e, "no randomness for an overlay key: the old one stays"),
                    }
                }
                command = self.rx.recv() => {
                    let Some(command) = command else { break };
                    self.apply(command);
                    // Drain what is queued so one allocation covers the burst.
                    for _ in 0..1024 {
                        match self.rx.try_recv() {
                            Ok(c) => self.apply(c),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep => self.input(Input::Tick),
            }
            if self.master.take_registry_changed()
                && let Some(registry) = &self.registry
            {
                registry.send_replace(Some(self.master.registry()));
            }
        }
        debug!("master driver stopped");
    }

    fn request(&mut self, reply: Reply) -> RequestId {
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.replies.insert(id, reply);
        id
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                call,
                stream,
                principal,
                events,
                reply,
            } => {
                self.streams.insert(stream.clone(), events);
                let request = self.request(reply);
                self.input(Input::Subscribe {
                    request,
                    stream,
                    call,
                    principal,
                });
            }
            Command::Call {
                call,
                stream,
                principal,
                reply,
            } => {
                let request = self.request(reply);
                self.input(Input::Call {
                    request,
                    stream,
                    call,
                    principal,
                });
            }
            Command::StreamClosed(stream) => {
                self.streams.remove(&stream);
                self.input(Input::StreamClosed { stream });
            }
            Command::AgentOpened { conn, sender } => {
                self.agents.insert(conn, sender);
            }
            Command::AgentMessage { conn, message } => self.input(Input::Agent { conn, message }),
            Command::AgentClosed(conn) => {
                self.agents.remove(&conn);
                self.input(Input::AgentClosed { conn });
            }
            Command::Operator {
                call,
                principal,
                reply,
            } => {
                let request = self.request(reply);
                self.input(Input::Operator {
                    request,
                    call,
                    principal,
                });
            }
            Command::OperatorSubscribe {
                events,
                principal,
                heartbeat,
            } => {
                self.master.set_operator_events(true);
                let mut state = self.master.get_state();
                self.master.viewer(principal.as_deref()).state(&mut state);
                let subscribed = operator::Event {
                    r#type: Some(operator::event::Type::Subscribed as i32),
                    subscribed: Some(operator::event::Subscribed {
                        get_state: Some(state),
                        heartbeat_interval_seconds: Some(heartbeat.as_secs_f64()),
                    }),
                    ..Default::default()
                };
                let heartbeat = operator::Event {
                    r#type: Some(operator::event::Type::Heartbeat as i32),
                    ..Default::default()
                };
                if events.send(subscribed).is_ok() && events.send(heartbeat).is_ok() {
                    self.operator.push((events, principal));
                }
            }
            Command::Query(f) => f(&self.master),
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.clock.now();
        let runs = self.master.metrics().allocation_runs;
        let started = std::time::Instant::now();
        let outputs = self.master.handle(now, input);
        if self.master.metrics().allocation_runs != runs {
            self.histograms
                .allocation
                .observe(started.elapsed().as_secs_f64());
        }
        for (what, took) in self.master.take_observations() {
            self.histograms.observe(what, took);
        }
        for output in outputs {
            self.output(output);
        }
    }

    fn output(&mut self, output: Output) {
        match output {
            Output::Reply { request, result } => {
                if let Some(reply) = self.replies.remove(&request) {
                    let _ = reply.send(result);
                }
            }
            Output::Event { stream, event } => {
                if let Some(tx) = self.streams.get(&stream)
                    && tx.send(*event).is_err()
                {
                    self.streams.remove(&stream);
                }
            }
            Output::CloseStream { stream } => {
                // Dropping the sender ends the HTTP response after its last event.
                self.streams.remove(&stream);
            }
            Output::ToAgent { conn, message } => {
                if let Some(tx) = self.agents.get(&conn)
                    && tx.send(*message).is_err()
                {
                    self.agents.remove(&conn);
                }
            }
            Output::CloseAgent { conn } => {
                self.agents.remove(&conn);
            }
            Output::OperatorEvent(event) => {
                let master = &self.master;
                self.operator.retain(|(tx, principal)| {
                    !master.viewer(principal.as_deref()).operator_event(&event)
                        || tx.send((*event).clone()).is_ok()
                });
                if self.operator.is_empty() {
                    self.master.set_operator_events(false);
                }
            }
            Output::Warn(message) => warn!("{message}"),
        }
        if self.replies.len() > 100_000 {
            warn!(
                pending = self.replies.len(),
                "many requests waiting for the master"
            );
        }
    }
}
