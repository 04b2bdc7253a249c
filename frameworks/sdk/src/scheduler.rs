//! The subscription loop and the call API.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::{scheduler as sched, v1};
use agora_rpc::client::{ApiClient, ClientError};
use agora_rpc::http::Encoding;
use agora_zk as zk;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use sched::call::Type as C;

/// What the SDK reports.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The master refused a call or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The framework is not subscribed (yet, or any more).
    #[error("the framework is not subscribed")]
    NotSubscribed,
    /// The subscription ended for good.
    #[error("the subscription ended: {0}")]
    Ended(String),
}

impl SdkError {
    /// Whether the master removed the framework (TEARDOWN, or its failover
    /// timeout passed): its id can never subscribe again.
    pub fn is_removal(&self) -> bool {
        matches!(self, SdkError::Ended(m) if removed(m))
    }
}

/// Whether an ERROR event's message says the framework was removed.
pub fn removed(message: &str) -> bool {
    message.contains("Framework has been removed")
}

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The master: `host:port`, `http://host:port`, or `zk://host:2181/mesos`
    /// (the leader ZooKeeper names).
    pub master: String,
    /// The framework. Leave `id` unset for a new framework.
    pub framework_info: v1::FrameworkInfo,
    /// JSON or protobuf (the default).
    pub encoding: Encoding,
    /// Acknowledge every status update with a uuid after delivering it.
    pub auto_acknowledge: bool,
    /// Missing heartbeats for this many intervals means the stream is dead.
    pub heartbeat_intervals: f64,
    /// Longest wait between resubscription attempts.
    pub max_backoff: Duration,
    /// The framework's principal and secret, sent as HTTP Basic on every
    /// call (a master with `--authenticate-http-frameworks` requires it);
    /// the principal becomes `FrameworkInfo.principal` when that is unset.
    pub credential: Option<agora_proto::auth::Credential>,
    /// TLS to the master (`https://`), trusting the cluster CA.
    pub tls: Option<agora_rpc::tls::ClientTls>,
}

impl SchedulerConfig {
    /// A framework named `name`, user `root`, failover timeout one week.
    pub fn new(master: &str, name: &str) -> Self {
        SchedulerConfig {
            master: master.to_string(),
            framework_info: v1::FrameworkInfo {
                user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
                name: name.to_string(),
                failover_timeout: Some(7.0 * 24.0 * 3600.0),
                ..Default::default()
            },
            encoding: Encoding::Protobuf,
            auto_acknowledge: true,
            heartbeat_intervals: 2.0,
            max_backoff: Duration::from_secs(5),
            credential: None,
            tls: None,
        }
    }
}

/// An event for the framework.
#[derive(Debug, Clone)]
pub enum Event {
    /// (Re)subscribed.
    Subscribed {
        /// The framework id.
        framework_id: v1::FrameworkId,
        /// The leading master.
        master_info: Option<v1::MasterInfo>,
        /// False the first time, true after a reconnection.
        resubscribed: bool,
    },
    /// New offers.
    Offers(Vec<v1::Offer>),
    /// An offer was withdrawn.
    Rescind(v1::OfferId),
    /// Agents the framework is asked to leave (a drain or maintenance);
    /// answer with [`Scheduler::accept_inverse_offers`] or
    /// [`Scheduler::decline_inverse_offers`].
    InverseOffers(Vec<v1::InverseOffer>),
    /// An inverse offer was withdrawn (the agent is staying after all).
    RescindInverseOffer(v1::OfferId),
    /// A task status update (already acknowledged with auto-acknowledgement).
    Update(v1::TaskStatus),
    /// A message from an executor.
    Message {
        /// Its agent.
        agent_id: v1::AgentId,
        /// The executor.
        executor_id: v1::ExecutorId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// An agent or executor was lost.
    Failure {
        /// The agent.
        agent_id: Option<v1::AgentId>,
        /// The executor, if an executor ended.
        executor_id: Option<v1::ExecutorId>,
        /// Its wait status.
        status: Option<i32>,
    },
    /// An ERROR event from the master.
    Error(String),
    /// The stream broke; the SDK is resubscribing.
    Disconnected(String),
}

#[derive(Default)]
struct Session {
    framework_id: Option<v1::FrameworkId>,
    /// The FrameworkInfo as last updated ([`Scheduler::update_framework`]);
    /// resubscriptions send it.
    framework_info: Option<v1::FrameworkInfo>,
    stream_id: Option<String>,
    master: String,
    stopped: bool,
    /// The client for calls (keeps its connection), rebuilt when the master changes.
    client: Option<ApiClient>,
}

/// Calls on the scheduler API for the subscribed framework. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    session: Arc<Mutex<Session>>,
    encoding: Encoding,
    /// `Authorization` for every call (from [`SchedulerConfig::credential`]).
    authorization: Option<String>,
    /// TLS to the master.
    tls: Option<agora_rpc::tls::ClientTls>,
    stop: Arc<tokio::sync::Notify>,
}

fn api_url(master: &str, tls: bool) -> String {
    format!("{}/api/v1/scheduler", agora_rpc::tls::base_url(master, tls))
}

/// Subscribes and returns the call handle and the event channel. Returns
/// once the first SUBSCRIBED has arrived (or the master refused).
pub async fn subscribe(
    mut config: SchedulerConfig,
) -> Result<(Scheduler, mpsc::UnboundedReceiver<Event>), SdkError> {
    if let Some(c) = &config.credential
        && config.framework_info.principal.is_none()
    {
        config.framework_info.principal = Some(c.principal.clone());
    }
    let session = Arc::new(Mutex::new(Session {
        master: config.master.clone(),
        framework_id: config.framework_info.id.clone(),
        framework_info: Some(config.framework_info.clone()),
        ..Default::default()
    }));
    let scheduler = Scheduler {
        session: session.clone(),
        encoding: config.encoding,
        authorization: config.credential.as_ref().map(|c| c.basic_header()),
        tls: config.tls.clone(),
        stop: Arc::new(tokio::sync::Notify::new()),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(subscription_loop(
        config,
        session,
        scheduler.clone(),
        tx,
        ready_tx,
    ));
    match ready_rx.await {
        Ok(Ok(())) => Ok((scheduler, rx)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SdkError::Ended("the subscription task stopped".into())),
    }
}

async fn subscription_loop(
    config: SchedulerConfig,
    session: Arc<Mutex<Session>>,
    scheduler: Scheduler,
    events: mpsc::UnboundedSender<Event>,
    ready: tokio::sync::oneshot::Sender<Result<(), SdkError>>,
) {
    let mut st = LoopState {
        ready: Some(ready),
        backoff: Duration::from_millis(100),
        subscribed_before: false,
        heartbeat: Duration::from_secs(15),
    };
    let mut detector = match detector(&config.master) {
        Ok(d) => d,
        Err(e) => {
            if let Some(r) = st.ready.take() {
                let _ = r.send(Err(e));
            }
            return;
        }
    };
    let mut redirected = false;
    // Redirects in a row: during a failover two masters can point at each
    // other; the first is followed at once, the next ones after a st.backoff.
    let mut redirects = 0u32;
    loop {
        if let Some(rx) = detector
            .as_mut()
            .filter(|_| !std::mem::take(&mut redirected))
        {
            match zk::current_leader(rx, Duration::from_secs(10)).await {
                Some(l) => session.lock().unwrap_or_else(|p| p.into_inner()).master = l.address,
                None => {
                    warn!(master = %config.master, "no leading master yet");
                    if events.is_closed() {
                        return;
                    }
                    continue;
                }
            }
        }
        let (master, framework_id, stopped) = {
            let s = session.lock().unwrap_or_else(|p| p.into_inner());
            (s.master.clone(), s.framework_id.clone(), s.stopped)
        };
        if stopped || events.is_closed() {
            return;
        }
        let client = ApiClient::with_tls(
            api_url(&master, config.tls.is_some()),
            config.encoding,
            config.tls.as_ref(),
        )
        .with_authorization(scheduler.authorization.clone());
        let updated = session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .framework_info
            .clone();
        let call = subscribe_call(
            updated.as_ref().unwrap_or(&config.framework_info),
            framework_id,
        );
        let reason = match client.subscribe::<_, sched::Event>(&call).await {
            Err(ClientError::Status {
                status: 307,
                location: Some(location),
                ..
            }) => {
                let host = redirect_host(&location);
                redirects += 1;
                if redirects == 1 {
                    info!(leader = %host, "redirected to the leading master");
                } else {
                    debug!(leader = %host, redirects, retry_in = ?st.backoff, "redirected again");
                    tokio::time::sleep(st.backoff).await;
                    st.backoff = (st.backoff * 2).min(config.max_backoff);
                }
                session.lock().unwrap_or_else(|p| p.into_inner()).master = host;
                redirected = true;
                continue;
            }
            Err(
                e @ ClientError::Status {
                    status: 400..=499, ..
                },
            ) if st.ready.is_some() => {
                if let Some(r) = st.ready.take() {
                    let _ = r.send(Err(e.into()));
                }
                return;
            }
            Err(e) => e.to_string(),
            Ok((stream_id, mut stream)) => {
                redirects = 0;
                session.lock().unwrap_or_else(|p| p.into_inner()).stream_id = stream_id;
                st.heartbeat = Duration::from_secs(15);

                loop {
                    let timeout = st.heartbeat.mul_f64(config.heartbeat_intervals.max(1.0))
                        + Duration::from_secs(1);
                    let received = tokio::select! {
                        r = tokio::time::timeout(timeout, stream.next()) => r,
                        () = scheduler.stop.notified() => return,
                    };
                    let next = match received {
                        Err(_) => break format!("no heartbeat for {timeout:?}"),
                        Ok(None) => break "the master closed the stream".to_string(),
                        Ok(Some(Err(e))) => break e.to_string(),
                        Ok(Some(Ok(event))) => event,
                    };
                    if deliver(next, &config, &session, &scheduler, &events, &mut st).is_break() {
                        return;
                    }
                }
            }
        };
        session.lock().unwrap_or_else(|p| p.into_inner()).stream_id = None;
        if session.lock().unwrap_or_else(|p| p.into_inner()).stopped {
            return;
        }
        warn!(%reason, retry_in = ?st.backoff, "subscription lost; resubscribing");
        let _ = events.send(Event::Disconnected(reason));
        tokio::time::sleep(st.backoff).await;
        st.backoff = (st.backoff * 2).min(config.max_backoff);
    }
}

/// With `zk://…`, the leader detector every (re)subscription asks.
fn detector(
    master: &str,
) -> Result<Option<tokio::sync::watch::Receiver<Option<zk::Leader>>>, SdkError> {
    if !zk::is_zk(master) {
        return Ok(None);
    }
    let url = master
        .parse::<zk::ZkUrl>()
        .map_err(|e| SdkError::Ended(format!("invalid master: {e}")))?;
    Ok(Some(zk::detect(url)))
}

/// SUBSCRIBE with the framework's info (and id, once it has one).
fn subscribe_call(info: &v1::FrameworkInfo, framework_id: Option<v1::FrameworkId>) -> sched::Call {
    let mut info = info.clone();
    info.id = framework_id.clone();
    sched::Call {
        framework_id,
        r#type: Some(C::Subscribe as i32),
        subscribe: Some(sched::call::Subscribe {
            framework_info: info,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The leader a standby redirects to: `host:port` of `//host:port/...`.
fn redirect_host(location: &str) -> String {
    location
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_start_matches("//")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// The subscription loop's state that outlives one stream.
struct LoopState {
    /// Answered at the first SUBSCRIBED, or with why subscribing failed.
    ready: Option<tokio::sync::oneshot::Sender<Result<(), SdkError>>>,
    /// The wait before resubscribing (doubles, reset at SUBSCRIBED).
    backoff: Duration,
    /// Whether a SUBSCRIBED came before (the next is a resubscription).
    subscribed_before: bool,
    /// The master's heartbeat interval.
    heartbeat: Duration,
}

/// Hands one event to the framework (acknowledging updates when asked);
/// `Break` when the subscription ends for good (removed or failed over).
fn deliver(
    next: sched::Event,
    config: &SchedulerConfig,
    session: &Arc<Mutex<Session>>,
    scheduler: &Scheduler,
    events: &mpsc::UnboundedSender<Event>,
    st: &mut LoopState,
) -> ControlFlow<()> {
    match next.r#type() {
        sched::event::Type::Subscribed => {
            let Some(s) = next.subscribed else {
                return ControlFlow::Continue(());
            };
            if let Some(h) = s
                .heartbeat_interval_seconds
                .and_then(|h| Duration::try_from_secs_f64(h).ok())
            {
                st.heartbeat = h.max(Duration::from_millis(100));
            }
            session
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .framework_id = Some(s.framework_id.clone());
            st.backoff = Duration::from_millis(100);
            info!(framework.id = %s.framework_id.value, "subscribed");
            let _ = events.send(Event::Subscribed {
                framework_id: s.framework_id,
                master_info: s.master_info,
                resubscribed: st.subscribed_before,
            });
            st.subscribed_before = true;
            if let Some(r) = st.ready.take() {
                let _ = r.send(Ok(()));
            }
        }
        sched::event::Type::Offers => {
            let offers = next.offers.map(|o| o.offers).unwrap_or_default();
            let _ = events.send(Event::Offers(offers));
        }
        sched::event::Type::Rescind => {
            if let Some(r) = next.rescind {
                let _ = events.send(Event::Rescind(r.offer_id));
            }
        }
        sched::event::Type::InverseOffers => {
            let offers = next.inverse_offers.map(|o| o.inverse_offers);
            let _ = events.send(Event::InverseOffers(offers.unwrap_or_default()));
        }
        sched::event::Type::RescindInverseOffer => {
            if let Some(r) = next.rescind_inverse_offer {
                let _ = events.send(Event::RescindInverseOffer(r.inverse_offer_id));
            }
        }
        sched::event::Type::Update => {
            let Some(u) = next.update else {
                return ControlFlow::Continue(());
            };
            let status = u.status;
            let ack = config.auto_acknowledge && status.uuid.is_some() && status.agent_id.is_some();
            let _ = events.send(Event::Update(status.clone()));
            if ack {
                let s = scheduler.clone();
                tokio::spawn(async move {
                    if let Err(e) = s.acknowledge(&status).await {
                        debug!(error = %e, "acknowledgement failed; the agent will resend");
                    }
                });
            }
        }
        sched::event::Type::Message => {
            if let Some(m) = next.message {
                let _ = events.send(Event::Message {
                    agent_id: m.agent_id,
                    executor_id: m.executor_id,
                    data: m.data,
                });
            }
        }
        sched::event::Type::Failure => {
            if let Some(f) = next.failure {
                let _ = events.send(Event::Failure {
                    agent_id: f.agent_id,
                    executor_id: f.executor_id,
                    status: f.status,
                });
            }
        }
        sched::event::Type::Error => {
            let message = next.error.map(|e| e.message).unwrap_or_default();
            let _ = events.send(Event::Error(message.clone()));
            if removed(&message) || message.contains("failed over") {
                // Resubscribing cannot help.
                session.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
                if let Some(r) = st.ready.take() {
                    let _ = r.send(Err(SdkError::Ended(message)));
                }
                return ControlFlow::Break(());
            }
        }
        _ => {}
    }
    ControlFlow::Continue(())
}

impl Scheduler {
    /// The framework id, once subscribed.
    pub fn framework_id(&self) -> Option<v1::FrameworkId> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .framework_id
            .clone()
    }

    async fn call(&self, kind: C, fill: impl FnOnce(&mut sched::Call)) -> Result<(), SdkError> {
        let (framework_id, stream_id, client) = {
            let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let url = api_url(&s.master, self.tls.is_some());
            if s.client.as_ref().is_none_or(|c| c.url() != url) {
                s.client = Some(
                    ApiClient::with_tls(url, self.encoding, self.tls.as_ref())
                        .with_authorization(self.authorization.clone()),
                );
            }
            (
                s.framework_id.clone(),
                s.stream_id.clone(),
                s.client.clone(),
            )
        };
        let (Some(framework_id), Some(stream_id), Some(client)) = (framework_id, stream_id, client)
        else {
            return Err(SdkError::NotSubscribed);
        };
        let mut call = sched::Call {
            framework_id: Some(framework_id),
            r#type: Some(kind as i32),
            ..Default::default()
        };
        fill(&mut call);
        client.call(&call, Some(&stream_id)).await?;
        Ok(())
    }

    /// UPDATE_FRAMEWORK: changes the framework's info (its roles, name,
    /// capabilities …) without resubscribing; later resubscriptions send
    /// the changed info too.
    pub async fn update_framework(
        &self,
        change: impl FnOnce(&mut v1::FrameworkInfo),
    ) -> Result<(), SdkError> {
        let info = {
            let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let mut info = s.framework_info.clone().unwrap_or_default();
            change(&mut info);
            info.id = s.framework_id.clone();
            s.framework_info = Some(info.clone());
            info
        };
        self.call(C::UpdateFramework, |c| {
            c.update_framework = Some(sched::call::UpdateFramework {
                framework_info: info,
                ..Default::default()
            })
        })
        .await
    }

    /// ACCEPT: runs `operations` on the offers; the rest is declined for
    /// `refuse_seconds`.
    pub async fn accept(
        &self,
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<v1::offer::Operation>,
        refuse_seconds: f64,
    ) -> Result<(), SdkError> {
        self.call(C::Accept, |c| {
            c.accept = Some(sched::call::Accept {
                offer_ids,
                operations,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            })
        })
        .await
    }

    /// Launches tasks on one offer.
    pub async fn launch(
        &self,
        offer: &v1::Offer,
        tasks: Vec<v1::TaskInfo>,
        refuse_seconds: f64,
    ) -> Result<(), SdkError> {
        let op = v1::offer::Operation {
            r#type: Some(v1::offer::operation::Type::Launch as i32),
            launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
            ..Default::default()
        };
        self.accept(vec![offer.id.clone()], vec![op], refuse_seconds)
            .await
    }

    /// DECLINE.
    pub async fn decline(
        &self,
        offer_ids: Vec<v1::OfferId>,
        refuse_seconds: f64,
    ) -> Result<(), SdkError> {
        self.call(C::Decline, |c| {
            c.decline = Some(sched::call::Decline {
                offer_ids,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_seconds),
                }),
            })
        })
        .await
    }

    /// ACCEPT_INVERSE_OFFERS: the framework will leave those agents.
    pub async fn accept_inverse_offers(&self, ids: Vec<v1::OfferId>) -> Result<(), SdkError> {
        self.call(C::AcceptInverseOffers, |c| {
            c.accept_inverse_offers = Some(sched::call::AcceptInverseOffers {
                inverse_offer_ids: ids,
                filters: None,
            })
        })
        .await
    }

    /// DECLINE_INVERSE_OFFERS: the framework cannot leave those agents.
    pub async fn decline_inverse_offers(&self, ids: Vec<v1::OfferId>) -> Result<(), SdkError> {
        self.call(C::DeclineInverseOffers, |c| {
            c.decline_inverse_offers = Some(sched::call::DeclineInverseOffers {
                inverse_offer_ids: ids,
                filters: None,
            })
        })
        .await
    }

    /// KILL.
    pub async fn kill(
        &self,
        task_id: &v1::TaskId,
        agent_id: Option<&v1::AgentId>,
    ) -> Result<(), SdkError> {
        self.call(C::Kill, |c| {
            c.kill = Some(sched::call::Kill {
                task_id: task_id.clone(),
                agent_id: agent_id.cloned(),
                kill_policy: None,
            })
        })
        .await
    }

    /// ACKNOWLEDGE a status update (only updates with a uuid need it).
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        let (Some(uuid), Some(agent_id)) = (status.uuid.clone(), status.agent_id.clone()) else {
            return Ok(());
        };
        self.call(C::Acknowledge, |c| {
            c.acknowledge = Some(sched::call::Acknowledge {
                agent_id,
                task_id: status.task_id.clone(),
                uuid,
            })
        })
        .await
    }

    /// RECONCILE: explicit for the given tasks, implicit when empty.
    pub async fn reconcile(
        &self,
        tasks: Vec<(v1::TaskId, Option<v1::AgentId>)>,
    ) -> Result<(), SdkError> {
        self.call(C::Reconcile, |c| {
            c.reconcile = Some(sched::call::Reconcile {
                tasks: tasks
                    .into_iter()
                    .map(|(task_id, agent_id)| sched::call::reconcile::Task { task_id, agent_id })
                    .collect(),
            })
        })
        .await
    }

    /// REVIVE (all roles when empty).
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.call(C::Revive, |c| {
            c.revive = Some(sched::call::Revive { roles })
        })
        .await
    }

    /// SUPPRESS (all roles when empty).
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.call(C::Suppress, |c| {
            c.suppress = Some(sched::call::Suppress { roles })
        })
        .await
    }

    /// SHUTDOWN an executor.
    pub async fn shutdown(
        &self,
        executor_id: &v1::ExecutorId,
        agent_id: &v1::AgentId,
    ) -> Result<(), SdkError> {
        self.call(C::Shutdown, |c| {
            c.shutdown = Some(sched::call::Shutdown {
                executor_id: executor_id.clone(),
                agent_id: agent_id.clone(),
            })
        })
        .await
    }

    /// MESSAGE to an executor.
    pub async fn message(
        &self,
        agent_id: &v1::AgentId,
        executor_id: &v1::ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), SdkError> {
        self.call(C::Message, |c| {
            c.message = Some(sched::call::Message {
                agent_id: agent_id.clone(),
                executor_id: executor_id.clone(),
                data,
            })
        })
        .await
    }

    /// TEARDOWN: the framework is removed and its tasks killed. The
    /// subscription ends.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        // Mark the end first: the master closes the stream before it answers.
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped = true;
        let result = self.call(C::Teardown, |_| {}).await;
        self.stop();
        result
    }

    /// Stops resubscribing (the framework stays registered until its
    /// failover timeout, as with pymesos' `stop(failover=True)`).
    pub fn stop(&self) {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stopped = true;
        self.stop.notify_one();
    }
}
