//! The REST v2 surface on warp: routing (with Marathon's tolerance for `//`
//! and `{id:.+}` suffix routes), query flags, headers, and the translation
//! of the core's [`Reply`]s into responses.

use std::sync::Arc;

use agora_marathon_core::marathon::{Reply, TaskKill};
use agora_rpc::http as h;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use warp::Filter;

use crate::driver::{Handle, Stopped};
use crate::events;
use crate::ui;
use agora_marathon_core::marathon::Marathon;
use agora_marathon_core::time::Millis;

/// A request of each route marathon-rs serves (method, path): what the
/// authentication tests walk. Every request is authenticated before it is
/// routed, so no route can skip it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/ping"),
    ("GET", "/metrics"),
    ("GET", "/metrics/prometheus"),
    ("GET", "/v2/info"),
    ("GET", "/v2/leader"),
    ("DELETE", "/v2/leader"),
    ("GET", "/v2/apps"),
    ("POST", "/v2/apps"),
    ("GET", "/v2/apps/x"),
    ("PUT", "/v2/apps/x"),
    ("DELETE", "/v2/apps/x"),
    ("POST", "/v2/apps/x/restart"),
    ("GET", "/v2/apps/x/tasks"),
    ("GET", "/v2/apps/x/versions"),
    ("GET", "/v2/tasks"),
    ("POST", "/v2/tasks/delete"),
    ("GET", "/v2/deployments"),
    ("DELETE", "/v2/deployments/d"),
    ("GET", "/v2/queue"),
    ("DELETE", "/v2/queue/x/delay"),
    ("GET", "/v2/groups"),
    ("GET", "/v2/events"),
];

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the handlers need.
pub struct Context {
    /// Run with --insecure (the status page says so).
    pub insecure: bool,
    /// Who may call (checked before anything else).
    pub auth: Arc<crate::auth::HttpAuth>,
    /// The state machine's driver.
    pub marathon: Handle,
    /// When this marathon-rs started (for `/metrics`).
    pub started: std::time::Instant,
    /// HTTP requests' latency, for `/metrics`.
    pub http_metrics: agora_rpc::metrics::HttpMetrics,
    /// Heartbeat interval of `/v2/events`.
    pub event_heartbeat: std::time::Duration,
    /// Told on `DELETE /v2/leader` (None outside a leader election).
    pub abdicate: Option<Arc<tokio::sync::Notify>>,
}

/// The warp filter for every route.
pub fn routes(
    ctx: Arc<Context>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    h::handle(MAX_BODY, move |req: h::Request| {
        let ctx = ctx.clone();
        async move {
            if let Some(refused) = ctx.auth.refusal(&req.headers) {
                return refused;
            }
            let body = match req.body {
                Ok(b) => b,
                Err(e) => return json_response(&Reply::error(e.status.as_u16(), e.message)),
            };
            let query = Query::parse(&req.query);
            dispatch(&ctx, &req.method, &req.path, query, &req.headers, body).await
        }
    })
}

/// Query parameters (repeatable).
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=2&a=3`.
    pub fn parse(raw: &str) -> Query {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (and `name[]`), commas split.
    pub fn all(&self, name: &str) -> Vec<String> {
        let bracket = format!("{name}[]");
        self.0
            .iter()
            .filter(|(k, _)| k == name || *k == bracket)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A boolean the way Java reads it: `true` in any case is true, any other
    /// value false, absent `default`.
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.get(name)
            .map_or(default, |v| v.trim().eq_ignore_ascii_case("true"))
    }
}

/// `//a///b/` → `/a/b`, percent-decoded.
pub fn normalize(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let parts: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn no_cache(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
}

/// A [`Reply`] as an HTTP response.
pub fn json_response(reply: &Reply) -> warp::reply::Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = match &reply.body {
        Some(body) => h::body(status, "application/json", Bytes::from(body.to_string())),
        None => h::empty(status),
    };
    let headers = r.headers_mut();
    no_cache(headers);
    if let Some(d) = reply
        .deployment
        .as_deref()
        .and_then(|d| HeaderValue::from_str(d).ok())
    {
        headers.insert("Marathon-Deployment-Id", d);
    }
    if let Some(l) = reply
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        headers.insert(header::LOCATION, l);
    }
    r
}

fn not_found() -> Reply {
    Reply::error(404, "URI not found")
}

fn method_not_allowed(method: &Method) -> Reply {
    Reply::error(405, format!("Method {method} is not allowed here"))
}

fn kill_flags(q: &Query) -> TaskKill {
    TaskKill {
        scale: q.flag("scale", false),
        wipe: q.flag("wipe", false),
        force: q.flag("force", false),
    }
}

/// 503 while the driver is gone (marathon-rs is stopping).
fn stopping() -> Reply {
    Reply::error(503, "marathon-rs is shutting down")
}

async fn read(s: &Handle, f: impl FnOnce(&Marathon, Millis) -> Reply + Send + 'static) -> Reply {
    s.read(f).await.unwrap_or_else(|Stopped| stopping())
}

async fn write(
    s: &Handle,
    f: impl FnOnce(&mut Marathon, Millis) -> Reply + Send + 'static,
) -> Reply {
    s.write(f).await.unwrap_or_else(|Stopped| stopping())
}

/// 415 for a body that is not JSON, as Marathon's resources consume only
/// `application/json` (a request without a `Content-Type` is read as JSON).
fn unsupported_media_type(method: &Method, headers: &HeaderMap, body: &[u8]) -> Option<Reply> {
    if body.is_empty() || !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    let ct = headers.get(header::CONTENT_TYPE)?;
    let essence = ct
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return None;
    }
    Some(Reply::error(
        415,
        format!(
            "Unsupported Media Type '{}': send application/json",
            String::from_utf8_lossy(ct.as_bytes())
        ),
    ))
}

async fn dispatch(
    ctx: &Context,
    method: &Method,
    raw_path: &str,
    q: Query,
    headers: &HeaderMap,
    body: Bytes,
) -> warp::reply::Response {
    let path = normalize(raw_path);
    let s = &ctx.marathon;
    match path.as_str() {
        "/" | "/ui" => return ui::page(s, ctx.insecure).await,
        p if p.starts_with("/ui/app/") && *method == Method::GET => {
            return ui::app_page(s, &p["/ui/app".len()..]).await;
        }
        "/ping" => return ping(headers),
        "/metrics/prometheus" => return prometheus(ctx).await,
        "/metrics" if wants_prometheus(headers) => return prometheus(ctx).await,
        "/v2/events" if *method == Method::GET => return events::stream(ctx, &q, headers),
        _ => {}
    }
    if let Some(refused) = unsupported_media_type(method, headers, &body) {
        return json_response(&refused);
    }
    let reply = match path.as_str() {
        "/metrics" => {
            let started = ctx.started;
            read(s, move |m, _| Reply::ok(metrics(m, started))).await
        }
        "/v2/info" => read(s, |m, _| m.info()).await,
        "/v2/leader" => match *method {
            Method::GET => read(s, |m, _| Reply::ok(json!({"leader": m.config().leader}))).await,
            Method::DELETE => match &ctx.abdicate {
                Some(abdicate) => {
                    abdicate.notify_one();
                    Reply::ok(json!({"message": "Leadership abdicated"}))
                }
                None => Reply::error(
                    400,
                    "This marathon-rs is not part of a leader election (run it with --zk for HA)",
                ),
            },
            _ => method_not_allowed(method),
        },
        "/v2/apps" => apps(s, method, &q, body).await,
        "/v2/tasks" if *method == Method::GET => {
            let statuses = q.all("status");
            read(s, move |m, _| m.list_tasks(&statuses)).await
        }
        "/v2/tasks/delete" if *method == Method::POST => {
            let flags = kill_flags(&q);
            write(s, move |m, now| m.delete_tasks(now, &body, flags)).await
        }
        "/v2/deployments" if *method == Method::GET => read(s, |m, _| m.list_deployments()).await,
        "/v2/queue" if *method == Method::GET => {
            let embed = q.all("embed");
            read(s, move |m, now| m.queue(now, &embed)).await
        }
        "/v2/groups" => groups(s, method, "/", &q, body).await,
        p => {
            if let Some(id) = p.strip_prefix("/v2/apps/") {
                app(s, method, id, &q, body).await
            } else if let Some(id) = p.strip_prefix("/v2/groups/") {
                groups(s, method, id, &q, body).await
            } else if let Some(id) = p.strip_prefix("/v2/deployments/") {
                match *method {
                    Method::DELETE => {
                        let (id, force) = (id.to_string(), q.flag("force", false));
                        write(s, move |m, now| m.delete_deployment(now, &id, force)).await
                    }
                    _ => method_not_allowed(method),
                }
            } else if let Some(id) = p
                .strip_prefix("/v2/queue/")
                .and_then(|r| r.strip_suffix("/delay"))
            {
                match *method {
                    Method::DELETE => {
                        let id = id.to_string();
                        write(s, move |m, now| m.reset_delay(now, &id)).await
                    }
                    _ => method_not_allowed(method),
                }
            } else {
                not_found()
            }
        }
    };
    json_response(&reply)
}

async fn apps(s: &Handle, method: &Method, q: &Query, body: Bytes) -> Reply {
    let force = q.flag("force", false);
    match *method {
        Method::GET => {
            let embed = q.all("embed");
            let owned = |name: &str| q.get(name).map(str::to_string);
            let (cmd, id, label) = (owned("cmd"), owned("id"), owned("label"));
            read(s, move |m, _| {
                m.list_apps(cmd.as_deref(), id.as_deref(), label.as_deref(), &embed)
            })
            .await
        }
        Method::POST => write(s, move |m, now| m.create_app(now, &body, force)).await,
        Method::PUT => {
            let partial = q.flag("partialUpdate", true);
            write(s, move |m, now| m.put_apps(now, &body, force, partial)).await
        }
        Method::PATCH => write(s, move |m, now| m.put_apps(now, &body, force, true)).await,
        _ => method_not_allowed(method),
    }
}

async fn app(s: &Handle, method: &Method, rest: &str, q: &Query, body: Bytes) -> Reply {
    let force = q.flag("force", false);
    if let Some(id) = rest.strip_suffix("/restart")
        && *method == Method::POST
    {
        let id = id.to_string();
        return write(s, move |m, now| m.restart_app(now, &id, force)).await;
    }
    if let Some((id, task)) = rest.rsplit_once("/tasks/") {
        return match *method {
            Method::DELETE => {
                let (id, task, flags) = (id.to_string(), task.to_string(), kill_flags(q));
                write(s, move |m, now| m.delete_app_task(now, &id, &task, flags)).await
            }
            _ => method_not_allowed(method),
        };
    }
    if let Some(id) = rest.strip_suffix("/tasks") {
        let id = id.to_string();
        return match *method {
            Method::GET => read(s, move |m, _| m.app_tasks(&id)).await,
            Method::DELETE => {
                let (host, flags) = (q.get("host").map(str::to_string), kill_flags(q));
                write(s, move |m, now| {
                    m.delete_app_tasks(now, &id, host.as_deref(), flags)
                })
                .await
            }
            _ => method_not_allowed(method),
        };
    }
    if let Some((id, version)) = rest.rsplit_once("/versions/") {
        let (id, version) = (id.to_string(), version.to_string());
        return match *method {
            Method::GET => read(s, move |m, _| m.app_version(&id, &version)).await,
            _ => method_not_allowed(method),
        };
    }
    if let Some(id) = rest.strip_suffix("/versions") {
        let id = id.to_string();
        return match *method {
            Method::GET => read(s, move |m, _| m.app_versions(&id)).await,
            _ => method_not_allowed(method),
        };
    }
    let id = rest.to_string();
    match *method {
        Method::GET => {
            let embed = q.all("embed");
            read(s, move |m, _| m.get_app(&id, &embed)).await
        }
        Method::PUT => {
            let partial = q.flag("partialUpdate", true);
            write(s, move |m, now| {
                m.put_app(now, &id, &body, force, partial, true)
            })
            .await
        }
        Method::PATCH => {
            write(s, move |m, now| {
                m.put_app(now, &id, &body, force, true, false)
            })
            .await
        }
        // DELETE defaults to force since Marathon 1.6.
        Method::DELETE => {
            let force = q.flag("force", true);
            write(s, move |m, now| m.delete_app(now, &id, force)).await
        }
        _ => method_not_allowed(method),
    }
}

async fn groups(s: &Handle, method: &Method, id: &str, q: &Query, body: Bytes) -> Reply {
    let force = q.flag("force", false);
    let id = id.to_string();
    match *method {
        Method::GET => {
            let embed = q.all("embed");
            read(s, move |m, _| m.get_group(&id, &embed)).await
        }
        Method::POST => {
            let id = (id != "/").then_some(id);
            write(s, move |m, now| {
                m.create_group(now, id.as_deref(), &body, force)
            })
            .await
        }
        Method::PUT => write(s, move |m, now| m.update_group(now, &id, &body, force)).await,
        Method::PATCH if id != "/" => write(s, move |m, _| m.patch_group(&id, &body)).await,
        Method::DELETE => write(s, move |m, now| m.delete_group(now, &id, force)).await,
        _ => method_not_allowed(method),
    }
}

fn ping(headers: &HeaderMap) -> warp::reply::Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let json_only = accept.contains("application/json")
        && !accept.contains("text/plain")
        && !accept.contains("*/*");
    let mut r = if json_only {
        h::body(StatusCode::OK, "application/json", "\"pong\"")
    } else {
        h::body(StatusCode::OK, "text/plain; charset=utf-8", "pong")
    };
    no_cache(r.headers_mut());
    r
}

/// marathon-rs' gauges now: (Marathon's Dropwizard name, Prometheus
/// name, help, value).
fn gauges(
    m: &agora_marathon_core::marathon::Marathon,
    started: std::time::Instant,
) -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let st = m.state();
    let running = st.instances.values().filter(|i| i.is_running()).count();
    let staged = st.instances.len() - running;
    let uptime = started.elapsed();
    let removed = if st.framework_removed.is_some() {
        1.0
    } else {
        0.0
    };
    vec![
        (
            "service.mesosphere.marathon.app.count",
            "agora_marathon_apps",
            "Apps defined.",
            st.apps.len() as f64,
        ),
        (
            "service.mesosphere.marathon.group.count",
            "agora_marathon_groups",
            "Groups defined.",
            st.groups.len() as f64,
        ),
        (
            "service.mesosphere.marathon.task.running.count",
            "agora_marathon_instances_running",
            "Instances running.",
            running as f64,
        ),
        (
            "service.mesosphere.marathon.task.staged.count",
            "agora_marathon_instances_staged",
            "Instances launched and not yet running.",
            staged as f64,
        ),
        (
            "service.mesosphere.marathon.deployments.active",
            "agora_marathon_deployments_active",
            "Deployments in progress.",
            st.deployments.len() as f64,
        ),
        (
            "service.mesosphere.marathon.uptime",
            "agora_marathon_uptime_seconds",
            "Time since this marathon-rs started.",
            uptime.as_secs_f64(),
        ),
        (
            "agora.marathon.framework.removed",
            "agora_marathon_framework_removed",
            "1 when the master removed the framework (an operator's TEARDOWN).",
            removed,
        ),
    ]
}

/// A Dropwizard-style snapshot (Marathon ≤ 1.6); uptime in milliseconds
/// there.
fn metrics(m: &agora_marathon_core::marathon::Marathon, started: std::time::Instant) -> Value {
    let gauges: serde_json::Map<String, Value> = gauges(m, started)
        .into_iter()
        .map(|(name, _, _, v)| {
            let v = if name.ends_with(".uptime") {
                (v * 1000.0).floor()
            } else {
                v
            };
            (name.to_string(), json!({"value": v}))
        })
        .collect();
    json!({
        "version": "4.0.0",
        "gauges": gauges,
        "counters": {},
        "histograms": {},
        "meters": {},
        "timers": {},
    })
}

/// Whether a `/metrics` request asks for the Prometheus text format (as
/// Prometheus' scraper does in its `Accept`), not Marathon's JSON.
fn wants_prometheus(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/plain;version=0.0.4") || v.contains("openmetrics-text"))
}

/// `/metrics/prometheus` (Marathon 1.9's path), and `/metrics` for
/// Prometheus: the gauges and the HTTP latencies.
async fn prometheus(ctx: &Context) -> warp::reply::Response {
    let started = ctx.started;
    let Ok(gauges) = ctx.marathon.read(move |m, _| gauges(m, started)).await else {
        return json_response(&stopping());
    };
    let mut all: Vec<_> = gauges
        .into_iter()
        .map(|(_, name, help, v)| agora_rpc::metrics::gauge(name, help, v))
        .collect();
    all.push(ctx.http_metrics.collector());
    h::body(
        StatusCode::OK,
        agora_rpc::metrics::CONTENT_TYPE,
        agora_rpc::metrics::render(all),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_flags_are_read_the_way_marathon_reads_them() {
        assert_eq!(normalize("/v2/apps//test-app"), "/v2/apps/test-app");
        assert_eq!(normalize("/v2/apps//g/a/tasks/"), "/v2/apps/g/a/tasks");
        assert_eq!(normalize("/v2/apps/%2Fa"), "/v2/apps/a");
        let q = Query::parse(
            "force=True&scale=false&wipe=yes&embed=app.tasks&embed=app.counts&status[]=running",
        );
        assert!(q.flag("force", false));
        assert!(!q.flag("scale", true));
        assert!(!q.flag("wipe", true), "only 'true' is true");
        assert!(q.flag("missing", true));
        assert_eq!(q.all("embed"), ["app.tasks", "app.counts"]);
        assert_eq!(q.all("status"), ["running"]);
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// §7.6.1), and `host` and `content-length`, which the next hop sets.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Marks a request a standby forwarded, so that one can never come back.
const VIA: &str = "x-marathon-via";

/// A standby's own answers: `/ping` and `/v2/leader`; 503 while there is
/// no leader (or for a request another standby already forwarded); None:
/// forward it to the leader.
fn standby_reply(
    leader: Option<&str>,
    headers: &HeaderMap,
    path: &str,
) -> Option<warp::reply::Response> {
    Some(match (normalize(path).as_str(), leader) {
        ("/ping", _) => ping(headers),
        ("/v2/leader", Some(l)) => json_response(&Reply::ok(json!({ "leader": l }))),
        ("/v2/leader", None) => json_response(&Reply::error(404, "There is no leader")),
        (_, None) => json_response(&Reply::error(503, "Could not determine the current leader")),
        _ if headers.contains_key(VIA) => json_response(&Reply::error(
            503,
            "The request was forwarded already: the leader is changing",
        )),
        _ => return None,
    })
}

/// Forwards `req` to the leader at `leader` and streams its answer back
/// (as Marathon's standbys proxy to the leader; `/v2/events` included).
async fn forward(
    client: &reqwest::Client,
    leader: &str,
    me: &str,
    req: h::Request,
) -> warp::reply::Response {
    use futures::StreamExt as _;
    let query = if req.query.is_empty() {
        String::new()
    } else {
        format!("?{}", req.query)
    };
    let url = format!("{leader}{}{query}", req.path);
    let body = match req.body {
        Ok(b) => b,
        Err(e) => return json_response(&Reply::error(e.status.as_u16(), e.message)),
    };
    let mut headers = end_to_end(&req.headers);
    if let Ok(v) = HeaderValue::from_str(me) {
        headers.insert(VIA, v);
    }
    let sent = client
        .request(req.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return json_response(&Reply::error(
                502,
                format!("cannot reach the leader at {leader}: {e}"),
            ));
        }
    };
    let status = resp.status();
    let back = end_to_end(resp.headers());
    // The body as it comes, until it ends or fails.
    let stream = resp
        .bytes_stream()
        .scan((), |_, chunk| futures::future::ready(chunk.ok()))
        .map(Ok::<Bytes, std::convert::Infallible>);
    let mut r = warp::Reply::into_response(warp::reply::stream(stream));
    *r.status_mut() = status;
    r.headers_mut().extend(back);
    r
}

/// `headers` without the hop-by-hop ones.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(n, _)| !hop_by_hop(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The server of a marathon-rs that is not the leader.
pub struct Standby {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Standby {
    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// Serves a standby on `listener`: its own answers, and everything else
/// forwarded to the leader `leader` names. `me` is this instance's
/// `host:port`.
pub fn standby(
    listener: tokio::net::TcpListener,
    me: String,
    leader: tokio::sync::watch::Receiver<Option<agora_zk::Leader>>,
    auth: Arc<crate::auth::HttpAuth>,
    transport: agora_rpc::serve::Transport,
    client_tls: Option<agora_rpc::tls::ClientTls>,
) -> Standby {
    // The leader speaks as this standby does (TLS with the cluster CA).
    let tls = transport.tls.is_some();
    let builder = match client_tls.as_ref().map(agora_rpc::tls::ClientTls::reqwest) {
        Some(Ok(b)) => b,
        _ => reqwest::Client::builder(),
    };
    let client = builder
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let routes = h::handle(MAX_BODY, move |req: h::Request| {
        let leader = leader.borrow().as_ref().map(|l| l.address.clone());
        let (client, me) = (client.clone(), me.clone());
        let refused = auth.refusal(&req.headers);
        async move {
            if let Some(r) = refused {
                return r;
            }
            match standby_reply(leader.as_deref(), &req.headers, &req.path) {
                Some(r) => r,
                None => {
                    let leader =
                        agora_rpc::tls::base_url(leader.as_deref().unwrap_or_default(), tls);
                    forward(&client, &leader, &me, req).await
                }
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(h::serve_with(listener, transport, routes, async {
        let _ = stopped.await;
    }));
    Standby { stop, server }
}

#[cfg(test)]
mod standby_tests {
    use super::*;

    #[test]
    fn a_standby_answers_for_itself_or_forwards() {
        let h = HeaderMap::new();
        assert!(standby_reply(Some("10.0.0.3:8080"), &h, "/v2/apps/web").is_none());
        let leader = standby_reply(Some("10.0.0.3:8080"), &h, "/v2/leader").unwrap();
        assert_eq!(leader.status(), StatusCode::OK);
        let none = |p: &str| standby_reply(None, &h, p).unwrap().status();
        assert_eq!(none("/v2/apps"), 503);
        assert_eq!(none("/v2/leader"), 404);
        assert_eq!(none("/ping"), 200);
        // A request another standby forwarded is not forwarded again.
        let mut via = HeaderMap::new();
        via.insert(VIA, HeaderValue::from_static("10.0.0.4:8080"));
        let again = standby_reply(Some("10.0.0.5:8080"), &via, "/v2/apps").unwrap();
        assert_eq!(again.status(), 503);
        assert!(hop_by_hop(&header::CONNECTION) && !hop_by_hop(&header::ACCEPT));
    }
}
