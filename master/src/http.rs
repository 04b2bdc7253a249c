//! The master's HTTP surface: the v1 scheduler API, the v1 operator API,
//! and the legacy GET endpoints, with Mesos' path aliasing (`/x` ≡
//! `/master/x`, trailing `/` ignored, `/api/v1/*` → `/api/v1`, `.json`
//! aliases).

use std::sync::Arc;
use std::time::Duration;

use agora_master_core::ids::{AgentId, FrameworkId, StreamId};
use agora_master_core::master::ResourceOp;
use agora_master_core::{CallError, MasterView, OperatorCall};
use agora_proto::auth::Realm;
use agora_proto::operator::{self, response};
use agora_proto::scheduler as sched;
use agora_proto::v1;
use agora_rpc::http::{self as h, Encoding, EventStream, HttpError};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use tokio::sync::mpsc;
use warp::Filter;

use crate::driver::{Command, MasterHandle, Stopped};
use crate::legacy;

/// What the HTTP handlers need besides the driver.
pub(crate) struct Context {
    /// Who may call what (realms and credentials).
    pub auth: Arc<agora_rpc::auth::HttpAuth>,
    pub handle: MasterHandle,
    pub info: v1::MasterInfo,
    pub flags: Vec<(String, String)>,
    pub heartbeat: Duration,
    pub start_time: f64,
    /// Allocation passes' latency, for `/metrics`.
    pub histograms: crate::histograms::Histograms,
    /// HTTP requests' latency, for `/metrics`.
    pub http_metrics: agora_rpc::metrics::HttpMetrics,
}

/// The warp filter for every master route.
pub(crate) fn routes(
    ctx: Arc<Context>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    h::handle(h::MAX_BODY, move |req: h::Request| {
        let ctx = ctx.clone();
        async move {
            match dispatch(
                &ctx,
                req.method,
                &req.path,
                &req.query,
                &req.headers,
                req.body,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
    })
}

/// Mesos path aliasing: `/master/x` → `/x`, no trailing `/`, `.json` dropped.
pub(crate) fn normalize(path: &str) -> String {
    let mut p = path.trim_end_matches('/').to_string();
    if let Some(rest) = p.strip_prefix("/master")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        p = rest.to_string();
    }
    for alias in [
        "/state.json",
        "/state-summary.json",
        "/tasks.json",
        "/roles.json",
        "/slaves.json",
        "/frameworks.json",
    ] {
        if p == alias {
            p.truncate(p.len() - ".json".len());
        }
    }
    if p.is_empty() { "/".into() } else { p }
}

fn stopped(_: Stopped) -> HttpError {
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down")
}

fn call_error(e: CallError) -> HttpError {
    HttpError::new(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
        e.to_string(),
    )
}

async fn dispatch(
    ctx: &Context,
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Result<Bytes, HttpError>,
) -> Result<warp::reply::Response, HttpError> {
    let path = normalize(path);
    let principal = match realm(&path) {
        Some(realm) => ctx.auth.authenticate(realm, headers)?,
        None => None,
    };
    let Some(this) = route(&path) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("No such endpoint: {path}"),
        ));
    };
    // get_endpoints: Mesos authorizes some GETs by path (here the metrics).
    if this.action == Some(agora_proto::acl::Action::GetEndpoints) {
        may_get_endpoint(ctx, principal.clone(), &path).await?;
    }
    let not_post = || {
        let mut r = h::text(StatusCode::METHOD_NOT_ALLOWED, "Expecting 'POST'");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        r
    };
    if path == "/api/v1/scheduler" {
        if method != Method::POST {
            return Ok(not_post());
        }
        return scheduler(ctx, headers, body?, principal).await;
    }
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        if method != Method::POST {
            return Ok(not_post());
        }
        return operator_api(ctx, headers, body?, principal).await;
    }
    if matches!(
        path.as_str(),
        "/maintenance/schedule" | "/maintenance/status" | "/machine/down" | "/machine/up"
    ) {
        return maintenance_endpoint(ctx, &method, &path, body?, principal).await;
    }
    if method != Method::GET && method != Method::HEAD && path != "/teardown" {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ));
    }
    legacy_endpoint(ctx, &path, query, body, principal).await
}

/// Whether `principal` may GET `path` (Mesos' get_endpoints ACL).
async fn may_get_endpoint(
    ctx: &Context,
    principal: Option<String>,
    path: &str,
) -> Result<(), HttpError> {
    let (who, p) = (principal, path.to_string());
    let allowed = ctx
        .handle
        .query(move |m| {
            m.allows(
                agora_proto::acl::Action::GetEndpoints,
                who.as_deref(),
                Some(&p),
            )
        })
        .await
        .map_err(stopped)?;
    if !allowed {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("403 Forbidden. Not authorized to get_endpoints '{path}'"),
        ));
    }
    Ok(())
}

/// Mesos' legacy maintenance endpoints, as the operator calls they stand
/// for: `GET|POST /maintenance/schedule` (a `Schedule`),
/// `GET /maintenance/status` (a `ClusterStatus`), `POST /machine/down` and
/// `POST /machine/up` (a JSON array of `MachineID`s).
async fn maintenance_endpoint(
    ctx: &Context,
    method: &Method,
    path: &str,
    body: Bytes,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        HttpError::bad_request(format!("Failed to parse {what}: {e}"))
    };
    let read = |r: Result<serde_json::Value, CallError>| {
        r.map(|v| h::body(StatusCode::OK, "application/json", v.to_string()))
            .map_err(call_error)
    };
    let write = OperatorCall::UpdateMaintenanceSchedule;
    let call = match (method.as_str(), path) {
        ("GET", "/maintenance/schedule" | "/maintenance/status") => {
            let who = principal.clone();
            let status = path == "/maintenance/status";
            let r = ctx
                .handle
                .query(move |m| {
                    let who = who.as_deref();
                    if status {
                        m.get_maintenance_status(who)
                            .map(|s| agora_proto::json::to_value(&s))
                    } else {
                        m.get_maintenance_schedule(who)
                            .map(|s| agora_proto::json::to_value(&s))
                    }
                })
                .await
                .map_err(stopped)?;
            return read(r);
        }
        ("POST", "/maintenance/schedule") => write(
            agora_proto::json::from_slice(&body)
                .map_err(|e| bad("the maintenance schedule", &e))?,
        ),
        ("POST", "/machine/down" | "/machine/up") => {
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(&body).map_err(|e| bad("the list of machines", &e))?;
            let machines = list
                .iter()
                .map(agora_proto::json::from_value::<v1::MachineId>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("a machine", &e))?;
            if path == "/machine/down" {
                OperatorCall::StartMaintenance(machines)
            } else {
                OperatorCall::StopMaintenance(machines)
            }
        }
        _ => {
            return Err(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ));
        }
    };
    ctx.handle
        .operator(call, principal)
        .await
        .map_err(stopped)?
        .map_err(call_error)?;
    Ok(h::empty(StatusCode::OK))
}

/// The GET endpoints of Mesos' master (`/state`, `/metrics/snapshot`, …),
/// the UI, and `/teardown`.
async fn legacy_endpoint(
    ctx: &Context,
    path: &str,
    query: &str,
    body: Result<Bytes, HttpError>,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    let params: Vec<(String, String)> = form_urlencoded(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let json = |v: serde_json::Value| {
        let text = v.to_string();
        match param("jsonp") {
            Some(cb)
                if cb
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                h::body(StatusCode::OK, "text/javascript", format!("{cb}({text});"))
            }
            _ => h::body(StatusCode::OK, "application/json", text),
        }
    };
    match path {
        "/health" => Ok(h::empty(StatusCode::OK)),
        "/version" => Ok(json(legacy::version())),
        "/redirect" => {
            let (host, port) = leader_address(&ctx.info);
            let mut r = h::empty(StatusCode::TEMPORARY_REDIRECT);
            if let Ok(v) = header::HeaderValue::from_str(&format!("//{host}:{port}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        "/metrics/snapshot" => {
            let metrics = ctx
                .handle
                .query(|m| m.metrics_snapshot())
                .await
                .map_err(stopped)?;
            Ok(json(legacy::metrics(&metrics, ctx.start_time)))
        }
        "/metrics" => {
            let metrics = ctx
                .handle
                .query(|m| m.metrics_snapshot())
                .await
                .map_err(stopped)?;
            let mut all =
                agora_rpc::metrics::snapshot(&legacy::with_uptime(&metrics, ctx.start_time));
            all.extend(ctx.histograms.collectors());
            all.push(ctx.http_metrics.collector());
            Ok(h::body(
                StatusCode::OK,
                agora_rpc::metrics::CONTENT_TYPE,
                agora_rpc::metrics::render(all),
            ))
        }
        "/state" | "/state-summary" | "/slaves" | "/frameworks" | "/tasks" | "/roles" => {
            let (state, roles, epoch) = visible_state(ctx, principal.clone()).await?;
            let view = legacy::View {
                info: &ctx.info,
                flags: &ctx.flags,
                start_time: ctx.start_time,
                state: &state,
                roles: &roles,
                epoch,
            };
            Ok(json(match path {
                "/state" => view.state(),
                "/state-summary" => view.state_summary(),
                "/slaves" => view.slaves(param("slave_id").as_deref()),
                "/frameworks" => view.frameworks(param("framework_id").as_deref()),
                "/tasks" => view.tasks(&legacy::TaskQuery {
                    limit: param("limit")
                        .and_then(|l| l.parse::<i64>().ok())
                        .unwrap_or(100),
                    offset: param("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
                    ascending: param("order").as_deref() == Some("asc"),
                    framework_id: param("framework_id"),
                    task_id: param("task_id"),
                }),
                _ => view.roles(),
            }))
        }
        "/flags" => Ok(json(legacy::flags(&ctx.flags))),
        "/teardown" => teardown(ctx, body?, principal).await,
        "/" | "/ui/task" => {
            let (state, roles, epoch) = visible_state(ctx, principal.clone()).await?;
            let view = legacy::View {
                info: &ctx.info,
                flags: &ctx.flags,
                start_time: ctx.start_time,
                state: &state,
                roles: &roles,
                epoch,
            };
            let html = if path == "/" {
                let who = principal.clone();
                let quota = ctx
                    .handle
                    .query(move |m| m.get_quota(who.as_deref()))
                    .await
                    .map_err(stopped)?;
                crate::ui::render(&view, &quota)
            } else {
                let (framework, id) = (param("framework"), param("id"));
                framework
                    .zip(id)
                    .and_then(|(f, t)| crate::ui::render_task(&view, &f, &t))
                    .ok_or_else(|| HttpError::new(StatusCode::NOT_FOUND, "No such task"))?
            };
            Ok(h::body(StatusCode::OK, "text/html; charset=utf-8", html))
        }
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("No such endpoint: {path}"),
        )),
    }
}

/// `POST /teardown` (form `frameworkId=…`), as Mesos' legacy endpoint.
async fn teardown(
    ctx: &Context,
    body: Bytes,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    let form = form_urlencoded(std::str::from_utf8(&body).unwrap_or(""));
    let id = form
        .iter()
        .find(|(k, _)| k == "frameworkId")
        .map(|(_, v)| v.clone());
    let Some(id) = id else {
        return Err(HttpError::bad_request(
            "Missing 'frameworkId' query parameter",
        ));
    };
    ctx.handle
        .operator(OperatorCall::Teardown(FrameworkId::new(id)), principal)
        .await
        .map_err(stopped)?
        .map_err(call_error)?;
    Ok(h::empty(StatusCode::OK))
}

/// The realm of a master endpoint, as Mesos groups them (None: never
/// authenticated).
pub(crate) fn realm(path: &str) -> Option<Realm> {
    match route(path) {
        Some(r) => r.realm,
        // Unknown paths are answered 404, after authentication.
        None => Some(Realm::MasterReadonly),
    }
}

/// One endpoint of the master: the route list the dispatcher serves (a
/// path not listed is 404) and the authentication matrix test walks.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The path (after Mesos' aliasing: `/master/x` is `/x`).
    pub path: &'static str,
    /// Its realm (None: never authenticated).
    pub realm: Option<Realm>,
    /// The ACL action a write needs (reads are filtered, not refused).
    pub action: Option<agora_proto::acl::Action>,
}

const fn r(path: &'static str, realm: Option<Realm>) -> Route {
    Route {
        path,
        realm,
        action: None,
    }
}

/// Every endpoint the master serves.
pub const ROUTES: &[Route] = &[
    r("/health", None),
    r("/version", None),
    r("/redirect", None),
    r("/api/v1/scheduler", Some(Realm::MasterScheduler)),
    Route {
        path: "/api/v1",
        realm: Some(Realm::MasterReadwrite),
        action: Some(agora_proto::acl::Action::TeardownFrameworks),
    },
    Route {
        path: "/teardown",
        realm: Some(Realm::MasterReadwrite),
        action: Some(agora_proto::acl::Action::TeardownFrameworks),
    },
    r("/state", Some(Realm::MasterReadonly)),
    r("/state-summary", Some(Realm::MasterReadonly)),
    r("/slaves", Some(Realm::MasterReadonly)),
    r("/frameworks", Some(Realm::MasterReadonly)),
    r("/tasks", Some(Realm::MasterReadonly)),
    r("/roles", Some(Realm::MasterReadonly)),
    r("/flags", Some(Realm::MasterReadonly)),
    Route {
        path: "/metrics/snapshot",
        realm: Some(Realm::MasterReadonly),
        action: Some(agora_proto::acl::Action::GetEndpoints),
    },
    Route {
        path: "/metrics",
        realm: Some(Realm::MasterReadonly),
        action: Some(agora_proto::acl::Action::GetEndpoints),
    },
    r("/", Some(Realm::MasterReadonly)),
    r("/ui/task", Some(Realm::MasterReadonly)),
    // The maintenance endpoints authorize as the operator calls they
    // stand for (GET /maintenance/schedule as GET_MAINTENANCE_SCHEDULE).
    Route {
        path: "/maintenance/schedule",
        realm: Some(Realm::MasterReadwrite),
        action: Some(agora_proto::acl::Action::UpdateMaintenanceSchedules),
    },
    Route {
        path: "/maintenance/status",
        realm: Some(Realm::MasterReadonly),
        action: Some(agora_proto::acl::Action::GetMaintenanceStatuses),
    },
    Route {
        path: "/machine/down",
        realm: Some(Realm::MasterReadwrite),
        action: Some(agora_proto::acl::Action::StartMaintenances),
    },
    Route {
        path: "/machine/up",
        realm: Some(Realm::MasterReadwrite),
        action: Some(agora_proto::acl::Action::StopMaintenances),
    },
];

/// The route of a (normalised) path.
pub fn route(path: &str) -> Option<&'static Route> {
    let path = if path.starts_with("/api/v1/") && path != "/api/v1/scheduler" {
        "/api/v1"
    } else {
        path
    };
    ROUTES.iter().find(|r| r.path == path)
}

/// The state as `principal` may see it, with the roles and the epoch.
async fn visible_state(
    ctx: &Context,
    principal: Option<String>,
) -> Result<(response::GetState, response::GetRoles, u64), HttpError> {
    ctx.handle
        .query(move |m| {
            let mut state = m.get_state();
            m.viewer(principal.as_deref()).state(&mut state);
            (state, m.get_roles(), m.epoch())
        })
        .await
        .map_err(stopped)
}

fn leader_address(info: &v1::MasterInfo) -> (String, u32) {
    let host = info
        .hostname
        .clone()
        .or_else(|| info.address.as_ref().and_then(|a| a.ip.clone()))
        .unwrap_or_default();
    (host, info.port)
}

/// Parses `a=b&c=d` with percent-decoding.
pub(crate) fn form_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- scheduler

async fn scheduler(
    ctx: &Context,
    headers: &HeaderMap,
    body: Bytes,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    let encoding = h::request_encoding(headers)?;
    let call: sched::Call = encoding
        .decode(&body)
        .map_err(|e| HttpError::bad_request(format!("Failed to parse body into Call: {e}")))?;
    let stream_header = headers
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| StreamId(s.to_string()));
    if call.r#type() != sched::call::Type::Subscribe {
        let kind = call.r#type();
        ctx.handle
            .call(call, stream_header, principal)
            .await
            .map_err(stopped)?
            .map_err(call_error)?;
        let status = if kind == sched::call::Type::UpdateFramework {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        return Ok(h::empty(status));
    }
    if stream_header.is_some() {
        return Err(HttpError::bad_request(
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        ));
    }
    let accept = h::response_encoding(headers)?;
    let stream = StreamId(uuid::Uuid::new_v4().to_string());
    let (tx, rx) = mpsc::unbounded_channel();
    ctx.handle
        .subscribe(call, stream.clone(), principal, tx)
        .await
        .map_err(stopped)?
        .map_err(call_error)?;
    let events = EventStream::new(rx, accept, ctx.heartbeat, {
        let handle = ctx.handle.clone();
        let stream = stream.clone();
        move || handle.send(Command::StreamClosed(stream))
    });
    let mut response = h::stream_response(accept, events);
    if let Ok(v) = header::HeaderValue::from_str(&stream.0) {
        response.headers_mut().insert("Mesos-Stream-Id", v);
    }
    Ok(response)
}

// ---------------------------------------------------------------- operator

async fn operator_api(
    ctx: &Context,
    headers: &HeaderMap,
    body: Bytes,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    use operator::call::Type as C;
    let encoding = h::request_encoding(headers)?;
    let accept = h::response_encoding(headers)?;
    let mut call: operator::Call = encoding
        .decode(&body)
        .map_err(|e| HttpError::bad_request(format!("Failed to parse body into Call: {e}")))?;
    if let Some(write) = operator_write(&mut call)? {
        // Mesos answers the resource operations 202 Accepted, the others 200.
        let status = if matches!(write, OperatorCall::Resources { .. }) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        ctx.handle
            .operator(write, principal)
            .await
            .map_err(stopped)?
            .map_err(call_error)?;
        return Ok(h::empty(status));
    }
    match call.r#type() {
        C::Subscribe => operator_subscribe(ctx, accept, principal).await,
        C::Unknown => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            "Received 'UNKNOWN' call",
        )),
        t => match operator_read(ctx, t, principal).await? {
            Some(r) => Ok(h::body(
                StatusCode::OK,
                accept.content_type(),
                accept.encode(&r),
            )),
            None => Err(HttpError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("{} is not implemented by Agora", t.as_str_name()),
            )),
        },
    }
}

/// The operator calls that read: their answer, or None for a call that
/// does not read.
async fn operator_read(
    ctx: &Context,
    t: operator::call::Type,
    viewer: Option<String>,
) -> Result<Option<operator::Response>, HttpError> {
    if let Some(r) = process_read(ctx, t) {
        return Ok(Some(r));
    }
    ctx.handle
        .query(move |m| core_read(m, t, viewer.as_deref()))
        .await
        .map_err(stopped)?
        .map_err(call_error)
}

/// The reads this process answers without the core: health, version,
/// flags, logging level.
fn process_read(ctx: &Context, t: operator::call::Type) -> Option<operator::Response> {
    use operator::call::Type as C;
    use operator::response::Type as R;
    Some(match t {
        C::GetHealth => operator::Response {
            r#type: Some(R::GetHealth as i32),
            get_health: Some(response::GetHealth { healthy: true }),
            ..Default::default()
        },
        C::GetVersion => operator::Response {
            r#type: Some(R::GetVersion as i32),
            get_version: Some(response::GetVersion {
                version_info: legacy::version_info(),
            }),
            ..Default::default()
        },
        C::GetFlags => operator::Response {
            r#type: Some(R::GetFlags as i32),
            get_flags: Some(response::GetFlags {
                flags: ctx
                    .flags
                    .iter()
                    .map(|(n, v)| v1::Flag {
                        name: n.clone(),
                        value: Some(v.clone()),
                    })
                    .collect(),
            }),
            ..Default::default()
        },
        C::GetLoggingLevel => operator::Response {
            r#type: Some(R::GetLoggingLevel as i32),
            get_logging_level: Some(response::GetLoggingLevel { level: 0 }),
            ..Default::default()
        },
        _ => return None,
    })
}

/// The reads the core answers, filtered for `viewer` as Mesos' ACLs say;
/// None for a call that is not one.
fn core_read(
    m: &agora_master_core::Master,
    t: operator::call::Type,
    viewer: Option<&str>,
) -> Result<Option<operator::Response>, CallError> {
    use operator::call::Type as C;
    use operator::response::Type as R;
    match t {
        C::GetMaintenanceSchedule => {
            return Ok(Some(operator::Response {
                r#type: Some(R::GetMaintenanceSchedule as i32),
                get_maintenance_schedule: Some(response::GetMaintenanceSchedule {
                    schedule: m.get_maintenance_schedule(viewer)?,
                }),
                ..Default::default()
            }));
        }
        C::GetQuota => {
            return Ok(Some(operator::Response {
                r#type: Some(R::GetQuota as i32),
                get_quota: Some(response::GetQuota {
                    status: m.get_quota(viewer),
                }),
                ..Default::default()
            }));
        }
        C::GetMaintenanceStatus => {
            return Ok(Some(operator::Response {
                r#type: Some(R::GetMaintenanceStatus as i32),
                get_maintenance_status: Some(response::GetMaintenanceStatus {
                    status: m.get_maintenance_status(viewer)?,
                }),
                ..Default::default()
            }));
        }
        _ => {}
    }
    let mut r = operator::Response {
        r#type: Some(match t {
            C::GetMetrics => R::GetMetrics,
            C::GetState => R::GetState,
            C::GetAgents => R::GetAgents,
            C::GetFrameworks => R::GetFrameworks,
            C::GetExecutors => R::GetExecutors,
            C::GetTasks => R::GetTasks,
            C::GetRoles => R::GetRoles,
            C::GetMaster => R::GetMaster,
            C::GetWeights => R::GetWeights,
            _ => return Ok(None),
        } as i32),
        ..Default::default()
    };
    let view = m.viewer(viewer);
    match t {
        C::GetMetrics => {
            let metrics = m
                .metrics_snapshot()
                .into_iter()
                .map(|(name, v)| v1::Metric {
                    name,
                    value: Some(v),
                })
                .collect();
            r.get_metrics = Some(response::GetMetrics { metrics });
        }
        C::GetState => {
            let mut s = m.get_state();
            view.state(&mut s);
            r.get_state = Some(s);
        }
        C::GetAgents => r.get_agents = Some(m.get_agents()),
        C::GetFrameworks => {
            let mut f = m.get_frameworks();
            view.frameworks(&mut f);
            r.get_frameworks = Some(f);
        }
        C::GetExecutors => {
            let mut e = m.get_executors();
            view.executors(&mut e);
            r.get_executors = Some(e);
        }
        C::GetTasks => {
            let mut t = m.get_tasks();
            view.tasks(&mut t);
            r.get_tasks = Some(t);
        }
        C::GetRoles => r.get_roles = Some(m.get_roles()),
        C::GetMaster => r.get_master = Some(m.get_master()),
        _ => {
            // Every weight set, whether or not its role is in use.
            let weight_infos = m
                .allocator()
                .weights()
                .map(|(role, weight)| v1::WeightInfo {
                    weight,
                    role: Some(role.to_string()),
                })
                .collect();
            r.get_weights = Some(response::GetWeights { weight_infos });
        }
    }
    Ok(Some(r))
}

/// The operator calls that change state, as the core takes them; None for
/// a call that does not write.
fn operator_write(call: &mut operator::Call) -> Result<Option<OperatorCall>, HttpError> {
    use operator::call::Type as C;
    match call.r#type() {
        C::Teardown => {
            let id = call
                .teardown
                .take()
                .map(|t| FrameworkId::from(&t.framework_id))
                .ok_or_else(|| HttpError::bad_request("Expecting 'teardown' to be present"))?;
            Ok(Some(OperatorCall::Teardown(id)))
        }
        C::UpdateWeights => {
            let w = call.update_weights.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'update_weights' to be present")
            })?;
            let weights = w
                .weight_infos
                .into_iter()
                .map(|i| (i.role.unwrap_or_default(), i.weight))
                .collect();
            Ok(Some(OperatorCall::UpdateWeights(weights)))
        }
        C::MarkAgentGone => {
            let a = call.mark_agent_gone.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'mark_agent_gone' to be present")
            })?;
            Ok(Some(OperatorCall::MarkAgentGone(AgentId::from(
                &a.agent_id,
            ))))
        }
        C::DeactivateAgent => {
            let a = call.deactivate_agent.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'deactivate_agent' to be present")
            })?;
            Ok(Some(OperatorCall::DeactivateAgent(AgentId::from(
                &a.agent_id,
            ))))
        }
        C::ReactivateAgent => {
            let a = call.reactivate_agent.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'reactivate_agent' to be present")
            })?;
            Ok(Some(OperatorCall::ReactivateAgent(AgentId::from(
                &a.agent_id,
            ))))
        }
        C::DrainAgent => {
            let d = call
                .drain_agent
                .take()
                .ok_or_else(|| HttpError::bad_request("Expecting 'drain_agent' to be present"))?;
            let max_grace_period = match d.max_grace_period {
                Some(g) if g.seconds < 0 || g.nanos < 0 => {
                    return Err(HttpError::bad_request(
                        "'drain_agent.max_grace_period' must not be negative",
                    ));
                }
                Some(g) => Some(
                    std::time::Duration::from_secs(g.seconds as u64)
                        + std::time::Duration::from_nanos(g.nanos as u64),
                ),
                None => None,
            };
            Ok(Some(OperatorCall::DrainAgent {
                agent: AgentId::from(&d.agent_id),
                max_grace_period,
                mark_gone: d.mark_gone.unwrap_or(false),
            }))
        }
        C::UpdateMaintenanceSchedule => {
            let u = call.update_maintenance_schedule.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'update_maintenance_schedule' to be present")
            })?;
            Ok(Some(OperatorCall::UpdateMaintenanceSchedule(u.schedule)))
        }
        C::StartMaintenance => {
            let s = call.start_maintenance.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'start_maintenance' to be present")
            })?;
            Ok(Some(OperatorCall::StartMaintenance(s.machines)))
        }
        C::StopMaintenance => {
            let s = call.stop_maintenance.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'stop_maintenance' to be present")
            })?;
            Ok(Some(OperatorCall::StopMaintenance(s.machines)))
        }
        C::UpdateQuota => {
            let u = call
                .update_quota
                .take()
                .ok_or_else(|| HttpError::bad_request("Expecting 'update_quota' to be present"))?;
            Ok(Some(OperatorCall::UpdateQuota {
                force: u.force.unwrap_or(false),
                configs: u.quota_configs,
            }))
        }
        C::ReserveResources => {
            let r = call.reserve_resources.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'reserve_resources' to be present")
            })?;
            Ok(Some(OperatorCall::Resources {
                agent: AgentId::from(&r.agent_id),
                op: ResourceOp::Reserve(r.resources),
            }))
        }
        C::UnreserveResources => {
            let r = call.unreserve_resources.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'unreserve_resources' to be present")
            })?;
            Ok(Some(OperatorCall::Resources {
                agent: AgentId::from(&r.agent_id),
                op: ResourceOp::Unreserve(r.resources),
            }))
        }
        C::CreateVolumes => {
            let r = call.create_volumes.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'create_volumes' to be present")
            })?;
            Ok(Some(OperatorCall::Resources {
                agent: AgentId::from(&r.agent_id),
                op: ResourceOp::Create(r.volumes),
            }))
        }
        C::DestroyVolumes => {
            let r = call.destroy_volumes.take().ok_or_else(|| {
                HttpError::bad_request("Expecting 'destroy_volumes' to be present")
            })?;
            Ok(Some(OperatorCall::Resources {
                agent: AgentId::from(&r.agent_id),
                op: ResourceOp::Destroy(r.volumes),
            }))
        }
        _ => Ok(None),
    }
}

async fn operator_subscribe(
    ctx: &Context,
    accept: Encoding,
    principal: Option<String>,
) -> Result<warp::reply::Response, HttpError> {
    let (tx, rx) = mpsc::unbounded_channel();
    // The driver puts SUBSCRIBED (a snapshot) and a HEARTBEAT first, then
    // every event after that snapshot.
    ctx.handle.send(Command::OperatorSubscribe {
        events: tx,
        principal,
        heartbeat: ctx.heartbeat,
    });
    Ok(h::stream_response(
        accept,
        EventStream::new(rx, accept, ctx.heartbeat, || {}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_alias_like_mesos() {
        assert_eq!(normalize("/master/api/v1/scheduler"), "/api/v1/scheduler");
        assert_eq!(normalize("/master/frameworks/"), "/frameworks");
        assert_eq!(normalize("/state.json"), "/state");
        assert_eq!(normalize("/master/state.json"), "/state");
        assert_eq!(normalize("/master"), "/");
        assert_eq!(normalize("/mastery"), "/mastery");
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_urlencoded("frameworkId=a%2Db&x=1+2"),
            vec![
                ("frameworkId".into(), "a-b".into()),
                ("x".into(), "1 2".into())
            ]
        );
    }
}
