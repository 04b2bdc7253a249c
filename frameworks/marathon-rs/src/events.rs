//! `GET /v2/events`: server-sent events. Each event is an `event:` line and
//! a one-line `data:` JSON, CRLF-terminated, flushed as its own chunk; the
//! first is `event_stream_attached`; an empty line every heartbeat keeps
//! idle connections alive. `event_type` filters (repeatable);
//! `plan-format=light` drops plans' `original`/`target`. A subscriber too
//! slow to keep up is disconnected (it reconnects and re-reads state)
//! rather than silently missing events.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::driver::now;
use crate::http::{Context, Query, json_response};
use agora_marathon_core::marathon::Reply;

fn frame(event_type: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event_type}\r\ndata: {data}\r\n\r\n"))
}

/// The SSE response (405 unless the client accepts `text/event-stream`).
pub fn stream(ctx: &Context, q: &Query, headers: &HeaderMap) -> warp::reply::Response {
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "text/event-stream")
        });
    if !accepts {
        return json_response(&Reply::error(
            405,
            "The event stream needs 'Accept: text/event-stream'",
        ));
    }
    let filter: BTreeSet<String> = q.all("event_type").into_iter().collect();
    let light = q.get("plan-format") == Some("light");
    let remote = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut rx = ctx.marathon.subscribe();
    let every = ctx.event_heartbeat;
    let body = async_stream::stream! {
        let attached = json!({
            "remoteAddress": remote,
            "eventType": "event_stream_attached",
            "timestamp": now().iso(),
        });
        if filter.is_empty() || filter.contains("event_stream_attached") {
            yield frame("event_stream_attached", &attached.to_string());
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => yield Bytes::from_static(b"\r\n"),
                e = rx.recv() => match e {
                    Ok(e) => {
                        if !filter.is_empty() && !filter.contains(&e.event_type) {
                            continue;
                        }
                        let data = if light { e.light.as_deref().unwrap_or(&e.full) } else { &e.full };
                        yield frame(&e.event_type, data);
                    }
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "an event subscriber fell behind; closing its stream");
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        debug!("event stream closed");
    };
    use warp::Reply as _;
    let mut r =
        warp::reply::stream(body.map(Ok::<Bytes, std::convert::Infallible>)).into_response();
    *r.status_mut() = StatusCode::OK;
    let hs = r.headers_mut();
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream;charset=utf-8"),
    );
    hs.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    r
}
