//! The agent's HTTP surface: the v1 executor API (`/api/v1/executor`, also
//! `/slave(1)/api/v1/executor`), `/state`, `/health`, `/version`, and the
//! files API over sandboxes (`/files/read`, `/files/download`,
//! `/files/browse`; see [`crate::files`]), restricted to the work dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto::executor;
use agora_rpc::http::{self as h, EventStream, HttpError};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use warp::Filter;

use crate::actor::{Actor, Command, Settings};
use crate::{files, peer};
use agora_proto::acl::Action;
use agora_proto::auth::Realm;

/// Executors get a heartbeat this often (Mesos: 30 minutes).
const EXECUTOR_HEARTBEAT: Duration = Duration::from_secs(30 * 60);

pub(crate) struct Context {
    /// Which realms require credentials.
    pub auth: Arc<agora_rpc::auth::HttpAuth>,
    pub actor: mpsc::UnboundedSender<Command>,
    pub settings: Arc<Settings>,
    pub generation: AtomicU64,
    /// When the agent started (`slave/uptime_secs`).
    pub started: std::time::Instant,
    /// HTTP requests' latency, for `/metrics`.
    pub http_metrics: agora_rpc::metrics::HttpMetrics,
}

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
                req.conn,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
    })
}

fn normalize(path: &str) -> String {
    let mut p = path.trim_end_matches('/').to_string();
    for prefix in ["/slave(1)", "/slave%281%29", "/agent"] {
        if let Some(rest) = p.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            p = rest.to_string();
        }
    }
    if p == "/state.json" {
        p = "/state".into();
    }
    if p.is_empty() { "/".into() } else { p }
}

async fn query<R: Send + 'static>(
    ctx: &Context,
    f: impl FnOnce(&Actor) -> R + Send + 'static,
) -> Result<R, HttpError> {
    let (tx, rx) = oneshot::channel();
    ctx.actor
        .send(Command::Query(Box::new(move |a| {
            let _ = tx.send(f(a));
        })))
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn unavailable() -> HttpError {
    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Agent is shutting down")
}

async fn dispatch(
    ctx: &Context,
    method: Method,
    path: &str,
    query_string: &str,
    headers: &HeaderMap,
    body: Result<Bytes, HttpError>,
    conn: Option<h::Conn>,
) -> Result<warp::reply::Response, HttpError> {
    let path = normalize(path);
    // With TLS, plain text is taken only from executors (which may not
    // speak TLS, as pymesos'; their calls are authenticated anyway).
    let plain = !conn.as_ref().is_some_and(|c| c.tls);
    if ctx.settings.core.tls_ca.is_some()
        && plain
        && !matches!(path.as_str(), "/api/v1/executor" | "/health")
    {
        return Err(HttpError::bad_request(
            "This port speaks TLS: use https:// (and the cluster CA)",
        ));
    }
    let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("No such endpoint: {path}"),
        ));
    };
    let principal = match route.realm {
        Some(Realm::AgentReadonly) => ctx.auth.authenticate(Realm::AgentReadonly, headers)?,
        _ => None,
    };
    if path == "/api/v1/executor" {
        if method != Method::POST {
            return Err(HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Expecting 'POST'",
            ));
        }
        return executor_api(ctx, headers, body?, conn).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ));
    }
    let params = parse_query(query_string);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let json_reply =
        |v: serde_json::Value| h::body(StatusCode::OK, "application/json", v.to_string());
    match path.as_str() {
        "/health" => Ok(h::empty(StatusCode::OK)),
        "/version" => Ok(json_reply(
            json!({"version": agora_proto::MESOS_VERSION, "build_user": format!("agora {}", agora_proto::AGORA_VERSION)}),
        )),
        "/state" => Ok(json_reply(query(ctx, state_json).await?)),
        "/metrics/snapshot" | "/metrics" => {
            let uptime = ctx.started.elapsed().as_secs_f64();
            let snapshot = query(ctx, move |a| crate::metrics::snapshot(a, uptime)).await?;
            if path == "/metrics" {
                let mut all = agora_rpc::metrics::snapshot(&snapshot);
                all.push(ctx.http_metrics.collector());
                Ok(h::body(
                    StatusCode::OK,
                    agora_rpc::metrics::CONTENT_TYPE,
                    agora_rpc::metrics::render(all),
                ))
            } else {
                let map: serde_json::Map<String, serde_json::Value> =
                    snapshot.into_iter().map(|(k, v)| (k, json!(v))).collect();
                Ok(json_reply(serde_json::Value::Object(map)))
            }
        }
        "/files/read" => {
            let offset = number(param("offset"), "offset")?;
            let length = number(param("length"), "length")?;
            let file = sandbox_file(
                &ctx.settings.core.work_dir,
                &param("path").unwrap_or_default(),
            )?;
            may_access(ctx, principal.as_deref(), &file).await?;
            Ok(json_reply(files::read(&file, offset, length).await?))
        }
        "/files/download" => {
            let file = sandbox_file(
                &ctx.settings.core.work_dir,
                &param("path").unwrap_or_default(),
            )?;
            may_access(ctx, principal.as_deref(), &file).await?;
            files::download(&file).await
        }
        "/ui/sandbox" => {
            let dir = sandbox_file(
                &ctx.settings.core.work_dir,
                &param("path").unwrap_or_default(),
            )?;
            may_access(ctx, principal.as_deref(), &dir).await?;
            let listing = files::browse(&dir).await?;
            Ok(h::body(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::ui::render(&ctx.settings.core.hostname, &dir, &listing),
            ))
        }
        "/files/browse" => {
            let dir = sandbox_file(
                &ctx.settings.core.work_dir,
                &param("path").unwrap_or_default(),
            )?;
            may_access(ctx, principal.as_deref(), &dir).await?;
            Ok(json_reply(files::browse(&dir).await?))
        }
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("No such endpoint: {path}"),
        )),
    }
}

/// access_sandboxes: whether `principal` may read what is under `path`,
/// decided on the user of the sandbox's executor (its command's, else its
/// framework's), as Mesos. A path outside any sandbox is decided with no
/// user (ANY). Refusals are 403 with an empty body, as Mesos' files API.
async fn may_access(ctx: &Context, principal: Option<&str>, path: &Path) -> Result<(), HttpError> {
    if ctx.settings.acls.is_open(Action::AccessSandboxes) {
        return Ok(());
    }
    // <work-dir>/slaves/<agent>/frameworks/<fw>/executors/<ex>/…
    let parts: Vec<String> = path
        .strip_prefix(
            ctx.settings
                .core
                .work_dir
                .canonicalize()
                .unwrap_or_default(),
        )
        .map(|rest| {
            rest.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let ids = match parts.as_slice() {
        [s, _, f, fw, e, ex, ..] if s == "slaves" && f == "frameworks" && e == "executors" => {
            Some((fw.clone(), ex.clone()))
        }
        _ => None,
    };
    let user = match ids {
        Some((fw, ex)) => {
            query(ctx, move |a| {
                let executor_user = a
                    .core
                    .executor(&(fw.clone(), ex))
                    .and_then(|e| e.info.command.as_ref()?.user.clone());
                executor_user.or_else(|| a.core.frameworks().get(&fw).map(|f| f.user.clone()))
            })
            .await?
        }
        None => None,
    };
    if ctx
        .settings
        .acls
        .allows(Action::AccessSandboxes, principal, user.as_deref())
    {
        Ok(())
    } else {
        Err(HttpError::new(StatusCode::FORBIDDEN, ""))
    }
}

/// One endpoint of the agent: the route list the dispatcher serves (a path
/// not listed is 404) and the authentication matrix test walks.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The path (after aliasing: `/slave(1)/x` is `/x`).
    pub path: &'static str,
    /// Its realm (None: never authenticated; the executor realm takes
    /// executors' tokens).
    pub realm: Option<Realm>,
    /// The ACL action it needs.
    pub action: Option<Action>,
}

/// Every endpoint the agent serves.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/health",
        realm: None,
        action: None,
    },
    Route {
        path: "/version",
        realm: None,
        action: None,
    },
    Route {
        path: "/state",
        realm: Some(Realm::AgentReadonly),
        action: None,
    },
    Route {
        path: "/metrics/snapshot",
        realm: Some(Realm::AgentReadonly),
        action: None,
    },
    Route {
        path: "/metrics",
        realm: Some(Realm::AgentReadonly),
        action: None,
    },
    Route {
        path: "/files/read",
        realm: Some(Realm::AgentReadonly),
        action: Some(Action::AccessSandboxes),
    },
    Route {
        path: "/files/download",
        realm: Some(Realm::AgentReadonly),
        action: Some(Action::AccessSandboxes),
    },
    Route {
        path: "/files/browse",
        realm: Some(Realm::AgentReadonly),
        action: Some(Action::AccessSandboxes),
    },
    Route {
        path: "/ui/sandbox",
        realm: Some(Realm::AgentReadonly),
        action: Some(Action::AccessSandboxes),
    },
    Route {
        path: "/api/v1/executor",
        realm: Some(Realm::AgentExecutor),
        action: None,
    },
];

/// A signed number parameter, as Mesos reads `offset` and `length` (-1 or
/// absent: not given).
fn number(value: Option<String>, name: &str) -> Result<Option<u64>, HttpError> {
    match value.as_deref().map(str::trim) {
        None | Some("-1") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            HttpError::bad_request(format!("Failed to parse {name}: '{v}' is not a number"))
        }),
    }
}

/// Resolves `path` within the work dir. A path that does not exist and one
/// outside the work dir get the same 404, so the answer tells an outsider
/// nothing about which files exist; no answer names a host path.
fn sandbox_file(work_dir: &Path, path: &str) -> Result<PathBuf, HttpError> {
    if path.is_empty() {
        return Err(HttpError::bad_request("Expecting 'path=value' in query"));
    }
    let not_found = || HttpError::new(StatusCode::NOT_FOUND, "No such file or directory");
    let root = work_dir.canonicalize().map_err(|_| not_found())?;
    let candidate = Path::new(path);
    let resolved = if candidate.is_absolute() {
        candidate.to_path_buf()
    } else {
        root.join(candidate)
    };
    let resolved = resolved.canonicalize().map_err(|_| not_found())?;
    if !resolved.starts_with(&root) {
        return Err(not_found());
    }
    Ok(resolved)
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn executor_api(
    ctx: &Context,
    headers: &HeaderMap,
    body: Bytes,
    conn: Option<h::Conn>,
) -> Result<warp::reply::Response, HttpError> {
    let encoding = h::request_encoding(headers)?;
    let call: executor::Call = encoding
        .decode(&body)
        .map_err(|e| HttpError::bad_request(format!("Failed to parse body into Call: {e}")))?;
    if call.r#type() != executor::call::Type::Heartbeat {
        match bearer(headers) {
            Some(token) => token_of_the_executor(ctx, &call, token).await?,
            None if ctx.settings.authenticate_http_executors => {
                return Err(HttpError::new(StatusCode::UNAUTHORIZED, "")
                    .with_challenge(format!("Bearer realm=\"{}\"", Realm::AgentExecutor.name())));
            }
            None => from_the_executor(ctx, &call, conn).await?,
        }
    }
    if call.r#type() == executor::call::Type::Subscribe {
        let accept = h::response_encoding(headers)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, result) = oneshot::channel();
        let generation = ctx.generation.fetch_add(1, Ordering::Relaxed);
        ctx.actor
            .send(Command::ExecutorSubscribe {
                call,
                events: tx,
                generation,
                reply,
            })
            .map_err(|_| unavailable())?;
        result.await.map_err(|_| unavailable())??;
        let actor = ctx.actor.clone();
        let events = EventStream::new(rx, accept, EXECUTOR_HEARTBEAT, move || {
            let _ = actor.send(Command::ExecutorStreamClosed { generation });
        });
        return Ok(h::stream_response(accept, events));
    }
    let (reply, result) = oneshot::channel();
    ctx.actor
        .send(Command::ExecutorCall { call, reply })
        .map_err(|_| unavailable())?;
    result.await.map_err(|_| unavailable())??;
    Ok(h::empty(StatusCode::ACCEPTED))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Checks an executor's token as Mesos' agent does: signed with this
/// agent's key (else 401), and naming the call's framework and executor
/// and the executor's current container (else 403).
async fn token_of_the_executor(
    ctx: &Context,
    call: &executor::Call,
    token: &str,
) -> Result<(), HttpError> {
    let claims = agora_proto::auth::verify_executor_token(&ctx.settings.core.jwt_key.0, token)
        .map_err(|why| {
            HttpError::new(StatusCode::UNAUTHORIZED, "").with_challenge(format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{why}\"",
                Realm::AgentExecutor.name()
            ))
        })?;
    let key = (
        call.framework_id.value.clone(),
        call.executor_id.value.clone(),
    );
    let container = query(ctx, move |a| {
        a.core.executor(&key).map(|e| e.container.clone())
    })
    .await?;
    let mismatch = |claim: &str, what: &str, want: &str| {
        HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Authenticated principal does not contain a '{claim}' claim with the {what} '{want}'"
            ),
        )
    };
    if claims.fid != call.framework_id.value {
        return Err(mismatch("fid", "framework ID", &call.framework_id.value));
    }
    if claims.eid != call.executor_id.value {
        return Err(mismatch("eid", "executor ID", &call.executor_id.value));
    }
    match container {
        Some(cid) if cid != claims.cid => Err(mismatch("cid", "container ID", &cid)),
        _ => Ok(()),
    }
}

/// Refuses (403) a call that does not come from the executor it names: the
/// client's socket must belong to the executor's process or its group
/// ([`crate::peer`]). An unknown executor is left to the actor's answer.
async fn from_the_executor(
    ctx: &Context,
    call: &executor::Call,
    conn: Option<h::Conn>,
) -> Result<(), HttpError> {
    let key = (
        call.framework_id.value.clone(),
        call.executor_id.value.clone(),
    );
    let Some(pid) = query(ctx, move |a| a.core.executor(&key).map(|e| e.pid)).await? else {
        return Ok(());
    };
    let peer = conn.as_ref().map(|c| c.peer);
    let genuine = match (pid, conn) {
        (Some(pid), Some(conn)) => {
            tokio::task::spawn_blocking(move || peer::from_group(pid, conn.peer, conn.local))
                .await
                .unwrap_or(false)
        }
        _ => false,
    };
    if genuine {
        return Ok(());
    }
    tracing::warn!(
        framework.id = %call.framework_id.value,
        executor.id = %call.executor_id.value,
        peer = ?peer,
        call = ?call.r#type(),
        "refused an executor call that did not come from the executor's process"
    );
    Err(HttpError::new(
        StatusCode::FORBIDDEN,
        format!(
            "Executor '{}' of framework '{}' accepts calls only from its own process",
            call.executor_id.value, call.framework_id.value
        ),
    ))
}

fn state_json(a: &Actor) -> serde_json::Value {
    let mut frameworks = Vec::new();
    let (core, settings) = (&a.core, &a.settings.core);
    for (fid, info) in core.frameworks() {
        let executors: Vec<serde_json::Value> = core
            .executors()
            .filter(|e| &e.framework == fid)
            .map(|e| {
                let tasks: Vec<serde_json::Value> = e
                    .tasks
                    .values()
                    .map(|t| json!({"id": t.info.task_id.value, "name": t.info.name, "state": t.state.as_str_name(), "framework_id": fid}))
                    .collect();
                json!({
                    "id": e.id,
                    "name": e.info.name.clone().unwrap_or_default(),
                    "container": e.container,
                    "directory": e.dir.to_string_lossy(),
                    "pid": e.pid,
                    "tasks": tasks,
                })
            })
            .collect();
        let completed: Vec<serde_json::Value> = core
            .completed_tasks()
            .filter(|(f, _, _)| f == fid)
            .map(|(_, t, s)| json!({"id": t.task_id.value, "name": t.name, "state": s.as_str_name()}))
            .collect();
        frameworks.push(json!({"id": fid, "name": info.name, "user": info.user, "executors": executors, "completed_tasks": completed}));
    }
    json!({
        "id": core.id(),
        "pid": format!("slave(1)@{}", settings.advertise),
        "hostname": settings.hostname,
        "version": agora_proto::MESOS_VERSION,
        "resources": settings.resources.to_string(),
        "attributes": settings.attributes.iter().map(|x| (x.name.clone(), agora_proto::resources::attribute_value_string(x))).collect::<std::collections::BTreeMap<_, _>>(),
        "master_hostname": core.master_info().and_then(|m| m.hostname.clone()),
        "frameworks": frameworks,
        "refused": core.refused(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize("/slave(1)/api/v1/executor"), "/api/v1/executor");
        assert_eq!(normalize("/state.json"), "/state");
        assert_eq!(normalize("/files/read/"), "/files/read");
    }

    #[test]
    fn files_stay_in_the_work_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a"), "x").unwrap();
        assert!(sandbox_file(tmp.path(), "a").is_ok());
        // Outside the work dir, existing or not: the same answer as a
        // missing file, naming no host path.
        let missing = sandbox_file(tmp.path(), "nope").unwrap_err();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        for outside in ["/etc/passwd", "../../etc/passwd", "/etc/no-such-file"] {
            let e = sandbox_file(tmp.path(), outside).unwrap_err();
            assert_eq!((e.status, &e.message), (missing.status, &missing.message));
        }
        assert!(!missing.message.contains(&tmp.path().display().to_string()));
        // A task's symlink out of its sandbox is followed, then refused.
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("leak")).unwrap();
        let e = sandbox_file(tmp.path(), "leak").unwrap_err();
        assert_eq!((e.status, &e.message), (missing.status, &missing.message));
        assert_eq!(
            sandbox_file(tmp.path(), "").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
