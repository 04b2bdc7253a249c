//! `agora dns`: every running task by name, the way Mesos-DNS names it.
//!
//! ```text
//! master ──operator SUBSCRIBE (events)──▶ follow() ──GET /master/state──▶ records::build() ──▶ Zone
//!                                                                                          │
//!                          dig / resolvers ──UDP, TCP──▶ hickory-server ──▶ handler ◀──────┘
//! ```
//!
//! The record set is rebuilt from the master's state whenever the master's
//! operator event stream says something changed (a task started or ended, an
//! agent came or went), and every `refresh` as a safety net; it is swapped
//! whole, so a query sees one consistent set.

pub mod handler;
pub mod http;
pub mod records;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_proto::operator;
use agora_rpc::client::ApiClient;
use agora_rpc::http::Encoding;
use agora_zk as zk;
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use handler::{Handler, Zone};
pub use records::{Config, IpSource, Records};

/// How to run the DNS server.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The masters, `host:port[,host:port…]`, or `zk://host:2181/mesos`.
    pub master: String,
    /// Record shapes (domain, IP sources).
    pub records: Config,
    /// TTL of every record.
    pub ttl: u32,
    /// Full rebuild at least this often.
    pub refresh: Duration,
    /// Resolvers for names outside the domain, in order (none: REFUSED).
    pub resolvers: Vec<SocketAddr>,
    /// How long each resolver may take.
    pub timeout: Duration,
    /// Principal and secret for the master (HTTP Basic on its state and
    /// event stream, as Mesos-DNS' `mesosCredentials`).
    pub credential: Option<agora_proto::auth::Credential>,
    /// TLS to the master (`https://`, the cluster CA), as Mesos-DNS'
    /// `mesosHTTPSOn` with `caCertFile`, always verified.
    pub tls: Option<agora_rpc::tls::ClientTls>,
    /// How the HTTP API speaks (TLS with certificates; DNS itself stays
    /// open, as Mesos-DNS').
    pub http_transport: agora_rpc::serve::Transport,
}

impl DnsOptions {
    /// Mesos-DNS' defaults for everything but the master.
    pub fn new(master: impl Into<String>) -> Self {
        DnsOptions {
            master: master.into(),
            records: Config::default(),
            ttl: 60,
            refresh: Duration::from_secs(60),
            resolvers: Vec::new(),
            timeout: Duration::from_secs(5),
            credential: None,
            tls: None,
            http_transport: agora_rpc::serve::Transport::plain(),
        }
    }

    /// `Authorization` for requests to the master.
    fn authorization(&self) -> Option<String> {
        self.credential.as_ref().map(|c| c.basic_header())
    }

    /// An HTTP client for the master, sending the credential.
    fn http(&self) -> reqwest::ClientBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = self
            .authorization()
            .and_then(|a| reqwest::header::HeaderValue::from_str(&a).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let builder = match self.tls.as_ref().map(agora_rpc::tls::ClientTls::reqwest) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                warn!(error = %e, "unusable TLS settings");
                reqwest::Client::builder().https_only(true)
            }
            None => reqwest::Client::builder(),
        };
        builder.default_headers(headers)
    }
}

/// A running DNS server.
pub struct RunningDns {
    /// The UDP and TCP address.
    pub addr: SocketAddr,
    /// The HTTP API's address, when it runs.
    pub http_addr: Option<SocketAddr>,
    /// The zone being served.
    pub zone: Arc<RwLock<Arc<Zone>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningDns {
    /// Stops serving.
    pub async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Serves DNS on `udp` and `tcp` (bound to the same address by the caller),
/// and the HTTP API on `http` when given.
pub async fn start(
    mut options: DnsOptions,
    udp: UdpSocket,
    tcp: TcpListener,
    http: Option<TcpListener>,
) -> std::io::Result<RunningDns> {
    let addr = udp.local_addr()?;
    if zk::is_zk(&options.master) {
        options
            .master
            .parse::<zk::ZkUrl>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    }
    if options.records.ns_addresses.is_empty() && !addr.ip().is_unspecified() {
        options.records.ns_addresses.push(addr.ip());
    }
    let zone = Arc::new(RwLock::new(Arc::new(Zone {
        records: records::build(&serde_json::Value::Null, &options.records),
        serial: 0,
    })));
    let metrics = handler::DnsMetrics::default();
    let handler = Handler {
        zone: zone.clone(),
        ttl: options.ttl,
        resolvers: options.resolvers.clone(),
        timeout: options.timeout,
        metrics: metrics.clone(),
    };
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    let serve = tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            warn!(error = %e, "the DNS server stopped");
        }
    });
    let follow = tokio::spawn(follow(options.clone(), zone.clone()));
    let mut tasks = vec![serve, follow];
    let mut http_addr = None;
    if let Some(listener) = http {
        http_addr = Some(listener.local_addr()?);
        let http_metrics = agora_rpc::metrics::HttpMetrics::new("dns");
        let ctx = Arc::new(http::Context {
            zone: zone.clone(),
            options: options.clone(),
            dns_port: addr.port(),
            metrics: metrics.clone(),
            http_metrics: http_metrics.clone(),
        });
        let routes = agora_rpc::http::handle(64 * 1024, move |req| http::route(ctx.clone(), req));
        tasks.push(tokio::spawn(agora_rpc::http::serve_with(
            listener,
            options.http_transport.clone().with_metrics(http_metrics),
            routes,
            std::future::pending(),
        )));
    }
    info!(%addr, ?http_addr, domain = %options.records.domain, master = %options.master, "agora dns serving");
    Ok(RunningDns {
        addr,
        http_addr,
        zone,
        tasks,
    })
}

fn base(master: &str, tls: bool) -> String {
    agora_rpc::tls::base_url(master, tls)
}

/// The masters `--master` lists (comma separated), as base URLs, in order.
pub fn masters(list: &str, tls: bool) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| base(m, tls))
        .collect()
}

/// The leading master, as Mesos-DNS finds it without ZooKeeper: the first
/// listed master that answers names the leader (`leader`, `master@ip:port`,
/// in its `/master/state`; a standby in HA answers with a 307 to it); a
/// leader elsewhere is used once it answers too.
async fn find_leader(options: &DnsOptions, masters: &[String]) -> Option<String> {
    let http = options
        .http()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    // The state of a master, or where it redirects to.
    let state = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.ok()?;
            if r.status().is_redirection() {
                let location = r.headers().get("location")?.to_str().ok()?;
                let host = location
                    .trim_start_matches("http://")
                    .trim_start_matches("//")
                    .split('/')
                    .next()?;
                return Some(Err(base(host, options.tls.is_some())));
            }
            r.json::<serde_json::Value>().await.ok().map(Ok)
        }
    };
    for m in masters {
        let other = match state(format!("{m}/master/state")).await {
            None => continue,
            Some(Err(leader)) => leader,
            Some(Ok(s)) => {
                let leader = s["leader"].as_str().unwrap_or("");
                if leader.is_empty() || leader == s["pid"].as_str().unwrap_or("") {
                    return Some(m.clone());
                }
                match leader.split_once('@') {
                    Some((_, addr)) => base(addr, options.tls.is_some()),
                    None => continue,
                }
            }
        };
        if let Some(Ok(_)) = state(format!("{other}/master/state")).await {
            return Some(other);
        }
    }
    None
}

/// Rebuilds the zone from `master`'s `/master/state`; keeps the old one on
/// error.
async fn rebuild(
    http: &reqwest::Client,
    master: &str,
    options: &DnsOptions,
    zone: &RwLock<Arc<Zone>>,
) -> Result<(), String> {
    let url = format!("{master}/master/state");
    let state: serde_json::Value = http
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let records = records::build(&state, &options.records);
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let next = Arc::new(Zone { records, serial });
    match zone.write() {
        Ok(mut z) => *z = next,
        Err(e) => *e.into_inner() = next,
    }
    Ok(())
}

/// Follows the leading master: a rebuild after every burst of operator
/// events, and every `refresh`; when the stream ends, finds the leader
/// again (another listed master when this one is gone) and resubscribes.
async fn follow(options: DnsOptions, zone: Arc<RwLock<Arc<Zone>>>) {
    let http = options.http().build().unwrap_or_default();
    let masters = masters(&options.master, options.tls.is_some());
    // `zk://…`: the leader ZooKeeper names (Mesos' election records).
    let mut detector = options
        .master
        .parse::<zk::ZkUrl>()
        .ok()
        .filter(|_| zk::is_zk(&options.master))
        .map(zk::detect);
    let subscribe = operator::Call {
        r#type: Some(operator::call::Type::Subscribe as i32),
        ..Default::default()
    };
    loop {
        let leader = match detector.as_mut() {
            Some(rx) => zk::current_leader(rx, Duration::from_secs(30))
                .await
                .map(|l| base(&l.address, options.tls.is_some())),
            None => find_leader(&options, &masters).await,
        };
        let Some(leader) = leader else {
            warn!(masters = %options.master, "no leading master; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let api = ApiClient::with_tls(
            format!("{leader}/api/v1"),
            Encoding::Protobuf,
            options.tls.as_ref(),
        )
        .with_authorization(options.authorization());
        let stream = api
            .subscribe::<operator::Call, operator::Event>(&subscribe)
            .await;
        let mut stream = match stream {
            Ok((_, s)) => s,
            Err(e) => {
                warn!(error = %e, %leader, "cannot subscribe to the master's events; retrying");
                if let Err(e) = rebuild(&http, &leader, &options, &zone).await {
                    debug!(error = %e, "rebuild failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        info!(%leader, "following the leading master");
        if let Err(e) = rebuild(&http, &leader, &options, &zone).await {
            warn!(error = %e, "cannot read the master's state");
        }
        let mut refresh = tokio::time::interval(options.refresh);
        refresh.tick().await;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(e)) => {
                        use operator::event::Type as T;
                        if matches!(e.r#type(), T::Heartbeat | T::Subscribed) {
                            continue;
                        }
                        // Let a burst (a deployment) settle into one rebuild.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Err(e) = rebuild(&http, &leader, &options, &zone).await {
                            warn!(error = %e, "cannot read the master's state");
                        }
                    }
                    Some(Err(e)) => { warn!(error = %e, "the master's event stream failed"); break; }
                    None => { warn!("the master closed the event stream"); break; }
                },
                _ = refresh.tick() => {
                    if let Err(e) = rebuild(&http, &leader, &options, &zone).await {
                        warn!(error = %e, "cannot read the master's state");
                    }
                }
                () = leader_moved(detector.as_mut(), &leader, options.tls.is_some()) => {
                    info!(%leader, "ZooKeeper names another leader");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resolves once ZooKeeper names a leader other than `current` (never
/// without ZooKeeper).
async fn leader_moved(
    detector: Option<&mut watch::Receiver<Option<zk::Leader>>>,
    current: &str,
    tls: bool,
) {
    let Some(rx) = detector else {
        return std::future::pending().await;
    };
    let moved = rx
        .wait_for(|l| l.as_ref().is_some_and(|l| base(&l.address, tls) != current))
        .await
        .is_ok();
    if !moved {
        std::future::pending::<()>().await;
    }
}

/// A UDP socket with a receive buffer for bursts (4 MiB, or what the
/// kernel allows): a full buffer drops queries.
fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Binds UDP and TCP on `addr` (port 0: one free port for both).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((udp_socket(addr)?, TcpListener::bind(addr).await?));
    }
    let mut last = None;
    for _ in 0..20 {
        let udp = udp_socket(addr)?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}
