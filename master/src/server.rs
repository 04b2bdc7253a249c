//! One listener for everything: HTTP/1.1 (the Mesos APIs, served by warp)
//! and HTTP/2 gRPC (agents, served by tonic), told apart per request by
//! `Content-Type: application/grpc`. Agents therefore use the same
//! `--master host:5050` as every other client.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Serves `http` (a warp filter service) and `grpc` (tonic routes) on
/// `listener` over `transport` until `shutdown` completes; then open
/// connections are dropped.
pub async fn serve<H, G>(
    listener: TcpListener,
    transport: agora_rpc::serve::Transport,
    http: H,
    grpc: G,
    shutdown: impl Future<Output = ()>,
) where
    H: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    H::Future: Send,
    G: Service<
            http::Request<Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    G::Future: Send,
{
    let handler = move |req: http::Request<Incoming>| {
        let grpc_call = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut http = http.clone();
        let mut grpc = grpc.clone();
        async move {
            let response: http::Response<Body> = if grpc_call {
                let r = grpc.call(req).await.unwrap_or_else(|e| match e {});
                r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
            } else {
                let r = http.call(req).await.unwrap_or_else(|e| match e {});
                r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
            };
            response
        }
    };
    agora_rpc::serve::serve(listener, transport, handler, shutdown).await
}
