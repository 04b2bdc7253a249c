//! HTTP helpers for the Mesos v1 APIs (scheduler, executor, operator).
//!
//! Mesos compares media types exactly and chooses the response encoding from
//! `Accept` (JSON when absent or `*/*`). Streams are RecordIO over a chunked
//! response whose Content-Type is the *message* type. Errors are plain text.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};
use prost::{Message, Name};

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use agora_proto::{executor, json, operator, recordio, scheduler as sched};
use tokio::sync::mpsc;

/// The largest request body accepted (an ACCEPT with many tasks is large).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// How a message is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`, in the Mesos JSON mapping.
    Json,
    /// `application/x-protobuf`.
    Protobuf,
}

impl Encoding {
    /// The exact media type (no parameters: mesos-go compares strings).
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }

    /// Encodes a message.
    pub fn encode<M: Message + Name>(self, msg: &M) -> Bytes {
        match self {
            Encoding::Json => Bytes::from(json::to_vec(msg)),
            Encoding::Protobuf => Bytes::from(msg.encode_to_vec()),
        }
    }

    /// Encodes a message as one RecordIO record.
    pub fn record<M: Message + Name>(self, msg: &M) -> Bytes {
        recordio::encode(&self.encode(msg))
    }

    /// Decodes a message, checking required fields.
    pub fn decode<M: Message + Name + Default>(self, body: &[u8]) -> Result<M, json::DecodeError> {
        match self {
            Encoding::Json => json::from_slice(body),
            Encoding::Protobuf => json::from_protobuf(body),
        }
    }
}

/// An HTTP error: a status and a plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// The message (the body).
    pub message: String,
    /// A `WWW-Authenticate` challenge (401s).
    pub challenge: Option<String>,
}

impl HttpError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    /// The same error with a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        self.challenge = Some(challenge.into());
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The error as a warp reply.
    pub fn into_response(self) -> warp::reply::Response {
        let mut r = text(self.status, self.message);
        if let Some(v) = self
            .challenge
            .and_then(|c| header::HeaderValue::from_str(&c).ok())
        {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, message: impl Into<String>) -> warp::reply::Response {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(message.into()),
    )
}

/// A response with a body and a content type.
pub fn body(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(body.into().into());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// An empty response with this status.
pub fn empty(status: StatusCode) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(Bytes::new().into());
    *r.status_mut() = status;
    r
}

/// The encoding of a request body, from its Content-Type: 400 when absent,
/// 415 when neither JSON nor protobuf. Parameters such as `charset` are
/// tolerated (Mesos refuses them; accepting them is harmless).
pub fn request_encoding(headers: &HeaderMap) -> Result<Encoding, HttpError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(HttpError::bad_request(
            "Expecting 'Content-Type' to be present",
        ));
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Encoding::Json),
        "application/x-protobuf" => Ok(Encoding::Protobuf),
        other => Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, got '{other}'"
            ),
        )),
    }
}

/// The response encoding `Accept` allows: JSON if acceptable (also when the
/// header is absent, `*/*` or `application/*`), else protobuf, else 406.
pub fn response_encoding(headers: &HeaderMap) -> Result<Encoding, HttpError> {
    let Some(value) = headers.get(header::ACCEPT) else {
        return Ok(Encoding::Json);
    };
    let accept = value.to_str().unwrap_or("");
    let mut json = false;
    let mut proto = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        if q_zero {
            continue;
        }
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => json = true,
            "application/x-protobuf" => proto = true,
            _ => {}
        }
    }
    if json {
        Ok(Encoding::Json)
    } else if proto {
        Ok(Encoding::Protobuf)
    } else {
        Err(HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow application/json or application/x-protobuf",
        ))
    }
}

/// The stylesheet of the status pages (master, marathon-rs), so they look alike.
pub const UI_CSS: &str = r#"
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
  .sub { color: #667; margin-bottom: 1.5rem; }
  .cards { display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1.5rem; }
  .card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: .8rem 1.2rem; min-width: 9rem; }
  .card .n { font-size: 1.6rem; font-weight: 600; }
  .card .l { color: #667; font-size: .85rem; }
  .bar { height: 6px; background: #e8ebf0; border-radius: 3px; margin-top: .4rem; }
  .bar > div { height: 6px; background: #3b82f6; border-radius: 3px; }
  table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 1.5rem; border: 1px solid #dde1e7; }
  th, td { text-align: left; padding: .4rem .7rem; border-bottom: 1px solid #eef0f3; }
  th { background: #f0f2f5; font-weight: 600; font-size: .85rem; color: #445; }
  .ok { color: #15803d; } .bad { color: #b91c1c; } .muted { color: #889; } .warn { color: #b45309; }
  code { font-size: .85rem; }
  a { color: #1d4ed8; text-decoration: none; } a:hover { text-decoration: underline; }
  button { font: inherit; padding: .2rem .7rem; border: 1px solid #c5cbd5; border-radius: 5px; background: #fff; cursor: pointer; }
  button:hover { background: #eef2ff; } button.danger { color: #b91c1c; border-color: #f3c4c4; }
  input, textarea, select { font: inherit; padding: .25rem .4rem; border: 1px solid #c5cbd5; border-radius: 5px; }
  textarea { width: 100%; font-family: ui-monospace, monospace; font-size: .85rem; }
  form.inline { display: inline-flex; gap: .4rem; align-items: center; margin: 0 .8rem .4rem 0; }
  fieldset { border: 1px solid #dde1e7; border-radius: 8px; background: #fff; margin-bottom: 1.5rem; }
  fieldset label { display: inline-flex; flex-direction: column; font-size: .8rem; color: #556; margin: 0 .8rem .6rem 0; }
  pre.log { background: #10141c; color: #dfe6ee; padding: .8rem; border-radius: 8px; max-height: 24rem; overflow: auto; white-space: pre-wrap; }
  .flash { padding: .5rem .8rem; border-radius: 6px; margin-bottom: 1rem; background: #fff; border: 1px solid #dde1e7; }
  .flash:empty { display: none; }
  .box { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: .8rem 1.2rem; margin-bottom: 1.5rem; }
"#;

/// The script every UI page includes (`<script>{{ js|safe }}</script>`):
/// `api` (a call to this origin's API, errors shown in `#flash`), `live`
/// (the page's `#live` part refreshed in place) and `tail` (a sandbox
/// file followed through `/files/read`).
pub const UI_JS: &str = include_str!("ui.js");

/// A request with its body read (up to a limit).
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: http::Method,
    /// The path as sent (not decoded).
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, or why it could not be read (413 over the limit).
    pub body: Result<Bytes, HttpError>,
    /// The TCP connection it came on (None when not served by [`serve`]).
    pub conn: Option<Conn>,
}

pub use crate::serve::Conn;

/// A warp filter that hands every request, body read up to `limit` bytes,
/// to `handler`: the one route of the master, the agent and marathon-rs,
/// which dispatch on method and path themselves.
pub fn handle<F, Fut>(
    limit: usize,
    handler: F,
) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = warp::reply::Response> + Send,
{
    use warp::Filter as _;
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Conn>())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query, headers, conn, body| {
                let handler = handler.clone();
                async move {
                    let body = read_body(body, limit).await;
                    handler(Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body,
                        conn,
                    })
                    .await
                }
            },
        )
}

/// Reads a request body, refusing more than `limit` bytes with 413.
pub async fn read_body<S, B, E>(stream: S, limit: usize) -> Result<Bytes, HttpError>
where
    S: Stream<Item = Result<B, E>>,
    B: bytes::Buf,
    E: std::fmt::Display,
{
    let mut out = BytesMut::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk
            .map_err(|e| HttpError::bad_request(format!("failed to read the request body: {e}")))?;
        if out.len() + chunk.remaining() > limit {
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// A streaming 200 response: `records` are RecordIO-framed messages, sent
/// chunked, with the message type as Content-Type.
pub fn stream_response<S>(encoding: Encoding, records: S) -> warp::reply::Response
where
    S: Stream<Item = Bytes> + Send + Sync + 'static,
{
    use warp::Reply;
    let mut r =
        warp::reply::stream(records.map(Ok::<Bytes, std::convert::Infallible>)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(encoding.content_type()),
    );
    r
}

/// A subscription's HTTP body: RecordIO records of the events the driver
/// sends, a HEARTBEAT every interval, and one more HEARTBEAT after each burst
/// (mesoshttp only handles a record once the next one starts arriving). When
/// the client goes away the body is dropped and `on_close` tells the driver.
pub struct EventStream<T, F: FnOnce()> {
    rx: mpsc::UnboundedReceiver<T>,
    encoding: Encoding,
    interval: tokio::time::Interval,
    pending: std::collections::VecDeque<Bytes>,
    heartbeat: Bytes,
    on_close: Option<F>,
}

impl<T, F: FnOnce()> EventStream<T, F> {
    /// A stream of `rx`'s events, with a heartbeat every `every`; `on_close`
    /// runs when the body is dropped.
    pub fn new(
        rx: mpsc::UnboundedReceiver<T>,
        encoding: Encoding,
        every: Duration,
        on_close: F,
    ) -> Self
    where
        T: HeartbeatEvent,
    {
        let start = tokio::time::Instant::now() + every;
        let mut interval = tokio::time::interval_at(start, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        EventStream {
            rx,
            encoding,
            interval,
            pending: Default::default(),
            heartbeat: T::heartbeat(encoding),
            on_close: Some(on_close),
        }
    }
}

/// Events that have a HEARTBEAT form.
pub trait HeartbeatEvent: prost::Message + prost::Name + Sized {
    /// The encoded HEARTBEAT record.
    fn heartbeat(encoding: Encoding) -> Bytes;
    /// Whether this event is itself a heartbeat.
    fn is_heartbeat(&self) -> bool;
}

impl HeartbeatEvent for sched::Event {
    fn heartbeat(encoding: Encoding) -> Bytes {
        encoding.record(&sched::Event {
            r#type: Some(sched::event::Type::Heartbeat as i32),
            ..Default::default()
        })
    }
    fn is_heartbeat(&self) -> bool {
        self.r#type() == sched::event::Type::Heartbeat
    }
}

impl HeartbeatEvent for operator::Event {
    fn heartbeat(encoding: Encoding) -> Bytes {
        encoding.record(&operator::Event {
            r#type: Some(operator::event::Type::Heartbeat as i32),
            ..Default::default()
        })
    }
    fn is_heartbeat(&self) -> bool {
        self.r#type() == operator::event::Type::Heartbeat
    }
}

impl<T: HeartbeatEvent, F: FnOnce() + Unpin> Stream for EventStream<T, F> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if let Some(b) = this.pending.pop_front() {
            return Poll::Ready(Some(b));
        }
        let mut burst = false;
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    burst = !event.is_heartbeat();
                    this.pending.push_back(this.encoding.record(&event));
                    if this.pending.len() >= 256 {
                        break;
                    }
                }
                Poll::Ready(None) => {
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        if burst {
            this.pending.push_back(this.heartbeat.clone());
        }
        if let Some(b) = this.pending.pop_front() {
            return Poll::Ready(Some(b));
        }
        match this.interval.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(this.heartbeat.clone())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T, F: FnOnce()> Drop for EventStream<T, F> {
    fn drop(&mut self) {
        if let Some(f) = self.on_close.take() {
            f();
        }
    }
}

impl HeartbeatEvent for executor::Event {
    fn heartbeat(encoding: Encoding) -> Bytes {
        encoding.record(&executor::Event {
            r#type: Some(executor::event::Type::Heartbeat as i32),
            ..Default::default()
        })
    }
    fn is_heartbeat(&self) -> bool {
        self.r#type() == executor::event::Type::Heartbeat
    }
}

/// Serves a warp filter on `listener` (HTTP/1.1 and HTTP/2, plain text)
/// until `shutdown` completes; open connections are then dropped.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    filter: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    serve_with(listener, crate::serve::Transport::plain(), filter, shutdown).await
}

/// [`serve`] over `transport` (TLS when it has certificates).
pub async fn serve_with<F>(
    listener: tokio::net::TcpListener,
    transport: crate::serve::Transport,
    filter: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let service = warp::service(filter);
    crate::serve::serve(
        listener,
        transport,
        move |req| {
            let mut s = service.clone();
            async move { tower_call(&mut s, req).await.unwrap_or_else(|e| match e {}) }
        },
        shutdown,
    )
    .await
}

async fn tower_call<S>(
    s: &mut S,
    req: http::Request<hyper::body::Incoming>,
) -> Result<warp::reply::Response, std::convert::Infallible>
where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        >,
{
    s.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, header::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_type_rules() {
        assert_eq!(
            request_encoding(&headers(&[])).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            request_encoding(&headers(&[("content-type", "text/plain")]))
                .unwrap_err()
                .status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            request_encoding(&headers(&[(
                "content-type",
                "application/json; charset=utf-8"
            )])),
            Ok(Encoding::Json)
        );
        assert_eq!(
            request_encoding(&headers(&[("content-type", "application/x-protobuf")])),
            Ok(Encoding::Protobuf)
        );
    }

    #[test]
    fn accept_rules() {
        assert_eq!(response_encoding(&headers(&[])), Ok(Encoding::Json));
        assert_eq!(
            response_encoding(&headers(&[("accept", "*/*")])),
            Ok(Encoding::Json)
        );
        assert_eq!(
            response_encoding(&headers(&[("accept", "application/x-protobuf")])),
            Ok(Encoding::Protobuf)
        );
        assert_eq!(
            response_encoding(&headers(&[("accept", "text/html")]))
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            response_encoding(&headers(&[(
                "accept",
                "application/json;q=0, application/x-protobuf"
            )])),
            Ok(Encoding::Protobuf)
        );
    }
}
