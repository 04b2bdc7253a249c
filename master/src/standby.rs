//! A master that is not the leader: it answers `/health`, `/version` and
//! `/redirect`, sends every other request to the leader with a 307
//! (`Location: //<leader-host>:<port><path>`, as Mesos), answers 503 while
//! no leader is known, and refuses agents' gRPC sessions, so they look
//! for the leader again.

use std::convert::Infallible;

use agora_rpc::http::{self as h};
use agora_zk::Leader;
use http::{StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::{http::normalize, legacy, server};

/// A running standby server.
pub(crate) struct Standby {
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Standby {
    /// Stops serving and drops its connections.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// `host:port` of the leader's record: its hostname (else IP) and port.
fn leader_host(leader: &Leader) -> String {
    let info = &leader.info;
    let host = info["hostname"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let port = info["port"].as_u64();
    match (host, port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        _ => leader.address.clone(),
    }
}

/// The answer to `method path?query` on a standby.
fn respond(leader: Option<&Leader>, path: &str, query: &str) -> warp::reply::Response {
    let redirect = |location: String| {
        let mut r = h::empty(StatusCode::TEMPORARY_REDIRECT);
        if let Ok(v) = header::HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    };
    match normalize(path).as_str() {
        "/health" => h::empty(StatusCode::OK),
        "/version" => h::body(
            StatusCode::OK,
            "application/json",
            legacy::version().to_string(),
        ),
        "/metrics/snapshot" => h::body(
            StatusCode::OK,
            "application/json",
            serde_json::json!({"master/elected": 0.0}).to_string(),
        ),
        p => match leader {
            None => h::text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"),
            Some(l) if p == "/redirect" => redirect(format!("//{}", leader_host(l))),
            Some(l) => {
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                redirect(format!("//{}{path}{query}", leader_host(l)))
            }
        },
    }
}

/// Serves the standby answers on `listener` until stopped.
/// Credentials are checked first, as Mesos authenticates before it
/// redirects: a standby answers 401 as the leader would.
pub(crate) fn serve(
    listener: TcpListener,
    leader: watch::Receiver<Option<Leader>>,
    auth: std::sync::Arc<agora_rpc::auth::HttpAuth>,
    transport: agora_rpc::serve::Transport,
) -> Standby {
    let routes = h::handle(h::MAX_BODY, move |req: h::Request| {
        let leader = leader.borrow().clone();
        let checked = crate::http::realm(&normalize(&req.path))
            .map(|realm| auth.authenticate(realm, &req.headers));
        async move {
            match checked {
                Some(Err(e)) => e.into_response(),
                _ => respond(leader.as_ref(), &req.path, &req.query),
            }
        }
    });
    let http = warp::service(routes);
    let grpc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(
            tonic::Status::unavailable("not the leading master").into_http::<tonic::body::Body>(),
        )
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, transport, http, grpc, async {
        let _ = stopped.await;
    }));
    Standby { stop, server }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader() -> Leader {
        Leader {
            address: "10.0.0.2:5050".into(),
            info: serde_json::json!({"hostname": "m2.example", "port": 5050,
                                     "address": {"ip": "10.0.0.2", "port": 5050}}),
        }
    }

    fn location(r: &warp::reply::Response) -> &str {
        r.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn a_standby_redirects_to_the_leader_by_hostname_keeping_path_and_query() {
        let l = leader();
        let r = respond(Some(&l), "/api/v1/scheduler", "");
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(location(&r), "//m2.example:5050/api/v1/scheduler");
        let r = respond(Some(&l), "/master/state", "jsonp=f");
        assert_eq!(location(&r), "//m2.example:5050/master/state?jsonp=f");
        let r = respond(Some(&l), "/master/redirect", "");
        assert_eq!(location(&r), "//m2.example:5050");
        assert_eq!(respond(Some(&l), "/health", "").status(), StatusCode::OK);
    }

    #[test]
    fn without_a_leader_a_standby_answers_503() {
        let r = respond(None, "/api/v1/scheduler", "");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(respond(None, "/redirect", "").status(), 503);
        assert_eq!(respond(None, "/version", "").status(), StatusCode::OK);
    }
}
